//! Facts an installed node reports about itself at enrollment, and the pure parsers
//! that read them from kernel and tool output.
//!
//! Owns the facts format (shared by the agent and the server) and parsing of
//! `/proc/mdstat`, `/proc/net/bonding/*`, `/proc/net/vlan/config`, `zpool status -P`,
//! `ip -j addr` and SSH public keys. No I/O here: the agent reads, these functions parse.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Everything the agent reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    pub hostname: String,
    pub machine_id: String,
    pub smbios_uuid: Option<String>,
    pub root: RootFacts,
    pub md_arrays: Vec<MdArray>,
    pub pools: Vec<Pool>,
    pub bonds: Vec<Bond>,
    pub vlans: Vec<Vlan>,
    pub bridges: Vec<Bridge>,
    pub interfaces: Vec<Interface>,
    pub addresses: Vec<Address>,
    pub ssh_host_keys: Vec<SshKey>,
}

/// What `/` is mounted from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RootFacts {
    /// e.g. `/dev/md0`
    pub source: String,
    pub fstype: String,
    /// The md array holding `/`, when it is one.
    pub md: Option<MdArray>,
}

/// One md array from `/proc/mdstat`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MdArray {
    /// e.g. `md0`
    pub name: String,
    /// e.g. `raid1`
    pub level: String,
    /// `active` or `inactive`
    pub state: String,
    /// Member devices, e.g. `vda1`.
    pub members: Vec<String>,
    /// Members in use versus expected, from `[2/2]`.
    pub active_members: u32,
    pub expected_members: u32,
}

impl MdArray {
    /// True when every expected member is in use.
    pub fn healthy(&self) -> bool {
        self.state == "active"
            && self.active_members == self.expected_members
            && self.expected_members > 0
    }
}

/// A ZFS pool.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    /// `ONLINE`, `DEGRADED`, …
    pub health: String,
    pub vdevs: Vec<Vdev>,
    /// Datasets and the properties the agent read (`zfs get -H -p`), by name.
    #[serde(default)]
    pub datasets: BTreeMap<String, BTreeMap<String, String>>,
}

/// A top-level vdev.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Vdev {
    /// `mirror`, `raidz1`, `raidz2`, `raidz3`, or `disk` for a single-disk (stripe) vdev.
    pub kind: String,
    pub state: String,
    pub disks: Vec<String>,
}

/// A bonding interface from `/proc/net/bonding/<name>`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    pub name: String,
    /// The kernel's mode text, normalised: `802.3ad`, `active-backup`, `balance-alb`, …
    pub mode: String,
    pub slaves: Vec<String>,
    pub mii_status: String,
    pub miimon: Option<u32>,
    pub lacp_rate: Option<String>,
    pub xmit_hash_policy: Option<String>,
}

/// A VLAN interface from `/proc/net/vlan/config`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Vlan {
    pub name: String,
    pub id: u16,
    pub parent: String,
}

/// A Linux bridge and its ports.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    pub ports: Vec<String>,
}

/// A network interface.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
}

/// An IPv4 address on an interface.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub iface: String,
    /// e.g. `203.0.113.11/24`
    pub cidr: String,
}

/// An SSH host public key.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SshKey {
    /// e.g. `ssh-ed25519`
    pub key_type: String,
    /// The `TYPE BASE64` part of the public key line.
    pub public_key: String,
    /// `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

/// Parses `/proc/mdstat`.
pub fn parse_mdstat(text: &str) -> Vec<MdArray> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((name, rest)) = line.split_once(" : ") else {
            continue;
        };
        let name = name.trim();
        if !name.starts_with("md") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let state = words.first().copied().unwrap_or_default().to_string();
        let mut idx = 1;
        if words.get(idx).is_some_and(|w| w.starts_with('(')) {
            idx += 1; // (auto-read-only)
        }
        let level = if state == "active" {
            words.get(idx).copied().unwrap_or_default().to_string()
        } else {
            String::new()
        };
        let first_member = if state == "active" { idx + 1 } else { 1 };
        let members: Vec<String> = words
            .iter()
            .skip(first_member)
            .filter_map(|w| w.split('[').next())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let (mut active, mut expected) = (0, 0);
        if let Some(next) = lines.peek()
            && let Some(counts) = next
                .split_whitespace()
                .find(|w| w.starts_with('[') && w.contains('/') && w.ends_with(']'))
        {
            let inner = counts.trim_matches(['[', ']']);
            if let Some((e, a)) = inner.split_once('/') {
                expected = e.parse().unwrap_or(0);
                active = a.parse().unwrap_or(0);
            }
        }
        out.push(MdArray {
            name: name.to_string(),
            level,
            state,
            members,
            active_members: active,
            expected_members: expected,
        });
    }
    out
}

