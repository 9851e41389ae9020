//! A full disk. The install lives on a small file system of its own (a tmpfs, or an ext4 image
//! on a loop device), which fills up at one of three moments:
//!
//! - before an update: the free-space check refuses it, and nothing is fetched;
//! - while an update fetches: the fetch succeeds (it needs a few KiB) but assembling the new
//!   tree (several MiB) runs out of space;
//! - while a fresh install fetches: storing the fetched chunks runs out of space.
//!
//! Each failure must name the lack of space and what was being written, leave no staging tree,
//! and leave the install (and its state) as it was. Once space is back the same update must
//! succeed without downloading again what the failed run had fetched and verified.
//!
//! A disk that fills up mid-update is another process writing at the same time: the test
//! fills it as soon as the update has passed its free-space check (it creates
//! `.relsync/chunks` right after), while a throttled nginx keeps the fetch going.
//!
//! Mounting needs root (CI runs the suite as root): run as anyone else, each test fails
//! saying so rather than passing without running. The ext4 variant also needs `mkfs.ext4`
//! (e2fsprogs, which `scripts/setup.sh` installs) and loop devices; without either it fails
//! naming what is missing.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use relsync_tests::{
    Cmd, LogEntry, Nginx, NginxOptions, Output, Spawned, V1, V2, World, assert_trees_equal,
    available_bytes, current, current_link, format_entries,
};

use crate::common::{
    assert_honest_accounting, now_secs, pack_bytes_fetched_twice, pack_data, require_root, run_log,
    world_with_v1,
};

/// Size of the scratch file system: v1 (~8.5 MiB of files) installs with room to spare, since
/// the fetched frames are kept until apply (peak about twice the release).
const SCRATCH_MIB: u64 = 40;

/// Size of the ext4 image: more than [`SCRATCH_MIB`], as its journal and metadata take a few
/// MiB.
const EXT4_MIB: u64 = 64;

/// Too small for v1: the free-space check refuses a fresh install.
const TOO_SMALL_MIB: u64 = 8;

/// Free space left on the file system by a filler that runs before an update.
const LEAVE_FREE: u64 = 1 << 20;

/// Free space left by a filler that runs while an update fetches: room for the few KiB of
/// chunks the v1→v2 update fetches (and its state database), far from the ~8 MiB its new
/// tree needs.
const LEAVE_FOR_FETCH: u64 = 1 << 20;

/// Free space left by a filler that runs while a fresh install fetches ~9 MiB: some chunks
/// are stored, then storing runs out of space.
const LEAVE_FOR_FRESH_FETCH: u64 = 3 << 20;

/// Per-request throttle that keeps the few KiB of the v1→v2 fetch going for seconds (nginx
/// counts response headers too).
const SLOW_DELTA_BYTES_PER_SEC: u64 = 512;

/// Per-request throttle for a fresh install (~9 MiB over two requests): a few seconds.
const SLOW_FRESH_BYTES_PER_SEC: u64 = 3 << 20;

/// What a request that failed mid-way may legitimately fetch again: one frame that was partly
/// received (never verified) and one verified frame that could not be stored for lack of
/// space, each at most the max chunk (256 KiB) compressed, plus slack.
const FAILED_REQUEST_SLACK_BYTES: u64 = 2 * (256 * 1024 + 1024);

/// `errno` ENOSPC on Linux.
const ENOSPC: i32 = 28;

/// The kind of scratch file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsKind {
    Tmpfs,
    /// On a loop device; delayed allocation reports a full disk differently from tmpfs.
    Ext4,
}

/// A file system of its own mounted on a directory; unmounted (lazily if need be) on drop.
#[derive(Debug)]
struct Scratch {
    mnt: PathBuf,
    kind: FsKind,
}

/// What the tests need root for: each calls [`require_root`] first, so that it fails at once
/// (not after building a world) and says why.
const MOUNTING: &str =
    "mounting a small file system of its own (a tmpfs, or ext4 on a loop device)";

