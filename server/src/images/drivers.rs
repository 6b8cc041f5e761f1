//! Disk-controller drivers for the installer's early_command: the kernel module
//! `.udeb`s (SATA/AHCI, NVMe) that Debian's netboot initrd does not carry, fetched for
//! the installer's own kernel through the mirror's signed chain (InRelease →
//! `debian-installer` `Packages` → each `.udeb`'s SHA-256) and kept in the image store
//! under `drivers/<kernel>/`.
//!
//! Without them the installer sees SATA and NVMe disks only after it loads its
//! components, so `disks.sh` cannot preview the disk choice at early_command. With
//! them, early_command loads the drivers before the preview. rackseed serves them at
//! `/installer/drivers/<package>.udeb` (public files, no secrets).
//!
//! `parse_packages` and `wanted` are pure; `fetch_drivers` does the I/O.

use super::ImageError;
use super::release::Keyring;
use super::upstream::{Silent, Upstream};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The module packages (without the `-<kernel>-di` suffix) early_command loads, in
/// dependency order: libata, then AHCI, then the package holding NVMe.
pub const DRIVER_PACKAGES: &[&str] = &["ata-modules", "sata-modules", "scsi-modules"];

/// The modules loaded once the packages are unpacked.
pub const DRIVER_MODULES: &[&str] = &["ahci", "nvme"];

/// One package of a `Packages` index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub package: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

/// The stanzas of a `Packages` index that have a name, a file name and a SHA-256.
pub fn parse_packages(text: &str) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        if let (Some(package), Some(filename), Some(sha256)) =
            (field("Package"), field("Filename"), field("SHA256"))
        {
            let safe = !filename.starts_with('/')
                && !filename.split('/').any(|c| c == ".." || c.is_empty())
                && filename.ends_with(".udeb");
            if safe && super::release::is_sha256_hex(&sha256) {
                out.push(IndexEntry {
                    package,
                    filename,
                    sha256,
                    size: field("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                });
            }
        }
    }
    out
}

/// The index entries of the driver packages for `kernel`, in [`DRIVER_PACKAGES`]
/// order; an error names the first one the index lacks.
pub fn wanted(index: &[IndexEntry], kernel: &str) -> Result<Vec<IndexEntry>, String> {
    DRIVER_PACKAGES
        .iter()
        .map(|p| {
            let name = format!("{p}-{kernel}-di");
            index
                .iter()
                .find(|e| e.package == name)
                .cloned()
                .ok_or_else(|| format!("the index has no `{name}`"))
        })
        .collect()
}

/// What is stored for one kernel: `drivers/<kernel>/index.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DriverSet {
    pub kernel: String,
    /// Package base name (`sata-modules`) → stored file name and SHA-256.
    pub packages: BTreeMap<String, StoredDriver>,
    /// How they were verified.
    pub verification: String,
}

/// One stored driver package.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredDriver {
    pub file: String,
    pub sha256: String,
    pub source: String,
}

/// The directory of the driver set of `kernel` in the store at `store_root`.
pub fn dir_for(store_root: &Path, kernel: &str) -> PathBuf {
    store_root.join("drivers").join(kernel)
}

/// The stored driver set of `kernel`, if complete: every package present with its
/// recorded SHA-256 (a tampered or missing file gives `None`).
pub fn stored(store_root: &Path, kernel: &str) -> Option<DriverSet> {
    let dir = dir_for(store_root, kernel);
    let set: DriverSet =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).ok()?).ok()?;
    for p in DRIVER_PACKAGES {
        let d = set.packages.get(*p)?;
        let bytes = std::fs::read(dir.join(&d.file)).ok()?;
        if super::sha256_hex(&bytes) != d.sha256 {
            return None;
        }
    }
    Some(set)
}

