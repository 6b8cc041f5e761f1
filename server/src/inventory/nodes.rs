//! Nodes: lookups by MAC, id, hostname and address; adding, discovering, deleting; state transitions.

use super::*;

fn key_from_row(r: &Row) -> std::result::Result<NodeKey, DbError> {
    Ok(NodeKey {
        id: r.get(0)?,
        hostname: r.get(1)?,
    })
}

/// The node with `id` on `c` (inside a transaction).
fn node_tx(c: &mut Conn, id: i64, doing: &'static str) -> Result<Option<Node>> {
    c.query_opt(
        &format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"),
        p![id],
    )
    .and_then(|r| r.as_ref().map(node_from_row).transpose())
    .map_err(q(doing))
}

fn one_node(
    c: &mut Conn,
    sql: &str,
    params: &[db::Value],
    doing: &'static str,
) -> Result<Option<Node>> {
    c.query_opt(sql, params)
        .and_then(|r| r.as_ref().map(node_from_row).transpose())
        .map_err(q(doing))
}

impl Inventory {
    /// The id and hostname of the node with this MAC, if any (what DHCP decides on).
    pub fn node_key_by_mac(&self, mac: MacAddr) -> Result<Option<NodeKey>> {
        self.read(|c| {
            c.query_opt(
                "SELECT id, hostname FROM nodes WHERE mac = ?1",
                p![mac.to_string()],
            )
            .and_then(|r| r.as_ref().map(key_from_row).transpose())
            .map_err(q("looking up a node by MAC"))
        })
    }

    /// Every node's MAC with the fields DHCP decides on (the DHCP server's node map).
    pub fn node_keys(&self) -> Result<Vec<(MacAddr, NodeKey)>> {
        self.read(|c| {
            let all = c
                .query("SELECT mac, id, hostname FROM nodes", &[])
                .and_then(|all| {
                    rows(all, |r| {
                        Ok((
                            r.get::<String>(0)?,
                            NodeKey {
                                id: r.get(1)?,
                                hostname: r.get(2)?,
                            },
                        ))
                    })
                })
                .map_err(q("loading the MACs of the nodes"))?;
            Ok(all
                .into_iter()
                .filter_map(|(m, k)| m.parse().ok().map(|m| (m, k)))
                .collect())
        })
    }

    /// The node with this MAC, if any.
    pub fn node_by_mac(&self, mac: MacAddr) -> Result<Option<Node>> {
        self.read(|c| {
            one_node(
                c,
                &format!("SELECT {NODE_COLS} FROM nodes WHERE mac = ?1"),
                p![mac.to_string()],
                "looking up a node by MAC",
            )
        })
    }

    /// The node with this id, if any.
    pub fn node_by_id(&self, id: i64) -> Result<Option<Node>> {
        self.read(|c| node_tx(c, id, "looking up a node by id"))
    }

    /// The node an operator means by `key`: an id, a MAC or a hostname.
    pub fn find_node(&self, key: &str) -> Result<Node> {
        let found = if let Ok(mac) = key.parse::<MacAddr>() {
            self.node_by_mac(mac)?
        } else if let Ok(id) = key.parse::<i64>() {
            self.node_by_id(id)?
        } else {
            self.read(|c| {
                one_node(
                    c,
                    &format!("SELECT {NODE_COLS} FROM nodes WHERE hostname = ?1"),
                    p![key],
                    "looking up a node by hostname",
                )
            })?
        };
        found.ok_or_else(|| InventoryError::NotFound(format!("node `{key}`")))
    }

    /// The node that currently holds `ip` as its fixed address.
    pub fn node_by_ip(&self, ip: Ipv4Addr) -> Result<Option<Node>> {
        self.read(|c| {
            one_node(
                c,
                &format!("SELECT {NODE_COLS} FROM nodes WHERE ip = ?1"),
                p![ip.to_string()],
                "looking up a node by address",
            )
        })
    }

