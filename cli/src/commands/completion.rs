//! `portico completion SHELL`: print a completion script for bash, zsh or fish.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::Cli;
use crate::error::CliResult;

/// `portico completion bash|zsh|fish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// Runs `completion`.
pub fn run(args: Args) -> CliResult {
    let shell = match args.shell.as_str() {
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => Shell::Bash,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "portico",
        &mut std::io::stdout(),
    );
    Ok(())
}
