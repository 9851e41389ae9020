//! Load: one `relsync serve` peer under 50 requesting peers for 60 s, and one nginx origin under
//! 100 `relsync update`s at once. Both print their numbers (docs/benchmarks.md, "Load"):
//! `cargo test -p relsync-tests --test e2e load -- --nocapture`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use relsync_tests::{
    Cmd, Daemon, Nginx, Report, V2, World, assert_trees_equal, bins, current, format_entries,
    parse_json_object,
};
use serde_json::Value;

use crate::common::{run_log, serve_only_cmd, swarm_key, world_with_v1};

/// Requesting peers, each its own libp2p identity and swarm.
const REQUESTERS: usize = 50;
/// How long the requesters ask.
const LOAD_SECS: u64 = 60;
/// `relsync update`s at once against the origin.
const CLIENTS: usize = 100;
/// Bound on the origin test's concurrent updates, from the first spawn to the last exit.
const CLIENTS_WALL: Duration = Duration::from_secs(180);

/// Peak RSS of the serving peer under load: measured 47.5 MiB (debug build); twice that leaves
/// room for allocator noise, not for an answer buffered per requester (254 MiB when a serving
/// slot was freed before its answer was sent).
const SERVER_PEAK_RSS_KIB: u64 = 96 * 1024;
/// RSS in the last 10 s of the load may be at most this much over the RSS 15 s in (measured:
/// 0.6 MiB more).
const SERVER_RSS_GROWTH_KIB: u64 = 16 * 1024;
/// Jain's fairness index over the GETs served per requester, at least.
const MIN_JAIN: f64 = 0.9;
/// Most served over least served requester, at most.
const MAX_SERVED_RATIO: f64 = 3.0;

/// The two tests run one after the other, so neither skews the other's numbers.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `VmRSS` and `VmHWM` (peak) of `pid` in KiB, or `None` once it is gone.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    // A zombie has no VmRSS line.
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Samples the memory of some processes every `period` in a thread, for at most `limit`.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Samples>>,
}

/// What a [`Sampler`] saw.
#[derive(Debug, Default)]
struct Samples {
    /// Seconds since the sampler started, and the summed RSS (KiB) of the live processes.
    total_rss: Vec<(f64, u64)>,
    /// The highest peak RSS (KiB) seen for each process.
    peak: HashMap<u32, u64>,
}

impl Samples {
    fn max_total_kib(&self) -> u64 {
        self.total_rss.iter().map(|s| s.1).max().unwrap_or(0)
    }

    /// The summed RSS sampled closest to `at` seconds.
    fn at(&self, at: f64) -> u64 {
        self.total_rss
            .iter()
            .min_by(|a, b| (a.0 - at).abs().total_cmp(&(b.0 - at).abs()))
            .map_or(0, |s| s.1)
    }

    /// The highest summed RSS sampled in `[from, to]` seconds.
    fn max_between(&self, from: f64, to: f64) -> u64 {
        self.total_rss
            .iter()
            .filter(|s| (from..=to).contains(&s.0))
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    }
}

impl Sampler {
    fn start(pids: Vec<u32>, period: Duration, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let began = Instant::now();
            let mut samples = Samples::default();
            while !stopped.load(Ordering::Relaxed) && began.elapsed() < limit {
                let mut total = 0;
                for &pid in &pids {
                    if let Some((rss, peak)) = memory_kib(pid) {
                        total += rss;
                        let seen = samples.peak.entry(pid).or_default();
                        *seen = (*seen).max(peak);
                    }
                }
                samples
                    .total_rss
                    .push((began.elapsed().as_secs_f64(), total));
                std::thread::sleep(period);
            }
            samples
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Jain's fairness index of `xs`: 1 when all are equal, `1/n` when one has everything.
fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `relsync serve` sharing `install` only, on 127.0.0.1.
fn serve_only(w: &World, install: &Path, name: &str) -> Daemon {
    let cmd = serve_only_cmd(w, install, "300s").env("RUST_LOG", "warn");
    Daemon::start(name, &cmd, &w.path().join(format!("{name}.log")))
}

fn field(v: &Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("`{name}` is not a non-negative integer in {v}"))
}

#[test]
fn load_one_peer_serves_fifty_requesters_fairly() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    // The clock starts once the binaries are built.
    let _ = bins();
    let began = Instant::now();
    let (w, n) = world_with_v1();
    let installed = w.install_dir("server");
    w.update_ok(&n.url(), &installed);
    let manifest = w.status(&installed).str("manifest");
    let server = serve_only(&w, &installed, "server");
    let pid = server.pid();
    let setup = began.elapsed();

