//! The node plan: what an installed node is expected to look like, computed from its
//! resolved profile and its inventory values (hostname, MAC, address, vars).
//!
//! Owns [`NodePlan`], the contract between rendering (the scripts are written from it),
//! the node (it is served as install file `plan.json` and installed as
//! `/etc/rackseed/plan.json`) and enrollment (which compares the agent's facts with
//! it). Pure: no I/O. The JSON form is stable: fields are only added, and
//! [`PLAN_VERSION`] changes when a field changes meaning.

use crate::node::Node;
use crate::profiles::Resolved;
use crate::profiles::model::{
    AddressMethod, BondMode, DiskSelection, LacpRate, RaidLevel, RootFilesystem, VdevKind,
    XmitHashPolicy,
};
use crate::profiles::model::{DEFAULT_MTU, DEFAULT_ROOT_MIN};
use crate::profiles::vars::{self, CheckedVars, VarsError};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The version of the plan format.
pub const PLAN_VERSION: u32 = 1;

/// The expected state of an installed node.
///
/// Every list is in profile order. Sizes are bytes. Addresses are `a.b.c.d/nn`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodePlan {
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// The short host name.
    pub hostname: String,
    pub domain: String,
    pub fqdn: String,
    /// The provisioning MAC (the node's inventory key).
    pub mac: String,
    pub profile: String,
    /// How the node boots; decides the partition layout.
    pub firmware: Firmware,
    /// The redundancy group: the node's own, else the profile's.
    pub group: Option<String>,
    pub root: RootPlan,
    /// ZFS pools, made on first boot.
    pub zfs: Vec<PoolPlan>,
    /// Network set-up; `None` keeps the installer's DHCP configuration.
    pub network: Option<NetworkPlan>,
    /// Where peers replicate to: an interface of `network` and its address.
    pub replication: Option<ReplicationPlan>,
}

/// Boot firmware.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    #[default]
    Bios,
    Uefi,
}

impl Firmware {
    /// From the architecture DHCP recorded (`bios`, `efi-x64`, …); BIOS when unknown.
    pub fn from_arch(arch: Option<&str>) -> Firmware {
        match arch {
            Some(a) if a.starts_with("efi") => Firmware::Uefi,
            _ => Firmware::Bios,
        }
    }

    /// `bios` or `uefi`, as in the plan's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

impl std::str::FromStr for Firmware {
    type Err = String;
    fn from_str(s: &str) -> Result<Firmware, String> {
        match s {
            "bios" => Ok(Firmware::Bios),
            "uefi" => Ok(Firmware::Uefi),
            _ => Err(format!("`{s}` is not a firmware (bios, uefi)")),
        }
    }
}

/// A node for previews and checks: provisioning, the given firmware and vars.
pub fn sample_node(profile: &str, firmware: Firmware, vars: serde_json::Value) -> Node {
    Node {
        id: 1,
        mac: crate::mac::MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        hostname: Some("node1".into()),
        profile: Some(profile.into()),
        ip: None,
        state: crate::node::NodeState::Provisioning,
        state_reason: None,
        arch: Some(
            match firmware {
                Firmware::Bios => "bios",
                Firmware::Uefi => "efi-x64",
            }
            .into(),
        ),
        vendor_class: None,
        image: None,
        group: None,
        failure_domain: None,
        created_at: 0,
        updated_at: 0,
        last_seen_at: None,
        vars,
    }
}

/// The root file system.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RootPlan {
    pub raid: RaidLevel,
    /// Member disks of the root array (1 for `none`).
    pub disks: u32,
    pub filesystem: RootFilesystem,
    /// The md device root lives on (`/dev/md0`), `None` without RAID.
    pub md_device: Option<String>,
    /// Swap size, on its own md array (`/dev/md1`) when RAID is used.
    pub swap_bytes: Option<u64>,
    /// Smallest root partition.
    pub min_size_bytes: u64,
    /// How the installer picks the disks.
    pub selection: DiskRule,
}

/// Disks by explicit path or by rule (see `profiles::model::DiskSelection`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct DiskRule {
    /// Explicit devices; when set, the other fields are unused.
    pub devices: Vec<String>,
    /// How many disks are picked.
    pub count: u32,
    pub min_size_bytes: Option<u64>,
    pub max_size_bytes: Option<u64>,
    /// Glob over the disk model.
    pub model: Option<String>,
    /// Glob over the disk's `/dev/disk/by-id` names.
    pub by_id: Option<String>,
}

