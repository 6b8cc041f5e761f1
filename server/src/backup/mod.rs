//! Backups of the appliance's state: which files a backup carries and where each one
//! goes back, the manifest that lists them with their SHA-256, and the judgement of an
//! archive before anything is restored (format, schema version, every path and
//! checksum). Pure: names, bytes and numbers in, decisions out. The snapshot, the
//! archive file and the restore on disk are `backup::store`'s; the tar format is
//! `backup::archive`'s.
//!
//! An archive is a ustar file (`tar -tvf` lists it): first the manifest
//! [`MANIFEST`] (JSON), then every file it lists, in its order. Archive paths start
//! with the root they go back to:
//!
//! | archive path | restored to | mode | what |
//! |---|---|---|---|
//! | `data/inventory.db` | `<data_dir>/inventory.db` | 0600 | the SQLite inventory: an online snapshot with the lease journal's writes replayed into it |
//! | `data/admin.token`, `data/bmc.key` | `<data_dir>/…` | 0600 | the admin token; the key that seals BMC passwords |
//! | `data/ca/*.key`, `data/ca/*.crt` | `<data_dir>/ca/` | 0600, 0644 | the CA and the HTTPS server certificate |
//! | `images/images/*.json` | `<images.store>/images/` | 0644 | the image store's index: every image generation |
//! | `images/blobs/sha256/<hex>` | `<images.store>/blobs/sha256/` | 0644 | installer kernels and initrds (content-addressed) |
//! | `images/drivers/<kernel>/*` | `<images.store>/drivers/` | 0644 | installer disk drivers and their index |
//!
//! Not carried: `leases.journal` (its writes are in the snapshot; a restore empties
//! it), `inventory.db-wal` and `-shm` (in the snapshot), `image-downloads/` (partial
//! downloads) and the store's `tmp/` and `.lock`.
//!
//! Only the embedded SQLite inventory is backed up. A PostgreSQL inventory would be
//! carried as a `pg_dump` archive under its own [`InventoryKind`] and path, judged by
//! the same manifest; [`inventory_kind_for`] refuses one until then.

pub mod archive;
pub mod store;

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The manifest's name, the archive's first entry.
pub const MANIFEST: &str = "rackseed-backup.json";
/// The archive format this rackseed writes and reads.
pub const FORMAT: u32 = 1;
/// The largest manifest read.
pub const MAX_MANIFEST: u64 = 16 << 20;
/// The most files one manifest lists.
pub const MAX_FILES: usize = 200_000;
/// The archive path of the inventory snapshot.
pub const INVENTORY: &str = "data/inventory.db";

/// Which inventory a backup holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryKind {
    /// The embedded SQLite file, as [`INVENTORY`].
    Sqlite,
}

impl InventoryKind {
    /// The manifest's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            InventoryKind::Sqlite => "sqlite",
        }
    }
}

/// The inventory the config names (`[inventory] url`, absent: the embedded SQLite
/// file): only SQLite can be backed up by this rackseed.
pub fn inventory_kind_for(url: Option<&str>) -> Result<InventoryKind, Refused> {
    match url {
        None => Ok(InventoryKind::Sqlite),
        Some(u) if u.starts_with("sqlite:") => Ok(InventoryKind::Sqlite),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Err(Refused::InventoryNotBuilt("PostgreSQL".into()))
        }
        Some(u) => Err(Refused::InventoryNotBuilt(format!(
            "`{}`",
            u.split(':').next().unwrap_or_default().escape_debug()
        ))),
    }
}

/// Where an archive path goes back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Root {
    /// `server.data_dir`
    Data,
    /// `images.store`
    Images,
}

impl Root {
    fn prefix(self) -> &'static str {
        match self {
            Root::Data => "data",
            Root::Images => "images",
        }
    }
}

/// What a carried file is, which decides its mode and whether it counts as state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The inventory snapshot.
    Inventory,
    /// A key or token: 0600.
    Secret,
    /// A certificate: 0644.
    Certificate,
    /// An image manifest or driver index: 0644.
    ImageIndex,
    /// An image's contents, named by its hash, or a driver package: 0644.
    ImageFile,
}

