//! Timeline events: appending in batches with retention, reading pages.

use super::*;

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
        self.with(|c| store_events(c, events))
    }

    /// A node's timeline after event id `after` (0 for all), oldest first, at most `limit`.
    pub fn events(&self, node_id: i64, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT id, node_id, at, kind, message FROM events WHERE node_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3")
                .map_err(q("reading events"))?;
            let rows = st
                .query_map(params![node_id, after, limit], |r| {
                    Ok(Event { id: r.get(0)?, node_id: r.get(1)?, at: r.get(2)?, kind: r.get(3)?, message: r.get(4)? })
                })
                .map_err(q("reading events"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(q("reading events"))
        })
    }

    /// The last `limit` events of a node's timeline, oldest first.
    pub fn recent_events(&self, node_id: i64, limit: u32) -> Result<Vec<Event>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT id, node_id, at, kind, message FROM events WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2")
                .map_err(q("reading events"))?;
            let rows = st
                .query_map(params![node_id, limit], |r| {
                    Ok(Event { id: r.get(0)?, node_id: r.get(1)?, at: r.get(2)?, kind: r.get(3)?, message: r.get(4)? })
                })
                .map_err(q("reading events"))?;
            let mut v = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(q("reading events"))?;
            v.reverse();
            Ok(v)
        })
    }
}

impl Inventory {
    /// Events of every node after event `after`, oldest first (the console's feed).
    pub fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT id, node_id, at, kind, message FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")
                .map_err(q("reading events"))?;
            let rows = st
                .query_map(params![after, limit], |r| {
                    Ok(Event { id: r.get(0)?, node_id: r.get(1)?, at: r.get(2)?, kind: r.get(3)?, message: r.get(4)? })
                })
                .map_err(q("reading events"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(q("reading events"))
        })
    }

    /// When the node's current state began (its newest `state` event).
    pub fn state_since(&self, node_id: i64) -> Result<Option<UnixMs>> {
        self.read(|c| {
            c.query_row(
                "SELECT MAX(at) FROM events WHERE node_id = ?1 AND kind = 'state'",
                [node_id],
                |r| r.get(0),
            )
            .map_err(q("reading events"))
        })
    }

    /// When the node's first event of `kind` since its current state began was stored.
    pub fn first_since_state(&self, node_id: i64, kind: &str) -> Result<Option<UnixMs>> {
        self.read(|c| {
            c.query_row(
                "SELECT MIN(at) FROM events WHERE node_id = ?1 AND kind = ?2 AND id > (SELECT COALESCE(MAX(id), 0) FROM events WHERE node_id = ?1 AND kind = 'state')",
                params![node_id, kind],
                |r| r.get(0),
            )
            .map_err(q("reading events"))
        })
    }

    /// The newest event id (0 when there is none).
    pub fn last_event_id(&self) -> Result<i64> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
                .map_err(q("reading events"))
        })
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
        let list = kinds.iter().map(|_| "?").collect::<Vec<_>>().join(", ");
        let not = if exclude { "NOT " } else { "" };
        let sql = format!(
            "SELECT id, node_id, at, kind, message FROM events WHERE node_id = ?1 AND kind {not}IN ({list}) ORDER BY id DESC LIMIT 1"
        );
        let params: Vec<rusqlite::types::Value> =
            std::iter::once(rusqlite::types::Value::Integer(node_id))
                .chain(
                    kinds
                        .iter()
                        .map(|k| rusqlite::types::Value::Text(k.to_string())),
                )
                .collect();
        self.read(|c| {
            let mut st = c
                .prepare_cached(&sql)
                .map_err(q("reading the latest event"))?;
            st.query_row(rusqlite::params_from_iter(params.iter()), |r| {
                Ok(Event {
                    id: r.get(0)?,
                    node_id: r.get(1)?,
                    at: r.get(2)?,
                    kind: r.get(3)?,
                    message: r.get(4)?,
                })
            })
            .optional()
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
pub fn store_events(conn: &mut Connection, events: &[(i64, UnixMs, String, String)]) -> Result<()> {
    store_events_kept(conn, events, Retention::DEFAULT)
}

/// [`store_events`] with `keep` instead of the default retention.
pub fn store_events_kept(
    conn: &mut Connection,
    events: &[(i64, UnixMs, String, String)],
    keep: Retention,
) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(q("recording events"))?;
    {
        let mut ins = tx
            .prepare_cached(
                "INSERT INTO events (node_id, at, kind, message) SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM nodes WHERE id = ?1)",
            )
            .map_err(q("recording events"))?;
        for (node, at, kind, msg) in events {
            ins.execute(params![node, at, kind, msg])
                .map_err(q("recording events"))?;
        }
        let mut nodes: Vec<i64> = events.iter().map(|e| e.0).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut per_node = tx
            .prepare_cached(
                "DELETE FROM events WHERE node_id = ?1 AND id < (SELECT id FROM events WHERE node_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )
            .map_err(q("pruning events"))?;
        for n in nodes {
            per_node
                .execute(params![n, keep.per_node.saturating_sub(1)])
                .map_err(q("pruning events"))?;
        }
        tx.prepare_cached("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1")
            .and_then(|mut st| st.execute(params![keep.total]))
            .map_err(q("pruning events"))?;
    }
    tx.commit().map_err(q("recording events"))
}

pub(super) fn insert_event(
    c: &Connection,
    node_id: i64,
    at: UnixMs,
    kind: &str,
    message: &str,
) -> Result<i64> {
    c.prepare_cached("INSERT INTO events (node_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut st| st.execute(params![node_id, at, kind, message]))
        .map_err(q("recording an event"))?;
    Ok(c.last_insert_rowid())
}