    let sampler = Sampler::start(
        vec![pid],
        Duration::from_secs(1),
        Duration::from_secs(LOAD_SECS + 120),
    );
    let out = Cmd::new(&bins().peer_load)
        .args(["--server", server.addr(), "--manifest", &manifest])
        .arg("--swarm-key")
        .arg(swarm_key(&w))
        .args(["--peers", &REQUESTERS.to_string()])
        .args(["--seconds", &LOAD_SECS.to_string()])
        .env("RUST_LOG", "warn")
        .timeout(Duration::from_secs(LOAD_SECS + 90))
        .run();
    let samples = sampler.finish();
    out.assert_success("peer-load");
    let summary = parse_json_object(&out.stdout)
        .unwrap_or_else(|| panic!("peer-load printed no JSON summary\n{out}"));

    // The load window on the sampler's clock: after the requesters connected.
    let load_from = field(&summary, "connect_ms") as f64 / 1000.0;
    let load_to = load_from + summary["seconds"].as_f64().unwrap_or(0.0);
    let peak = samples.peak.get(&pid).copied().unwrap_or(0);
    let at_15 = samples.at(load_from + 15.0);
    let last_10 = samples.max_between(load_to - 10.0, load_to);

    let totals = &summary["totals"];
    let rows = summary["requesters"]
        .as_array()
        .unwrap_or_else(|| panic!("no requesters in {summary}"));
    let served: Vec<f64> = rows.iter().map(|r| field(r, "served") as f64).collect();
    let busy: Vec<f64> = rows.iter().map(|r| field(r, "busy") as f64).collect();
    let (min, max) = served
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let fairness = jain(&served);
    let ratio = max / min.max(1.0);

