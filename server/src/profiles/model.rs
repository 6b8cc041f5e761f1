//! The profile file format: serde structs that mirror the YAML one to one, with
//! `deny_unknown_fields` everywhere and typed leaves (enums, sizes, addresses).
//!
//! Owns the shape of a profile and its JSON Schema (derived from these types). Does not
//! check cross-references (a VLAN on a bond that does not exist, a disk used twice):
//! that is `validate`. A `Profile` is only handed out by the catalog after validation.

use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// The default MTU of an interface that sets none.
pub const DEFAULT_MTU: u32 = 1500;
/// The default smallest root partition.
pub const DEFAULT_ROOT_MIN: Size = Size(8 << 30);

/// A class of machine: how its disks, network and accounts are set up.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Another profile (file name without `.yaml`) whose values this one starts from.
    /// Maps merge key by key; lists replace, except `packages` and
    /// `ssh_authorized_keys`, which add up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// What this class of machine is, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The redundancy group nodes of this profile join (a node's own group wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Extra Debian packages to install. Packages the layout needs (mdadm, xfsprogs,
    /// ifenslave, vlan, bridge-utils, zfs-dkms, …) are added by rackseed.
    #[serde(default)]
    pub packages: Vec<String>,
    /// A crypt(3) hash (`$6$…` or `$y$…`), never a plain password; `!` locks root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_password_hash: Option<String>,
    /// OpenSSH public keys for root, one line each.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// A tz database name such as `Etc/UTC` or `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// NTP servers (host names or addresses) for the installer and the installed system.
    #[serde(default)]
    pub ntp: Vec<String>,
    /// The Debian mirror and proxy, when they differ from rackseed's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSpec>,
    /// Kernel command-line arguments for the installed system (e.g. `net.ifnames=0`).
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// The MAC of the NIC the installer configures when it is not the NIC the machine
    /// PXE-boots from (for a profile of one machine); a node's `installer_nic` var
    /// wins. Without it the installer takes the boot NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer_nic: Option<String>,
    /// Root file system and ZFS pools.
    #[serde(default)]
    pub storage: Storage,
    /// Bonds, VLANs, bridges and addresses. Absent: the installer's DHCP set-up stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Where redundancy-group peers reach this node to replicate ZFS datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
}

/// A Debian mirror override.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorSpec {
    /// `http://host[:port]/debian`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An HTTP proxy for the installer and APT, `http://host:port/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

/// Disks: the root file system and the ZFS pools.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    #[serde(default)]
    pub root: RootStorage,
    #[serde(default)]
    pub zfs: Zfs,
}

/// The root file system: partitions made by the installer on every root disk.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RootStorage {
    /// `raid1` (2 or more disks), `raid10` (4 or more) or `none` (one disk).
    #[serde(default)]
    pub raid: RaidLevel,
    /// The root file system; only `xfs`.
    #[serde(default)]
    pub filesystem: RootFilesystem,
    /// Which disks hold the root file system. Default: as many as the RAID level needs,
    /// the first disks the installer lists.
    #[serde(default)]
    pub disks: DiskSelection,
    /// Swap size (`4G`), on the same RAID as root. Absent: no swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<Size>,
    /// Smallest acceptable root partition (default `8G`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Size>,
}

impl Default for RootStorage {
    fn default() -> RootStorage {
        RootStorage {
            raid: RaidLevel::Raid1,
            filesystem: RootFilesystem::Xfs,
            disks: DiskSelection::default(),
            swap: None,
            min_size: None,
        }
    }
}

/// The md RAID level of the root file system.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RaidLevel {
    #[default]
    Raid1,
    Raid10,
    None,
}

impl RaidLevel {
    /// The smallest number of member disks.
    pub fn min_disks(self) -> u32 {
        match self {
            RaidLevel::Raid1 => 2,
            RaidLevel::Raid10 => 4,
            RaidLevel::None => 1,
        }
    }

    /// The number `partman-auto-raid` uses, if any.
    pub fn md_level(self) -> Option<u32> {
        match self {
            RaidLevel::Raid1 => Some(1),
            RaidLevel::Raid10 => Some(10),
            RaidLevel::None => None,
        }
    }
}

impl fmt::Display for RaidLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RaidLevel::Raid1 => "raid1",
            RaidLevel::Raid10 => "raid10",
            RaidLevel::None => "none",
        })
    }
}

/// Root file systems rackseed installs.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RootFilesystem {
    #[default]
    Xfs,
}

