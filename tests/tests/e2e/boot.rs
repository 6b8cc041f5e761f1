//! Boot tier: QEMU machines PXE-boot the real Debian installer from rackseed and reach
//! `installing` (the installer loaded its preseed and ran early_command). The
//! installer then stops when it tries to download components (the archive here does
//! not serve .udeb files), which is where these tests end.

use anyhow::Result;
use rackseed_tests::qemu::{self, Firmware, Vm, VmSpec};
use rackseed_tests::{Lab, LabConfig, Netns, Server, assert_in_order};
use std::time::{Duration, Instant};

/// Boots a VM and waits until its node is `installing`; returns the timeline.
fn boot_to_installing(
    lab: &Lab,
    srv: &Server,
    firmware: Firmware,
    mac: &str,
    host: &str,
) -> Result<Vec<(String, String)>> {
    let tap = lab.tap()?;
    let started = Instant::now();
    let vm = Vm::start(&lab.srv, &VmSpec::pxe(host, firmware, &tap, mac))?;
    srv.wait_state(host, "installing", Duration::from_secs(420))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nconsole:\n{}\ntimeline:\n{:?}",
                rackseed_tests::tail(&vm.serial(), 40),
                srv.timeline(host).unwrap_or_default()
            )
        })?;
    eprintln!(
        "{host} ({firmware:?}): power-on to installing in {:.0?}",
        started.elapsed()
    );
    // Installer log lines keep arriving after early_command; give them a moment.
    let _ = rackseed_tests::wait_for(
        "installer syslog lines",
        Duration::from_secs(60),
        Duration::from_secs(2),
        || {
            srv.timeline(host)
                .ok()
                .filter(|t| t.iter().filter(|(k, _)| k == "syslog").count() >= 5)
        },
    );
    let t = srv.timeline(host)?;
    drop(vm);
    Ok(t)
}

fn has(t: &[(String, String)], kind: &str, needle: &str) -> bool {
    t.iter().any(|(k, m)| k == kind && m.contains(needle))
}

#[test]
fn bios_node_pxe_boots_into_the_installer() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    // always-once: the NIC's iPXE ROM is first given Debian's undionly.kpxe over TFTP,
    // which then asks again as iPXE and gets its script (so the real BIOS binary runs).
    // DEBCONF_DEBUG=developer makes the installer log each question it shows, which
    // rackseed names on the timeline.
    let cfg = LabConfig::lab()
        .with("chainload-always-once")
        .with("debconf-debug");
    let srv = Server::start(&lab, &cfg)?;
    let mac = "52:54:00:10:00:01";
    srv.add_node(mac, "bios1", "lab-single-disk", &[])?;
    let t = boot_to_installing(&lab, &srv, Firmware::Bios, mac, "bios1")?;
    // The installer goes on after early_command and stops at a question (here: its
    // components cannot all be downloaded); the question is on the timeline.
    let question = rackseed_tests::wait_for(
        "a question event",
        Duration::from_secs(240),
        Duration::from_secs(2),
        || {
            srv.timeline("bios1")
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "question")
                .map(|(_, m)| m)
        },
    )
    .map_err(|e| {
        let lines: Vec<String> = srv
            .timeline("bios1")
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, m)| k == "syslog" && (m.contains("INPUT") || m.contains("debconf")))
            .map(|(_, m)| m)
            .take(20)
            .collect();
        anyhow::anyhow!("{e}; debconf lines: {lines:#?}")
    })?;
    eprintln!("bios1: the installer asked `{question}`");
    assert!(question.contains('/'), "{question}");
    assert_in_order(
        &t,
        &[
            "state",
            "dhcp",
            "tftp",
            "dhcp",
            "ipxe",
            "kernel",
            "initrd",
            "dhcp",
            "preseed",
            "script",
            "early_command",
            "state",
        ],
    );
    assert!(has(&t, "dhcp", "boot file undionly.kpxe via TFTP"), "{t:?}");
    assert!(has(&t, "tftp", "TFTP sent undionly.kpxe"), "{t:?}");
    assert!(has(&t, "early_command", "installer kernel"), "{t:?}");
    assert!(has(&t, "state", "provisioning → installing"), "{t:?}");
    assert!(
        t.iter().any(|(k, m)| k == "syslog"
            && (m.contains("netcfg") || m.contains("preseed") || m.contains("udhcpc"))),
        "no installer syslog lines: {t:?}"
    );
    Ok(())
}

