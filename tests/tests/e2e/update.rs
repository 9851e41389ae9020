//! `relsync update`, `status`, `rollback`: exact trees, honest and small downloads.

use std::fs;

use relsync_tests::{
    BIG_FILE_LEN, Nginx, NginxOptions, V1, V2, World, assert_trees_equal, current, current_link,
    format_entries, pseudo_random,
};

use crate::common::{assert_honest_accounting, run_log, world_with_v1};

#[test]
fn install_then_update_is_exact_and_cheap() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");

    let mark = n.mark();
    let r1 = w.update_ok(&n.url(), &dir);
    assert_trees_equal(&current(&dir), &w.v1);
    assert_eq!(r1.str("version"), V1, "{}", r1.out);
    assert_eq!(
        r1.opt_str("previous_version"),
        None,
        "first install\n{}",
        r1.out
    );
    assert!(
        !r1.bool("up_to_date"),
        "first install is not up to date\n{}",
        r1.out
    );
    assert!(r1.u64("files_written") > 0, "{}", r1.out);
    let _ = r1.u64("duration_ms");
    assert_honest_accounting(&n, mark, &r1);

    w.push_ok(&w.v2, V2);
    let mark = n.mark();
    let r2 = w.update_ok(&n.url(), &dir);
    assert_trees_equal(&current(&dir), &w.v2);
    assert_eq!(r2.str("version"), V2, "{}", r2.out);
    assert_eq!(
        r2.opt_str("previous_version").as_deref(),
        Some(V1),
        "{}",
        r2.out
    );
    assert!(!r2.bool("up_to_date"), "{}", r2.out);
    assert!(
        r2.u64("files_linked") > 0,
        "unchanged files must be linked\n{}",
        r2.out
    );
    assert!(
        r2.u64("bytes_reused") > 0,
        "v2 shares most bytes with v1\n{}",
        r2.out
    );
    assert!(
        r2.u64("files_written") > 0,
        "changed files must be written\n{}",
        r2.out
    );
    let log = assert_honest_accounting(&n, mark, &r2);
    let manifests: Vec<_> = log
        .iter()
        .filter(|e| e.path().contains("/manifests/"))
        .collect();
    assert!(
        manifests.len() == 1 && manifests[0].path().contains(".from-"),
        "an update from v1 must fetch v2's manifest as a delta against v1, once\n{}",
        format_entries(&log)
    );
    for e in log.iter().filter(|e| e.is_pack()) {
        assert!(
            e.status == 206 && e.ranges().len() == 1,
            "pack fetches must be single-range requests answered 206: {e}\n{}",
            format_entries(&log)
        );
    }

    // The same release fresh, for scale.
    let fresh = w.install_dir("fresh");
    let mark = n.mark();
    let r3 = w.update_ok(&n.url(), &fresh);
    assert_trees_equal(&current(&fresh), &w.v2);
    assert_honest_accounting(&n, mark, &r3);
    let (delta, full) = (r2.u64("bytes_downloaded"), r3.u64("bytes_downloaded"));
    assert!(
        full >= BIG_FILE_LEN as u64 * 9 / 10,
        "a fresh install of ~9 MiB of mostly random data downloaded only {full} bytes"
    );
    assert!(
        delta * 10 < full * 3,
        "v1->v2 update downloaded {delta} bytes, not under 30% of the {full} of a fresh install"
    );
}

#[test]
fn status_and_rollback() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    let s = w.status(&dir);
    assert_eq!(s.str("version"), V1, "{}", s.out);

    w.push_ok(&w.v2, V2);
    w.update_ok(&n.url(), &dir);
    let s = w.status(&dir);
    assert_eq!(s.str("version"), V2, "{}", s.out);
    assert_eq!(
        s.opt_str("previous_version").as_deref(),
        Some(V1),
        "{}",
        s.out
    );
    let link_v2 = current_link(&dir);

    w.rollback(&dir).assert_success("rollback");
    assert_ne!(
        current_link(&dir),
        link_v2,
        "rollback did not switch `current`"
    );
    assert_trees_equal(&current(&dir), &w.v1);
    let s = w.status(&dir);
    assert_eq!(s.str("version"), V1, "status after rollback\n{}", s.out);
}

