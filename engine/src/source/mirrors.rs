//! An origin as its mirrors: requests go to the active mirror. A failure there (a transient
//! one, a 404 of an object a lagging mirror lacks, or a bad answer) moves them to the next
//! mirror, and the active mirror stays wherever requests last succeeded. Mirrors are
//! untrusted like any origin: what they serve is verified the same way.
//!
//! What an answer means is decided here, the same for every [`Source`]: the minimum rate
//! ([`RateGuard`]), `Retry-After`, whole-object answers to range requests, and the error
//! classes ([`is_transient`], [`is_mirror_failure`]).
//!
//! Every response body byte is counted in [`Traffic`], including error bodies and what a
//! server that ignores `Range` sends before the range, so reports of bytes on the wire are
//! honest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use tracing::{debug, warn};

use super::range::{RangeBody, Window};
use super::{Answer, Opening, Refusal, Source};
use crate::config::OriginConfig;
use crate::{Error, FetchConfig, Result};

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

    pub(super) fn add_bytes(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where releases come from: the mirrors of [`OriginConfig`], ready to read.
///
/// Cloning is cheap; clones share the counters, the active mirror and what is known about
/// each mirror.
#[derive(Debug, Clone)]
pub struct Origin {
    mirrors: Arc<[Mirror]>,
    /// Index of the mirror requests go to.
    active: Arc<AtomicUsize>,
    traffic: Arc<Traffic>,
    min_bytes_per_sec: u64,
}

#[derive(Debug)]
struct Mirror {
    source: Arc<dyn Source>,
    /// `RANGES_*`: what this mirror did with a Range header.
    ranges: AtomicU8,
    /// No request goes to this mirror before then: the wait its last `Retry-After` asked for.
    not_before: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// Not known yet whether the mirror honours Range headers.
const RANGES_UNKNOWN: u8 = 0;
/// The mirror answered a range request with `206`.
const RANGES_HONOURED: u8 = 1;
/// The mirror answered a range request with the whole object (`200`).
const RANGES_IGNORED: u8 = 2;

/// How long a response may take before its average rate must reach the minimum.
const SLOW_GRACE: Duration = Duration::from_secs(10);

/// The longest wait a server's `Retry-After` may ask for. A `503` or `429` asking for longer
/// fails its mirror at once and for the rest of the request (no retry there): requests move
/// to the next mirror, and with none left the error names the `Retry-After`. An update is not
/// held for an hour because one server asked; the next run tries again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Rounds over the mirrors for whole-object GETs before giving up on transient errors.
const GET_ATTEMPTS: u32 = 4;

/// Fails a response whose body arrives slower, on average after [`SLOW_GRACE`], than the
/// minimum rate: a stalled link or a slow-retrieval attack (a server dribbling bytes just often
/// enough to beat the read timeout) must not hold an update forever. The clock starts when the
/// request is sent, so headers that never come, or come a byte at a time, fail the same way,
/// and a stall is noticed when the rate drops under the minimum, not at the next byte.
#[derive(Debug)]
pub(super) struct RateGuard {
    started: tokio::time::Instant,
    received: u64,
    min_bytes_per_sec: u64,
}

impl RateGuard {
    fn new(min_bytes_per_sec: u64) -> Self {
        Self {
            started: tokio::time::Instant::now(),
            received: 0,
            min_bytes_per_sec,
        }
    }

    /// `n` more bytes arrived: fails once the average rate is under the minimum.
    pub(super) fn add(&mut self, n: usize, url: &str) -> Result<()> {
        self.received += n as u64;
        let elapsed = self.started.elapsed();
        if elapsed < SLOW_GRACE || self.min_bytes_per_sec == 0 {
            return Ok(());
        }
        if (self.received as f64) < self.min_bytes_per_sec as f64 * elapsed.as_secs_f64() {
            return Err(self.too_slow(url));
        }
        Ok(())
    }

    /// When the average rate falls under the minimum unless more bytes arrive (never before
    /// the grace); `None` without a minimum.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        if self.min_bytes_per_sec == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_bytes_per_sec as f64);
        Some(self.started + earned.max(SLOW_GRACE))
    }

    /// Awaits `step` (the response headers, or the next piece of the body), failing at the
    /// [`deadline`](Self::deadline).
    pub(super) async fn bound<T>(&self, step: impl Future<Output = T>, url: &str) -> Result<T> {
        match self.deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, step)
                .await
                .map_err(|_| self.too_slow(url)),
            None => Ok(step.await),
        }
    }

    fn too_slow(&self, url: &str) -> Error {
        let elapsed = self.started.elapsed().as_secs_f64();
        Error::Http {
            url: url.to_owned(),
            reason: format!(
                "too slow: {} bytes in {elapsed:.0} s ({:.0} bytes/s), under the minimum of {} \
                 bytes/s (a stalled link, or a server withholding data)",
                self.received,
                self.received as f64 / elapsed.max(f64::MIN_POSITIVE),
                self.min_bytes_per_sec
            ),
            transient: false,
        }
    }
}

