//! Leases: the DHCP writer's durable lease changes and discoveries, read back at start.

use super::*;

impl Inventory {
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
