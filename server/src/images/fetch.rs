//! `rackseed image fetch`: an image's files from the mirror, through the signed chain
//! `InRelease` (OpenPGP, archive keyring) → installer `SHA256SUMS` → each file.
//!
//! Every file is downloaded (resumably, into the partial directory outside the store)
//! and verified before any of them enters the store; the store changes in one commit
//! or not at all.

use super::ImageError;
use super::kernel::{self, KernelCheck};
use super::manifest::ImageDef;
use super::release::Keyring;
use super::store::{ImageManifest, NewFile, Store};
use super::upstream::{Progress, Upstream, sums_path};
use std::path::{Path, PathBuf};

/// A stored image and what the kernel/mirror check found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub manifest: ImageManifest,
    pub kernel: KernelCheck,
}

/// The current time as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Fetches the image `def` describes and stores it as `name`. Partial downloads are kept
/// in `partial_dir` (so a later fetch resumes them) and removed once stored.
pub async fn fetch_image(
    def: &ImageDef,
    name: &str,
    store: &Store,
    up: &Upstream,
    keyring: &Keyring,
    partial_dir: &Path,
    progress: &dyn Progress,
) -> Result<Outcome, ImageError> {
    let chain = up.signed_release(keyring, &def.suite).await?;
    progress.note(&format!(
        "{}: {}",
        up.dist_url(&def.suite, chain.via),
        chain.describe()
    ));
    let sums = up.installer_sums(&chain, &def.suite, &def.arch).await?;
    let sums_url = up.dist_url(&def.suite, &sums_path(&def.arch));
    progress.note(&format!("{sums_url}: matches the signed Release"));
    let how = format!("{} → {} → files", chain.describe(), sums_path(&def.arch));
    let mut wanted = Vec::new();
    for f in &def.files {
        let key = def.sums_key(f);
        let Some(sha) = sums.get(&key) else {
            return Err(ImageError::Release {
                url: sums_url,
                message: format!("the signed SHA256SUMS does not list `./{key}`"),
            });
        };
        wanted.push((
            f.clone(),
            sha.clone(),
            up.dist_url(&def.suite, &def.dist_path(f)),
        ));
    }

    let lock = store.lock()?;
    std::fs::create_dir_all(partial_dir).map_err(|source| ImageError::Write {
        path: partial_dir.display().to_string(),
        source,
    })?;
    let mut files = Vec::new();
    for (f, sha, url) in &wanted {
        let partial = partial_dir.join(format!("{sha}.part"));
        up.download_verified(url, &partial, sha, f, progress)
            .await
            .map_err(|e| ImageError::AfterChain {
                name: name.into(),
                chain: format!("{} → SHA256SUMS", chain.describe()),
                source: Box::new(e),
            })?;
        progress.note(&format!("{f}: sha256 {sha} matches SHA256SUMS"));
        files.push(NewFile {
            name: f.clone(),
            path: partial,
            sha256: sha.clone(),
            source: url.clone(),
        });
    }

    let initrd: Option<PathBuf> = files
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
    let kernel_check = match &installer_kernel {
        Ok(v) => match kernel::mirror_kernels_with(up, &chain, &def.suite, &def.arch).await {
            Ok(m) => KernelCheck::compare(v, &m, &def.suite, Some(&def.name)),
            Err(e) => KernelCheck::Unknown {
                reason: crate::error_chain(&e),
            },
        },
        Err(e) => KernelCheck::Unknown {
            reason: crate::error_chain(e),
        },
    };

    let manifest = ImageManifest {
        name: name.into(),
        suite: def.suite.clone(),
        arch: def.arch.clone(),
        files: Default::default(),
        verified: true,
        version: chain.release.version.clone(),
        id: String::new(),
        definition: Some(def.name.clone()),
        verification: how,
        origin: format!("fetch {}", up.base()),
        kernel: installer_kernel.ok(),
        created: now_rfc3339(),
    };
    let stored = store.commit(&lock, manifest, &files)?;
    for f in &files {
        let _ = std::fs::remove_file(&f.path);
    }
    Ok(Outcome {
        manifest: stored,
        kernel: kernel_check,
    })
}
