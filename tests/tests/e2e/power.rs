//! Power control through BMCs: rackseed drives a QEMU machine's BMC (OpenIPMI's
//! `ipmi_sim` over RMCP+) to a one-time network boot and power-on, and the machine
//! PXE-boots into the installer; wrong credentials and a BMC that does not answer are
//! reported and change nothing.

use anyhow::Result;
use rackseed_tests::bmc::{IpmiBmc, RedfishBmc};
use rackseed_tests::browser::{Browser, test_output};
use rackseed_tests::qemu::{self, Firmware, VmSpec};
use rackseed_tests::{ADMIN, Lab, LabConfig, Server};
use std::time::Duration;

/// The management network: BMCs on 203.0.113.0/24, beside the provisioning LAN.
fn management_network(lab: &Lab, bmc_addr: &str) -> Result<()> {
    lab.srv.ip(&["link", "add", "mgmt0", "type", "bridge"])?;
    lab.srv
        .ip(&["addr", "add", "203.0.113.1/24", "dev", "mgmt0"])?;
    lab.srv
        .ip(&["addr", "add", &format!("{bmc_addr}/24"), "dev", "mgmt0"])?;
    lab.srv.ip(&["link", "set", "mgmt0", "up"])?;
    Ok(())
}

#[test]
fn rackseed_powers_a_node_on_through_ipmi_into_the_installer() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    management_network(&lab, "203.0.113.60")?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let mac = "52:54:00:15:00:01";
    srv.add_node(mac, "ipmi1", "lab-single-disk", &[])?;
    let tap = lab.tap()?;
    let bmc = IpmiBmc::start(
        &lab.srv,
        "203.0.113.60",
        &VmSpec::pxe("ipmi1", Firmware::Bios, &tap, mac),
        "s3cret-bmc",
    )?;
    let set = |address: &str, password: &str| {
        srv.cli_input(
            &[
                "node",
                "bmc",
                "set",
                "ipmi1",
                "--protocol",
                "ipmi",
                "--address",
                address,
                "--user",
                "admin",
            ],
            &format!("{password}\n"),
        )
    };

    // Wrong password: refused by the BMC, reported, nothing powered.
    let (ok, out) = set(&bmc.address, "wrong-pass")?;
    assert!(ok, "{out}");
    let (ok, out) = srv.cli_input(&["node", "power", "on", "ipmi1", "--pxe"], "")?;
    assert!(!ok, "{out}");
    assert!(out.contains("refused the user name or password"), "{out}");
    assert!(!bmc.machine_running(), "powered on with a wrong password");
    assert!(
        !bmc.chassis_log().contains("set power"),
        "{}",
        bmc.chassis_log()
    );
    // A BMC address where nothing answers.
    let (ok, out) = set("203.0.113.99:623", "s3cret-bmc")?;
    assert!(ok, "{out}");
    let (ok, out) = srv.cli_input(&["node", "power", "status", "ipmi1"], "")?;
    assert!(!ok, "{out}");
    assert!(out.contains("did not answer"), "{out}");
    assert_eq!(
        srv.node_state("ipmi1")?,
        "provisioning",
        "left where it was"
    );
    let t = srv.timeline("ipmi1")?;
    let errors: Vec<_> = t.iter().filter(|(k, _)| k == "power_error").collect();
    assert_eq!(errors.len(), 2, "{t:?}");
    assert!(
        errors[0].1.contains("refused the user name or password"),
        "{errors:?}"
    );
    assert!(errors[1].1.contains("203.0.113.99"), "{errors:?}");

    // The right BMC: status as the BMC says, then a one-time network boot and power on.
    let (ok, out) = set(&bmc.address, "s3cret-bmc")?;
    assert!(ok, "{out}");
    let shown = srv.cli(&["node", "bmc", "show", "ipmi1"])?;
    assert!(
        !shown.contains("s3cret-bmc") && shown.contains("<sealed>"),
        "{shown}"
    );
    assert_eq!(
        srv.cli(&["node", "power", "status", "ipmi1"])?.trim(),
        "off"
    );
    let out = srv.cli(&["node", "power", "on", "ipmi1", "--pxe"])?;
    assert!(
        out.contains("network boot override set and read back (pxe once)"),
        "{out}"
    );
    assert!(out.contains("the BMC reports power on"), "{out}");
    let log = bmc.chassis_log();
    let boot_at = log.find("set boot pxe").unwrap_or(usize::MAX);
    let power_at = log.find("set power 1").unwrap_or(0);
    assert!(boot_at < power_at, "override before power-on: {log}");
    assert!(
        log.contains("started pxe"),
        "the machine started with network boot: {log}"
    );
    srv.wait_state("ipmi1", "installing", Duration::from_secs(420))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nconsole:\n{}\ntimeline:\n{:?}",
                rackseed_tests::tail(&bmc.serial(), 40),
                srv.timeline("ipmi1").unwrap_or_default()
            )
        })?;
    assert_eq!(srv.cli(&["node", "power", "status", "ipmi1"])?.trim(), "on");
    // The console's power buttons in a real browser: status, then a confirmed off.
    let (code, v) = srv.api_post(
        "/api/users",
        &serde_json::json!({"name": "tech", "role": "admin", "password": "tech-password-1"}),
    )?;
    assert_eq!(code, 201, "{v}");
    let mut b = Browser::start(&srv.ns, &test_output("power")?)?;
    b.get(&format!("{ADMIN}/ui/login"))?;
    b.type_in("#user", "tech")?;
    b.type_in("#password", "tech-password-1")?;
    b.click("#login-button")?;
    b.wait_text("#who", "tech (admin)", 15)?;
    let id = srv.api("/api/nodes/ipmi1")?["id"].clone();
    b.get(&format!("{ADMIN}/ui/nodes/{id}"))?;
    b.click("#power-status")?;
    b.wait_text("#flash", "power status over IPMI", 60)?;
    assert!(b.text("#flash")?.contains("the BMC reports power on"));
    b.click("#power-off")?;
    b.accept()?;
    let shown = b.wait_text("#flash", "power off over IPMI", 60)?;
    assert!(shown.contains("the BMC reports power off"), "{shown}");
    bmc.wait_stopped(Duration::from_secs(10))?;
    assert_eq!(
        srv.cli(&["node", "power", "status", "ipmi1"])?.trim(),
        "off"
    );
    let t = srv.timeline("ipmi1")?;
    let power: Vec<_> = t
        .iter()
        .filter(|(k, _)| k == "power")
        .map(|(_, m)| m.as_str())
        .collect();
    assert!(
        power
            .iter()
            .any(|m| m.starts_with("power on over IPMI (203.0.113.60:623)")),
        "{power:?}"
    );
    assert!(
        power.iter().any(|m| m.starts_with("power off over IPMI")),
        "{power:?}"
    );
    assert!(t.iter().any(|(k, _)| k == "early_command"), "{t:?}");
    Ok(())
}

