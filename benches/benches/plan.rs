//! Plan-stage benchmarks over a release of 1,000,000 chunks (2,000 files of 500 chunks).
//!
//! `cargo bench -p relsync-benches --bench plan` (about two minutes on 2 cores).
//!
//! - `update`: v1 is installed (its files on disk, its 1M chunk locations in the store). In
//!   v2, 1,800 files are unchanged (hard-linked after re-hashing) and 200 have every tenth
//!   chunk replaced: 90,000 chunks are reused (store lookup, then read and re-hash) and
//!   10,000 are fetched as delta frames against v1, in segments of 32 chunks with a window of
//!   128 chunks around each (the publisher's 2 MiB segments and 8 MiB windows, in chunks);
//!   every chunk of a window is re-hashed before use.
//! - `fresh_install`: the same v2 into an empty install: 1M lookups that miss, then 2,000
//!   solid frames (one per file) instead of 1M plain ones.
//! - `open_manifest` and `store_current`: what the check stage pays at this size to
//!   decode and validate the manifest, from its bytes and from the store.
//!
//! Chunks are 64 bytes on disk, so the figures are the per-chunk overhead of planning (maps,
//! store lookups, one open + pread + BLAKE3 per re-hashed chunk): with real 64 KiB chunks,
//! re-hashing adds the bytes' read and hash time (BLAKE3 ~3.7 GiB/s, see the chunker bench).
//! Frame lengths in the manifest are those of 64 KiB chunks, so frame choice and request
//! coalescing see a realistic pack layout. Peak RSS of one planning run is printed.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ManifestParts, SynthFile, chunk_entry, next, reset_peak_rss, rss_mib, scratch_dir};
use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use relsync_chunker::ChunkId;
use relsync_engine::manifest::{
    Base, Delta, DeltaCodec, EntryKind, SolidFrame, TrustedManifest, Window,
};
use relsync_engine::{
    FetchConfig, FileHash, InstallLayout, PlanTotals, Planned, Release, SecretKey, Store,
};
use semver::Version;

const DIRS: usize = 20;
const FILES: usize = 2_000;
const CHUNKS_PER_FILE: usize = 500;
/// Bytes of each chunk on disk.
const CHUNK_BYTES: usize = 64;
/// Files from this one on change in v2 (one in ten).
const FIRST_CHANGED: usize = FILES - FILES / 10;
/// In a changed file, every tenth chunk is new.
const CHANGED_EVERY: usize = 10;
/// A delta segment spans at most this many chunks (2 MiB of 64 KiB chunks)...
const SEGMENT_CHUNKS: usize = 32;
/// ... and its window this many chunks of the old file around it (8 MiB).
const WINDOW_CHUNKS: usize = 128;
/// Frame lengths of a 64 KiB chunk: plain, delta, and per chunk in a solid frame.
const PLAIN_FRAME: u32 = 24 * 1024;
const DELTA_FRAME: u32 = 1_500;
const SOLID_FRAME_PER_CHUNK: u32 = 22 * 1024;

/// The bytes of chunk `index` of v1 (`version` 1) or of a new chunk of v2 (`version` 2).
fn chunk_bytes(version: u64, index: usize, out: &mut Vec<u8>) {
    let mut state = (version << 40) ^ index as u64;
    for _ in 0..CHUNK_BYTES / 8 {
        out.extend_from_slice(&next(&mut state).to_le_bytes());
    }
}

fn is_new(file: usize, chunk: usize) -> bool {
    file >= FIRST_CHANGED && chunk.is_multiple_of(CHANGED_EVERY)
}

fn file_path(file: usize) -> String {
    format!("d{:02}/f{file:04}.bin", file / (FILES / DIRS))
}

/// One release's files: their bytes and their chunk ids.
struct Files {
    contents: Vec<Vec<u8>>,
    chunks: Vec<Vec<ChunkId>>,
}

fn files(version: u64) -> Files {
    let mut contents = Vec::with_capacity(FILES);
    let mut chunks = Vec::with_capacity(FILES);
    for f in 0..FILES {
        let mut data = Vec::with_capacity(CHUNKS_PER_FILE * CHUNK_BYTES);
        let mut ids = Vec::with_capacity(CHUNKS_PER_FILE);
        for c in 0..CHUNKS_PER_FILE {
            let at = data.len();
            let v = if version == 2 && is_new(f, c) { 2 } else { 1 };
            chunk_bytes(v, f * CHUNKS_PER_FILE + c, &mut data);
            ids.push(ChunkId::of(&data[at..]));
        }
        contents.push(data);
        chunks.push(ids);
    }
    Files { contents, chunks }
}

