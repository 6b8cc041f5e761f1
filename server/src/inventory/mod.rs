//! The inventory: nodes, their timelines, tokens and DHCP leases, in one SQLite file
//! (the default) or a PostgreSQL database (`inventory.url`), behind one interface.
//!
//! Owns the schema, its migrations and every query. State changes go through
//! [`Inventory::transition`], which asks [`state::next_state`] and stores the result and
//! its event in one transaction. Does not decide anything about DHCP or boot files.

mod bmcs;
pub mod db;
mod events;
pub mod groups;
mod leases;
mod nodes;
mod schema;
pub mod state;
mod tokens;
mod users;

pub use db::{Backend, Conn, DbError};
use db::{Row, p};
use events::insert_event;
pub use events::{Retention, store_events, store_events_kept};
pub use leases::{claim_leases, store_dhcp, store_leases};
use nodes::discover_tx;
#[cfg(test)]
pub(crate) use schema::create_at_version;
pub use schema::{SCHEMA_VERSION, connect, relaxed};
use schema::{create_private, migrate};
use tokens::issue_token_tx;
pub use tokens::{Enrollment, new_token};
pub use users::User;

pub use crate::config::{InventoryLocation, PostgresUrl};
use crate::mac::MacAddr;
pub use crate::node::{Event, LeaseRow, LeaseWrite, Node, UnixMs, now_ms};
pub use state::{NodeState, Transition, TransitionError};
use std::net::Ipv4Addr;
use std::path::Path;
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
        source: DbError,
    },
    /// PostgreSQL could not be reached at all (nothing listens, no route, a timeout).
    #[error(
        "cannot connect to the inventory database on `{host}` (`{url}`); start PostgreSQL there, or fix `inventory.url` in the config"
    )]
    Unreachable {
        url: String,
        host: String,
        #[source]
        source: DbError,
    },
    #[error("inventory query failed while {doing}")]
    Query {
        doing: &'static str,
        #[source]
        source: DbError,
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
        "the inventory stayed busy with another writer while {doing}; retry (SQLite: is another process holding the database open for writing? PostgreSQL: the change kept conflicting with another rackseed's)"
    )]
    Busy {
        doing: &'static str,
        #[source]
        source: DbError,
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

impl InventoryError {
    /// True when PostgreSQL's COMMIT failed (the transaction may have committed).
    fn at_commit(&self) -> bool {
        matches!(
            self,
            InventoryError::Query {
                source: DbError::Commit(_),
                ..
            } | InventoryError::Busy {
                source: DbError::Commit(_),
                ..
            }
        )
    }

    /// True when the failure was a lost PostgreSQL connection.
    fn connection_lost(&self) -> bool {
        match self {
            InventoryError::Query { source, .. }
            | InventoryError::Busy { source, .. }
            | InventoryError::Open { source, .. } => source.connection_lost(),
            _ => false,
        }
    }

    /// True when the failure was a PostgreSQL serialization failure or deadlock: the
    /// transaction was rolled back and is safe to run again.
    fn retryable(&self) -> bool {
        match self {
            InventoryError::Query { source, .. } | InventoryError::Busy { source, .. } => {
                source.retryable()
            }
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, InventoryError>;

fn q(doing: &'static str) -> impl FnOnce(DbError) -> InventoryError {
    move |source| match &source {
        DbError::Sqlite(e) if matches!(&**e, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull) => {
            InventoryError::DiskFull { doing }
        }
        DbError::Sqlite(e)
            if matches!(&**e, rusqlite::Error::SqliteFailure(e, _) if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            )) =>
        {
            InventoryError::Busy { doing, source }
        }
        DbError::Postgres(e) => {
            use postgres::error::SqlState;
            match e.code() {
                Some(c) if *c == SqlState::DISK_FULL => InventoryError::DiskFull { doing },
                Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
                    let detail = e
                        .as_db_error()
                        .and_then(|d| d.detail())
                        .unwrap_or("a row with this key exists")
                        .trim_end_matches('.');
                    InventoryError::Conflict(format!("conflict while {doing}: {detail}"))
                }
                Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => {
                    InventoryError::Busy { doing, source }
                }
                _ => InventoryError::Query { doing, source },
            }
        }
        _ => InventoryError::Query { doing, source },
    }
}

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
    /// The relay it came through, and the relay's option 82 sub-options as text.
    pub giaddr: Option<std::net::Ipv4Addr>,
    pub circuit_id: Option<String>,
    pub remote_id: Option<String>,
}

/// The kinds of token rackseed issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Lets the installer fetch its preseed and scripts and report events.
    Install,
    /// Lets the agent enroll once.
    Enroll,
    /// Lets a discovered machine's inventory boot fetch its script and report once.
    Commission,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Install => "install",
            TokenKind::Enroll => "enroll",
            TokenKind::Commission => "commission",
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

/// Valid DNS hostname (one label or a dotted name), as the installer and agent need it.
pub fn valid_hostname(h: &str) -> bool {
    crate::facts::is_dns_name(h)
}

/// The inventory, on SQLite (one file, the default) or PostgreSQL (`inventory.url`).
/// Cheap to share behind an `Arc`; each call takes a connection lock briefly.
///
/// On PostgreSQL several rackseed servers may share one database: every write
/// transaction runs `SERIALIZABLE` and is run again (up to [`PG_RETRIES`] times) when
/// PostgreSQL reports a serialization failure, so the read-then-write checks (hostname
/// and address taken, placement at enrollment) hold across servers as they do under
/// SQLite's single writer; single-use tokens are spent with one conditional `UPDATE`.
pub struct Inventory {
    location: InventoryLocation,
    conn: Mutex<Conn>,
    /// Read-only connections for lookups: under WAL they read the last committed state
    /// without waiting for the writer, so a long write (an fsync, a big batch) does not
    /// stall DHCP, TFTP or syslog attribution. (PostgreSQL readers never wait for
    /// writers either.)
    readers: Vec<Mutex<Conn>>,
    next_reader: AtomicU64,
    /// Bumped after every committed change to which MACs are nodes or to their
    /// hostnames (see [`Inventory::generation`]).
    generation: AtomicU64,
}

/// Read-only connections per inventory.
const READERS: usize = 4;

/// How long a cached node lookup stays valid on PostgreSQL, where another rackseed
/// may add, assign or delete nodes (see [`Inventory::generation`]).
pub const PG_GENERATION_MS: i64 = 5_000;

/// How often a PostgreSQL transaction that lost a serialization conflict is run again.
pub const PG_RETRIES: u32 = 30;

const NODE_COLS: &str = "id, mac, hostname, profile, ip, state, state_reason, arch, vendor_class, image, grp, failure_domain, created_at, updated_at, last_seen_at, vars";

fn conv(i: usize, message: String) -> DbError {
    DbError::Value { column: i, message }
}

fn node_from_row(r: &Row) -> std::result::Result<Node, DbError> {
    let mac: String = r.get(1)?;
    let ip: Option<String> = r.get(4)?;
    let state: String = r.get(5)?;
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

/// Maps rows with `f`, failing on the first bad one.
fn rows<T>(
    rows: Vec<Row>,
    f: impl Fn(&Row) -> std::result::Result<T, DbError>,
) -> std::result::Result<Vec<T>, DbError> {
    rows.iter().map(f).collect()
}

/// Connects a PostgreSQL client; a failure without a server answer (refused, no
/// route, timeout) names the host and the fix.
fn connect_postgres(url: &PostgresUrl) -> Result<Conn> {
    let mut config: postgres::Config = url.secret().parse().map_err(|e| InventoryError::Open {
        path: url.to_string(),
        source: DbError::Postgres(e),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("rackseed");
    match db::off_runtime(|| config.connect(postgres::NoTls)) {
        Ok(client) => Ok(Conn::postgres(client)),
        Err(e) if e.as_db_error().is_none() => Err(InventoryError::Unreachable {
            url: url.to_string(),
            host: url.host().to_string(),
            source: DbError::Postgres(e),
        }),
        Err(e) => Err(InventoryError::Open {
            path: url.to_string(),
            source: DbError::Postgres(e),
        }),
    }
}

impl Inventory {
    /// Opens (creating if needed, with mode 0600) and migrates the SQLite inventory at
    /// `path`.
    pub fn open(path: &Path) -> Result<Inventory> {
        Inventory::open_at(&InventoryLocation::Sqlite(path.to_path_buf()))
    }

    /// Opens and migrates the inventory at `location` (a SQLite file or a PostgreSQL
    /// database).
    pub fn open_at(location: &InventoryLocation) -> Result<Inventory> {
        if let InventoryLocation::Sqlite(path) = location
            && !path.exists()
        {
            create_private(path).map_err(|e| InventoryError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)).into(),
            })?;
        }
        let mut conn = open_conn(location)?;
        migrate(&mut conn, &location.to_string())?;
        let readers = (0..READERS)
            .map(|_| {
                let mut c = open_conn(location)?;
                make_read_only(&mut c, location)?;
                Ok(Mutex::new(c))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Inventory {
            location: location.clone(),
            conn: Mutex::new(conn),
            readers,
            next_reader: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        })
    }

    /// Where the inventory is (for messages: a PostgreSQL URL shows no password).
    pub fn location(&self) -> &InventoryLocation {
        &self.location
    }

    /// The SQLite database file; `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.location {
            InventoryLocation::Sqlite(p) => Some(p),
            InventoryLocation::Postgres(_) => None,
        }
    }

    /// Which backend the inventory is on.
    pub fn backend(&self) -> Backend {
        match self.location {
            InventoryLocation::Sqlite(_) => Backend::Sqlite,
            InventoryLocation::Postgres(_) => Backend::Postgres,
        }
    }

    /// A new connection of its own, for a writer that batches (DHCP, events): with
    /// rackseed's pragmas on SQLite, a new client on PostgreSQL.
    pub fn connect_own(&self) -> Result<Conn> {
        open_conn(&self.location)
    }

    /// Replaces `c`, a connection from [`Inventory::connect_own`], when its PostgreSQL
    /// server closed it (a restart, a failover); SQLite connections stay.
    pub fn reconnect_if_closed(&self, c: &mut Conn) -> Result<()> {
        self.renew(c, false, false)
    }

    /// After a call on `c` (from [`Inventory::connect_own`]) failed with `e`: a new
    /// connection when `e` says the PostgreSQL one was lost, so the next batch works.
    pub fn recover(&self, c: &mut Conn, e: &InventoryError) -> Result<()> {
        self.renew(c, false, e.connection_lost())
    }

    fn ready(&self, c: &mut Conn, read_only: bool) -> Result<()> {
        self.renew(c, read_only, false)
    }

    /// A counter that changes after every committed change, through this inventory, to
    /// which MACs are nodes or to a node's hostname (adding, assigning, deleting; not
    /// DHCP discovery, whose writer updates its own view). A cache of
    /// [`Inventory::node_key_by_mac`] answers is valid while this stays the same; read it
    /// before the lookup whose answer is cached.
    ///
    /// On PostgreSQL another rackseed may change the nodes without this process
    /// knowing, so the counter also moves every [`PG_GENERATION_MS`]: a cached answer
    /// is at most that old (the DHCP node map is reloaded that often).
    pub fn generation(&self) -> u64 {
        let local = self.generation.load(Ordering::Acquire);
        match self.backend() {
            Backend::Sqlite => local,
            Backend::Postgres => {
                let epoch = (now_ms() / PG_GENERATION_MS).max(0) as u64;
                local.wrapping_add(epoch.wrapping_shl(32))
            }
        }
    }

    fn changed_nodes(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces a lost PostgreSQL connection (the server restarted) before it is used,
    /// or at once with `force` (the last call on it failed for a lost connection).
    fn renew(&self, c: &mut Conn, read_only: bool, force: bool) -> Result<()> {
        if force || c.is_closed() {
            let mut fresh = open_conn(&self.location)?;
            if read_only {
                make_read_only(&mut fresh, &self.location)?;
            }
            *c = fresh;
        }
        Ok(())
    }

    fn with<T>(&self, mut f: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        self.ready(&mut guard, false)?;
        match retry_serializable(&mut guard, &mut f) {
            // The PostgreSQL server closed the connection (a restart, a failover)
            // before the COMMIT: the transaction did not commit; once more on a new
            // connection. A failed COMMIT may have committed: reported, not re-run.
            Err(e) if (guard.is_closed() && !e.at_commit()) || e.connection_lost() => {
                self.renew(&mut guard, false, true)?;
                retry_serializable(&mut guard, &mut f)
            }
            r => r,
        }
    }

    /// Runs a read on a free read-only connection (or waits for the next one in turn).
    fn read<T>(&self, mut f: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        let mut run = |c: &mut Conn| {
            self.ready(c, true)?;
            match f(c) {
                Err(e) if c.is_closed() || e.connection_lost() => {
                    self.renew(c, true, true)?;
                    f(c)
                }
                r => r,
            }
        };
        for r in &self.readers {
            if let Ok(mut guard) = r.try_lock() {
                return run(&mut guard);
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) as usize % self.readers.len();
        let mut guard = self.readers[i].lock().unwrap_or_else(|p| p.into_inner());
        run(&mut guard)
    }

    /// Runs `f` with the connection (for modules that own their own tables, like
    /// groups). On PostgreSQL `f` runs again when its transaction lost a serialization
    /// conflict, so it must not have effects outside the database.
    pub fn with_conn<T>(&self, f: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        self.with(f)
    }
}

/// Runs `f`, and on PostgreSQL again (after a short, growing pause) while it fails with
/// a serialization failure or deadlock, at most [`PG_RETRIES`] times.
pub fn retry_serializable<T>(
    c: &mut Conn,
    f: &mut impl FnMut(&mut Conn) -> Result<T>,
) -> Result<T> {
    let mut attempt = 0u32;
    loop {
        match f(c) {
            // Still conflicting after every retry: busy (503, `busy`), not internal.
            Err(InventoryError::Query { doing, source })
                if attempt >= PG_RETRIES && source.retryable() =>
            {
                return Err(InventoryError::Busy { doing, source });
            }
            Err(e) if attempt < PG_RETRIES && e.retryable() => {
                attempt += 1;
                // Spread the retries of two servers apart: 1-4 ms, growing to ~60 ms.
                let base = u64::from(attempt.min(15)) * 4;
                let jitter: u64 = rand::random::<u64>() % (base + 1);
                std::thread::sleep(Duration::from_millis(1 + jitter));
            }
            r => return r,
        }
    }
}

/// Checks that the inventory at `location` can be connected to, without creating or
/// migrating anything (for `rackseed check`). A SQLite file that does not exist yet
/// passes: `serve` creates it.
pub fn probe(location: &InventoryLocation) -> Result<()> {
    match location {
        InventoryLocation::Sqlite(_) => Ok(()),
        InventoryLocation::Postgres(url) => connect_postgres(url)?
            .batch("SELECT 1")
            .map_err(q("checking the connection")),
    }
}

fn open_conn(location: &InventoryLocation) -> Result<Conn> {
    match location {
        InventoryLocation::Sqlite(path) => connect(path),
        InventoryLocation::Postgres(url) => connect_postgres(url),
    }
}

fn make_read_only(c: &mut Conn, location: &InventoryLocation) -> Result<()> {
    let sql = match c.backend() {
        Backend::Sqlite => "PRAGMA query_only = ON;",
        Backend::Postgres => "SET default_transaction_read_only = on;",
    };
    c.batch(sql).map_err(|source| InventoryError::Open {
        path: location.to_string(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::on_each_backend;
    use super::*;

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
    fn sqlite_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let inv = Inventory::open(&dir.path().join("inventory.db")).unwrap();
        let mode = std::fs::metadata(inv.sqlite_path().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn both_backends_have_every_migration() {
        assert_eq!(schema::MIGRATIONS.len(), schema::PG_MIGRATIONS.len());
    }

    #[test]
    fn an_unreachable_postgres_names_its_host_and_the_fix() {
        let url = PostgresUrl::parse("postgres://rackseed:s3cret@127.0.0.1:1/rackseed").unwrap();
        let Err(e) = Inventory::open_at(&InventoryLocation::Postgres(url)) else {
            panic!("connected to port 1");
        };
        let text = e.to_string();
        assert!(matches!(e, InventoryError::Unreachable { .. }), "{text}");
        assert!(text.contains("`127.0.0.1`"), "{text}");
        assert!(text.contains("inventory.url"), "{text}");
        assert!(!crate::error_chain(&e).contains("s3cret"), "{text}");
    }

    on_each_backend! {
        fn events_are_kept_per_node_and_in_total(inv, place) {
            let a = inv.add_node(&new(1, "a"), TTL, 0).unwrap();
            let b = inv.add_node(&new(2, "b"), TTL, 0).unwrap();
            let mut c = inv.connect_own().unwrap();
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

        fn migrations_are_idempotent(inv, place) {
            drop(place.open());
            let again = place.open();
            assert!(again.list_nodes().unwrap().is_empty());
        }

        fn discovered_node_is_adopted_by_add(inv, place) {
            let (n, fresh) = inv
                .discover(
                    mac(1),
                    &Discovery {
                        arch: Some("bios".into()),
                        vendor_class: None,
                        giaddr: Some("198.51.100.1".parse().unwrap()),
                        circuit_id: Some("b-07".into()),
                        remote_id: None,
                    },
                    1,
                )
                .unwrap();
            assert!(fresh);
            assert_eq!(n.state, NodeState::Discovered);
            assert!(!inv.discover(mac(1), &Discovery::default(), 2).unwrap().1);
            let d = inv.dhcp_facts(n.id).unwrap();
            assert_eq!(d.circuit_id.as_deref(), Some("b-07"));
            assert_eq!(d.giaddr, Some("198.51.100.1".parse().unwrap()));
            // A commissioning report makes it `commissioned` and is kept.
            let mut hw = crate::commission::HwFacts::default();
            hw.system.serial = "S1".into();
            let c = inv.commission(n.id, &hw, 2).unwrap();
            assert_eq!(c.state, NodeState::Commissioned);
            assert_eq!(inv.hw_facts(n.id).unwrap().unwrap().system.serial, "S1");
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
            assert_eq!(kinds, ["discovered", "commissioned", "state", "state"]);
        }

        fn conflicts_name_the_other_node(inv, place) {
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

        fn tokens_expire_and_are_replaced_on_reprovision(inv, place) {
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

        fn single_use_tokens_work_once(inv, place) {
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

        fn refused_transition_changes_nothing(inv, place) {
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

        fn leases_round_trip_and_move_with_the_mac(inv, place) {
            let mut conn = inv.connect_own().unwrap();
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

        fn a_lease_is_claimed_only_when_free_or_expired(inv, place) {
            let row = |m, expires_at| LeaseRow {
                ip: [192, 0, 2, 50].into(),
                mac: Some(mac(m)),
                state: "bound".into(),
                expires_at,
                hostname: None,
            };
            assert!(inv.claim_lease(&row(1, 1000), 0).unwrap());
            assert!(inv.claim_lease(&row(1, 2000), 10).unwrap(), "renewal");
            assert!(!inv.claim_lease(&row(2, 3000), 10).unwrap(), "held by mac 1");
            assert_eq!(inv.load_leases().unwrap(), vec![row(1, 2000)]);
            assert!(inv.claim_lease(&row(2, 3000), 2000).unwrap(), "expired");
            assert_eq!(inv.load_leases().unwrap(), vec![row(2, 3000)]);
        }

        /// Two servers (two inventories on one database) and eight threads spend one
        /// single-use token at the same moment: exactly one gets it.
        fn two_servers_spend_a_single_use_token_once(inv, place) {
            let other = std::sync::Arc::new(place.open());
            let n = inv.add_node(&new(1, "a"), TTL, 0).unwrap();
            let t = inv.issue_token(n.id, TokenKind::Enroll, TTL, 0).unwrap();
            let this = std::sync::Arc::new(place.open());
            for round in 0..5 {
                let t = if round == 0 {
                    t.clone()
                } else {
                    inv.issue_token(n.id, TokenKind::Enroll, TTL, 0).unwrap()
                };
                let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
                let wins: usize = (0..8)
                    .map(|i| {
                        let inv = if i % 2 == 0 { this.clone() } else { other.clone() };
                        let (barrier, t) = (barrier.clone(), t.clone());
                        std::thread::spawn(move || {
                            barrier.wait();
                            inv.consume_token(&t, TokenKind::Enroll, 1).unwrap()
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|h| h.join().unwrap() as usize)
                    .sum();
                assert_eq!(wins, 1, "round {round}");
            }
        }

        /// Two servers hand out the same address to different MACs at the same moment
        /// (their address books disagree): the database gives it to exactly one, and
        /// the row is the winner's.
        fn two_servers_claim_one_address_once(inv, place) {
            let servers = [std::sync::Arc::new(place.open()), std::sync::Arc::new(place.open())];
            for round in 0..5u8 {
                let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
                let ip = Ipv4Addr::new(192, 0, 2, 100 + round);
                let results: Vec<(u8, bool)> = (0..8u8)
                    .map(|i| {
                        let inv = servers[usize::from(i % 2)].clone();
                        let barrier = barrier.clone();
                        let m = 10 * round + i + 1;
                        std::thread::spawn(move || {
                            let l = LeaseRow {
                                ip,
                                mac: Some(mac(m)),
                                state: "bound".into(),
                                expires_at: 10_000,
                                hostname: None,
                            };
                            barrier.wait();
                            (m, inv.claim_lease(&l, 1).unwrap())
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect();
                let winners: Vec<_> = results.iter().filter(|(_, w)| *w).collect();
                assert_eq!(winners.len(), 1, "round {round}: {results:?}");
                let stored: Vec<_> = inv.load_leases().unwrap().into_iter().filter(|l| l.ip == ip).collect();
                assert_eq!(stored.len(), 1);
                assert_eq!(stored[0].mac, Some(mac(winners[0].0)));
            }
        }

        /// Two servers add different machines under one hostname (or one address) at
        /// the same moment: one is added, the other refused as a conflict (never a
        /// second node with that name, never an internal error).
        fn two_servers_adding_one_hostname_at_once_add_one_node(inv, place) {
            let servers = [std::sync::Arc::new(place.open()), std::sync::Arc::new(place.open())];
            for round in 0..5u8 {
                let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
                let results: Vec<_> = (0..2u8)
                    .map(|i| {
                        let inv = servers[usize::from(i)].clone();
                        let barrier = barrier.clone();
                        std::thread::spawn(move || {
                            let n = NewNode {
                                ip: Some(Ipv4Addr::new(192, 0, 2, 20 + round)),
                                ..new(10 * round + i + 1, &format!("same{round}"))
                            };
                            barrier.wait();
                            inv.add_node(&n, TTL, 0)
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect();
                assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: {results:?}");
                let e = results.into_iter().find_map(|r| r.err()).unwrap();
                assert!(matches!(e, InventoryError::Conflict(_)), "round {round}: {e:?}");
            }
            assert_eq!(inv.list_nodes().unwrap().len(), 5);
        }

        /// Two servers' DHCP writers record the same unknown MAC in the same moment:
        /// one node, and both batches are stored.
        fn two_servers_discover_one_machine_once(inv, place) {
            for round in 0..5u8 {
                let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
                let handles: Vec<_> = (0..2)
                    .map(|_| {
                        let mut c = place.open().connect_own().unwrap();
                        let barrier = barrier.clone();
                        std::thread::spawn(move || {
                            let w = DhcpWrites {
                                discover: vec![(mac(100 + round), Discovery::default())],
                                ..Default::default()
                            };
                            barrier.wait();
                            store_dhcp(&mut c, &w, 1).unwrap()
                        })
                    })
                    .collect();
                let found: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
                assert_eq!(found[0][0].node, found[1][0].node, "round {round}");
                assert_eq!(
                    found.iter().filter(|f| f[0].fresh).count(),
                    1,
                    "round {round}: {found:?}"
                );
            }
            assert_eq!(inv.list_nodes().unwrap().len(), 5);
        }
    }

    /// The blocking PostgreSQL client must not be driven from a runtime thread; the
    /// inventory is called from async code too (start-up, the writers' set-up), on
    /// both runtime flavours.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_works_from_async_code_on_a_multi_thread_runtime() {
        let place = testing::Place::postgres();
        let inv = place.open();
        inv.add_node(&new(1, "a"), TTL, 0).unwrap();
        assert_eq!(inv.list_nodes().unwrap().len(), 1);
        let mut own = inv.connect_own().unwrap();
        store_events(&mut own, &[]).unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn postgres_works_from_async_code_on_a_current_thread_runtime() {
        let place = testing::Place::postgres();
        let inv = place.open();
        inv.add_node(&new(1, "a"), TTL, 0).unwrap();
        assert_eq!(inv.list_nodes().unwrap().len(), 1);
    }

    #[test]
    fn a_postgres_inventory_sees_nodes_another_server_added() {
        let place = testing::Place::postgres();
        let (a, b) = (place.open(), place.open());
        let g = a.generation();
        b.add_node(&new(1, "a"), TTL, 0).unwrap();
        assert_eq!(
            a.node_key_by_mac(mac(1)).unwrap().map(|k| k.hostname),
            Some(Some("a".into()))
        );
        // Whatever `a` cached before is stale within PG_GENERATION_MS.
        std::thread::sleep(Duration::from_millis(PG_GENERATION_MS as u64 + 50));
        assert_ne!(a.generation(), g);
    }

    /// PostgreSQL closes the inventory's connections (a restart, a failover, an
    /// operator's `pg_terminate_backend`): the next calls work on new connections.
    #[test]
    fn a_postgres_inventory_reconnects_after_its_connections_are_closed() {
        let place = testing::Place::postgres();
        let inv = place.open();
        inv.add_node(&new(1, "a"), TTL, 0).unwrap();
        let mut own = inv.connect_own().unwrap();
        let mut admin = inv.connect_own().unwrap();
        admin
            .batch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            .unwrap();
        assert_eq!(inv.list_nodes().unwrap().len(), 1);
        inv.add_node(&new(2, "b"), TTL, 0).unwrap();
        // The writers' own connections: the failed batch is kept by the caller, the
        // next one runs on a new connection.
        if let Err(e) = store_events(&mut own, &[]) {
            inv.recover(&mut own, &e).unwrap();
        }
        store_events(&mut own, &[(1, 1, "x".into(), "y".into())]).unwrap();
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("node-1.prov.example"));
        for bad in ["", "-a", "a-", "a_b", "a..b", &"x".repeat(64)] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
