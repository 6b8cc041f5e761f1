//! TFTP: a read-only virtual tree (the iPXE binaries, the installer files, an optional
//! extra directory), served over RFC 1350 with blksize (2348), tsize and timeout (2349)
//! and windowsize (7440).
//!
//! Owns request-path checks, the session cap, the wire format ([`packet`], pure), option
//! negotiation and the window arithmetic (pure), and the socket loops: one listener that
//! only parses requests, and one tokio task per transfer on its own socket, reading the
//! file by position (no per-session copy, retransmissions re-read). Never serves a
//! directory as-is: a name is looked up in the tree; `..`, absolute paths, backslashes,
//! control characters and symlinks out of the extra directory are refused. Write
//! requests are refused.

use crate::config::Config;
use crate::dhcp::decide::{IPXE_BIOS, IPXE_EFI, IPXE_SNPONLY};
use crate::state::AppState;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

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
}

impl Sessions {
    /// Takes a slot, or `None` when `max` are in flight.
    pub fn acquire(self: &Arc<Self>, max: usize) -> Option<SessionSlot> {
        let mut cur = self.active.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match self.active.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(SessionSlot(self.clone())),
                Err(now) => cur = now,
            }
        }
    }

    /// Sessions in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// A held session slot; released on drop.
#[derive(Debug)]
pub struct SessionSlot(Arc<Sessions>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The TFTP wire format (RFC 1350, 2347–2349, 7440): parsing requests and
/// acknowledgements, building DATA, OACK and ERROR packets. Pure.
pub mod packet {
    /// Options a read request may carry (unknown ones are ignored, RFC 2347).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Opts {
        pub blksize: Option<u16>,
        pub timeout: Option<u8>,
        pub tsize: Option<u64>,
        pub windowsize: Option<u16>,
    }

    /// A request to start a transfer.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Request {
        pub write: bool,
        pub filename: String,
        pub opts: Opts,
    }

    /// What a client sends during a transfer.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Reply {
        Ack(u16),
        Error(u16, String),
        Other,
    }

    /// TFTP error codes rackseed sends.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ErrorCode {
        /// 0: see the message.
        NotDefined = 0,
        FileNotFound = 1,
        IllegalOperation = 4,
        /// 8: option negotiation refused (RFC 2347).
        BadOption = 8,
    }

    fn nul_str(input: &[u8]) -> Option<(&str, &[u8])> {
        let pos = input.iter().position(|c| *c == 0)?;
        let s = std::str::from_utf8(&input[..pos]).ok()?;
        Some((s, &input[pos + 1..]))
    }

    /// Parses an RRQ or WRQ. Anything else, a bad mode (not `octet` or `netascii`) or a
    /// malformed packet gives `None` (and is ignored, never answered with data).
    pub fn parse_request(input: &[u8]) -> Option<Request> {
        let write = match input.get(..2)? {
            [0, 1] => false,
            [0, 2] => true,
            _ => return None,
        };
        let (filename, rest) = nul_str(&input[2..])?;
        let (mode, mut rest) = nul_str(rest)?;
        if !mode.eq_ignore_ascii_case("octet") && !mode.eq_ignore_ascii_case("netascii") {
            return None;
        }
        let mut opts = Opts::default();
        while !rest.is_empty() {
            let (name, r) = nul_str(rest)?;
            let (val, r) = nul_str(r)?;
            rest = r;
            if name.eq_ignore_ascii_case("blksize") {
                opts.blksize = val.parse().ok().filter(|v| (8..=65464).contains(v));
            } else if name.eq_ignore_ascii_case("timeout") {
                opts.timeout = val.parse().ok().filter(|v| *v >= 1);
            } else if name.eq_ignore_ascii_case("tsize") {
                opts.tsize = val.parse().ok();
            } else if name.eq_ignore_ascii_case("windowsize") {
                opts.windowsize = val.parse().ok().filter(|v| *v >= 1);
            }
        }
        Some(Request {
            write,
            filename: filename.to_string(),
            opts,
        })
    }

    /// Parses what a client sends during a transfer.
    pub fn parse_reply(input: &[u8]) -> Reply {
        match input {
            [0, 4, a, b] => Reply::Ack(u16::from_be_bytes([*a, *b])),
            [0, 4, a, b, ..] => Reply::Ack(u16::from_be_bytes([*a, *b])),
            [0, 5, a, b, rest @ ..] => Reply::Error(
                u16::from_be_bytes([*a, *b]),
                nul_str(rest)
                    .map(|(s, _)| s.to_string())
                    .unwrap_or_default(),
            ),
            _ => Reply::Other,
        }
    }

    /// An OACK with the given options, in order.
    pub fn oack(opts: &[(&str, String)]) -> Vec<u8> {
        let mut v = vec![0, 6];
        for (k, val) in opts {
            v.extend_from_slice(k.as_bytes());
            v.push(0);
            v.extend_from_slice(val.as_bytes());
            v.push(0);
        }
        v
    }

    /// An ERROR packet.
    pub fn error(code: ErrorCode, msg: &str) -> Vec<u8> {
        let mut v = vec![0, 5];
        v.extend_from_slice(&(code as u16).to_be_bytes());
        v.extend_from_slice(msg.as_bytes());
        v.push(0);
        v
    }

    /// Writes the DATA header for `block` into the first 4 bytes of `buf`.
    pub fn data_header(buf: &mut [u8], block: u16) {
        buf[..2].copy_from_slice(&[0, 3]);
        buf[2..4].copy_from_slice(&block.to_be_bytes());
    }
}

