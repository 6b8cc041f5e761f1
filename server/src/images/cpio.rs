//! A streaming reader of `newc` cpio archives (the initramfs format), and a tiny writer
//! used to build fixture initrds.
//!
//! Owns only the archive format: it reads headers and names and skips file bodies
//! without keeping them. Concatenated archives (an initramfs made of several members)
//! are read one after the other. Does not decompress; the caller passes a decompressed
//! stream.

use std::io::{self, Read};

/// The largest name accepted in a header (Linux's `PATH_MAX`).
const MAX_NAME: usize = 4096;
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// One archive entry, without its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored, with any leading `./` or `/` removed.
    pub name: String,
    pub mode: u32,
    pub size: u32,
}

impl Entry {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }
}

/// Reads the entries of one or more concatenated `newc` archives.
pub struct Reader<R> {
    inner: R,
    /// Bytes consumed so far, for 4-byte alignment.
    pos: u64,
    /// Bytes of the current entry's body (plus padding) still to skip.
    pending: u64,
    done: bool,
}

/// Why an archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("not a newc cpio archive at byte {offset} (magic {magic:?})")]
    Magic { offset: u64, magic: String },
    #[error("malformed cpio header at byte {offset}: {what}")]
    Header { offset: u64, what: &'static str },
    #[error("cpio stream ended inside an entry at byte {offset}")]
    Truncated { offset: u64 },
    #[error("cpio stream cannot be read")]
    Io(#[from] io::Error),
}

impl<R: Read> Reader<R> {
    /// A reader over a decompressed stream.
    pub fn new(inner: R) -> Reader<R> {
        Reader {
            inner,
            pos: 0,
            pending: 0,
            done: false,
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), CpioError> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.pos += copied;
        if copied < n {
            return Err(CpioError::Truncated { offset: self.pos });
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes; returns how many (0 only at the end of the stream).
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, CpioError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pos += got as u64;
        Ok(got)
    }

    /// The next entry, or `None` after the last archive's trailer.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, CpioError> {
        if self.done {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.pending);
        self.skip(pending)?;
        let mut header = [0u8; HEADER_LEN];
        // Between concatenated archives there may be zero padding of any length.
        let start;
        loop {
            let mut first = [0u8; 4];
            let n = self.read_some(&mut first)?;
            if n == 0 {
                self.done = true;
                return Ok(None);
            }
            if n < 4 {
                if first[..n].iter().all(|b| *b == 0) {
                    self.done = true;
                    return Ok(None);
                }
                return Err(CpioError::Truncated { offset: self.pos });
            }
            if first != [0; 4] {
                header[..4].copy_from_slice(&first);
                start = self.pos - 4;
                break;
            }
        }
        if self.read_some(&mut header[4..])? < HEADER_LEN - 4 {
            return Err(CpioError::Truncated { offset: self.pos });
        }
        let magic = &header[..6];
        if magic != b"070701" && magic != b"070702" {
            return Err(CpioError::Magic {
                offset: start,
                magic: String::from_utf8_lossy(magic).into_owned(),
            });
        }
        let field = |i: usize| -> Result<u32, CpioError> {
            let s = &header[6 + i * 8..6 + (i + 1) * 8];
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or(CpioError::Header {
                    offset: start,
                    what: "a field is not hexadecimal",
                })
        };
        let mode = field(1)?;
        let size = field(6)?;
        let namesize = field(11)? as usize;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(CpioError::Header {
                offset: start,
                what: "name size out of range",
            });
        }
        let mut name = vec![0u8; namesize];
        if self.read_some(&mut name)? < namesize {
            return Err(CpioError::Truncated { offset: self.pos });
        }
        if name.pop() != Some(0) {
            return Err(CpioError::Header {
                offset: start,
                what: "name is not NUL-terminated",
            });
        }
        let pad = |len: u64| (4 - len % 4) % 4;
        self.skip(pad(self.pos))?;
        self.pending = u64::from(size) + pad(u64::from(size));
        let name = String::from_utf8_lossy(&name).into_owned();
        if name == TRAILER {
            // The next archive, if any, follows after padding; skip the (empty) body now.
            let pending = std::mem::take(&mut self.pending);
            self.skip(pending)?;
            return self.next_entry();
        }
        let trimmed = name.trim_start_matches("./").trim_start_matches('/');
        Ok(Some(Entry {
            name: trimmed.to_string(),
            mode,
            size,
        }))
    }
}

/// Builds a `newc` archive of `(name, mode, body)` entries with its trailer. Used to
/// make fixture initrds; rackseed never writes initrds otherwise.
pub fn newc_archive(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |ino: usize, name: &str, mode: u32, body: &[u8]| {
        let fields = [
            ino as u32,
            mode,
            0,
            0,
            1,
            0,
            body.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(body);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, mode, body)) in entries.iter().enumerate() {
        push(i + 1, name, *mode, body);
    }
    push(0, TRAILER, 0, &[]);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(data: &[u8]) -> Vec<String> {
        let mut r = Reader::new(data);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            out.push(format!("{}{}", e.name, if e.is_dir() { "/" } else { "" }));
        }
        out
    }

    #[test]
    fn reads_what_the_writer_wrote() {
        let a = newc_archive(&[
            (".", 0o040755, b""),
            ("./lib", 0o040755, b""),
            ("lib/modules/6.1.0-1-amd64", 0o040755, b""),
            ("init", 0o100755, b"#!/bin/sh\necho odd length\n"),
        ]);
        assert_eq!(
            names(&a),
            vec!["./", "lib/", "lib/modules/6.1.0-1-amd64/", "init"]
        );
    }

    #[test]
    fn reads_concatenated_archives_with_padding() {
        let mut a = newc_archive(&[("a", 0o100644, b"x")]);
        a.extend_from_slice(&[0; 512]);
        a.extend(newc_archive(&[("b", 0o100644, b"yy")]));
        assert_eq!(names(&a), vec!["a", "b"]);
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        let mut r = Reader::new(&b"070707not newc at all, an old binary-ish header...."[..]);
        assert!(matches!(r.next_entry(), Err(CpioError::Truncated { .. })));
        let junk = [b'x'; 200];
        let mut r = Reader::new(&junk[..]);
        let e = r.next_entry().unwrap_err().to_string();
        assert_eq!(e, "not a newc cpio archive at byte 0 (magic \"xxxxxx\")");
        let a = newc_archive(&[("file", 0o100644, &[7; 100])]);
        let mut r = Reader::new(&a[..150]);
        assert_eq!(r.next_entry().unwrap().unwrap().name, "file");
        assert!(matches!(r.next_entry(), Err(CpioError::Truncated { .. })));
    }
}