#[test]
fn second_run_when_up_to_date_fetches_only_the_pointer() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    let link = current_link(&dir);

    let mark = n.mark();
    let r = w.update_ok(&n.url(), &dir);
    assert!(r.bool("up_to_date"), "{}", r.out);
    assert_eq!(r.str("version"), V1, "{}", r.out);
    assert_eq!(
        r.opt_str("previous_version"),
        None,
        "nothing is kept for rollback after one install\n{}",
        r.out
    );
    let log = assert_honest_accounting(&n, mark, &r);
    assert!(
        !log.is_empty(),
        "an up-to-date check must still fetch the channel pointer"
    );
    assert!(
        log.iter().all(|e| e.path().contains("/channels/")),
        "an up-to-date run must fetch only the channel pointer:\n{}",
        format_entries(&log)
    );
    let bytes = r.u64("bytes_downloaded");
    assert!(
        bytes < 4096,
        "the pointer should be tiny, got {bytes} bytes\n{}",
        r.out
    );
    assert_eq!(
        current_link(&dir),
        link,
        "an up-to-date run switched `current`"
    );
    assert_trees_equal(&current(&dir), &w.v1);
}

#[test]
fn dry_run_changes_nothing() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    w.push_ok(&w.v2, V2);
    let link = current_link(&dir);

    let mark = n.mark();
    let out = w.update(&n.url(), &dir, &["--dry-run"]);
    out.assert_success("update --dry-run");
    assert_eq!(
        current_link(&dir),
        link,
        "--dry-run switched `current`\n{out}"
    );
    assert_trees_equal(&current(&dir), &w.v1);
    let s = w.status(&dir);
    assert_eq!(
        s.str("version"),
        V1,
        "--dry-run changed the status\n{}",
        s.out
    );
    let log = run_log(&n, mark);
    assert!(
        !log.iter().any(|e| e.is_pack()),
        "--dry-run only plans; it must not fetch packs:\n{}",
        format_entries(&log)
    );

    // A dry run into an empty dir installs nothing.
    let fresh = w.install_dir("fresh");
    w.update(&n.url(), &fresh, &["--dry-run"])
        .assert_success("fresh --dry-run");
    assert!(
        fs::symlink_metadata(current(&fresh)).is_err(),
        "--dry-run created {}",
        current(&fresh).display()
    );

    // And the real update still works afterwards.
    w.update_ok(&n.url(), &dir);
    assert_trees_equal(&current(&dir), &w.v2);
}

#[test]
fn installs_from_a_folder_origin() {
    let w = relsync_tests::World::new();
    w.push_ok(&w.v1, V1);
    let dir = w.install_dir("folder");
    let origin = w.origin.to_str().expect("utf-8 temp path").to_string();
    let r = w.update_ok(&origin, &dir);
    assert_eq!(r.str("version"), V1, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v1);
}

/// Delta frames against the installed release make the update smaller than plain chunks do,
/// and give the exact tree.
#[test]
fn delta_frames_beat_plain_chunks() {
    let mut bytes = Vec::new();
    for delta_from in ["1", "0"] {
        let w = World::new();
        w.push_ok(&w.v1, V1);
        let n = Nginx::start(&w.origin, &NginxOptions::default());
        let dir = w.install_dir("delta");
        w.update_ok(&n.url(), &dir);
        w.push(&w.v2, V2, &["--delta-from", delta_from])
            .assert_success("push v2");
        let mark = n.mark();
        let r = w.update_ok(&n.url(), &dir);
        assert_trees_equal(&current(&dir), &w.v2);
        assert_honest_accounting(&n, mark, &r);
        let deltas = r.u64("chunks_delta");
        if delta_from == "0" {
            assert_eq!(deltas, 0, "{}", r.out);
        } else {
            assert!(deltas > 0, "no delta frames used: {}", r.out);
        }
        bytes.push(r.u64("bytes_downloaded"));
    }
    assert!(
        bytes[0] * 2 < bytes[1],
        "deltas should at least halve this update: {} with, {} without",
        bytes[0],
        bytes[1]
    );
}

/// A library as a compiler rebuilds it: v2 moves code by 96 bytes, so a 4-byte address every
/// 48 bytes changes. Exact matches are then at most 44 bytes long; bsdiff pairs the regions.
fn recompiled_library(dir: &std::path::Path, version: u32) {
    let mut lib = pseudo_random("recompiled-library", 3 << 20);
    if version >= 2 {
        move_code(&mut lib, 0, 48, 96);
        lib.splice(1 << 20..1 << 20, pseudo_random("new-function", 96));
    }
    write_library(dir, &lib);
}