impl DiskRule {
    fn new(sel: &DiskSelection, count: u32, node_devices: &[String]) -> DiskRule {
        if !node_devices.is_empty() {
            return DiskRule {
                devices: node_devices.to_vec(),
                count: node_devices.len() as u32,
                ..DiskRule::default()
            };
        }
        DiskRule {
            devices: sel.devices.clone(),
            count: if sel.devices.is_empty() {
                count
            } else {
                sel.devices.len() as u32
            },
            min_size_bytes: sel.min_size.map(|s| s.0),
            max_size_bytes: sel.max_size.map(|s| s.0),
            model: sel.model.clone(),
            by_id: sel.by_id.clone(),
        }
    }

    /// `min_size_bytes` in whole MiB (0 when unset).
    pub fn min_mib(&self) -> u64 {
        self.min_size_bytes.map(|b| b >> 20).unwrap_or(0)
    }

    /// `max_size_bytes` in whole MiB (0 when unset, meaning no limit).
    pub fn max_mib(&self) -> u64 {
        self.max_size_bytes
            .map(|b| b.div_ceil(1 << 20))
            .unwrap_or(0)
    }
}

/// One ZFS pool.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PoolPlan {
    pub name: String,
    pub ashift: u8,
    /// Disks holding data may be overwritten.
    pub wipe: bool,
    pub vdevs: Vec<VdevPlan>,
    /// Total disks of all vdevs.
    pub disks: u32,
    pub selection: DiskRule,
    /// Pool properties (`zpool get`).
    pub properties: BTreeMap<String, String>,
    /// Properties of the pool's root dataset.
    pub filesystem_properties: BTreeMap<String, String>,
    pub datasets: Vec<DatasetPlan>,
}

/// One top-level vdev.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VdevPlan {
    pub kind: VdevKind,
    pub disks: u32,
}

/// One dataset, by full name (`tank/data`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatasetPlan {
    pub name: String,
    pub properties: BTreeMap<String, String>,
}

/// The network set-up (Debian ifupdown).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct NetworkPlan {
    /// Physical NICs configured on their own.
    pub interfaces: Vec<InterfacePlan>,
    pub bonds: Vec<BondPlan>,
    pub vlans: Vec<VlanPlan>,
    pub bridges: Vec<BridgePlan>,
    /// Every static address by interface, plus the provisioning address when the
    /// inventory knows it.
    pub addresses: BTreeMap<String, String>,
    /// Interfaces that take their address by DHCP (including `provisioning`).
    pub dhcp: Vec<String>,
    pub dns: DnsPlan,
}

/// A physical NIC configured on its own.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InterfacePlan {
    pub name: String,
    pub mtu: u32,
    pub ipv4: Option<AddressPlan>,
}

/// A bond.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BondPlan {
    pub name: String,
    pub mode: BondMode,
    /// 802.3ad only (default `slow`).
    pub lacp_rate: Option<LacpRate>,
    /// 802.3ad only (default `layer2`).
    pub xmit_hash_policy: Option<XmitHashPolicy>,
    pub miimon: u32,
    pub primary: Option<String>,
    pub members: MemberPlan,
    pub mtu: u32,
    /// The MAC the bond takes (the provisioning MAC, so DHCP reservations hold).
    pub hwaddress: Option<String>,
    pub ipv4: Option<AddressPlan>,
}

/// How a bond's members are chosen on the node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberPlan {
    /// Expected number of members.
    pub count: u32,
    /// Kernel names or globs (when pinned by name).
    pub names: Vec<String>,
    /// Permanent MACs (when pinned by MAC).
    pub macs: Vec<String>,
}

/// A VLAN interface `<parent>.<id>`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VlanPlan {
    pub name: String,
    pub id: u16,
    pub parent: String,
    pub mtu: u32,
    pub ipv4: Option<AddressPlan>,
}

/// A bridge.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BridgePlan {
    pub name: String,
    pub ports: Vec<String>,
    pub stp: bool,
    pub mtu: u32,
    pub ipv4: Option<AddressPlan>,
}

/// The IPv4 set-up of one interface.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AddressPlan {
    pub method: AddressMethod,
    /// The static address (or the known provisioning address), `a.b.c.d/nn`.
    pub address: Option<String>,
    pub gateway: Option<Ipv4Addr>,
    pub routes: Vec<RoutePlan>,
}

