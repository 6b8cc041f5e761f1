//! The clap definitions of every `rackseed` command: arguments, flags, environment
//! fallbacks and help texts, and [`ConfigArgs::load`], which turns the config flags
//! into a validated [`Config`]. Runs no command; the sibling modules do.

use crate::config::Config;
use crate::inventory::NodeState;
use crate::plan::Firmware;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    /// Monitoring check (Nagios plugin) of a running server; exits 0, 1, 2 or 3.
    ///
    /// Checks services, stalled nodes, replication lag, free disk space and
    /// certificate expiry. Prints one line and exits 0 (OK), 1 (WARNING), 2
    /// (CRITICAL, also when the server does not answer) or 3 (UNKNOWN: bad arguments,
    /// an answer it cannot read). With `--json`: one line of JSON with the state, that
    /// line and the server's facts.
    Health(HealthArgs),
    /// Write the appliance's state to one archive (mode 0600): a consistent snapshot
    /// of the inventory with the lease journal's writes, the CA, the admin token, the
    /// BMC key and the image store. Works while rackseed runs.
    Backup {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The archive to write (replaced whole, never left half-written).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore an archive of `rackseed backup` into the data directory and image
    /// store, after checking every file's SHA-256. Refused while a rackseed runs on
    /// that data directory, for a backup of a newer schema, and over existing state
    /// without --force.
    Restore {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The archive.
        file: PathBuf,
        /// Replace the state already in the data directory (rackseed must be stopped).
        #[arg(long)]
        force: bool,
    },
    /// Manage nodes on a running server.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage redundancy groups on a running server.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Manage console (web UI) accounts on a running server.
    #[command(subcommand)]
    User(UserCmd),
    /// Run on an installed node: apply plans, enroll, keep replication in line.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Installer images: fetch, import, list, verify, gc.
    Image {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Profiles: check, JSON Schema, render what a node receives.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Commissioning rules on a running server: list, test, apply.
    #[command(subcommand)]
    Rule(RuleCmd),
}

#[derive(Subcommand, Debug)]
pub enum RuleCmd {
    /// The configured rules, in order, and the facts they can match.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Which rule a machine matches, and why every rule before it did not: a node's
    /// stored facts (--node) or facts from a JSON file (--facts; `{"mac": …,
    /// "dhcp": {…}, "hw": {…}}`, as `node show --json` shows them).
    Test {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, conflicts_with = "facts", required_unless_present = "facts")]
        node: Option<String>,
        #[arg(long)]
        facts: Option<PathBuf>,
    },
    /// Run the rules again on every commissioned node (after changing them).
    Apply {
        #[command(flatten)]
        api: ApiArgs,
    },
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

