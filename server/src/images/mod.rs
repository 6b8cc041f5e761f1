//! Installer images: the Debian netboot installer fetched from a mirror through the
//! archive's signed chain (OpenPGP `InRelease` → installer `SHA256SUMS` → files), or
//! imported from Debian's `debian-installer-*-netboot-*` package, kept in a
//! content-addressed store with a manifest per image that records where each file came
//! from and how it was verified.
//!
//! | submodule  | owns |
//! |------------|------|
//! | `manifest` | image definitions: the files in `images/` (suite, arch, files, package) |
//! | `release`  | the archive keyring, OpenPGP verification, `Release` and `SHA256SUMS` parsing (pure) |
//! | `store`    | the store layout, atomic commits, generations, `verify` and `gc` |
//! | `upstream` | HTTP to the mirror: bounded metadata reads, resumable verified downloads |
//! | `fetch`    | `image fetch`: the signed chain, then every file, then one commit |
//! | `import`   | `image import`: files from a local directory, verified when the mirror answers |
//! | `cpio`, `kernel` | the kernel version inside an initrd; the kernel/mirror check |
//!
//! The `rackseed image …` commands are in `cli::image`. Nothing here serves files to
//! nodes: the boot chain asks [`Store::image`] for paths.
//! Nothing becomes visible in the store until every file of an image is complete and
//! verified; a failed fetch or import leaves the store exactly as it was. No mirror host
//! is built in: the mirror comes from the config or the host's APT sources.

pub mod cpio;
pub mod drivers;
pub mod fetch;
pub mod import;
pub mod kernel;
pub mod manifest;
pub mod release;
pub mod store;
pub mod upstream;

pub use kernel::{KernelCheck, check_installer_kernel};
pub use store::{ImageManifest, ImageRef, Store, StoredFile, StoredImage};

use std::path::Path;

/// A failed image operation. Messages name the image, file, URL or path involved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image store `{path}` cannot be used")]
    Store {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "image store `{path}` is busy: another `rackseed image` command is changing it; try again when it has finished"
    )]
    Busy { path: String },
    #[error("no image named `{name}` in `{store}`; list them with `rackseed image list`")]
    NotFound { name: String, store: String },
    #[error(
        "`{name}` is not an image name: use letters, digits, `-` and `_`, optionally followed by `@` and a generation id"
    )]
    BadName { name: String },
    #[error("image manifest `{path}` is unreadable")]
    Manifest {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image `{name}` has no `{file}` file")]
    MissingFile { name: String, file: String },
    #[error("{path}: {message}")]
    Definition { path: String, message: String },
    #[error(
        "no image manifest named `{name}`; known: {known}. Add `{name}.toml` to the manifests directory `{dir}`"
    )]
    UnknownDefinition {
        name: String,
        known: String,
        dir: String,
    },
    #[error("failed to read `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("keyring `{path}`: {message}")]
    Keyring { path: String, message: String },
    #[error("`{url}` is not correctly signed: {message}")]
    Signature { url: String, message: String },
    #[error("`{url}`: {message}")]
    Release { url: String, message: String },
    #[error(
        "`{url}` does not match the signed chain: {what} expected {expected}, got {actual}; the mirror is broken or tampered with"
    )]
    Mismatch {
        url: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "mirror URL `{url}` is not usable; set [installer] mirror = \"http://<mirror>/debian\""
    )]
    MirrorUrl { url: String },
    #[error(
        "no Debian mirror: none in this host's APT sources and none in the config; set [installer] mirror = \"http://<mirror>/debian\""
    )]
    NoMirror,
    #[error("proxy `{proxy}` (images.proxy) is not a usable URL")]
    Proxy {
        proxy: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot reach `{url}`")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the mirror does not serve `{url}` (HTTP {status})")]
    NotServed { url: String, status: u16 },
    #[error("`{url}` answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("`{url}` is larger than the {limit} bytes allowed for it")]
    TooLarge { url: String, limit: u64 },
    #[error(
        "download of `{url}` stopped at {got} of {total} bytes after {attempts} attempts; the partial file is kept and the next fetch resumes it"
    )]
    Interrupted {
        url: String,
        got: u64,
        total: String,
        attempts: u32,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("failed to write `{path}`")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` changed while it was imported (sha256 {expected} before, {actual} now)")]
    Changed {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("initrd `{path}`: {message}")]
    Initrd { path: String, message: String },
    #[error(
        "image `{name}`: the signed chain verified ({chain}), but a file could not be fetched or verified; nothing was stored"
    )]
    AfterChain {
        name: String,
        chain: String,
        #[source]
        source: Box<ImageError>,
    },
    #[error("`{path}` is missing{hint}")]
    MissingInput { path: String, hint: String },
    #[error("inventory cannot be read for node image references")]
    Inventory(#[source] crate::inventory::InventoryError),
}

/// The Debian mirror used for upstream traffic: `[installer] mirror` when set, else the
/// first Debian mirror in this host's APT sources under `root` (normally `/`).
pub fn upstream_mirror(config: &crate::config::Config, root: &Path) -> Result<String, ImageError> {
    if let Some(m) = &config.installer.mirror {
        return Ok(m.trim_end_matches('/').to_string());
    }
    crate::aptsources::debian_mirror(&crate::aptsources::host_sources(root))
        .ok_or(ImageError::NoMirror)
}

/// Where partial downloads wait for a resume: beside the store, never inside it.
pub fn partial_dir(config: &crate::config::Config) -> std::path::PathBuf {
    config.server.data_dir.join("image-downloads")
}

/// Images nodes reference (the inventory's `nodes.image`), when an inventory exists.
pub fn node_images(config: &crate::config::Config) -> Result<Vec<String>, ImageError> {
    let location = config.inventory_location();
    if let crate::inventory::InventoryLocation::Sqlite(path) = &location
        && !path.exists()
    {
        return Ok(Vec::new());
    }
    let inv = crate::inventory::Inventory::open_at(&location).map_err(ImageError::Inventory)?;
    inv.node_images().map_err(ImageError::Inventory)
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Hex SHA-256 and size of a file, read in chunks.
pub fn sha256_file(path: &Path) -> Result<(String, u64), ImageError> {
    use sha2::Digest;
    use std::io::Read;
    let err = |source| ImageError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(h.finalize()), size))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mirror_comes_from_config_before_host_sources() {
        let c = crate::config::Config::parse_with(
            "[server]\nadvertise = \"192.0.2.1\"\n[installer]\nmirror = \"http://mirror.example/debian/\"\n",
            "t",
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            upstream_mirror(&c, Path::new("/nonexistent")).unwrap(),
            "http://mirror.example/debian"
        );
    }

    #[test]
    fn mirror_from_host_sources_or_a_clear_error() {
        let c = crate::config::Config::parse_with(
            "[server]\nadvertise = \"192.0.2.1\"\n",
            "t",
            &|_| None,
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            upstream_mirror(&c, root.path()),
            Err(ImageError::NoMirror)
        ));
        std::fs::create_dir_all(root.path().join("etc/apt/sources.list.d")).unwrap();
        std::fs::write(
            root.path().join("etc/apt/sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(
            upstream_mirror(&c, root.path()).unwrap(),
            "http://mirror.example/debian"
        );
    }
}
