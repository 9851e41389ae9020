//! Helpers shared by the themes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relsync_tests::{
    LogEntry, LogMark, Nginx, NginxOptions, Output, Report, V1, V2, World, assert_trees_equal,
    current, current_link, format_entries, new_files,
};

/// Fails (never skips) unless the tests run as root, saying that the test needs root for
/// `needs`: CI runs the suite as root, so a test that passed there without running would
/// hide what it tests.
#[track_caller]
pub fn require_root(needs: &str) {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root for {needs}: run the suite as root, as CI does, or leave this test \
         out with `--skip <its name>`"
    );
}

/// A world with v1 pushed and an nginx serving its origin.
pub fn world_with_v1() -> (World, Nginx) {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    (w, n)
}

/// The access log entries of the run that started at `mark`, once nginx has logged them all.
pub fn run_log(n: &Nginx, mark: LogMark) -> Vec<LogEntry> {
    n.wait_log_quiet(Duration::from_millis(150), Duration::from_secs(5));
    n.entries_since(mark)
}

/// Invariant 6: the run's `bytes_downloaded` is exactly the body bytes nginx sent for it, and
/// `requests` is the number of requests nginx served. Returns the run's log.
pub fn assert_honest_accounting(n: &Nginx, mark: LogMark, r: &Report) -> Vec<LogEntry> {
    let log = run_log(n, mark);
    let logged: u64 = log.iter().map(|e| e.body_bytes).sum();
    assert_eq!(
        r.u64("bytes_downloaded"),
        logged,
        "bytes_downloaded must equal the body bytes nginx sent for this run\n{}\nnginx log:\n{}",
        r.out,
        format_entries(&log)
    );
    assert_eq!(
        r.u64("requests"),
        log.len() as u64,
        "requests must equal the requests nginx served for this run\n{}\nnginx log:\n{}",
        r.out,
        format_entries(&log)
    );
    log
}

/// The install at `dir` is still v1, with `current` as it was (`link`).
pub fn assert_untouched(w: &World, dir: &Path, link: &Option<PathBuf>, out: &Output) {
    assert_eq!(
        &current_link(dir),
        link,
        "a failed update switched `current`\n{out}"
    );
    assert_trees_equal(&current(dir), &w.v1);
}

/// v1 installed at the returned dir, then v2 pushed; also returns the origin files v2's push
/// added under `manifests/` and under `packs/`.
pub fn installed_v1_then_push_v2(
    w: &World,
    n: &Nginx,
    name: &str,
) -> (PathBuf, Vec<String>, Vec<String>) {
    let dir = w.install_dir(name);
    w.update_ok(&n.url(), &dir);
    let before = w.origin_snapshot();
    w.push_ok(&w.v2, V2);
    let after = w.origin_snapshot();
    (
        dir,
        new_files(&before, &after, "manifests"),
        new_files(&before, &after, "packs"),
    )
}

/// Half-open byte interval of the pack a response carried (`requested == false`: what a first,
/// failed run received) or a request asked for (`requested == true`: what a second run wanted).
pub fn pack_interval(e: &LogEntry, requested: bool) -> (u64, u64) {
    match e.ranges().as_slice() {
        [(a, Some(b))] if requested => (*a, b + 1),
        [(a, _)] => (*a, a + e.body_bytes),
        [] => (0, e.body_bytes),
        _ => panic!("multi-range request (the client must not send them): {e}"),
    }
}

/// Sorted, disjoint union of half-open intervals.
pub fn merge_intervals(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Bytes of `(a, b)` inside `union` (as [`merge_intervals`] returns it).
pub fn overlap(union: &[(u64, u64)], (a, b): (u64, u64)) -> u64 {
    union
        .iter()
        .map(|&(x, y)| y.min(b).saturating_sub(x.max(a)))
        .sum()
}

/// The log's pack responses that carried data (200 or 206).
pub fn pack_data(log: &[LogEntry]) -> impl Iterator<Item = &LogEntry> {
    log.iter()
        .filter(|e| e.is_pack() && (e.status == 200 || e.status == 206))
}

/// Pack bytes the `first` run received, and how many of them the `second` run asked for again.
pub fn pack_bytes_fetched_twice(first: &[LogEntry], second: &[LogEntry]) -> (u64, u64) {
    let mut received: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for e in pack_data(first) {
        received
            .entry(e.path())
            .or_default()
            .push(pack_interval(e, false));
    }
    let received: BTreeMap<_, _> = received
        .into_iter()
        .map(|(k, v)| (k, merge_intervals(v)))
        .collect();
    let received_bytes = received
        .values()
        .flat_map(|v| v.iter().map(|(a, b)| b - a))
        .sum();
    let refetched = pack_data(second)
        .map(|e| {
            received
                .get(e.path())
                .map_or(0, |u| overlap(u, pack_interval(e, true)))
        })
        .sum();
    (received_bytes, refetched)
}

/// Seconds since the Unix epoch, as nginx logs them.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The world's fleet swarm key, made with `relsync swarm-key` on first use: every LAN node a
/// test starts holds it (a node without it shares nothing).
pub fn swarm_key(w: &World) -> PathBuf {
    let path = w.path().join("swarm.key");
    if !path.exists() {
        new_swarm_key(w, "swarm.key");
    }
    path
}

/// A new swarm key made with `relsync swarm-key`, in the world's dir under `name`.
pub fn new_swarm_key(w: &World, name: &str) -> PathBuf {
    let path = w.path().join(name);
    w.relsync()
        .arg("swarm-key")
        .arg("--out")
        .arg(&path)
        .run()
        .assert_success("relsync swarm-key");
    path
}

/// `relsync serve` sharing `install` only (no origin), on 127.0.0.1, in the world's fleet,
/// stopping by itself after `lifetime` (e.g. `"180s"`).
pub fn serve_only_cmd(w: &World, install: &Path, lifetime: &str) -> relsync_tests::Cmd {
    w.relsync()
        .arg("serve")
        .arg("--install")
        .arg(install)
        .arg("--swarm-key")
        .arg(swarm_key(w))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--json"])
        .args(["--stop-after", lifetime])
}
