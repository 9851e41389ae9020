//! The delta codecs as the publisher encodes them: the one place that dispatches on
//! [`DeltaCodec`] while encoding. Clients decode with [`DeltaCodec::decode`], and each codec's
//! frame format lives in `relsync_chunker::frame`. A new codec is a variant of `DeltaCodec`,
//! its frame format in the chunker, and here an entry in [`CODECS`] and an arm in [`prepare`].

use std::sync::Arc;

use anyhow::Result;
use relsync_chunker::frame::refs::Projection;
use relsync_chunker::frame::{BsdiffOp, WindowEncoder, slice_ops};
use relsync_format::manifest::DeltaCodec;

use super::{DeltaParams, matcher};
use crate::build::timing::{self, Work};

/// Every codec, in the order they are tried; on a tie, the earlier one's frame is kept.
const CODECS: [DeltaCodec; 3] = [
    DeltaCodec::Bsdiff,
    DeltaCodec::BsdiffRefs { map: 0 },
    DeltaCodec::Zstd,
];

/// The zstd window codec is tried on a chunk only if no bsdiff frame of it is smaller than
/// 1/`ZSTD_TRIED_ABOVE` of the chunk. At level 19 it is the costliest codec per byte, and on
/// ruff it beats a bsdiff frame that small by 0.06% of the delta bytes in all (it wins on
/// data, where bsdiff's frames are large), for 60% of its time.
const ZSTD_TRIED_ABOVE: usize = 20;

/// A frame and its codec.
pub type Frame = (DeltaCodec, Vec<u8>);

/// What was worked out for a segment before its frames are made.
#[derive(Default)]
pub struct Prepared {
    /// bsdiff's match of the segment against the window, if already made.
    pub ops: Option<Vec<BsdiffOp>>,
    /// The file's reference projection, for [`DeltaCodec::BsdiffRefs`] frames.
    pub refs: Option<Projected>,
}

/// A segment of an executable whose references are projected.
pub struct Projected {
    pub projection: Arc<Projection>,
    /// Index of the file's reference map in its base.
    pub map: u32,
    /// bsdiff's match of the segment against the window with every reference replaced by
    /// its target (see [`Projection::substitute_new`]): it aligns moved code better.
    pub ops: Vec<BsdiffOp>,
    /// Where the window starts in the old file.
    pub window_at: u64,
    /// Where the segment starts in the new file.
    pub segment_at: u64,
}

/// A codec prepared for one segment: turns a chunk (its bytes and offset in the segment) into
/// a frame, with the window's zstd tables; `None` if it cannot encode that chunk.
type ChunkEncoder = Box<dyn Fn(&mut WindowEncoder, &[u8], u64) -> Result<Option<Vec<u8>>>>;

/// Prepares `codec` to encode chunks of `segment` against `window`, or `None` if `params`
/// or `prepared` leave it out. Work done once per segment (bsdiff's match of the whole
/// segment against the window) happens here, unless `prepared` has it.
fn prepare(
    codec: DeltaCodec,
    params: DeltaParams,
    window: &[u8],
    segment: &[u8],
    prepared: &mut Prepared,
) -> Option<(DeltaCodec, ChunkEncoder)> {
    let encoder: ChunkEncoder = match codec {
        DeltaCodec::Zstd => Box::new(|encoder, data, _| Ok(Some(encoder.compress(data)?))),
        DeltaCodec::Bsdiff => {
            if !params.bsdiff {
                return None;
            }
            let ops = prepared.ops.take().unwrap_or_else(|| {
                timing::time(Work::Bidiff, || {
                    bsdiff_ops(window, segment, params.exact_matches)
                })
            });
            Box::new(move |encoder: &mut WindowEncoder, data: &[u8], from: u64| {
                let ops = slice_ops(&ops, from, from + data.len() as u64);
                Ok(encoder.compress_bsdiff(data, &ops)?)
            })
        }
        DeltaCodec::BsdiffRefs { .. } => {
            let refs = prepared.refs.take().filter(|_| params.bsdiff)?;
            let codec = DeltaCodec::BsdiffRefs { map: refs.map };
            let encoder = Box::new(move |encoder: &mut WindowEncoder, data: &[u8], from: u64| {
                let ops = slice_ops(&refs.ops, from, from + data.len() as u64);
                let at = refs.segment_at + from;
                Ok(refs
                    .projection
                    .compress(encoder, refs.window_at, &ops, data, at)?)
            });
            return Some((codec, encoder));
        }
    };
    Some((codec, encoder))
}

