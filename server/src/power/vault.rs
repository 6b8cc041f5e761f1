//! BMC passwords at rest: sealed with ChaCha20-Poly1305 under a key in
//! `<data_dir>/bmc.key` (32 random bytes, mode 0600, made at first start), bound to
//! the node they belong to. The inventory holds only the sealed bytes; a copy of the
//! database without the key file gives no password, and a sealed password moved to
//! another node's row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::path::Path;

/// The key that seals BMC passwords.
#[derive(Clone)]
pub struct Vault {
    key: [u8; 32],
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(<key>)")
    }
}

/// Why a sealed password does not open.
#[derive(Debug, thiserror::Error)]
#[error(
    "the stored BMC password of node {node} does not open with {key_file}: the key file was replaced or the row was altered; set the password again with `rackseed node bmc set`"
)]
pub struct Unsealed {
    pub node: i64,
    pub key_file: String,
}

impl Vault {
    /// The key of `data_dir`, made (0600) when missing.
    pub fn open(data_dir: &Path) -> std::io::Result<Vault> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join("bmc.key");
        match std::fs::read(&path) {
            Ok(k) if k.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&k);
                Ok(Vault { key })
            }
            Ok(k) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} holds {} bytes, not 32; restore it from a backup (or delete it and set every BMC password again)",
                    path.display(),
                    k.len()
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                f.write_all(&key)?;
                f.sync_all()?;
                Ok(Vault { key })
            }
            Err(e) => Err(e),
        }
    }

    /// A vault over a given key (tests).
    pub fn with_key(key: [u8; 32]) -> Vault {
        Vault { key }
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.key))
    }

    /// `password` sealed for `node`: nonce (12 bytes) then ciphertext and tag.
    pub fn seal(&self, node: i64, password: &str) -> Vec<u8> {
        let nonce: [u8; 12] = rand::random();
        let aad = node.to_be_bytes();
        let ct = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: password.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption does not fail for short messages");
        let mut out = nonce.to_vec();
        out.extend(ct);
        out
    }

    /// The password sealed for `node`.
    pub fn unseal(&self, node: i64, sealed: &[u8]) -> Result<String, Unsealed> {
        let err = || Unsealed {
            node,
            key_file: "<data_dir>/bmc.key".into(),
        };
        if sealed.len() < 12 + 16 {
            return Err(err());
        }
        let (nonce, ct) = sealed.split_at(12);
        let aad = node.to_be_bytes();
        let pt = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| err())?;
        String::from_utf8(pt).map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_password_opens_only_for_its_node_and_key() {
        let v = Vault::with_key([7; 32]);
        let s = v.seal(3, "hunter2");
        assert!(!s.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(v.unseal(3, &s).unwrap(), "hunter2");
        assert!(v.unseal(4, &s).is_err(), "moved to another node");
        assert!(
            Vault::with_key([8; 32]).unseal(3, &s).is_err(),
            "another key"
        );
        let mut t = s.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(v.unseal(3, &t).is_err(), "tampered");
        assert!(v.unseal(3, &s[..10]).is_err());
        assert_ne!(v.seal(3, "hunter2"), s, "fresh nonce each time");
    }

    #[test]
    fn the_key_file_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let a = Vault::open(d.path()).unwrap();
        let mode = std::fs::metadata(d.path().join("bmc.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Vault::open(d.path()).unwrap();
        assert_eq!(b.unseal(1, &a.seal(1, "x")).unwrap(), "x");
        std::fs::write(d.path().join("bmc.key"), b"short").unwrap();
        let e = Vault::open(d.path()).unwrap_err();
        assert!(e.to_string().contains("not 32"), "{e}");
    }
}
