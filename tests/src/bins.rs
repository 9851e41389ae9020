//! Build the binaries under test (`relsync`, `cdn-publisher`, the test peers `evil-peer`,
//! `peer-load` and `outsider-peer` and the example apps `self-update` and `dir-app`) once per test process, in one
//! cargo run, and find them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The client, `relsync`.
    pub relsync: PathBuf,
    /// The publisher, `cdn-publisher`.
    pub publisher: PathBuf,
    /// A LAN peer that lies (`src/bin/evil-peer.rs`).
    pub evil_peer: PathBuf,
    /// Many LAN peers asking one node for chunks at once (`src/bin/peer-load.rs`).
    pub peer_load: PathBuf,
    /// A plain libp2p node from outside the fleet (`src/bin/outsider-peer.rs`).
    pub outsider_peer: PathBuf,
    /// The example app that replaces its own executable (`examples/src/bin/self-update.rs`).
    pub self_update: PathBuf,
    /// The example directory app (`examples/src/bin/dir-app.rs`).
    pub dir_app: PathBuf,
}

/// The workspace root (the parent of this package).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Whether the running test binary was built with the release profile.
fn release_profile() -> bool {
    std::env::current_exe()
        .map(|p| p.components().any(|c| c.as_os_str() == "release"))
        .unwrap_or(false)
}

/// The directory cargo puts the binaries of the current profile in.
fn profile_dir(root: &Path, release: bool) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        None => root.join("target"),
    };
    target.join(if release { "release" } else { "debug" })
}

fn build() -> Result<Bins, String> {
    // An escape hatch for running the suite against binaries built elsewhere.
    if let Some(dir) = std::env::var_os("RELSYNC_BIN_DIR") {
        let dir = PathBuf::from(dir);
        return check(in_dir(&dir));
    }
    let root = workspace_root();
    let release = release_profile();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["build", "--bin", "relsync", "--bin", "cdn-publisher"])
        .args([
            "--bin",
            "evil-peer",
            "--bin",
            "peer-load",
            "--bin",
            "outsider-peer",
            "--bin",
            "self-update",
            "--bin",
            "dir-app",
        ]);
    // `relsync` with the engine's fault-injecting seam (inert unless `RELSYNC_FAULT` or
    // `RELSYNC_FAULT_LOG` is set), for the crash tests.
    cmd.args(["--features", "relsync-cli/fault-injection"]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cargo:?} build in {}: {e}", root.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(80)..].join("\n");
        return Err(format!(
            "`cargo build` of the binaries under test failed ({}), last lines:\n{tail}",
            out.status
        ));
    }
    check(in_dir(&profile_dir(&root, release)))
}

fn in_dir(dir: &Path) -> Bins {
    Bins {
        relsync: dir.join("relsync"),
        publisher: dir.join("cdn-publisher"),
        evil_peer: dir.join("evil-peer"),
        peer_load: dir.join("peer-load"),
        outsider_peer: dir.join("outsider-peer"),
        self_update: dir.join("self-update"),
        dir_app: dir.join("dir-app"),
    }
}

fn check(bins: Bins) -> Result<Bins, String> {
    let all = [
        &bins.relsync,
        &bins.publisher,
        &bins.evil_peer,
        &bins.peer_load,
        &bins.outsider_peer,
        &bins.self_update,
        &bins.dir_app,
    ];
    for p in all {
        if !p.is_file() {
            return Err(format!("binary not found after build: {}", p.display()));
        }
    }
    Ok(bins)
}

/// Build the binaries (once per process; later callers wait for the first) and return their
/// paths. Panics with cargo's output if the build fails.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(build) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}