/// Fetches the driver packages of `kernel` from the mirror through its signed chain
/// into the store; returns the stored set.
pub async fn fetch_drivers(
    up: &Upstream,
    keyring: &Keyring,
    suite: &str,
    arch: &str,
    kernel: &str,
    store_root: &Path,
) -> Result<DriverSet, ImageError> {
    let chain = up.signed_release(keyring, suite).await?;
    let (text, url) = super::kernel::installer_index(up, &chain, suite, arch).await?;
    let dists = up.dist_url(suite, "");
    let path = url.strip_prefix(&dists).unwrap_or(&url).to_string();
    let entries =
        wanted(&parse_packages(&text), kernel).map_err(|message| ImageError::Release {
            url: url.clone(),
            message: format!(
                "{message}: the mirror has no driver packages for the installer's kernel {kernel}"
            ),
        })?;
    let dir = dir_for(store_root, kernel);
    let write_err = |source| ImageError::Write {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(write_err)?;
    let mut packages = BTreeMap::new();
    for (p, e) in DRIVER_PACKAGES.iter().zip(&entries) {
        let file = format!("{p}.udeb");
        let partial = dir.join(format!("{file}.part"));
        let source = format!("{}/{}", up.base().trim_end_matches('/'), e.filename);
        up.download_verified(&source, &partial, &e.sha256, &file, &Silent)
            .await?;
        std::fs::rename(&partial, dir.join(&file)).map_err(write_err)?;
        packages.insert(
            p.to_string(),
            StoredDriver {
                file,
                sha256: e.sha256.clone(),
                source,
            },
        );
    }
    let set = DriverSet {
        kernel: kernel.into(),
        packages,
        verification: format!("{} → {path} → sha256 of each .udeb", chain.describe()),
    };
    let json = serde_json::to_vec_pretty(&set).unwrap_or_default();
    let tmp = dir.join("index.json.tmp");
    std::fs::write(&tmp, json).map_err(write_err)?;
    std::fs::rename(&tmp, dir.join("index.json")).map_err(write_err)?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn index() -> String {
        let mut s = String::new();
        for p in ["ata-modules", "sata-modules", "scsi-modules", "nic-modules"] {
            for k in ["6.1.0-47-amd64", "6.1.0-50-amd64"] {
                s.push_str(&format!(
                    "Package: {p}-{k}-di\nVersion: 1\nFilename: pool/main/l/linux-signed-amd64/{p}-{k}-di_1_amd64.udeb\nSize: 10\nSHA256: {SHA}\n\n"
                ));
            }
        }
        s
    }

    #[test]
    fn the_drivers_of_the_installer_kernel_are_picked_in_order() {
        let idx = parse_packages(&index());
        assert_eq!(idx.len(), 8);
        let w = wanted(&idx, "6.1.0-50-amd64").unwrap();
        let names: Vec<&str> = w.iter().map(|e| e.package.as_str()).collect();
        assert_eq!(
            names,
            [
                "ata-modules-6.1.0-50-amd64-di",
                "sata-modules-6.1.0-50-amd64-di",
                "scsi-modules-6.1.0-50-amd64-di"
            ]
        );
        assert_eq!(
            wanted(&idx, "6.1.0-99-amd64").unwrap_err(),
            "the index has no `ata-modules-6.1.0-99-amd64-di`"
        );
    }

    #[test]
    fn hostile_index_entries_are_dropped() {
        let text = format!(
            "Package: a\nFilename: ../../etc/passwd.udeb\nSHA256: {SHA}\n\nPackage: b\nFilename: /abs.udeb\nSHA256: {SHA}\n\nPackage: c\nFilename: pool/x.deb\nSHA256: {SHA}\n\nPackage: d\nFilename: pool/d.udeb\nSHA256: nothex\n\nPackage: e\nFilename: pool/e.udeb\nSHA256: {SHA}\n"
        );
        let idx = parse_packages(&text);
        assert_eq!(
            idx.iter().map(|e| e.package.as_str()).collect::<Vec<_>>(),
            ["e"]
        );
    }
}