impl Scratch {
    /// Mount a tmpfs of `size_mib` MiB on `mnt` (created). Needs root.
    fn tmpfs(mnt: &Path, size_mib: u64) -> Self {
        fs::create_dir_all(mnt).unwrap_or_else(|e| panic!("mkdir {}: {e}", mnt.display()));
        let out = Cmd::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755")])
            .arg("tmpfs")
            .arg(mnt)
            .timeout(Duration::from_secs(30))
            .run();
        out.assert_success(&format!("mount a tmpfs on {}", mnt.display()));
        Self {
            mnt: mnt.to_path_buf(),
            kind: FsKind::Tmpfs,
        }
    }

    /// Make an ext4 file system of `size_mib` MiB in the file `image` (no blocks reserved for
    /// root: the tests and relsync run as root) and mount it on `mnt` through a loop device.
    /// Needs root, `mkfs.ext4` and loop devices; fails naming what is missing.
    fn ext4(image: &Path, mnt: &Path, size_mib: u64) -> Self {
        assert!(
            Command::new("mkfs.ext4").arg("-V").output().is_ok(),
            "the ext4 variant needs mkfs.ext4, which is not on PATH: install e2fsprogs \
             (scripts/setup.sh does)"
        );
        assert!(
            Path::new("/dev/loop-control").exists(),
            "the ext4 variant needs loop devices, and /dev/loop-control is missing (a container \
             needs them passed in, e.g. `--privileged` or `--device /dev/loop-control`)"
        );
        File::create(image)
            .and_then(|f| f.set_len(size_mib << 20))
            .unwrap_or_else(|e| panic!("create {}: {e}", image.display()));
        Cmd::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(image)
            .timeout(Duration::from_secs(60))
            .run()
            .assert_success("mkfs.ext4");
        fs::create_dir_all(mnt).unwrap_or_else(|e| panic!("mkdir {}: {e}", mnt.display()));
        let out = Cmd::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(image)
            .arg(mnt)
            .timeout(Duration::from_secs(30))
            .run();
        out.assert_success(&format!(
            "mount the ext4 image {} on {} through a loop device",
            image.display(),
            mnt.display()
        ));
        Self {
            mnt: mnt.to_path_buf(),
            kind: FsKind::Ext4,
        }
    }

    fn path(&self) -> &Path {
        &self.mnt
    }