impl Kind {
    /// The permissions it is written with.
    pub fn mode(self) -> u32 {
        match self {
            Kind::Inventory | Kind::Secret => 0o600,
            Kind::Certificate | Kind::ImageIndex | Kind::ImageFile => 0o644,
        }
    }
}

/// A carried file: its root, its path below the root, what it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placed {
    pub root: Root,
    /// Below the root, `/`-separated, e.g. `ca/ca.key`.
    pub rel: String,
}

impl Placed {
    /// The archive path: `data/ca/ca.key`.
    pub fn archive_path(&self) -> String {
        format!("{}/{}", self.root.prefix(), self.rel)
    }
}

/// A file name rackseed writes: letters, digits, `.`, `_`, `-`, `+`, `~`, `@`, not
/// starting with a dot, at most 100 bytes.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+~@".contains(&b))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether a backup carries the file at `rel` below `root`, and as what. Both sides
/// ask it: the backup for every file it finds, the restore for every path a manifest
/// lists (so an archive cannot place a file anywhere else).
pub fn carried(root: Root, rel: &str) -> Option<Kind> {
    let parts: Vec<&str> = rel.split('/').collect();
    match (root, parts.as_slice()) {
        (Root::Data, ["inventory.db"]) => Some(Kind::Inventory),
        (Root::Data, ["admin.token" | "bmc.key"]) => Some(Kind::Secret),
        (Root::Data, ["ca", f]) if plain_name(f) && f.ends_with(".key") => Some(Kind::Secret),
        (Root::Data, ["ca", f]) if plain_name(f) && f.ends_with(".crt") => Some(Kind::Certificate),
        (Root::Images, ["images", f]) if plain_name(f) && f.ends_with(".json") => {
            Some(Kind::ImageIndex)
        }
        (Root::Images, ["blobs", "sha256", h]) if is_sha256_hex(h) => Some(Kind::ImageFile),
        (Root::Images, ["drivers", k, f])
            if plain_name(k) && plain_name(f) && !f.ends_with(".part") && !f.ends_with(".tmp") =>
        {
            Some(if *f == "index.json" {
                Kind::ImageIndex
            } else {
                Kind::ImageFile
            })
        }
        _ => None,
    }
}

/// An archive path (`data/ca/ca.key`) as a carried file, or why it is not one.
pub fn place(path: &str) -> Result<(Placed, Kind), String> {
    let (root, rel) = match path.split_once('/') {
        Some(("data", rel)) => (Root::Data, rel),
        Some(("images", rel)) => (Root::Images, rel),
        _ => return Err("not under `data/` or `images/`".into()),
    };
    let kind = carried(root, rel).ok_or("not a file a rackseed backup carries")?;
    Ok((
        Placed {
            root,
            rel: rel.to_string(),
        },
        kind,
    ))
}

/// One file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// The archive path.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// What a backup is: who wrote it, when, the inventory's schema version, every file
/// with its size and SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The archive format, [`FORMAT`].
    pub format: u32,
    /// The version of the rackseed that wrote it.
    pub rackseed: String,
    /// The inventory's schema version (SQLite `user_version`: migrations applied).
    pub schema: u32,
    /// `sqlite`
    pub inventory: String,
    /// When the snapshot was taken, RFC 3339 UTC.
    pub created: String,
    pub files: Vec<FileEntry>,
}

