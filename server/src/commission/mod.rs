//! Commissioning: what an unknown machine reports about its hardware from the
//! installer's inventory boot, what DHCP told about it (relay, option 82), the pure
//! parsers for both, and (`rules`) the rules that turn facts into an assignment.
//!
//! No I/O here: `agent::commission` reads sysfs and captures LLDP frames, the HTTP
//! route checks and stores what it posts.

pub mod rules;

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Bounds on what a commissioning report may hold: it comes from a machine nobody
/// has vouched for yet.
pub const MAX_DISKS: usize = 128;
pub const MAX_NICS: usize = 64;
pub const MAX_NEIGHBOURS: usize = 64;
pub const MAX_NAMES: usize = 16;
pub const MAX_TEXT: usize = 256;

/// The hardware of a machine, as its commissioning boot reported it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HwFacts {
    pub system: System,
    pub cpu: Cpu,
    /// Memory the kernel sees (`MemTotal`), in bytes.
    pub memory_bytes: u64,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// LLDP neighbours heard during the capture window.
    #[serde(default)]
    pub lldp: Vec<Neighbour>,
}

/// DMI system identity.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub vendor: String,
    pub product: String,
    pub serial: String,
    pub uuid: String,
}

/// Processors.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub model: String,
    /// Logical processors.
    pub count: u32,
}

/// One block device.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Kernel name, e.g. `sda`, `nvme0n1`.
    pub name: String,
    pub size_bytes: u64,
    pub model: String,
    pub serial: String,
    /// `sata`, `nvme`, `virtio`, `usb`, `scsi` or `other`.
    pub bus: String,
    /// `/dev/disk/by-id` names (without the directory).
    pub by_id: Vec<String>,
}

/// One network interface.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub driver: String,
    pub link: bool,
    /// Link speed in Mbit/s, when the driver says.
    pub speed_mbps: Option<u32>,
}

/// An LLDP neighbour: who sent a frame to which of our NICs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Neighbour {
    /// Our NIC the frame arrived on.
    pub nic: String,
    pub chassis_id: String,
    pub port_id: String,
    pub port_description: Option<String>,
    pub system_name: Option<String>,
}

/// What DHCP told about a machine: the relay it came through and what that relay
/// added (RFC 3046 option 82), and the client's own vendor class and architecture.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DhcpFacts {
    pub giaddr: Option<Ipv4Addr>,
    pub circuit_id: Option<String>,
    pub remote_id: Option<String>,
    pub vendor_class: Option<String>,
    pub arch: Option<String>,
}

/// An option-82 sub-option as text: printable ASCII as it is, anything else as
/// `0x` and hex (switches send port names, or binary VLAN/module/port tuples).
pub fn relay_text(raw: &[u8]) -> String {
    if !raw.is_empty() && raw.iter().all(|b| (0x21..0x7f).contains(b)) {
        String::from_utf8_lossy(raw).into_owned()
    } else {
        format!("0x{}", hex::encode(raw))
    }
}

