//! The TFTP tree: which names exist (the iPXE binaries, the signed UEFI chain, the
//! installer files, an optional extra directory), the checks every requested name
//! passes, and the cap on sessions in flight. No sockets; the server loop in `tftp`
//! and the shared state use it.

use crate::bootfiles::{GRUB_EFI, IPXE_BIOS, IPXE_EFI, IPXE_SNPONLY, SHIM_EFI};
use crate::config::Config;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a request name was refused before any lookup.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty file name")]
    Empty,
    #[error("absolute paths are not served")]
    Absolute,
    #[error("backslashes are not allowed in file names")]
    Backslash,
    #[error("control characters are not allowed in file names")]
    Control,
    #[error("`.` and `..` components are not allowed")]
    Dots,
    #[error("empty path component")]
    EmptyComponent,
    #[error("file name longer than 255 bytes")]
    TooLong,
}

/// Checks a requested name and returns it split into components.
pub fn check_path(name: &str) -> Result<Vec<&str>, PathError> {
    if name.is_empty() {
        return Err(PathError::Empty);
    }
    if name.len() > 255 {
        return Err(PathError::TooLong);
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(PathError::Control);
    }
    if name.contains('\\') {
        return Err(PathError::Backslash);
    }
    if name.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(PathError::Dots);
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(PathError::EmptyComponent);
    }
    Ok(parts)
}

/// The virtual tree: fixed names mapped to files, plus an optional directory subtree.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    files: BTreeMap<String, PathBuf>,
    extra: Option<PathBuf>,
}

/// A name that does not resolve to a servable file.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("not found")]
    NotFound,
    #[error("resolves outside the tree")]
    Escapes,
}

impl Tree {
    /// The tree for a config: iPXE binaries at the top, installer files under `installer/`.
    pub fn from_config(
        cfg: &Config,
        installer_kernel: &Path,
        installer_initrd: &Path,
        extra: Option<PathBuf>,
    ) -> Tree {
        let mut files = BTreeMap::new();
        files.insert(IPXE_BIOS.to_string(), cfg.boot.ipxe_bios.clone());
        files.insert(IPXE_EFI.to_string(), cfg.boot.ipxe_efi.clone());
        files.insert(IPXE_SNPONLY.to_string(), cfg.boot.ipxe_snponly.clone());
        files.insert(
            "installer/linux".to_string(),
            installer_kernel.to_path_buf(),
        );
        // The signed chain from Debian's netboot package (shim, network GRUB).
        files.insert(
            SHIM_EFI.to_string(),
            cfg.installer.dir.join("bootnetx64.efi"),
        );
        files.insert(GRUB_EFI.to_string(), cfg.installer.dir.join("grubx64.efi"));
        files.insert(
            "installer/initrd.gz".to_string(),
            installer_initrd.to_path_buf(),
        );
        Tree { files, extra }
    }

    /// A tree of the given entries (for tests and benchmarks).
    pub fn new(files: BTreeMap<String, PathBuf>, extra: Option<PathBuf>) -> Tree {
        Tree { files, extra }
    }

    /// The names of the fixed entries.
    pub fn names(&self) -> impl Iterator<Item = (&String, &PathBuf)> {
        self.files.iter()
    }

    /// Resolves a requested name to a regular file on disk.
    pub fn lookup(&self, name: &str) -> Result<PathBuf, LookupError> {
        let parts = check_path(name)?;
        if let Some(p) = self.files.get(name) {
            return Ok(p.clone());
        }
        let Some(root) = &self.extra else {
            return Err(LookupError::NotFound);
        };
        let root = root.canonicalize().map_err(|_| LookupError::NotFound)?;
        let candidate = parts.iter().fold(root.clone(), |acc, p| acc.join(p));
        let real = candidate
            .canonicalize()
            .map_err(|_| LookupError::NotFound)?;
        if !real.starts_with(&root) {
            return Err(LookupError::Escapes);
        }
        if !real.is_file() {
            return Err(LookupError::NotFound);
        }
        Ok(real)
    }
}

/// Counts sessions in flight and refuses new ones past the cap.
#[derive(Debug, Default)]
pub struct Sessions {
    active: AtomicUsize,
    per_client: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// Why no session slot was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Busy {
    /// `max` transfers are in flight.
    Total,
    /// This client already has its share of transfers in flight.
    Client,
}

impl Sessions {
    /// Takes a slot for `client`, unless `max` are in flight in all or `per_client`
    /// for this client.
    pub fn acquire(
        self: &Arc<Self>,
        max: usize,
        client: std::net::IpAddr,
        per_client: usize,
    ) -> Result<SessionSlot, Busy> {
        let mut cur = self.active.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return Err(Busy::Total);
            }
            match self.active.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let mut m = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(client).or_default();
        if *n >= per_client {
            drop(m);
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy::Client);
        }
        *n += 1;
        Ok(SessionSlot(self.clone(), client))
    }

    /// Sessions in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// A held session slot; released on drop.
#[derive(Debug)]
pub struct SessionSlot(Arc<Sessions>, std::net::IpAddr);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut m = self.0.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
        drop(m);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}
