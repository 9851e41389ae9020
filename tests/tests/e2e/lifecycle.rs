//! The update lifecycle through the CLI: health-checked installs that roll back by
//! themselves, yanks, staged rollouts, critical releases, channel switches and the lock.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::world_with_v1;
use relsync_tests::{
    CHANNEL, Nginx, NginxOptions, Output, PRODUCT, Report, V1, V2, World, assert_trees_equal,
    copy_tree, current, pseudo_random,
};

/// A copy of `src` with an executable `health.sh` that exits `code`.
fn with_health(w: &World, src: &Path, name: &str, code: i32) -> PathBuf {
    let dir = w.path().join(name);
    copy_tree(src, &dir);
    let script = dir.join("health.sh");
    fs::write(&script, format!("#!/bin/sh\nexit {code}\n")).expect("write health.sh");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A copy of `base` with one more file, named `extra`: a release that differs from it.
fn variant(w: &World, base: &Path, extra: &str) -> PathBuf {
    let dir = w.path().join(format!("src-{extra}"));
    copy_tree(base, &dir);
    fs::write(dir.join(extra), format!("{extra}\n")).expect("write");
    dir
}

/// A world with v1 published, served, and installed in `install-a`.
fn v1_installed() -> (World, Nginx, PathBuf) {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    (w, n, dir)
}

const HEALTH: &str = "\"$RELSYNC_CURRENT\"/health.sh";

fn update_checked(w: &World, n: &Nginx, dir: &Path) -> Output {
    w.update(
        &n.url(),
        dir,
        &["--health-check", HEALTH, "--trial-period", "20s"],
    )
}

fn check(w: &World, n: &Nginx, dir: &Path, channel: &str) -> serde_json::Value {
    let out = w
        .relsync()
        .arg("check")
        .args([
            "--origin",
            &n.url(),
            "--channel",
            channel,
            "--trust",
            &w.pubkey,
        ])
        .arg("--install")
        .arg(dir)
        .arg("--json")
        .run();
    let json = out.json();
    // The exit code says what the JSON does: 0 up to date, 100 available, 101 held.
    let code = match json["outcome"].as_str() {
        Some("up_to_date") => 0,
        Some("available") => 100,
        Some("held") => 101,
        other => panic!("check: unknown outcome {other:?}\n{out}"),
    };
    assert_eq!(out.status.code(), Some(code), "check's exit code\n{out}");
    json
}

fn audit_kinds(w: &World, dir: &Path) -> Vec<String> {
    let verify = w
        .relsync()
        .args(["audit", "verify", "--install"])
        .arg(dir)
        .run();
    verify.assert_success("audit verify");
    let show = w
        .relsync()
        .args(["audit", "show", "--json", "--install"])
        .arg(dir)
        .run();
    show.assert_success("audit show");
    show.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let event = v.get("event").unwrap_or(&v);
            event
                .get("kind")
                .and_then(|k| k.as_str())
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn a_release_failing_its_health_check_rolls_back_by_itself_and_is_not_retried() {
    let w = World::new();
    let good = with_health(&w, &w.v1, "good", 0);
    let bad = with_health(&w, &w.v2, "bad", 3);
    w.push_ok(&good, V1);
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("a");
    update_checked(&w, &n, &dir).assert_success("install v1 with a passing check");
    let status = w.status(&dir).json;
    assert!(status["trial"].is_null(), "v1 passed its check: {status}");

    w.push_ok(&bad, V2);
    let out = update_checked(&w, &n, &dir);
    out.assert_failure("v2 fails its health check");
    assert!(
        out.stderr.contains("failed its health check")
            && out.stderr.contains("rolled back to 1.0.0"),
        "{out}"
    );
    assert_trees_equal(&current(&dir), &good);
    let status = w.status(&dir).json;
    assert_eq!(status["version"], V1, "{status}");
    assert_eq!(status["bad_releases"][0]["version"], V2, "{status}");

    // Not retried while it is the newest.
    let held = check(&w, &n, &dir, CHANNEL);
    assert_eq!(held["outcome"], "held", "{held}");
    assert_eq!(held["reason"], "marked_bad", "{held}");
    let mark = n.mark();
    let again = Report::new(update_checked(&w, &n, &dir));
    assert!(again.bool("up_to_date"), "{}", again.out);
    assert_eq!(again.str("version"), V1, "{}", again.out);
    assert!(
        !n.entries_since(mark).iter().any(|e| e.is_pack()),
        "a release marked bad was fetched again"
    );

    // A newer release is taken.
    let fixed = variant(&w, &with_health(&w, &w.v2, "fixed", 0), "FIXED");
    w.push_ok(&fixed, "3.0.0");
    let r3 = Report::new(update_checked(&w, &n, &dir));
    assert_eq!(r3.str("version"), "3.0.0", "{}", r3.out);
    assert_trees_equal(&current(&dir), &fixed);

    let kinds = audit_kinds(&w, &dir);
    for kind in ["installed", "health_check", "rolled_back", "marked_bad"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}

/// `cdn-publisher yank`; with `roll_back`, the world's key signs the rollback directive as
/// the release role (it holds every role here).
fn yank(w: &World, version: &str, roll_back: bool) {
    let mut cmd = w
        .publisher()
        .arg("yank")
        .arg("--origin")
        .arg(&w.origin)
        .args(["--channel", CHANNEL, "--version", version])
        .arg("--channel-key")
        .arg(&w.key);
    if roll_back {
        cmd = cmd.arg("--roll-back").arg("--key").arg(&w.key);
    }
    cmd.run().assert_success("yank");
}

#[test]
fn a_yanked_release_rolls_back_only_on_the_signed_directive() {
    let (w, n, dir) = v1_installed();
    w.push_ok(&w.v2, V2);
    w.update_ok(&n.url(), &dir);

    yank(&w, V2, false);
    let held = check(&w, &n, &dir, CHANNEL);
    assert_eq!(held["outcome"], "held", "{held}");
    assert_eq!(held["reason"], "behind", "{held}");
    let stay = w.update_ok(&n.url(), &dir);
    assert!(stay.bool("up_to_date"), "{}", stay.out);
    assert_trees_equal(&current(&dir), &w.v2);
    // Only the release role's directive marks the release an install runs.
    let status = w.status(&dir).json;
    assert_eq!(status["bad_releases"], serde_json::json!([]), "{status}");

    yank(&w, V2, true);
    let mark = n.mark();
    let back = w.update_ok(&n.url(), &dir);
    assert!(back.bool("rolled_back"), "{}", back.out);
    assert_eq!(back.str("version"), V1, "{}", back.out);
    assert_trees_equal(&current(&dir), &w.v1);
    assert!(
        !n.entries_since(mark).iter().any(|e| e.is_pack()),
        "going back to the kept release downloads nothing"
    );
    let status = w.status(&dir).json;
    assert_eq!(status["bad_releases"][0]["version"], V2, "{status}");
    // And it stays there.
    let after = w.update_ok(&n.url(), &dir);
    assert!(after.bool("up_to_date"), "{}", after.out);
    assert_eq!(after.str("version"), V1, "{}", after.out);
}

#[test]
fn staged_rollouts_hold_installs_until_promoted_and_critical_releases_skip_them() {
    let (w, n) = world_with_v1();
    let dirs: Vec<PathBuf> = (0..3).map(|i| w.install_dir(&format!("n{i}"))).collect();
    for dir in &dirs {
        w.update_ok(&n.url(), dir);
    }
    w.push(&w.v2, V2, &["--rollout-percent", "0"])
        .assert_success("push at 0%");
    for dir in &dirs {
        let held = check(&w, &n, dir, CHANNEL);
        assert_eq!(held["reason"], "rollout", "{held}");
        let r = w.update_ok(&n.url(), dir);
        assert_eq!(r.str("version"), V1, "{}", r.out);
    }
    // A fresh install has nothing to stay on: it takes the channel's release.
    let fresh = w.update_ok(&n.url(), &w.install_dir("fresh"));
    assert_eq!(fresh.str("version"), V2, "{}", fresh.out);

    w.publisher()
        .arg("promote")
        .arg("--origin")
        .arg(&w.origin)
        .args(["--channel", CHANNEL, "--version", V2, "--percent", "100"])
        .arg("--channel-key")
        .arg(&w.key)
        .run()
        .assert_success("promote");
    for dir in &dirs {
        let r = w.update_ok(&n.url(), dir);
        assert_eq!(r.str("version"), V2, "{}", r.out);
    }

    let v3 = variant(&w, &w.v2, "SECURITY");
    w.push(
        &v3,
        "3.0.0",
        &[
            "--rollout-percent",
            "0",
            "--critical",
            "--notes",
            "fixes CVE-0",
        ],
    )
    .assert_success("push critical at 0%");
    let offer = check(&w, &n, &dirs[0], CHANNEL);
    assert_eq!(offer["outcome"], "available", "{offer}");
    assert_eq!(offer["critical"], true, "{offer}");
    assert_eq!(offer["notes"], "fixes CVE-0", "{offer}");
    let r = w.update_ok(&n.url(), &dirs[0]);
    assert_eq!(r.str("version"), "3.0.0", "{}", r.out);
}

#[test]
fn switching_to_a_channel_behind_the_install_waits_for_it() {
    let w = World::new();
    w.push_ok(&w.v2, V2);
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    let push_beta = |tree: &Path, version: &str| {
        w.publisher()
            .arg("push")
            .arg(tree)
            .args(["--version", version, "--channel", "beta", "--key"])
            .arg(&w.key)
            .arg("--to")
            .arg(&w.origin)
            .run()
            .assert_success("push beta");
    };
    push_beta(&w.v1, "1.5.0");
    let held = check(&w, &n, &dir, "beta");
    assert_eq!(held["reason"], "behind", "{held}");
    let beta = || {
        w.relsync()
            .arg("update")
            .args([
                "--origin",
                &n.url(),
                "--channel",
                "beta",
                "--trust",
                &w.pubkey,
            ])
            .arg("--install")
            .arg(&dir)
            .arg("--json")
            .run()
    };
    let stay = Report::new(beta());
    assert!(stay.bool("up_to_date"), "{}", stay.out);
    assert_eq!(stay.str("version"), V2, "{}", stay.out);
    assert_trees_equal(&current(&dir), &w.v2);

    let v3 = variant(&w, &w.v1, "BETA");
    push_beta(&v3, "3.0.0-beta.1");
    let r = Report::new(beta());
    assert_eq!(r.str("version"), "3.0.0-beta.1", "{}", r.out);
    assert_trees_equal(&current(&dir), &v3);
}

#[test]
fn a_second_updater_names_the_lock_holder_and_a_killed_one_leaves_no_lock() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let slow = Nginx::start(&w.origin, &NginxOptions::rate_limited(64 * 1024));
    let dir = w.install_dir("a");
    let first = w.update_cmd(&slow.url(), &dir).spawn();
    let lock = dir.join(".relsync/lock");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(&lock).unwrap_or_default().trim() != first.id().to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first update never locked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = w.update(&slow.url(), &dir, &[]);
    second.assert_failure("a second updater");
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{second}"
    );
    first.kill9();
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V1, "{}", r.out);
}

