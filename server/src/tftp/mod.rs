//! TFTP: a read-only virtual tree (the iPXE binaries, the installer files, an optional
//! extra directory), with blksize, tsize and windowsize (RFC 2347–2349, 7440).
//!
//! Owns the request loop, the transfer threads (kept for the next request when their
//! transfer ends) and the files generated per machine; [`wire`] owns the packets and
//! the option answer, [`transfer`] one transfer's retransmission loop (a thread each,
//! read-ahead), [`tree`] the names, the request-path checks and the session cap. Never
//! serves a directory as-is: a name is looked up in the tree; `..`, absolute paths,
//! backslashes, control characters and symlinks out of the extra directory are
//! refused. Write requests are refused.

pub mod transfer;
pub mod tree;
pub mod wire;

use crate::bootfiles::{GRUB_CFG, GRUB_NODE_DIR};
use crate::state::AppState;
use crate::workers::Workers;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
pub use tree::{Busy, LookupError, PathError, SessionSlot, Sessions, Tree, check_path};

/// What a transfer sends: a file of the tree, or text rackseed rendered for the
/// requesting machine (GRUB configurations).
enum Source {
    File(std::fs::File),
    Memory(Vec<u8>),
}

/// Reads a file by position for one transfer; reports completion when dropped.
pub struct FileReader {
    file: Source,
    /// Bytes the client acknowledged (set by the transfer).
    pub delivered: u64,
    pub size: u64,
    name: String,
    peer: SocketAddr,
    state: Arc<AppState>,
    _slot: SessionSlot,
}

impl FileReader {
    /// Reads up to `buf.len()` bytes at `off`; fewer only at the end of the file.
    /// Served files are small and hot in the page cache: a positional read, no
    /// per-session file buffer.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match &self.file {
            Source::File(f) => {
                let mut done = 0;
                while done < buf.len() {
                    match f.read_at(&mut buf[done..], off + done as u64)? {
                        0 => break,
                        n => done += n,
                    }
                }
                Ok(done)
            }
            Source::Memory(m) => {
                let start = usize::try_from(off).unwrap_or(usize::MAX).min(m.len());
                let n = buf.len().min(m.len() - start);
                buf[..n].copy_from_slice(&m[start..start + n]);
                Ok(n)
            }
        }
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        self.state.metrics.tftp_bytes.add(self.delivered);
        let complete = self.delivered >= self.size;
        if complete {
            info!(file = %self.name, peer = %self.peer, bytes = self.delivered, "tftp transfer complete");
        } else {
            info!(file = %self.name, peer = %self.peer, bytes = self.delivered, size = self.size, "tftp transfer ended early");
        }
        // The installer kernel and initrd are steps of their own on the timeline (GRUB
        // on the signed chain loads them over TFTP).
        let kind = match self.name.as_str() {
            "installer/linux" => "kernel",
            "installer/initrd.gz" => "initrd",
            _ => "tftp",
        };
        let msg = if complete {
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
                self.delivered,
                self.size
            )
        };
        // Which node the peer is may need the inventory: looked up off this task (and
        // off the executor), then put on the timeline.
        let (state, ip) = (self.state.clone(), self.peer.ip());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Some(id) = state.node_for_ip_async(ip).await {
                        state.events.emit(id, kind, msg);
                    }
                });
            }
            Err(_) => debug!(peer = %ip, "tftp transfer not put on a timeline: no runtime"),
        }
    }
}

/// Opens requests over the virtual tree.
pub struct Handler {
    state: Arc<AppState>,
}

/// A refusal: the TFTP error sent and the reason logged.
type Refusal = (wire::ErrorCode, String);

/// The directory of the signed UEFI chain in the tree.
const SIGNED_DIR: &str = "debian-installer/amd64/";

