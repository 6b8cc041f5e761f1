//! The lease journal on disk: every lease write is in it, flushed, before the reply that
//! depends on it leaves; the inventory (SQLite) gets the same writes a moment later,
//! off the reply path, and the journal is replayed into it at start.
//!
//! One group commit is one `pwrite` of the records of every lease write waiting at that
//! moment and one `fdatasync`. The file is preallocated and zero-filled when created,
//! so a commit overwrites blocks the file already has: the flush writes data only, no
//! file-system metadata. The format, the two halves and why a crash at any point
//! leaves a replayable journal are in `dhcp::journal`. The file is locked while
//! rackseed runs (a second instance on the same data directory is refused).

use super::journal::{self, Head};
use crate::node::LeaseWrite;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Bytes of records per half: 10,000 to 25,000 lease writes (a reset every few
/// seconds at the highest rates, each one write and two flushes).
pub const HALF: usize = 1 << 20;
/// The file name in the data directory.
pub const FILE: &str = "leases.journal";

/// What went wrong with the lease journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "cannot {what} the lease journal `{path}` (it takes 2 MiB in the data directory, written once when created; check the file system's space and health)"
    )]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the lease journal `{path}` is locked by another process: is another rackseed using data directory `{dir}`? Stop it, or give this one its own [server] data_dir"
    )]
    Locked { path: String, dir: String },
    #[error("cannot replay the lease journal `{path}` into the inventory")]
    Replay {
        path: String,
        #[source]
        source: crate::inventory::InventoryError,
    },
    #[error(
        "the lease journal `{path}` has {pending} writes the inventory has not stored for {secs} s; new leases wait (see the warnings about the DHCP inventory writer)"
    )]
    Stuck {
        path: String,
        pending: usize,
        secs: u64,
    },
}

/// The journal file, open and locked, and where the next records go.
pub struct LeaseJournal {
    file: nix::fcntl::Flock<File>,
    path: PathBuf,
    /// Bytes of records per half.
    half: usize,
    head: Head,
    /// Next record's sequence number in this epoch.
    seq: u64,
    /// Bytes of records in the current half.
    used: usize,
    /// Lease writes ever committed (since this process started).
    committed: u64,
    /// Committed writes the inventory may not have stored yet, by their number.
    unapplied: VecDeque<(u64, LeaseWrite)>,
    /// The number of the last write the inventory has stored (set by its writer).
    applied: Arc<AtomicU64>,
    buf: Vec<u8>,
    /// Resets so far.
    pub resets: u64,
}

impl LeaseJournal {
    /// Opens the journal in `dir` (creating it preallocated), stores what it holds into
    /// the inventory at `inventory` and starts a new epoch in the other half. Fails
    /// when another process holds it.
    pub fn open(
        dir: &Path,
        inventory: &crate::inventory::Inventory,
    ) -> Result<LeaseJournal, JournalError> {
        Self::open_sized(dir, inventory, HALF)
    }