/// UEFI firmware PXE (OVMF's own PXE, no NIC option ROM) → Debian's ipxe.efi over
/// TFTP → iPXE → installer. The installer is the image imported from Debian's netboot
/// package and verified against the archive's signed InRelease → SHA256SUMS chain.
#[test]
fn uefi_node_pxe_boots_through_ipxe_efi_from_a_verified_image() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    // The real mirror (this host's APT sources) verifies the import; the lab network
    // itself never reaches it.
    let cfg = LabConfig::lab()
        .remove("installer.mirror")
        .with("installer-image-bookworm")
        .with("ipxe-on-uefi");
    let mut srv = Server::prepare(&lab, &cfg)?;
    let out = rackseed_tests::run(
        std::process::Command::new(rackseed_tests::rackseed_bin())
            .args(["image", "--config"])
            .arg(&srv.config)
            .args([
                "import",
                "--from",
                rackseed::config::PACKAGE_INSTALLER_DIR,
                "--name",
                "bookworm-amd64",
            ]),
    )?;
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.contains("verified") && out.contains("InRelease signed by"),
        "import was not verified: {out}"
    );
    srv.spawn()?;
    let mac = "52:54:00:10:00:02";
    srv.add_node(mac, "uefi1", "lab-single-disk", &[])?;
    let t = boot_to_installing(&lab, &srv, Firmware::Uefi, mac, "uefi1")?;
    assert_in_order(
        &t,
        &[
            "dhcp",
            "tftp",
            "dhcp",
            "ipxe",
            "kernel",
            "initrd",
            "preseed",
            "early_command",
            "state",
        ],
    );
    assert!(
        has(&t, "dhcp", "to pxe efi-x64; boot file ipxe.efi via TFTP"),
        "{t:?}"
    );
    assert!(has(&t, "tftp", "TFTP sent ipxe.efi"), "{t:?}");
    assert!(
        has(
            &t,
            "dhcp",
            "to ipxe efi-x64; boot file http://192.0.2.1:8080/boot/52-54-00-10-00-02.ipxe"
        ),
        "{t:?}"
    );
    assert!(
        t.iter().any(|(k, _)| k == "syslog"),
        "no installer syslog lines"
    );
    Ok(())
}

