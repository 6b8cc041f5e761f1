//! Turns a member's group view into replication set-up: sanoid snapshots, a syncoid
//! push to the peer over SSH with a restricted key per peer, known host keys.
//!
//! The `render_*` functions are pure; `apply` writes the files and runs zfs/systemctl.

use crate::config::{check_retention, valid_dataset};
use crate::facts::is_dns_name;
use crate::groups::GroupView;
use crate::render::escape::{comment_text, unit_text};
use crate::render::sh_quote;
use crate::sshkey::SshPublicKey;
use std::fmt::Write;
use std::net::IpAddr;

/// Marks the block rackseed owns inside a shared file.
pub const BEGIN: &str =
    "# BEGIN rackseed replication (managed by rackseed agent; edits are replaced)";
pub const END: &str = "# END rackseed replication";

/// The private key the agent pushes with.
pub const REPL_KEY: &str = "/root/.ssh/rackseed_repl";

/// Replaces (or appends) the managed block of `existing` with `block`.
pub fn with_block(existing: &str, block: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in existing.lines() {
        if line == BEGIN {
            inside = true;
            continue;
        }
        if line == END {
            inside = false;
            continue;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !block.is_empty() {
        out.push_str(BEGIN);
        out.push('\n');
        out.push_str(block);
        out.push_str(END);
        out.push('\n');
    }
    out
}

/// `authorized_keys` lines: each peer that pushes here, from its replication address
/// only, without a pty or forwarding.
/// Every value below is a parsed type before it is written: an address that is not an
/// IP address, a key that is not a well-formed public key or a hostname that is not a
/// DNS name drops its line (the server checks facts on arrival; this is the second
/// line of defence on the member that writes root's files).
fn peer_address(a: Option<&String>) -> Option<IpAddr> {
    a.and_then(|a| a.parse().ok())
}

pub fn render_authorized_keys(v: &GroupView) -> String {
    let mut out = String::new();
    for p in &v.replication.accept_from {
        let key = p
            .replication_key
            .as_deref()
            .and_then(|k| SshPublicKey::parse(k).ok());
        if let (Some(addr), Some(key)) = (peer_address(p.address.as_ref()), key)
            && is_dns_name(&p.hostname)
        {
            let _ = writeln!(
                out,
                "restrict,from=\"{addr}\" {key} rackseed-repl:{}",
                p.hostname
            );
        }
    }
    out
}

/// `known_hosts` lines for every peer's replication address.
pub fn render_known_hosts(v: &GroupView) -> String {
    let mut out = String::new();
    for p in &v.peers {
        if let Some(addr) = peer_address(p.address.as_ref()) {
            for k in p
                .ssh_host_keys
                .iter()
                .filter_map(|k| SshPublicKey::parse(k).ok())
            {
                let _ = writeln!(out, "{addr} {k}");
            }
        }
    }
    out
}

fn pool_of(dataset: &str) -> &str {
    dataset.split('/').next().unwrap_or(dataset)
}

/// `/etc/sanoid/sanoid.conf`: the member's own datasets snapshotted and pruned with
/// the group's retention; received replicas pruned only.
pub fn render_sanoid(v: &GroupView) -> String {
    let mut out = format!(
        "# Written by the rackseed agent for group {} (version {}). Edits are replaced.\n\n",
        comment_text(&v.group.name),
        v.group.version
    );
    // Only dataset names of ZFS's grammar become sections; anything else is dropped.
    let datasets: Vec<&String> = v
        .group
        .datasets
        .iter()
        .filter(|d| valid_dataset(d))
        .collect();
    for d in &datasets {
        let _ = writeln!(out, "[{d}]\n\tuse_template = rackseed_source\n");
    }
    let mut pools: Vec<&str> = datasets.iter().map(|d| pool_of(d)).collect();
    pools.dedup();
    if !v.replication.accept_from.is_empty() {
        for pool in &pools {
            let _ = writeln!(
                out,
                "[{pool}/replicas]\n\tuse_template = rackseed_replica\n\trecursive = yes\n"
            );
        }
    }
    let mut counts = String::new();
    if check_retention(&v.group.retention).is_ok() {
        for part in v.group.retention.split(',') {
            if let Some((k, n)) = part.split_once('=') {
                let _ = writeln!(counts, "\t{} = {}", k.trim(), n.trim());
            }
        }
    }
    let _ = writeln!(
        out,
        "[template_rackseed_source]\n{counts}\tautosnap = yes\n\tautoprune = yes\n"
    );
    let _ = writeln!(
        out,
        "[template_rackseed_replica]\n{counts}\tautosnap = no\n\tautoprune = yes"
    );
    out
}

/// `/usr/local/lib/rackseed/replicate.sh`: one syncoid push per dataset.
pub fn render_replicate(v: &GroupView) -> String {
    let mut out = String::from(
        "#!/bin/sh\n# Written by the rackseed agent: push this member's datasets to its replication peer.\nset -eu\n",
    );
    match (
        &v.replication.push_to,
        peer_address(v.replication.push_address.as_ref()),
    ) {
        (Some(peer), Some(addr)) => {
            let _ = writeln!(
                out,
                "# group {} version {}: {} -> {} ({addr})",
                comment_text(&v.group.name),
                v.group.version,
                comment_text(&v.me),
                comment_text(peer),
            );
            // A push whose datasets are not ZFS names is dropped, not quoted.
            for p in v
                .replication
                .pushes
                .iter()
                .filter(|p| valid_dataset(&p.source) && valid_dataset(&p.target))
            {
                let _ = writeln!(
                    out,
                    "syncoid --sshkey={REPL_KEY} --sshoption=StrictHostKeyChecking=yes --sshoption=BatchMode=yes --no-privilege-elevation --quiet -- {} {}",
                    sh_quote(&p.source),
                    sh_quote(&format!("root@{addr}:{}", p.target))
                );
            }
        }
        _ => out.push_str("echo 'rackseed: no replication peer yet' >&2\n"),
    }
    out
}

/// The systemd service and timer running `replicate.sh` every `interval_secs`.
pub fn render_units(v: &GroupView) -> (String, String) {
    let service = "[Unit]\nDescription=rackseed: replicate ZFS datasets to the group peer\nAfter=network-online.target zfs.target\nWants=network-online.target\n\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/rackseed agent replicate\n".to_string();
    let timer = format!(
        "[Unit]\nDescription=rackseed: replicate every {s}s (group {g})\n\n[Timer]\nOnBootSec=2min\nOnUnitActiveSec={s}s\nAccuracySec=10s\n\n[Install]\nWantedBy=timers.target\n",
        s = v.group.interval_secs,
        g = unit_text(&v.group.name)
    );
    (service, timer)
}

/// The parents of received replicas (`tank/replicas/<source>`), to exist before a push.
pub fn replica_parents(v: &GroupView) -> Vec<String> {
    let mut out = Vec::new();
    for src in &v.replication.accept_from {
        for d in &v.group.datasets {
            let parent = format!("{}/replicas/{}", pool_of(d), src.hostname);
            if !out.contains(&parent) {
                out.push(parent);
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::groups::{Group, GroupView, PeerView, Push, ReplicationPlan};
    use crate::inventory::NodeState;
    use crate::sshkey::tests::ed25519;

    /// A two-member group view as node1 sees it (node2 its peer), for tests.
    pub(crate) fn view() -> GroupView {
        let peer = PeerView {
            hostname: "node2".into(),
            address: Some("203.0.113.12".into()),
            ssh_host_keys: vec![ed25519(2)],
            replication_key: Some(format!("{} root@node2", ed25519(12))),
            state: NodeState::Enrolled,
        };
        GroupView {
            group: Group {
                name: "rg1".into(),
                min_members: 2,
                failure_domain: None,
                interval_secs: 900,
                retention: "frequently=4,hourly=24".into(),
                datasets: vec!["tank/data".into()],
                replication_network: Some("br-storage".into()),
                version: 7,
            },
            me: "node1".into(),
            members: 2,
            below_minimum: false,
            peers: vec![peer.clone()],
            replication: ReplicationPlan {
                push_to: Some("node2".into()),
                push_address: Some("203.0.113.12".into()),
                pushes: vec![Push {
                    source: "tank/data".into(),
                    target: "tank/replicas/node1/data".into(),
                }],
                accept_from: vec![peer],
            },
        }
    }

    #[test]
    fn restricted_keys_and_known_hosts() {
        let v = view();
        assert_eq!(
            render_authorized_keys(&v),
            format!(
                "restrict,from=\"203.0.113.12\" {} rackseed-repl:node2\n",
                ed25519(12)
            )
        );
        assert_eq!(
            render_known_hosts(&v),
            format!("203.0.113.12 {}\n", ed25519(2))
        );
    }

    /// Hostile values from a peer's facts never reach root's files as anything but a
    /// dropped line or quoted text.
    #[test]
    fn hostile_peer_values_drop_their_line_or_stay_quoted() {
        let hostile = [
            "203.0.113.12\" ssh-ed25519 AAAA evil\n",
            "203.0.113.12\nssh-rsa AAAA",
            "$(reboot)",
            "`id`",
            "203.0.113.12 x",
            "a'b",
            "\0",
            &"9".repeat(5000),
        ];
        for bad in hostile {
            let mut v = view();
            v.replication.accept_from[0].address = Some(bad.to_string());
            v.peers[0].address = Some(bad.to_string());
            v.replication.push_address = Some(bad.to_string());
            assert_eq!(render_authorized_keys(&v), "", "{bad:?}");
            assert_eq!(render_known_hosts(&v), "", "{bad:?}");
            let r = render_replicate(&v);
            assert!(!r.contains("syncoid"), "{bad:?}: {r}");
            let mut v = view();
            v.replication.accept_from[0].replication_key =
                Some(format!("{} x\nssh-ed25519 AAAA y", ed25519(3)));
            v.peers[0].ssh_host_keys = vec![bad.to_string(), format!("{}\n{bad}", ed25519(4))];
            v.replication.accept_from[0].hostname = bad.to_string();
            assert_eq!(render_authorized_keys(&v), "", "{bad:?}");
            assert_eq!(render_known_hosts(&v), "", "{bad:?}");
            let mut v = view();
            v.replication.pushes[0].target = format!("tank/replicas/{bad}");
            v.me = bad.to_string();
            let r = render_replicate(&v);
            if !valid_dataset(&v.replication.pushes[0].target) {
                assert!(!r.contains("syncoid"), "{bad:?}: {r}");
                continue;
            }
            let line = r.lines().find(|l| l.starts_with("syncoid ")).unwrap();
            let quoted = sh_quote(&format!("root@203.0.113.12:tank/replicas/{bad}"));
            assert!(
                line.ends_with(&format!(" -- 'tank/data' {quoted}")),
                "{line}"
            );
            assert_eq!(r.lines().filter(|l| l.starts_with('#')).count(), 3, "{r}");
        }
    }

    #[test]
    fn managed_block_is_replaced_not_duplicated() {
        let once = with_block("ssh-ed25519 OPERATOR ops\n", "A\n");
        let twice = with_block(&once, "B\n");
        assert_eq!(
            twice,
            format!("ssh-ed25519 OPERATOR ops\n{BEGIN}\nB\n{END}\n")
        );
        assert_eq!(with_block(&twice, ""), "ssh-ed25519 OPERATOR ops\n");
    }

    #[test]
    fn sanoid_and_syncoid() {
        let v = view();
        let s = render_sanoid(&v);
        assert!(
            s.contains("[tank/data]\n\tuse_template = rackseed_source"),
            "{s}"
        );
        assert!(
            s.contains("[tank/replicas]\n\tuse_template = rackseed_replica\n\trecursive = yes"),
            "{s}"
        );
        assert!(
            s.contains("\tfrequently = 4\n\thourly = 24\n\tautosnap = yes"),
            "{s}"
        );
        let r = render_replicate(&v);
        assert!(r.contains("syncoid --sshkey=/root/.ssh/rackseed_repl --sshoption=StrictHostKeyChecking=yes --sshoption=BatchMode=yes --no-privilege-elevation --quiet -- 'tank/data' 'root@203.0.113.12:tank/replicas/node1/data'"), "{r}");
        assert_eq!(replica_parents(&v), vec!["tank/replicas/node2"]);
        let (_, timer) = render_units(&v);
        assert!(timer.contains("OnUnitActiveSec=900s"));
    }
}