/// What a read request gets: the block size, window, retransmission timeout and the
/// OACK to send first (if any option was accepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: usize,
    pub windowsize: u16,
    pub timeout: Duration,
    pub oack: Option<Vec<(&'static str, String)>>,
}

/// Most blocks in flight per transfer when neither side limits the window.
pub const MAX_WINDOW: u16 = 64;

/// Negotiates options (RFC 2347): the client's blksize and windowsize within the
/// configured limits (the window at most [`MAX_WINDOW`]), its timeout, tsize as the
/// file size. Pure.
pub fn negotiate(
    opts: &packet::Opts,
    block_size_limit: Option<u16>,
    window_size_limit: Option<u16>,
    default_timeout: Duration,
    size: u64,
) -> Negotiated {
    let mut oack = Vec::new();
    let blksize = opts
        .blksize
        .map(|b| block_size_limit.map_or(b, |l| b.min(l)).max(8));
    if let Some(b) = blksize {
        oack.push(("blksize", b.to_string()));
    }
    if let Some(t) = opts.timeout {
        oack.push(("timeout", t.to_string()));
    }
    if opts.tsize.is_some() {
        oack.push(("tsize", size.to_string()));
    }
    let window = opts.windowsize.map(|w| {
        w.min(window_size_limit.unwrap_or(MAX_WINDOW))
            .clamp(1, MAX_WINDOW)
    });
    if let Some(w) = window {
        oack.push(("windowsize", w.to_string()));
    }
    Negotiated {
        blksize: blksize.map_or(512, usize::from),
        windowsize: window.unwrap_or(1),
        timeout: opts
            .timeout
            .map_or(default_timeout, |t| Duration::from_secs(u64::from(t))),
        oack: (!oack.is_empty()).then_some(oack),
    }
}

/// The sender's window over a file of `blocks` DATA packets (numbered from 1, the last
/// one shorter than blksize, possibly empty). Block numbers on the wire wrap at 65536;
/// here they are counted without wrapping. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The first unacknowledged block.
    pub base: u64,
    /// The number of blocks in the file.
    pub blocks: u64,
    pub size: u16,
}

impl Window {
    /// The window for a file of `len` bytes.
    pub fn new(len: u64, blksize: usize, size: u16) -> Window {
        Window {
            base: 1,
            blocks: len / blksize as u64 + 1,
            size: size.max(1),
        }
    }

    /// The blocks to send now: `base` up to the window size or the last block.
    pub fn pending(&self) -> std::ops::Range<u64> {
        self.base..(self.base + u64::from(self.size)).min(self.blocks + 1)
    }

    /// True once the last block is acknowledged.
    pub fn done(&self) -> bool {
        self.base > self.blocks
    }

    /// Takes an ACK: returns true if it acknowledged at least one block in flight (the
    /// window moves past it). Old or duplicate ACKs are ignored, so a late duplicate
    /// never causes a resend storm (Sorcerer's Apprentice).
    pub fn ack(&mut self, wire: u16) -> bool {
        let in_flight = self.pending();
        let offset = u64::from(wire.wrapping_sub(self.base as u16));
        if offset < in_flight.end - in_flight.start {
            self.base += offset + 1;
            true
        } else {
            false
        }
    }
}

