//! `portico`: the command-line tool.

fn main() {}
