//! The inventory: nodes, their timelines, tokens and DHCP leases in one SQLite file.
//!
//! Owns the schema, its migrations and every query. State changes go through
//! [`Inventory::transition`], which asks [`state::next_state`] and stores the result and
//! its event in one transaction. Does not decide anything about DHCP or boot files.

pub mod state;

use crate::mac::MacAddr;
pub use crate::node::{Event, LeaseRow, LeaseWrite, Node, UnixMs, now_ms};
use rusqlite::{Connection, OptionalExtension, params};
pub use state::{NodeState, Transition, TransitionError};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A failed inventory operation.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("inventory database `{path}` could not be opened")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("inventory query failed while {doing}")]
    Query {
        doing: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "inventory database `{path}` has schema version {found}, newer than this rackseed ({known}); upgrade rackseed"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "cannot store the change while {doing}: the disk holding the data directory is full; free space there (nothing stored was lost, and rackseed keeps running)"
    )]
    DiskFull { doing: &'static str },
    #[error(
        "the inventory stayed locked by another writer for 10 s while {doing}; retry (is another process holding the database open for writing?)"
    )]
    Busy {
        doing: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A node would break its group's placement rule (see `groups::check_placement`).
    #[error("{0}")]
    Placement(String),
    #[error("node {node}: {source}")]
    Transition {
        node: String,
        #[source]
        source: TransitionError,
    },
}

type Result<T> = std::result::Result<T, InventoryError>;

fn q(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> InventoryError {
    move |source| match &source {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull => {
            InventoryError::DiskFull { doing }
        }
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            InventoryError::Busy { doing, source }
        }
        _ => InventoryError::Query { doing, source },
    }
}

/// Migrations in order; the database's `user_version` says how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: nodes, events, tokens, leases.
    "CREATE TABLE nodes (
        id INTEGER PRIMARY KEY,
        mac TEXT NOT NULL UNIQUE,
        hostname TEXT UNIQUE,
        profile TEXT,
        ip TEXT UNIQUE,
        state TEXT NOT NULL,
        state_reason TEXT,
        arch TEXT,
        vendor_class TEXT,
        image TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_seen_at INTEGER
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX events_by_node ON events(node_id, id);
    CREATE TABLE tokens (
        token TEXT PRIMARY KEY,
        node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
    );
    CREATE INDEX tokens_by_node ON tokens(node_id, kind);
    CREATE TABLE leases (
        ip TEXT PRIMARY KEY,
        mac TEXT,
        state TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        hostname TEXT
    );
    CREATE UNIQUE INDEX leases_by_mac ON leases(mac) WHERE mac IS NOT NULL;",
    // 2: redundancy groups, node placement, facts, certificates.
    "ALTER TABLE nodes ADD COLUMN grp TEXT;
    ALTER TABLE nodes ADD COLUMN failure_domain TEXT;
    ALTER TABLE nodes ADD COLUMN facts TEXT;
    ALTER TABLE nodes ADD COLUMN cert_serial TEXT;
    CREATE TABLE groups (
        name TEXT PRIMARY KEY,
        min_members INTEGER NOT NULL,
        failure_domain TEXT,
        interval_secs INTEGER NOT NULL,
        retention TEXT NOT NULL,
        datasets TEXT NOT NULL,
        replication_network TEXT,
        version INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL
    );",
    // 3: per-node variables (addresses, disk devices) that override profile values.
    "ALTER TABLE nodes ADD COLUMN vars TEXT NOT NULL DEFAULT '{}';",
    // 4: the replication public key a node sends at enrollment.
    "ALTER TABLE nodes ADD COLUMN repl_key TEXT;",
];

/// What a new node is created with.
#[derive(Clone, Debug, Default)]
pub struct NewNode {
    pub mac: Option<MacAddr>,
    pub hostname: String,
    pub profile: String,
    pub ip: Option<Ipv4Addr>,
    pub provision: bool,
    pub group: Option<String>,
    pub failure_domain: Option<String>,
    /// Node-level overrides (a JSON object); `Null` means none.
    pub vars: serde_json::Value,
}

/// What a DHCP packet told about an unknown machine.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub arch: Option<String>,
    pub vendor_class: Option<String>,
}

/// The kinds of token rackseed issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Lets the installer fetch its preseed and scripts and report events.
    Install,
    /// Lets the agent enroll once.
    Enroll,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Install => "install",
            TokenKind::Enroll => "enroll",
        }
    }
}

/// The fields of a node that DHCP decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeKey {
    pub id: i64,
    pub hostname: Option<String>,
}

/// What the DHCP server stores in one transaction before it sends the replies of a
/// batch: machines to record as discovered, last-seen updates, lease changes.
#[derive(Debug, Default)]
pub struct DhcpWrites {
    pub discover: Vec<(MacAddr, Discovery)>,
    pub seen: Vec<(i64, Discovery)>,
    pub leases: Vec<LeaseWrite>,
    pub events: Vec<DhcpEvent>,
}

impl DhcpWrites {
    /// True when there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.discover.is_empty()
            && self.seen.is_empty()
            && self.leases.is_empty()
            && self.events.is_empty()
    }
}

/// A timeline event of a DHCP batch: for `node`, or, when the machine is discovered in
/// the same batch, for the node of `mac`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpEvent {
    pub node: Option<i64>,
    pub mac: MacAddr,
    pub at: UnixMs,
    pub kind: &'static str,
    pub message: String,
}

/// A machine recorded (or found) by [`store_dhcp`]: its MAC, its node, whether new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub mac: MacAddr,
    pub node: NodeKey,
    pub fresh: bool,
}

