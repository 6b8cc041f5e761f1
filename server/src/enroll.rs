//! Enrollment: an installed node's agent proves itself with a single-use enrollment
//! token bound to that node, reports facts that must match the node's plan, and gets a
//! client certificate signed by rackseed's CA, used for every later call.
//!
//! Owns the request/response format (shared with the agent), the refusal reasons and
//! the facts-versus-plan comparison. Refusals change nothing but the timeline.

use crate::facts::Facts;
use crate::mac::MacAddr;
use crate::node::{Node, NodeState, UnixMs};
use crate::plan::NodePlan;
use crate::profiles::model::{RaidLevel, VdevKind};
use serde::{Deserialize, Serialize};

/// `POST /enroll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    /// The node's provisioning MAC (its inventory key).
    pub node: String,
    pub facts: Facts,
    /// PEM certificate signing request for the node's own key.
    pub csr: String,
    /// The node's replication SSH public key (`TYPE BASE64 [COMMENT]`).
    pub replication_key: Option<String>,
}

/// The answer to an enrollment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// `enrolled`
    pub status: String,
    pub node_id: i64,
    pub certificate: String,
    pub ca: String,
    /// Base URL of the HTTPS API for certificate-authenticated calls.
    pub https: String,
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown enrollment token")]
    UnknownToken,
    #[error("enrollment token was already used")]
    TokenUsed,
    #[error("enrollment token expired; reprovision the node or issue a new token")]
    TokenExpired,
    #[error("enrollment token belongs to another node")]
    WrongNode,
    #[error("node {0} is {1}; only installed nodes enroll")]
    WrongState(String, NodeState),
    #[error("facts do not match the plan: {}", .0.join("; "))]
    Mismatch(Vec<String>),
    #[error("{0}")]
    Placement(String),
    #[error("{0}")]
    BadRequest(String),
    /// rackseed could not decide (the inventory failed); the detail is logged.
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// A stable machine-readable name for the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownToken => "unknown_token",
            Refusal::TokenUsed => "token_used",
            Refusal::TokenExpired => "token_expired",
            Refusal::WrongNode => "wrong_node",
            Refusal::WrongState(..) => "wrong_state",
            Refusal::Mismatch(_) => "facts_mismatch",
            Refusal::Placement(_) => "placement",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Internal(_) => "internal",
        }
    }
}

/// The enrollment decision, pure: whether a node whose token checked out may enroll
/// with `facts`, given its `plan`, and the `group` it joins with its current
/// `members`. Checks, in order: the facts are acceptable from the network
/// (`facts::check_untrusted`), they are this node's (its MAC is on an interface),
/// they match the plan, and the node's failure domain is free in the group. The
/// transaction that completes the enrollment checks placement again.
pub fn decide(
    node: &Node,
    plan: &NodePlan,
    facts: &Facts,
    replication_key: Option<&str>,
    group: Option<(&crate::groups::Group, &[crate::groups::Member])>,
) -> Result<(), Refusal> {
    crate::facts::check_untrusted(facts, replication_key).map_err(|problems| {
        Refusal::BadRequest(format!(
            "the facts cannot be accepted: {}",
            problems.join("; ")
        ))
    })?;
    facts_belong_to(node, facts)?;
    let mismatches = compare(plan, facts);
    if !mismatches.is_empty() {
        return Err(Refusal::Mismatch(mismatches));
    }
    if let Some((g, members)) = group {
        let me = crate::groups::Member {
            node_id: node.id,
            hostname: node.display_name(),
            state: node.state,
            failure_domain: node.failure_domain.clone(),
            replication_address: None,
            ssh_host_keys: vec![],
            replication_key: None,
        };
        crate::groups::check_placement(g, members, &me)
            .map_err(|e| Refusal::Placement(e.to_string()))?;
    }
    Ok(())
}

/// What the inventory holds for an enrollment token: the row of the token (its node,
/// when it was used, when it expires) and the node it is bound to.
pub struct TokenRecord {
    pub node_id: i64,
    pub used: Option<UnixMs>,
    pub expires: UnixMs,
    pub node: Option<Node>,
}

