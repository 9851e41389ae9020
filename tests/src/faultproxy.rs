//! A TCP proxy on loopback that injects network faults into an upstream's HTTP/1.1 answers.
//!
//! The proxy keeps connections alive as the client does: it reads each request head from the
//! client, forwards it on its own upstream connection, and relays the answer, so a reqwest
//! client reuses its connections as it would with the upstream. A [`Schedule`] picks a
//! [`Fault`] per request by path; a faulted answer that leaves the connection in an unknown
//! state (cut, stalled, lying about its length) ends both connections. Requests with a body
//! are refused (`501`): relsync only sends GETs.
//!
//! Everything is bounded: each read, write and connect by [`IO_TIMEOUT`], an idle client
//! connection by [`IDLE_TIMEOUT`], a stall or dribble by [`HOLD_LIMIT`]; the proxy stops on
//! drop. What it did is recorded per request ([`Record`]) and counted ([`ProxyStats`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Longest wait for one read, write or connect.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the next request on a kept-alive client connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a stalled or dribbled answer holds its connection.
const HOLD_LIMIT: Duration = Duration::from_secs(120);
/// Largest request or response head read.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Bytes read from the upstream at once.
const COPY_BYTES: usize = 64 * 1024;

/// What to do to one request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward the head and at most `body_bytes` of the body, then close with a TCP RST
    /// (`SO_LINGER` 0).
    Reset {
        /// Body bytes forwarded before the reset.
        body_bytes: u64,
    },
    /// Forward the head and at most `body_bytes` of the body (always short of its
    /// Content-Length), then close cleanly (FIN).
    Truncate {
        /// Body bytes forwarded before the close.
        body_bytes: u64,
    },
    /// Answer `status` (with `Retry-After: retry_after` seconds) without asking the upstream.
    ServerError {
        /// The status, e.g. 500 or 503.
        status: u16,
        /// The `Retry-After` header in seconds, if any.
        retry_after: Option<u64>,
    },
    /// Strip the Range header before forwarding: the upstream answers `200` with the whole
    /// object.
    IgnoreRange,
    /// Send the answer, head included, at `bytes_per_sec`.
    SlowLoris {
        /// Bytes per second, sent once a second.
        bytes_per_sec: u64,
    },
    /// Announce a Content-Length of the body's plus `delta`. Longer: the whole body follows,
    /// then a clean close. Shorter: only the announced bytes follow, and the client connection
    /// stays open for the next request.
    WrongContentLength {
        /// Added to the real length.
        delta: i64,
    },
    /// Send the head, then nothing: hold the connection until the client closes it (at most
    /// 120 s).
    StallAfterHeaders,
}

impl Fault {
    /// A short name of the fault's kind, the key of [`ProxyStats::faults`].
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Reset { .. } => "reset",
            Fault::Truncate { .. } => "truncate",
            Fault::ServerError { .. } => "server-error",
            Fault::IgnoreRange => "ignore-range",
            Fault::SlowLoris { .. } => "slow-loris",
            Fault::WrongContentLength { .. } => "wrong-content-length",
            Fault::StallAfterHeaders => "stall-after-headers",
        }
    }
}

/// Which requests a rule applies to, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Packs: paths under `/packs/`.
    Packs,
    /// Everything else: channel pointers, manifests, keys.
    Metadata,
    /// Paths starting with this (e.g. `/manifests/`).
    Prefix(String),
}