/// A freshly issued random token: 32 bytes as URL-safe hex.
pub fn new_token() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}

/// Valid DNS hostname (one label or a dotted name), as the installer and agent need it.
pub fn valid_hostname(h: &str) -> bool {
    crate::facts::is_dns_name(h)
}

/// The SQLite inventory. Cheap to share behind an `Arc`; each call takes the connection
/// lock briefly.
pub struct Inventory {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Read-only connections for lookups: under WAL they read the last committed state
    /// without waiting for the writer, so a long write (an fsync, a big batch) does not
    /// stall DHCP, TFTP or syslog attribution.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicU64,
    /// Bumped after every committed change to which MACs are nodes or to their
    /// hostnames (see [`Inventory::generation`]).
    generation: AtomicU64,
}

/// Read-only connections per inventory.
const READERS: usize = 4;

const NODE_COLS: &str = "id, mac, hostname, profile, ip, state, state_reason, arch, vendor_class, image, grp, failure_domain, created_at, updated_at, last_seen_at, vars";

fn node_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    let mac: String = r.get(1)?;
    let ip: Option<String> = r.get(4)?;
    let state: String = r.get(5)?;
    let conv = |i, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok(Node {
        id: r.get(0)?,
        mac: mac
            .parse()
            .map_err(|e: crate::mac::MacParseError| conv(1, e.to_string()))?,
        hostname: r.get(2)?,
        profile: r.get(3)?,
        ip: ip
            .map(|s| s.parse().map_err(|_| conv(4, format!("bad ip {s}"))))
            .transpose()?,
        state: state.parse().map_err(|e| conv(5, e))?,
        state_reason: r.get(6)?,
        arch: r.get(7)?,
        vendor_class: r.get(8)?,
        image: r.get(9)?,
        group: r.get(10)?,
        failure_domain: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
        last_seen_at: r.get(14)?,
        vars: {
            let text: String = r.get(15)?;
            serde_json::from_str(&text).map_err(|e| conv(15, format!("bad vars: {e}")))?
        },
    })
}

