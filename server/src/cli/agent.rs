//! `rackseed agent run|sync|replicate|facts`: hands each command to [`crate::agent`],
//! which owns what the agent does on the installed node.

use super::args::AgentCmd;
use crate::agent;
use anyhow::Result;
use std::process::ExitCode;

/// Runs a `rackseed agent` command.
pub fn run(cmd: AgentCmd) -> Result<ExitCode> {
    match cmd {
        AgentCmd::Facts => {
            println!(
                "{}",
                serde_json::to_string_pretty(&agent::collect::collect())?
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentCmd::Run { config } => agent::first_boot(&agent::load(&config)?),
        AgentCmd::Sync { config, follow } => agent::sync(&agent::load(&config)?, follow),
        AgentCmd::Replicate { config } => agent::replicate(&agent::load(&config)?),
    }
}