    /// Grow or shrink a tmpfs.
    fn resize_tmpfs(&self, size_mib: u64) {
        assert_eq!(self.kind, FsKind::Tmpfs, "only a tmpfs can be resized");
        Cmd::new("mount")
            .args(["-o", &format!("remount,size={size_mib}m")])
            .arg(&self.mnt)
            .timeout(Duration::from_secs(30))
            .run()
            .assert_success("remount the tmpfs");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it (a test failed mid-way): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Write zeros to `dir/filler` until the file system of `dir` has only `leave` bytes free,
/// then sync them (so ext4 allocates them). Never fills the disk completely, so an update
/// writing at the same time only ever sees `leave` bytes or more. Returns the filler's path.
fn fill_leaving(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let target = available_bytes(dir).saturating_sub(leave);
    let mut f = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < target {
        let n = buf.len().min((target - written) as usize);
        match f.write(&buf[..n]) {
            Ok(0) => break,
            Ok(k) => written += k as u64,
            Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("write {}: {e}", path.display()),
        }
    }
    f.sync_all()
        .unwrap_or_else(|e| panic!("sync {}: {e}", path.display()));
    path
}

/// A filler that ran while an update was fetching.
#[derive(Debug)]
struct FilledMidFetch {
    filler: PathBuf,
    /// When the filler was done (seconds since the epoch, as nginx logs).
    at_secs: f64,
}

/// Runs an update into `dir` from an nginx limited to `rate` bytes/s, filling the file system
/// at `mnt` mid-fetch leaving `leave` bytes; returns its output and nginx's log of it.
fn update_filling_up(
    w: &World,
    dir: &Path,
    mnt: &Path,
    rate: u64,
    leave: u64,
) -> (Output, Vec<LogEntry>, FilledMidFetch) {
    let slow = Nginx::start(&w.origin, &NginxOptions::rate_limited(rate));
    let mark = slow.mark();
    let mut update = w
        .update_cmd(&slow.url(), dir)
        .timeout(Duration::from_secs(120))
        .spawn();
    let filled = fill_once_fetching(&mut update, dir, mnt, leave);
    let out = update.wait();
    (out, run_log(&slow, mark), filled)
}

/// Wait until `update` (running into `install`) has passed its free-space check, i.e. until
/// it creates `.relsync/chunks`, then fill the file system at `mnt` leaving `leave` bytes.
fn fill_once_fetching(
    update: &mut Spawned,
    install: &Path,
    mnt: &Path,
    leave: u64,
) -> FilledMidFetch {
    let chunks = install.join(".relsync/chunks");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !chunks.exists() {
        assert!(
            Instant::now() < deadline,
            "the update created no {} within 60 s",
            chunks.display()
        );
        assert!(
            !update.has_exited(),
            "the update ended before it started fetching"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let filler = fill_leaving(mnt, leave);
    FilledMidFetch {
        filler,
        at_secs: now_secs(),
    }
}

/// The filler ran while the fetch was still going: some pack response ended after it.
fn assert_filled_mid_fetch(filled: &FilledMidFetch, log: &[LogEntry]) {
    let last = pack_data(log).map(|e| e.logged_at_secs).fold(0.0, f64::max);
    assert!(
        last > filled.at_secs,
        "the fetch was over ({last:.3}) before the disk was filled ({:.3}); the throttle is too \
         weak for this test to mean anything\nnginx log:\n{}",
        filled.at_secs,
        format_entries(log)
    );
}

/// Files whose name ends in `.part` anywhere below `dir`.
fn part_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(part_files(&p));
        } else if p.extension().is_some_and(|x| x == "part") {
            out.push(p);
        }
    }
    out
}

/// A failed update left no staging tree, no partly written chunk, and an install whose
/// `current` is still `link` (and the tree `tree` if any) with a usable state and audit log.
fn assert_failed_cleanly(
    w: &World,
    dir: &Path,
    out: &Output,
    link: &Option<PathBuf>,
    tree: Option<&Path>,
) {
    let staging = dir.join(".relsync/staging");
    assert!(
        !staging.exists(),
        "the failed update left {} behind\n{out}",
        staging.display()
    );
    let parts = part_files(&dir.join(".relsync"));
    assert!(
        parts.is_empty(),
        "the failed update left partly written chunks: {parts:?}\n{out}"
    );
    assert_eq!(
        &current_link(dir),
        link,
        "a failed update switched `current`\n{out}"
    );
    let Some(tree) = tree else {
        let releases: Vec<_> = fs::read_dir(dir.join("releases"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            releases.is_empty(),
            "a failed fresh install left releases behind: {releases:?}\n{out}"
        );
        return;
    };
    assert_trees_equal(&current(dir), tree);
    let s = w.status(dir);
    assert_eq!(
        s.str("version"),
        V1,
        "status after the failed update\n{}",
        s.out
    );
    assert!(
        s.opt_str("staged_version").is_none(),
        "a failed update left a release staged\n{}",
        s.out
    );
    audit_verify(w, dir);
}

/// `relsync audit verify` passes (the CLI has no other verify command for an install).
fn audit_verify(w: &World, dir: &Path) {
    w.relsync()
        .args(["audit", "verify", "--install"])
        .arg(dir)
        .run()
        .assert_success("audit verify");
}

/// The error names a full disk and what was being written (a path under `under`).
fn assert_names_full_disk(out: &Output, under: &Path) {
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("no space left on device"),
        "the error must say the disk is full (\"No space left on device\")\n{out}"
    );
    assert!(
        out.stderr.contains(&format!("{}/", under.display())),
        "the error must name what was being written, under {}\n{out}",
        under.display()
    );
}

#[test]
fn disk_full_update_fails_cleanly_then_succeeds_with_space() {
    require_root(MOUNTING);
    let (w, n) = world_with_v1();
    // Declared after the world, so it is unmounted before the world's temp dir is removed.
    let scratch = Scratch::tmpfs(&w.path().join("mnt"), SCRATCH_MIB);
    let dir = scratch.path().join("install");

    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V1, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v1);
    w.push_ok(&w.v2, V2);
    let link = current_link(&dir);

