//! The archive keyring, OpenPGP verification of `InRelease` and `Release.gpg`, and the
//! parsing of `Release` and `SHA256SUMS`.
//!
//! Pure: bytes in, verified values out; no network, no files except the keyring. Only
//! text that a key in the keyring signed is ever parsed as a `Release`: the caller gets
//! the signed text back, never the bytes around it.

use super::ImageError;
use pgp::composed::{
    CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey,
};
use pgp::packet::Signature;
use pgp::types::{KeyDetails, Timestamp};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// One key that may sign: a primary key or a signing subkey of a keyring entry.
enum Signer {
    Primary(SignedPublicKey),
    Subkey(SignedPublicSubKey),
}

impl Signer {
    fn fingerprint(&self) -> pgp::types::Fingerprint {
        match self {
            Signer::Primary(k) => k.fingerprint(),
            Signer::Subkey(k) => k.key.fingerprint(),
        }
    }
    fn key_id(&self) -> pgp::types::KeyId {
        match self {
            Signer::Primary(k) => k.legacy_key_id(),
            Signer::Subkey(k) => k.key.legacy_key_id(),
        }
    }
    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match self {
            Signer::Primary(k) => sig.verify(&k.primary_key, data),
            Signer::Subkey(k) => sig.verify(&k.key, data),
        }
    }
}

/// The keys that may sign a `Release`: every valid (bound, unrevoked, unexpired)
/// primary key and signing subkey of an OpenPGP keyring file (binary or armored).
pub struct Keyring {
    path: String,
    signers: Vec<Signer>,
    /// Primary fingerprint (upper hex) of each signer, by index.
    owners: Vec<String>,
}

fn expired(created: Timestamp, lifetime: Option<pgp::types::Duration>, now: SystemTime) -> bool {
    match lifetime.map(Duration::from) {
        Some(d) if !d.is_zero() => SystemTime::from(created) + d <= now,
        _ => false,
    }
}