impl Target {
    fn matches(&self, path: &str) -> bool {
        match self {
            Target::Packs => path.starts_with("/packs/"),
            Target::Metadata => !path.starts_with("/packs/"),
            Target::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// Which of a rule's matching requests (counted from 1) are faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The first `n`.
    First(u64),
    /// Every `k`-th: the `k`-th, `2k`-th, ... (none for 0)
    Every(u64),
    /// All of them.
    Always,
}

impl When {
    fn fires(self, nth: u64) -> bool {
        match self {
            When::First(n) => nth <= n,
            When::Every(k) => nth.is_multiple_of(k),
            When::Always => true,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    target: Target,
    when: When,
    fault: Fault,
    /// Requests that matched `target` so far.
    matched: u64,
}

/// Which requests get which fault: rules tried in order, the first that fires wins. Each rule
/// counts the requests its target matches, faulted or not.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    rules: Vec<Rule>,
}

impl Schedule {
    /// No faults: a plain proxy.
    pub fn none() -> Self {
        Self::default()
    }

    /// One rule: `fault` on the requests for `target` that `when` picks.
    pub fn on(target: Target, when: When, fault: Fault) -> Self {
        Self::none().and(target, when, fault)
    }

    /// Adds a rule, tried after the ones before.
    pub fn and(mut self, target: Target, when: When, fault: Fault) -> Self {
        self.rules.push(Rule {
            target,
            when,
            fault,
            matched: 0,
        });
        self
    }

    fn decide(&mut self, path: &str) -> Option<Fault> {
        let mut chosen = None;
        for rule in &mut self.rules {
            if !rule.target.matches(path) {
                continue;
            }
            rule.matched += 1;
            if chosen.is_none() && rule.when.fires(rule.matched) {
                chosen = Some(rule.fault.clone());
            }
        }
        chosen
    }
}

/// One request the proxy saw, and what it sent back.
#[derive(Debug, Clone)]
pub struct Record {
    /// The client connection's serial number (from 1).
    pub connection: u64,
    /// The request line, e.g. `GET /packs/ab12 HTTP/1.1`.
    pub request: String,
    /// The request's Range header as the client sent it.
    pub range: Option<String>,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
    /// The status sent to the client (`None` if no head was sent).
    pub status: Option<u16>,
    /// The Content-Length sent to the client.
    pub announced: Option<u64>,
    /// Response body bytes written to the client.
    pub body_bytes: u64,
    /// When the request's head was in.
    pub received_at: Instant,
    /// When the proxy was done with the answer (`None` while it is still at it).
    pub ended_at: Option<Instant>,
    /// How the answer ended: `done`, `reset`, `closed`, `client gone`, or an error.
    pub outcome: String,
}

impl Record {
    /// The path of the request line.
    pub fn path(&self) -> &str {
        self.request.split(' ').nth(1).unwrap_or("")
    }

    /// Whether this is a request for a pack (`/packs/...`).
    pub fn is_pack(&self) -> bool {
        self.path().starts_with("/packs/")
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:>9} B  {}  range={}  len={}  fault={}  conn={}  {}",
            self.status.map_or("---".to_owned(), |s| s.to_string()),
            self.body_bytes,
            self.request,
            self.range.as_deref().unwrap_or("-"),
            self.announced.map_or("-".to_owned(), |n| n.to_string()),
            self.fault.as_ref().map_or("-", Fault::kind),
            self.connection,
            self.outcome
        )
    }
}

/// Records one per line, for failure messages.
pub fn format_records(records: &[Record]) -> String {
    records.iter().map(|r| format!("  {r}\n")).collect()
}

/// What the proxy did, in sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests seen.
    pub requests: u64,
    /// Faults injected, per [`Fault::kind`].
    pub faults: BTreeMap<&'static str, u64>,
    /// Response body bytes forwarded to the client.
    pub body_bytes: u64,
    /// Response body bytes forwarded in faulted answers.
    pub faulted_body_bytes: u64,
}

#[derive(Debug)]
struct State {
    schedule: Schedule,
    records: Vec<Record>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fault-injecting proxy on `127.0.0.1:<free port>` in front of `upstream`, on its own thread
/// and tokio runtime. Stopped on drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (e.g. [`crate::Nginx::addr`]) that faults as `schedule`
    /// says.
    pub fn start(upstream: SocketAddr, schedule: Schedule) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State {
                schedule,
                records: Vec::new(),
            }),
        });
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fault proxy runtime");
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                runtime.block_on(accept(listener, serving, stopped));
                // Connections still open are cut at their next wait.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn the fault proxy thread");
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in the order they came in.
    pub fn records(&self) -> Vec<Record> {
        self.shared.state().records.clone()
    }

    /// The requests so far, in sum.
    pub fn stats(&self) -> ProxyStats {
        let mut stats = ProxyStats::default();
        for r in &self.shared.state().records {
            stats.requests += 1;
            stats.body_bytes += r.body_bytes;
            if let Some(fault) = &r.fault {
                *stats.faults.entry(fault.kind()).or_default() += 1;
                stats.faulted_body_bytes += r.body_bytes;
            }
        }
        stats
    }

    /// Waits until every answer so far is done, at most `max`; returns the records.
    pub fn wait_settled(&self, max: Duration) -> Vec<Record> {
        let deadline = Instant::now() + max;
        loop {
            let records = self.records();
            if records.iter().all(|r| r.ended_at.is_some()) || Instant::now() >= deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let mut serial = 0u64;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                serial += 1;
                tokio::spawn(serve(client, shared.clone(), serial));
            }
        }
    }
}

