//! The content-addressed image store.
//!
//! Layout under the store root:
//!
//! ```text
//! blobs/sha256/<hex>        file contents, named by their SHA-256
//! images/<name>.json        the current generation of image <name>
//! images/<name>@<id>.json   every generation (id: hash of its files), kept until gc
//! tmp/                      files being written; renamed into place when complete
//! .lock                     held by commands that change the store
//! ```
//!
//! Owns atomicity: a blob appears only under its verified hash, a manifest only after
//! all its blobs, and a failed commit removes what it added. Does not download.

use super::ImageError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// One stored file of an image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredFile {
    pub sha256: String,
    pub size: u64,
    /// Where it came from (URL or local path).
    pub source: String,
}

/// The manifest of a stored image: what it is, where each file came from, and how (or
/// whether) it was verified.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageManifest {
    pub name: String,
    pub suite: String,
    pub arch: String,
    pub files: BTreeMap<String, StoredFile>,
    /// True only when every file was checked against the archive's signed chain.
    #[serde(default)]
    pub verified: bool,
    /// The package version (imports) or the Debian release version (fetches).
    #[serde(default)]
    pub version: Option<String>,
    /// The generation id: a hash over the file hashes.
    #[serde(default)]
    pub id: String,
    /// The image definition it was made from (`images/<definition>.toml`).
    #[serde(default)]
    pub definition: Option<String>,
    /// How it was verified, e.g. `InRelease signed by <fingerprint> → SHA256SUMS`, or why
    /// it was not.
    #[serde(default)]
    pub verification: String,
    /// `fetch <mirror>` or `import <dir>`.
    #[serde(default)]
    pub origin: String,
    /// The kernel version inside the initrd.
    #[serde(default)]
    pub kernel: Option<String>,
    /// When it was fetched or imported (RFC 3339, UTC).
    #[serde(default)]
    pub created: String,
}

/// A stored image resolved to paths of its kernel and initrd.
#[derive(Clone, Debug)]
pub struct StoredImage {
    pub manifest: ImageManifest,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// A reference to a stored image: `name` (the current generation) or `name@id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef {
    pub name: String,
    pub id: Option<String>,
}

impl ImageRef {
    /// Parses `name` or `name@id`.
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        let bad = || ImageError::BadName { name: s.into() };
        let (name, id) = match s.split_once('@') {
            Some((n, id)) => (n, Some(id)),
            None => (s, None),
        };
        if !crate::config::valid_name(name) {
            return Err(bad());
        }
        if let Some(id) = id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        {
            return Err(bad());
        }
        Ok(ImageRef {
            name: name.into(),
            id: id.map(str::to_string),
        })
    }

    fn file_name(&self) -> String {
        match &self.id {
            Some(id) => format!("{}@{id}.json", self.name),
            None => format!("{}.json", self.name),
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{}@{id}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The generation id of a set of files: 12 hex digits of a hash over names and hashes.
pub fn generation_id(files: &BTreeMap<String, StoredFile>) -> String {
    let mut text = String::new();
    for (name, f) in files {
        text.push_str(&format!("{name} {}\n", f.sha256));
    }
    super::sha256_hex(text.as_bytes())[..12].to_string()
}

/// A file to add with a commit.
#[derive(Clone, Debug)]
pub struct NewFile {
    /// The name in the image (`linux`).
    pub name: String,
    /// A complete local copy.
    pub path: PathBuf,
    /// The hash it was verified under; the copy into the store is checked against it.
    pub sha256: String,
    /// Where it came from, recorded in the manifest.
    pub source: String,
}

/// Exclusive right to change the store, held while it lives.
pub struct StoreLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// What a file check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    Ok,
    Missing,
    Corrupt { actual: String },
}

/// What `gc` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub generations: Vec<String>,
    pub blobs: usize,
    pub bytes: u64,
    pub tmp_files: usize,
    /// Kept references that name nothing in the store.
    pub dangling: Vec<String>,
}

