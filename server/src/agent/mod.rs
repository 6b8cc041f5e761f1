//! `rackseed agent`: what runs on the installed node. On first boot it applies the
//! node's network and ZFS plans (the generated scripts), collects facts, enrolls with
//! its single-use token and a key it generated, and from then on keeps the node's
//! replication set-up in line with its group view (long-poll over mutual TLS).
//!
//! Owns the agent's config file, its state directory and the calls it makes. The
//! decisions it relies on (facts parsing, replication rendering) are pure functions in
//! `facts` and `agent::replication`; its command line is in `cli::agent`.

pub mod collect;
pub mod commission;
pub mod replication;

use crate::enroll::{EnrollRequest, EnrollResponse};
use crate::groups::GroupView;
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// `/etc/rackseed/agent.toml`, written by the late command.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// rackseed's HTTP base URL (enrollment, first-boot events).
    pub server: String,
    /// The node's provisioning MAC.
    pub node: String,
    pub hostname: String,
    /// Single-use enrollment token (useless once enrolled).
    pub enroll_token: String,
    /// rackseed's CA certificate (PEM file) for the HTTPS API.
    #[serde(default = "default_ca")]
    pub ca: PathBuf,
    #[serde(default = "default_state")]
    pub state_dir: PathBuf,
    /// Where the generated network.sh and zfs.sh are.
    #[serde(default = "default_scripts")]
    pub scripts_dir: PathBuf,
}

fn default_ca() -> PathBuf {
    "/etc/rackseed/ca.crt".into()
}
fn default_state() -> PathBuf {
    "/var/lib/rackseed".into()
}
fn default_scripts() -> PathBuf {
    "/usr/local/lib/rackseed".into()
}

