//! `rackseed health`, the Nagios plugin, run as a monitoring system runs it: the real
//! command against a real `rackseed serve` in a lab namespace. Each condition is made
//! real (the disk's own free space against strict limits, the CA's and the HTTPS
//! certificate's real lifetimes, a node that went silent after its boot script, two
//! enrolled members that never replicate, a stopped server, a service that died) and
//! the exit code and the one line are checked.

use anyhow::{Context, Result, ensure};
use rackseed_tests::{ADMIN, Lab, LabConfig, NodeClient, Server, rackseed_bin, wait_for};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// Free-space limits no machine running these tests is below, for the checks that
/// are about something else (the disk's own checks set them on purpose).
const ANY_DISK: [&str; 4] = ["--disk-warning", "1", "--disk-critical", "1"];

/// `rackseed health ARGS` in the server's namespace, with the server's token:
/// (exit code, the line). Fails unless standard output is exactly one line.
fn health(srv: &Server, args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new("ip")
        .args(["netns", "exec", &srv.ns])
        .arg(rackseed_bin())
        .arg("health")
        .args(args)
        .env("RACKSEED_URL", ADMIN)
        .env("RACKSEED_TOKEN", &srv.token)
        .output()
        .context("cannot run rackseed health")?;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        stdout.ends_with('\n') && stdout.matches('\n').count() == 1,
        "rackseed health {args:?} did not print exactly one line: {stdout:?} (stderr: {})",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code().context("rackseed health was killed")?;
    Ok((code, stdout.trim_end().to_string()))
}

/// The text of a line, between `RACKSEED <STATE> - ` and the perfdata.
fn text(line: &str) -> &str {
    let rest = line.split_once(" - ").map_or(line, |(_, r)| r);
    rest.split(" | ").next().unwrap_or(rest)
}