/// Why a commissioning report was refused.
pub fn check(f: &HwFacts) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    let mut text = |what: &str, s: &str| {
        if s.len() > MAX_TEXT {
            errs.push(format!("{what} is over {MAX_TEXT} bytes"));
        } else if s.chars().any(char::is_control) {
            errs.push(format!("{what} holds a control character"));
        }
    };
    for (what, s) in [
        ("system.vendor", &f.system.vendor),
        ("system.product", &f.system.product),
        ("system.serial", &f.system.serial),
        ("system.uuid", &f.system.uuid),
        ("cpu.model", &f.cpu.model),
    ] {
        text(what, s);
    }
    for d in &f.disks {
        for (what, s) in [
            ("disk name", &d.name),
            ("disk model", &d.model),
            ("disk serial", &d.serial),
            ("disk bus", &d.bus),
        ] {
            text(what, s);
        }
        for n in &d.by_id {
            text("disk by-id name", n);
        }
    }
    for n in &f.nics {
        for (what, s) in [
            ("NIC name", &n.name),
            ("NIC MAC", &n.mac),
            ("NIC driver", &n.driver),
        ] {
            text(what, s);
        }
    }
    for l in &f.lldp {
        for (what, s) in [
            ("LLDP NIC", &l.nic),
            ("LLDP chassis id", &l.chassis_id),
            ("LLDP port id", &l.port_id),
        ] {
            text(what, s);
        }
        for s in [&l.port_description, &l.system_name].into_iter().flatten() {
            text("LLDP text", s);
        }
    }
    if f.disks.len() > MAX_DISKS {
        errs.push(format!("{} disks (at most {MAX_DISKS})", f.disks.len()));
    }
    if f.disks.iter().any(|d| d.by_id.len() > MAX_NAMES) {
        errs.push(format!("a disk with over {MAX_NAMES} by-id names"));
    }
    if f.nics.len() > MAX_NICS {
        errs.push(format!("{} NICs (at most {MAX_NICS})", f.nics.len()));
    }
    if f.lldp.len() > MAX_NEIGHBOURS {
        errs.push(format!(
            "{} LLDP neighbours (at most {MAX_NEIGHBOURS})",
            f.lldp.len()
        ));
    }
    for n in &f.nics {
        if n.mac.parse::<crate::mac::MacAddr>().is_err() {
            errs.push(format!("NIC {} has no valid MAC", n.name.escape_debug()));
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

impl HwFacts {
    /// One line for the timeline: what the machine is.
    pub fn summary(&self) -> String {
        let disks: Vec<String> = self
            .disks
            .iter()
            .map(|d| format!("{} {} {}", d.name, d.bus, human_bytes(d.size_bytes)))
            .collect();
        let nics: Vec<String> = self
            .nics
            .iter()
            .map(|n| format!("{} {}{}", n.name, n.mac, if n.link { " link" } else { "" }))
            .collect();
        format!(
            "{} {} (serial {}); {} × {}; {} memory; {} disks: {}; {} NICs: {}; {} LLDP neighbours",
            self.system.vendor,
            self.system.product,
            self.system.serial,
            self.cpu.count,
            self.cpu.model,
            human_bytes(self.memory_bytes),
            self.disks.len(),
            disks.join(", "),
            self.nics.len(),
            nics.join(", "),
            self.lldp.len()
        )
    }
}

/// Bytes as GiB/MiB for people.
pub fn human_bytes(b: u64) -> String {
    const GIB: u64 = 1 << 30;
    if b >= GIB && b % GIB == 0 {
        format!("{} GiB", b / GIB)
    } else if b >= GIB {
        format!("{:.1} GiB", b as f64 / GIB as f64)
    } else {
        format!("{} MiB", b >> 20)
    }
}

/// The bus of a block device from its resolved sysfs path
/// (`/sys/devices/pci…/ata1/…`, `…/nvme/nvme0/…`, `…/virtio2/…`, `…/usb1/…`).
pub fn bus_of_sysfs_path(path: &str) -> &'static str {
    let has = |seg: &str| path.split('/').any(|p| p.starts_with(seg));
    if path.split('/').any(|p| p == "nvme") || has("nvme-subsys") {
        "nvme"
    } else if has("usb") {
        "usb"
    } else if has("ata") {
        "sata"
    } else if has("virtio") {
        "virtio"
    } else if has("host") {
        "scsi"
    } else {
        "other"
    }
}

/// `model name` and the processor count from `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str) -> Cpu {
    let mut cpu = Cpu::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "processor" => cpu.count += 1,
            "model name" if cpu.model.is_empty() => cpu.model = v.trim().to_string(),
            _ => {}
        }
    }
    cpu
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The LLDP Ethernet type.
pub const LLDP_ETHERTYPE: u16 = 0x88cc;

/// An LLDPDU (the payload after the Ethernet header, IEEE 802.1AB) heard on `nic`,
/// or `None` when it is not a well-formed one (mandatory chassis and port TLVs first,
/// lengths inside the frame).
pub fn parse_lldpdu(nic: &str, mut p: &[u8]) -> Option<Neighbour> {
    let mut n = Neighbour {
        nic: nic.to_string(),
        ..Neighbour::default()
    };
    let mut index = 0;
    while p.len() >= 2 {
        let head = u16::from_be_bytes([p[0], p[1]]);
        let (kind, len) = (head >> 9, (head & 0x1ff) as usize);
        let value = p.get(2..2 + len)?;
        p = &p[2 + len..];
        match (index, kind) {
            (0, 1) => n.chassis_id = lldp_id(value)?,
            (0, _) => return None,
            (1, 2) => n.port_id = lldp_id(value)?,
            (1, _) => return None,
            (_, 0) => break,
            (_, 4) => n.port_description = Some(lldp_text(value)),
            (_, 5) => n.system_name = Some(lldp_text(value)),
            _ => {}
        }
        index += 1;
    }
    (index >= 2).then_some(n)
}