    let free_after_v1 = available_bytes(scratch.path());
    let filler = fill_leaving(scratch.path(), LEAVE_FREE);
    let free = available_bytes(scratch.path());
    eprintln!("tmpfs: {free_after_v1} bytes free after v1, {free} after filling");
    assert!(
        free <= 2 * LEAVE_FREE,
        "the filler left {free} bytes free, more than the update should be able to do without"
    );

    let mark = n.mark();
    let out = w
        .update_cmd(&n.url(), &dir)
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_failure("update to v2 on a full disk");
    eprintln!("full disk: {}", out.stderr.trim());
    assert!(
        out.stderr.to_lowercase().contains("space"),
        "the error must say the disk is full (\"No space left on device\")\n{out}"
    );
    let log = run_log(&n, mark);
    assert!(
        pack_data(&log).next().is_none(),
        "an update refused for lack of space fetched packs anyway\n{}",
        format_entries(&log)
    );
    assert_failed_cleanly(&w, &dir, &out, &link, Some(&w.v1));

    fs::remove_file(&filler).unwrap_or_else(|e| panic!("rm {}: {e}", filler.display()));
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V2, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v2);
    let s = w.status(&dir);
    assert_eq!(s.str("version"), V2, "{}", s.out);
}

/// v1 installed on `scratch`, v2 pushed; the disk fills up while the update fetches, so
/// assembling v2 runs out of space. Then space comes back and the update completes without
/// fetching a pack byte twice.
fn staging_runs_out_of_space(w: &World, n: &Nginx, scratch: &Scratch) {
    let dir = scratch.path().join("install");
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V1, "{}", r.out);
    w.push_ok(&w.v2, V2);
    let link = current_link(&dir);
    let chunks = dir.join(".relsync/chunks");
    assert!(
        !chunks.exists(),
        "{} exists before the update, so it cannot tell when the fetch starts",
        chunks.display()
    );

    let (out, first, filled) = update_filling_up(
        w,
        &dir,
        scratch.path(),
        SLOW_DELTA_BYTES_PER_SEC,
        LEAVE_FOR_FETCH,
    );
    eprintln!(
        "{:?}: staging out of space after {:?}: {}",
        scratch.kind,
        out.elapsed,
        out.stderr.trim()
    );
    out.assert_failure("update to v2 while the disk fills up");
    assert_filled_mid_fetch(&filled, &first);
    assert!(
        !pack_data(&first).any(LogEntry::cut_short),
        "the fetch was cut short: the disk must run out while assembling, not fetching\n{out}\n{}",
        format_entries(&first)
    );
    assert_names_full_disk(&out, &dir.join(".relsync/staging"));
    assert_failed_cleanly(w, &dir, &out, &link, Some(&w.v1));
    let kept = fs::read_dir(&chunks).map(|rd| rd.count()).unwrap_or(0);
    assert!(
        kept > 0,
        "the fetched chunks were not kept in {}\n{out}",
        chunks.display()
    );

    fs::remove_file(&filled.filler)
        .unwrap_or_else(|e| panic!("rm {}: {e}", filled.filler.display()));
    let mark = n.mark();
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V2, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v2);
    let second = assert_honest_accounting(n, mark, &r);
    let (received, refetched) = pack_bytes_fetched_twice(&first, &second);
    let logs = format!(
        "failed run:\n{}second run:\n{}",
        format_entries(&first),
        format_entries(&second)
    );
    assert!(
        received > 0,
        "the failed run fetched no pack bytes, so this proves nothing\n{logs}"
    );
    assert_eq!(
        refetched, 0,
        "the second run fetched again {refetched} of the {received} pack bytes the failed run \
         had fetched and verified\n{logs}"
    );
    let s = w.status(&dir);
    assert_eq!(s.str("version"), V2, "{}", s.out);
    assert_eq!(s.str("previous_version"), V1, "{}", s.out);
    assert!(!dir.join(".relsync/staging").exists());
    audit_verify(w, &dir);
}

