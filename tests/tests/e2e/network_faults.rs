//! A hostile network between the client and a real nginx: a [`FaultProxy`] on loopback resets,
//! truncates, refuses (5xx with and without `Retry-After`), ignores Range, dribbles, lies about
//! Content-Length and stalls. For each fault:
//!
//! - transient (some requests faulted): the v1->v2 update succeeds, the tree is v2, and what
//!   the proxy sent exceeds an uninterrupted update of the same install state by no more than
//!   the faulted answers explain ([`explained_overhead`]);
//! - permanent (every request faulted): the update fails with a non-zero exit in bounded time,
//!   naming the problem, and v1 stays installed untouched; or, given a second `--origin`, it
//!   fails over and succeeds, every byte accounted to a mirror.
//!
//! `origin_errors.rs` covers nginx answering 500 and a rate-limited nginx; `mirrors.rs` covers a
//! dead mirror, a 503ing one and an nginx that always ignores Range.
//!
//! Making a scene (two releases, pushes, installs) costs far more than a case, so each test
//! makes one and runs its cases on installs of their own; a failing case is reported by name
//! and the others still run. Each case prints one line: faults injected, the outcome, the
//! extra bytes and its wall time.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use relsync_tests::{
    CHANNEL, Fault, FaultProxy, Nginx, NginxOptions, Output, Record, Report, Schedule, Target, V1,
    V2, When, World, assert_trees_equal, copy_tree, current, current_link, format_entries,
    format_records, pseudo_random,
};

use crate::common::{assert_honest_accounting, assert_untouched, run_log};

/// What a cut pack answer may cost on top of an uninterrupted update: the retry resumes at the
/// first byte not verified, so only a frame received in part is received again, and a frame
/// is at most the largest chunk (256 KiB) compressed, plus its framing.
const FRAME_SLACK_BYTES: u64 = 256 * 1024 + 1024;

/// A transient fault is retried at once or after a backoff of under a second: a faulted
/// update takes a few seconds more than a clean one, never this long.
const TRANSIENT_WITHIN: Duration = Duration::from_secs(60);

/// Every range is tried 4 times, with backoffs of at most 5 s: a permanently faulted update
/// gives up well within this, process start and a loaded machine included.
const PERMANENT_WITHIN: Duration = Duration::from_secs(40);

/// The engine's minimum-rate guard fails a response whose average rate after 10 s
/// (`SLOW_GRACE`) is under `--min-rate` (1 KiB/s by default), waiting for the headers
/// included; a stall or a 1 byte/s dribble is cut then, not at the 30 s read timeout.
const SLOW_GRACE: Duration = Duration::from_secs(10);

/// A slowed or stalled request is cut by the rate guard within this (its 10 s plus scheduling
/// on a loaded machine), well before the 30 s read timeout would.
const SLOW_CUT_WITHIN: Duration = Duration::from_secs(20);

/// A slow or stalled mirror costs one cut (of the requests in flight), then the update goes on
/// elsewhere.
const SLOW_FAILOVER_WITHIN: Duration = Duration::from_secs(50);

/// Range requests in flight at once (`--parallel`, default 4): the most that can reach a
/// failing mirror before the client knows it fails.
const PARALLEL_REQUESTS: usize = 4;

/// The longest `Retry-After` the client honours; a longer one fails its mirror at once.
const MAX_RETRY_AFTER_SECS: u64 = 30;

/// How far before the `Retry-After` a retry may come: the proxy stamps the end of its answer
/// before the client reads it, so a retry is never early; this only absorbs clock reads.
const RETRY_AFTER_TOLERANCE: Duration = Duration::from_millis(50);

/// The uninterrupted update of the same v1 state, straight from nginx.
#[derive(Debug, Clone, Copy)]
struct Clean {
    /// Its body bytes (equal to nginx's log).
    bytes: u64,
    /// Its pack requests.
    pack_requests: usize,
}

