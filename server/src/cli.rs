//! The command line: `serve`, `check`, and the commands that talk to a running server
//! over its REST API (`node …`).
//!
//! Owns argument parsing, exit codes and human output. Uses `anyhow`; every failure
//! is printed as one line naming what failed and what to do.

use crate::config::Config;
use crate::inventory::{Event, NodeState};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "rackseed",
    version,
    about = "Bare-metal provisioning appliance: PXE → Debian installer → enrollment"
)]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. `info`, `rackseed=debug`.
    #[arg(long, global = true, env = "RACKSEED_LOG", default_value = "info")]
    pub log: String,
    /// Log line format: `text` (colours only when standard error is a terminal) or
    /// `json` (one JSON object per line, for log shippers).
    #[arg(
        long,
        global = true,
        env = "RACKSEED_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the appliance: DHCP, TFTP, HTTP, syslog.
    Serve(ConfigArgs),
    /// Validate config, profiles, installer files and every template; non-zero on error.
    Check(ConfigArgs),
    /// Manage nodes on a running server.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage redundancy groups on a running server.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Run on an installed node: apply plans, enroll, keep replication in line.
    #[command(subcommand)]
    Agent(crate::agent::AgentCmd),
    /// Installer images: fetch, import, list, verify, gc.
    Image {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[command(subcommand)]
        cmd: crate::images::cli::ImageCmd,
    },
    /// Profiles: check, JSON Schema, render what a node receives.
    #[command(subcommand)]
    Profile(crate::profiles::cli::ProfileCmd),
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Config file; the embedded defaults when absent.
    #[arg(long, short, env = "RACKSEED_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `server.data_dir`.
    #[arg(long, env = "RACKSEED_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Overrides `profiles.dir`.
    #[arg(long, env = "RACKSEED_PROFILES")]
    pub profiles: Option<PathBuf>,
}

impl ConfigArgs {
    /// The validated config with command-line overrides applied.
    ///
    /// With the embedded defaults (no config file) and no `--profiles`, profiles are
    /// read from `/etc/rackseed/profiles` when it exists, else from `./profiles` when
    /// that exists (and image manifests likewise from `/etc/rackseed/images` or
    /// `./images`), so the commands work as written both on an installed appliance
    /// and in a clone of the repository.
    pub fn load(&self) -> Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::load(p)?,
            None => {
                let mut c = Config::embedded()?;
                let here = PathBuf::from("profiles");
                if self.profiles.is_none() && !c.profiles.dir.is_dir() && here.is_dir() {
                    c.profiles.dir = here;
                }
                let manifests = PathBuf::from("images");
                if !c.images.manifests.is_dir() && manifests.is_dir() {
                    c.images.manifests = manifests;
                }
                c
            }
        };
        if let Some(d) = &self.data_dir {
            c.server.data_dir = d.clone();
            c.images.store = d.join("images");
        }
        if let Some(p) = &self.profiles {
            c.profiles.dir = p.clone();
        }
        Ok(c)
    }
}