/// Why an archive (or the config, for a backup) is refused. Each says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "backing up a {0} inventory is not built yet (it will be a pg_dump archive); this rackseed backs up its embedded SQLite inventory only"
    )]
    InventoryNotBuilt(String),
    #[error("not a tar archive rackseed can read: entry {entry}: {why}")]
    Header { entry: usize, why: String },
    #[error(
        "its first entry is `{0}`, not the manifest `{MANIFEST}`: this is not an archive `rackseed backup` wrote"
    )]
    NoManifest(String),
    #[error("the manifest is larger than {MAX_MANIFEST} bytes")]
    ManifestTooLarge,
    #[error("the manifest is not valid: {0}")]
    Manifest(String),
    #[error(
        "the archive has format {found}, newer than this rackseed reads ({known}); it was written by rackseed {by}: upgrade rackseed to restore it"
    )]
    NewerFormat { found: u32, known: u32, by: String },
    #[error(
        "the backup's inventory has schema version {found}, newer than this rackseed's ({known}); it was written by rackseed {by} and this is rackseed {this}: upgrade rackseed to {by} or later, then restore"
    )]
    NewerSchema {
        found: u32,
        known: u32,
        by: String,
        this: String,
    },
    #[error(
        "the backup holds a `{0}` inventory; this rackseed restores only its embedded SQLite inventory"
    )]
    Inventory(String),
    #[error("the manifest lists `{path}`: {why}")]
    Path { path: String, why: String },
    #[error("the archive holds `{found}` where the manifest lists `{expected}` next")]
    Unexpected { found: String, expected: String },
    #[error("the archive holds `{0}`, which its manifest does not list")]
    Unlisted(String),
    #[error("`{name}` is a {kind} entry; a rackseed backup holds regular files only")]
    EntryType { name: String, kind: String },
    #[error("the archive ends before `{0}`: it is truncated")]
    Truncated(String),
    #[error("`{path}` is {found} bytes in the archive, the manifest says {expected}")]
    Size {
        path: String,
        found: u64,
        expected: u64,
    },
    #[error(
        "the SHA-256 of `{path}` is {found}, the manifest says {expected}: the archive was changed or damaged"
    )]
    Checksum {
        path: String,
        found: String,
        expected: String,
    },
    #[error(
        "`{INVENTORY}` has schema version {found}, the manifest says {expected}: the archive was changed"
    )]
    SchemaMismatch { found: u32, expected: u32 },
}

impl Manifest {
    /// The manifest of a backup written now (`created_ms`, Unix milliseconds) by this
    /// rackseed of an inventory at `schema`.
    pub fn new(schema: u32, created_ms: i64, files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: FORMAT,
            rackseed: env!("CARGO_PKG_VERSION").to_string(),
            schema,
            inventory: InventoryKind::Sqlite.as_str().to_string(),
            created: rfc3339(created_ms),
            files,
        }
    }

    /// The manifest as written into the archive.
    pub fn render(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads and checks a manifest: a newer format is refused by its number before
    /// anything else is read; then every field, every path (see [`place`]), no path
    /// twice, and the inventory present. The schema version is judged separately
    /// ([`schema_step`]).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, Refused> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
            #[serde(default)]
            rackseed: Option<String>,
        }
        let bad = |e: serde_json::Error| Refused::Manifest(e.to_string());
        let f: Format = serde_json::from_slice(bytes).map_err(bad)?;
        if f.format > FORMAT {
            return Err(Refused::NewerFormat {
                found: f.format,
                known: FORMAT,
                by: printable(f.rackseed.as_deref().unwrap_or("?")),
            });
        }
        if f.format == 0 {
            return Err(Refused::Manifest("format 0 does not exist".into()));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(bad)?;
        let text_ok =
            |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic());
        if !text_ok(&m.rackseed) {
            return Err(Refused::Manifest("`rackseed` is not a version".into()));
        }
        if !text_ok(&m.created) {
            return Err(Refused::Manifest("`created` is not a time".into()));
        }
        if m.inventory != InventoryKind::Sqlite.as_str() {
            return Err(Refused::Inventory(printable(&m.inventory)));
        }
        if m.schema == 0 {
            return Err(Refused::Manifest(
                "schema version 0: an empty inventory".into(),
            ));
        }
        if m.files.len() > MAX_FILES {
            return Err(Refused::Manifest(format!(
                "{} files, more than {MAX_FILES}",
                m.files.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &m.files {
            let path_err = |why: &str| Refused::Path {
                path: printable(&f.path),
                why: why.into(),
            };
            place(&f.path).map_err(|why| path_err(&why))?;
            if !is_sha256_hex(&f.sha256) {
                return Err(path_err("its sha256 is not 64 lowercase hex digits"));
            }
            if f.size > archive::MAX_SIZE {
                return Err(path_err("its size is more than an archive entry holds"));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(path_err("it is listed twice"));
            }
        }
        if !seen.contains(INVENTORY) {
            return Err(Refused::Manifest(format!("it lists no `{INVENTORY}`")));
        }
        Ok(m)
    }
}

/// `s` for a message: control characters escaped, at most 80 characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

/// Unix milliseconds as RFC 3339 UTC (`2026-12-01T10:00:00.123Z`).
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// What a restore does to the inventory's schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaStep {
    /// The backup's schema is this rackseed's.
    Same,
    /// An older schema: the normal migrations bring it to `to` when rackseed starts.
    Migrate { from: u32, to: u32 },
}

/// Judges a backup's schema version against the one this rackseed migrates to
/// (`known`): older or equal is restorable, newer is refused (the newer rackseed's
/// tables would not be understood, and migrations only go forward).
pub fn schema_step(m: &Manifest, known: u32) -> Result<SchemaStep, Refused> {
    match m.schema.cmp(&known) {
        std::cmp::Ordering::Equal => Ok(SchemaStep::Same),
        std::cmp::Ordering::Less => Ok(SchemaStep::Migrate {
            from: m.schema,
            to: known,
        }),
        std::cmp::Ordering::Greater => Err(Refused::NewerSchema {
            found: m.schema,
            known,
            by: m.rackseed.clone(),
            this: env!("CARGO_PKG_VERSION").to_string(),
        }),
    }
}

/// The restored inventory's own schema version must be the one its manifest states.
pub fn check_schema(m: &Manifest, found: u32) -> Result<(), Refused> {
    if found == m.schema {
        Ok(())
    } else {
        Err(Refused::SchemaMismatch {
            found,
            expected: m.schema,
        })
    }
}

/// Walks an archive's entries against its manifest: each regular file must be the
/// next one the manifest lists, with its size; directory entries (GNU tar writes them
/// when an archive is re-packed) are passed over; nothing else is accepted.
pub struct Expect<'m> {
    manifest: &'m Manifest,
    next: usize,
    entry: usize,
}

