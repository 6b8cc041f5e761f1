//! The archive's wire format: POSIX ustar (the `tar` of 1988), so that `tar -tvf` lists a
//! backup and `tar -xf` unpacks it. Pure: one 512-byte header block in, a typed header
//! out, and the reverse.
//!
//! rackseed writes regular files only, with names of at most 255 bytes (split between
//! the header's `prefix` and `name` fields at a `/`), sizes in 11 octal digits (below
//! 8 GiB), owner 0:0 and no user or group names. It reads what it writes and what GNU
//! or BSD tar write for such files (`ustar\0` + `00`, or GNU's `ustar  \0`); directory
//! entries are reported so that the caller can skip them; any other entry (links,
//! devices, pax or GNU long-name records) is refused by its type.

/// The size of a header and of the unit file contents are padded to.
pub const BLOCK: usize = 512;

/// The largest file size the 11 octal digits of a ustar header hold.
pub const MAX_SIZE: u64 = 0o777_7777_7777;

/// An entry's type, from the header's type flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryType {
    File,
    Directory,
    /// Anything else, by its flag byte.
    Other(u8),
}

/// One decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The full name: `prefix/name` when the prefix field is used.
    pub name: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: u64,
    pub kind: EntryType,
}

/// Why a header block cannot be read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the header checksum does not match")]
    Checksum,
    #[error("no ustar magic (not a tar archive, or an old v7 one)")]
    Magic,
    #[error("the {0} field is not an octal number")]
    Number(&'static str),
    #[error("the name is not UTF-8 or holds a control character")]
    Name,
    #[error(
        "the name `{0}` is longer than ustar holds (255 bytes, 100 after the last `/` that fits)"
    )]
    NameTooLong(String),
    #[error("{0} bytes is more than a ustar header holds")]
    TooLarge(u64),
}

fn field(block: &[u8], start: usize, len: usize) -> &[u8] {
    let f = &block[start..start + len];
    let end = f.iter().position(|&b| b == 0).unwrap_or(len);
    &f[..end]
}

fn octal(block: &[u8], start: usize, len: usize, what: &'static str) -> Result<u64, HeaderError> {
    let f = field(block, start, len);
    let digits: &[u8] = {
        let s = f
            .iter()
            .position(|&b| b != b' ')
            .map_or(&f[f.len()..], |i| &f[i..]);
        let e = s.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        &s[..e]
    };
    if digits.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return Err(HeaderError::Number(what));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(HeaderError::Number(what))?;
    }
    Ok(v)
}

fn put_octal(block: &mut [u8], start: usize, len: usize, v: u64) {
    // `len - 1` digits, zero-padded, then a NUL.
    let s = format!("{v:0width$o}", width = len - 1);
    block[start..start + len - 1].copy_from_slice(&s.as_bytes()[s.len() - (len - 1)..]);
    block[start + len - 1] = 0;
}

/// The checksum of a header block: the sum of its bytes with the checksum field
/// counted as eight spaces.
fn checksum(block: &[u8; BLOCK]) -> u64 {
    block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum()
}

/// Splits `name` into (prefix, name) fields of at most 155 and 100 bytes.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    if name.len() > 256 {
        return None;
    }
    name.match_indices('/')
        .map(|(i, _)| i)
        .filter(|&i| i <= 155 && name.len() - i - 1 <= 100 && i > 0)
        .map(|i| (&name[..i], &name[i + 1..]))
        .next()
}

/// The header block of a regular file `name` of `size` bytes.
pub fn encode_header(
    name: &str,
    size: u64,
    mode: u32,
    mtime: u64,
) -> Result<[u8; BLOCK], HeaderError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(HeaderError::Name);
    }
    let (prefix, base) = split_name(name).ok_or_else(|| HeaderError::NameTooLong(name.into()))?;
    if size > MAX_SIZE {
        return Err(HeaderError::TooLarge(size));
    }
    let mut b = [0u8; BLOCK];
    b[..base.len()].copy_from_slice(base.as_bytes());
    put_octal(&mut b, 100, 8, u64::from(mode & 0o7777));
    put_octal(&mut b, 108, 8, 0);
    put_octal(&mut b, 116, 8, 0);
    put_octal(&mut b, 124, 12, size);
    put_octal(&mut b, 136, 12, mtime.min(MAX_SIZE));
    b[156] = b'0';
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    let sum = checksum(&b);
    // Six digits, a NUL, a space (as POSIX tar writes it).
    let s = format!("{sum:06o}");
    b[148..154].copy_from_slice(&s.as_bytes()[s.len() - 6..]);
    b[154] = 0;
    b[155] = b' ';
    Ok(b)
}

