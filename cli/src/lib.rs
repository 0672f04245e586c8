//! `portico-cli`: the `portico` command-line tool.
