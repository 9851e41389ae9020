//! A real nginx serving an origin folder on loopback, with an access log the tests can read.

use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long nginx may take to accept connections after start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for [`Nginx::start`].
///
/// # Defaults
///
/// No rate limit; every file is served; Range headers are honoured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NginxOptions {
    /// `limit_rate` in bytes per second for each request (`None`: unlimited).
    pub limit_rate_bytes_per_sec: Option<u64>,
    /// Answer every request under `/packs/` with this status (`None`: serve the packs).
    pub fail_packs_with: Option<u16>,
    /// Ignore Range headers (`max_ranges 0`): every GET is answered `200` with the whole file,
    /// as a misconfigured proxy or a hostile CDN might.
    pub ignore_ranges: bool,
    /// Serve nothing from the folder: pass GETs and HEADs to this URL instead (`proxy_pass`,
    /// e.g. a bucket's `http://127.0.0.1:PORT/bucket/prefix/`), as a CDN in front of an object
    /// store does; other methods are refused.
    pub proxy_to: Option<String>,
    /// Serve HTTPS with HTTP/2 (negotiated by ALPN) using this certificate and key (PEM
    /// files) instead of plain HTTP/1.1.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl NginxOptions {
    /// Options with a per-request rate limit.
    pub fn rate_limited(bytes_per_sec: u64) -> Self {
        Self {
            limit_rate_bytes_per_sec: Some(bytes_per_sec),
            ..Self::default()
        }
    }

    /// Options that answer every request under `/packs/` with `status` (e.g. 500); channel
    /// pointers and manifests are still served.
    pub fn failing_packs(status: u16) -> Self {
        Self {
            fail_packs_with: Some(status),
            ..Self::default()
        }
    }

    /// Options that ignore Range headers: `200` and the whole file instead of `206`.
    pub fn ignoring_ranges() -> Self {
        Self {
            ignore_ranges: true,
            ..Self::default()
        }
    }

    /// Options that serve HTTPS and HTTP/2 with the PEM files `cert` and `key`.
    pub fn tls(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            tls: Some((cert.into(), key.into())),
            ..Self::default()
        }
    }

    /// Options that proxy GETs and HEADs to `upstream` (see [`NginxOptions::proxy_to`]).
    pub fn proxying(upstream: impl Into<String>) -> Self {
        Self {
            proxy_to: Some(upstream.into()),
            ..Self::default()
        }
    }
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// `$status`.
    pub status: u16,
    /// `$body_bytes_sent`: response body bytes written to the socket (partial if cut short).
    pub body_bytes: u64,
    /// `$request`: the request line, e.g. `GET /packs/ab12 HTTP/1.1`.
    pub request: String,
    /// `$http_range`, `None` when the request had no Range header.
    pub range: Option<String>,
    /// `$sent_http_content_length`: the length the response announced.
    pub content_length: Option<u64>,
    /// `$msec`: when the entry was written (seconds since the epoch), i.e. when the request ended.
    pub logged_at_secs: f64,
    /// `$request_time` in seconds.
    pub request_time_secs: f64,
    /// `$connection`: the connection serial number.
    pub connection: u64,
    /// `$server_protocol`: `HTTP/1.1`, `HTTP/2.0`...
    pub protocol: String,
}

impl LogEntry {
    /// The method of the request line.
    pub fn method(&self) -> &str {
        self.request.split(' ').next().unwrap_or("")
    }

    /// The path of the request line (without the query).
    pub fn path(&self) -> &str {
        let target = self.request.split(' ').nth(1).unwrap_or("");
        target.split('?').next().unwrap_or("")
    }

    /// Whether this is a request for a pack (`/packs/...`).
    pub fn is_pack(&self) -> bool {
        self.path().contains("/packs/")
    }