/// Reads a header block: `Ok(None)` for an all-zero block (the end of the archive).
pub fn decode_header(block: &[u8; BLOCK]) -> Result<Option<Header>, HeaderError> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let stored = octal(block, 148, 8, "checksum")?;
    if stored != checksum(block) {
        return Err(HeaderError::Checksum);
    }
    let magic = &block[257..265];
    if magic != b"ustar\x0000" && magic != b"ustar  \0" {
        return Err(HeaderError::Magic);
    }
    let text = |b: &[u8]| -> Result<String, HeaderError> {
        let s = std::str::from_utf8(b).map_err(|_| HeaderError::Name)?;
        if s.chars().any(char::is_control) {
            return Err(HeaderError::Name);
        }
        Ok(s.to_string())
    };
    let base = text(field(block, 0, 100))?;
    // GNU's old format keeps other data where POSIX has the prefix.
    let prefix = if magic == b"ustar\x0000" {
        text(field(block, 345, 155))?
    } else {
        String::new()
    };
    let name = if prefix.is_empty() {
        base
    } else {
        format!("{prefix}/{base}")
    };
    if name.is_empty() {
        return Err(HeaderError::Name);
    }
    let kind = match block[156] {
        b'0' | 0 => EntryType::File,
        b'5' => EntryType::Directory,
        other => EntryType::Other(other),
    };
    Ok(Some(Header {
        name,
        size: octal(block, 124, 12, "size")?,
        mode: octal(block, 100, 8, "mode")? as u32,
        mtime: octal(block, 136, 12, "mtime")?,
        kind,
    }))
}

/// The zero bytes after `size` bytes of contents, up to the next block.
pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// What an entry type is called in messages.
pub fn type_name(kind: EntryType) -> String {
    match kind {
        EntryType::File => "regular file".into(),
        EntryType::Directory => "directory".into(),
        EntryType::Other(b'1') => "hard link".into(),
        EntryType::Other(b'2') => "symbolic link".into(),
        EntryType::Other(b'3' | b'4') => "device".into(),
        EntryType::Other(b'6') => "FIFO".into(),
        EntryType::Other(b'x' | b'g') => "pax extended header".into(),
        EntryType::Other(b'L' | b'K') => "GNU long name".into(),
        EntryType::Other(b) => format!("type `{}`", (b as char).escape_default()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_long_names_split_at_a_slash() {
        let long = format!("images/drivers/{}/{}.udeb", "6".repeat(60), "m".repeat(90));
        for (name, size) in [
            ("rackseed-backup.json", 0),
            ("data/ca/ca.key", 1234),
            (long.as_str(), MAX_SIZE),
        ] {
            let b = encode_header(name, size, 0o600, 1_700_000_000).unwrap();
            let h = decode_header(&b).unwrap().unwrap();
            assert_eq!(
                (h.name.as_str(), h.size, h.mode, h.mtime, h.kind),
                (name, size, 0o600, 1_700_000_000, EntryType::File)
            );
        }
        assert!(matches!(
            encode_header(&"x".repeat(101), 1, 0o600, 0),
            Err(HeaderError::NameTooLong(_))
        ));
        assert_eq!(
            encode_header("a", MAX_SIZE + 1, 0o600, 0),
            Err(HeaderError::TooLarge(MAX_SIZE + 1))
        );
        assert_eq!(encode_header("a\nb", 1, 0o600, 0), Err(HeaderError::Name));
    }

    #[test]
    fn a_changed_header_byte_or_a_foreign_block_is_refused() {
        let mut b = encode_header("data/admin.token", 49, 0o600, 0).unwrap();
        b[124 + 10] = b'7';
        assert_eq!(decode_header(&b), Err(HeaderError::Checksum));
        let mut b = encode_header("data/admin.token", 49, 0o600, 0).unwrap();
        b[257] = b'x';
        // The checksum still matches only if recomputed; a foreign block fails either way.
        assert!(decode_header(&b).is_err());
        assert_eq!(decode_header(&[0u8; BLOCK]), Ok(None));
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }

    /// What GNU tar writes for a short name (its default format, and `--format=ustar`)
    /// reads as the same entry.
    #[test]
    fn gnu_tar_headers_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/admin.token"), b"abc\n").unwrap();
        for format in ["gnu", "ustar"] {
            let out = std::process::Command::new("tar")
                .arg(format!("--format={format}"))
                .args(["-cf", "-", "-C"])
                .arg(dir.path())
                .args(["data", "data/admin.token"])
                .output()
                .unwrap();
            assert!(out.status.success());
            let block = |i: usize| -> [u8; BLOCK] {
                out.stdout[i * BLOCK..(i + 1) * BLOCK].try_into().unwrap()
            };
            let d = decode_header(&block(0)).unwrap().unwrap();
            assert_eq!((d.name.as_str(), d.kind), ("data/", EntryType::Directory));
            let f = decode_header(&block(1)).unwrap().unwrap();
            assert_eq!(
                (f.name.as_str(), f.size, f.kind),
                ("data/admin.token", 4, EntryType::File),
                "{format}"
            );
        }
    }
}