/// The thresholds of `rackseed health`. The worst condition decides its state.
#[derive(Args, Debug, Clone)]
pub struct HealthArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// WARNING when the data directory's file system (or the image store's) has less
    /// than this percentage of its space free.
    #[arg(long, default_value_t = 20.0, value_name = "PERCENT")]
    pub disk_warning: f64,
    /// CRITICAL when less than this percentage is free.
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT")]
    pub disk_critical: f64,
    /// WARNING when a certificate of the appliance (its CA, its HTTPS server
    /// certificate) expires within this many days.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub cert_warning: u32,
    /// CRITICAL when one expires within this many days, or has expired.
    #[arg(long, default_value_t = 7, value_name = "DAYS")]
    pub cert_critical: u32,
    /// CRITICAL when more than this many nodes are stalled (one is a WARNING).
    #[arg(long, default_value_t = 5, value_name = "COUNT")]
    pub stalled_critical: usize,
    /// WARNING when a group member's last successful replication is older than this
    /// [default: two replication intervals of its group, when rackseed calls it behind].
    #[arg(long, value_name = "SECONDS")]
    pub lag_warning: Option<u64>,
    /// CRITICAL when it is older than this [default: four intervals of its group].
    #[arg(long, value_name = "SECONDS")]
    pub lag_critical: Option<u64>,
    /// Seconds to wait for the server; no answer in time is CRITICAL.
    #[arg(long, default_value_t = 8, value_name = "SECONDS")]
    pub timeout: u64,
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
        /// Then power-cycle it through its BMC into a one-time network boot (the BMC
        /// is checked first: one that does not answer leaves the node as it was).
        #[arg(long)]
        power_cycle: bool,
    },
    /// Power control through the node's BMC: on, off, cycle, status.
    Power {
        #[command(flatten)]
        api: ApiArgs,
        action: crate::power::Action,
        node: String,
        /// With on or cycle: a one-time network (PXE) boot first, read back from the
        /// BMC before the machine is powered.
        #[arg(long)]
        pxe: bool,
    },
    /// The node's BMC: set (password on standard input), show, delete.
    Bmc {
        #[command(subcommand)]
        cmd: BmcCmd,
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
pub enum BmcCmd {
    /// Set a node's BMC; the password is read from standard input, stored sealed and
    /// never shown.
    Set {
        #[command(flatten)]
        api: ApiArgs,
        node: String,
        #[arg(long)]
        protocol: crate::power::Protocol,
        /// IPMI: host[:port]; Redfish: https://host[:port].
        #[arg(long)]
        address: String,
        #[arg(long)]
        user: String,
        /// Redfish: the system's path, when the service has more than one.
        #[arg(long)]
        system: Option<String>,
        /// Redfish over HTTPS: accept the BMC's self-signed certificate.
        #[arg(long)]
        insecure_tls: bool,
    },
    /// Show a node's BMC (without its password).
    Show {
        #[command(flatten)]
        api: ApiArgs,
        node: String,
    },
    /// Remove a node's BMC.
    Delete {
        #[command(flatten)]
        api: ApiArgs,
        node: String,
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

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add an account; the password is read from the first line of standard input.
    Add {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
        /// `admin` (every action) or `read-only` (look only).
        #[arg(long, default_value = "admin")]
        role: String,
    },
    /// List the accounts.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete an account and end its sessions.
    Delete {
        #[command(flatten)]
        api: ApiArgs,
        name: String,
    },
}

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

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Download an image from the mirror, verified through InRelease → SHA256SUMS, and
    /// store it. NAME is an image manifest (`images/NAME.toml`), e.g. bookworm-amd64.
    Fetch { name: String },
    /// Store the installer files of a local directory (by default from Debian's netboot
    /// package), verified against the mirror's signed SHA256SUMS when it answers.
    Import {
        /// Directory holding `linux` and `initrd.gz` (default: `installer.dir`, the
        /// `debian-installer-12-netboot-amd64` package's files).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Name to store the image under; defaults to the manifest's name.
        #[arg(long)]
        name: Option<String>,
        /// Image manifest describing the files (suite, arch); found from the package
        /// directory or --name when omitted.
        #[arg(long)]
        manifest: Option<String>,
        /// Do not contact the mirror; the image is recorded as not verified.
        #[arg(long)]
        offline: bool,
    },
    /// List stored images.
    List {
        /// Also list older generations kept until `gc`.
        #[arg(long)]
        all: bool,
        /// Print the manifests as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash stored files against their manifests; non-zero if any is missing or
    /// corrupt. Checks every image when NAME is omitted.
    Verify { name: Option<String> },
    /// Remove older generations no node or config uses, unused files and leftovers.
    Gc,
    /// Fetch the disk-controller drivers (SATA/AHCI, NVMe module .udebs) of the
    /// installer's kernel through the mirror's signed chain, so that early_command
    /// sees SATA and NVMe disks.
    Drivers,
}

/// The agent's commands.
#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// First boot: apply plans, collect facts, enroll, set up replication.
    Run {
        #[arg(long, default_value = "/etc/rackseed/agent.toml")]
        config: PathBuf,
    },
    /// Fetch the group view and apply it; with --follow, keep watching for changes.
    Sync {
        #[arg(long, default_value = "/etc/rackseed/agent.toml")]
        config: PathBuf,
        #[arg(long)]
        follow: bool,
    },
    /// Push this member's datasets to its peer now (what the timer runs).
    Replicate {
        #[arg(long, default_value = "/etc/rackseed/agent.toml")]
        config: PathBuf,
    },
    /// Print this machine's facts as JSON.
    Facts,
    /// In the installer's commissioning boot: report this machine's hardware (and the
    /// LLDP neighbours heard within --lldp-wait seconds) to URL; prints rackseed's
    /// answer (`reboot`, `poweroff` or `wait`).
    Commission {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 35)]
        lldp_wait: u64,
        /// Print the report as JSON instead of posting it.
        #[arg(long)]
        dry_run: bool,
    },
}