impl Keyring {
    /// Loads a keyring; refuses one with no usable key.
    pub fn load(path: &Path) -> Result<Keyring, ImageError> {
        let bytes = std::fs::read(path).map_err(|source| ImageError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Keyring::from_bytes(&bytes, &path.display().to_string(), SystemTime::now())
    }

    /// Parses keyring bytes; `path` names it in errors, `now` decides expiry.
    pub fn from_bytes(bytes: &[u8], path: &str, now: SystemTime) -> Result<Keyring, ImageError> {
        let keys: Vec<SignedPublicKey> = if bytes.starts_with(b"-----BEGIN") {
            SignedPublicKey::from_armor_many(bytes)
                .map_err(|e| ImageError::Keyring {
                    path: path.into(),
                    message: format!("not an OpenPGP keyring: {e}"),
                })?
                .0
                .filter_map(Result::ok)
                .collect()
        } else {
            SignedPublicKey::from_bytes_many(bytes)
                .map_err(|e| ImageError::Keyring {
                    path: path.into(),
                    message: format!("not an OpenPGP keyring: {e}"),
                })?
                .filter_map(Result::ok)
                .collect()
        };
        let mut signers = Vec::new();
        let mut owners = Vec::new();
        for key in keys {
            let owner = format!("{:X}", key.fingerprint());
            if key.verify_bindings().is_err() || !key.details.revocation_signatures.is_empty() {
                tracing::debug!(key = %owner, "keyring key skipped: unbound or revoked");
                continue;
            }
            let lifetime = key
                .details
                .users
                .iter()
                .flat_map(|u| u.signatures.iter())
                .chain(key.details.direct_signatures.iter())
                .max_by_key(|s| s.created().map(Timestamp::as_secs))
                .and_then(|s| s.key_expiration_time());
            if expired(key.primary_key.created_at(), lifetime, now) {
                tracing::debug!(key = %owner, "keyring key skipped: expired");
                continue;
            }
            for sub in &key.public_subkeys {
                let Some(binding) = sub.signatures.iter().max_by_key(|s| s.created()) else {
                    continue;
                };
                if binding.key_flags().sign()
                    && !expired(sub.key.created_at(), binding.key_expiration_time(), now)
                {
                    signers.push(Signer::Subkey(sub.clone()));
                    owners.push(owner.clone());
                }
            }
            signers.push(Signer::Primary(key));
            owners.push(owner);
        }
        if signers.is_empty() {
            return Err(ImageError::Keyring {
                path: path.into(),
                message: "holds no valid signing key".into(),
            });
        }
        Ok(Keyring {
            path: path.into(),
            signers,
            owners,
        })
    }

    /// The primary fingerprints of the keys, upper hex.
    pub fn fingerprints(&self) -> Vec<String> {
        let mut v = self.owners.clone();
        v.dedup();
        v
    }

    /// The fingerprint of the first keyring key that made a valid signature over `data`.
    fn verify_any(&self, sigs: &[Signature], data: &[u8], url: &str) -> Result<String, ImageError> {
        if sigs.is_empty() {
            return Err(ImageError::Signature {
                url: url.into(),
                message: "it carries no signature".into(),
            });
        }
        let mut known_but_bad = false;
        for sig in sigs {
            let fps = sig.issuer_fingerprint();
            let ids = sig.issuer_key_id();
            for (i, signer) in self.signers.iter().enumerate() {
                let named = fps.iter().any(|f| **f == signer.fingerprint())
                    || ids.iter().any(|k| **k == signer.key_id())
                    || (fps.is_empty() && ids.is_empty());
                if !named {
                    continue;
                }
                if signer.verify(sig, data).is_ok() {
                    return Ok(self.owners[i].clone());
                }
                known_but_bad = true;
            }
        }
        let message = if known_but_bad {
            "the signature does not verify: the signed text was changed".to_string()
        } else {
            let issuers: Vec<String> = sigs
                .iter()
                .flat_map(|s| {
                    let f: Vec<String> = s
                        .issuer_fingerprint()
                        .iter()
                        .map(|f| format!("{f:X}"))
                        .collect();
                    if f.is_empty() {
                        s.issuer_key_id()
                            .iter()
                            .map(|k| hex::encode_upper(k.as_ref()))
                            .collect()
                    } else {
                        f
                    }
                })
                .collect();
            format!(
                "signed by {}, none of which is in the keyring `{}`",
                if issuers.is_empty() {
                    "unnamed keys".to_string()
                } else {
                    issuers.join(", ")
                },
                self.path
            )
        };
        Err(ImageError::Signature {
            url: url.into(),
            message,
        })
    }

    /// Verifies an `InRelease` (OpenPGP cleartext-signed); returns the signed text and
    /// the signer's primary fingerprint.
    pub fn verify_inrelease(&self, bytes: &[u8], url: &str) -> Result<Verified, ImageError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ImageError::Signature {
            url: url.into(),
            message: "it is not UTF-8 text".into(),
        })?;
        let (msg, _) =
            CleartextSignedMessage::from_string(text).map_err(|e| ImageError::Signature {
                url: url.into(),
                message: format!("not an OpenPGP cleartext-signed message: {e}"),
            })?;
        let signed = msg.signed_text();
        let signer = self.verify_any(msg.signatures(), signed.as_bytes(), url)?;
        Ok(Verified {
            text: signed.replace("\r\n", "\n"),
            signer,
        })
    }

    /// Verifies `Release` against its detached `Release.gpg`.
    pub fn verify_detached(
        &self,
        release: &[u8],
        signature: &[u8],
        url: &str,
    ) -> Result<Verified, ImageError> {
        let bad = |e: pgp::errors::Error| ImageError::Signature {
            url: url.into(),
            message: format!("`Release.gpg` is not an OpenPGP signature: {e}"),
        };
        let sigs: Vec<Signature> = if signature.starts_with(b"-----BEGIN") {
            DetachedSignature::from_armor_many(signature)
                .map_err(bad)?
                .0
                .filter_map(Result::ok)
                .map(|d| d.signature)
                .collect()
        } else {
            DetachedSignature::from_bytes_many(signature)
                .map_err(bad)?
                .filter_map(Result::ok)
                .map(|d| d.signature)
                .collect()
        };
        let signer = self.verify_any(&sigs, release, url)?;
        let text = String::from_utf8(release.to_vec()).map_err(|_| ImageError::Signature {
            url: url.into(),
            message: "the signed `Release` is not UTF-8 text".into(),
        })?;
        Ok(Verified { text, signer })
    }
}

