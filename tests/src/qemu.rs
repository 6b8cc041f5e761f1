//! QEMU nodes for the boot and first-boot tiers: SeaBIOS or OVMF, taps on a lab
//! bridge, disks, an optional direct kernel boot, and a serial console that is logged
//! to a file and can be typed into.
//!
//! QEMU runs with `-accel tcg` (no KVM here). Only one VM set runs at a time
//! ([`exclusive`]), because software emulation needs both cores.

use crate::{Netns, wait_for};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

static QEMU: Mutex<()> = Mutex::new(());

/// Holds the machine for VMs; other QEMU tests wait.
pub fn exclusive() -> MutexGuard<'static, ()> {
    QEMU.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which firmware a VM boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with the NIC's iPXE option ROM (Debian's `ipxe-qemu`).
    Bios,
    /// OVMF (Debian's `ovmf`), firmware PXE over the NIC's SNP driver.
    Uefi,
    /// OVMF with Secure Boot enforcing and Microsoft's keys enrolled
    /// (`OVMF_CODE_4M.secboot.fd` + `OVMF_VARS_4M.ms.fd`, SMM on).
    UefiSecureBoot,
}

impl Firmware {
    /// Whether this is UEFI firmware.
    pub fn is_uefi(self) -> bool {
        self != Firmware::Bios
    }
}

/// The NIC models servers have, as QEMU emulates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicModel {
    /// virtio-net (cloud and lab machines).
    Virtio,
    /// Intel 82574L (`e1000e`), the driver of many onboard server NICs.
    E1000e,
}

/// One NIC: its tap on the lab bridge, MAC, model, and whether it is the one the
/// firmware network-boots from.
#[derive(Clone, Debug)]
pub struct Nic {
    pub tap: String,
    pub mac: String,
    pub model: NicModel,
    pub boot: bool,
}

/// The bus a disk hangs off, and so its `/dev/disk/by-id` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk: `virtio-<serial>`.
    Virtio,
    /// SATA on an AHCI controller: `ata-QEMU_HARDDISK_<serial>`.
    Sata,
    /// NVMe: `nvme-QEMU_NVMe_Ctrl_<serial>`.
    Nvme,
    /// USB mass storage on xHCI (drivers in the installer's own initrd).
    Usb,
}

/// One disk: an image file (qcow2 or raw, by extension), its bus and serial.
#[derive(Clone, Debug)]
pub struct Disk {
    pub path: PathBuf,
    pub bus: DiskBus,
    pub serial: String,
}

impl Disk {
    /// A disk with this bus and serial.
    pub fn new(path: impl Into<PathBuf>, bus: DiskBus, serial: &str) -> Disk {
        Disk {
            path: path.into(),
            bus,
            serial: serial.into(),
        }
    }
}

/// A VM to start, shaped like the server it stands for.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub name: String,
    pub memory_mb: u32,
    pub cpus: u32,
    pub firmware: Firmware,
    pub nics: Vec<Nic>,
    pub disks: Vec<Disk>,
    /// Direct kernel boot: (kernel, initrd, command line).
    pub kernel: Option<(PathBuf, PathBuf, String)>,
    /// SMBIOS system UUID.
    pub uuid: Option<String>,
    /// SMBIOS system vendor, product and serial number (the label on the chassis).
    pub serial: Option<(String, String, String)>,
    /// UEFI variable store kept across VM starts (BootOrder, boot entries), made from
    /// the firmware's template when missing; a fresh one per start when `None`.
    pub vars: Option<PathBuf>,
    /// UEFI network boot over IPv4 PXE only (IPv6 PXE and HTTP boot off, as set in a
    /// server's firmware setup): OVMF's `opt/org.tianocore` knobs.
    pub ipv4_pxe_only: bool,
}

impl VmSpec {
    /// A network-booting VM with one virtio NIC.
    pub fn pxe(name: &str, firmware: Firmware, tap: &str, mac: &str) -> VmSpec {
        VmSpec {
            name: name.into(),
            memory_mb: 1024,
            cpus: 1,
            firmware,
            nics: vec![Nic {
                tap: tap.into(),
                mac: mac.into(),
                model: NicModel::Virtio,
                boot: true,
            }],
            disks: Vec::new(),
            kernel: None,
            uuid: None,
            serial: None,
            vars: None,
            ipv4_pxe_only: false,
        }
    }

