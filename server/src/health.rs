//! The monitoring check `rackseed health`: from the facts a running server reports
//! (`GET /api/health`: its services, stalled nodes, replication lag, free space of
//! the data directory, certificate expiry) and the thresholds given on the command
//! line, the Nagios plugin verdict: OK, WARNING, CRITICAL or UNKNOWN, its exit code
//! (0, 1, 2, 3) and the one line of output, `RACKSEED <STATE> - <text> | <perfdata>`,
//! that names every condition which is not OK. The worst condition decides.
//!
//! Pure: no clock (the server's time comes with the facts), no I/O. `http::health`
//! gathers the facts; `cli::health` fetches them and prints the verdict.

use crate::node::UnixMs;
use serde::{Deserialize, Serialize};

/// What a running server knows about itself, as `GET /api/health` sends it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    /// The server's clock when it answered; certificate lifetimes count from it.
    pub now: UnixMs,
    /// The server's version.
    pub version: String,
    /// Every supervised service.
    pub services: Vec<ServiceFact>,
    /// The nodes stalled at the last stall check.
    pub stalled: Vec<StalledFact>,
    /// Group members that are expected to replicate (enrolled, with a peer).
    pub replication: Vec<LagFact>,
    /// The file systems holding the data directory and the image store.
    pub disks: Vec<DiskFact>,
    /// The certificates the appliance uses: its CA and its HTTPS server certificate.
    pub certificates: Vec<CertFact>,
}

/// A supervised service, and why it is down when it is.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceFact {
    pub name: String,
    pub down: Option<String>,
}

/// A node stalled in a step.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StalledFact {
    pub node_id: i64,
    pub hostname: String,
    /// The step, as in the `stalled` event (`boot-loader`, `preseed`, `install`, …).
    pub step: String,
    /// When the step began.
    pub since: UnixMs,
}

/// How far behind one member's replication is.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LagFact {
    pub group: String,
    pub node_id: i64,
    pub hostname: String,
    /// `ok`, `behind`, `failing` or `waiting` (see `groups::health`).
    pub status: String,
    /// Seconds since its last successful run (or since it joined, before its first).
    pub lag_s: i64,
    /// The group's replication interval in seconds.
    pub interval_s: u64,
}

/// The free space of one file system.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskFact {
    /// `data` (the data directory: inventory, lease journal, CA) or `images` (the
    /// image store, when it is on another file system).
    pub name: String,
    pub path: String,
    /// Bytes available to rackseed (not counting blocks reserved for root).
    pub free_bytes: u64,
    pub size_bytes: u64,
    /// Why the free space could not be read, when it could not.
    pub error: Option<String>,
}

/// When one certificate expires.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertFact {
    /// What it is, e.g. `CA` or `HTTPS server 192.0.2.1`.
    pub name: String,
    pub path: String,
    pub not_after: Option<UnixMs>,
    /// Why it could not be read, when it could not.
    pub error: Option<String>,
}

/// The limits of the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// CRITICAL when more nodes than this are stalled (WARNING from one).
    pub stalled_critical: usize,
    /// WARNING when a member's lag exceeds this many seconds; by default
    /// [`crate::groups::health::BEHIND_AFTER_INTERVALS`] intervals of its group.
    pub lag_warning_s: Option<u64>,
    /// CRITICAL when a member's lag exceeds this many seconds; by default
    /// [`LAG_CRITICAL_INTERVALS`] intervals of its group.
    pub lag_critical_s: Option<u64>,
    /// WARNING below this percentage of free space.
    pub disk_warning_pct: f64,
    /// CRITICAL below this percentage of free space.
    pub disk_critical_pct: f64,
    /// WARNING when a certificate expires within this many days.
    pub cert_warning_days: u32,
    /// CRITICAL when a certificate expires within this many days, or has expired.
    pub cert_critical_days: u32,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            stalled_critical: 5,
            lag_warning_s: None,
            lag_critical_s: None,
            disk_warning_pct: 20.0,
            disk_critical_pct: 10.0,
            cert_warning_days: 30,
            cert_critical_days: 7,
        }
    }
}

