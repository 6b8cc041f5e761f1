//! rackseed's own certificate authority: created at first start in `<data_dir>/ca/`,
//! it signs the HTTPS server certificate and one client certificate per enrolled node.
//!
//! Owns key and certificate files (keys mode 0600) and the mapping between a client
//! certificate and the node it was issued to. Does no networking.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// A CA problem.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read or write CA file `{path}`")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file `{path}` is not usable")]
    Bad {
        path: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("certificate signing request is invalid or its signature does not verify")]
    BadCsr(#[source] rcgen::Error),
    #[error("cannot sign the certificate")]
    Sign(#[source] rcgen::Error),
    #[error("client certificate is not one rackseed issued to a node: {0}")]
    NotANode(String),
}

/// The CA: its certificate (PEM) and signing key.
pub struct Ca {
    pub cert_pem: String,
    key: KeyPair,
    dir: PathBuf,
}

/// How long node certificates are valid.
pub const NODE_CERT_DAYS: i64 = 365;

fn write_private(path: &Path, data: &str) -> Result<(), CaError> {
    crate::durable::write_atomically(path, data.as_bytes(), 0o600).map_err(|source| CaError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // and not starting with a zero byte
    SerialNumber::from_slice(&b)
}

/// The serial of a certificate as lowercase hex (how rackseed stores it).
pub fn serial_hex(s: &SerialNumber) -> String {
    hex::encode(s.to_bytes())
}

/// The common name rackseed puts in node certificates.
pub fn node_cn(id: i64) -> String {
    format!("rackseed-node-{id}")
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "rackseed CA");
    dn.push(DnType::OrganizationName, "rackseed");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(3650);
    p
}

impl Ca {
    /// Loads the CA from `dir` (`ca.crt`, `ca.key`), creating it on first use.
    pub fn open(dir: &Path) -> Result<Ca, CaError> {
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| CaError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if crt.exists() && key.exists() {
            let cert_pem = std::fs::read_to_string(&crt).map_err(io(&crt))?;
            let key_pem = std::fs::read_to_string(&key).map_err(io(&key))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::Bad {
                path: dir.join("ca.key").display().to_string(),
                source,
            })?;
            // Check the pair loads as an issuer.
            Issuer::from_ca_cert_pem(&cert_pem, &key).map_err(|source| CaError::Bad {
                path: crt.display().to_string(),
                source,
            })?;
            return Ok(Ca {
                cert_pem,
                key,
                dir: dir.to_path_buf(),
            });
        }
        let key_pair = KeyPair::generate().map_err(CaError::Sign)?;
        let cert = ca_params().self_signed(&key_pair).map_err(CaError::Sign)?;
        write_private(&key, &key_pair.serialize_pem())?;
        crate::durable::write_atomically(&crt, cert.pem().as_bytes(), 0o644).map_err(io(&crt))?;
        tracing::info!(dir = %dir.display(), "certificate authority created");
        Ok(Ca {
            cert_pem: cert.pem(),
            key: key_pair,
            dir: dir.to_path_buf(),
        })
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CaError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(|source| CaError::Bad {
            path: self.dir.display().to_string(),
            source,
        })
    }

    /// The HTTPS server certificate for `ip` (created and kept in the CA directory;
    /// reissued when the address changes). Returns (cert PEM, key PEM).
    pub fn server_cert(&self, ip: IpAddr) -> Result<(String, String), CaError> {
        let (crt, key) = (
            self.dir.join(format!("server-{ip}.crt")),
            self.dir.join(format!("server-{ip}.key")),
        );
        if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
            return Ok((c, k));
        }
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("rackseed {ip}"));
        p.subject_alt_names = vec![SanType::IpAddress(ip)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(825);
        let k = KeyPair::generate().map_err(CaError::Sign)?;
        let cert = p.signed_by(&k, &self.issuer()?).map_err(CaError::Sign)?;
        write_private(&key, &k.serialize_pem())?;
        crate::durable::write_atomically(&crt, cert.pem().as_bytes(), 0o644).map_err(|source| {
            CaError::Io {
                path: crt.display().to_string(),
                source,
            }
        })?;
        Ok((cert.pem(), k.serialize_pem()))
    }

    /// Signs a node's CSR. Only the CSR's public key is used: subject, validity and
    /// usages are rackseed's. Returns (certificate PEM, serial hex).
    pub fn sign_node(
        &self,
        node_id: i64,
        hostname: &str,
        csr_pem: &str,
    ) -> Result<(String, String), CaError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadCsr)?;
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, node_cn(node_id));
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, hostname);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let serial = random_serial();
        let hex = serial_hex(&serial);
        p.serial_number = Some(serial);
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(NODE_CERT_DAYS);
        csr.params = p;
        let cert = csr.signed_by(&self.issuer()?).map_err(CaError::Sign)?;
        Ok((cert.pem(), hex))
    }
}