impl<'m> Expect<'m> {
    pub fn new(manifest: &'m Manifest) -> Expect<'m> {
        Expect {
            manifest,
            next: 0,
            // The manifest was entry 1.
            entry: 1,
        }
    }

    /// The manifest's entry for the archive entry `h`; `Ok(None)` for a directory to
    /// pass over.
    pub fn entry(&mut self, h: &archive::Header) -> Result<Option<&'m FileEntry>, Refused> {
        self.entry += 1;
        match h.kind {
            archive::EntryType::File => {}
            archive::EntryType::Directory => return Ok(None),
            other => {
                return Err(Refused::EntryType {
                    name: printable(&h.name),
                    kind: archive::type_name(other),
                });
            }
        }
        let Some(want) = self.manifest.files.get(self.next) else {
            return Err(Refused::Unlisted(printable(&h.name)));
        };
        if want.path != h.name {
            return Err(if self.manifest.files.iter().any(|f| f.path == h.name) {
                Refused::Unexpected {
                    found: printable(&h.name),
                    expected: want.path.clone(),
                }
            } else {
                Refused::Unlisted(printable(&h.name))
            });
        }
        if want.size != h.size {
            return Err(Refused::Size {
                path: want.path.clone(),
                found: h.size,
                expected: want.size,
            });
        }
        self.next += 1;
        Ok(Some(want))
    }

    /// The archive ended: every listed file must have been seen.
    pub fn finish(&self) -> Result<(), Refused> {
        match self.manifest.files.get(self.next) {
            Some(f) => Err(Refused::Truncated(f.path.clone())),
            None => Ok(()),
        }
    }

    /// The number of the entry last given to [`Expect::entry`] (1 is the manifest).
    pub fn entry_number(&self) -> usize {
        self.entry
    }
}

/// A file's contents as read from the archive must hash to what its manifest says.
pub fn check_digest(f: &FileEntry, sha256: &str) -> Result<(), Refused> {
    if f.sha256 == sha256 {
        Ok(())
    } else {
        Err(Refused::Checksum {
            path: f.path.clone(),
            found: sha256.to_string(),
            expected: f.sha256.clone(),
        })
    }
}