/// A member's lag is CRITICAL by default after this many intervals of its group.
pub const LAG_CRITICAL_INTERVALS: u64 = 4;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// At most this many problems are written out; the rest are counted.
const MAX_PROBLEMS: usize = 10;
/// At most this many stalled nodes are named.
const MAX_NAMES: usize = 5;
/// A value from the server is cut to this many characters.
const MAX_VALUE: usize = 200;

impl Thresholds {
    /// Whether the thresholds make sense together; the message names the flags.
    pub fn check(&self) -> Result<(), String> {
        let pct = |v: f64| (0.0..=100.0).contains(&v);
        if !pct(self.disk_warning_pct) || !pct(self.disk_critical_pct) {
            return Err(
                "--disk-warning and --disk-critical are percentages of free space, from 0 to 100"
                    .into(),
            );
        }
        if self.disk_critical_pct > self.disk_warning_pct {
            return Err(format!(
                "--disk-critical {} is above --disk-warning {}: the critical limit is the lower free space",
                self.disk_critical_pct, self.disk_warning_pct
            ));
        }
        if self.cert_critical_days > self.cert_warning_days {
            return Err(format!(
                "--cert-critical {} is above --cert-warning {}: the critical limit is the nearer expiry",
                self.cert_critical_days, self.cert_warning_days
            ));
        }
        if let (Some(w), Some(c)) = (self.lag_warning_s, self.lag_critical_s)
            && w > c
        {
            return Err(format!(
                "--lag-warning {w} is above --lag-critical {c}: the critical limit is the longer lag"
            ));
        }
        Ok(())
    }
}

/// A Nagios plugin state. Conditions are OK, WARNING or CRITICAL; UNKNOWN is the
/// state of a check that could not be made (bad arguments, an answer it cannot read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    /// The plugin's exit code: 0, 1, 2 or 3.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    /// The word in the output line.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// The outcome of a check: its state and the one line to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    /// `RACKSEED <STATE> - <text>[ | <perfdata>]`, without a line break.
    pub line: String,
}

impl Verdict {
    fn new(status: Status, text: &str, perfdata: &str) -> Verdict {
        let mut line = format!("RACKSEED {} - {text}", status.word());
        if !perfdata.is_empty() {
            line.push_str(" | ");
            line.push_str(perfdata);
        }
        Verdict { status, line }
    }
}

