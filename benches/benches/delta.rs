//! Delta and solid frame micro-benchmarks: 64 KiB chunks compressed against an 8 MiB window of
//! the old release (a raw-content zstd dictionary), and an 8 MiB run of chunks as one solid
//! frame.
//!
//! The same chunks are also framed as bsdiff: bidiff's instructions against the window.
//!
//! `cargo bench -p relsync-benches --bench delta` (about two minutes on 2 cores).
//!
//! The new chunks are old bytes with a 4-byte change every ~200 bytes, like the shifted
//! pointers of a recompiled binary. Decoding (and copying each window once) is what clients
//! pay; building a window's match tables (once per 2 MiB segment) and encoding are what the
//! publisher pays.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{KIB, MIB, next, semi_compressible};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use relsync_chunker::frame::{self, BsdiffOp, SolidDecoder, WindowDecoder, WindowEncoder};

const WINDOW: usize = 8 * MIB;
const CHUNK: usize = 64 * KIB;
/// New chunks per iteration, from different parts of the window's middle.
const CHUNKS: usize = 8;
/// Level 19 is the publisher's default; 9 is its documented fast setting; 3 is zstd's default.
const LEVELS: [i32; 3] = [3, 9, 19];
const SOLID: usize = 8 * MIB;

/// The old release's bytes around the aligned position.
fn old_window() -> Vec<u8> {
    let mut window = semi_compressible(WINDOW, 11);
    if window.starts_with(&frame::DICTIONARY_MAGIC) {
        window[0] ^= 1;
    }
    window
}

/// The old bytes at `at` with a 4-byte change every 150-250 bytes: pointers and offsets
/// shifted by one of a few relocation distances.
fn recompiled(old: &[u8], at: usize, seed: u64) -> Vec<u8> {
    const SHIFTS: [u32; 4] = [0x40, 0x1c0, 0x2a8, 0x1000];
    let mut new = old[at..at + CHUNK].to_vec();
    let mut state = seed;
    let mut pos = 0;
    loop {
        let r = next(&mut state);
        pos += 150 + (r % 101) as usize;
        let Some(field) = new.get_mut(pos..pos + 4) else {
            break;
        };
        let value = u32::from_le_bytes(field.try_into().expect("4 bytes"));
        let shifted = value.wrapping_add(SHIFTS[(r >> 32) as usize % SHIFTS.len()]);
        field.copy_from_slice(&shifted.to_le_bytes());
    }
    new
}

/// [`CHUNKS`] new chunks from the middle 2 MiB of the window (a segment's chunks are there).
fn new_chunks(old: &[u8]) -> Vec<Vec<u8>> {
    (0..CHUNKS)
        .map(|i| recompiled(old, 3 * MIB + i * 256 * KIB + 977, 100 + i as u64))
        .collect()
}

/// A fresh encoder for `window` and its first frame, which builds the window's match tables.
fn first_frame(window: &[u8], chunk: &[u8], level: i32) -> Vec<u8> {
    let mut encoder = WindowEncoder::new(black_box(window), level).expect("preparing the window");
    encoder.compress(black_box(chunk)).expect("delta frame")
}

fn delta(c: &mut Criterion) {
    let old = old_window();
    let chunks = new_chunks(&old);
    let total = (CHUNKS * CHUNK) as u64;
    let decoder = WindowDecoder::new(old.clone());

    let mut group = c.benchmark_group("delta_64KiB_window_8MiB");
    group.throughput(Throughput::Bytes(total));
    group.sampling_mode(SamplingMode::Flat);
    for level in LEVELS {
        let start = Instant::now();
        first_frame(&old, &chunks[0], level);
        eprintln!(
            "delta l{level}: window tables + first frame {:.3} s (once)",
            start.elapsed().as_secs_f64()
        );
        let mut encoder = WindowEncoder::new(&old, level).expect("preparing the window");
        let frames: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| encoder.compress(c).expect("delta frame"))
            .collect();
        let plain: usize = chunks
            .iter()
            .map(|c| frame::compress(c, level).expect("plain frame").len())
            .sum();
        let delta: usize = frames.iter().map(Vec::len).sum();
        eprintln!(
            "delta l{level}: {CHUNKS} x 64 KiB -> {delta} B in delta frames ({:.2}%), \
             {plain} B in plain frames ({:.2}%)",
            100.0 * delta as f64 / total as f64,
            100.0 * plain as f64 / total as f64,
        );
        for (frame, chunk) in frames.iter().zip(&chunks) {
            let back = decoder.decompress(frame, chunk.len()).expect("decoding");
            assert!(back == *chunk, "a delta frame decoded to other bytes");
        }
        group.bench_function(format!("encode_l{level}"), |b| {
            b.iter(|| {
                for chunk in &chunks {
                    black_box(encoder.compress(black_box(chunk)).expect("delta frame"));
                }
            })
        });
        group.bench_function(format!("decode_l{level}"), |b| {
            b.iter(|| {
                for frame in &frames {
                    black_box(
                        decoder
                            .decompress(black_box(frame), CHUNK)
                            .expect("decoding"),
                    );
                }
            })
        });
    }
    // The same chunks as plain level-19 frames, for comparison.
    let plain: Vec<Vec<u8>> = chunks
        .iter()
        .map(|c| frame::compress(c, 19).expect("plain frame"))
        .collect();
    group.bench_function("plain_decode_l19", |b| {
        b.iter(|| {
            for frame in &plain {
                black_box(frame::decompress(black_box(frame), CHUNK).expect("decoding"));
            }
        })
    });
    group.finish();

    // Once per window the publisher builds its match tables (zstd does so lazily, on the
    // first frame, so this is `new` plus the first frame); a client only reads the window,
    // which frames reference in place. At level 19 that takes seconds, so it is timed once
    // above instead.
    let mut group = c.benchmark_group("delta_window_8MiB");
    group.throughput(Throughput::Bytes(WINDOW as u64));
    group.sampling_mode(SamplingMode::Flat);
    for level in LEVELS.into_iter().filter(|&l| l < 19) {
        group.bench_function(format!("encoder_first_frame_l{level}"), |b| {
            b.iter(|| first_frame(&old, &chunks[0], level))
        });
    }
    group.finish();
}