    /// The ranges of the Range header as `(first, last_inclusive)`; `last` is `None` for an open
    /// range `a-`. Suffix ranges (`-n`) and a missing header give an empty list.
    pub fn ranges(&self) -> Vec<(u64, Option<u64>)> {
        let Some(r) = &self.range else {
            return Vec::new();
        };
        let Some(spec) = r.trim().strip_prefix("bytes=") else {
            return Vec::new();
        };
        spec.split(',')
            .filter_map(|part| {
                let (a, b) = part.trim().split_once('-')?;
                let a = a.trim().parse::<u64>().ok()?;
                let b = b.trim();
                let b = if b.is_empty() {
                    None
                } else {
                    Some(b.parse::<u64>().ok()?)
                };
                Some((a, b))
            })
            .collect()
    }

    /// How many body bytes the response should have carried: the single requested range's
    /// length, else the announced Content-Length.
    pub fn expected_body_bytes(&self) -> Option<u64> {
        match self.ranges().as_slice() {
            [(a, Some(b))] if self.status == 206 => Some(b + 1 - a),
            _ => self.content_length,
        }
    }

    /// Whether the body was cut short (fewer bytes sent than the response should carry).
    pub fn cut_short(&self) -> bool {
        self.expected_body_bytes()
            .is_some_and(|n| self.body_bytes < n)
    }

    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 9 {
            return None;
        }
        let unquote = |s: &str| s.trim_matches('"').to_string();
        let opt_num = |s: &str| s.parse::<u64>().ok();
        let range = unquote(f[3]);
        Some(Self {
            status: f[0].parse().ok()?,
            body_bytes: f[1].parse().ok()?,
            request: unquote(f[2]),
            range: (range != "-" && !range.is_empty()).then_some(range),
            content_length: opt_num(f[4]),
            logged_at_secs: f[5].parse().ok()?,
            request_time_secs: f[6].parse().ok()?,
            connection: f[7].parse().ok()?,
            protocol: f[8].to_owned(),
        })
    }
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:>9} B  {}  range={}  len={}  t={:.3}s conn={}",
            self.status,
            self.body_bytes,
            self.request,
            self.range.as_deref().unwrap_or("-"),
            self.content_length
                .map_or("-".to_string(), |n| n.to_string()),
            self.request_time_secs,
            self.connection
        )
    }
}

/// Format a list of log entries, one per line, for failure messages.
pub fn format_entries(entries: &[LogEntry]) -> String {
    let mut s = String::new();
    for e in entries {
        s.push_str("  ");
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s
}

/// A point in the access log; entries after it belong to what happened since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMark(usize);

/// An nginx child process serving a folder on `127.0.0.1:<free port>`. Killed on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    prefix: TempDir,
    root: PathBuf,
    /// Serves HTTPS (and HTTP/2).
    tls: bool,
}

fn nginx_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NGINX") {
        return PathBuf::from(p);
    }
    for p in [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("nginx")
}

