//! Redundancy groups: sets of nodes that replicate their ZFS data to each other.
//!
//! Owns the group records, placement rules (members must not share a failure domain),
//! the replication plan (two members: each to the other; more: a ring) and the view
//! each member is served. Planning, placement and checks are pure functions;
//! `inventory::groups` reads and writes the inventory's `groups` table and `nodes.grp`.

pub mod health;

use crate::facts::Facts;
use crate::node::NodeState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A group's settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub min_members: u32,
    /// The label members must not share, e.g. `rack`; `None` disables the rule.
    pub failure_domain: Option<String>,
    pub interval_secs: u64,
    /// sanoid retention, e.g. `frequently=4,hourly=24,daily=7`.
    pub retention: String,
    /// Datasets each member replicates (`tank/data`).
    pub datasets: Vec<String>,
    /// The interface (from the node plan) peers replicate over, e.g. `br-storage`.
    pub replication_network: Option<String>,
    /// Bumped on every membership or settings change; agents watch it.
    pub version: i64,
}

/// A member (or candidate) as placement and planning see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub node_id: i64,
    pub hostname: String,
    pub state: NodeState,
    /// The node's value for the group's failure-domain label (e.g. `rack-a1`).
    pub failure_domain: Option<String>,
    /// The address peers replicate to (from the node's enrollment facts).
    pub replication_address: Option<String>,
    /// `TYPE BASE64` SSH host keys (from facts).
    pub ssh_host_keys: Vec<String>,
    /// The node's replication public key (sent at enrollment).
    pub replication_key: Option<String>,
}

impl Member {
    /// Members that can take part in replication: enrolled, with an address and keys.
    pub fn active(&self) -> bool {
        self.state == NodeState::Enrolled
            && self.replication_address.is_some()
            && self.replication_key.is_some()
    }
}

/// Why a node may not join a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "placement refused: {node} and {other} share {label} `{value}`; members of group {group} must be in different {label}s"
    )]
    SharedDomain {
        node: String,
        other: String,
        label: String,
        value: String,
        group: String,
    },
    #[error(
        "placement refused: {node} has no {label}; set it with `--failure-domain <{label}>` (group {group} keeps members in different {label}s)"
    )]
    NoDomain {
        node: String,
        label: String,
        group: String,
    },
}

/// Checks that `candidate` may join `group` beside `members` (the candidate itself is
/// ignored among them).
pub fn check_placement(
    group: &Group,
    members: &[Member],
    candidate: &Member,
) -> Result<(), PlacementError> {
    let Some(label) = &group.failure_domain else {
        return Ok(());
    };
    let Some(value) = &candidate.failure_domain else {
        return Err(PlacementError::NoDomain {
            node: candidate.hostname.clone(),
            label: label.clone(),
            group: group.name.clone(),
        });
    };
    if let Some(other) = members.iter().find(|m| {
        m.node_id != candidate.node_id && m.failure_domain.as_deref() == Some(value.as_str())
    }) {
        return Err(PlacementError::SharedDomain {
            node: candidate.hostname.clone(),
            other: other.hostname.clone(),
            label: label.clone(),
            value: value.clone(),
            group: group.name.clone(),
        });
    }
    Ok(())
}

/// Who each active member pushes its datasets to: with two, each to the other; with
/// more, each to the next in hostname order, the last to the first. Members that are
/// not active get no target and are no one's target.
pub fn replication_targets(members: &[Member]) -> BTreeMap<String, String> {
    let mut active: Vec<&Member> = members.iter().filter(|m| m.active()).collect();
    active.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    let n = active.len();
    let mut out = BTreeMap::new();
    if n < 2 {
        return out;
    }
    for (i, m) in active.iter().enumerate() {
        out.insert(m.hostname.clone(), active[(i + 1) % n].hostname.clone());
    }
    out
}

/// Where a dataset of `source` lands on its target: `<pool>/replicas/<source>/<rest>`.
pub fn replica_dataset(dataset: &str, source: &str) -> String {
    match dataset.split_once('/') {
        Some((pool, rest)) => format!("{pool}/replicas/{source}/{rest}"),
        None => format!("{dataset}/replicas/{source}"),
    }
}

/// A peer as a member's view shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerView {
    pub hostname: String,
    pub address: Option<String>,
    pub ssh_host_keys: Vec<String>,
    pub replication_key: Option<String>,
    pub state: NodeState,
}

/// One dataset a member sends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Push {
    pub source: String,
    pub target: String,
}

/// What a member does: push its datasets to one peer, accept pushes from others.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ReplicationPlan {
    /// Hostname and address of the peer this member pushes to.
    pub push_to: Option<String>,
    pub push_address: Option<String>,
    pub pushes: Vec<Push>,
    /// Peers that push here: hostname → (address, replication key).
    pub accept_from: Vec<PeerView>,
}

/// What a member is served (`GET /agent/v1/view`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupView {
    pub group: Group,
    pub me: String,
    pub members: usize,
    /// Fewer enrolled members than `min_members`.
    pub below_minimum: bool,
    pub peers: Vec<PeerView>,
    pub replication: ReplicationPlan,
}