/// The image store.
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        let err = |source| ImageError::Store {
            path: root.display().to_string(),
            source,
        };
        for d in ["blobs/sha256", "images", "tmp"] {
            std::fs::create_dir_all(root.join(d)).map_err(err)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join(".lock"))
            .map_err(err)?;
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io_err(&self) -> impl Fn(std::io::Error) -> ImageError + '_ {
        |source| ImageError::Store {
            path: self.root.display().to_string(),
            source,
        }
    }

    /// Takes the store lock, or fails at once when another command holds it.
    pub fn lock(&self) -> Result<StoreLock, ImageError> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.root.join(".lock"))
            .map_err(self.io_err())?;
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(StoreLock { _lock: l }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(ImageError::Busy {
                path: self.root.display().to_string(),
            }),
            Err((_, e)) => Err((self.io_err())(std::io::Error::from(e))),
        }
    }

    /// The path of a blob by hash.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(sha256)
    }

    fn read_manifest(&self, path: &Path) -> Result<ImageManifest, ImageError> {
        let text = std::fs::read_to_string(path).map_err(self.io_err())?;
        serde_json::from_str(&text).map_err(|source| ImageError::Manifest {
            path: path.display().to_string(),
            source,
        })
    }

    /// The manifest `reference` (`name` or `name@id`) names.
    pub fn manifest(&self, reference: &str) -> Result<ImageManifest, ImageError> {
        let r = ImageRef::parse(reference)?;
        let path = self.root.join("images").join(r.file_name());
        if !path.is_file() {
            return Err(ImageError::NotFound {
                name: reference.into(),
                store: self.root.display().to_string(),
            });
        }
        self.read_manifest(&path)
    }

    /// The image `reference` (`name` or `name@id`) names, with the paths of its kernel
    /// and initrd.
    pub fn image(&self, reference: &str) -> Result<StoredImage, ImageError> {
        let manifest = self.manifest(reference)?;
        let file = |f: &str| {
            manifest
                .files
                .get(f)
                .map(|s| self.blob_path(&s.sha256))
                .ok_or_else(|| ImageError::MissingFile {
                    name: reference.into(),
                    file: f.into(),
                })
        };
        Ok(StoredImage {
            kernel: file("linux")?,
            initrd: file("initrd.gz")?,
            manifest,
        })
    }

    fn manifests(&self, generations: bool) -> Result<Vec<ImageManifest>, ImageError> {
        let mut out = Vec::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.root.join("images"))
            .map_err(self.io_err())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                n.ends_with(".json") && n.contains('@') == generations
            })
            .collect();
        paths.sort();
        for p in paths {
            out.push(self.read_manifest(&p)?);
        }
        Ok(out)
    }

    /// The current generation of every image, by name.
    pub fn list(&self) -> Result<Vec<ImageManifest>, ImageError> {
        self.manifests(false)
    }

    /// Every generation of every image (the current ones included).
    pub fn generations(&self) -> Result<Vec<ImageManifest>, ImageError> {
        self.manifests(true)
    }

    /// Checks every file of an image against its recorded hash and size.
    pub fn verify(&self, m: &ImageManifest) -> Result<Vec<(String, FileState)>, ImageError> {
        let mut out = Vec::new();
        for (name, f) in &m.files {
            let path = self.blob_path(&f.sha256);
            let state = if !path.is_file() {
                FileState::Missing
            } else {
                let (actual, size) = super::sha256_file(&path)?;
                if actual == f.sha256 && size == f.size {
                    FileState::Ok
                } else {
                    FileState::Corrupt { actual }
                }
            };
            out.push((name.clone(), state));
        }
        Ok(out)
    }

    /// Adds an image: copies each file into the store, checking the copy against the
    /// hash it was verified under, then writes the manifest as a new generation and as
    /// the current one. On failure, everything added is removed again. Returns the
    /// manifest as stored (with `id` and `files` filled in).
    pub fn commit(
        &self,
        _lock: &StoreLock,
        mut manifest: ImageManifest,
        files: &[NewFile],
    ) -> Result<ImageManifest, ImageError> {
        let mut added: Vec<PathBuf> = Vec::new();
        let result = self.commit_inner(&mut manifest, files, &mut added);
        if result.is_err() {
            for p in &added {
                let _ = std::fs::remove_file(p);
            }
            self.clear_tmp();
        }
        result.map(|()| manifest)
    }

    fn commit_inner(
        &self,
        manifest: &mut ImageManifest,
        files: &[NewFile],
        added: &mut Vec<PathBuf>,
    ) -> Result<(), ImageError> {
        manifest.files.clear();
        for f in files {
            let size = self.add_blob(f, added)?;
            manifest.files.insert(
                f.name.clone(),
                StoredFile {
                    sha256: f.sha256.clone(),
                    size,
                    source: f.source.clone(),
                },
            );
        }
        manifest.id = generation_id(&manifest.files);
        let json =
            serde_json::to_vec_pretty(&*manifest).map_err(|source| ImageError::Manifest {
                path: manifest.name.clone(),
                source,
            })?;
        let generation = self
            .root
            .join("images")
            .join(format!("{}@{}.json", manifest.name, manifest.id));
        if !generation.exists() {
            self.write_atomic(&generation, &json)?;
            added.push(generation);
        } else {
            // Same files again: refresh the record of when and how.
            self.write_atomic(&generation, &json)?;
        }
        self.write_atomic(
            &self
                .root
                .join("images")
                .join(format!("{}.json", manifest.name)),
            &json,
        )?;
        Ok(())
    }

    /// Copies `f` into `blobs/sha256/<hash>` unless an intact copy is there; returns its
    /// size.
    fn add_blob(&self, f: &NewFile, added: &mut Vec<PathBuf>) -> Result<u64, ImageError> {
        if !super::release::is_sha256_hex(&f.sha256) {
            return Err(ImageError::Changed {
                path: f.path.display().to_string(),
                expected: f.sha256.clone(),
                actual: "not a SHA-256 hash".into(),
            });
        }
        let dest = self.blob_path(&f.sha256);
        if dest.is_file() {
            let (actual, size) = super::sha256_file(&dest)?;
            if actual == f.sha256 {
                return Ok(size);
            }
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{}", f.sha256, std::process::id()));
        let write_err = |source| ImageError::Write {
            path: tmp.display().to_string(),
            source,
        };
        let mut src = std::fs::File::open(&f.path).map_err(|source| ImageError::Read {
            path: f.path.display().to_string(),
            source,
        })?;
        let mut out = std::fs::File::create(&tmp).map_err(write_err)?;
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = src.read(&mut buf).map_err(|source| ImageError::Read {
                path: f.path.display().to_string(),
                source,
            })?;
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut h, &buf[..n]);
            out.write_all(&buf[..n]).map_err(write_err)?;
            size += n as u64;
        }
        out.sync_all().map_err(write_err)?;
        drop(out);
        let actual = hex::encode(sha2::Digest::finalize(h));
        if actual != f.sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(ImageError::Changed {
                path: f.path.display().to_string(),
                expected: f.sha256.clone(),
                actual,
            });
        }
        let existed = dest.exists();
        std::fs::rename(&tmp, &dest).map_err(write_err)?;
        if !existed {
            added.push(dest);
        }
        self.sync_dir(&self.root.join("blobs/sha256"))?;
        Ok(size)
    }

    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{name}.{}", std::process::id()));
        let write_err = |source| ImageError::Write {
            path: dest.display().to_string(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(write_err)?;
        f.write_all(bytes).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
        drop(f);
        std::fs::rename(&tmp, dest).map_err(write_err)?;
        if let Some(parent) = dest.parent() {
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), ImageError> {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io_err())
    }

    fn clear_tmp(&self) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(self.root.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Removes generations that are neither current nor named by `keep` (image
    /// references such as `name@id` from nodes and the config), then every blob no
    /// remaining manifest uses, then leftovers in `tmp/`. Current generations are
    /// never removed.
    pub fn gc(&self, _lock: &StoreLock, keep: &[String]) -> Result<GcReport, ImageError> {
        let mut report = GcReport::default();
        let current: BTreeMap<String, String> =
            self.list()?.into_iter().map(|m| (m.name, m.id)).collect();
        let keep: BTreeSet<ImageRef> = keep
            .iter()
            .filter_map(|k| ImageRef::parse(k).ok())
            .collect();
        for k in &keep {
            if self.manifest(&k.to_string()).is_err() {
                report.dangling.push(k.to_string());
            }
        }
        let mut used: BTreeSet<String> = BTreeSet::new();
        for m in self.list()? {
            used.extend(m.files.values().map(|f| f.sha256.clone()));
        }
        for m in self.generations()? {
            let r = ImageRef {
                name: m.name.clone(),
                id: Some(m.id.clone()),
            };
            if current.get(&m.name) == Some(&m.id) || keep.contains(&r) {
                used.extend(m.files.values().map(|f| f.sha256.clone()));
                continue;
            }
            std::fs::remove_file(self.root.join("images").join(r.file_name()))
                .map_err(self.io_err())?;
            report.generations.push(r.to_string());
        }
        for e in std::fs::read_dir(self.root.join("blobs/sha256"))
            .map_err(self.io_err())?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !used.contains(&name) {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(e.path()).map_err(self.io_err())?;
                report.blobs += 1;
                report.bytes += size;
            }
        }
        report.tmp_files = self.clear_tmp();
        Ok(report)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn manifest(name: &str) -> ImageManifest {
        ImageManifest {
            name: name.into(),
            suite: "bookworm".into(),
            arch: "amd64".into(),
            files: BTreeMap::new(),
            verified: false,
            version: None,
            id: String::new(),
            definition: Some("bookworm-amd64".into()),
            verification: "not verified: test".into(),
            origin: "import test".into(),
            kernel: None,
            created: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn files(dir: &Path, tag: &str) -> Vec<NewFile> {
        ["linux", "initrd.gz"]
            .iter()
            .map(|n| {
                let p = dir.join(format!("{n}.{tag}"));
                std::fs::write(&p, format!("{n} {tag}")).unwrap();
                NewFile {
                    name: n.to_string(),
                    sha256: super::super::sha256_hex(format!("{n} {tag}").as_bytes()),
                    path: p,
                    source: format!("/src/{n}"),
                }
            })
            .collect()
    }

    #[test]
    fn commit_then_resolve_by_name_and_generation() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("store")).unwrap();
        let l = s.lock().unwrap();
        let m = s.commit(&l, manifest("a"), &files(d.path(), "1")).unwrap();
        assert_eq!(m.id.len(), 12);
        let img = s.image("a").unwrap();
        assert_eq!(std::fs::read(&img.kernel).unwrap(), b"linux 1");
        assert_eq!(img.kernel, s.blob_path(&m.files["linux"].sha256));
        assert_eq!(s.image(&format!("a@{}", m.id)).unwrap().manifest, m);
        assert!(
            s.verify(&m)
                .unwrap()
                .iter()
                .all(|(_, st)| *st == FileState::Ok)
        );
        assert!(
            std::fs::read_dir(d.path().join("store/tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_file_that_changed_since_it_was_verified_is_refused_and_rolled_back() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("store")).unwrap();
        let l = s.lock().unwrap();
        let mut f = files(d.path(), "1");
        std::fs::write(&f[1].path, b"tampered").unwrap();
        f[1].source = "x".into();
        let e = s.commit(&l, manifest("a"), &f).unwrap_err().to_string();
        assert!(e.contains("changed while it was imported"), "{e}");
        assert_eq!(
            std::fs::read_dir(s.blob_path("x").parent().unwrap())
                .unwrap()
                .count(),
            0
        );
        assert!(matches!(s.image("a"), Err(ImageError::NotFound { .. })));
    }

    #[test]
    fn the_lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let _l = s.lock().unwrap();
        let e = Store::open(d.path())
            .unwrap()
            .lock()
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is busy"), "{e}");
    }

    #[test]
    fn verify_finds_corrupt_and_missing_blobs() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("store")).unwrap();
        let l = s.lock().unwrap();
        let m = s.commit(&l, manifest("a"), &files(d.path(), "1")).unwrap();
        std::fs::write(s.blob_path(&m.files["linux"].sha256), b"bitrot").unwrap();
        std::fs::remove_file(s.blob_path(&m.files["initrd.gz"].sha256)).unwrap();
        let v = s.verify(&m).unwrap();
        assert_eq!(v[0], ("initrd.gz".to_string(), FileState::Missing));
        assert!(matches!(v[1].1, FileState::Corrupt { .. }));
    }

    #[test]
    fn gc_keeps_current_and_referenced_generations() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("store")).unwrap();
        let l = s.lock().unwrap();
        let g1 = s.commit(&l, manifest("a"), &files(d.path(), "1")).unwrap();
        let g2 = s.commit(&l, manifest("a"), &files(d.path(), "2")).unwrap();
        let g3 = s.commit(&l, manifest("a"), &files(d.path(), "3")).unwrap();
        std::fs::write(d.path().join("store/tmp/partial"), b"x").unwrap();
        let r = s.gc(&l, &[format!("a@{}", g1.id), "gone".into()]).unwrap();
        assert_eq!(r.generations, vec![format!("a@{}", g2.id)]);
        assert_eq!(r.blobs, 2);
        assert_eq!(r.tmp_files, 1);
        assert_eq!(r.dangling, vec!["gone".to_string()]);
        assert_eq!(s.image("a").unwrap().manifest.id, g3.id);
        assert!(s.image(&format!("a@{}", g1.id)).is_ok());
        assert!(s.image(&format!("a@{}", g2.id)).is_err());
        assert_eq!(
            std::fs::read_dir(s.blob_path("x").parent().unwrap())
                .unwrap()
                .count(),
            4
        );
    }

    #[test]
    fn references_are_checked() {
        assert_eq!(
            ImageRef::parse("bookworm-amd64@0123abcd")
                .unwrap()
                .id
                .as_deref(),
            Some("0123abcd")
        );
        for bad in ["../x", "a@", "a@XYZ", "", "a@../b"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