/// A socket and the bytes read from it but not used yet.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next head (up to and including its blank line); `None` if the peer closed before
    /// sending a byte of it.
    async fn read_head(&mut self, wait: Duration) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = self.buf.split_off(end + 4);
                return Ok(Some(std::mem::replace(&mut self.buf, rest)));
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(io::Error::other("head too long"));
            }
            let mut chunk = vec![0u8; COPY_BYTES];
            let n = timed(wait, self.stream.read(&mut chunk)).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// At most `max` bytes: what is buffered, else one read (empty at the end of the stream).
    async fn read_some(&mut self, max: usize) -> io::Result<Vec<u8>> {
        if !self.buf.is_empty() {
            let rest = self.buf.split_off(self.buf.len().min(max));
            return Ok(std::mem::replace(&mut self.buf, rest));
        }
        let mut chunk = vec![0u8; max.min(COPY_BYTES)];
        let n = timed(IO_TIMEOUT, self.stream.read(&mut chunk)).await?;
        chunk.truncate(n);
        Ok(chunk)
    }
}

async fn timed<T>(wait: Duration, io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(wait, io)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// A request or response head.
#[derive(Debug, Clone)]
struct Head {
    first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split("\r\n");
        let first_line = lines.next()?.to_owned();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':')?;
                Some((name.trim().to_owned(), value.trim().to_owned()))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            first_line,
            headers,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    fn set(&mut self, name: &str, value: String) {
        self.remove(name);
        self.headers.push((name.to_owned(), value));
    }

    fn content_length(&self) -> Option<u64> {
        self.get("content-length")?.parse().ok()
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first_line);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// What was sent back for one request so far.
#[derive(Debug, Default)]
struct Sent {
    status: Option<u16>,
    announced: Option<u64>,
    body_bytes: u64,
}

/// How an answer left the client connection.
enum Next {
    /// Ready for the next request.
    KeepAlive,
    /// Closed (`why` says how).
    Close(&'static str),
}

async fn serve(client: TcpStream, shared: Arc<Shared>, connection: u64) {
    let _ = client.set_nodelay(true);
    let mut client = Peer::new(client);
    let mut upstream: Option<Peer> = None;
    loop {
        let Ok(Some(head)) = client.read_head(IDLE_TIMEOUT).await else {
            return;
        };
        let Some(request) = Head::parse(&head) else {
            return;
        };
        let closing = request
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let has_body = request.content_length().is_some_and(|n| n > 0)
            || request.get("transfer-encoding").is_some();
        let path = request
            .first_line
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let index = {
            let mut state = shared.state();
            let fault = if has_body {
                None
            } else {
                state.schedule.decide(&path)
            };
            state.records.push(Record {
                connection,
                request: request.first_line.clone(),
                range: request.get("range").map(str::to_owned),
                fault,
                status: None,
                announced: None,
                body_bytes: 0,
                received_at: Instant::now(),
                ended_at: None,
                outcome: String::new(),
            });
            state.records.len() - 1
        };
        let fault = shared.state().records[index].fault.clone();
        let mut sent = Sent::default();
        let next = if has_body {
            synthetic(&mut client, 501, None, &mut sent).await
        } else {
            answer(
                &mut client,
                &mut upstream,
                shared.upstream,
                request,
                fault,
                &mut sent,
            )
            .await
        };
        let (outcome, keep) = match next {
            Ok(Next::KeepAlive) if closing => {
                let _ = timed(IO_TIMEOUT, client.stream.shutdown()).await;
                ("done".to_owned(), false)
            }
            Ok(Next::KeepAlive) => ("done".to_owned(), true),
            Ok(Next::Close(why)) => (why.to_owned(), false),
            Err(e) => (format!("error: {e}"), false),
        };
        {
            let mut state = shared.state();
            let record = &mut state.records[index];
            record.status = sent.status;
            record.announced = sent.announced;
            record.body_bytes = sent.body_bytes;
            record.ended_at = Some(Instant::now());
            record.outcome = outcome;
        }
        if !keep {
            return;
        }
    }
}

/// A short answer made up here, the connection kept.
async fn synthetic(
    client: &mut Peer,
    status: u16,
    retry_after: Option<u64>,
    sent: &mut Sent,
) -> io::Result<Next> {
    let body = format!("fault proxy: {status}\n");
    let mut head = Head {
        first_line: format!("HTTP/1.1 {status} {}", reason(status)),
        headers: vec![
            ("Content-Type".into(), "text/plain".into()),
            ("Content-Length".into(), body.len().to_string()),
        ],
    };
    if let Some(secs) = retry_after {
        head.set("Retry-After", secs.to_string());
    }
    sent.status = Some(status);
    sent.announced = Some(body.len() as u64);
    timed(IO_TIMEOUT, client.stream.write_all(&head.bytes())).await?;
    timed(IO_TIMEOUT, client.stream.write_all(body.as_bytes())).await?;
    sent.body_bytes = body.len() as u64;
    Ok(Next::KeepAlive)
}

fn reason(status: u16) -> &'static str {
    match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Fault",
    }
}

