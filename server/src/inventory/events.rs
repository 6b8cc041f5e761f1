//! Timeline events: appending in batches with retention, reading pages.

use super::*;

const EVENT_COLS: &str = "id, node_id, at, kind, message";

fn event_from_row(r: &Row) -> std::result::Result<Event, DbError> {
    Ok(Event {
        id: r.get(0)?,
        node_id: r.get(1)?,
        at: r.get(2)?,
        kind: r.get(3)?,
        message: r.get(4)?,
    })
}

impl Inventory {
    /// Appends an event to a node's timeline.
    pub fn record_event(
        &self,
        node_id: i64,
        kind: &str,
        message: &str,
        now: UnixMs,
    ) -> Result<i64> {
        self.with(|c| insert_event(c, node_id, now, kind, message))
    }

    /// Appends many events in one transaction.
    pub fn record_events(&self, events: &[(i64, UnixMs, String, String)]) -> Result<()> {
        self.with(|c| store_events_once(c, events, Retention::DEFAULT))
    }

    fn events_where(&self, sql: &str, params: &[db::Value]) -> Result<Vec<Event>> {
        self.read(|c| {
            c.query(sql, params)
                .and_then(|all| rows(all, event_from_row))
                .map_err(q("reading events"))
        })
    }

    /// A node's timeline after event id `after` (0 for all), oldest first, at most `limit`.
    pub fn events(&self, node_id: i64, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.events_where(
            &format!("SELECT {EVENT_COLS} FROM events WHERE node_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"),
            p![node_id, after, limit],
        )
    }

    /// The last `limit` events of a node's timeline, oldest first.
    pub fn recent_events(&self, node_id: i64, limit: u32) -> Result<Vec<Event>> {
        let mut v = self.events_where(
            &format!(
                "SELECT {EVENT_COLS} FROM events WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2"
            ),
            p![node_id, limit],
        )?;
        v.reverse();
        Ok(v)
    }

    /// Events of every node after event `after`, oldest first (the console's feed).
    pub fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.events_where(
            &format!("SELECT {EVENT_COLS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"),
            p![after, limit],
        )
    }

    fn one_number(&self, sql: &str, params: &[db::Value]) -> Result<Option<i64>> {
        self.read(|c| {
            c.query_one(sql, params)
                .and_then(|r| r.get(0))
                .map_err(q("reading events"))
        })
    }

    /// When the node's current state began (its newest `state` event).
    pub fn state_since(&self, node_id: i64) -> Result<Option<UnixMs>> {
        self.one_number(
            "SELECT MAX(at) FROM events WHERE node_id = ?1 AND kind = 'state'",
            p![node_id],
        )
    }

    /// When the node's first event of `kind` since its current state began was stored.
    pub fn first_since_state(&self, node_id: i64, kind: &str) -> Result<Option<UnixMs>> {
        self.one_number(
            "SELECT MIN(at) FROM events WHERE node_id = ?1 AND kind = ?2 AND id > (SELECT COALESCE(MAX(id), 0) FROM events WHERE node_id = ?1 AND kind = 'state')",
            p![node_id, kind],
        )
    }

    /// The newest event id (0 when there is none).
    pub fn last_event_id(&self) -> Result<i64> {
        Ok(self
            .one_number("SELECT COALESCE(MAX(id), 0) FROM events", &[])?
            .unwrap_or(0))
    }

    /// A node's newest event among `kinds` (or of any kind but those, with `exclude`).
    /// Walks the node's timeline newest first on `events_by_node`, so its cost is the
    /// node's own events, not the whole table.
    pub fn latest_event(
        &self,
        node_id: i64,
        kinds: &[&str],
        exclude: bool,
    ) -> Result<Option<Event>> {
        let list = (0..kinds.len())
            .map(|i| format!("?{}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let not = if exclude { "NOT " } else { "" };
        // `IN ()` is not SQL: an empty list matches nothing (or, excluded, everything).
        let filter = if kinds.is_empty() {
            if exclude {
                "1 = 1".to_string()
            } else {
                "1 = 0".to_string()
            }
        } else {
            format!("kind {not}IN ({list})")
        };
        let sql = format!(
            "SELECT {EVENT_COLS} FROM events WHERE node_id = ?1 AND {filter} ORDER BY id DESC LIMIT 1"
        );
        let params: Vec<db::Value> = std::iter::once(db::Value::Int(node_id))
            .chain(kinds.iter().map(|k| db::Value::Text(k.to_string())))
            .collect();
        self.read(|c| {
            c.query_opt(&sql, &params)
                .and_then(|r| r.as_ref().map(event_from_row).transpose())
                .map_err(q("reading the latest event"))
        })
    }
}

/// How many timeline events are kept: the newest `per_node` of each node and about the
/// newest `total` in all; older ones are deleted as new ones arrive.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub per_node: u32,
    pub total: u32,
}

impl Retention {
    /// 5,000 per node (several installs with full installer syslog), 2,000,000 in all
    /// (a few hundred MB of SQLite at most).
    pub const DEFAULT: Retention = Retention {
        per_node: 5_000,
        total: 2_000_000,
    };
}

/// Appends many events in one transaction on `conn` (the event writer's own
/// connection); events of nodes deleted meanwhile are skipped instead of failing the
/// batch.
pub fn store_events(conn: &mut Conn, events: &[(i64, UnixMs, String, String)]) -> Result<()> {
    store_events_kept(conn, events, Retention::DEFAULT)
}

/// [`store_events`] with `keep` instead of the default retention.
pub fn store_events_kept(
    conn: &mut Conn,
    events: &[(i64, UnixMs, String, String)],
    keep: Retention,
) -> Result<()> {
    retry_serializable(conn, &mut |conn| store_events_once(conn, events, keep))
}

fn store_events_once(
    conn: &mut Conn,
    events: &[(i64, UnixMs, String, String)],
    keep: Retention,
) -> Result<()> {
    let mut tx = conn.transaction().map_err(q("recording events"))?;
    for (node, at, kind, msg) in events {
        tx.execute(
            "INSERT INTO events (node_id, at, kind, message) SELECT CAST(?1 AS BIGINT), CAST(?2 AS BIGINT), ?3, ?4 WHERE EXISTS (SELECT 1 FROM nodes WHERE id = ?1)",
            p![node, at, kind, msg],
        )
        .map_err(q("recording events"))?;
    }
    let mut nodes: Vec<i64> = events.iter().map(|e| e.0).collect();
    nodes.sort_unstable();
    nodes.dedup();
    for n in nodes {
        tx.execute(
            "DELETE FROM events WHERE node_id = ?1 AND id < (SELECT id FROM events WHERE node_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            p![n, keep.per_node.saturating_sub(1)],
        )
        .map_err(q("pruning events"))?;
    }
    tx.execute(
        "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1",
        p![keep.total],
    )
    .map_err(q("pruning events"))?;
    tx.commit().map_err(q("recording events"))
}

pub(super) fn insert_event(
    c: &mut Conn,
    node_id: i64,
    at: UnixMs,
    kind: &str,
    message: &str,
) -> Result<i64> {
    c.query_one(
        "INSERT INTO events (node_id, at, kind, message) VALUES (?1, ?2, ?3, ?4) RETURNING id",
        p![node_id, at, kind, message],
    )
    .and_then(|r| r.get(0))
    .map_err(q("recording an event"))
}
