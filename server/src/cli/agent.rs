//! `rackseed agent run|sync|replicate|facts`: hands each command to [`crate::agent`],
//! which owns what the agent does on the installed node.

use super::args::AgentCmd;
use crate::agent;
use anyhow::Result;
use std::process::ExitCode;

/// Runs a `rackseed agent` command.
pub fn run(cmd: AgentCmd) -> Result<ExitCode> {
    match cmd {
        AgentCmd::Commission {
            url,
            lldp_wait,
            dry_run,
        } => {
            let wait = std::time::Duration::from_secs(lldp_wait.min(300));
            if dry_run {
                let mut hw = agent::commission::collect();
                hw.lldp = agent::commission::listen_lldp(wait, &hw.nics);
                println!("{}", serde_json::to_string_pretty(&hw)?);
            } else {
                println!("{}", agent::commission::run(&url, wait)?);
            }
            Ok(ExitCode::SUCCESS)
        }
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
