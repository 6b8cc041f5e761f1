//! The command line as a user meets it: the README's server-less examples run exactly as
//! written from a clone, log output without terminal escapes (and as JSON lines), and
//! `node show`'s human summary against a running server.

use anyhow::{Context, Result};
use rackseed_tests::{Lab, LabConfig, Server, rackseed_bin, wait_for, workspace};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Lines of the README's `sh` code blocks that are rackseed commands, with comments cut.
fn readme_commands() -> Result<Vec<String>> {
    let text = fs::read_to_string(workspace().join("README.md"))?;
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
            continue;
        }
        if in_sh && t.starts_with("rackseed ") {
            let cmd = match t.find("  #") {
                Some(i) => t[..i].trim_end(),
                None => t,
            };
            out.push(cmd.to_string());
        }
    }
    Ok(out)
}

/// Commands that need no running server. `image fetch` is left out: it downloads the
/// installer's netboot files, which the archive reachable here does not serve (its
/// refusal is tested in `images`).
fn needs_no_server(cmd: &str) -> bool {
    let sub: Vec<&str> = cmd.split_whitespace().skip(1).take(2).collect();
    match sub.as_slice() {
        ["profile", _] | ["check", ..] => true,
        ["image", "fetch"] => false,
        ["image", _] => true,
        _ => false,
    }
}

#[test]
fn readme_examples_without_a_server_work_as_written() -> Result<()> {
    let cmds: Vec<String> = readme_commands()?
        .into_iter()
        .filter(|c| needs_no_server(c))
        .collect();
    assert!(
        cmds.len() >= 7,
        "expected the README's profile and image examples, found {cmds:?}"
    );
    // A clone: the repository's files, with the binary on PATH as the README says.
    let clone = tempfile::tempdir()?;
    for entry in ["profiles", "images", "examples", "preseed", "README.md"] {
        std::os::unix::fs::symlink(workspace().join(entry), clone.path().join(entry))?;
    }
    let data = tempfile::tempdir()?;
    let bin_dir = rackseed_bin()
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out_dir = Path::new("/tmp/sn");
    let _ = fs::remove_dir_all(out_dir);
    for cmd in &cmds {
        let out = Command::new("sh")
            .args(["-c", cmd])
            .current_dir(clone.path())
            .env("PATH", &path)
            .env("RACKSEED_DATA_DIR", data.path())
            .env_remove("RACKSEED_CONFIG")
            .env_remove("RACKSEED_PROFILES")
            .output()?;
        assert!(
            out.status.success(),
            "README example `{cmd}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("ran: {cmd}");
    }
    // What they wrote is what they say.
    let schema: serde_json::Value = serde_json::from_str(&fs::read_to_string(
        clone.path().join("profile.schema.json"),
    )?)?;
    assert!(schema["properties"]["storage"].is_object(), "{schema:#}");
    assert!(out_dir.join("preseed.cfg").is_file());
    let _ = fs::remove_dir_all(out_dir);
    Ok(())
}

#[test]
fn serve_writes_plain_text_logs_to_a_file_and_json_on_request() -> Result<()> {
    let lab = Lab::new()?;
    let cfg = LabConfig::lab();
    let mut srv = Server::prepare(&lab, &cfg)?;
    srv.spawn()?;
    srv.add_node("52:54:00:31:00:01", "logs1", "lab-single-disk", &[])?;
    let log = wait_for(
        "the node-added log line",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let t = srv.log_text();
            t.contains("node added").then_some(t)
        },
    )?;
    assert!(log.contains("rackseed ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape sequences in a log file:\n{log}"
    );
    srv.stop();

    let mut srv = Server::prepare(&lab, &cfg)?;
    srv.log_format = Some("json".into());
    srv.spawn()?;
    let ready = wait_for(
        "a JSON ready line",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            srv.log_text()
                .lines()
                .find(|l| l.contains("rackseed ready"))
                .map(str::to_string)
        },
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&ready).with_context(|| format!("not a JSON line: {ready}"))?;
    assert_eq!(v["fields"]["message"], "rackseed ready", "{v}");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["advertise"], "192.0.2.1", "{v}");
    for line in srv.log_text().lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .with_context(|| format!("not a JSON line: {line}"))?;
    }
    Ok(())
}