/// v1 installed (from the same origin) at each named install dir, then a v2 with 3 MiB of new
/// data pushed in packs of at most 1 MiB, so the update fetches several packs in several
/// requests; and the clean update of one more such install, run first.
struct Scene {
    w: World,
    n: Nginx,
    v2: PathBuf,
    clean: Clean,
}

impl Scene {
    fn new(installs: &[&str]) -> Self {
        let started = Instant::now();
        let w = World::new();
        w.push_ok(&w.v1, V1);
        let n = Nginx::start(&w.origin, &NginxOptions::default());
        for name in installs.iter().chain(&["clean"]) {
            w.update_ok(&n.url(), &w.install_dir(name));
        }
        let v2 = w.v2.with_file_name("v2-new-data");
        copy_tree(&w.v2, &v2);
        fs::write(
            v2.join("new-data.bin"),
            pseudo_random("network-faults-new-data", 3 << 20),
        )
        .expect("write new data");
        // No bsdiff frames and no solid frames (for fresh installs of v2): this update uses
        // neither, and they double the time of the push.
        w.push(
            &v2,
            V2,
            &["--max-pack-mib", "1", "--no-bsdiff", "--solid-mib", "0"],
        )
        .assert_success("push v2");

        let dir = w.install_dir("clean");
        let mark = n.mark();
        let r = w.update_ok(&n.url(), &dir);
        assert_trees_equal(&current(&dir), &v2);
        let log = assert_honest_accounting(&n, mark, &r);
        let pack_requests = log.iter().filter(|e| e.is_pack()).count();
        assert!(
            pack_requests >= 3,
            "the clean update made {pack_requests} pack requests, too few to fault some\n{}",
            format_entries(&log)
        );
        let clean = Clean {
            bytes: r.u64("bytes_downloaded"),
            pack_requests,
        };
        eprintln!(
            "network_faults: scene of {} installs ready in {:.1?} (building the binaries \
             included, if this test was first)",
            installs.len(),
            started.elapsed()
        );
        Self { w, n, v2, clean }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.w.install_dir(name)
    }

    /// `relsync update --json` from `origins`, in that order, into install `name`.
    fn update(&self, origins: &[String], name: &str, within: Duration) -> Output {
        let mut cmd =
            self.w
                .relsync()
                .arg("update")
                .args(["--channel", CHANNEL, "--trust", &self.w.pubkey]);
        for origin in origins {
            cmd = cmd.args(["--origin", origin]);
        }
        cmd.arg("--install")
            .arg(self.dir(name))
            .arg("--json")
            .timeout(within + Duration::from_secs(30))
            .run()
    }
}

/// A named check, run on the install of the same name.
type Case = (&'static str, fn(&Scene, &str));

/// The install names of `cases`.
fn names(cases: &[Case]) -> Vec<&'static str> {
    cases.iter().map(|(name, _)| *name).collect()
}

/// Runs every case, one after the other or all at once, and fails naming those that failed
/// (each one's message is printed as it fails).
fn run_cases(s: &Scene, cases: &[Case], at_once: bool) {
    let started = Instant::now();
    let mut failed = Vec::new();
    if at_once {
        std::thread::scope(|scope| {
            let running: Vec<_> = cases
                .iter()
                .map(|&(name, case)| (name, scope.spawn(move || case(s, name))))
                .collect();
            for (name, thread) in running {
                if thread.join().is_err() {
                    failed.push(name);
                }
            }
        });
    } else {
        for &(name, case) in cases {
            if catch_unwind(AssertUnwindSafe(|| case(s, name))).is_err() {
                failed.push(name);
            }
        }
    }
    eprintln!(
        "network_faults: {:?} done in {:.1?}",
        names(cases),
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "network fault cases failed (messages above): {failed:?}"
    );
}

/// The most a run's faulted answers can add to an uninterrupted update: a pack answer at most
/// the partial frame it carried ([`FRAME_SLACK_BYTES`]), a metadata answer (fetched whole
/// again) all it carried.
fn explained_overhead(records: &[Record]) -> u64 {
    records
        .iter()
        .filter(|r| r.fault.is_some())
        .map(|r| {
            if r.is_pack() {
                r.body_bytes.min(FRAME_SLACK_BYTES)
            } else {
                r.body_bytes
            }
        })
        .sum()
}