/// Opens a connection with rackseed's pragmas (WAL, foreign keys, a busy timeout).
pub fn connect(path: &Path) -> Result<Connection> {
    let open_err = |source| InventoryError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(open_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .map_err(open_err)?;
    Ok(conn)
}

impl Inventory {
    /// Opens (creating if needed, with mode 0600) and migrates the inventory at `path`.
    pub fn open(path: &Path) -> Result<Inventory> {
        if !path.exists() {
            create_private(path).map_err(|e| InventoryError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let mut conn = connect(path)?;
        migrate(&mut conn, path)?;
        let readers = (0..READERS)
            .map(|_| {
                let c = connect(path)?;
                c.execute_batch("PRAGMA query_only = ON;")
                    .map_err(|source| InventoryError::Open {
                        path: path.display().to_string(),
                        source,
                    })?;
                Ok(Mutex::new(c))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Inventory {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            readers,
            next_reader: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A counter that changes after every committed change, through this inventory, to
    /// which MACs are nodes or to a node's hostname (adding, assigning, deleting; not
    /// DHCP discovery, whose writer updates its own view). A cache of
    /// [`Inventory::node_key_by_mac`] answers is valid while this stays the same; read it
    /// before the lookup whose answer is cached.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed_nodes(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The id and hostname of the node with this MAC, if any (what DHCP decides on).
    pub fn node_key_by_mac(&self, mac: MacAddr) -> Result<Option<NodeKey>> {
        self.read(|c| {
            c.prepare_cached("SELECT id, hostname FROM nodes WHERE mac = ?1")
                .and_then(|mut st| {
                    st.query_row([mac.to_string()], |r| {
                        Ok(NodeKey {
                            id: r.get(0)?,
                            hostname: r.get(1)?,
                        })
                    })
                    .optional()
                })
                .map_err(q("looking up a node by MAC"))
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Runs a read on a free read-only connection (or waits for the next one in turn).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        for r in &self.readers {
            if let Ok(guard) = r.try_lock() {
                return f(&guard);
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) as usize % self.readers.len();
        let guard = self.readers[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// The node with this MAC, if any.
    pub fn node_by_mac(&self, mac: MacAddr) -> Result<Option<Node>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE mac = ?1"),
                [mac.to_string()],
                node_from_row,
            )
            .optional()
            .map_err(q("looking up a node by MAC"))
        })
    }

    /// The node with this id, if any.
    pub fn node_by_id(&self, id: i64) -> Result<Option<Node>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"),
                [id],
                node_from_row,
            )
            .optional()
            .map_err(q("looking up a node by id"))
        })
    }

    /// The node an operator means by `key`: an id, a MAC or a hostname.
    pub fn find_node(&self, key: &str) -> Result<Node> {
        let found = if let Ok(mac) = key.parse::<MacAddr>() {
            self.node_by_mac(mac)?
        } else if let Ok(id) = key.parse::<i64>() {
            self.node_by_id(id)?
        } else {
            self.read(|c| {
                c.query_row(
                    &format!("SELECT {NODE_COLS} FROM nodes WHERE hostname = ?1"),
                    [key],
                    node_from_row,
                )
                .optional()
                .map_err(q("looking up a node by hostname"))
            })?
        };
        found.ok_or_else(|| InventoryError::NotFound(format!("node `{key}`")))
    }

    /// The node that currently holds `ip` as its fixed address.
    pub fn node_by_ip(&self, ip: Ipv4Addr) -> Result<Option<Node>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE ip = ?1"),
                [ip.to_string()],
                node_from_row,
            )
            .optional()
            .map_err(q("looking up a node by address"))
        })
    }

    /// Every node, by id.
    pub fn list_nodes(&self) -> Result<Vec<Node>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(&format!("SELECT {NODE_COLS} FROM nodes ORDER BY id"))
                .map_err(q("listing nodes"))?;
            let rows = st
                .query_map([], node_from_row)
                .map_err(q("listing nodes"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(q("listing nodes"))
        })
    }

    /// Counts of nodes per state (for metrics).
    pub fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT state, COUNT(*) FROM nodes GROUP BY state")
                .map_err(q("counting nodes"))?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(q("counting nodes"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(q("counting nodes"))
        })
    }

    /// Records an unknown machine as `discovered`; returns the node and whether it is new.
    pub fn discover(&self, mac: MacAddr, info: &Discovery, now: UnixMs) -> Result<(Node, bool)> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(q("discovering a node"))?;
            let (key, fresh) = discover_tx(&tx, mac, info, now)?;
            let n = tx
                .query_row(
                    &format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"),
                    [key.id],
                    node_from_row,
                )
                .map_err(q("discovering a node"))?;
            tx.commit().map_err(q("discovering a node"))?;
            Ok((n, fresh))
        })
    }

    /// Adds a node, or assigns a `discovered` node with the same MAC. Issues an install
    /// token when the node goes straight to `provisioning`.
    pub fn add_node(&self, new: &NewNode, token_ttl: Duration, now: UnixMs) -> Result<Node> {
        let mac = new
            .mac
            .ok_or_else(|| InventoryError::Conflict("a node needs a MAC address".into()))?;
        if !valid_hostname(&new.hostname) {
            return Err(InventoryError::Conflict(format!(
                "`{}` is not a valid hostname (letters, digits and `-`, dot-separated labels of at most 63)",
                new.hostname
            )));
        }
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(q("adding a node"))?;
            let taken: Option<String> = tx
                .query_row("SELECT mac FROM nodes WHERE hostname = ?1 AND mac != ?2", params![new.hostname, mac.to_string()], |r| r.get(0))
                .optional()
                .map_err(q("adding a node"))?;
            if let Some(other) = taken {
                return Err(InventoryError::Conflict(format!("hostname `{}` is already used by node {other}", new.hostname)));
            }
            if let Some(ip) = new.ip {
                let taken: Option<String> = tx
                    .query_row("SELECT mac FROM nodes WHERE ip = ?1 AND mac != ?2", params![ip.to_string(), mac.to_string()], |r| r.get(0))
                    .optional()
                    .map_err(q("adding a node"))?;
                if let Some(other) = taken {
                    return Err(InventoryError::Conflict(format!("address {ip} is already reserved for node {other}")));
                }
            }
            let existing = tx
                .query_row(&format!("SELECT {NODE_COLS} FROM nodes WHERE mac = ?1"), [mac.to_string()], node_from_row)
                .optional()
                .map_err(q("adding a node"))?;
            let t = Transition::Assign { provision: new.provision };
            let id = match existing {
                Some(n) => {
                    let to = state::next_state(n.state, &t)
                        .map_err(|source| InventoryError::Transition { node: mac.to_string(), source })?;
                    tx.execute(
                        "UPDATE nodes SET hostname = ?2, profile = ?3, ip = ?4, grp = ?5, failure_domain = ?6, state = ?7, state_reason = NULL, updated_at = ?8, vars = ?9 WHERE id = ?1",
                        params![n.id, new.hostname, new.profile, new.ip.map(|i| i.to_string()), new.group, new.failure_domain, to.as_str(), now, vars_text(&new.vars)],
                    )
                    .map_err(q("adding a node"))?;
                    insert_event(&tx, n.id, now, "state", &format!("{} → {to}: assigned hostname {} and profile {}", n.state, new.hostname, new.profile))?;
                    n.id
                }
                None => {
                    let to = state::next_state(NodeState::Discovered, &t)
                        .map_err(|source| InventoryError::Transition { node: mac.to_string(), source })?;
                    tx.execute(
                        "INSERT INTO nodes (mac, hostname, profile, ip, grp, failure_domain, state, created_at, updated_at, vars) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                        params![mac.to_string(), new.hostname, new.profile, new.ip.map(|i| i.to_string()), new.group, new.failure_domain, to.as_str(), now, vars_text(&new.vars)],
                    )
                    .map_err(q("adding a node"))?;
                    let id = tx.last_insert_rowid();
                    insert_event(&tx, id, now, "state", &format!("added as {to} with hostname {} and profile {}", new.hostname, new.profile))?;
                    id
                }
            };
            let node = tx
                .query_row(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"), [id], node_from_row)
                .map_err(q("adding a node"))?;
            if node.state == NodeState::Provisioning {
                issue_token_tx(&tx, id, TokenKind::Install, token_ttl, now)?;
            }
            tx.commit().map_err(q("adding a node"))?;
            Ok(node)
        })
        .inspect(|_| self.changed_nodes())
    }

    /// Deletes a node with its timeline and tokens; frees its lease.
    pub fn delete_node(&self, id: i64) -> Result<()> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(q("deleting a node"))?;
            let mac: Option<String> = tx
                .query_row("SELECT mac FROM nodes WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(q("deleting a node"))?;
            let Some(mac) = mac else {
                return Err(InventoryError::NotFound(format!("node {id}")));
            };
            tx.execute("DELETE FROM nodes WHERE id = ?1", [id])
                .map_err(q("deleting a node"))?;
            tx.execute("DELETE FROM leases WHERE mac = ?1", [mac])
                .map_err(q("deleting a node"))?;
            tx.commit().map_err(q("deleting a node"))
        })
        .inspect(|_| self.changed_nodes())
    }

    /// Applies a transition: checks it against the state machine, stores the new state
    /// and a `state` event, and issues a fresh install token on entering `provisioning`
    /// (old install tokens of the node stop working).
    pub fn transition(
        &self,
        id: i64,
        t: &Transition,
        token_ttl: Duration,
        now: UnixMs,
    ) -> Result<Node> {
        self.transition_with_event(id, None, t, token_ttl, now)
    }

    /// Like [`Inventory::transition`], storing the event `(kind, message)` that caused
    /// it first, in the same transaction: a refused transition stores neither.
    pub fn transition_with_event(
        &self,
        id: i64,
        cause: Option<(&str, &str)>,
        t: &Transition,
        token_ttl: Duration,
        now: UnixMs,
    ) -> Result<Node> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(q("changing node state"))?;
            if let Some((kind, message)) = cause {
                insert_event(&tx, id, now, kind, message)?;
            }
            let n = tx
                .query_row(
                    &format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"),
                    [id],
                    node_from_row,
                )
                .optional()
                .map_err(q("changing node state"))?
                .ok_or_else(|| InventoryError::NotFound(format!("node {id}")))?;
            let to =
                state::next_state(n.state, t).map_err(|source| InventoryError::Transition {
                    node: n.display_name(),
                    source,
                })?;
            let reason = match t {
                Transition::Fail { reason } => Some(reason.clone()),
                _ => None,
            };
            tx.execute(
                "UPDATE nodes SET state = ?2, state_reason = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, to.as_str(), reason, now],
            )
            .map_err(q("changing node state"))?;
            if n.state != to || reason.is_some() {
                let msg = match &reason {
                    Some(r) => format!("{} → {to}: {r}", n.state),
                    None => format!("{} → {to} ({})", n.state, t.name()),
                };
                insert_event(&tx, id, now, "state", &msg)?;
            }
            if matches!(t, Transition::Reprovision | Transition::Provision)
                || (to == NodeState::Provisioning && n.state != to)
            {
                tx.execute("DELETE FROM tokens WHERE node_id = ?1", [id])
                    .map_err(q("changing node state"))?;
                // A reinstall revokes the node's certificate: agent calls with it stop working.
                tx.execute("UPDATE nodes SET cert_serial = NULL WHERE id = ?1", [id])
                    .map_err(q("changing node state"))?;
                issue_token_tx(&tx, id, TokenKind::Install, token_ttl, now)?;
            }
            let node = tx
                .query_row(
                    &format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1",),
                    [id],
                    node_from_row,
                )
                .map_err(q("changing node state"))?;
            tx.commit().map_err(q("changing node state"))?;
            Ok(node)
        })
    }

    /// Notes that a node was seen on the network (DHCP) and what it said.
    pub fn touch(&self, id: i64, info: &Discovery, now: UnixMs) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE nodes SET last_seen_at = ?2, arch = COALESCE(?3, arch), vendor_class = COALESCE(?4, vendor_class) WHERE id = ?1",
                params![id, now, info.arch, info.vendor_class],
            )
            .map_err(q("updating last-seen time"))?;
            Ok(())
        })
    }

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

    /// Issues a token of `kind` for a node.
    pub fn issue_token(
        &self,
        node_id: i64,
        kind: TokenKind,
        ttl: Duration,
        now: UnixMs,
    ) -> Result<String> {
        self.with(|c| issue_token_tx(c, node_id, kind, ttl, now))
    }

    /// The node's newest install token that has not expired.
    pub fn current_install_token(&self, node_id: i64, now: UnixMs) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row(
                "SELECT token FROM tokens WHERE node_id = ?1 AND kind = 'install' AND expires_at > ?2 ORDER BY created_at DESC LIMIT 1",
                params![node_id, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(q("reading install token"))
        })
    }

    /// The node an unexpired token of `kind` belongs to.
    pub fn node_by_token(&self, token: &str, kind: TokenKind, now: UnixMs) -> Result<Option<Node>> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {} FROM tokens t JOIN nodes n ON n.id = t.node_id WHERE t.token = ?1 AND t.kind = ?2 AND t.expires_at > ?3 AND t.used_at IS NULL",
                    NODE_COLS.split(", ").map(|c| format!("n.{c}")).collect::<Vec<_>>().join(", ")
                ),
                params![token, kind.as_str(), now],
                node_from_row,
            )
            .optional()
            .map_err(q("checking a token"))
        })
    }

    /// Marks a single-use token used. Returns false if it was already used, expired or
    /// unknown; only one caller ever gets true for a token.
    pub fn consume_token(&self, token: &str, kind: TokenKind, now: UnixMs) -> Result<bool> {
        self.with(|c| {
            let n = c
                .execute(
                    "UPDATE tokens SET used_at = ?3 WHERE token = ?1 AND kind = ?2 AND used_at IS NULL AND expires_at > ?3",
                    params![token, kind.as_str(), now],
                )
                .map_err(q("using a token"))?;
            Ok(n == 1)
        })
    }

    /// Every persisted lease.
    pub fn load_leases(&self) -> Result<Vec<LeaseRow>> {
        self.read(|c| {
            let mut st = c
                .prepare("SELECT ip, mac, state, expires_at, hostname FROM leases")
                .map_err(q("loading leases"))?;
            let rows = st
                .query_map([], |r| {
                    let ip: String = r.get(0)?;
                    let mac: Option<String> = r.get(1)?;
                    Ok((ip, mac, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(q("loading leases"))?;
            let mut out = Vec::new();
            for row in rows {
                let (ip, mac, state, expires_at, hostname) = row.map_err(q("loading leases"))?;
                let (Ok(ip), mac) = (
                    ip.parse::<Ipv4Addr>(),
                    mac.and_then(|m| m.parse::<MacAddr>().ok()),
                ) else {
                    continue;
                };
                out.push(LeaseRow {
                    ip,
                    mac,
                    state,
                    expires_at,
                    hostname,
                });
            }
            Ok(out)
        })
    }

    /// Node ids and fixed addresses of all nodes with a reservation.
    pub fn reservations(&self) -> Result<Vec<(MacAddr, Ipv4Addr)>> {
        self.read(|c| {
            let mut st = c
                .prepare("SELECT mac, ip FROM nodes WHERE ip IS NOT NULL")
                .map_err(q("loading reservations"))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(q("loading reservations"))?;
            let mut out = Vec::new();
            for row in rows {
                let (m, i) = row.map_err(q("loading reservations"))?;
                if let (Ok(m), Ok(i)) = (m.parse(), i.parse()) {
                    out.push((m, i));
                }
            }
            Ok(out)
        })
    }

    /// The facts a node reported at enrollment, as stored.
    pub fn facts(&self, id: i64) -> Result<Option<serde_json::Value>> {
        self.read(|c| {
            let t: Option<Option<String>> = c
                .query_row("SELECT facts FROM nodes WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(q("reading facts"))?;
            Ok(t.flatten().and_then(|t| serde_json::from_str(&t).ok()))
        })
    }

    /// The serial of the certificate issued to a node at enrollment.
    pub fn cert_serial(&self, id: i64) -> Result<Option<String>> {
        self.read(|c| {
            let t: Option<Option<String>> = c
                .query_row("SELECT cert_serial FROM nodes WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(q("reading a certificate serial"))?;
            Ok(t.flatten())
        })
    }

    /// What an enrollment token says: its node, whether it was used, when it expires.
    pub fn enroll_token(&self, token: &str) -> Result<Option<(i64, Option<UnixMs>, UnixMs)>> {
        self.read(|c| {
            c.query_row(
                "SELECT node_id, used_at, expires_at FROM tokens WHERE token = ?1 AND kind = 'enroll'",
                [token],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(q("checking an enrollment token"))
        })
    }

    /// The node's unused, unexpired enrollment token, if it has one.
    pub fn current_enroll_token(&self, node_id: i64, now: UnixMs) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row(
                "SELECT token FROM tokens WHERE node_id = ?1 AND kind = 'enroll' AND used_at IS NULL AND expires_at > ?2 ORDER BY created_at DESC LIMIT 1",
                params![node_id, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(q("reading an enrollment token"))
        })
    }

    /// Issues a fresh enrollment token for a node, revoking its unused older ones.
    pub fn reissue_enroll_token(&self, node_id: i64, ttl: Duration, now: UnixMs) -> Result<String> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(q("issuing an enrollment token"))?;
            tx.execute(
                "DELETE FROM tokens WHERE node_id = ?1 AND kind = 'enroll' AND used_at IS NULL",
                [node_id],
            )
            .map_err(q("issuing an enrollment token"))?;
            let t = issue_token_tx(&tx, node_id, TokenKind::Enroll, ttl, now)?;
            tx.commit().map_err(q("issuing an enrollment token"))?;
            Ok(t)
        })
    }

    /// Completes an enrollment in one transaction: uses the token (once only), stores
    /// facts, certificate serial and replication key, moves the node to `enrolled`
    /// with its events. Fails without changes if the token was used meanwhile or the
    /// node is not `installed`.
    pub fn complete_enrollment(
        &self,
        node_id: i64,
        e: &Enrollment<'_>,
        now: UnixMs,
    ) -> Result<Node> {
        let Enrollment {
            token,
            facts,
            cert_serial,
            repl_key,
            message,
            group,
        } = *e;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(q("enrolling"))?;
            let used = tx
                .execute(
                    "UPDATE tokens SET used_at = ?3 WHERE token = ?1 AND node_id = ?2 AND kind = 'enroll' AND used_at IS NULL AND expires_at > ?3",
                    params![token, node_id, now],
                )
                .map_err(q("enrolling"))?;
            if used != 1 {
                return Err(InventoryError::Conflict("enrollment token was already used".into()));
            }
            let n = tx
                .query_row(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"), [node_id], node_from_row)
                .map_err(q("enrolling"))?;
            let to = state::next_state(n.state, &Transition::Enroll)
                .map_err(|source| InventoryError::Transition { node: n.display_name(), source })?;
            tx.execute(
                "UPDATE nodes SET state = ?2, state_reason = NULL, facts = ?3, cert_serial = ?4, repl_key = ?5, updated_at = ?6 WHERE id = ?1",
                params![node_id, to.as_str(), facts.to_string(), cert_serial, repl_key, now],
            )
            .map_err(q("enrolling"))?;
            insert_event(&tx, node_id, now, "enroll", message)?;
            insert_event(&tx, node_id, now, "state", &format!("{} → {to} (enroll)", n.state))?;
            if let Some(g) = group {
                // Re-read under the write lock: two nodes of one failure domain enrolling
                // at once cannot both pass.
                let members = group_members_tx(&tx, &g.name, node_id)?;
                let me = crate::groups::Member {
                    node_id,
                    hostname: n.display_name(),
                    state: to,
                    failure_domain: n.failure_domain.clone(),
                    replication_address: None,
                    ssh_host_keys: vec![],
                    replication_key: None,
                };
                crate::groups::check_placement(g, &members, &me)
                    .map_err(|e| InventoryError::Placement(e.to_string()))?;
                tx.execute("UPDATE nodes SET grp = ?2 WHERE id = ?1", params![node_id, g.name])
                    .map_err(q("enrolling"))?;
                tx.execute("UPDATE groups SET version = version + 1 WHERE name = ?1", [&g.name])
                    .map_err(q("enrolling"))?;
                insert_event(&tx, node_id, now, "group", &format!("member of group {}", g.name))?;
            }
            let node = tx
                .query_row(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"), [node_id], node_from_row)
                .map_err(q("enrolling"))?;
            tx.commit().map_err(q("enrolling"))?;
            Ok(node)
        })
    }

    /// Runs `f` with the connection (for modules that own their own tables, like groups).
    pub fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        self.with(f)
    }
}

/// Appends many events in one transaction on `conn` (the event writer's own
/// connection); events of nodes deleted meanwhile are skipped instead of failing the
/// batch.
pub fn store_events(conn: &mut Connection, events: &[(i64, UnixMs, String, String)]) -> Result<()> {
    store_events_kept(conn, events, Retention::DEFAULT)
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

/// What an accepted enrollment stores about a node.
#[derive(Debug, Clone, Copy)]
pub struct Enrollment<'a> {
    /// The enrollment token being used up.
    pub token: &'a str,
    /// The facts the node reported.
    pub facts: &'a serde_json::Value,
    /// Serial of the client certificate issued to the node.
    pub cert_serial: &'a str,
    /// The node's replication public key, if it sent one.
    pub repl_key: Option<&'a str>,
    /// The `enroll` event's message.
    pub message: &'a str,
    /// The group the node joins, if any: its placement is checked again, against the
    /// members read inside the enrollment's transaction.
    pub group: Option<&'a crate::groups::Group>,
}

/// The members of group `name` other than `except`, as placement sees them.
fn group_members_tx(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    except: i64,
) -> Result<Vec<crate::groups::Member>> {
    let mut st = tx
        .prepare("SELECT id, COALESCE(hostname, mac), state, failure_domain FROM nodes WHERE grp = ?1 AND id != ?2")
        .map_err(q("reading group members"))?;
    let rows = st
        .query_map(params![name, except], |r| {
            let state: String = r.get(2)?;
            Ok(crate::groups::Member {
                node_id: r.get(0)?,
                hostname: r.get(1)?,
                state: state.parse().unwrap_or(NodeState::Failed),
                failure_domain: r.get(3)?,
                replication_address: None,
                ssh_host_keys: vec![],
                replication_key: None,
            })
        })
        .map_err(q("reading group members"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(q("reading group members"))
}

/// Stores lease changes in one transaction on `conn` (the DHCP writer's own connection).
pub fn store_leases(conn: &mut Connection, writes: &[LeaseWrite]) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(q("storing leases"))?;
    store_leases_tx(&tx, writes)?;
    tx.commit().map_err(q("storing leases"))
}

/// Stores a DHCP batch in one durable transaction on `conn` (the DHCP writer's own
/// connection): discoveries first (each once per MAC, with its `discovered` event), then
/// last-seen updates, lease changes and timeline events (skipped for nodes deleted
/// meanwhile). Returns the discovered machines' nodes.
pub fn store_dhcp(
    conn: &mut Connection,
    writes: &DhcpWrites,
    now: UnixMs,
) -> Result<Vec<Discovered>> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(q("storing a DHCP batch"))?;
    let mut found = Vec::with_capacity(writes.discover.len());
    for (mac, info) in &writes.discover {
        let (node, fresh) = discover_tx(&tx, *mac, info, now)?;
        found.push(Discovered {
            mac: *mac,
            node,
            fresh,
        });
    }
    {
        let mut seen = tx
            .prepare_cached(
                "UPDATE nodes SET last_seen_at = ?2, arch = COALESCE(?3, arch), vendor_class = COALESCE(?4, vendor_class) WHERE id = ?1",
            )
            .map_err(q("updating last-seen times"))?;
        for (id, info) in &writes.seen {
            seen.execute(params![id, now, info.arch, info.vendor_class])
                .map_err(q("updating last-seen times"))?;
        }
    }
    store_leases_tx(&tx, &writes.leases)?;
    {
        let mut ev = tx
            .prepare_cached(
                "INSERT INTO events (node_id, at, kind, message) SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM nodes WHERE id = ?1)",
            )
            .map_err(q("recording DHCP events"))?;
        for e in &writes.events {
            let node = e
                .node
                .or_else(|| found.iter().find(|d| d.mac == e.mac).map(|d| d.node.id));
            if let Some(id) = node {
                ev.execute(params![id, e.at, e.kind, e.message])
                    .map_err(q("recording DHCP events"))?;
            }
        }
    }
    tx.commit().map_err(q("storing a DHCP batch"))?;
    Ok(found)
}

/// Finds the node with `mac`, or records it as `discovered` with its event.
fn discover_tx(
    tx: &rusqlite::Transaction<'_>,
    mac: MacAddr,
    info: &Discovery,
    now: UnixMs,
) -> Result<(NodeKey, bool)> {
    let existing = tx
        .prepare_cached("SELECT id, hostname FROM nodes WHERE mac = ?1")
        .and_then(|mut st| {
            st.query_row([mac.to_string()], |r| {
                Ok(NodeKey {
                    id: r.get(0)?,
                    hostname: r.get(1)?,
                })
            })
            .optional()
        })
        .map_err(q("discovering a node"))?;
    if let Some(k) = existing {
        return Ok((k, false));
    }
    tx.prepare_cached(
        "INSERT INTO nodes (mac, state, arch, vendor_class, created_at, updated_at, last_seen_at) VALUES (?1, 'discovered', ?2, ?3, ?4, ?4, ?4)",
    )
    .and_then(|mut st| st.execute(params![mac.to_string(), info.arch, info.vendor_class, now]))
    .map_err(q("discovering a node"))?;
    let id = tx.last_insert_rowid();
    let msg = format!(
        "discovered: arch {}, vendor class {}",
        info.arch.as_deref().unwrap_or("unknown"),
        info.vendor_class.as_deref().unwrap_or("none")
    );
    insert_event(tx, id, now, "discovered", &msg)?;
    Ok((NodeKey { id, hostname: None }, true))
}

fn store_leases_tx(tx: &rusqlite::Transaction<'_>, writes: &[LeaseWrite]) -> Result<()> {
    let mut clear = tx
        .prepare_cached("DELETE FROM leases WHERE mac = ?1 AND ip != ?2")
        .map_err(q("storing leases"))?;
    let mut up = tx
        .prepare_cached(
            "INSERT INTO leases (ip, mac, state, expires_at, hostname) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, expires_at = excluded.expires_at, hostname = excluded.hostname",
        )
        .map_err(q("storing leases"))?;
    let mut del = tx
        .prepare_cached("DELETE FROM leases WHERE ip = ?1")
        .map_err(q("storing leases"))?;
    for w in writes {
        match w {
            LeaseWrite::Upsert(l) => {
                if let Some(mac) = l.mac {
                    clear
                        .execute(params![mac.to_string(), l.ip.to_string()])
                        .map_err(q("storing leases"))?;
                }
                up.execute(params![
                    l.ip.to_string(),
                    l.mac.map(|m| m.to_string()),
                    l.state,
                    l.expires_at,
                    l.hostname
                ])
                .map_err(q("storing leases"))?;
            }
            LeaseWrite::Delete(ip) => {
                del.execute([ip.to_string()]).map_err(q("storing leases"))?;
            }
        }
    }
    Ok(())
}

fn vars_text(v: &serde_json::Value) -> String {
    if v.is_null() {
        "{}".to_string()
    } else {
        v.to_string()
    }
}

fn insert_event(
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

fn issue_token_tx(
    c: &Connection,
    node_id: i64,
    kind: TokenKind,
    ttl: Duration,
    now: UnixMs,
) -> Result<String> {
    let token = new_token();
    c.execute(
        "INSERT INTO tokens (token, node_id, kind, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token, node_id, kind.as_str(), now, now + ttl.as_millis() as i64],
    )
    .map_err(q("issuing a token"))?;
    Ok(token)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(q("reading schema version"))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(InventoryError::TooNew {
            path: path.display().to_string(),
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(q("migrating the schema"))?;
        tx.execute_batch(sql).map_err(q("migrating the schema"))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(q("migrating the schema"))?;
        tx.commit().map_err(q("migrating the schema"))?;
    }
    Ok(())
}

fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> (tempfile::TempDir, Inventory) {
        let dir = tempfile::tempdir().unwrap();
        let inv = Inventory::open(&dir.path().join("inventory.db")).unwrap();
        (dir, inv)
    }

    #[test]
    fn events_are_kept_per_node_and_in_total() {
        let (dir, inv) = inv();
        let a = inv.add_node(&new(1, "a"), TTL, 0).unwrap();
        let b = inv.add_node(&new(2, "b"), TTL, 0).unwrap();
        let mut c = connect(&dir.path().join("inventory.db")).unwrap();
        let keep = Retention {
            per_node: 50,
            total: 80,
        };
        for round in 0..4i64 {
            let batch: Vec<_> = (0..30)
                .map(|i| {
                    (
                        a.id,
                        round * 100 + i,
                        "flood".to_string(),
                        format!("a{}", round * 30 + i),
                    )
                })
                .collect();
            store_events_kept(&mut c, &batch, keep).unwrap();
        }
        let kept = inv.recent_events(a.id, 1000).unwrap();
        assert_eq!(kept.len(), 50, "newest 50 of node a");
        assert!(
            kept.iter().any(|e| e.message == "a119"),
            "the newest is kept"
        );
        assert!(
            !kept.iter().any(|e| e.message == "a69"),
            "older ones are gone"
        );
        let batch: Vec<_> = (0..40)
            .map(|i| (b.id, 1000 + i, "x".to_string(), format!("b{i}")))
            .collect();
        store_events_kept(&mut c, &batch, keep).unwrap();
        let total = inv.recent_events(a.id, 1000).unwrap().len()
            + inv.recent_events(b.id, 1000).unwrap().len();
        assert!(total <= 80 + 2, "about the newest 80 in all: {total}");
        assert_eq!(inv.recent_events(b.id, 1000).unwrap().len(), 40);
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn new(n: u8, host: &str) -> NewNode {
        NewNode {
            mac: Some(mac(n)),
            hostname: host.into(),
            profile: "lab-single-disk".into(),
            provision: true,
            ..Default::default()
        }
    }

    const TTL: Duration = Duration::from_secs(3600);

    #[test]
    fn file_is_private_and_migrations_are_idempotent() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, inv) = inv();
        let mode = std::fs::metadata(inv.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(inv);
        let again = Inventory::open(&dir.path().join("inventory.db")).unwrap();
        assert!(again.list_nodes().unwrap().is_empty());
    }

    #[test]
    fn discovered_node_is_adopted_by_add() {
        let (_d, inv) = inv();
        let (n, fresh) = inv
            .discover(
                mac(1),
                &Discovery {
                    arch: Some("bios".into()),
                    vendor_class: None,
                },
                1,
            )
            .unwrap();
        assert!(fresh);
        assert_eq!(n.state, NodeState::Discovered);
        assert!(!inv.discover(mac(1), &Discovery::default(), 2).unwrap().1);
        let n = inv.add_node(&new(1, "web1"), TTL, 3).unwrap();
        assert_eq!(n.state, NodeState::Provisioning);
        assert_eq!(n.arch.as_deref(), Some("bios"));
        assert!(inv.current_install_token(n.id, 4).unwrap().is_some());
        let kinds: Vec<_> = inv
            .events(n.id, 0, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["discovered", "state"]);
    }

    #[test]
    fn conflicts_name_the_other_node() {
        let (_d, inv) = inv();
        inv.add_node(
            &NewNode {
                ip: Some(Ipv4Addr::new(192, 0, 2, 10)),
                ..new(1, "a")
            },
            TTL,
            0,
        )
        .unwrap();
        let e = inv.add_node(&new(2, "a"), TTL, 0).unwrap_err().to_string();
        assert_eq!(e, "hostname `a` is already used by node 52:54:00:00:00:01");
        let e = inv
            .add_node(
                &NewNode {
                    ip: Some(Ipv4Addr::new(192, 0, 2, 10)),
                    ..new(2, "b")
                },
                TTL,
                0,
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "address 192.0.2.10 is already reserved for node 52:54:00:00:00:01"
        );
        let e = inv.add_node(&new(1, "a"), TTL, 0).unwrap_err().to_string();
        assert!(e.contains("already assigned; use reprovision"), "{e}");
        assert!(inv.add_node(&new(3, "bad_name"), TTL, 0).is_err());
    }

    #[test]
    fn tokens_expire_and_are_replaced_on_reprovision() {
        let (_d, inv) = inv();
        let n = inv.add_node(&new(1, "a"), TTL, 1000).unwrap();
        let t1 = inv.current_install_token(n.id, 1000).unwrap().unwrap();
        assert_eq!(
            inv.node_by_token(&t1, TokenKind::Install, 1001)
                .unwrap()
                .unwrap()
                .id,
            n.id
        );
        assert!(
            inv.node_by_token(&t1, TokenKind::Install, 1000 + 3_600_001)
                .unwrap()
                .is_none(),
            "expired token accepted"
        );
        assert!(
            inv.node_by_token(&t1, TokenKind::Enroll, 1001)
                .unwrap()
                .is_none(),
            "wrong kind accepted"
        );
        inv.transition(n.id, &Transition::Reprovision, TTL, 2000)
            .unwrap();
        let t2 = inv.current_install_token(n.id, 2000).unwrap().unwrap();
        assert_ne!(t1, t2);
        assert!(
            inv.node_by_token(&t1, TokenKind::Install, 2001)
                .unwrap()
                .is_none(),
            "old token still works"
        );
    }

    #[test]
    fn single_use_tokens_work_once() {
        let (_d, inv) = inv();
        let n = inv.add_node(&new(1, "a"), TTL, 0).unwrap();
        let t = inv.issue_token(n.id, TokenKind::Enroll, TTL, 0).unwrap();
        assert!(inv.consume_token(&t, TokenKind::Enroll, 1).unwrap());
        assert!(!inv.consume_token(&t, TokenKind::Enroll, 2).unwrap());
        assert!(
            inv.node_by_token(&t, TokenKind::Enroll, 3)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refused_transition_changes_nothing() {
        let (_d, inv) = inv();
        let n = inv.add_node(&new(1, "a"), TTL, 0).unwrap();
        let before = inv.events(n.id, 0, 100).unwrap();
        let e = inv
            .transition(n.id, &Transition::LateCommand, TTL, 5)
            .unwrap_err();
        assert!(matches!(e, InventoryError::Transition { .. }));
        assert_eq!(
            inv.node_by_id(n.id).unwrap().unwrap().state,
            NodeState::Provisioning
        );
        assert_eq!(inv.events(n.id, 0, 100).unwrap(), before);
    }

    #[test]
    fn leases_round_trip_and_move_with_the_mac() {
        let (_d, inv) = inv();
        let mut conn = connect(inv.path()).unwrap();
        let row = |ip: [u8; 4], m| LeaseRow {
            ip: ip.into(),
            mac: Some(mac(m)),
            state: "bound".into(),
            expires_at: 99,
            hostname: None,
        };
        store_leases(&mut conn, &[LeaseWrite::Upsert(row([192, 0, 2, 100], 1))]).unwrap();
        store_leases(&mut conn, &[LeaseWrite::Upsert(row([192, 0, 2, 101], 1))]).unwrap();
        let leases = inv.load_leases().unwrap();
        assert_eq!(leases, vec![row([192, 0, 2, 101], 1)]);
        store_leases(&mut conn, &[LeaseWrite::Delete([192, 0, 2, 101].into())]).unwrap();
        assert!(inv.load_leases().unwrap().is_empty());
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("node-1.prov.example"));
        for bad in ["", "-a", "a-", "a_b", "a..b", &"x".repeat(64)] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
