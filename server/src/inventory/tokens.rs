//! Tokens: install and enrollment tokens, single use, and enrollment in one transaction.

use super::*;

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
            c.query_row(
                "SELECT token FROM tokens WHERE node_id = ?1 AND kind = ?3 AND expires_at > ?2 ORDER BY created_at DESC LIMIT 1",
                params![node_id, now, kind.as_str()],
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

/// A freshly issued random token: 32 bytes as URL-safe hex.
pub fn new_token() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}