fn faulted(records: &[Record]) -> usize {
    records.iter().filter(|r| r.fault.is_some()).count()
}

/// A transient case: `schedule` on a single proxied mirror; the update into install `name`
/// succeeds with the v2 tree, the client counts the body bytes the proxy sent (at most: a
/// reset may discard some in flight), and the bytes beyond the clean update are explained by
/// the faults. Returns the proxy's records.
fn survives(s: &Scene, case: &str, name: &str, schedule: Schedule) -> Vec<Record> {
    let proxy = FaultProxy::start(s.n.addr(), schedule);
    let out = s.update(&[proxy.url()], name, TRANSIENT_WITHIN);
    let records = proxy.wait_settled(Duration::from_secs(10));
    let context = format!("{case}\n{out}\nproxy:\n{}", format_records(&records));
    assert!(
        out.success(),
        "{case}: the update must survive a transient fault\n{context}"
    );
    assert!(out.elapsed < TRANSIENT_WITHIN, "{context}");
    assert_trees_equal(&current(&s.dir(name)), &s.v2);
    let r = Report::new(out.clone());
    assert_eq!(r.str("version"), V2, "{context}");
    let injected = faulted(&records);
    assert!(injected > 0, "{case}: no fault was injected\n{context}");
    let sent = proxy.stats().body_bytes;
    let counted = r.u64("bytes_from_origin");
    let resets = records
        .iter()
        .any(|r| matches!(r.fault, Some(Fault::Reset { .. })));
    if resets {
        assert!(counted <= sent, "{context}");
    } else {
        assert_eq!(
            counted, sent,
            "{case}: the client must count every body byte the proxy sent\n{context}"
        );
    }
    // A reset also throws away what was still in the socket buffers (the proxy's unsent bytes,
    // the client's unread ones): no client ever sees those, so with resets the waste is
    // measured in the bytes the client received.
    let (measured, what) = if resets {
        (counted, format!("received ({sent} sent)"))
    } else {
        (sent, "sent".to_owned())
    };
    let clean = s.clean.bytes;
    let extra = measured.saturating_sub(clean);
    let bound = explained_overhead(&records);
    assert!(
        extra <= bound,
        "{case}: {extra} bytes {what} beyond the clean update's {clean}, more than the {bound} \
         the {injected} faulted answers explain\n{context}"
    );
    eprintln!(
        "network_faults: {case}: {injected} faults injected, update succeeded in {:.1?}; \
         {measured} bytes {what} vs {clean} clean: {extra} extra (bound {bound}); \
         install damage 0 B",
        out.elapsed
    );
    records
}

/// A permanent case: `schedule` on a single proxied mirror; the update into install `name`
/// fails within `within`, names one of `expected` (lowercase), and leaves v1 as it was.
fn fails_cleanly(
    s: &Scene,
    case: &str,
    name: &str,
    schedule: Schedule,
    expected: &[&str],
    within: Duration,
) -> Vec<Record> {
    let dir = s.dir(name);
    let link = current_link(&dir);
    let proxy = FaultProxy::start(s.n.addr(), schedule);
    let out = s.update(&[proxy.url()], name, within);
    let records = proxy.wait_settled(Duration::from_secs(10));
    let context = format!("{case}\n{out}\nproxy:\n{}", format_records(&records));
    out.assert_failure(case);
    assert!(
        out.elapsed < within,
        "{case}: failed only after {:?} (limit {within:?})\n{context}",
        out.elapsed
    );
    let error = out.stderr.to_lowercase();
    assert!(
        expected.iter().any(|k| error.contains(k)),
        "{case}: the error must name the problem (one of {expected:?})\n{context}"
    );
    assert_untouched(&s.w, &dir, &link, &out);
    let injected = faulted(&records);
    assert!(injected > 0, "{case}: no fault was injected\n{context}");
    eprintln!(
        "network_faults: {case}: {injected} faults injected, update failed cleanly in {:.1?} \
         ({}); install untouched",
        out.elapsed,
        out.stderr.trim().lines().last().unwrap_or("")
    );
    records
}