#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Base URL of the running server's admin API (`server.admin`).
    #[arg(long, env = "RACKSEED_URL", default_value = "http://127.0.0.1:8081")]
    pub url: String,
    /// Admin token; read from --token-file when absent.
    #[arg(long, env = "RACKSEED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the admin token.
    #[arg(
        long,
        env = "RACKSEED_TOKEN_FILE",
        default_value = "/var/lib/rackseed/admin.token"
    )]
    pub token_file: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Add a node (or assign a discovered one) with hostname and profile.
    Add {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        hostname: String,
        #[arg(long)]
        profile: String,
        /// Fixed address (a DHCP reservation in authoritative mode).
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// Hold the node in `ready` instead of installing on its next boot.
        #[arg(long)]
        ready: bool,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        failure_domain: Option<String>,
        /// Node-level overrides of profile values, as a JSON object, e.g.
        /// '{"addresses": {"br-storage": "203.0.113.11/24"}}'.
        #[arg(long)]
        vars: Option<String>,
    },
    /// List nodes.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one node (by id, MAC or hostname).
    Show {
        #[command(flatten)]
        api: ApiArgs,
        node: String,
    },
    /// Delete a node with its timeline.
    Rm {
        #[command(flatten)]
        api: ApiArgs,
        node: String,
    },
    /// Send a node back to `provisioning` with a fresh install token.
    Reprovision {
        #[command(flatten)]
        api: ApiArgs,
        node: String,
    },
    /// Move a `ready` node to `provisioning`.
    Provision {
        #[command(flatten)]
        api: ApiArgs,
        node: String,
    },
    /// Print a node's timeline.
    Events {
        #[command(flatten)]
        api: ApiArgs,
        node: String,
        /// Keep printing new events as they arrive.
        #[arg(long, short)]
        follow: bool,
        /// With --follow: exit 0 once the node reaches this state.
        #[arg(long)]
        until: Option<NodeState>,
        /// With --follow: exit 1 after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Only events of this kind (e.g. `syslog`, `state`).
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Create a group.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        /// Members needed for the group to be complete.
        #[arg(long)]
        min_members: Option<u32>,
        /// Label members must not share (e.g. `rack`); nodes carry the value.
        #[arg(long)]
        failure_domain: Option<String>,
        /// Replication interval, e.g. `15m`.
        #[arg(long)]
        interval: Option<String>,
        /// sanoid retention, e.g. `frequently=4,hourly=24,daily=7`.
        #[arg(long)]
        retention: Option<String>,
        /// A dataset each member replicates (repeatable), e.g. `tank/data`.
        #[arg(long = "dataset")]
        datasets: Vec<String>,
        /// The interface peers replicate over, e.g. `br-storage`.
        #[arg(long)]
        replication_network: Option<String>,
    },
    /// List groups with their members.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show a group: settings, members, replication plan.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
    },
    /// Add a node to a group (placement rules apply).
    Add {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        node: String,
    },
    /// Remove a node from a group.
    Remove {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        node: String,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Serve(args) => {
            let config = args.load()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                let cancel = tokio_util::sync::CancellationToken::new();
                let c = cancel.clone();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!("shutting down");
                    c.cancel();
                });
                crate::serve::serve(config, cancel).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => check(&args),
        Command::Node(cmd) => node(cmd),
        Command::Group(cmd) => group(cmd),
        Command::Agent(cmd) => crate::agent::run(cmd),
        Command::Image { cfg, cmd } => crate::images::cli::run(cmd, &cfg.load()?),
        Command::Profile(cmd) => crate::profiles::cli::run(cmd),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
}

