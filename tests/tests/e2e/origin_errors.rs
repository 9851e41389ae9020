//! An origin that lost objects or fails with server errors: a missing pack, a missing manifest,
//! an origin that answers 500 for every pack. Each must fail with a non-zero exit and a message
//! naming the cause, in bounded time, and leave the install as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Duration;

use relsync_tests::{Nginx, NginxOptions, World, current, current_link, format_entries};

use crate::common::{assert_untouched, installed_v1_then_push_v2, run_log, world_with_v1};

/// Longest a failing update against a 500ing origin may take, retries and backoff included.
const SERVER_ERROR_DEADLINE: Duration = Duration::from_secs(60);

/// Tries per range request the client may make against a failing origin.
const MAX_ATTEMPTS_PER_RANGE: usize = 4;

#[test]
fn missing_pack_fails_clearly_and_keeps_v1() {
    let (w, n) = world_with_v1();
    // Two identical v1 installs: `a` shows which packs the v1->v2 update needs, `b` then meets
    // the origin with one of them gone.
    let b = w.install_dir("b");
    w.update_ok(&n.url(), &b);
    let (a, _, new_packs) = installed_v1_then_push_v2(&w, &n, "a");
    assert!(
        !new_packs.is_empty(),
        "the push of v2 added no pack to the origin"
    );
    let mark = n.mark();
    w.update_ok(&n.url(), &a);
    let log = run_log(&n, mark);
    let fetched: BTreeSet<String> = log
        .iter()
        .filter(|e| e.is_pack())
        .map(|e| e.path().trim_start_matches('/').to_string())
        .collect();
    // A pack only v2 uses and the update fetched: certainly needed by b's update too.
    let victim = new_packs
        .iter()
        .find(|p| fetched.contains(*p))
        .unwrap_or_else(|| {
            panic!(
                "the v1->v2 update fetched none of the packs v2's push added ({new_packs:?}):\n{}",
                format_entries(&log)
            )
        })
        .clone();
    fs::remove_file(w.origin.join(&victim)).expect("delete the pack");

    let link = current_link(&b);
    let mark = n.mark();
    let out = w
        .update_cmd(&n.url(), &b)
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_failure("update with a pack missing from the origin");
    eprintln!("missing pack: {}", out.stderr.trim());
    let err = out.stderr.to_lowercase();
    assert!(
        ["no pack", "404", "not found"]
            .iter()
            .any(|k| err.contains(k)),
        "the error must say the pack is missing (\"no pack\", \"404\" or \"not found\")\n{out}"
    );
    assert_untouched(&w, &b, &link, &out);
    let log = run_log(&n, mark);
    let victim_path = format!("/{victim}");
    assert!(
        log.iter()
            .any(|e| e.path() == victim_path && e.status == 404),
        "nginx never answered 404 for the deleted {victim}:\n{}",
        format_entries(&log)
    );
    // A 404 is not transient: retrying it cannot help.
    let tries = log.iter().filter(|e| e.path() == victim_path).count();
    assert!(
        tries <= MAX_ATTEMPTS_PER_RANGE,
        "{tries} requests for the missing {victim}:\n{}",
        format_entries(&log)
    );
}

#[test]
fn missing_manifest_fails_clearly_and_keeps_v1() {
    let (w, n) = world_with_v1();
    let (dir, manifests, _) = installed_v1_then_push_v2(&w, &n, "a");
    assert_eq!(
        manifests.len(),
        2,
        "push of v2 must add a manifest and its delta against v1: {manifests:?}"
    );
    for file in &manifests {
        fs::remove_file(w.origin.join(file)).expect("delete the manifest");
    }

    let link = current_link(&dir);
    let mark = n.mark();
    let out = w
        .update_cmd(&n.url(), &dir)
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_failure("update with the manifest missing from the origin");
    eprintln!("missing manifest: {}", out.stderr.trim());
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("manifest")
            && ["no manifest", "404", "not found"]
                .iter()
                .any(|k| err.contains(k)),
        "the error must say the manifest is missing\n{out}"
    );
    assert_untouched(&w, &dir, &link, &out);
    let log = run_log(&n, mark);
    assert!(
        !log.iter().any(|e| e.is_pack()),
        "packs were fetched without a manifest:\n{}",
        format_entries(&log)
    );
    let s = w.status(&dir);
    assert_eq!(s.str("version"), relsync_tests::V1, "{}", s.out);
}

