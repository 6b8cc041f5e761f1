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
        crate::sh(&format!(
            "chmod 755 {}",
            sh_quote(&chassis.display().to_string())
        ))?;
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
        crate::wait_for(
            "ipmi_sim answering",
            Duration::from_secs(20),
            Duration::from_millis(300),
            || {
                Command::new("ip")
                    .args([
                        "netns", "exec", &ns_name, "ipmitool", "-I", "lanplus", "-C", "3", "-H",
                        addr, "-U", "admin", "-E", "-R", "1", "-N", "1", "chassis", "power",
                        "status",
                    ])
                    .env("IPMI_PASSWORD", password)
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
            },
        )?;
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
        self.pid()
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()
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

/// Where `./x setup` puts sushy-tools (a Python venv over Debian's python3-libvirt).
pub const SUSHY_VENV: &str = "/var/cache/rackseed-tests/sushy-venv";

/// A Redfish service for one QEMU machine: sushy-tools' emulator over a private
/// libvirtd, both in the lab's server namespace (so the machine's NIC joins its
/// bridge); stopped, with the machine, on drop.
pub struct RedfishBmc {
    /// `http://addr:port`.
    pub url: String,
    /// The system's path.
    pub system: String,
    pub user: String,
    pub password: String,
    pub dir: tempfile::TempDir,
    libvirtd: Child,
    sushy: Child,
    uri: String,
    ns: String,
    name: String,
}

