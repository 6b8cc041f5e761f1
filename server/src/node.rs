//! The node record and the time unit every layer shares: a node as stored, its timeline
//! entries, a persisted lease and its changes, milliseconds since the epoch.
//!
//! Plain data with no I/O: decision modules (`dhcp`, `plan`, `render`, `stall`, `groups`)
//! take these types from here, the inventory stores them and re-exports them.

pub use crate::inventory::state::NodeState;
use crate::mac::MacAddr;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub type UnixMs = i64;

/// The current wall-clock time in [`UnixMs`].
pub fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One machine rackseed knows about.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Node {
    pub id: i64,
    pub mac: MacAddr,
    pub hostname: Option<String>,
    pub profile: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub state: NodeState,
    pub state_reason: Option<String>,
    pub arch: Option<String>,
    pub vendor_class: Option<String>,
    pub image: Option<String>,
    pub group: Option<String>,
    pub failure_domain: Option<String>,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
    pub last_seen_at: Option<UnixMs>,
    /// Node-level values that override the profile (a JSON object; see `profiles`).
    pub vars: serde_json::Value,
}

impl Node {
    /// The hostname, or a name made from the MAC for nodes that have none.
    pub fn display_name(&self) -> String {
        self.hostname
            .clone()
            .unwrap_or_else(|| format!("node-{}", self.mac.hyphenated()))
    }
}

/// One entry of a node's timeline.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub node_id: i64,
    pub at: UnixMs,
    pub kind: String,
    pub message: String,
}

/// A persisted DHCP lease (or a declined address, with no MAC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub ip: Ipv4Addr,
    pub mac: Option<MacAddr>,
    pub state: String,
    pub expires_at: UnixMs,
    pub hostname: Option<String>,
}

/// A lease change for [`crate::inventory::store_leases`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseWrite {
    Upsert(LeaseRow),
    Delete(Ipv4Addr),
}

/// The largest event body a node may post.
pub const MAX_EVENT: usize = 64 * 1024;

/// Why a posted timeline event was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRejected {
    #[error("`{0}` is not an event kind (1 to 32 lowercase letters and `_`)")]
    Kind(String),
    #[error("event body over {MAX_EVENT} bytes")]
    TooLarge,
}

/// Whether `kind` names an event: 1 to 32 lowercase ASCII letters and `_`.
pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 32
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// A timeline event a node posts (installer step, enrollment or agent report): the kind
/// is checked and the body becomes its text, as UTF-8 (invalid bytes replaced), with
/// every control character but newline and tab dropped and the ends trimmed. The one
/// check of every route that takes events.
pub fn event_text(kind: &str, body: &[u8]) -> Result<String, EventRejected> {
    if !valid_kind(kind) {
        return Err(EventRejected::Kind(kind.escape_debug().to_string()));
    }
    if body.len() > MAX_EVENT {
        return Err(EventRejected::TooLarge);
    }
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posted_events_are_checked_once_for_every_route() {
        assert_eq!(
            event_text("early_command", b" ok\r\n\x1b[2Jx\ty \n"),
            Ok("ok\n[2Jx\ty".into())
        );
        assert!(matches!(
            event_text("Bad-Kind", b""),
            Err(EventRejected::Kind(_))
        ));
        assert!(matches!(event_text("", b""), Err(EventRejected::Kind(_))));
        assert_eq!(
            event_text(&"a".repeat(33), b""),
            Err(EventRejected::Kind("a".repeat(33)))
        );
        assert_eq!(
            event_text("x", &vec![b'a'; MAX_EVENT + 1]),
            Err(EventRejected::TooLarge)
        );
        assert_eq!(event_text("x", &[0xff, b'a']), Ok("\u{fffd}a".into()));
    }
}
