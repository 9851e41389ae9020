//! Helpers shared by the themes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use relsync_tests::{
    LogEntry, LogMark, Nginx, NginxOptions, Output, Report, V1, V2, World, assert_trees_equal,
    current, current_link, format_entries, new_files,
};

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
