//! Tests over every example profile in `profiles/` and every template in `preseed/`:
//! each install file of each profile is pinned (BIOS and UEFI), every script passes
//! shellcheck, every preseed passes `debconf-set-selections --checkonly` and reads back
//! as rackseed meant it, and the partman recipes pass the grammar checker.
//!
//! shellcheck and debconf come from the README's set-up (`./x setup`); a missing tool
//! fails the test with that hint rather than skipping it.

use super::*;
use crate::plan::Firmware;
use crate::profiles::{Catalog, Resolved};
use std::path::PathBuf;
use std::process::Command;

/// A token as rackseed issues them; redacted to `[token]` in snapshots.
const TOKEN: &str = "5f0c1e4a9b7d2c3e8f6a1b0d9c8e7f6a5b4c3d2e1f0a9b8c";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn catalog() -> Catalog {
    Catalog::load(&workspace().join("profiles")).unwrap_or_else(|e| panic!("{e}"))
}

fn config() -> Config {
    Config::parse_with(
        "[server]\nadvertise = \"192.0.2.1\"\n[dhcp]\nmode = \"authoritative\"\n[[dhcp.subnets]]\nnetwork = \"192.0.2.0/24\"\ninterface = \"br0\"\nrange = \"192.0.2.100-192.0.2.199\"\nrouter = \"192.0.2.1\"\ndomain = \"prov.example\"\n[installer]\nmirror = \"http://mirror.example/debian\"\n",
        "test.toml",
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn mirror() -> MirrorCtx {
    MirrorCtx::from_uri("http://mirror.example/debian", "bookworm", None).expect("mirror")
}

/// The sample node of `p` (its sample vars, an inventory address) with `firmware`.
fn node(p: &Resolved, firmware: Firmware) -> Node {
    let mut n =
        crate::plan::sample_node(&p.name, firmware, crate::profiles::vars::sample(&p.profile));
    n.ip = Some(std::net::Ipv4Addr::new(192, 0, 2, 50));
    n
}

/// Every (profile, firmware, file name, body) of the examples.
fn rendered() -> Vec<(String, Firmware, &'static str, String)> {
    let t = Templates::embedded();
    let cfg = config();
    let cat = catalog();
    let mut out = Vec::new();
    for name in cat.names() {
        let p = cat.get(name).expect("listed");
        for fw in [Firmware::Bios, Firmware::Uefi] {
            let mut ctx = node_ctx(&cfg, &node(&p, fw), &p, mirror(), TOKEN)
                .unwrap_or_else(|e| panic!("{name} {fw:?}: {}", crate::error_chain(&e)));
            // The UEFI renderings carry the disk-driver step (stored drivers), the
            // BIOS ones do not: both forms are pinned and shellchecked.
            if fw == Firmware::Uefi {
                ctx.drivers = crate::images::drivers::DRIVER_PACKAGES
                    .iter()
                    .map(|d| d.to_string())
                    .collect();
            }
            for (file, body) in install_files(&t, &ctx)
                .unwrap_or_else(|e| panic!("{name} {fw:?}: {}", crate::error_chain(&e)))
            {
                out.push((name.to_string(), fw, file, body));
            }
        }
    }
    out
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is not installed; run `./x setup` (it installs the Debian packages the tests use)"
    );
    Command::new(name)
}

/// `debconf-set-selections --checkonly FILE`, one at a time: it takes debconf's
/// database lock even to check, and a second one running at once exits 1 without a
/// word (seen in a full test run).
fn debconf_checkonly(path: &std::path::Path) -> std::process::Output {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    tool("debconf-set-selections")
        .arg("--checkonly")
        .arg(path)
        .output()
        .expect("debconf-set-selections runs")
}

/// The commissioning preseed and script, with and without stored drivers.
fn commission_rendered() -> Vec<(&'static str, &'static str, String)> {
    let t = Templates::embedded();
    let cfg = config();
    let mut out = Vec::new();
    for (label, drivers) in [
        ("no-drivers", vec![]),
        (
            "drivers",
            crate::images::drivers::DRIVER_PACKAGES
                .iter()
                .map(|d| d.to_string())
                .collect(),
        ),
    ] {
        let ctx = crate::render::CommissionCtx::new(
            &cfg,
            "52:54:00:15:00:01".parse().unwrap(),
            TOKEN,
            drivers,
            &"ab".repeat(32),
        );
        for f in crate::render::COMMISSION_FILES {
            let body = crate::render::commission_file(&t, f, &ctx)
                .unwrap_or_else(|e| panic!("{f}: {}", crate::error_chain(&e)));
            out.push((label, *f, body));
        }
    }
    out
}

#[test]
fn the_commissioning_files_are_pinned_shellchecked_and_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (label, file, body) in commission_rendered() {
        insta::assert_snapshot!(
            format!("commission__{label}__{file}"),
            body.replace(TOKEN, "[token]")
        );
        let path = dir.path().join(format!("{label}-{file}"));
        std::fs::write(&path, &body).expect("write");
        let out = if file == "preseed.cfg" {
            debconf_checkonly(&path)
        } else {
            tool("shellcheck")
                .args(["--shell=sh", "--severity=info"])
                .arg(&path)
                .output()
                .expect("shellcheck runs")
        };
        assert!(
            out.status.success(),
            "{label} {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_install_file_of_every_example_profile_is_pinned() {
    for (profile, fw, file, body) in rendered() {
        let body = body.replace(TOKEN, "[token]");
        insta::assert_snapshot!(format!("{profile}__{}__{file}", fw.as_str()), body);
    }
}

#[test]
fn every_rendered_script_passes_shellcheck() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (profile, fw, file, body) in rendered() {
        if SCRIPTS.contains(&file) {
            let path = dir.path().join(format!("{profile}-{}-{file}", fw.as_str()));
            std::fs::write(&path, body).expect("write");
            files.push(path);
        }
    }
    assert!(files.len() >= 40, "only {} scripts rendered", files.len());
    let out = tool("shellcheck")
        .args(["--shell=sh", "--severity=info"])
        .args(&files)
        .output()
        .expect("shellcheck runs");
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_rendered_preseed_passes_debconf_checkonly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    for (profile, fw, file, body) in rendered() {
        if file != "preseed.cfg" {
            continue;
        }
        let path = dir.path().join(format!("{profile}-{}.cfg", fw.as_str()));
        std::fs::write(&path, &body).expect("write");
        let out = debconf_checkonly(&path);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{profile} {fw:?}: debconf-set-selections --checkonly: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 8, "only {n} preseeds checked");
}

#[test]
fn every_rendered_preseed_reads_back_as_meant_and_its_recipes_pass_the_grammar() {
    let t = Templates::embedded();
    let cfg = config();
    let cat = catalog();
    for name in cat.names() {
        let p = cat.get(name).expect("listed");
        let problems = crate::render::check_rendering(&t, &cfg, &mirror(), &p);
        assert!(problems.is_empty(), "{problems:#?}");
    }
    for (profile, fw, file, body) in rendered() {
        match file {
            "preseed.cfg" => {
                let sel = debconf::parse(&body).unwrap_or_else(|e| panic!("{profile}: {e}"));
                assert!(debconf::lint(&sel).is_empty(), "{:?}", debconf::lint(&sel));
                let values = debconf::values(&sel);
                let get = |q: &str| {
                    values
                        .iter()
                        .find(|(k, _)| k == q)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| panic!("{profile}: no {q}"))
                };
                let recipe = partman::check_expert_recipe(&get("partman-auto/expert_recipe"))
                    .unwrap_or_else(|e| panic!("{profile} {fw:?}: {e}"));
                let first = recipe.partitions[0].get("method");
                assert_eq!(
                    first,
                    Some(if fw == Firmware::Uefi {
                        "efi"
                    } else {
                        "biosgrub"
                    }),
                    "{profile} {fw:?}"
                );
                assert!(
                    get("preseed/early_command").contains("/[token]/early.sh")
                        || get("preseed/early_command").contains(TOKEN)
                );
                assert!(get("partman/early_command").ends_with("sh /tmp/rackseed-disks.sh apply"));
            }
            "disks.sh" => {
                // disks.sh carries the recipe for both firmwares, as the preseed holds it.
                let cat = catalog();
                let p = cat.get(&profile).expect("profile");
                let ctx = node_ctx(&cfg, &node(&p, fw), &p, mirror(), TOKEN).expect("ctx");
                for f in [Firmware::Bios, Firmware::Uefi] {
                    let line = partman::expert_recipe(&ctx.plan.root, f).one_line();
                    assert!(
                        body.contains(&format!("recipe='{line}'")),
                        "{profile}: {line}"
                    );
                }
            }
            _ => {}
        }
    }
}

