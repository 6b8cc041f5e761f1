//! The inventory: nodes, their timelines, tokens and DHCP leases in one SQLite file.
//!
//! Owns the schema, its migrations and every query. State changes go through
//! [`Inventory::transition`], which asks [`state::next_state`] and stores the result and
//! its event in one transaction. Does not decide anything about DHCP or boot files.

mod bmcs;
mod events;
pub mod groups;
mod leases;
mod nodes;
mod schema;
pub mod state;
mod tokens;
mod users;

use events::insert_event;
pub use events::{Retention, store_events, store_events_kept};
pub use leases::{store_dhcp, store_leases};
use nodes::discover_tx;
#[cfg(test)]
pub(crate) use schema::create_at_version;
pub use schema::{SCHEMA_VERSION, connect, relaxed};
use schema::{create_private, migrate};
use tokens::issue_token_tx;
pub use tokens::{Enrollment, new_token};
pub use users::User;

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

    /// Runs `f` with the connection (for modules that own their own tables, like groups).
    pub fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        self.with(f)
    }
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