/// Redfish (sushy-tools' emulator over libvirt, driving a QEMU machine): a refused
/// override is reported and powers nothing; `reprovision --power-cycle` sets network
/// boot, reads it back, powers the machine on, and it network-boots into rackseed's
/// install script.
#[test]
fn rackseed_power_cycles_a_node_through_redfish_with_a_network_boot() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    management_network(&lab, "203.0.113.61")?;
    let srv = Server::start(&lab, &LabConfig::lab())?;
    let mac = "52:54:00:15:00:02";
    srv.add_node(mac, "rf1", "lab-single-disk", &[])?;
    let set = |url: &str, system: &str, password: &str| {
        srv.cli_input(
            &[
                "node",
                "bmc",
                "set",
                "rf1",
                "--protocol",
                "redfish",
                "--address",
                url,
                "--user",
                "admin",
                "--system",
                system,
            ],
            &format!("{password}\n"),
        )
    };
    {
        // A service that accepts a boot override and does not apply it.
        let bmc = RedfishBmc::start(&lab.srv, "203.0.113.61", "rf1", mac, "rf-pass-1", true)?;
        let (ok, out) = set(&bmc.url, &bmc.system, "not-the-password")?;
        assert!(ok, "{out}");
        let (ok, out) = srv.cli_input(&["node", "power", "cycle", "rf1", "--pxe"], "")?;
        assert!(
            !ok && out.contains("refused the user name or password"),
            "{out}"
        );
        let (ok, out) = set(&bmc.url, &bmc.system, "rf-pass-1")?;
        assert!(ok, "{out}");
        assert_eq!(srv.cli(&["node", "power", "status", "rf1"])?.trim(), "off");
        let (ok, out) = srv.cli_input(&["node", "power", "cycle", "rf1", "--pxe"], "")?;
        assert!(!ok, "{out}");
        assert!(out.contains("network boot override was refused"), "{out}");
        assert!(out.contains("the BMC reports Hdd"), "{out}");
        assert_eq!(
            bmc.domain_state(),
            "shut off",
            "powered despite the refusal"
        );
        let t = srv.timeline("rf1")?;
        assert!(
            t.iter()
                .any(|(k, m)| k == "power_error" && m.contains("override was refused")),
            "{t:?}"
        );
    }
    let bmc = RedfishBmc::start(&lab.srv, "203.0.113.61", "rf1", mac, "rf-pass-2", false)?;
    let (ok, out) = set(&bmc.url, &bmc.system, "rf-pass-2")?;
    assert!(ok, "{out}");
    let out = srv.cli(&["node", "reprovision", "rf1", "--power-cycle"])?;
    assert!(out.contains("node rf1: provisioning"), "{out}");
    assert!(
        out.contains("network boot override set and read back (Pxe"),
        "{out}"
    );
    assert!(
        out.contains("power on") && out.contains("reports power on"),
        "{out}"
    );
    assert_eq!(bmc.domain_state(), "running");
    // sushy-tools sets network boot as the NIC's boot order.
    let xml = bmc.domain_xml();
    let nic = xml
        .split("<interface")
        .nth(1)
        .and_then(|r| r.split("</interface>").next())
        .unwrap_or_default();
    assert!(nic.contains("<boot order='1'/>"), "{xml}");
    rackseed_tests::wait_for(
        "the install script served to rf1",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || {
            srv.timeline("rf1")
                .ok()?
                .into_iter()
                .find(|(k, m)| k == "ipxe" && m.contains(": install"))
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nconsole:\n{}\ntimeline:\n{:?}",
            rackseed_tests::tail(&bmc.serial(), 40),
            srv.timeline("rf1").unwrap_or_default()
        )
    })?;
    assert_eq!(srv.cli(&["node", "power", "status", "rf1"])?.trim(), "on");
    let out = srv.cli(&["node", "power", "off", "rf1"])?;
    assert!(out.contains("reports power off"), "{out}");
    assert_eq!(bmc.domain_state(), "shut off");
    let t = srv.timeline("rf1")?;
    assert!(
        t.iter().any(|(k, m)| k == "power"
            && m.starts_with("power cycle over Redfish (http://203.0.113.61:8000)")),
        "{t:?}"
    );
    Ok(())
}