/// Adds `by` to the 4-byte address at every `step` bytes from `first`, as moving code does.
fn move_code(lib: &mut [u8], first: usize, step: usize, by: u32) {
    for at in (first..lib.len() - 4).step_by(step) {
        let address = u32::from_le_bytes([lib[at], lib[at + 1], lib[at + 2], lib[at + 3]]);
        lib[at..at + 4].copy_from_slice(&address.wrapping_add(by).to_le_bytes());
    }
}

fn write_library(dir: &std::path::Path, lib: &[u8]) {
    fs::create_dir_all(dir.join("lib")).expect("mkdir lib");
    fs::write(dir.join("lib/core.so"), lib).expect("write lib/core.so");
}

/// A client two releases behind gets delta frames against its own release (an older base,
/// matched from hashed seeds), not a full download, and the exact tree.
#[test]
fn a_client_two_releases_behind_gets_deltas_against_its_own_release() {
    let w = World::new();
    let (v1, v2, v3) = (
        w.path().join("lib-v1"),
        w.path().join("lib-v2"),
        w.path().join("lib-v3"),
    );
    recompiled_library(&v1, 1);
    recompiled_library(&v2, 2);
    // v3 moves v2's code again: other addresses change, another function comes in.
    let mut lib = fs::read(v2.join("lib/core.so")).expect("read v2");
    move_code(&mut lib, 16, 64, 64);
    lib.splice(2 << 20..2 << 20, pseudo_random("another-function", 64));
    write_library(&v3, &lib);

    w.push_ok(&v1, V1);
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let behind = w.install_dir("behind");
    w.update_ok(&n.url(), &behind);
    w.push_ok(&v2, V2);
    w.push_ok(&v3, "3.0.0");

    let mark = n.mark();
    let r = w.update_ok(&n.url(), &behind);
    assert_eq!(r.str("version"), "3.0.0", "{}", r.out);
    assert_trees_equal(&current(&behind), &v3);
    assert_honest_accounting(&n, mark, &r);
    assert!(
        r.u64("chunks_bsdiff") > 0,
        "no bsdiff frames used: {}",
        r.out
    );
    let fresh = w.update_ok(&n.url(), &w.install_dir("fresh"));
    assert_trees_equal(&current(&w.install_dir("fresh")), &v3);
    let (delta, full) = (r.u64("bytes_downloaded"), fresh.u64("bytes_downloaded"));
    assert!(
        delta * 3 < full,
        "two releases behind should cost under a third of a full download: {delta} B, full {full} B"
    );
}

/// bsdiff delta frames carry recompiled code in fewer bytes than zstd delta frames, end to end
/// over nginx, and rebuild the exact tree.
#[test]
fn bsdiff_frames_carry_recompiled_code() {
    let mut bytes = Vec::new();
    for codec in ["bsdiff", "zstd"] {
        let w = World::new();
        let (v1, v2) = (w.path().join("lib-v1"), w.path().join("lib-v2"));
        recompiled_library(&v1, 1);
        recompiled_library(&v2, 2);
        w.push_ok(&v1, V1);
        let n = Nginx::start(&w.origin, &NginxOptions::default());
        let dir = w.install_dir("lib");
        w.update_ok(&n.url(), &dir);
        let extra: &[&str] = if codec == "zstd" {
            &["--no-bsdiff"]
        } else {
            &[]
        };
        let push = w.push(&v2, V2, extra);
        push.assert_success("push v2");
        let mark = n.mark();
        let r = w.update_ok(&n.url(), &dir);
        assert_trees_equal(&current(&dir), &v2);
        assert_honest_accounting(&n, mark, &r);
        let (deltas, bsdiff) = (r.u64("chunks_delta"), r.u64("chunks_bsdiff"));
        assert!(deltas > 0, "no delta frames used: {}", r.out);
        if codec == "zstd" {
            assert_eq!(bsdiff, 0, "{}", r.out);
        } else {
            assert_eq!(
                bsdiff, deltas,
                "every chunk should travel as bsdiff: {}",
                r.out
            );
        }
        bytes.push(r.u64("bytes_downloaded"));
    }
    assert!(
        bytes[0] * 3 < bytes[1],
        "bsdiff frames should cut this update to under a third: {} with, {} without",
        bytes[0],
        bytes[1]
    );
}
