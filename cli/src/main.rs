//! `portico`: the command-line tool. Parses the command line, runs the command, and turns its
//! failure into one error line and the documented exit code.

use std::process::ExitCode;

use clap::Parser;
use portico_cli::{Cli, error::EXIT_ERROR};

fn main() -> ExitCode {
    // One crypto provider for every TLS client and server in the process (the `dev` command
    // links the control plane and the agent).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(portico_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Messages carry text from the server and the network: escaped for the terminal.
            let message = portico_cli::output::escaped(&e.to_string(), true);
            eprintln!("error: {message}");
            ExitCode::from(e.exit_code())
        }
    }
}
