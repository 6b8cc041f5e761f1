//! TFTP: a read-only virtual tree (the iPXE binaries, the installer files, an optional
//! extra directory), served with async-tftp (blksize, tsize, timeout, windowsize).
//!
//! Owns the server loop and the files generated per machine; [`tree`] owns the names,
//! the request-path checks and the session cap. Never serves a directory as-is: a name
//! is looked up in the tree; `..`, absolute paths, backslashes, control characters and
//! symlinks out of the extra directory are refused. Write requests are refused.

pub mod tree;

use crate::bootfiles::{GRUB_CFG, GRUB_NODE_DIR};
use crate::state::AppState;
use async_tftp::packet;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
    pos: u64,
    size: u64,
    name: String,
    peer: SocketAddr,
    state: Arc<AppState>,
    _slot: SessionSlot,
}

impl futures_lite::AsyncRead for FileReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        // Served files are small and hot in the page cache; a positional read does not
        // wait on the network and keeps no per-session buffer.
        let n = match &self.file {
            Source::File(f) => f.read_at(buf, self.pos)?,
            Source::Memory(m) => {
                let start = usize::try_from(self.pos).unwrap_or(usize::MAX).min(m.len());
                let n = buf.len().min(m.len() - start);
                buf[..n].copy_from_slice(&m[start..start + n]);
                n
            }
        };
        self.pos += n as u64;
        Poll::Ready(Ok(n))
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        self.state.metrics.tftp_bytes.add(self.pos);
        let complete = self.pos >= self.size;
        if complete {
            info!(file = %self.name, peer = %self.peer, bytes = self.pos, "tftp transfer complete");
        } else {
            info!(file = %self.name, peer = %self.peer, bytes = self.pos, size = self.size, "tftp transfer ended early");
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
                self.pos,
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

/// The async-tftp handler over the virtual tree.
pub struct Handler {
    state: Arc<AppState>,
}

/// The directory of the signed UEFI chain in the tree.
const SIGNED_DIR: &str = "debian-installer/amd64/";

impl Handler {
    /// A session slot for `client`, or the TFTP error and the logged reason.
    fn slot(&self, client: &SocketAddr) -> Result<SessionSlot, (packet::Error, String)> {
        let cfg = &self.state.config.tftp;
        self.state
            .tftp_sessions
            .acquire(cfg.max_sessions, client.ip(), cfg.max_sessions_per_client)
            .map_err(|b| match b {
                Busy::Total => (
                    packet::Error::Msg("server busy: too many transfers, retry later".into()),
                    "session cap".into(),
                ),
                Busy::Client => (
                    packet::Error::Msg("too many transfers from this address, retry later".into()),
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

impl async_tftp::server::Handler for Handler {
    type Reader = FileReader;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let mut name = path.to_string_lossy().to_string();
        // GRUB asks with a leading slash (`/debian-installer/…`, `/installer/linux`).
        if let Some(rest) = name.strip_prefix('/')
            && (rest.starts_with(SIGNED_DIR) || rest.starts_with("installer/"))
        {
            name = rest.to_string();
        }
        let tree = &self.state.tftp_tree;
        let refuse = |e: packet::Error, why: String| {
            self.state.metrics.tftp_refused.inc();
            debug!(%client, file = %name.escape_debug(), reason = %why, "tftp request refused");
            e
        };
        if let Some(body) = self.generated(&name, client) {
            let body = body.map_err(|why| refuse(packet::Error::FileNotFound, why))?;
            let slot = self.slot(client).map_err(|(e, why)| refuse(e, why))?;
            self.state.metrics.tftp_transfers.inc();
            let size = body.len() as u64;
            return Ok((
                FileReader {
                    file: Source::Memory(body),
                    pos: 0,
                    size,
                    name,
                    peer: *client,
                    state: self.state.clone(),
                    _slot: slot,
                },
                Some(size),
            ));
        }
        let file_path = match tree.lookup(&name) {
            Ok(p) => p,
            Err(LookupError::NotFound) => {
                return Err(refuse(packet::Error::FileNotFound, "not in tree".into()));
            }
            Err(e) => {
                return Err(refuse(
                    packet::Error::Msg(format!("refused: {e}")),
                    e.to_string(),
                ));
            }
        };
        let slot = self.slot(client).map_err(|(e, why)| refuse(e, why))?;
        let file = std::fs::File::open(&file_path).map_err(|e| {
            warn!(file = %file_path.display(), error = %crate::error_chain(&e), "tftp file in tree cannot be opened");
            refuse(packet::Error::FileNotFound, e.to_string())
        })?;
        let meta = file
            .metadata()
            .map_err(|e| refuse(packet::Error::UnknownError, e.to_string()))?;
        if !meta.is_file() {
            return Err(refuse(
                packet::Error::FileNotFound,
                "not a regular file".into(),
            ));
        }
        self.state.metrics.tftp_transfers.inc();
        debug!(%client, file = %name, size = meta.len(), "tftp transfer starting");
        Ok((
            FileReader {
                file: Source::File(file),
                pos: 0,
                size: meta.len(),
                name,
                peer: *client,
                state: self.state.clone(),
                _slot: slot,
            },
            Some(meta.len()),
        ))
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        self.state.metrics.tftp_refused.inc();
        debug!(%client, file = %path.display(), "tftp write refused");
        Err(packet::Error::IllegalOperation)
    }
}

/// Failure to start the TFTP server.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the TFTP server")]
pub struct TftpError(#[source] async_tftp::Error);

/// Serves TFTP on an already-bound socket until `cancel` fires.
///
/// An async-tftp server drives all of its transfers from the one task that polls it,
/// so a single instance keeps every transfer on one core. rackseed runs one instance
/// per core on clones of the same socket: each request datagram is read by exactly one
/// of them, and each transfer then runs on that instance's own ephemeral socket.
pub async fn run(
    state: Arc<AppState>,
    socket: std::net::UdpSocket,
    cancel: CancellationToken,
) -> Result<(), TftpError> {
    let instances = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut servers = Vec::with_capacity(instances);
    for _ in 1..instances {
        let clone = socket.try_clone().map_err(|e| TftpError(e.into()))?;
        servers.push(build(&state, clone).await?);
    }
    servers.push(build(&state, socket).await?);
    info!(addr = ?servers[0].listen_addr().ok(), instances, "tftp listening");
    let mut set = tokio::task::JoinSet::new();
    for server in servers {
        set.spawn(async move { server.serve().await });
    }
    tokio::select! {
        _ = cancel.cancelled() => {
            set.abort_all();
            Ok(())
        }
        r = set.join_next() => match r {
            Some(Ok(r)) => r.map_err(TftpError),
            Some(Err(e)) => Err(TftpError(async_tftp::Error::Io(io::Error::other(e)))),
            None => Ok(()),
        },
    }
}

/// One async-tftp server over the virtual tree on `socket`, with the configured limits.
async fn build(
    state: &Arc<AppState>,
    socket: std::net::UdpSocket,
) -> Result<async_tftp::server::TftpServer<Handler>, TftpError> {
    let cfg = &state.config.tftp;
    let b = async_tftp::server::TftpServerBuilder::with_handler(Handler {
        state: state.clone(),
    })
    .std_socket(socket)
    .map_err(TftpError)?
    .timeout(cfg.timeout)
    // A client's `timeout` option (up to 255 s) would hold its slot for minutes after
    // it went away: the server's own timeout applies to every transfer.
    .ignore_client_timeout()
    .max_send_retries(8)
    // blksize × windowsize is what a session holds in flight: bounded (see config).
    .block_size_limit(cfg.block_size_limit)
    .window_size_limit(cfg.window_size_limit);
    b.build().await.map_err(TftpError)
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