impl Origin {
    /// One mirror: parses `http(s)://...`, `file://...` or a plain folder path.
    pub fn parse(spec: &str) -> Result<Self> {
        Self::mirrors(&[spec.to_owned()])
    }

    /// Several mirrors serving the same files, tried in this order.
    pub fn mirrors(specs: &[String]) -> Result<Self> {
        let fetch = FetchConfig {
            min_bytes_per_sec: 0,
            ..FetchConfig::default()
        };
        Self::open(&specs.into(), &fetch)
    }

    /// The mirrors of `config`, with connections pooled for `fetch.max_parallel_requests`
    /// requests at once and `fetch.min_bytes_per_sec` as the minimum rate.
    pub fn open(config: &OriginConfig, fetch: &FetchConfig) -> Result<Self> {
        let mut opening = Opening {
            config,
            fetch,
            http_client: None,
        };
        let sources = config
            .mirrors
            .iter()
            .map(|spec| super::open(spec, &mut opening))
            .collect::<Result<Vec<_>>>()?;
        Self::of_sources(sources, fetch.min_bytes_per_sec)
    }

    /// An origin of `sources`, tried in this order, with `min_bytes_per_sec` as the minimum
    /// rate (0: none).
    pub(crate) fn of_sources(
        sources: Vec<Arc<dyn Source>>,
        min_bytes_per_sec: u64,
    ) -> Result<Self> {
        if sources.is_empty() {
            return Err(super::invalid_spec("", "no origin given"));
        }
        let mirrors: Vec<Mirror> = sources
            .into_iter()
            .map(|source| Mirror {
                source,
                ranges: AtomicU8::new(RANGES_UNKNOWN),
                not_before: std::sync::Mutex::new(None),
            })
            .collect();
        Ok(Self {
            mirrors: mirrors.into(),
            active: Arc::default(),
            traffic: Arc::default(),
            min_bytes_per_sec,
        })
    }

    /// Fails any HTTP response whose average rate, after its first 10 s, is under
    /// `bytes_per_sec` (0: no minimum).
    pub fn set_min_rate(&mut self, bytes_per_sec: u64) {
        self.min_bytes_per_sec = bytes_per_sec;
    }

    /// The request and byte counters (shared by every mirror).
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// A printable location for `path` on the active mirror.
    pub fn url(&self, path: &str) -> String {
        self.url_on(self.active(), path)
    }

    /// How many mirrors there are.
    pub(crate) fn mirror_count(&self) -> usize {
        self.mirrors.len()
    }

