//! What the technician's console shows: the rows of the node overview (current step,
//! time in it, stalled or failed), filters, durations and the redaction of previews.
//!
//! Pure: `http::ui` reads the inventory and passes the nodes and their latest events
//! in; the templates in `server/ui/` render what this returns.

use crate::node::{Event, Node, NodeState, UnixMs};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Event kinds that are notes about a node, not a step it took.
pub const NOT_STEPS: &[&str] = &["syslog", "stalled", "question", "error", "group"];

/// The overview's filters (query parameters); an empty value matches everything.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Filters {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub group: String,
    /// The node's failure-domain value (its rack).
    #[serde(default)]
    pub rack: String,
}

impl Filters {
    fn keeps(&self, n: &Node) -> bool {
        let is = |want: &str, have: Option<&str>| want.is_empty() || have == Some(want);
        is(&self.state, Some(n.state.as_str()))
            && is(&self.profile, n.profile.as_deref())
            && is(&self.group, n.group.as_deref())
            && is(&self.rack, n.failure_domain.as_deref())
    }
}

/// One row of the overview.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub name: String,
    pub mac: String,
    pub state: String,
    pub profile: String,
    pub group: String,
    pub rack: String,
    /// The kind of the last step event (`dhcp`, `preseed`, `syslog` is not a step).
    pub step: String,
    pub step_message: String,
    /// When the step began (ms since the epoch; 0 when no step).
    pub since: UnixMs,
    /// The time in the step, as text ("3 min 12 s").
    pub in_step: String,
    /// A `stalled` event is newer than the node's last progress.
    pub stalled: bool,
    pub stall_message: String,
    pub failed: bool,
    /// `failed`, `stalled` or `` (the row's highlight).
    pub alert: &'static str,
}

/// The latest events the overview needs, per node id.
#[derive(Default)]
pub struct Latest {
    /// The newest event whose kind is a step (not in [`NOT_STEPS`]).
    pub step: HashMap<i64, Event>,
    /// The stall of each stalled node (what [`crate::stall::stall_of`] says now).
    pub stalls: HashMap<i64, String>,
}