    /// Every node, by id.
    pub fn list_nodes(&self) -> Result<Vec<Node>> {
        self.read(|c| {
            c.query(&format!("SELECT {NODE_COLS} FROM nodes ORDER BY id"), &[])
                .and_then(|all| rows(all, node_from_row))
                .map_err(q("listing nodes"))
        })
    }

    /// Counts of nodes per state (for metrics).
    pub fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        self.read(|c| {
            c.query("SELECT state, COUNT(*) FROM nodes GROUP BY state", &[])
                .and_then(|all| rows(all, |r| Ok((r.get(0)?, r.get(1)?))))
                .map_err(q("counting nodes"))
        })
    }

    /// Records an unknown machine as `discovered`; returns the node and whether it is new.
    pub fn discover(&self, mac: MacAddr, info: &Discovery, now: UnixMs) -> Result<(Node, bool)> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(q("discovering a node"))?;
            let (key, fresh) = discover_tx(&mut tx, mac, info, now)?;
            let n = node_tx(&mut tx, key.id, "discovering a node")?
                .ok_or_else(|| InventoryError::NotFound(format!("node {}", key.id)))?;
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
            let mut tx = c.transaction().map_err(q("adding a node"))?;
            let taken: Option<String> = tx
                .query_opt("SELECT mac FROM nodes WHERE hostname = ?1 AND mac != ?2", p![new.hostname, mac.to_string()])
                .and_then(|r| r.map(|r| r.get(0)).transpose())
                .map_err(q("adding a node"))?;
            if let Some(other) = taken {
                return Err(InventoryError::Conflict(format!("hostname `{}` is already used by node {other}", new.hostname)));
            }
            if let Some(ip) = new.ip {
                let taken: Option<String> = tx
                    .query_opt("SELECT mac FROM nodes WHERE ip = ?1 AND mac != ?2", p![ip.to_string(), mac.to_string()])
                    .and_then(|r| r.map(|r| r.get(0)).transpose())
                    .map_err(q("adding a node"))?;
                if let Some(other) = taken {
                    return Err(InventoryError::Conflict(format!("address {ip} is already reserved for node {other}")));
                }
            }
            let existing = one_node(&mut tx, &format!("SELECT {NODE_COLS} FROM nodes WHERE mac = ?1"), p![mac.to_string()], "adding a node")?;
            let t = Transition::Assign { provision: new.provision };
            let id = match existing {
                Some(n) => {
                    let to = state::next_state(n.state, &t)
                        .map_err(|source| InventoryError::Transition { node: mac.to_string(), source })?;
                    tx.execute(
                        "UPDATE nodes SET hostname = ?2, profile = ?3, ip = ?4, grp = ?5, failure_domain = ?6, state = ?7, state_reason = NULL, updated_at = ?8, vars = ?9 WHERE id = ?1",
                        p![n.id, new.hostname, new.profile, new.ip.map(|i| i.to_string()), new.group, new.failure_domain, to.as_str(), now, vars_text(&new.vars)],
                    )
                    .map_err(q("adding a node"))?;
                    insert_event(&mut tx, n.id, now, "state", &format!("{} → {to}: assigned hostname {} and profile {}", n.state, new.hostname, new.profile))?;
                    n.id
                }
                None => {
                    let to = state::next_state(NodeState::Discovered, &t)
                        .map_err(|source| InventoryError::Transition { node: mac.to_string(), source })?;
                    let id: i64 = tx
                        .query_one(
                            "INSERT INTO nodes (mac, hostname, profile, ip, grp, failure_domain, state, created_at, updated_at, vars) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9) RETURNING id",
                            p![mac.to_string(), new.hostname, new.profile, new.ip.map(|i| i.to_string()), new.group, new.failure_domain, to.as_str(), now, vars_text(&new.vars)],
                        )
                        .and_then(|r| r.get(0))
                        .map_err(q("adding a node"))?;
                    insert_event(&mut tx, id, now, "state", &format!("added as {to} with hostname {} and profile {}", new.hostname, new.profile))?;
                    id
                }
            };
            let node = node_tx(&mut tx, id, "adding a node")?
                .ok_or_else(|| InventoryError::NotFound(format!("node {id}")))?;
            if node.state == NodeState::Provisioning {
                issue_token_tx(&mut tx, id, TokenKind::Install, token_ttl, now)?;
            }
            tx.commit().map_err(q("adding a node"))?;
            Ok(node)
        })
        .inspect(|_| self.changed_nodes())
    }

    /// Deletes a node with its timeline and tokens; frees its lease.
    pub fn delete_node(&self, id: i64) -> Result<()> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(q("deleting a node"))?;
            let mac: Option<String> = tx
                .query_opt("SELECT mac FROM nodes WHERE id = ?1", p![id])
                .and_then(|r| r.map(|r| r.get(0)).transpose())
                .map_err(q("deleting a node"))?;
            let Some(mac) = mac else {
                return Err(InventoryError::NotFound(format!("node {id}")));
            };
            tx.execute("DELETE FROM nodes WHERE id = ?1", p![id])
                .map_err(q("deleting a node"))?;
            tx.execute("DELETE FROM leases WHERE mac = ?1", p![mac])
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
            let mut tx = c.transaction().map_err(q("changing node state"))?;
            let n = node_tx(&mut tx, id, "changing node state")?
                .ok_or_else(|| InventoryError::NotFound(format!("node {id}")))?;
            if let Some((kind, message)) = cause {
                insert_event(&mut tx, id, now, kind, message)?;
            }
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
                p![id, to.as_str(), reason, now],
            )
            .map_err(q("changing node state"))?;
            if n.state != to || reason.is_some() {
                let msg = match &reason {
                    Some(r) => format!("{} → {to}: {r}", n.state),
                    None => format!("{} → {to} ({})", n.state, t.name()),
                };
                insert_event(&mut tx, id, now, "state", &msg)?;
            }
            if matches!(t, Transition::Reprovision | Transition::Provision)
                || (to == NodeState::Provisioning && n.state != to)
            {
                tx.execute("DELETE FROM tokens WHERE node_id = ?1", p![id])
                    .map_err(q("changing node state"))?;
                // A reinstall revokes the node's certificate: agent calls with it stop working.
                tx.execute("UPDATE nodes SET cert_serial = NULL WHERE id = ?1", p![id])
                    .map_err(q("changing node state"))?;
                issue_token_tx(&mut tx, id, TokenKind::Install, token_ttl, now)?;
            }
            let node = node_tx(&mut tx, id, "changing node state")?
                .ok_or_else(|| InventoryError::NotFound(format!("node {id}")))?;
            tx.commit().map_err(q("changing node state"))?;
            Ok(node)
        })
    }

    /// Notes that a node was seen on the network (DHCP) and what it said.
    pub fn touch(&self, id: i64, info: &Discovery, now: UnixMs) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE nodes SET last_seen_at = ?2, arch = COALESCE(?3, arch), vendor_class = COALESCE(?4, vendor_class), giaddr = COALESCE(?5, giaddr), circuit_id = COALESCE(?6, circuit_id), remote_id = COALESCE(?7, remote_id) WHERE id = ?1",
                p![id, now, info.arch, info.vendor_class, info.giaddr.map(|a| a.to_string()), info.circuit_id, info.remote_id],
            )
            .map_err(q("updating last-seen time"))?;
            Ok(())
        })
    }

    /// What DHCP told about a node: relay, option 82, vendor class and arch.
    pub fn dhcp_facts(&self, id: i64) -> Result<crate::commission::DhcpFacts> {
        self.read(|c| {
            c.query_opt(
                "SELECT giaddr, circuit_id, remote_id, vendor_class, arch FROM nodes WHERE id = ?1",
                p![id],
            )
            .and_then(|r| {
                r.map(|r| {
                    let giaddr: Option<String> = r.get(0)?;
                    Ok(crate::commission::DhcpFacts {
                        giaddr: giaddr.and_then(|g| g.parse().ok()),
                        circuit_id: r.get(1)?,
                        remote_id: r.get(2)?,
                        vendor_class: r.get(3)?,
                        arch: r.get(4)?,
                    })
                })
                .transpose()
            })
            .map_err(q("reading DHCP facts"))?
            .ok_or_else(|| InventoryError::NotFound(format!("node {id}")))
        })
    }

    /// One text column of a node (`None` for no node or no value).
    fn node_text(&self, col: &str, id: i64, doing: &'static str) -> Result<Option<String>> {
        self.read(|c| {
            let t: Option<Option<String>> = c
                .query_opt(&format!("SELECT {col} FROM nodes WHERE id = ?1"), p![id])
                .and_then(|r| r.map(|r| r.get(0)).transpose())
                .map_err(q(doing))?;
            Ok(t.flatten())
        })
    }

    /// The hardware a node's commissioning boot reported, as stored.
    pub fn hw_facts(&self, id: i64) -> Result<Option<crate::commission::HwFacts>> {
        let t = self.node_text("hw_facts", id, "reading hardware facts")?;
        Ok(t.and_then(|t| serde_json::from_str(&t).ok()))
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
            let mut tx = c.transaction().map_err(q("commissioning a node"))?;
            let n = node_tx(&mut tx, id, "commissioning a node")?
                .ok_or_else(|| InventoryError::NotFound(format!("node {id}")))?;
            let to = state::next_state(n.state, &Transition::Commission).map_err(|source| {
                InventoryError::Transition {
                    node: n.display_name(),
                    source,
                }
            })?;
            tx.execute(
                "UPDATE nodes SET state = ?2, hw_facts = ?3, updated_at = ?4 WHERE id = ?1",
                p![id, to.as_str(), text, now],
            )
            .map_err(q("commissioning a node"))?;
            insert_event(&mut tx, id, now, "commissioned", &hw.summary())?;
            if n.state != to {
                insert_event(&mut tx, id, now, "state", &format!("{} → {to}", n.state))?;
            }
            let node = node_tx(&mut tx, id, "commissioning a node")?
                .ok_or_else(|| InventoryError::NotFound(format!("node {id}")))?;
            tx.commit().map_err(q("commissioning a node"))?;
            Ok(node)
        })
        .inspect(|_| self.changed_nodes())
    }

    /// The facts a node reported at enrollment, as stored.
    pub fn facts(&self, id: i64) -> Result<Option<serde_json::Value>> {
        let t = self.node_text("facts", id, "reading facts")?;
        Ok(t.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// The installer images nodes reference (`nodes.image`), each once.
    pub fn node_images(&self) -> Result<Vec<String>> {
        self.read(|c| {
            c.query(
                "SELECT DISTINCT image FROM nodes WHERE image IS NOT NULL",
                &[],
            )
            .and_then(|all| rows(all, |r| r.get(0)))
            .map_err(q("listing node images"))
        })
    }

    /// The serial of the certificate issued to a node at enrollment.
    pub fn cert_serial(&self, id: i64) -> Result<Option<String>> {
        self.node_text("cert_serial", id, "reading a certificate serial")
    }
}

/// Finds the node with `mac`, or records it as `discovered` with its event.
pub(super) fn discover_tx(
    tx: &mut Conn,
    mac: MacAddr,
    info: &Discovery,
    now: UnixMs,
) -> Result<(NodeKey, bool)> {
    let existing = tx
        .query_opt(
            "SELECT id, hostname FROM nodes WHERE mac = ?1",
            p![mac.to_string()],
        )
        .and_then(|r| r.as_ref().map(key_from_row).transpose())
        .map_err(q("discovering a node"))?;
    if let Some(k) = existing {
        return Ok((k, false));
    }
    let id: i64 = tx
        .query_one(
            "INSERT INTO nodes (mac, state, arch, vendor_class, created_at, updated_at, last_seen_at, giaddr, circuit_id, remote_id) VALUES (?1, 'discovered', ?2, ?3, ?4, ?4, ?4, ?5, ?6, ?7) RETURNING id",
            p![
                mac.to_string(),
                info.arch,
                info.vendor_class,
                now,
                info.giaddr.map(|a| a.to_string()),
                info.circuit_id,
                info.remote_id
            ],
        )
        .and_then(|r| r.get(0))
        .map_err(q("discovering a node"))?;
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
