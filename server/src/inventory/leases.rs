//! Leases: the DHCP writer's durable lease changes and discoveries, read back at start;
//! on PostgreSQL, the claim that keeps two rackseed servers from binding one address.

use super::*;

impl Inventory {
    /// Every persisted lease.
    pub fn load_leases(&self) -> Result<Vec<LeaseRow>> {
        self.read(|c| {
            let all = c
                .query(
                    "SELECT ip, mac, state, expires_at, hostname FROM leases",
                    &[],
                )
                .and_then(|all| {
                    rows(all, |r| {
                        Ok((
                            r.get::<String>(0)?,
                            r.get::<Option<String>>(1)?,
                            r.get::<String>(2)?,
                            r.get::<i64>(3)?,
                            r.get::<Option<String>>(4)?,
                        ))
                    })
                })
                .map_err(q("loading leases"))?;
            let mut out = Vec::new();
            for (ip, mac, state, expires_at, hostname) in all {
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
            let all = c
                .query("SELECT mac, ip FROM nodes WHERE ip IS NOT NULL", &[])
                .and_then(|all| rows(all, |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?))))
                .map_err(q("loading reservations"))?;
            Ok(all
                .into_iter()
                .filter_map(|(m, i)| Some((m.parse().ok()?, i.parse().ok()?)))
                .collect())
        })
    }

    /// Claims `lease.ip` for `lease.mac` until `lease.expires_at`, in one statement
    /// that another rackseed on the same database cannot interleave with: the address
    /// is taken only when it is free, already this MAC's, held by no MAC, or expired at
    /// `now`; the MAC's other lease rows are dropped in the same transaction. Returns
    /// false (and changes nothing) when another MAC holds the address.
    pub fn claim_lease(&self, lease: &LeaseRow, now: UnixMs) -> Result<bool> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(q("claiming a lease"))?;
            let won = claim_tx(&mut tx, lease, now)?;
            if won {
                tx.commit().map_err(q("claiming a lease"))?;
            }
            Ok(won)
        })
    }
}

/// Claims every lease of `leases` as [`Inventory::claim_lease`] does, in one
/// transaction on `conn` (the DHCP journal thread's own connection, before the ACKs of
/// a batch leave): which of them this server won.
pub fn claim_leases(conn: &mut Conn, leases: &[&LeaseRow], now: UnixMs) -> Result<Vec<bool>> {
    retry_serializable(conn, &mut |conn| {
        let mut tx = conn.transaction().map_err(q("claiming leases"))?;
        let won = leases
            .iter()
            .map(|l| claim_tx(&mut tx, l, now))
            .collect::<Result<Vec<_>>>()?;
        tx.commit().map_err(q("claiming leases"))?;
        Ok(won)
    })
}

/// The conditional upsert of [`Inventory::claim_lease`], inside a transaction: the
/// MAC's other rows go first (one lease per MAC), and come back when the claim is lost.
fn claim_tx(tx: &mut Conn, l: &LeaseRow, now: UnixMs) -> Result<bool> {
    tx.batch("SAVEPOINT claim").map_err(q("claiming a lease"))?;
    if let Some(mac) = l.mac {
        tx.execute(
            "DELETE FROM leases WHERE mac = ?1 AND ip != ?2",
            p![mac.to_string(), l.ip.to_string()],
        )
        .map_err(q("claiming a lease"))?;
    }
    let won = tx
        .query(
            "INSERT INTO leases (ip, mac, state, expires_at, hostname) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, expires_at = excluded.expires_at, hostname = excluded.hostname
             WHERE leases.mac IS NULL OR leases.mac = excluded.mac OR leases.expires_at <= ?6
             RETURNING ip",
            p![
                l.ip.to_string(),
                l.mac.map(|m| m.to_string()),
                l.state,
                l.expires_at,
                l.hostname,
                now
            ],
        )
        .map_err(q("claiming a lease"))?;
    let sql = if won.is_empty() {
        "ROLLBACK TO SAVEPOINT claim; RELEASE SAVEPOINT claim"
    } else {
        "RELEASE SAVEPOINT claim"
    };
    tx.batch(sql).map_err(q("claiming a lease"))?;
    Ok(!won.is_empty())
}