impl Handler {
    /// A session slot for `client`, or the TFTP error and the logged reason.
    fn slot(&self, client: &SocketAddr) -> Result<SessionSlot, (Refusal, String)> {
        let cfg = &self.state.config.tftp;
        self.state
            .tftp_sessions
            .acquire(cfg.max_sessions, client.ip(), cfg.max_sessions_per_client)
            .map_err(|b| match b {
                Busy::Total => (
                    (
                        wire::ErrorCode::Other,
                        "server busy: too many transfers, retry later".into(),
                    ),
                    "session cap".into(),
                ),
                Busy::Client => (
                    (
                        wire::ErrorCode::Other,
                        "too many transfers from this address, retry later".into(),
                    ),
                    "per-client session cap".into(),
                ),
            })
    }

    /// The text rackseed renders for `name`, when it is one of the generated GRUB
    /// files: the entry point, or a machine's own configuration by MAC.
    fn generated(&self, name: &str, client: &SocketAddr) -> Option<Result<Vec<u8>, String>> {
        let state = &self.state;
        if name == GRUB_CFG {
            return Some(
                crate::render::grub_entry(
                    &state.templates,
                    state.config.boot.retry_interval.as_secs().max(1),
                )
                .map(String::into_bytes)
                .map_err(|e| crate::error_chain(&e)),
            );
        }
        let mac = name.strip_prefix(GRUB_NODE_DIR)?.strip_suffix(".cfg")?;
        let Ok(mac) = mac.parse::<crate::mac::MacAddr>() else {
            return Some(Err(format!("`{}` is not a MAC", mac.escape_debug())));
        };
        Some(
            crate::http::boot::node_boot_script(
                state,
                mac,
                crate::render::Loader::Grub,
                client.ip(),
            )
            .map(String::into_bytes)
            .map_err(|e| format!("{e:?}")),
        )
    }
}

impl Handler {
    /// The name a client asked for, as the tree knows it: GRUB asks with a leading
    /// slash (`/debian-installer/…`, `/installer/linux`).
    fn tree_name(asked: &str) -> String {
        match asked.strip_prefix('/') {
            Some(rest) if rest.starts_with(SIGNED_DIR) || rest.starts_with("installer/") => {
                rest.to_string()
            }
            _ => asked.to_string(),
        }
    }

    /// Opens `name` for `client`, holding `slot` for the transfer. Blocking (a GRUB
    /// configuration is rendered from the inventory): called on the transfer's thread.
    fn open(
        &self,
        client: &SocketAddr,
        name: &str,
        slot: SessionSlot,
    ) -> Result<FileReader, Refusal> {
        let name = Self::tree_name(name);
        let refuse = |e: wire::ErrorCode, msg: String, why: String| {
            self.state.metrics.tftp_refused.inc();
            debug!(%client, file = %name.escape_debug(), reason = %why, "tftp request refused");
            (e, msg)
        };
        let not_found =
            |why: String| refuse(wire::ErrorCode::FileNotFound, "file not found".into(), why);
        let reader = |file: Source, size: u64| FileReader {
            file,
            delivered: 0,
            size,
            name: name.clone(),
            peer: *client,
            state: self.state.clone(),
            _slot: slot,
        };
        if let Some(body) = self.generated(&name, client) {
            let body = body.map_err(not_found)?;
            self.state.metrics.tftp_transfers.inc();
            let size = body.len() as u64;
            return Ok(reader(Source::Memory(body), size));
        }
        let file_path = match self.state.tftp_tree.lookup(&name) {
            Ok(p) => p,
            Err(LookupError::NotFound) => return Err(not_found("not in tree".into())),
            Err(e) => {
                return Err(refuse(
                    wire::ErrorCode::Other,
                    format!("refused: {e}"),
                    e.to_string(),
                ));
            }
        };
        let file = std::fs::File::open(&file_path).map_err(|e| {
            warn!(file = %file_path.display(), error = %crate::error_chain(&e), "tftp file in tree cannot be opened");
            not_found(e.to_string())
        })?;
        let meta = file.metadata().map_err(|e| {
            refuse(
                wire::ErrorCode::Other,
                "cannot read the file".into(),
                e.to_string(),
            )
        })?;
        if !meta.is_file() {
            return Err(not_found("not a regular file".into()));
        }
        self.state.metrics.tftp_transfers.inc();
        debug!(%client, file = %name, size = meta.len(), "tftp transfer starting");
        Ok(reader(Source::File(file), meta.len()))
    }
}