impl fmt::Display for RootFilesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("xfs")
    }
}

/// Disks by explicit device, or by a rule the node evaluates at run time: the first
/// `count` disks (in kernel name order) that match every given condition.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSelection {
    /// Explicit devices, `/dev/disk/by-id/…` (stable across boots). Excludes the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// How many disks the rule picks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Smallest disk size, e.g. `100G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Size>,
    /// Largest disk size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Size>,
    /// A shell glob over the disk's model (`/sys/block/*/device/model`), e.g. `SAMSUNG*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A shell glob over the disk's names in `/dev/disk/by-id`, e.g. `nvme-*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_id: Option<String>,
}

impl DiskSelection {
    /// True when disks are chosen by a rule rather than listed.
    pub fn is_rule(&self) -> bool {
        self.devices.is_empty()
    }
}

/// ZFS: pools made on first boot from the data disks.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Zfs {
    #[serde(default)]
    pub pools: Vec<Pool>,
}

/// One ZFS pool.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// The pool name, e.g. `tank`.
    pub name: String,
    /// The top-level vdevs, in order; disks are assigned to them in selection order.
    pub vdevs: Vec<Vdev>,
    /// Which disks the pool is made of; `count` defaults to the disks the vdevs need.
    #[serde(default)]
    pub disks: DiskSelection,
    /// `ashift` of every vdev (default 12, 4 KiB sectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ashift: Option<u8>,
    /// Overwrite disks that hold a partition table, file system, md or ZFS label.
    /// Without it such disks are never touched.
    #[serde(default)]
    pub wipe: bool,
    /// Pool properties (`zpool create -o`), e.g. `autotrim: "on"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, PropValue>,
    /// Properties of the pool's root dataset (`zpool create -O`), inherited by every
    /// dataset: `compression`, `atime`, `mountpoint`, …
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filesystem_properties: BTreeMap<String, PropValue>,
    /// Datasets under the pool, created if absent.
    #[serde(default)]
    pub datasets: Vec<Dataset>,
}

/// A top-level vdev.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vdev {
    pub kind: VdevKind,
    /// Number of disks in this vdev.
    pub disks: u32,
}

/// Kinds of top-level vdev.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VdevKind {
    Mirror,
    Raidz1,
    Raidz2,
    Raidz3,
    /// Plain disks, no redundancy.
    Stripe,
}

impl VdevKind {
    /// The smallest number of disks a vdev of this kind takes.
    pub fn min_disks(self) -> u32 {
        match self {
            VdevKind::Mirror => 2,
            VdevKind::Raidz1 => 2,
            VdevKind::Raidz2 => 3,
            VdevKind::Raidz3 => 4,
            VdevKind::Stripe => 1,
        }
    }

    /// The keyword `zpool create` takes before the disks (none for a stripe).
    pub fn keyword(self) -> &'static str {
        match self {
            VdevKind::Mirror => "mirror",
            VdevKind::Raidz1 => "raidz1",
            VdevKind::Raidz2 => "raidz2",
            VdevKind::Raidz3 => "raidz3",
            VdevKind::Stripe => "",
        }
    }
}

impl fmt::Display for VdevKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VdevKind::Mirror => "mirror",
            VdevKind::Raidz1 => "raidz1",
            VdevKind::Raidz2 => "raidz2",
            VdevKind::Raidz3 => "raidz3",
            VdevKind::Stripe => "stripe",
        })
    }
}

/// A dataset under a pool.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// The name below the pool: `data` makes `tank/data`.
    pub name: String,
    /// `zfs create -o` properties, kept in line on every run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, PropValue>,
}

/// A ZFS property value: YAML strings, numbers and booleans are all accepted and kept
/// as the text `zfs` gets (`true` becomes `on`, `false` becomes `off`).
#[derive(Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(with = "PropValueSchema")]
pub struct PropValue(pub String);

/// The schema of [`PropValue`].
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum PropValueSchema {
    Text(String),
    Number(f64),
    Flag(bool),
}

impl PropValue {
    /// The value as `zfs set` takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for PropValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PropValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PropValue, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            B(bool),
            U(u64),
            I(i64),
            F(f64),
            S(String),
        }
        Ok(PropValue(
            match Any::deserialize(d)
                .map_err(|_| serde::de::Error::custom("expected a string, number or boolean"))?
            {
                Any::B(true) => "on".into(),
                Any::B(false) => "off".into(),
                Any::U(n) => n.to_string(),
                Any::I(n) => n.to_string(),
                Any::F(n) => n.to_string(),
                Any::S(s) => s,
            },
        ))
    }
}