    println!("peer load: {REQUESTERS} requesters x {LOAD_SECS} s against one `relsync serve`");
    println!(
        "  GETs {} served {} busy {} errors {} bad chunks {}; {:.1} served/s, {:.1} MiB/s; served GET p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        field(totals, "gets"),
        field(totals, "served"),
        field(totals, "busy"),
        field(totals, "errors"),
        field(totals, "bad_chunks"),
        totals["served_per_sec"].as_f64().unwrap_or(0.0),
        totals["mib_per_sec"].as_f64().unwrap_or(0.0),
        totals["served_ms_p50"].as_f64().unwrap_or(0.0),
        totals["served_ms_p99"].as_f64().unwrap_or(0.0),
        totals["served_ms_max"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  served per requester: min {min} max {max} (ratio {ratio:.2}), Jain {fairness:.3}; busy per requester: min {} max {}, Jain {:.3}",
        busy.iter().copied().fold(f64::MAX, f64::min),
        busy.iter().copied().fold(0.0, f64::max),
        jain(&busy),
    );
    println!(
        "  server RSS: peak {:.1} MiB, {:.1} MiB 15 s in, {:.1} MiB max in the last 10 s; connect {} ms, peer-load wall {:.1} s",
        mib(peak),
        mib(at_15),
        mib(last_10),
        field(&summary, "connect_ms"),
        out.elapsed.as_secs_f64(),
    );

    assert_eq!(rows.len(), REQUESTERS, "{summary}");
    assert_eq!(
        field(totals, "bad_chunks"),
        0,
        "every chunk served must hash to its id\n{summary}"
    );
    assert_eq!(
        field(totals, "errors"),
        0,
        "no GET may fail or time out under load\n{summary}"
    );
    for row in rows {
        assert!(
            field(row, "served") > 0,
            "every requester must be served\n{row}"
        );
        assert_eq!(
            field(row, "gets"),
            field(row, "served") + field(row, "busy"),
            "{row}"
        );
    }
    assert!(
        fairness >= MIN_JAIN,
        "GETs served per requester must be fair: Jain {fairness:.3} < {MIN_JAIN}\n{summary}"
    );
    assert!(
        ratio <= MAX_SERVED_RATIO,
        "most/least served requester {max}/{min} = {ratio:.2} > {MAX_SERVED_RATIO}\n{summary}"
    );
    assert!(
        peak > 0 && peak <= SERVER_PEAK_RSS_KIB,
        "server peak RSS {:.1} MiB, bound {:.1} MiB",
        mib(peak),
        mib(SERVER_PEAK_RSS_KIB)
    );
    assert!(
        last_10 <= at_15 + SERVER_RSS_GROWTH_KIB,
        "server RSS grew from {:.1} MiB 15 s in to {:.1} MiB in the last 10 s\n{:?}",
        mib(at_15),
        mib(last_10),
        samples.total_rss
    );

    // Still alive, and still a working peer: a fresh install takes every chunk from it.
    assert!(
        memory_kib(pid).is_some(),
        "the server died under load\n{}",
        server.log()
    );
    let fresh = w.install_dir("after");
    let mark = n.mark();
    let out = w
        .update_cmd(&n.url(), &fresh)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .args(["--peer", server.addr()])
        .arg("--swarm-key")
        .arg(swarm_key(&w))
        .env("RUST_LOG", "warn")
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_success("update from the loaded peer");
    let r = Report::new(out);
    assert_trees_equal(&current(&fresh), &w.v1);
    let log = run_log(&n, mark);
    assert!(
        log.iter().all(|e| !e.is_pack()),
        "after the load, every chunk must still come from the peer\n{}",
        format_entries(&log)
    );
    assert!(r.u64("bytes_from_peers") > 0, "{}", r.out);

    let stats = server.stop();
    assert!(
        field(&stats, "busy_answers") >= field(totals, "busy"),
        "the server answered fewer Busy than the requesters got\n{stats}\n{summary}"
    );
    assert!(
        field(&stats, "chunks_uploaded") >= field(totals, "chunks"),
        "the server sent fewer chunks than the requesters verified\n{stats}\n{summary}"
    );
    println!(
        "  server stats {stats}; test wall {:.1} s (setup {:.1} s)",
        began.elapsed().as_secs_f64(),
        setup.as_secs_f64()
    );
}

/// What one update costs the origin, from its report, checked against nginx's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cost {
    requests: u64,
    bytes: u64,
}

/// Updates `dir` alone; returns what that cost.
fn update_alone(w: &World, n: &Nginx, dir: &Path) -> (Cost, u64) {
    let mark = n.mark();
    let r = w.update_ok(&n.url(), dir);
    let log = run_log(n, mark);
    let cost = Cost {
        requests: r.u64("requests"),
        bytes: r.u64("bytes_downloaded"),
    };
    let logged = Cost {
        requests: log.len() as u64,
        bytes: log.iter().map(|e| e.body_bytes).sum(),
    };
    assert_eq!(
        cost,
        logged,
        "{}
{}",
        r.out,
        format_entries(&log)
    );
    (cost, r.u64("duration_ms"))
}

/// What [`update_all_at_once`] measured.
struct Round {
    wall: Duration,
    seconds_p50: f64,
    seconds_max: f64,
    total_rss_kib: u64,
    peak_rss_kib: u64,
    checks: Duration,
}