/// Fetches the group view and applies it; with `follow`, keeps watching for changes
/// and retries a failed sync every 10 seconds.
pub fn sync(cfg: &AgentConfig, follow: bool) -> Result<ExitCode> {
    let client = mtls_client(cfg)?;
    let mut version = None;
    loop {
        match sync_once(cfg, &client, version, if follow { 55 } else { 0 }) {
            Ok(v) => version = v,
            Err(e) if follow => {
                eprintln!(
                    "rackseed agent: sync failed: {}; retrying in 10s",
                    crate::error_chain(e.as_ref())
                );
                std::thread::sleep(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// The agent config at `path`.
pub fn load(path: &Path) -> Result<AgentConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read agent config `{}`", path.display()))?;
    toml::from_str(&text).with_context(|| format!("agent config `{}` is invalid", path.display()))
}

fn events_url(cfg: &AgentConfig) -> String {
    format!(
        "{}/enroll/{}/events",
        cfg.server.trim_end_matches('/'),
        cfg.enroll_token
    )
}

fn http() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Posts a first-boot event (best effort).
fn report(cfg: &AgentConfig, kind: &str, text: &str) {
    if let Ok(c) = http() {
        let _ = c
            .post(format!("{}/{kind}", events_url(cfg)))
            .body(text.to_string())
            .send();
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Runs a generated plan script (if present), passing the events URL.
fn run_script(cfg: &AgentConfig, name: &str) -> Result<()> {
    let path = cfg.scripts_dir.join(name);
    if !path.is_file() {
        println!("rackseed agent: {} not present; skipped", path.display());
        return Ok(());
    }
    println!("rackseed agent: running {}", path.display());
    let status = Command::new("sh")
        .arg(&path)
        .env("RACKSEED_EVENTS", events_url(cfg))
        .status()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !status.success() {
        // The script reported its own error event before exiting.
        bail!("{} failed ({status})", path.display());
    }
    Ok(())
}

fn enrolled_marker(cfg: &AgentConfig) -> PathBuf {
    cfg.state_dir.join("enrolled.json")
}

/// First boot: apply the plans, collect facts, enroll, set up replication.
pub fn first_boot(cfg: &AgentConfig) -> Result<ExitCode> {
    if enrolled_marker(cfg).exists() {
        println!("rackseed agent: already enrolled; syncing");
        let client = mtls_client(cfg)?;
        sync_once(cfg, &client, None, 0)?;
        return Ok(ExitCode::SUCCESS);
    }
    report(
        cfg,
        "first_boot",
        &format!(
            "agent {} started on {}",
            env!("CARGO_PKG_VERSION"),
            cfg.hostname
        ),
    );
    // A failing plan script has reported its error; enrollment still runs, so the
    // node's facts are compared with its plan and the exact difference is recorded.
    for script in ["network.sh", "zfs.sh"] {
        if let Err(e) = run_script(cfg, script) {
            eprintln!("rackseed agent: {}", crate::error_chain(e.as_ref()));
        }
    }
    let facts = collect::collect();
    let (key_pem, csr) = crate::ca::node_key_and_csr(&cfg.hostname)?;
    let repl_pub = replication_key()?;
    let req = EnrollRequest {
        token: cfg.enroll_token.clone(),
        node: cfg.node.clone(),
        facts,
        csr,
        replication_key: Some(repl_pub),
    };
    let url = format!("{}/enroll", cfg.server.trim_end_matches('/'));
    let client = http()?;
    // The network may still be settling after network.sh; retry connection errors only.
    let mut last = None;
    let mut resp = None;
    for _ in 0..30 {
        match client.post(&url).json(&req).send() {
            Ok(r) => {
                resp = Some(r);
                break;
            }
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_secs(4));
            }
        }
    }
    let resp = resp.ok_or_else(|| {
        anyhow!(
            "cannot reach rackseed at {url}: {}",
            last.map(|e| e.to_string()).unwrap_or_default()
        )
    })?;
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        eprintln!("rackseed agent: {msg} (HTTP {})", status.as_u16());
        println!("rackseed agent: enrollment refused");
        return Ok(ExitCode::FAILURE);
    }
    let enrolled: EnrollResponse =
        serde_json::from_str(&body).context("rackseed sent an invalid enrollment answer")?;
    write_private(&cfg.state_dir.join("node.key"), key_pem.as_bytes())?;
    std::fs::write(cfg.state_dir.join("node.crt"), &enrolled.certificate)?;
    std::fs::write(&cfg.ca, &enrolled.ca)
        .with_context(|| format!("cannot write `{}`", cfg.ca.display()))?;
    std::fs::write(
        enrolled_marker(cfg),
        serde_json::to_vec_pretty(
            &serde_json::json!({ "node_id": enrolled.node_id, "https": enrolled.https }),
        )?,
    )?;
    println!("rackseed agent: enrolled as node {}", enrolled.node_id);
    let client = mtls_client(cfg)?;
    sync_once(cfg, &client, None, 0)?;
    enable_units()?;
    println!("rackseed agent: first boot complete");
    Ok(ExitCode::SUCCESS)
}

/// The node's replication key pair (created once); returns the public key line.
fn replication_key() -> Result<String> {
    let key = Path::new(replication::REPL_KEY);
    if !key.exists() {
        if let Some(d) = key.parent() {
            std::fs::create_dir_all(d)?;
        }
        sh(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "rackseed-repl", "-f"])
            .arg(key))?;
    }
    Ok(
        std::fs::read_to_string(format!("{}.pub", replication::REPL_KEY))?
            .trim()
            .to_string(),
    )
}

const SYNC_UNIT: &str = "[Unit]\nDescription=rackseed agent: keep the group view applied\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nExecStart=/usr/local/sbin/rackseed agent sync --follow\nRestart=always\nRestartSec=10\n\n[Install]\nWantedBy=multi-user.target\n";

fn enable_units() -> Result<()> {
    std::fs::write("/etc/systemd/system/rackseed-agent-sync.service", SYNC_UNIT)?;
    sh(Command::new("systemctl").arg("daemon-reload"))?;
    sh(Command::new("systemctl").args(["enable", "--now", "rackseed-agent-sync.service"]))?;
    Ok(())
}

fn https_base(cfg: &AgentConfig) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(enrolled_marker(cfg)).context("not enrolled yet")?)?;
    v["https"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("rackseed gave no HTTPS URL at enrollment"))
}

fn mtls_client(cfg: &AgentConfig) -> Result<reqwest::blocking::Client> {
    let mut pem = std::fs::read(cfg.state_dir.join("node.crt"))
        .context("no node certificate; enroll first")?;
    pem.extend(std::fs::read(cfg.state_dir.join("node.key"))?);
    let identity =
        reqwest::Identity::from_pem(&pem).context("node certificate or key is unusable")?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cfg.ca)?)
        .context("CA certificate is unusable")?;
    Ok(reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(identity)
        .timeout(Duration::from_secs(90))
        .build()?)
}