/// A size in bytes, written `512M`, `8G`, `2T` (powers of 1024; `GiB`/`GB` also read as
/// `G`) or as a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[schemars(with = "SizeSchema")]
pub struct Size(pub u64);

/// The schema of [`Size`].
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum SizeSchema {
    Bytes(u64),
    Text(#[schemars(pattern(r"^[0-9]+ *([KMGTP](i?B)?)?$"))] String),
}

impl Size {
    /// Parses `8G`, `512M`, `1TiB`, `4096`.
    pub fn parse(s: &str) -> Option<Size> {
        let s = s.trim();
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = s[..digits].parse().ok()?;
        let unit = s[digits..].trim();
        let unit = unit
            .strip_suffix("iB")
            .or_else(|| unit.strip_suffix('B'))
            .unwrap_or(unit);
        let mult: u64 = match unit {
            "" => 1,
            "K" | "k" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            "T" => 1 << 40,
            "P" => 1 << 50,
            _ => return None,
        };
        n.checked_mul(mult).map(Size)
    }

    /// Whole mebibytes, rounded down (partman sizes are in MB).
    pub fn mib(self) -> u64 {
        self.0 >> 20
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 5] = [
            (1 << 50, "P"),
            (1 << 40, "T"),
            (1 << 30, "G"),
            (1 << 20, "M"),
            (1 << 10, "K"),
        ];
        for (m, u) in UNITS {
            if self.0 >= m && self.0 % m == 0 {
                return write!(f, "{}{u}", self.0 / m);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            N(u64),
            S(String),
        }
        let bad = |what: &str| {
            serde::de::Error::custom(format!(
                "`{what}` is not a size; write it like `512M`, `8G` or `2T`"
            ))
        };
        match Any::deserialize(d).map_err(|_| bad("?"))? {
            Any::N(n) => Ok(Size(n)),
            Any::S(s) => Size::parse(&s).ok_or_else(|| bad(&s)),
        }
    }
}

/// Network set-up of the installed system, written as Debian ifupdown config.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Physical NICs configured on their own (not bond members), by kernel name.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub bonds: Vec<Bond>,
    /// VLANs on bonds or NICs; each is named `<on>.<id>` (e.g. `bond0.10`).
    #[serde(default)]
    pub vlans: Vec<Vlan>,
    /// Bridges (guests attach to them), usually on VLANs.
    #[serde(default)]
    pub bridges: Vec<Bridge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// A physical NIC configured on its own.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The kernel name, e.g. `eth0` or `enp1s0f0`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Config>,
}

/// A bond of physical NICs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    /// The bond's name, e.g. `bond0`.
    pub name: String,
    pub mode: BondMode,
    /// The physical NICs it bonds, chosen on the node when the config is applied.
    pub members: Members,
    /// `slow` or `fast` (802.3ad only; default `slow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp_rate: Option<LacpRate>,
    /// How 802.3ad and balance-xor spread traffic (default `layer2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xmit_hash_policy: Option<XmitHashPolicy>,
    /// Link monitoring interval in ms (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miimon: Option<u32>,
    /// The preferred member of an active-backup bond (a kernel name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Config>,
}

/// Bonding modes rackseed configures.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum BondMode {
    /// LACP to a switch pair (MLAG).
    #[serde(rename = "802.3ad")]
    Lacp,
    /// One member active, the others standby; works with any two switches.
    #[serde(rename = "active-backup")]
    ActiveBackup,
    /// Adaptive load balancing; no switch support needed.
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl Profile {
    /// What the switches must allow for this profile's machines to PXE-boot: bond
    /// members boot and install one NIC at a time, before the OS brings LACP up.
    pub fn switch_notes(&self) -> Vec<String> {
        self.network
            .iter()
            .flat_map(|n| n.bonds.iter())
            .filter(|b| b.mode == BondMode::Lacp)
            .map(|b| {
                format!(
                    "{} (802.3ad): its members PXE-boot and run the installer before LACP is up, so the switch ports must forward without LACPDUs: enable LACP fallback on the port-channel (`lacp fallback individual` on Arista EOS, `no lacp suspend-individual` on Cisco NX-OS, `force-up` on Juniper); with LACP suspend-individual on, the node never gets a DHCP answer",
                    b.name
                )
            })
            .collect()
    }
}