/// Normalises the kernel's bonding mode text to the names ifupdown uses.
pub fn normalise_bond_mode(kernel: &str) -> String {
    let k = kernel.to_ascii_lowercase();
    if k.contains("802.3ad") {
        "802.3ad".into()
    } else if k.contains("active-backup") {
        "active-backup".into()
    } else if k.contains("adaptive load balancing") {
        "balance-alb".into()
    } else if k.contains("transmit load balancing") {
        "balance-tlb".into()
    } else if k.contains("xor") {
        "balance-xor".into()
    } else if k.contains("round-robin") {
        "balance-rr".into()
    } else if k.contains("broadcast") {
        "broadcast".into()
    } else {
        kernel.trim().to_string()
    }
}

/// Parses `/proc/net/bonding/<name>`.
pub fn parse_bonding(name: &str, text: &str) -> Bond {
    let mut b = Bond {
        name: name.to_string(),
        ..Bond::default()
    };
    let mut in_slave = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "Bonding Mode" => b.mode = normalise_bond_mode(v),
            "Slave Interface" => {
                b.slaves.push(v.to_string());
                in_slave = true;
            }
            "MII Status" if !in_slave => b.mii_status = v.to_string(),
            "MII Polling Interval (ms)" => b.miimon = v.parse().ok(),
            "LACP rate" => b.lacp_rate = Some(v.to_string()),
            "Transmit Hash Policy" => {
                b.xmit_hash_policy = v.split_whitespace().next().map(str::to_string)
            }
            _ => {}
        }
    }
    b
}

/// Parses `/proc/net/vlan/config`.
pub fn parse_vlan_config(text: &str) -> Vec<Vlan> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            if cols.len() != 3 {
                return None;
            }
            Some(Vlan {
                name: cols[0].to_string(),
                id: cols[1].parse().ok()?,
                parent: cols[2].to_string(),
            })
        })
        .collect()
}

/// Parses `zpool status -P` (one or more pools).
pub fn parse_zpool_status(text: &str) -> Vec<Pool> {
    let mut pools = Vec::new();
    let mut cur: Option<Pool> = None;
    let mut in_config = false;
    let mut pool_indent = 0usize;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("pool:") {
            if let Some(p) = cur.take() {
                pools.push(p);
            }
            cur = Some(Pool {
                name: name.trim().to_string(),
                ..Pool::default()
            });
            in_config = false;
            continue;
        }
        let Some(p) = cur.as_mut() else { continue };
        if let Some(h) = trimmed.strip_prefix("state:") {
            p.health = h.trim().to_string();
            continue;
        }
        if trimmed.starts_with("config:") {
            in_config = true;
            continue;
        }
        if trimmed.starts_with("errors:") {
            in_config = false;
            continue;
        }
        if !in_config || trimmed.is_empty() || trimmed.starts_with("NAME") {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let cols: Vec<&str> = trimmed.split_whitespace().collect();
        let (name, state) = (cols[0], cols.get(1).copied().unwrap_or_default());
        if name == p.name {
            pool_indent = indent;
            continue;
        }
        if matches!(name, "logs" | "cache" | "spares" | "special" | "dedup") {
            // Auxiliary devices are not data vdevs.
            in_config = false;
            continue;
        }
        if indent == pool_indent + 2 {
            let kind = if name.starts_with("mirror") {
                "mirror"
            } else if name.starts_with("raidz3") {
                "raidz3"
            } else if name.starts_with("raidz2") {
                "raidz2"
            } else if name.starts_with("raidz") {
                "raidz1"
            } else {
                "disk"
            };
            let disks = if kind == "disk" {
                vec![name.to_string()]
            } else {
                Vec::new()
            };
            p.vdevs.push(Vdev {
                kind: kind.to_string(),
                state: state.to_string(),
                disks,
            });
        } else if indent > pool_indent + 2
            && let Some(v) = p.vdevs.last_mut()
        {
            v.disks.push(name.to_string());
        }
    }
    if let Some(p) = cur.take() {
        pools.push(p);
    }
    pools
}

/// Reads IPv4 addresses from `ip -j addr` output.
pub fn parse_ip_addr_json(text: &str) -> Vec<Address> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let iface = link["ifname"].as_str().unwrap_or_default();
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if a["family"] == "inet"
                && let (Some(ip), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64())
            {
                out.push(Address {
                    iface: iface.to_string(),
                    cidr: format!("{ip}/{len}"),
                });
            }
        }
    }
    out
}

