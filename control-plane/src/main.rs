//! `portico-cp`: the control-plane binary.

fn main() {}
