//! Backup and restore of the appliance's state: `rackseed backup` while a server runs,
//! `rackseed restore` into a second server's fresh data directory in another network
//! namespace, which then serves the same nodes with the same CA and enrolls a node
//! that was installed against the first; and the refusals (a tampered archive, a
//! backup of a newer schema, a running server's data directory).

use anyhow::{Context, Result, bail};
use rackseed_tests::{Lab, LabConfig, Server, rackseed_bin, sh};
use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs `rackseed ARGS` (it touches files only, no network); (success, stdout+stderr).
fn rackseed(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(rackseed_bin())
        .args(args)
        .output()
        .context("cannot run rackseed")?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// What a server says about its nodes, the fields a restore must keep.
fn nodes(srv: &Server) -> Result<Vec<Value>> {
    let v = srv.api("/api/nodes")?;
    let mut out: Vec<Value> = v["nodes"]
        .as_array()
        .context("no node list")?
        .iter()
        .map(|n| {
            json!({
                "id": n["id"], "mac": n["mac"], "hostname": n["hostname"],
                "profile": n["profile"], "state": n["state"], "ip": n["ip"],
                "arch": n["arch"], "created_at": n["created_at"],
            })
        })
        .collect();
    out.sort_by_key(|n| n["id"].as_i64());
    Ok(out)
}

/// The bound leases a server holds, as (address, MAC).
fn leases(srv: &Server) -> Result<Vec<(String, String)>> {
    let v = srv.api("/api/leases")?;
    Ok(v["leases"]
        .as_array()
        .context("no lease list")?
        .iter()
        .filter(|l| l["state"] == "bound")
        .map(|l| {
            (
                l["ip"].as_str().unwrap_or_default().to_string(),
                l["mac"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// `archive` as a newer rackseed would write it: its inventory at schema `schema`
/// and the manifest saying so (sizes and hashes right), packed by GNU tar.
fn with_newer_schema(archive: &Path, dir: &Path, schema: u32) -> Result<std::path::PathBuf> {
    let x = dir.join("x");
    fs::create_dir_all(&x)?;
    sh(&format!("tar -xf {} -C {}", path(archive), path(&x)))?;
    let db = x.join("data/inventory.db");
    sh(&format!(
        "sqlite3 {} 'PRAGMA user_version = {schema}'",
        path(&db)
    ))?;
    let manifest_path = x.join("rackseed-backup.json");
    let mut m: Value = serde_json::from_slice(&fs::read(&manifest_path)?)?;
    m["schema"] = json!(schema);
    let bytes = fs::read(&db)?;
    for f in m["files"].as_array_mut().context("no files")? {
        if f["path"] == "data/inventory.db" {
            f["size"] = json!(bytes.len());
            f["sha256"] = json!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
        }
    }
    fs::write(&manifest_path, serde_json::to_vec_pretty(&m)?)?;
    let files: Vec<String> = m["files"]
        .as_array()
        .context("no files")?
        .iter()
        .map(|f| f["path"].as_str().unwrap_or_default().to_string())
        .collect();
    let out = dir.join("newer.backup");
    sh(&format!(
        "tar --format=ustar --no-recursion -cf {} -C {} rackseed-backup.json {}",
        path(&out),
        path(&x),
        files.join(" ")
    ))?;
    Ok(out)
}

#[test]
fn a_backup_taken_while_serving_restores_on_a_fresh_host_with_the_same_nodes_and_ca() -> Result<()>
{
    // Host A: nodes in several states, one installed with the enrollment token its
    // late.sh carried (as the installer would have put it into the node's agent.toml),
    // a PXE machine discovered by DHCP, leases.
    let lab_a = Lab::new()?;
    let mut a = Server::start(&lab_a, &LabConfig::lab())?;
    let mac = "52:54:00:31:00:01";
    a.add_node(mac, "web1", "lab-single-disk", &[])?;
    a.add_node("52:54:00:31:00:02", "web2", "lab-single-disk", &["--ready"])?;
    a.add_node(
        "52:54:00:31:00:03",
        "web3",
        "lab-single-disk",
        &["--ip", "192.0.2.53"],
    )?;
    let node = lab_a.node_client(mac)?;
    let _pxe = lab_a.pxe_client("52:54:00:31:00:09")?;
    let token = node.install_token(mac)?;
    let url = |f: &str| format!("http://192.0.2.1:8080/install/{token}/{f}");
    assert_eq!(
        node.curl(&["--data", "x", &url("events/early_command")])?.0,
        200
    );
    let (code, plan) = node.curl(&[&url("plan.json")])?;
    assert_eq!(code, 200);
    let plan: Value = serde_json::from_slice(&plan)?;
    let (code, late) = node.curl(&[&url("late.sh")])?;
    assert_eq!(code, 200);
    let late = String::from_utf8(late)?;
    let enroll_token = late
        .lines()
        .find_map(|l| l.trim().strip_prefix("enroll_token = \""))
        .and_then(|r| r.strip_suffix('"'))
        .context("no enrollment token in late.sh")?
        .to_string();
    assert_eq!(
        node.curl(&["--data", "x", &url("events/late_command")])?.0,
        200
    );
    assert_eq!(a.node_state("web1")?, "installed");
    let ca_a = fs::read_to_string(a.dir.path().join("data/ca/ca.crt"))?;

    // The backup, while A serves.
    let work = tempfile::tempdir()?;
    let archive = work.path().join("rackseed.backup");
    let (ok, out) = rackseed(&[
        "backup",
        "--config",
        path(&a.config),
        "--out",
        path(&archive),
    ])?;
    assert!(ok, "{out}");
    assert!(out.contains("lease writes from the journal"), "{out}");
    assert_eq!(
        fs::metadata(&archive)?.permissions().mode() & 0o777,
        0o600,
        "the archive holds the CA key"
    );
    // A plain tar: the manifest first, then the state.
    let listing = sh(&format!("tar -tf {}", path(&archive)))?;
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(names.first(), Some(&"rackseed-backup.json"), "{listing}");
    for want in [
        "data/inventory.db",
        "data/admin.token",
        "data/bmc.key",
        "data/ca/ca.key",
        "data/ca/ca.crt",
    ] {
        assert!(
            names.contains(&want),
            "{want} not in the archive:\n{listing}"
        );
    }
    assert!(!listing.contains("leases.journal"), "{listing}");

    // Restoring into the running A's data directory is refused, even with --force,
    // and A serves on untouched.
    let before = nodes(&a)?;
    let (ok, out) = rackseed(&[
        "restore",
        "--config",
        path(&a.config),
        "--force",
        path(&archive),
    ])?;
    assert!(
        !ok,
        "a restore into a running server's data directory: {out}"
    );
    assert!(
        out.contains("a rackseed is running on data directory")
            && out.contains("nothing was restored"),
        "{out}"
    );
    assert_eq!(nodes(&a)?, before);
    assert_eq!(a.node_state("web1")?, "installed");

    let want_nodes = nodes(&a)?;
    let want_leases = leases(&a)?;
    assert!(
        want_leases.iter().any(|(_, m)| m == mac),
        "no lease of {mac} on A: {want_leases:?}"
    );
    assert!(
        want_nodes.iter().any(|n| n["state"] == "discovered"),
        "{want_nodes:?}"
    );
    let token_a = a.token.clone();
    a.stop();
    drop(node);

    // Host B: its own namespace, a data directory that does not exist yet.
    let lab_b = Lab::new()?;
    let mut b = Server::prepare(&lab_b, &LabConfig::lab())?;
    let b_data = b.dir.path().join("data");
    let b_config = b.config.clone();
    let restore_b = |file: &Path, force: bool| {
        let mut args = vec!["restore", "--config", path(&b_config), path(file)];
        if force {
            args.push("--force");
        }
        rackseed(&args)
    };

    // A tampered archive (one byte of the CA key): refused, nothing written.
    let mut bytes = fs::read(&archive)?;
    let key = bytes
        .windows(11)
        .position(|w| w == b"PRIVATE KEY")
        .context("no CA key in the archive")?;
    bytes[key + 40] ^= 0x01;
    let tampered = work.path().join("tampered.backup");
    fs::write(&tampered, &bytes)?;
    let (ok, out) = restore_b(&tampered, false)?;
    assert!(!ok, "a tampered archive was restored: {out}");
    assert!(
        out.contains("the SHA-256 of `data/ca/ca.key` is") && out.contains("nothing was restored"),
        "{out}"
    );
    assert!(
        !b_data.exists(),
        "a refused restore wrote into {}",
        b_data.display()
    );

    // A backup of a newer schema: refused naming both versions and the fix.
    let newer = with_newer_schema(&archive, work.path(), 99)?;
    let (ok, out) = restore_b(&newer, false)?;
    assert!(!ok, "a newer schema was restored: {out}");
    assert!(
        out.contains("schema version 99, newer than this rackseed's (")
            && out.contains("upgrade rackseed"),
        "{out}"
    );
    assert!(
        !b_data.exists(),
        "a refused restore wrote into {}",
        b_data.display()
    );

    // The restore, then B serves the same nodes, leases, CA and admin token.
    let (ok, out) = restore_b(&archive, false)?;
    assert!(ok, "{out}");
    b.spawn()?;
    assert_eq!(b.token, token_a, "the admin token was not restored");
    assert_eq!(nodes(&b)?, want_nodes);
    assert_eq!(leases(&b)?, want_leases);
    assert_eq!(
        fs::read_to_string(b_data.join("ca/ca.crt"))?,
        ca_a,
        "another CA"
    );

    // The node installed against A enrolls against B with the token A issued; B signs
    // with A's CA.
    let hostname = plan["hostname"].as_str().context("plan hostname")?;
    let facts = rackseed::facts::Facts {
        hostname: hostname.to_string(),
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        root: rackseed::facts::RootFacts {
            source: "/dev/vda1".into(),
            fstype: plan["root"]["filesystem"]
                .as_str()
                .context("plan root filesystem")?
                .to_string(),
            md: None,
        },
        interfaces: vec![rackseed::facts::Interface {
            name: "eth0".into(),
            mac: mac.into(),
            mtu: 1500,
            up: true,
        }],
        ..Default::default()
    };
    let (_key, csr) = rackseed::ca::node_key_and_csr(hostname)?;
    let body = json!({"token": enroll_token, "node": mac, "facts": facts, "csr": csr, "replication_key": null});
    let file = b.dir.path().join("enroll.json");
    fs::write(&file, body.to_string())?;
    let (code, answer) = b.curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", path(&file)),
        "http://192.0.2.1:8080/enroll",
    ])?;
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if code != 200 {
        bail!("enrollment against the restored server: HTTP {code}: {answer}");
    }
    assert_eq!(answer["ca"].as_str(), Some(ca_a.as_str()));
    assert_eq!(b.node_state("web1")?, "enrolled");

    // Over B's state, a second restore needs --force (and B stopped).
    b.stop();
    let (ok, out) = restore_b(&archive, false)?;
    assert!(
        !ok && out.contains("already holds rackseed state") && out.contains("--force"),
        "{out}"
    );
    Ok(())
}
