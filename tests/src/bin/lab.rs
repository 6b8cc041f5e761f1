//! `rackseed-lab`: the Quick start demo. Builds a lab network namespace with a bridge,
//! runs `rackseed serve` on it, adds a node and PXE-boots it in QEMU, printing the
//! node's timeline live until the installer has loaded its preseed and run
//! early_command. Everything it creates is removed when it exits.
//!
//! Usage: rackseed-lab [--uefi] [--profile NAME] [--timeout SECS] [--keep]

use anyhow::{Context, Result, bail};
use rackseed_tests::qemu::{Firmware, Vm, VmSpec};
use rackseed_tests::{Lab, LabConfig, Server, rackseed_bin};
use std::process::Command;
use std::time::Instant;

struct Opts {
    firmware: Firmware,
    profile: String,
    timeout: u64,
    keep: bool,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        firmware: Firmware::Bios,
        profile: "lab-single-disk".into(),
        timeout: 600,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--uefi" => o.firmware = Firmware::Uefi,
            "--bios" => o.firmware = Firmware::Bios,
            "--keep" => o.keep = true,
            "--profile" => o.profile = args.next().context("--profile needs a name")?,
            "--timeout" => {
                o.timeout = args
                    .next()
                    .context("--timeout needs seconds")?
                    .parse()
                    .context("--timeout needs seconds")?
            }
            "-h" | "--help" => {
                println!("usage: rackseed-lab [--uefi] [--profile NAME] [--timeout SECS] [--keep]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`; see --help"),
        }
    }
    Ok(o)
}

fn main() -> Result<()> {
    let o = opts()?;
    if !nix_is_root() {
        bail!("the lab needs root (network namespaces, a tap device for QEMU)");
    }
    println!(
        "rackseed lab: namespace with bridge br0 at 192.0.2.1/24, rackseed serving DHCP/TFTP/HTTP/syslog on it"
    );
    let lab = Lab::new()?;
    // The mirror is taken from this host's APT sources (rackseed's default).
    let cfg = LabConfig::lab().remove("installer.mirror");
    let srv = Server::start(&lab, &cfg)?;
    println!(
        "rackseed {} is ready (log: {})",
        rackseed_bin().display(),
        srv.log.display()
    );
    let mac = "52:54:00:5e:ed:01";
    srv.add_node(mac, "demo1", &o.profile, &[])?;
    println!(
        "node demo1 ({mac}) added with profile {}; powering it on ({:?}, QEMU TCG)",
        o.profile, o.firmware
    );
    let tap = lab.tap()?;
    let started = Instant::now();
    let vm = Vm::start(&lab.srv, &VmSpec::pxe("demo1", o.firmware, &tap, mac))?;
    println!(
        "--- timeline of demo1 (serial console: {}) ---",
        vm.serial_log.display()
    );
    let status = Command::new("ip")
        .args(["netns", "exec", &lab.srv.name])
        .arg(rackseed_bin())
        .args([
            "node",
            "events",
            "demo1",
            "--follow",
            "--until",
            "installing",
            "--timeout",
            &o.timeout.to_string(),
        ])
        .env("RACKSEED_URL", rackseed_tests::ADMIN)
        .env("RACKSEED_TOKEN", &srv.token)
        .status()?;
    if !status.success() {
        bail!(
            "demo1 did not reach `installing` within {}s; see the console log {}",
            o.timeout,
            vm.serial_log.display()
        );
    }
    println!(
        "--- demo1 reached `installing` {:.0?} after power-on ---",
        started.elapsed()
    );
    println!(
        "The installer loaded its preseed and ran early_command. On this network it now stops when it"
    );
    println!(
        "tries to download installer components (the archive serves no .udeb here); a full install runs in"
    );
    println!("the Vagrant lab (see README).");
    if o.keep {
        println!("--keep: leaving the lab up; press Ctrl-C to tear it down");
        let _ = Command::new("ip")
            .args(["netns", "exec", &lab.srv.name])
            .arg(rackseed_bin())
            .args(["node", "events", "demo1", "--follow"])
            .env("RACKSEED_URL", rackseed_tests::ADMIN)
            .env("RACKSEED_TOKEN", &srv.token)
            .status();
    }
    drop(vm);
    drop(srv);
    drop(lab);
    Ok(())
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
