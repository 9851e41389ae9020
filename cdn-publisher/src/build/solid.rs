//! Solid frames: runs of consecutive chunks compressed as one frame, for cold data.
//!
//! Independent per-chunk frames cost about 28% more than compressing a release whole, because
//! each starts with an empty history. A client that needs most of a run of chunks (a fresh
//! install, or a client with no usable delta base) fetches the run's solid frame instead.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;
use relsync_chunker::frame;
use relsync_format::manifest::{ChunkEntry, SolidFrame};

use super::pack::PackWriter;
use super::timing::{self, Work};

/// Runs compressed in parallel at once (each holds its run and a zstd context in memory).
const RUNS_PER_BATCH: usize = 2;

/// Where a unique chunk's bytes are: a file of the release and an offset.
pub type ChunkSource<'a> = (&'a Path, u64);

/// Compresses the chunk table in runs of at most `run_bytes` and appends the frames to `packs`.
pub fn encode(
    chunks: &[ChunkEntry],
    sources: &[ChunkSource<'_>],
    run_bytes: u64,
    level: i32,
    packs: &mut PackWriter<'_>,
) -> Result<Vec<SolidFrame>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, chunk) in chunks.iter().enumerate() {
        if bytes > 0 && bytes + u64::from(chunk.len) > run_bytes {
            runs.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += u64::from(chunk.len);
    }
    if start < chunks.len() {
        runs.push(start..chunks.len());
    }
    let mut out = Vec::with_capacity(runs.len());
    for batch in runs.chunks(RUNS_PER_BATCH) {
        let frames: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|run| {
                let mut data = Vec::new();
                for i in run.clone() {
                    let (path, offset) = sources[i];
                    let len = chunks[i].len as usize;
                    let at = data.len();
                    data.resize(at + len, 0);
                    File::open(path)
                        .and_then(|f| f.read_exact_at(&mut data[at..], offset))
                        .with_context(|| format!("reading {}", path.display()))?;
                }
                Ok(timing::time(Work::SolidFrames, || {
                    frame::compress_solid(&data, level)
                })?)
            })
            .collect::<Result<_>>()?;
        for (run, frame) in batch.iter().zip(frames) {
            let plain: u64 = chunks[run.clone()]
                .iter()
                .map(|c| u64::from(c.frame_len))
                .sum();
            // A run whose chunks do not compress better together is left out; clients then
            // use the plain frames.
            let (pack, frame_len) = if (frame.len() as u64) < plain {
                (packs.append(&frame)?, frame.len() as u32)
            } else {
                continue;
            };
            out.push(SolidFrame {
                first: run.start as u32,
                chunks: run.len() as u32,
                pack,
                frame_len,
            });
        }
    }
    Ok(out)
}