/// Sends `request` upstream and relays the answer to the client, faulted as `fault` says.
async fn answer(
    client: &mut Peer,
    upstream: &mut Option<Peer>,
    upstream_addr: SocketAddr,
    mut request: Head,
    fault: Option<Fault>,
    sent: &mut Sent,
) -> io::Result<Next> {
    if let Some(Fault::ServerError {
        status,
        retry_after,
    }) = fault
    {
        return synthetic(client, status, retry_after, sent).await;
    }
    if fault == Some(Fault::IgnoreRange) {
        request.remove("range");
    }
    let is_head = request.first_line.starts_with("HEAD ");
    let Some(mut response) = exchange(upstream, upstream_addr, &request).await else {
        synthetic(client, 502, None, sent).await?;
        return Ok(Next::Close("upstream failed"));
    };
    let Some(up) = upstream.as_mut() else {
        return Ok(Next::Close("upstream failed"));
    };
    let status: u16 = response
        .first_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let no_body = is_head || status == 204 || status == 304 || (100..200).contains(&status);
    let body_len = if no_body {
        Some(0)
    } else {
        response.content_length()
    };
    let upstream_closes = response
        .get("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    sent.status = Some(status);
    sent.announced = response.content_length();
    let next = match (fault, body_len) {
        (Some(Fault::Reset { body_bytes }), _) => {
            write_head(client, &response).await?;
            let part = body_len.map_or(body_bytes, |n| n.min(body_bytes));
            relay(up, client, part, sent).await?;
            client.stream.set_zero_linger()?;
            Next::Close("reset")
        }
        (Some(Fault::Truncate { body_bytes }), _) => {
            write_head(client, &response).await?;
            let part = body_len.map_or(body_bytes, |n| n.saturating_sub(1).min(body_bytes));
            relay(up, client, part, sent).await?;
            let _ = timed(IO_TIMEOUT, client.stream.shutdown()).await;
            Next::Close("closed")
        }
        (Some(Fault::WrongContentLength { delta }), Some(real)) => {
            let claimed = real.saturating_add_signed(delta);
            response.set("Content-Length", claimed.to_string());
            sent.announced = Some(claimed);
            write_head(client, &response).await?;
            relay(up, client, real.min(claimed), sent).await?;
            if claimed > real {
                let _ = timed(IO_TIMEOUT, client.stream.shutdown()).await;
                Next::Close("closed")
            } else {
                // The rest of the upstream's body is never read: that connection goes.
                *upstream = None;
                return Ok(Next::KeepAlive);
            }
        }
        (Some(Fault::StallAfterHeaders), _) => {
            write_head(client, &response).await?;
            Next::Close(hold(client).await)
        }
        (Some(Fault::SlowLoris { bytes_per_sec }), _) => {
            Next::Close(dribble(client, up, &response, body_len, bytes_per_sec, sent).await?)
        }
        (_, None) => {
            // No length: relayed until the upstream closes, then the client is closed too.
            write_head(client, &response).await?;
            let _ = relay(up, client, u64::MAX, sent).await;
            Next::Close("closed")
        }
        (_, Some(len)) => {
            write_head(client, &response).await?;
            relay(up, client, len, sent).await?;
            if upstream_closes {
                *upstream = None;
            }
            return Ok(Next::KeepAlive);
        }
    };
    *upstream = None;
    Ok(next)
}

/// Sends `request` on the upstream connection (a new one if there is none, or if the kept one
/// turns out closed) and reads the answer's head.
async fn exchange(upstream: &mut Option<Peer>, addr: SocketAddr, request: &Head) -> Option<Head> {
    for _ in 0..2 {
        let reused = upstream.is_some();
        if upstream.is_none() {
            let stream = timed(IO_TIMEOUT, TcpStream::connect(addr)).await.ok()?;
            let _ = stream.set_nodelay(true);
            *upstream = Some(Peer::new(stream));
        }
        let peer = upstream.as_mut()?;
        let head = match timed(IO_TIMEOUT, peer.stream.write_all(&request.bytes())).await {
            Ok(()) => peer.read_head(IO_TIMEOUT).await,
            Err(e) => Err(e),
        };
        match head {
            Ok(Some(head)) => return Head::parse(&head),
            // A kept connection the upstream closed meanwhile: once more on a new one.
            _ if reused => *upstream = None,
            _ => return None,
        }
    }
    None
}

async fn write_head(client: &mut Peer, head: &Head) -> io::Result<()> {
    timed(IO_TIMEOUT, client.stream.write_all(&head.bytes())).await
}

/// Relays `n` body bytes from `up` to the client.
async fn relay(up: &mut Peer, client: &mut Peer, n: u64, sent: &mut Sent) -> io::Result<()> {
    let mut left = n;
    while left > 0 {
        let piece = up.read_some(left.min(COPY_BYTES as u64) as usize).await?;
        if piece.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream body ended early",
            ));
        }
        timed(IO_TIMEOUT, client.stream.write_all(&piece)).await?;
        sent.body_bytes += piece.len() as u64;
        left -= piece.len() as u64;
    }
    Ok(())
}

