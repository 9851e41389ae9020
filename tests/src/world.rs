//! A test world: a temp dir with a key pair, two releases and an origin folder, and the
//! commands of the CLI contract.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use crate::bins::bins;
use crate::run::{Cmd, Output};
use crate::tree::{Entry, make_release, tree_digest};

/// The channel every test publishes to.
pub const CHANNEL: &str = "stable";
/// The product every test publishes (cdn-publisher's default), and every `relsync` command
/// binds to (through `RELSYNC_PRODUCT`, the environment form of `--product`).
pub const PRODUCT: &str = "app";
/// Version of release 1.
pub const V1: &str = "1.0.0";
/// Version of release 2.
pub const V2: &str = "2.0.0";

/// A temp dir with a signing key, the v1 and v2 trees and an (empty) origin folder.
#[derive(Debug)]
pub struct World {
    tmp: TempDir,
    /// Secret key file.
    pub key: PathBuf,
    /// The public key line printed by keygen (`ed25519:<hex>`).
    pub pubkey: String,
    /// The origin folder (`--to` of push, served by nginx).
    pub origin: PathBuf,
    /// Source tree of release 1.
    pub v1: PathBuf,
    /// Source tree of release 2.
    pub v2: PathBuf,
    /// HOME of every child process.
    pub home: PathBuf,
}