/// Failure to start the TFTP server.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the TFTP server")]
pub struct TftpError(#[source] std::io::Error);

/// How a transfer ended, for logs, metrics and the node's timeline.
struct Report {
    name: String,
    peer: SocketAddr,
    size: u64,
    sent: u64,
    complete: bool,
}

impl Report {
    fn record(&self, state: &AppState) {
        state.metrics.tftp_bytes.add(self.sent);
        if self.complete {
            info!(file = %self.name, peer = %self.peer, bytes = self.sent, "tftp transfer complete");
        } else {
            info!(file = %self.name, peer = %self.peer, bytes = self.sent, size = self.size, "tftp transfer ended early");
        }
        if let Some(id) = state.node_for_ip(self.peer.ip()) {
            let msg = if self.complete {
                format!(
                    "TFTP sent {} ({} bytes) to {}",
                    self.name,
                    self.size,
                    self.peer.ip()
                )
            } else {
                format!(
                    "TFTP transfer of {} to {} stopped after {} of {} bytes",
                    self.name,
                    self.peer.ip(),
                    self.sent,
                    self.size
                )
            };
            state.events.emit(id, "tftp", msg);
        }
    }
}

/// Retransmissions of one window (or the OACK) before a transfer is given up.
const MAX_SEND_RETRIES: u32 = 8;

/// Serves TFTP on an already-bound socket until `cancel` fires. Each request is handled
/// by its own task on its own socket; the listener only parses requests and ignores a
/// repeated request from a peer whose transfer is still running.
pub async fn run(
    state: Arc<AppState>,
    socket: std::net::UdpSocket,
    cancel: CancellationToken,
) -> Result<(), TftpError> {
    let local_ip = socket.local_addr().map_err(TftpError)?.ip();
    let socket = UdpSocket::from_std(socket).map_err(TftpError)?;
    info!(addr = ?socket.local_addr().ok(), "tftp listening");
    let in_progress: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %crate::error_chain(&e), "tftp receive failed");
                    continue;
                }
            },
        };
        let Some(req) = packet::parse_request(&buf[..len]) else {
            debug!(%peer, len, "malformed TFTP packet ignored");
            continue;
        };
        if !in_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer)
        {
            continue;
        }
        let (state, in_progress, cancel) = (state.clone(), in_progress.clone(), cancel.clone());
        let span = info_span!("tftp", %peer);
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = transfer(&state, local_ip, peer, req) => {}
                }
                in_progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&peer);
            }
            .instrument(span),
        );
    }
}

/// A refusal: counted, logged, and sent as an ERROR packet.
async fn refuse(
    state: &AppState,
    sock: &UdpSocket,
    name: &str,
    code: packet::ErrorCode,
    msg: &str,
    why: &str,
) {
    state.metrics.tftp_refused.inc();
    debug!(file = %name.escape_debug(), reason = %why, "tftp request refused");
    let _ = sock.send(&packet::error(code, msg)).await;
}

/// One transfer on its own socket connected to `peer`: checks, opens, negotiates, then
/// sends windows and waits for ACKs with retransmission.
async fn transfer(state: &Arc<AppState>, local_ip: IpAddr, peer: SocketAddr, req: packet::Request) {
    use packet::ErrorCode;
    let sock = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "tftp session socket failed");
            return;
        }
    };
    if let Err(e) = sock.connect(peer).await {
        debug!(error = %crate::error_chain(&e), "tftp peer unreachable");
        return;
    }
    let name = req.filename;
    if req.write {
        state.metrics.tftp_refused.inc();
        debug!(file = %name.escape_debug(), "tftp write refused");
        let _ = sock
            .send(&packet::error(ErrorCode::IllegalOperation, "Illegal operation"))
            .await;
        return;
    }
    let file_path = match state.tftp_tree.lookup(&name) {
        Ok(p) => p,
        Err(LookupError::NotFound) => {
            return refuse(state, &sock, &name, ErrorCode::FileNotFound, "File not found", "not in tree").await;
        }
        Err(e) => {
            let why = e.to_string();
            return refuse(state, &sock, &name, ErrorCode::NotDefined, &format!("refused: {why}"), &why).await;
        }
    };
    let Some(_slot) = state
        .tftp_sessions
        .acquire(state.config.tftp.max_sessions)
    else {
        return refuse(
            state,
            &sock,
            &name,
            ErrorCode::NotDefined,
            "server busy: too many transfers, retry later",
            "session cap",
        )
        .await;
    };
    let file = match std::fs::File::open(&file_path) {
        Ok(f) => f,
        Err(e) => {
            warn!(file = %file_path.display(), error = %crate::error_chain(&e), "tftp file in tree cannot be opened");
            return refuse(state, &sock, &name, ErrorCode::FileNotFound, "File not found", &e.to_string()).await;
        }
    };
    let size = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            return refuse(state, &sock, &name, ErrorCode::FileNotFound, "File not found", "not a regular file").await;
        }
        Err(e) => {
            return refuse(state, &sock, &name, ErrorCode::NotDefined, "Unknown error", &e.to_string()).await;
        }
    };
    let cfg = &state.config.tftp;
    let neg = negotiate(
        &req.opts,
        cfg.block_size_limit,
        cfg.window_size_limit,
        cfg.timeout,
        size,
    );
    state.metrics.tftp_transfers.inc();
    debug!(file = %name, size, blksize = neg.blksize, window = neg.windowsize, "tftp transfer starting");
    let mut report = Report {
        name,
        peer,
        size,
        sent: 0,
        complete: false,
    };
    match send_file(&sock, &file, size, &neg).await {
        Ok(()) => {
            report.sent = size;
            report.complete = true;
        }
        Err(sent) => report.sent = sent,
    }
    report.record(state);
}

