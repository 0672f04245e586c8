//! `portico-cli`: the `portico` command-line tool SREs drive Portico with.
//!
//! Every command except `dev` and `completion` is a client of the control plane's Admin gRPC
//! API. Output is a table for people or YAML/JSON for scripts (`-o`), and failures map to
//! documented exit codes (see [`error`]).
//!
//! # Layout
//! - [`client`]: the global `--server`/`--token`/`--ca-*` options and the Admin client built
//!   from them.
//! - [`commands`]: one module per subcommand.
//! - [`demo`]: the echo upstream `portico dev` runs.
//! - [`changes`]: the change list that `apply`, `rollback` and `delete` print.
//! - [`files`]: loading resource files and tracing server errors back to file and document.
//! - [`error`]: command failures and their exit codes.
//! - [`output`]: tables, YAML/JSON, colors, progress bars.

pub mod changes;
pub mod client;
pub mod commands;
pub mod demo;
pub mod error;
pub mod files;
pub mod output;

use clap::{Parser, Subcommand};

use crate::client::ClientConfig;
use crate::commands::{
    agents, apply, ca, completion, consumer, delete, dev, diff, get, health, history, rollback,
    rollout, status, token, usage,
};
use crate::error::CliResult;
use crate::output::Format;

/// Drive a Portico fleet: apply config, watch rollouts, inspect agents.
#[derive(Debug, Parser)]
#[command(name = "portico", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientConfig,
    /// Output format of commands that print data.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, update (and with --prune delete) resources from files, in one revision.
    Apply(apply::Args),
    /// Show what `apply` would change, as a unified diff of stored vs file YAML.
    Diff(diff::Args),
    /// List resources of a kind, or show one.
    Get(get::Args),
    /// Delete one resource.
    Delete(delete::Args),
    /// List config changes, newest first.
    History(history::Args),
    /// Restore the config of an earlier revision as a new revision.
    Rollback(rollback::Args),
    /// List the agents and how far each has applied the config.
    Agents(agents::Args),
    /// How far a revision has rolled out to the agents; follow, promote or abort a canary
    /// rollout.
    #[command(subcommand)]
    Rollout(rollout::Command),
    /// Create API consumers and their keys (printed once, stored as SHA-256).
    #[command(subcommand)]
    Consumer(consumer::Command),
    /// Every endpoint's state as each agent sees it, by region, and where agents disagree.
    Health(health::Args),
    /// The control plane's certificate authority.
    #[command(subcommand)]
    Ca(ca::Command),
    /// API tokens with a role, and join tokens for agents.
    #[command(subcommand)]
    Token(token::Command),
    /// The control-plane replicas: which one leads, each one's agents and store health.
    Status(status::Args),
    /// Traffic the agents reported: requests, error rate and latency by route and consumer.
    Usage(usage::Args),
    /// Run a control plane, an agent and a demo upstream in one process, with a demo config.
    Dev(dev::Args),
    /// Print a shell completion script.
    Completion(completion::Args),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    let ctx = commands::Context {
        client: cli.client,
        format: cli.output,
    };
    match cli.command {
        Command::Apply(args) => apply::run(&ctx, args).await,
        Command::Diff(args) => diff::run(&ctx, args).await,
        Command::Get(args) => get::run(&ctx, args).await,
        Command::Delete(args) => delete::run(&ctx, args).await,
        Command::History(args) => history::run(&ctx, args).await,
        Command::Rollback(args) => rollback::run(&ctx, args).await,
        Command::Agents(args) => agents::run(&ctx, args).await,
        Command::Rollout(rollout::Command::Status(args)) => rollout::status(&ctx, args).await,
        Command::Rollout(rollout::Command::Promote(args)) => rollout::promote(&ctx, args).await,
        Command::Rollout(rollout::Command::Abort(args)) => rollout::abort(&ctx, args).await,
        Command::Consumer(command) => consumer::run(&ctx, command).await,
        Command::Health(args) => health::run(&ctx, args).await,
        Command::Ca(command) => ca::run(&ctx, command).await,
        Command::Token(command) => token::run(&ctx, command).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Usage(args) => usage::run(&ctx, args).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Completion(args) => completion::run(args),
    }
}