/// Updates every install of `dirs` at once, each to `release`, and checks that each cost
/// exactly `alone`, by its report and by nginx's log.
fn update_all_at_once(
    w: &World,
    n: &Nginx,
    dirs: &[PathBuf],
    release: &Path,
    alone: Cost,
) -> Round {
    let mark = n.mark();
    let began = Instant::now();
    let running: Vec<_> = dirs
        .iter()
        .map(|dir| {
            w.update_cmd(&n.url(), dir)
                .env("RUST_LOG", "warn")
                .timeout(CLIENTS_WALL)
                .spawn()
        })
        .collect();
    let sampler = Sampler::start(
        running.iter().map(|p| p.id()).collect(),
        Duration::from_millis(250),
        CLIENTS_WALL,
    );
    let outputs: Vec<_> = running.into_iter().map(|p| p.wait()).collect();
    let wall = began.elapsed();
    let samples = sampler.finish();
    assert!(
        wall <= CLIENTS_WALL,
        "{} updates took {wall:?}, over {CLIENTS_WALL:?}",
        dirs.len()
    );

    let checking = Instant::now();
    let mut seconds: Vec<f64> = Vec::with_capacity(dirs.len());
    for (dir, out) in dirs.iter().zip(outputs) {
        out.assert_success(&format!("concurrent update of {}", dir.display()));
        seconds.push(out.elapsed.as_secs_f64());
        let r = Report::new(out);
        let cost = Cost {
            requests: r.u64("requests"),
            bytes: r.u64("bytes_downloaded"),
        };
        assert_eq!(
            cost, alone,
            "under load an update must cost what it costs alone\n{}",
            r.out
        );
        assert_trees_equal(&current(dir), release);
    }
    let log = run_log(n, mark);
    assert!(
        log.iter().all(|e| e.status == 200 || e.status == 206),
        "every request must succeed\n{}",
        format_entries(&log)
    );
    let clients = dirs.len() as u64;
    assert_eq!(
        Cost {
            requests: log.len() as u64,
            bytes: log.iter().map(|e| e.body_bytes).sum(),
        },
        Cost {
            requests: clients * alone.requests,
            bytes: clients * alone.bytes,
        },
        "nginx must have served {clients} times one update's requests and bytes, no more"
    );
    seconds.sort_by(f64::total_cmp);
    Round {
        wall,
        seconds_p50: seconds[seconds.len() / 2],
        seconds_max: seconds.last().copied().unwrap_or(0.0),
        total_rss_kib: samples.max_total_kib(),
        peak_rss_kib: samples.peak.values().copied().max().unwrap_or(0),
        checks: checking.elapsed(),
    }
}

fn print_round(what: &str, alone: Cost, alone_ms: u64, round: &Round) {
    println!(
        "  {what}: alone {} requests, {} bytes, {alone_ms} ms; each of {CLIENTS} at once the same; wall {:.1} s, per update p50 {:.1} s, max {:.1} s; client RSS {:.0} MiB at most in all, {:.1} MiB peak for one (checks {:.1} s)",
        alone.requests,
        alone.bytes,
        round.wall.as_secs_f64(),
        round.seconds_p50,
        round.seconds_max,
        mib(round.total_rss_kib),
        mib(round.peak_rss_kib),
        round.checks.as_secs_f64(),
    );
}

#[test]
fn load_origin_serves_a_hundred_updates_at_no_extra_cost() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    // The clock starts once the binaries are built.
    let _ = bins();
    let began = Instant::now();
    let (w, n) = world_with_v1();
    let dirs: Vec<_> = (0..CLIENTS)
        .map(|i| w.install_dir(&format!("c{i:03}")))
        .collect();

    // 100 fresh installs of v1, then all of them v1 -> v2, each round at once, each update
    // measured against the same update done alone.
    let solo = w.install_dir("solo");
    let (fresh, fresh_ms) = update_alone(&w, &n, &solo);
    let fresh_round = update_all_at_once(&w, &n, &dirs, &w.v1, fresh);
    w.push_ok(&w.v2, V2);
    let (delta, delta_ms) = update_alone(&w, &n, &solo);
    let delta_round = update_all_at_once(&w, &n, &dirs, &w.v2, delta);

    println!("origin load: {CLIENTS} `relsync update`s at once against one nginx");
    print_round("fresh install of v1", fresh, fresh_ms, &fresh_round);
    print_round("v1 -> v2", delta, delta_ms, &delta_round);
    println!("  test wall {:.1} s", began.elapsed().as_secs_f64());
}