/// File bytes read ahead of the blocks being sent: one positional read per 32 KiB
/// instead of one per block.
struct ReadAhead {
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

/// Bytes read at a time for the blocks of a transfer (at least one block).
const READ_AHEAD: usize = 32 * 1024;

impl ReadAhead {
    /// The file's bytes `[offset, offset + want)`, refilling from `offset` if needed.
    fn get(
        &mut self,
        file: &std::fs::File,
        size: u64,
        offset: u64,
        want: usize,
    ) -> std::io::Result<&[u8]> {
        let have = offset >= self.start && offset + want as u64 <= self.start + self.len as u64;
        if !have {
            let n = (size.saturating_sub(offset) as usize).min(self.buf.len());
            self.len = read_fully(file, &mut self.buf[..n], offset)?;
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        let to = (from + want).min(self.len);
        Ok(&self.buf[from..to])
    }
}

/// Sends the OACK (if any) and the file window by window. `Err` carries the bytes the
/// client acknowledged before the transfer was given up.
async fn send_file(
    sock: &UdpSocket,
    file: &std::fs::File,
    size: u64,
    neg: &Negotiated,
) -> Result<(), u64> {
    let mut rx = [0u8; 1024];
    // One timer per transfer, re-armed for every wait.
    let timer = tokio::time::sleep(neg.timeout);
    tokio::pin!(timer);
    if let Some(opts) = &neg.oack {
        let oack = packet::oack(opts);
        let mut tries = 0;
        loop {
            if sock.send(&oack).await.is_err() {
                return Err(0);
            }
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + neg.timeout);
            match recv_reply(sock, &mut rx, timer.as_mut()).await {
                Some(packet::Reply::Ack(0)) => break,
                Some(packet::Reply::Error(..)) => return Err(0),
                Some(_) => continue,
                None => {
                    tries += 1;
                    if tries > MAX_SEND_RETRIES {
                        return Err(0);
                    }
                }
            }
        }
    }
    let bs = neg.blksize;
    let mut window = Window::new(size, bs, neg.windowsize);
    let mut pkt = vec![0u8; 4 + bs];
    let ahead_len = READ_AHEAD
        .max(bs)
        .min(usize::try_from(size).unwrap_or(usize::MAX).max(1));
    let mut ahead = ReadAhead {
        buf: vec![0u8; ahead_len],
        start: 0,
        len: 0,
    };
    let mut tries = 0;
    let acked = |w: &Window| ((w.base - 1) * bs as u64).min(size);
    while !window.done() {
        for block in window.pending() {
            let offset = (block - 1) * bs as u64;
            let want = (size.saturating_sub(offset)).min(bs as u64) as usize;
            let data = ahead
                .get(file, size, offset, want)
                .map_err(|_| acked(&window))?;
            let n = data.len();
            pkt[4..4 + n].copy_from_slice(data);
            packet::data_header(&mut pkt, block as u16);
            if sock.send(&pkt[..4 + n]).await.is_err() {
                return Err(acked(&window));
            }
        }
        // Wait for an ACK that moves the window; stray packets do not re-arm the timer.
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + neg.timeout);
        let moved = loop {
            match recv_reply(sock, &mut rx, timer.as_mut()).await {
                Some(packet::Reply::Ack(b)) => {
                    if window.ack(b) {
                        break true;
                    }
                }
                Some(packet::Reply::Error(..)) => return Err(acked(&window)),
                Some(packet::Reply::Other) => {}
                None => break false,
            }
        };
        if moved {
            tries = 0;
        } else {
            tries += 1;
            if tries > MAX_SEND_RETRIES {
                return Err(acked(&window));
            }
        }
    }
    Ok(())
}

