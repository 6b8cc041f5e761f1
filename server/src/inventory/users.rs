//! Console accounts and sessions (see [`crate::accounts`] for what is stored).

use super::*;
use crate::accounts::{Role, Session};

/// An account as listed (never with its hash).
#[derive(Clone, Debug, serde::Serialize)]
pub struct User {
    pub name: String,
    pub role: String,
    pub created_at: UnixMs,
}

impl Inventory {
    /// Adds an account; a taken name is a conflict.
    pub fn add_user(&self, name: &str, role: Role, hash: &str, now: UnixMs) -> Result<User> {
        self.with(|c| {
            let n = c
                .execute(
                    "INSERT INTO users (name, role, password, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO NOTHING",
                    p![name, role.as_str(), hash, now],
                )
                .map_err(q("adding a user"))?;
            if n == 0 {
                return Err(InventoryError::Conflict(format!(
                    "user `{name}` exists; delete it first or pick another name"
                )));
            }
            Ok(User {
                name: name.to_string(),
                role: role.as_str().to_string(),
                created_at: now,
            })
        })
    }

    /// Every account, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        self.read(|c| {
            c.query(
                "SELECT name, role, created_at FROM users ORDER BY name",
                &[],
            )
            .and_then(|all| {
                rows(all, |r| {
                    Ok(User {
                        name: r.get(0)?,
                        role: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                })
            })
            .map_err(q("listing users"))
        })
    }

    /// An account's role and password hash.
    pub fn user_secret(&self, name: &str) -> Result<Option<(Role, String)>> {
        let row: Option<(String, String)> = self.read(|c| {
            c.query_opt("SELECT role, password FROM users WHERE name = ?1", p![name])
                .and_then(|r| r.map(|r| Ok((r.get(0)?, r.get(1)?))).transpose())
                .map_err(q("reading a user"))
        })?;
        Ok(row.and_then(|(role, hash)| role.parse().ok().map(|r| (r, hash))))
    }

    /// Deletes an account and ends its sessions.
    pub fn delete_user(&self, name: &str) -> Result<()> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(q("deleting a user"))?;
            let n = tx
                .execute("DELETE FROM users WHERE name = ?1", p![name])
                .map_err(q("deleting a user"))?;
            if n == 0 {
                return Err(InventoryError::NotFound(format!("user `{name}`")));
            }
            tx.execute("DELETE FROM sessions WHERE \"user\" = ?1", p![name])
                .map_err(q("ending a user's sessions"))?;
            tx.commit().map_err(q("deleting a user"))
        })
    }

    /// Stores a new session (by the digest of its id); drops expired ones.
    pub fn create_session(
        &self,
        digest: &str,
        user: &str,
        csrf: &str,
        now: UnixMs,
        expires_at: UnixMs,
    ) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM sessions WHERE expires_at <= ?1", p![now])
                .map_err(q("dropping expired sessions"))?;
            c.execute(
                "INSERT INTO sessions (digest, \"user\", csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                p![digest, user, csrf, now, expires_at],
            )
            .map_err(q("storing a session"))?;
            Ok(())
        })
    }

    /// The live session with this digest, with its user's current role.
    pub fn session(&self, digest: &str, now: UnixMs) -> Result<Option<Session>> {
        let row: Option<(String, String, String, i64)> = self.read(|c| {
            c.query_opt(
                "SELECT s.\"user\", u.role, s.csrf, s.expires_at FROM sessions s JOIN users u ON u.name = s.\"user\" WHERE s.digest = ?1 AND s.expires_at > ?2",
                p![digest, now],
            )
            .and_then(|r| r.map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).transpose())
            .map_err(q("reading a session"))
        })?;
        Ok(row.and_then(|(user, role, csrf, expires_at)| {
            role.parse().ok().map(|role| Session {
                user,
                role,
                csrf,
                expires_at,
            })
        }))
    }

    /// Ends a session.
    pub fn delete_session(&self, digest: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM sessions WHERE digest = ?1", p![digest])
                .map_err(q("ending a session"))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::inventory::testing::on_each_backend! {
        fn accounts_and_sessions_are_stored_and_end(inv, place) {
            inv.add_user("alice", Role::Admin, "h1", 1).unwrap();
            assert!(matches!(
                inv.add_user("alice", Role::ReadOnly, "h2", 2),
                Err(InventoryError::Conflict(_))
            ));
            assert_eq!(
                inv.user_secret("alice").unwrap(),
                Some((Role::Admin, "h1".into()))
            );
            inv.create_session("d1", "alice", "c1", 10, 100).unwrap();
            let s = inv.session("d1", 50).unwrap().unwrap();
            assert_eq!(
                (s.user.as_str(), s.role, s.csrf.as_str()),
                ("alice", Role::Admin, "c1")
            );
            assert_eq!(inv.session("d1", 100).unwrap(), None, "expired");
            assert_eq!(inv.session("d2", 50).unwrap(), None);
            inv.delete_user("alice").unwrap();
            assert_eq!(inv.session("d1", 50).unwrap(), None, "ended with its user");
            assert!(matches!(
                inv.delete_user("alice"),
                Err(InventoryError::NotFound(_))
            ));
        }
    }
}
