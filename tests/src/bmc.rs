//! BMCs for QEMU machines: OpenIPMI's `ipmi_sim` serving IPMI over LAN (RMCP+), with a
//! chassis-control script that powers a QEMU process on and off and applies the boot
//! device it was given to the machine's boot order, once.

use crate::Netns;
use crate::qemu::VmSpec;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `ipmi_sim` for one machine; stops it and the machine on drop.
pub struct IpmiBmc {
    pub address: String,
    pub user: String,
    pub password: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl IpmiBmc {
    /// Starts a BMC for `spec` listening on `addr` (an address of `ns`) port 623, with
    /// user `admin` and `password`.
    pub fn start(ns: &Netns, addr: &str, spec: &VmSpec, password: &str) -> Result<IpmiBmc> {
        let dir = tempfile::Builder::new().prefix("bmc-").tempdir()?;
        let d = dir.path();
        let serial = d.join("serial.log");
        let pid = d.join("qemu.pid");
        for (name, pxe) in [("qemu-pxe.sh", true), ("qemu-disk.sh", false)] {
            let args = spec.command_line(d, &serial, &pid, pxe)?;
            let line: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
            std::fs::write(d.join(name), format!("exec {}\n", line.join(" ")))?;
        }
        let dq = sh_quote(&d.display().to_string());
        let script = format!(
            r#"#!/bin/sh
# ipmi_sim's chassis control: `get NAME…` prints NAME:VALUE lines, `set NAME VALUE…`.
D={dq}
echo "$*" >> "$D/chassis.log"
alive() {{ [ -f "$D/qemu.pid" ] && kill -0 "$(cat "$D/qemu.pid")" 2>/dev/null; }}
start() {{
    if [ "$(cat "$D/boot" 2>/dev/null)" = pxe ]; then sh "$D/qemu-pxe.sh"; else sh "$D/qemu-disk.sh"; fi
    echo "started $(cat "$D/boot" 2>/dev/null || echo default)" >> "$D/chassis.log"
    echo default > "$D/boot"
}}
stop() {{
    if alive; then
        kill "$(cat "$D/qemu.pid")"
        i=0; while alive && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    fi
    rm -f "$D/qemu.pid"
}}
op=$1; shift
case $op in
get)
    for p in "$@"; do
        case $p in
            power) if alive; then echo power:1; else echo power:0; fi ;;
            boot) echo "boot:$(cat "$D/boot" 2>/dev/null || echo default)" ;;
            *) echo "$p:0" ;;
        esac
    done ;;
set)
    while [ $# -ge 2 ]; do
        case $1 in
            power) if [ "$2" = 1 ]; then alive || start; else stop; fi ;;
            reset) stop; start ;;
            boot) echo "$2" > "$D/boot" ;;
        esac
        shift 2
    done ;;
esac
exit 0
"#
        );
        let chassis = d.join("chassis.sh");
        std::fs::write(&chassis, script)?;
        crate::sh(&format!("chmod 755 {}", sh_quote(&chassis.display().to_string())))?;
        let lan = format!(
            r#"name "rackseed-test"
set_working_mc 0x20
  startlan 1
    addr {addr} 623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{}"
  user 1 true  ""      "unused"  user  10 none md2 md5 straight
  user 2 true  "admin" "{password}" admin 10 none md2 md5 straight
"#,
            chassis.display()
        );
        std::fs::write(d.join("lan.conf"), lan)?;
        std::fs::write(
            d.join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
        )?;
        std::fs::create_dir_all(d.join("state"))?;
        let child = ns
            .cmd("ipmi_sim")
            .arg("-c")
            .arg(d.join("lan.conf"))
            .arg("-f")
            .arg(d.join("bmc.emu"))
            .arg("-s")
            .arg(d.join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("ipmi_sim.log"))?)
            .spawn()
            .context("cannot start ipmi_sim (install Debian's openipmi)")?;
        let bmc = IpmiBmc {
            address: format!("{addr}:623"),
            user: "admin".into(),
            password: password.into(),
            dir,
            child,
        };
        // Ready when it answers a power status over RMCP+.
        let ns_name = ns.name.clone();
        crate::wait_for("ipmi_sim answering", Duration::from_secs(20), Duration::from_millis(300), || {
            Command::new("ip")
                .args(["netns", "exec", &ns_name, "ipmitool", "-I", "lanplus", "-C", "3", "-H", addr, "-U", "admin", "-E", "-R", "1", "-N", "1", "chassis", "power", "status"])
                .env("IPMI_PASSWORD", password)
                .output()
                .ok()
                .filter(|o| o.status.success())
        })?;
        Ok(bmc)
    }

    /// What the chassis control was asked, in order.
    pub fn chassis_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chassis.log")).unwrap_or_default()
    }

    /// The machine's serial console so far.
    pub fn serial(&self) -> String {
        crate::qemu::strip_escapes(
            &std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default(),
        )
    }

    /// Whether the machine's QEMU process runs.
    pub fn machine_running(&self) -> bool {
        self.pid().is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pidfile()).ok()?.trim().parse().ok()
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("qemu.pid")
    }

    /// Fails unless the machine stops within `timeout`.
    pub fn wait_stopped(&self, timeout: Duration) -> Result<()> {
        let t = std::time::Instant::now();
        while self.machine_running() {
            if t.elapsed() > timeout {
                bail!("the machine still runs after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

impl Drop for IpmiBmc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(p) = self.pid() {
            let _ = Command::new("kill").arg(p.to_string()).status();
            for _ in 0..50 {
                if !Path::new(&format!("/proc/{p}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
    }
}