/// The overview's rows for `nodes` (those `filters` keep), failed first, then
/// stalled, then by name.
pub fn rows(nodes: &[Node], latest: &Latest, now: UnixMs, filters: &Filters) -> Vec<Row> {
    let mut out: Vec<Row> = nodes
        .iter()
        .filter(|n| filters.keeps(n))
        .map(|n| {
            let step = latest.step.get(&n.id);
            let stall = latest.stalls.get(&n.id);
            let failed = n.state == NodeState::Failed;
            let since = step.map_or(0, |e| e.at);
            Row {
                id: n.id,
                name: n.display_name(),
                mac: n.mac.to_string(),
                state: n.state.as_str().to_string(),
                profile: n.profile.clone().unwrap_or_default(),
                group: n.group.clone().unwrap_or_default(),
                rack: n.failure_domain.clone().unwrap_or_default(),
                step: step.map(|e| e.kind.clone()).unwrap_or_default(),
                step_message: step.map(|e| e.message.clone()).unwrap_or_default(),
                since,
                in_step: if since > 0 {
                    duration_text(now - since)
                } else {
                    String::new()
                },
                stalled: stall.is_some(),
                stall_message: stall.cloned().unwrap_or_default(),
                failed,
                alert: if failed {
                    "failed"
                } else if stall.is_some() {
                    "stalled"
                } else {
                    ""
                },
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let rank = |r: &Row| match r.alert {
            "failed" => 0,
            "stalled" => 1,
            _ => 2,
        };
        rank(a).cmp(&rank(b)).then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// The distinct values of each filter among `nodes` (for the filter menus).
pub fn filter_values(nodes: &[Node]) -> HashMap<&'static str, Vec<String>> {
    let mut m: HashMap<&'static str, Vec<String>> = HashMap::new();
    for n in nodes {
        let vals = [
            ("state", Some(n.state.as_str().to_string())),
            ("profile", n.profile.clone()),
            ("group", n.group.clone()),
            ("rack", n.failure_domain.clone()),
        ];
        for (k, v) in vals {
            if let Some(v) = v {
                let list = m.entry(k).or_default();
                if !list.contains(&v) {
                    list.push(v);
                }
            }
        }
    }
    for list in m.values_mut() {
        list.sort();
    }
    m
}

/// A duration as the console shows it: `42 s`, `3 min 12 s`, `2 h 5 min`, `3 d 4 h`.
pub fn duration_text(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The words that mark a secret's line in a rendered file (debconf passwords, keys).
const SECRET_MARKS: &[&str] = &["password", "passwd", "secret", "private"];

/// `text` with every occurrence of `secrets` replaced and the value of every line
/// that names a password or key cut (a preview for the console).
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let lower = line.to_ascii_lowercase();
        if SECRET_MARKS.iter().any(|m| lower.contains(m))
            && let Some(cut) = secret_value_start(line)
        {
            out.push_str(&line[..cut]);
            out.push_str("‹redacted›");
            if line.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        let mut l = line.to_string();
        for s in secrets.iter().filter(|s| s.len() >= 8) {
            l = l.replace(s, "‹redacted›");
        }
        out.push_str(&l);
    }
    out
}

/// Where the value of a `key value` / `key=value` / `key: value` secret line starts.
fn secret_value_start(line: &str) -> Option<usize> {
    // debconf: `d-i passwd/root-password-crypted password $6$…`: after the type word.
    let words: Vec<(usize, &str)> = line
        .split_whitespace()
        .map(|w| (w.as_ptr() as usize - line.as_ptr() as usize, w))
        .collect();
    if words.len() >= 4 && words[0].1 == "d-i" {
        return Some(words[3].0);
    }
    line.find(['=', ':']).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i64, name: &str, state: NodeState) -> Node {
        Node {
            id,
            hostname: Some(name.into()),
            state,
            failure_domain: Some(format!("rack-{}", id % 2)),
            ..crate::plan::sample_node("lab", crate::plan::Firmware::Bios, serde_json::Value::Null)
        }
    }
    fn ev(id: i64, node: i64, at: UnixMs, kind: &str, msg: &str) -> Event {
        Event {
            id,
            node_id: node,
            at,
            kind: kind.into(),
            message: msg.into(),
        }
    }

    #[test]
    fn rows_show_the_step_its_time_and_stalls_and_failures_first() {
        let nodes = [
            node(1, "a1", NodeState::Installing),
            node(2, "b2", NodeState::Installing),
            node(3, "c3", NodeState::Failed),
            node(4, "d4", NodeState::Provisioning),
        ];
        let mut l = Latest::default();
        l.step
            .insert(1, ev(10, 1, 1_000, "preseed", "preseed.cfg served"));
        l.step
            .insert(2, ev(20, 2, 1_000, "preseed", "preseed.cfg served"));
        l.stalls.insert(2, "no progress for 15 min".into());
        let r = rows(&nodes, &l, 193_000, &Filters::default());
        let names: Vec<_> = r.iter().map(|r| (r.name.as_str(), r.alert)).collect();
        assert_eq!(
            names,
            [("c3", "failed"), ("b2", "stalled"), ("a1", ""), ("d4", "")]
        );
        assert_eq!(r[1].stall_message, "no progress for 15 min");
        assert_eq!(
            (r[2].step.as_str(), r[2].in_step.as_str()),
            ("preseed", "3 min 12 s")
        );
        assert_eq!(r[3].in_step, "");
        let only = Filters {
            rack: "rack-1".into(),
            state: "installing".into(),
            ..Default::default()
        };
        let r = rows(&nodes, &l, 0, &only);
        assert_eq!(r.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
        let v = filter_values(&nodes);
        assert_eq!(v["state"], ["failed", "installing", "provisioning"]);
        assert_eq!(v["rack"], ["rack-0", "rack-1"]);
    }

    #[test]
    fn durations_read_as_a_technician_says_them() {
        assert_eq!(duration_text(-5), "0 s");
        assert_eq!(duration_text(59_999), "59 s");
        assert_eq!(duration_text(3_600_000 + 5 * 60_000), "1 h 5 min");
        assert_eq!(duration_text(3 * 86_400_000 + 4 * 3_600_000), "3 d 4 h");
    }

    #[test]
    fn previews_hide_tokens_and_password_values() {
        let text = "d-i passwd/root-password-crypted password $6$salt$hash\nurl=http://x/install/0123456789abcdef/late.sh\nTOKEN=0123456789abcdef\nmirror=http://m/debian\n";
        let r = redact(text, &["0123456789abcdef"]);
        assert_eq!(
            r,
            "d-i passwd/root-password-crypted password ‹redacted›\nurl=http://x/install/‹redacted›/late.sh\nTOKEN=‹redacted›\nmirror=http://m/debian\n"
        );
    }
}