/// The files of a target that a restore of `m` would replace and that count as
/// rackseed state (`exists` says whether a path below a root is there): every listed
/// file but image contents (named by their hash, an existing one is the same file).
pub fn occupied(m: &Manifest, exists: impl Fn(Root, &str) -> bool) -> Vec<String> {
    m.files
        .iter()
        .filter_map(|f| place(&f.path).ok())
        .filter(|(p, kind)| *kind != Kind::ImageFile && exists(p.root, &p.rel))
        .map(|(p, _)| p.archive_path())
        .collect()
}

/// The CA directory is restored whole: its files (names in `present`) that the
/// backup does not carry are removed, so that no certificate of another CA stays
/// (the server certificate is reissued from the restored CA when missing).
pub fn stale_ca_files(m: &Manifest, present: &[String]) -> Vec<String> {
    present
        .iter()
        .filter(|name| carried(Root::Data, &format!("ca/{name}")).is_some())
        .filter(|name| {
            let path = format!("data/ca/{name}");
            !m.files.iter().any(|f| f.path == path)
        })
        .cloned()
        .collect()
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Checks a whole archive held in memory, as a restore checks one it streams: the
/// manifest first, then every file against it. Returns the manifest. (The fuzz target
/// and the tests use it; `backup::store` streams the same steps from a file.)
pub fn verify_archive(bytes: &[u8]) -> Result<Manifest, Refused> {
    let block = |at: usize, entry: usize| -> Result<Option<archive::Header>, Refused> {
        let b: &[u8; archive::BLOCK] = bytes
            .get(at..at + archive::BLOCK)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Refused::Header {
                entry,
                why: "the archive ends inside a header".into(),
            })?;
        archive::decode_header(b).map_err(|e| Refused::Header {
            entry,
            why: e.to_string(),
        })
    };
    let body = |at: usize, size: u64, name: &str| -> Result<(&[u8], usize), Refused> {
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| at.checked_add(s))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| Refused::Truncated(name.to_string()))?;
        Ok((&bytes[at..end], end + archive::padding(size)))
    };
    let first = block(0, 1)?.ok_or_else(|| Refused::NoManifest(String::new()))?;
    if first.name != MANIFEST || first.kind != archive::EntryType::File {
        return Err(Refused::NoManifest(printable(&first.name)));
    }
    if first.size > MAX_MANIFEST {
        return Err(Refused::ManifestTooLarge);
    }
    let (text, mut at) = body(archive::BLOCK, first.size, MANIFEST)?;
    let m = Manifest::parse(text)?;
    let mut expect = Expect::new(&m);
    while let Some(h) = block(at, expect.entry_number() + 1)? {
        at += archive::BLOCK;
        let want = expect.entry(&h)?;
        let (data, next) = body(at, h.size, &h.name)?;
        if let Some(f) = want {
            check_digest(f, &sha256_hex(data))?;
        }
        at = next;
    }
    expect.finish()?;
    Ok(m)
}

