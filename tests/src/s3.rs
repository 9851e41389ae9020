//! A real S3-compatible server on loopback: two `s3s-fs` processes serving one folder.
//!
//! `s3s-fs` either checks signatures and then refuses unsigned requests, or checks none and
//! then refuses signed ones (`NotImplemented`). So, as a bucket with a public-read policy
//! behaves, one process takes the publisher's signed requests and the other answers anonymous
//! GETs and HEADs for nginx, the CDN in front of it. Both map bucket `B` to folder `<root>/B`
//! and object `K` to the file `<root>/B/K`, which the tests may read (never write).

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::nginx::free_port;

/// The bucket [`S3Server::start`] creates.
pub const S3_BUCKET: &str = "relsync";
/// The access key the publisher signs with.
pub const S3_ACCESS_KEY: &str = "relsync-test";
/// Its secret key.
pub const S3_SECRET_KEY: &str = "relsync-test-secret";

/// How long `s3s-fs` may take to accept connections after start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `s3s-fs` serving a temp folder with bucket [`S3_BUCKET`] on loopback: a signed endpoint
/// for the publisher and an anonymous read-only one for nginx. Both are killed on drop.
#[derive(Debug)]
pub struct S3Server {
    signed: Child,
    public: Child,
    signed_addr: SocketAddr,
    public_addr: SocketAddr,
    dir: TempDir,
}

/// The `s3s-fs` binary: `$RELSYNC_S3S_FS`, else on PATH or in cargo's bin folder.
fn s3s_fs_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RELSYNC_S3S_FS") {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs not found (set RELSYNC_S3S_FS, or put it on PATH): run scripts/setup.sh, \
                 which installs it with `cargo install --locked s3s-fs@0.14.1 --features binary`"
            )
        })
}

impl S3Server {
    /// Starts both endpoints on free ports and creates bucket [`S3_BUCKET`].
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("relsync-s3-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        fs::create_dir_all(data.join(S3_BUCKET)).expect("mkdir bucket");
        let bin = s3s_fs_binary();
        let mut last_err = String::new();
        // A free port can be taken between the probe and the bind: retry a few times.
        for _ in 0..5 {
            let signed = match start_one(&bin, &dir, "signed", true) {
                Ok(s) => s,
                Err(e) => {
                    last_err = e;
                    continue;
                }
            };
            match start_one(&bin, &dir, "public", false) {
                Ok(public) => {
                    return Self {
                        signed: signed.0,
                        public: public.0,
                        signed_addr: signed.1,
                        public_addr: public.1,
                        dir,
                    };
                }
                Err(e) => {
                    let mut child = signed.0;
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = e;
                }
            }
        }
        panic!("s3s-fs did not start: {last_err}");
    }

    /// The environment the publisher needs to reach the signed endpoint (`s3://` origins).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", format!("http://{}", self.signed_addr)),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// The origin URL for the publisher: `s3://relsync/<prefix>`.
    pub fn origin(&self, prefix: &str) -> String {
        format!("s3://{S3_BUCKET}/{prefix}")
    }

    /// The path-style URL of `prefix` on the anonymous endpoint,
    /// `http://127.0.0.1:PORT/relsync/<prefix>/`: what a CDN proxies to.
    pub fn public_url(&self, prefix: &str) -> String {
        format!("http://{}/{S3_BUCKET}/{prefix}/", self.public_addr)
    }

    /// The signed endpoint's address.
    pub fn signed_addr(&self) -> SocketAddr {
        self.signed_addr
    }

    /// The folder holding the objects of `prefix`: object `<prefix>/K` is the file `K` in it.
    pub fn objects_dir(&self, prefix: &str) -> PathBuf {
        self.dir.path().join("data").join(S3_BUCKET).join(prefix)
    }

    /// Both endpoints' logs, for failure messages.
    pub fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- s3s-fs signed ---\n{}\n--- s3s-fs public ---\n{}",
            read("signed.log"),
            read("public.log")
        )
    }
}

/// Starts one `s3s-fs` on a free port; `signed`: with the test credentials.
fn start_one(
    bin: &Path,
    dir: &TempDir,
    name: &str,
    signed: bool,
) -> Result<(Child, SocketAddr), String> {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log = fs::File::create(dir.path().join(format!("{name}.log")))
        .map_err(|e| format!("creating {name}.log: {e}"))?;
    let err = log.try_clone().map_err(|e| format!("{name}.log: {e}"))?;
    let mut cmd = Command::new(bin);
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
    if signed {
        cmd.args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY]);
    }
    let mut child = cmd
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log =
                fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
            return Err(format!("s3s-fs ({name}) exited with {status}:\n{log}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok((child, addr));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "s3s-fs ({name}) not accepting on {addr} after {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        for child in [&mut self.signed, &mut self.public] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