/// Signed text and who signed it.
#[derive(Clone, Debug)]
pub struct Verified {
    pub text: String,
    /// Primary key fingerprint, upper hex.
    pub signer: String,
}

/// The fields of a signed `Release` that the chain uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Release {
    pub suite: Option<String>,
    pub codename: Option<String>,
    /// The release's version, e.g. `12.15`.
    pub version: Option<String>,
    pub date: Option<String>,
    pub valid_until: Option<String>,
    /// Path under `dists/<suite>/` → (sha256 hex, size).
    pub sha256: BTreeMap<String, (String, u64)>,
}

impl Release {
    /// Parses the first paragraph of a `Release` file.
    pub fn parse(text: &str) -> Result<Release, String> {
        let mut r = Release::default();
        let mut in_sha256 = false;
        for line in text.lines() {
            if line.trim().is_empty() {
                break;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                if in_sha256 {
                    let w: Vec<&str> = line.split_whitespace().collect();
                    let [hash, size, path] = w[..] else {
                        return Err(format!("malformed SHA256 line `{}`", line.trim()));
                    };
                    let size: u64 = size
                        .parse()
                        .map_err(|_| format!("malformed size in SHA256 line `{}`", line.trim()))?;
                    if !is_sha256_hex(hash) {
                        return Err(format!("malformed hash in SHA256 line `{}`", line.trim()));
                    }
                    r.sha256
                        .insert(path.to_string(), (hash.to_ascii_lowercase(), size));
                }
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(format!("malformed line `{line}`"));
            };
            let value = value.trim();
            in_sha256 = false;
            match key {
                "Suite" => r.suite = Some(value.into()),
                "Codename" => r.codename = Some(value.into()),
                "Version" => r.version = Some(value.into()),
                "Date" => r.date = Some(value.into()),
                "Valid-Until" => r.valid_until = Some(value.into()),
                "SHA256" => in_sha256 = true,
                _ => {}
            }
        }
        if r.sha256.is_empty() {
            return Err("it has no SHA256 field".into());
        }
        Ok(r)
    }

    /// Refuses a `Release` for another suite (a mirror answering with the wrong one) or
    /// one whose `Valid-Until` has passed (a replayed old `Release`).
    pub fn check(&self, suite: &str, now: SystemTime) -> Result<(), String> {
        if self.codename.as_deref() != Some(suite) && self.suite.as_deref() != Some(suite) {
            return Err(format!(
                "it is for suite {} (codename {}), not {suite}",
                self.suite.as_deref().unwrap_or("?"),
                self.codename.as_deref().unwrap_or("?")
            ));
        }
        if let Some(until) = &self.valid_until {
            let t =
                release_date(until).ok_or_else(|| format!("unreadable Valid-Until `{until}`"))?;
            if t < now {
                return Err(format!(
                    "it expired at {until} (Valid-Until); the mirror serves a stale Release"
                ));
            }
        }
        Ok(())
    }
}