/// Writes an archive of `files` (archive path, contents) in memory, manifest first,
/// as `backup::store` writes one to a file (tests and the fuzz corpus).
pub fn archive_bytes(schema: u32, created_ms: i64, files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries = files
        .iter()
        .map(|(p, d)| FileEntry {
            path: p.to_string(),
            size: d.len() as u64,
            sha256: sha256_hex(d),
        })
        .collect();
    let m = Manifest::new(schema, created_ms, entries);
    let mut out = Vec::new();
    let mtime = u64::try_from(created_ms / 1000).unwrap_or(0);
    let mut put = |name: &str, data: &[u8], mode: u32| {
        if let Ok(h) = archive::encode_header(name, data.len() as u64, mode, mtime) {
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.extend(std::iter::repeat_n(
                0u8,
                archive::padding(data.len() as u64),
            ));
        }
    };
    put(MANIFEST, &m.render(), 0o600);
    for (p, d) in files {
        let mode = place(p).map(|(_, k)| k.mode()).unwrap_or(0o600);
        put(p, d, mode);
    }
    out.extend_from_slice(&[0u8; 2 * archive::BLOCK]);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn sample() -> Vec<u8> {
        archive_bytes(
            7,
            1_790_000_000_000,
            &[
                (INVENTORY, b"SQLite format 3\0 pretend"),
                ("data/admin.token", b"0123abcd\n"),
                ("data/ca/ca.key", b"-----BEGIN PRIVATE KEY-----\nx\n"),
                ("data/ca/ca.crt", b"-----BEGIN CERTIFICATE-----\ny\n"),
                ("images/images/bookworm.json", b"{}"),
                (&format!("images/blobs/sha256/{SHA}"), b""),
            ],
        )
    }

    #[test]
    fn carried_files_and_everything_else() {
        for (root, rel, kind) in [
            (Root::Data, "inventory.db", Some(Kind::Inventory)),
            (Root::Data, "admin.token", Some(Kind::Secret)),
            (Root::Data, "bmc.key", Some(Kind::Secret)),
            (Root::Data, "ca/ca.key", Some(Kind::Secret)),
            (Root::Data, "ca/server-192.0.2.1.key", Some(Kind::Secret)),
            (Root::Data, "ca/ca.crt", Some(Kind::Certificate)),
            (
                Root::Images,
                "images/bookworm-amd64@0123456789ab.json",
                Some(Kind::ImageIndex),
            ),
            (
                Root::Images,
                &format!("blobs/sha256/{SHA}"),
                Some(Kind::ImageFile),
            ),
            (
                Root::Images,
                "drivers/6.1.0-28-amd64/index.json",
                Some(Kind::ImageIndex),
            ),
            (
                Root::Images,
                "drivers/6.1.0-28-amd64/sata-modules-6.1.0-28-amd64-di_6.1.119-1_amd64.udeb",
                Some(Kind::ImageFile),
            ),
            // Never carried.
            (Root::Data, "leases.journal", None),
            (Root::Data, "inventory.db-wal", None),
            (Root::Data, "inventory.db-shm", None),
            (Root::Data, ".admin.token.tmp-12", None),
            (Root::Data, "image-downloads/linux.part", None),
            (Root::Data, "ca/.ca.key.tmp-3", None),
            (Root::Data, "ca/../admin.token", None),
            (Root::Data, "ca/x/ca.key", None),
            (Root::Images, ".lock", None),
            (Root::Images, "tmp/linux.123", None),
            (Root::Images, "blobs/sha256/ABC", None),
            (Root::Images, "drivers/k/x.udeb.part", None),
            (Root::Images, "drivers/../x", None),
            (Root::Images, "images/../../etc/passwd.json", None),
            (Root::Data, "/etc/passwd", None),
            (Root::Data, "", None),
        ] {
            assert_eq!(carried(root, rel), kind, "{root:?} {rel}");
        }
        assert_eq!(Kind::Secret.mode(), 0o600);
        assert_eq!(Kind::Inventory.mode(), 0o600);
        assert_eq!(Kind::Certificate.mode(), 0o644);
        let (p, k) = place("data/ca/ca.key").unwrap();
        assert_eq!(
            (p.root, p.rel.as_str(), k),
            (Root::Data, "ca/ca.key", Kind::Secret)
        );
        assert_eq!(p.archive_path(), "data/ca/ca.key");
        assert!(place("etc/passwd").is_err());
        assert!(place("data").is_err());
    }

    #[test]
    fn a_written_archive_verifies_and_its_manifest_round_trips() {
        let bytes = sample();
        let m = verify_archive(&bytes).unwrap();
        assert_eq!(m.format, FORMAT);
        assert_eq!(m.schema, 7);
        assert_eq!(m.inventory, "sqlite");
        assert_eq!(m.rackseed, env!("CARGO_PKG_VERSION"));
        assert_eq!(m.created, "2026-09-21T14:13:20Z");
        assert_eq!(m.files.len(), 6);
        assert_eq!(m.files[1].sha256, sha256_hex(b"0123abcd\n"));
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
    }

    /// Every changed byte of a file's contents, and every changed size, is caught.
    #[test]
    fn a_changed_byte_anywhere_in_the_contents_is_refused() {
        let bytes = sample();
        let key = bytes.windows(11).position(|w| w == b"BEGIN PRIVA").unwrap();
        let mut t = bytes.clone();
        t[key] ^= 1;
        let e = verify_archive(&t).unwrap_err();
        assert!(
            matches!(&e, Refused::Checksum { path, .. } if path == "data/ca/ca.key"),
            "{e}"
        );
        assert!(e.to_string().contains("was changed or damaged"), "{e}");
        // Cut off: the missing entries are named.
        let e = verify_archive(&bytes[..key]).unwrap_err();
        assert!(matches!(e, Refused::Truncated(_)), "{e}");
        // Cut at an entry's end, without the end blocks: refused too.
        let n = bytes.len() - 2 * archive::BLOCK;
        assert!(verify_archive(&bytes[..n]).is_err());
    }

    #[test]
    fn a_manifest_that_lies_about_its_files_is_refused() {
        let good = sample();
        let m = verify_archive(&good).unwrap();
        // Re-pack with a manifest that differs from the files.
        let repack = |m: &Manifest| {
            let orig = verify_archive(&good).unwrap().render();
            let first = archive::BLOCK + orig.len() + archive::padding(orig.len() as u64);
            let text = m.render();
            let mut out = archive::encode_header(MANIFEST, text.len() as u64, 0o600, 0)
                .unwrap()
                .to_vec();
            out.extend_from_slice(&text);
            out.extend(std::iter::repeat_n(
                0u8,
                archive::padding(text.len() as u64),
            ));
            out.extend_from_slice(&good[first..]);
            out
        };
        assert_eq!(verify_archive(&repack(&m)).unwrap(), m);
        let mut swapped = m.clone();
        swapped.files.swap(1, 2);
        assert!(matches!(
            verify_archive(&repack(&swapped)),
            Err(Refused::Unexpected { .. })
        ));
        let mut fewer = m.clone();
        fewer.files.pop();
        assert!(matches!(
            verify_archive(&repack(&fewer)),
            Err(Refused::Unlisted(_))
        ));
        let mut more = m.clone();
        more.files.push(FileEntry {
            path: "data/bmc.key".into(),
            size: 32,
            sha256: SHA.into(),
        });
        assert!(matches!(
            verify_archive(&repack(&more)),
            Err(Refused::Truncated(p)) if p == "data/bmc.key"
        ));
        let mut sized = m.clone();
        sized.files[1].size += 1;
        assert!(matches!(
            verify_archive(&repack(&sized)),
            Err(Refused::Size { .. })
        ));
    }

    #[test]
    fn manifests_are_checked_field_by_field() {
        let m = verify_archive(&sample()).unwrap();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(&m).unwrap();
            f(&mut v);
            Manifest::parse(v.to_string().as_bytes())
        };
        let e = with(&|v| v["format"] = 2.into()).unwrap_err();
        assert!(
            matches!(
                e,
                Refused::NewerFormat {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("upgrade rackseed"), "{e}");
        // A newer format may add fields: still refused by its format, not by the field.
        let e = with(&|v| {
            v["format"] = 3.into();
            v["signature"] = "x".into();
        })
        .unwrap_err();
        assert!(matches!(e, Refused::NewerFormat { found: 3, .. }), "{e}");
        assert!(matches!(
            with(&|v| v["extra"] = 1.into()),
            Err(Refused::Manifest(_))
        ));
        assert!(matches!(
            with(&|v| v["inventory"] = "postgresql".into()),
            Err(Refused::Inventory(k)) if k == "postgresql"
        ));
        assert!(matches!(
            with(&|v| v["schema"] = 0.into()),
            Err(Refused::Manifest(_))
        ));
        assert!(matches!(
            with(&|v| v["rackseed"] = "a b".into()),
            Err(Refused::Manifest(_))
        ));
        for (path, why) in [
            ("../etc/passwd", "not under"),
            ("data/../../etc/passwd", "not a file"),
            ("data/leases.journal", "not a file"),
            ("images/blobs/sha256/xyz", "not a file"),
        ] {
            let e = with(&|v| v["files"][1]["path"] = path.into()).unwrap_err();
            assert!(e.to_string().contains(why), "{path}: {e}");
        }
        let e = with(&|v| v["files"][1]["sha256"] = "ABC".into()).unwrap_err();
        assert!(e.to_string().contains("64 lowercase hex"), "{e}");
        let e = with(&|v| v["files"][1]["path"] = INVENTORY.into()).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let e = with(&|v| {
            v["files"] = serde_json::json!([{"path": "data/admin.token", "size": 0, "sha256": SHA}])
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("lists no `data/inventory.db`"),
            "{e}"
        );
        assert!(matches!(
            Manifest::parse(b"not json"),
            Err(Refused::Manifest(_))
        ));
    }

    #[test]
    fn schema_versions_older_or_equal_restore_newer_are_refused() {
        let mut m = verify_archive(&sample()).unwrap();
        assert_eq!(schema_step(&m, 7), Ok(SchemaStep::Same));
        m.schema = 5;
        assert_eq!(
            schema_step(&m, 7),
            Ok(SchemaStep::Migrate { from: 5, to: 7 })
        );
        m.schema = 9;
        m.rackseed = "0.4.0".into();
        let e = schema_step(&m, 7).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the backup's inventory has schema version 9, newer than this rackseed's (7); it was written by rackseed 0.4.0 and this is rackseed {}: upgrade rackseed to 0.4.0 or later, then restore",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(check_schema(&m, 9).is_ok());
        assert!(matches!(
            check_schema(&m, 7),
            Err(Refused::SchemaMismatch {
                found: 7,
                expected: 9
            })
        ));
    }

    #[test]
    fn foreign_entries_and_archives_are_refused() {
        let bytes = sample();
        // Another first entry.
        let mut t = archive::encode_header("etc/passwd", 0, 0o644, 0)
            .unwrap()
            .to_vec();
        t.extend_from_slice(&bytes[archive::BLOCK..]);
        assert!(matches!(verify_archive(&t), Err(Refused::NoManifest(n)) if n == "etc/passwd"));
        // A symbolic link after the manifest.
        let m = verify_archive(&bytes).unwrap().render();
        let first = archive::BLOCK + m.len() + archive::padding(m.len() as u64);
        let mut link = archive::encode_header("data/admin.token", 0, 0o644, 0).unwrap();
        link[156] = b'2';
        // Recompute the checksum for the changed type flag.
        link[148..156].copy_from_slice(b"        ");
        let sum: u64 = link.iter().map(|&b| u64::from(b)).sum();
        link[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut t = bytes[..first].to_vec();
        t.extend_from_slice(&link);
        t.extend_from_slice(&[0u8; 1024]);
        let e = verify_archive(&t).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`data/admin.token` is a symbolic link entry; a rackseed backup holds regular files only"
        );
        assert!(matches!(
            verify_archive(b"hello"),
            Err(Refused::Header { .. })
        ));
        assert!(matches!(
            verify_archive(&[0u8; 1024]),
            Err(Refused::NoManifest(_))
        ));
    }

    #[test]
    fn what_counts_as_existing_state_and_stale_certificates() {
        let m = verify_archive(&sample()).unwrap();
        assert!(occupied(&m, |_, _| false).is_empty());
        let all = occupied(&m, |_, _| true);
        assert_eq!(
            all,
            [
                "data/inventory.db",
                "data/admin.token",
                "data/ca/ca.key",
                "data/ca/ca.crt",
                "images/images/bookworm.json"
            ],
            "image contents are the same file when present"
        );
        let present: Vec<String> = [
            "ca.key",
            "ca.crt",
            "server-192.0.2.9.crt",
            "server-192.0.2.9.key",
            ".x.tmp-1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            stale_ca_files(&m, &present),
            ["server-192.0.2.9.crt", "server-192.0.2.9.key"]
        );
    }

    #[test]
    fn only_a_sqlite_inventory_is_backed_up() {
        assert_eq!(inventory_kind_for(None), Ok(InventoryKind::Sqlite));
        assert_eq!(
            inventory_kind_for(Some("sqlite:///var/lib/rackseed/inventory.db")),
            Ok(InventoryKind::Sqlite)
        );
        let e = inventory_kind_for(Some("postgres://rackseed@db/rackseed")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "backing up a PostgreSQL inventory is not built yet (it will be a pg_dump archive); this rackseed backs up its embedded SQLite inventory only"
        );
        assert!(inventory_kind_for(Some("mysql://x")).is_err());
    }
}