#[test]
fn server_errors_on_packs_fail_in_bounded_time_with_bounded_retries() {
    let (w, n) = world_with_v1();
    let (dir, _, _) = installed_v1_then_push_v2(&w, &n, "a");
    // Same origin, but every pack request gets a 500.
    let bad = Nginx::start(&w.origin, &NginxOptions::failing_packs(500));

    let check = |dir: &std::path::Path, what: &str| {
        let mark = bad.mark();
        let out = w
            .update_cmd(&bad.url(), dir)
            .timeout(SERVER_ERROR_DEADLINE + Duration::from_secs(30))
            .run();
        out.assert_failure(what);
        assert!(
            out.elapsed < SERVER_ERROR_DEADLINE,
            "{what}: gave up only after {:?} (limit {SERVER_ERROR_DEADLINE:?})\n{out}",
            out.elapsed
        );
        assert!(
            out.stderr.contains("500"),
            "{what}: the error must name the HTTP 500\n{out}"
        );
        let log = run_log(&bad, mark);
        let packs: Vec<_> = log.iter().filter(|e| e.is_pack()).collect();
        assert!(
            !packs.is_empty(),
            "{what}: no pack was requested, so this proves nothing\n{out}\nnginx log:\n{}",
            format_entries(&log)
        );
        let mut per_range: BTreeMap<(&str, Option<&str>), usize> = BTreeMap::new();
        for e in &packs {
            assert_eq!(e.status, 500, "{what}: {e}");
            *per_range.entry((e.path(), e.range.as_deref())).or_default() += 1;
        }
        for ((path, range), tries) in &per_range {
            assert!(
                *tries <= MAX_ATTEMPTS_PER_RANGE,
                "{what}: {tries} requests for {path} range {range:?}, at most \
                 {MAX_ATTEMPTS_PER_RANGE} allowed\nnginx log:\n{}",
                format_entries(&log)
            );
        }
        eprintln!(
            "{what}: failed after {:?}, {} pack requests over {} ranges: {}",
            out.elapsed,
            packs.len(),
            per_range.len(),
            out.stderr.trim()
        );
        out
    };

    let link = current_link(&dir);
    let out = check(&dir, "update against an origin answering 500 for packs");
    assert_untouched(&w, &dir, &link, &out);

    let fresh = w.install_dir("fresh");
    let out = check(
        &fresh,
        "fresh install against an origin answering 500 for packs",
    );
    assert!(
        fs::symlink_metadata(current(&fresh)).is_err(),
        "a failed fresh install left {}\n{out}",
        current(&fresh).display()
    );

    // The install is fine once the origin is: the good nginx serves the same folder.
    w.update_ok(&n.url(), &dir);
    relsync_tests::assert_trees_equal(&current(&dir), &w.v2);
}

/// A fresh install from a server sending `rate` bytes/s, with `args`, fails within `within`
/// with `expected` in its message and installs nothing; the same install over the healthy
/// server `n` then succeeds.
fn assert_slow_install_fails(
    (w, n): (&World, &Nginx),
    rate: u64,
    args: &[&str],
    expected: &str,
    within: Duration,
) {
    let dir = w.install_dir("slow");
    let slow = Nginx::start(&w.origin, &NginxOptions::rate_limited(rate));
    let out = w
        .update_cmd(&slow.url(), &dir)
        .args(args)
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_failure(&format!(
        "install from a server sending {rate} B/s with {args:?}"
    ));
    assert!(out.stderr.contains(expected), "{out}");
    assert!(
        out.elapsed < within,
        "a slow server held the install for {:?}\n{out}",
        out.elapsed
    );
    assert!(
        fs::symlink_metadata(current(&dir)).is_err(),
        "a failed install left `current`\n{out}"
    );
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), relsync_tests::V1, "{}", r.out);
}

/// A server that withholds data (here: 2 kB/s, against `--min-rate 65536`) fails a fresh
/// install once a response is past its 10 s grace, naming the cause.
#[test]
fn a_server_dribbling_bytes_fails_at_the_minimum_rate() {
    let (w, n) = world_with_v1();
    assert_slow_install_fails(
        (&w, &n),
        2_000,
        &["--min-rate", "65536"],
        "too slow",
        SERVER_ERROR_DEADLINE,
    );
}

/// A server slow enough to pass any per-response minimum (20 kB/s, with `--min-rate 0`) is
/// still cut off by the overall `--deadline`, naming it.
#[test]
fn an_update_past_its_deadline_fails_and_installs_nothing() {
    let (w, n) = world_with_v1();
    assert_slow_install_fails(
        (&w, &n),
        20_000,
        &["--min-rate", "0", "--deadline", "3s"],
        "update deadline passed",
        Duration::from_secs(20),
    );
}