    /// The mirror requests go to now.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed) % self.mirrors.len()
    }

    /// `path` on mirror `mirror`.
    pub(crate) fn url_on(&self, mirror: usize, path: &str) -> String {
        self.mirrors[mirror].source.url(path)
    }

    /// The first mirror from the active one on that `usable` accepts.
    pub(crate) fn pick(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.mirrors.len();
        let first = self.active();
        (0..n).map(|k| (first + k) % n).find(|&i| usable(i))
    }

    /// Mirror `mirror` failed: requests move to the next one. Requests that failed there at
    /// the same time move it once, not once each.
    pub(crate) fn move_on_from(&self, mirror: usize) {
        let n = self.mirrors.len();
        if n > 1 {
            let _ = self.active.compare_exchange(
                mirror,
                (mirror + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether the active mirror is known to answer range requests with whole objects.
    pub(crate) fn ignores_ranges(&self) -> bool {
        self.mirrors[self.active()].ranges.load(Ordering::Relaxed) == RANGES_IGNORED
    }

    /// Whether the active mirror is known to honour range requests (a folder always does).
    pub(crate) fn honours_ranges(&self) -> bool {
        let mirror = &self.mirrors[self.active()];
        mirror.source.always_honours_ranges()
            || mirror.ranges.load(Ordering::Relaxed) == RANGES_HONOURED
    }

    /// Fetches a whole object of at most `limit` bytes. Every mirror is tried in a round,
    /// from the active one on; rounds repeat, with a backoff, while a mirror failed in a way
    /// a retry may cure. The mirror that answers becomes the active one.
    ///
    /// A `503` or `429` with `Retry-After` holds back that mirror's requests (these and any
    /// other) for as long as it asks, so the next try waits the longer of the backoff and the
    /// `Retry-After`. One asking for more than 30 s fails the mirror at once: the next mirror
    /// is tried, and with none left the error names the `Retry-After`.
    pub async fn get(&self, path: &str, what: &'static str, limit: u64) -> Result<Vec<u8>> {
        let n = self.mirrors.len();
        let mut failures: Vec<Option<Error>> = (0..n).map(|_| None).collect();
        let mut round = 0;
        loop {
            round += 1;
            let first = self.active();
            for i in (0..n).map(|k| (first + k) % n) {
                if failures[i].as_ref().is_some_and(|e| !is_transient(e)) {
                    continue;
                }
                match self.get_once(i, path, what, limit).await {
                    Ok(bytes) => {
                        self.active.store(i, Ordering::Relaxed);
                        return Ok(bytes);
                    }
                    Err(err) => {
                        if n > 1 {
                            warn!(error = %err, "mirror failed");
                        }
                        self.move_on_from(i);
                        failures[i] = Some(err);
                    }
                }
            }
            let retry = failures.iter().flatten().any(is_transient);
            if !retry || round >= GET_ATTEMPTS {
                return Err(self.every_mirror_failed(path, what, failures));
            }
            backoff(round).await;
        }
    }

    /// The error for `path` once every mirror failed: with one mirror, its error; with
    /// several, one naming each mirror and why it failed.
    pub(crate) fn every_mirror_failed(
        &self,
        path: &str,
        what: &'static str,
        failures: Vec<Option<Error>>,
    ) -> Error {
        let mut failures: Vec<(usize, Error)> = failures
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| e.map(|e| (i, e)))
            .collect();
        if failures.len() <= 1 {
            return match failures.pop() {
                Some((_, err)) => err,
                None => Error::Http {
                    url: self.url(path),
                    reason: "no mirror was tried".into(),
                    transient: false,
                },
            };
        }
        if failures
            .iter()
            .all(|(_, e)| matches!(e, Error::NotFound { .. }))
        {
            let urls: Vec<String> = failures
                .iter()
                .map(|(i, _)| self.url_on(*i, path))
                .collect();
            return Error::NotFound {
                what,
                url: urls.join(", nor at "),
            };
        }
        let transient = failures.iter().any(|(_, e)| is_transient(e));
        let reasons: Vec<String> = failures
            .iter()
            .map(|(i, e)| {
                let url = self.url_on(*i, path);
                match e {
                    Error::Http { reason, .. } => format!("{url}: {reason}"),
                    Error::NotFound { .. } => format!("{url}: not found"),
                    other => format!("{url}: {other}"),
                }
            })
            .collect();
        Error::Http {
            url: format!("{path} from {} mirrors", failures.len()),
            reason: format!("every mirror failed: {}", reasons.join("; ")),
            transient,
        }
    }

    /// One GET of a whole object on mirror `mirror`.
    async fn get_once(
        &self,
        mirror: usize,
        path: &str,
        what: &'static str,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let url = self.url_on(mirror, path);
        self.traffic.add_request();
        self.ready(mirror).await;
        let mut guard = RateGuard::new(self.min_bytes_per_sec);
        let source = &self.mirrors[mirror].source;
        let answer = guard.bound(source.get(path, limit), &url).await??;
        let mut body = match answer {
            Answer::Whole { body, .. } => body,
            Answer::Part { body, .. } => {
                let status = StatusCode::PARTIAL_CONTENT;
                let refusal = Refusal {
                    status,
                    retry_after: None,
                    body,
                };
                return Err(self.refused(mirror, refusal, what, url).await);
            }
            Answer::Refused(refusal) => {
                return Err(self.refused(mirror, refusal, what, url).await);
            }
        };
        let mut out = Vec::new();
        while let Some(chunk) = guard.bound(body.next(), &url).await?? {
            self.traffic.add_bytes(chunk.len());
            guard.add(chunk.len(), &url)?;
            if (out.len() + chunk.len()) as u64 > limit {
                return Err(Error::TooLarge { what, url, limit });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Starts fetching `len` bytes at `start` of `path`, an object of `object_len` bytes,
    /// from the active mirror (one attempt). A failure moves later requests to the next
    /// mirror.
    ///
    /// A server that ignores the Range header and answers with the whole object still
    /// yields exactly the range: the bytes before it are received (and counted) but
    /// skipped, and reading stops after it. Such an answer longer than `object_len`, or a
    /// `206` for another range, fails. A `Retry-After` holds back the mirror's next requests
    /// as for [`get`](Self::get).
    pub async fn get_range(
        &self,
        path: &str,
        start: u64,
        len: u64,
        object_len: u64,
    ) -> Result<RangeBody> {
        let mirror = self.active();
        let body = self
            .get_range_on(mirror, path, start, len, object_len)
            .await;
        if body.is_err() {
            self.move_on_from(mirror);
        }
        body
    }

    /// [`get_range`](Self::get_range) on mirror `mirror`, leaving the active mirror alone.
    pub(crate) async fn get_range_on(
        &self,
        mirror: usize,
        path: &str,
        start: u64,
        len: u64,
        object_len: u64,
    ) -> Result<RangeBody> {
        let url = self.url_on(mirror, path);
        if len == 0 {
            return Err(Error::Http {
                url,
                reason: "empty range".into(),
                transient: false,
            });
        }
        self.traffic.add_request();
        self.ready(mirror).await;
        let guard = RateGuard::new(self.min_bytes_per_sec);
        let source = &self.mirrors[mirror].source;
        let answer = guard
            .bound(source.get_range(path, start, len), &url)
            .await??;
        let ranges = &self.mirrors[mirror].ranges;
        let (body, window) = match answer {
            Answer::Whole {
                len: announced,
                body,
            } => {
                let window = Window::new(start, start + len, object_len);
                if let Some(announced) = announced {
                    window
                        .check_length(announced)
                        .map_err(|reason| Error::Http {
                            url: url.clone(),
                            reason,
                            transient: false,
                        })?;
                }
                if ranges.swap(RANGES_IGNORED, Ordering::Relaxed) != RANGES_IGNORED {
                    warn!(
                        mirror = %source.url(""),
                        "the mirror ignores Range headers (200 instead of 206): each \
                         request downloads its pack from the start"
                    );
                }
                (body, Some((window, announced)))
            }
            Answer::Part {
                content_range,
                body,
            } => {
                let expected = format!("bytes {start}-{}/", start + len - 1);
                if !content_range.starts_with(&expected) {
                    return Err(Error::Http {
                        url,
                        reason: format!(
                            "Content-Range {content_range:?} is not the range asked for"
                        ),
                        transient: false,
                    });
                }
                let _ = ranges.compare_exchange(
                    RANGES_UNKNOWN,
                    RANGES_HONOURED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                (body, None)
            }
            Answer::Refused(refusal) => {
                return Err(self.refused(mirror, refusal, "pack", url).await);
            }
        };
        Ok(RangeBody::new(
            body,
            url,
            guard,
            window,
            self.traffic.clone(),
        ))
    }

    /// The error for an answer whose status is not the one asked for. Its small body is read
    /// and counted, so the byte count matches the server's (for at most [`SLOW_GRACE`]). A
    /// `503` or `429` with a `Retry-After` of at most [`MAX_RETRY_AFTER`] holds back the
    /// mirror's next requests that long.
    async fn refused(
        &self,
        mirror: usize,
        mut refusal: Refusal,
        what: &'static str,
        url: String,
    ) -> Error {
        let retry_after = retry_after(refusal.status, refusal.retry_after.as_deref());
        let drain = async {
            let mut seen = 0usize;
            while let Ok(Some(chunk)) = refusal.body.next().await {
                self.traffic.add_bytes(chunk.len());
                seen += chunk.len();
                if seen > 64 * 1024 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(SLOW_GRACE, drain).await;
        let err = status_error(refusal.status, what, url, retry_after);
        if let Some(wait) = retry_after
            && is_transient(&err)
        {
            self.defer(mirror, wait);
        }
        err
    }

    /// Waits until mirror `mirror` may be asked again (see [`refused`](Self::refused)).
    async fn ready(&self, mirror: usize) {
        let until = self.mirrors[mirror].not_before.lock().ok().and_then(|t| *t);
        if let Some(until) = until
            && until > tokio::time::Instant::now()
        {
            debug!(
                mirror = %self.url_on(mirror, ""),
                wait_ms = (until - tokio::time::Instant::now()).as_millis() as u64,
                "waiting as the server's Retry-After asked"
            );
            tokio::time::sleep_until(until).await;
        }
    }

    /// Holds back mirror `mirror`'s requests for `wait` from now.
    fn defer(&self, mirror: usize, wait: Duration) {
        if let Ok(mut not_before) = self.mirrors[mirror].not_before.lock() {
            let until = tokio::time::Instant::now() + wait;
            *not_before = Some(not_before.map_or(until, |t| t.max(until)));
        }
    }
}

/// Whether a retry may cure `err` (5xx, 429, resets, truncation).
pub(crate) fn is_transient(err: &Error) -> bool {
    matches!(
        err,
        Error::Http {
            transient: true,
            ..
        }
    )
}

/// Whether `err` is a mirror's failure, one another mirror may not have: anything the
/// server answered or failed to answer, but not what fails verification or the local disk.
pub(crate) fn is_mirror_failure(err: &Error) -> bool {
    matches!(
        err,
        Error::Http { .. } | Error::NotFound { .. } | Error::TooLarge { .. }
    )
}

/// The error for an answer with `status`; `retry_after` is what a `503` or `429` asked for.
fn status_error(
    status: StatusCode,
    what: &'static str,
    url: String,
    retry_after: Option<Duration>,
) -> Error {
    if status == StatusCode::NOT_FOUND {
        return Error::NotFound { what, url };
    }
    let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    let (reason, transient) = match retry_after {
        Some(wait) if wait > MAX_RETRY_AFTER => (
            format!(
                "HTTP {status} with Retry-After {} s, longer than the {} s this client waits \
                 for a retry",
                wait.as_secs(),
                MAX_RETRY_AFTER.as_secs()
            ),
            false,
        ),
        Some(wait) => (
            format!("HTTP {status}, Retry-After {} s", wait.as_secs()),
            transient,
        ),
        None => (format!("HTTP {status}"), transient),
    };
    Error::Http {
        url,
        reason,
        transient,
    }
}

/// The wait the `Retry-After` value of a `503` or `429` asks for (`None` for other statuses,
/// or without a readable one).
fn retry_after(status: StatusCode, value: Option<&str>) -> Option<Duration> {
    if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    parse_retry_after(value?, jiff::Timestamp::now())
}

/// A `Retry-After` value as a wait from `now`: delay-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`; one already past is no wait).
fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    Some(Duration::try_from(now.duration_until(at)).unwrap_or(Duration::ZERO))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves canned answers on loopback: `answer` maps each request's head to a response
    /// (each connection is closed after one). Stops after `max` requests.
    async fn serve(
        max: usize,
        answer: impl Fn(&str) -> Vec<u8> + Send + 'static,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..max {
                let accepted =
                    tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
                let Ok(Ok((mut socket, _))) = accepted else {
                    break;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let _ = socket.write_all(&answer(&head)).await;
                let _ = socket.shutdown().await;
                seen.push(head);
            }
            seen
        });
        (url, task)
    }

    fn response(status: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// A URL nothing listens on.
    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", listener.local_addr().unwrap())
    }

    fn folder_mirrors(n: usize) -> (Vec<tempfile::TempDir>, Origin) {
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let specs: Vec<String> = dirs
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        (dirs, Origin::mirrors(&specs).unwrap())
    }

    #[test]
    fn failures_rotate_the_active_mirror_once() {
        let (_dirs, origin) = folder_mirrors(3);
        assert_eq!(origin.active(), 0);
        assert_eq!(origin.pick(|_| true), Some(0));
        // Two requests failing on mirror 0 at once move on by one mirror, not two.
        origin.move_on_from(0);
        origin.move_on_from(0);
        assert_eq!(origin.active(), 1);
        assert_eq!(origin.pick(|i| i != 1), Some(2));
        origin.move_on_from(1);
        origin.move_on_from(2);
        assert_eq!(origin.active(), 0, "the last mirror wraps to the first");
        assert_eq!(origin.pick(|_| false), None);
        // Clones share the active mirror.
        let clone = origin.clone();
        clone.move_on_from(0);
        assert_eq!(origin.active(), 1);
    }

    #[tokio::test]
    async fn a_lagging_mirror_fails_over_and_the_good_one_sticks() {
        let (dirs, origin) = folder_mirrors(2);
        std::fs::create_dir_all(dirs[1].path().join("manifests")).unwrap();
        std::fs::write(dirs[1].path().join("manifests/m"), b"manifest").unwrap();
        let got = origin.get("manifests/m", "manifest", 100).await.unwrap();
        assert_eq!(got, b"manifest");
        assert_eq!(origin.active(), 1);
        assert!(
            origin
                .url("x")
                .starts_with(&dirs[1].path().display().to_string())
        );
        // Both asked, one answered.
        assert_eq!(origin.traffic().requests(), 2);
        assert_eq!(origin.traffic().bytes(), 8);
        // The next request starts at the mirror that worked.
        origin.get("manifests/m", "manifest", 100).await.unwrap();
        assert_eq!(origin.traffic().requests(), 3);
    }

    #[tokio::test]
    async fn when_every_mirror_lacks_an_object_the_error_names_each() {
        let (dirs, origin) = folder_mirrors(2);
        let err = origin.get("packs/p", "pack", 100).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::NotFound { what: "pack", .. }),
            "{text}"
        );
        for dir in &dirs {
            let url = dir.path().join("packs/p").display().to_string();
            assert!(text.contains(&url), "{url} in {text}");
        }
    }

    #[tokio::test]
    async fn a_dead_and_a_failing_mirror_are_named_with_their_reasons() {
        let dead = dead_url();
        let (failing, server) = serve(GET_ATTEMPTS as usize, |_| {
            response("503 Service Unavailable", b"busy")
        })
        .await;
        let origin = Origin::mirrors(&[dead.clone(), failing.clone()]).unwrap();
        tokio::time::pause();
        let err = origin.get("channels/stable", "channel pointer", 100);
        let err = err.await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                Error::Http {
                    transient: true,
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains("every mirror failed"), "{text}");
        assert!(text.contains(&format!("{dead}channels/stable: ")), "{text}");
        assert!(
            text.contains(&format!("{failing}channels/stable: HTTP 503")),
            "{text}"
        );
        tokio::time::resume();
        // Every round asked both.
        assert_eq!(origin.traffic().requests(), 2 * u64::from(GET_ATTEMPTS));
        drop(origin);
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), GET_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn a_whole_object_answer_yields_the_range_and_counts_every_byte() {
        let object: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let served = object.clone();
        let (url, server) = serve(1, move |_| response("200 OK", &served)).await;
        let origin = Origin::mirrors(&[dead_url(), url]).unwrap();
        origin.move_on_from(0);
        let mut body = origin
            .get_range("packs/p", 1000, 500, object.len() as u64)
            .await
            .unwrap();
        assert!(body.is_whole_object());
        let mut got = Vec::new();
        while let Some(piece) = body.next().await.unwrap() {
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, &object[1000..1500]);
        // The rest is short: read and counted, so the count is the server's.
        body.finish().await;
        assert_eq!(origin.traffic().bytes(), object.len() as u64);
        assert!(origin.ignores_ranges());
        let seen = server.await.unwrap();
        assert!(seen[0].contains("range: bytes=1000-1499"), "{seen:?}");
    }

    #[tokio::test]
    async fn a_whole_object_answer_longer_than_the_object_fails() {
        let (url, _server) = serve(1, |_| response("200 OK", &[7; 2000])).await;
        let origin = Origin::parse(&url).unwrap();
        let err = origin.get_range("packs/p", 0, 10, 1000).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("more than the object's 1000 bytes"), "{text}");
        assert!(
            matches!(
                err,
                Error::Http {
                    transient: false,
                    ..
                }
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_partial_answer_for_another_range_fails() {
        let (url, _server) = serve(1, |_| {
            let mut out = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n\
                Content-Length: 10\r\nConnection: close\r\n\r\n"
                .to_vec();
            out.extend_from_slice(&[1; 10]);
            out
        })
        .await;
        let origin = Origin::parse(&url).unwrap();
        let err = origin.get_range("packs/p", 5, 10, 100).await.unwrap_err();
        assert!(
            err.to_string().contains("is not the range asked for"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_certificate_must_be_one() {
        let mut config = OriginConfig::from("https://cdn.example.com/");
        let err = config.add_ca_cert_pem(b"not a certificate").unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = config.add_ca_cert_pem(garbage).unwrap_err();
        assert!(
            err.to_string().starts_with("malformed CA certificate: "),
            "{err}"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now: jiff::Timestamp = "2015-10-21T07:27:30Z".parse().unwrap();
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(parse_retry_after("2", now), secs(2));
        assert_eq!(parse_retry_after(" 120 ", now), secs(120));
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(date, now), secs(30));
        let past = "Wed, 21 Oct 2015 07:00:00 GMT";
        assert_eq!(parse_retry_after(past, now), secs(0));
        for bad in ["", "-1", "1.5", "soon", "99999999999999999999999"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn a_retry_after_past_the_cap_fails_the_mirror_naming_it() {
        let error = |status, secs: Option<u64>| {
            let wait = secs.map(Duration::from_secs);
            status_error(status, "pack", "http://cdn/p".into(), wait)
        };
        let short = error(StatusCode::SERVICE_UNAVAILABLE, Some(2));
        assert!(is_transient(&short), "{short}");
        assert!(
            short
                .to_string()
                .ends_with("HTTP 503 Service Unavailable, Retry-After 2 s"),
            "{short}"
        );
        let long = error(StatusCode::TOO_MANY_REQUESTS, Some(3600));
        assert!(!is_transient(&long), "{long}");
        assert!(
            long.to_string()
                .contains("Retry-After 3600 s, longer than the 30 s this client waits"),
            "{long}"
        );
        let plain = error(StatusCode::INTERNAL_SERVER_ERROR, None);
        assert!(is_transient(&plain), "{plain}");
        assert!(
            !error(StatusCode::FORBIDDEN, None)
                .to_string()
                .contains("Retry")
        );
    }

    fn busy(retry_after: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry_after}\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\nbusy"
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn a_retry_after_holds_back_the_next_try() {
        let answered = AtomicUsize::new(0);
        let (url, server) = serve(2, move |_| match answered.fetch_add(1, Ordering::Relaxed) {
            0 => busy("1"),
            _ => response("200 OK", b"pointer"),
        })
        .await;
        let origin = Origin::parse(&url).unwrap();
        let started = std::time::Instant::now();
        let got = origin.get("channels/stable", "channel pointer", 100);
        assert_eq!(got.await.unwrap(), b"pointer");
        let waited = started.elapsed();
        // At least the second asked for; the backoff alone would be under 0.4 s.
        assert!(waited >= Duration::from_secs(1), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(server.await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_retry_after_past_the_cap_moves_on_at_once() {
        // Alone, the mirror fails at once and the error names the Retry-After.
        let (url, _server) = serve(1, |_| busy("3600")).await;
        let origin = Origin::parse(&url).unwrap();
        let started = std::time::Instant::now();
        let err = origin.get("channels/stable", "channel pointer", 100);
        let err = err.await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        assert!(err.to_string().contains("Retry-After 3600 s"), "{err}");
        assert_eq!(origin.traffic().requests(), 1);
        // With another mirror, that one answers at once.
        let (url, _server) = serve(1, |_| busy("Fri, 01 Jan 2100 00:00:00 GMT")).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("channels")).unwrap();
        std::fs::write(dir.path().join("channels/stable"), b"pointer").unwrap();
        let origin = Origin::mirrors(&[url, dir.path().display().to_string()]).unwrap();
        let started = std::time::Instant::now();
        let got = origin.get("channels/stable", "channel pointer", 100);
        assert_eq!(got.await.unwrap(), b"pointer");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(origin.active(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_response_fails_once_its_rate_drops_under_the_minimum() {
        let start = tokio::time::Instant::now();
        let mut guard = RateGuard::new(1024);
        assert_eq!(guard.deadline(), Some(start + SLOW_GRACE));
        // With 20 KiB in, the average stays above 1 KiB/s until 20 s.
        guard.add(20 * 1024, "http://cdn/p").unwrap();
        assert_eq!(guard.deadline(), Some(start + Duration::from_secs(20)));
        let stalled = guard.bound(std::future::pending::<()>(), "http://cdn/p");
        let err = stalled.await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert!(!is_transient(&err), "{err}");
        assert!(
            err.to_string().contains("too slow: 20480 bytes in 20 s"),
            "{err}"
        );
        // A piece arriving later still leaves the average under the minimum.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(guard.add(1000, "http://cdn/p").is_err());
        // What comes in time passes; without a minimum there is no deadline.
        let fresh = RateGuard::new(1024);
        assert_eq!(fresh.bound(async { 7 }, "u").await.unwrap(), 7);
        assert_eq!(RateGuard::new(0).deadline(), None);
    }

    #[test]
    fn no_mirror_is_refused() {
        let err = Origin::mirrors(&[]).unwrap_err();
        assert!(err.to_string().contains("no origin given"), "{err}");
    }
}
