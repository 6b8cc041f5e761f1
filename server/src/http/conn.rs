//! One connection of the node listener: each request's head is read here first; a
//! plain `GET` of a file nodes fetch whole (installer kernel and initrd, iPXE binaries,
//! driver packages) is answered with `sendfile(2)` from the page cache, no copy through
//! the process (as nginx's `sendfile on`); every other request is handed to hyper and
//! the router, one request at a time on the same keep-alive connection.
//!
//! Owns the connection's framing between requests; the decisions are in [`super::head`]
//! (which bytes form a request) and [`super::boot::whole_file`] (which file a path is).

use super::files::Activity;
use super::head::{self, Head, Parsed};
use crate::state::AppState;
use crate::workers::Workers;
use axum::Router;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The connection below hyper: bytes already read come first, and hyper may read no
/// more than the request it was given (`limit`), so the next request's bytes stay
/// here for the next head.
pub struct Framed {
    tcp: Activity<TcpStream>,
    buf: Vec<u8>,
    /// Bytes hyper may still read; `None`: the rest of the connection is hyper's.
    limit: Option<u64>,
}

impl Framed {
    fn new(tcp: Activity<TcpStream>) -> Self {
        Framed {
            tcp,
            buf: Vec::new(),
            limit: None,
        }
    }

    /// Reads until `buf` holds a head that [`head::parse`] can judge; `None` when the
    /// client closed the connection (or went quiet past `timeout` mid-head) first.
    async fn next_head(&mut self, timeout: Duration) -> io::Result<Option<Head>> {
        use tokio::io::AsyncReadExt;
        let mut started: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                match head::parse(&self.buf) {
                    Head::Partial => {}
                    verdict => return Ok(Some(verdict)),
                }
                started.get_or_insert_with(Instant::now);
            }
            let mut chunk = [0u8; 4096];
            let read = self.tcp.get_mut().read(&mut chunk);
            let n = match started {
                None => read.await?,
                Some(t) => {
                    let left = timeout.saturating_sub(t.elapsed());
                    match tokio::time::timeout(left, read).await {
                        Ok(r) => r?,
                        Err(_) => {
                            debug!("request head not complete within header_timeout");
                            return Ok(None);
                        }
                    }
                }
            };
            if n == 0 {
                return Ok(None);
            }
            self.tcp.touch();
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Framed {
    /// Reads and drops `n` bytes (at most 1 MiB; more and the connection is not worth
    /// keeping); whether they were all there.
    async fn skip(&mut self, mut n: u64) -> bool {
        use tokio::io::AsyncReadExt;
        if n > 1 << 20 {
            return false;
        }
        let from_buf = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
        self.buf.drain(..from_buf);
        n -= from_buf as u64;
        let mut chunk = [0u8; 4096];
        while n > 0 {
            let want = usize::try_from(n).unwrap_or(usize::MAX).min(chunk.len());
            match self.tcp.get_mut().read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return false,
                Ok(k) => n -= k as u64,
            }
        }
        true
    }
}

impl AsyncRead for Framed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let room = match this.limit {
            Some(0) => return Poll::Ready(Ok(())),
            Some(l) => out
                .remaining()
                .min(usize::try_from(l).unwrap_or(usize::MAX)),
            None => out.remaining(),
        };
        if !this.buf.is_empty() {
            let n = room.min(this.buf.len());
            out.put_slice(&this.buf[..n]);
            this.buf.drain(..n);
            if let Some(l) = &mut this.limit {
                *l -= n as u64;
            }
            return Poll::Ready(Ok(()));
        }
        if room == out.remaining() {
            let before = out.filled().len();
            let r = Pin::new(&mut this.tcp).poll_read(cx, out);
            if let Some(l) = &mut this.limit {
                *l -= (out.filled().len() - before) as u64;
            }
            return r;
        }
        // Less room than the caller offers: read into a buffer of that size.
        let mut tmp = vec![0u8; room];
        let mut small = ReadBuf::new(&mut tmp);
        let r = Pin::new(&mut this.tcp).poll_read(cx, &mut small);
        let n = small.filled().len();
        out.put_slice(&tmp[..n]);
        if let Some(l) = &mut this.limit {
            *l -= n as u64;
        }
        r
    }
}