impl fmt::Display for BondMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BondMode::Lacp => "802.3ad",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceAlb => "balance-alb",
        })
    }
}

/// The LACP rate of an 802.3ad bond.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LacpRate {
    Slow,
    Fast,
}

impl fmt::Display for LacpRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LacpRate::Slow => "slow",
            LacpRate::Fast => "fast",
        })
    }
}

/// The transmit hash policy of an 802.3ad bond.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum XmitHashPolicy {
    #[serde(rename = "layer2")]
    Layer2,
    #[serde(rename = "layer2+3")]
    Layer23,
    #[serde(rename = "layer3+4")]
    Layer34,
    #[serde(rename = "encap2+3")]
    Encap23,
    #[serde(rename = "encap3+4")]
    Encap34,
}

impl fmt::Display for XmitHashPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XmitHashPolicy::Layer2 => "layer2",
            XmitHashPolicy::Layer23 => "layer2+3",
            XmitHashPolicy::Layer34 => "layer3+4",
            XmitHashPolicy::Encap23 => "encap2+3",
            XmitHashPolicy::Encap34 => "encap3+4",
        })
    }
}

/// Which physical NICs a bond takes: by kernel name (shell globs allowed) or by MAC.
/// NICs are taken in name order; the first `count` that match are used.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Members {
    /// Kernel names or globs, e.g. `[eth0, eth1]` or `["enp1s0f*"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Permanent MAC addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    /// How many members; required with globs, else the number of names or MACs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// A VLAN interface.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vlan {
    /// The VLAN id, 1–4094.
    pub id: u16,
    /// The bond or NIC it is tagged on.
    pub on: String,
    /// Must be `<on>.<id>` when given (the name ifupdown creates VLANs by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Config>,
}

impl Vlan {
    /// The interface name: `<on>.<id>`.
    pub fn ifname(&self) -> String {
        format!("{}.{}", self.on, self.id)
    }
}

/// A Linux bridge.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    /// The bridge's name, e.g. `br-guest` (at most 15 characters).
    pub name: String,
    /// VLANs, bonds or NICs attached to it; empty for a host-only bridge.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Spanning tree (default off).
    #[serde(default)]
    pub stp: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Config>,
}

/// How an interface gets its IPv4 address.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ipv4Config {
    /// `dhcp`; `provisioning` (DHCP from the provisioning network, keeping the node's
    /// inventory address and MAC); `node` (a static address from the node's `vars`).
    pub method: AddressMethod,
    /// The network node addresses come from (required with `node`), e.g.
    /// `198.51.100.0/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub subnet: Option<Ipv4Net>,
    /// Default gateway (static addresses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub gateway: Option<Ipv4Addr>,
    /// Extra routes through this interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// Address methods.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressMethod {
    Dhcp,
    Provisioning,
    Node,
}

impl fmt::Display for AddressMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressMethod::Dhcp => "dhcp",
            AddressMethod::Provisioning => "provisioning",
            AddressMethod::Node => "node",
        })
    }
}

/// A static route.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[schemars(with = "String")]
    pub to: Ipv4Net,
    #[schemars(with = "String")]
    pub via: Ipv4Addr,
}

/// Resolver settings (`/etc/resolv.conf`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub servers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub search: Vec<String>,
}

/// Replication settings of a redundancy-group member.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// The interface (usually a storage bridge) whose address peers replicate to.
    pub interface: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(Size::parse("8G"), Some(Size(8 << 30)));
        assert_eq!(Size::parse("512M"), Some(Size(512 << 20)));
        assert_eq!(Size::parse("1TiB"), Some(Size(1 << 40)));
        assert_eq!(Size::parse("2 GB"), Some(Size(2 << 30)));
        assert_eq!(Size::parse("4096"), Some(Size(4096)));
        assert_eq!(Size::parse("G"), None);
        assert_eq!(Size::parse("8X"), None);
        assert_eq!(Size(8 << 30).to_string(), "8G");
        assert_eq!(Size(1536 << 20).to_string(), "1536M");
    }

    #[test]
    fn property_values_become_zfs_text() {
        let v: BTreeMap<String, PropValue> =
            serde_norway::from_str("a: on\nb: true\nc: 12\nd: lz4\n").unwrap();
        let got: Vec<&str> = v.values().map(PropValue::as_str).collect();
        assert_eq!(got, ["on", "on", "12", "lz4"]);
    }
}