/// `rackseed check`: everything a start would check, plus rendering every template for
/// every profile with a sample node. Prints each problem; fails if there is any.
fn check(args: &ConfigArgs) -> Result<ExitCode> {
    let config = args.load()?;
    let mut problems: Vec<String> = Vec::new();
    println!(
        "config {}: ok (dhcp {:?}, advertise {})",
        config.source, config.dhcp.mode, config.server.advertise
    );
    let shim = config.installer.dir.join("bootnetx64.efi");
    let grub = config.installer.dir.join("grubx64.efi");
    let mut needed = vec![
        ("boot.ipxe_bios", &config.boot.ipxe_bios),
        ("boot.ipxe_efi", &config.boot.ipxe_efi),
        ("boot.ipxe_snponly", &config.boot.ipxe_snponly),
    ];
    if config.boot.efi_binary == crate::config::EfiBinary::Shim {
        needed.push(("boot.efi_binary = \"shim\": installer.dir", &shim));
        needed.push(("boot.efi_binary = \"shim\": installer.dir", &grub));
    }
    for (what, p) in needed {
        if !p.is_file() {
            problems.push(format!(
                "{}: {what}: `{}` does not exist; install Debian's `ipxe` package or fix the path",
                config.source,
                p.display()
            ));
        }
    }
    match crate::state::resolve_installer(&config) {
        Ok(i) => {
            println!(
                "installer {}: {} + {}",
                i.name,
                i.kernel.display(),
                i.initrd.display()
            );
            crate::images::cli::check_kernel(&config);
        }
        Err(e) => problems.push(e.to_string()),
    }
    let mirror = match crate::state::resolve_mirror(&config) {
        Ok(m) => {
            println!(
                "mirror: {}://{}{} ({})",
                m.protocol, m.host, m.directory, m.suite
            );
            Some(m)
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let catalog = if config.profiles.dir.is_dir() {
        match crate::profiles::Catalog::load(&config.profiles.dir) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.extend(e.0.iter().map(|x| x.to_string()));
                None
            }
        }
    } else {
        problems.push(format!(
            "{}: profiles.dir: `{}` is not a directory",
            config.source,
            config.profiles.dir.display()
        ));
        None
    };
    if let (Some(cat), Some(mirror)) = (&catalog, &mirror) {
        let t = crate::render::Templates::embedded();
        for name in cat.names() {
            let Some(p) = cat.get(name) else { continue };
            let found = crate::profiles::cli::check_rendering(&t, &config, mirror, &p);
            if found.is_empty() {
                println!("profile {name}: ok");
            }
            problems.extend(found);
        }
        if let Some(d) = &config.profiles.default
            && cat.get(d).is_none()
        {
            problems.push(format!(
                "{}: profiles.default: no profile named `{d}`",
                config.source
            ));
        }
    }
    if problems.is_empty() {
        println!("check passed");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!("check failed: {} problem(s)", problems.len());
        Ok(ExitCode::FAILURE)
    }
}

/// A node used to render previews and checks.
pub fn sample_node(profile: &str) -> crate::inventory::Node {
    crate::inventory::Node {
        id: 1,
        mac: crate::mac::MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        hostname: Some("node1".into()),
        profile: Some(profile.into()),
        ip: None,
        state: NodeState::Provisioning,
        state_reason: None,
        arch: None,
        vendor_class: None,
        image: None,
        group: None,
        failure_domain: None,
        created_at: 0,
        updated_at: 0,
        last_seen_at: None,
        vars: serde_json::Value::Null,
    }
}

/// A blocking client for the admin API.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client for the server `api` names.
    pub fn new(api: &ApiArgs) -> Result<Client> {
        let token = match &api.token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(&api.token_file)
                .with_context(|| {
                    format!(
                        "cannot read admin token `{}`; pass --token or --token-file",
                        api.token_file.display()
                    )
                })?
                .trim()
                .to_string(),
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()?;
        Ok(Client {
            base: api.url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("cannot reach rackseed at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        if text.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str(&text).context("server sent invalid JSON")
        }
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }
    pub fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Formats a Unix-ms time as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn fmt_time(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    let f = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
    );
    t.format(f).unwrap_or_else(|_| ms.to_string())
}

fn print_node(v: &Value) {
    let s = |k: &str| {
        v[k].as_str().map(str::to_string).unwrap_or_else(|| {
            if v[k].is_null() {
                "-".into()
            } else {
                v[k].to_string()
            }
        })
    };
    println!(
        "{:<5} {:<17} {:<24} {:<18} {:<13} {:<15} {}",
        s("id"),
        s("mac"),
        s("hostname"),
        s("profile"),
        s("state"),
        s("ip"),
        match v["stalled"]["step"].as_str() {
            Some(step) => format!("STALLED in {step}: see `node show`"),
            None => v["state_reason"].as_str().unwrap_or("").to_string(),
        }
    );
}

/// Formats a Unix-ms time in the given offset as `YYYY-MM-DD HH:MM:SS`.
pub fn fmt_local(ms: i64, offset: time::UtcOffset) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.to_offset(offset)
        .format(f)
        .unwrap_or_else(|_| ms.to_string())
}

/// `4 min`, `2 h 5 min`, `12 s`: a duration for people.
pub fn fmt_ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

/// The number of events `node show` lists.
const SUMMARY_EVENTS: usize = 12;

