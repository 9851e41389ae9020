//! Rendering engine events and results for people (and, with `--json`, for scripts).

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use relsync_engine::{
    CheckOutcome, Event, FileAction, Hold, Reporter, Status, UpdatePlan, UpdateReport,
};

/// How often a transfer reports itself without a terminal, however slow it is.
pub const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(10);

/// Who reads the progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// People: bars on a terminal, lines on stderr otherwise.
    Human,
    /// Scripts (`--json`): a `{"event":"progress",…}` line on stdout now and then.
    Json,
}

/// Progress bars on a terminal, plain lines otherwise (one at least every
/// [`PROGRESS_LINE_INTERVAL`] while fetching), and progress events with `--json`.
pub struct Progress {
    mode: ProgressMode,
    tty: bool,
    bar: Mutex<Option<ProgressBar>>,
    fetch: Arc<Mutex<FetchProgress>>,
    ticker: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

/// The fetch stage so far, shared with the thread that prints the periodic lines.
#[derive(Debug)]
struct FetchProgress {
    started: Instant,
    bytes: u64,
    total: u64,
    meter: RateMeter,
}

impl FetchProgress {
    fn new(total: u64) -> Self {
        Self {
            started: Instant::now(),
            bytes: 0,
            total,
            meter: RateMeter::default(),
        }
    }

    fn sample(&mut self) {
        let at = self.started.elapsed().as_secs_f64();
        self.meter.sample(at, self.bytes);
    }

    /// `fetched 12.0 MiB of 48.0 MiB (25%), 1.2 MiB/s, eta 30s`.
    fn line(&self) -> String {
        let percent = (self.bytes as f64 * 100.0 / self.total.max(1) as f64).min(100.0);
        format!(
            "fetched {} of {} ({percent:.0}%), {}",
            human_bytes(self.bytes),
            human_bytes(self.total),
            self.rate_and_eta()
        )
    }

    /// `1.2 MiB/s, eta 30s` (or `eta …` before the rate is known).
    fn rate_and_eta(&self) -> String {
        let rate = self.meter.bytes_per_sec().map_or_else(
            || "…/s".to_owned(),
            |r| format!("{}/s", human_bytes(r as u64)),
        );
        let eta = self
            .meter
            .eta(self.total.saturating_sub(self.bytes))
            .map_or_else(|| "…".to_owned(), human_duration);
        format!("{rate}, eta {eta}")
    }

    fn json(&self) -> serde_json::Value {
        let remaining = self.total.saturating_sub(self.bytes);
        serde_json::json!({
            "event": "progress",
            "stage": "fetch",
            "bytes": self.bytes,
            "total": self.total,
            "bytes_per_sec": self.meter.bytes_per_sec().map(|r| r as u64),
            "eta_secs": self.meter.eta(remaining).map(|d| d.as_secs()),
        })
    }
}

impl ProgressMode {
    /// [`ProgressMode::Json`] for `--json`.
    pub fn of(json: bool) -> Self {
        if json { Self::Json } else { Self::Human }
    }
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        Self {
            mode,
            tty: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            fetch: Arc::new(Mutex::new(FetchProgress::new(0))),
            ticker: Mutex::new(None),
        }
    }

    fn human(&self) -> bool {
        self.mode == ProgressMode::Human
    }

