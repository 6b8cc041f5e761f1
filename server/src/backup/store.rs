//! Backups on disk. The backup: a consistent online snapshot of the inventory (SQLite's
//! `VACUUM INTO`, a read transaction on the live database, never a file copy), the
//! lease journal's writes replayed into the copy, then one archive written private
//! (mode 0600: it holds the CA key) as a temporary file renamed over the target. The
//! restore: the whole archive checked before anything is written, refused while a
//! rackseed holds the data directory (the lease journal's lock) or when state is
//! there without `--force`, each file written beside its target and renamed into
//! place, the old lease journal emptied so that its writes are not replayed over the
//! restored inventory. An older inventory is left at its schema: the normal
//! migrations run when rackseed starts.
//!
//! Decides nothing itself: which files are carried, whether an archive is
//! acceptable and what counts as state are `backup`'s.

use super::{FileEntry, INVENTORY, MANIFEST, Manifest, Placed, Refused, Root, SchemaStep};
use super::{archive, carried, place};
use crate::dhcp::store::{self as journal, JournalError};
use crate::inventory::SCHEMA_VERSION;
use rusqlite::{Connection, OpenFlags};
use sha2::Digest;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A failed backup or restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot {doing} `{path}`")]
    Io {
        doing: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {doing} `{path}`")]
    Sqlite {
        doing: &'static str,
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "there is no inventory at `{0}`: is `server.data_dir` (or --data-dir) the data directory rackseed serves from?"
    )]
    NoInventory(String),
    #[error(
        "the inventory `{path}` has schema version {found}, newer than this rackseed's ({known}): back it up with the rackseed that serves it"
    )]
    TooNewToBackUp {
        path: String,
        found: u32,
        known: u32,
    },
    #[error("cannot read the lease journal")]
    Journal(#[source] JournalError),
    #[error(
        "the lease journal in `{0}` switched halves during each of {SNAPSHOT_TRIES} snapshots (a very busy DHCP server, or one that restarted); run the backup again"
    )]
    JournalMoving(String),
    #[error("cannot replay the lease journal into the snapshot `{0}`")]
    Replay(String, #[source] crate::inventory::InventoryError),
    #[error("cannot back up the image store")]
    Images(#[source] crate::images::ImageError),
    #[error("`{0}` changed while it was read twice; run the command again")]
    Changed(String),
    #[error("backup `{path}` refused; nothing was restored")]
    Refused {
        path: String,
        #[source]
        source: Refused,
    },
    #[error(
        "a rackseed is running on data directory `{0}` (it holds the lease journal's lock); nothing was restored: stop it (`systemctl stop rackseed`) first"
    )]
    Running(String),
    #[error(
        "data directory `{dir}` already holds rackseed state ({files}); nothing was restored: a restore replaces that state, so pass --force to overwrite it, or restore into an empty data directory"
    )]
    Occupied { dir: String, files: String },
    #[error(
        "the inventory in backup `{path}` fails SQLite's integrity check ({detail}); nothing was restored"
    )]
    Corrupt { path: String, detail: String },
}

type Result<T> = std::result::Result<T, BackupError>;

fn io(doing: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.display().to_string();
    move |source| BackupError::Io {
        doing,
        path,
        source,
    }
}

fn sql(doing: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError {
    let path = path.display().to_string();
    move |source| BackupError::Sqlite {
        doing,
        path,
        source,
    }
}

/// Snapshots tried before the backup gives up on a journal that keeps switching.
pub const SNAPSHOT_TRIES: usize = 5;

/// Where the state lives: the data directory and the image store.
#[derive(Clone, Debug)]
pub struct Locations {
    pub data_dir: PathBuf,
    pub image_store: PathBuf,
}

impl Locations {
    /// The locations a config names (`server.data_dir`, `images.store`).
    pub fn of(config: &crate::config::Config) -> Locations {
        Locations {
            data_dir: config.server.data_dir.clone(),
            image_store: config.images.store.clone(),
        }
    }

    fn root(&self, root: Root) -> &Path {
        match root {
            Root::Data => &self.data_dir,
            Root::Images => &self.image_store,
        }
    }

    fn path(&self, p: &Placed) -> PathBuf {
        self.root(p.root).join(&p.rel)
    }
}

/// A file removed when dropped (unless kept).
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hash: sha2::Sha256::new(),
            count: 0,
        }
    }

    fn hex(self) -> String {
        hex::encode(self.hash.finalize())
    }
}

fn hash_file(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).map_err(io("read", path))?;
    let mut h = Hashing::new(BufReader::with_capacity(1 << 16, f));
    std::io::copy(&mut h, &mut std::io::sink()).map_err(io("read", path))?;
    let n = h.count;
    Ok((h.hex(), n))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("flush the directory", dir))
}