/// Counts and timings only: what the telemetry hook saw.
#[derive(Default)]
struct Samples(std::sync::Mutex<Vec<relsync_engine::Sample>>);

impl relsync_engine::Telemetry for Samples {
    fn record(&self, sample: relsync_engine::Sample) {
        self.0.lock().expect("samples").push(sample);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_crash_loops_on_a_new_release_is_rolled_back_by_the_engine() {
    use relsync_engine::{CheckOutcome, Engine, Event, Hold, StartOutcome, TrialConfig};

    let (w, n) = world_with_v1();
    let dir = w.install_dir("app");
    let samples = std::sync::Arc::new(Samples::default());
    let engine = Engine::builder(n.url(), vec![w.pubkey.parse().expect("key")], &dir)
        .product(PRODUCT)
        .channel(CHANNEL)
        .trial(TrialConfig::app(2))
        .telemetry(samples.clone())
        .open()
        .expect("open");
    let mut events = engine.events();

    engine.update().await.expect("install v1");
    assert!(
        engine.confirm_healthy().await.expect("confirm"),
        "v1 was on trial"
    );
    assert_eq!(
        engine.record_start().await.expect("start"),
        StartOutcome::Committed
    );

    w.push_ok(&w.v2, V2);
    let CheckOutcome::Available(offer) = engine.check().await.expect("check") else {
        panic!("v2 is offered");
    };
    assert_eq!(offer.version.to_string(), V2);
    assert!(offer.bytes_on_wire > 0 && !offer.critical);
    let download = engine.download();
    let staged = download.wait().await.expect("download");
    assert_eq!(staged.version.to_string(), V2);
    assert!(!staged.applied);
    engine.install().await.expect("install v2");
    assert_trees_equal(&current(&dir), &w.v2);

    // The new release never reports healthy: two starts are tolerated, the third rolls back.
    for starts in 1..=2 {
        assert_eq!(
            engine.record_start().await.expect("start"),
            StartOutcome::OnTrial { starts }
        );
    }
    let StartOutcome::RolledBack { from, to } = engine.record_start().await.expect("start") else {
        panic!("a crash loop rolls back");
    };
    assert_eq!(
        (from.to_string(), to.map(|v| v.to_string())),
        (V2.into(), Some(V1.into()))
    );
    assert_trees_equal(&current(&dir), &w.v1);
    let status = engine.status().await.expect("status");
    assert_eq!(status.bad_releases[0].version.to_string(), V2);
    assert!(status.trial.is_none());
    match engine.check().await.expect("check") {
        CheckOutcome::Held {
            hold: Hold::MarkedBad,
            ..
        } => {}
        other => panic!("v2 must be held as bad, got {other:?}"),
    }
    // Committed releases are never rolled back by a late report.
    assert_eq!(engine.report_unhealthy("late").await.expect("report"), None);
    assert_trees_equal(&current(&dir), &w.v1);

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    let has = |f: &dyn Fn(&Event) -> bool| seen.iter().any(f);
    assert!(
        has(&|e| matches!(e, Event::UpdateAvailable { .. })),
        "{seen:?}"
    );
    assert!(has(&|e| matches!(e, Event::Downloaded { .. })), "{seen:?}");
    assert!(
        has(&|e| matches!(e, Event::InstallStarted { .. })),
        "{seen:?}"
    );
    assert!(
        has(&|e| matches!(e, Event::RestartRequired { .. })),
        "{seen:?}"
    );
    assert!(has(&|e| matches!(e, Event::RolledBack { .. })), "{seen:?}");
    assert!(
        has(&|e| matches!(e, Event::Fetched { bytes, from_peers: 0, .. } if *bytes > 0)),
        "{seen:?}"
    );

    let samples = samples.0.lock().expect("samples");
    let ops: Vec<&str> = samples.iter().map(|s| s.operation).collect();
    for op in ["update", "check", "download", "install"] {
        assert!(ops.contains(&op), "no {op} sample in {ops:?}");
    }
    assert!(
        samples
            .iter()
            .any(|s| s.operation == "download" && s.bytes_from_origin > 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_stops_when_the_publisher_yanks_its_release() {
    use relsync_engine::{Engine, Error, FetchConfig};

    let (w, fast) = world_with_v1();
    let dir = w.install_dir("app");
    let mut fetch = FetchConfig::default();
    fetch.withdraw_poll = Duration::from_millis(500);
    fetch.max_parallel_requests = 1;
    let open = |origin: String| {
        Engine::builder(origin, vec![w.pubkey.parse().expect("key")], &dir)
            .product(PRODUCT)
            .channel(CHANNEL)
            .fetch(fetch.clone())
            .open()
            .expect("open")
    };
    let engine = open(fast.url());
    engine.update().await.expect("install v1");
    drop(engine);

    // 1 MiB of new, incompressible bytes: half a minute at the throttle.
    let big = w.path().join("big-v2");
    copy_tree(&w.v2, &big);
    fs::write(big.join("new.bin"), pseudo_random("yank", 1 << 20)).expect("write");
    w.push_ok(&big, V2);
    let slow = Nginx::start(&w.origin, &NginxOptions::rate_limited(32 * 1024));
    let engine = open(slow.url());
    let download = engine.download();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!download.is_finished(), "the throttle is too weak");
    yank(&w, V2, false);
    let stopped = tokio::time::timeout(Duration::from_secs(30), download.wait())
        .await
        .expect("the download stops within 30 s");
    match stopped {
        Err(Error::Withdrawn(version)) => assert_eq!(version.to_string(), V2),
        other => panic!("expected the download to stop as withdrawn, got {other:?}"),
    }
    let status = engine.status().await.expect("status");
    assert_eq!(status.version.map(|v| v.to_string()).as_deref(), Some(V1));
    assert!(status.staged_version.is_none());
}

#[test]
fn a_signed_rollback_to_a_release_never_installed_here_is_downloaded_and_applied() {
    let (w, n, dir) = v1_installed();
    // 2.0.0 comes and goes while this install is away; it jumps from 1.0.0 to 3.0.0.
    w.push_ok(&w.v2, V2);
    w.push_ok(&variant(&w, &w.v2, "THREE"), "3.0.0");
    w.update_ok(&n.url(), &dir);

    yank(&w, "3.0.0", true);
    // The download-then-apply path (the daemon's) follows the directive down to 2.0.0.
    let staged = Report::new(w.update(&n.url(), &dir, &["--download-only"]));
    assert_eq!(staged.str("version"), V2, "{}", staged.out);
    let applied = w
        .relsync()
        .args(["apply", "--json", "--install"])
        .arg(&dir)
        .run();
    applied.assert_success("apply the release the directive named");
    assert_trees_equal(&current(&dir), &w.v2);
    let status = w.status(&dir).json;
    assert_eq!(status["version"], V2, "{status}");
    assert_eq!(status["bad_releases"][0]["version"], "3.0.0", "{status}");
}
