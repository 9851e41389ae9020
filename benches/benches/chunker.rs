//! Chunker micro-benchmarks: FastCDC boundaries, BLAKE3 ids and zstd frames.
//!
//! `cargo bench -p relsync-benches --bench chunker` (about a minute on 2 cores).

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relsync_chunker::{ChunkId, ChunkParams, Chunker, chunk_slice, frame};

mod common;
use common::{random, semi_compressible};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn chunking(c: &mut Criterion) {
    let data = random(16 * MIB, 1);
    let params = ChunkParams::default();
    let mut group = c.benchmark_group("chunking_16MiB_default");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("chunk_slice", |b| {
        b.iter(|| chunk_slice(black_box(&data), params).unwrap())
    });
    group.bench_function("chunker_stream", |b| {
        b.iter(|| {
            Chunker::new(Cursor::new(black_box(&data)), params)
                .unwrap()
                .map(|c| c.unwrap().data.len())
                .sum::<usize>()
        })
    });
    group.bench_function("chunker_stream_hash", |b| {
        b.iter(|| {
            Chunker::new(Cursor::new(black_box(&data)), params)
                .unwrap()
                .map(|c| c.unwrap().to_chunk())
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let chunk = random(64 * KIB, 2);
    let mut group = c.benchmark_group("hash_64KiB");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("blake3", |b| b.iter(|| ChunkId::of(black_box(&chunk))));
    group.finish();
}

fn frames(c: &mut Criterion) {
    let chunk = semi_compressible(64 * KIB, 3);
    let mut group = c.benchmark_group("frame_64KiB");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    for level in [3, 19] {
        group.bench_function(format!("compress_l{level}"), |b| {
            b.iter(|| frame::compress(black_box(&chunk), level).unwrap())
        });
    }
    for level in [3, 19] {
        let packed = frame::compress(&chunk, level).unwrap();
        group.bench_function(format!("decompress_l{level}"), |b| {
            b.iter(|| frame::decompress(black_box(&packed), chunk.len()).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config(Duration::from_secs(2));
    targets = chunking, hashing, frames
}
criterion_main!(benches);