/// A failover case: the proxy with `schedule` as first `--origin`, a second nginx on the same
/// folder as second; the update into install `name` succeeds within `within`, the bytes the
/// client counted are what the proxy and the second mirror sent, and they exceed the clean
/// update by no more than the faults explain. Returns the proxy's records.
fn fails_over(
    s: &Scene,
    case: &str,
    name: &str,
    schedule: Schedule,
    within: Duration,
) -> Vec<Record> {
    let second = Nginx::start(&s.w.origin, &NginxOptions::default());
    let proxy = FaultProxy::start(s.n.addr(), schedule);
    let mark = second.mark();
    let out = s.update(&[proxy.url(), second.url()], name, within);
    let records = proxy.wait_settled(Duration::from_secs(10));
    let log = run_log(&second, mark);
    let context = format!(
        "{case}\n{out}\nproxy:\n{}second mirror:\n{}",
        format_records(&records),
        format_entries(&log)
    );
    assert!(
        out.success(),
        "{case}: the update must fail over\n{context}"
    );
    assert!(
        out.elapsed < within,
        "{case}: took {:?} (limit {within:?})\n{context}",
        out.elapsed
    );
    assert_trees_equal(&current(&s.dir(name)), &s.v2);
    let r = Report::new(out.clone());
    let injected = faulted(&records);
    assert!(injected > 0, "{case}: no fault was injected\n{context}");
    assert!(
        log.iter().any(|e| e.is_pack()),
        "{case}: no pack came from the second mirror\n{context}"
    );
    // Once a pack request failed there, the packs stayed on the second mirror: only the
    // requests already in flight met the faulty one.
    let packs = records.iter().filter(|r| r.is_pack()).count();
    assert!(packs <= PARALLEL_REQUESTS, "{case}\n{context}");
    let from_proxy = proxy.stats().body_bytes;
    let from_second: u64 = log.iter().map(|e| e.body_bytes).sum();
    assert_eq!(
        r.u64("bytes_from_origin"),
        from_proxy + from_second,
        "{case}: every byte counted is one a mirror sent\n{context}"
    );
    assert_eq!(
        r.u64("requests"),
        records.len() as u64 + log.len() as u64,
        "{case}: every request counted is one a mirror saw\n{context}"
    );
    let clean = s.clean.bytes;
    let extra = (from_proxy + from_second).saturating_sub(clean);
    let bound = explained_overhead(&records);
    assert!(
        extra <= bound,
        "{case}: {extra} bytes beyond the clean update, more than the {bound} the faults \
         explain\n{context}"
    );
    eprintln!(
        "network_faults: {case}: {injected} faults injected, failed over and succeeded in \
         {:.1?}; {from_proxy} bytes from the proxy + {from_second} from the second mirror vs \
         {clean} clean: {extra} extra (bound {bound}); install damage 0 B",
        out.elapsed
    );
    records
}

/// Each faulted request was cut by the rate guard: it lasted about [`SLOW_GRACE`], not the
/// 30 s read timeout.
fn assert_cut_by_the_rate_guard(case: &str, records: &[Record]) {
    for r in records.iter().filter(|r| r.fault.is_some()) {
        let lasted = r.ended_at.expect("settled") - r.received_at;
        assert!(
            lasted >= SLOW_GRACE - Duration::from_millis(500) && lasted < SLOW_CUT_WITHIN,
            "{case}: a slowed request lasted {lasted:?}, not about {SLOW_GRACE:?}\n{}",
            format_records(records)
        );
    }
}

