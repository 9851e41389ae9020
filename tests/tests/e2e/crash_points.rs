//! Crash and fail at every step: the v1→v2 update is killed with SIGKILL at 200+ randomized
//! points spread over fetch, assemble, fsync and the swap, and fails with an injected I/O error
//! at every file system step of assemble and apply. After each one the install is exactly v1 or
//! exactly v2, its status and audit log read back, and the next run completes the update; over
//! all interruptions the origin serves at most [`MAX_BYTES_RATIO`] times what the uninterrupted
//! updates would have.
//!
//! The points come from the engine's fault-injecting seam (`engine/src/faults.rs`, built into
//! the `relsync` under test): `RELSYNC_FAULT_LOG` lists each step as it starts, and
//! `RELSYNC_FAULT=kill@N` / `fail@N` kill or fail step N. Kills during the fetch, which has no
//! such steps, come from outside: `kill -9` after a random delay against a throttled nginx.
//!
//! `RELSYNC_CRASH_SEED` replays a run (the seed is printed).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relsync_tests::{
    Cmd, Entry, LogMark, Nginx, NginxOptions, Output, V1, V2, World, copy_tree, current,
    format_entries, tree_digest,
};

use crate::common::run_log;
use crate::crash::v2_with_new_data;

/// Kills with SIGKILL from outside, at a random moment of a throttled update (mostly the fetch).
const TIMED_KILLS: usize = 85;

/// Kills through the seam, at random steps of each phase after the fetch.
const STEP_KILLS_PER_PHASE: usize = 30;

/// Over all interruptions, bytes the origin served / bytes of as many uninterrupted updates.
const MAX_BYTES_RATIO: f64 = 1.05;

/// Kills every phase must get at least, for the spread to mean something.
const MIN_KILLS_PER_PHASE: usize = 20;

/// Per-request rate of the throttled nginx: the ~3 MiB update comes in a few range requests,
/// so its fetch takes a second or two and random delays land in it.
const SLOW_RATE: u64 = 2_000_000;

/// Where in the update a step is.
fn phase_of(step: &str) -> &'static str {
    if step.contains("fsync") {
        "fsync"
    } else if step.starts_with("assemble.") {
        "assemble"
    } else if step.starts_with("apply.") && step != "apply.cleanup" {
        "swap"
    } else {
        "after-swap"
    }
}

/// One line of `RELSYNC_FAULT_LOG`: `N PHASE.STEP PATH`.
#[derive(Debug, Clone)]
struct Step {
    n: u64,
    name: String,
}

fn read_steps(log: &Path) -> Vec<Step> {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let n = parts.next()?.parse().ok()?;
            let name = parts.next()?.to_owned();
            Some(Step { n, name })
        })
        .collect()
}

/// A small deterministic generator (splitmix64): the seed replays a run.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    match std::env::var("RELSYNC_CRASH_SEED") {
        Ok(s) => s.parse().expect("RELSYNC_CRASH_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// The fixture: v1 installed once (copied for each run), v2 pushed, the digests of both.
struct Campaign {
    w: World,
    fast: Nginx,
    slow: Nginx,
    pristine: PathBuf,
    v1: BTreeMap<String, Entry>,
    v2: BTreeMap<String, Entry>,
    scratch: PathBuf,
}

/// What one interrupted update cost and left.
#[derive(Debug, Default)]
struct Tally {
    kills: BTreeMap<&'static str, usize>,
    failures: BTreeMap<String, usize>,
    left_v1: usize,
    left_v2: usize,
    runs: u64,
    bytes: u64,
}

impl Campaign {
    fn new() -> Self {
        let w = World::new();
        w.push_ok(&w.v1, V1);
        let fast = Nginx::start(&w.origin, &NginxOptions::default());
        let slow = Nginx::start(&w.origin, &NginxOptions::rate_limited(SLOW_RATE));
        let pristine = w.install_dir("pristine");
        w.update_ok(&fast.url(), &pristine);
        let v2_tree = v2_with_new_data(&w);
        w.push_ok(&v2_tree, V2);
        let scratch = w.path().join("scratch");
        fs::create_dir_all(&scratch).expect("mkdir scratch");
        Self {
            v1: tree_digest(&w.v1),
            v2: tree_digest(&v2_tree),
            w,
            fast,
            slow,
            pristine,
            scratch,
        }
    }

    /// A fresh copy of the v1 install.
    fn fresh_install(&self) -> PathBuf {
        let dir = self.scratch.join("install");
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove the last run's install");
        }
        copy_tree(&self.pristine, &dir);
        dir
    }

    fn update(&self, nginx: &Nginx, dir: &Path, fault: Option<&str>, log: &Path) -> Cmd {
        let _ = fs::remove_file(log);
        let cmd = self
            .w
            .update_cmd(&nginx.url(), dir)
            .env("RELSYNC_FAULT_LOG", log)
            .timeout(Duration::from_secs(120));
        match fault {
            Some(f) => cmd.env("RELSYNC_FAULT", f),
            None => cmd,
        }
    }

    /// Which release `dir` holds: it must be exactly v1 or exactly v2, and `status` must say
    /// the same, and the audit log must verify.
    fn assert_old_or_new(&self, dir: &Path, what: &str) -> &'static str {
        let tree = tree_digest(&current(dir));
        let version = if tree == self.v1 {
            V1
        } else if tree == self.v2 {
            V2
        } else {
            panic!(
                "{what}: the install is neither v1 nor v2\n{}",
                relsync_tests::diff_digests(&tree, &self.v2).join("\n")
            );
        };
        let status = self.w.status(dir);
        assert_eq!(
            status.str("version"),
            version,
            "{what}: `status` disagrees with the tree on disk\n{}",
            status.out
        );
        for check in [&["verify"][..], &["audit", "verify"]] {
            self.w
                .relsync()
                .args(check)
                .arg("--install")
                .arg(dir)
                .run()
                .assert_success(&format!("{what}: relsync {}", check.join(" ")));
        }
        version
    }

    /// The next run completes the update (its bytes are in the fast nginx's log).
    fn resume(&self, dir: &Path, what: &str) {
        let out = self
            .update(&self.fast, dir, None, &self.scratch.join("resume.log"))
            .run();
        out.assert_success(&format!("{what}: the run after"));
        let report = relsync_tests::Report::new(out);
        assert_eq!(report.str("version"), V2, "{what}\n{}", report.out);
        assert_eq!(
            tree_digest(&current(dir)),
            self.v2,
            "{what}: the run after did not install exactly v2"
        );
    }
}

