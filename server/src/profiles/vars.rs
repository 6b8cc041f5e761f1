//! Node-level values (`vars` of a node in the inventory) that fill in or override what
//! a profile leaves to each node: static addresses, root and pool disks, bond members.
//!
//! Owns the `vars` format and its check against a profile. Pure: no inventory access;
//! callers pass the other nodes' vars when address conflicts should be found.

use super::model::{AddressMethod, Profile};
use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The `vars` object of a node, as given to `rackseed node add --vars` or the API.
///
/// ```json
/// {"addresses": {"br-mgmt": "198.51.100.11", "br-storage": "203.0.113.11/24"},
///  "root_disks": ["/dev/disk/by-id/ata-A", "/dev/disk/by-id/ata-B"],
///  "zfs_disks": {"tank": ["/dev/disk/by-id/ata-C", "…"]},
///  "bond_members": {"bond0": ["52:54:00:12:34:56", "52:54:00:12:34:57"]}}
/// ```
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeVars {
    /// Static IPv4 addresses of interfaces whose profile says `method: node`, by
    /// interface name; `a.b.c.d` (prefix from the profile's subnet) or `a.b.c.d/nn`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, String>,
    /// Root disks of this node (replaces the profile's selection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_disks: Vec<String>,
    /// Disks of each ZFS pool of this node (replaces the profile's selection).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zfs_disks: BTreeMap<String, Vec<String>>,
    /// Permanent MACs of each bond's members on this node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bond_members: BTreeMap<String, Vec<String>>,
    /// The MAC of the NIC the installer configures, when it is not the NIC the node
    /// PXE-boots from (the installer's kernel command line names it as BOOTIF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer_nic: Option<String>,
}

/// A problem with a node's vars: `vars.<key>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vars{sep}{key}: {message}", sep = if key.is_empty() { "" } else { "." })]
pub struct VarsError {
    pub key: String,
    pub message: String,
}

fn verr(key: &str, message: impl Into<String>) -> VarsError {
    VarsError {
        key: key.into(),
        message: message.into(),
    }
}

/// Node vars checked against a profile, with every static address resolved to CIDR.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckedVars {
    pub vars: NodeVars,
    /// Interface name → its static address with prefix.
    pub addresses: BTreeMap<String, Ipv4Net>,
}

/// Reads `vars` (a JSON object or null) and checks it against `profile` (named
/// `profile_name` in messages): every `method: node` interface gets an address inside
/// its subnet, disk lists have the counts the layout needs, bond MACs are MACs.
pub fn check(
    profile_name: &str,
    profile: &Profile,
    vars: &serde_json::Value,
) -> Result<CheckedVars, VarsError> {
    let vars: NodeVars = if vars.is_null() {
        NodeVars::default()
    } else {
        if !vars.is_object() {
            return Err(verr("", "must be a JSON object"));
        }
        serde_path_to_error::deserialize(vars).map_err(|e| {
            let key = e.path().to_string();
            verr(
                if key == "." { "" } else { &key },
                e.into_inner().to_string(),
            )
        })?
    };
    let mut addresses = BTreeMap::new();
    let wanted = node_address_interfaces(profile);
    for (name, value) in &vars.addresses {
        let key = format!("addresses.{name}");
        let Some(subnet) = wanted.get(name) else {
            let with: Vec<&str> = wanted.keys().map(String::as_str).collect();
            return Err(verr(
                &key,
                format!(
                    "profile {profile_name} gives {name} no node address (interfaces with `method: node`: {})",
                    if with.is_empty() {
                        "none".into()
                    } else {
                        with.join(", ")
                    }
                ),
            ));
        };
        let net = parse_address(value, *subnet).map_err(|m| verr(&key, m))?;
        addresses.insert(name.clone(), net);
    }
    for (name, subnet) in &wanted {
        if !vars.addresses.contains_key(name) {
            return Err(verr(
                "addresses",
                format!(
                    "{name} needs an address from {subnet} (profile {profile_name} gives it `method: node`), e.g. {{\"addresses\": {{\"{name}\": \"{}\"}}}}",
                    sample_address(*subnet, 0).addr()
                ),
            ));
        }
    }
    let root = &profile.storage.root;
    if !vars.root_disks.is_empty() {
        let need = if root.disks.devices.is_empty() {
            root.disks.count.unwrap_or(root.raid.min_disks())
        } else {
            root.disks.devices.len() as u32
        };
        disk_list("root_disks", &vars.root_disks, need)?;
    }
    for (pool, disks) in &vars.zfs_disks {
        let key = format!("zfs_disks.{pool}");
        let Some(p) = profile.storage.zfs.pools.iter().find(|p| &p.name == pool) else {
            return Err(verr(
                &key,
                format!("profile {profile_name} has no pool named {pool}"),
            ));
        };
        let need: u32 = p.vdevs.iter().map(|v| v.disks).sum();
        disk_list(&key, disks, need)?;
        let clash = disks.iter().find(|d| vars.root_disks.contains(d));
        if let Some(d) = clash {
            return Err(verr(&key, format!("{d} is also in root_disks")));
        }
    }
    for (bond, macs) in &vars.bond_members {
        let key = format!("bond_members.{bond}");
        let Some(b) = profile
            .network
            .iter()
            .flat_map(|n| n.bonds.iter())
            .find(|b| &b.name == bond)
        else {
            return Err(verr(
                &key,
                format!("profile {profile_name} has no bond named {bond}"),
            ));
        };
        let need = b
            .members
            .count
            .unwrap_or(b.members.names.len().max(b.members.macs.len()) as u32);
        if macs.len() as u32 != need {
            return Err(verr(
                &key,
                format!("{bond} has {need} members, {} MACs are given", macs.len()),
            ));
        }
        for (i, m) in macs.iter().enumerate() {
            if !super::validate::valid_mac(m) {
                return Err(verr(
                    &format!("{key}[{i}]"),
                    format!("`{m}` is not a MAC address like `52:54:00:12:34:56`"),
                ));
            }
        }
    }
    if let Some(m) = &vars.installer_nic
        && !super::validate::valid_mac(m)
    {
        return Err(verr(
            "installer_nic",
            format!("`{m}` is not a MAC address like `52:54:00:12:34:56`"),
        ));
    }
    Ok(CheckedVars { vars, addresses })
}

