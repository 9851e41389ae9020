//! Store micro-benchmarks: the install's redb database (engine/src/store.rs) on disk, holding two
//! releases of 2,000 files and 20,000 chunks each (a ~1.3 GB app at 64 KiB chunks) that
//! share 90% of their chunks, as after an update.
//!
//! `cargo bench -p relsync-benches --bench store` (about a minute on 2 cores).
//!
//! Commits are durable (redb fsyncs), so write timings depend on the disk. The database lives
//! under cargo's target tmp dir, on disk even where `/tmp` is a tmpfs.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{ManifestParts, SynthFile, chunk_entry, next, scratch_dir, seal};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use relsync_chunker::ChunkId;
use relsync_engine::{FileHash, ManifestId, SecretKey, Store};
use semver::Version;

const DIRS: usize = 20;
const FILES: usize = 2_000;
const CHUNKS_PER_FILE: usize = 10;
/// One chunk in ten differs between the releases.
const CHANGED_EVERY: usize = 10;
/// Lookups per iteration of the `locate` benches.
const LOOKUPS: usize = 1_000;
/// Chunks a fetch records per range request (8 MiB of 64 KiB chunks).
const JOURNAL_BATCH: usize = 128;

const OLD: &str = "1.0.0-0000000000000001";
const NEW: &str = "1.1.0-0000000000000002";

fn chunk_id(release: u64, index: usize) -> ChunkId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&release.to_le_bytes());
    bytes[8..].copy_from_slice(&(index as u64).to_le_bytes());
    ChunkId::of(&bytes)
}

/// A release of [`FILES`] files; with `changed`, every [`CHANGED_EVERY`]th chunk is new.
fn release(version: Version, changed: bool) -> ManifestParts {
    let mut state = 7;
    let mut chunks = Vec::with_capacity(FILES * CHUNKS_PER_FILE);
    let mut files = Vec::with_capacity(FILES);
    for f in 0..FILES {
        let first = chunks.len() as u32;
        for c in 0..CHUNKS_PER_FILE {
            let index = f * CHUNKS_PER_FILE + c;
            let len = 16 * 1024 + (next(&mut state) % (96 * 1024)) as u32;
            let id = if changed && index.is_multiple_of(CHANGED_EVERY) {
                chunk_id(2, index)
            } else {
                chunk_id(1, index)
            };
            chunks.push(chunk_entry(id, len, len / 3 + 1));
        }
        files.push(SynthFile {
            path: format!("d{:02}/f{f:04}.bin", f / (FILES / DIRS)),
            chunks: (first..chunks.len() as u32).collect(),
            hash: FileHash::of(&(f as u64 + u64::from(changed)).to_le_bytes()),
        });
    }
    ManifestParts {
        version,
        chunks,
        dirs: (0..DIRS).map(|d| format!("d{d:02}")).collect(),
        files,
        bases: Vec::new(),
        solid: Vec::new(),
    }
}

fn store(c: &mut Criterion) {
    let key = SecretKey::generate().expect("a key");
    let old = seal(&release(Version::new(1, 0, 0), false).build(), &key);
    let new = seal(&release(Version::new(1, 1, 0), true).build(), &key);
    let dir = scratch_dir("relsync-bench-store");
    let db = dir.path().join("state.redb");
    {
        let store = Store::open(&db).expect("creating the store");
        store.add_release(OLD, &old).expect("recording a release");
        store.add_release(NEW, &new).expect("recording a release");
        store.set_installed(NEW, Some(OLD)).expect("installing");
    }

    let mut group = c.benchmark_group("store_2k_files_20k_chunks");
    group.sampling_mode(SamplingMode::Flat);
    // Opening (a write transaction that makes sure the tables exist) is paid by every command.
    group.bench_function("open", |b| {
        b.iter(|| Store::open(black_box(&db)).expect("opening the store"))
    });

    let store = Store::open(&db).expect("opening the store");
    let stats = store.stats().expect("stats");
    eprintln!(
        "store: {} releases, {} chunk locations, manifest envelope {} KiB, db {} KiB",
        stats.releases,
        stats.chunk_locations,
        new.bytes().len() / 1024,
        std::fs::metadata(&db).map_or(0, |m| m.len() / 1024),
    );
    group.bench_function("add_release", |b| {
        b.iter(|| store.add_release(NEW, black_box(&new)).expect("recording"))
    });
    // Apply: forget other releases, re-index both releases' chunk locations, clear the journal.
    group.bench_function("set_installed", |b| {
        b.iter(|| store.set_installed(NEW, Some(OLD)).expect("installing"))
    });
    // Check reads the installed releases back (decode and validate their manifests).
    group.bench_function("current", |b| {
        b.iter(|| store.current().expect("reading").expect("a release"))
    });
    group.bench_function("stats", |b| b.iter(|| store.stats().expect("stats")));

    let hits: Vec<ChunkId> = new.chunks.iter().map(|c| c.id).collect();
    let misses: Vec<ChunkId> = (0..LOOKUPS).map(|i| chunk_id(3, i)).collect();
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    let mut at = 0;
    // Plan looks up every needed chunk, one read transaction each.
    group.bench_function("locate_hit_x1000", |b| {
        b.iter(|| {
            for _ in 0..LOOKUPS {
                at = (at + 7919) % hits.len();
                black_box(store.locate(&hits[at]).expect("lookup").expect("a hit"));
            }
        })
    });
    group.bench_function("locate_miss_x1000", |b| {
        b.iter(|| {
            for id in &misses {
                assert!(store.locate(black_box(id)).expect("lookup").is_none());
            }
        })
    });

    // Fetch records the chunks of each range request once they are stored.
    let batch: Vec<ChunkId> = (0..JOURNAL_BATCH).map(|i| chunk_id(4, i)).collect();
    let manifest = ManifestId::of(b"bench");
    group.throughput(Throughput::Elements(JOURNAL_BATCH as u64));
    group.bench_function("journal_add_x128", |b| {
        b.iter(|| {
            store
                .journal_add(black_box(&batch), &manifest)
                .expect("journal")
        })
    });
    group.finish();
    drop(store);
    report_memory();
}

fn report_memory() {
    if let Some((peak, now)) = common::rss_mib() {
        eprintln!("store: peak RSS {peak:.0} MiB, now {now:.0} MiB");
    }
}

criterion_group! {
    name = benches;
    config = common::criterion_config(Duration::from_secs(2));
    targets = store
}
criterion_main!(benches);