fn bytes_since(n: &Nginx, mark: LogMark) -> u64 {
    run_log(n, mark).iter().map(|e| e.body_bytes).sum()
}

/// The reference: one uninterrupted update, its bytes, duration and steps.
fn reference(c: &Campaign) -> (u64, Vec<Step>) {
    let dir = c.fresh_install();
    let log = c.scratch.join("reference.log");
    let mark = c.fast.mark();
    let out = c.update(&c.fast, &dir, None, &log).run();
    out.assert_success("the uninterrupted update");
    let bytes = bytes_since(&c.fast, mark);
    assert_eq!(tree_digest(&current(&dir)), c.v2);
    let steps = read_steps(&log);
    assert!(
        steps.len() > 20,
        "the seam logged {} steps; is `relsync` built with `fault-injection`?",
        steps.len()
    );
    (bytes, steps)
}

fn killed(out: &Output) -> bool {
    out.status.signal() == Some(9)
}

/// Kills at the `n`-th step, checks what is left, resumes.
fn kill_at_step(c: &Campaign, n: u64, t: &mut Tally) {
    let dir = c.fresh_install();
    let log = c.scratch.join("killed.log");
    let mark = c.fast.mark();
    let fault = format!("kill@{n}");
    let out = c.update(&c.fast, &dir, Some(&fault), &log).run();
    let steps = read_steps(&log);
    assert!(
        killed(&out),
        "{fault}: the update was not killed (it took {} steps)\n{out}",
        steps.len()
    );
    let last = steps.last().map_or("none", |s| s.name.as_str()).to_owned();
    let phase = phase_of(&last);
    *t.kills.entry(phase).or_default() += 1;
    let what = format!("killed at step {n} ({last})");
    match c.assert_old_or_new(&dir, &what) {
        V1 => t.left_v1 += 1,
        _ => t.left_v2 += 1,
    }
    c.resume(&dir, &what);
    t.bytes += bytes_since(&c.fast, mark);
    t.runs += 1;
}

/// Kills from outside after `delay`, against the throttled nginx.
fn kill_after(c: &Campaign, delay: Duration, t: &mut Tally) {
    let dir = c.fresh_install();
    let log = c.scratch.join("killed.log");
    let mark = c.slow.mark();
    let mut child = c.update(&c.slow, &dir, None, &log).spawn();
    std::thread::sleep(delay);
    let exited = child.has_exited();
    let out = child.kill9();
    let slow_log = run_log(&c.slow, mark);
    let phase = if exited {
        assert!(out.success(), "the throttled update failed\n{out}");
        "none (finished first)"
    } else {
        assert!(killed(&out), "kill -9 did not kill the update\n{out}");
        match read_steps(&log).last() {
            Some(step) => phase_of(&step.name),
            None if slow_log.iter().any(|e| e.is_pack()) => "fetch",
            None => "check",
        }
    };
    *t.kills.entry(phase).or_default() += 1;
    let what = format!("killed after {delay:?} ({phase})");
    match c.assert_old_or_new(&dir, &what) {
        V1 => t.left_v1 += 1,
        _ => t.left_v2 += 1,
    }
    let killed_bytes: u64 = slow_log.iter().map(|e| e.body_bytes).sum();
    let mark = c.fast.mark();
    c.resume(&dir, &what);
    t.bytes += killed_bytes + bytes_since(&c.fast, mark);
    t.runs += 1;
    if phase == "fetch" && std::env::var_os("RELSYNC_CRASH_VERBOSE").is_some() {
        eprintln!("{what}:\n{}", format_entries(&slow_log));
    }
}