    /// The QEMU arguments for this machine's firmware, NICs and disks (the VM's
    /// private files, such as its UEFI variable store, go to `dir`).
    pub fn hardware_args(&self, dir: &Path) -> Result<Vec<String>> {
        let mut a: Vec<String> = Vec::new();
        let mut arg = |x: &str, y: String| {
            a.push(x.to_string());
            a.push(y);
        };
        let machine = if self.firmware == Firmware::UefiSecureBoot {
            "q35,smm=on"
        } else {
            "q35"
        };
        arg("-machine", machine.into());
        if self.firmware.is_uefi() {
            let (code, vars_src) = match self.firmware {
                Firmware::UefiSecureBoot => (
                    "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                    "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
                ),
                _ => (
                    "/usr/share/OVMF/OVMF_CODE_4M.fd",
                    "/usr/share/OVMF/OVMF_VARS_4M.fd",
                ),
            };
            let vars = match &self.vars {
                Some(v) => v.clone(),
                None => dir.join("OVMF_VARS.fd"),
            };
            if self.vars.is_none() || !vars.is_file() {
                std::fs::copy(vars_src, &vars).with_context(|| {
                    format!("{vars_src} is missing: install Debian's `ovmf` package")
                })?;
            }
            if self.ipv4_pxe_only {
                for knob in ["IPv6PXESupport", "HTTPSupport"] {
                    arg(
                        "-fw_cfg",
                        format!("name=opt/org.tianocore/{knob},string=no"),
                    );
                }
            }
            if self.firmware == Firmware::UefiSecureBoot {
                arg(
                    "-global",
                    "driver=cfi.pflash01,property=secure,value=on".into(),
                );
            }
            arg(
                "-drive",
                format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
            );
            arg(
                "-drive",
                format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            );
        }
        for (i, n) in self.nics.iter().enumerate() {
            arg(
                "-netdev",
                format!("tap,id=n{i},ifname={},script=no,downscript=no", n.tap),
            );
            let boot = if n.boot && self.kernel.is_none() {
                ",bootindex=1"
            } else {
                ""
            };
            // UEFI machines PXE-boot from firmware (OVMF's own NIC drivers and PXE), as
            // physical servers do; the NIC's iPXE option ROM is left out.
            let rom = if self.firmware.is_uefi() {
                ",romfile="
            } else {
                ""
            };
            let model = match n.model {
                NicModel::Virtio => "virtio-net-pci",
                NicModel::E1000e => "e1000e",
            };
            arg(
                "-device",
                format!("{model},netdev=n{i},mac={}{boot}{rom}", n.mac),
            );
        }
        if self.disks.iter().any(|d| d.bus == DiskBus::Sata) {
            arg("-device", "ahci,id=sata".into());
        }
        if self.disks.iter().any(|d| d.bus == DiskBus::Usb) {
            arg("-device", "qemu-xhci,id=xhci".into());
        }
        let mut sata_port = 0;
        for (i, d) in self.disks.iter().enumerate() {
            let fmt = if d.path.extension().is_some_and(|e| e == "qcow2") {
                "qcow2"
            } else {
                "raw"
            };
            arg(
                "-drive",
                format!(
                    "file={},if=none,id=d{i},format={fmt},cache=unsafe",
                    d.path.display()
                ),
            );
            let serial = &d.serial;
            let dev = match d.bus {
                DiskBus::Virtio => format!("virtio-blk-pci,drive=d{i},serial={serial}"),
                DiskBus::Sata => {
                    sata_port += 1;
                    format!(
                        "ide-hd,drive=d{i},bus=sata.{},serial={serial}",
                        sata_port - 1
                    )
                }
                DiskBus::Nvme => format!("nvme,drive=d{i},serial={serial}"),
                DiskBus::Usb => format!("usb-storage,bus=xhci.0,drive=d{i},serial={serial}"),
            };
            arg("-device", dev);
        }
        Ok(a)
    }
}

