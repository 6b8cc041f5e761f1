//! `rackseed profile check|schema|render`: what a profile author runs before a profile
//! reaches a node.
//!
//! Owns these commands' output and exit codes. `check` validates and renders every
//! install file for a sample node with BIOS and UEFI, and runs the partman recipe
//! checker on the result ([`crate::render::check_rendering`]); `render` writes exactly
//! what a node receives (the same [`crate::render::install_file`] the HTTP server uses).

use super::args::{ConfigArgs, ProfileCmd};
use crate::config::Config;
use crate::mac::MacAddr;
use crate::plan::sample_node;
use crate::profiles::{Catalog, Resolved};
use crate::render::{self, MirrorCtx, Templates, check_rendering};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs a `rackseed profile` command.
pub fn run(cmd: ProfileCmd) -> Result<ExitCode> {
    match cmd {
        ProfileCmd::Schema => {
            print!("{}", crate::profiles::schema::profile_schema());
            Ok(ExitCode::SUCCESS)
        }
        ProfileCmd::Check { cfg, files } => check(&cfg, &files),
        ProfileCmd::Render {
            cfg,
            profile,
            mac,
            hostname,
            ip,
            vars,
            group,
            firmware,
            token,
            out,
        } => {
            let config = cfg.load()?;
            let catalog =
                Catalog::load(&config.profiles.dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            let resolved = catalog.get(&profile).with_context(|| {
                format!(
                    "no profile named `{profile}` in {} (profiles: {})",
                    config.profiles.dir.display(),
                    catalog.names().collect::<Vec<_>>().join(", ")
                )
            })?;
            let mac: MacAddr = mac.parse().map_err(|e| anyhow::anyhow!("--mac: {e}"))?;
            let vars = match vars {
                Some(v) => serde_json::from_str(&v).context("--vars must be a JSON object")?,
                None => {
                    let s = crate::profiles::vars::sample(&resolved.profile);
                    if !s.is_null() {
                        eprintln!("rackseed: no --vars given; using sample vars {s}");
                    }
                    s
                }
            };
            let mut node = sample_node(&profile, firmware, vars);
            node.mac = mac;
            node.hostname = hostname;
            node.ip = ip;
            node.group = group;
            let mirror = crate::state::resolve_mirror(&config)?;
            let t = Templates::embedded();
            let mut ctx = render::node_ctx(&config, &node, &resolved, mirror, &token)
                .map_err(|e| anyhow::anyhow!("{}", crate::error_chain(&e)))?;
            preview_agent(&config, &node, &mut ctx.agent);
            let files = render::install_files(&t, &ctx)?;
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create `{}`", dir.display()))?;
                    for (name, body) in &files {
                        let path = dir.join(name);
                        std::fs::write(&path, body)
                            .with_context(|| format!("cannot write `{}`", path.display()))?;
                        println!("wrote {} ({} bytes)", path.display(), body.len());
                    }
                }
                None => {
                    for (name, body) in &files {
                        println!("==> {name} <==");
                        print!("{body}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(cfg: &ConfigArgs, files: &[PathBuf]) -> Result<ExitCode> {
    let config = cfg.load()?;
    let (catalog, source) = if files.is_empty() {
        if !config.profiles.dir.is_dir() {
            bail!(
                "{}: profiles.dir: `{}` is not a directory; pass profile files or --profiles DIR",
                config.source,
                config.profiles.dir.display()
            );
        }
        (
            Catalog::load(&config.profiles.dir),
            config.profiles.dir.display().to_string(),
        )
    } else {
        for f in files {
            if !f.is_file() {
                bail!("`{}` is not a file", f.display());
            }
        }
        (
            Catalog::load_files(files),
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    let catalog = match catalog {
        Ok(c) => c,
        Err(e) => {
            for p in &e.0 {
                eprintln!("error: {p}");
            }
            eprintln!("profile check failed: {} problem(s) in {source}", e.0.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    // The mirror only shapes URLs in the preseed; check with a placeholder when this
    // host has none configured.
    let mirror = crate::state::resolve_mirror(&config).unwrap_or_else(|_| MirrorCtx {
        protocol: "http".into(),
        host: "mirror.example".into(),
        directory: "/debian".into(),
        suite: config.installer.suite.clone(),
        proxy: String::new(),
    });
    let t = Templates::embedded();
    let wanted: Vec<String> = files
        .iter()
        .map(|f| crate::profiles::profile_name(f))
        .collect();
    let mut problems = Vec::new();
    for name in catalog.names() {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let Some(p) = catalog.get(name) else { continue };
        let found = check_rendering(&t, &config, &mirror, &p);
        if found.is_empty() {
            println!("profile {name}: ok ({})", summary(&p));
            for note in p.profile.switch_notes() {
                println!("  switch: {note}");
            }
        }
        problems.extend(found);
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!("profile check failed: {} problem(s)", problems.len());
        Ok(ExitCode::FAILURE)
    }
}

/// One line about a profile: `raid1 over 2 disks; pools tank; bonds bond0; …`.
pub fn summary(p: &Resolved) -> String {
    let pr = &p.profile;
    let r = &pr.storage.root;
    let mut parts = vec![format!(
        "root {} {}{}",
        r.raid,
        r.filesystem,
        r.swap.map(|s| format!(" + {s} swap")).unwrap_or_default()
    )];
    if !pr.storage.zfs.pools.is_empty() {
        parts.push(format!(
            "pools {}",
            pr.storage
                .zfs
                .pools
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(n) = &pr.network {
        let names = |v: Vec<String>| v.join(", ");
        if !n.bonds.is_empty() {
            parts.push(format!(
                "bonds {}",
                names(
                    n.bonds
                        .iter()
                        .map(|b| format!("{} ({})", b.name, b.mode))
                        .collect()
                )
            ));
        }
        if !n.vlans.is_empty() {
            parts.push(format!(
                "VLANs {}",
                names(n.vlans.iter().map(|v| v.ifname()).collect())
            ));
        }
        if !n.bridges.is_empty() {
            parts.push(format!(
                "bridges {}",
                names(n.bridges.iter().map(|b| b.name.clone()).collect())
            ));
        }
    }
    if let Some(g) = &pr.group {
        parts.push(format!("group {g}"));
    }
    parts.join("; ")
}

/// Fills the agent part of a preview as the server would: this binary's digest, and,
/// when the config's data directory belongs to a server that knows the node, its CA
/// and the node's current enrollment token.
fn preview_agent(config: &Config, node: &crate::inventory::Node, agent: &mut render::AgentCtx) {
    if let Ok(bin) = crate::state::agent_binary() {
        agent.sha256 = bin.sha256;
    }
    let dir = &config.server.data_dir;
    if let Ok(ca) = std::fs::read_to_string(dir.join("ca/ca.crt")) {
        agent.ca_pem = ca;
    }
    let location = config.inventory_location();
    let exists = match &location {
        crate::inventory::InventoryLocation::Sqlite(db) => db.is_file(),
        crate::inventory::InventoryLocation::Postgres(_) => true,
    };
    if exists
        && let Ok(inv) = crate::inventory::Inventory::open_at(&location)
        && let Ok(Some(n)) = inv.node_by_mac(node.mac)
        && let Ok(Some(t)) = inv.current_enroll_token(n.id, crate::inventory::now_ms())
    {
        agent.token = t;
    }
}