/// Stores lease changes in one transaction on `conn` (the DHCP writer's own connection).
pub fn store_leases(conn: &mut Conn, writes: &[LeaseWrite]) -> Result<()> {
    retry_serializable(conn, &mut |conn| {
        let mut tx = conn.transaction().map_err(q("storing leases"))?;
        store_leases_tx(&mut tx, writes, now_ms())?;
        tx.commit().map_err(q("storing leases"))
    })
}

/// Stores a DHCP batch in one durable transaction on `conn` (the DHCP writer's own
/// connection): discoveries first (each once per MAC, with its `discovered` event), then
/// last-seen updates, lease changes and timeline events (skipped for nodes deleted
/// meanwhile). Returns the discovered machines' nodes.
pub fn store_dhcp(conn: &mut Conn, writes: &DhcpWrites, now: UnixMs) -> Result<Vec<Discovered>> {
    retry_serializable(conn, &mut |conn| store_dhcp_once(conn, writes, now))
}

fn store_dhcp_once(conn: &mut Conn, writes: &DhcpWrites, now: UnixMs) -> Result<Vec<Discovered>> {
    let mut tx = conn.transaction().map_err(q("storing a DHCP batch"))?;
    let mut found = Vec::with_capacity(writes.discover.len());
    for (mac, info) in &writes.discover {
        let (node, fresh) = discover_tx(&mut tx, *mac, info, now)?;
        found.push(Discovered {
            mac: *mac,
            node,
            fresh,
        });
    }
    for (id, info) in &writes.seen {
        tx.execute(
            "UPDATE nodes SET last_seen_at = ?2, arch = COALESCE(?3, arch), vendor_class = COALESCE(?4, vendor_class) WHERE id = ?1",
            p![id, now, info.arch, info.vendor_class],
        )
        .map_err(q("updating last-seen times"))?;
    }
    store_leases_tx(&mut tx, &writes.leases, now)?;
    for e in &writes.events {
        let node = e
            .node
            .or_else(|| found.iter().find(|d| d.mac == e.mac).map(|d| d.node.id));
        if let Some(id) = node {
            tx.execute(
                "INSERT INTO events (node_id, at, kind, message) SELECT CAST(?1 AS BIGINT), CAST(?2 AS BIGINT), ?3, ?4 WHERE EXISTS (SELECT 1 FROM nodes WHERE id = ?1)",
                p![id, e.at, e.kind, e.message],
            )
            .map_err(q("recording DHCP events"))?;
        }
    }
    tx.commit().map_err(q("storing a DHCP batch"))?;
    Ok(found)
}

fn store_leases_tx(tx: &mut Conn, writes: &[LeaseWrite], now: UnixMs) -> Result<()> {
    for w in writes {
        match w {
            // SQLite has one writer, this rackseed, whose address book decided the
            // write: it is stored as is. On PostgreSQL another rackseed may hold the
            // address; a binding goes through the same claim, and a lost one is left
            // to the other server's row (logged). A row without a MAC (a declined
            // address: a client saw it in use on the wire) is stored as is on both.
            // A release (`Delete`) carries no MAC and deletes the row as is: on
            // PostgreSQL it could remove a binding another server made after this
            // one's lapsed (see the known gaps).
            LeaseWrite::Upsert(l) if tx.backend() == Backend::Postgres && l.mac.is_some() => {
                if !claim_tx(tx, l, now)? {
                    tracing::warn!(ip = %l.ip, mac = ?l.mac.map(|m| m.to_string()), "lease not stored: another rackseed on the same database holds this address");
                }
            }
            LeaseWrite::Upsert(l) => {
                if let Some(mac) = l.mac {
                    tx.execute(
                        "DELETE FROM leases WHERE mac = ?1 AND ip != ?2",
                        p![mac.to_string(), l.ip.to_string()],
                    )
                    .map_err(q("storing leases"))?;
                }
                tx.execute(
                    "INSERT INTO leases (ip, mac, state, expires_at, hostname) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, expires_at = excluded.expires_at, hostname = excluded.hostname",
                    p![
                        l.ip.to_string(),
                        l.mac.map(|m| m.to_string()),
                        l.state,
                        l.expires_at,
                        l.hostname
                    ],
                )
                .map_err(q("storing leases"))?;
            }
            LeaseWrite::Delete(ip) => {
                tx.execute("DELETE FROM leases WHERE ip = ?1", p![ip.to_string()])
                    .map_err(q("storing leases"))?;
            }
        }
    }
    Ok(())
}
