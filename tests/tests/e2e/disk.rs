//! A full disk: the install lives on a small tmpfs that is filled up before the update. The
//! update must fail with a message naming the lack of space and leave the install (and its
//! state) usable; once space is back, the same update must succeed.
//!
//! Mounting needs root. Without it the test prints `SKIPPED: ...` and passes, except under CI
//! (`CI` set), where it runs as root and a failed mount is a failure.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use relsync_tests::{Cmd, V1, V2, assert_trees_equal, available_bytes, current, current_link};

use crate::common::world_with_v1;

/// Size of the tmpfs: v1 (~8.5 MiB of files) installs with room to spare, since the fetched
/// frames are kept until apply (peak about twice the release).
const TMPFS_MIB: u64 = 40;

/// Free space left on the tmpfs by the filler before the update to v2.
const LEAVE_FREE: u64 = 1 << 20;

/// `errno` ENOSPC on Linux.
const ENOSPC: i32 = 28;

/// A tmpfs mounted on a directory; unmounted (lazily if need be) on drop.
#[derive(Debug)]
struct Tmpfs {
    mnt: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size_mib` MiB on `mnt` (created). `Ok(None)` when the mount is not
    /// permitted (not root) and the test should be skipped.
    fn mount(mnt: &Path, size_mib: u64) -> Option<Self> {
        fs::create_dir_all(mnt).unwrap_or_else(|e| panic!("mkdir {}: {e}", mnt.display()));
        let out = Cmd::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755")])
            .arg("tmpfs")
            .arg(mnt)
            .timeout(Duration::from_secs(30))
            .run();
        if out.success() {
            return Some(Self {
                mnt: mnt.to_path_buf(),
            });
        }
        let err = out.stderr.to_lowercase();
        let not_permitted = [
            "permission denied",
            "not permitted",
            "only root",
            "superuser",
        ]
        .iter()
        .any(|k| err.contains(k));
        if not_permitted && std::env::var_os("CI").is_none() {
            eprintln!(
                "SKIPPED: needs root to mount tmpfs (mount said: {})",
                out.stderr.trim()
            );
            return None;
        }
        panic!(
            "cannot mount a tmpfs on {} (CI={:?}; the suite runs as root in CI)\n{out}",
            mnt.display(),
            std::env::var_os("CI")
        );
    }

    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for Tmpfs {
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

/// Fill the file system of `dir` with zeros in `dir/filler` until it is full, then give back
/// `leave` bytes. Returns the filler's path.
fn fill_leaving(dir: &Path, leave: u64, fs_size: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&buf) {
            Ok(0) => break,
            Ok(k) => written += k as u64,
            Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("write {}: {e}", path.display()),
        }
        assert!(
            written <= fs_size,
            "wrote {written} bytes to {} without filling a {fs_size}-byte file system",
            path.display()
        );
    }
    let len = f.metadata().expect("stat filler").len();
    f.set_len(len.saturating_sub(leave))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
    path
}

#[test]
fn disk_full_update_fails_cleanly_then_succeeds_with_space() {
    let (w, n) = world_with_v1();
    // Declared after the world, so it is unmounted before the world's temp dir is removed.
    let Some(tmpfs) = Tmpfs::mount(&w.path().join("mnt"), TMPFS_MIB) else {
        return;
    };
    let dir = tmpfs.path().join("install");

    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V1, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v1);
    w.push_ok(&w.v2, V2);
    let link = current_link(&dir);

    let free_after_v1 = available_bytes(tmpfs.path());
    let filler = fill_leaving(tmpfs.path(), LEAVE_FREE, TMPFS_MIB << 20);
    let free = available_bytes(tmpfs.path());
    eprintln!("tmpfs: {free_after_v1} bytes free after v1, {free} after filling");
    assert!(
        free <= 2 * LEAVE_FREE,
        "the filler left {free} bytes free, more than the update should be able to do without"
    );

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
    assert_eq!(
        current_link(&dir),
        link,
        "a failed update switched `current`\n{out}"
    );
    assert_trees_equal(&current(&dir), &w.v1);
    let s = w.status(&dir);
    assert_eq!(
        s.str("version"),
        V1,
        "status after the failed update\n{}",
        s.out
    );

    fs::remove_file(&filler).unwrap_or_else(|e| panic!("rm {}: {e}", filler.display()));
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V2, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v2);
    let s = w.status(&dir);
    assert_eq!(s.str("version"), V2, "{}", s.out);
}
