//! `rackseed rule list|test|apply`: commissioning rules on a running server, through
//! its REST API. Owns these commands' output.

use super::args::RuleCmd;
use super::client::Client;
use anyhow::{Context, Result};
use serde_json::Value;
use std::process::ExitCode;

/// Runs a `rackseed rule` command.
pub fn run(cmd: RuleCmd) -> Result<ExitCode> {
    match cmd {
        RuleCmd::List { api } => {
            let v = Client::new(&api)?.get("/api/rules")?;
            if api.json {
                println!("{v:#}");
                return Ok(ExitCode::SUCCESS);
            }
            let rules = v["rules"].as_array().cloned().unwrap_or_default();
            if rules.is_empty() {
                println!("no rules are configured ([[rules]] in the config)");
            }
            for (i, r) in rules.iter().enumerate() {
                let m: Vec<String> = r["match"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, p)| format!("{k} = {}", p.as_str().unwrap_or("?")))
                    .collect();
                println!(
                    "{}. {}: when {} → hostname {}, profile {}, failure domain {}, group {}",
                    i + 1,
                    r["name"].as_str().unwrap_or("?"),
                    if m.is_empty() {
                        "always".to_string()
                    } else {
                        m.join(" and ")
                    },
                    r["hostname"].as_str().unwrap_or("?"),
                    r["profile"].as_str().unwrap_or("?"),
                    r["failure_domain"].as_str().unwrap_or("-"),
                    r["group"].as_str().unwrap_or("-"),
                );
            }
        }
        RuleCmd::Test { api, node, facts } => {
            let body = match (node, facts) {
                (Some(n), _) => serde_json::json!({ "node": n }),
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read facts file {}", path.display()))?;
                    let input: Value = serde_json::from_str(&text).with_context(|| {
                        format!(
                            "{} is not JSON ({{\"mac\": …, \"dhcp\": {{…}}, \"hw\": {{…}}}})",
                            path.display()
                        )
                    })?;
                    serde_json::json!({ "input": input })
                }
                (None, None) => anyhow::bail!("give --node NODE or --facts FILE"),
            };
            let v = Client::new(&api)?.post("/api/rules/test", &body)?;
            if api.json {
                println!("{v:#}");
            } else {
                for line in v["trace"].as_array().into_iter().flatten() {
                    println!("  {}", line.as_str().unwrap_or("?"));
                }
                match v["assignment"].as_object() {
                    Some(a) => println!(
                        "matches rule {}: hostname {}, profile {}, failure domain {}, group {}",
                        a["rule"].as_str().unwrap_or("?"),
                        a["hostname"].as_str().unwrap_or("?"),
                        a["profile"].as_str().unwrap_or("?"),
                        a["failure_domain"].as_str().unwrap_or("-"),
                        a["group"].as_str().unwrap_or("-"),
                    ),
                    None => {
                        println!("matches no rule: the machine waits as commissioned");
                        return Ok(ExitCode::from(1));
                    }
                }
            }
        }
        RuleCmd::Apply { api } => {
            let v = Client::new(&api)?.post("/api/rules/apply", &Value::Null)?;
            if api.json {
                println!("{v:#}");
            } else {
                let a = v["assigned"].as_array().cloned().unwrap_or_default();
                println!("{} commissioned node(s) assigned", a.len());
                for n in a {
                    println!(
                        "  {} ({}): {}, profile {}",
                        n["hostname"].as_str().unwrap_or("?"),
                        n["mac"].as_str().unwrap_or("?"),
                        n["state"].as_str().unwrap_or("?"),
                        n["profile"].as_str().unwrap_or("?")
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
