//! Two processes on one install at once: the lock lets exactly one update install a release;
//! the other names the holder and changes nothing, or (started after the first ended) finds
//! the install up to date. Rollback refuses while an update runs; `status` and `verify` take
//! no lock and need no write access, so they read the install meanwhile, and as a user who
//! cannot write it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relsync_tests::{
    Nginx, NginxOptions, Output, Report, Spawned, V1, V2, World, assert_trees_equal, copy_tree,
    current, pseudo_random,
};

use crate::common::{require_root, world_with_v1};

/// Rounds of two updaters started together, each on a fresh v1 install.
const ROUNDS: usize = 10;

/// Per-request throttle that keeps an update of a few KiB going for seconds (nginx counts
/// response headers too).
const SLOW_BYTES_PER_SEC: u64 = 1024;

/// The lock message of `relsync`, naming the holder.
fn lock_message(holder: u32, dir: &Path) -> String {
    format!(
        "another relsync process (pid {holder}) is working on {}",
        dir.display()
    )
}

/// Names of the release directories under `dir/releases`, sorted.
fn releases(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("releases"))
        .unwrap_or_else(|e| panic!("read_dir {}/releases: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The install is exactly v2 with v1 kept, and nothing of a second install is left around.
fn assert_v2_installed_once(w: &World, dir: &Path, what: &str) {
    assert_trees_equal(&current(dir), &w.v2);
    let names = releases(dir);
    assert!(
        names.len() == 2
            && names[0].starts_with(&format!("{V1}-"))
            && names[1].starts_with(&format!("{V2}-")),
        "{what}: releases/ must hold exactly v1 and v2, found {names:?}"
    );
    for leftover in [".relsync/staging", ".current.tmp"] {
        assert!(
            fs::symlink_metadata(dir.join(leftover)).is_err(),
            "{what}: {leftover} left behind"
        );
    }
    let s = w.status(dir);
    assert_eq!(s.str("version"), V2, "{what}\n{}", s.out);
    assert_eq!(s.str("previous_version"), V1, "{what}\n{}", s.out);
}

/// How one of two updaters started together ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Installed,
    UpToDate,
    Locked,
}

fn outcome(out: &Output, other_pid: u32, dir: &Path) -> Outcome {
    if !out.success() {
        out.assert_failure("an updater that lost the race");
        assert!(
            out.stderr.contains(&lock_message(other_pid, dir)),
            "a losing updater must name the lock holder (pid {other_pid})\n{out}"
        );
        return Outcome::Locked;
    }
    let r = Report::new(out.clone());
    assert_eq!(r.str("version"), V2, "{}", r.out);
    if r.bool("up_to_date") {
        assert!(!r.bool("applied"), "{}", r.out);
        Outcome::UpToDate
    } else {
        assert!(r.bool("applied"), "{}", r.out);
        Outcome::Installed
    }
}

#[test]
fn two_updaters_started_together_install_once() {
    let (w, n) = world_with_v1();
    let dirs: Vec<PathBuf> = (0..ROUNDS)
        .map(|i| w.install_dir(&format!("race-{i}")))
        .collect();
    for dir in &dirs {
        w.update_ok(&n.url(), dir);
    }
    w.push_ok(&w.v2, V2);

    let started = Instant::now();
    let (mut locked, mut up_to_date) = (0, 0);
    for (round, dir) in dirs.iter().enumerate() {
        let what = format!("round {round}");
        let a = w.update_cmd(&n.url(), dir).spawn();
        let b = w.update_cmd(&n.url(), dir).spawn();
        let (pid_a, pid_b) = (a.id(), b.id());
        let (out_a, out_b) = (a.wait(), b.wait());
        let outcomes = [outcome(&out_a, pid_b, dir), outcome(&out_b, pid_a, dir)];
        let installed = outcomes
            .iter()
            .filter(|o| **o == Outcome::Installed)
            .count();
        assert_eq!(
            installed, 1,
            "{what}: exactly one updater must install v2, got {outcomes:?}\n{out_a}\n{out_b}"
        );
        if outcomes.contains(&Outcome::Locked) {
            locked += 1;
        } else {
            up_to_date += 1;
        }
        assert_v2_installed_once(&w, dir, &what);
    }
    eprintln!(
        "{ROUNDS} rounds in {:?}: the loser hit the lock {locked} times and found the install up \
         to date {up_to_date} times",
        started.elapsed()
    );
}

/// Wait until `update` holds the lock of `dir` (it writes its pid there).
fn wait_for_lock(update: &mut Spawned, dir: &Path) {
    let lock = dir.join(".relsync/lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(&lock).unwrap_or_default().trim() != update.id().to_string() {
        assert!(Instant::now() < deadline, "the update never took the lock");
        assert!(
            !update.has_exited(),
            "the update ended before it was seen holding the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn rollback_refuses_while_an_update_runs_and_status_and_verify_read_meanwhile() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    w.push_ok(&w.v2, V2);
    w.update_ok(&n.url(), &dir);
    // v3: v2 and 4 KiB of new bytes, a few seconds' fetch through the throttle.
    let v3 = w.path().join("src-v3");
    copy_tree(&w.v2, &v3);
    fs::write(v3.join("three.bin"), pseudo_random("three", 4096)).expect("write");
    w.push_ok(&v3, "3.0.0");

    let slow = Nginx::start(&w.origin, &NginxOptions::rate_limited(SLOW_BYTES_PER_SEC));
    let mut update = w.update_cmd(&slow.url(), &dir).spawn();
    wait_for_lock(&mut update, &dir);
    let pid = update.id();

    let rollback = w.rollback(&dir);
    rollback.assert_failure("rollback while an update runs");
    assert!(
        rollback.stderr.contains(&lock_message(pid, &dir)),
        "rollback must name the update holding the lock (pid {pid})\n{rollback}"
    );
    assert_trees_equal(&current(&dir), &w.v2);

    // status and verify take no lock: they read the store's last commit (v2, never a
    // half-made v3) while the update holds the install.
    let status = w
        .relsync()
        .args(["status", "--json", "--install"])
        .arg(&dir)
        .run();
    status.assert_success("status while an update holds the lock");
    let s = Report::new(status);
    assert_eq!(s.str("version"), V2, "{}", s.out);
    let verify = w
        .relsync()
        .args(["verify", "--json", "--install"])
        .arg(&dir)
        .run();
    verify.assert_success("verify while an update holds the lock");
    let v = Report::new(verify);
    assert_eq!(v.str("version"), V2, "{}", v.out);
    assert!(
        !update.has_exited(),
        "the update was over before rollback and status ran; the throttle is too weak"
    );

    let out = update.wait();
    out.assert_success("the update that held the lock");
    let r = Report::new(out);
    assert_eq!(r.str("version"), "3.0.0", "{}", r.out);
    assert_trees_equal(&current(&dir), &v3);

    // Refused for the lock, not for want of a release to go back to.
    w.rollback(&dir)
        .assert_success("rollback once the update is done");
    assert_trees_equal(&current(&dir), &w.v2);
}

/// `status` and `verify` as a user who may read the install but write nothing in it: the
/// install handed to an unprivileged uid, then made read-only (root ignores modes, so the
/// check runs as that uid, through `setpriv`). Nothing is written, not even a mode.
#[test]
fn status_and_verify_need_no_write_access() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_root("running status and verify as an unprivileged user with setpriv");
    const NOBODY: u32 = 65534;
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    // Other users may enter the world's temp dir, as an ordinary parent directory.
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o755)).expect("chmod world");
    let chown_all = |path: &Path| {
        let out = relsync_tests::Cmd::new("chown")
            .args(["-R", "--no-dereference", &format!("{NOBODY}:{NOBODY}")])
            .arg(path)
            .run();
        out.assert_success("chown -R the install");
    };
    chown_all(&dir);
    let state = dir.join(".relsync");
    for entry in fs::read_dir(&state).expect("read .relsync").flatten() {
        let meta = fs::symlink_metadata(entry.path()).expect("stat");
        if meta.is_file() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o400)).expect("chmod");
        }
    }
    fs::set_permissions(&state, fs::Permissions::from_mode(0o500)).expect("chmod .relsync");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).expect("chmod install");
    let snapshot = || {
        let mut files: Vec<(String, u32, Vec<u8>)> = fs::read_dir(&state)
            .expect("read .relsync")
            .flatten()
            .map(|e| {
                let meta = fs::symlink_metadata(e.path()).expect("stat");
                let bytes = if meta.is_file() {
                    fs::read(e.path()).expect("read")
                } else {
                    Vec::new()
                };
                (
                    e.file_name().to_string_lossy().into_owned(),
                    meta.mode(),
                    bytes,
                )
            })
            .collect();
        files.sort();
        (fs::metadata(&state).expect("stat").mode(), files)
    };
    let before = snapshot();

    let as_nobody = |args: &[&str]| {
        let id = NOBODY.to_string();
        relsync_tests::Cmd::new("setpriv")
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
            .arg(&relsync_tests::bins().relsync)
            .args(args)
            .arg("--install")
            .arg(&dir)
            .run()
    };
    // The permissions bite: this user cannot write in `.relsync`.
    let id = NOBODY.to_string();
    let touch = relsync_tests::Cmd::new("setpriv")
        .args([
            "--reuid",
            &id,
            "--regid",
            &id,
            "--clear-groups",
            "--",
            "touch",
        ])
        .arg(state.join("probe"))
        .run();
    touch.assert_failure("an unprivileged user writing in a read-only .relsync");

    let status = as_nobody(&["status", "--json"]);
    status.assert_success("status with no write access");
    let s = Report::new(status);
    assert_eq!(s.str("version"), V1, "{}", s.out);
    let verify = as_nobody(&["verify", "--json"]);
    verify.assert_success("verify with no write access");
    let v = Report::new(verify);
    assert_eq!(v.str("version"), V1, "{}", v.out);
    assert_eq!(snapshot(), before, "status or verify changed .relsync");
}
