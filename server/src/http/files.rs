//! Whole-file responses for the large files nodes fetch (installer kernel and initrd,
//! iPXE binaries, the agent): a plain `GET` is answered with a body that reads the file
//! by position, a chunk at a time, straight into the buffer hyper sends; `HEAD`, `Range`
//! and conditional requests go to tower-http's `ServeFile`.
//!
//! Owns only the choice between the two and the body; no routing, no attribution.

pub use crate::chunks::{CHUNK, ChunkPool};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// A chunk in flight: hyper holds it as `Bytes`; dropping it returns the buffer.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<ChunkPool>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// A file body read by position. Served files are hot in the page cache (every node
/// fetches the same few), so a positional read completes without waiting on a disk and
/// is done in place, without a hop to the blocking pool and a second copy.
pub struct FileBody {
    file: std::fs::File,
    pos: u64,
    end: u64,
    pool: Arc<ChunkPool>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        let want = (self.end - self.pos).min(CHUNK as u64) as usize;
        let mut buf = self.pool.take();
        let n = match self.file.read_at(&mut buf[..want], self.pos) {
            Ok(0) => {
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while it was being served",
                ))));
            }
            Ok(n) => n,
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        self.pos += n as u64;
        let chunk = Chunk {
            buf,
            len: n,
            pool: self.pool.clone(),
        };
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.end - self.pos)
    }
}

/// True for a request that wants the whole file with no conditions: a `GET` without
/// `Range` or `If-*` headers.
pub fn wants_whole_file(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && !headers.contains_key(header::RANGE)
        && !headers.keys().any(|k| k.as_str().starts_with("if-"))
}

/// The Content-Type `ServeFile` would give the file (`.gz` is gzip; the rest are
/// binaries).
pub(super) fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// `Last-Modified` in the IMF-fixdate form of RFC 9110.
pub(super) fn http_date(t: std::time::SystemTime) -> Option<HeaderValue> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let s = time::OffsetDateTime::from(t).format(&fmt).ok()?;
    HeaderValue::from_str(&s).ok()
}

/// Serves `path` for `req`: the whole file with a [`FileBody`], or through `ServeFile`
/// for `HEAD`, ranges and conditional requests. A missing file is a 404.
pub async fn serve(pool: &Arc<ChunkPool>, path: &Path, req: Request) -> Response {
    if wants_whole_file(req.method(), req.headers())
        && let Ok(file) = std::fs::File::open(path)
        && let Ok(meta) = file.metadata()
        && meta.is_file()
    {
        let len = meta.len();
        let mut resp = Response::new(Body::new(FileBody {
            file,
            pos: 0,
            end: len,
            pool: pool.clone(),
        }));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(d) = meta.modified().ok().and_then(http_date) {
            h.insert(header::LAST_MODIFIED, d);
        }
        return resp;
    }
    match ServeFile::new(path).oneshot(req).await {
        Ok(r) => r.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A connection that records when it last moved a byte (milliseconds since `started`),
/// for the HTTP idle timeout.
pub struct Activity<T> {
    inner: T,
    last: Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
}

impl<T> Activity<T> {
    pub fn new(
        inner: T,
        last: Arc<std::sync::atomic::AtomicU64>,
        started: std::time::Instant,
    ) -> Self {
        Activity {
            inner,
            last,
            started,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Records that the connection moved a byte now.
    pub fn touch(&self) {
        self.clock().touch();
    }

    /// What [`Activity::touch`] writes to, for a thread that moves the connection's
    /// bytes outside this wrapper.
    pub fn clock(&self) -> Clock {
        Clock {
            last: self.last.clone(),
            started: self.started,
        }
    }
}

/// Records when a connection last moved a byte (see [`Activity`]); `Send`, for a
/// blocking thread.
#[derive(Clone)]
pub struct Clock {
    last: Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
}

impl Clock {
    /// Records that the connection moved a byte now.
    pub fn touch(&self) {
        self.last.store(
            self.started.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Activity<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn whole_file_is_served_in_chunks_with_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("initrd.gz");
        let data: Vec<u8> = (0..(CHUNK * 2 + 123)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let req = Request::builder().uri("/x").body(Body::empty()).unwrap();
        let pool = Arc::new(ChunkPool::default());
        let resp = serve(&pool, &p, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_LENGTH], data.len().to_string().as_str());
        assert_eq!(h[header::CONTENT_TYPE], "application/gzip");
        assert_eq!(h[header::ACCEPT_RANGES], "bytes");
        assert!(h[header::LAST_MODIFIED].to_str().unwrap().ends_with(" GMT"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), data.as_slice());
        assert_eq!(pool.idle(), 3, "every chunk came back");
    }

    #[tokio::test]
    async fn ranges_and_head_go_to_serve_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("linux");
        std::fs::write(&p, b"0123456789").unwrap();
        let req = Request::builder()
            .uri("/x")
            .header(header::RANGE, "bytes=2-4")
            .body(Body::empty())
            .unwrap();
        let pool = Arc::new(ChunkPool::default());
        let resp = serve(&pool, &p, req).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), b"234");
        assert!(!wants_whole_file(&Method::HEAD, &HeaderMap::new()));
        let missing = Request::builder().uri("/x").body(Body::empty()).unwrap();
        assert_eq!(
            serve(&pool, &dir.path().join("nope"), missing)
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
    }
}
