//! Run the binaries under test as processes, always bounded in time.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Default time limit for one command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// What a finished process left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// Wall-clock time the process ran.
    pub elapsed: Duration,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        writeln!(f, "exit: {} after {:?}", self.status, self.elapsed)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

impl Output {
    /// Whether the process exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panic with the whole output unless the process succeeded.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what}: expected success\n{self}");
        self
    }

    /// Panic with the whole output unless the process failed (non-zero exit, not a signal).
    pub fn assert_failure(&self, what: &str) -> &Self {
        assert!(
            self.status.code().is_some_and(|c| c != 0),
            "{what}: expected a non-zero exit code\n{self}"
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "{what}: failed but said nothing on stderr\n{self}"
        );
        self
    }

    /// stdout parsed as one JSON object. Accepts the whole of stdout, or else its last non-empty
    /// line (so NDJSON progress lines before the final summary are tolerated).
    pub fn json(&self) -> Value {
        parse_json_object(&self.stdout)
            .unwrap_or_else(|| panic!("stdout is not one JSON object\n{self}"))
    }
}

/// Parse `text` as one JSON object, or else its last non-empty line.
pub fn parse_json_object(text: &str) -> Option<Value> {
    let whole = serde_json::from_str::<Value>(text.trim()).ok();
    let v = whole.or_else(|| {
        let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
        serde_json::from_str::<Value>(last.trim()).ok()
    })?;
    v.is_object().then_some(v)
}

/// A command to run: program, arguments, working directory and environment.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    removed: Vec<OsString>,
    home: Option<PathBuf>,
    timeout: Duration,
}

impl Cmd {
    /// A command for `program`.
    pub fn new(program: impl AsRef<Path>) -> Self {
        Self {
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            removed: Vec::new(),
            home: None,
            timeout: COMMAND_TIMEOUT,
        }
    }

    /// The same command run by `wrapper` (e.g. `ip netns exec NAME`): the wrapper's words come
    /// first, then the program and its arguments; environment and timeout are kept.
    pub fn wrapped<S: AsRef<OsStr>>(mut self, wrapper: &[S]) -> Self {
        let Some((first, rest)) = wrapper.split_first() else {
            return self;
        };
        let mut args: Vec<OsString> = rest.iter().map(|a| a.as_ref().to_os_string()).collect();
        args.push(self.program.into_os_string());
        args.append(&mut self.args);
        self.program = PathBuf::from(first.as_ref());
        self.args = args;
        self
    }

    /// Add one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Set an environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// Remove an environment variable (one set with [`Cmd::env`] too).
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        let k = k.as_ref().to_os_string();
        self.envs.retain(|(name, _)| *name != k);
        self.removed.push(k);
        self
    }

    /// Point HOME and the XDG directories at `home`, so no state leaks between tests or from
    /// the user's machine.
    pub fn home(mut self, home: impl AsRef<Path>) -> Self {
        self.home = Some(home.as_ref().to_path_buf());
        self
    }

    /// Time limit (default [`COMMAND_TIMEOUT`]).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The command line as text.
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    pub(crate) fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // reqwest honours proxy variables; the tests talk to loopback only.
        for k in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            c.env_remove(k);
        }
        c.env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("RUST_BACKTRACE", "1")
            // No multicast from tests: peers are only those a test names.
            .env("RELSYNC_NO_MDNS", "1");
        // No LAN from tests unless a test gives a swarm key.
        c.env_remove("RELSYNC_SWARM_KEY");
        if let Some(home) = &self.home {
            let _ = std::fs::create_dir_all(home);
            c.env("HOME", home)
                .env("XDG_CACHE_HOME", home.join(".cache"))
                .env("XDG_CONFIG_HOME", home.join(".config"))
                .env("XDG_DATA_HOME", home.join(".local/share"))
                .env("XDG_STATE_HOME", home.join(".local/state"));
        }
        for k in &self.removed {
            c.env_remove(k);
        }
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Start the process in the background.
    pub fn spawn(&self) -> Spawned {
        let mut child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.display()));
        let stdout = child.stdout.take().map(reader);
        let stderr = child.stderr.take().map(reader);
        Spawned {
            command: self.display(),
            child: Some(child),
            stdout,
            stderr,
            started: Instant::now(),
            timeout: self.timeout,
        }
    }

    /// Run to completion (bounded by the timeout; a process that overruns is killed and the
    /// test panics).
    pub fn run(&self) -> Output {
        self.spawn().wait()
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// A running child process. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct Spawned {
    command: String,
    child: Option<Child>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    started: Instant,
    timeout: Duration,
}

impl Spawned {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether the process has exited already.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// SIGKILL the process (kill -9) and collect what it wrote.
    pub fn kill9(mut self) -> Output {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        self.collect()
    }

    /// Wait for the process to exit, at most the timeout; past it, kill it and panic.
    pub fn wait(mut self) -> Output {
        let deadline = self.started + self.timeout;
        while let Some(c) = self.child.as_mut() {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = c.kill();
                    let out = self.collect();
                    panic!("timed out after {:?}, killed\n{out}", out.elapsed);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for `{}`: {e}", self.command),
            }
        }
        self.collect()
    }

    fn collect(&mut self) -> Output {
        let mut child = self.child.take().expect("process already collected");
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for `{}`: {e}", self.command));
        let elapsed = self.started.elapsed();
        let join = |h: Option<JoinHandle<Vec<u8>>>| {
            h.map(|h| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
                .unwrap_or_default()
        };
        Output {
            command: self.command.clone(),
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
            elapsed,
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Free bytes for an unprivileged user on the file system holding `path`, from `df`.
pub fn available_bytes(path: &Path) -> u64 {
    let out = Cmd::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .timeout(Duration::from_secs(30))
        .run();
    out.assert_success("df");
    out.stdout
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next()
        .unwrap_or_else(|| panic!("cannot read df's output\n{out}"))
}