/// What [`backup`] wrote.
#[derive(Debug)]
pub struct Written {
    pub files: usize,
    pub bytes: u64,
    pub schema: u32,
    /// Lease writes taken from the journal into the snapshot.
    pub journal_writes: usize,
    pub manifest: Manifest,
}

/// Takes an online snapshot of the state at `loc` and writes it to `out` as one
/// archive (mode 0600, complete or not there). Works while rackseed runs.
pub fn backup(loc: &Locations, out: &Path, now_ms: i64) -> Result<Written> {
    let db = loc.data_dir.join("inventory.db");
    if !db.is_file() {
        return Err(BackupError::NoInventory(db.display().to_string()));
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            io("write", out)(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file name",
            ))
        })?;
    let pid = std::process::id();
    let snap = Temp(dir.join(format!(".{name}.inventory-{pid}")));
    let (schema, journal_writes) = snapshot(&loc.data_dir, &db, &snap.0)?;

    // Every file: the snapshot, the data directory's, the image store's.
    let mut sources: Vec<(String, PathBuf)> = vec![(INVENTORY.to_string(), snap.0.clone())];
    for rel in data_files(&loc.data_dir)? {
        sources.push((format!("data/{rel}"), loc.data_dir.join(&rel)));
    }
    let _store_lock = if loc.image_store.is_dir() {
        let store =
            crate::images::store::Store::open(&loc.image_store).map_err(BackupError::Images)?;
        let lock = store.lock().map_err(BackupError::Images)?;
        for rel in image_files(&loc.image_store)? {
            sources.push((format!("images/{rel}"), loc.image_store.join(&rel)));
        }
        Some(lock)
    } else {
        None
    };

    // Hashes first: the manifest goes first in the archive.
    let mut entries = Vec::with_capacity(sources.len());
    for (path, src) in &sources {
        let (sha256, size) = hash_file(src)?;
        entries.push(FileEntry {
            path: path.clone(),
            size,
            sha256,
        });
    }
    let manifest = Manifest::new(schema, now_ms, entries);

    let tmp = Temp(dir.join(format!(".{name}.tmp-{pid}")));
    let _ = std::fs::remove_file(&tmp.0);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp.0)
        .map_err(io("create", &tmp.0))?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    let mtime = u64::try_from(now_ms / 1000).unwrap_or(0);
    let wr = io("write", &tmp.0);
    let text = manifest.render();
    let put_header = |w: &mut BufWriter<File>, name: &str, size: u64, mode: u32| {
        let h = archive::encode_header(name, size, mode, mtime).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{name}: {e}"))
        })?;
        w.write_all(&h)
    };
    let pad = |w: &mut BufWriter<File>, size: u64| {
        w.write_all(&[0u8; archive::BLOCK][..archive::padding(size)])
    };
    let result = (|| -> std::io::Result<()> {
        put_header(&mut w, MANIFEST, text.len() as u64, 0o600)?;
        w.write_all(&text)?;
        pad(&mut w, text.len() as u64)
    })();
    result.map_err(wr)?;
    let mut bytes = 0u64;
    for (entry, (_, src)) in manifest.files.iter().zip(&sources) {
        let mode = place(&entry.path).map(|(_, k)| k.mode()).unwrap_or(0o600);
        put_header(&mut w, &entry.path, entry.size, mode).map_err(io("write", &tmp.0))?;
        let f = File::open(src).map_err(io("read", src))?;
        let mut h = Hashing::new(BufReader::with_capacity(1 << 16, f).take(entry.size));
        std::io::copy(&mut h, &mut w).map_err(io("write", &tmp.0))?;
        if h.count != entry.size || h.hex() != entry.sha256 {
            return Err(BackupError::Changed(src.display().to_string()));
        }
        pad(&mut w, entry.size).map_err(io("write", &tmp.0))?;
        bytes += entry.size;
    }
    w.write_all(&[0u8; 2 * archive::BLOCK])
        .map_err(io("write", &tmp.0))?;
    let file = w
        .into_inner()
        .map_err(|e| io("write", &tmp.0)(e.into_error()))?;
    file.sync_all().map_err(io("flush", &tmp.0))?;
    drop(file);
    std::fs::rename(&tmp.0, out).map_err(io("write", out))?;
    sync_dir(&dir)?;
    Ok(Written {
        files: manifest.files.len(),
        bytes,
        schema,
        journal_writes,
        manifest,
    })
}

