//! The lease journal's format: how an ACKed lease is written down before its ACK leaves.
//!
//! The journal is one preallocated file (`leases.journal` in the data directory): a
//! header block naming the current *epoch* and which of two halves holds it, then the
//! two halves. Records are appended to the current half one group commit at a time.
//! When it is full, the records not yet in the inventory are written into the other
//! half under the next epoch, flushed, and only then the header is switched to it, so a
//! crash at any point leaves one intact half that the header (or, if the header itself
//! was torn, the newer epoch) names. A record carries its epoch, a sequence number and
//! a CRC-32 over all of it, so [`replay`] keeps exactly the records of one epoch, in
//! order, and stops at the first one that is torn, stale (an older epoch's bytes) or
//! out of sequence. Pure: bytes in, [`LeaseWrite`]s out; the file and its flushes are
//! `dhcp::store`'s.
//!
//! ```text
//! header (4096 bytes): "RSLEASE1" | epoch u64 | half u8 | crc32 u32 (of the 17 before)
//! record:              crc32 u32 | len u16 | epoch u64 | seq u64 | op u8 | ip [4]
//!                      op 1 (upsert): state len u8, state | mac flag u8, mac [6]
//!                                     | expires_at i64 | hostname len u16, hostname
//!                      op 2 (delete): nothing more
//! ```
//! Integers are little-endian; `len` is the whole record's length and the CRC covers
//! every byte after itself.

use crate::mac::MacAddr;
use crate::node::{LeaseRow, LeaseWrite};
use std::net::Ipv4Addr;

/// Bytes before the first record.
pub const HEADER_LEN: usize = 4096;
const MAGIC: &[u8; 8] = b"RSLEASE1";
/// The fixed part of a record: crc, len, epoch, seq, op, ip.
const FIXED: usize = 4 + 2 + 8 + 8 + 1 + 4;
/// The longest record (`len` is a u16).
pub const MAX_RECORD: usize = u16::MAX as usize;
const UPSERT: u8 = 1;
const DELETE: u8 = 2;

/// Where the journal's current records are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub epoch: u64,
    /// 0 or 1: the half holding the epoch's records.
    pub half: u8,
}

/// The header block naming `head`.
pub fn header(head: Head) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&head.epoch.to_le_bytes());
    h[16] = head.half & 1;
    let crc = crc32fast::hash(&h[..17]);
    h[17..21].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a header block names; `None` when it is not an intact journal header.
pub fn read_header(bytes: &[u8]) -> Option<Head> {
    if bytes.len() < 21 || &bytes[..8] != MAGIC || bytes[16] > 1 {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[17..21].try_into().ok()?);
    (crc32fast::hash(&bytes[..17]) == crc).then(|| Head {
        epoch: u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default()),
        half: bytes[16],
    })
}

/// The epoch of the record at the start of `half` when it is an intact first record
/// (for a journal whose header was torn while being switched).
pub fn first_epoch(half: &[u8]) -> Option<u64> {
    let epoch = u64::from_le_bytes(half.get(6..14)?.try_into().ok()?);
    record(epoch, 1, half).map(|_| epoch)
}

/// Which half to replay: the header's, else (no intact header) the half whose first
/// record has the newer epoch, else none (a fresh or empty journal).
pub fn current(header: &[u8], halves: [&[u8]; 2]) -> Option<Head> {
    if let Some(h) = read_header(header) {
        return Some(h);
    }
    let epochs = halves.map(first_epoch);
    match epochs {
        [Some(a), Some(b)] if b > a => Some(Head { epoch: b, half: 1 }),
        [Some(a), _] => Some(Head { epoch: a, half: 0 }),
        [None, Some(b)] => Some(Head { epoch: b, half: 1 }),
        [None, None] => None,
    }
}

/// Why a lease write cannot be journalled.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("lease state `{0}` is longer than 255 bytes")]
    State(String),
    #[error("the lease record for {0} would be longer than {MAX_RECORD} bytes (its hostname)")]
    TooLong(Ipv4Addr),
}

