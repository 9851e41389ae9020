//! Bad input: tampered origin objects, the wrong key, an origin that is not there. Each must
//! fail with a non-zero exit and a message, and leave the install as it was.

use std::fs;
use std::path::Path;
use std::time::Duration;

use relsync_tests::{
    Output, current, current_link, flip_byte, format_entries, free_port, parse_pubkey,
};

use crate::common::{assert_untouched, installed_v1_then_push_v2, run_log, world_with_v1};

fn assert_nothing_installed(dir: &Path, out: &Output) {
    assert!(
        fs::symlink_metadata(current(dir)).is_err(),
        "a failed fresh install left {}\n{out}",
        current(dir).display()
    );
}

/// Both forms of a manifest on the origin: the delta against v1 that an update fetches, and
/// the whole file that a fresh install fetches. Each, tampered, is refused before any pack.
#[test]
fn tampered_manifest_is_refused() {
    let (w, n) = world_with_v1();
    let (dir, manifests, _) = installed_v1_then_push_v2(&w, &n, "a");
    let (deltas, whole): (Vec<_>, Vec<_>) = manifests.iter().partition(|m| m.contains(".from-"));
    assert!(
        deltas.len() == 1 && whole.len() == 1,
        "push of v2 must add a manifest and its delta against v1: {manifests:?}"
    );
    let tamper = |file: &str| {
        let path = w.origin.join(file);
        let len = fs::metadata(&path).expect("manifest").len();
        flip_byte(&path, len / 2);
    };

    tamper(deltas[0]);
    let link = current_link(&dir);
    let mark = n.mark();
    let out = w.update(&n.url(), &dir, &[]);
    out.assert_failure("update with a tampered manifest delta");
    assert!(out.stderr.contains("manifest"), "{out}");
    assert_untouched(&w, &dir, &link, &out);
    let mut log = run_log(&n, mark);

    tamper(whole[0]);
    let fresh = w.install_dir("fresh");
    let mark = n.mark();
    let out = w.update(&n.url(), &fresh, &[]);
    out.assert_failure("fresh install with a tampered manifest");
    assert!(out.stderr.contains("manifest"), "{out}");
    assert_nothing_installed(&fresh, &out);
    log.extend(run_log(&n, mark));
    assert!(
        !log.iter().any(|e| e.is_pack()),
        "packs were fetched before the manifest was verified:\n{}",
        format_entries(&log)
    );
}

#[test]
fn tampered_channel_pointer_is_refused() {
    let (w, n) = world_with_v1();
    let (dir, _, _) = installed_v1_then_push_v2(&w, &n, "a");
    let path = w.origin.join("channels/stable");
    let len = fs::metadata(&path).expect("pointer").len();
    flip_byte(&path, len / 2);

    let link = current_link(&dir);
    let out = w.update(&n.url(), &dir, &[]);
    out.assert_failure("update with a tampered channel pointer");
    assert_untouched(&w, &dir, &link, &out);
}

#[test]
fn tampered_pack_is_refused() {
    let (w, n) = world_with_v1();
    // Two identical v1 installs: `a` shows which pack ranges the v1->v2 update fetches, `b`
    // then meets the tampered pack at exactly those ranges.
    let b = w.install_dir("b");
    w.update_ok(&n.url(), &b);
    let (a, _, _) = installed_v1_then_push_v2(&w, &n, "a");
    let mark = n.mark();
    w.update_ok(&n.url(), &a);
    let log = run_log(&n, mark);
    let packs: Vec<_> = log.iter().filter(|e| e.is_pack()).collect();
    assert!(
        !packs.is_empty(),
        "v1->v2 fetched no pack:\n{}",
        format_entries(&log)
    );

    // One flipped byte in the middle of every pack range the update needed (each byte once:
    // flipping twice would restore it).
    let mut targets = std::collections::BTreeSet::new();
    for e in &packs {
        let path = w.origin.join(e.path().trim_start_matches('/'));
        let len = fs::metadata(&path).expect("pack").len();
        let (first, last) = match e.ranges().as_slice() {
            [(a, Some(b))] => (*a, (*b).min(len - 1)),
            [(a, None)] => (*a, len - 1),
            _ => (0, len - 1),
        };
        targets.insert((path, first + (last - first) / 2));
    }
    for (path, offset) in &targets {
        flip_byte(path, *offset);
    }

    let link = current_link(&b);
    let out = w.update(&n.url(), &b, &[]);
    out.assert_failure("update with a tampered pack");
    assert_untouched(&w, &b, &link, &out);

    let fresh = w.install_dir("fresh");
    let out = w.update(&n.url(), &fresh, &[]);
    out.assert_failure("fresh install with a tampered pack");
    assert_nothing_installed(&fresh, &out);
}

#[test]
fn wrong_trust_key_is_refused() {
    let (w, n) = world_with_v1();
    let (dir, _, _) = installed_v1_then_push_v2(&w, &n, "a");
    let other = w.keygen(&w.path().join("keys/other.key"));
    other.assert_success("keygen of another key");
    let wrong = parse_pubkey(&other);

    let link = current_link(&dir);
    let out = w.update_cmd_trusting(&n.url(), &dir, &wrong).run();
    out.assert_failure("update trusting the wrong key");
    let err = out.stderr.to_lowercase();
    assert!(
        ["signature", "key", "trust"]
            .iter()
            .any(|k| err.contains(k)),
        "the error must name the signature/key problem\n{out}"
    );
    assert_untouched(&w, &dir, &link, &out);

    let fresh = w.install_dir("fresh");
    let out = w.update_cmd_trusting(&n.url(), &fresh, &wrong).run();
    out.assert_failure("fresh install trusting the wrong key");
    assert_nothing_installed(&fresh, &out);

    let out = w
        .update_cmd_trusting(&n.url(), &fresh, "ed25519:not-hex")
        .run();
    out.assert_failure("a malformed --trust key");
    assert_nothing_installed(&fresh, &out);
}

#[test]
fn closed_port_gives_a_clear_error() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    let link = current_link(&dir);

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let out = w
        .update_cmd(&url, &dir)
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_failure("update from a closed port");
    let err = out.stderr.to_lowercase();
    assert!(
        ["connect", "refused", &port.to_string()]
            .iter()
            .any(|k| err.contains(k)),
        "the error must say the origin could not be reached\n{out}"
    );
    assert_untouched(&w, &dir, &link, &out);

    let fresh = w.install_dir("fresh");
    let out = w
        .update_cmd(&url, &fresh)
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_failure("fresh install from a closed port");
    assert_nothing_installed(&fresh, &out);
}
