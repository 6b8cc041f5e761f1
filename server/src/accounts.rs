//! Console accounts: user names, roles, password hashes, session and CSRF secrets.
//!
//! Pure: no database, no sockets. `inventory::users` stores what this module makes;
//! `http::ui` and the admin API's authentication call it. Passwords are hashed with
//! Argon2id (a fresh salt each time, the parameters in the stored PHC string); session
//! ids are stored only as their SHA-256 digest, so a copy of the database does not log
//! anyone in.

use sha2::{Digest, Sha256};

/// How long a console session lasts without logging in again.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

/// What an account may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything the admin token may do, including managing accounts.
    Admin,
    /// Look only: every `GET`, no action.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AccountError;
    fn from_str(s: &str) -> Result<Role, AccountError> {
        match s {
            "admin" => Ok(Role::Admin),
            "read-only" => Ok(Role::ReadOnly),
            other => Err(AccountError::Role(other.chars().take(40).collect())),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an account value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error(
        "`{0}` is not a user name: use 1–64 lowercase letters, digits, `.`, `_` or `-`, starting with a letter"
    )]
    Name(String),
    #[error("`{0}` is not a role: use `admin` or `read-only`")]
    Role(String),
    #[error("the password is too short: use at least {MIN_PASSWORD} characters")]
    ShortPassword,
    #[error("the password is too long: use at most 1024 bytes")]
    LongPassword,
    #[error("the password hash could not be made: {0}")]
    Hash(String),
}

/// Checks a user name.
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Name(name.chars().take(64).collect()))
    }
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccountError::ShortPassword);
    }
    if password.len() > 1024 {
        return Err(AccountError::LongPassword);
    }
    Ok(())
}

/// The stored form of a new password: an Argon2id PHC string with a fresh salt.
/// CPU-heavy (tens of milliseconds): callers run it off the async executor.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    check_password(password)?;
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` is the one `stored` was made from. A malformed stored hash never
/// matches. CPU-heavy, like [`hash_password`].
pub fn verify_password(stored: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    if password.len() > 1024 {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash to verify against when the user does not exist, so that a wrong name takes
/// as long as a wrong password (no user enumeration by timing).
pub fn decoy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3mDVeWdGQz1jDN1A9n3yu5pTqw6ZhN7V0mDx8cWd3PE"
}

/// A new random secret (a session id or a CSRF token): 32 bytes, hex.
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    hex::encode(b)
}

/// What is stored for a session id: its SHA-256, hex.
pub fn session_digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Constant-time comparison of two secrets (tokens, CSRF tokens, the admin token).
pub fn secrets_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A stored session, as the authentication sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub expires_at: i64,
}

/// Who is calling the admin listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The bearer of `admin.token` (the CLI, automation).
    Token,
    /// A console user, logged in.
    User(Session),
}

impl Principal {
    /// What the access log and the timeline call the caller.
    pub fn name(&self) -> &str {
        match self {
            Principal::Token => "admin token",
            Principal::User(s) => &s.user,
        }
    }
}

/// Whether `principal` may make a request with `method` (safe methods are `GET` and
/// `HEAD`) carrying `csrf` (the `X-CSRF-Token` header or form field); the refusal
/// names what is missing.
pub fn authorize(principal: &Principal, safe: bool, csrf: Option<&str>) -> Result<(), Denied> {
    match principal {
        Principal::Token => Ok(()),
        Principal::User(_) if safe => Ok(()),
        Principal::User(s) => {
            match csrf {
                Some(c) if secrets_match(c, &s.csrf) => {}
                Some(_) => return Err(Denied::Csrf("the CSRF token does not match this session")),
                None => return Err(Denied::Csrf("the request carries no CSRF token")),
            }
            if s.role == Role::ReadOnly {
                return Err(Denied::ReadOnly(s.user.clone()));
            }
            Ok(())
        }
    }
}

/// Why an authenticated request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{0}; reload the page and try again")]
    Csrf(&'static str),
    #[error("user `{0}` has a read-only account; ask an admin")]
    ReadOnly(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roles_and_passwords_are_checked() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("ops.team-1_x").is_ok());
        for bad in ["", "Alice", "1abc", "a b", "a\nb", "a;rm", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!("read-only".parse::<Role>(), Ok(Role::ReadOnly));
        assert!("root".parse::<Role>().is_err());
        assert_eq!(check_password("short"), Err(AccountError::ShortPassword));
        assert_eq!(
            check_password(&"x".repeat(1025)),
            Err(AccountError::LongPassword)
        );
    }

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterx"));
        assert!(!verify_password("not a hash", "correct horse battery"));
        assert!(!verify_password(decoy_hash(), "correct horse battery"));
        // A fresh salt each time.
        assert_ne!(h, hash_password("correct horse battery").unwrap());
    }

    #[test]
    fn actions_need_the_sessions_csrf_token_and_an_admin() {
        let s = |role| {
            Principal::User(Session {
                user: "u".into(),
                role,
                csrf: "c".repeat(64),
                expires_at: 0,
            })
        };
        let good = "c".repeat(64);
        assert_eq!(authorize(&Principal::Token, false, None), Ok(()));
        assert_eq!(authorize(&s(Role::ReadOnly), true, None), Ok(()));
        assert_eq!(authorize(&s(Role::Admin), false, Some(&good)), Ok(()));
        assert!(matches!(
            authorize(&s(Role::Admin), false, None),
            Err(Denied::Csrf(_))
        ));
        assert!(matches!(
            authorize(&s(Role::Admin), false, Some("d")),
            Err(Denied::Csrf(_))
        ));
        assert_eq!(
            authorize(&s(Role::ReadOnly), false, Some(&good)),
            Err(Denied::ReadOnly("u".into()))
        );
        assert_eq!(session_digest("x").len(), 64);
        assert!(secrets_match("abc", "abc"));
        assert!(!secrets_match("abc", "abd"));
        assert!(!secrets_match("abc", "abcd"));
        assert_ne!(new_secret(), new_secret());
    }
}