/// Appends the record of `write`, number `seq` of `epoch`, to `out`.
pub fn encode(
    epoch: u64,
    seq: u64,
    write: &LeaseWrite,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    match write {
        LeaseWrite::Delete(ip) => {
            out.push(DELETE);
            out.extend_from_slice(&ip.octets());
        }
        LeaseWrite::Upsert(row) => {
            out.push(UPSERT);
            out.extend_from_slice(&row.ip.octets());
            let Ok(n) = u8::try_from(row.state.len()) else {
                out.truncate(start);
                return Err(EncodeError::State(row.state.clone()));
            };
            out.push(n);
            out.extend_from_slice(row.state.as_bytes());
            match row.mac {
                Some(m) => {
                    out.push(1);
                    out.extend_from_slice(&m.0);
                }
                None => out.extend_from_slice(&[0; 7]),
            }
            out.extend_from_slice(&row.expires_at.to_le_bytes());
            let host = row.hostname.as_deref().unwrap_or("").as_bytes();
            let flag_len = match &row.hostname {
                // Length + 1, so that an empty hostname and no hostname differ.
                Some(_) => host.len() + 1,
                None => 0,
            };
            let Ok(n) = u16::try_from(flag_len) else {
                out.truncate(start);
                return Err(EncodeError::TooLong(row.ip));
            };
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(host);
        }
    }
    let len = out.len() - start;
    let Ok(len16) = u16::try_from(len) else {
        out.truncate(start);
        let ip = match write {
            LeaseWrite::Delete(ip) => *ip,
            LeaseWrite::Upsert(r) => r.ip,
        };
        return Err(EncodeError::TooLong(ip));
    };
    out[start + 4..start + 6].copy_from_slice(&len16.to_le_bytes());
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What a journal's records say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The lease writes since the last reset, in the order they were made.
    pub writes: Vec<LeaseWrite>,
    /// Bytes of records read (where the next record would go).
    pub len: usize,
}

/// The records of `epoch` at the start of `body` (the file after its header), in order
/// and numbered from 1, up to the first that is not one.
pub fn replay(epoch: u64, body: &[u8]) -> Replayed {
    let mut out = Replayed::default();
    let mut next_seq = 1u64;
    while let Some((w, len)) = record(epoch, next_seq, &body[out.len..]) {
        out.writes.push(w);
        out.len += len;
        next_seq += 1;
    }
    out
}