impl World {
    /// Build the binaries (once), make a key pair, both releases and an empty origin.
    pub fn new() -> Self {
        let _ = bins();
        let tmp = tempfile::Builder::new()
            .prefix("relsync-e2e-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().to_path_buf();
        let home = root.join("home");
        fs::create_dir_all(&home).expect("mkdir home");
        let origin = root.join("origin");
        fs::create_dir_all(&origin).expect("mkdir origin");
        let (v1, v2) = (root.join("src-v1"), root.join("src-v2"));
        make_release(&v1, 1);
        make_release(&v2, 2);
        let mut w = Self {
            tmp,
            key: root.join("keys/release.key"),
            pubkey: String::new(),
            origin,
            v1,
            v2,
            home,
        };
        fs::create_dir_all(root.join("keys")).expect("mkdir keys");
        let out = w.keygen(&w.key.clone());
        out.assert_success("keygen");
        w.pubkey = parse_pubkey(&out);
        w
    }

    /// The temp dir everything lives in.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A fresh path for an install dir (not created).
    pub fn install_dir(&self, name: &str) -> PathBuf {
        self.path().join(format!("install-{name}"))
    }

    /// `cdn-publisher` with a private HOME.
    pub fn publisher(&self) -> Cmd {
        Cmd::new(&bins().publisher).home(&self.home)
    }

    /// `relsync` with a private HOME, installing [`PRODUCT`] (`RELSYNC_PRODUCT`).
    pub fn relsync(&self) -> Cmd {
        Cmd::new(&bins().relsync)
            .home(&self.home)
            .env("RELSYNC_PRODUCT", PRODUCT)
    }

    /// `cdn-publisher keygen --out KEY`.
    pub fn keygen(&self, out: &Path) -> Output {
        self.publisher().arg("keygen").arg("--out").arg(out).run()
    }

    /// `cdn-publisher push TREE --version V --channel stable --key KEY --to ORIGIN EXTRA...`.
    pub fn push(&self, tree: &Path, version: &str, extra: &[&str]) -> Output {
        self.publisher()
            .arg("push")
            .arg(tree)
            .args(["--version", version, "--channel", CHANNEL])
            .arg("--key")
            .arg(&self.key)
            .arg("--to")
            .arg(&self.origin)
            .args(extra)
            .run()
    }

    /// Push and panic unless it succeeds.
    pub fn push_ok(&self, tree: &Path, version: &str) -> Output {
        let out = self.push(tree, version, &[]);
        out.assert_success(&format!("push {} as {version}", tree.display()));
        out
    }

    /// The `relsync update` command (with `--json`) against `origin` (a URL or folder) into
    /// `install`, signed by this world's key.
    pub fn update_cmd(&self, origin: &str, install: &Path) -> Cmd {
        self.update_cmd_trusting(origin, install, &self.pubkey)
    }

    /// Like [`World::update_cmd`] but trusting `pubkey`.
    pub fn update_cmd_trusting(&self, origin: &str, install: &Path, pubkey: &str) -> Cmd {
        self.relsync()
            .arg("update")
            .args(["--origin", origin, "--channel", CHANNEL, "--trust", pubkey])
            .arg("--install")
            .arg(install)
            .arg("--json")
    }

    /// Run `relsync update` without `--json`: its text output.
    pub fn update_text(&self, origin: &str, install: &Path) -> Output {
        self.relsync()
            .arg("update")
            .args([
                "--origin",
                origin,
                "--channel",
                CHANNEL,
                "--trust",
                &self.pubkey,
            ])
            .arg("--install")
            .arg(install)
            .run()
    }

    /// Run `relsync update --json EXTRA...`.
    pub fn update(&self, origin: &str, install: &Path, extra: &[&str]) -> Output {
        self.update_cmd(origin, install).args(extra).run()
    }

    /// Run `relsync update --json`, panic unless it succeeds, return its JSON summary.
    pub fn update_ok(&self, origin: &str, install: &Path) -> Report {
        let out = self.update(origin, install, &[]);
        out.assert_success(&format!("update {} from {origin}", install.display()));
        Report::new(out)
    }

    /// `relsync status --install DIR --json`, which must succeed.
    pub fn status(&self, install: &Path) -> Report {
        let out = self
            .relsync()
            .arg("status")
            .arg("--install")
            .arg(install)
            .arg("--json")
            .run();
        out.assert_success("status");
        Report::new(out)
    }

    /// `relsync rollback --install DIR`.
    pub fn rollback(&self, install: &Path) -> Output {
        self.relsync()
            .arg("rollback")
            .arg("--install")
            .arg(install)
            .run()
    }

    /// Every file of the origin with its content hash.
    pub fn origin_snapshot(&self) -> BTreeMap<String, Entry> {
        tree_digest(&self.origin)
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// Check keygen's stdout is one line `ed25519:<64 hex>` and return it.
pub fn parse_pubkey(out: &Output) -> String {
    let line = out.stdout.trim();
    assert_eq!(
        line.lines().count(),
        1,
        "keygen must print the public key as one line\n{out}"
    );
    let hex = line
        .strip_prefix("ed25519:")
        .unwrap_or_else(|| panic!("public key must look like ed25519:<64 hex>\n{out}"));
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "public key must look like ed25519:<64 hex>\n{out}"
    );
    line.to_string()
}

/// `install/current`.
pub fn current(install: &Path) -> PathBuf {
    install.join("current")
}

/// The text of the `current` symlink, or `None` if there is none.
pub fn current_link(install: &Path) -> Option<PathBuf> {
    fs::read_link(current(install)).ok()
}

/// Flip (XOR 0xff) the byte at `offset` of `path`, even if the file is read-only.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let i = usize::try_from(offset).expect("offset fits usize");
    assert!(
        i < bytes.len(),
        "flip_byte: {} has only {} bytes",
        path.display(),
        bytes.len()
    );
    bytes[i] ^= 0xff;
    let perms = fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions();
    let mut writable = perms.clone();
    writable.set_mode(perms.mode() | 0o200);
    fs::set_permissions(path, writable).expect("chmod u+w");
    fs::write(path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, perms).expect("restore mode");
}

/// Files under `sub/` of the origin present in `after` but not in `before`.
pub fn new_files(
    before: &BTreeMap<String, Entry>,
    after: &BTreeMap<String, Entry>,
    sub: &str,
) -> Vec<String> {
    after
        .iter()
        .filter(|(p, e)| {
            p.starts_with(&format!("{sub}/"))
                && matches!(e, Entry::File { .. })
                && !before.contains_key(*p)
        })
        .map(|(p, _)| p.clone())
        .collect()
}

/// A command's JSON summary, with getters that fail with the whole output.
#[derive(Debug, Clone)]
pub struct Report {
    /// The process output.
    pub out: Output,
    /// stdout parsed.
    pub json: Value,
}

impl Report {
    /// Parse the output's JSON.
    pub fn new(out: Output) -> Self {
        let json = out.json();
        Self { out, json }
    }

    fn field(&self, name: &str) -> &Value {
        self.json
            .get(name)
            .unwrap_or_else(|| panic!("JSON has no field `{name}`\n{}", self.out))
    }

    /// A non-negative integer field.
    pub fn u64(&self, name: &str) -> u64 {
        self.field(name)
            .as_u64()
            .unwrap_or_else(|| panic!("`{name}` is not a non-negative integer\n{}", self.out))
    }

    /// A boolean field.
    pub fn bool(&self, name: &str) -> bool {
        self.field(name)
            .as_bool()
            .unwrap_or_else(|| panic!("`{name}` is not a boolean\n{}", self.out))
    }

    /// A string field, `None` if it is `null`.
    pub fn opt_str(&self, name: &str) -> Option<String> {
        let v = self.field(name);
        if v.is_null() {
            return None;
        }
        Some(
            v.as_str()
                .unwrap_or_else(|| panic!("`{name}` is neither a string nor null\n{}", self.out))
                .to_string(),
        )
    }

    /// A string field.
    pub fn str(&self, name: &str) -> String {
        self.opt_str(name)
            .unwrap_or_else(|| panic!("`{name}` is null\n{}", self.out))
    }
}