impl RedfishBmc {
    /// Starts libvirtd and sushy-emulator in `ns`, defines machine `name` (`mac` on
    /// bridge `br0`, booting from its (absent) disk until told otherwise), and serves
    /// Redfish on `addr:8000` as user `admin`. `ignore_boot_device` makes the service
    /// accept boot overrides without applying them, as some BMCs do.
    pub fn start(
        ns: &Netns,
        addr: &str,
        name: &str,
        mac: &str,
        password: &str,
        ignore_boot_device: bool,
    ) -> Result<RedfishBmc> {
        let dir = tempfile::Builder::new().prefix("redfish-").tempdir()?;
        let dpath = dir.path().to_path_buf();
        let d = dpath.as_path();
        for sub in ["etc", "lib", "run", "cache", "log", "sock"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        std::fs::write(
            d.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nsecurity_driver = \"none\"\ncgroup_controllers = [ ]\nstdio_handler = \"file\"\nremember_owner = 0\n",
        )?;
        let sock = d.join("sock");
        std::fs::write(
            d.join("libvirtd.conf"),
            format!(
                "unix_sock_dir = \"{}\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\nlisten_tls = 0\nlisten_tcp = 0\nlog_outputs = \"3:file:{}\"\n",
                sock.display(),
                d.join("libvirtd.log").display()
            ),
        )?;
        for m in [
            "/etc/libvirt",
            "/var/lib/libvirt",
            "/run/libvirt",
            "/var/cache/libvirt",
            "/var/log/libvirt",
        ] {
            std::fs::create_dir_all(m)?;
        }
        let q = |p: &str| sh_quote(&d.join(p).display().to_string());
        // `ip netns exec` gives a mount namespace of its own; libvirtd's fixed paths are
        // bound to this directory in it only.
        let inner = format!(
            "mount --bind {} /etc/libvirt && mount --bind {} /var/lib/libvirt && mount --bind {} /run/libvirt && mount --bind {} /var/cache/libvirt && mount --bind {} /var/log/libvirt && exec libvirtd -f {}",
            q("etc"),
            q("lib"),
            q("run"),
            q("cache"),
            q("log"),
            q("libvirtd.conf")
        );
        let libvirtd = ns
            .cmd("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &inner])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("libvirtd.stderr"))?)
            .spawn()
            .context("cannot start libvirtd (install Debian's libvirt-daemon and libvirt-daemon-driver-qemu)")?;
        let uri = format!(
            "qemu:///system?socket={}",
            sock.join("libvirt-sock").display()
        );
        let mut bmc = RedfishBmc {
            url: format!("http://{addr}:8000"),
            system: String::new(),
            user: "admin".into(),
            password: password.into(),
            libvirtd,
            sushy: Command::new("true").spawn()?,
            uri: uri.clone(),
            ns: ns.name.clone(),
            name: name.into(),
            dir,
        };
        crate::wait_for(
            "libvirtd answering",
            Duration::from_secs(30),
            Duration::from_millis(300),
            || {
                ns.try_sh(&format!(
                    "virsh -c {} version >/dev/null 2>&1",
                    sh_quote(&uri)
                ))
                .0
                .then_some(())
            },
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}: {}",
                std::fs::read_to_string(d.join("libvirtd.stderr")).unwrap_or_default()
            )
        })?;
        let uuid = "7b2c8d4e-1f3a-4b5c-8d6e-9f0a1b2c3d4e";
        let xml = format!(
            r#"<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>1024</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'><mac address='{mac}'/><source bridge='br0'/><model type='virtio'/></interface>
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
  </devices>
</domain>
"#,
            serial = d.join("serial.log").display()
        );
        std::fs::write(d.join("domain.xml"), xml)?;
        ns.sh(&format!(
            "virsh -c {} define {} >/dev/null",
            sh_quote(&uri),
            q("domain.xml")
        ))?;
        let hash = crate::sh(&format!("htpasswd -nbB admin {}", sh_quote(password)))?;
        std::fs::write(d.join("htpasswd"), hash.trim())?;
        std::fs::write(
            d.join("sushy.conf"),
            format!(
                "SUSHY_EMULATOR_LISTEN_IP = '{addr}'\nSUSHY_EMULATOR_LISTEN_PORT = 8000\nSUSHY_EMULATOR_SSL_CERT = None\nSUSHY_EMULATOR_SSL_KEY = None\nSUSHY_EMULATOR_AUTH_FILE = '{}'\nSUSHY_EMULATOR_LIBVIRT_URI = '{uri}'\nSUSHY_EMULATOR_IGNORE_BOOT_DEVICE = {}\n",
                d.join("htpasswd").display(),
                if ignore_boot_device { "True" } else { "False" }
            ),
        )?;
        let exe = Path::new(SUSHY_VENV).join("bin/sushy-emulator");
        if !exe.is_file() {
            bail!(
                "{} is missing: run ./x setup (it installs sushy-tools there)",
                exe.display()
            );
        }
        bmc.sushy = ns
            .cmd(&exe)
            .arg("--config")
            .arg(d.join("sushy.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sushy.log"))?)
            .spawn()
            .context("cannot start sushy-emulator")?;
        bmc.system = format!("/redfish/v1/Systems/{uuid}");
        let url = format!("{}{}", bmc.url, bmc.system);
        let auth = format!("admin:{password}");
        crate::wait_for(
            "sushy-emulator answering",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let (code, _) = crate::curl_in(&ns.name, &["-u", &auth, &url]).ok()?;
                (code == 200).then_some(())
            },
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}: {}",
                std::fs::read_to_string(d.join("sushy.log")).unwrap_or_default()
            )
        })?;
        Ok(bmc)
    }

    /// The machine's libvirt state (`running`, `shut off`).
    pub fn domain_state(&self) -> String {
        Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "virsh", "-c", &self.uri, "domstate", &self.name,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// The machine's domain XML as libvirt holds it now.
    pub fn domain_xml(&self) -> String {
        Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "virsh", "-c", &self.uri, "dumpxml", &self.name,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }

    /// The machine's serial console so far.
    pub fn serial(&self) -> String {
        crate::qemu::strip_escapes(
            &std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default(),
        )
    }
}

impl Drop for RedfishBmc {
    fn drop(&mut self) {
        let _ = self.sushy.kill();
        let _ = self.sushy.wait();
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "virsh", "-c", &self.uri, "destroy", &self.name,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.libvirtd.kill();
        let _ = self.libvirtd.wait();
    }
}