/// Temp-path directives this nginx build knows (nginx-light may lack some modules).
fn temp_path_directives() -> &'static [&'static str] {
    static DIRECTIVES: OnceLock<Vec<&'static str>> = OnceLock::new();
    DIRECTIVES.get_or_init(|| {
        let out = Command::new(nginx_binary()).arg("-V").output();
        let v = out
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stderr).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stdout));
                s
            })
            .unwrap_or_default();
        let mut d = vec!["client_body_temp_path"];
        for m in ["proxy", "fastcgi", "uwsgi", "scgi"] {
            if !v.contains(&format!("--without-http_{m}_module")) {
                d.push(match m {
                    "proxy" => "proxy_temp_path",
                    "fastcgi" => "fastcgi_temp_path",
                    "uwsgi" => "uwsgi_temp_path",
                    _ => "scgi_temp_path",
                });
            }
        }
        d
    })
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Nginx {
    /// Serve `root` (the origin folder) on loopback.
    pub fn start(root: &Path, opts: &NginxOptions) -> Self {
        let root = root
            .canonicalize()
            .unwrap_or_else(|e| panic!("origin root {}: {e}", root.display()));
        let mut last_err = String::new();
        // The free port can be taken between our probe and nginx's bind: retry a few times.
        for _ in 0..5 {
            match Self::try_start(&root, opts) {
                Ok(n) => return n,
                Err(e) => last_err = e,
            }
        }
        panic!("nginx did not start: {last_err}");
    }

    fn try_start(root: &Path, opts: &NginxOptions) -> Result<Self, String> {
        let prefix = tempfile::Builder::new()
            .prefix("relsync-nginx-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let p = prefix.path();
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut temps = String::new();
        for d in temp_path_directives() {
            temps.push_str(&format!("    {d} {};\n", quote(&p.join(d))));
        }
        let mut limit = match opts.limit_rate_bytes_per_sec {
            // Small sendfile pieces (about 50 ms of data each) make the throttled stream smooth
            // instead of one burst a second.
            Some(r) => {
                let piece = (r / 20).clamp(1024, 16 * 1024);
                format!("            limit_rate {r};\n            sendfile_max_chunk {piece};\n")
            }
            None => String::new(),
        };
        if opts.ignore_ranges {
            limit.push_str("            max_ranges 0;\n");
        }
        if let Some(upstream) = &opts.proxy_to {
            limit.push_str(&format!(
                "            limit_except GET {{\n                deny all;\n            }}\n            proxy_pass {upstream};\n"
            ));
        }
        // `^~` so no other location can take the packs back.
        let fail_packs = match opts.fail_packs_with {
            Some(status) => format!(
                "        location ^~ /packs/ {{\n            return {status};\n        }}\n"
            ),
            None => String::new(),
        };
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {err} info;
events {{
    worker_connections 512;
}}
http {{
    log_format relsync '$status\t$body_bytes_sent\t"$request"\t"$http_range"\t$sent_http_content_length\t$msec\t$request_time\t$connection\t$server_protocol';
    access_log {access} relsync;
{temps}    default_type application/octet-stream;
    sendfile on;
    tcp_nopush off;
    keepalive_timeout 30s;
    keepalive_requests 10000;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port}{listen_tls};
        server_name localhost;{tls}
        root {root};
        location / {{
{limit}        }}
{fail_packs}    }}
}}
"#,
            pid = quote(&p.join("nginx.pid")),
            err = quote(&p.join("error.log")),
            access = quote(&p.join("access.log")),
            listen_tls = if opts.tls.is_some() { " ssl http2" } else { "" },
            tls = match &opts.tls {
                Some((cert, key)) => format!(
                    "\n        ssl_certificate {};\n        ssl_certificate_key {};",
                    quote(cert),
                    quote(key)
                ),
                None => String::new(),
            },
            root = quote(root),
        );
        let conf_path = p.join("nginx.conf");
        fs::write(&conf_path, conf).map_err(|e| format!("write nginx.conf: {e}"))?;
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(p.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {} ({e}); install it with `apt-get install -y nginx-light`",
                    nginx_binary().display()
                )
            })?;
        let mut n = Self {
            child,
            addr,
            prefix,
            root: root.to_path_buf(),
            tls: opts.tls.is_some(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = n.child.try_wait() {
                return Err(format!("nginx exited with {status}:\n{}", n.error_log()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(n);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nginx not accepting on {addr} after {START_TIMEOUT:?}:\n{}",
                    n.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT/` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The folder served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The error log's text, for messages.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default()
    }

    /// Every access log entry so far, in order of completion. Panics on a line it cannot parse.
    pub fn access_log(&self) -> Vec<LogEntry> {
        let text = fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default();
        // A line is complete once its newline is written.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                LogEntry::parse(l).unwrap_or_else(|| panic!("unparsable access log line: {l:?}"))
            })
            .collect()
    }

    /// A mark at the current end of the access log.
    pub fn mark(&self) -> LogMark {
        LogMark(self.access_log().len())
    }

    /// Entries logged after `mark`.
    pub fn entries_since(&self, mark: LogMark) -> Vec<LogEntry> {
        let mut all = self.access_log();
        let from = mark.0.min(all.len());
        all.split_off(from)
    }

    /// Sum of `$body_bytes_sent` over the whole log.
    pub fn total_body_bytes(&self) -> u64 {
        self.access_log().iter().map(|e| e.body_bytes).sum()
    }

    /// Sum of `$body_bytes_sent` after `mark`.
    pub fn body_bytes_since(&self, mark: LogMark) -> u64 {
        self.entries_since(mark).iter().map(|e| e.body_bytes).sum()
    }

    /// Wait until the access log has not grown for `quiet`, at most `max`. nginx logs a request
    /// whose client vanished only when it next notices the dead socket, so call this before
    /// reading the log of a killed client.
    pub fn wait_log_quiet(&self, quiet: Duration, max: Duration) -> Vec<LogEntry> {
        let start = Instant::now();
        let mut last = self.access_log();
        let mut since = Instant::now();
        while start.elapsed() < max {
            std::thread::sleep(Duration::from_millis(25));
            let now = self.access_log();
            if now.len() != last.len() {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        last
    }

    /// Poll the access log until `pred` holds for the entries after `mark`, at most `max`.
    /// Returns whether it held.
    pub fn wait_for(
        &self,
        mark: LogMark,
        max: Duration,
        mut pred: impl FnMut(&[LogEntry]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + max;
        loop {
            if pred(&self.entries_since(mark)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str, range: Option<&str>) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
        if let Some(r) = range {
            req.push_str(&format!("Range: {r}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).expect("write");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).expect("read");
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        let head = String::from_utf8_lossy(&resp[..split]).into_owned();
        (head, resp[split + 4..].to_vec())
    }

    #[test]
    fn serves_ranges_and_logs_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("packs")).expect("mkdir");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(dir.path().join("packs/abc"), &data).expect("write");
        let n = Nginx::start(dir.path(), &NginxOptions::default());
        assert!(n.url().starts_with("http://127.0.0.1:"), "{}", n.url());

        let (head, body) = get(n.addr(), "/packs/abc", None);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, data);

        let mark = n.mark();
        let (head, body) = get(n.addr(), "/packs/abc", Some("bytes=100-1099"));
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert_eq!(body, &data[100..1100]);

        let (head, _) = get(n.addr(), "/missing", None);
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");

        assert!(n.wait_for(mark, Duration::from_secs(5), |e| e.len() == 2));
        let log = n.entries_since(mark);
        assert_eq!(log.len(), 2, "{}", format_entries(&log));
        let e = &log[0];
        assert_eq!(e.status, 206, "{e}");
        assert_eq!(e.body_bytes, 1000, "{e}");
        assert_eq!(e.request, "GET /packs/abc HTTP/1.0");
        assert_eq!(e.protocol, "HTTP/1.0");
        assert_eq!(e.range.as_deref(), Some("bytes=100-1099"));
        assert_eq!(e.ranges(), vec![(100, Some(1099))]);
        assert_eq!(e.content_length, Some(1000));
        assert!(e.is_pack() && !e.cut_short());
        assert_eq!(log[1].status, 404);
        assert_eq!(log[1].range, None);
        assert_eq!(n.total_body_bytes(), 10_000 + 1000 + log[1].body_bytes);
    }

    #[test]
    fn failing_packs_fail_and_the_rest_is_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("packs")).expect("mkdir");
        fs::create_dir_all(dir.path().join("channels")).expect("mkdir");
        fs::write(dir.path().join("packs/abc"), vec![3u8; 4096]).expect("write");
        fs::write(dir.path().join("channels/stable"), b"pointer").expect("write");
        let n = Nginx::start(dir.path(), &NginxOptions::failing_packs(500));
        let (head, _) = get(n.addr(), "/packs/abc", Some("bytes=0-99"));
        assert!(head.starts_with("HTTP/1.1 500"), "{head}");
        let (head, body) = get(n.addr(), "/channels/stable", None);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"pointer");
        let log = n.wait_log_quiet(Duration::from_millis(200), Duration::from_secs(5));
        assert_eq!(log.len(), 2, "{}", format_entries(&log));
        assert!(log[0].is_pack() && log[0].status == 500, "{}", log[0]);
    }

    #[test]
    fn ignoring_ranges_answers_200_with_the_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("packs")).expect("mkdir");
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
        fs::write(dir.path().join("packs/p"), &data).expect("write");
        let n = Nginx::start(dir.path(), &NginxOptions::ignoring_ranges());
        let (head, body) = get(n.addr(), "/packs/p", Some("bytes=10-19"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, data);
    }

    #[test]
    fn rate_limit_slows_a_fetch() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), vec![7u8; 200_000]).expect("write");
        let n = Nginx::start(dir.path(), &NginxOptions::rate_limited(100_000));
        let t = Instant::now();
        let (head, body) = get(n.addr(), "/f", Some("bytes=0-149999"));
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert_eq!(body.len(), 150_000);
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_vanished_client_is_logged_as_cut_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("packs")).expect("mkdir");
        fs::write(dir.path().join("packs/p"), vec![1u8; 1 << 20]).expect("write");
        let n = Nginx::start(dir.path(), &NginxOptions::rate_limited(200_000));
        let mut s = TcpStream::connect_timeout(&n.addr(), Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /packs/p HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-900999\r\n\r\n")
            .expect("write");
        let mut got = 0;
        let mut buf = [0u8; 8192];
        while got < 100_000 {
            let k = s.read(&mut buf).expect("read");
            assert!(k > 0, "eof after {got} bytes");
            got += k;
        }
        drop(s);
        let log = n.wait_log_quiet(Duration::from_millis(1000), Duration::from_secs(10));
        assert_eq!(log.len(), 1, "{}", format_entries(&log));
        let e = &log[0];
        assert_eq!(e.status, 206, "{e}");
        assert_eq!(e.expected_body_bytes(), Some(900_000), "{e}");
        assert!(e.cut_short(), "{e}");
        assert!(
            e.body_bytes >= 90_000 && e.body_bytes < 600_000,
            "{e} after reading {got} bytes"
        );
    }

    #[test]
    fn proxying_passes_gets_and_ranges_and_refuses_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("bucket/rel/packs")).expect("mkdir");
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 17) as u8).collect();
        fs::write(dir.path().join("bucket/rel/packs/p"), &data).expect("write");
        let upstream = Nginx::start(dir.path(), &NginxOptions::default());
        let empty = tempfile::tempdir().expect("tempdir");
        let cdn = Nginx::start(
            empty.path(),
            &NginxOptions::proxying(format!("{}bucket/rel/", upstream.url())),
        );
        let (head, body) = get(cdn.addr(), "/packs/p", Some("bytes=10-19"));
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert_eq!(body, &data[10..20]);
        let (head, _) = get(cdn.addr(), "/packs/missing", None);
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let mut s =
            TcpStream::connect_timeout(&cdn.addr(), Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"PUT /packs/q HTTP/1.0\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
            .expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        let log = upstream.wait_log_quiet(Duration::from_millis(200), Duration::from_secs(5));
        assert_eq!(
            log.len(),
            2,
            "the PUT reached the upstream\n{}",
            format_entries(&log)
        );
        assert_eq!(log[0].request, "GET /bucket/rel/packs/p HTTP/1.0");
        assert_eq!(log[0].range.as_deref(), Some("bytes=10-19"));
    }

    #[test]
    fn parses_open_and_bad_ranges() {
        let mut e = LogEntry::parse(
            "206\t5\t\"GET /packs/x HTTP/1.1\"\t\"bytes=10-\"\t5\t1.0\t0.001\t3\tHTTP/1.1",
        )
        .expect("parse");
        assert_eq!(e.ranges(), vec![(10, None)]);
        assert_eq!(e.protocol, "HTTP/1.1");
        assert_eq!(e.path(), "/packs/x");
        e.range = Some("items=1-2".into());
        assert!(e.ranges().is_empty());
        assert!(LogEntry::parse("garbage").is_none());
    }
}