/// A chassis or port ID TLV: subtype, then the ID; MAC addresses (subtype 4 for
/// chassis, 3 for port) as `aa:bb:…`, network addresses as dotted IPv4, names as text.
fn lldp_id(v: &[u8]) -> Option<String> {
    let (&sub, id) = v.split_first()?;
    if id.is_empty() {
        return None;
    }
    let text = match (sub, id.len()) {
        (3 | 4, 6) => id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        (5, 5) if id[0] == 1 => Ipv4Addr::new(id[1], id[2], id[3], id[4]).to_string(),
        _ => lldp_text(id),
    };
    (!text.is_empty()).then_some(text)
}

/// A text TLV with control characters dropped and length bounded.
fn lldp_text(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((kind << 9) | value.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn an_lldpdu_names_the_switch_and_port() {
        let mut f = tlv(1, &[4, 0x02, 0, 0, 0, 0, 0x07]);
        f.extend(tlv(2, b"\x05b-07"));
        f.extend(tlv(3, &[0, 120]));
        f.extend(tlv(4, b"rack b port 7"));
        f.extend(tlv(5, b"sw-b\x1b[2J"));
        f.extend(tlv(0, b""));
        let n = parse_lldpdu("ens3", &f).unwrap();
        assert_eq!(n.chassis_id, "02:00:00:00:00:07");
        assert_eq!(n.port_id, "b-07");
        assert_eq!(n.port_description.as_deref(), Some("rack b port 7"));
        assert_eq!(n.system_name.as_deref(), Some("sw-b[2J"));
        assert_eq!(n.nic, "ens3");
    }

    #[test]
    fn malformed_lldpdus_are_refused() {
        assert!(parse_lldpdu("x", &[]).is_none());
        // Port before chassis.
        let mut f = tlv(2, b"\x05p");
        f.extend(tlv(1, b"\x07c"));
        assert!(parse_lldpdu("x", &f).is_none());
        // A length past the end.
        let mut f = tlv(1, b"\x07c");
        f.extend([0x04, 0x20, b'x']);
        assert!(parse_lldpdu("x", &f).is_none());
        // Empty ID, or one of control characters only (found by the fuzz target).
        for id in [&b"\x07"[..], b"\x07\x01\x1b "] {
            let mut f = tlv(1, id);
            f.extend(tlv(2, b"\x05p"));
            assert!(parse_lldpdu("x", &f).is_none(), "{id:?}");
        }
    }

    #[test]
    fn relay_sub_options_read_as_text_or_hex() {
        assert_eq!(relay_text(b"b-07"), "b-07");
        assert_eq!(relay_text(&[0, 4, 0, 7]), "0x00040007");
        assert_eq!(relay_text(b"a b"), "0x612062");
        assert_eq!(relay_text(b""), "0x");
    }

    #[test]
    fn proc_files_and_sysfs_paths_parse() {
        let c = parse_cpuinfo(
            "processor\t: 0\nmodel name\t: QEMU Virtual CPU version 2.5+\n\nprocessor\t: 1\nmodel name\t: QEMU Virtual CPU version 2.5+\n",
        );
        assert_eq!(
            (c.count, c.model.as_str()),
            (2, "QEMU Virtual CPU version 2.5+")
        );
        assert_eq!(
            parse_meminfo("MemTotal:        1009152 kB\nMemFree: 1 kB\n"),
            1009152 * 1024
        );
        assert_eq!(parse_meminfo("garbage"), 0);
        assert_eq!(human_bytes(32 << 30), "32 GiB");
        assert_eq!(human_bytes(1_500_000_000), "1.4 GiB");
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        for (p, bus) in [
            (
                "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
                "sata",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1",
                "nvme",
            ),
            (
                "/sys/devices/virtual/nvme-subsys/nvme-subsys0/nvme0n1",
                "nvme",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vda",
                "virtio",
            ),
            (
                "/sys/devices/pci0000:00/0000:00:06.0/usb1/1-1/1-1:1.0/host2/target2:0:0/2:0:0:0/block/sdb",
                "usb",
            ),
            ("/sys/devices/platform/x/block/mmcblk0", "other"),
        ] {
            assert_eq!(bus_of_sysfs_path(p), bus, "{p}");
        }
    }

    #[test]
    fn reports_with_control_characters_or_too_much_are_refused() {
        let mut f = HwFacts::default();
        f.nics.push(Nic {
            name: "ens3".into(),
            mac: "52:54:00:00:00:01".into(),
            ..Nic::default()
        });
        assert_eq!(check(&f), Ok(()));
        f.system.serial = "a\nb".into();
        f.disks = vec![Disk::default(); MAX_DISKS + 1];
        f.nics[0].mac = "nope".into();
        let errs = check(&f).unwrap_err();
        assert!(errs.iter().any(|e| e.contains("system.serial")), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.contains("disks (at most")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("no valid MAC")), "{errs:?}");
    }
}
