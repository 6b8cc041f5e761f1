//! Nodes: lookups by MAC, id, hostname and address; adding, discovering, deleting; state transitions.

use super::*;

impl Inventory {
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

    /// Every node's MAC with the fields DHCP decides on (the DHCP server's node map).
    pub fn node_keys(&self) -> Result<Vec<(MacAddr, NodeKey)>> {
        self.read(|c| {
            let mut st = c
                .prepare("SELECT mac, id, hostname FROM nodes")
                .map_err(q("loading the MACs of the nodes"))?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        NodeKey {
                            id: r.get(1)?,
                            hostname: r.get(2)?,
                        },
                    ))
                })
                .map_err(q("loading the MACs of the nodes"))?;
            let mut out = Vec::new();
            for row in rows {
                let (m, k) = row.map_err(q("loading the MACs of the nodes"))?;
                if let Ok(m) = m.parse() {
                    out.push((m, k));
                }
            }
            Ok(out)
        })
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
                "UPDATE nodes SET last_seen_at = ?2, arch = COALESCE(?3, arch), vendor_class = COALESCE(?4, vendor_class), giaddr = COALESCE(?5, giaddr), circuit_id = COALESCE(?6, circuit_id), remote_id = COALESCE(?7, remote_id) WHERE id = ?1",
                params![id, now, info.arch, info.vendor_class, info.giaddr.map(|a| a.to_string()), info.circuit_id, info.remote_id],
            )
            .map_err(q("updating last-seen time"))?;
            Ok(())
        })
    }

    /// What DHCP told about a node: relay, option 82, vendor class and arch.
    pub fn dhcp_facts(&self, id: i64) -> Result<crate::commission::DhcpFacts> {
        self.read(|c| {
            c.query_row(
                "SELECT giaddr, circuit_id, remote_id, vendor_class, arch FROM nodes WHERE id = ?1",
                [id],
                |r| {
                    let giaddr: Option<String> = r.get(0)?;
                    Ok(crate::commission::DhcpFacts {
                        giaddr: giaddr.and_then(|g| g.parse().ok()),
                        circuit_id: r.get(1)?,
                        remote_id: r.get(2)?,
                        vendor_class: r.get(3)?,
                        arch: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(q("reading DHCP facts"))?
            .ok_or_else(|| InventoryError::NotFound(format!("node {id}")))
        })
    }

    /// The hardware a node's commissioning boot reported, as stored.
    pub fn hw_facts(&self, id: i64) -> Result<Option<crate::commission::HwFacts>> {
        self.read(|c| {
            let t: Option<Option<String>> = c
                .query_row("SELECT hw_facts FROM nodes WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(q("reading hardware facts"))?;
            Ok(t.flatten().and_then(|t| serde_json::from_str(&t).ok()))
        })
    }

    /// Stores a commissioning report and makes the node `commissioned`, with the
    /// report's summary on its timeline, in one transaction.
    pub fn commission(
        &self,
        id: i64,
        hw: &crate::commission::HwFacts,
        now: UnixMs,
    ) -> Result<Node> {
        let text = serde_json::to_string(hw).unwrap_or_else(|_| "{}".into());
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(q("commissioning a node"))?;
            let n = tx
                .query_row(
                    &format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"),
                    [id],
                    node_from_row,
                )
                .map_err(q("commissioning a node"))?;
            let to = state::next_state(n.state, &Transition::Commission).map_err(|source| {
                InventoryError::Transition {
                    node: n.display_name(),
                    source,
                }
            })?;
            tx.execute(
                "UPDATE nodes SET state = ?2, hw_facts = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, to.as_str(), text, now],
            )
            .map_err(q("commissioning a node"))?;
            insert_event(&tx, id, now, "commissioned", &hw.summary())?;
            if n.state != to {
                insert_event(&tx, id, now, "state", &format!("{} → {to}", n.state))?;
            }
            let node = tx
                .query_row(
                    &format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"),
                    [id],
                    node_from_row,
                )
                .map_err(q("commissioning a node"))?;
            tx.commit().map_err(q("commissioning a node"))?;
            Ok(node)
        })
        .inspect(|_| self.changed_nodes())
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
}

/// Finds the node with `mac`, or records it as `discovered` with its event.
pub(super) fn discover_tx(
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
        "INSERT INTO nodes (mac, state, arch, vendor_class, created_at, updated_at, last_seen_at, giaddr, circuit_id, remote_id) VALUES (?1, 'discovered', ?2, ?3, ?4, ?4, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut st| {
        st.execute(params![
            mac.to_string(),
            info.arch,
            info.vendor_class,
            now,
            info.giaddr.map(|a| a.to_string()),
            info.circuit_id,
            info.remote_id
        ])
    })
    .map_err(q("discovering a node"))?;
    let id = tx.last_insert_rowid();
    let mut msg = format!(
        "discovered: arch {}, vendor class {}",
        info.arch.as_deref().unwrap_or("unknown"),
        info.vendor_class.as_deref().unwrap_or("none")
    );
    if let Some(g) = info.giaddr {
        msg.push_str(&format!(
            ", through relay {g} (circuit-id {}, remote-id {})",
            info.circuit_id.as_deref().unwrap_or("none"),
            info.remote_id.as_deref().unwrap_or("none")
        ));
    }
    insert_event(tx, id, now, "discovered", &msg)?;
    Ok((NodeKey { id, hostname: None }, true))
}

fn vars_text(v: &serde_json::Value) -> String {
    if v.is_null() {
        "{}".to_string()
    } else {
        v.to_string()
    }
}