/// The gap between each faulted answer and the next request for the same path.
fn retry_gaps(records: &[Record]) -> Vec<(String, Duration)> {
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.fault.is_some())
        .map(|(i, r)| {
            let retry = records[i + 1..]
                .iter()
                .find(|next| next.path() == r.path())
                .unwrap_or_else(|| {
                    panic!(
                        "{} was never asked again\n{}",
                        r.path(),
                        format_records(records)
                    )
                });
            let gap = retry.received_at - r.ended_at.expect("settled");
            (r.path().to_owned(), gap)
        })
        .collect()
}

/// A 429 asking for 1 s on the channel pointer and a 503 asking for 2 s on the first pack:
/// each retry comes that long after, and nothing reaches the mirror in between.
fn retry_after_is_honoured(s: &Scene, name: &str) {
    let case = "Retry-After 1 s and 2 s";
    let schedule = Schedule::on(Target::Packs, When::First(1), busy(503, 2)).and(
        Target::Prefix("/channels/".into()),
        When::First(1),
        busy(429, 1),
    );
    let records = survives(s, case, name, schedule);
    let gaps = retry_gaps(&records);
    assert_eq!(gaps.len(), 2, "{case}\n{}", format_records(&records));
    for (path, gap) in &gaps {
        let asked = Duration::from_secs(if path.starts_with("/packs/") { 2 } else { 1 });
        eprintln!("network_faults: Retry-After {asked:?} on {path}: retried after {gap:.2?}");
        // The retry waits what the server asked, and not much more (the backoff of a first
        // retry is under 0.4 s).
        assert!(
            *gap + RETRY_AFTER_TOLERANCE >= asked && *gap < asked + Duration::from_secs(3),
            "{case}: {path} retried {gap:?} after a Retry-After of {asked:?}\n{}",
            format_records(&records)
        );
    }
    let refused = records
        .iter()
        .find(|r| r.is_pack() && r.fault.is_some())
        .expect("the faulted pack request");
    let held_until = refused.ended_at.expect("settled") + Duration::from_secs(2);
    assert!(
        records
            .iter()
            .filter(|r| r.received_at > refused.received_at)
            .all(|r| r.received_at + RETRY_AFTER_TOLERANCE >= held_until),
        "{case}: a request reached the mirror before its Retry-After passed\n{}",
        format_records(&records)
    );
}

/// The byte length of each pack file of the origin, by request path.
fn pack_lengths(w: &World) -> BTreeMap<String, u64> {
    fs::read_dir(w.origin.join("packs"))
        .expect("read packs")
        .map(|e| {
            let e = e.expect("entry");
            let len = e.metadata().expect("stat pack").len();
            (format!("/packs/{}", e.file_name().to_string_lossy()), len)
        })
        .collect()
}

