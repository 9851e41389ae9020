//! The example apps of `examples/`, run as processes against an nginx origin: `self-update`
//! replaces its own running executable and re-executes it; `dir-app` installs a release,
//! then confirms it healthy on its next start.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use relsync_tests::{CHANNEL, Cmd, Nginx, NginxOptions, Output, bins, parse_pubkey};
use tempfile::TempDir;

/// Every process of these tests finishes in well under a second or two.
const LIMIT: Duration = Duration::from_secs(30);

/// A temp dir with a signing key and an empty origin folder.
struct Publisher {
    tmp: TempDir,
    key: PathBuf,
    pubkey: String,
    origin: PathBuf,
}

impl Publisher {
    fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("relsync-e2e-examples-")
            .tempdir()
            .expect("tempdir");
        let (key, origin) = (tmp.path().join("release.key"), tmp.path().join("origin"));
        fs::create_dir_all(&origin).expect("mkdir origin");
        let out = Self::cmd(tmp.path())
            .arg("keygen")
            .arg("--out")
            .arg(&key)
            .run();
        out.assert_success("keygen");
        let pubkey = parse_pubkey(&out);
        Self {
            tmp,
            key,
            pubkey,
            origin,
        }
    }

    fn cmd(root: &Path) -> Cmd {
        Cmd::new(&bins().publisher)
            .home(root.join("home"))
            .timeout(LIMIT)
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Publishes `tree` as `version` (zstd level 3: these tests are about the apps, not the
    /// compression ratio).
    fn push(&self, tree: &Path, version: &str, product: &str) {
        Self::cmd(self.path())
            .arg("push")
            .arg(tree)
            .args(["--version", version, "--channel", CHANNEL, "--level", "3"])
            .args(["--product", product])
            .arg("--key")
            .arg(&self.key)
            .arg("--to")
            .arg(&self.origin)
            .run()
            .assert_success(&format!("push {version}"));
    }

    /// `program ARGS...` with a private HOME.
    fn run(&self, program: &Path, args: &[&str]) -> Output {
        Cmd::new(program)
            .home(self.path().join("home"))
            .timeout(LIMIT)
            .args(args)
            .run()
    }
}

/// What `self-update run` prints for `bytes` installed as `version`.
fn hello_line(version: &str, bytes: &[u8]) -> String {
    format!(
        "hello from {version} ({})",
        &blake3::hash(bytes).to_hex()[..12]
    )
}

/// A copy of `self-update` without its debug info (~160 MB in a debug build, ~12 MB without),
/// so that publishing it takes a fraction of a second. A plain copy if `strip` is missing.
fn stripped_self_update(to: &Path) {
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(to)
        .arg(&bins().self_update)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(&bins().self_update, to).expect("copy self-update");
    }
}

#[test]
fn self_update_replaces_its_running_executable_and_reexecutes() {
    let p = Publisher::new();
    let bin = p.path().join("bin");
    fs::create_dir_all(&bin).expect("mkdir bin");
    let hello = bin.join("hello");
    stripped_self_update(&hello);
    let v1 = fs::read(&hello).expect("read v1");

    // v2: the same program with bytes appended (an ELF runs with trailing data), so its hash
    // differs and tells which executable printed the line.
    let release = p.path().join("release-v2");
    fs::create_dir_all(&release).expect("mkdir release");
    let mut v2 = v1.clone();
    v2.extend_from_slice(b"\nrelsync examples e2e: release 2.0.0\n");
    fs::write(release.join("hello"), &v2).expect("write v2");
    p.push(&release, "2.0.0", "hello");
    let n = Nginx::start(&p.origin, &NginxOptions::default());

    let run = p.run(&hello, &["run"]);
    run.assert_success("run before any update");
    assert!(run.stdout.contains(&hello_line("unmanaged", &v1)), "{run}");

    let url = n.url();
    let update = ["update", "--origin", &url, "--trust", &p.pubkey];
    let out = p.run(&hello, &update);
    out.assert_success("self-update");
    // Printed by the re-executed new executable: its own hash is v2's.
    assert!(out.stdout.contains(&hello_line("2.0.0", &v2)), "{out}");
    assert!(
        fs::read(&hello).expect("read hello") == v2,
        "bin/hello is not v2's bytes\n{out}"
    );
    let mode = fs::metadata(&hello)
        .expect("stat hello")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "{out}");
    let mut left: Vec<_> = fs::read_dir(&bin)
        .expect("list bin")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["hello", "hello.relsync"],
        "no temporary file may be left\n{out}"
    );

    let again = p.run(&hello, &["run"]);
    again.assert_success("run after the update");
    assert!(again.stdout.contains(&hello_line("2.0.0", &v2)), "{again}");

    // Up to date: nothing to replace, the executable keeps its inode.
    let inode = fs::metadata(&hello).expect("stat hello").ino();
    let noop = p.run(&hello, &update);
    noop.assert_success("second self-update");
    assert!(noop.stdout.contains(&hello_line("2.0.0", &v2)), "{noop}");
    assert_eq!(
        fs::metadata(&hello).expect("stat hello").ino(),
        inode,
        "an up-to-date update replaced the executable\n{noop}"
    );
}

#[test]
fn dir_app_installs_then_confirms_on_its_next_start() {
    let p = Publisher::new();
    let release = p.path().join("release-v1");
    fs::create_dir_all(release.join("lib")).expect("mkdir release");
    fs::write(release.join("README"), "dir-app 1.0.0\n").expect("write");
    fs::write(release.join("lib/data.bin"), vec![7u8; 100_000]).expect("write");
    p.push(&release, "1.0.0", "app");
    let n = Nginx::start(&p.origin, &NginxOptions::default());

    let install = p.path().join("app");
    let url = n.url();
    let install_arg = install.to_string_lossy();
    let args = [
        "--origin",
        &url,
        "--trust",
        &p.pubkey,
        "--product",
        "app",
        "--install",
        &install_arg,
    ];
    let first = p.run(&bins().dir_app, &args);
    first.assert_success("dir-app, first start");
    for line in [
        "UpdateAvailable { version: 1.0.0,",
        "from peers",
        "RestartRequired: restart to run 1.0.0",
    ] {
        assert!(first.stdout.contains(line), "missing {line:?}\n{first}");
    }
    assert_eq!(
        fs::read(install.join("current/lib/data.bin")).expect("read the installed file"),
        vec![7u8; 100_000],
        "{first}"
    );

    let second = p.run(&bins().dir_app, &args);
    second.assert_success("dir-app, second start");
    for line in [
        "start 1 on trial: self-test passed, release kept",
        "1.0.0 is current",
    ] {
        assert!(second.stdout.contains(line), "missing {line:?}\n{second}");
    }
}