/// The site's DHCP server (dnsmasq, DHCP only, no PXE options) in its own namespace
/// on the lab bridge at 192.0.2.254.
fn site_dhcp(lab: &Lab) -> Result<Netns> {
    let ns = Netns::new("site")?;
    let outer = rackseed_tests::unique("vs");
    lab.srv.ip(&[
        "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])?;
    lab.srv
        .ip(&["link", "set", &outer, "master", "br0", "up"])?;
    ns.ip(&["addr", "add", "192.0.2.254/24", "dev", "eth0"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    let dir = tempfile::tempdir()?;
    ns.cmd("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--port=0",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--interface=eth0",
        ])
        .args([
            "--dhcp-range=192.0.2.150,192.0.2.199,255.255.255.0,1h",
            "--dhcp-option=3,192.0.2.1",
            "--dhcp-option=6,192.0.2.1",
        ])
        .arg(format!("--dhcp-leasefile={}/leases", dir.keep().display()))
        .arg("--log-dhcp")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok(ns)
}

fn proxy_boot(
    firmware: Firmware,
    mac: &str,
    host: &str,
    efi_binary: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    let _site = site_dhcp(&lab)?;
    let cfg = match efi_binary {
        Some(b) => LabConfig::proxy().set("boot.efi_binary", b),
        None => LabConfig::proxy(),
    };
    let srv = Server::start(&lab, &cfg)?;
    srv.add_node(mac, host, "lab-single-disk", &[])?;
    let t = boot_to_installing(&lab, &srv, firmware, mac, host)?;
    // rackseed gave no address: its replies carry only boot information.
    assert!(
        t.iter()
            .filter(|(k, m)| k == "dhcp" && !m.contains("(observed)"))
            .all(|(_, m)| !m.contains(" 192.0.2.")),
        "proxy handed out an address: {t:?}"
    );
    // The node's address came from the site server's pool (seen by rackseed).
    assert!(t.iter().any(|(k, m)| k == "dhcp" && m.contains("from site DHCP server 192.0.2.254 (observed)")), "{t:?}");
    assert!(
        t.iter().any(|(k, m)| k == "preseed"
            && m.split("to 192.0.2.")
                .nth(1)
                .and_then(|r| r.parse::<u8>().ok())
                .is_some_and(|n| (150..=199).contains(&n))),
        "{t:?}"
    );
    assert!(
        srv.api("/api/leases")?["leases"]
            .as_array()
            .is_some_and(|l| l.is_empty()),
        "proxy mode stored leases"
    );
    Ok(t)
}

/// BIOS iPXE ROM beside a site DHCP server: iPXE takes its address from the site
/// server and its boot file from rackseed's proxy offer on port 67. That offer carries
/// next-server and the boot file, so iPXE uses it without a ProxyDHCPREQUEST to port
/// 4011 (iPXE's `dhcp_has_pxeopts`); firmware that does ask on 4011 is covered by
/// `protocol::proxy_answers_pxe_boot_server_requests_on_port_4011`.
#[test]
fn proxy_dhcp_boots_a_bios_node_beside_a_site_dhcp_server() -> Result<()> {
    let t = proxy_boot(Firmware::Bios, "52:54:00:10:00:03", "proxy1", None)?;
    assert_in_order(
        &t,
        &[
            "dhcp",
            "dhcp",
            "ipxe",
            "kernel",
            "initrd",
            "preseed",
            "early_command",
            "state",
        ],
    );
    assert!(
        has(
            &t,
            "dhcp",
            "OFFER to ipxe bios; boot file http://192.0.2.1:8080/boot/52-54-00-10-00-03.ipxe"
        ),
        "{t:?}"
    );
    Ok(())
}

/// UEFI firmware PXE beside a site DHCP server, through snponly.efi.
#[test]
fn proxy_dhcp_boots_a_uefi_node_through_snponly_efi() -> Result<()> {
    let t = proxy_boot(
        Firmware::Uefi,
        "52:54:00:10:00:04",
        "proxy2",
        Some("snponly"),
    )?;
    assert_in_order(
        &t,
        &[
            "dhcp",
            "dhcp",
            "tftp",
            "dhcp",
            "ipxe",
            "kernel",
            "initrd",
            "preseed",
            "early_command",
            "state",
        ],
    );
    assert!(
        has(
            &t,
            "dhcp",
            "OFFER to pxe efi-x64; boot file snponly.efi via TFTP"
        ),
        "{t:?}"
    );
    assert!(has(&t, "tftp", "TFTP sent snponly.efi"), "{t:?}");
    assert!(
        has(
            &t,
            "dhcp",
            "to ipxe efi-x64; boot file http://192.0.2.1:8080/boot/52-54-00-10-00-04.ipxe"
        ),
        "{t:?}"
    );
    Ok(())
}

/// A machine with two NICs (both with link) that boots from its second one, with the
/// interface selection taken off the installer's command line (`installer_interface =
/// "ask"`, a test-only setting): the installer stops at "choose the primary network
/// interface", and rackseed records a `stalled` event naming the step within the
/// configured limit; `node list` and `node show` show it.
#[test]
fn a_node_stopped_at_an_installer_question_is_reported_stalled() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    let cfg = LabConfig::lab().with("stall-ask-interface");
    let srv = Server::start(&lab, &cfg)?;
    let (first, mac, host) = ("52:54:00:10:00:30", "52:54:00:10:00:31", "stall1");
    srv.add_node(mac, host, "lab-single-disk", &[])?;
    let mut spec = VmSpec::pxe(host, Firmware::Bios, &lab.tap()?, first);
    spec.nics[0].boot = false;
    spec.nics.push(qemu::Nic {
        tap: lab.tap()?,
        mac: mac.into(),
        model: qemu::NicModel::Virtio,
        boot: true,
    });
    let started = Instant::now();
    let vm = Vm::start(&lab.srv, &spec)?;
    let stalled = rackseed_tests::wait_for(
        "a stalled event",
        Duration::from_secs(480),
        Duration::from_secs(2),
        || {
            srv.timeline(host)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "stalled")
                .map(|(_, m)| m)
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nconsole:\n{}\ntimeline:\n{:?}",
            rackseed_tests::tail(&vm.serial(), 30),
            srv.timeline(host).unwrap_or_default()
        )
    })?;
    eprintln!(
        "{host}: power-on to stalled in {:.0?}: {stalled}",
        started.elapsed()
    );
    assert!(
        stalled.starts_with("stalled in step installer-network: the kernel and initrd were sent"),
        "{stalled}"
    );
    assert!(stalled.contains("choice of network interface"), "{stalled}");
    let t = srv.timeline(host)?;
    assert_in_order(&t, &["ipxe", "kernel", "initrd", "stalled"]);
    assert!(!t.iter().any(|(k, _)| k == "preseed"), "{t:?}");
    // The installer really is at the interface question.
    vm.wait_serial("primary network interface", Duration::from_secs(60))?;
    assert_eq!(srv.node_state(host)?, "provisioning");
    let list = srv.cli(&["node", "list"])?;
    assert!(
        list.lines()
            .any(|l| l.contains(host) && l.contains("STALLED in installer-network")),
        "{list}"
    );
    let show = srv.cli(&["node", "show", host])?;
    assert!(
        show.contains("  STALLED       stalled in step installer-network"),
        "{show}"
    );
    let metrics = String::from_utf8(srv.curl(&["http://192.0.2.1:8080/metrics"])?.1)?;
    assert!(
        metrics.contains("rackseed_node_stalls_total 1"),
        "{metrics}"
    );
    Ok(())
}