/// `VACUUM INTO` `to` from the live inventory `db`, between two reads of the lease
/// journal that show the same head (retried otherwise), then the journal's writes
/// stored into the copy, as rackseed's start would. Returns the schema version and
/// the number of journal writes. The copy is one self-contained file (rollback
/// journal mode, mode 0600).
fn snapshot(data_dir: &Path, db: &Path, to: &Path) -> Result<(u32, usize)> {
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql("open the inventory", db))?;
    src.busy_timeout(Duration::from_secs(10))
        .map_err(sql("open the inventory", db))?;
    let target = to.to_str().ok_or_else(|| {
        io("write", to)(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a UTF-8 path",
        ))
    })?;
    let mut writes = None;
    for _ in 0..SNAPSHOT_TRIES {
        let before = journal::read_unlocked(data_dir)
            .map_err(BackupError::Journal)?
            .map(|(h, _)| h);
        let _ = std::fs::remove_file(to);
        // Created first, empty and private: VACUUM INTO fills an empty file.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(io("create", to))?;
        src.execute("VACUUM INTO ?1", [target])
            .map_err(sql("snapshot the inventory", db))?;
        let after = journal::read_unlocked(data_dir).map_err(BackupError::Journal)?;
        if after.as_ref().map(|(h, _)| *h) == before {
            writes = Some(after.map(|(_, w)| w).unwrap_or_default());
            break;
        }
    }
    drop(src);
    let writes =
        writes.ok_or_else(|| BackupError::JournalMoving(data_dir.display().to_string()))?;
    let mut snap = Connection::open_with_flags(
        to,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql("open the snapshot", to))?;
    let schema: u32 = snap
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql("read the schema version of", to))?;
    if schema == 0 {
        return Err(BackupError::NoInventory(db.display().to_string()));
    }
    if schema > SCHEMA_VERSION {
        return Err(BackupError::TooNewToBackUp {
            path: db.display().to_string(),
            found: schema,
            known: SCHEMA_VERSION,
        });
    }
    if !writes.is_empty() {
        let mut conn = crate::inventory::Conn::Sqlite(snap);
        crate::inventory::store_leases(&mut conn, &writes)
            .map_err(|e| BackupError::Replay(to.display().to_string(), e))?;
        let crate::inventory::Conn::Sqlite(c) = conn else {
            unreachable!("a SQLite connection stays one")
        };
        snap = c;
    }
    snap.query_row("PRAGMA journal_mode = DELETE", [], |r| {
        r.get::<_, String>(0)
    })
    .map_err(sql("finish the snapshot", to))?;
    snap.close()
        .map_err(|(_, e)| sql("finish the snapshot", to)(e))?;
    Ok((schema, writes.len()))
}

/// Regular files (not links) in `dir`, by name, sorted; none when it does not exist.
fn files_in(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io("list", dir))?;
        let ft = e.file_type().map_err(io("list", dir))?;
        if ft.is_file() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Subdirectories (not links) of `dir`, sorted.
fn dirs_in(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io("list", dir))?;
        if e.file_type().map_err(io("list", dir))?.is_dir() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// The data directory's carried files besides the inventory: `admin.token`,
/// `bmc.key`, `ca/*`.
fn data_files(data_dir: &Path) -> Result<Vec<String>> {
    let mut out: Vec<String> = files_in(data_dir)?
        .into_iter()
        .filter(|n| n == "admin.token" || n == "bmc.key")
        .collect();
    out.extend(
        files_in(&data_dir.join("ca"))?
            .into_iter()
            .map(|n| format!("ca/{n}")),
    );
    Ok(out
        .into_iter()
        .filter(|rel| carried(Root::Data, rel).is_some_and(|k| k != super::Kind::Inventory))
        .collect())
}

/// The image store's carried files: its index, blobs and drivers.
fn image_files(root: &Path) -> Result<Vec<String>> {
    let mut out: Vec<String> = files_in(&root.join("images"))?
        .into_iter()
        .map(|n| format!("images/{n}"))
        .collect();
    out.extend(
        files_in(&root.join("blobs/sha256"))?
            .into_iter()
            .map(|n| format!("blobs/sha256/{n}")),
    );
    for k in dirs_in(&root.join("drivers"))? {
        out.extend(
            files_in(&root.join("drivers").join(&k))?
                .into_iter()
                .map(|n| format!("drivers/{k}/{n}")),
        );
    }
    Ok(out
        .into_iter()
        .filter(|rel| carried(Root::Images, rel).is_some())
        .collect())
}

