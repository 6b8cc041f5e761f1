//! `rackseed profile check|schema|render`: what a profile author runs before a profile
//! reaches a node.
//!
//! Owns these commands' arguments, output and exit codes. `check` validates and
//! renders every install file for a sample node with BIOS and UEFI, and runs the
//! partman recipe checker on the result; `render` writes exactly what a node receives
//! (the same [`crate::render::install_file`] the HTTP server uses).

use super::{Catalog, Resolved};
use crate::cli::ConfigArgs;
use crate::config::Config;
use crate::inventory::{Node, NodeState};
use crate::mac::MacAddr;
use crate::plan::Firmware;
use crate::render::{self, MirrorCtx, Templates, debconf, partman};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ProfileCmd {
    /// Validate profiles and render every install file for a sample node (BIOS and
    /// UEFI); exits non-zero on any error. Without FILES: the configured directory.
    Check {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Profile files; a profile they `extends` is read from beside them.
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the profile format (for editors).
    Schema,
    /// Write the preseed and every script and config a node with this profile
    /// receives, exactly as rackseed serves them.
    Render {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The profile name.
        #[arg(long)]
        profile: String,
        /// The node's MAC (its provisioning NIC).
        #[arg(long)]
        mac: String,
        /// The node's host name (default: `node-<mac>`).
        #[arg(long)]
        hostname: Option<String>,
        /// The node's inventory address.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// The node's vars (JSON), as for `node add --vars`. Default: sample vars.
        #[arg(long)]
        vars: Option<String>,
        /// The node's redundancy group (overrides the profile's).
        #[arg(long)]
        group: Option<String>,
        /// The firmware the node boots with.
        #[arg(long, default_value = "bios")]
        firmware: Firmware,
        /// The install token placed in URLs.
        #[arg(long, default_value = "TOKEN")]
        token: String,
        /// Write one file per install file into DIR instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a `rackseed profile` command.
pub fn run(cmd: ProfileCmd) -> Result<ExitCode> {
    match cmd {
        ProfileCmd::Schema => {
            print!("{}", super::schema::profile_schema());
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
                    let s = super::vars::sample(&resolved.profile);
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

/// A node for previews and checks: provisioning, the given firmware and vars.
pub fn sample_node(profile: &str, firmware: Firmware, vars: serde_json::Value) -> Node {
    Node {
        id: 1,
        mac: MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        hostname: Some("node1".into()),
        profile: Some(profile.into()),
        ip: None,
        state: NodeState::Provisioning,
        state_reason: None,
        arch: Some(
            match firmware {
                Firmware::Bios => "bios",
                Firmware::Uefi => "efi-x64",
            }
            .into(),
        ),
        vendor_class: None,
        image: None,
        group: None,
        failure_domain: None,
        created_at: 0,
        updated_at: 0,
        last_seen_at: None,
        vars,
    }
}

/// Renders every install file of `profile` for a sample node with each firmware and
/// checks the results: the partman recipes against the installer's grammar, the
/// preseed as the installer reads it. Returns the problems found.
pub fn check_rendering(
    t: &Templates,
    config: &Config,
    mirror: &MirrorCtx,
    profile: &Resolved,
) -> Vec<String> {
    let mut problems = Vec::new();
    for firmware in [Firmware::Bios, Firmware::Uefi] {
        let node = sample_node(
            &profile.name,
            firmware,
            super::vars::sample(&profile.profile),
        );
        let what = format!("profile {} ({})", profile.name, firmware.as_str());
        let ctx = match render::node_ctx(config, &node, profile, mirror.clone(), "TOKEN") {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{what}: {}", crate::error_chain(&e)));
                continue;
            }
        };
        let files = match render::install_files(t, &ctx) {
            Ok(f) => f,
            Err(e) => {
                problems.push(format!("{what}: {}", crate::error_chain(&e)));
                continue;
            }
        };
        let recipe = partman::expert_recipe(&ctx.plan.root, firmware);
        let parsed = match partman::check_expert_recipe(&recipe.one_line()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{what}: partman-auto/expert_recipe: {e}"));
                continue;
            }
        };
        if !ctx.partman.raid_arrays.is_empty() {
            let disks: Vec<String> = (0..ctx.plan.root.disks)
                .map(|i| format!("/dev/sd{}", char::from(b'a' + (i % 26) as u8)))
                .collect();
            let disks: Vec<&str> = disks.iter().map(String::as_str).collect();
            let raid = partman::raid_recipe(&ctx.partman.raid_arrays, &disks);
            match partman::check_raid_recipe(&raid) {
                Ok(entries) => {
                    if let Err(e) = partman::check_raid_against_recipe(&parsed, &entries, &disks) {
                        problems.push(format!("{what}: partman-auto-raid/recipe: {e}"));
                    }
                }
                Err(e) => problems.push(format!("{what}: partman-auto-raid/recipe: {e}")),
            }
        }
        if let Some((_, preseed)) = files.iter().find(|(n, _)| *n == "preseed.cfg") {
            match debconf::parse(preseed) {
                Ok(sel) => {
                    for l in debconf::lint(&sel) {
                        problems.push(format!("{what}: preseed.cfg: {l}"));
                    }
                    let held = debconf::values(&sel);
                    let got = held
                        .iter()
                        .find(|(q, _)| q == "partman-auto/expert_recipe")
                        .map(|(_, v)| v.as_str());
                    if got != Some(recipe.one_line().as_str()) {
                        problems.push(format!(
                            "{what}: preseed.cfg: the installer would read partman-auto/expert_recipe as {got:?}, not the recipe rackseed made"
                        ));
                    }
                }
                Err(e) => problems.push(format!("{what}: preseed.cfg: {e}")),
            }
        }
    }
    problems
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
    let wanted: Vec<String> = files.iter().map(|f| super::profile_name(f)).collect();
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

/// The profile names of `dir` (for messages).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| super::is_profile_file(p))
        .map(|p| super::profile_name(&p))
        .collect();
    v.sort();
    v
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
    let db = dir.join("inventory.db");
    if db.is_file()
        && let Ok(inv) = crate::inventory::Inventory::open(&db)
        && let Ok(Some(n)) = inv.node_by_mac(node.mac)
        && let Ok(Some(t)) = inv.current_enroll_token(n.id, crate::inventory::now_ms())
    {
        agent.token = t;
    }
}
