//! Replication health: how far behind each group member's replication is, from what
//! its agent reported (`replication` and `replication_failed` events, one per run).
//! Pure: `AppState::replication_health` reads the inventory and passes it in.

use super::{Group, Member};
use crate::node::{NodeState, UnixMs};
use serde::Serialize;

/// A member is behind when its last successful run is older than this many
/// replication intervals (one missed run is tolerated; two are an alarm).
pub const BEHIND_AFTER_INTERVALS: i64 = 2;

/// The event kind of a lag alarm on the member's timeline.
pub const LAG_EVENT: &str = "replication_lag";

/// What the inventory knows of one member's replication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reports {
    /// The newest successful run.
    pub last_ok: Option<UnixMs>,
    /// The newest failed run and what it said.
    pub last_failed: Option<(UnixMs, String)>,
    /// When the member became `enrolled` (runs are expected from then on).
    pub member_since: Option<UnixMs>,
    /// The newest lag alarm on its timeline.
    pub alarmed_at: Option<UnixMs>,
}

/// One member's replication health.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MemberHealth {
    pub node_id: i64,
    pub hostname: String,
    pub last_ok: Option<UnixMs>,
    pub last_failed: Option<UnixMs>,
    pub last_error: Option<String>,
    /// Time since the last successful run (or since it joined, when it has none).
    pub lag_ms: Option<i64>,
    /// `ok`, `behind`, `failing` (the newest run failed, not yet behind), `waiting`
    /// (joined, first run not due yet) or `no peer` (nothing to replicate to).
    pub status: &'static str,
    pub behind: bool,
    /// The alarm is to be raised now (behind, and not alarmed since its last good run).
    pub raise: bool,
    /// The alarm text.
    pub message: String,
}

/// The health of `m`, a member of `g` (which has `active` enrolled members), at `now`.
pub fn member_health(
    g: &Group,
    m: &Member,
    active: usize,
    r: &Reports,
    now: UnixMs,
) -> MemberHealth {
    let interval = i64::try_from(g.interval_secs).unwrap_or(i64::MAX / 4000) * 1000;
    let base = match (r.last_ok, r.member_since) {
        (Some(ok), Some(since)) => Some(ok.max(since)),
        (a, b) => a.or(b),
    };
    let lag = base.map(|b| (now - b).max(0));
    let expected = m.state == NodeState::Enrolled && active >= 2;
    let behind = expected && lag.is_some_and(|l| l > BEHIND_AFTER_INTERVALS * interval);
    let failing = r
        .last_failed
        .as_ref()
        .is_some_and(|(at, _)| r.last_ok.is_none_or(|ok| *at > ok));
    let status = if !expected {
        "no peer"
    } else if behind {
        "behind"
    } else if failing {
        "failing"
    } else if r.last_ok.is_none() {
        "waiting"
    } else {
        "ok"
    };
    let raise = behind && r.alarmed_at.is_none_or(|a| base.is_some_and(|b| a < b));
    let minutes = |ms: i64| format!("{} min", ms / 60_000);
    let message = match (behind, r.last_ok) {
        (false, _) => String::new(),
        (true, Some(ok)) => format!(
            "replication of {} is behind: the last successful run was {} ago; the group replicates every {}{}",
            g.datasets.join(", "),
            minutes(now - ok),
            minutes(interval),
            r.last_failed
                .as_ref()
                .filter(|_| failing)
                .map(|(_, e)| format!("; the last run failed: {e}"))
                .unwrap_or_default()
        ),
        (true, None) => format!(
            "replication of {} is behind: no successful run in the {} since the node joined; the group replicates every {}",
            g.datasets.join(", "),
            minutes(lag.unwrap_or(0)),
            minutes(interval)
        ),
    };
    MemberHealth {
        node_id: m.node_id,
        hostname: m.hostname.clone(),
        last_ok: r.last_ok,
        last_failed: r.last_failed.as_ref().map(|(at, _)| *at),
        last_error: r.last_failed.as_ref().map(|(_, e)| e.clone()),
        lag_ms: lag.filter(|_| expected),
        status,
        behind,
        raise,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Group {
        Group {
            name: "rg1".into(),
            min_members: 2,
            failure_domain: Some("rack".into()),
            interval_secs: 900,
            retention: "hourly=24".into(),
            datasets: vec!["tank/data".into()],
            replication_network: None,
            version: 1,
        }
    }
    fn member(state: NodeState) -> Member {
        Member {
            node_id: 1,
            hostname: "node1".into(),
            state,
            failure_domain: Some("rack-a".into()),
            replication_address: None,
            ssh_host_keys: vec![],
            replication_key: None,
        }
    }
    const MIN: i64 = 60_000;

    #[test]
    fn a_member_is_behind_after_two_missed_intervals_and_alarmed_once() {
        let (g, m) = (group(), member(NodeState::Enrolled));
        let mut r = Reports {
            last_ok: Some(100 * MIN),
            member_since: Some(10 * MIN),
            ..Default::default()
        };
        let h = member_health(&g, &m, 2, &r, 120 * MIN);
        assert_eq!(
            (h.status, h.behind, h.raise, h.lag_ms),
            ("ok", false, false, Some(20 * MIN))
        );
        let h = member_health(&g, &m, 2, &r, 131 * MIN);
        assert_eq!((h.status, h.behind, h.raise), ("behind", true, true));
        assert_eq!(
            h.message,
            "replication of tank/data is behind: the last successful run was 31 min ago; the group replicates every 15 min"
        );
        // Alarmed since the last good run: not again.
        r.alarmed_at = Some(131 * MIN);
        let h = member_health(&g, &m, 2, &r, 140 * MIN);
        assert_eq!((h.behind, h.raise), (true, false));
        // A good run clears it; falling behind again alarms again.
        r.last_ok = Some(141 * MIN);
        assert_eq!(member_health(&g, &m, 2, &r, 142 * MIN).status, "ok");
        assert!(member_health(&g, &m, 2, &r, 172 * MIN).raise);
    }

    #[test]
    fn failures_new_members_and_lonely_members() {
        let (g, m) = (group(), member(NodeState::Enrolled));
        let r = Reports {
            last_ok: Some(100 * MIN),
            last_failed: Some((110 * MIN, "ssh: connect refused".into())),
            member_since: Some(10 * MIN),
            alarmed_at: None,
        };
        assert_eq!(member_health(&g, &m, 2, &r, 115 * MIN).status, "failing");
        let h = member_health(&g, &m, 2, &r, 135 * MIN);
        assert!(
            h.message
                .ends_with("; the last run failed: ssh: connect refused"),
            "{}",
            h.message
        );
        // Joined, no run yet: waiting, then behind.
        let new = Reports {
            member_since: Some(0),
            ..Default::default()
        };
        assert_eq!(member_health(&g, &m, 2, &new, 5 * MIN).status, "waiting");
        let h = member_health(&g, &m, 2, &new, 31 * MIN);
        assert!(
            h.raise && h.message.contains("no successful run in the 31 min"),
            "{}",
            h.message
        );
        // Alone in its group, or not enrolled: nothing expected.
        assert_eq!(member_health(&g, &m, 1, &new, 99 * MIN).status, "no peer");
        let ready = member(NodeState::Ready);
        let h = member_health(&g, &ready, 2, &new, 99 * MIN);
        assert_eq!((h.status, h.behind, h.lag_ms), ("no peer", false, None));
    }
}