#[test]
fn killed_at_random_points_the_install_is_old_or_new_and_the_next_run_completes() {
    let seed = seed();
    eprintln!("RELSYNC_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let c = Campaign::new();
    let started = Instant::now();
    let (ref_bytes, steps) = reference(&c);

    // How long the throttled update takes, so the delays fall inside it.
    let dir = c.fresh_install();
    let t0 = Instant::now();
    c.update(&c.slow, &dir, None, &c.scratch.join("slow.log"))
        .run()
        .assert_success("the throttled update");
    let slow_ms = t0.elapsed().as_millis() as u64;

    let mut by_phase: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for s in &steps {
        by_phase.entry(phase_of(&s.name)).or_default().push(s.n);
    }
    let mut t = Tally::default();
    for _ in 0..TIMED_KILLS {
        let delay = Duration::from_millis(20 + rng.below(slow_ms.saturating_sub(20)));
        kill_after(&c, delay, &mut t);
    }
    for points in by_phase.values() {
        for _ in 0..STEP_KILLS_PER_PHASE {
            let n = points[rng.below(points.len() as u64) as usize];
            kill_at_step(&c, n, &mut t);
        }
    }

    let ratio = t.bytes as f64 / (t.runs * ref_bytes) as f64;
    eprintln!(
        "{} kills in {:.0} s ({} steps in an update, throttled update {slow_ms} ms): by phase \
         {:?}; left v1 {} times, v2 {} times; origin bytes {} over {} updates of {ref_bytes} \
         = {ratio:.4}x",
        t.runs,
        started.elapsed().as_secs_f64(),
        steps.len(),
        t.kills,
        t.left_v1,
        t.left_v2,
        t.bytes,
        t.runs,
    );
    let total_kills: usize = t
        .kills
        .iter()
        .filter(|(p, _)| !p.starts_with("none"))
        .map(|(_, k)| k)
        .sum();
    assert!(
        total_kills >= 200,
        "only {total_kills} kills: {:?}",
        t.kills
    );
    for phase in ["fetch", "assemble", "fsync", "swap"] {
        let k = t.kills.get(phase).copied().unwrap_or(0);
        assert!(
            k >= MIN_KILLS_PER_PHASE,
            "only {k} kills landed in {phase}: {:?}",
            t.kills
        );
    }
    assert!(
        ratio <= MAX_BYTES_RATIO,
        "over all interruptions the origin served {ratio:.4}x the bytes of uninterrupted updates"
    );
}

/// Releases installed besides `current` (the one kept for rollback), and leftovers.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir.join("releases"))
        .map(|d| {
            d.flatten()
                .map(|e| format!("releases/{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    if dir.join(".relsync/staging").exists() {
        found.push(".relsync/staging".into());
    }
    found.sort();
    found
}

#[test]
fn a_failure_at_every_step_leaves_old_or_new_and_the_next_run_completes() {
    let c = Campaign::new();
    let started = Instant::now();
    let (ref_bytes, steps) = reference(&c);
    let v1_only = leftovers(&c.pristine);
    let mut t = Tally::default();
    for step in &steps {
        let dir = c.fresh_install();
        let fault = format!("fail@{}", step.n);
        let mark = c.fast.mark();
        let out = c
            .update(&c.fast, &dir, Some(&fault), &c.scratch.join("failed.log"))
            .run();
        let what = format!("{fault} ({})", step.name);
        if out.success() {
            // Only a step whose failure is harmless by design may be shrugged off: cleanup is
            // best effort, and a lost audit record is a warning, never a failed update.
            assert!(
                step.name == "apply.cleanup" || step.name.starts_with("audit."),
                "{what}: the update succeeded over an injected failure\n{out}"
            );
        }
        if !out.success() || step.name.starts_with("audit.") {
            assert!(
                out.stderr.contains("injected fault"),
                "{what}: the update did not report the failed step\n{out}"
            );
        }
        *t.failures.entry(step.name.clone()).or_default() += 1;
        match c.assert_old_or_new(&dir, &what) {
            V1 => {
                t.left_v1 += 1;
                assert_eq!(
                    leftovers(&dir),
                    v1_only,
                    "{what}: the failed update left files behind\n{out}"
                );
            }
            _ => t.left_v2 += 1,
        }
        c.resume(&dir, &what);
        t.bytes += bytes_since(&c.fast, mark);
        t.runs += 1;
    }
    let ratio = t.bytes as f64 / (t.runs * ref_bytes) as f64;
    eprintln!(
        "{} injected failures in {:.0} s, by step {:?}; left v1 {} times, v2 {} times; origin \
         bytes {ratio:.4}x uninterrupted",
        t.runs,
        started.elapsed().as_secs_f64(),
        t.failures,
        t.left_v1,
        t.left_v2,
    );
    assert!(
        ratio <= MAX_BYTES_RATIO,
        "over all failures the origin served {ratio:.4}x the bytes of uninterrupted updates"
    );
}