/// A CDN that answers the first pack request with the whole pack (a cache miss, say) and
/// honours Range afterwards: the update succeeds, the whole pack serves every range of that
/// pack, and no pack is asked for twice, so each costs at most its length.
///
/// The client goes on sending Range headers to that mirror (`mirrors.rs` checks this with an
/// nginx ignoring every one): what it changes after a `200` is to ask each pack once, with
/// one range from its first needed frame to its last.
fn ignored_range_costs_each_pack_at_most_once(s: &Scene, name: &str) {
    let case = "ignore Range (first pack request)";
    let schedule = Schedule::on(Target::Packs, When::First(1), Fault::IgnoreRange);
    let proxy = FaultProxy::start(s.n.addr(), schedule);
    let out = s.update(&[proxy.url()], name, TRANSIENT_WITHIN);
    let records = proxy.wait_settled(Duration::from_secs(10));
    let context = format!("{case}\n{out}\nproxy:\n{}", format_records(&records));
    assert!(out.success(), "{context}");
    assert_trees_equal(&current(&s.dir(name)), &s.v2);
    let r = Report::new(out.clone());
    let stats = proxy.stats();
    assert_eq!(r.u64("bytes_from_origin"), stats.body_bytes, "{context}");
    let packs: Vec<&Record> = records.iter().filter(|r| r.is_pack()).collect();
    assert_eq!(
        packs.first().and_then(|r| r.status),
        Some(200),
        "the stripped request must get the whole pack\n{context}"
    );
    let mut asked: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &packs {
        assert!(r.range.is_some(), "a pack asked without a range\n{context}");
        *asked.entry(r.path()).or_default() += 1;
    }
    assert!(
        asked.values().all(|&n| n == 1),
        "{case}: a pack was asked for more than once: {asked:?}\n{context}"
    );
    assert!(
        packs.len() <= s.clean.pack_requests,
        "{case}: more pack requests than the clean update's {}\n{context}",
        s.clean.pack_requests
    );
    let lengths = pack_lengths(&s.w);
    let metadata: u64 = records
        .iter()
        .filter(|r| !r.is_pack())
        .map(|r| r.body_bytes)
        .sum();
    let bound: u64 = asked.keys().map(|p| lengths[*p]).sum();
    let pack_bytes = stats.body_bytes - metadata;
    assert!(
        pack_bytes <= bound,
        "{case}: {pack_bytes} pack bytes, more than the {bound} of the packs asked for\n{context}"
    );
    eprintln!(
        "network_faults: {case}: 1 fault injected, update succeeded in {:.1?}; {} pack \
         requests ({} clean), {} bytes sent vs {} clean: {} extra (bound: each pack once, \
         {bound} bytes of packs); install damage 0 B",
        out.elapsed,
        packs.len(),
        s.clean.pack_requests,
        stats.body_bytes,
        s.clean.bytes,
        stats.body_bytes.saturating_sub(s.clean.bytes)
    );
}

/// With no fault, an update through the proxy is byte for byte the update straight from
/// nginx: the proxy itself adds nothing.
fn the_proxy_alone_changes_nothing(s: &Scene, name: &str) {
    let proxy = FaultProxy::start(s.n.addr(), Schedule::none());
    let out = s.update(&[proxy.url()], name, TRANSIENT_WITHIN);
    let records = proxy.wait_settled(Duration::from_secs(10));
    let context = format!("no fault\n{out}\nproxy:\n{}", format_records(&records));
    assert!(out.success(), "{context}");
    assert_trees_equal(&current(&s.dir(name)), &s.v2);
    let r = Report::new(out.clone());
    let stats = proxy.stats();
    assert!(stats.faults.is_empty(), "{context}");
    assert_eq!(stats.body_bytes, s.clean.bytes, "{context}");
    assert_eq!(r.u64("bytes_from_origin"), s.clean.bytes, "{context}");
    assert_eq!(r.u64("requests"), stats.requests, "{context}");
    eprintln!(
        "network_faults: no fault: update succeeded in {:.1?}; {} bytes, as clean",
        out.elapsed, stats.body_bytes
    );
}

fn busy(status: u16, secs: u64) -> Fault {
    Fault::ServerError {
        status,
        retry_after: Some(secs),
    }
}

fn server_error(status: u16) -> Fault {
    Fault::ServerError {
        status,
        retry_after: None,
    }
}

fn manifests() -> Target {
    Target::Prefix("/manifests/".into())
}

fn channels() -> Target {
    Target::Prefix("/channels/".into())
}

/// Words that name a body cut short, in reqwest's or the engine's phrasing.
const CUT_SHORT: &[&str] = &[
    "closed",
    "end of file",
    "body ended",
    "incomplete",
    "truncated",
];

