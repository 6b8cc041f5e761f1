//! SSH public keys as a parsed type (pure): what a node sends (host keys, its
//! replication key) becomes `authorized_keys` and `known_hosts` lines on its peers, so
//! only a well-formed key passes, rebuilt from its parts.

use base64::Engine as _;

/// Key types rackseed accepts.
const TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// A public key: its type and its base64 blob, which decodes to an SSH wire-format key
/// of that type. Displayed as `TYPE BASE64` (no comment, no options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshPublicKey {
    key_type: &'static str,
    blob: String,
}

impl SshPublicKey {
    /// Parses `TYPE BASE64 [COMMENT]`; the comment is dropped. Refuses control
    /// characters anywhere, unknown types, blobs that are not base64 or whose
    /// wire-format type differs from `TYPE`.
    pub fn parse(line: &str) -> Result<SshPublicKey, String> {
        if line.chars().any(char::is_control) {
            return Err("contains a control character (a line break?)".into());
        }
        if line.len() > 16 * 1024 {
            return Err("is longer than 16 KiB".into());
        }
        let mut parts = line.split_whitespace();
        let (Some(t), Some(blob)) = (parts.next(), parts.next()) else {
            return Err("is not `TYPE BASE64 [COMMENT]`".into());
        };
        let Some(key_type) = TYPES.iter().copied().find(|k| *k == t) else {
            return Err(format!(
                "has type `{}`, not one of {}",
                t.escape_debug(),
                TYPES.join(", ")
            ));
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|e| format!("has a key that is not base64 ({e})"))?;
        let inner = raw
            .get(..4)
            .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
            .and_then(|n| raw.get(4..4 + n));
        if inner != Some(key_type.as_bytes()) {
            return Err(format!("has a key blob that is not a {key_type} key"));
        }
        Ok(SshPublicKey {
            key_type,
            blob: blob.to_string(),
        })
    }

    pub fn key_type(&self) -> &str {
        self.key_type
    }
}

impl std::fmt::Display for SshPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key_type, self.blob)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A syntactically real ed25519 key (wire format with a 32-byte point).
    pub fn ed25519(seed: u8) -> String {
        let mut raw = Vec::new();
        raw.extend_from_slice(&11u32.to_be_bytes());
        raw.extend_from_slice(b"ssh-ed25519");
        raw.extend_from_slice(&32u32.to_be_bytes());
        raw.extend_from_slice(&[seed; 32]);
        format!(
            "ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn real_keys_pass_without_their_comment() {
        let k = ed25519(1);
        let parsed = SshPublicKey::parse(&format!("{k} root@node1")).unwrap();
        assert_eq!(parsed.to_string(), k);
        assert_eq!(parsed.key_type(), "ssh-ed25519");
    }

    #[test]
    fn hostile_keys_are_refused() {
        let k = ed25519(2);
        for (bad, why) in [
            (format!("{k}\nssh-ed25519 AAAA evil"), "control character"),
            (format!("{k} x\r"), "control character"),
            ("ssh-ed25519".to_string(), "not `TYPE BASE64"),
            (k.replace("ssh-ed25519", "ssh-dss"), "has type"),
            ("ssh-ed25519 $(reboot)".to_string(), "not base64"),
            (
                format!("ssh-rsa {}", k.split(' ').nth(1).unwrap()),
                "not a ssh-rsa key",
            ),
            (format!("{k} {}", "x".repeat(20_000)), "16 KiB"),
        ] {
            let e = SshPublicKey::parse(&bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
