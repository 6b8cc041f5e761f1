//! The technician's console in a real browser (headless Chromium over WebDriver)
//! against a running rackseed while a QEMU node boots.

use anyhow::{Result, ensure};
use rackseed_tests::browser::{Browser, test_output};
use rackseed_tests::qemu::{self, Firmware, Vm, VmSpec};
use rackseed_tests::{ADMIN, Lab, LabConfig, Server};
use serde_json::json;

const ADMIN_PW: &str = "tech-password-1";
const VIEWER_PW: &str = "viewer-password-1";

fn log_in(b: &mut Browser, user: &str, password: &str) -> Result<()> {
    b.get(&format!("{ADMIN}/ui/login"))?;
    b.type_in("#user", user)?;
    b.type_in("#password", password)?;
    b.click("#login-button")
}

/// Whether the page is the one loaded when `mark` was set (no reload since).
fn not_reloaded(b: &mut Browser) -> Result<bool> {
    Ok(b.js("return window.__rackseedMark === 1")? == json!(true))
}

/// Log in (wrong passwords and forged requests refused), watch an unknown machine
/// appear as discovered and a stalled node get highlighted, assign the machine a
/// profile on its page and watch it advance to `installing` live, reprovision it, and
/// check that a read-only account may look but not act.
#[test]
fn the_console_follows_a_booting_node_live_and_acts_on_it() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    let srv = Server::start(&lab, &LabConfig::lab().with("console"))?;
    for (name, role, pw) in [
        ("tech", "admin", ADMIN_PW),
        ("viewer", "read-only", VIEWER_PW),
    ] {
        let (code, v) = srv.api_post(
            "/api/users",
            &json!({"name": name, "role": role, "password": pw}),
        )?;
        ensure!(code == 201, "adding user {name}: {code} {v}");
    }
    let out = test_output("console")?;
    let mut b = Browser::start(&srv.ns, &out)?;

    // Pages need a session.
    b.get(&format!("{ADMIN}/ui/"))?;
    ensure!(
        b.url()?.ends_with("/ui/login"),
        "not sent to the login form"
    );
    // A wrong password is refused, and the form says so.
    log_in(&mut b, "tech", "not-the-password")?;
    b.wait_text("#login-error", "Wrong user name or password", 10)?;
    ensure!(b.url()?.ends_with("/ui/login"));
    // A login post without the form's CSRF token (another site's form) is refused.
    let (code, _) = srv.curl(&[
        "-o",
        "/dev/null",
        "-d",
        &format!("user=tech&password={ADMIN_PW}"),
        &format!("{ADMIN}/ui/login"),
    ])?;
    ensure!(code == 403, "login without CSRF token: HTTP {code}");

    log_in(&mut b, "tech", ADMIN_PW)?;
    b.wait_text("#who", "tech (admin)", 10)?;
    b.wait_text("#live", "live", 15)?;
    // An action without the session's CSRF token is refused.
    let status = b.js(
        "return fetch('/api/nodes/nobody/reprovision', {method: 'POST'}).then(r => r.status)",
    )?;
    ensure!(status == json!(403), "POST without CSRF token: {status}");
    b.js("window.__rackseedMark = 1")?;

    // A node that fetched its boot script and went silent: highlighted as stalled.
    let stall_mac = "52:54:00:41:00:02";
    srv.add_node(stall_mac, "stall1", "lab-single-disk", &[])?;
    b.wait_text("#rows", "stall1", 15)?;
    let quiet = lab.node_client(stall_mac)?;
    let (code, _) = quiet.curl(&["http://192.0.2.1:8080/boot/52-54-00-41-00-02.ipxe"])?;
    ensure!(code == 200);
    let row = b.wait_text("tr.alert-stalled", "stall1", 90)?;
    eprintln!("stalled row: {row}");

    // An unknown machine powers on: it appears as discovered, without a reload.
    let vm_mac = "52:54:00:41:00:01";
    let vm = Vm::start(
        &lab.srv,
        &VmSpec::pxe("console1", Firmware::Bios, &lab.tap()?, vm_mac),
    )?;
    b.wait_text("#rows", vm_mac, 300)?;
    b.wait_text("tr[data-state=\"discovered\"]", vm_mac, 30)?;
    ensure!(not_reloaded(&mut b)?, "the overview was reloaded");
    b.screenshot("overview")?;

    // Its page: assign a hostname and profile; it starts installing, live.
    b.click("tr[data-state=\"discovered\"] a")?;
    b.wait_text("#node-state", "discovered", 15)?;
    b.type_in("#assign-hostname", "console1")?;
    b.js("document.querySelector('#assign-profile').value = 'lab-single-disk'")?;
    b.click("#assign-button")?;
    b.wait_text("#node-state", "provisioning", 15)?;
    b.wait_text("#live", "live", 15)?;
    b.js("window.__rackseedMark = 1")?;
    b.wait_text("#timeline", "ipxe", 120)
        .or_else(|_| b.wait_text("#timeline", "dhcp", 5))?;
    if let Err(e) = b.wait_text("#node-state", "installing", 480) {
        anyhow::bail!(
            "{e}\nconsole:\n{}\ntimeline:\n{:?}",
            rackseed_tests::tail(&vm.serial(), 40),
            srv.timeline("console1").unwrap_or_default()
        );
    }
    ensure!(not_reloaded(&mut b)?, "the node page was reloaded");
    let timeline = b.text("#timeline")?;
    for step in ["kernel", "initrd", "preseed"] {
        ensure!(
            timeline.contains(step),
            "no {step} on the live timeline:\n{timeline}"
        );
    }
    b.wait_text("#syslog li", "", 90)?;
    // The preview: plan and files, with a placeholder instead of the token.
    let preseed = b.js(
        "return document.querySelector('details[data-file=\"preseed.cfg\"] pre').textContent",
    )?;
    let preseed = preseed.as_str().unwrap_or_default();
    ensure!(
        preseed.contains("/install/INSTALL-TOKEN/") && preseed.contains("console1"),
        "{preseed}"
    );
    ensure!(b.text("#plan summary")? == "plan.json");
    b.screenshot("node")?;
    // /metrics parses as OpenMetrics (the Prometheus client library's strict parser)
    // and its step histogram counted this boot's DHCP → preseed.
    let (code, text) = srv.curl(&["http://192.0.2.1:8080/metrics"])?;
    ensure!(code == 200);
    let families = parse_metrics(&text)?;
    for (name, kind) in [
        ("rackseed_step_seconds", "histogram"),
        ("rackseed_nodes", "gauge"),
        ("rackseed_nodes_stalled", "gauge"),
        ("rackseed_dhcp_received", "counter"),
    ] {
        ensure!(families[name]["type"] == kind, "{name}: {}", families[name]);
    }
    let count = &families["rackseed_step_seconds"]["samples"]["rackseed_step_seconds_count{step=dhcp_to_preseed}"];
    ensure!(
        count.as_f64() >= Some(1.0),
        "{}",
        families["rackseed_step_seconds"]
    );
    ensure!(
        families["rackseed_nodes_stalled"]["samples"]["rackseed_nodes_stalled"].as_f64()
            >= Some(1.0),
        "{}",
        families["rackseed_nodes_stalled"]
    );

    // Reprovision from the page (a confirm dialog first).
    b.click("#reprovision")?;
    b.accept()?;
    b.wait_text("#node-state", "provisioning", 15)?;
    let t = srv.timeline("console1")?;
    ensure!(
        t.iter()
            .any(|(k, m)| k == "state" && m.contains("reprovision")),
        "{t:?}"
    );
    drop(vm);

    // A read-only account sees the pages but may not act.
    b.click("header form.who button")?;
    b.wait_text("#login-button", "Log in", 10)?;
    log_in(&mut b, "viewer", VIEWER_PW)?;
    b.wait_text("#who", "viewer (read-only)", 10)?;
    b.get(&format!("{ADMIN}/ui/nodes/console1"))?;
    b.wait_text("#node-state", "provisioning", 10)?;
    ensure!(
        b.text("#reprovision")?.is_empty(),
        "read-only user sees actions"
    );
    let status = b.js(
        "return fetch('/api/nodes/console1/reprovision', {method: 'POST', headers: {'X-CSRF-Token': document.querySelector('meta[name=\"csrf-token\"]').content}}).then(r => r.status)",
    )?;
    ensure!(status == json!(403), "read-only POST: {status}");
    let (code, _) = srv.curl(&["-o", "/dev/null", &format!("{ADMIN}/ui/groups")])?;
    ensure!(code == 303, "groups page without a session: {code}");
    Ok(())
}

/// `/metrics` parsed by the Prometheus client library's OpenMetrics parser (Debian's
/// python3-prometheus-client): family name → {"type", "samples": {"name{k=v}": value}}.
fn parse_metrics(text: &[u8]) -> Result<serde_json::Value> {
    use std::io::Write;
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    samples = {}
    for s in f.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[s.name + ("{" + labels + "}" if labels else "")] = s.value
    out[f.name] = {"type": f.type, "samples": samples}
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(text)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "/metrics does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}
