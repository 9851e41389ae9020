//! Delta frames of an executable with its references projected (issue 20).
//!
//! For an x86-64 ELF file whose base is one too, the file's segments are matched twice. The
//! first match (plain bsdiff) pairs old and new references; their votes give each old target
//! its shift (the labels). The second match runs on copies of both files in which every
//! reference holds its target, so moved code no longer breaks matches. Each chunk is then
//! also encoded as a [`DeltaCodec::BsdiffRefs`] frame, and the file's reference map (new
//! layout and labels) is kept only if the chunks that use it save more than it costs.

use std::sync::Arc;

use anyhow::{Context, Result};
use rayon::prelude::*;
use relsync_chunker::ChunkId;
use relsync_chunker::frame::refs::{OldRefs, Projection, Votes, elf::Elf, encode_side};
use relsync_chunker::frame::{BsdiffOp, WindowDecoder};
use relsync_format::manifest::{ChunkEntry, DeltaCodec, RefContext};

use super::codec::{Prepared, Projected, SegmentEncoder, bsdiff_ops};
use super::{BaseRelease, DeltaParams, Encoded, MIN_SAVING_BYTES, Segment, window_start};
use crate::build::timing::{self, Work};

/// A reference map is kept only if its chunks save at least this much beyond its own size.
const MIN_MAP_SAVING_BYTES: usize = 256;

/// One executable's delta frames, and its reference map if they use one.
pub struct FileFrames {
    /// Per segment: the window used and the frames.
    pub segments: Vec<Encoded>,
    /// The reference map's frame, if any frame needs it.
    pub map: Option<Vec<u8>>,
}

/// Encodes `segments` (all of one file, in order) with reference projection, or `None` if
/// the file or its base is not an x86-64 ELF image. `map` is the index the file's reference
/// map will have in its base.
pub fn encode_file(
    base: &BaseRelease<'_>,
    segments_in: &[&Segment],
    chunks: &[ChunkEntry],
    params: DeltaParams,
    map: u32,
) -> Result<Option<FileFrames>> {
    let segments = segments_in;
    let Some(first) = segments.first() else {
        return Ok(None);
    };
    let new = std::fs::read(&first.new_path)
        .with_context(|| format!("reading {}", first.new_path.display()))?;
    let Some(layout) = Elf::parse(&new).map(|elf| elf.layout()) else {
        return Ok(None);
    };
    let old = timing::time(Work::BaseRead, || {
        base.read(first.base_entry, 0, base.file_len(first.base_entry))
    })?;
    let Some(old_refs) = timing::time(Work::RefsPrepare, || OldRefs::scan(&old)) else {
        return Ok(None);
    };
    let spans: Vec<Span> = segments.iter().map(|s| Span::of(s, &old, chunks)).collect();
    // First match: plain bsdiff, whose aligned references vote for the labels.
    let plain_ops: Vec<Vec<BsdiffOp>> = spans
        .par_iter()
        .map(|span| {
            timing::time(Work::Bidiff, || {
                bsdiff_ops(span.window(&old), span.segment(&new), params.exact_matches)
            })
        })
        .collect();
    let prepare = timing::Timed::new(Work::RefsPrepare);
    let mut votes = Votes::new(&old_refs, &layout);
    for (span, ops) in spans.iter().zip(&plain_ops) {
        votes.add(
            span.window(&old),
            span.window_at,
            ops,
            span.segment(&new),
            span.first,
        );
    }
    let labels = votes.labels();
    let side = encode_side(&layout, &labels, params.zstd_level)?;
    // Second match, on copies holding targets instead of fields.
    let old_targets = old_refs.substitute(&old, |t| t);
    let projection = Arc::new(Projection::new(old_refs, layout, &labels)?);
    let new_targets = match OldRefs::scan(&new) {
        Some(new_refs) => projection.substitute_new(&new_refs, &new),
        None => new.clone(),
    };
    drop(prepare);
    let encoded: Vec<SegmentFrames> = segments
        .par_iter()
        .zip(spans.par_iter())
        .zip(plain_ops.into_par_iter())
        .map(|((segment, span), plain)| {
            let realigned = timing::time(Work::BidiffProjected, || {
                bsdiff_ops(
                    span.window(&old_targets),
                    span.segment(&new_targets),
                    params.exact_matches,
                )
            });
            let prepared = Prepared {
                ops: Some(plain),
                refs: Some(Projected {
                    projection: projection.clone(),
                    map,
                    ops: realigned,
                    window_at: span.window_at,
                    segment_at: span.first,
                }),
            };
            encode_segment(segment, span, &old, &new, chunks, params, prepared)
        })
        .collect::<Result<_>>()?;
    let saving: usize = encoded.iter().map(|(_, saving)| saving).sum();
    let use_map = saving > side.len() + MIN_MAP_SAVING_BYTES;
    let segments = encoded
        .into_iter()
        .map(|((at, len, frames), _)| {
            let frames = frames.into_iter().filter_map(|f| f.pick(use_map)).collect();
            (at, len, frames)
        })
        .collect::<Vec<_>>();
    if use_map {
        check_decodes(
            segments_in,
            &encoded_frames(&segments),
            &spans,
            &old,
            chunks,
            &side,
        )?;
    }
    Ok(Some(FileFrames {
        segments,
        map: use_map.then_some(side),
    }))
}