#[test]
fn health_is_ok_warns_and_is_critical_by_threshold_and_when_the_server_is_gone() -> Result<()> {
    let lab = Lab::new()?;
    let mut srv = Server::start(&lab, &LabConfig::lab().with("health"))?;
    let data = srv.dir.path().join("data");
    let ca_crt = data.join("ca/ca.crt").display().to_string();
    let server_crt = data.join("ca/server-192.0.2.1.crt").display().to_string();

    // OK: every service up, nothing stalled, certificates far from expiry.
    let (code, line) = health(&srv, &ANY_DISK)?;
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with(
            "RACKSEED OK - 7 services up, no node stalled, no member replicating, disk data "
        ),
        "{line}"
    );
    assert!(
        line.contains("% free, certificates valid for 824 more days | services_down=0;;0;0;7 stalled=0;0;5;0 data_free_pct="),
        "{line}"
    );
    assert!(line.ends_with(" cert_days=824;30:;7:"), "{line}");

    // Free space of the data directory's real file system: below 100% is below any
    // warning limit of 100, and below a critical limit of 100 too.
    let disk = format!("disk data ({})", data.display());
    let (code, line) = health(&srv, &["--disk-warning", "100", "--disk-critical", "0"])?;
    assert_eq!(code, 1, "{line}");
    assert!(line.starts_with("RACKSEED WARNING - "), "{line}");
    assert!(
        text(&line).starts_with(&disk) && text(&line).ends_with("% free (warning below 100%)"),
        "{line}"
    );
    assert!(line.contains(";100:;0:;0;100"), "{line}");
    let (code, line) = health(&srv, &["--disk-warning", "100", "--disk-critical", "100"])?;
    assert_eq!(code, 2, "{line}");
    assert!(line.starts_with("RACKSEED CRITICAL - "), "{line}");
    assert!(
        text(&line).ends_with("% free (critical below 100%)"),
        "{line}"
    );

    // Certificates, with limits above their real lifetimes: the HTTPS server
    // certificate (825 days) within 1000 days is a warning and the CA (10 years) is
    // not; within 3000 days the server certificate is critical, and the CA within
    // 4000 a warning named after it.
    let (code, line) = health(&srv, &[&ANY_DISK[..], &["--cert-warning", "1000"]].concat())?;
    assert_eq!(code, 1, "{line}");
    assert_eq!(
        text(&line),
        format!(
            "certificate HTTPS server 192.0.2.1 ({server_crt}) expires in 824 days (warning within 1000 days)"
        )
    );
    let args = [
        &ANY_DISK[..],
        &["--cert-warning", "4000", "--cert-critical", "3000"],
    ]
    .concat();
    let (code, line) = health(&srv, &args)?;
    assert_eq!(code, 2, "{line}");
    assert_eq!(
        text(&line),
        format!(
            "certificate HTTPS server 192.0.2.1 ({server_crt}) expires in 824 days (critical within 3000 days); \
             WARNING: certificate CA ({ca_crt}) expires in 3649 days (warning within 4000 days)"
        )
    );
    assert!(line.ends_with(" cert_days=824;4000:;3000:"), "{line}");
    // The worst of two: a disk warning beside a certificate that is critical.
    let (code, line) = health(
        &srv,
        &[
            "--disk-warning",
            "100",
            "--disk-critical",
            "0",
            "--cert-warning",
            "900",
            "--cert-critical",
            "900",
        ],
    )?;
    assert_eq!(code, 2, "{line}");
    assert!(
        text(&line).starts_with("certificate HTTPS server 192.0.2.1")
            && text(&line).contains(&format!("; WARNING: {disk} ")),
        "{line}"
    );

    // UNKNOWN: contradictory limits, a value that is not a number, a wrong token.
    let (code, line) = health(&srv, &["--disk-warning", "10", "--disk-critical", "20"])?;
    assert_eq!(
        (code, line.as_str()),
        (
            3,
            "RACKSEED UNKNOWN - --disk-critical 20 is above --disk-warning 10: the critical limit is the lower free space"
        )
    );
    let (code, line) = health(&srv, &["--disk-warning", "lots"])?;
    assert_eq!(code, 3, "{line}");
    assert!(
        line.starts_with("RACKSEED UNKNOWN - invalid value 'lots' for '--disk-warning <PERCENT>'")
            && line.ends_with("; see `rackseed health --help`"),
        "{line}"
    );
    let (code, line) = health(&srv, &["--token", "not-the-token"])?;
    assert_eq!(code, 3, "{line}");
    assert!(
        line.starts_with(&format!(
            "RACKSEED UNKNOWN - rackseed at {ADMIN} refused the admin token: wrong admin token (HTTP 401)"
        )),
        "{line}"
    );

    // A node that fetched its boot script and went silent: stalled after the
    // `[stall] boot` limit, a warning; above --stalled-critical, critical.
    let mac = "52:54:00:17:00:01";
    srv.add_node(mac, "stall1", "lab-single-disk", &[])?;
    let quiet = lab.node_client(mac)?;
    let (code, _) = quiet.curl(&["http://192.0.2.1:8080/boot/52-54-00-17-00-01.ipxe"])?;
    assert_eq!(code, 200);
    let (code, line) = wait_for(
        "rackseed health to report the stalled node",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || health(&srv, &ANY_DISK).ok().filter(|(c, _)| *c != 0),
    )?;
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("RACKSEED WARNING - 1 node stalled: stall1 at kernel | "),
        "{line}"
    );
    assert!(line.contains(" stalled=1;0;5;0 "), "{line}");
    let (code, line) = health(
        &srv,
        &[&ANY_DISK[..], &["--stalled-critical", "0"]].concat(),
    )?;
    assert_eq!(code, 2, "{line}");
    assert_eq!(
        text(&line),
        "1 node stalled (critical above 0): stall1 at kernel"
    );

    // The server stopped: CRITICAL, naming where it was asked and why it failed.
    srv.stop();
    let (code, line) = health(&srv, &ANY_DISK)?;
    assert_eq!(
        (code, line.as_str()),
        (
            2,
            "RACKSEED CRITICAL - rackseed unreachable at http://127.0.0.1:8081: Connection refused (os error 111); is `rackseed serve` running? (systemctl status rackseed)"
        )
    );
    Ok(())
}

/// Takes `mac` (added with `host` in group hg) through its installer steps the way
/// the installer reports them, from its own leased address; returns the machine and
/// the enrollment token `late.sh` carried.
fn installed_node(lab: &Lab, srv: &Server, mac: &str, host: &str) -> Result<(NodeClient, String)> {
    srv.add_node(mac, host, "lab-single-disk", &["--group", "hg"])?;
    let node = lab.node_client(mac)?;
    let token = node.install_token(mac)?;
    let url = |what: &str| format!("http://192.0.2.1:8080/install/{token}/{what}");
    let (code, _) = node.curl(&["--data", "installer started", &url("events/early_command")])?;
    ensure!(code == 200, "early_command: HTTP {code}");
    let (code, late) = node.curl(&[&url("late.sh")])?;
    let late = String::from_utf8_lossy(&late).to_string();
    ensure!(code == 200, "late.sh: HTTP {code}");
    let enroll = late
        .lines()
        .find_map(|l| l.strip_prefix("enroll_token = \""))
        .and_then(|r| r.strip_suffix('"'))
        .context("no enrollment token in late.sh")?
        .to_string();
    let (code, _) = node.curl(&["--data", "late_command ran", &url("events/late_command")])?;
    ensure!(code == 200, "late_command: HTTP {code}");
    Ok((node, enroll))
}