#[test]
fn node_show_prints_a_summary_and_json_on_request() -> Result<()> {
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    srv.add_node("52:54:00:31:00:02", "show1", "lab-single-disk", &[])?;
    let text = srv.cli(&["node", "show", "show1"])?;
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("show1 (52:54:00:31:00:02), id "),
        "{text}"
    );
    for want in [
        "  state         provisioning since ",
        "  profile       lab-single-disk",
        "  install token valid",
        "last 1 of 1 events:",
        "added as provisioning with hostname show1",
    ] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }
    // Times are local time without the UTC milliseconds of the JSON view.
    let json: serde_json::Value =
        serde_json::from_str(&srv.cli(&["node", "show", "show1", "--json"])?)?;
    assert_eq!(json["state"], "provisioning");
    assert_eq!(json["install_token_valid"], true);
    // A failed node says why.
    let node = lab.node_client("52:54:00:31:00:02")?;
    let token = node.install_token("52:54:00:31:00:02")?;
    let (code, _) = node.curl(&[
        "--data",
        "partman: no disk matches the rule",
        &format!("http://192.0.2.1:8080/install/{token}/events/error"),
    ])?;
    assert_eq!(code, 200);
    srv.wait_state("show1", "failed", Duration::from_secs(10))?;
    let text = srv.cli(&["node", "show", "show1"])?;
    assert!(
        text.contains("  why           ") && text.contains("no disk matches the rule"),
        "{text}"
    );
    Ok(())
}

/// `node events --follow` reads the server's event stream: it prints the events as they
/// come and ends when the node reaches `--until`, or fails after `--timeout` naming the
/// state it is in. `user add` reads the password from standard input.
#[test]
fn node_events_follow_the_stream_until_a_state_and_users_are_added_from_stdin() -> Result<()> {
    use std::io::Write;
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let mac = "52:54:00:31:00:03";
    srv.add_node(mac, "follow1", "lab-single-disk", &[])?;
    let cli = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &srv.ns])
            .arg(rackseed_bin())
            .args(args)
            .env("RACKSEED_URL", rackseed_tests::ADMIN)
            .env("RACKSEED_TOKEN", &srv.token);
        c
    };
    let follower = cli(&[
        "node",
        "events",
        "follow1",
        "--follow",
        "--until",
        "installing",
        "--timeout",
        "60",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()?;
    // The installer's early_command, from the node's own address.
    std::thread::sleep(Duration::from_secs(1));
    let node = lab.node_client(mac)?;
    let token = node.install_token(mac)?;
    let (code, _) = node.curl(&[
        "--data",
        "installer started (follow test)",
        &format!("http://192.0.2.1:8080/install/{token}/events/early_command"),
    ])?;
    assert_eq!(code, 200);
    let out = follower.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "added as provisioning",
        "iPXE script served",
        "installer started (follow test)",
    ] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }
    // Not reached in time: exit 1 with the state it is in.
    let out = cli(&[
        "node",
        "events",
        "follow1",
        "--follow",
        "--until",
        "enrolled",
        "--timeout",
        "3",
    ])
    .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node follow1 is installing after 3s, not enrolled"),
        "{err}"
    );

    let mut add = cli(&["user", "add", "alice", "--role", "read-only"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    add.stdin
        .take()
        .context("stdin")?
        .write_all(b"alice-password-1\n")?;
    let out = add.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "user alice added (read-only)\n"
    );
    let out = cli(&["user", "add", "bob"])
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no password on standard input"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(srv.cli(&["user", "list"])?, "alice read-only\n");
    Ok(())
}