/// Where a segment's window and new bytes are in the whole files.
struct Span {
    window_at: u64,
    window_len: u64,
    /// The segment's first new byte.
    first: u64,
    /// Past its last new byte.
    end: u64,
}

impl Span {
    fn of(segment: &Segment, old: &[u8], chunks: &[ChunkEntry]) -> Self {
        let (start, len) = segment.window;
        let window_at = window_start(old, start, 0);
        let window_len = len - (window_at - start);
        let first = segment.chunks.first().map_or(0, |&(_, at)| at);
        let end = segment.chunks.last().map_or(first, |&(index, at)| {
            at + u64::from(chunks[index as usize].len)
        });
        Self {
            window_at,
            window_len,
            first,
            end,
        }
    }

    fn window<'b>(&self, old: &'b [u8]) -> &'b [u8] {
        &old[self.window_at as usize..(self.window_at + self.window_len) as usize]
    }

    fn segment<'b>(&self, new: &'b [u8]) -> &'b [u8] {
        &new[self.first as usize..self.end as usize]
    }
}

/// A chunk's smallest frame that needs the reference map, and its smallest other frame.
pub struct Candidates {
    pub chunk: u32,
    refs: Option<(DeltaCodec, Vec<u8>)>,
    other: Option<(DeltaCodec, Vec<u8>)>,
}

impl Candidates {
    /// The frame to publish, with or without the reference map.
    fn pick(self, use_map: bool) -> Option<(u32, DeltaCodec, Vec<u8>)> {
        let refs = self.refs.filter(|_| use_map);
        let best = match (refs, self.other) {
            (Some(r), Some(o)) => Some(if r.1.len() < o.1.len() { r } else { o }),
            (r, o) => r.or(o),
        };
        best.map(|(codec, frame)| (self.chunk, codec, frame))
    }
}

type SegmentFrames = ((u64, u64, Vec<Candidates>), usize);

/// Every codec's frames of one segment's chunks, and what the projected ones save.
fn encode_segment(
    segment: &Segment,
    span: &Span,
    old: &[u8],
    new: &[u8],
    chunks: &[ChunkEntry],
    params: DeltaParams,
    prepared: Prepared,
) -> Result<SegmentFrames> {
    let window = span.window(old);
    let data = span.segment(new);
    let mut encoder = SegmentEncoder::new(window, data, params, prepared)?;

    let mut frames = Vec::new();
    let mut saving = 0;
    for &(index, at) in &segment.chunks {
        let entry = &chunks[index as usize];
        let from = at - span.first;
        let bytes = &data[from as usize..][..entry.len as usize];
        anyhow::ensure!(
            ChunkId::of(bytes) == entry.id,
            "{} changed while it was being published",
            segment.new_path.display()
        );
        let (refs, other) =
            encoder.smallest_of(bytes, from, |c| matches!(c, DeltaCodec::BsdiffRefs { .. }))?;
        let worth =
            |f: &(DeltaCodec, Vec<u8>)| f.1.len() + MIN_SAVING_BYTES < entry.frame_len as usize;
        let (refs, other) = (refs.filter(worth), other.filter(worth));
        if let Some((_, r)) = &refs {
            let alternative = other
                .as_ref()
                .map_or(entry.frame_len as usize, |(_, o)| o.len());
            saving += alternative.saturating_sub(r.len());
        }
        frames.push(Candidates {
            chunk: index,
            refs,
            other,
        });
    }
    Ok(((span.window_at, span.window_len, frames), saving))
}

/// Decodes every projected frame as a client would (its own scan of the old file and the
/// reference map as published) and checks it against its chunk.
fn check_decodes(
    segments: &[&Segment],
    frames: &[&[(u32, DeltaCodec, Vec<u8>)]],
    spans: &[Span],
    old: &[u8],
    chunks: &[ChunkEntry],
    side: &[u8],
) -> Result<()> {
    let started = timing::Timed::new(Work::RefsCheck);
    let scan = OldRefs::scan(old).context("rescanning the base file")?;
    let projection = Projection::decode(scan, side)?;
    drop(started);
    segments
        .par_iter()
        .zip(frames.par_iter())
        .zip(spans.par_iter())
        .try_for_each(|((segment, frames), span)| {
            let _timed = timing::Timed::new(Work::RefsCheck);
            let window = WindowDecoder::new(span.window(old).to_vec());
            for (index, codec, bytes) in frames.iter() {
                if codec.ref_map().is_none() {
                    continue;
                }
                let entry = &chunks[*index as usize];
                let at = segment
                    .chunks
                    .iter()
                    .find(|(i, _)| i == index)
                    .map(|&(_, at)| at)
                    .context("a frame of a chunk outside its segment")?;
                let context = RefContext {
                    projection: &projection,
                    window_at: span.window_at,
                    at,
                };
                let decoded = codec.decode(&window, bytes, entry.len as usize, Some(context))?;
                anyhow::ensure!(
                    ChunkId::of(&decoded) == entry.id,
                    "a projected frame of chunk {} does not decode to it",
                    entry.id
                );
            }
            Ok(())
        })
}

fn encoded_frames(segments: &[Encoded]) -> Vec<&[(u32, DeltaCodec, Vec<u8>)]> {
    segments.iter().map(|(_, _, f)| f.as_slice()).collect()
}
