//! Solid frames: runs of consecutive chunks compressed as one frame, for cold data.
//!
//! Independent per-chunk frames cost about 28% more than compressing a release whole, because
//! each starts with an empty history. A client that needs most of a run of chunks (a fresh
//! install, or a client with no usable delta base) fetches the run's solid frame instead.
//! Runs that did not change since the parent release keep the parent's frames.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;
use relsync_chunker::frame;
use relsync_format::manifest::{ChunkEntry, SolidFrame};

use super::pack::PackWriter;
use super::reuse::Reuse;
use super::timing::{self, Work};

/// Runs compressed in parallel at once (each holds its run and a zstd context in memory).
const RUNS_PER_BATCH: usize = 2;

/// Where a unique chunk's bytes are: a file of the release and an offset.
pub type ChunkSource<'a> = (&'a Path, u64);

/// A run of the chunk table and where its solid frame comes from.
#[derive(Debug, Clone)]
enum Run {
    /// Compressed now.
    New(Range<usize>),
    /// The parent's solid frame of the same chunks.
    Reused(Range<usize>),
}

impl Run {
    fn range(&self) -> &Range<usize> {
        match self {
            Run::New(r) | Run::Reused(r) => r,
        }
    }
}

/// Solid frames of a release.
#[derive(Debug, Default)]
pub struct Solid {
    pub frames: Vec<SolidFrame>,
    /// How many of them were copied from the parent release.
    pub reused: u64,
}

/// Compresses the chunk table in runs of at most `run_bytes` and appends the frames to `packs`.
/// A run that the parent (`reuse`) has a solid frame of keeps that frame; new runs end where
/// such a run starts, so the runs after a change line up with the parent's again.
pub fn encode(
    chunks: &[ChunkEntry],
    sources: &[ChunkSource<'_>],
    run_bytes: u64,
    level: i32,
    reuse: Option<&Reuse<'_>>,
    packs: &mut PackWriter<'_>,
) -> Result<Solid> {
    let runs = plan(chunks, run_bytes, reuse);
    let mut out = Solid::default();
    for batch in runs.chunks(RUNS_PER_BATCH) {
        let frames: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|run| match (run, reuse) {
                (Run::Reused(range), Some(reuse)) => timing::time(Work::SolidReused, || {
                    reuse.solid_frame(&chunks[range.clone()])
                })?
                .context("internal: the parent lost a solid frame"),
                (run, _) => compress(chunks, sources, run.range().clone(), level),
            })
            .collect::<Result<_>>()?;
        for (planned, frame) in batch.iter().zip(frames) {
            let run = planned.range();
            let plain: u64 = chunks[run.clone()]
                .iter()
                .map(|c| u64::from(c.frame_len))
                .sum();
            // A run whose chunks do not compress better together is left out; clients then
            // use the plain frames.
            if frame.len() as u64 >= plain {
                continue;
            }
            out.reused += u64::from(matches!(planned, Run::Reused(_)));
            out.frames.push(SolidFrame {
                first: run.start as u32,
                chunks: run.len() as u32,
                pack: packs.append(&frame)?,
                frame_len: frame.len() as u32,
            });
        }
    }
    Ok(out)
}

/// Cuts the chunk table into runs: the parent's runs where all their chunks are here in the
/// same order, and new runs of at most `run_bytes` between them.
fn plan(chunks: &[ChunkEntry], run_bytes: u64, reuse: Option<&Reuse<'_>>) -> Vec<Run> {
    let mut runs = Vec::new();
    let (mut start, mut bytes, mut i) = (0, 0u64, 0);
    while i < chunks.len() {
        let reused = reuse.and_then(|r| r.solid_run(&chunks[i..]));
        if let Some(len) = reused {
            if start < i {
                runs.push(Run::New(start..i));
            }
            runs.push(Run::Reused(i..i + len));
            i += len;
            (start, bytes) = (i, 0);
            continue;
        }
        let len = u64::from(chunks[i].len);
        if bytes > 0 && bytes + len > run_bytes {
            runs.push(Run::New(start..i));
            (start, bytes) = (i, 0);
        }
        bytes += len;
        i += 1;
    }
    if start < chunks.len() {
        runs.push(Run::New(start..chunks.len()));
    }
    runs
}

/// The solid frame of chunks `run`, read from the release's files.
fn compress(
    chunks: &[ChunkEntry],
    sources: &[ChunkSource<'_>],
    run: Range<usize>,
    level: i32,
) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    for i in run {
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
}
