//! HTTP to the Debian mirror: bounded reads of signed metadata and resumable, verified
//! downloads of installer files.
//!
//! Owns the HTTP client (timeouts, the configured upstream proxy, no proxy from the
//! environment), retries and `Range` resumption. Never writes into the image store:
//! downloads go to a partial file the caller names, and a download only returns once the
//! whole file has the expected SHA-256.

use super::ImageError;
use super::release::{Keyring, Release, parse_sha256sums};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Metadata files (`InRelease`, `SHA256SUMS`, `Packages.gz`) are at most this large.
const METADATA_LIMIT: u64 = 64 << 20;

/// Limits of one download.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Attempts per file, the first included.
    pub attempts: u32,
    /// Pause before the second attempt; doubles each time, up to 4 s.
    pub backoff: Duration,
    /// Largest file accepted.
    pub max_file: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            attempts: 4,
            backoff: Duration::from_millis(250),
            max_file: 1 << 30,
        }
    }
}

/// Receives download progress (a terminal bar, plain lines, or nothing).
pub trait Progress: Send + Sync {
    /// A download of `file` starts or resumes at `from` of `total` bytes.
    fn start(&self, file: &str, from: u64, total: Option<u64>);
    /// `n` more bytes arrived.
    fn advance(&self, n: u64);
    /// The download ended, complete or not.
    fn end(&self);
    /// A one-line note (a verified signature, a retry).
    fn note(&self, line: &str);
}

/// Progress that is not shown.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
    fn note(&self, _: &str) {}
}

/// A verified `Release` and how it was verified.
#[derive(Clone, Debug)]
pub struct Chain {
    pub release: Release,
    /// Primary fingerprint of the signing key.
    pub signer: String,
    /// `InRelease` or `Release.gpg`.
    pub via: &'static str,
}

impl Chain {
    /// `InRelease signed by <fingerprint>`.
    pub fn describe(&self) -> String {
        format!("{} signed by {}", self.via, self.signer)
    }
}

/// A Debian mirror reached over HTTP.
pub struct Upstream {
    client: reqwest::Client,
    base: String,
    pub limits: Limits,
}

impl Upstream {
    /// A client for `mirror` (`http://host/debian`), through `proxy` when given.
    /// Proxy variables of the environment are ignored: set `images.proxy`.
    pub fn new(mirror: &str, proxy: Option<&str>) -> Result<Upstream, ImageError> {
        let base = mirror.trim_end_matches('/').to_string();
        if reqwest::Url::parse(&base).is_err()
            || !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err(ImageError::MirrorUrl { url: base });
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("rackseed/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if let Some(p) = proxy {
            b = b.proxy(reqwest::Proxy::all(p).map_err(|source| ImageError::Proxy {
                proxy: p.into(),
                source,
            })?);
        }
        let client = b.build().map_err(|source| ImageError::Proxy {
            proxy: proxy.unwrap_or("").into(),
            source,
        })?;
        Ok(Upstream {
            client,
            base,
            limits: Limits::default(),
        })
    }

    /// The mirror base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of `path` under `dists/<suite>/`.
    pub fn dist_url(&self, suite: &str, path: &str) -> String {
        format!("{}/dists/{suite}/{path}", self.base)
    }