    /// [`LeaseJournal::open`] with halves of `half` bytes (a journal is always reopened
    /// with the size it was created with).
    fn open_sized(
        dir: &Path,
        inventory: &crate::inventory::Inventory,
        half: usize,
    ) -> Result<LeaseJournal, JournalError> {
        let path = dir.join(FILE);
        let io = |what: &'static str| {
            let path = path.display().to_string();
            move |source| JournalError::Io { path, what, source }
        };
        let total = journal::HEADER_LEN + 2 * half;
        let fresh = !path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("open"))?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| match errno {
                nix::errno::Errno::EWOULDBLOCK => JournalError::Locked {
                    path: path.display().to_string(),
                    dir: dir.display().to_string(),
                },
                e => io("lock")(std::io::Error::from(e)),
            })?;
        let len = file.metadata().map_err(io("stat"))?.len() as usize;
        if fresh || len < total {
            // Every block written once (zeros), so commits never allocate.
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < total {
                let n = (total - at).min(zeros.len());
                file.write_all_at(&zeros[..n], at as u64)
                    .map_err(io("preallocate"))?;
                at += n;
            }
            file.sync_all().map_err(io("flush"))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("flush the directory of"))?;
        }
        let mut bytes = vec![0u8; total];
        file.read_exact_at(&mut bytes, 0).map_err(io("read"))?;
        let (h, rest) = bytes.split_at(journal::HEADER_LEN);
        let (a, b) = rest.split_at(half);
        let head = journal::current(h, [a, b]);
        let replayed = match head {
            Some(head) => journal::replay(head.epoch, if head.half == 0 { a } else { b }).writes,
            None => Vec::new(),
        };
        if !replayed.is_empty() {
            // On PostgreSQL the replay goes through the same lease claim as the DHCP
            // writer: a binding another rackseed made meanwhile is not overwritten.
            let mut conn = inventory
                .connect_own()
                .map_err(|source| JournalError::Replay {
                    path: path.display().to_string(),
                    source,
                })?;
            crate::inventory::store_leases(&mut conn, &replayed).map_err(|source| {
                JournalError::Replay {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            info!(writes = replayed.len(), path = %path.display(), "lease journal replayed into the inventory");
        }
        let head = head.unwrap_or(Head { epoch: 0, half: 1 });
        let mut j = LeaseJournal {
            file,
            path: path.clone(),
            half,
            head,
            seq: 1,
            used: 0,
            committed: 0,
            unapplied: VecDeque::new(),
            applied: Arc::new(AtomicU64::new(0)),
            buf: Vec::with_capacity(64 << 10),
            resets: 0,
        };
        // Everything replayed is in the inventory now: the next epoch starts empty.
        j.reset()?;
        j.resets = 0;
        Ok(j)
    }

    /// Where the inventory's writer reports the number of the last lease write it has
    /// stored durably.
    pub fn applied(&self) -> Arc<AtomicU64> {
        self.applied.clone()
    }

    /// Makes `writes` durable: their records in one write and one flush. Returns the
    /// number of the last one (the inventory's writer reports it back once stored).
    /// A write that cannot be encoded (an oversized hostname) is left out of the
    /// journal and logged; it still goes to the inventory.
    pub fn commit(&mut self, writes: &[LeaseWrite]) -> Result<u64, JournalError> {
        self.buf.clear();
        let mut seq = self.seq;
        for w in writes {
            match journal::encode(self.head.epoch, seq, w, &mut self.buf) {
                Ok(()) => seq += 1,
                Err(e) => warn!(error = %e, "lease write not journalled"),
            }
        }
        if self.used + self.buf.len() > self.half {
            self.reset()?;
            // Renumbered for the new epoch.
            return self.commit(writes);
        }
        let at = (journal::HEADER_LEN + usize::from(self.head.half) * self.half + self.used) as u64;
        let io = |what| {
            let path = self.path.display().to_string();
            move |source| JournalError::Io { path, what, source }
        };
        self.file.write_all_at(&self.buf, at).map_err(io("write"))?;
        self.file.sync_data().map_err(io("flush"))?;
        self.used += self.buf.len();
        self.seq = seq;
        for w in writes {
            self.committed += 1;
            self.unapplied.push_back((self.committed, w.clone()));
        }
        Ok(self.committed)
    }

    /// Drops from memory the writes the inventory has stored.
    fn forget_applied(&mut self) {
        let applied = self.applied.load(Ordering::Acquire);
        while self.unapplied.front().is_some_and(|(n, _)| *n <= applied) {
            self.unapplied.pop_front();
        }
    }

    /// Starts the next epoch in the other half, carrying the writes the inventory has
    /// not stored yet (waiting for it while they would not fit).
    fn reset(&mut self) -> Result<(), JournalError> {
        let started = Instant::now();
        loop {
            self.forget_applied();
            let mut buf = Vec::new();
            let next = self.head.epoch + 1;
            let mut seq = 1;
            for (_, w) in &self.unapplied {
                // Numbered as written: a write left out of the journal (see `commit`)
                // leaves no gap that would end the replay.
                if journal::encode(next, seq, w, &mut buf).is_ok() {
                    seq += 1;
                }
            }
            let records = buf.len();
            if records <= self.half / 2 {
                // Zeros after the records end a replay there, whatever older records
                // the half still holds (so a torn header never points back at them).
                buf.extend_from_slice(&[0u8; 64]);
                let io = |what| {
                    let path = self.path.display().to_string();
                    move |source| JournalError::Io { path, what, source }
                };
                let other = 1 - self.head.half;
                let at = (journal::HEADER_LEN + usize::from(other) * self.half) as u64;
                self.file.write_all_at(&buf, at).map_err(io("write"))?;
                self.file.sync_data().map_err(io("flush"))?;
                self.head = Head {
                    epoch: next,
                    half: other,
                };
                self.write_header().map_err(io("switch the header of"))?;
                self.seq = seq;
                self.used = records;
                self.resets += 1;
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(JournalError::Stuck {
                    path: self.path.display().to_string(),
                    pending: self.unapplied.len(),
                    secs: 30,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn write_header(&self) -> std::io::Result<()> {
        self.file.write_all_at(&journal::header(self.head), 0)?;
        self.file.sync_data()
    }
}

/// What the journal in `dir` holds, read without taking its lock (a running rackseed
/// holds it): the header's head and the writes a replay at start would store, or
/// `None` without a journal. For an online backup: read before and after the snapshot
/// of the inventory; when the head is the same both times, no switch of halves
/// happened in between, so the second read holds every write the snapshot may lack
/// (a record being written at that moment is torn and left out, as at a crash; it was
/// not acknowledged yet).
pub fn read_unlocked(dir: &Path) -> Result<Option<(Head, Vec<LeaseWrite>)>, JournalError> {
    use std::io::Read;
    let path = dir.join(FILE);
    let io = |what: &'static str| {
        let path = path.display().to_string();
        move |source| JournalError::Io { path, what, source }
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open")(e)),
    };
    let total = journal::HEADER_LEN + 2 * HALF;
    let mut bytes = Vec::with_capacity(total);
    file.take(total as u64)
        .read_to_end(&mut bytes)
        .map_err(io("read"))?;
    bytes.resize(total, 0);
    let (h, rest) = bytes.split_at(journal::HEADER_LEN);
    let (a, b) = rest.split_at(HALF);
    Ok(journal::current(h, [a, b]).map(|head| {
        let half = if head.half == 0 { a } else { b };
        (head, journal::replay(head.epoch, half).writes)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::MacAddr;
    use crate::node::LeaseRow;
    use std::net::Ipv4Addr;

    fn up(n: u32, host: &str) -> LeaseWrite {
        LeaseWrite::Upsert(LeaseRow {
            ip: Ipv4Addr::from(0xC000_0200 + (n % 200)),
            mac: Some(MacAddr([
                0x52,
                0x54,
                0,
                (n >> 16) as u8,
                (n >> 8) as u8,
                n as u8,
            ])),
            state: "bound".into(),
            expires_at: 1_700_000_000_000 + i64::from(n),
            hostname: Some(host.into()),
        })
    }

    fn inventory(dir: &Path) -> crate::inventory::Inventory {
        crate::inventory::Inventory::open(&dir.join("inventory.db")).unwrap()
    }

    #[test]
    fn committed_writes_reach_the_inventory_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        {
            let mut j = LeaseJournal::open(dir.path(), &inv).unwrap();
            j.commit(&[up(1, "a"), up(2, "b")]).unwrap();
            j.commit(&[LeaseWrite::Delete(Ipv4Addr::from(0xC000_0201))])
                .unwrap();
            // A second instance on the same directory is refused while this one runs.
            let again = LeaseJournal::open(dir.path(), &inv).err().unwrap();
            assert!(matches!(again, JournalError::Locked { .. }), "{again}");
            // Dropped without the inventory storing anything: a crash.
        }
        let _j = LeaseJournal::open(dir.path(), &inv).unwrap();
        let rows = inv.load_leases().unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].ip, Ipv4Addr::from(0xC000_0202));
        assert_eq!(rows[0].hostname.as_deref(), Some("b"));
    }

    /// The replay into a PostgreSQL inventory goes through the lease claim: a journal
    /// record for an address another rackseed bound meanwhile leaves that binding.
    #[test]
    fn a_replay_into_postgres_keeps_another_servers_binding() {
        let dir = tempfile::tempdir().unwrap();
        let place = crate::inventory::testing::Place::postgres();
        let inv = place.open();
        {
            let mut j = LeaseJournal::open(dir.path(), &inv).unwrap();
            j.commit(&[up(1, "a"), up(2, "b")]).unwrap();
        }
        // Another server binds 192.0.2.2 to another MAC, far into the future.
        let other = LeaseRow {
            ip: Ipv4Addr::from(0xC000_0202),
            mac: Some(MacAddr([2, 0, 0, 0, 0, 9])),
            state: "bound".into(),
            expires_at: i64::MAX / 2,
            hostname: None,
        };
        assert!(place.open().claim_lease(&other, 1_800_000_000_000).unwrap());
        let _j = LeaseJournal::open(dir.path(), &inv).unwrap();
        let mut rows = inv.load_leases().unwrap();
        rows.sort_by_key(|l| l.ip);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].hostname.as_deref(), Some("a"), "replayed");
        assert_eq!(rows[1], other, "the other server's binding stays");
    }

    #[test]
    fn a_full_half_switches_carrying_only_what_the_inventory_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        let host = "h".repeat(200);
        let half = 64 << 10;
        let mut j = LeaseJournal::open_sized(dir.path(), &inv, half).unwrap();
        let applied = j.applied();
        let per = {
            let mut b = Vec::new();
            journal::encode(1, 1, &up(0, &host), &mut b).unwrap();
            b.len()
        };
        let fill = half / per + 10;
        assert!(fill > 220, "{fill}");
        let mut last = 0;
        for n in 0..fill as u32 {
            last = j.commit(&[up(n, &host)]).unwrap();
            if n == 200 {
                // The inventory stored the first 200 (as its writer would report).
                applied.store(200, Ordering::Release);
            }
        }
        assert_eq!(last, fill as u64);
        assert_eq!(j.resets, 1);
        drop(j);
        // What was carried plus what came after, nothing of the first 200.
        let mut bytes = vec![0u8; journal::HEADER_LEN + 2 * half];
        File::open(dir.path().join(FILE))
            .unwrap()
            .read_exact_at(&mut bytes, 0)
            .unwrap();
        let head = journal::read_header(&bytes).unwrap();
        let start = journal::HEADER_LEN + usize::from(head.half) * half;
        let r = journal::replay(head.epoch, &bytes[start..start + half]);
        assert_eq!(r.writes.len(), fill - 200);
        assert_eq!(r.writes[0], up(200, &host));
        assert_eq!(r.writes.last(), Some(&up(fill as u32 - 1, &host)));
    }
}
