//! Reading an origin: an HTTP(S) server or CDN, or a local folder.
//!
//! Every response body byte is counted in [`Traffic`], including error bodies, so reports of
//! bytes on the wire are honest.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::{Error, Result};

/// Counts requests and response body bytes.
#[derive(Debug, Default)]
pub struct Traffic {
    bytes: AtomicU64,
    requests: AtomicU64,
}

impl Traffic {
    /// Response body bytes received.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Requests sent.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn add_bytes(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where releases come from.
#[derive(Debug, Clone)]
pub struct Origin {
    kind: Kind,
    traffic: Arc<Traffic>,
    min_bytes_per_sec: u64,
}

/// How long a response may take before its average rate must reach the minimum.
const SLOW_GRACE: Duration = Duration::from_secs(10);

/// Fails a response whose body arrives slower, on average after [`SLOW_GRACE`], than the
/// minimum rate: a stalled link or a slow-retrieval attack (a server dribbling bytes just often
/// enough to beat the read timeout) must not hold an update forever.
#[derive(Debug)]
struct RateGuard {
    started: std::time::Instant,
    received: u64,
    min_bytes_per_sec: u64,
}

impl RateGuard {
    fn new(min_bytes_per_sec: u64) -> Self {
        Self {
            started: std::time::Instant::now(),
            received: 0,
            min_bytes_per_sec,
        }
    }

    fn add(&mut self, n: usize, url: &str) -> Result<()> {
        self.received += n as u64;
        let elapsed = self.started.elapsed();
        if elapsed < SLOW_GRACE || self.min_bytes_per_sec == 0 {
            return Ok(());
        }
        let rate = self.received as f64 / elapsed.as_secs_f64();
        if rate < self.min_bytes_per_sec as f64 {
            return Err(Error::Http {
                url: url.to_owned(),
                reason: format!(
                    "too slow: {rate:.0} bytes/s over {:.0} s, under the minimum of {} bytes/s \
                     (a stalled link, or a server withholding data)",
                    elapsed.as_secs_f64(),
                    self.min_bytes_per_sec
                ),
                transient: false,
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Http {
        client: reqwest::Client,
        base: String,
    },
    Dir {
        root: PathBuf,
    },
}

/// Attempts for whole-object GETs before giving up on transient errors.
const GET_ATTEMPTS: u32 = 4;

impl Origin {
    /// Parses `http(s)://...`, `file://...` or a plain folder path.
    pub fn parse(spec: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidOrigin {
            origin: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let kind = if spec.starts_with("http://") || spec.starts_with("https://") {
            let url = reqwest::Url::parse(spec).map_err(|e| invalid(&e.to_string()))?;
            let mut base = url.to_string();
            if !base.ends_with('/') {
                base.push('/');
            }
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(30))
                .user_agent(concat!("relsync/", env!("CARGO_PKG_VERSION")))
                // A redirect's body and second request would go uncounted; origins are static.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| invalid(&e.to_string()))?;
            Kind::Http { client, base }
        } else {
            let path = spec.strip_prefix("file://").unwrap_or(spec);
            if path.contains("://") {
                return Err(invalid(
                    "unsupported scheme (use http, https, file or a path)",
                ));
            }
            let root = PathBuf::from(path);
            if !root.is_dir() {
                return Err(invalid("no such directory"));
            }
            Kind::Dir { root }
        };
        Ok(Self {
            kind,
            traffic: Arc::default(),
            min_bytes_per_sec: 0,
        })
    }

    /// Fails any HTTP response whose average rate, after its first 10 s, is under
    /// `bytes_per_sec` (0: no minimum).
    pub fn set_min_rate(&mut self, bytes_per_sec: u64) {
        self.min_bytes_per_sec = bytes_per_sec;
    }

    /// The request and byte counters.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// A printable location for `path`.
    pub fn url(&self, path: &str) -> String {
        match &self.kind {
            Kind::Http { base, .. } => format!("{base}{path}"),
            Kind::Dir { root } => root.join(path).display().to_string(),
        }
    }

    /// Fetches a whole object of at most `limit` bytes, retrying transient failures.
    pub async fn get(&self, path: &str, what: &'static str, limit: u64) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.get_once(path, what, limit).await {
                Err(Error::Http {
                    transient: true, ..
                }) if attempt < GET_ATTEMPTS => backoff(attempt).await,
                other => return other,
            }
        }
    }

    async fn get_once(&self, path: &str, what: &'static str, limit: u64) -> Result<Vec<u8>> {
        let url = self.url(path);
        self.traffic.add_request();
        match &self.kind {
            Kind::Dir { root } => {
                let file = root.join(path);
                let traffic = self.traffic.clone();
                blocking(move || {
                    let mut f = std::fs::File::open(&file).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Error::NotFound {
                                what,
                                url: url.clone(),
                            }
                        } else {
                            Error::io("reading", &file)(e)
                        }
                    })?;
                    let mut out = Vec::new();
                    (&mut f)
                        .take(limit + 1)
                        .read_to_end(&mut out)
                        .map_err(Error::io("reading", &file))?;
                    traffic.add_bytes(out.len());
                    if out.len() as u64 > limit {
                        return Err(Error::TooLarge { what, url, limit });
                    }
                    Ok(out)
                })
                .await
            }
            Kind::Http { client, .. } => {
                let mut response = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| transport(&url, e))?;
                let status = response.status();
                if status != StatusCode::OK {
                    self.drain(&mut response).await;
                    return Err(status_error(status, what, url));
                }
                let mut out = Vec::new();
                let mut guard = RateGuard::new(self.min_bytes_per_sec);
                while let Some(chunk) = response.chunk().await.map_err(|e| transport(&url, e))? {
                    self.traffic.add_bytes(chunk.len());
                    guard.add(chunk.len(), &url)?;
                    if (out.len() + chunk.len()) as u64 > limit {
                        return Err(Error::TooLarge { what, url, limit });
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(out)
            }
        }
    }

