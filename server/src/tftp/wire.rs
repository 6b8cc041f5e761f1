//! TFTP packets (RFC 1350) with options (RFC 2347 blksize 2348, timeout/tsize 2349,
//! windowsize 7440): parsing what clients send, encoding what the server sends, the
//! option answer, and which blocks an ACK covers. Pure: no sockets, no files.

use std::fmt;

/// Opcodes.
const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// The block size without a `blksize` option.
pub const DEFAULT_BLKSIZE: u16 = 512;

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub write: bool,
    /// The file name as sent (lossless: invalid UTF-8 refuses the packet).
    pub name: String,
    pub options: Options,
}

/// The options a client asked for; each one only when it was well formed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub blksize: Option<u16>,
    pub timeout: Option<u8>,
    pub tsize: Option<u64>,
    pub windowsize: Option<u16>,
}

/// Why a datagram is not a request this server answers; such datagrams are dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("shorter than an opcode")]
    Short,
    #[error("opcode {0} is not a request")]
    NotRequest(u16),
    #[error("a field is not NUL-terminated")]
    Unterminated,
    #[error("a field is not UTF-8")]
    NotUtf8,
    #[error("transfer mode `{0}` (octet, netascii)")]
    Mode(String),
}

/// Reads the first NUL-terminated field of `input`.
fn field(input: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let end = input
        .iter()
        .position(|b| *b == 0)
        .ok_or(WireError::Unterminated)?;
    let s = std::str::from_utf8(&input[..end]).map_err(|_| WireError::NotUtf8)?;
    Ok((s, &input[end + 1..]))
}

/// Parses a datagram sent to the server's port: RRQ or WRQ with options. Options the
/// server does not know, and malformed or out-of-range values, are left out (the
/// client then gets the RFC 1350 default), as RFC 2347 asks.
pub fn parse_request(bytes: &[u8]) -> Result<Request, WireError> {
    let op = match bytes {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => return Err(WireError::Short),
    };
    if op != RRQ && op != WRQ {
        return Err(WireError::NotRequest(op));
    }
    let (name, rest) = field(&bytes[2..])?;
    let (mode, mut rest) = field(rest)?;
    if !mode.eq_ignore_ascii_case("octet") && !mode.eq_ignore_ascii_case("netascii") {
        return Err(WireError::Mode(mode.escape_debug().to_string()));
    }
    let mut options = Options::default();
    while !rest.is_empty() {
        let Ok((key, after)) = field(rest) else { break };
        let Ok((value, after)) = field(after) else {
            break;
        };
        rest = after;
        if key.eq_ignore_ascii_case("blksize") {
            options.blksize = value.parse().ok().filter(|v| (8..=65464).contains(v));
        } else if key.eq_ignore_ascii_case("timeout") {
            options.timeout = value.parse().ok().filter(|v| *v >= 1);
        } else if key.eq_ignore_ascii_case("tsize") {
            options.tsize = value.parse().ok();
        } else if key.eq_ignore_ascii_case("windowsize") {
            options.windowsize = value.parse().ok().filter(|v| *v >= 1);
        }
    }
    Ok(Request {
        write: op == WRQ,
        name: name.to_string(),
        options,
    })
}

/// What a client sent during a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack(u16),
    /// The client gave up (for example a PXE ROM that only wanted `tsize`).
    Error(u16, String),
    /// Anything else: ignored.
    Other,
}

pub fn parse_reply(bytes: &[u8]) -> Reply {
    let [o1, o2, a, b, rest @ ..] = bytes else {
        return Reply::Other;
    };
    match u16::from_be_bytes([*o1, *o2]) {
        ACK if rest.is_empty() => Reply::Ack(u16::from_be_bytes([*a, *b])),
        ERROR => {
            let msg = rest;
            let text = msg.split(|c| *c == 0).next().unwrap_or_default();
            Reply::Error(
                u16::from_be_bytes([*a, *b]),
                String::from_utf8_lossy(text).chars().take(128).collect(),
            )
        }
        _ => Reply::Other,
    }
}

/// The server's limits on what a client may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub blksize: u16,
    pub windowsize: u16,
}

/// The terms of one transfer, and the OACK that grants them (when the client asked
/// for any option the server grants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub blksize: u16,
    pub windowsize: u16,
    pub oack: Option<Vec<u8>>,
}

/// Grants what `asked` asks within `limits`: `blksize` and `windowsize` clamped,
/// `tsize` answered with the file's size; a client's `timeout` is never granted (the
/// server's own timeout holds every session, so a client cannot keep a slot for
/// minutes).
pub fn negotiate(asked: &Options, limits: Limits, size: u64) -> Terms {
    let mut granted: Vec<(&str, String)> = Vec::new();
    let blksize = match asked.blksize {
        Some(b) => {
            let b = b.min(limits.blksize.max(8));
            granted.push(("blksize", b.to_string()));
            b
        }
        None => DEFAULT_BLKSIZE,
    };
    if asked.tsize.is_some() {
        granted.push(("tsize", size.to_string()));
    }
    let windowsize = match asked.windowsize {
        Some(w) => {
            let w = w.min(limits.windowsize.max(1));
            granted.push(("windowsize", w.to_string()));
            w
        }
        None => 1,
    };
    let oack = (!granted.is_empty()).then(|| {
        let mut p = OACK.to_be_bytes().to_vec();
        for (k, v) in granted {
            p.extend_from_slice(k.as_bytes());
            p.push(0);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
        }
        p
    });
    Terms {
        blksize,
        windowsize,
        oack,
    }
}