fn disk_list(key: &str, disks: &[String], need: u32) -> Result<(), VarsError> {
    if disks.len() as u32 != need {
        return Err(verr(
            key,
            format!("the layout takes {need} disks, {} are given", disks.len()),
        ));
    }
    for (i, d) in disks.iter().enumerate() {
        let ok = d.starts_with("/dev/")
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_.:+-@".contains(c));
        if !ok {
            return Err(verr(
                &format!("{key}[{i}]"),
                format!("`{d}` is not a device path like `/dev/disk/by-id/ata-…`"),
            ));
        }
    }
    Ok(())
}

/// Interfaces of `profile` with `method: node`, and their subnets.
pub fn node_address_interfaces(profile: &Profile) -> BTreeMap<String, Ipv4Net> {
    let mut out = BTreeMap::new();
    let Some(n) = &profile.network else {
        return out;
    };
    let all = n
        .interfaces
        .iter()
        .map(|i| (i.name.clone(), i.ipv4.as_ref()))
        .chain(n.bonds.iter().map(|b| (b.name.clone(), b.ipv4.as_ref())))
        .chain(n.vlans.iter().map(|v| (v.ifname(), v.ipv4.as_ref())))
        .chain(n.bridges.iter().map(|b| (b.name.clone(), b.ipv4.as_ref())));
    for (name, ip) in all {
        if let Some(ip) = ip
            && ip.method == AddressMethod::Node
            && let Some(s) = ip.subnet
        {
            out.insert(name, s);
        }
    }
    out
}

/// Parses `a.b.c.d` or `a.b.c.d/nn` as a host address inside `subnet`.
fn parse_address(value: &str, subnet: Ipv4Net) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = match value.split_once('/') {
        Some(_) => value.parse().map_err(|_| {
            format!(
                "`{value}` is not an IPv4 address like `{}`",
                sample_address(subnet, 0)
            )
        })?,
        None => {
            let a: Ipv4Addr = value.parse().map_err(|_| {
                format!(
                    "`{value}` is not an IPv4 address like `{}`",
                    sample_address(subnet, 0).addr()
                )
            })?;
            Ipv4Net::new(a, subnet.prefix_len()).map_err(|e| e.to_string())?
        }
    };
    if net.prefix_len() != subnet.prefix_len() || !subnet.contains(&net.addr()) {
        return Err(format!("{value} is outside the subnet {subnet}"));
    }
    if subnet.prefix_len() < 31
        && (net.addr() == subnet.network() || net.addr() == subnet.broadcast())
    {
        return Err(format!(
            "{} is the network or broadcast address of {subnet}, not a host address",
            net.addr()
        ));
    }
    Ok(net)
}

/// A host address of `subnet` for samples and previews: the 10th host plus `n`.
pub fn sample_address(subnet: Ipv4Net, n: u32) -> Ipv4Net {
    let base = u32::from(subnet.network());
    let hosts = subnet.hosts().count() as u32;
    let off = if hosts > 10 + n { 10 + n } else { 1 };
    Ipv4Net::new(Ipv4Addr::from(base + off), subnet.prefix_len()).unwrap_or(subnet)
}

/// Vars that satisfy `profile`, for previews and `rackseed check`: the 10th host of
/// each node subnet.
pub fn sample(profile: &Profile) -> serde_json::Value {
    let addresses: BTreeMap<String, String> = node_address_interfaces(profile)
        .into_iter()
        .map(|(k, s)| (k, sample_address(s, 0).addr().to_string()))
        .collect();
    if addresses.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!({ "addresses": addresses })
    }
}

/// The first static address in `vars` that another node already uses:
/// `(interface, address, other node)`.
pub fn address_conflict<'a>(
    mine: &CheckedVars,
    others: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> Option<(String, Ipv4Addr, String)> {
    let mut theirs: Vec<(String, Ipv4Addr)> = Vec::new();
    for (node, v) in others {
        if let Some(a) = v.get("addresses").and_then(|a| a.as_object()) {
            for val in a.values().filter_map(|x| x.as_str()) {
                let ip = val.split('/').next().and_then(|s| s.parse().ok());
                if let Some(ip) = ip {
                    theirs.push((node.to_string(), ip));
                }
            }
        }
    }
    for (name, net) in &mine.addresses {
        if let Some((node, _)) = theirs.iter().find(|(_, ip)| *ip == net.addr()) {
            return Some((name.clone(), net.addr(), node.clone()));
        }
    }
    None
}