/// `s` safe inside the output line: control characters (a line break in a host or
/// group name, a reason) escaped as `\n`, `\u{1b}`…, the perfdata separator `|` as
/// `\u{7c}`, and cut to a bounded length.
pub fn one_line(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_VALUE {
            out.push('…');
            break;
        }
        match c {
            '|' => out.push_str("\\u{7c}"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// The verdict of a check that could not be made: bad arguments, an unreadable
/// token file, an answer that is not the facts.
pub fn unknown(why: &str) -> Verdict {
    Verdict::new(Status::Unknown, &one_line(why), "")
}

/// The verdict when the server at `url` does not answer: CRITICAL.
pub fn unreachable(url: &str, why: &str) -> Verdict {
    Verdict::new(
        Status::Critical,
        &format!(
            "rackseed unreachable at {}: {}; is `rackseed serve` running? (systemctl status rackseed)",
            one_line(url),
            one_line(why)
        ),
        "",
    )
}

/// One condition's state and what the line says of it when it is not OK.
struct Condition {
    status: Status,
    text: String,
}

/// `secs` as `45 s`, `31 min` or `2 h 5 min`.
fn duration_text(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else {
        match (s / 3600, (s % 3600) / 60) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        }
    }
}

/// Percent free of a disk, when it could be read and has a size.
fn free_pct(d: &DiskFact) -> Option<f64> {
    (d.error.is_none() && d.size_bytes > 0)
        .then(|| d.free_bytes as f64 * 100.0 / d.size_bytes as f64)
}

/// A perfdata label made of letters, digits and `_` only.
fn label(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A threshold printed as a plain number (`20`, `99.5`).
fn num(v: f64) -> String {
    format!("{v}")
}

fn conditions(f: &Facts, t: &Thresholds) -> Vec<Condition> {
    let mut out = Vec::new();
    for s in &f.services {
        if let Some(why) = &s.down {
            out.push(Condition {
                status: Status::Critical,
                text: format!("service {} down: {}", one_line(&s.name), one_line(why)),
            });
        }
    }
    if !f.stalled.is_empty() {
        let n = f.stalled.len();
        let critical = n > t.stalled_critical;
        let mut names: Vec<String> = f
            .stalled
            .iter()
            .take(MAX_NAMES)
            .map(|s| format!("{} at {}", one_line(&s.hostname), one_line(&s.step)))
            .collect();
        if n > MAX_NAMES {
            names.push(format!("and {} more", n - MAX_NAMES));
        }
        out.push(Condition {
            status: if critical {
                Status::Critical
            } else {
                Status::Warning
            },
            text: format!(
                "{n} node{} stalled{}: {}",
                if n == 1 { "" } else { "s" },
                if critical {
                    format!(" (critical above {})", t.stalled_critical)
                } else {
                    String::new()
                },
                names.join(", ")
            ),
        });
    }
    for m in &f.replication {
        let interval = m.interval_s.max(1);
        let warn = t.lag_warning_s.unwrap_or(
            interval.saturating_mul(crate::groups::health::BEHIND_AFTER_INTERVALS as u64),
        );
        let crit = t
            .lag_critical_s
            .unwrap_or(interval.saturating_mul(LAG_CRITICAL_INTERVALS));
        let lag = u64::try_from(m.lag_s).unwrap_or(0);
        let (status, limit) = if lag > crit {
            (
                Status::Critical,
                format!("critical after {}", duration_text(crit as i64)),
            )
        } else if lag > warn {
            (
                Status::Warning,
                format!("warning after {}", duration_text(warn as i64)),
            )
        } else {
            continue;
        };
        out.push(Condition {
            status,
            text: format!(
                "replication of {} in group {} is {} behind ({limit}; the group replicates every {})",
                one_line(&m.hostname),
                one_line(&m.group),
                duration_text(m.lag_s),
                duration_text(interval as i64)
            ),
        });
    }
    for d in &f.disks {
        let what = format!("disk {} ({})", one_line(&d.name), one_line(&d.path));
        let Some(pct) = free_pct(d) else {
            out.push(Condition {
                status: Status::Warning,
                text: format!(
                    "{what}: free space unknown: {}",
                    one_line(
                        d.error
                            .as_deref()
                            .unwrap_or("the file system reports size 0")
                    )
                ),
            });
            continue;
        };
        let (status, limit) = if pct < t.disk_critical_pct {
            (
                Status::Critical,
                format!("critical below {}%", num(t.disk_critical_pct)),
            )
        } else if pct < t.disk_warning_pct {
            (
                Status::Warning,
                format!("warning below {}%", num(t.disk_warning_pct)),
            )
        } else {
            continue;
        };
        out.push(Condition {
            status,
            text: format!("{what} {pct:.1}% free ({limit})"),
        });
    }
    for c in &f.certificates {
        let what = format!("certificate {} ({})", one_line(&c.name), one_line(&c.path));
        let Some(not_after) = c.not_after else {
            out.push(Condition {
                status: Status::Warning,
                text: format!(
                    "{what} unreadable: {}",
                    one_line(c.error.as_deref().unwrap_or("no expiry date"))
                ),
            });
            continue;
        };
        let left = not_after - f.now;
        let days = left.div_euclid(DAY_MS);
        let (status, text) = if left <= 0 {
            (
                Status::Critical,
                format!("{what} expired {} days ago", (-left) / DAY_MS),
            )
        } else if left < i64::from(t.cert_critical_days) * DAY_MS {
            (
                Status::Critical,
                format!(
                    "{what} expires in {days} days (critical within {} days)",
                    t.cert_critical_days
                ),
            )
        } else if left < i64::from(t.cert_warning_days) * DAY_MS {
            (
                Status::Warning,
                format!(
                    "{what} expires in {days} days (warning within {} days)",
                    t.cert_warning_days
                ),
            )
        } else {
            continue;
        };
        out.push(Condition { status, text });
    }
    out
}

fn perfdata(f: &Facts, t: &Thresholds) -> String {
    let mut p = Vec::new();
    let down = f.services.iter().filter(|s| s.down.is_some()).count();
    p.push(format!("services_down={down};;0;0;{}", f.services.len()));
    p.push(format!(
        "stalled={};0;{};0",
        f.stalled.len(),
        t.stalled_critical
    ));
    if let Some(max) = f.replication.iter().map(|m| m.lag_s.max(0)).max() {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        p.push(format!(
            "lag_s={max}s;{};{};0",
            opt(t.lag_warning_s),
            opt(t.lag_critical_s)
        ));
    }
    for d in &f.disks {
        if let Some(pct) = free_pct(d) {
            p.push(format!(
                "{}_free_pct={pct:.2}%;{}:;{}:;0;100",
                label(&d.name),
                num(t.disk_warning_pct),
                num(t.disk_critical_pct)
            ));
        }
    }
    if let Some(min) = f
        .certificates
        .iter()
        .filter_map(|c| c.not_after)
        .map(|n| (n - f.now).div_euclid(DAY_MS))
        .min()
    {
        p.push(format!(
            "cert_days={min};{}:;{}:",
            t.cert_warning_days, t.cert_critical_days
        ));
    }
    p.join(" ")
}

/// What the line says when everything is OK.
fn summary(f: &Facts) -> String {
    let mut parts = vec![format!(
        "{} service{} up",
        f.services.len(),
        if f.services.len() == 1 { "" } else { "s" }
    )];
    parts.push("no node stalled".into());
    parts.push(match f.replication.len() {
        0 => "no member replicating".into(),
        1 => "replication of 1 member within limits".into(),
        n => format!("replication of {n} members within limits"),
    });
    for d in &f.disks {
        if let Some(pct) = free_pct(d) {
            parts.push(format!("disk {} {pct:.1}% free", one_line(&d.name)));
        }
    }
    if let Some(min) = f
        .certificates
        .iter()
        .filter_map(|c| c.not_after)
        .map(|n| (n - f.now).div_euclid(DAY_MS))
        .min()
    {
        parts.push(format!("certificates valid for {min} more days"));
    }
    parts.join(", ")
}

/// The verdict over the facts of a server that answered: the worst condition's state,
/// and a line naming every condition that is not OK (worst first), or a summary when
/// all are OK; perfdata after `|`.
pub fn judge(f: &Facts, t: &Thresholds) -> Verdict {
    let mut problems = conditions(f, t);
    // Worst first; conditions of one state keep their order (services, stalled nodes,
    // replication, disks, certificates).
    problems.sort_by_key(|c| std::cmp::Reverse(c.status));
    let status = problems.first().map_or(Status::Ok, |c| c.status);
    let perf = perfdata(f, t);
    if problems.is_empty() {
        return Verdict::new(Status::Ok, &summary(f), &perf);
    }
    let n = problems.len();
    let mut texts: Vec<String> = problems
        .into_iter()
        .take(MAX_PROBLEMS)
        .map(|c| match c.status {
            s if s == status => c.text,
            s => format!("{}: {}", s.word(), c.text),
        })
        .collect();
    if n > MAX_PROBLEMS {
        texts.push(format!("and {} more problems", n - MAX_PROBLEMS));
    }
    Verdict::new(status, &texts.join("; "), &perf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMs = 1_800_000_000_000;

    /// A healthy appliance: six services up, nothing stalled, one member a minute
    /// behind, half the disk free, certificates valid for years.
    fn healthy() -> Facts {
        Facts {
            now: NOW,
            version: "0.1.0".into(),
            services: ["dhcp", "http", "https", "stall-watch", "syslog", "tftp"]
                .iter()
                .map(|n| ServiceFact {
                    name: n.to_string(),
                    down: None,
                })
                .collect(),
            stalled: vec![],
            replication: vec![LagFact {
                group: "rg1".into(),
                node_id: 1,
                hostname: "node1".into(),
                status: "ok".into(),
                lag_s: 60,
                interval_s: 900,
            }],
            disks: vec![DiskFact {
                name: "data".into(),
                path: "/var/lib/rackseed".into(),
                free_bytes: 50,
                size_bytes: 100,
                error: None,
            }],
            certificates: vec![
                CertFact {
                    name: "CA".into(),
                    path: "/var/lib/rackseed/ca/ca.crt".into(),
                    not_after: Some(NOW + 3000 * DAY_MS),
                    error: None,
                },
                CertFact {
                    name: "HTTPS server 192.0.2.1".into(),
                    path: "/var/lib/rackseed/ca/server-192.0.2.1.crt".into(),
                    not_after: Some(NOW + 800 * DAY_MS + 5),
                    error: None,
                },
            ],
        }
    }

    fn t() -> Thresholds {
        Thresholds::default()
    }

    fn text_of(v: &Verdict) -> &str {
        let rest = v.line.split_once(" - ").unwrap().1;
        rest.split(" | ").next().unwrap()
    }

    #[test]
    fn a_healthy_appliance_is_ok_with_a_summary_and_perfdata() {
        let v = judge(&healthy(), &t());
        assert_eq!(v.status, Status::Ok);
        assert_eq!(v.status.exit_code(), 0);
        assert_eq!(
            v.line,
            "RACKSEED OK - 6 services up, no node stalled, replication of 1 member within limits, disk data 50.0% free, certificates valid for 800 more days \
             | services_down=0;;0;0;6 stalled=0;0;5;0 lag_s=60s;;;0 data_free_pct=50.00%;20:;10:;0;100 cert_days=800;30:;7:"
        );
    }

    #[test]
    fn a_service_down_is_critical_with_its_reason() {
        let mut f = healthy();
        f.services[5].down = Some("panicked: failpoint tftp:3000 fired".into());
        let v = judge(&f, &t());
        assert_eq!((v.status, v.status.exit_code()), (Status::Critical, 2));
        assert_eq!(
            text_of(&v),
            "service tftp down: panicked: failpoint tftp:3000 fired"
        );
        assert!(v.line.contains("services_down=1;;0;0;6"), "{}", v.line);
    }

    #[test]
    fn stalled_nodes_warn_from_one_and_are_critical_above_the_count() {
        let mut f = healthy();
        let stall = |i: i64| StalledFact {
            node_id: i,
            hostname: format!("web{i}"),
            step: "preseed".into(),
            since: NOW - 600_000,
        };
        f.stalled = vec![stall(1)];
        let v = judge(&f, &t());
        assert_eq!((v.status, v.status.exit_code()), (Status::Warning, 1));
        assert_eq!(text_of(&v), "1 node stalled: web1 at preseed");
        assert!(v.line.contains(" stalled=1;0;5;0"), "{}", v.line);
        // Five is still a warning; six is above the critical count; names are bounded.
        f.stalled = (1..=5).map(stall).collect();
        assert_eq!(judge(&f, &t()).status, Status::Warning);
        f.stalled = (1..=7).map(stall).collect();
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Critical);
        assert_eq!(
            text_of(&v),
            "7 nodes stalled (critical above 5): web1 at preseed, web2 at preseed, web3 at preseed, web4 at preseed, web5 at preseed, and 2 more"
        );
        let zero = Thresholds {
            stalled_critical: 0,
            ..t()
        };
        f.stalled = vec![stall(1)];
        assert_eq!(judge(&f, &zero).status, Status::Critical);
    }

    #[test]
    fn replication_lag_warns_after_two_intervals_and_is_critical_after_four() {
        let mut f = healthy();
        f.replication[0].lag_s = 1800;
        assert_eq!(judge(&f, &t()).status, Status::Ok, "exactly two intervals");
        f.replication[0].lag_s = 1801;
        f.replication[0].status = "behind".into();
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Warning);
        assert_eq!(
            text_of(&v),
            "replication of node1 in group rg1 is 30 min behind (warning after 30 min; the group replicates every 15 min)"
        );
        f.replication[0].lag_s = 3601;
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Critical);
        assert!(
            text_of(&v).contains("(critical after 60 min;"),
            "{}",
            v.line
        );
        // Flags in seconds replace the per-group defaults, and appear in the perfdata.
        let flags = Thresholds {
            lag_warning_s: Some(7200),
            lag_critical_s: Some(10_800),
            ..t()
        };
        let v = judge(&f, &flags);
        assert_eq!(v.status, Status::Ok);
        assert!(v.line.contains("lag_s=3601s;7200;10800;0"), "{}", v.line);
        let tight = Thresholds {
            lag_critical_s: Some(1),
            ..t()
        };
        f.replication[0].lag_s = 2;
        assert_eq!(judge(&f, &tight).status, Status::Critical);
    }

    #[test]
    fn free_disk_space_warns_and_is_critical_below_the_percentages() {
        let mut f = healthy();
        f.disks[0].free_bytes = 20;
        assert_eq!(judge(&f, &t()).status, Status::Ok, "20% is not below 20%");
        f.disks[0].free_bytes = 19;
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Warning);
        assert_eq!(
            text_of(&v),
            "disk data (/var/lib/rackseed) 19.0% free (warning below 20%)"
        );
        f.disks[0].free_bytes = 9;
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Critical);
        assert_eq!(
            text_of(&v),
            "disk data (/var/lib/rackseed) 9.0% free (critical below 10%)"
        );
        assert!(
            v.line.contains("data_free_pct=9.00%;20:;10:;0;100"),
            "{}",
            v.line
        );
        // 100/99 trips on any real disk.
        f.disks[0].free_bytes = 50;
        let strict = Thresholds {
            disk_warning_pct: 100.0,
            disk_critical_pct: 99.5,
            ..t()
        };
        let v = judge(&f, &strict);
        assert_eq!(v.status, Status::Critical);
        assert!(
            text_of(&v).ends_with("(critical below 99.5%)"),
            "{}",
            v.line
        );
        // A file system whose free space cannot be read is a warning naming why.
        f.disks.push(DiskFact {
            name: "images".into(),
            path: "/srv/images".into(),
            error: Some("No such file or directory (os error 2)".into()),
            ..Default::default()
        });
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Warning);
        assert_eq!(
            text_of(&v),
            "disk images (/srv/images): free space unknown: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn certificates_warn_before_expiry_and_are_critical_near_it_and_after() {
        let mut f = healthy();
        let server = |left: i64| CertFact {
            name: "HTTPS server 192.0.2.1".into(),
            path: "server.crt".into(),
            not_after: Some(NOW + left),
            error: None,
        };
        f.certificates[1] = server(30 * DAY_MS);
        assert_eq!(judge(&f, &t()).status, Status::Ok, "30 days left");
        f.certificates[1] = server(30 * DAY_MS - 1);
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Warning);
        assert_eq!(
            text_of(&v),
            "certificate HTTPS server 192.0.2.1 (server.crt) expires in 29 days (warning within 30 days)"
        );
        f.certificates[1] = server(6 * DAY_MS);
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Critical);
        assert!(text_of(&v).ends_with("expires in 6 days (critical within 7 days)"));
        f.certificates[1] = server(-3 * DAY_MS);
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Critical);
        assert!(text_of(&v).ends_with("expired 3 days ago"), "{}", v.line);
        assert!(v.line.ends_with("cert_days=-3;30:;7:"), "{}", v.line);
        f.certificates[1] = CertFact {
            name: "CA".into(),
            path: "ca.crt".into(),
            not_after: None,
            error: Some("not PEM".into()),
        };
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Warning);
        assert_eq!(text_of(&v), "certificate CA (ca.crt) unreadable: not PEM");
    }

    #[test]
    fn the_worst_condition_decides_and_every_problem_is_named_worst_first() {
        let mut f = healthy();
        f.disks[0].free_bytes = 15; // warning
        f.certificates[0].not_after = Some(NOW + 2 * DAY_MS); // critical
        f.stalled = vec![StalledFact {
            node_id: 3,
            hostname: "web3".into(),
            step: "install".into(),
            since: NOW,
        }]; // warning
        let v = judge(&f, &t());
        assert_eq!((v.status, v.status.exit_code()), (Status::Critical, 2));
        assert_eq!(
            text_of(&v),
            "certificate CA (/var/lib/rackseed/ca/ca.crt) expires in 2 days (critical within 7 days); \
             WARNING: 1 node stalled: web3 at install; \
             WARNING: disk data (/var/lib/rackseed) 15.0% free (warning below 20%)"
        );
        // Only warnings: WARNING, and each is named without a prefix.
        f.certificates[0].not_after = Some(NOW + 2000 * DAY_MS);
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Warning);
        assert_eq!(
            text_of(&v),
            "1 node stalled: web3 at install; disk data (/var/lib/rackseed) 15.0% free (warning below 20%)"
        );
        // Many problems: the line stays bounded.
        f.services = (0..30)
            .map(|i| ServiceFact {
                name: format!("s{i}"),
                down: Some("gone".into()),
            })
            .collect();
        let v = judge(&f, &t());
        assert_eq!(v.status, Status::Critical);
        assert!(
            text_of(&v).ends_with("; service s9 down: gone; and 22 more problems"),
            "{}",
            v.line
        );
    }

    #[test]
    fn unreachable_is_critical_and_unknown_is_three() {
        let v = unreachable("http://127.0.0.1:8081", "connection refused");
        assert_eq!((v.status, v.status.exit_code()), (Status::Critical, 2));
        assert_eq!(
            v.line,
            "RACKSEED CRITICAL - rackseed unreachable at http://127.0.0.1:8081: connection refused; is `rackseed serve` running? (systemctl status rackseed)"
        );
        let v = unknown("--disk-critical 30 is above --disk-warning 20");
        assert_eq!((v.status, v.status.exit_code()), (Status::Unknown, 3));
        assert_eq!(
            v.line,
            "RACKSEED UNKNOWN - --disk-critical 30 is above --disk-warning 20"
        );
    }

    #[test]
    fn hostile_names_and_reasons_stay_on_one_line() {
        let mut f = healthy();
        f.stalled = vec![StalledFact {
            node_id: 1,
            hostname: "web1\nRACKSEED OK - fine | x=1".into(),
            step: "boot\r\x1b[2J".into(),
            since: NOW,
        }];
        f.replication[0].group = "rg\n1".into();
        f.replication[0].lag_s = 99_999;
        f.services[0].down = Some(format!("panicked:\n{}", "x".repeat(500)));
        let v = judge(&f, &t());
        assert!(!v.line.contains(['\n', '\r', '\x1b']), "{:?}", v.line);
        assert_eq!(v.line.matches('|').count(), 1, "{}", v.line);
        assert!(
            v.line
                .contains("web1\\nRACKSEED OK - fine \\u{7c} x=1 at boot\\r\\u{1b}[2J"),
            "{}",
            v.line
        );
        assert!(v.line.contains("in group rg\\n1 is"), "{}", v.line);
        assert!(v.line.len() < 1500, "{}", v.line.len());
        assert_eq!(one_line("a\tb"), "a\\tb");
    }

    #[test]
    fn thresholds_that_contradict_each_other_are_refused_by_flag() {
        assert_eq!(t().check(), Ok(()));
        let bad = [
            Thresholds {
                disk_warning_pct: 10.0,
                disk_critical_pct: 20.0,
                ..t()
            },
            Thresholds {
                disk_warning_pct: 120.0,
                ..t()
            },
            Thresholds {
                cert_warning_days: 7,
                cert_critical_days: 30,
                ..t()
            },
            Thresholds {
                lag_warning_s: Some(600),
                lag_critical_s: Some(60),
                ..t()
            },
        ];
        let flags = [
            "--disk-critical",
            "--disk-warning",
            "--cert-critical",
            "--lag-warning",
        ];
        for (b, flag) in bad.iter().zip(flags) {
            let e = b.check().unwrap_err();
            assert!(e.contains(flag), "{e}");
        }
        // Equal limits are allowed (CRITICAL wins).
        let equal = Thresholds {
            disk_warning_pct: 100.0,
            disk_critical_pct: 100.0,
            ..t()
        };
        assert_eq!(equal.check(), Ok(()));
    }
}