fn peer(m: &Member) -> PeerView {
    PeerView {
        hostname: m.hostname.clone(),
        address: m.replication_address.clone(),
        ssh_host_keys: m.ssh_host_keys.clone(),
        replication_key: m.replication_key.clone(),
        state: m.state,
    }
}

/// The view of `me` in `group`.
pub fn view_for(group: &Group, members: &[Member], me: &str) -> GroupView {
    let targets = replication_targets(members);
    let by_name: BTreeMap<&str, &Member> =
        members.iter().map(|m| (m.hostname.as_str(), m)).collect();
    let mut replication = ReplicationPlan::default();
    if let Some(t) = targets.get(me) {
        replication.push_to = Some(t.clone());
        replication.push_address = by_name
            .get(t.as_str())
            .and_then(|m| m.replication_address.clone());
        replication.pushes = group
            .datasets
            .iter()
            .map(|d| Push {
                source: d.clone(),
                target: replica_dataset(d, me),
            })
            .collect();
    }
    replication.accept_from = targets
        .iter()
        .filter(|(src, dst)| dst.as_str() == me && src.as_str() != me)
        .filter_map(|(src, _)| by_name.get(src.as_str()).map(|m| peer(m)))
        .collect();
    let enrolled = members
        .iter()
        .filter(|m| m.state == NodeState::Enrolled)
        .count();
    GroupView {
        group: group.clone(),
        me: me.to_string(),
        members: members.len(),
        below_minimum: (enrolled as u32) < group.min_members,
        peers: members
            .iter()
            .filter(|m| m.hostname != me)
            .map(peer)
            .collect(),
        replication,
    }
}

/// The member record of a node from its inventory values and enrollment facts.
pub fn member_from(
    node_id: i64,
    hostname: &str,
    state: NodeState,
    failure_domain: Option<String>,
    facts: Option<&Facts>,
    repl_key: Option<String>,
    repl_iface: Option<&str>,
) -> Member {
    let replication_address = match (facts, repl_iface) {
        (Some(f), Some(iface)) => f
            .addresses
            .iter()
            .find(|a| a.iface == iface)
            .map(|a| a.cidr.split('/').next().unwrap_or(&a.cidr).to_string()),
        _ => None,
    };
    Member {
        node_id,
        hostname: hostname.to_string(),
        state,
        failure_domain,
        replication_address,
        ssh_host_keys: facts
            .map(|f| {
                f.ssh_host_keys
                    .iter()
                    .map(|k| k.public_key.clone())
                    .collect()
            })
            .unwrap_or_default(),
        replication_key: repl_key,
    }
}

/// A group to create.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    pub name: String,
    pub min_members: Option<u32>,
    pub failure_domain: Option<String>,
    /// e.g. `15m`
    pub interval: Option<String>,
    pub retention: Option<String>,
    #[serde(default)]
    pub datasets: Vec<String>,
    pub replication_network: Option<String>,
}

/// Validates a new group's fields; the message names the field.
pub fn check_new_group(g: &NewGroup) -> Result<Group, String> {
    if !crate::config::valid_name(&g.name) {
        return Err(format!(
            "name: `{}` is not a valid group name (letters, digits, `-`, `_`)",
            g.name
        ));
    }
    let interval = match &g.interval {
        Some(i) => humantime::parse_duration(i)
            .map_err(|e| format!("interval: `{i}` is not a duration ({e}); write e.g. \"15m\""))?,
        None => Duration::from_secs(15 * 60),
    };
    if interval < Duration::from_secs(60) {
        return Err("interval: must be at least 1m".into());
    }
    let retention = g
        .retention
        .clone()
        .unwrap_or_else(|| "frequently=4,hourly=24,daily=7".into());
    check_retention(&retention)?;
    for (i, d) in g.datasets.iter().enumerate() {
        if !crate::config::valid_dataset(d) {
            return Err(format!(
                "datasets[{i}]: `{}` is not a dataset name like tank/data",
                d.escape_debug()
            ));
        }
    }
    if let Some(fd) = &g.failure_domain
        && !fd.is_empty()
        && !crate::config::valid_name(fd)
    {
        return Err(format!(
            "failure_domain: `{}` is not a label name (letters, digits, `-`, `_`)",
            fd.escape_debug()
        ));
    }
    if let Some(n) = &g.replication_network
        && !crate::config::valid_interface(n)
    {
        return Err(format!(
            "replication_network: `{}` is not an interface name",
            n.escape_debug()
        ));
    }
    Ok(Group {
        name: g.name.clone(),
        min_members: g.min_members.unwrap_or(2).max(1),
        failure_domain: g.failure_domain.clone().filter(|s| !s.is_empty()),
        interval_secs: interval.as_secs(),
        retention,
        datasets: g.datasets.clone(),
        replication_network: g.replication_network.clone(),
        version: 1,
    })
}