/// UEFI Secure Boot enforcing with Microsoft's keys (OVMF secboot firmware): the
/// unsigned iPXE binary is refused ("Access Denied"), which proves enforcement is on;
/// with the signed chain (the default with authoritative DHCP) the same firmware boots
/// Debian's shim → signed network GRUB → signed installer kernel, and the node
/// reaches `installing`.
#[test]
fn secure_boot_node_boots_the_signed_chain_and_refuses_ipxe() -> Result<()> {
    let _q = qemu::exclusive();
    let lab = Lab::new()?;
    let base = LabConfig::lab();
    let (mac, host) = ("52:54:00:10:00:40", "sb1");

    // Enforcement: iPXE (unsigned) is loaded by the firmware and refused.
    {
        let srv = Server::start(&lab, &base.clone().with("ipxe-on-uefi"))?;
        srv.add_node(mac, host, "lab-single-disk", &[])?;
        let vm = Vm::start(
            &lab.srv,
            &VmSpec::pxe(host, Firmware::UefiSecureBoot, &lab.tap()?, mac),
        )?;
        vm.wait_serial("Access Denied", Duration::from_secs(300))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e}\ntimeline: {:?}",
                    srv.timeline(host).unwrap_or_default()
                )
            })?;
        let t = srv.timeline(host)?;
        assert!(has(&t, "tftp", "TFTP sent ipxe.efi"), "{t:?}");
        assert!(
            !t.iter().any(|(k, _)| k == "ipxe"),
            "iPXE ran under Secure Boot: {t:?}"
        );
    }

    // The signed chain.
    let srv = Server::start(&lab, &base)?;
    srv.add_node(mac, host, "lab-single-disk", &[])?;
    let started = Instant::now();
    let vm = Vm::start(
        &lab.srv,
        &VmSpec::pxe(host, Firmware::UefiSecureBoot, &lab.tap()?, mac),
    )?;
    srv.wait_state(host, "installing", Duration::from_secs(900))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nconsole:\n{}\ntimeline:\n{:?}",
                rackseed_tests::tail(&vm.serial(), 40),
                srv.timeline(host).unwrap_or_default()
            )
        })?;
    eprintln!(
        "{host} (Secure Boot): power-on to installing in {:.0?}",
        started.elapsed()
    );
    let t = srv.timeline(host)?;
    assert_in_order(
        &t,
        &[
            "dhcp",
            "tftp",
            "tftp",
            "grub",
            "kernel",
            "initrd",
            "dhcp",
            "preseed",
            "early_command",
        ],
    );
    assert!(
        has(
            &t,
            "dhcp",
            "boot file debian-installer/amd64/bootnetx64.efi via TFTP"
        ),
        "{t:?}"
    );
    assert!(
        has(
            &t,
            "tftp",
            "TFTP sent debian-installer/amd64/bootnetx64.efi"
        ),
        "{t:?}"
    );
    assert!(
        has(&t, "tftp", "TFTP sent debian-installer/amd64/grubx64.efi"),
        "{t:?}"
    );
    assert!(
        has(&t, "grub", "GRUB configuration (signed chain) served"),
        "{t:?}"
    );
    assert!(has(&t, "kernel", "TFTP sent installer/linux"), "{t:?}");
    // The installer's kernel says it runs with Secure Boot on.
    vm.wait_serial("Secure boot enabled", Duration::from_secs(30))?;
    Ok(())
}