/// Holds the client connection without sending: until the client closes it, or
/// [`HOLD_LIMIT`].
async fn hold(client: &mut Peer) -> &'static str {
    let mut scratch = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + HOLD_LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, client.stream.read(&mut scratch)).await {
            Err(_) => return "held to the limit",
            Ok(Ok(0) | Err(_)) => return "client gone",
            // Bytes of a next request nobody will answer.
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends the head and then the body at `bytes_per_sec`, until done, the client is gone, or
/// [`HOLD_LIMIT`].
async fn dribble(
    client: &mut Peer,
    up: &mut Peer,
    response: &Head,
    body_len: Option<u64>,
    bytes_per_sec: u64,
    sent: &mut Sent,
) -> io::Result<&'static str> {
    let per_tick = bytes_per_sec.max(1) as usize;
    let started = tokio::time::Instant::now();
    let mut head = response.bytes();
    let mut body_left = body_len.unwrap_or(u64::MAX);
    let mut pending: Vec<u8> = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        if head.is_empty() && pending.is_empty() {
            if body_left == 0 {
                return Ok("done slowly");
            }
            pending = up
                .read_some(body_left.min(COPY_BYTES as u64) as usize)
                .await?;
            if pending.is_empty() {
                return Ok("upstream ended");
            }
            body_left -= pending.len() as u64;
        }
        if started.elapsed() >= HOLD_LIMIT {
            return Ok("held to the limit");
        }
        ticks.tick().await;
        let (from_head, piece) = if head.is_empty() {
            let rest = pending.split_off(per_tick.min(pending.len()));
            (false, std::mem::replace(&mut pending, rest))
        } else {
            let rest = head.split_off(per_tick.min(head.len()));
            (true, std::mem::replace(&mut head, rest))
        };
        if timed(IO_TIMEOUT, client.stream.write_all(&piece))
            .await
            .is_err()
        {
            return Ok("client gone");
        }
        if !from_head {
            sent.body_bytes += piece.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-file upstream on a plain thread: answers every GET with `body` (honouring
    /// `Range: bytes=a-b`), keeping connections alive. Accepts for at most 30 s.
    fn upstream(body: Vec<u8>) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let body = body.clone();
                std::thread::spawn(move || answer_gets(stream, &body));
            }
        });
        addr
    }

    fn answer_gets(mut stream: std::net::TcpStream, body: &[u8]) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        loop {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            let range = head.lines().find_map(|l| {
                let spec = l.strip_prefix("range: bytes=")?;
                let (a, b) = spec.trim().split_once('-')?;
                Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
            });
            let (status, part) = match range {
                Some((a, b)) => ("206 Partial Content", &body[a..=b]),
                None => ("200 OK", body),
            };
            let out = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                part.len()
            );
            if stream.write_all(out.as_bytes()).is_err() || stream.write_all(part).is_err() {
                return;
            }
        }
    }

    /// One GET on a new connection; returns the head and the body read until the server closed
    /// or `Connection: close` was honoured, and how reading ended.
    fn get(addr: SocketAddr, path: &str, range: Option<&str>) -> (String, Vec<u8>, io::Result<()>) {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(r) = range {
            req.push_str(&format!("Range: {r}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).expect("write");
        let mut resp = Vec::new();
        let end = s.read_to_end(&mut resp).map(|_| ());
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(resp.len(), |i| i + 4);
        let head = String::from_utf8_lossy(&resp[..split]).into_owned();
        (head, resp[split..].to_vec(), end)
    }

    fn data() -> Vec<u8> {
        (0..100_000u32).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn schedules_pick_by_path_and_count() {
        let reset = Fault::Reset { body_bytes: 0 };
        let mut s = Schedule::on(Target::Packs, When::First(2), reset.clone());
        let picks: Vec<bool> = ["/packs/a", "/channels/x", "/packs/b", "/packs/c"]
            .iter()
            .map(|p| s.decide(p).is_some())
            .collect();
        assert_eq!(picks, [true, false, true, false]);
        let mut s = Schedule::on(Target::Metadata, When::Every(2), reset.clone()).and(
            Target::Prefix("/packs/x".into()),
            When::Always,
            Fault::IgnoreRange,
        );
        let picks: Vec<Option<Fault>> = ["/manifests/1", "/manifests/2", "/packs/x1", "/packs/y"]
            .iter()
            .map(|p| s.decide(p))
            .collect();
        assert_eq!(picks, [None, Some(reset), Some(Fault::IgnoreRange), None]);
    }

    #[test]
    fn relays_faithfully_and_faults_as_scheduled() {
        let body = data();
        let up = upstream(body.clone());
        let p = FaultProxy::start(
            up,
            Schedule::on(
                Target::Packs,
                When::Always,
                Fault::Truncate { body_bytes: 1000 },
            )
            .and(
                Target::Prefix("/range".into()),
                When::Always,
                Fault::IgnoreRange,
            )
            .and(
                Target::Prefix("/busy".into()),
                When::Always,
                Fault::ServerError {
                    status: 503,
                    retry_after: Some(7),
                },
            )
            .and(
                Target::Prefix("/short".into()),
                When::Always,
                Fault::WrongContentLength { delta: -10 },
            ),
        );
        let (head, got, _) = get(p.addr(), "/plain", Some("bytes=10-19"));
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert_eq!(got, &body[10..20]);
        let (head, got, _) = get(p.addr(), "/packs/p", None);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(got, &body[..1000], "truncated after 1000 bytes");
        let (head, got, _) = get(p.addr(), "/range", Some("bytes=10-19"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(got, body);
        let (head, _, _) = get(p.addr(), "/busy", None);
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(head.contains("Retry-After: 7\r\n"), "{head}");
        let (head, got, _) = get(p.addr(), "/short", Some("bytes=0-99"));
        assert!(head.contains("Content-Length: 90\r\n"), "{head}");
        assert_eq!(got, &body[..90]);
        let records = p.wait_settled(Duration::from_secs(5));
        let stats = p.stats();
        assert_eq!(stats.requests, 5, "{}", format_records(&records));
        assert_eq!(stats.faults.values().sum::<u64>(), 4, "{stats:?}");
        assert_eq!(stats.faults["truncate"], 1, "{stats:?}");
        let busy = "fault proxy: 503\n".len() as u64;
        assert_eq!(
            stats.body_bytes,
            10 + 1000 + body.len() as u64 + busy + 90,
            "{}",
            format_records(&records)
        );
        assert_eq!(records[2].range.as_deref(), Some("bytes=10-19"));
    }

    #[test]
    fn resets_and_stalls_end_in_bounded_time() {
        let up = upstream(data());
        let p = FaultProxy::start(
            up,
            Schedule::on(
                Target::Prefix("/reset".into()),
                When::Always,
                Fault::Reset { body_bytes: 500 },
            )
            .and(
                Target::Prefix("/stall".into()),
                When::Always,
                Fault::StallAfterHeaders,
            ),
        );
        let (head, got, end) = get(p.addr(), "/reset", None);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(got.len() <= 500, "{}", got.len());
        let err = end.expect_err("a reset is an error");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        // A stalled answer: the head, then silence until the client gives up.
        let started = Instant::now();
        let (head, got, end) = get(p.addr(), "/stall", None);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(got.is_empty());
        assert!(end.is_err(), "the read timed out");
        assert!(started.elapsed() >= Duration::from_secs(5));
        let records = p.wait_settled(Duration::from_secs(5));
        assert!(
            records.iter().all(|r| r.ended_at.is_some()),
            "{}",
            format_records(&records)
        );
        assert_eq!(records[0].outcome, "reset");
        assert_eq!(records[1].outcome, "client gone");
    }
}