impl AsyncWrite for Framed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Serves one connection until the client closes it, a request asks to close it, or
/// `cancel` fires between requests.
pub async fn serve(
    state: Arc<AppState>,
    app: Router,
    tcp: Activity<TcpStream>,
    peer: SocketAddr,
    cancel: CancellationToken,
    which: super::Listener,
    senders: Arc<Workers>,
) {
    let header_timeout = state.config.server.header_timeout;
    let mut io = Framed::new(tcp);
    if which == super::Listener::Admin {
        return rest_with_hyper(&state, &app, io, peer, &cancel).await;
    }
    loop {
        let head = tokio::select! {
            _ = cancel.cancelled() => return,
            h = io.next_head(header_timeout) => h,
        };
        let parsed = match head {
            Ok(Some(Head::Complete(p))) => p,
            // Hyper answers what we do not judge, for the rest of the connection.
            Ok(Some(_)) => return rest_with_hyper(&state, &app, io, peer, &cancel).await,
            Ok(None) => return,
            Err(e) => {
                debug!(%peer, error = %e, "http connection ended");
                return;
            }
        };
        let keep = parsed.keep_alive;
        let mut sent = false;
        if parsed.whole_get
            && let Some(path) =
                super::boot::whole_file(&state, &parsed.path, parsed.query.as_deref(), peer).await
        {
            let started = Instant::now();
            match send_whole(
                &mut io,
                &parsed,
                &path,
                state.config.server.idle_timeout,
                &senders,
            )
            .await
            {
                Ok(Some(bytes)) => {
                    sent = true;
                    state.metrics.http_requests.inc();
                    state.metrics.http_sendfile_bytes.add(bytes);
                    debug!(method = "GET", route = %parsed.path, status = 200, bytes, ms = started.elapsed().as_millis() as u64, sendfile = true, "http request");
                }
                // The file went away between the lookup and the open: the router says so.
                Ok(None) => {}
                Err(e) => {
                    debug!(%peer, error = %e, "http connection ended during sendfile");
                    return;
                }
            }
        }
        if !sent {
            io.limit = Some(parsed.len as u64 + parsed.body);
            io = match one_with_hyper(&state, &app, io, peer).await {
                Some(io) => io,
                None => return,
            };
        }
        if !keep {
            let _ = io.tcp.get_mut().shutdown().await;
            return;
        }
    }
}

/// The router as the service hyper calls, with the peer's address for the handlers.
fn service(
    app: &Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    use tower::Service;
    let app = app.clone();
    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(req).await }
    })
}

fn builder(state: &AppState) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.server.header_timeout)
        .keep_alive(true);
    b
}