/// Reads the archive at `path` through, checked against its manifest (a newer schema
/// refused as soon as the manifest is read): `sink` gets
/// each listed file's contents (exactly its size) and where it goes; a file whose
/// contents do not hash to the manifest's value fails the read after `sink` saw it.
/// Returns the manifest and its bytes.
fn read_archive(
    path: &Path,
    mut sink: impl FnMut(&FileEntry, &mut dyn Read) -> Result<()>,
) -> Result<(Manifest, Vec<u8>)> {
    let refused = |source| BackupError::Refused {
        path: path.display().to_string(),
        source,
    };
    let f = File::open(path).map_err(io("read", path))?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    let mut block = [0u8; archive::BLOCK];
    let mut next_header =
        |r: &mut BufReader<File>, entry: usize| -> Result<Option<archive::Header>> {
            let mut got = 0;
            while got < block.len() {
                match r.read(&mut block[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io("read", path)(e)),
                }
            }
            if got < block.len() {
                return Err(refused(Refused::Header {
                    entry,
                    why: if got == 0 && entry == 1 {
                        "the file is empty".into()
                    } else {
                        "the archive ends inside a header".into()
                    },
                }));
            }
            archive::decode_header(&block).map_err(|e| {
                refused(Refused::Header {
                    entry,
                    why: e.to_string(),
                })
            })
        };
    let skip = |r: &mut BufReader<File>, n: u64, name: &str| -> Result<()> {
        let copied =
            std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(io("read", path))?;
        if copied < n {
            return Err(refused(Refused::Truncated(name.to_string())));
        }
        Ok(())
    };
    let first =
        next_header(&mut r, 1)?.ok_or_else(|| refused(Refused::NoManifest(String::new())))?;
    if first.name != MANIFEST || first.kind != archive::EntryType::File {
        return Err(refused(Refused::NoManifest(
            first.name.escape_debug().to_string(),
        )));
    }
    if first.size > super::MAX_MANIFEST {
        return Err(refused(Refused::ManifestTooLarge));
    }
    let mut text = Vec::with_capacity(first.size as usize);
    (&mut r)
        .take(first.size)
        .read_to_end(&mut text)
        .map_err(io("read", path))?;
    if (text.len() as u64) < first.size {
        return Err(refused(Refused::Truncated(MANIFEST.into())));
    }
    skip(&mut r, archive::padding(first.size) as u64, MANIFEST)?;
    let manifest = Manifest::parse(&text).map_err(refused)?;
    // A newer schema is refused before gigabytes of images are read.
    super::schema_step(&manifest, SCHEMA_VERSION).map_err(refused)?;
    {
        let mut expect = super::Expect::new(&manifest);
        while let Some(h) = next_header(&mut r, expect.entry_number() + 1)? {
            match expect.entry(&h).map_err(refused)? {
                None => skip(&mut r, h.size, &h.name)?,
                Some(want) => {
                    let mut body = Hashing::new((&mut r).take(h.size));
                    sink(want, &mut body)?;
                    std::io::copy(&mut body, &mut std::io::sink()).map_err(io("read", path))?;
                    if body.count < h.size {
                        return Err(refused(Refused::Truncated(want.path.clone())));
                    }
                    super::check_digest(want, &body.hex()).map_err(refused)?;
                }
            }
            skip(&mut r, archive::padding(h.size) as u64, &h.name)?;
        }
        expect.finish().map_err(refused)?;
    }
    Ok((manifest, text))
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub step: SchemaStep,
    pub files: usize,
    pub bytes: u64,
    /// State that was there before and was replaced (`--force`).
    pub replaced: Vec<String>,
}

/// The owner new files and directories take: the data directory's (a restore run as
/// root for a service that runs as `rackseed` leaves files that service can open).
#[derive(Clone, Copy)]
struct Owner(Option<(u32, u32)>);

impl Owner {
    fn of(dir: &Path) -> Owner {
        Owner(std::fs::metadata(dir).ok().map(|m| (m.uid(), m.gid())))
    }

    fn adopt(self, path: &Path) {
        if let (Some((uid, gid)), Ok(m)) = (self.0, std::fs::symlink_metadata(path))
            && (m.uid() != uid || m.gid() != gid)
        {
            // Only root can give a file away; anyone else keeps their own.
            let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
        }
    }
}

/// Creates `dir` and its missing parents (mode 0750), each adopting `owner`.
fn ensure_dir(dir: &Path, owner: Owner) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        ensure_dir(parent, owner)?;
    }
    match std::fs::DirBuilder::new().mode(0o750).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io("create the directory", dir)(e)),
    }
    owner.adopt(dir);
    Ok(())
}

/// The lease journal of `data_dir`, locked; `Running` when a rackseed holds it.
fn lock_journal(path: &Path, data_dir: &Path, create: bool) -> Result<nix::fcntl::Flock<File>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io("open", path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, e)| match e {
            nix::errno::Errno::EWOULDBLOCK => BackupError::Running(data_dir.display().to_string()),
            e => io("lock", path)(std::io::Error::from(e)),
        },
    )
}