/// A static route.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoutePlan {
    pub to: String,
    pub via: Ipv4Addr,
}

/// Resolver settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct DnsPlan {
    pub servers: Vec<Ipv4Addr>,
    pub search: Vec<String>,
}

/// The replication endpoint of a group member.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReplicationPlan {
    /// The interface peers replicate to.
    pub interface: String,
    /// Its address, `a.b.c.d/nn`, when static or known.
    pub address: Option<String>,
}

/// Why a node has no plan: its vars do not fit its profile.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("node {node} does not fit profile {profile}")]
    Vars {
        node: String,
        profile: String,
        #[source]
        source: VarsError,
    },
}

/// What `plan_for` needs besides the profile and node.
#[derive(Clone, Debug, Default)]
pub struct PlanInputs {
    /// The node's DNS domain.
    pub domain: String,
    /// Firmware to plan for.
    pub firmware: Firmware,
    /// The provisioning subnet holding the node's inventory address, if any.
    pub provisioning_subnet: Option<Ipv4Net>,
}

/// The plan of `node` installed with `profile`.
pub fn plan_for(
    profile: &Resolved,
    node: &Node,
    inputs: &PlanInputs,
) -> Result<NodePlan, PlanError> {
    let p = &profile.profile;
    let checked = vars::check(&profile.name, p, &node.vars).map_err(|source| PlanError::Vars {
        node: node.display_name(),
        profile: profile.name.clone(),
        source,
    })?;
    let hostname = node.hostname.clone().unwrap_or_else(|| node.display_name());
    let (short, domain) = match hostname.split_once('.') {
        Some((h, d)) => (h.to_string(), d.to_string()),
        None => (hostname.clone(), inputs.domain.clone()),
    };
    let fqdn = if domain.is_empty() {
        short.clone()
    } else {
        format!("{short}.{domain}")
    };
    let r = &p.storage.root;
    let root_count = if r.disks.devices.is_empty() {
        r.disks.count.unwrap_or(r.raid.min_disks())
    } else {
        r.disks.devices.len() as u32
    };
    let selection = DiskRule::new(&r.disks, root_count, &checked.vars.root_disks);
    let root = RootPlan {
        raid: r.raid,
        disks: selection.count,
        filesystem: r.filesystem,
        md_device: r.raid.md_level().map(|_| "/dev/md0".to_string()),
        swap_bytes: r.swap.map(|s| s.0),
        min_size_bytes: r.min_size.unwrap_or(DEFAULT_ROOT_MIN).0,
        selection,
    };
    let zfs = p
        .storage
        .zfs
        .pools
        .iter()
        .map(|pool| {
            let total: u32 = pool.vdevs.iter().map(|v| v.disks).sum();
            let node_disks = checked
                .vars
                .zfs_disks
                .get(&pool.name)
                .cloned()
                .unwrap_or_default();
            let props = |m: &BTreeMap<String, crate::profiles::model::PropValue>| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().to_string()))
                    .collect::<BTreeMap<_, _>>()
            };
            PoolPlan {
                name: pool.name.clone(),
                ashift: pool.ashift.unwrap_or(12),
                wipe: pool.wipe,
                vdevs: pool
                    .vdevs
                    .iter()
                    .map(|v| VdevPlan {
                        kind: v.kind,
                        disks: v.disks,
                    })
                    .collect(),
                disks: total,
                selection: DiskRule::new(&pool.disks, total, &node_disks),
                properties: props(&pool.properties),
                filesystem_properties: props(&pool.filesystem_properties),
                datasets: pool
                    .datasets
                    .iter()
                    .map(|d| DatasetPlan {
                        name: format!("{}/{}", pool.name, d.name),
                        properties: props(&d.properties),
                    })
                    .collect(),
            }
        })
        .collect();
    let provisioning_address = match (node.ip, inputs.provisioning_subnet) {
        (Some(ip), Some(net)) => Ipv4Net::new(ip, net.prefix_len()).ok(),
        (Some(ip), None) => Ipv4Net::new(ip, 32).ok(),
        _ => None,
    };
    let network = p
        .network
        .as_ref()
        .map(|n| network_plan(n, &checked, node, provisioning_address));
    let replication = p.replication.as_ref().map(|r| ReplicationPlan {
        interface: r.interface.clone(),
        address: network
            .as_ref()
            .and_then(|n| n.addresses.get(&r.interface).cloned()),
    });
    Ok(NodePlan {
        version: PLAN_VERSION,
        hostname: short,
        domain,
        fqdn,
        mac: node.mac.to_string(),
        profile: profile.name.clone(),
        firmware: inputs.firmware,
        group: node.group.clone().or_else(|| p.group.clone()),
        root,
        zfs,
        network,
        replication,
    })
}

