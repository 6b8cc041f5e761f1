//! `rackseed user add|list|delete`: console accounts on a running server, through its
//! REST API (with the admin token, which is how the first admin is made).

use super::args::UserCmd;
use super::client::{Client, enc};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::io::BufRead;
use std::process::ExitCode;

pub fn run(cmd: UserCmd) -> Result<ExitCode> {
    match cmd {
        UserCmd::Add { api, name, role } => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!(
                    "no password on standard input; run e.g. `read -rs P; printf '%s\\n' \"$P\" | rackseed user add {name}`"
                );
            }
            let u = Client::new(&api)?.post(
                "/api/users",
                &json!({"name": name, "role": role, "password": password}),
            )?;
            println!(
                "user {} added ({})",
                u["name"].as_str().unwrap_or("?"),
                u["role"].as_str().unwrap_or("?")
            );
        }
        UserCmd::List { api } => {
            let v = Client::new(&api)?.get("/api/users")?;
            if api.json {
                println!("{v}");
            } else {
                for u in v["users"].as_array().into_iter().flatten() {
                    println!(
                        "{} {}",
                        u["name"].as_str().unwrap_or("?"),
                        u["role"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        UserCmd::Delete { api, name } => {
            Client::new(&api)?.delete(&format!("/api/users/{}", enc(&name)))?;
            println!("user {name} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
