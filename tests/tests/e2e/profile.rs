//! Profiles end to end: a broken profile never reaches a node (the real `rackseed
//! serve` refuses to start, `node add` refuses), `rackseed profile check|schema|render`
//! as an author runs them, `disks.sh` under busybox on loop devices, and the real
//! Debian installer reading a `storage-node` preseed: its early_command reports the
//! values the installer parsed, which must be what rackseed rendered.

use anyhow::{Context, Result, bail};
use rackseed::render::{INSTALL_FILES, debconf, partman};
use rackseed_tests::qemu::{self, qcow2};
use rackseed_tests::{Lab, LabConfig, Server, assert_in_order, rackseed_bin, run, workspace};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STORE_VARS: &str =
    r#"{"addresses": {"br-mgmt": "198.51.100.11", "br-storage": "203.0.113.11"}}"#;

/// Runs the rackseed binary (outside any namespace) and returns (exit code, stdout, stderr).
fn rackseed(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(rackseed_bin())
        .args(args)
        .output()
        .context("cannot run rackseed")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

/// A copy of `profiles/` in a temp dir, with `name` replaced by `text` if given.
fn profiles_copy(name: &str, text: Option<&str>) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for e in fs::read_dir(workspace().join("profiles"))? {
        let p = e?.path();
        fs::copy(&p, dir.path().join(p.file_name().context("name")?))?;
    }
    if let Some(t) = text {
        fs::write(dir.path().join(format!("{name}.yaml")), t)?;
    }
    Ok(dir)
}

/// The current install token of node `host` (from the inventory database).
fn install_token(srv: &Server, host: &str) -> Result<String> {
    let db = srv.dir.path().join("data/inventory.db");
    let out = run(Command::new("sqlite3").arg(&db).arg(format!(
        "SELECT t.token FROM tokens t JOIN nodes n ON n.id = t.node_id WHERE n.hostname = '{host}' AND t.kind = 'install' ORDER BY t.created_at DESC LIMIT 1;"
    )))?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if t.is_empty() {
        bail!("node {host} has no install token");
    }
    Ok(t)
}

#[test]
fn serve_refuses_to_start_with_a_broken_profile() -> Result<()> {
    let lab = Lab::new()?;
    let broken = fs::read_to_string(workspace().join("profiles/storage-node.yaml"))?.replace(
        "disks: {count: 2, min_size: 8G}",
        "disks: {count: 1, min_size: 8G}",
    );
    let profiles = profiles_copy("storage-node", Some(&broken))?;
    let cfg = LabConfig::lab().set("profiles.dir", profiles.path().display().to_string());
    let mut srv = Server::prepare(&lab, &cfg)?;
    let err = srv
        .spawn()
        .expect_err("rackseed started with a broken profile");
    let text = format!("{err:#}");
    assert!(
        text.contains("profiles are invalid; no node can be assigned a broken profile"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}/storage-node.yaml: storage.root.raid: raid1 needs 2 disks, found 1",
            profiles.path().display()
        )),
        "{text}"
    );
    Ok(())
}