    /// Starts fetching `len` bytes at `start` of `path` (one attempt).
    pub async fn get_range(&self, path: &str, start: u64, len: u64) -> Result<RangeBody> {
        let url = self.url(path);
        if len == 0 {
            return Err(Error::Http {
                url,
                reason: "empty range".into(),
                transient: false,
            });
        }
        self.traffic.add_request();
        match &self.kind {
            Kind::Dir { root } => {
                let file = root.join(path);
                let bytes = blocking(move || {
                    let mut f = std::fs::File::open(&file).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Error::NotFound {
                                what: "pack",
                                url: url.clone(),
                            }
                        } else {
                            Error::io("reading", &file)(e)
                        }
                    })?;
                    f.seek(SeekFrom::Start(start))
                        .map_err(Error::io("reading", &file))?;
                    let mut out = Vec::with_capacity(len as usize);
                    f.take(len)
                        .read_to_end(&mut out)
                        .map_err(Error::io("reading", &file))?;
                    Ok(Bytes::from(out))
                })
                .await?;
                Ok(RangeBody {
                    inner: RangeInner::Bytes(Some(bytes)),
                    traffic: self.traffic.clone(),
                })
            }
            Kind::Http { client, .. } => {
                let end = start + len - 1;
                let mut response = client
                    .get(&url)
                    .header(reqwest::header::RANGE, format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| transport(&url, e))?;
                let status = response.status();
                if status == StatusCode::OK {
                    return Err(Error::Http {
                        url,
                        reason: "origin ignored the Range header (200 instead of 206)".into(),
                        transient: false,
                    });
                }
                if status != StatusCode::PARTIAL_CONTENT {
                    self.drain(&mut response).await;
                    return Err(status_error(status, "pack", url));
                }
                let expected = format!("bytes {start}-{end}/");
                let content_range = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if !content_range.starts_with(&expected) {
                    return Err(Error::Http {
                        url,
                        reason: format!(
                            "Content-Range {content_range:?} is not the range asked for"
                        ),
                        transient: false,
                    });
                }
                Ok(RangeBody {
                    inner: RangeInner::Http(response, url, RateGuard::new(self.min_bytes_per_sec)),
                    traffic: self.traffic.clone(),
                })
            }
        }
    }

    /// Reads and counts a small error body, so the byte count matches the server's.
    async fn drain(&self, response: &mut reqwest::Response) {
        let mut seen = 0usize;
        while let Ok(Some(chunk)) = response.chunk().await {
            self.traffic.add_bytes(chunk.len());
            seen += chunk.len();
            if seen > 64 * 1024 {
                break;
            }
        }
    }
}

/// The body of a range response, read piece by piece.
#[derive(Debug)]
pub struct RangeBody {
    inner: RangeInner,
    traffic: Arc<Traffic>,
}

#[derive(Debug)]
enum RangeInner {
    Http(reqwest::Response, String, RateGuard),
    Bytes(Option<Bytes>),
}

impl RangeBody {
    /// The next piece of the body, or `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        let piece = match &mut self.inner {
            RangeInner::Bytes(bytes) => bytes.take(),
            RangeInner::Http(response, url, _) => {
                response.chunk().await.map_err(|e| transport(url, e))?
            }
        };
        if let Some(piece) = &piece {
            // Counted before any refusal, so every byte received is accounted for.
            self.traffic.add_bytes(piece.len());
            if let RangeInner::Http(_, url, guard) = &mut self.inner {
                guard.add(piece.len(), url)?;
            }
        }
        Ok(piece)
    }
}

fn transport(url: &str, e: reqwest::Error) -> Error {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        reason = format!("{reason}: {inner}");
        source = inner.source();
    }
    Error::Http {
        url: url.to_owned(),
        reason,
        transient: true,
    }
}

fn status_error(status: StatusCode, what: &'static str, url: String) -> Error {
    if status == StatusCode::NOT_FOUND {
        return Error::NotFound { what, url };
    }
    Error::Http {
        url,
        reason: format!("HTTP {status}"),
        transient: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
    }
}

/// Sleeps before retry `attempt` (1-based): exponential with jitter, capped at 5 s.
pub(crate) async fn backoff(attempt: u32) {
    let base_ms = 200u64.saturating_mul(1 << attempt.min(5)).min(5_000);
    let mut noise = [0u8; 2];
    let jitter = match getrandom::fill(&mut noise) {
        Ok(()) => u64::from(u16::from_le_bytes(noise)) % (base_ms / 2 + 1),
        Err(_) => 0,
    };
    tokio::time::sleep(Duration::from_millis(base_ms / 2 + jitter)).await;
}

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store(format!("worker thread failed: {e}")))?
}
