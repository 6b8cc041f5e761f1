//! The command line: `serve`, `check`, and the commands that talk to a running server
//! over its REST API (`node …`, `group …`), plus `agent`, `image` and `profile`.
//!
//! Owns argument parsing, exit codes and human output. Uses `anyhow`; every failure
//! is printed as one line naming what failed and what to do.
//!
//! | submodule | owns |
//! |-----------|------|
//! | `args`    | the clap definitions of every command |
//! | `client`  | the REST client: base URL, admin token, the JSON error shape |
//! | `serve`, `check` | `rackseed serve`, `rackseed check` |
//! | `backup`  | `rackseed backup`, `rackseed restore`, handed to [`crate::backup::store`] |
//! | `health`  | `rackseed health`: the monitoring check (Nagios plugin exit codes, one line) |
//! | `node`, `group`, `user` | `rackseed node …`, `rackseed group …`, `rackseed user …` over the REST API |
//! | `agent`   | `rackseed agent …`, handed to [`crate::agent`] |
//! | `image`   | `rackseed image …` and the kernel check `rackseed check` prints |
//! | `profile` | `rackseed profile …`: check, schema, render |
//!
//! Nothing outside this module imports from it.

pub mod agent;
pub mod args;
pub mod backup;
pub mod check;
pub mod client;
pub mod group;
pub mod health;
pub mod image;
pub mod node;
pub mod profile;
pub mod rule;
pub mod serve;
pub mod user;

use anyhow::Result;
use args::{Cli, Command, LogFormat};
use clap::Parser;
use std::process::ExitCode;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return health::usage_error(e, &args),
    };
    init_tracing(&cli.log, cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rackseed: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `error: cause: cause` on one line.
pub fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Logs go to standard error: under systemd that is the journal, which stores plain
/// text, so colour escapes are written only when standard error is a terminal.
fn init_tracing(filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Backup { cfg, out } => backup::backup(&cfg, &out),
        Command::Restore { cfg, file, force } => backup::restore(&cfg, &file, force),
        Command::Health(args) => Ok(health::run(&args)),
        Command::Node(cmd) => node::run(cmd),
        Command::Group(cmd) => group::run(cmd),
        Command::User(cmd) => user::run(cmd),
        Command::Agent(cmd) => agent::run(cmd),
        Command::Image { cfg, cmd } => image::run(cmd, &cfg.load()?),
        Command::Profile(cmd) => profile::run(cmd),
        Command::Rule(cmd) => rule::run(cmd),
    }
}