    /// GET `url` into memory, at most `limit` bytes. `Ok(None)` on HTTP 404.
    async fn get_bounded(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>, ImageError> {
        let unreachable = |source| ImageError::Unreachable {
            url: url.into(),
            source,
        };
        let mut resp = self
            .client
            .get(url)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(ImageError::Status {
                url: url.into(),
                status: status.as_u16(),
            });
        }
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(ImageError::TooLarge {
                url: url.into(),
                limit,
            });
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(ImageError::TooLarge {
                    url: url.into(),
                    limit,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }

    async fn get_required(&self, url: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        self.get_bounded(url, limit)
            .await?
            .ok_or_else(|| ImageError::NotServed {
                url: url.into(),
                status: 404,
            })
    }

    /// The suite's `Release`, verified: `InRelease`, or `Release` + `Release.gpg` when the
    /// mirror has no `InRelease`. Refuses a `Release` of another suite or past its
    /// `Valid-Until`.
    pub async fn signed_release(
        &self,
        keyring: &Keyring,
        suite: &str,
    ) -> Result<Chain, ImageError> {
        let inrelease = self.dist_url(suite, "InRelease");
        let (verified, via, url) = match self.get_bounded(&inrelease, METADATA_LIMIT).await? {
            Some(bytes) => (
                keyring.verify_inrelease(&bytes, &inrelease)?,
                "InRelease",
                inrelease,
            ),
            None => {
                let url = self.dist_url(suite, "Release");
                let release = self.get_required(&url, METADATA_LIMIT).await?;
                let sig = self
                    .get_required(&self.dist_url(suite, "Release.gpg"), 1 << 20)
                    .await?;
                (
                    keyring.verify_detached(&release, &sig, &url)?,
                    "Release.gpg",
                    url,
                )
            }
        };
        let release = Release::parse(&verified.text).map_err(|message| ImageError::Release {
            url: url.clone(),
            message,
        })?;
        release
            .check(suite, std::time::SystemTime::now())
            .map_err(|message| ImageError::Release {
                url: url.clone(),
                message,
            })?;
        Ok(Chain {
            release,
            signer: verified.signer,
            via,
        })
    }

    /// A file under `dists/<suite>/` whose hash and size the signed `Release` lists,
    /// checked against them.
    pub async fn signed_file(
        &self,
        chain: &Chain,
        suite: &str,
        path: &str,
    ) -> Result<Vec<u8>, ImageError> {
        let url = self.dist_url(suite, path);
        let Some((hash, size)) = chain.release.sha256.get(path) else {
            return Err(ImageError::Release {
                url: self.dist_url(suite, chain.via),
                message: format!("the signed Release does not list `{path}`"),
            });
        };
        let bytes = match self.get_required(&url, (*size).min(METADATA_LIMIT)).await {
            Err(ImageError::TooLarge { .. }) => {
                return Err(ImageError::Mismatch {
                    url,
                    what: "the signed Release".into(),
                    expected: format!("sha256 {hash}, {size} bytes"),
                    actual: format!("more than {size} bytes"),
                });
            }
            other => other?,
        };
        let actual = super::sha256_hex(&bytes);
        if bytes.len() as u64 != *size || actual != *hash {
            return Err(ImageError::Mismatch {
                url,
                what: "the signed Release".into(),
                expected: format!("sha256 {hash}, {size} bytes"),
                actual: format!("sha256 {actual}, {} bytes", bytes.len()),
            });
        }
        Ok(bytes)
    }

    /// The installer's `SHA256SUMS` for `arch`, checked against the signed `Release`:
    /// path under `images/` (without `./`) → sha256.
    pub async fn installer_sums(
        &self,
        chain: &Chain,
        suite: &str,
        arch: &str,
    ) -> Result<BTreeMap<String, String>, ImageError> {
        let path = sums_path(arch);
        let bytes = self.signed_file(chain, suite, &path).await?;
        parse_sha256sums(&String::from_utf8_lossy(&bytes)).map_err(|message| ImageError::Release {
            url: self.dist_url(suite, &path),
            message,
        })
    }

    /// Downloads `url` into `partial`, resuming what is already there with `Range`, and
    /// retrying interrupted transfers. Returns the size once the whole file has SHA-256
    /// `expected`; a file that does not is deleted and refused.
    pub async fn download_verified(
        &self,
        url: &str,
        partial: &Path,
        expected: &str,
        label: &str,
        progress: &dyn Progress,
    ) -> Result<u64, ImageError> {
        let write_err = |source| ImageError::Write {
            path: partial.display().to_string(),
            source,
        };
        let mut last: Option<Box<dyn std::error::Error + Send + Sync>> = None;
        let mut total: Option<u64> = None;
        let mut restarted = false;
        let mut attempt = 0;
        if let Some(size) = complete(partial, expected).await {
            return Ok(size);
        }
        while attempt < self.limits.attempts {
            if attempt > 0 {
                let pause = self.limits.backoff * 2u32.saturating_pow(attempt - 1);
                tokio::time::sleep(pause.min(Duration::from_secs(4))).await;
            }
            attempt += 1;
            let have = tokio::fs::metadata(partial)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if total.is_some_and(|t| have >= t) {
                // Complete on disk: only the hash is left to check.
            } else {
                let mut req = self.client.get(url);
                if have > 0 {
                    req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
                }
                let mut resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        progress.note(&format!("{label}: {}; retrying", crate::error_chain(&e)));
                        last = Some(Box::new(e));
                        continue;
                    }
                };
                let status = resp.status();
                let from = match status {
                    reqwest::StatusCode::PARTIAL_CONTENT if have > 0 => {
                        match content_range(&resp) {
                            Some((start, len)) if start == have => {
                                total = len;
                                have
                            }
                            _ => {
                                remove(partial).await.map_err(write_err)?;
                                last = Some("the mirror answered with another range".into());
                                continue;
                            }
                        }
                    }
                    reqwest::StatusCode::OK => {
                        total = resp.content_length();
                        0
                    }
                    reqwest::StatusCode::RANGE_NOT_SATISFIABLE => {
                        if let Some(size) = complete(partial, expected).await {
                            return Ok(size);
                        }
                        remove(partial).await.map_err(write_err)?;
                        last = Some("the partial file is longer than the file".into());
                        continue;
                    }
                    reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE => {
                        return Err(ImageError::NotServed {
                            url: url.into(),
                            status: status.as_u16(),
                        });
                    }
                    s if s.is_server_error() => {
                        last = Some(format!("HTTP {}", s.as_u16()).into());
                        continue;
                    }
                    s => {
                        return Err(ImageError::Status {
                            url: url.into(),
                            status: s.as_u16(),
                        });
                    }
                };
                if total.is_some_and(|t| t > self.limits.max_file) {
                    return Err(ImageError::TooLarge {
                        url: url.into(),
                        limit: self.limits.max_file,
                    });
                }
                if from > 0 {
                    progress.note(&format!("{label}: resuming at byte {from}"));
                }
                let mut file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(from > 0)
                    .write(true)
                    .truncate(from == 0)
                    .open(partial)
                    .await
                    .map_err(write_err)?;
                progress.start(label, from, total);
                let mut got = from;
                let max = self.limits.max_file;
                let streamed: Result<(), Stop> = async {
                    while let Some(chunk) = resp.chunk().await.map_err(Stop::Net)? {
                        if got + chunk.len() as u64 > max {
                            return Err(Stop::TooLarge);
                        }
                        file.write_all(&chunk).await.map_err(Stop::Disk)?;
                        got += chunk.len() as u64;
                        progress.advance(chunk.len() as u64);
                    }
                    Ok(())
                }
                .await;
                progress.end();
                file.flush().await.map_err(write_err)?;
                file.sync_all().await.map_err(write_err)?;
                drop(file);
                let streamed = match streamed {
                    Err(Stop::Disk(e)) => return Err(write_err(e)),
                    Err(Stop::TooLarge) => {
                        remove(partial).await.map_err(write_err)?;
                        return Err(ImageError::TooLarge {
                            url: url.into(),
                            limit: max,
                        });
                    }
                    Err(Stop::Net(e)) => Err(e),
                    Ok(()) => Ok(()),
                };
                if let Err(e) = streamed {
                    progress.note(&format!(
                        "{label}: stopped at byte {got}: {}; retrying",
                        crate::error_chain(&e)
                    ));
                    last = Some(Box::new(e));
                    continue;
                }
                if total.is_some_and(|t| got < t) {
                    progress.note(&format!("{label}: ended early at byte {got}; retrying"));
                    last = Some("the connection closed before the end of the file".into());
                    continue;
                }
            }
            let partial_owned = partial.to_path_buf();
            let (actual, size) =
                tokio::task::spawn_blocking(move || super::sha256_file(&partial_owned))
                    .await
                    .map_err(|e| write_err(std::io::Error::other(e)))??;
            if actual == expected {
                return Ok(size);
            }
            remove(partial).await.map_err(write_err)?;
            if have > 0 && !restarted {
                // A resumed partial may hold stale bytes of an older file: start over once.
                restarted = true;
                total = None;
                attempt = 0;
                progress.note(&format!(
                    "{label}: resumed file does not verify; downloading it again"
                ));
                continue;
            }
            return Err(ImageError::Mismatch {
                url: url.into(),
                what: "SHA256SUMS".into(),
                expected: format!("sha256 {expected}"),
                actual: format!("sha256 {actual} ({size} bytes)"),
            });
        }
        let got = tokio::fs::metadata(partial)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        Err(ImageError::Interrupted {
            url: url.into(),
            got,
            total: total.map_or("an unknown number of".into(), |t| t.to_string()),
            attempts: attempt,
            source: last,
        })
    }
}

/// The path of the installer's `SHA256SUMS` under `dists/<suite>/`.
pub fn sums_path(arch: &str) -> String {
    format!("main/installer-{arch}/current/images/SHA256SUMS")
}

/// `Content-Range: bytes START-END/TOTAL` → (start, total).
fn content_range(resp: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// The size of `partial` when it is already the whole file with SHA-256 `expected`.
async fn complete(partial: &Path, expected: &str) -> Option<u64> {
    let p = partial.to_path_buf();
    tokio::fs::metadata(&p).await.ok()?;
    let (actual, size) = tokio::task::spawn_blocking(move || super::sha256_file(&p))
        .await
        .ok()?
        .ok()?;
    (actual == expected).then_some(size)
}

async fn remove(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Why streaming a response body stopped early.
enum Stop {
    Net(reqwest::Error),
    Disk(std::io::Error),
    TooLarge,
}