/// Failure of the TFTP server's socket.
#[derive(Debug, thiserror::Error)]
#[error("the TFTP socket failed")]
pub struct TftpError(#[source] io::Error);

/// Sends one ERROR to `peer` from a fresh port (the transfer ID a reply to a request
/// comes from, RFC 1350 §4).
fn send_error(local: std::net::IpAddr, peer: SocketAddr, (code, msg): &Refusal) {
    let sent = std::net::UdpSocket::bind(SocketAddr::new(local, 0))
        .and_then(|s| s.send_to(&wire::error_packet(*code, msg), peer));
    if let Err(e) = sent {
        debug!(%peer, error = %e, "tftp error not sent");
    }
}

/// The clients whose transfer runs, by address and port: a request retransmitted
/// while its transfer runs is ignored.
#[derive(Default)]
struct Running(std::sync::Mutex<std::collections::HashSet<SocketAddr>>);

/// A client's place in [`Running`], given up when dropped: at the end of the
/// transfer, on a refusal, when its thread cannot start or panics.
struct RunningGuard(Arc<Running>, SocketAddr);

impl Running {
    fn enter(self: &Arc<Self>, peer: SocketAddr) -> Option<RunningGuard> {
        let fresh = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer);
        fresh.then(|| RunningGuard(self.clone(), peer))
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// At most this many transfer threads wait for a request at a time.
const IDLE_THREADS: usize = 16;
/// A transfer thread waits this long for another request before it ends.
const IDLE_FOR: Duration = Duration::from_secs(60);

/// Serves TFTP on an already-bound socket until `cancel` fires.
///
/// The request loop reads requests on the server port and refuses what it can refuse
/// at once (write requests, malformed packets are dropped, the session caps); each
/// accepted read runs on a thread of its own ([`transfer`], on an idle thread of
/// [`Workers`] when there is one) from its own port, so a transfer is woken by the
/// kernel as its ACK arrives and transfers run on every core. A request retransmitted
/// while its transfer runs is ignored.
pub async fn run(
    state: Arc<AppState>,
    socket: std::net::UdpSocket,
    cancel: CancellationToken,
) -> Result<(), TftpError> {
    let local = socket.local_addr().map_err(TftpError)?;
    let socket = tokio::net::UdpSocket::from_std(socket).map_err(TftpError)?;
    info!(addr = %local, "tftp listening");
    let handler = Arc::new(Handler {
        state: state.clone(),
    });
    let running: Arc<Running> = Arc::default();
    let workers = Workers::new("tftp-transfer", 256 * 1024, IDLE_THREADS, IDLE_FOR);
    let rt = tokio::runtime::Handle::current();
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier sends surface here; the socket is fine.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => continue,
                Err(e) => return Err(TftpError(e)),
            },
        };
        let req = match wire::parse_request(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                debug!(%peer, reason = %e, "tftp datagram dropped");
                continue;
            }
        };
        if req.write {
            state.metrics.tftp_refused.inc();
            debug!(%peer, file = %req.name.escape_debug(), "tftp write refused");
            send_error(
                local.ip(),
                peer,
                &(wire::ErrorCode::IllegalOperation, "read-only server".into()),
            );
            continue;
        }
        let Some(place) = running.enter(peer) else {
            continue;
        };
        let slot = match handler.slot(&peer) {
            Ok(s) => s,
            Err((refusal, why)) => {
                state.metrics.tftp_refused.inc();
                debug!(%peer, file = %req.name.escape_debug(), reason = %why, "tftp request refused");
                send_error(local.ip(), peer, &refusal);
                continue;
            }
        };
        let (handler, rt) = (handler.clone(), rt.clone());
        let cfg = &state.config.tftp;
        let limits = wire::Limits {
            blksize: cfg.block_size_limit,
            windowsize: cfg.window_size_limit,
        };
        let timeout = cfg.timeout;
        let started = workers.run(Box::new(move || {
            // The reader's end report spawns onto the runtime.
            let _rt = rt.enter();
            let _place = place;
            serve_one(&handler, local.ip(), peer, &req, slot, limits, timeout);
        }));
        if let Err(e) = started {
            warn!(%peer, error = %e, "tftp transfer thread not started");
        }
    }
}