#[test]
fn every_template_file_is_embedded_and_every_embedded_template_has_a_file() {
    let dir = workspace().join("preseed");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("preseed/")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".j2"))
                .map(str::to_string)
        })
        .collect();
    files.sort();
    let mut embedded: Vec<String> = EMBEDDED.iter().map(|(n, _)| n.to_string()).collect();
    embedded.sort();
    assert_eq!(files, embedded);
    for (name, src) in EMBEDDED {
        let on_disk = std::fs::read_to_string(dir.join(format!("{name}.j2"))).expect("read");
        assert_eq!(
            &on_disk, src,
            "{name} differs from its embedded copy; rebuild"
        );
    }
}

#[test]
fn every_profile_file_is_in_the_catalog() {
    let cat = catalog();
    let names = crate::profiles::names_in(&workspace().join("profiles"));
    let loaded: Vec<&str> = cat.names().collect();
    assert_eq!(names, loaded);
    for want in ["storage-node", "hypervisor-pair", "lab-single-disk"] {
        assert!(loaded.contains(&want), "{want} missing");
    }
}

#[test]
fn storage_node_plan_is_what_enrollment_compares() {
    let cat = catalog();
    let p = cat.get("storage-node").expect("storage-node");
    let mut n = node(&p, Firmware::Bios);
    n.vars = serde_json::json!({"addresses": {"br-mgmt": "198.51.100.11", "br-storage": "203.0.113.11/24"}});
    let ctx = node_ctx(&config(), &n, &p, mirror(), TOKEN).expect("ctx");
    let plan = &ctx.plan;
    assert_eq!(plan.fqdn, "node1.prov.example");
    assert_eq!(plan.group.as_deref(), Some("rg1"));
    assert_eq!(
        (plan.root.raid.to_string(), plan.root.disks),
        ("raid1".into(), 2)
    );
    assert_eq!(plan.root.md_device.as_deref(), Some("/dev/md0"));
    let tank = &plan.zfs[0];
    let layout: Vec<String> = tank
        .vdevs
        .iter()
        .map(|v| format!("{}:{}", v.kind, v.disks))
        .collect();
    assert_eq!(
        (tank.name.as_str(), layout),
        ("tank", vec!["mirror:2".to_string(), "mirror:2".into()])
    );
    assert_eq!(tank.datasets[0].name, "tank/data");
    let net = plan.network.as_ref().expect("network");
    let bond = &net.bonds[0];
    assert_eq!((bond.name.as_str(), bond.members.count), ("bond0", 2));
    assert_eq!(bond.mode.to_string(), "802.3ad");
    assert_eq!(bond.hwaddress.as_deref(), Some("52:54:00:12:34:56"));
    let vlans: Vec<(u16, &str)> = net
        .vlans
        .iter()
        .map(|v| (v.id, v.parent.as_str()))
        .collect();
    assert_eq!(vlans, [(10, "bond0"), (20, "bond0"), (30, "bond0")]);
    assert_eq!(net.bridges[1].ports, ["bond0.20"]);
    assert_eq!(net.addresses["br-storage"], "203.0.113.11/24");
    assert_eq!(net.addresses["bond0"], "192.0.2.50/24");
    assert_eq!(net.dhcp, ["bond0"]);
    let repl = plan.replication.as_ref().expect("replication");
    assert_eq!(
        (repl.interface.as_str(), repl.address.as_deref()),
        ("br-storage", Some("203.0.113.11/24"))
    );
    // The JSON round-trips: enrollment reads what rackseed serves.
    let json = install_file(&Templates::embedded(), "plan.json", &ctx).expect("plan.json");
    let back: crate::plan::NodePlan = serde_json::from_str(&json).expect("parse");
    assert_eq!(&back, plan);
}

#[test]
fn vars_that_do_not_fit_the_profile_give_no_plan() {
    let cat = catalog();
    let p = cat.get("storage-node").expect("storage-node");
    let mut n = node(&p, Firmware::Bios);
    n.vars = serde_json::json!({"addresses": {"br-mgmt": "198.51.100.11"}});
    let e = node_ctx(&config(), &n, &p, mirror(), TOKEN).unwrap_err();
    assert_eq!(
        crate::error_chain(&e),
        "node node1 does not fit profile storage-node: vars.addresses: br-storage needs an address from 203.0.113.0/24 (profile storage-node gives it `method: node`), e.g. {\"addresses\": {\"br-storage\": \"203.0.113.10\"}}"
    );
}