/// Reads an OpenSSH public key line; computes its `SHA256:` fingerprint.
pub fn parse_ssh_public_key(line: &str) -> Option<SshKey> {
    let mut w = line.split_whitespace();
    let (t, b64) = (w.next()?, w.next()?);
    let blob = base64_decode(b64)?;
    let digest = Sha256::digest(&blob);
    Some(SshKey {
        key_type: t.to_string(),
        public_key: format!("{t} {b64}"),
        fingerprint: format!("SHA256:{}", base64_encode_nopad(&digest)),
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|b| *b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn base64_encode_nopad(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MDSTAT: &str = "Personalities : [raid1] [linear]\nmd0 : active raid1 vdb1[1] vda1[0]\n      4190208 blocks super 1.2 [2/2] [UU]\n      \nmd1 : active raid1 vdb2[1](F) vda2[0]\n      1046528 blocks super 1.2 [2/1] [U_]\n\nunused devices: <none>\n";

    #[test]
    fn mdstat_levels_members_and_health() {
        let a = parse_mdstat(MDSTAT);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[0],
            MdArray {
                name: "md0".into(),
                level: "raid1".into(),
                state: "active".into(),
                members: vec!["vdb1".into(), "vda1".into()],
                active_members: 2,
                expected_members: 2
            }
        );
        assert!(a[0].healthy());
        assert!(!a[1].healthy(), "degraded array reported healthy");
    }

    #[test]
    fn bonding_file() {
        let t = "Ethernet Channel Bonding Driver: v6.1.0\n\nBonding Mode: IEEE 802.3ad Dynamic link aggregation\nTransmit Hash Policy: layer3+4 (1)\nMII Status: up\nMII Polling Interval (ms): 100\nUp Delay (ms): 0\n\n802.3ad info\nLACP active: on\nLACP rate: fast\n\nSlave Interface: eth0\nMII Status: up\n\nSlave Interface: eth1\nMII Status: down\n";
        let b = parse_bonding("bond0", t);
        assert_eq!(b.mode, "802.3ad");
        assert_eq!(b.slaves, vec!["eth0", "eth1"]);
        assert_eq!(
            (
                b.mii_status.as_str(),
                b.miimon,
                b.lacp_rate.as_deref(),
                b.xmit_hash_policy.as_deref()
            ),
            ("up", Some(100), Some("fast"), Some("layer3+4"))
        );
        assert_eq!(
            parse_bonding("b", "Bonding Mode: fault-tolerance (active-backup)\n").mode,
            "active-backup"
        );
    }

    #[test]
    fn vlan_config() {
        let t = "VLAN Dev name\t | VLAN ID\nName-Type: VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD\nbond0.20       | 20  | bond0\nbond0.30       | 30  | bond0\n";
        assert_eq!(
            parse_vlan_config(t),
            vec![
                Vlan {
                    name: "bond0.20".into(),
                    id: 20,
                    parent: "bond0".into()
                },
                Vlan {
                    name: "bond0.30".into(),
                    id: 30,
                    parent: "bond0".into()
                }
            ]
        );
    }

    #[test]
    fn zpool_status_layout() {
        let t = "  pool: tank\n state: ONLINE\nconfig:\n\n\tNAME                              STATE     READ WRITE CKSUM\n\ttank                              ONLINE       0     0     0\n\t  mirror-0                        ONLINE       0     0     0\n\t    /dev/disk/by-id/virtio-rsdisk2  ONLINE       0     0     0\n\t    /dev/disk/by-id/virtio-rsdisk3  ONLINE       0     0     0\n\t  mirror-1                        ONLINE       0     0     0\n\t    /dev/disk/by-id/virtio-rsdisk4  ONLINE       0     0     0\n\t    /dev/disk/by-id/virtio-rsdisk5  ONLINE       0     0     0\n\nerrors: No known data errors\n\n  pool: solo\n state: ONLINE\nconfig:\n\n\tNAME        STATE     READ WRITE CKSUM\n\tsolo        ONLINE       0     0     0\n\t  /dev/vdg  ONLINE       0     0     0\n\tcache\n\t  /dev/vdh  ONLINE       0     0     0\n\nerrors: No known data errors\n";
        let p = parse_zpool_status(t);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].health, "ONLINE");
        assert_eq!(
            p[0].vdevs
                .iter()
                .map(|v| (v.kind.as_str(), v.disks.len()))
                .collect::<Vec<_>>(),
            vec![("mirror", 2), ("mirror", 2)]
        );
        assert_eq!(p[1].vdevs.len(), 1, "cache devices are not data vdevs");
        assert_eq!(p[1].vdevs[0].kind, "disk");
    }

    #[test]
    fn ip_json_addresses() {
        let t = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},{"ifname":"br-storage","addr_info":[{"family":"inet6","local":"fe80::1","prefixlen":64},{"family":"inet","local":"203.0.113.11","prefixlen":24}]}]"#;
        let a = parse_ip_addr_json(t);
        assert_eq!(
            a[1],
            Address {
                iface: "br-storage".into(),
                cidr: "203.0.113.11/24".into()
            }
        );
        assert!(parse_ip_addr_json("not json").is_empty());
    }

    #[test]
    fn ssh_fingerprint_matches_ssh_keygen() {
        // `ssh-keygen -lf` of this key printed SHA256:jPTAk00uIsPq3d7xcEtY4Wl3fBpSZtVasHjlhe38mxA.
        let k = parse_ssh_public_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFitAEHnF++wge+345SM770dCb1Xc8KIISECdC1B3eh8 test",
        )
        .unwrap();
        assert_eq!(k.key_type, "ssh-ed25519");
        assert_eq!(
            k.fingerprint,
            "SHA256:jPTAk00uIsPq3d7xcEtY4Wl3fBpSZtVasHjlhe38mxA"
        );
        assert!(parse_ssh_public_key("ssh-ed25519 !!!").is_none());
        assert_eq!(base64_encode_nopad(b"ab"), "YWI");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
    }
}