/// The codecs prepared for one segment, and the window's zstd tables they share (built once,
/// then attached to each frame's context).
pub struct SegmentEncoder {
    window: WindowEncoder,
    codecs: Vec<(DeltaCodec, ChunkEncoder)>,
}

impl SegmentEncoder {
    /// Prepares every codec `params` (and `prepared`) enable for chunks of `segment` against
    /// `window`.
    pub fn new(
        window: &[u8],
        segment: &[u8],
        params: DeltaParams,
        mut prepared: Prepared,
    ) -> Result<Self> {
        Ok(Self {
            window: timing::time(Work::WindowTables, || {
                let mut encoder =
                    WindowEncoder::with_levels(window, params.zstd_level, params.stream_level())?;
                // zstd builds the window's tables on first use.
                encoder.compress(&[])?;
                anyhow::Ok(encoder)
            })?,
            codecs: CODECS
                .into_iter()
                .filter_map(|codec| prepare(codec, params, window, segment, &mut prepared))
                .collect(),
        })
    }

    /// The smallest frame of chunk `data`, at `offset` in the segment, and its codec.
    pub fn smallest(&mut self, data: &[u8], offset: u64) -> Result<Option<Frame>> {
        Ok(self.smallest_of(data, offset, |_| true)?.0)
    }

    /// The smallest frame of chunk `data` among the codecs `allowed`, and the smallest of
    /// the others.
    pub fn smallest_of(
        &mut self,
        data: &[u8],
        offset: u64,
        allowed: impl Fn(DeltaCodec) -> bool,
    ) -> Result<(Option<Frame>, Option<Frame>)> {
        let (mut best, mut other): (Option<Frame>, _) = (None, None);
        let mut smallest_bsdiff = usize::MAX;
        for (codec, encode) in &self.codecs {
            if *codec == DeltaCodec::Zstd
                && smallest_bsdiff.saturating_mul(ZSTD_TRIED_ABOVE) <= data.len()
            {
                continue;
            }
            let slot = if allowed(*codec) {
                &mut best
            } else {
                &mut other
            };
            let work = match codec {
                DeltaCodec::Zstd => Work::ZstdFrames,
                DeltaCodec::Bsdiff => Work::BsdiffFrames,
                _ => Work::RefsFrames,
            };
            let Some(frame) = timing::time(work, || encode(&mut self.window, data, offset))? else {
                continue;
            };
            if codec.is_bsdiff() {
                smallest_bsdiff = smallest_bsdiff.min(frame.len());
            }
            if slot.as_ref().is_none_or(|(_, b)| frame.len() < b.len()) {
                *slot = Some((*codec, frame));
            }
        }
        Ok((best, other))
    }
}