/// The next packet from the peer before `timer` fires (`None` then, or on an error).
async fn recv_reply(
    sock: &UdpSocket,
    buf: &mut [u8],
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Option<packet::Reply> {
    tokio::select! {
        r = sock.recv(buf) => r.ok().map(|n| packet::parse_reply(&buf[..n])),
        _ = timer => None,
    }
}

/// Reads `buf.len()` bytes at `offset` (fewer only at the end of the file). Served
/// files are small or hot in the page cache, so a positional read does not stall.
fn read_fully(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(check_path("../../etc/passwd"), Err(PathError::Dots));
        assert_eq!(check_path("installer/../../x"), Err(PathError::Dots));
        assert_eq!(check_path("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(check_path("..\\x"), Err(PathError::Backslash));
        assert_eq!(
            check_path("undionly.kpxe\0/../../etc/passwd"),
            Err(PathError::Control)
        );
        assert_eq!(check_path("a//b"), Err(PathError::EmptyComponent));
        assert_eq!(check_path(""), Err(PathError::Empty));
        assert_eq!(
            check_path("installer/linux"),
            Ok(vec!["installer", "linux"])
        );
    }

    #[test]
    fn extra_directory_cannot_be_escaped_by_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/ok.txt"), "ok").unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, "secret").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        let t = Tree::new(BTreeMap::new(), Some(root.clone()));
        assert!(t.lookup("sub/ok.txt").unwrap().ends_with("sub/ok.txt"));
        assert!(matches!(t.lookup("evil"), Err(LookupError::Escapes)));
        assert!(matches!(t.lookup("etc/passwd"), Err(LookupError::Escapes)));
        assert!(matches!(t.lookup("sub"), Err(LookupError::NotFound)));
        assert!(matches!(t.lookup("missing"), Err(LookupError::NotFound)));
    }

    #[test]
    fn requests_parse_with_options_and_bad_modes_are_ignored() {
        let r = packet::parse_request(
            b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001432\x00tsize\x000\x00windowsize\x008\x00x\x00y\x00",
        )
        .unwrap();
        assert!(!r.write);
        assert_eq!(r.filename, "undionly.kpxe");
        assert_eq!(
            r.opts,
            packet::Opts {
                blksize: Some(1432),
                timeout: None,
                tsize: Some(0),
                windowsize: Some(8)
            }
        );
        assert!(packet::parse_request(b"\x00\x01a\x00/../etc\x00octet\x00").is_none());
        assert!(packet::parse_request(b"\x00\x01ok.txt\x00\x00../evil\x00octet\x00").is_none());
        assert!(packet::parse_request(b"\x00\x04\x00\x01").is_none());
        assert!(packet::parse_request(b"\x00\x02up\x00octet\x00").unwrap().write);
        assert_eq!(packet::parse_reply(b"\x00\x04\x01\x02"), packet::Reply::Ack(258));
    }

    #[test]
    fn negotiation_respects_limits() {
        let o = packet::Opts {
            blksize: Some(1468),
            timeout: Some(2),
            tsize: Some(0),
            windowsize: Some(1000),
        };
        let n = negotiate(&o, Some(1432), None, Duration::from_secs(3), 99);
        assert_eq!(n.blksize, 1432);
        assert_eq!(n.windowsize, MAX_WINDOW);
        assert_eq!(n.timeout, Duration::from_secs(2));
        assert_eq!(
            n.oack.unwrap(),
            vec![
                ("blksize", "1432".to_string()),
                ("timeout", "2".into()),
                ("tsize", "99".into()),
                ("windowsize", "64".into())
            ]
        );
        let n = negotiate(&packet::Opts::default(), None, Some(4), Duration::from_secs(3), 5);
        assert_eq!((n.blksize, n.windowsize, n.oack), (512, 1, None));
    }

    #[test]
    fn window_moves_on_acks_and_wraps() {
        // 1024 bytes at blksize 512: blocks 1, 2 and an empty block 3.
        let mut w = Window::new(1024, 512, 8);
        assert_eq!(w.pending(), 1..4);
        assert!(!w.ack(0), "an ACK before the window is ignored");
        assert!(w.ack(2));
        assert_eq!(w.pending(), 3..4);
        assert!(!w.ack(2), "a duplicate ACK is ignored");
        assert!(w.ack(3));
        assert!(w.done());
        // Block numbers wrap at 65536 on the wire.
        let mut w = Window::new(512 * 70_000, 512, 4);
        w.base = 65_535;
        assert_eq!(w.pending(), 65_535..65_539);
        assert!(w.ack(1), "wire block 1 is block 65537");
        assert_eq!(w.base, 65_538);
    }

    #[test]
    fn session_cap_holds() {
        let s = Arc::new(Sessions::default());
        let a = s.acquire(2).unwrap();
        let _b = s.acquire(2).unwrap();
        assert!(s.acquire(2).is_none());
        drop(a);
        assert!(s.acquire(2).is_some());
    }
}
