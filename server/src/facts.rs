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

/// Checks facts as they arrive from the network, before anything is stored or rendered
/// from them: no string carries a control character (a line break would start a new
/// line in `authorized_keys`, `known_hosts` or a script) or is longer than 4 KiB; the
/// hostname is a DNS name; addresses are CIDRs; names of interfaces, pools and datasets
/// use their tools' character sets; every SSH key (and `replication_key`) is a
/// well-formed public key. Returns every problem, each naming its field.
pub fn check_untrusted(facts: &Facts, replication_key: Option<&str>) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    fn walk(path: &str, v: &serde_json::Value, errs: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => {
                if s.chars().any(char::is_control) {
                    errs.push(format!("{path}: contains a control character"));
                } else if s.len() > 4096 {
                    errs.push(format!("{path}: longer than 4096 bytes"));
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), x, errs);
                }
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    if k.chars().any(char::is_control) || k.len() > 256 {
                        errs.push(format!(
                            "{path}: a key contains a control character or is too long"
                        ));
                    }
                    walk(&format!("{path}.{}", k.escape_debug()), x, errs);
                }
            }
            _ => {}
        }
    }
    match serde_json::to_value(facts) {
        Ok(v) => walk("facts", &v, &mut errs),
        Err(e) => errs.push(format!("facts: {e}")),
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    if !is_dns_name(&facts.hostname) {
        errs.push(format!(
            "facts.hostname: `{}` is not a DNS name (letters, digits, `-`, dots between labels)",
            facts.hostname
        ));
    }
    let iface_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 15
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    };
    let dataset_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 255
            && !n.starts_with('-')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b))
    };
    for (i, a) in facts.addresses.iter().enumerate() {
        if a.cidr.parse::<ipnet::IpNet>().is_err() {
            errs.push(format!(
                "facts.addresses[{i}].cidr: `{}` is not an address/prefix",
                a.cidr
            ));
        }
        if !iface_ok(&a.iface) {
            errs.push(format!(
                "facts.addresses[{i}].iface: `{}` is not an interface name",
                a.iface
            ));
        }
    }
    for (i, n) in facts.interfaces.iter().enumerate() {
        if !iface_ok(&n.name) {
            errs.push(format!(
                "facts.interfaces[{i}].name: `{}` is not an interface name",
                n.name
            ));
        }
    }
    for (i, p) in facts.pools.iter().enumerate() {
        if !dataset_ok(&p.name) || p.name.contains('/') {
            errs.push(format!(
                "facts.pools[{i}].name: `{}` is not a pool name",
                p.name
            ));
        }
        for d in p.datasets.keys() {
            if !dataset_ok(d) {
                errs.push(format!(
                    "facts.pools[{i}].datasets: `{d}` is not a dataset name"
                ));
            }
        }
    }
    for (i, k) in facts.ssh_host_keys.iter().enumerate() {
        match crate::sshkey::SshPublicKey::parse(&k.public_key) {
            Ok(key) if key.key_type() == k.key_type => {}
            Ok(key) => errs.push(format!(
                "facts.ssh_host_keys[{i}]: key_type `{}` but the key is {}",
                k.key_type,
                key.key_type()
            )),
            Err(e) => errs.push(format!("facts.ssh_host_keys[{i}].public_key {e}")),
        }
    }
    if let Some(k) = replication_key
        && let Err(e) = crate::sshkey::SshPublicKey::parse(k)
    {
        errs.push(format!("replication_key {e}"));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// A DNS name: labels of letters, digits and `-` (not at either end), 1–63 bytes each,
/// 253 in all.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sound_facts() -> Facts {
        Facts {
            hostname: "node1.prov.example".into(),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            addresses: vec![Address {
                iface: "br-storage".into(),
                cidr: "203.0.113.11/24".into(),
            }],
            ssh_host_keys: vec![SshKey {
                key_type: "ssh-ed25519".into(),
                public_key: crate::sshkey::tests::ed25519(7),
                fingerprint: "SHA256:x".into(),
            }],
            pools: vec![Pool {
                name: "tank".into(),
                datasets: [("tank/data".to_string(), BTreeMap::new())].into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Hostile values in every field that reaches a peer's files are refused, each
    /// naming its field.
    #[test]
    fn untrusted_facts_with_shell_newlines_or_bad_keys_are_refused() {
        let key = crate::sshkey::tests::ed25519(8);
        assert_eq!(check_untrusted(&sound_facts(), Some(&key)), Ok(()));
        type Mutation = fn(&mut Facts);
        let cases: &[(&str, Mutation, &str)] = &[
            (
                "newline in hostname",
                |f| f.hostname = "n1\nevil".into(),
                "facts.hostname: contains a control character",
            ),
            (
                "shell in hostname",
                |f| f.hostname = "n1$(reboot)".into(),
                "is not a DNS name",
            ),
            (
                "quote in address",
                |f| f.addresses[0].cidr = "203.0.113.11\" evil".into(),
                "is not an address/prefix",
            ),
            (
                "command in address",
                |f| f.addresses[0].cidr = "`id`".into(),
                "facts.addresses[0].cidr",
            ),
            (
                "NUL in machine id",
                |f| f.machine_id = "a\0b".into(),
                "facts.machine_id: contains a control character",
            ),
            (
                "long value",
                |f| f.machine_id = "a".repeat(5000),
                "longer than 4096",
            ),
            (
                "key with a second line",
                |f| {
                    f.ssh_host_keys[0]
                        .public_key
                        .push_str("\nssh-ed25519 AAAA x")
                },
                "control character",
            ),
            (
                "key of another type",
                |f| f.ssh_host_keys[0].key_type = "ssh-rsa".into(),
                "key_type `ssh-rsa` but the key is ssh-ed25519",
            ),
            (
                "not a key",
                |f| f.ssh_host_keys[0].public_key = "ssh-ed25519 $(id)".into(),
                "not base64",
            ),
            (
                "dataset with a space",
                |f| {
                    f.pools[0]
                        .datasets
                        .insert("tank/a b".into(), BTreeMap::new());
                },
                "is not a dataset name",
            ),
            (
                "pool with a quote",
                |f| f.pools[0].name = "tank'x".into(),
                "is not a pool name",
            ),
            (
                "interface with a slash",
                |f| f.addresses[0].iface = "../eth0".into(),
                "is not an interface name",
            ),
        ];
        for (name, mutate, want) in cases {
            let mut f = sound_facts();
            mutate(&mut f);
            let errs = check_untrusted(&f, Some(&key)).expect_err(name);
            assert!(errs.iter().any(|e| e.contains(want)), "{name}: {errs:?}");
        }
        let errs = check_untrusted(&sound_facts(), Some("ssh-ed25519 AAAA\nx")).unwrap_err();
        assert!(errs[0].starts_with("replication_key "), "{errs:?}");
    }

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
