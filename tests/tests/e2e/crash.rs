//! kill -9 in the middle of a fetch, then resume: the install is never half made (invariant 1)
//! and no verified byte is downloaded twice (invariant 3).
//!
//! A throttled nginx makes the fetch slow enough to kill; a second, unthrottled nginx on the same
//! origin serves the resumed run, so the two runs have separate access logs. nginx logs
//! `$body_bytes_sent` for the cut-short requests too, which tells what the first run received.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use relsync_tests::{
    LogEntry, Nginx, NginxOptions, V1, V2, World, assert_trees_equal, copy_tree, current,
    current_link, format_entries, pseudo_random,
};

use crate::common::{
    assert_honest_accounting, merge_intervals, now_secs, overlap, pack_bytes_fetched_twice,
    pack_data, world_with_v1,
};

/// What an interrupted request may legitimately fetch again: one frame (at most the max chunk,
/// 256 KiB, compressed) that was partly received and so never verified, plus slack.
const FRAME_SLACK_BYTES: u64 = 256 * 1024 + 1024;

/// A request nginx finished this shortly before the kill may still have been in the client's
/// socket buffer or mid-verification; it gets the same one-frame slack as a cut-short one.
const JUST_FINISHED_SECS: f64 = 0.5;

/// The first run's log and when it was killed.
#[derive(Debug)]
struct Killed {
    log: Vec<LogEntry>,
    killed_at_secs: f64,
}

/// Start `relsync update` into `dir` against an nginx limited to `rate` bytes/s per request,
/// wait until the manifest is in, then `min_wait`, then until a pack range completes (and a
/// moment more) or `settle` passes, and kill -9 it.
fn kill_mid_fetch(
    w: &World,
    dir: &Path,
    rate: u64,
    min_wait: Duration,
    settle: Duration,
) -> Killed {
    let slow = Nginx::start(&w.origin, &NginxOptions::rate_limited(rate));
    let mark = slow.mark();
    let mut child = w.update_cmd(&slow.url(), dir).spawn();

    let manifest_in = slow.wait_for(mark, Duration::from_secs(60), |log| {
        log.iter().any(|e| e.path().contains("/manifests/"))
    });
    if !manifest_in {
        let out = child.kill9();
        panic!(
            "the update fetched no manifest within 60 s\n{out}\nnginx log:\n{}",
            format_entries(&slow.entries_since(mark))
        );
    }
    std::thread::sleep(min_wait);
    let completed = slow.wait_for(mark, settle, |log| {
        log.iter().any(|e| e.is_pack() && e.status == 206)
    });
    if completed {
        // Past the grace for just-finished requests, so the completed range counts in full.
        std::thread::sleep(Duration::from_secs_f64(JUST_FINISHED_SECS + 0.2));
    }
    if child.has_exited() {
        let out = child.wait();
        panic!(
            "the update ended before it could be killed; the throttle is too weak\n{out}\nnginx log:\n{}",
            format_entries(&slow.entries_since(mark))
        );
    }
    let killed_at_secs = now_secs();
    let out = child.kill9();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the update was not killed by SIGKILL\n{out}"
    );
    // nginx logs each dead connection once it notices; wait for the log to settle.
    slow.wait_log_quiet(Duration::from_millis(1500), Duration::from_secs(15));
    Killed {
        log: slow.entries_since(mark),
        killed_at_secs,
    }
}

/// Invariant 3: the resumed run re-requests at most one frame per request the kill interrupted.
fn assert_no_verified_byte_fetched_twice(first: &Killed, second: &[LogEntry]) {
    let (received_bytes, refetched) = pack_bytes_fetched_twice(&first.log, second);
    let interrupted = pack_data(&first.log)
        .filter(|e| e.cut_short() || e.logged_at_secs >= first.killed_at_secs - JUST_FINISHED_SECS)
        .count() as u64;
    let logs = format!(
        "first run (killed):\n{}second run:\n{}",
        format_entries(&first.log),
        format_entries(second)
    );
    assert!(
        received_bytes > 0,
        "the first run received no pack bytes before the kill, so this proves nothing\n{logs}"
    );
    let allowed = interrupted * FRAME_SLACK_BYTES;
    assert!(
        refetched <= allowed,
        "the resumed run fetched {refetched} pack bytes the killed run had already received \
         ({received_bytes} received, {interrupted} requests interrupted, {allowed} allowed)\n{logs}"
    );
}

#[test]
fn fresh_install_killed_mid_fetch_resumes_without_refetching() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let dir = w.install_dir("crash");

    // 150 KB/s per request: ~9 MiB of incompressible packs take a minute over one connection,
    // so even 16 requests in flight are far from done when the kill comes after 1.5-3.7 s.
    let first = kill_mid_fetch(
        &w,
        &dir,
        150_000,
        Duration::from_millis(1500),
        Duration::from_millis(1500),
    );
    if fs::symlink_metadata(current(&dir)).is_ok() {
        // A killed first install may leave no `current`, or a complete one, never a partial one.
        assert_trees_equal(&current(&dir), &w.v1);
    }

    let fast = Nginx::start(&w.origin, &NginxOptions::default());
    let mark = fast.mark();
    let r = w.update_ok(&fast.url(), &dir);
    assert_eq!(r.str("version"), V1, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v1);
    let second = assert_honest_accounting(&fast, mark, &r);
    assert_no_verified_byte_fetched_twice(&first, &second);
}

/// v2 plus 3 MiB of new incompressible data: with delta frames the plain v1→v2 update is a
/// few KiB, too little to kill mid-fetch; this one fetches delta and plain frames.
pub fn v2_with_new_data(w: &World) -> std::path::PathBuf {
    let tree = w.v2.with_file_name("v2-new-data");
    copy_tree(&w.v2, &tree);
    fs::write(
        tree.join("new-data.bin"),
        pseudo_random("crash-new-data", 3 << 20),
    )
    .expect("write new data");
    tree
}

#[test]
fn update_killed_mid_fetch_keeps_the_old_release_and_resumes() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("crash");
    w.update_ok(&n.url(), &dir);
    let link = current_link(&dir);
    let v2 = v2_with_new_data(&w);
    w.push_ok(&v2, V2);

    let first = kill_mid_fetch(
        &w,
        &dir,
        20_000,
        Duration::from_millis(800),
        Duration::from_millis(700),
    );
    assert_eq!(
        current_link(&dir),
        link,
        "a killed update switched `current`"
    );
    assert_trees_equal(&current(&dir), &w.v1);

    let mark = n.mark();
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V2, "{}", r.out);
    assert_trees_equal(&current(&dir), &v2);
    let second = assert_honest_accounting(&n, mark, &r);
    assert_no_verified_byte_fetched_twice(&first, &second);
}

#[test]
fn interval_arithmetic() {
    assert_eq!(
        merge_intervals(vec![(5, 9), (0, 3), (2, 6), (20, 30)]),
        vec![(0, 9), (20, 30)]
    );
    let u = [(0, 10), (20, 30)];
    assert_eq!(overlap(&u, (5, 25)), 10);
    assert_eq!(overlap(&u, (10, 20)), 0);
    assert_eq!(overlap(&u, (0, 100)), 20);
}