#[test]
fn disk_filling_up_while_staging_on_tmpfs_fails_cleanly_and_resumes() {
    require_root(MOUNTING);
    let (w, n) = world_with_v1();
    let scratch = Scratch::tmpfs(&w.path().join("mnt"), SCRATCH_MIB);
    staging_runs_out_of_space(&w, &n, &scratch);
}

#[test]
fn disk_filling_up_while_staging_on_ext4_fails_cleanly_and_resumes() {
    require_root(MOUNTING);
    let (w, n) = world_with_v1();
    let scratch = Scratch::ext4(&w.path().join("ext4.img"), &w.path().join("mnt"), EXT4_MIB);
    staging_runs_out_of_space(&w, &n, &scratch);
}

#[test]
fn disk_filling_up_during_a_fresh_install_leaves_nothing_installed() {
    require_root(MOUNTING);
    let (w, n) = world_with_v1();
    let scratch = Scratch::tmpfs(&w.path().join("mnt"), TOO_SMALL_MIB);
    let dir = scratch.path().join("install");

    // Too small from the start: refused before any pack is fetched.
    let mark = n.mark();
    let out = w.update(&n.url(), &dir, &[]);
    out.assert_failure("a fresh install on a disk too small for it");
    assert!(
        out.stderr.contains("not enough free space"),
        "the error must say the disk is too small\n{out}"
    );
    let log = run_log(&n, mark);
    assert!(
        pack_data(&log).next().is_none(),
        "a fresh install refused for lack of space fetched packs anyway\n{}",
        format_entries(&log)
    );
    assert_failed_cleanly(&w, &dir, &out, &None, None);

    // Room enough at the start, then the disk fills up while the chunks come in.
    scratch.resize_tmpfs(SCRATCH_MIB);
    let (out, first, filled) = update_filling_up(
        &w,
        &dir,
        scratch.path(),
        SLOW_FRESH_BYTES_PER_SEC,
        LEAVE_FOR_FRESH_FETCH,
    );
    eprintln!(
        "fresh install out of space after {:?}: {}",
        out.elapsed,
        out.stderr.trim()
    );
    out.assert_failure("a fresh install while the disk fills up");
    assert_filled_mid_fetch(&filled, &first);
    assert_names_full_disk(&out, &dir.join(".relsync/chunks"));
    assert_failed_cleanly(&w, &dir, &out, &None, None);

    fs::remove_file(&filled.filler)
        .unwrap_or_else(|e| panic!("rm {}: {e}", filled.filler.display()));
    let mark = n.mark();
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V1, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v1);
    let second = assert_honest_accounting(&n, mark, &r);
    let (received, refetched) = pack_bytes_fetched_twice(&first, &second);
    let requests = pack_data(&first).count() as u64;
    let allowed = requests * FAILED_REQUEST_SLACK_BYTES;
    let logs = format!(
        "failed run:\n{}second run:\n{}",
        format_entries(&first),
        format_entries(&second)
    );
    assert!(
        received > allowed,
        "the failed run fetched only {received} pack bytes, too few to tell a resumed fetch \
         from a new one\n{logs}"
    );
    assert!(
        refetched <= allowed,
        "the second run fetched again {refetched} of the {received} pack bytes the failed run \
         had received ({requests} requests failed, {allowed} allowed)\n{logs}"
    );
    audit_verify(&w, &dir);
}