/// Some requests faulted: each update survives.
const SOME_REQUESTS: &[Case] = &[
    ("reset", |s, name| {
        // Two pack answers cut by a reset 300 kB in, and a manifest 1000 bytes in.
        let cut = |body_bytes| Fault::Reset { body_bytes };
        let schedule = Schedule::on(Target::Packs, When::First(2), cut(300_000)).and(
            manifests(),
            When::First(1),
            cut(1000),
        );
        let records = survives(s, "reset (2 packs, 1 manifest)", name, schedule);
        assert_eq!(faulted(&records), 3, "{}", format_records(&records));
    }),
    ("truncate", |s, name| {
        // Every 3rd pack answer ends (FIN) 200 kB in, and the channel pointer 10 bytes in.
        let cut = |body_bytes| Fault::Truncate { body_bytes };
        let schedule = Schedule::on(Target::Packs, When::Every(3), cut(200_000)).and(
            channels(),
            When::First(1),
            cut(10),
        );
        survives(s, "truncate (every 3rd pack, 1 pointer)", name, schedule);
    }),
    ("5xx", |s, name| {
        let schedule = Schedule::on(Target::Packs, When::First(2), server_error(500)).and(
            Target::Metadata,
            When::First(1),
            server_error(502),
        );
        survives(s, "500/502 (2 packs, 1 pointer)", name, schedule);
    }),
    ("retry-after", retry_after_is_honoured),
    ("longer", |s, name| {
        // More announced than sent: the client has its range before the phantom bytes are
        // due; a manifest, read to its end, is fetched again.
        let wrong = Fault::WrongContentLength { delta: 1000 };
        let schedule = Schedule::on(Target::Packs, When::First(2), wrong.clone()).and(
            manifests(),
            When::First(1),
            wrong,
        );
        let case = "Content-Length +1000 (2 packs, 1 manifest)";
        let records = survives(s, case, name, schedule);
        assert_eq!(faulted(&records), 3, "{}", format_records(&records));
    }),
    ("shorter", |s, name| {
        // Less announced, and only that sent: a range ends early and is resumed.
        let wrong = Fault::WrongContentLength { delta: -1000 };
        let schedule = Schedule::on(Target::Packs, When::Every(2), wrong);
        survives(s, "Content-Length -1000 (every 2nd pack)", name, schedule);
    }),
    ("ignore-range", ignored_range_costs_each_pack_at_most_once),
    ("no-fault", the_proxy_alone_changes_nothing),
];

#[test]
fn faults_on_some_requests_are_survived_with_bounded_extra_bytes() {
    let s = Scene::new(&names(SOME_REQUESTS));
    run_cases(&s, SOME_REQUESTS, false);
}

fn always(target: Target, fault: Fault) -> Schedule {
    Schedule::on(target, When::Always, fault)
}

/// Every request faulted: quick to fail.
const EVERY_REQUEST: &[Case] = &[
    ("reset", |s, name| {
        let cut = Fault::Reset { body_bytes: 0 };
        let schedule = always(Target::Packs, cut);
        fails_cleanly(
            s,
            "reset (every pack)",
            name,
            schedule,
            &["reset"],
            PERMANENT_WITHIN,
        );
    }),
    ("truncate", |s, name| {
        let cut = Fault::Truncate { body_bytes: 0 };
        let schedule = always(Target::Packs, cut);
        let case = "truncate (every pack)";
        fails_cleanly(s, case, name, schedule, CUT_SHORT, PERMANENT_WITHIN);
    }),
    ("503", |s, name| {
        let schedule = always(Target::Packs, server_error(503));
        fails_cleanly(
            s,
            "503 (every pack)",
            name,
            schedule,
            &["503"],
            PERMANENT_WITHIN,
        );
    }),
    ("longer", |s, name| {
        // The pointer, read to its end, never completes.
        let schedule = always(channels(), Fault::WrongContentLength { delta: 1000 });
        let case = "Content-Length +1000 (every pointer)";
        fails_cleanly(s, case, name, schedule, CUT_SHORT, PERMANENT_WITHIN);
    }),
    ("shorter", |s, name| {
        let schedule = always(Target::Packs, Fault::WrongContentLength { delta: -1000 });
        let case = "Content-Length -1000 (every pack)";
        fails_cleanly(s, case, name, schedule, &["body ended"], PERMANENT_WITHIN);
    }),
    ("retry-after", |s, name| {
        // Asking for an hour: a single mirror fails at once, naming the Retry-After, and is
        // not asked again.
        let case = "Retry-After 3600 s (every pack)";
        let schedule = always(Target::Packs, busy(503, 3600));
        let expected = ["retry-after 3600 s"];
        let records = fails_cleanly(s, case, name, schedule, &expected, Duration::from_secs(15));
        assert_eq!(
            records.iter().filter(|r| r.is_pack()).count(),
            1,
            "{case}: a Retry-After past {MAX_RETRY_AFTER_SECS} s is not waited for\n{}",
            format_records(&records)
        );
    }),
    ("retry-after-failover", |s, name| {
        // With a second mirror, the update goes on there at once.
        let schedule = always(Target::Packs, busy(503, 3600));
        let case = "Retry-After 3600 s (failover)";
        fails_over(s, case, name, schedule, Duration::from_secs(20));
    }),
    ("reset-failover", |s, name| {
        let schedule = always(Target::Packs, Fault::Reset { body_bytes: 0 });
        let records = fails_over(s, "reset (failover)", name, schedule, TRANSIENT_WITHIN);
        assert!(
            records.iter().any(|r| r.path().starts_with("/channels/")),
            "the metadata comes from the first mirror\n{}",
            format_records(&records)
        );
    }),
];