/// Checks a sanoid retention list (`hourly=24,daily=7`).
pub fn check_retention(r: &str) -> Result<(), String> {
    crate::config::check_retention(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(fd: Option<&str>) -> Group {
        Group {
            name: "rg1".into(),
            min_members: 2,
            failure_domain: fd.map(str::to_string),
            interval_secs: 900,
            retention: "hourly=24".into(),
            datasets: vec!["tank/data".into()],
            replication_network: Some("br-storage".into()),
            version: 1,
        }
    }

    fn m(id: i64, host: &str, rack: Option<&str>, enrolled: bool) -> Member {
        Member {
            node_id: id,
            hostname: host.into(),
            state: if enrolled {
                NodeState::Enrolled
            } else {
                NodeState::Installed
            },
            failure_domain: rack.map(str::to_string),
            replication_address: enrolled.then(|| format!("203.0.113.{}", 10 + id)),
            ssh_host_keys: vec![format!("ssh-ed25519 HOSTKEY{id}")],
            replication_key: enrolled.then(|| format!("ssh-ed25519 REPL{id}")),
        }
    }

    #[test]
    fn placement_refuses_a_shared_rack_with_a_clear_message() {
        let g = group(Some("rack"));
        let members = vec![
            m(1, "node1", Some("rack-a"), true),
            m(2, "node2", Some("rack-b"), true),
        ];
        assert_eq!(
            check_placement(&g, &members, &m(3, "node3", Some("rack-a"), false))
                .unwrap_err()
                .to_string(),
            "placement refused: node3 and node1 share rack `rack-a`; members of group rg1 must be in different racks"
        );
        assert!(check_placement(&g, &members, &m(3, "node3", Some("rack-c"), false)).is_ok());
        assert!(matches!(
            check_placement(&g, &members, &m(3, "node3", None, false)),
            Err(PlacementError::NoDomain { .. })
        ));
        // A member re-checked against the group does not collide with itself.
        assert!(check_placement(&g, &members, &members[0]).is_ok());
        // No label: no rule.
        assert!(
            check_placement(
                &group(None),
                &members,
                &m(3, "node3", Some("rack-a"), false)
            )
            .is_ok()
        );
    }

    #[test]
    fn two_members_replicate_to_each_other() {
        let t = replication_targets(&[m(2, "node2", None, true), m(1, "node1", None, true)]);
        assert_eq!(t.get("node1").map(String::as_str), Some("node2"));
        assert_eq!(t.get("node2").map(String::as_str), Some("node1"));
    }

    #[test]
    fn more_members_form_a_ring_and_inactive_ones_are_skipped() {
        let ms = vec![
            m(1, "a", None, true),
            m(2, "b", None, true),
            m(3, "c", None, true),
            m(4, "d", None, false),
        ];
        let t = replication_targets(&ms);
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            vec![
                ("a".into(), "b".into()),
                ("b".into(), "c".into()),
                ("c".into(), "a".into())
            ]
        );
        assert!(replication_targets(&[m(1, "a", None, true)]).is_empty());
    }

    #[test]
    fn view_names_target_sources_and_keys() {
        let g = group(None);
        let ms = vec![m(1, "node1", None, true), m(2, "node2", None, true)];
        let v = view_for(&g, &ms, "node1");
        assert_eq!(v.replication.push_to.as_deref(), Some("node2"));
        assert_eq!(v.replication.push_address.as_deref(), Some("203.0.113.12"));
        assert_eq!(
            v.replication.pushes,
            vec![Push {
                source: "tank/data".into(),
                target: "tank/replicas/node1/data".into()
            }]
        );
        assert_eq!(v.replication.accept_from.len(), 1);
        assert_eq!(
            v.replication.accept_from[0].replication_key.as_deref(),
            Some("ssh-ed25519 REPL2")
        );
        assert_eq!(v.peers.len(), 1);
        assert!(!v.below_minimum);
        let alone = view_for(&g, &ms[..1], "node1");
        assert!(alone.below_minimum && alone.replication.push_to.is_none());
    }

    #[test]
    fn new_group_checks() {
        let ok = check_new_group(&NewGroup {
            name: "rg1".into(),
            datasets: vec!["tank/data".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!((ok.interval_secs, ok.min_members), (900, 2));
        assert!(
            check_new_group(&NewGroup {
                name: "bad name".into(),
                ..Default::default()
            })
            .unwrap_err()
            .starts_with("name:")
        );
        assert!(
            check_new_group(&NewGroup {
                name: "g".into(),
                interval: Some("soon".into()),
                ..Default::default()
            })
            .unwrap_err()
            .starts_with("interval:")
        );
        assert!(
            check_new_group(&NewGroup {
                name: "g".into(),
                retention: Some("hourly".into()),
                ..Default::default()
            })
            .unwrap_err()
            .starts_with("retention:")
        );
        assert!(
            check_new_group(&NewGroup {
                name: "g".into(),
                datasets: vec!["tank".into()],
                ..Default::default()
            })
            .unwrap_err()
            .starts_with("datasets[0]:")
        );
    }
}