/// Files written beside their targets, removed on drop unless moved into place.
struct Staged(Vec<(PathBuf, PathBuf)>);

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.0 {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Restores the archive at `path` into `loc`. Nothing is written unless the whole
/// archive checks out, its schema is not newer than this rackseed's, no rackseed runs
/// on the data directory and (without `force`) no state is there.
pub fn restore(loc: &Locations, path: &Path, force: bool) -> Result<Restored> {
    let refused = |source| BackupError::Refused {
        path: path.display().to_string(),
        source,
    };
    // 1. The whole archive, read through and checked.
    let (manifest, text) = read_archive(path, |_, _| Ok(()))?;
    let step = super::schema_step(&manifest, SCHEMA_VERSION).map_err(refused)?;

    // 2. No rackseed on the target; no state there unless forced.
    let data_dir = &loc.data_dir;
    let journal_path = data_dir.join(journal::FILE);
    let mut lock = if journal_path.exists() {
        Some(lock_journal(&journal_path, data_dir, false)?)
    } else {
        None
    };
    let mut replaced = super::occupied(&manifest, |root, rel| loc.root(root).join(rel).exists());
    if data_dir.join("inventory.db-wal").exists() && !replaced.iter().any(|p| p == INVENTORY) {
        replaced.push(INVENTORY.to_string());
    }
    if !replaced.is_empty() && !force {
        let mut files = replaced
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if replaced.len() > 4 {
            files.push_str(&format!(" and {} more", replaced.len() - 4));
        }
        return Err(BackupError::Occupied {
            dir: data_dir.display().to_string(),
            files,
        });
    }

    // 3. The data directory, locked for the rest of the restore.
    let data_owner = Owner::of(data_dir.parent().unwrap_or(Path::new("/")));
    ensure_dir(data_dir, data_owner)?;
    let owner = Owner::of(data_dir);
    let lock = match lock.take() {
        Some(l) => l,
        None => {
            let l = lock_journal(&journal_path, data_dir, true)?;
            owner.adopt(&journal_path);
            l
        }
    };

    // 4. Every file written beside its target, checked again as it is written.
    let pid = std::process::id();
    let mut staged = Staged(Vec::new());
    let mut bytes = 0u64;
    let (again, text_again) = read_archive(path, |entry, body| {
        let (placed, kind) = place(&entry.path).map_err(|why| {
            refused(Refused::Path {
                path: entry.path.clone(),
                why,
            })
        })?;
        let target = loc.path(&placed);
        let parent = target.parent().unwrap_or(Path::new("."));
        ensure_dir(parent, owner)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{name}.restore-{pid}"));
        let _ = std::fs::remove_file(&tmp);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(kind.mode())
            .open(&tmp)
            .map_err(io("write", &tmp))?;
        staged.0.push((tmp.clone(), target));
        f.set_permissions(std::fs::Permissions::from_mode(kind.mode()))
            .map_err(io("write", &tmp))?;
        let mut w = BufWriter::with_capacity(1 << 16, f);
        bytes += std::io::copy(body, &mut w).map_err(io("write", &tmp))?;
        let f = w
            .into_inner()
            .map_err(|e| io("write", &tmp)(e.into_error()))?;
        f.sync_all().map_err(io("flush", &tmp))?;
        owner.adopt(&tmp);
        Ok(())
    })?;
    if again != manifest || text_again != text {
        return Err(BackupError::Changed(path.display().to_string()));
    }

    // 5. The inventory: its own schema version and SQLite's check.
    if let Some((tmp, _)) = staged
        .0
        .iter()
        .find(|(_, t)| *t == data_dir.join("inventory.db"))
    {
        check_inventory(tmp, &manifest, path)?;
    }

    // 6. Into place: the old journal emptied first (its writes belong to the old
    // inventory), the old inventory's write-ahead log gone, then file by file.
    lock.set_len(0).map_err(io("empty", &journal_path))?;
    lock.sync_all().map_err(io("flush", &journal_path))?;
    retire_inventory(&data_dir.join("inventory.db"));
    let mut dirs: Vec<PathBuf> = vec![data_dir.clone()];
    for (tmp, target) in std::mem::take(&mut staged.0) {
        if let Err(e) = std::fs::rename(&tmp, &target) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("write", &target)(e));
        }
        if let Some(p) = target.parent()
            && !dirs.iter().any(|d| d == p)
        {
            dirs.push(p.to_path_buf());
        }
    }
    let ca = data_dir.join("ca");
    for name in super::stale_ca_files(&manifest, &files_in(&ca)?) {
        let p = ca.join(name);
        std::fs::remove_file(&p).map_err(io("remove", &p))?;
    }
    for d in &dirs {
        sync_dir(d)?;
    }
    drop(lock);
    Ok(Restored {
        files: manifest.files.len(),
        manifest,
        step,
        bytes,
        replaced,
    })
}