/// Every request slowed or stalled: each case waits for the rate guard's 10 s.
const EVERY_REQUEST_SLOW: &[Case] = &[
    ("loris", |s, name| {
        let case = "slow loris 1 B/s (every pack)";
        let schedule = always(Target::Packs, Fault::SlowLoris { bytes_per_sec: 1 });
        let within = SLOW_CUT_WITHIN + Duration::from_secs(10);
        let records = fails_cleanly(s, case, name, schedule, &["too slow"], within);
        assert_cut_by_the_rate_guard(case, &records);
    }),
    ("loris-failover", |s, name| {
        let case = "slow loris 1 B/s (failover)";
        let schedule = always(Target::Packs, Fault::SlowLoris { bytes_per_sec: 1 });
        let records = fails_over(s, case, name, schedule, SLOW_FAILOVER_WITHIN);
        // Even the head comes a byte a second: no answer lets the other ranges start, so only
        // the first meets the slow mirror.
        assert_eq!(faulted(&records), 1, "{case}\n{}", format_records(&records));
        assert_cut_by_the_rate_guard(case, &records);
    }),
    ("stall", |s, name| {
        let case = "stall after headers (every pack)";
        let schedule = always(Target::Packs, Fault::StallAfterHeaders);
        let within = SLOW_CUT_WITHIN + Duration::from_secs(10);
        let records = fails_cleanly(s, case, name, schedule, &["too slow"], within);
        assert_cut_by_the_rate_guard(case, &records);
    }),
    ("stall-failover", |s, name| {
        let case = "stall after headers (failover)";
        let schedule = always(Target::Packs, Fault::StallAfterHeaders);
        let records = fails_over(s, case, name, schedule, SLOW_FAILOVER_WITHIN);
        // The first answer's head lets the other ranges start there too: they stall together,
        // once, and nothing goes there after the first cut.
        let first_cut = records
            .iter()
            .filter_map(|r| r.fault.as_ref().and(r.ended_at))
            .min()
            .expect("a stalled request");
        assert!(
            records
                .iter()
                .filter(|r| r.is_pack())
                .all(|r| r.received_at < first_cut),
            "{case}: a pack request reached the stalled mirror after a cut\n{}",
            format_records(&records)
        );
        assert_cut_by_the_rate_guard(case, &records);
    }),
];

#[test]
fn faults_on_every_request_fail_cleanly_or_fail_over() {
    let installs = [names(EVERY_REQUEST), names(EVERY_REQUEST_SLOW)].concat();
    let s = Scene::new(&installs);
    // The slow cases mostly wait: all at once, alongside the quick ones.
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| run_cases(&s, EVERY_REQUEST_SLOW, true));
        let quick = catch_unwind(AssertUnwindSafe(|| run_cases(&s, EVERY_REQUEST, false)));
        let slow = slow.join();
        assert!(
            quick.is_ok() && slow.is_ok(),
            "network fault cases failed (messages above)"
        );
    });
}