    fn set_bar(&self, bar: Option<ProgressBar>) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.take() {
                old.finish_and_clear();
            }
            *slot = bar;
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            f(bar);
        }
    }

    pub fn finish(&self) {
        self.stop_ticker();
        self.set_bar(None);
    }

    fn bar(&self, len: u64, template: &str) -> Option<ProgressBar> {
        if !self.tty || !self.human() {
            return None;
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Some(bar)
    }

    /// Prints the fetch's progress every [`PROGRESS_LINE_INTERVAL`] until stopped: on stderr
    /// without a terminal, on stdout as JSON with `--json` (a terminal has the bar).
    fn start_ticker(&self, total: u64) {
        self.stop_ticker();
        if let Ok(mut fetch) = self.fetch.lock() {
            *fetch = FetchProgress::new(total);
        }
        if self.human() && self.tty {
            return;
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let fetch = self.fetch.clone();
        let mode = self.mode;
        let thread = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(PROGRESS_LINE_INTERVAL)
            {
                let Ok(mut fetch) = fetch.lock() else { return };
                fetch.sample();
                match mode {
                    ProgressMode::Human => eprintln!("{}", fetch.line()),
                    ProgressMode::Json => {
                        let mut out = std::io::stdout().lock();
                        // A closed stdout ends the lines, not the update.
                        if writeln!(out, "{}", fetch.json()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        if let Ok(mut slot) = self.ticker.lock() {
            *slot = Some((stop, thread));
        }
    }

    fn stop_ticker(&self) {
        let ticker = self.ticker.lock().ok().and_then(|mut slot| slot.take());
        if let Some((stop, thread)) = ticker {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

impl Reporter for Progress {
    fn report(&self, event: Event) {
        match event {
            Event::Planned {
                bytes_to_fetch,
                requests,
                bytes_reused,
            } => {
                if self.human() && !self.tty {
                    eprintln!(
                        "fetching {} in {requests} requests, reusing {} locally",
                        human_bytes(bytes_to_fetch),
                        human_bytes(bytes_reused)
                    );
                }
                self.set_bar(self.bar(
                    bytes_to_fetch,
                    "fetch    [{bar:30}] {binary_bytes}/{binary_total_bytes} {msg}",
                ));
                self.start_ticker(bytes_to_fetch);
            }
            // Progress counts frame bytes, not the gaps the plan's total includes.
            Event::Fetched { bytes, total, .. } => {
                let message = self.fetch.lock().ok().map(|mut fetch| {
                    fetch.bytes = bytes;
                    fetch.total = total;
                    fetch.sample();
                    fetch.rate_and_eta()
                });
                self.with_bar(|b| {
                    b.set_length(total);
                    b.set_position(bytes);
                    if let Some(message) = message {
                        b.set_message(message);
                    }
                });
            }
            Event::Assembled { files, total } => {
                self.stop_ticker();
                if files == 1 {
                    self.set_bar(self.bar(total, "assemble [{bar:30}] {pos}/{len} files"));
                }
                self.with_bar(|b| b.set_position(files));
            }
            Event::Verified { files } => {
                self.stop_ticker();
                self.set_bar(None);
                if self.human() && !self.tty {
                    eprintln!("verified {files} paths");
                }
            }
            Event::Checked {
                version,
                installed,
                up_to_date: false,
            } if self.human() => match installed {
                Some(old) => eprintln!("updating {old} -> {version}"),
                None => eprintln!("installing {version}"),
            },
            _ => {}
        }
    }
}

/// A transfer rate smoothed over time (an exponential moving average with a time constant
/// of [`RateMeter::TIME_CONSTANT_SECS`]), so an ETA does not jump from hours to seconds as
/// the first bursts arrive.
#[derive(Debug, Default, Clone)]
pub struct RateMeter {
    /// The last sample: seconds since the start, bytes so far.
    last: Option<(f64, u64)>,
    /// Smoothed bytes per second; `None` until a second has passed.
    rate: Option<f64>,
}

impl RateMeter {
    /// Seconds over which older samples fade (to 1/e).
    pub const TIME_CONSTANT_SECS: f64 = 5.0;
    /// Samples closer together than this are merged into the next one.
    const MIN_INTERVAL_SECS: f64 = 1.0;

    /// Records that `bytes` were done `at_secs` after the start.
    pub fn sample(&mut self, at_secs: f64, bytes: u64) {
        let Some((last_at, last_bytes)) = self.last else {
            self.last = Some((at_secs, bytes));
            return;
        };
        let dt = at_secs - last_at;
        if dt < Self::MIN_INTERVAL_SECS {
            return;
        }
        let instant = bytes.saturating_sub(last_bytes) as f64 / dt;
        let weight = 1.0 - (-dt / Self::TIME_CONSTANT_SECS).exp();
        self.rate = Some(match self.rate {
            Some(rate) => rate + weight * (instant - rate),
            None => instant,
        });
        self.last = Some((at_secs, bytes));
    }

    /// The smoothed rate, once known.
    pub fn bytes_per_sec(&self) -> Option<f64> {
        self.rate
    }

    /// Time to move `remaining` bytes at the smoothed rate (`None` while unknown or stalled).
    pub fn eta(&self, remaining: u64) -> Option<Duration> {
        let rate = self.rate.filter(|r| *r >= 1.0)?;
        Some(Duration::from_secs_f64((remaining as f64 / rate).min(1e9)))
    }
}

/// `45s`, `3m05s`, `2h03m`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3_600, secs / 60 % 60),
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn print_report(r: &UpdateReport) {
    if r.up_to_date {
        match &r.held {
            Some(held) => println!(
                "already up to date at {}; {} is offered but held: {}",
                r.version,
                held.offered,
                hold_text(&held.offered, &held.hold)
            ),
            None => println!("already up to date at {}", r.version),
        }
        return;
    }
    match (&r.previous_version, r.applied) {
        (_, false) => println!(
            "staged {} (verified); `relsync apply` installs it, offline",
            r.version
        ),
        (Some(old), true) => println!("updated {old} -> {}", r.version),
        (None, true) => println!("installed {}", r.version),
    }
    print_transfer(r);
}

/// What an update or repair fetched, reused and wrote, and how long it took.
pub fn print_transfer(r: &UpdateReport) {
    // Every byte says where it came from: the origin, LAN peers, or this machine.
    println!(
        "  downloaded {} in {} requests: {} from the origin, {} from LAN peers",
        human_bytes(r.bytes_downloaded),
        r.requests,
        human_bytes(r.bytes_from_origin),
        human_bytes(r.bytes_from_peers)
    );
    println!(
        "  reused     {} of chunks from this machine, {} files linked unchanged ({})",
        human_bytes(r.bytes_reused),
        r.files_linked,
        human_bytes(r.bytes_linked)
    );
    println!(
        "  wrote      {} files; fetched {} chunks ({} as deltas, {} of them bsdiff, {} with \
         projected references through {} reference maps)",
        r.files_written,
        r.chunks_fetched,
        r.chunks_delta,
        r.chunks_bsdiff,
        r.chunks_refs,
        r.ref_maps
    );
    println!("  took       {:.2} s", r.duration_ms as f64 / 1000.0);
}

/// Why a release is held, and how to take it anyway when that is the operator's to decide.
fn hold_text(offered: &semver::Version, hold: &Hold) -> String {
    match hold {
        Hold::MarkedBad => format!("{hold}; `relsync retry {offered}` clears the mark"),
        hold => hold.to_string(),
    }
}

pub fn print_plan(p: &UpdatePlan) {
    if p.up_to_date {
        println!("up to date at {}", p.version);
        return;
    }
    match &p.previous_version {
        Some(old) => println!("plan: {old} -> {} (manifest {})", p.version, p.manifest),
        None => println!("plan: install {} (manifest {})", p.version, p.manifest),
    }
    for f in &p.files {
        match &f.action {
            FileAction::Link { .. } => println!("  link   {}", f.path),
            FileAction::Write {
                chunks_local,
                chunks_fetched,
            } => println!(
                "  write  {} ({chunks_local} chunks local, {chunks_fetched} fetched)",
                f.path
            ),
            FileAction::Symlink => println!("  link-> {}", f.path),
            FileAction::Dir => println!("  dir    {}", f.path),
        }
    }
    let t = &p.totals;
    println!(
        "would fetch {} in {} requests; reuse {} of chunks; link {} files, write {}",
        human_bytes(t.bytes_to_fetch),
        t.requests,
        human_bytes(t.bytes_reused),
        t.files_linked,
        t.files_written
    );
}

pub fn print_check(outcome: &CheckOutcome) {
    match outcome {
        CheckOutcome::UpToDate { version } => println!("up to date at {version}"),
        CheckOutcome::Held { offered, hold } => {
            println!(
                "{offered} is offered but held: {}",
                hold_text(offered, hold)
            );
        }
        CheckOutcome::Available(a) => {
            let from = a
                .installed
                .as_ref()
                .map_or_else(|| "nothing".to_owned(), |v| v.to_string());
            let kind = match (a.critical, a.rollback) {
                (_, true) => " (yanked release: going back)",
                (true, false) => " (critical)",
                _ => "",
            };
            println!(
                "update available: {from} -> {}{kind}, {} to download",
                a.version,
                human_bytes(a.bytes_on_wire)
            );
            if !a.notes.is_empty() {
                // Signed, but still not the publisher's to drive this terminal with.
                let notes: String = a
                    .notes
                    .chars()
                    .map(|c| match c {
                        '\n' | '\t' => c,
                        c if c.is_control() => '\u{fffd}',
                        c => c,
                    })
                    .collect();
                println!("notes:\n{notes}");
            }
        }
        _ => println!("{}", serde_json::to_string(outcome).unwrap_or_default()),
    }
}

pub fn print_status(s: &Status) {
    println!("install   {}", s.install_dir.display());
    match &s.version {
        Some(v) => println!(
            "version   {v} ({} files, {})",
            s.files,
            human_bytes(s.bytes)
        ),
        None => println!("version   (nothing installed)"),
    }
    if let Some(p) = &s.previous_version {
        println!("previous  {p}");
    }
    if let Some(h) = &s.highest_version_seen {
        println!("highest   {h} (trusted)");
    }
    if let Some(c) = &s.channel {
        println!("channel   {c}");
    }
    if let Some(v) = &s.staged_version {
        println!("staged    {v} (run `relsync apply` to install it)");
    }
    if let Some(t) = &s.trial {
        println!(
            "trial     {} on trial, {} starts without a healthy report",
            t.version, t.starts
        );
    }
    for bad in &s.bad_releases {
        println!(
            "bad       {} ({}; `relsync retry {}` clears the mark)",
            bad.version, bad.reason, bad.version
        );
    }
    println!(
        "store     {} releases, {} chunk locations, {} fetched chunks pending",
        s.store.releases, s.store.chunk_locations, s.store.journal_chunks
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_smoothed_and_the_eta_does_not_jump() {
        let mut meter = RateMeter::default();
        assert_eq!(meter.eta(1000), None);
        meter.sample(0.0, 0);
        assert_eq!(meter.bytes_per_sec(), None, "one sample is no rate");
        // 1 MB/s steady, with a burst of 10 MB in one second and a stalled second.
        let mut bytes = 0;
        let mut etas = Vec::new();
        for second in 1..=30u64 {
            bytes += match second {
                5 => 10_000_000,
                6 => 0,
                _ => 1_000_000,
            };
            meter.sample(second as f64, bytes);
            // Merged into the next sample: too close to this one.
            meter.sample(second as f64 + 0.1, bytes + 999_999_999);
            let eta = meter.eta(60_000_000).map(|d| d.as_secs_f64());
            etas.push(eta.unwrap_or(f64::NAN));
        }
        let rate = meter.bytes_per_sec().unwrap_or_default();
        assert!((rate - 1_000_000.0).abs() < 50_000.0, "{rate}");
        // The burst moves the ETA by less than a factor of 3, not by 10.
        let (before, after) = (etas[3], etas[4]);
        assert!(after > before / 3.0, "{before} -> {after}: {etas:?}");
    }

    #[test]
    fn durations_and_lines_read_well() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(human_duration(Duration::from_secs(7_380)), "2h03m");
        let mut fetch = FetchProgress::new(4 * 1024 * 1024);
        fetch.meter.sample(0.0, 0);
        fetch.bytes = 1024 * 1024;
        fetch.meter.sample(1.0, fetch.bytes);
        assert_eq!(
            fetch.line(),
            "fetched 1.0 MiB of 4.0 MiB (25%), 1.0 MiB/s, eta 3s"
        );
        let json = fetch.json();
        assert_eq!(json["event"], "progress");
        assert_eq!(json["bytes"], 1024 * 1024);
        assert_eq!(json["eta_secs"], 3);
    }
}