/// The staged inventory must be at the schema version its manifest states and pass
/// SQLite's quick check.
fn check_inventory(db: &Path, m: &Manifest, archive_path: &Path) -> Result<()> {
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql("open the restored inventory", db))?;
    let corrupt = |e: rusqlite::Error| BackupError::Corrupt {
        path: archive_path.display().to_string(),
        detail: e.to_string(),
    };
    let version: u32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(corrupt)?;
    super::check_schema(m, version).map_err(|source| BackupError::Refused {
        path: archive_path.display().to_string(),
        source,
    })?;
    let check: String = c
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(corrupt)?;
    if check != "ok" {
        return Err(BackupError::Corrupt {
            path: archive_path.display().to_string(),
            detail: check,
        });
    }
    c.close().map_err(|(_, e)| corrupt(e))
}

/// Makes the old inventory's write-ahead log go away before a restored file replaces
/// it: checkpointed when it opens (so a crash before the rename leaves a whole old
/// inventory), then removed (a stale log must never meet the restored file).
fn retire_inventory(db: &Path) {
    if db.exists()
        && let Ok(c) = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    {
        let _ = c.busy_timeout(Duration::from_secs(2));
        let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        let _ = c.close();
    }
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::inventory::{Inventory, NewNode};
    use crate::mac::MacAddr;
    use crate::node::{LeaseRow, LeaseWrite};

    fn locations(dir: &Path) -> Locations {
        Locations {
            data_dir: dir.join("data"),
            image_store: dir.join("data/images"),
        }
    }

    fn node(n: u8) -> NewNode {
        NewNode {
            mac: Some(MacAddr([0x52, 0x54, 0, 0, 0x17, n])),
            hostname: format!("web{n}"),
            profile: "lab-single-disk".into(),
            provision: true,
            ..Default::default()
        }
    }

    fn lease(n: u8) -> LeaseWrite {
        LeaseWrite::Upsert(LeaseRow {
            ip: [192, 0, 2, 100 + n].into(),
            mac: Some(MacAddr([0x52, 0x54, 0, 0, 0x17, n])),
            state: "bound".into(),
            expires_at: 4_000_000_000_000,
            hostname: None,
        })
    }

    /// A data directory as a running server leaves it: an inventory with nodes, a CA,
    /// the admin token and BMC key, an image in the store, and the lease journal held
    /// (as by the server) with writes the inventory has not stored.
    fn served(dir: &Path) -> (Locations, crate::dhcp::store::LeaseJournal, Inventory) {
        let loc = locations(dir);
        let inv = Inventory::open(&loc.data_dir.join("inventory.db")).unwrap();
        for n in 1..=3 {
            inv.add_node(&node(n), Duration::from_secs(3600), 1000)
                .unwrap();
        }
        crate::inventory::store_leases(
            &mut crate::inventory::connect(inv.sqlite_path().unwrap()).unwrap(),
            &[lease(1)],
        )
        .unwrap();
        crate::ca::Ca::open(&loc.data_dir.join("ca")).unwrap();
        crate::state::admin_token(&loc.data_dir).unwrap();
        crate::power::vault::Vault::open(&loc.data_dir).unwrap();
        let store = crate::images::store::Store::open(&loc.image_store).unwrap();
        let blob = store.blob_path(&super::super::sha256_hex(b"kernel"));
        std::fs::write(&blob, b"kernel").unwrap();
        std::fs::write(store.root().join("images/lab.json"), b"{}").unwrap();
        std::fs::write(store.root().join("tmp/half-written"), b"x").unwrap();
        let mut j = crate::dhcp::store::LeaseJournal::open(&loc.data_dir, &inv).unwrap();
        // Journalled and acknowledged, not yet in the inventory.
        j.commit(&[lease(2), lease(3)]).unwrap();
        (loc, j, inv)
    }

    fn leases(db: &Path) -> Vec<String> {
        let c = Connection::open(db).unwrap();
        let mut st = c.prepare("SELECT ip FROM leases ORDER BY ip").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn an_online_backup_holds_the_journal_and_restores_whole_elsewhere() {
        let a = tempfile::tempdir().unwrap();
        let (loc, journal, live) = served(a.path());
        let out = a.path().join("backup.tar");
        let w = backup(&loc, &out, 1_790_000_000_000).unwrap();
        assert_eq!(w.schema, SCHEMA_VERSION);
        assert_eq!(w.journal_writes, 2);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let paths: Vec<&str> = w.manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths[0], INVENTORY);
        for want in [
            "data/admin.token",
            "data/bmc.key",
            "data/ca/ca.crt",
            "data/ca/ca.key",
            "images/images/lab.json",
        ] {
            assert!(paths.contains(&want), "{want} missing: {paths:?}");
        }
        assert!(paths.iter().any(|p| p.starts_with("images/blobs/sha256/")));
        assert!(
            !paths
                .iter()
                .any(|p| p.contains("journal") || p.contains("tmp")),
            "{paths:?}"
        );
        // Nothing left beside the archive.
        let left: Vec<_> = std::fs::read_dir(a.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // The archive is one the pure check accepts.
        assert_eq!(
            super::super::verify_archive(&std::fs::read(&out).unwrap()).unwrap(),
            w.manifest
        );
        // A running server holds the journal: its data directory is refused, even forced.
        let e = restore(&loc, &out, true).unwrap_err();
        assert!(matches!(e, BackupError::Running(_)), "{e}");
        drop((journal, live));

        let b = tempfile::tempdir().unwrap();
        let target = locations(b.path());
        let r = restore(&target, &out, false).unwrap();
        assert_eq!(r.step, SchemaStep::Same);
        assert!(r.replaced.is_empty());
        // The journal's writes are in the restored inventory, and an empty journal
        // (the server's own at start) does not replay anything over it.
        let db = target.data_dir.join("inventory.db");
        assert_eq!(leases(&db), ["192.0.2.101", "192.0.2.102", "192.0.2.103"]);
        assert_eq!(
            std::fs::metadata(target.data_dir.join("leases.journal"))
                .unwrap()
                .len(),
            0
        );
        let inv = Inventory::open(&db).unwrap();
        let nodes: Vec<_> = inv
            .list_nodes()
            .unwrap()
            .into_iter()
            .map(|n| (n.id, n.hostname))
            .collect();
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        for (f, mode) in [
            ("inventory.db", 0o600),
            ("admin.token", 0o600),
            ("bmc.key", 0o600),
            ("ca/ca.key", 0o600),
            ("ca/ca.crt", 0o644),
        ] {
            let p = target.data_dir.join(f);
            assert_eq!(std::fs::read(&p).ok().map(|_| ()), Some(()), "{f}");
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                mode,
                "{f}"
            );
            if f != "inventory.db" {
                assert_eq!(
                    std::fs::read(&p).unwrap(),
                    std::fs::read(loc.data_dir.join(f)).unwrap(),
                    "{f}"
                );
            }
        }
        crate::ca::Ca::open(&target.data_dir.join("ca")).unwrap();
        assert!(!target.image_store.join("tmp/half-written").exists());
        assert_eq!(
            std::fs::read(target.image_store.join(format!(
                "blobs/sha256/{}",
                super::super::sha256_hex(b"kernel")
            )))
            .unwrap(),
            b"kernel"
        );
        drop(inv);

        // Again into the now restored directory: refused without --force, naming the state.
        let e = restore(&target, &out, false).unwrap_err().to_string();
        assert!(
            e.contains("already holds rackseed state (data/inventory.db, data/admin.token"),
            "{e}"
        );
        assert!(e.contains("--force"), "{e}");
        // Forced: replaced, a stale server certificate of another CA removed, and the old
        // journal's writes (for the inventory being replaced) not replayed over it.
        std::fs::write(target.data_dir.join("ca/server-192.0.2.9.crt"), b"other").unwrap();
        {
            let mut old = crate::dhcp::store::LeaseJournal::open(
                &target.data_dir,
                &Inventory::open(&db).unwrap(),
            )
            .unwrap();
            old.commit(&[lease(40)]).unwrap();
        }
        let r = restore(&target, &out, true).unwrap();
        assert!(!r.replaced.is_empty());
        assert!(!target.data_dir.join("ca/server-192.0.2.9.crt").exists());
        assert!(!target.data_dir.join("inventory.db-wal").exists());
        assert_eq!(
            std::fs::metadata(target.data_dir.join("leases.journal"))
                .unwrap()
                .len(),
            0
        );
        let j = crate::dhcp::store::LeaseJournal::open(
            &target.data_dir,
            &Inventory::open(&db).unwrap(),
        )
        .unwrap();
        drop(j);
        assert_eq!(leases(&db), ["192.0.2.101", "192.0.2.102", "192.0.2.103"]);
    }

    #[test]
    fn a_tampered_archive_writes_nothing() {
        let a = tempfile::tempdir().unwrap();
        let (loc, journal, live) = served(a.path());
        drop((journal, live));
        let out = a.path().join("b.tar");
        backup(&loc, &out, 0).unwrap();
        let mut bytes = std::fs::read(&out).unwrap();
        let at = bytes.windows(11).position(|w| w == b"PRIVATE KEY").unwrap() + 20;
        bytes[at] ^= 0x20;
        let bad = a.path().join("bad.tar");
        std::fs::write(&bad, &bytes).unwrap();
        let b = tempfile::tempdir().unwrap();
        let target = locations(b.path());
        let e = restore(&target, &bad, false).unwrap_err();
        let text = crate::error_chain(&e);
        assert!(
            text.contains("the SHA-256 of `data/ca/ca.key` is"),
            "{text}"
        );
        assert!(text.contains("nothing was restored"), "{text}");
        assert!(!target.data_dir.exists(), "the restore wrote something");
        // Truncated: refused the same way.
        std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            restore(&target, &bad, false),
            Err(BackupError::Refused { .. })
        ));
        assert!(!target.data_dir.exists());
        // Not an archive at all.
        std::fs::write(&bad, b"hello").unwrap();
        assert!(matches!(
            restore(&target, &bad, false),
            Err(BackupError::Refused { .. })
        ));
        assert!(!target.data_dir.exists());
    }

    /// A backup of an older inventory restores as it is; opening it (as `serve`
    /// does at start) runs the normal migrations.
    #[test]
    fn an_older_schema_restores_and_migrates_at_start() {
        let a = tempfile::tempdir().unwrap();
        let loc = locations(a.path());
        std::fs::create_dir_all(&loc.data_dir).unwrap();
        let db = loc.data_dir.join("inventory.db");
        crate::inventory::create_at_version(&db, 4);
        Connection::open(&db)
            .unwrap()
            .execute(
                "INSERT INTO nodes (mac, hostname, state, created_at, updated_at) VALUES ('52:54:00:00:17:09', 'old1', 'ready', 1, 1)",
                [],
            )
            .unwrap();
        let out = a.path().join("old.tar");
        let w = backup(&loc, &out, 0).unwrap();
        assert_eq!(w.schema, 4);
        assert_eq!(w.journal_writes, 0);
        let b = tempfile::tempdir().unwrap();
        let target = locations(b.path());
        let r = restore(&target, &out, false).unwrap();
        assert_eq!(
            r.step,
            SchemaStep::Migrate {
                from: 4,
                to: SCHEMA_VERSION
            }
        );
        let inv = Inventory::open(&target.data_dir.join("inventory.db")).unwrap();
        let n = inv.list_nodes().unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].hostname.as_deref(), Some("old1"));
        let v: u32 = Connection::open(target.data_dir.join("inventory.db"))
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_schema_is_refused_before_anything_is_written() {
        let a = tempfile::tempdir().unwrap();
        let loc = locations(a.path());
        Inventory::open(&loc.data_dir.join("inventory.db")).unwrap();
        let out = a.path().join("new.tar");
        backup(&loc, &out, 0).unwrap();
        // What a newer rackseed writes: its schema in the manifest and the file.
        let mut bytes = std::fs::read(&out).unwrap();
        let m = super::super::verify_archive(&bytes).unwrap();
        let db = a.path().join("newer.db");
        let first = archive::BLOCK + m.render().len() + archive::padding(m.render().len() as u64);
        let body =
            &bytes[first + archive::BLOCK..first + archive::BLOCK + m.files[0].size as usize];
        std::fs::write(&db, body).unwrap();
        Connection::open(&db)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 2)
            .unwrap();
        let newer = std::fs::read(&db).unwrap();
        bytes =
            super::super::archive_bytes(SCHEMA_VERSION + 2, 0, &[(INVENTORY, newer.as_slice())]);
        std::fs::write(&out, &bytes).unwrap();
        let b = tempfile::tempdir().unwrap();
        let target = locations(b.path());
        let e = crate::error_chain(&restore(&target, &out, false).unwrap_err());
        assert!(
            e.contains(&format!(
                "schema version {}, newer than this rackseed's ({SCHEMA_VERSION})",
                SCHEMA_VERSION + 2
            )) && e.contains("upgrade rackseed"),
            "{e}"
        );
        assert!(!target.data_dir.exists());
        // The same file with a manifest that claims this rackseed's schema: caught by
        // the inventory's own version, after staging, and the staged files removed.
        std::fs::write(
            &out,
            super::super::archive_bytes(SCHEMA_VERSION, 0, &[(INVENTORY, newer.as_slice())]),
        )
        .unwrap();
        let e = crate::error_chain(&restore(&target, &out, false).unwrap_err());
        assert!(e.contains("the manifest says"), "{e}");
        assert!(!target.data_dir.join("inventory.db").exists());
        let left: Vec<_> = std::fs::read_dir(&target.data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn no_inventory_is_a_clear_error() {
        let a = tempfile::tempdir().unwrap();
        let e = backup(&locations(a.path()), &a.path().join("x.tar"), 0).unwrap_err();
        assert!(e.to_string().contains("there is no inventory at"), "{e}");
        assert!(!a.path().join("x.tar").exists());
    }
}