/// Judges an enrollment request's token against what the inventory holds for it
/// (`None`: no such token); returns the node it may enroll as.
pub fn judge_token(
    req: &EnrollRequest,
    record: Option<TokenRecord>,
    now: UnixMs,
) -> Result<Node, Refusal> {
    let claimed: MacAddr = req
        .node
        .parse()
        .map_err(|e: crate::mac::MacParseError| Refusal::BadRequest(format!("node: {e}")))?;
    let record = record.ok_or(Refusal::UnknownToken)?;
    let node = record.node.ok_or(Refusal::UnknownToken)?;
    if node.mac != claimed {
        return Err(Refusal::WrongNode);
    }
    if record.used.is_some() {
        return Err(Refusal::TokenUsed);
    }
    if record.expires <= now {
        return Err(Refusal::TokenExpired);
    }
    if node.state != NodeState::Installed {
        return Err(Refusal::WrongState(node.display_name(), node.state));
    }
    Ok(node)
}

/// Facts that are obviously not from the node: its MAC is on none of its interfaces.
pub fn facts_belong_to(node: &Node, facts: &Facts) -> Result<(), Refusal> {
    let mac = node.mac.to_string();
    // A bond takes a member's MAC; the permanent address of each NIC is reported too.
    if facts
        .interfaces
        .iter()
        .any(|i| i.mac.eq_ignore_ascii_case(&mac))
    {
        Ok(())
    } else {
        Err(Refusal::Mismatch(vec![format!(
            "no interface has the node's MAC {mac}"
        )]))
    }
}

/// The plan of `node` (the same plan its scripts were rendered from), given its
/// profile as loaded (`None`: not loaded).
pub fn plan_of(
    cfg: &crate::config::Config,
    profile: Option<&crate::profiles::Resolved>,
    mirror: crate::mirror::MirrorCtx,
    node: &Node,
) -> Result<NodePlan, Refusal> {
    let profile_name = node.profile.as_deref().unwrap_or_default();
    let profile = profile.ok_or_else(|| {
        Refusal::BadRequest(format!(
            "node has profile `{profile_name}`, which is not loaded"
        ))
    })?;
    let ctx = crate::render::node_ctx(cfg, node, profile, mirror, "").map_err(|e| {
        Refusal::BadRequest(format!("no plan for this node: {}", crate::error_chain(&e)))
    })?;
    Ok(ctx.plan)
}