impl Ca {
    /// The certificates the appliance presents, by what they are, with their files:
    /// the CA's, and the HTTPS server certificate for `server` when the agents'
    /// listener is on (it is issued at start).
    pub fn own_certificates(&self, server: Option<IpAddr>) -> Vec<(String, PathBuf)> {
        let mut out = vec![("CA".to_string(), self.dir.join("ca.crt"))];
        if let Some(ip) = server {
            out.push((
                format!("HTTPS server {ip}"),
                self.dir.join(format!("server-{ip}.crt")),
            ));
        }
        out
    }
}

/// When the first certificate of PEM text `pem` expires, in Unix milliseconds; the
/// error says why it cannot be read.
pub fn not_after(pem: &[u8]) -> Result<i64, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp().saturating_mul(1000))
}

/// The node id and certificate serial in a client certificate rackseed issued.
pub fn node_of_cert(der: &[u8]) -> Result<(i64, String), CaError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CaError::NotANode(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .ok_or_else(|| CaError::NotANode("no common name".into()))?;
    let id = cn
        .strip_prefix("rackseed-node-")
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| CaError::NotANode(format!("common name `{cn}`")))?;
    let serial = hex::encode(cert.raw_serial());
    Ok((id, serial))
}

/// A fresh key pair and CSR for a node (used by the agent). Returns (key PEM, CSR PEM).
pub fn node_key_and_csr(hostname: &str) -> Result<(String, String), CaError> {
    let key = KeyPair::generate().map_err(CaError::Sign)?;
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, hostname);
    let csr = p.serialize_request(&key).map_err(CaError::Sign)?;
    Ok((key.serialize_pem(), csr.pem().map_err(CaError::Sign)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_signs_node_csrs_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::open(dir.path()).unwrap();
        let again = Ca::open(dir.path()).unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem, "CA must persist");
        let (_key, csr) = node_key_and_csr("web1").unwrap();
        let (cert, serial) = ca.sign_node(42, "web1", &csr).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes());
        use rustls::pki_types::pem::PemObject;
        let der = der.unwrap();
        assert_eq!(node_of_cert(&der).unwrap(), (42, serial));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn garbage_csr_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::open(dir.path()).unwrap();
        assert!(matches!(
            ca.sign_node(
                1,
                "x",
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            ),
            Err(CaError::BadCsr(_))
        ));
        assert!(matches!(
            ca.sign_node(1, "x", "hello"),
            Err(CaError::BadCsr(_))
        ));
    }

    #[test]
    fn own_certificates_expire_when_they_were_issued_to() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::open(dir.path()).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        ca.server_cert(ip).unwrap();
        let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let day = 86_400_000;
        let certs = ca.own_certificates(Some(ip));
        let names: Vec<&str> = certs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["CA", "HTTPS server 192.0.2.1"]);
        let left: Vec<i64> = certs
            .iter()
            .map(|(_, p)| (not_after(&std::fs::read(p).unwrap()).unwrap() - now) / day)
            .collect();
        assert_eq!(left, [3649, 824]);
        assert_eq!(ca.own_certificates(None).len(), 1);
        assert!(not_after(b"hello").unwrap_err().starts_with("not PEM"));
    }

    #[test]
    fn server_certificate_names_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::open(dir.path()).unwrap();
        let (c1, _) = ca.server_cert("192.0.2.1".parse().unwrap()).unwrap();
        let (c2, _) = ca.server_cert("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(c1, c2);
    }
}