/// What `rackseed node show` prints: who the node is, its state and for how long, why it
/// is stuck or failed, and its last events, in local time.
pub fn node_summary(v: &Value, events: &[Event], now: i64, offset: time::UtcOffset) -> String {
    use std::fmt::Write;
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut out = String::new();
    let name = v["hostname"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("node {}", s("mac")));
    let _ = writeln!(out, "{name} ({}), id {}", s("mac"), v["id"]);
    let state = s("state");
    let since = v["updated_at"].as_i64().unwrap_or(0);
    let _ = writeln!(
        out,
        "  state         {state} since {} ({} ago)",
        fmt_local(since, offset),
        fmt_ago(now - since)
    );
    let last_change = events
        .iter()
        .rev()
        .find(|e| e.kind == "state")
        .map(|e| e.at)
        .unwrap_or(since);
    let stalled = events
        .iter()
        .rev()
        .take_while(|e| e.at >= last_change)
        .find(|e| e.kind == "stalled" || e.kind == "question");
    if state == "failed" {
        let _ = writeln!(
            out,
            "  why           {}",
            v["state_reason"].as_str().unwrap_or("no reason recorded")
        );
    } else if let Some(msg) = v["stalled"]["message"].as_str() {
        let _ = writeln!(out, "  STALLED       {msg}");
    } else if let Some(e) = stalled {
        let _ = writeln!(
            out,
            "  STALLED       {} ({} ago)",
            e.message,
            fmt_ago(now - e.at)
        );
    }
    let _ = writeln!(out, "  profile       {}", s("profile"));
    let _ = writeln!(out, "  address       {}", s("ip"));
    let arch = match (v["arch"].as_str(), v["vendor_class"].as_str()) {
        (Some(a), Some(c)) => format!("{a} ({c})"),
        (Some(a), None) => a.to_string(),
        (None, Some(c)) => c.to_string(),
        (None, None) => "-".to_string(),
    };
    let _ = writeln!(out, "  firmware      {arch}");
    let group = match (v["group"].as_str(), v["failure_domain"].as_str()) {
        (Some(g), Some(d)) => format!("{g}, failure domain {d}"),
        (Some(g), None) => g.to_string(),
        (None, Some(d)) => format!("none, failure domain {d}"),
        (None, None) => "none".to_string(),
    };
    let _ = writeln!(out, "  group         {group}");
    if let Some(seen) = v["last_seen_at"].as_i64() {
        let _ = writeln!(
            out,
            "  last seen     {} ({} ago)",
            fmt_local(seen, offset),
            fmt_ago(now - seen)
        );
    }
    let _ = writeln!(
        out,
        "  install token {}",
        if v["install_token_valid"].as_bool() == Some(true) {
            "valid"
        } else {
            "none"
        }
    );
    let _ = writeln!(
        out,
        "  added         {}",
        fmt_local(v["created_at"].as_i64().unwrap_or(0), offset)
    );
    if events.is_empty() {
        let _ = writeln!(out, "no events yet");
    } else {
        let shown = events.len().min(SUMMARY_EVENTS);
        let _ = writeln!(out, "last {shown} of {} events:", events.len());
        for e in &events[events.len() - shown..] {
            let _ = writeln!(
                out,
                "  {}  {:<14} {}",
                fmt_local(e.at, offset),
                e.kind,
                e.message
            );
        }
    }
    out
}

fn print_event(e: &Event) {
    println!("{}  {:<14} {}", fmt_time(e.at), e.kind, e.message);
}