impl VmSpec {
    /// The whole QEMU command line of this machine for a process that something else
    /// starts and stops (a BMC emulator's power control): serial console to
    /// `serial_log`, network boot first when `pxe` and the disk otherwise (no boot
    /// index on the NICs, so the boot order decides), its pid in `pidfile`.
    pub fn command_line(
        &self,
        dir: &Path,
        serial_log: &Path,
        pidfile: &Path,
        pxe: bool,
    ) -> Result<Vec<String>> {
        let mut spec = self.clone();
        for n in &mut spec.nics {
            n.boot = false;
        }
        let mut a: Vec<String> = [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-nographic",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-monitor",
            "none",
            "-daemonize",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend([
            "-m".into(),
            spec.memory_mb.to_string(),
            "-smp".into(),
            spec.cpus.to_string(),
        ]);
        a.extend(["-name".into(), spec.name.clone()]);
        a.extend(["-serial".into(), format!("file:{}", serial_log.display())]);
        a.extend(["-pidfile".into(), pidfile.display().to_string()]);
        if let Some(u) = &spec.uuid {
            a.extend(["-uuid".into(), u.clone()]);
        }
        a.extend(spec.hardware_args(dir)?);
        a.extend(["-boot".into(), if pxe { "n" } else { "c" }.into()]);
        Ok(a)
    }
}

/// A running VM; killed on drop.
pub struct Vm {
    pub name: String,
    pub serial_log: PathBuf,
    serial_sock: PathBuf,
    /// One connection to the serial console for the VM's lifetime: input written on a
    /// connection that is then closed can be lost, and output QEMU sends to it must be
    /// read (the log file keeps a copy).
    serial_in: Mutex<Option<UnixStream>>,
    /// What arrived on that connection. QEMU's log file has shown duplicated
    /// characters under load; command output is read from here.
    serial_out: Arc<Mutex<Vec<u8>>>,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Creates a qcow2 image of `size` (e.g. `2G`), optionally backed by `backing`.
pub fn qcow2(path: &Path, size: &str, backing: Option<&Path>) -> Result<()> {
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2"]);
    if let Some(b) = backing {
        c.arg("-F").arg("qcow2").arg("-b").arg(b);
    }
    c.arg(path);
    if backing.is_none() {
        c.arg(size);
    }
    crate::run(&mut c).map(|_| ())
}

impl Vm {
    /// Starts `spec` inside namespace `ns` (where its taps live).
    pub fn start(ns: &Netns, spec: &VmSpec) -> Result<Vm> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vm-{}-", spec.name))
            .tempdir()?;
        let serial_log = dir.path().join("serial.log");
        let serial_sock = dir.path().join("serial.sock");
        let mut c = ns.cmd("qemu-system-x86_64");
        c.args([
            "-accel",
            "tcg",
            "-nographic",
            "-nodefaults",
            "-no-user-config",
        ]);
        c.args([
            "-m",
            &spec.memory_mb.to_string(),
            "-smp",
            &spec.cpus.to_string(),
        ]);
        c.args(["-name", &spec.name, "-display", "none", "-monitor", "none"]);
        c.arg("-chardev").arg(format!(
            "socket,id=ser0,path={},server=on,wait=off,logfile={}",
            serial_sock.display(),
            serial_log.display()
        ));
        c.args(["-serial", "chardev:ser0"]);
        if let Some(u) = &spec.uuid {
            c.args(["-uuid", u]);
        }
        if let Some((vendor, product, serial)) = &spec.serial {
            c.arg("-smbios").arg(format!(
                "type=1,manufacturer={vendor},product={product},serial={serial}"
            ));
        }
        c.args(spec.hardware_args(dir.path())?);
        if let Some((k, i, append)) = &spec.kernel {
            c.arg("-kernel")
                .arg(k)
                .arg("-initrd")
                .arg(i)
                .arg("-append")
                .arg(append);
        } else if spec.firmware == Firmware::Bios {
            c.args(["-boot", "n"]);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = c
            .spawn()
            .context("cannot start qemu-system-x86_64 (install Debian's qemu-system-x86)")?;
        let mut vm = Vm {
            name: spec.name.clone(),
            serial_log,
            serial_sock,
            serial_in: Mutex::new(None),
            serial_out: Arc::default(),
            child,
            _dir: dir,
        };
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = vm.child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = vm.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("qemu for {} exited at once ({status}): {err}", spec.name);
        }
        Ok(vm)
    }

    /// Everything the VM printed on its serial console so far, with terminal escape
    /// sequences removed.
    pub fn serial(&self) -> String {
        let raw = std::fs::read(&self.serial_log).unwrap_or_default();
        strip_escapes(&String::from_utf8_lossy(&raw))
    }

    /// What the serial console printed since this process first typed on it.
    fn typed_session(&self) -> String {
        let raw = self
            .serial_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        strip_escapes(&String::from_utf8_lossy(&raw))
    }

    /// Waits until the serial console shows `needle`.
    pub fn wait_serial(&self, needle: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("`{needle}` on {}'s console", self.name),
            timeout,
            Duration::from_millis(500),
            || self.serial().contains(needle).then_some(()),
        )
        .with_context(|| {
            format!(
                "console of {}:\n{}",
                self.name,
                crate::tail(&self.serial(), 60)
            )
        })
    }

