//! Where a build's time goes, for `push --json`: wall seconds per stage, and CPU seconds of
//! each kind of work summed over the threads that did it (so on 2 cores they can add up to
//! twice the wall time; CPU time, so that other work on the machine does not count).
//!
//! The work counters are process-wide: [`Clock`] reads them at the start of a build and
//! reports what was added since, so builds running at once in one process (tests) see each
//! other's work.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A kind of work, timed wherever it runs.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// Reading files through FastCDC and hashing them whole.
    Read,
    /// Chunk ids of new chunks.
    ChunkIds,
    /// Plain frames (zstd) of chunks not on the origin.
    PlainFrames,
    /// Plain frames of chunks the parent has, read from its packs and checked.
    PlainReused,
    /// Anchors between a new file and its base (reading the base included).
    Anchors,
    /// Decoding windows and files of a base.
    BaseRead,
    /// zstd match tables of delta windows.
    WindowTables,
    /// bsdiff's match of segments against their windows.
    Bidiff,
    /// The second bsdiff match, on executables with their references projected.
    BidiffProjected,
    /// Scanning references, voting for labels, substituting targets.
    RefsPrepare,
    /// Delta frames of the zstd window codec.
    ZstdFrames,
    /// Delta frames of the bsdiff codec.
    BsdiffFrames,
    /// Delta frames of the bsdiff codec with projected references.
    RefsFrames,
    /// Decoding projected frames back, as a client would.
    RefsCheck,
    /// Solid frames.
    SolidFrames,
    /// Solid frames of runs the parent has, read from its packs and checked.
    SolidReused,
}

const KINDS: usize = Work::SolidReused as usize + 1;

const NAMES: [&str; KINDS] = [
    "read",
    "chunk_ids",
    "plain_frames",
    "plain_reused",
    "anchors",
    "base_read",
    "window_tables",
    "bidiff",
    "bidiff_projected",
    "refs_prepare",
    "zstd_frames",
    "bsdiff_frames",
    "refs_frames",
    "refs_check",
    "solid_frames",
    "solid_reused",
];

static NANOS: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];

/// Runs `f`, adding the CPU time it takes on this thread to `work`.
pub fn time<T>(work: Work, f: impl FnOnce() -> T) -> T {
    let _timed = Timed::new(work);
    f()
}

/// This thread's CPU time.
fn thread_cpu() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// Adds this thread's CPU time until it is dropped to a kind of work.
pub struct Timed(Work, u64);

impl Timed {
    pub fn new(work: Work) -> Self {
        Self(work, thread_cpu())
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        let spent = thread_cpu().saturating_sub(self.1);
        NANOS[self.0 as usize].fetch_add(spent, Ordering::Relaxed);
    }
}

fn read() -> [u64; KINDS] {
    std::array::from_fn(|i| NANOS[i].load(Ordering::Relaxed))
}

/// Times one build: its stages as they end, and the work done since it started.
#[derive(Debug)]
pub struct Clock {
    work_at_start: [u64; KINDS],
    stage_started: Instant,
    stages: BTreeMap<String, f64>,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            work_at_start: read(),
            stage_started: Instant::now(),
            stages: BTreeMap::new(),
        }
    }

    /// Ends the current stage, named `stage`, and starts the next.
    pub fn lap(&mut self, stage: impl Into<String>) {
        let now = Instant::now();
        *self.stages.entry(stage.into()).or_default() +=
            now.duration_since(self.stage_started).as_secs_f64();
        self.stage_started = now;
    }

    /// Records a stage that ran alongside others, taking `took`.
    pub fn record(&mut self, stage: impl Into<String>, took: std::time::Duration) {
        *self.stages.entry(stage.into()).or_default() += took.as_secs_f64();
    }

    /// Wall seconds per stage, and seconds per kind of work (those with any).
    pub fn finish(self) -> Timings {
        let now = read();
        let work = NAMES
            .iter()
            .zip(now.iter().zip(self.work_at_start))
            .filter(|(_, (now, then))| *now > then)
            .map(|(name, (now, then))| ((*name).to_owned(), round((now - then) as f64 / 1e9)))
            .collect();
        let stages = self
            .stages
            .into_iter()
            .map(|(k, v)| (k, round(v)))
            .collect();
        Timings { stages, work }
    }
}

/// Wall seconds per stage and seconds per kind of work.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    pub stages: BTreeMap<String, f64>,
    pub work: BTreeMap<String, f64>,
}

fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
