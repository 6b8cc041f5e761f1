//! Tokens: install and enrollment tokens, single use, and enrollment in one transaction.

use super::*;

fn opt_text(r: Option<Row>) -> std::result::Result<Option<String>, DbError> {
    r.map(|r| r.get(0)).transpose()
}

impl Inventory {
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
        self.current_token(node_id, TokenKind::Install, now)
    }

    /// The node's newest unexpired token of `kind`.
    pub fn current_token(
        &self,
        node_id: i64,
        kind: TokenKind,
        now: UnixMs,
    ) -> Result<Option<String>> {
        self.read(|c| {
            c.query_opt(
                "SELECT token FROM tokens WHERE node_id = ?1 AND kind = ?3 AND expires_at > ?2 ORDER BY created_at DESC LIMIT 1",
                p![node_id, now, kind.as_str()],
            )
            .and_then(opt_text)
            .map_err(q("reading install token"))
        })
    }

    /// The node an unexpired token of `kind` belongs to.
    pub fn node_by_token(&self, token: &str, kind: TokenKind, now: UnixMs) -> Result<Option<Node>> {
        self.read(|c| {
            c.query_opt(
                &format!(
                    "SELECT {} FROM tokens t JOIN nodes n ON n.id = t.node_id WHERE t.token = ?1 AND t.kind = ?2 AND t.expires_at > ?3 AND t.used_at IS NULL",
                    NODE_COLS.split(", ").map(|c| format!("n.{c}")).collect::<Vec<_>>().join(", ")
                ),
                p![token, kind.as_str(), now],
            )
            .and_then(|r| r.as_ref().map(node_from_row).transpose())
            .map_err(q("checking a token"))
        })
    }

    /// Marks a single-use token used. Returns false if it was already used, expired or
    /// unknown; only one caller ever gets true for a token, also with several rackseed
    /// servers on one PostgreSQL database: the one conditional `UPDATE … WHERE used_at
    /// IS NULL RETURNING` locks the row, and a second caller sees it used.
    pub fn consume_token(&self, token: &str, kind: TokenKind, now: UnixMs) -> Result<bool> {
        self.with(|c| {
            let n = c
                .query(
                    "UPDATE tokens SET used_at = ?3 WHERE token = ?1 AND kind = ?2 AND used_at IS NULL AND expires_at > ?3 RETURNING token",
                    p![token, kind.as_str(), now],
                )
                .map_err(q("using a token"))?;
            Ok(n.len() == 1)
        })
    }

    /// What an enrollment token says: its node, whether it was used, when it expires.
    pub fn enroll_token(&self, token: &str) -> Result<Option<(i64, Option<UnixMs>, UnixMs)>> {
        self.read(|c| {
            c.query_opt(
                "SELECT node_id, used_at, expires_at FROM tokens WHERE token = ?1 AND kind = 'enroll'",
                p![token],
            )
            .and_then(|r| r.map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).transpose())
            .map_err(q("checking an enrollment token"))
        })
    }

    /// What is stored for an enrollment token: its row and the node it is bound to.
    pub fn enroll_token_record(&self, token: &str) -> Result<Option<crate::enroll::TokenRecord>> {
        let Some((node_id, used, expires)) = self.enroll_token(token)? else {
            return Ok(None);
        };
        Ok(Some(crate::enroll::TokenRecord {
            node_id,
            used,
            expires,
            node: self.node_by_id(node_id)?,
        }))
    }

    /// The node's unused, unexpired enrollment token, if it has one.
    pub fn current_enroll_token(&self, node_id: i64, now: UnixMs) -> Result<Option<String>> {
        self.read(|c| {
            c.query_opt(
                "SELECT token FROM tokens WHERE node_id = ?1 AND kind = 'enroll' AND used_at IS NULL AND expires_at > ?2 ORDER BY created_at DESC LIMIT 1",
                p![node_id, now],
            )
            .and_then(opt_text)
            .map_err(q("reading an enrollment token"))
        })
    }

    /// Issues a fresh enrollment token for a node, revoking its unused older ones.
    pub fn reissue_enroll_token(&self, node_id: i64, ttl: Duration, now: UnixMs) -> Result<String> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(q("issuing an enrollment token"))?;
            tx.execute(
                "DELETE FROM tokens WHERE node_id = ?1 AND kind = 'enroll' AND used_at IS NULL",
                p![node_id],
            )
            .map_err(q("issuing an enrollment token"))?;
            let t = issue_token_tx(&mut tx, node_id, TokenKind::Enroll, ttl, now)?;
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
            let mut tx = c.transaction().map_err(q("enrolling"))?;
            let used = tx
                .query(
                    "UPDATE tokens SET used_at = ?3 WHERE token = ?1 AND node_id = ?2 AND kind = 'enroll' AND used_at IS NULL AND expires_at > ?3 RETURNING token",
                    p![token, node_id, now],
                )
                .map_err(q("enrolling"))?;
            if used.len() != 1 {
                return Err(InventoryError::Conflict("enrollment token was already used".into()));
            }
            let n = tx
                .query_one(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"), p![node_id])
                .and_then(|r| node_from_row(&r))
                .map_err(q("enrolling"))?;
            let to = state::next_state(n.state, &Transition::Enroll)
                .map_err(|source| InventoryError::Transition { node: n.display_name(), source })?;
            tx.execute(
                "UPDATE nodes SET state = ?2, state_reason = NULL, facts = ?3, cert_serial = ?4, repl_key = ?5, updated_at = ?6 WHERE id = ?1",
                p![node_id, to.as_str(), facts.to_string(), cert_serial, repl_key, now],
            )
            .map_err(q("enrolling"))?;
            insert_event(&mut tx, node_id, now, "enroll", message)?;
            insert_event(&mut tx, node_id, now, "state", &format!("{} → {to} (enroll)", n.state))?;
            if let Some(g) = group {
                // Re-read inside the transaction (under SQLite's write lock; under
                // PostgreSQL's serializable isolation, where a concurrent enrollment
                // that read the same members fails and is run again): two nodes of
                // one failure domain enrolling at once cannot both pass.
                let members = group_members_tx(&mut tx, &g.name, node_id)?;
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
                tx.execute("UPDATE nodes SET grp = ?2 WHERE id = ?1", p![node_id, g.name])
                    .map_err(q("enrolling"))?;
                tx.execute("UPDATE groups SET version = version + 1 WHERE name = ?1", p![g.name])
                    .map_err(q("enrolling"))?;
                insert_event(&mut tx, node_id, now, "group", &format!("member of group {}", g.name))?;
            }
            let node = tx
                .query_one(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"), p![node_id])
                .and_then(|r| node_from_row(&r))
                .map_err(q("enrolling"))?;
            tx.commit().map_err(q("enrolling"))?;
            Ok(node)
        })
    }
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

pub(super) fn issue_token_tx(
    c: &mut Conn,
    node_id: i64,
    kind: TokenKind,
    ttl: Duration,
    now: UnixMs,
) -> Result<String> {
    let token = new_token();
    c.execute(
        "INSERT INTO tokens (token, node_id, kind, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        p![token, node_id, kind.as_str(), now, now + ttl.as_millis() as i64],
    )
    .map_err(q("issuing a token"))?;
    Ok(token)
}

/// The members of group `name` other than `except`, as placement sees them.
fn group_members_tx(c: &mut Conn, name: &str, except: i64) -> Result<Vec<crate::groups::Member>> {
    c.query(
        "SELECT id, COALESCE(hostname, mac), state, failure_domain FROM nodes WHERE grp = ?1 AND id != ?2",
        p![name, except],
    )
    .and_then(|all| {
        rows(all, |r| {
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
    })
    .map_err(q("reading group members"))
}

/// A freshly issued random token: 32 bytes as URL-safe hex.
pub fn new_token() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}