/// TFTP error codes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: see the message.
    Other,
    FileNotFound,
    IllegalOperation,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::Other => "error",
            ErrorCode::FileNotFound => "file not found",
            ErrorCode::IllegalOperation => "illegal operation",
        })
    }
}

/// An ERROR packet; the message is cut to 200 bytes and stripped of NULs.
pub fn error_packet(code: ErrorCode, msg: &str) -> Vec<u8> {
    let code: u16 = match code {
        ErrorCode::Other => 0,
        ErrorCode::FileNotFound => 1,
        ErrorCode::IllegalOperation => 4,
    };
    let mut p = ERROR.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend(msg.bytes().filter(|b| *b != 0).take(200));
    p.push(0);
    p
}

/// Starts a DATA packet for block `index` (counted from 1; the wire number wraps to
/// 0 after 65535, as iPXE, GRUB and atftp expect).
pub fn data_header(index: u64, into: &mut Vec<u8>) {
    into.clear();
    into.extend_from_slice(&DATA.to_be_bytes());
    into.extend_from_slice(&((index % 65536) as u16).to_be_bytes());
}

/// How many of the `in_flight` blocks starting at `base` (counted from 1) an ACK of
/// wire number `ack` acknowledges: `Some(n)` for `1..=in_flight`, `None` for an ACK
/// of an earlier block (a duplicate, which must not trigger a resend: the Sorcerer's
/// Apprentice bug of RFC 1350) or of a block not sent.
pub fn acked(base: u64, in_flight: u64, ack: u16) -> Option<u64> {
    let before = ((base + 65535) % 65536) as u16; // the wire number of block base-1
    let n = u64::from(ack.wrapping_sub(before));
    (1..=in_flight).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_options_parse_and_bad_values_are_left_out() {
        let r = parse_request(
            b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00windowsize\x000\x00timeout\x00x\x00",
        )
        .unwrap();
        assert_eq!(r.name, "undionly.kpxe");
        assert!(!r.write);
        assert_eq!(
            r.options,
            Options {
                blksize: Some(1432),
                timeout: None,
                tsize: Some(0),
                windowsize: None,
            }
        );
        assert!(parse_request(b"\x00\x02up\x00NETASCII\x00").unwrap().write);
        assert_eq!(
            parse_request(b"\x00\x01x\x00mail\x00"),
            Err(WireError::Mode("mail".into()))
        );
        assert_eq!(parse_request(b"\x00\x01x"), Err(WireError::Unterminated));
        assert_eq!(
            parse_request(b"\x00\x04\x00\x01"),
            Err(WireError::NotRequest(4))
        );
        assert_eq!(parse_request(b"\x00"), Err(WireError::Short));
        assert_eq!(
            parse_request(b"\x00\x01\xff\x00octet\x00"),
            Err(WireError::NotUtf8)
        );
        // What follows the first NUL is never part of the name.
        let r = parse_request(b"\x00\x01ok.txt\x00\x00../evil\x00octet\x00");
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn negotiation_clamps_and_never_grants_a_client_timeout() {
        let asked = Options {
            blksize: Some(65464),
            timeout: Some(255),
            tsize: Some(0),
            windowsize: Some(65535),
        };
        let limits = Limits {
            blksize: 8192,
            windowsize: 32,
        };
        let t = negotiate(&asked, limits, 74_000);
        assert_eq!((t.blksize, t.windowsize), (8192, 32));
        assert_eq!(
            t.oack.unwrap(),
            b"\x00\x06blksize\x008192\x00tsize\x0074000\x00windowsize\x0032\x00"
        );
        let plain = negotiate(&Options::default(), limits, 10);
        assert_eq!(
            (plain.blksize, plain.windowsize, plain.oack),
            (512, 1, None)
        );
        let only_timeout = Options {
            timeout: Some(5),
            ..Options::default()
        };
        assert_eq!(negotiate(&only_timeout, limits, 10).oack, None);
    }

    #[test]
    fn acks_cover_blocks_across_the_wrap_and_duplicates_cover_none() {
        assert_eq!(acked(1, 1, 1), Some(1));
        assert_eq!(acked(1, 1, 0), None, "ACK 0 before block 1 is a duplicate");
        assert_eq!(acked(5, 8, 12), Some(8));
        assert_eq!(acked(5, 8, 7), Some(3));
        assert_eq!(acked(5, 8, 13), None, "not sent yet");
        assert_eq!(acked(5, 8, 4), None, "duplicate");
        // Blocks 65534..65537 are wire numbers 65534, 65535, 0, 1.
        assert_eq!(acked(65534, 4, 0), Some(3));
        assert_eq!(acked(65534, 4, 1), Some(4));
        assert_eq!(acked(65537, 2, 1), Some(1));
        let mut p = Vec::new();
        data_header(65536, &mut p);
        assert_eq!(p, [0, 3, 0, 0]);
        assert_eq!(parse_reply(b"\x00\x04\x01\x02"), Reply::Ack(258));
        assert_eq!(
            parse_reply(b"\x00\x05\x00\x08tsize only\x00"),
            Reply::Error(8, "tsize only".into())
        );
        assert_eq!(parse_reply(b"\x00\x03\x00\x01data"), Reply::Other);
        assert_eq!(
            error_packet(ErrorCode::FileNotFound, "no\0pe"),
            b"\x00\x05\x00\x01nope\x00"
        );
    }
}
