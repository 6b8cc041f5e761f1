//! `rackseed-bench`: rackseed side by side with dnsmasq, Kea, tftpd-hpa, atftpd and
//! nginx, in one invocation, on one machine.
//!
//! Every server runs in its own network namespace (a bridge at 192.0.2.1/24, plus
//! 198.51.100.1/24 for relayed DHCP), reached from a client namespace over a veth; the
//! clients are real programs (perfdhcp, atftp, curl, wrk) or the simulated PXE nodes of
//! [`pxe`]. Runs alternate between servers (the order rotates each run) and every table
//! cell is the median and range over the runs. Every loop is bounded in count and time;
//! every namespace and process is removed when its guard drops.

pub mod boot;
pub mod dhcp;
pub mod http;
pub mod inventory;
pub mod pxe;
pub mod refs;
pub mod storm;
pub mod tftp;

use crate::{Lab, LabConfig, Netns, Server};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct Opts {
    /// A fast smoke pass: one run, small sizes, short periods.
    pub quick: bool,
    /// Only this scenario.
    pub scenario: Option<String>,
    /// Runs per server (alternating).
    pub runs: usize,
    /// Also write the tables (Markdown) to this file.
    pub out: Option<PathBuf>,
    /// Only these servers (for profiling one of them); all when empty.
    pub only: Vec<String>,
}

impl Opts {
    /// The servers of a scenario for run `run`: rotated (see [`rotation`]) and
    /// filtered by `--only`.
    pub fn order<'a>(&self, servers: &[&'a str], run: usize) -> Vec<&'a str> {
        rotation(servers, run)
            .into_iter()
            .filter(|s| self.only.is_empty() || self.only.iter().any(|o| o == s))
            .collect()
    }
}

/// The scenarios, in the order they run.
pub const SCENARIOS: &[&str] = &["dhcp", "tftp", "http", "storm", "inventory", "boot"];

/// The installer initrd and kernel the issue names.
pub const INITRD: &str =
    "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/initrd.gz";
pub const KERNEL: &str =
    "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux";
/// The iPXE binaries rackseed serves by default.
pub const IPXE: &[(&str, &str)] = &[
    ("undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe"),
    ("ipxe.efi", "/usr/lib/ipxe/ipxe.efi"),
    ("snponly.efi", "/usr/lib/ipxe/snponly.efi"),
];

/// Whether a bigger or a smaller number is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One result table: rows are cases, columns servers, cells the samples of the runs.
#[derive(Debug)]
pub struct Table {
    pub title: String,
    pub unit: String,
    pub better: Better,
    pub servers: Vec<String>,
    rows: Vec<(String, BTreeMap<String, Vec<f64>>)>,
}

impl Table {
    pub fn new(title: &str, unit: &str, better: Better, servers: &[&str]) -> Table {
        Table {
            title: title.into(),
            unit: unit.into(),
            better,
            servers: servers.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds one sample for `server` in row `case`.
    pub fn add(&mut self, case: &str, server: &str, value: f64) {
        let row = match self.rows.iter().position(|(c, _)| c == case) {
            Some(i) => &mut self.rows[i].1,
            None => {
                self.rows.push((case.to_string(), BTreeMap::new()));
                &mut self.rows.last_mut().expect("just pushed").1
            }
        };
        row.entry(server.to_string()).or_default().push(value);
    }

    /// The median of a cell, if it has samples.
    pub fn median(&self, case: &str, server: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|(c, _)| c == case)
            .and_then(|(_, r)| r.get(server))
            .and_then(|v| median(v))
    }

    /// The cases, in the order they were added.
    pub fn cases(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|(c, _)| c.as_str())
    }

    /// rackseed's median divided by the best reference median of a row, and the name of
    /// that reference.
    pub fn ratio(&self, case: &str) -> Option<(f64, String)> {
        let ours = self.median(case, "rackseed")?;
        let best = self
            .servers
            .iter()
            .filter(|s| *s != "rackseed")
            .filter_map(|s| self.median(case, s).map(|m| (m, s.clone())))
            .reduce(|a, b| match self.better {
                Better::Higher => {
                    if b.0 > a.0 {
                        b
                    } else {
                        a
                    }
                }
                Better::Lower => {
                    if b.0 < a.0 {
                        b
                    } else {
                        a
                    }
                }
            })?;
        (best.0 > 0.0).then(|| (ours / best.0, best.1))
    }

