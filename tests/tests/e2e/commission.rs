//! Zero touch: an unknown machine behind a DHCP relay that adds option 82 is booted
//! into the installer's inventory mode, reports the hardware it really has, is matched
//! by a rule, named after its switch port, and installs — nobody typed its MAC. A
//! machine that no rule matches, and hostile or repeated reports, change nothing.

use anyhow::{Context, Result, ensure};
use rackseed_tests::browser::{Browser, test_output};
use rackseed_tests::qemu::{self, Disk, DiskBus, Firmware, Nic, NicModel, Vm, VmSpec};
use rackseed_tests::{
    ADMIN, Lab, LabConfig, Netns, NodeClient, Server, rackseed_bin, run, wait_for,
};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A process in a namespace, killed when dropped.
struct Daemon(Child, &'static str);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn start(name: &'static str, mut cmd: Command) -> Result<Daemon> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {name} (run ./x setup)"))?;
        let mut d = Daemon(child, name);
        std::thread::sleep(Duration::from_millis(500));
        if let Some(status) = d.0.try_wait()? {
            anyhow::bail!("{} exited at once: {status}", d.1);
        }
        Ok(d)
    }
}

/// The remote rack: a namespace routed to the provisioning LAN (192.0.2.2 on br0),
/// with the rack's access network on bridge `b-07` (198.51.100.1/24, the relay's
/// giaddr), and isc-dhcp-relay relaying that bridge to rackseed with option 82: its
/// circuit-id is the name of the interface a request came in on, `b-07`.
fn remote_rack(lab: &Lab) -> Result<(Netns, Daemon)> {
    let rack = lab.host("52:54:00:15:00:fe", Some("192.0.2.2/24"))?;
    rack.ip(&[
        "link",
        "add",
        "b-07",
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ])?;
    rack.ip(&["addr", "add", "198.51.100.1/24", "dev", "b-07"])?;
    rack.ip(&["link", "set", "b-07", "up"])?;
    rack.sh("sysctl -qw net.ipv4.ip_forward=1")?;
    lab.srv
        .ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.2"])?;
    let pid = std::env::temp_dir().join(format!("{}-dhcrelay.pid", rack.name));
    let mut c = rack.cmd("dhcrelay");
    c.args(["-d", "-4", "-a", "-pf"])
        .arg(&pid)
        .args(["-id", "b-07", "-iu", "eth0", "192.0.2.1"]);
    let relay = Daemon::start("dhcrelay", c)?;
    Ok((rack, relay))
}

/// A tap on the rack's bridge.
fn rack_tap(rack: &Netns, name: &str) -> Result<String> {
    rack.ip(&["tuntap", "add", name, "mode", "tap"])?;
    rack.ip(&["link", "set", name, "master", "b-07", "up"])?;
    Ok(name.to_string())
}

/// A machine on the LAN that network-boots as `mac` (a PXE-classed DHCP lease) and
/// its facts URL, read from the commissioning boot script it is served.
fn fake_machine(lab: &Lab, mac: &str) -> Result<(NodeClient, String)> {
    let m = lab.pxe_client(mac)?;
    let script = boot_script(&m, mac)?;
    let url = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("url="))
        .with_context(|| format!("no commissioning preseed URL in:\n{script}"))?;
    let facts = url.replace("/preseed.cfg", "/facts");
    Ok((m, facts))
}

/// The boot script rackseed serves `m` (HTTP 200 required).
fn boot_script(m: &NodeClient, mac: &str) -> Result<String> {
    let (code, script) = m.curl(&[&format!(
        "http://192.0.2.1:8080/boot/{}.ipxe",
        mac.replace(':', "-")
    )])?;
    let script = String::from_utf8_lossy(&script).to_string();
    ensure!(code == 200, "boot script: {code} {script}");
    Ok(script)
}

fn post(ns: &Netns, url: &str, body: &str) -> Result<(u16, String)> {
    let (code, out) = rackseed_tests::curl_in(
        &ns.name,
        &[
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
            url,
        ],
    )?;
    Ok((code, String::from_utf8_lossy(&out).trim().to_string()))
}