/// Opens and sends one read request.
fn serve_one(
    handler: &Handler,
    local: std::net::IpAddr,
    peer: SocketAddr,
    req: &wire::Request,
    slot: SessionSlot,
    limits: wire::Limits,
    timeout: std::time::Duration,
) {
    let mut reader = match handler.open(&peer, &req.name, slot) {
        Ok(r) => r,
        Err(refusal) => return send_error(local, peer, &refusal),
    };
    let terms = wire::negotiate(&req.options, limits, reader.size);
    let socket = match std::net::UdpSocket::bind(SocketAddr::new(local, 0)) {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, error = %e, "tftp transfer socket not bound");
            return;
        }
    };
    match transfer::run(socket, peer, &mut reader, &terms, timeout) {
        Ok(transfer::End::Complete) => {}
        Ok(end) => debug!(%peer, file = %req.name.escape_debug(), ?end, "tftp transfer stopped"),
        Err(e) => {
            debug!(%peer, file = %req.name.escape_debug(), error = %e, "tftp transfer failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Mutated request names never resolve outside the tree (real files in an extra
    /// directory, a symlink out of it beside them) and never panic.
    #[test]
    fn fuzzed_names_never_leave_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        let extra = tempfile::tempdir().unwrap();
        std::fs::create_dir(extra.path().join("sub")).unwrap();
        std::fs::write(extra.path().join("sub/file.bin"), "y").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), extra.path().join("link"))
            .unwrap();
        let root = extra.path().canonicalize().unwrap();
        let t = Tree::new(BTreeMap::new(), Some(extra.path().to_path_buf()));
        let seeds: &[&[u8]] = &[
            b"sub/file.bin",
            b"link",
            b"undionly.kpxe",
            b"grub/grub.cfg-01-52-54-00-12-34-56",
            b"../etc/passwd",
            b"sub/../../secret",
        ];
        crate::fuzz::each_mutation(seeds, 20_000, |input| {
            let name = String::from_utf8_lossy(input);
            if let Ok(parts) = check_path(&name) {
                assert!(
                    parts
                        .iter()
                        .all(|p| !p.is_empty() && *p != ".." && *p != ".")
                );
            }
            if let Ok(p) = t.lookup(&name) {
                let real = p.canonicalize().unwrap();
                assert!(
                    real.starts_with(&root),
                    "{name:?} resolved to {}",
                    real.display()
                );
            }
        });
    }

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
    fn a_running_client_is_ignored_until_its_place_is_dropped() {
        let running: Arc<Running> = Arc::default();
        let peer: SocketAddr = "192.0.2.10:2000".parse().unwrap();
        let place = running.enter(peer).expect("first request");
        assert!(running.enter(peer).is_none(), "a retransmitted request");
        assert!(running.enter("192.0.2.10:2001".parse().unwrap()).is_some());
        drop(place);
        assert!(
            running.enter(peer).is_some(),
            "free again after the transfer"
        );
    }

    #[test]
    fn session_caps_hold_in_all_and_per_client() {
        let s = Arc::new(Sessions::default());
        let (x, y): (std::net::IpAddr, std::net::IpAddr) =
            ("192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap());
        let a = s.acquire(3, x, 2).unwrap();
        let _b = s.acquire(3, x, 2).unwrap();
        assert_eq!(s.acquire(3, x, 2).unwrap_err(), Busy::Client);
        assert_eq!(s.active(), 2, "a refused client holds no slot");
        let _c = s.acquire(3, y, 2).unwrap();
        assert_eq!(s.acquire(3, y, 2).unwrap_err(), Busy::Total);
        drop(a);
        let again = s.acquire(3, x, 2);
        assert!(again.is_ok());
        assert_eq!(s.active(), 3);
        drop(again);
        assert_eq!(s.active(), 2);
    }
}