/// bsdiff instructions that rebuild `new` from `window`, covering every byte of `new` (any
/// bytes the matcher leaves out become literals). `exact`: bidiff's matches, from a suffix
/// array (the longest match at every position); otherwise [`matcher`]'s, from hashed seeds
/// (4 times faster, about 3% more bytes on ruff).
pub fn bsdiff_ops(window: &[u8], new: &[u8], exact: bool) -> Vec<BsdiffOp> {
    let mut ops = Vec::new();
    let mut at = 0usize;
    let literal = |ops: &[BsdiffOp], from: usize, to: usize| BsdiffOp {
        src: ops.last().map_or(0, |op| op.src + op.add),
        add: 0,
        copy: (to - from) as u64,
    };
    let mut push = |m: matcher::Match| {
        if m.add_new_start < at || m.copy_end < m.copy_start() {
            return;
        }
        if m.add_new_start > at {
            ops.push(literal(&ops, at, m.add_new_start));
        }
        ops.push(BsdiffOp {
            src: m.add_old_start as u64,
            add: m.add_length as u64,
            copy: (m.copy_end - m.copy_start()) as u64,
        });
        at = m.copy_end;
    };
    if exact {
        let params = bidiff::DiffParams::default();
        let matched = bidiff::diff(window, new, &params, |m| {
            push(m);
            Ok::<_, std::convert::Infallible>(())
        });
        if let Err(never) = matched {
            match never {}
        }
    } else {
        matcher::matches(window, new)
            .into_iter()
            .for_each(&mut push);
    }
    if at < new.len() {
        ops.push(literal(&ops, at, new.len()));
    }
    ops
}

#[cfg(test)]
mod tests {
    use relsync_chunker::frame;

    use super::*;

    /// Old bytes, and a new version that shifts them and edits a byte every 40.
    fn recompiled() -> (Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..600_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as u8)
            .collect();
        let mut new = b"inserted header".to_vec();
        new.extend_from_slice(&old[1000..500_000]);
        for (i, b) in new.iter_mut().enumerate().skip(20).step_by(40) {
            *b = b.wrapping_add(i as u8 | 1);
        }
        new.extend_from_slice(b"new tail bytes");
        (old, new)
    }

    /// Chunk boundaries of `new` for the tests: edge sizes and a few large chunks.
    fn cuts(new: &[u8]) -> [usize; 10] {
        [
            0,
            7,
            15,
            16,
            4096,
            65_536,
            65_537,
            200_000,
            499_000,
            new.len(),
        ]
    }

    #[test]
    fn bsdiff_frames_of_every_slice_round_trip_and_beat_zstd() {
        let (old, new) = recompiled();
        let ops = bsdiff_ops(&old, &new, true);
        let covered: u64 = ops.iter().map(|op| op.add + op.copy).sum();
        assert_eq!(covered, new.len() as u64);
        let mut encoder = frame::WindowEncoder::new(&old, 19).unwrap();
        let decoder = frame::WindowDecoder::new(old.clone());
        let (mut bsdiff, mut zstd) = (0, 0);
        for pair in cuts(&new).windows(2) {
            let (from, to) = (pair[0], pair[1]);
            let chunk = &new[from..to];
            let sliced = slice_ops(&ops, from as u64, to as u64);
            let frame = encoder.compress_bsdiff(chunk, &sliced).unwrap().unwrap();
            assert_eq!(
                decoder.decompress_bsdiff(&frame, chunk.len()).unwrap(),
                chunk,
                "{from}..{to}"
            );
            bsdiff += frame.len();
            zstd += encoder.compress(chunk).unwrap().len();
        }
        assert!(bsdiff * 3 < zstd * 2, "bsdiff {bsdiff} B, zstd {zstd} B");
    }

    #[test]
    fn the_smallest_frame_decodes_with_its_codec_and_bsdiff_can_be_left_out() {
        let (old, new) = recompiled();
        let decoder = frame::WindowDecoder::new(old.clone());
        for bsdiff in [true, false] {
            let params = DeltaParams {
                zstd_level: 19,
                bsdiff,
                ..DeltaParams::default()
            };
            let mut encoder = SegmentEncoder::new(&old, &new, params, Prepared::default()).unwrap();
            let mut used = Vec::new();
            for pair in cuts(&new).windows(2) {
                let chunk = &new[pair[0]..pair[1]];
                let (codec, frame) = encoder.smallest(chunk, pair[0] as u64).unwrap().unwrap();
                assert_eq!(
                    codec.decode(&decoder, &frame, chunk.len(), None).unwrap(),
                    chunk
                );
                used.push(codec);
            }
            assert_eq!(used.contains(&DeltaCodec::Bsdiff), bsdiff, "{used:?}");
        }
    }
}