fn events_of(srv: &Server, key: &str) -> Result<String> {
    Ok(srv
        .timeline(key)?
        .iter()
        .map(|(k, m)| format!("{k}: {m}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A machine that no rule matches (it came straight onto the LAN, not through the
/// rack's relay) is commissioned, gets a `rule` event that says why, is told to power
/// off and waits as `commissioned`; a report from another address, a second report
/// and a hostile one are refused and change nothing.
#[test]
fn a_machine_no_rule_matches_waits_as_commissioned_and_bad_reports_change_nothing() -> Result<()> {
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab().with("commission"))?;
    let mac = "52:54:00:15:01:01";
    let (m, facts) = fake_machine(&lab, mac)?;
    let ns = &m.ns;
    ensure!(srv.node_state(mac)? == "discovered");
    let report = serde_json::json!({
        "system": {"vendor": "Example", "product": "1U", "serial": "RS-0001", "uuid": ""},
        "cpu": {"model": "x", "count": 4},
        "memory_bytes": 8u64 << 30,
        "disks": [{"name": "sda", "size_bytes": 1u64 << 40, "model": "m", "serial": "s", "bus": "sata", "by_id": []}],
        "nics": [{"name": "eth0", "mac": mac, "driver": "e1000e", "link": true, "speed_mbps": 1000}],
    });
    // Another host on the LAN with the token: a plain 404, and a refusal on the timeline.
    let other = lab.host("52:54:00:15:01:02", Some("192.0.2.77/24"))?;
    let (code, _) = post(&other, &facts, &report.to_string())?;
    ensure!(code == 404, "report from another address: {code}");
    // Hostile values: refused with the reason, nothing stored.
    let mut hostile = report.clone();
    hostile["system"]["serial"] = Value::from("RS-1\n$(reboot)");
    let (code, body) = post(ns, &facts, &hostile.to_string())?;
    ensure!(
        code == 400 && body.contains("control character"),
        "{code} {body}"
    );
    let (code, body) = post(ns, &facts, "{\"not\": \"a report\"}")?;
    ensure!(code == 400, "{code} {body}");
    ensure!(srv.node_state(mac)? == "discovered");
    // The real report: commissioned, no rule matches, told to power off.
    let (code, answer) = post(ns, &facts, &report.to_string())?;
    ensure!(code == 200 && answer == "poweroff", "{code} {answer}");
    ensure!(srv.node_state(mac)? == "commissioned");
    let (code, body) = post(ns, &facts, &report.to_string())?;
    ensure!(
        code == 409 && body.contains("already reported"),
        "{code} {body}"
    );
    let ev = events_of(&srv, mac)?;
    for want in [
        "refused: refused a hardware report to 192.0.2.77",
        "hardware report refused: system.serial holds a control character",
        "commissioned: Example 1U (serial RS-0001)",
        "rule: no rule matched: rule `big-iron`: disks.count \"1\" does not match `>= 24`; rule `storage-rack`: dhcp.circuit_id is not known for this machine",
    ] {
        ensure!(ev.contains(want), "no {want:?} in:\n{ev}");
    }
    // `rule test` says the same, and exits non-zero.
    let (ok, out) = srv.cli_input(&["rule", "test", "--node", mac], "")?;
    ensure!(!ok && out.contains("matches no rule"), "{out}");
    ensure!(out.contains("dhcp.circuit_id is not known"), "{out}");
    // Its boot script now says why it waits.
    let script = boot_script(&m, mac)?;
    ensure!(
        script.contains("was commissioned and no rule assigned it"),
        "{script}"
    );
    Ok(())
}

/// The whole zero-touch path on a QEMU machine shaped like a storage server: two NICs
/// (virtio and e1000e), three SATA and three NVMe disks, a chassis serial; it
/// PXE-boots through the rack's relay (option 82 circuit-id `b-07`) while a switch
/// (lldpd) announces itself on both ports.
#[test]
fn an_unknown_machine_behind_a_relay_is_commissioned_matched_and_installs() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    let (rack, _relay) = remote_rack(&lab)?;
    // The real mirror (this host's APT sources) for the disk-driver packages; the lab
    // network itself never reaches it.
    let cfg = LabConfig::lab()
        .remove("installer.mirror")
        .with("relay-subnet")
        .with("commission");
    let mut srv = Server::prepare(&lab, &cfg)?;
    let out = run(Command::new(rackseed_bin())
        .args(["image", "--config"])
        .arg(&srv.config)
        .arg("drivers"))?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("fetched and verified"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    srv.spawn()?;
    let rules = srv.cli(&["rule", "list"])?;
    ensure!(
        rules.contains("2. storage-rack: when ")
            && rules.contains("dhcp.circuit_id = {rack}-{port}")
            && rules.contains("→ hostname rack-{rack}-{port}, profile storage-node, failure domain rack-{rack}, group rg2"),
        "{rules}"
    );

    let taps = [rack_tap(&rack, "b07-p1")?, rack_tap(&rack, "b07-p2")?];
    let sock = std::env::temp_dir().join(format!("{}-lldpd.sock", rack.name));
    let mut c = rack.cmd("lldpd");
    c.args(["-d", "-u"])
        .arg(&sock)
        .args(["-I", &taps.join(","), "-S", "rack b access switch"]);
    let _lldpd = Daemon::start("lldpd", c)?;
    let lldpcli = |args: &str| rack.sh(&format!("lldpcli -u {} {args}", sock.display()));
    wait_for(
        "lldpd's control socket",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || lldpcli("show configuration").ok().map(|_| ()),
    )?;
    lldpcli("configure system hostname sw-b")?;
    lldpcli("configure lldp tx-interval 2")?;
    lldpcli("configure lldp portidsubtype ifname")?;

    let dir = tempfile::tempdir()?;
    let mut disks = Vec::new();
    for (serial, size, bus) in [
        ("rssata0", "16G", DiskBus::Sata),
        ("rssata1", "16G", DiskBus::Sata),
        ("rssata2", "16G", DiskBus::Sata),
        ("rsnvme0", "32G", DiskBus::Nvme),
        ("rsnvme1", "32G", DiskBus::Nvme),
        ("rsnvme2", "32G", DiskBus::Nvme),
    ] {
        let p = dir.path().join(format!("{serial}.qcow2"));
        qemu::qcow2(&p, size, None)?;
        disks.push(Disk::new(p, bus, serial));
    }
    let (mac, mac2) = ("52:54:00:15:00:01", "52:54:00:15:00:02");
    let spec = VmSpec {
        memory_mb: 1536,
        nics: vec![
            Nic {
                tap: taps[0].clone(),
                mac: mac.into(),
                model: NicModel::Virtio,
                boot: true,
            },
            Nic {
                tap: taps[1].clone(),
                mac: mac2.into(),
                model: NicModel::E1000e,
                boot: false,
            },
        ],
        disks,
        uuid: Some("5a1d0000-0000-4000-8000-000000000715".into()),
        serial: Some(("Example".into(), "R740-lab".into(), "RS-0715".into())),
        ..VmSpec::pxe("rack-b-07", Firmware::Bios, &taps[0], mac)
    };
    let vm = Vm::start(&rack, &spec)?;
    let fail = |e: anyhow::Error| {
        anyhow::anyhow!(
            "{e}\nconsole:\n{}\ntimeline:\n{}",
            rackseed_tests::tail(&vm.serial(), 60),
            events_of(&srv, mac).unwrap_or_default()
        )
    };
    // A machine a rule assigns passes through `commissioned` within one request.
    wait_for(
        "the machine to be commissioned",
        Duration::from_secs(600),
        Duration::from_secs(2),
        || match srv.node_state(mac).ok().as_deref() {
            Some("commissioned" | "provisioning" | "installing") => Some(()),
            _ => None,
        },
    )
    .map_err(fail)?;
    srv.wait_state("rack-b-07", "installing", Duration::from_secs(600))
        .map_err(fail)?;

    // What it reported is what it has.
    let v = srv.api("/api/nodes/rack-b-07")?;
    ensure!(v["mac"] == mac && v["profile"] == "storage-node", "{v:#}");
    ensure!(
        v["failure_domain"] == "rack-b" && v["group"] == "rg2",
        "{v:#}"
    );
    ensure!(v["dhcp"]["giaddr"] == "198.51.100.1", "{v:#}");
    ensure!(v["dhcp"]["circuit_id"] == "b-07", "{v:#}");
    let hw = &v["hardware"];
    ensure!(hw["system"]["serial"] == "RS-0715", "{hw:#}");
    ensure!(hw["system"]["vendor"] == "Example", "{hw:#}");
    ensure!(
        hw["system"]["uuid"] == "5a1d0000-0000-4000-8000-000000000715",
        "{hw:#}"
    );
    ensure!(hw["cpu"]["count"].as_u64() >= Some(1), "{hw:#}");
    let mem = hw["memory_bytes"].as_u64().unwrap_or(0);
    ensure!(mem > 1 << 30 && mem <= 1536 << 20, "memory {mem}");
    let disks = hw["disks"].as_array().cloned().unwrap_or_default();
    ensure!(disks.len() == 6, "{hw:#}");
    for (serial, bus, id, gib) in [
        ("rssata0", "sata", "ata-QEMU_HARDDISK_rssata0", 16u64),
        ("rssata2", "sata", "ata-QEMU_HARDDISK_rssata2", 16),
        ("rsnvme1", "nvme", "nvme-QEMU_NVMe_Ctrl_rsnvme1", 32),
    ] {
        let d = disks
            .iter()
            .find(|d| d["serial"] == serial)
            .with_context(|| format!("no disk {serial} in {hw:#}"))?;
        ensure!(d["bus"] == bus, "{d}");
        ensure!(d["size_bytes"].as_u64() == Some(gib << 30), "{d}");
        ensure!(
            d["by_id"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n == id)),
            "{d}"
        );
    }
    let nics = hw["nics"].as_array().cloned().unwrap_or_default();
    ensure!(nics.len() == 2, "{hw:#}");
    for (m, driver) in [(mac, "virtio_net"), (mac2, "e1000e")] {
        let n = nics
            .iter()
            .find(|n| n["mac"] == m)
            .with_context(|| format!("no NIC {m} in {hw:#}"))?;
        ensure!(n["driver"] == driver, "{n}");
    }
    let lldp = hw["lldp"].as_array().cloned().unwrap_or_default();
    ensure!(
        lldp.iter()
            .any(|l| l["system_name"] == "sw-b" && taps.iter().any(|t| l["port_id"] == t.as_str())),
        "{hw:#}"
    );
    // The timeline in order: discovered through the relay, commissioned, the rule,
    // the state change, then the install boot.
    let tl = srv.timeline("rack-b-07")?;
    rackseed_tests::assert_in_order(
        &tl,
        &[
            "discovered",
            "preseed",
            "commission",
            "agent",
            "commissioned",
            "rule",
            "state",
            "ipxe",
            "kernel",
            "early_command",
        ],
    );
    let ev = events_of(&srv, "rack-b-07")?;
    ensure!(
        ev.contains("through relay 198.51.100.1 (circuit-id b-07")
            && ev.contains("rule `storage-rack` matched: hostname rack-b-07, profile storage-node, failure domain rack-b, group rg2"),
        "{ev}"
    );
    // `node show` and `rule test` as a technician reads them.
    let show = srv.cli(&["node", "show", "rack-b-07"])?;
    for want in [
        "relay         198.51.100.1, circuit-id b-07",
        "system        Example R740-lab, serial RS-0715",
        "nvme 32 GiB",
        "ata-QEMU_HARDDISK_rssata1",
        "e1000e",
        "lldp          ",
    ] {
        ensure!(show.contains(want), "no {want:?} in:\n{show}");
    }
    let test = srv.cli(&["rule", "test", "--node", "rack-b-07"])?;
    ensure!(
        test.contains("rule `big-iron`: disks.count \"6\" does not match `>= 24`")
            && test.contains("matches rule storage-rack: hostname rack-b-07"),
        "{test}"
    );
    // The console shows the same, in a real browser.
    let (code, v) = srv.api_post(
        "/api/users",
        &serde_json::json!({"name": "tech", "role": "read-only", "password": "tech-password-1"}),
    )?;
    ensure!(code == 201, "{v}");
    let mut b = Browser::start(&srv.ns, &test_output("commission")?)?;
    b.get(&format!("{ADMIN}/ui/login"))?;
    b.type_in("#user", "tech")?;
    b.type_in("#password", "tech-password-1")?;
    b.click("#login-button")?;
    b.wait_text("#who", "tech (read-only)", 15)?;
    b.get(&format!("{ADMIN}/ui/nodes/{}", v_id(&srv)?))?;
    b.wait_text("#node-relay", "circuit-id b-07", 15)?;
    b.wait_text("#hw-system", "Example R740-lab, serial RS-0715", 15)?;
    let disks = b.text("#hw-disks")?;
    for want in [
        "nvme-QEMU_NVMe_Ctrl_rsnvme2",
        "ata-QEMU_HARDDISK_rssata0",
        "32 GiB",
    ] {
        ensure!(disks.contains(want), "no {want:?} in:\n{disks}");
    }
    let nics = b.text("#hw-nics")?;
    ensure!(
        nics.contains(mac2) && nics.contains("e1000e") && nics.contains("sw-b port b07-p"),
        "{nics}"
    );
    b.screenshot("node")?;
    drop(vm);
    Ok(())
}

fn v_id(srv: &Server) -> Result<i64> {
    srv.api("/api/nodes/rack-b-07")?["id"]
        .as_i64()
        .context("no node id")
}