/// Hands the rest of the connection to hyper and the router; `cancel` lets the
/// request in flight finish and closes the connection after it.
async fn rest_with_hyper(
    state: &Arc<AppState>,
    app: &Router,
    mut io: Framed,
    peer: SocketAddr,
    cancel: &CancellationToken,
) {
    io.limit = None;
    let conn =
        builder(state).serve_connection(hyper_util::rt::TokioIo::new(io), service(app, peer));
    tokio::pin!(conn);
    let mut shutting = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, error = %e, "http connection ended");
                }
                return;
            }
            _ = cancel.cancelled(), if !shutting => {
                shutting = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Hands one request (`io.limit` bytes) to hyper and the router; the connection back
/// when the response is written, for the next head.
async fn one_with_hyper(
    state: &Arc<AppState>,
    app: &Router,
    io: Framed,
    peer: SocketAddr,
) -> Option<Framed> {
    let mut b = builder(state);
    // The end of the request's bytes reads as the client's half-close: hyper still
    // writes the whole response, then gives the connection back.
    b.half_close(true);
    match b
        .serve_connection(hyper_util::rt::TokioIo::new(io), service(app, peer))
        .without_shutdown()
        .await
    {
        Ok(parts) => {
            let mut io = parts.io.into_inner();
            if !parts.read_buf.is_empty() {
                let mut back = parts.read_buf.to_vec();
                back.append(&mut io.buf);
                io.buf = back;
            }
            // A body the handler did not read: skip it, so the next head starts clean.
            let left = io.limit.take().unwrap_or(0);
            if left > 0 && !io.skip(left).await {
                return None;
            }
            Some(io)
        }
        Err(e) => {
            debug!(%peer, error = %e, "http connection ended");
            None
        }
    }
}

/// Writes the response head and the file with `sendfile(2)`; the bytes sent, or `None`
/// when the file cannot be opened (nothing was written).
async fn send_whole(
    io: &mut Framed,
    req: &Parsed,
    path: &std::path::Path,
    idle: Duration,
    senders: &Workers,
) -> io::Result<Option<u64>> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let len = meta.len();
    io.buf.drain(..req.len);
    let mut h = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {len}\r\naccept-ranges: bytes\r\n",
        super::files::content_type(path)
    );
    if let Some(d) = meta.modified().ok().and_then(super::files::http_date) {
        h.push_str(&format!(
            "last-modified: {}\r\n",
            d.to_str().unwrap_or_default()
        ));
    }
    if let Some(d) = super::files::http_date(std::time::SystemTime::now()) {
        h.push_str(&format!("date: {}\r\n", d.to_str().unwrap_or_default()));
    }
    match (req.keep_alive, req.http10) {
        (false, _) => h.push_str("connection: close\r\n"),
        (true, true) => h.push_str("connection: keep-alive\r\n"),
        (true, false) => {}
    }
    h.push_str("\r\n");
    io.tcp.get_mut().write_all(h.as_bytes()).await?;
    io.tcp.touch();
    let end = i64::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    send_on_thread(io, file, end, idle, senders).await?;
    Ok(Some(len))
}

/// Sends the file's `end` bytes on a pool thread ([`Workers`]) that blocks in
/// `sendfile` and `poll`: the kernel wakes that thread the moment the socket has room,
/// where a task on the runtime would wait for the reactor to wake it and a worker to
/// poll it, once per socket-buffer refill (10% more throughput here, one client or
/// twenty, see BENCHMARKS.md). The thread sends on a duplicate of the socket's
/// descriptor; the connection stays with this task, which waits for the thread.
async fn send_on_thread(
    io: &mut Framed,
    file: std::fs::File,
    end: i64,
    idle: Duration,
    senders: &Workers,
) -> io::Result<()> {
    use std::os::fd::AsFd;
    let sock = io.tcp.get_ref().as_fd().try_clone_to_owned()?;
    let clock = io.tcp.clock();
    let (tx, rx) = tokio::sync::oneshot::channel();
    senders.run(Box::new(move || {
        let _ = tx.send(send_blocking(&sock, &file, end, idle, &clock));
    }))?;
    rx.await
        .map_err(|_| io::Error::other("the send thread ended"))?
}

/// At most this much per `sendfile` call, so the connection's activity clock moves
/// while a large file goes out.
const SEND_CHUNK: usize = 4 << 20;

/// The blocking send loop: `sendfile` until the socket is full, `poll` until it has
/// room, for at most `idle` without progress (then the client stopped reading).
fn send_blocking(
    sock: &std::os::fd::OwnedFd,
    file: &std::fs::File,
    end: i64,
    idle: Duration,
    clock: &super::files::Clock,
) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let wait = PollTimeout::try_from(idle).unwrap_or(PollTimeout::MAX);
    let mut off: i64 = 0;
    while off < end {
        let want = usize::try_from(end - off)
            .unwrap_or(usize::MAX)
            .min(SEND_CHUNK);
        match nix::sys::sendfile::sendfile64(sock, file, Some(&mut off), want) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while it was being served",
                ));
            }
            Ok(_) => clock.touch(),
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, wait) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client stopped reading",
                        ));
                    }
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
