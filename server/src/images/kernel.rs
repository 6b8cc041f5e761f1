//! The kernel/mirror check: the kernel version inside an installer initrd
//! (`/lib/modules/<version>`) against the `kernel-image-<version>-di` packages in the
//! mirror's installer `Packages` index.
//!
//! An installer whose kernel has no module udebs on the mirror stops with "no kernel
//! modules were found"; this check says so before any node boots. It only reports:
//! callers decide whether to warn. Reading the index goes through the signed chain.

use super::release::Keyring;
use super::upstream::Upstream;
use super::{ImageError, cpio};
use crate::config::Config;
use std::io::Read;
use std::path::Path;

/// The kernel version of an installer initrd (gzip, possibly several members, or plain
/// cpio), from its `lib/modules/<version>` directory.
pub fn initrd_kernel_version(path: &Path) -> Result<String, ImageError> {
    let err = |message: String| ImageError::Initrd {
        path: path.display().to_string(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(|source| ImageError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut magic = [0u8; 2];
    f.read_exact(&mut magic)
        .map_err(|_| err("too short to be an initrd".into()))?;
    let f = std::io::BufReader::new(std::io::Cursor::new(magic).chain(f));
    let stream: Box<dyn Read> = match magic {
        [0x1f, 0x8b] => Box::new(flate2::read::MultiGzDecoder::new(f)),
        [b'0', b'7'] => Box::new(f),
        _ => {
            return Err(err(format!(
                "neither gzip nor cpio (starts with {:02x}{:02x}); only gzip-compressed installer initrds are supported",
                magic[0], magic[1]
            )));
        }
    };
    let mut reader = cpio::Reader::new(stream);
    while let Some(entry) = reader
        .next_entry()
        .map_err(|e| err(crate::error_chain(&e)))?
    {
        let rest = entry
            .name
            .strip_prefix("lib/modules/")
            .or_else(|| entry.name.strip_prefix("usr/lib/modules/"));
        if let Some(version) = rest.and_then(|r| r.split('/').next())
            && !version.is_empty()
        {
            return Ok(version.to_string());
        }
    }
    Err(err(
        "has no lib/modules/<version> directory; is it a Debian installer initrd?".into(),
    ))
}

/// The kernel versions of the `kernel-image-<version>-di` packages in a `Packages`
/// index, in index order, without duplicates.
pub fn index_kernel_versions(packages: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for stanza in packages.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let Some(package) = field("Package") else {
            continue;
        };
        let Some(from_name) = package
            .strip_prefix("kernel-image-")
            .and_then(|p| p.strip_suffix("-di"))
        else {
            continue;
        };
        let version = field("Kernel-Version").unwrap_or_else(|| from_name.to_string());
        if !out.contains(&version) {
            out.push(version);
        }
    }
    out
}

/// What the mirror's installer index offers.
#[derive(Clone, Debug)]
pub struct MirrorKernels {
    pub versions: Vec<String>,
    /// The index URL.
    pub url: String,
}

/// The kernel versions in `dists/<suite>/main/debian-installer/binary-<arch>/Packages`,
/// read through the signed chain (the index's hash comes from the signed `Release`).
pub async fn mirror_kernels(
    up: &Upstream,
    keyring: &Keyring,
    suite: &str,
    arch: &str,
) -> Result<MirrorKernels, ImageError> {
    let chain = up.signed_release(keyring, suite).await?;
    mirror_kernels_with(up, &chain, suite, arch).await
}

/// Like [`mirror_kernels`], with a `Release` already verified.
pub async fn mirror_kernels_with(
    up: &Upstream,
    chain: &super::upstream::Chain,
    suite: &str,
    arch: &str,
) -> Result<MirrorKernels, ImageError> {
    let (text, url) = installer_index(up, chain, suite, arch).await?;
    Ok(MirrorKernels {
        versions: index_kernel_versions(&text),
        url,
    })
}

/// The text of `dists/<suite>/main/debian-installer/binary-<arch>/Packages` (the
/// `.gz` when the signed `Release` lists it), checked against the signed `Release`,
/// and its URL.
pub async fn installer_index(
    up: &Upstream,
    chain: &super::upstream::Chain,
    suite: &str,
    arch: &str,
) -> Result<(String, String), ImageError> {
    let base = format!("main/debian-installer/binary-{arch}/Packages");
    let gz = format!("{base}.gz");
    let (path, compressed) = if chain.release.sha256.contains_key(&gz) {
        (gz, true)
    } else {
        (base, false)
    };
    let bytes = up.signed_file(chain, suite, &path).await?;
    let url = up.dist_url(suite, &path);
    let text = if compressed {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .take(512 << 20)
            .read_to_string(&mut s)
            .map_err(|e| ImageError::Release {
                url: url.clone(),
                message: format!("cannot decompress: {e}"),
            })?;
        s
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok((text, url))
}

/// The outcome of the kernel/mirror check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelCheck {
    /// The mirror has module udebs for the installer's kernel.
    Match { installer: String, url: String },
    /// It does not: the installer will stop with "no kernel modules were found".
    Mismatch {
        installer: String,
        mirror: Vec<String>,
        url: String,
        suite: String,
        image: Option<String>,
    },
    /// The check could not run (no mirror, mirror unreachable, unreadable initrd).
    Unknown { reason: String },
}

impl KernelCheck {
    /// Compares an installer kernel with what the mirror offers.
    pub fn compare(
        installer: &str,
        mirror: &MirrorKernels,
        suite: &str,
        image: Option<&str>,
    ) -> KernelCheck {
        if mirror.versions.iter().any(|v| v == installer) {
            KernelCheck::Match {
                installer: installer.into(),
                url: mirror.url.clone(),
            }
        } else {
            KernelCheck::Mismatch {
                installer: installer.into(),
                mirror: mirror.versions.clone(),
                url: mirror.url.clone(),
                suite: suite.into(),
                image: image.map(str::to_string),
            }
        }
    }

    /// Whether this is worth a warning.
    pub fn is_warning(&self) -> bool {
        !matches!(self, KernelCheck::Match { .. })
    }
}

impl std::fmt::Display for KernelCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelCheck::Match { installer, url } => write!(
                f,
                "installer kernel {installer} matches kernel-image-{installer}-di in {url}"
            ),
            KernelCheck::Mismatch {
                installer,
                mirror,
                url,
                suite,
                image,
            } => {
                let offered = if mirror.is_empty() {
                    "none".to_string()
                } else {
                    mirror.join(", ")
                };
                let fetch = image.as_deref().unwrap_or(suite);
                write!(
                    f,
                    "installer kernel {installer} has no kernel-image-{installer}-di in {url} (it has: {offered}); the installer will stop with \"no kernel modules were found\". Fetch the current installer for {suite} (`rackseed image fetch {fetch}`), or upgrade the installer package and import it again"
                )
            }
            KernelCheck::Unknown { reason } => {
                write!(f, "kernel/mirror check not done: {reason}")
            }
        }
    }
}