/// A release's manifest: chunks in file order, one solid frame per file.
fn parts(version: Version, files: &Files) -> ManifestParts {
    let mut chunks = Vec::with_capacity(FILES * CHUNKS_PER_FILE);
    let mut synth = Vec::with_capacity(FILES);
    let mut solid = Vec::with_capacity(FILES);
    for (f, ids) in files.chunks.iter().enumerate() {
        let first = chunks.len() as u32;
        chunks.extend(
            ids.iter()
                .map(|&id| chunk_entry(id, CHUNK_BYTES as u32, PLAIN_FRAME)),
        );
        solid.push(SolidFrame {
            first,
            chunks: ids.len() as u32,
            pack: 0,
            frame_len: SOLID_FRAME_PER_CHUNK * ids.len() as u32,
        });
        synth.push(SynthFile {
            path: file_path(f),
            chunks: (first..chunks.len() as u32).collect(),
            hash: FileHash::of(&files.contents[f]),
        });
    }
    ManifestParts {
        version,
        chunks,
        dirs: (0..DIRS).map(|d| format!("d{d:02}")).collect(),
        files: synth,
        bases: Vec::new(),
        solid,
    }
}

/// v2's delta frames against v1: per changed file, segments of new chunks, each with a window
/// of the old file centred on it (the files keep their length, so positions align).
fn base_on(v1: &TrustedManifest) -> Base {
    let entry_of: std::collections::HashMap<&str, u32> = v1
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, EntryKind::File(_)))
        .map(|(i, e)| (e.path.as_str(), i as u32))
        .collect();
    let mut windows = Vec::new();
    let mut deltas = Vec::new();
    for f in FIRST_CHANGED..FILES {
        let path = file_path(f);
        let entry = entry_of[path.as_str()];
        let new: Vec<usize> = (0..CHUNKS_PER_FILE).filter(|&c| is_new(f, c)).collect();
        // Like the publisher: a segment ends before the chunk that would take it past its size.
        let mut segments: Vec<Vec<usize>> = Vec::new();
        for c in new {
            match segments.last_mut() {
                Some(segment) if c + 1 - segment[0] <= SEGMENT_CHUNKS => segment.push(c),
                _ => segments.push(vec![c]),
            }
        }
        for segment in segments {
            let (start, end) = (segment[0], segment[segment.len() - 1] + 1);
            let centre = (start + end) / 2;
            let from = centre
                .saturating_sub(WINDOW_CHUNKS / 2)
                .min(CHUNKS_PER_FILE - WINDOW_CHUNKS);
            let window = windows.len() as u32;
            windows.push(Window {
                entry,
                offset: (from * CHUNK_BYTES) as u64,
                len: (WINDOW_CHUNKS * CHUNK_BYTES) as u32,
            });
            deltas.extend(segment.iter().map(|&c| Delta {
                chunk: (f * CHUNKS_PER_FILE + c) as u32,
                window,
                pack: 0,
                frame_len: DELTA_FRAME,
                codec: DeltaCodec::Zstd,
            }));
        }
    }
    Base {
        manifest: v1.id(),
        version: v1.version.clone(),
        windows,
        deltas,
        refs: Vec::new(),
    }
}

