//! `rackseed group create|list|show|add|remove`: redundancy groups on a running
//! server, through its REST API. Owns these commands' output.

use super::args::{ApiArgs, GroupCmd};
use super::client::{Client, enc};
use anyhow::Result;
use serde_json::Value;
use std::process::ExitCode;

fn print_group(v: &Value) {
    let g = if v["group"].is_object() {
        &v["group"]
    } else {
        v
    };
    println!(
        "group {}: min {} member(s), failure domain {}, every {}s, retention {}, datasets {}, replication over {} (version {})",
        g["name"].as_str().unwrap_or("?"),
        g["min_members"],
        g["failure_domain"].as_str().unwrap_or("-"),
        g["interval_secs"],
        g["retention"].as_str().unwrap_or("-"),
        g["datasets"]
            .as_array()
            .map(|d| d
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default(),
        g["replication_network"].as_str().unwrap_or("-"),
        g["version"],
    );
}

/// Runs a `rackseed group` command.
pub fn run(cmd: GroupCmd) -> Result<ExitCode> {
    match cmd {
        GroupCmd::Create {
            api,
            name,
            min_members,
            failure_domain,
            interval,
            retention,
            datasets,
            replication_network,
        } => {
            let body = serde_json::json!({
                "name": name, "min_members": min_members, "failure_domain": failure_domain, "interval": interval,
                "retention": retention, "datasets": datasets, "replication_network": replication_network,
            });
            let g = Client::new(&api)?.post("/api/groups", &body)?;
            if api.json {
                println!("{g:#}")
            } else {
                print_group(&g)
            }
        }
        GroupCmd::List { api } => {
            let v = Client::new(&api)?.get("/api/groups")?;
            if api.json {
                println!("{v:#}");
            } else {
                for g in v["groups"].as_array().into_iter().flatten() {
                    print_group(g);
                    let members: Vec<&str> = g["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m.as_str())
                        .collect();
                    println!(
                        "  members: {}",
                        if members.is_empty() {
                            "none".to_string()
                        } else {
                            members.join(", ")
                        }
                    );
                }
            }
        }
        GroupCmd::Show { api, name } => {
            let v = Client::new(&api)?.get(&format!("/api/groups/{}", enc(&name)))?;
            print_group_detail(&api, &v);
        }
        GroupCmd::Add { api, name, node } => {
            let v = Client::new(&api)?.post(
                &format!("/api/groups/{}/members", enc(&name)),
                &serde_json::json!({ "node": node }),
            )?;
            print_group_detail(&api, &v);
        }
        GroupCmd::Remove { api, name, node } => {
            let v = Client::new(&api)?.delete(&format!(
                "/api/groups/{}/members/{}",
                enc(&name),
                enc(&node)
            ))?;
            print_group_detail(&api, &v);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_group_detail(api: &ApiArgs, v: &Value) {
    if api.json {
        println!("{v:#}");
        return;
    }
    print_group(v);
    for m in v["members"].as_array().into_iter().flatten() {
        let host = m["hostname"].as_str().unwrap_or("?");
        println!(
            "  {:<20} {:<12} {:<14} {:<16} replicates to {}",
            host,
            m["state"].as_str().unwrap_or("?"),
            m["failure_domain"].as_str().unwrap_or("-"),
            m["replication_address"].as_str().unwrap_or("-"),
            v["replication"][host].as_str().unwrap_or("-")
        );
    }
}