fn node(cmd: NodeCmd) -> Result<ExitCode> {
    match cmd {
        NodeCmd::Add {
            api,
            mac,
            hostname,
            profile,
            ip,
            ready,
            group,
            failure_domain,
            vars,
        } => {
            let c = Client::new(&api)?;
            let vars: Value = match vars {
                Some(v) => serde_json::from_str(&v).context("--vars must be a JSON object")?,
                None => Value::Null,
            };
            let body = serde_json::json!({
                "mac": mac, "hostname": hostname, "profile": profile, "ip": ip,
                "provision": !ready, "group": group, "failure_domain": failure_domain, "vars": vars,
            });
            let n = c.post("/api/nodes", &body)?;
            if api.json {
                println!("{n:#}");
            } else {
                println!(
                    "node {} ({}) added: {}",
                    n["hostname"].as_str().unwrap_or("?"),
                    n["mac"].as_str().unwrap_or("?"),
                    n["state"].as_str().unwrap_or("?")
                );
            }
        }
        NodeCmd::List { api } => {
            let v = Client::new(&api)?.get("/api/nodes")?;
            if api.json {
                println!("{v:#}");
            } else {
                println!(
                    "{:<5} {:<17} {:<24} {:<18} {:<13} {:<15} REASON",
                    "ID", "MAC", "HOSTNAME", "PROFILE", "STATE", "IP"
                );
                for n in v["nodes"].as_array().into_iter().flatten() {
                    print_node(n);
                }
            }
        }
        NodeCmd::Show { api, node } => {
            // Read the local offset while the process has one thread (the HTTP client
            // starts more); it is then applied to every time shown.
            let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
            let c = Client::new(&api)?;
            let v = c.get(&format!("/api/nodes/{}", enc(&node)))?;
            if api.json {
                println!("{v:#}");
            } else {
                let page = c.get(&format!(
                    "/api/nodes/{}/events?after=0&limit=5000",
                    enc(&node)
                ))?;
                let events: Vec<Event> = serde_json::from_value(page["events"].clone())
                    .map_err(|e| anyhow!("bad event page: {e}"))?;
                print!(
                    "{}",
                    node_summary(&v, &events, crate::inventory::now_ms(), offset)
                );
            }
        }
        NodeCmd::Rm { api, node } => {
            Client::new(&api)?.delete(&format!("/api/nodes/{}", enc(&node)))?;
            println!("node {node} deleted");
        }
        NodeCmd::Reprovision { api, node } => {
            let n = Client::new(&api)?.post(
                &format!("/api/nodes/{}/reprovision", enc(&node)),
                &Value::Null,
            )?;
            println!("node {node}: {}", n["state"].as_str().unwrap_or("?"));
        }
        NodeCmd::Provision { api, node } => {
            let n = Client::new(&api)?.post(
                &format!("/api/nodes/{}/provision", enc(&node)),
                &Value::Null,
            )?;
            println!("node {node}: {}", n["state"].as_str().unwrap_or("?"));
        }
        NodeCmd::Events {
            api,
            node,
            follow,
            until,
            timeout,
            kind,
        } => {
            return follow_events(&api, &node, follow, until, timeout, kind.as_deref());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn follow_events(
    api: &ApiArgs,
    node: &str,
    follow: bool,
    until: Option<NodeState>,
    timeout: Option<u64>,
    kind: Option<&str>,
) -> Result<ExitCode> {
    let c = Client::new(api)?;
    let started = Instant::now();
    let mut after = 0i64;
    loop {
        let wait = if follow { 25 } else { 0 };
        let mut path = format!("/api/nodes/{}/events?after={after}&wait={wait}", enc(node));
        if let Some(k) = kind {
            path.push_str(&format!("&kind={}", enc(k)));
        }
        let page = c.get(&path)?;
        let events: Vec<Event> = serde_json::from_value(page["events"].clone())
            .map_err(|e| anyhow!("bad event page: {e}"))?;
        for e in &events {
            if api.json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                print_event(e);
            }
        }
        after = page["last"].as_i64().unwrap_or(after);
        let state = page["node"]["state"].as_str().unwrap_or("");
        if let Some(u) = until
            && state == u.as_str()
        {
            return Ok(ExitCode::SUCCESS);
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(t) = timeout
            && started.elapsed() > Duration::from_secs(t)
        {
            eprintln!(
                "rackseed: node {node} is {state} after {t}s{}",
                until.map(|u| format!(", not {u}")).unwrap_or_default()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
}

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

fn group(cmd: GroupCmd) -> Result<ExitCode> {
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