fn vdev_layout(kinds: impl Iterator<Item = (String, usize)>) -> String {
    let mut counts: Vec<((String, usize), usize)> = Vec::new();
    for k in kinds {
        match counts.iter_mut().find(|(x, _)| *x == k) {
            Some((_, n)) => *n += 1,
            None => counts.push((k, 1)),
        }
    }
    if counts.is_empty() {
        return "no vdevs".into();
    }
    counts
        .iter()
        .map(|((kind, disks), n)| {
            let what = if kind == "disk" {
                "single-disk".to_string()
            } else {
                format!("{disks}-disk {kind}")
            };
            format!("{n} {what} vdev{}", if *n == 1 { "" } else { "s" })
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Every way `facts` differ from `plan`, each a sentence naming the thing, e.g.
/// `zpool tank: expected 2 2-disk mirror vdevs, found 1 2-disk mirror vdev`.
pub fn compare(plan: &NodePlan, facts: &Facts) -> Vec<String> {
    let mut m = Vec::new();
    if facts.hostname != plan.hostname && facts.hostname != plan.fqdn {
        m.push(format!(
            "hostname: expected {}, found {}",
            plan.hostname, facts.hostname
        ));
    }
    let fs = plan.root.filesystem.to_string();
    if facts.root.fstype != fs {
        m.push(format!(
            "root filesystem: expected {fs}, found {}",
            if facts.root.fstype.is_empty() {
                "nothing"
            } else {
                &facts.root.fstype
            }
        ));
    }
    match (plan.root.raid, &facts.root.md) {
        (RaidLevel::None, Some(md)) => m.push(format!(
            "root: expected no RAID, found {} on {}",
            md.level, md.name
        )),
        (RaidLevel::None, None) => {}
        (level, None) => m.push(format!(
            "root: expected {level} on md, found {}",
            if facts.root.source.is_empty() {
                "nothing"
            } else {
                &facts.root.source
            }
        )),
        (level, Some(md)) => {
            if md.level != level.to_string() {
                m.push(format!(
                    "root {}: expected {level}, found {}",
                    md.name, md.level
                ));
            }
            if md.expected_members != plan.root.disks {
                m.push(format!(
                    "root {}: expected {} member disks, found {}",
                    md.name, plan.root.disks, md.expected_members
                ));
            } else if !md.healthy() {
                m.push(format!(
                    "root {}: degraded, {} of {} members active",
                    md.name, md.active_members, md.expected_members
                ));
            }
        }
    }
    for pool in &plan.zfs {
        let want = vdev_layout(pool.vdevs.iter().flat_map(|v| {
            if v.kind == VdevKind::Stripe {
                vec![("disk".to_string(), 1); v.disks as usize]
            } else {
                vec![(v.kind.to_string(), v.disks as usize)]
            }
        }));
        let Some(found) = facts.pools.iter().find(|p| p.name == pool.name) else {
            m.push(format!(
                "zpool {}: expected {want}, found no pool",
                pool.name
            ));
            continue;
        };
        let have = vdev_layout(found.vdevs.iter().map(|v| (v.kind.clone(), v.disks.len())));
        if have != want {
            m.push(format!(
                "zpool {}: expected {want}, found {have}",
                pool.name
            ));
        }
        if found.health != "ONLINE" {
            m.push(format!(
                "zpool {}: expected ONLINE, found {}",
                pool.name, found.health
            ));
        }
        for ds in &pool.datasets {
            match found.datasets.get(&ds.name) {
                None => m.push(format!("zfs dataset {}: not found", ds.name)),
                Some(props) => {
                    for (k, v) in &ds.properties {
                        if let Some(got) = props.get(k)
                            && !same_property(v, got)
                        {
                            m.push(format!(
                                "zfs dataset {}: {k} expected {v}, found {got}",
                                ds.name
                            ));
                        }
                    }
                }
            }
        }
    }
    if let Some(net) = &plan.network {
        for b in &net.bonds {
            let Some(found) = facts.bonds.iter().find(|x| x.name == b.name) else {
                m.push(format!("bond {}: not found", b.name));
                continue;
            };
            let mode = b.mode.to_string();
            if found.mode != mode {
                m.push(format!(
                    "bond {}: expected mode {mode}, found {}",
                    b.name, found.mode
                ));
            }
            if found.slaves.len() as u32 != b.members.count {
                m.push(format!(
                    "bond {}: expected {} members, found {} ({})",
                    b.name,
                    b.members.count,
                    found.slaves.len(),
                    found.slaves.join(", ")
                ));
            }
            if let (Some(rate), Some(got)) = (&b.lacp_rate, &found.lacp_rate)
                && rate.to_string() != *got
            {
                m.push(format!(
                    "bond {}: expected lacp rate {rate}, found {got}",
                    b.name
                ));
            }
            if let (Some(h), Some(got)) = (&b.xmit_hash_policy, &found.xmit_hash_policy)
                && h.to_string() != *got
            {
                m.push(format!(
                    "bond {}: expected xmit hash {h}, found {got}",
                    b.name
                ));
            }
        }
        for v in &net.vlans {
            match facts.vlans.iter().find(|x| x.name == v.name) {
                None => m.push(format!("vlan {}: not found", v.name)),
                Some(f) if f.id != v.id || f.parent != v.parent => m.push(format!(
                    "vlan {}: expected id {} on {}, found id {} on {}",
                    v.name, v.id, v.parent, f.id, f.parent
                )),
                Some(_) => {}
            }
        }
        for b in &net.bridges {
            match facts.bridges.iter().find(|x| x.name == b.name) {
                None => m.push(format!("bridge {}: not found", b.name)),
                Some(f) => {
                    let mut want = b.ports.clone();
                    want.sort();
                    let mut have = f.ports.clone();
                    have.sort();
                    if want != have {
                        m.push(format!(
                            "bridge {}: expected ports {}, found {}",
                            b.name,
                            want.join(","),
                            if have.is_empty() {
                                "none".into()
                            } else {
                                have.join(",")
                            }
                        ));
                    }
                }
            }
        }
        for (iface, cidr) in &net.addresses {
            if !facts
                .addresses
                .iter()
                .any(|a| &a.iface == iface && &a.cidr == cidr)
            {
                let have: Vec<&str> = facts
                    .addresses
                    .iter()
                    .filter(|a| &a.iface == iface)
                    .map(|a| a.cidr.as_str())
                    .collect();
                m.push(format!(
                    "address {iface}: expected {cidr}, found {}",
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(",")
                    }
                ));
            }
        }
    }
    m
}

/// ZFS prints some properties differently from how they are set (`1M` vs `1048576`).
fn same_property(want: &str, got: &str) -> bool {
    if want.eq_ignore_ascii_case(got) {
        return true;
    }
    let bytes = |s: &str| -> Option<u64> {
        let s = s.trim();
        let (n, mult) = match s.chars().last()? {
            'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
            'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
            'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
            'T' | 't' => (&s[..s.len() - 1], 1 << 40),
            _ => (s, 1),
        };
        n.parse::<u64>().ok().map(|n| n * mult)
    };
    matches!((bytes(want), bytes(got)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Enrollment, Inventory, NewNode, Transition};
    use std::time::Duration;

    fn enrollment<'a>(
        token: &'a str,
        facts: &'a serde_json::Value,
        serial: &'a str,
        message: &'a str,
    ) -> Enrollment<'a> {
        Enrollment {
            token,
            facts,
            cert_serial: serial,
            repl_key: None,
            message,
            group: None,
        }
    }

    /// The handler's token check: the stored record, judged.
    fn check_token(inv: &Inventory, req: &EnrollRequest, now: UnixMs) -> Result<Node, Refusal> {
        judge_token(req, inv.enroll_token_record(&req.token).unwrap(), now)
    }

    fn setup() -> (tempfile::TempDir, Inventory, Node) {
        let d = tempfile::tempdir().unwrap();
        let inv = Inventory::open(&d.path().join("i.db")).unwrap();
        let n = inv
            .add_node(
                &NewNode {
                    mac: Some("52:54:00:00:00:01".parse().unwrap()),
                    hostname: "n1".into(),
                    profile: "p".into(),
                    provision: true,
                    ..Default::default()
                },
                Duration::from_secs(60),
                0,
            )
            .unwrap();
        inv.transition(n.id, &Transition::EarlyCommand, Duration::from_secs(60), 1)
            .unwrap();
        let n = inv
            .transition(n.id, &Transition::LateCommand, Duration::from_secs(60), 2)
            .unwrap();
        (d, inv, n)
    }

    fn req(token: &str, mac: &str) -> EnrollRequest {
        EnrollRequest {
            token: token.into(),
            node: mac.into(),
            facts: Facts::default(),
            csr: String::new(),
            replication_key: None,
        }
    }

    crate::inventory::testing::on_each_backend! {
    /// Two nodes of one rack enroll into a group with `failure_domain = rack` at the
    /// same instant, each from its own thread: the transaction re-reads the members, so
    /// exactly one is enrolled and the other is refused with the placement reason,
    /// answered 409, with its token unused and its state unchanged. Each thread is
    /// its own server (an inventory of its own on the one database): on PostgreSQL
    /// the enrollments' serializable transactions conflict and the loser's re-run sees
    /// the winner.
    fn two_nodes_of_one_failure_domain_enrolling_at_once_cannot_both_join(inv, place) {
        let servers = [std::sync::Arc::new(place.open()), std::sync::Arc::new(place.open())];
        let group = crate::groups::Group {
            name: "rg1".into(),
            min_members: 2,
            failure_domain: Some("rack".into()),
            interval_secs: 900,
            retention: "hourly=24".into(),
            datasets: vec!["tank/data".into()],
            replication_network: None,
            version: 0,
        };
        crate::inventory::groups::create(inv, &group, 0).unwrap();
        let mut tokens = Vec::new();
        for i in 1..=2u8 {
            let n = inv
                .add_node(
                    &NewNode {
                        mac: Some(format!("52:54:00:00:01:0{i}").parse().unwrap()),
                        hostname: format!("n{i}"),
                        profile: "p".into(),
                        provision: true,
                        failure_domain: Some("rack-a1".into()),
                        ..Default::default()
                    },
                    Duration::from_secs(60),
                    0,
                )
                .unwrap();
            inv.transition(n.id, &Transition::EarlyCommand, Duration::from_secs(60), 1)
                .unwrap();
            inv.transition(n.id, &Transition::LateCommand, Duration::from_secs(60), 2)
                .unwrap();
            let t = inv
                .reissue_enroll_token(n.id, Duration::from_secs(60), 3)
                .unwrap();
            tokens.push((n.id, t));
        }
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let results: Vec<_> = tokens
            .clone()
            .into_iter()
            .enumerate()
            .map(|(i, (id, t))| {
                let (inv, barrier, group) = (servers[i].clone(), barrier.clone(), group.clone());
                std::thread::spawn(move || {
                    let facts = serde_json::json!({});
                    let e = Enrollment {
                        token: &t,
                        facts: &facts,
                        cert_serial: "01",
                        repl_key: None,
                        message: "enrolled",
                        group: Some(&group),
                    };
                    barrier.wait();
                    (id, inv.complete_enrollment(id, &e, 10))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let ok: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(ok.len(), 1, "{results:?}");
        let (loser, err) = results.iter().find(|(_, r)| r.is_err()).unwrap();
        let Err(crate::inventory::InventoryError::Placement(why)) = err else {
            panic!("not a placement refusal: {err:?}");
        };
        assert!(why.contains("rack-a1"), "{why}");
        let answer = crate::http::ApiError::from(Refusal::Placement(why.clone()));
        assert_eq!(answer.status.as_u16(), 409);
        assert_eq!(answer.code, "placement");
        let loser_node = inv.node_by_id(*loser).unwrap().unwrap();
        assert_eq!(loser_node.state, NodeState::Installed);
        assert_eq!(loser_node.group, None);
        let (_, t) = tokens.iter().find(|(id, _)| id == loser).unwrap();
        assert_eq!(
            inv.enroll_token(t).unwrap().unwrap().1,
            None,
            "token used up"
        );
        let members = crate::inventory::groups::members(
            inv,
            &crate::inventory::groups::get(inv, "rg1").unwrap(),
        )
        .unwrap();
        assert_eq!(members.len(), 1);
    }
    }

    #[test]
    fn token_refusals_name_the_reason() {
        let (_d, inv, n) = setup();
        let t = inv
            .reissue_enroll_token(n.id, Duration::from_secs(60), 10)
            .unwrap();
        assert_eq!(
            check_token(&inv, &req("nope", "52:54:00:00:00:01"), 11),
            Err(Refusal::UnknownToken)
        );
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:02"), 11),
            Err(Refusal::WrongNode)
        );
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:01"), 60_011),
            Err(Refusal::TokenExpired)
        );
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:01"), 11)
                .unwrap()
                .id,
            n.id
        );
        let node = inv
            .complete_enrollment(
                n.id,
                &enrollment(&t, &serde_json::json!({}), "01", "enrolled"),
                12,
            )
            .unwrap();
        assert_eq!(node.state, NodeState::Enrolled);
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:01"), 13),
            Err(Refusal::TokenUsed)
        );
        // Completing twice is refused and changes nothing.
        assert!(
            inv.complete_enrollment(
                n.id,
                &enrollment(&t, &serde_json::json!({"x": 1}), "02", "again"),
                14
            )
            .is_err()
        );
        assert_eq!(inv.cert_serial(n.id).unwrap().as_deref(), Some("01"));
    }

    #[test]
    fn reissue_revokes_the_older_token() {
        let (_d, inv, n) = setup();
        let t1 = inv
            .reissue_enroll_token(n.id, Duration::from_secs(60), 10)
            .unwrap();
        let t2 = inv
            .reissue_enroll_token(n.id, Duration::from_secs(60), 11)
            .unwrap();
        assert_eq!(
            check_token(&inv, &req(&t1, "52:54:00:00:00:01"), 12),
            Err(Refusal::UnknownToken)
        );
        assert!(check_token(&inv, &req(&t2, "52:54:00:00:00:01"), 12).is_ok());
    }

    #[test]
    fn node_must_be_installed() {
        let (_d, inv, n) = setup();
        let t = inv
            .reissue_enroll_token(n.id, Duration::from_secs(60), 10)
            .unwrap();
        inv.transition(n.id, &Transition::Reprovision, Duration::from_secs(60), 11)
            .unwrap();
        // Reprovisioning deleted the node's tokens.
        assert_eq!(
            check_token(&inv, &req(&t, "52:54:00:00:00:01"), 12),
            Err(Refusal::UnknownToken)
        );
    }

    use crate::facts::{Address, Bond, Bridge, MdArray, Pool, RootFacts, Vdev, Vlan};

    /// The plan of a storage-node, as rackseed renders it for a node with addresses.
    fn storage_plan() -> NodePlan {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let cat = crate::profiles::Catalog::load(&dir).unwrap();
        let p = cat.get("storage-node").unwrap();
        let mut n = crate::plan::sample_node(
            "storage-node",
            crate::plan::Firmware::Bios,
            serde_json::json!({"addresses": {"br-mgmt": "198.51.100.11", "br-storage": "203.0.113.11"}}),
        );
        n.hostname = Some("node1".into());
        n.ip = Some("192.0.2.11".parse().unwrap());
        crate::plan::plan_for(
            &p,
            &n,
            &crate::plan::PlanInputs {
                domain: "prov.example".into(),
                firmware: crate::plan::Firmware::Bios,
                provisioning_subnet: Some("192.0.2.0/24".parse().unwrap()),
            },
        )
        .unwrap()
    }

    /// Facts of a node on which everything went as planned.
    fn facts_as_planned(plan: &NodePlan) -> Facts {
        let md = MdArray {
            name: "md0".into(),
            level: "raid1".into(),
            state: "active".into(),
            members: vec!["vda1".into(), "vdb1".into()],
            active_members: 2,
            expected_members: 2,
        };
        let net = plan.network.as_ref().unwrap();
        Facts {
            hostname: plan.hostname.clone(),
            machine_id: "m".into(),
            root: RootFacts {
                source: "/dev/md0".into(),
                fstype: "xfs".into(),
                md: Some(md.clone()),
            },
            md_arrays: vec![md],
            pools: plan
                .zfs
                .iter()
                .map(|p| Pool {
                    name: p.name.clone(),
                    health: "ONLINE".into(),
                    vdevs: p
                        .vdevs
                        .iter()
                        .map(|v| Vdev {
                            kind: v.kind.to_string(),
                            state: "ONLINE".into(),
                            disks: vec!["d".into(); v.disks as usize],
                        })
                        .collect(),
                    datasets: p
                        .datasets
                        .iter()
                        .map(|d| (d.name.clone(), d.properties.clone()))
                        .collect(),
                })
                .collect(),
            bonds: net
                .bonds
                .iter()
                .map(|b| Bond {
                    name: b.name.clone(),
                    mode: b.mode.to_string(),
                    slaves: vec!["eth0".into(), "eth1".into()],
                    mii_status: "up".into(),
                    miimon: Some(100),
                    lacp_rate: b.lacp_rate.map(|r| r.to_string()),
                    xmit_hash_policy: b.xmit_hash_policy.map(|h| h.to_string()),
                })
                .collect(),
            vlans: net
                .vlans
                .iter()
                .map(|v| Vlan {
                    name: v.name.clone(),
                    id: v.id,
                    parent: v.parent.clone(),
                })
                .collect(),
            bridges: net
                .bridges
                .iter()
                .map(|b| Bridge {
                    name: b.name.clone(),
                    ports: b.ports.clone(),
                })
                .collect(),
            addresses: net
                .addresses
                .iter()
                .map(|(i, c)| Address {
                    iface: i.clone(),
                    cidr: c.clone(),
                })
                .collect(),
            ..Facts::default()
        }
    }

    #[test]
    fn facts_as_planned_match() {
        let plan = storage_plan();
        assert_eq!(
            compare(&plan, &facts_as_planned(&plan)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_difference_is_named() {
        let plan = storage_plan();
        let mut f = facts_as_planned(&plan);
        f.pools[0].vdevs.pop();
        f.bonds[0].slaves.pop();
        f.root.fstype = "ext4".into();
        if let Some(md) = f.root.md.as_mut() {
            md.active_members = 1;
        }
        f.bridges.retain(|b| b.name != "br-guest");
        f.addresses.retain(|a| a.iface != "br-storage");
        let m = compare(&plan, &f);
        assert_eq!(
            m,
            vec![
                "root filesystem: expected xfs, found ext4",
                "root md0: degraded, 1 of 2 members active",
                "zpool tank: expected 2 2-disk mirror vdevs, found 1 2-disk mirror vdev",
                "bond bond0: expected 2 members, found 1 (eth0)",
                "bridge br-guest: not found",
                "address br-storage: expected 203.0.113.11/24, found none",
            ]
        );
        let mut f = facts_as_planned(&plan);
        f.pools.clear();
        assert_eq!(
            compare(&plan, &f),
            vec!["zpool tank: expected 2 2-disk mirror vdevs, found no pool"]
        );
    }

    #[test]
    fn zfs_sizes_compare_by_value() {
        assert!(same_property("1M", "1048576"));
        assert!(same_property("lz4", "LZ4"));
        assert!(!same_property("128K", "1M"));
    }
}