/// Parses a date as Debian's `Release` writes it: `Sat, 11 Jul 2026 10:16:37 UTC`.
fn release_date(s: &str) -> Option<SystemTime> {
    let w: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, hms, "UTC" | "GMT" | "+0000"] = w[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u8 + 1;
    let date = time::Date::from_calendar_date(
        year.parse().ok()?,
        time::Month::try_from(month).ok()?,
        day.parse().ok()?,
    )
    .ok()?;
    let mut t = hms.split(':').map(|x| x.parse::<u8>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    let time = time::Time::from_hms(h, m, sec).ok()?;
    Some(time::PrimitiveDateTime::new(date, time).assume_utc().into())
}

/// Whether `s` is 64 hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses a `SHA256SUMS` file: `<hex>  ./path` lines → path without `./` → hex.
pub fn parse_sha256sums(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (hash, path) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("line {}: malformed `{line}`", i + 1))?;
        if !is_sha256_hex(hash) {
            return Err(format!("line {}: `{hash}` is not a SHA-256 hash", i + 1));
        }
        let path = path.trim_start().trim_start_matches('*');
        out.insert(
            path.trim_start_matches("./").to_string(),
            hash.to_ascii_lowercase(),
        );
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Debian\nSuite: oldstable\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nMD5Sum:\n 8bda4ce4f0530ae601d1d7a7c47eb927    78509 main/installer-amd64/current/images/SHA256SUMS\nSHA256:\n 8e0a94d8488f7c60f5fe6723e69b450ec5d7000f592ccdb169481f4bfe863b62    78509 main/installer-amd64/current/images/SHA256SUMS\n 78463b7581e87ce84c88e8b845e9285c78463b7581e87ce84c88e8b845e9285c    67956 main/debian-installer/binary-amd64/Packages.gz\n";

    #[test]
    fn parses_sha256_entries_of_a_release() {
        let r = Release::parse(RELEASE).unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.sha256.len(), 2);
        assert_eq!(
            r.sha256["main/installer-amd64/current/images/SHA256SUMS"],
            (
                "8e0a94d8488f7c60f5fe6723e69b450ec5d7000f592ccdb169481f4bfe863b62".to_string(),
                78509
            )
        );
        assert!(r.check("bookworm", SystemTime::now()).is_ok());
        assert!(r.check("oldstable", SystemTime::now()).is_ok());
        assert_eq!(
            r.check("trixie", SystemTime::now()).unwrap_err(),
            "it is for suite oldstable (codename bookworm), not trixie"
        );
    }

    #[test]
    fn refuses_expired_and_malformed_releases() {
        let r = Release::parse(&format!(
            "Codename: bookworm\nValid-Until: Sat, 1 Jan 2000 00:00:00 UTC\n{}",
            &RELEASE[RELEASE.find("SHA256:").unwrap()..]
        ))
        .unwrap();
        assert_eq!(
            r.check("bookworm", SystemTime::now()).unwrap_err(),
            "it expired at Sat, 1 Jan 2000 00:00:00 UTC (Valid-Until); the mirror serves a stale Release"
        );
        assert_eq!(
            Release::parse("Codename: bookworm\n").unwrap_err(),
            "it has no SHA256 field"
        );
        assert_eq!(
            Release::parse("SHA256:\n nothex 12 a\n").unwrap_err(),
            "malformed hash in SHA256 line `nothex 12 a`"
        );
    }

    #[test]
    fn parses_sha256sums() {
        let s = parse_sha256sums(
            "cb24a28a5ba13dfb22e6e75bdd8ab997dbdee6e3ec6c1102f6c7f93044bd817d  ./netboot/debian-installer/amd64/initrd.gz\nD8808AA4CA188560DA1E6D749DCB930C87A5FD8B11EBFF1F3FA6D728AF35203D *netboot/debian-installer/amd64/linux\n",
        )
        .unwrap();
        assert_eq!(
            s["netboot/debian-installer/amd64/linux"],
            "d8808aa4ca188560da1e6d749dcb930c87a5fd8b11ebff1f3fa6d728af35203d"
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            parse_sha256sums("abc  ./x\n").unwrap_err(),
            "line 1: `abc` is not a SHA-256 hash"
        );
    }

    #[test]
    fn loads_the_debian_archive_keyring() {
        let k = Keyring::load(Path::new("/usr/share/keyrings/debian-archive-keyring.gpg")).unwrap();
        assert!(!k.fingerprints().is_empty());
        assert!(
            k.fingerprints().iter().all(|f| f.len() == 40),
            "{:?}",
            k.fingerprints()
        );
    }

    #[test]
    fn refuses_a_keyring_without_keys() {
        let e = Keyring::from_bytes(b"not a key", "k.gpg", SystemTime::now())
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("keyring `k.gpg`: "), "{e}");
    }
}
