//! Installer images: a content-addressed store of verified installer files, with a
//! manifest per image recording where each file came from.
//!
//! Owns the store layout (`blobs/sha256/<hex>`, `images/<name>.json`). This is the read
//! side the boot chain uses; fetching and verifying live in submodules.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A failed image operation.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image store `{path}` cannot be used")]
    Store {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no image named `{name}` in `{store}`; list them with `rackseed image list`")]
    NotFound { name: String, store: String },
    #[error("image manifest `{path}` is unreadable")]
    Manifest {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image `{name}` has no `{file}` file")]
    MissingFile { name: String, file: String },
}

/// One stored file of an image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredFile {
    pub sha256: String,
    pub size: u64,
    /// Where it came from (URL or local path).
    pub source: String,
}

/// The manifest of a stored image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageManifest {
    pub name: String,
    pub suite: String,
    pub arch: String,
    pub files: BTreeMap<String, StoredFile>,
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub version: Option<String>,
}

/// A stored image resolved to paths of its kernel and initrd.
#[derive(Clone, Debug)]
pub struct StoredImage {
    pub manifest: ImageManifest,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The image store.
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        for d in ["blobs/sha256", "images"] {
            std::fs::create_dir_all(root.join(d)).map_err(|source| ImageError::Store {
                path: root.display().to_string(),
                source,
            })?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The path of a blob by hash.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(sha256)
    }

    /// The image called `name`.
    pub fn image(&self, name: &str) -> Result<StoredImage, ImageError> {
        let path = self.root.join("images").join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).map_err(|_| ImageError::NotFound {
            name: name.into(),
            store: self.root.display().to_string(),
        })?;
        let manifest: ImageManifest =
            serde_json::from_str(&text).map_err(|source| ImageError::Manifest {
                path: path.display().to_string(),
                source,
            })?;
        let file = |f: &str| {
            manifest
                .files
                .get(f)
                .map(|s| self.blob_path(&s.sha256))
                .ok_or_else(|| ImageError::MissingFile {
                    name: name.into(),
                    file: f.into(),
                })
        };
        Ok(StoredImage {
            kernel: file("linux")?,
            initrd: file("initrd.gz")?,
            manifest,
        })
    }
}