    /// Types a line on the serial console.
    pub fn type_line(&self, line: &str) -> Result<()> {
        let mut guard = self.serial_in.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let s = UnixStream::connect(&self.serial_sock)
                .context("cannot connect to the serial console")?;
            let mut reader = s.try_clone()?;
            let out = self.serial_out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = std::io::Read::read(&mut reader, &mut buf) {
                    out.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            });
            *guard = Some(s);
        }
        let Some(s) = guard.as_mut() else {
            bail!("serial console of {} is not connected", self.name)
        };
        // The guest UART has a 16-byte FIFO and an emulated guest drains it slowly.
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        for chunk in bytes.chunks(8) {
            s.write_all(chunk)?;
            std::thread::sleep(Duration::from_millis(15));
        }
        Ok(())
    }

    /// Runs a shell command on the (auto-logged-in) serial console and returns its
    /// output, delimited by unique markers; fails on timeout or non-zero exit.
    pub fn shell(&self, cmd: &str, timeout: Duration) -> Result<String> {
        let id = crate::unique("m");
        let out = format!("/tmp/.rs-{id}");
        // The command's output goes to a file first; the console then shows the file
        // and its checksum, so a character mangled on the emulated UART is caught and
        // the file shown again instead of being parsed wrong.
        self.type_line(&format!("( {cmd} ) >{out} 2>&1; echo $? >{out}.rc"))?;
        let mut last = None;
        for _ in 0..4 {
            let (text, status, sum) = self.show_file(cmd, &out, timeout)?;
            if format!("{:08x}", crc32(text.as_bytes())) == sum {
                if status != "0" {
                    bail!("`{cmd}` on {} exited {status}: {text}", self.name);
                }
                return Ok(text.trim_matches('\n').to_string());
            }
            last = Some(text);
        }
        bail!(
            "the output of `{cmd}` on {} arrived garbled four times over the serial console; last:\n{}",
            self.name,
            last.unwrap_or_default()
        )
    }

    /// Prints `file` (a finished command's output) between unique markers with its exit
    /// status and CRC-32; returns (text, status, crc as 8 hex digits).
    fn show_file(
        &self,
        cmd: &str,
        file: &str,
        timeout: Duration,
    ) -> Result<(String, String, String)> {
        let id = crate::unique("m");
        let (begin, end) = (format!("@@B{id}@@"), format!("@@E{id}"));
        let before = self.typed_session().len();
        // Markers are printed with printf so the echoed command line does not match.
        self.type_line(&format!(
            "while [ ! -e {file}.rc ]; do sleep 1; done; printf '@@B%s@@\\n' '{id}'; cat {file}; printf '\\n@@E%s:%s:%08x@@\\n' '{id}' \"$(cat {file}.rc)\" \"$(gzip -c <{file} | tail -c8 | od -An -tu4 -N4 -v | tr -d ' ')\""
        ))?;
        wait_for(
            &format!("`{cmd}` on {}", self.name),
            timeout,
            Duration::from_millis(300),
            || {
                let s = self.typed_session();
                let tail = s.get(before..)?.to_string();
                let b = tail.find(&begin)?;
                let e = tail[b..].find(&end)? + b;
                let mut fields = tail[e + end.len()..]
                    .strip_prefix(':')?
                    .split("@@")
                    .next()?
                    .split(':');
                let status = fields.next()?.trim().to_string();
                let sum = fields.next()?.trim().to_string();
                let body = tail[b + begin.len()..e].replace('\r', "");
                let body = body.strip_prefix('\n').unwrap_or(&body);
                let body = body.strip_suffix('\n').unwrap_or(body);
                Some((body.to_string(), status, sum))
            },
        )
        .with_context(|| {
            format!(
                "console of {}:\n{}",
                self.name,
                crate::tail(&self.serial(), 40)
            )
        })
    }

    /// True while QEMU runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- console of {} ----\n{}",
                self.name,
                crate::tail(&self.serial(), 80)
            );
        }
    }
}

/// Removes ANSI/VT100 escape sequences and line-drawing shifts.
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        if n.is_ascii_alphabetic() || n == '@' || n == '~' {
                            break;
                        }
                    }
                }
                Some('(') | Some(')') => {
                    chars.next();
                    chars.next();
                }
                _ => {
                    chars.next();
                }
            }
        } else if c != '\u{e}' && c != '\u{f}' {
            out.push(c);
        }
    }
    out
}

/// CRC-32 (IEEE, as gzip stores it) of `data`.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_gzip() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn escapes_are_removed() {
        assert_eq!(
            strip_escapes("\u{1b}[2J\u{1b}[0;1miPXE\u{1b}[0m ok\u{1b}(B"),
            "iPXE ok"
        );
    }
}