/// The record at the start of `b` when it is intact and is number `seq` of `epoch`.
fn record(epoch: u64, seq: u64, b: &[u8]) -> Option<(LeaseWrite, usize)> {
    if b.len() < FIXED {
        return None;
    }
    let crc = u32::from_le_bytes(b[0..4].try_into().ok()?);
    let len = usize::from(u16::from_le_bytes(b[4..6].try_into().ok()?));
    if len < FIXED || len > b.len() || crc32fast::hash(&b[4..len]) != crc {
        return None;
    }
    let r = &b[..len];
    if u64::from_le_bytes(r[6..14].try_into().ok()?) != epoch
        || u64::from_le_bytes(r[14..22].try_into().ok()?) != seq
    {
        return None;
    }
    let ip = Ipv4Addr::new(r[23], r[24], r[25], r[26]);
    let mut rest = Reader(&r[FIXED..]);
    let w = match r[22] {
        DELETE => LeaseWrite::Delete(ip),
        UPSERT => {
            let n = usize::from(rest.take(1)?[0]);
            let state = std::str::from_utf8(rest.take(n)?).ok()?.to_string();
            let flag = rest.take(7)?;
            let mac = match flag[0] {
                0 if flag[1..].iter().all(|b| *b == 0) => None,
                1 => Some(MacAddr(flag[1..7].try_into().ok()?)),
                _ => return None,
            };
            let expires_at = i64::from_le_bytes(rest.take(8)?.try_into().ok()?);
            let n = usize::from(u16::from_le_bytes(rest.take(2)?.try_into().ok()?));
            let hostname = match n {
                0 => None,
                n => Some(std::str::from_utf8(rest.take(n - 1)?).ok()?.to_string()),
            };
            LeaseWrite::Upsert(LeaseRow {
                ip,
                mac,
                state,
                expires_at,
                hostname,
            })
        }
        _ => return None,
    };
    rest.0.is_empty().then_some((w, len))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(last: u8, host: Option<&str>) -> LeaseWrite {
        LeaseWrite::Upsert(LeaseRow {
            ip: Ipv4Addr::new(192, 0, 2, last),
            mac: Some(MacAddr([0x52, 0x54, 0, 0, 0, last])),
            state: "bound".into(),
            expires_at: 1_700_000_000_000 + i64::from(last),
            hostname: host.map(str::to_string),
        })
    }

    fn journal(epoch: u64, writes: &[LeaseWrite]) -> Vec<u8> {
        let mut b = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            encode(epoch, i as u64 + 1, w, &mut b).unwrap();
        }
        b
    }

    #[test]
    fn records_replay_in_order_with_every_field() {
        let writes = vec![
            up(20, Some("web-1")),
            up(21, None),
            up(22, Some("")),
            LeaseWrite::Delete(Ipv4Addr::new(192, 0, 2, 20)),
            LeaseWrite::Upsert(LeaseRow {
                ip: Ipv4Addr::new(192, 0, 2, 30),
                mac: None,
                state: "declined".into(),
                expires_at: -1,
                hostname: None,
            }),
        ];
        let b = journal(7, &writes);
        let r = replay(7, &b);
        assert_eq!(r.writes, writes);
        assert_eq!(r.len, b.len());
    }

    #[test]
    fn replay_stops_at_a_torn_stale_or_out_of_sequence_record() {
        let writes = vec![up(20, Some("a")), up(21, Some("b")), up(22, Some("c"))];
        let b = journal(3, &writes);
        let first = {
            let mut one = Vec::new();
            encode(3, 1, &writes[0], &mut one).unwrap();
            one.len()
        };
        // Torn: the last record cut short, or one byte of it flipped.
        let r = replay(3, &b[..b.len() - 1]);
        assert_eq!(r.writes, writes[..2]);
        let mut flipped = b.clone();
        flipped[first + 30] ^= 1;
        assert_eq!(replay(3, &flipped).writes, writes[..1]);
        // Stale: the previous epoch's records under a new header are not replayed,
        // and a new epoch's records end where the old ones begin.
        assert!(replay(4, &b).writes.is_empty());
        let mut mixed = journal(4, &writes[..1]);
        mixed.extend_from_slice(&b[first..]);
        assert_eq!(replay(4, &mixed).writes, writes[..1]);
        // Out of sequence: record 2 where 1 is due.
        let mut b2 = Vec::new();
        encode(3, 2, &writes[0], &mut b2).unwrap();
        assert!(replay(3, &b2).writes.is_empty());
        // Zeros (a fresh file) hold nothing.
        assert_eq!(replay(1, &[0u8; 4096]), Replayed::default());
    }

    #[test]
    fn headers_round_trip_and_a_damaged_one_is_none() {
        let head = Head { epoch: 42, half: 1 };
        let h = header(head);
        assert_eq!(h.len(), HEADER_LEN);
        assert_eq!(read_header(&h), Some(head));
        let mut bad = h.clone();
        bad[9] ^= 0x80;
        assert_eq!(read_header(&bad), None);
        assert_eq!(read_header(&[0u8; HEADER_LEN]), None);
        assert_eq!(read_header(b"RSLEASE1"), None);
    }

    #[test]
    fn the_fuzz_corpus_seeds_are_journals_as_written() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/lease_journal");
        let read = |name: &str| std::fs::read(root.join(name)).unwrap();
        let f = read("current-half-0");
        let (h, body) = f.split_at(HEADER_LEN);
        let head = current(h, [&body[..512], &body[512..]]).unwrap();
        assert_eq!(head, Head { epoch: 5, half: 0 });
        let r = replay(5, &body[..512]);
        assert_eq!(r.writes.len(), 3, "{r:?}");
        assert_eq!(
            r.writes[1],
            LeaseWrite::Delete(Ipv4Addr::new(192, 0, 2, 21))
        );
        let f = read("torn-header-newer-half-1");
        let (h, body) = f.split_at(HEADER_LEN);
        assert_eq!(
            current(h, [&body[..512], &body[512..]]),
            Some(Head { epoch: 5, half: 1 })
        );
        let f = read("torn-last-record");
        assert_eq!(replay(5, &f[HEADER_LEN..HEADER_LEN + 512]).writes.len(), 2);
    }

    #[test]
    fn without_an_intact_header_the_newer_half_is_current() {
        let a = journal(5, &[up(20, None)]);
        let b = journal(6, &[up(21, None)]);
        let zeros = [0u8; 64];
        let torn = [0u8; HEADER_LEN];
        assert_eq!(current(&torn, [&a, &b]), Some(Head { epoch: 6, half: 1 }));
        assert_eq!(current(&torn, [&b, &a]), Some(Head { epoch: 6, half: 0 }));
        assert_eq!(
            current(&torn, [&zeros, &a]),
            Some(Head { epoch: 5, half: 1 })
        );
        assert_eq!(current(&torn, [&zeros, &zeros]), None);
        // An intact header wins over the records.
        let h = header(Head { epoch: 5, half: 0 });
        assert_eq!(current(&h, [&a, &b]), Some(Head { epoch: 5, half: 0 }));
    }

    #[test]
    fn an_oversized_hostname_is_refused_and_leaves_the_buffer_as_it_was() {
        let mut b = journal(1, &[up(20, None)]);
        let before = b.clone();
        let long = "h".repeat(MAX_RECORD);
        assert_eq!(
            encode(1, 2, &up(21, Some(&long)), &mut b),
            Err(EncodeError::TooLong(Ipv4Addr::new(192, 0, 2, 21)))
        );
        assert_eq!(b, before);
    }
}