/// bidiff's instructions for `new` against `window`, as the publisher gets them per segment.
fn bsdiff_ops(window: &[u8], new: &[u8]) -> Vec<BsdiffOp> {
    let mut ops = Vec::new();
    bidiff::diff(window, new, &bidiff::DiffParams::default(), |m| {
        ops.push(BsdiffOp {
            src: m.add_old_start as u64,
            add: m.add_length as u64,
            copy: (m.copy_end - m.copy_start()) as u64,
        });
        Ok::<_, std::io::Error>(())
    })
    .expect("bidiff");
    ops
}

/// The delta chunks as one 512 KiB segment matched once, framed chunk by chunk at level 19.
fn bsdiff(c: &mut Criterion) {
    let old = old_window();
    let chunks = new_chunks(&old);
    let segment = chunks.concat();
    let start = Instant::now();
    let ops = bsdiff_ops(&old, &segment);
    eprintln!(
        "bsdiff: bidiff of a 512 KiB segment against the 8 MiB window {:.2} s (once)",
        start.elapsed().as_secs_f64()
    );
    let mut encoder = WindowEncoder::new(&old, 19).expect("preparing the window");
    let decoder = WindowDecoder::new(old.clone());
    let frames: Vec<Vec<u8>> = (0..CHUNKS)
        .map(|i| {
            let (from, to) = ((i * CHUNK) as u64, ((i + 1) * CHUNK) as u64);
            let ops = frame::slice_ops(&ops, from, to);
            let frame = encoder
                .compress_bsdiff(&chunks[i], &ops)
                .expect("bsdiff frame");
            frame.expect("instructions within the control limit")
        })
        .collect();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let zstd: usize = chunks
        .iter()
        .map(|c| encoder.compress(c).expect("delta frame").len())
        .sum();
    eprintln!(
        "bsdiff l19: {CHUNKS} x 64 KiB -> {bytes} B in bsdiff frames ({:.2}%), {zstd} B in \
         zstd delta frames",
        100.0 * bytes as f64 / segment.len() as f64
    );
    for (frame, chunk) in frames.iter().zip(&chunks) {
        let back = decoder.decompress_bsdiff(frame, CHUNK).expect("decoding");
        assert!(back == *chunk, "a bsdiff frame decoded to other bytes");
    }
    let mut group = c.benchmark_group("bsdiff_64KiB_window_8MiB");
    group.throughput(Throughput::Bytes(segment.len() as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("decode_l19", |b| {
        b.iter(|| {
            for frame in &frames {
                black_box(
                    decoder
                        .decompress_bsdiff(black_box(frame), CHUNK)
                        .expect("decoding"),
                );
            }
        })
    });
    group.finish();
}

/// Decodes a solid frame as a client does: fed as it streams in, output handed on in pieces.
fn decode_solid(frame: &[u8], len: usize) -> usize {
    let mut decoder = SolidDecoder::new(len as u64).expect("solid decoder");
    let mut out = 0;
    for piece in frame.chunks(64 * KIB) {
        decoder
            .push::<relsync_chunker::Error>(piece, |d| {
                out += black_box(d).len();
                Ok(())
            })
            .expect("decoding the solid frame");
    }
    decoder.finish().expect("a whole solid frame");
    out
}

fn solid(c: &mut Criterion) {
    let data = semi_compressible(SOLID, 12);
    let mut group = c.benchmark_group("solid_8MiB");
    group.throughput(Throughput::Bytes(SOLID as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("compress_l3", |b| {
        b.iter(|| frame::compress_solid(black_box(&data), 3).expect("solid frame"))
    });
    // Level 19 takes seconds per 8 MiB, so it is compressed once, not measured.
    for level in [3, 19] {
        let packed = frame::compress_solid(&data, level).expect("solid frame");
        eprintln!(
            "solid l{level}: 8 MiB -> {} B ({:.1}%)",
            packed.len(),
            100.0 * packed.len() as f64 / SOLID as f64
        );
        assert_eq!(decode_solid(&packed, SOLID), SOLID);
        group.bench_function(format!("decode_l{level}"), |b| {
            b.iter(|| decode_solid(black_box(&packed), SOLID))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config(Duration::from_secs(2));
    targets = delta, bsdiff, solid
}
criterion_main!(benches);