    /// The table as Markdown: `median (min–max)` per cell and rackseed's ratio to the
    /// best reference, marked ✓ where rackseed is at least as good.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let dir = match self.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        let _ = writeln!(out, "### {} — {} ({dir})\n", self.title, self.unit);
        let _ = write!(out, "| case |");
        for s in &self.servers {
            let _ = write!(out, " {s} |");
        }
        let has_refs = self.servers.iter().any(|s| s == "rackseed")
            && self.servers.iter().any(|s| s != "rackseed");
        if has_refs {
            let _ = write!(out, " rackseed ÷ best ref |");
        }
        out.push('\n');
        out.push_str("|---|");
        for _ in &self.servers {
            out.push_str("---|");
        }
        if has_refs {
            out.push_str("---|");
        }
        out.push('\n');
        for (case, cells) in &self.rows {
            let _ = write!(out, "| {case} |");
            for s in &self.servers {
                match cells.get(s).filter(|v| !v.is_empty()) {
                    Some(v) => {
                        let (lo, hi) = min_max(v);
                        let m = median(v).unwrap_or(f64::NAN);
                        if v.len() > 1 {
                            let _ = write!(out, " {} ({}–{}) |", num(m), num(lo), num(hi));
                        } else {
                            let _ = write!(out, " {} |", num(m));
                        }
                    }
                    None => out.push_str(" – |"),
                }
            }
            if has_refs {
                match self.ratio(case) {
                    Some((r, best)) => {
                        let win = match self.better {
                            Better::Higher => r >= 1.0,
                            Better::Lower => r <= 1.0,
                        };
                        let _ = write!(out, " {r:.2}× vs {best} {} |", if win { "✓" } else { "✗" });
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        let n = self
            .rows
            .iter()
            .flat_map(|(_, r)| r.values())
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "\n{n} run(s) per cell: median (min–max).\n");
        out
    }
}

/// The median of samples (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

/// A number with sensible precision for a table.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The servers of a scenario in the order of run `run`: rotated, so no server always
/// runs first (or right after the same other one).
pub fn rotation<'a>(servers: &[&'a str], run: usize) -> Vec<&'a str> {
    let mut v = servers.to_vec();
    if !v.is_empty() {
        let k = run % v.len();
        v.rotate_left(k);
    }
    v
}

/// A process started by the bench; killed (TERM, then KILL after 5 s) on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let f = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.into(),
            child: Some(child),
        })
    }

    /// The process id (`ip netns exec` execs, so this is the server's own).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self, log: &Path) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            bail!(
                "{} exited ({st}): {}",
                self.name,
                crate::tail(&std::fs::read_to_string(log).unwrap_or_default(), 20)
            );
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A server namespace (bridge `br0` at 192.0.2.1/24 and 198.51.100.1/24) and one client
/// namespace joined to it by a veth, its `eth0` at 192.0.2.2/24 and 198.51.100.2/24.
pub struct Net {
    pub lab: Lab,
}

/// The server's address, as clients reach it.
pub const SERVER_IP: &str = "192.0.2.1";
/// The client namespace's own addresses.
pub const CLIENT_IP: &str = "192.0.2.2";
pub const RELAY_IP: &str = "198.51.100.2";

impl Net {
    pub fn new() -> Result<Net> {
        let mut lab = Lab::new()?;
        lab.srv
            .ip(&["addr", "add", "198.51.100.1/24", "dev", "br0"])?;
        let c = lab.client("52:54:00:be:00:01", Some("192.0.2.2/24"))?;
        c.ip(&["addr", "add", "198.51.100.2/24", "dev", "eth0"])?;
        Ok(Net { lab })
    }

    pub fn srv(&self) -> &Netns {
        &self.lab.srv
    }

    pub fn client(&self) -> &Netns {
        &self.lab.clients[0]
    }
}