/// The check for the installer the config serves (`rackseed check`): its initrd's
/// kernel against the mirror's installer index. Never fails; problems are `Unknown`.
pub fn check_installer_kernel(config: &Config) -> KernelCheck {
    let unknown = |e: &dyn std::error::Error| KernelCheck::Unknown {
        reason: crate::error_chain(e),
    };
    let (initrd, suite, arch, image) = match &config.installer.image {
        Some(name) => match super::Store::open(&config.images.store).and_then(|s| s.image(name)) {
            Ok(img) => (
                img.initrd,
                img.manifest.suite,
                img.manifest.arch,
                Some(img.manifest.definition.unwrap_or(img.manifest.name)),
            ),
            Err(e) => return unknown(&e),
        },
        None => (
            config.installer.dir.join("initrd.gz"),
            config.installer.suite.clone(),
            "amd64".to_string(),
            None,
        ),
    };
    let installer = match initrd_kernel_version(&initrd) {
        Ok(v) => v,
        Err(e) => return unknown(&e),
    };
    let run = async {
        let mirror = super::upstream_mirror(config, Path::new("/"))?;
        let up = Upstream::new(&mirror, config.images.proxy.as_deref())?;
        let keyring = Keyring::load(&config.images.keyring)?;
        mirror_kernels(&up, &keyring, &suite, &arch).await
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return unknown(&e),
    };
    match rt.block_on(run) {
        Ok(m) => KernelCheck::compare(&installer, &m, &suite, image.as_deref()),
        Err(e) => unknown(&e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A gzip initrd made of two members, the modules directory in the second.
    pub(crate) fn fixture_initrd(dir: &Path, version: &str) -> std::path::PathBuf {
        let mut out = Vec::new();
        for archive in [
            cpio::newc_archive(&[(".", 0o040755, b""), ("init", 0o100755, b"#!/bin/sh\n")]),
            cpio::newc_archive(&[
                ("lib", 0o040755, b""),
                ("lib/modules", 0o040755, b""),
                (&format!("lib/modules/{version}"), 0o040755, b""),
                (&format!("lib/modules/{version}/modules.dep"), 0o100644, b""),
            ]),
        ] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&archive).unwrap();
            out.extend(gz.finish().unwrap());
        }
        let path = dir.join("initrd.gz");
        std::fs::write(&path, out).unwrap();
        path
    }

    #[test]
    fn reads_the_version_from_a_later_gzip_member() {
        let dir = tempfile::tempdir().unwrap();
        let p = fixture_initrd(dir.path(), "6.1.0-1-amd64");
        assert_eq!(initrd_kernel_version(&p).unwrap(), "6.1.0-1-amd64");
    }

    #[test]
    fn reads_the_packaged_installer() {
        let p = Path::new(crate::config::PACKAGE_INSTALLER_DIR).join("initrd.gz");
        let v = initrd_kernel_version(&p).unwrap();
        assert!(v.ends_with("-amd64") && v.split('.').count() >= 3, "{v}");
    }

    #[test]
    fn says_what_is_wrong_with_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("initrd.xz");
        std::fs::write(&p, b"\xfd7zXZ\0junk").unwrap();
        let e = initrd_kernel_version(&p).unwrap_err().to_string();
        assert!(
            e.contains("neither gzip nor cpio (starts with fd37)"),
            "{e}"
        );
        let p = dir.path().join("empty.cpio");
        std::fs::write(&p, cpio::newc_archive(&[("init", 0o100755, b"")])).unwrap();
        let e = initrd_kernel_version(&p).unwrap_err().to_string();
        assert!(
            e.ends_with("has no lib/modules/<version> directory; is it a Debian installer initrd?"),
            "{e}"
        );
    }

    #[test]
    fn lists_kernel_images_of_an_index() {
        let idx = "Package: kernel-image-6.1.0-47-amd64-di\nVersion: 6.1.170-3\nKernel-Version: 6.1.0-47-amd64\n\nPackage: nic-modules-6.1.0-47-amd64-di\nKernel-Version: 6.1.0-47-amd64\n\nPackage: kernel-image-6.1.0-50-amd64-di\nVersion: 6.1.176-1\n";
        assert_eq!(
            index_kernel_versions(idx),
            vec!["6.1.0-47-amd64", "6.1.0-50-amd64"]
        );
    }

    #[test]
    fn mismatch_names_the_fix() {
        let m = MirrorKernels {
            versions: vec!["6.1.0-50-amd64".into()],
            url: "http://mirror.example/debian/dists/bookworm/main/debian-installer/binary-amd64/Packages.gz".into(),
        };
        assert!(!KernelCheck::compare("6.1.0-50-amd64", &m, "bookworm", None).is_warning());
        let c = KernelCheck::compare("6.1.0-1-amd64", &m, "bookworm", Some("bookworm-amd64"));
        assert!(c.is_warning());
        assert_eq!(
            c.to_string(),
            "installer kernel 6.1.0-1-amd64 has no kernel-image-6.1.0-1-amd64-di in http://mirror.example/debian/dists/bookworm/main/debian-installer/binary-amd64/Packages.gz (it has: 6.1.0-50-amd64); the installer will stop with \"no kernel modules were found\". Fetch the current installer for bookworm (`rackseed image fetch bookworm-amd64`), or upgrade the installer package and import it again"
        );
    }
}