#[test]
fn node_add_refuses_unknown_profiles_and_vars_that_do_not_fit() -> Result<()> {
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let add = |body: Value| -> Result<(u16, String)> {
        let (code, v) = srv.api_post("/api/nodes", &body)?;
        Ok((code, v["error"].as_str().unwrap_or_default().to_string()))
    };
    let base = |v: Value| {
        let mut b =
            json!({"mac": "52:54:00:20:00:09", "hostname": "store9", "profile": "storage-node"});
        b["vars"] = v;
        b
    };
    let cases = [
        (
            json!({"mac": "52:54:00:20:00:09", "hostname": "x", "profile": "nope"}),
            "profile: no profile named `nope` is loaded (loaded: dc-base, hypervisor-pair, lab-single-disk, storage-node)",
        ),
        (
            base(Value::Null),
            "vars.addresses: br-mgmt needs an address from 198.51.100.0/24 (profile storage-node gives it `method: node`), e.g. {\"addresses\": {\"br-mgmt\": \"198.51.100.10\"}}",
        ),
        (
            base(json!({"addresses": {"br-mgmt": "203.0.113.5", "br-storage": "203.0.113.11"}})),
            "vars.addresses.br-mgmt: 203.0.113.5 is outside the subnet 198.51.100.0/24",
        ),
        (
            base(json!({"addresses": {"br-guest": "198.51.100.5"}})),
            "vars.addresses.br-guest: profile storage-node gives br-guest no node address (interfaces with `method: node`: br-mgmt, br-storage)",
        ),
        (
            base(json!({"adresses": {}})),
            "vars.adresses: unknown field `adresses`, expected one of `addresses`, `root_disks`, `zfs_disks`, `bond_members`, `installer_nic`",
        ),
        (
            base(
                json!({"addresses": {"br-mgmt": "198.51.100.11", "br-storage": "203.0.113.11"}, "zfs_disks": {"tank": ["/dev/disk/by-id/a"]}}),
            ),
            "vars.zfs_disks.tank: the layout takes 4 disks, 1 are given",
        ),
    ];
    for (body, want) in cases {
        let (code, msg) = add(body.clone())?;
        assert_eq!((code, msg.as_str()), (400, want), "for {body}");
    }
    // Values carrying line breaks, quotes or shell never get in: each is refused with
    // the field named, and nothing is stored.
    let good = serde_json::from_str::<Value>(STORE_VARS)?;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = base(good.clone());
        f(&mut b);
        b
    };
    let hostile: Vec<(Value, &str)> = vec![
        (
            with(&|b| b["hostname"] = json!("store9\nevil")),
            "hostname: `store9\\nevil` is not a valid hostname",
        ),
        (
            with(&|b| b["hostname"] = json!("$(reboot)")),
            "hostname: `$(reboot)` is not a valid hostname",
        ),
        (
            with(&|b| b["vars"]["addresses"]["br-mgmt"] = json!("198.51.100.11\nup reboot")),
            "vars.addresses.br-mgmt",
        ),
        (
            with(&|b| b["vars"]["addresses"]["br-storage"] = json!("203.0.113.11' && id '")),
            "vars.addresses.br-storage",
        ),
        (
            with(&|b| b["vars"]["installer_nic"] = json!("52:54:00:20:00:01\nx")),
            "installer_nic",
        ),
        (
            with(&|b| b["failure_domain"] = json!("rack-a\nevil")),
            "failure_domain: `rack-a\\nevil` is not a label",
        ),
        (
            with(&|b| b["failure_domain"] = json!("rack `id`")),
            "failure_domain:",
        ),
        (
            with(&|b| b["group"] = json!("rg1;reboot")),
            "group: `rg1;reboot` is not a group name",
        ),
    ];
    for (body, want) in hostile {
        let (code, msg) = add(body.clone())?;
        assert_eq!(code, 400, "{body}: {msg}");
        assert!(msg.contains(want), "for {body}: `{msg}` lacks `{want}`");
    }
    assert_eq!(
        srv.api("/api/nodes")?["nodes"].as_array().map(Vec::len),
        Some(0),
        "a refused node was stored"
    );
    // A fitting node is accepted; a second one with the same storage address is not.
    let (code, _) = add(base(serde_json::from_str(STORE_VARS)?))?;
    assert_eq!(code, 201);
    let mut other =
        base(json!({"addresses": {"br-mgmt": "198.51.100.12", "br-storage": "203.0.113.11"}}));
    other["mac"] = json!("52:54:00:20:00:0a");
    other["hostname"] = json!("store10");
    let (code, msg) = add(other)?;
    assert_eq!(
        (code, msg.as_str()),
        (
            400,
            "vars.addresses.br-storage: 203.0.113.11 is already an address of node store9"
        )
    );
    // The CLI says the same.
    let err = srv
        .add_node("52:54:00:20:00:0b", "x", "nope", &[])
        .expect_err("unknown profile accepted");
    assert!(
        format!("{err:#}").contains("profile: no profile named `nope` is loaded"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn profile_render_writes_exactly_what_http_serves() -> Result<()> {
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let (mac, host, ip) = ("52:54:00:20:00:02", "store2", "192.0.2.42");
    srv.add_node(
        mac,
        host,
        "storage-node",
        &["--ip", ip, "--vars", STORE_VARS],
    )?;
    let token = install_token(&srv, host)?;
    // Served first, to the node's own address: fetching late.sh issues the node's
    // enrollment token, which the preview then reads from the server's data directory
    // like every other value.
    let node = lab.node_client(mac)?;
    let mut served = Vec::new();
    for name in INSTALL_FILES {
        let (status, body) =
            node.curl(&[&format!("http://192.0.2.1:8080/install/{token}/{name}")])?;
        assert_eq!(status, 200, "{name}");
        served.push((name, body));
    }
    let out = tempfile::tempdir()?;
    let config = srv.config.display().to_string();
    let outdir = out.path().display().to_string();
    srv.cli(&[
        "profile",
        "render",
        "--config",
        &config,
        "--profile",
        "storage-node",
        "--mac",
        mac,
        "--hostname",
        host,
        "--ip",
        ip,
        "--vars",
        STORE_VARS,
        "--token",
        &token,
        "--out",
        &outdir,
    ])?;
    for (name, served) in served {
        let previewed = fs::read(out.path().join(name))?;
        assert!(
            served == previewed,
            "{name} differs between HTTP and `profile render`:\n--- served\n{}\n--- rendered\n{}",
            String::from_utf8_lossy(&served),
            String::from_utf8_lossy(&previewed)
        );
    }
    // The plan names the node's inventory address on the provisioning bond.
    let plan: Value = serde_json::from_slice(&fs::read(out.path().join("plan.json"))?)?;
    assert_eq!(plan["network"]["addresses"]["bond0"], "192.0.2.42/24");
    assert_eq!(plan["replication"]["address"], "203.0.113.11/24");
    Ok(())
}

#[test]
fn profile_check_and_schema_as_an_author_runs_them() -> Result<()> {
    let (code, stdout, stderr) = rackseed(&[
        "profile",
        "check",
        "--profiles",
        &workspace().join("profiles").display().to_string(),
    ])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    for p in [
        "dc-base",
        "hypervisor-pair",
        "lab-single-disk",
        "storage-node",
    ] {
        assert!(stdout.contains(&format!("profile {p}: ok")), "{stdout}");
    }
    // A broken file, checked on its own (its base is found beside it).
    let broken = fs::read_to_string(workspace().join("profiles/storage-node.yaml"))?
        .replace(
            "- {id: 30, on: bond0}",
            "- {id: 30, on: bond0}\n    - {id: 40, on: bond1}",
        )
        .replace("ports: [bond0.30]", "ports: [bond0.40]");
    let dir = profiles_copy("storage-node", Some(&broken))?;
    let file = dir.path().join("storage-node.yaml");
    let (code, stdout, stderr) = rackseed(&["profile", "check", &file.display().to_string()])?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    let f = file.display();
    assert!(
        stderr.contains(&format!(
            "error: {f}: network.vlans[3].on: no bond or interface named bond1"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: {f}: network.bridges[2].ports[0]: no VLAN named bond0.40 (VLANs: bond0.10, bond0.20, bond0.30, bond1.40)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("profile check failed: 2 problem(s)"),
        "{stderr}"
    );
    // The schema is JSON and names the sections.
    let (code, stdout, _) = rackseed(&["profile", "schema"])?;
    assert_eq!(code, 0);
    let schema: Value = serde_json::from_str(&stdout)?;
    assert_eq!(schema["title"], "rackseed profile");
    assert!(schema["properties"]["storage"].is_object());
    Ok(())
}

/// Loop devices over sparse files; detached on drop.
struct Loops {
    devs: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Loops {
    fn new(sizes: &[&str]) -> Result<Loops> {
        let dir = tempfile::tempdir()?;
        let mut devs = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let f = dir.path().join(format!("disk{i}.img"));
            run(Command::new("truncate").args(["-s", size]).arg(&f))?;
            let out = run(Command::new("losetup").args(["-f", "--show"]).arg(&f))?;
            devs.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        Ok(Loops { devs, _dir: dir })
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        for d in &self.devs {
            let _ = Command::new("losetup").args(["-d", d]).status();
        }
    }
}

/// disks.sh as the installer runs it (busybox sh and applets only), over loop devices
/// that `list-devices` reports: it picks the disks the rule matches, hands the
/// installer the partman answers, and in apply mode clears old signatures from the
/// chosen disks and nothing else.
#[test]
fn disks_sh_chooses_and_clears_root_disks_under_busybox() -> Result<()> {
    let loops = Loops::new(&["9G", "1G", "9G"])?;
    let (root_a, data, root_b) = (&loops.devs[0], &loops.devs[1], &loops.devs[2]);
    for d in [root_a, data] {
        run(Command::new("mkfs.xfs").args(["-q", "-f", d]))?;
    }
    let work = tempfile::tempdir()?;
    let w = work.path();
    let rendered = w.join("files");
    let (code, out, err) = rackseed(&[
        "profile",
        "render",
        "--profiles",
        &workspace().join("profiles").display().to_string(),
        "--profile",
        "storage-node",
        "--mac",
        "52:54:00:20:00:03",
        "--hostname",
        "store3",
        "--vars",
        STORE_VARS,
        "--out",
        &rendered.display().to_string(),
    ])?;
    assert_eq!(code, 0, "{out}{err}");
    // The installer's environment: busybox applets, list-devices, debconf-set-selections
    // and wget stand-ins that record what they were given.
    let bin = w.join("bin");
    fs::create_dir_all(&bin)?;
    run(Command::new("busybox").arg("--install").arg("-s").arg(&bin))?;
    let list: String = [root_a, data, root_b]
        .iter()
        .map(|d| format!("{d}\n"))
        .collect();
    fs::write(w.join("list"), list)?;
    let stub = |name: &str, body: &str| -> Result<()> {
        let p = bin.join(name);
        let _ = fs::remove_file(&p);
        fs::write(&p, format!("#!/bin/sh\n{body}\n"))?;
        run(Command::new("chmod").arg("0755").arg(&p)).map(|_| ())
    };
    stub(
        "list-devices",
        &format!("cat '{}'", w.join("list").display()),
    )?;
    stub(
        "debconf-set-selections",
        &format!("cat \"$1\" >> '{}'", w.join("selections").display()),
    )?;
    stub(
        "wget",
        &format!(
            "while [ $# -gt 1 ]; do case $1 in --post-data) shift; body=$1 ;; esac; shift; done\nprintf '%s\\n%s\\n----\\n' \"${{1##*/}}\" \"$body\" >> '{}'",
            w.join("events").display()
        ),
    )?;
    // wipefs and blockdev are not installer tools; clearing must work without them.
    let script = rendered.join("disks.sh");
    let disks_sh = |mode: &str| -> Result<std::process::Output> {
        Command::new(bin.join("sh"))
            .arg(&script)
            .arg(mode)
            .env_clear()
            .env("PATH", &bin)
            .output()
            .context("cannot run disks.sh")
    };
    let o = disks_sh("apply")?;
    assert!(
        o.status.success(),
        "disks.sh apply: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let plan: rackseed::plan::NodePlan =
        serde_json::from_slice(&fs::read(rendered.join("plan.json"))?)?;
    let recipe = partman::expert_recipe(&plan.root, rackseed::plan::Firmware::Bios).one_line();
    let arrays = partman::raid_arrays(&plan.root);
    let raid = partman::raid_recipe(&arrays, &[root_a.as_str(), root_b.as_str()]);
    assert_eq!(
        fs::read_to_string(w.join("selections"))?,
        format!(
            "d-i partman-auto/disk string {root_a} {root_b}\nd-i grub-installer/bootdev string {root_a} {root_b}\nd-i partman-auto/expert_recipe string {recipe}\nd-i partman-auto-raid/recipe string {raid}\n"
        )
    );
    let entries = partman::check_raid_recipe(&raid)?;
    partman::check_raid_against_recipe(
        &partman::check_expert_recipe(&recipe)?,
        &entries,
        &[root_a.as_str(), root_b.as_str()],
    )?;
    let events = fs::read_to_string(w.join("events"))?;
    assert!(
        events.contains(&format!(
            "disks\nroot disks (apply): {root_a} {root_b}\nroot serials: "
        )) && events.contains("\nbooted: bios (rendered for bios)\n"),
        "{events}"
    );
    assert!(
        events.contains(&format!(
            "{}: 1024 MiB is below the minimum of 8192 MiB",
            &data[5..]
        )),
        "{events}"
    );
    assert!(
        events.contains(&format!("cleared old metadata from {root_a} {root_b}")),
        "{events}"
    );
    // The chosen disks are blank now; the data disk keeps its file system.
    let sig = |d: &str| -> Result<String> {
        Ok(String::from_utf8_lossy(
            &run(Command::new("wipefs").args(["-n", "-i", "-O", "TYPE", d]))?.stdout,
        )
        .trim()
        .to_string())
    };
    assert_eq!(sig(root_a)?, "");
    assert_eq!(sig(data)?, "xfs");
    // With one big disk, select mode defers (exit 3) and says why; apply fails.
    fs::write(w.join("list"), format!("{root_a}\n{data}\n"))?;
    let o = disks_sh("select")?;
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = disks_sh("apply")?;
    assert_eq!(o.status.code(), Some(1));
    let events = fs::read_to_string(w.join("events"))?;
    assert!(
        events.contains(&format!(
            "error\ndisks.sh apply: raid1 root needs 2 disk(s), 1 match the rule (disks: {} {})",
            &root_a[5..],
            &data[5..]
        )),
        "{events}"
    );
    Ok(())
}

/// `question=value` lines of an event into a map.
fn answers(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(q, v)| (q.to_string(), v.to_string()))
        .collect()
}

fn sha256_hex(s: &str) -> Result<String> {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(c.stdin.as_mut().context("stdin")?, s.as_bytes())?;
    let out = c.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// A `storage-node` machine: two NICs (the bond's members), both with link, booting
/// from the second; two 8G root disks and four 1G data disks. The disks are USB
/// storage, whose drivers the installer's initrd carries, so the installer sees them
/// at early_command (the drivers of the other buses come later, as .udebs).
fn storage_node_vm(lab: &Lab, name: &str, macs: [&str; 2], dir: &Path) -> Result<qemu::Vm> {
    let mut disks = Vec::new();
    for (serial, size) in [
        ("rsroot0", "8G"),
        ("rsroot1", "8G"),
        ("rsdata2", "1G"),
        ("rsdata3", "1G"),
        ("rsdata4", "1G"),
        ("rsdata5", "1G"),
    ] {
        let p = dir.join(format!("{serial}.qcow2"));
        qcow2(&p, size, None)?;
        disks.push(qemu::Disk::new(p, qemu::DiskBus::Usb, serial));
    }
    let mut nics = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        nics.push(qemu::Nic {
            tap: lab.tap()?,
            mac: mac.to_string(),
            model: qemu::NicModel::Virtio,
            boot: i == 1,
        });
    }
    qemu::Vm::start(
        &lab.srv,
        &qemu::VmSpec {
            name: name.into(),
            memory_mb: 1024,
            cpus: 1,
            firmware: qemu::Firmware::Bios,
            nics,
            disks,
            kernel: None,
            uuid: None,
            serial: None,
            vars: None,
            ipv4_pxe_only: false,
        },
    )
}

/// The real installer boots a `storage-node` machine from its second NIC: netcfg takes
/// that NIC without a question (BOOTIF + interface=auto), early_command reports what
/// the installer parsed (every question of the preseed, and the partman answers
/// disks.sh derived from the disks the installer lists), each of which must be what
/// rackseed rendered, and disks.sh names the root and pool disks it chose by serial.
#[test]
fn storage_node_installer_parses_the_preseed_as_rendered() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    let cfg = LabConfig::lab();
    let srv = Server::start(&lab, &cfg)?;
    // The first NIC is not the boot NIC and is unknown to rackseed; the node is
    // registered by the MAC it PXE-boots from.
    let (other_mac, mac, host) = ("52:54:00:20:00:00", "52:54:00:20:00:01", "store1");
    srv.add_node(mac, host, "storage-node", &["--vars", STORE_VARS])?;
    let disks_dir = tempfile::tempdir()?;
    let started = Instant::now();
    let vm = storage_node_vm(&lab, host, [other_mac, mac], disks_dir.path())?;
    srv.wait_state(host, "installing", Duration::from_secs(420))
        .with_context(|| format!("console:\n{}", rackseed_tests::tail(&vm.serial(), 40)))?;
    let reported = rackseed_tests::wait_for(
        "the debconf report of early_command",
        Duration::from_secs(180),
        Duration::from_secs(2),
        || {
            srv.timeline(host)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "debconf")
                .map(|(_, m)| m)
        },
    )?;
    eprintln!(
        "{host}: power-on to the debconf report in {:.0?}",
        started.elapsed()
    );
    let t = srv.timeline(host)?;
    assert_in_order(
        &t,
        &[
            "dhcp",
            "ipxe",
            "kernel",
            "initrd",
            "dhcp",
            "preseed",
            "early_command",
            "disks",
            "debconf",
        ],
    );
    // The installer's own DHCP came from the boot NIC (the node's MAC), not the first.
    let after_initrd = t
        .iter()
        .skip_while(|(k, _)| k != "initrd")
        .find(|(k, m)| k == "dhcp" && m.contains("no network boot"));
    assert!(
        after_initrd.is_some(),
        "no installer DHCP from {mac} (not {other_mac}) after the initrd: {t:?}"
    );
    let parsed = answers(&reported);

    // What rackseed served, read the way the installer reads it, from the node's
    // address (the VM is off the LAN now; the rest comes from the timeline).
    drop(vm);
    let node = lab.node_client(mac)?;
    let token = install_token(&srv, host)?;
    let (code, body) = node.curl(&[&format!(
        "http://192.0.2.1:8080/install/{token}/preseed.cfg"
    )])?;
    assert_eq!(code, 200);
    let preseed = String::from_utf8(body)?;
    let sel = debconf::parse(&preseed)?;
    let mut mismatches = Vec::new();
    for (q, want) in debconf::values(&sel) {
        let kind = sel.iter().find(|s| s.question == q).map(|s| s.kind.clone());
        let want = if kind.as_deref() == Some("password") {
            format!("sha256:{}", sha256_hex(&want)?)
        } else {
            want
        };
        match parsed.get(&q) {
            Some(got) if *got == want => {}
            got => mismatches.push(format!("{q}: rendered {want:?}, installer holds {got:?}")),
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // disks.sh chose the two 8G disks by the rule and set partman's answers for them.
    let disk_event = t
        .iter()
        .filter(|(k, _)| k == "disks")
        .map(|(_, m)| m.as_str())
        .find(|m| m.starts_with("root disks (select):"))
        .with_context(|| format!("no disk choice in the timeline: {t:?}"))?;
    eprintln!("{host}: {disk_event}");
    let mut roots: Vec<String> = disk_event
        .lines()
        .filter(|l| l.contains(" 8192 MiB "))
        .filter_map(|l| l.split_whitespace().next().map(|d| format!("/dev/{d}")))
        .collect();
    roots.sort();
    assert_eq!(roots.len(), 2, "{disk_event}");
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    assert_eq!(parsed["partman-auto/disk"], roots.join(" "), "{disk_event}");
    assert_eq!(parsed["grub-installer/bootdev"], roots.join(" "));
    let plan: rackseed::plan::NodePlan = serde_json::from_slice(
        &node
            .curl(&[&format!("http://192.0.2.1:8080/install/{token}/plan.json")])?
            .1,
    )?;
    let raid = partman::raid_recipe(&partman::raid_arrays(&plan.root), &roots);
    assert_eq!(parsed["partman-auto-raid/recipe"], raid);
    let recipe = partman::check_expert_recipe(&parsed["partman-auto/expert_recipe"])?;
    partman::check_raid_against_recipe(&recipe, &partman::check_raid_recipe(&raid)?, &roots)?;
    assert!(
        disk_event.contains("booted: bios (rendered for bios)"),
        "{disk_event}"
    );
    // By serial: the two 8G disks for root, the four 1G disks for pool tank (USB
    // disks enumerate in any order).
    let serials_after = |prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = disk_event
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| {
                rest.rsplit("serials: ")
                    .next()
                    .unwrap_or(rest)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(
        serials_after("root serials: "),
        ["rsroot0", "rsroot1"],
        "{disk_event}"
    );
    assert!(
        disk_event.contains("\npool tank (4 disk(s)): 4 found: "),
        "{disk_event}"
    );
    assert_eq!(
        serials_after("pool tank (4 disk(s)): "),
        ["rsdata2", "rsdata3", "rsdata4", "rsdata5"],
        "{disk_event}"
    );
    Ok(())
}

/// A `hypervisor-pair` machine as its profile describes it: UEFI, two NICs booting
/// from the second, two SATA disks on an AHCI controller and two NVMe disks. rackseed
/// has stored the installer kernel's disk drivers (`rackseed image drivers`, verified
/// against the mirror's signed chain); early_command loads them, and disks.sh picks
/// the SATA disks for the root RAID1 and the NVMe disks for pool vmpool by their
/// /dev/disk/by-id names, naming them by serial on the timeline.
#[test]
fn hypervisor_pair_installer_picks_sata_root_and_nvme_pool_disks() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    // The real mirror (this host's APT sources) for the driver packages; the lab
    // network itself never reaches it. iPXE over HTTP keeps the boot short.
    let cfg = LabConfig::lab()
        .remove("installer.mirror")
        .with("ipxe-on-uefi");
    let mut srv = Server::prepare(&lab, &cfg)?;
    let out = run(Command::new(rackseed_bin())
        .args(["image", "--config"])
        .arg(&srv.config)
        .arg("drivers"))?;
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.contains(
            "fetched and verified (ata-modules, sata-modules, scsi-modules; InRelease signed by"
        ),
        "{out}"
    );
    srv.spawn()?;
    let (other_mac, mac, host) = ("52:54:00:22:00:00", "52:54:00:22:00:01", "hv1");
    srv.add_node(
        mac,
        host,
        "hypervisor-pair",
        &[
            "--vars",
            r#"{"addresses": {"br-mgmt": "198.51.100.21", "br-repl": "203.0.113.21"}}"#,
        ],
    )?;
    let dir = tempfile::tempdir()?;
    let mut disks = Vec::new();
    for (serial, size, bus) in [
        ("rssata0", "120G", qemu::DiskBus::Sata),
        ("rssata1", "120G", qemu::DiskBus::Sata),
        ("rsnvme0", "480G", qemu::DiskBus::Nvme),
        ("rsnvme1", "480G", qemu::DiskBus::Nvme),
    ] {
        let p = dir.path().join(format!("{serial}.qcow2"));
        qcow2(&p, size, None)?;
        disks.push(qemu::Disk::new(p, bus, serial));
    }
    let nics = [other_mac, mac]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(qemu::Nic {
                tap: lab.tap()?,
                mac: m.to_string(),
                model: qemu::NicModel::Virtio,
                boot: i == 1,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let vm = qemu::Vm::start(
        &lab.srv,
        &qemu::VmSpec {
            name: host.into(),
            memory_mb: 1024,
            cpus: 1,
            firmware: qemu::Firmware::Uefi,
            nics,
            disks,
            kernel: None,
            uuid: None,
            serial: None,
            vars: None,
            ipv4_pxe_only: false,
        },
    )?;
    srv.wait_state(host, "installing", Duration::from_secs(600))
        .with_context(|| format!("console:\n{}", rackseed_tests::tail(&vm.serial(), 40)))?;
    let disk_event = rackseed_tests::wait_for(
        "the disk choice of early_command",
        Duration::from_secs(240),
        Duration::from_secs(2),
        || {
            srv.timeline(host)
                .ok()?
                .into_iter()
                .find(|(k, m)| k == "disks" && m.starts_with("root disks"))
                .map(|(_, m)| m)
        },
    )
    .with_context(|| format!("timeline: {:?}", srv.timeline(host).unwrap_or_default()))?;
    eprintln!(
        "{host}: power-on to the disk choice in {:.0?}\n{disk_event}",
        started.elapsed()
    );
    let t = srv.timeline(host)?;
    assert_in_order(
        &t,
        &[
            "kernel",
            "initrd",
            "dhcp",
            "preseed",
            "early_command",
            "drivers",
            "disks",
        ],
    );
    let drivers = t
        .iter()
        .find(|(k, _)| k == "drivers")
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    assert!(
        drivers.contains("unpacked: ata-modules sata-modules scsi-modules")
            && drivers.contains("ahci")
            && drivers.contains("nvme"),
        "{drivers}"
    );
    assert!(
        disk_event.starts_with("root disks (select): /dev/"),
        "{disk_event}"
    );
    let serials_after = |prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = disk_event
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| {
                rest.rsplit("serials: ")
                    .next()
                    .unwrap_or(rest)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(
        serials_after("root serials: "),
        ["rssata0", "rssata1"],
        "{disk_event}"
    );
    assert_eq!(
        serials_after("pool vmpool (2 disk(s)): "),
        ["rsnvme0", "rsnvme1"],
        "{disk_event}"
    );
    for id in [
        "ata-QEMU_HARDDISK_rssata0",
        "ata-QEMU_HARDDISK_rssata1",
        "nvme-QEMU_NVMe_Ctrl_rsnvme0",
        "nvme-QEMU_NVMe_Ctrl_rsnvme1",
    ] {
        assert!(disk_event.contains(id), "{id} not in {disk_event}");
    }
    assert!(
        disk_event.contains("booted: uefi (rendered for uefi)"),
        "{disk_event}"
    );
    // The installer configured the boot NIC (its DHCP is on this node's timeline,
    // which is kept by MAC), not the first one.
    assert!(
        t.iter()
            .skip_while(|(k, _)| k != "initrd")
            .any(|(k, m)| k == "dhcp" && m.contains("no network boot")),
        "no installer DHCP from {mac} (not {other_mac}) after the initrd: {t:?}"
    );
    drop(vm);
    Ok(())
}