/// `rackseed serve` in `net` with `cfg`, logging at `info` (its default), optionally
/// with an inventory prepared before start.
pub fn start_rackseed(
    net: &Net,
    cfg: &LabConfig,
    prepare: impl FnOnce(&Path) -> Result<()>,
) -> Result<Server> {
    // The load generators are unknown PXE machines by the thousand and every one becomes
    // a discovered node: lift the discovery limits (which would ignore them, measuring
    // the limit instead of the server).
    let cfg = cfg.clone().with("bench-unlimited-discovery");
    let mut s = Server::prepare(&net.lab, &cfg)?;
    s.log_filter = "info".into();
    let data = s.dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    prepare(&data.join("inventory.db"))?;
    s.spawn_polling(Duration::from_millis(20))?;
    Ok(s)
}

/// The lab config every rackseed run uses: with a second subnet for relayed DHCP
/// (perfdhcp).
pub fn rackseed_config() -> LabConfig {
    LabConfig::lab().with("relay-subnet")
}

/// A field of `/proc/<pid>/status` in kB (`VmHWM`, `VmRSS`).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
}

/// A command's first output line (for versions).
pub fn version_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let t = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            t.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "not found".into())
}

/// The Debian package version of `pkg`.
pub fn deb_version(pkg: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", pkg])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_else(|| "not installed".into())
}

/// The machine: cores, kernel, CPU model.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = version_of("uname", &["-r"]);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|r| r.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} memory, kernel {kernel}")
}

/// The machine's load now: the load averages and the CPU pressure (the share of time
/// some task waited for a CPU over the last 10 and 60 s), for the tables' notes.
pub fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into());
    let cpu = std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|p| {
            let some = p.lines().find(|l| l.starts_with("some "))?;
            let field = |k: &str| {
                some.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(str::to_string)
            };
            Some(format!(
                ", CPU pressure {}% (10 s) {}% (60 s)",
                field("avg10=")?,
                field("avg60=")?
            ))
        })
        .unwrap_or_default();
    format!("load average {avg}{cpu}")
}

/// Versions of every server and client the bench runs.
pub fn versions() -> Vec<(String, String)> {
    let tftpd = refs::tftpd_hpa().map(|p| version_of(&p.display().to_string(), &["-V"]));
    vec![
        (
            "rackseed".into(),
            version_of(&crate::rackseed_bin().display().to_string(), &["--version"]),
        ),
        ("dnsmasq".into(), deb_version("dnsmasq-base")),
        ("kea-dhcp4".into(), deb_version("kea-dhcp4-server")),
        ("perfdhcp (kea-admin)".into(), deb_version("kea-admin")),
        (
            "tftpd-hpa".into(),
            tftpd.unwrap_or_else(|_| "not found".into()),
        ),
        ("atftpd".into(), deb_version("atftpd")),
        ("atftp (client)".into(), deb_version("atftp")),
        ("nginx".into(), deb_version("nginx")),
        ("wrk".into(), deb_version("wrk")),
        ("curl".into(), deb_version("curl")),
    ]
}

/// Checks that a tool is on PATH, naming the package and `./x bench` if not.
pub fn need(tool: &str, package: &str) -> Result<()> {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("`{tool}` is missing: install the Debian package `{package}` (`./x bench` does)");
    }
    Ok(())
}

/// Runs the selected scenarios and returns their tables.
pub fn run(opts: &Opts) -> Result<Vec<Table>> {
    if let Some(s) = &opts.scenario
        && !SCENARIOS.contains(&s.as_str())
    {
        bail!(
            "unknown scenario `{s}`; the scenarios are {}",
            SCENARIOS.join(", ")
        );
    }
    let mut tables = Vec::new();
    for name in SCENARIOS {
        if opts.scenario.as_deref().is_some_and(|s| s != *name) {
            continue;
        }
        eprintln!("== scenario {name}");
        let load_before = load();
        let started = Instant::now();
        let mut t = match *name {
            "dhcp" => dhcp::run(opts)?,
            "tftp" => tftp::run(opts)?,
            "http" => http::run(opts)?,
            "storm" => storm::run(opts)?,
            "inventory" => inventory::run(opts)?,
            "boot" => boot::run(opts)?,
            _ => unreachable!("checked above"),
        };
        eprintln!("== scenario {name} took {:.0?}", started.elapsed());
        for table in &t {
            println!("{}", table.render());
        }
        println!(
            "Machine load during `{name}`: before {load_before}; after {}.\n",
            load()
        );
        tables.append(&mut t);
    }
    Ok(tables)
}