fn network_plan(
    n: &crate::profiles::model::Network,
    checked: &CheckedVars,
    node: &Node,
    provisioning: Option<Ipv4Net>,
) -> NetworkPlan {
    let mut plan = NetworkPlan::default();
    let mut address = |name: &str, ip: Option<&crate::profiles::model::Ipv4Config>| {
        let ip = ip?;
        let addr = match ip.method {
            AddressMethod::Node => checked.addresses.get(name).copied(),
            AddressMethod::Provisioning => provisioning,
            AddressMethod::Dhcp => None,
        };
        if let Some(a) = addr {
            plan.addresses.insert(name.to_string(), a.to_string());
        }
        if ip.method != AddressMethod::Node {
            plan.dhcp.push(name.to_string());
        }
        Some(AddressPlan {
            method: ip.method,
            address: addr.map(|a| a.to_string()),
            gateway: ip.gateway,
            routes: ip
                .routes
                .iter()
                .map(|r| RoutePlan {
                    to: r.to.to_string(),
                    via: r.via,
                })
                .collect(),
        })
    };
    let interfaces: Vec<InterfacePlan> = n
        .interfaces
        .iter()
        .map(|i| InterfacePlan {
            name: i.name.clone(),
            mtu: i.mtu.unwrap_or(DEFAULT_MTU),
            ipv4: address(&i.name, i.ipv4.as_ref()),
        })
        .collect();
    let bonds: Vec<BondPlan> = n
        .bonds
        .iter()
        .map(|b| {
            let pinned = checked.vars.bond_members.get(&b.name);
            let members = match pinned {
                Some(macs) => MemberPlan {
                    count: macs.len() as u32,
                    names: Vec::new(),
                    macs: macs.clone(),
                },
                None => MemberPlan {
                    count: b
                        .members
                        .count
                        .unwrap_or(b.members.names.len().max(b.members.macs.len()) as u32),
                    names: b.members.names.clone(),
                    macs: b
                        .members
                        .macs
                        .iter()
                        .map(|m| m.to_ascii_lowercase())
                        .collect(),
                },
            };
            let provisioning_here = b
                .ipv4
                .as_ref()
                .is_some_and(|i| i.method == AddressMethod::Provisioning);
            BondPlan {
                name: b.name.clone(),
                mode: b.mode,
                lacp_rate: match b.mode {
                    BondMode::Lacp => Some(b.lacp_rate.unwrap_or(LacpRate::Slow)),
                    _ => None,
                },
                xmit_hash_policy: match b.mode {
                    BondMode::Lacp => Some(b.xmit_hash_policy.unwrap_or(XmitHashPolicy::Layer2)),
                    _ => None,
                },
                miimon: b.miimon.unwrap_or(100),
                primary: b.primary.clone(),
                members,
                mtu: b.mtu.unwrap_or(DEFAULT_MTU),
                hwaddress: provisioning_here.then(|| node.mac.to_string()),
                ipv4: address(&b.name, b.ipv4.as_ref()),
            }
        })
        .collect();
    let vlans: Vec<VlanPlan> = n
        .vlans
        .iter()
        .map(|v| VlanPlan {
            name: v.ifname(),
            id: v.id,
            parent: v.on.clone(),
            mtu: v.mtu.unwrap_or(DEFAULT_MTU),
            ipv4: address(&v.ifname(), v.ipv4.as_ref()),
        })
        .collect();
    let bridges: Vec<BridgePlan> = n
        .bridges
        .iter()
        .map(|b| BridgePlan {
            name: b.name.clone(),
            ports: b.ports.clone(),
            stp: b.stp,
            mtu: b.mtu.unwrap_or(DEFAULT_MTU),
            ipv4: address(&b.name, b.ipv4.as_ref()),
        })
        .collect();
    plan.interfaces = interfaces;
    plan.bonds = bonds;
    plan.vlans = vlans;
    plan.bridges = bridges;
    if let Some(d) = &n.dns {
        plan.dns = DnsPlan {
            servers: d.servers.clone(),
            search: d.search.clone(),
        };
    }
    plan
}