/// Enrolls the installed node with the facts of a one-disk machine whose XFS root
/// matches its plan, as its agent would on first boot.
fn enroll(srv: &Server, node: &NodeClient, mac: &str, host: &str, token: &str) -> Result<()> {
    let (_key, csr) = rackseed::ca::node_key_and_csr(host)?;
    let body = json!({
        "token": token,
        "node": mac,
        "csr": csr,
        "replication_key": null,
        "facts": {
            "hostname": host,
            "machine_id": format!("{:0>32}", host.len()),
            "smbios_uuid": null,
            "root": {"source": "/dev/sda1", "fstype": "xfs", "md": null},
            "md_arrays": [], "pools": [], "bonds": [], "vlans": [], "bridges": [],
            "interfaces": [{"name": "eth0", "mac": mac, "mtu": 1500, "up": true}],
            "addresses": [],
            "ssh_host_keys": []
        }
    });
    let file = srv.dir.path().join(format!("enroll-{host}.json"));
    std::fs::write(&file, body.to_string())?;
    let (code, out) = node.curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
        "http://192.0.2.1:8080/enroll",
    ])?;
    ensure!(
        code == 200,
        "enrolling {host}: HTTP {code}: {}",
        String::from_utf8_lossy(&out)
    );
    Ok(())
}

#[test]
fn health_warns_and_is_critical_when_members_stop_replicating() -> Result<()> {
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab().with("health"))?;
    let nodes = [("52:54:00:17:00:11", "hg1"), ("52:54:00:17:00:12", "hg2")];
    let mut ready = Vec::new();
    for (mac, host) in nodes {
        ready.push(installed_node(&lab, &srv, mac, host)?);
    }
    // Both enroll at once: the group has two members, each expected to replicate
    // every 10 s from now on; neither ever reports a run.
    for ((mac, host), (node, token)) in nodes.iter().zip(&ready) {
        enroll(&srv, node, mac, host, token)?;
    }
    assert_eq!(srv.node_state("hg2")?, "enrolled");
    let (code, line) = health(&srv, &ANY_DISK)?;
    assert_eq!(code, 0, "{line}");
    assert!(
        line.contains(", replication of 2 members within limits, ") && line.contains(" lag_s="),
        "{line}"
    );

    // Two intervals without a run: behind, a warning.
    let (code, line) = wait_for(
        "rackseed health to report the lag",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || health(&srv, &ANY_DISK).ok().filter(|(c, _)| *c != 0),
    )?;
    assert_eq!(code, 1, "{line}");
    let t = text(&line);
    // (hg1 enrolled first, so it is named first; hg2 follows within a second.)
    assert!(
        t.starts_with("replication of hg1 in group hg is ")
            && t.contains(" behind (warning after 20 s; the group replicates every 10 s)"),
        "{line}"
    );
    // Limits in seconds: critical past 15 s; relaxed, OK again.
    let (code, line) = health(&srv, &[&ANY_DISK[..], &["--lag-critical", "15"]].concat())?;
    assert_eq!(code, 2, "{line}");
    assert!(
        text(&line).contains(" behind (critical after 15 s; the group replicates every 10 s)"),
        "{line}"
    );
    assert!(line.contains(";;15;0 "), "{line}");
    let relaxed = [
        &ANY_DISK[..],
        &["--lag-warning", "3600", "--lag-critical", "7200"],
    ]
    .concat();
    let (code, line) = health(&srv, &relaxed)?;
    assert_eq!(code, 0, "{line}");
    // Four intervals: critical with the defaults.
    let (code, line) = wait_for(
        "rackseed health to call the lag critical",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || health(&srv, &ANY_DISK).ok().filter(|(c, _)| *c == 2),
    )?;
    assert!(
        text(&line).contains(" behind (critical after 40 s; the group replicates every 10 s)"),
        "{code} {line}"
    );
    Ok(())
}

/// A service that dies ends the process (supervision, see
/// `protocol::a_dying_service_ends_the_process_with_its_name_and_reason`), so what a
/// monitoring system sees of it is the server gone: OK before, CRITICAL after.
#[test]
fn health_is_critical_after_a_service_died() -> Result<()> {
    let lab = Lab::new()?;
    let mut srv = Server::prepare(&lab, &LabConfig::lab().with("health"))?;
    srv.env
        .push(("RACKSEED_FAILPOINT".into(), "syslog:8000".into()));
    srv.spawn()?;
    let (code, line) = health(&srv, &ANY_DISK)?;
    assert_eq!(code, 0, "{line}");
    let status = srv.wait_exit(Duration::from_secs(30))?;
    assert!(!status.success(), "rackseed exited with {status}");
    let (code, line) = health(&srv, &ANY_DISK)?;
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with(
            "RACKSEED CRITICAL - rackseed unreachable at http://127.0.0.1:8081: Connection refused"
        ),
        "{line}"
    );
    Ok(())
}