/// Fetches the view (waiting up to `wait` seconds for a version newer than `have`) and
/// applies it. Returns the version now applied.
fn sync_once(
    cfg: &AgentConfig,
    client: &reqwest::blocking::Client,
    have: Option<i64>,
    wait: u64,
) -> Result<Option<i64>> {
    let base = https_base(cfg)?;
    let mut url = format!("{base}/agent/v1/view?wait={wait}");
    if let Some(v) = have {
        url.push_str(&format!("&version={v}"));
    }
    let resp = client
        .get(&url)
        .send()
        .with_context(|| format!("cannot reach {base}"))?;
    if !resp.status().is_success() {
        bail!("view request refused (HTTP {})", resp.status().as_u16());
    }
    let v: serde_json::Value = resp.json()?;
    if v["group"].is_null() {
        return Ok(None);
    }
    let view: GroupView =
        serde_json::from_value(v).context("rackseed sent an invalid group view")?;
    if have == Some(view.group.version) {
        return Ok(have);
    }
    apply(cfg, &view)?;
    println!(
        "rackseed agent: group {} version {} applied ({} peer(s), push to {})",
        view.group.name,
        view.group.version,
        view.peers.len(),
        view.replication.push_to.as_deref().unwrap_or("nobody")
    );
    Ok(Some(view.group.version))
}

fn update_block(path: &str, block: &str) -> Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let new = replication::with_block(&existing, block);
    if new != existing {
        write_private(Path::new(path), new.as_bytes())?;
    }
    Ok(())
}

/// Writes the replication set-up of `view`.
pub fn apply(cfg: &AgentConfig, view: &GroupView) -> Result<()> {
    std::fs::create_dir_all("/root/.ssh")?;
    update_block(
        "/root/.ssh/authorized_keys",
        &replication::render_authorized_keys(view),
    )?;
    update_block(
        "/root/.ssh/known_hosts",
        &replication::render_known_hosts(view),
    )?;
    for parent in replication::replica_parents(view) {
        let exists = Command::new("zfs")
            .args(["list", "-H", "-o", "name", &parent])
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            sh(Command::new("zfs").args(["create", "-p", "-o", "canmount=off", &parent]))?;
        }
    }
    std::fs::create_dir_all("/etc/sanoid")?;
    std::fs::write("/etc/sanoid/sanoid.conf", replication::render_sanoid(view))?;
    std::fs::create_dir_all(&cfg.scripts_dir)?;
    std::fs::write(
        cfg.scripts_dir.join("replicate.sh"),
        replication::render_replicate(view),
    )?;
    let (service, timer) = replication::render_units(view);
    std::fs::write("/etc/systemd/system/rackseed-replicate.service", service)?;
    std::fs::write("/etc/systemd/system/rackseed-replicate.timer", timer)?;
    std::fs::write(
        cfg.state_dir.join("view.json"),
        serde_json::to_vec_pretty(view)?,
    )?;
    sh(Command::new("systemctl").arg("daemon-reload"))?;
    if view.replication.push_to.is_some() {
        sh(Command::new("systemctl").args(["enable", "--now", "rackseed-replicate.timer"]))?;
    } else {
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "rackseed-replicate.timer"])
            .output();
    }
    Ok(())
}

/// Pushes the datasets now and reports the result to rackseed.
pub fn replicate(cfg: &AgentConfig) -> Result<ExitCode> {
    let script = cfg.scripts_dir.join("replicate.sh");
    let out = Command::new("sh")
        .arg(&script)
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success();
    let view: Option<GroupView> = std::fs::read(cfg.state_dir.join("view.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let what = view
        .as_ref()
        .map(|v| {
            format!(
                "{} to {}",
                v.replication
                    .pushes
                    .iter()
                    .map(|p| p.source.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                v.replication.push_to.as_deref().unwrap_or("nobody")
            )
        })
        .unwrap_or_default();
    let msg = if ok {
        format!("replicated {what}")
    } else {
        format!("replication of {what} failed: {}", text.trim())
    };
    println!("rackseed agent: {msg}");
    if let (Ok(client), Ok(base)) = (mtls_client(cfg), https_base(cfg)) {
        let kind = if ok {
            "replication"
        } else {
            "replication_failed"
        };
        let _ = client
            .post(format!("{base}/agent/v1/events/{kind}"))
            .body(msg)
            .send();
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
