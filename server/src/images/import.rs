//! `rackseed image import`: an image's files from a local directory, normally Debian's
//! `debian-installer-*-netboot-*` package (the offline default the boot chain uses).
//!
//! Records the owning package's version. When the mirror answers, the files are also
//! checked against the archive's signed chain and the manifest says whether they matched;
//! when it does not answer, the import goes on unverified and says so. A mirror that
//! answers with a bad signature or a broken chain is refused, never ignored.

use super::ImageError;
use super::fetch::{Outcome, now_rfc3339};
use super::kernel::{self, KernelCheck};
use super::manifest::ImageDef;
use super::release::Keyring;
use super::store::{ImageManifest, NewFile, Store};
use super::upstream::{Progress, Upstream, sums_path};
use std::path::Path;

/// The Debian package that owns `path` and its installed version, from dpkg's database.
pub fn owning_package(path: &Path) -> Option<(String, String)> {
    let out = std::process::Command::new("dpkg-query")
        .arg("-S")
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let package = text.lines().next()?.split(':').next()?.trim().to_string();
    if package.contains(',') || package.is_empty() {
        return None;
    }
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}"])
        .arg(&package)
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !version.is_empty()).then_some((package, version))
}

/// Imports the files `def` lists from `dir` as image `name`. With `online`, verifies
/// them against the mirror's signed `SHA256SUMS` and runs the kernel/mirror check.
pub async fn import_dir(
    dir: &Path,
    def: &ImageDef,
    name: &str,
    store: &Store,
    online: Option<(&Upstream, &Keyring)>,
    progress: &dyn Progress,
) -> Result<Outcome, ImageError> {
    let mut files = Vec::new();
    for f in &def.files {
        let path = dir.join(f);
        if !path.is_file() {
            let hint = match &def.package {
                Some(p) if p.dir == dir => format!(
                    "; install Debian's `{}` package (apt-get install {})",
                    p.name, p.name
                ),
                _ => format!("; image `{}` needs {}", def.name, def.files.join(", ")),
            };
            return Err(ImageError::MissingInput {
                path: path.display().to_string(),
                hint,
            });
        }
        let p = path.clone();
        let (sha, _) = tokio::task::spawn_blocking(move || super::sha256_file(&p))
            .await
            .map_err(|e| ImageError::Read {
                path: path.display().to_string(),
                source: std::io::Error::other(e),
            })??;
        files.push(NewFile {
            name: f.clone(),
            source: path.display().to_string(),
            path,
            sha256: sha,
        });
    }
    let package = owning_package(&dir.join("linux"));

    let mut chain = None;
    let (verified, how) = match online {
        None => (false, "not verified: imported with --offline".to_string()),
        Some((up, keyring)) => match verify_online(up, keyring, def, &files).await {
            Ok((c, verified, how)) => {
                progress.note(&how);
                chain = Some(c);
                (verified, how)
            }
            Err(ImageError::Unreachable { url, source }) => (
                false,
                format!(
                    "not verified: the mirror was unreachable ({})",
                    crate::error_chain(&ImageError::Unreachable { url, source })
                ),
            ),
            Err(e) => return Err(e),
        },
    };

    let initrd = files
        .iter()
        .find(|f| f.name == "initrd.gz")
        .map(|f| f.path.clone());
    let installer_kernel = match initrd {
        Some(p) => tokio::task::spawn_blocking(move || kernel::initrd_kernel_version(&p))
            .await
            .map_err(|e| ImageError::Initrd {
                path: "initrd.gz".into(),
                message: e.to_string(),
            })?,
        None => Err(ImageError::MissingFile {
            name: name.into(),
            file: "initrd.gz".into(),
        }),
    };
    let kernel_check = match (&installer_kernel, &chain, online) {
        (Err(e), _, _) => KernelCheck::Unknown {
            reason: crate::error_chain(e),
        },
        (Ok(v), Some(c), Some((up, _))) => {
            match kernel::mirror_kernels_with(up, c, &def.suite, &def.arch).await {
                Ok(m) => KernelCheck::compare(v, &m, &def.suite, Some(&def.name)),
                Err(e) => KernelCheck::Unknown {
                    reason: crate::error_chain(&e),
                },
            }
        }
        (Ok(_), _, _) => KernelCheck::Unknown {
            reason: "the mirror was not consulted".into(),
        },
    };

    let lock = store.lock()?;
    let manifest = ImageManifest {
        name: name.into(),
        suite: def.suite.clone(),
        arch: def.arch.clone(),
        files: Default::default(),
        verified,
        version: package.as_ref().map(|(_, v)| v.clone()),
        id: String::new(),
        definition: Some(def.name.clone()),
        verification: how,
        origin: match &package {
            Some((p, v)) => format!("import {} (package {p} {v})", dir.display()),
            None => format!("import {}", dir.display()),
        },
        kernel: installer_kernel.ok(),
        created: now_rfc3339(),
    };
    let stored = store.commit(&lock, manifest, &files)?;
    Ok(Outcome {
        manifest: stored,
        kernel: kernel_check,
    })
}

/// Checks local files against the signed chain: (chain, all matched, how or why not).
async fn verify_online(
    up: &Upstream,
    keyring: &Keyring,
    def: &ImageDef,
    files: &[NewFile],
) -> Result<(super::upstream::Chain, bool, String), ImageError> {
    let chain = up.signed_release(keyring, &def.suite).await?;
    let sums = up.installer_sums(&chain, &def.suite, &def.arch).await?;
    let sums_url = up.dist_url(&def.suite, &sums_path(&def.arch));
    for f in files {
        let key = def.sums_key(&f.name);
        match sums.get(&key) {
            Some(sha) if *sha == f.sha256 => {}
            Some(sha) => {
                let why = format!(
                    "not verified: `{}` (sha256 {}) differs from the archive's signed SHA256SUMS ({sums_url}: {sha}); the archive's installer is newer or older than this one",
                    f.name, f.sha256
                );
                return Ok((chain, false, why));
            }
            None => {
                let why = format!(
                    "not verified: the archive's signed SHA256SUMS ({sums_url}) does not list `./{key}`"
                );
                return Ok((chain, false, why));
            }
        }
    }
    let how = format!("{} → {} → files", chain.describe(), sums_path(&def.arch));
    Ok((chain, true, how))
}