fn write_tree(root: &Path, files: &Files) {
    for (f, data) in files.contents.iter().enumerate() {
        let path = root.join(file_path(f));
        fs::create_dir_all(path.parent().expect("a parent")).expect("creating a directory");
        fs::write(&path, data).expect("writing an installed file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    }
}

/// Two installs of v2's target: one with v1 installed, one empty.
struct Scenario {
    target: TrustedManifest,
    installed: Release,
    update: (InstallLayout, Store),
    fresh: (InstallLayout, Store),
    /// Removed last, after the stores are closed.
    _dirs: [tempfile::TempDir; 2],
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    eprintln!("plan setup: {what}: {:.2} s", start.elapsed().as_secs_f64());
    out
}

fn scenario() -> Scenario {
    let key = SecretKey::generate().expect("a key");
    let (old, new) = timed("generating 2 x 1M chunks", || (files(1), files(2)));
    let v1 = timed("building, sealing and opening v1", || {
        common::seal(&parts(Version::new(1, 0, 0), &old).build(), &key)
    });
    let target = timed("building, sealing and opening v2", || {
        let mut v2 = parts(Version::new(2, 0, 0), &new);
        v2.bases.push(base_on(&v1));
        common::seal(&v2.build(), &key)
    });
    eprintln!(
        "plan setup: v2 manifest envelope {:.1} MiB, {} chunks, {} delta frames",
        target.bytes().len() as f64 / (1 << 20) as f64,
        target.chunks.len(),
        target.bases[0].deltas.len(),
    );

    let update_dir = scratch_dir("relsync-bench-plan-update");
    let layout = InstallLayout::new(update_dir.path());
    let dir = format!("1.0.0-{}", v1.id().short());
    timed("writing v1's 2,000 files", || {
        write_tree(&layout.release(&dir), &old)
    });
    fs::create_dir_all(layout.state()).expect("creating the state dir");
    std::os::unix::fs::symlink(format!("releases/{dir}"), layout.current())
        .expect("pointing current at v1");
    let store = Store::open(&layout.db()).expect("creating the store");
    store.add_release(&dir, &v1).expect("recording v1");
    timed("set_installed(v1): indexing 1M chunk locations", || {
        store.set_installed(&dir, None).expect("installing v1")
    });

    let fresh_dir = scratch_dir("relsync-bench-plan-fresh");
    let fresh = InstallLayout::new(fresh_dir.path());
    fs::create_dir_all(fresh.state()).expect("creating the state dir");
    let fresh_store = Store::open(&fresh.db()).expect("creating the store");

    Scenario {
        target,
        installed: Release { dir, manifest: v1 },
        update: (layout, store),
        fresh: (fresh, fresh_store),
        _dirs: [update_dir, fresh_dir],
    }
}

/// The check stage's output for one of the installs: the target and the installed release.
type Inputs = (TrustedManifest, Option<Release>);

fn inputs(s: &Scenario, installed: bool) -> Inputs {
    (s.target.clone(), installed.then(|| s.installed.clone()))
}

fn run(s: &Scenario, (target, installed): Inputs) -> Planned {
    let (layout, store) = if installed.is_some() {
        &s.update
    } else {
        &s.fresh
    };
    relsync_engine::dangerous::plan(
        target,
        installed,
        None,
        layout,
        store,
        &FetchConfig::default(),
    )
    .expect("planning")
}

/// Runs one plan outside criterion: checks its totals and reports time and peak memory.
fn check_once(s: &Scenario, installed: bool) {
    let name = if installed { "update" } else { "fresh_install" };
    let inputs = inputs(s, installed);
    let before = rss_mib().map_or(0.0, |(_, now)| now);
    reset_peak_rss();
    let start = Instant::now();
    let planned = run(s, inputs);
    let elapsed = start.elapsed().as_secs_f64();
    let peak = rss_mib().map_or(0.0, |(peak, _)| peak);
    let t: &PlanTotals = &planned.plan().totals;
    eprintln!(
        "plan {name}: {elapsed:.2} s, RSS {before:.0} MiB before, peak {peak:.0} MiB \
         (+{:.0}); linked {} files, wrote {}, reused {} chunks, fetching {} ({} as deltas, \
         {} solid frames) in {} requests, {:.1} MiB",
        peak - before,
        t.files_linked,
        t.files_written,
        t.chunks_reused,
        t.chunks_fetched,
        t.chunks_delta,
        t.solid_frames,
        t.requests,
        t.bytes_to_fetch as f64 / (1 << 20) as f64,
    );
    let changed = (FILES - FIRST_CHANGED) * CHUNKS_PER_FILE;
    if installed {
        assert_eq!(t.files_linked, FIRST_CHANGED as u64);
        assert_eq!(t.chunks_reused, (changed - changed / CHANGED_EVERY) as u64);
        assert_eq!(t.chunks_delta, (changed / CHANGED_EVERY) as u64);
    } else {
        assert_eq!(t.chunks_fetched, (FILES * CHUNKS_PER_FILE) as u64);
        assert_eq!(t.solid_frames, FILES as u64);
    }
}

fn plan(c: &mut Criterion) {
    let s = scenario();
    check_once(&s, true);
    check_once(&s, false);

    let mut group = c.benchmark_group("plan_1M_chunks");
    group.sampling_mode(SamplingMode::Flat);
    // The inputs are cloned and the plan dropped outside the timed part.
    for (name, installed) in [("update", true), ("fresh_install", false)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || inputs(&s, installed),
                |inputs| run(&s, inputs),
                BatchSize::PerIteration,
            )
        });
    }
    let bytes = s.target.bytes().to_vec();
    group.bench_function("open_manifest", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| relsync_engine::dangerous::trusted_manifest(bytes).expect("a valid manifest"),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("store_current", |b| {
        b.iter(|| s.update.1.current().expect("reading").expect("v1"))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config(Duration::from_secs(5));
    targets = plan
}
criterion_main!(benches);
