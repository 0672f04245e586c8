//! `portico-agent`: the agent binary.

fn main() {}
