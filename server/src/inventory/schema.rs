//! The schema: migrations in order, opening connections with rackseed's pragmas, creating the file private.

use super::*;

/// Migrations in order; the database's `user_version` says how many have run.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 5: console accounts and their sessions (ids stored as SHA-256 digests).
    "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        digest TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions(user);",
    // 6: each node's BMC; the password sealed by `power::vault`.
    "CREATE TABLE bmcs (
        node_id INTEGER PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
        protocol TEXT NOT NULL,
        address TEXT NOT NULL,
        username TEXT NOT NULL,
        password BLOB NOT NULL,
        system TEXT,
        insecure_tls INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
    );",
    // 7: what DHCP and the commissioning boot told about a machine.
    "ALTER TABLE nodes ADD COLUMN giaddr TEXT;
    ALTER TABLE nodes ADD COLUMN circuit_id TEXT;
    ALTER TABLE nodes ADD COLUMN remote_id TEXT;
    ALTER TABLE nodes ADD COLUMN hw_facts TEXT;",
];

/// The schema version this rackseed migrates an inventory to (migrations it knows).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Creates an inventory at `path` with only the first `version` migrations applied:
/// a database an older rackseed left (tests of what meets one).
#[cfg(test)]
pub(crate) fn create_at_version(path: &Path, version: usize) {
    let conn = Connection::open(path).expect("test database opens");
    for (i, sql) in MIGRATIONS.iter().take(version).enumerate() {
        conn.execute_batch(sql).expect("migration runs");
        conn.pragma_update(None, "user_version", (i + 1) as i64)
            .expect("version set");
    }
}

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
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

pub(super) fn create_private(path: &Path) -> std::io::Result<()> {
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

/// Makes `conn`'s commits unflushed (`synchronous = NORMAL`: in WAL mode a commit
/// is written but not flushed; a crash of the machine can lose the last ones, never
/// corrupt the file). For the DHCP inventory writer, whose lease writes are durable in
/// the lease journal first and which flushes the write-ahead log itself.
pub fn relaxed(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA synchronous = NORMAL;")
        .map_err(q("relaxing the DHCP writer's flushes"))
}
