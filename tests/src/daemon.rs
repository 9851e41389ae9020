//! Long-running nodes (`relsync serve`, `evil-peer`) read line by line while they run.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::run::Cmd;

/// A node process: its stdout lines arrive as it prints them, its stderr goes to a file. It
/// must stop by itself (`--stop-after`), and is killed on drop.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stderr: PathBuf,
    /// The listen addresses it printed first, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
}

impl Daemon {
    /// Starts `cmd`, logging stderr to `log`, and waits (up to 20 s) for its first address.
    pub fn start(name: &str, cmd: &Cmd, log: &Path) -> Self {
        let stderr = File::create(log).expect("creating the daemon log");
        let mut child = cmd
            .command()
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (`{}`): {e}", cmd.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Self {
            name: name.to_owned(),
            child,
            lines,
            stderr: log.to_path_buf(),
            addrs: Vec::new(),
        };
        let first = daemon.next_line(Duration::from_secs(20));
        daemon.addrs.push(first);
        daemon
    }

    /// The first listen address.
    pub fn addr(&self) -> &str {
        &self.addrs[0]
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "{}: nothing printed within {timeout:?}\n{}",
                    self.name,
                    self.log()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!("{}: exited ({status:?})\n{}", self.name, self.log())
            }
        }
    }

    /// Every JSON event up to and including the next whose `event` is `name`; panics after
    /// `timeout`.
    pub fn events_until(&mut self, name: &str, timeout: Duration) -> Vec<Value> {
        let until = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = self.next_line(left.max(Duration::from_millis(1)));
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let last = value["event"] == name;
            events.push(value);
            if last {
                return events;
            }
        }
    }

    /// The next JSON event whose `event` is `name`, skipping others; panics after `timeout`.
    pub fn event(&mut self, name: &str, timeout: Duration) -> Value {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = self.next_line(left.max(Duration::from_millis(1)));
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if value["event"] == name {
                return value;
            }
            if value["event"] == "update_failed" {
                eprintln!("{}: {line}", self.name);
            }
        }
    }

    /// SIGTERM, then the `stopped` event's stats (needs `--json`); waits for the exit.
    pub fn stop(mut self) -> Value {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let stopped = self.event("stopped", Duration::from_secs(20));
        let _ = self.child.wait();
        stopped["stats"].clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
