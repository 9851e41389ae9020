//! bsdiff frames: a chunk as bsdiff instructions against a delta window.
//!
//! Recompiled code differs from its old version mostly in shifted addresses: a new chunk is an
//! old region with small edits every few bytes. zstd only finds the exact matches between the
//! edits; bsdiff instead pairs the whole region with its old copy and stores the byte-wise
//! difference, which is mostly zeros and compresses to almost nothing.
//!
//! A frame is `varint ctrl_len, varint diff_len`, then three zstd frames (a length of 0 stands
//! for an empty stream; the extra frame is the rest of the bytes):
//! - ctrl: per instruction, LEB128 varints `zigzag(seek), add, copy`;
//! - diff: `add` bytes per instruction, each new byte minus its old byte (wrapping);
//! - extra: `copy` literal bytes per instruction, compressed with the window as dictionary.
//!
//! A *sparse* frame (used by projected frames, [`super::refs`], where most diff bytes are 0)
//! carries the diff as two streams instead of one: `varint ctrl_len, varint gaps_len, varint
//! values_len`, then ctrl, gaps, values and extra, where values are the nonzero diff bytes and
//! gaps, a varint each, count the zero bytes before each of them. It saves ~7% of the diff
//! stream on ruff's projected frames (zstd codes a run of zeros between sparse bytes as a
//! match of its own). Its control stream is in columns: the instruction count, then every
//! seek, every add, every copy.
//!
//! An instruction moves the read position in the window by `seek`, emits `add` window bytes
//! plus their diff bytes, then `copy` bytes of the extra stream. Decoding is checked: every
//! instruction stays inside the window, each stream is used exactly, and the output is exactly
//! the expected length.

use super::varint::{self, put as put_varint, unzigzag, zigzag};
use super::{WindowDecoder, WindowEncoder, declared_len};
use crate::{Error, Result};

/// One bsdiff instruction: `add` bytes of the window from `src`, each plus a diff byte, then
/// `copy` literal bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BsdiffOp {
    /// Where the `add` bytes start in the window.
    pub src: u64,
    /// Bytes taken from the window (plus a diff byte each).
    pub add: u64,
    /// Literal bytes after them.
    pub copy: u64,
}

/// The largest control stream a frame of `len` bytes may carry, so a hostile frame cannot
/// make a decoder allocate much more than the chunk. Real instructions are long, so encoders
/// rarely come near it; a chunk whose instructions would not fit is not sent as bsdiff.
pub const fn max_control_len(len: usize) -> usize {
    4 * len + 64
}

/// The instructions of `ops` (which rebuild some bytes) that rebuild their part `from..to`,
/// for an encoder that matched a whole segment at once and frames it chunk by chunk.
pub fn slice_ops(ops: &[BsdiffOp], from: u64, to: u64) -> Vec<BsdiffOp> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for op in ops {
        let (add_start, copy_start, end) = (at, at + op.add, at + op.add + op.copy);
        at = end;
        if end <= from {
            continue;
        }
        if add_start >= to {
            break;
        }
        let add_from = add_start.clamp(from, to);
        let add_to = copy_start.clamp(from, to);
        let copy = end.clamp(from, to) - copy_start.clamp(from, to);
        let add = add_to - add_from;
        if add + copy > 0 {
            out.push(BsdiffOp {
                src: op.src + (add_from - add_start).min(op.add),
                add,
                copy,
            });
        }
    }
    out
}

impl WindowEncoder {
    /// Encodes `data` as the bsdiff instructions `ops` against this encoder's window.
    ///
    /// Returns `None` if the control stream would exceed [`max_control_len`]. Fails if the
    /// instructions read outside the window or do not produce exactly `data`'s length.
    pub fn compress_bsdiff(&mut self, data: &[u8], ops: &[BsdiffOp]) -> Result<Option<Vec<u8>>> {
        self.compress_bsdiff_as(data, ops, DiffStream::Dense)
    }

    /// Like [`compress_bsdiff`](Self::compress_bsdiff), with the diff stream coded as `diff`.
    pub fn compress_bsdiff_as(
        &mut self,
        data: &[u8],
        ops: &[BsdiffOp],
        coding: DiffStream,
    ) -> Result<Option<Vec<u8>>> {
        let invalid = |what: &str| Error::Compress(std::io::Error::other(what.to_owned()));
        let mut ctrl = Vec::new();
        let mut diff = Vec::new();
        let mut extra = Vec::new();
        let (mut at, mut prev) = (0usize, 0u64);
        // The decoder refuses empty instructions; skipping one changes nothing, since each
        // seek is relative to where the last kept instruction left off.
        for op in ops.iter().filter(|op| op.add > 0 || op.copy > 0) {
            let seek = i64::try_from(op.src).map_err(|_| invalid("window offset overflows"))?
                - i64::try_from(prev).map_err(|_| invalid("window offset overflows"))?;
            put_varint(&mut ctrl, zigzag(seek));
            put_varint(&mut ctrl, op.add);
            put_varint(&mut ctrl, op.copy);
            let (src, add, copy) = (op.src as usize, op.add as usize, op.copy as usize);
            let old = src
                .checked_add(add)
                .and_then(|end| self.window.get(src..end))
                .ok_or_else(|| invalid("instruction reads outside the window"))?;
            let new = at
                .checked_add(add)
                .and_then(|end| data.get(at..end))
                .ok_or_else(|| invalid("instructions run past the chunk"))?;
            diff.extend(new.iter().zip(old).map(|(n, o)| n.wrapping_sub(*o)));
            at += add;
            let literal = at
                .checked_add(copy)
                .and_then(|end| data.get(at..end))
                .ok_or_else(|| invalid("instructions run past the chunk"))?;
            extra.extend_from_slice(literal);
            at += copy;
            prev = op.src + op.add;
        }
        if at != data.len() {
            return Err(invalid("instructions do not cover the chunk"));
        }
        if ctrl.len() > max_control_len(data.len()) {
            return Ok(None);
        }
        let ctrl = match coding {
            DiffStream::Dense => ctrl,
            DiffStream::Sparse => columns(&ctrl)?,
        };
        if ctrl.len() > max_control_len(data.len()) {
            return Ok(None);
        }
        let ctrl = compress_stream(&mut self.plain, &ctrl)?;
        let diff = match coding {
            DiffStream::Dense => vec![compress_stream(&mut self.plain, &diff)?],
            DiffStream::Sparse => {
                let (gaps, values) = sparse(&diff);
                vec![
                    compress_stream(&mut self.plain, &gaps)?,
                    compress_stream(&mut self.plain, &values)?,
                ]
            }
        };
        let extra = if extra.is_empty() {
            Vec::new()
        } else {
            self.compress(&extra)?
        };
        let mut frame = Vec::with_capacity(12 + ctrl.len() + diff.concat().len() + extra.len());
        put_varint(&mut frame, ctrl.len() as u64);
        for stream in &diff {
            put_varint(&mut frame, stream.len() as u64);
        }
        frame.extend_from_slice(&ctrl);
        for stream in &diff {
            frame.extend_from_slice(stream);
        }
        frame.extend_from_slice(&extra);
        Ok(Some(frame))
    }
}

/// How a bsdiff frame carries its diff bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffStream {
    /// One stream of every diff byte.
    Dense,
    /// The nonzero diff bytes and the zero runs before each (see the module docs).
    Sparse,
}

/// A control stream (`seek, add, copy` per instruction) as columns: the instruction count,
/// then every seek, every add and every copy. Like values sit together, which zstd codes in
/// fewer bits (-3% of the control stream on ruff).
fn columns(ctrl: &[u8]) -> Result<Vec<u8>> {
    let mut values = Vec::new();
    let mut at = 0;
    while at < ctrl.len() {
        values.push(get_varint(ctrl, &mut at)?);
    }
    let ops = values.len() / 3;
    let mut out = Vec::with_capacity(ctrl.len() + 4);
    put_varint(&mut out, ops as u64);
    for column in 0..3 {
        for op in 0..ops {
            put_varint(&mut out, values[op * 3 + column]);
        }
    }
    Ok(out)
}

/// The inverse of [`columns`]: the control stream with each instruction's values together.
fn interleave(columns: &[u8]) -> Result<Vec<u8>> {
    let mut at = 0;
    let ops = get_varint(columns, &mut at)?;
    // Each value takes at least a byte, so a count the stream cannot hold is refused before
    // anything is allocated for it.
    let ops = usize::try_from(ops)
        .ok()
        .filter(|&n| n.checked_mul(3).is_some_and(|v| v <= columns.len() - at))
        .ok_or_else(|| corrupt("more instructions than the control stream holds"))?;
    let mut values = vec![0u64; ops * 3];
    for column in 0..3 {
        for op in 0..ops {
            values[op * 3 + column] = get_varint(columns, &mut at)?;
        }
    }
    if at != columns.len() {
        return Err(corrupt("control columns left unused"));
    }
    let mut ctrl = Vec::with_capacity(columns.len());
    for v in values {
        put_varint(&mut ctrl, v);
    }
    Ok(ctrl)
}

/// `diff` as (gaps, values): per nonzero byte, a varint of the zero bytes before it, and the
/// byte.
fn sparse(diff: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut gaps, mut values) = (Vec::new(), Vec::new());
    let mut last = 0;
    for (i, &byte) in diff.iter().enumerate() {
        if byte != 0 {
            put_varint(&mut gaps, (i - last) as u64);
            values.push(byte);
            last = i + 1;
        }
    }
    (gaps, values)
}

/// The `len` diff bytes that `gaps` and `values` code (the inverse of [`sparse`]).
fn dense(gaps: &[u8], values: &[u8], len: usize) -> Result<Vec<u8>> {
    let mut diff = vec![0u8; len];
    let (mut at, mut g) = (0usize, 0usize);
    for &value in values {
        let gap = get_varint(gaps, &mut g)?;
        let slot = usize::try_from(gap)
            .ok()
            .and_then(|gap| at.checked_add(gap))
            .filter(|&i| i < len)
            .ok_or_else(|| corrupt("a sparse diff byte lies past the diff"))?;
        if value == 0 {
            return Err(corrupt("a sparse diff value is 0"));
        }
        diff[slot] = value;
        at = slot + 1;
    }
    if g != gaps.len() {
        return Err(corrupt("sparse diff gaps left unused"));
    }
    Ok(diff)
}

/// A stream as one zstd frame, or nothing if it is empty.
fn compress_stream(compressor: &mut zstd::bulk::Compressor<'_>, data: &[u8]) -> Result<Vec<u8>> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    compressor.compress(data).map_err(Error::Compress)
}

impl WindowDecoder {
    /// Decodes a frame made by [`WindowEncoder::compress_bsdiff`] with the same window into
    /// exactly `expected_len` bytes.
    pub fn decompress_bsdiff(&self, frame: &[u8], expected_len: usize) -> Result<Vec<u8>> {
        self.decompress_bsdiff_ops(frame, expected_len, DiffStream::Dense)
            .map(|(data, _)| data)
    }

    /// Like [`decompress_bsdiff`](Self::decompress_bsdiff), also returning the frame's
    /// instructions (absolute window offsets), which reference projection needs to undo.
    pub fn decompress_bsdiff_ops(
        &self,
        frame: &[u8],
        expected_len: usize,
        coding: DiffStream,
    ) -> Result<(Vec<u8>, Vec<BsdiffOp>)> {
        let mut at = 0;
        let ctrl_len = get_varint(frame, &mut at)?;
        let diff_lens = match coding {
            DiffStream::Dense => vec![get_varint(frame, &mut at)?],
            DiffStream::Sparse => vec![get_varint(frame, &mut at)?, get_varint(frame, &mut at)?],
        };
        let mut rest = &frame[at..];
        let mut take = |len: u64| -> Result<&[u8]> {
            let n = usize::try_from(len)
                .ok()
                .filter(|&n| n <= rest.len())
                .ok_or_else(|| corrupt("a stream runs past the end of the frame"))?;
            let (stream, after) = rest.split_at(n);
            rest = after;
            Ok(stream)
        };
        let ctrl = take(ctrl_len)?;
        let diff_frames = diff_lens
            .iter()
            .map(|&len| take(len))
            .collect::<Result<Vec<_>>>()?;
        let extra = rest;
        let ctrl = decode_stream(ctrl, max_control_len(expected_len), super::decompress)?;
        let ctrl = match coding {
            DiffStream::Dense => ctrl,
            DiffStream::Sparse => interleave(&ctrl)?,
        };
        let (diff, extra) = match diff_frames[..] {
            [diff] => {
                let diff = decode_stream(diff, expected_len, super::decompress)?;
                let extra = decode_stream(extra, expected_len - diff.len(), |f, n| {
                    self.decompress(f, n)
                })?;
                (diff, extra)
            }
            [gaps, values] => {
                let gaps = decode_stream(gaps, max_control_len(expected_len), super::decompress)?;
                let values = decode_stream(values, expected_len, super::decompress)?;
                let extra = decode_stream(extra, expected_len - values.len(), |f, n| {
                    self.decompress(f, n)
                })?;
                let diff = dense(&gaps, &values, expected_len - extra.len())?;
                (diff, extra)
            }
            _ => return Err(corrupt("an unknown diff coding")),
        };
        if diff.len() + extra.len() != expected_len {
            return Err(corrupt(format!(
                "streams hold {} bytes, expected {expected_len}",
                diff.len() + extra.len()
            )));
        }
        apply(&self.window, &ctrl, &diff, &extra)
    }
}

/// Decodes one stream of at most `limit` bytes; an empty input is an empty stream.
fn decode_stream(
    frame: &[u8],
    limit: usize,
    decode: impl FnOnce(&[u8], usize) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    if frame.is_empty() {
        return Ok(Vec::new());
    }
    decode(frame, declared_len(frame, limit)?)
}

/// Runs the instructions in `ctrl`; the caller checked that `diff` and `extra` together are
/// the output's length. Returns the output and the instructions run.
fn apply(
    window: &[u8],
    ctrl: &[u8],
    diff: &[u8],
    extra: &[u8],
) -> Result<(Vec<u8>, Vec<BsdiffOp>)> {
    let mut out = Vec::with_capacity(diff.len() + extra.len());
    let mut ops = Vec::new();
    let (mut c, mut d, mut e) = (0usize, 0usize, 0usize);
    let mut src = 0usize;
    while c < ctrl.len() {
        let seek = unzigzag(get_varint(ctrl, &mut c)?);
        let add = get_varint(ctrl, &mut c)?;
        let copy = get_varint(ctrl, &mut c)?;
        if add == 0 && copy == 0 {
            return Err(corrupt("an empty instruction"));
        }
        src = i64::try_from(src)
            .ok()
            .and_then(|s| s.checked_add(seek))
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| corrupt("an instruction seeks before the window"))?;
        let old = usize::try_from(add)
            .ok()
            .and_then(|add| window.get(src..src.checked_add(add)?))
            .ok_or_else(|| corrupt("an instruction reads outside the window"))?;
        let delta = diff
            .get(d..d + old.len())
            .ok_or_else(|| corrupt("the diff stream is short"))?;
        out.extend(old.iter().zip(delta).map(|(o, x)| o.wrapping_add(*x)));
        ops.push(BsdiffOp {
            src: src as u64,
            add,
            copy,
        });
        d += old.len();
        src += old.len();
        let literal = usize::try_from(copy)
            .ok()
            .and_then(|copy| extra.get(e..e.checked_add(copy)?))
            .ok_or_else(|| corrupt("the extra stream is short"))?;
        out.extend_from_slice(literal);
        e += literal.len();
    }
    if d != diff.len() || e != extra.len() {
        return Err(corrupt("instructions leave stream bytes unused"));
    }
    Ok((out, ops))
}

fn corrupt(reason: impl Into<String>) -> Error {
    Error::CorruptFrame(format!("bsdiff frame: {}", reason.into()))
}

fn get_varint(buf: &[u8], at: &mut usize) -> Result<u64> {
    varint::get(buf, at).map_err(corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An old region and a new version of it with a byte changed every `stride` bytes.
    fn shifted(stride: usize) -> (Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..300_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let mut new = old[50_000..150_000].to_vec();
        for (i, b) in new.iter_mut().enumerate().step_by(stride) {
            *b = b.wrapping_add(i as u8 | 1);
        }
        (old, new)
    }

    #[test]
    fn scattered_edits_beat_zstd_and_round_trip() {
        let (old, new) = shifted(16);
        let ops = [
            BsdiffOp {
                src: 50_000,
                add: 60_000,
                copy: 100,
            },
            BsdiffOp {
                src: 110_100,
                add: 39_900,
                copy: 0,
            },
        ];
        let mut encoder = WindowEncoder::new(&old, 19).unwrap();
        let zstd = encoder.compress(&new).unwrap();
        let frame = encoder.compress_bsdiff(&new, &ops).unwrap().unwrap();
        assert!(
            frame.len() * 4 < zstd.len(),
            "bsdiff {} vs zstd {}",
            frame.len(),
            zstd.len()
        );
        let decoder = WindowDecoder::new(old.clone());
        assert_eq!(decoder.decompress_bsdiff(&frame, new.len()).unwrap(), new);
        assert!(decoder.decompress_bsdiff(&frame, new.len() - 1).is_err());
        assert!(decoder.decompress_bsdiff(&frame, new.len() + 1).is_err());
        // Another window decodes to other bytes, or fails.
        let mut other = old.clone();
        other[60_000] ^= 1;
        let wrong = WindowDecoder::new(other).decompress_bsdiff(&frame, new.len());
        assert!(wrong.map_or(true, |d| d != new));
    }

    /// Found by the `frames` fuzz target: an empty instruction in the input made a frame the
    /// decoder refuses.
    #[test]
    fn empty_instructions_are_dropped() {
        let window = vec![7u8; 64];
        let data = vec![7u8; 32];
        let ops = [
            BsdiffOp {
                src: 40,
                add: 0,
                copy: 0,
            },
            BsdiffOp {
                src: 8,
                add: 32,
                copy: 0,
            },
        ];
        let frame = WindowEncoder::new(&window, 3)
            .unwrap()
            .compress_bsdiff(&data, &ops)
            .unwrap()
            .unwrap();
        let decoded = WindowDecoder::new(window).decompress_bsdiff(&frame, data.len());
        assert_eq!(decoded.unwrap(), data);
    }

    #[test]
    fn encoder_refuses_instructions_that_do_not_fit() {
        let (old, new) = shifted(16);
        let mut encoder = WindowEncoder::new(&old, 3).unwrap();
        let outside = BsdiffOp {
            src: old.len() as u64 - 10,
            add: new.len() as u64,
            copy: 0,
        };
        assert!(encoder.compress_bsdiff(&new, &[outside]).is_err());
        let short = BsdiffOp {
            src: 0,
            add: 10,
            copy: 10,
        };
        assert!(encoder.compress_bsdiff(&new, &[short]).is_err());
        // One literal byte per instruction: the control stream would be too big.
        let tiny: Vec<BsdiffOp> = (0..new.len())
            .map(|i| BsdiffOp {
                src: (i as u64 * 7919) % 200_000,
                add: 0,
                copy: 1,
            })
            .collect();
        assert_eq!(encoder.compress_bsdiff(&new, &tiny).unwrap(), None);
    }

    /// Builds a frame from raw streams, as a hostile encoder could.
    fn raw_frame(ctrl: &[u8], diff: &[u8], extra: &[u8]) -> Vec<u8> {
        let z = |d: &[u8]| {
            if d.is_empty() {
                Vec::new()
            } else {
                super::super::compress(d, 3).unwrap()
            }
        };
        let (c, d, e) = (z(ctrl), z(diff), z(extra));
        let mut frame = Vec::new();
        put_varint(&mut frame, c.len() as u64);
        put_varint(&mut frame, d.len() as u64);
        frame.extend_from_slice(&c);
        frame.extend_from_slice(&d);
        frame.extend_from_slice(&e);
        frame
    }

    fn ctrl(ops: &[(i64, u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(seek, add, copy) in ops {
            put_varint(&mut out, zigzag(seek));
            put_varint(&mut out, add);
            put_varint(&mut out, copy);
        }
        out
    }

    #[test]
    fn hostile_frames_are_refused_with_a_reason() {
        let decoder = WindowDecoder::new(vec![1u8; 1000]);
        let ok = raw_frame(&ctrl(&[(10, 4, 2)]), &[0, 0, 0, 1], b"xy");
        assert_eq!(
            decoder.decompress_bsdiff(&ok, 6).unwrap(),
            [1, 1, 1, 2, b'x', b'y']
        );
        // The extra stream is not compressed with the window here, which still decodes: a
        // frame without back-references needs no dictionary.
        let cases: Vec<(Vec<u8>, usize, &str)> = vec![
            (
                raw_frame(&ctrl(&[(-1, 4, 0)]), &[0; 4], b""),
                4,
                "seeks before",
            ),
            (
                raw_frame(&ctrl(&[(998, 4, 0)]), &[0; 4], b""),
                4,
                "outside the window",
            ),
            (
                raw_frame(&ctrl(&[(0, 4, 0)]), &[0; 3], b"x"),
                4,
                "diff stream is short",
            ),
            (
                raw_frame(&ctrl(&[(0, 1, 3)]), &[0], b"xy"),
                3,
                "extra stream is short",
            ),
            (raw_frame(&ctrl(&[(0, 1, 0)]), &[0], b"xy"), 3, "unused"),
            (
                raw_frame(&ctrl(&[(0, 0, 0), (0, 1, 0)]), &[0], b""),
                1,
                "empty instruction",
            ),
            (raw_frame(&ctrl(&[(0, 1, 0)]), &[0], b""), 2, "streams hold"),
            (
                raw_frame(&ctrl(&[(0, 2, 0)]), &[0, 0], b""),
                1,
                "over the 1-byte limit",
            ),
            (raw_frame(&[0x80; 11], &[0], b""), 1, "overlong varint"),
            (raw_frame(&[0x80], &[0], b""), 1, "truncated varint"),
            (raw_frame(&vec![0u8; 1000], &[0], b""), 1, "limit"),
            (vec![0x85, 0x01, 0x00], 1, "past the end"),
            (vec![0x80], 1, "truncated varint"),
            (vec![], 1, "truncated varint"),
        ];
        for (frame, len, reason) in cases {
            let err = decoder.decompress_bsdiff(&frame, len).unwrap_err();
            assert!(err.to_string().contains(reason), "{reason}: {err}");
        }
    }

    #[test]
    fn slices_split_instructions_at_the_cut() {
        let ops = [
            BsdiffOp {
                src: 100,
                add: 10,
                copy: 5,
            },
            BsdiffOp {
                src: 500,
                add: 20,
                copy: 0,
            },
        ];
        assert_eq!(
            slice_ops(&ops, 12, 20),
            [
                BsdiffOp {
                    src: 110,
                    add: 0,
                    copy: 3
                },
                BsdiffOp {
                    src: 500,
                    add: 5,
                    copy: 0
                },
            ]
        );
        assert_eq!(
            slice_ops(&ops, 3, 8),
            [BsdiffOp {
                src: 103,
                add: 5,
                copy: 0
            }]
        );
        assert!(slice_ops(&ops, 35, 40).is_empty());
    }

    #[test]
    fn sparse_diffs_round_trip_and_refuse_bytes_outside_the_diff() {
        let diff = [0u8, 0, 7, 0, 0, 0, 0, 1, 255, 0];
        let (gaps, values) = sparse(&diff);
        assert_eq!(
            (gaps.as_slice(), values.as_slice()),
            (&[2u8, 4, 0][..], &[7u8, 1, 255][..])
        );
        assert_eq!(dense(&gaps, &values, diff.len()).unwrap(), diff);
        assert_eq!(dense(&[], &[], 5).unwrap(), [0; 5]);
        let err =
            |gaps: &[u8], values: &[u8], len| dense(gaps, values, len).unwrap_err().to_string();
        assert!(err(&gaps, &values, 8).contains("past the diff"));
        assert!(err(&[0], &[0], 4).contains("is 0"));
        assert!(err(&[1, 1], &[5], 4).contains("left unused"));
        assert!(err(&[], &[5], 4).contains("truncated"));
        assert!(err(&[0xff; 11], &[5], 4).contains("overlong"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any instructions that fit round-trip; any damaged frame fails or decodes to other
        /// bytes of the same length, never panics.
        #[test]
        fn round_trip_and_damage(
            window in proptest::collection::vec(any::<u8>(), 1..4096),
            parts in proptest::collection::vec((any::<u16>(), 0u16..300, 0u16..50), 1..20),
            seed in any::<u64>(),
            flip in any::<proptest::sample::Index>(),
        ) {
            let mut data = Vec::new();
            let mut ops = Vec::new();
            let mut rng = seed;
            for (src, add, copy) in parts {
                let src = u64::from(src) % window.len() as u64;
                let add = u64::from(add).min(window.len() as u64 - src);
                if add + u64::from(copy) == 0 {
                    continue;
                }
                for &b in &window[src as usize..(src + add) as usize] {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    data.push(if rng >> 60 == 0 { b ^ (rng >> 32) as u8 } else { b });
                }
                data.extend((0..copy).map(|i| (i as u8).wrapping_mul(31)));
                ops.push(BsdiffOp { src, add, copy: u64::from(copy) });
            }
            if window.starts_with(&crate::frame::DICTIONARY_MAGIC) {
                return Ok(());
            }
            let mut encoder = WindowEncoder::new(&window, 3).unwrap();
            let decoder = WindowDecoder::new(window.clone());
            for coding in [DiffStream::Dense, DiffStream::Sparse] {
                let Some(frame) = encoder.compress_bsdiff_as(&data, &ops, coding).unwrap() else {
                    return Ok(());
                };
                let decode = |frame: &[u8]| {
                    decoder.decompress_bsdiff_ops(frame, data.len(), coding).map(|(d, _)| d)
                };
                prop_assert_eq!(&decode(&frame).unwrap(), &data);
                let mut bad = frame.clone();
                let i = flip.index(bad.len());
                bad[i] ^= 0x5a;
                if let Ok(out) = decode(&bad) {
                    prop_assert_eq!(out.len(), data.len());
                }
                for cut in [0, frame.len() / 2, frame.len() - 1] {
                    if let Ok(out) = decode(&frame[..cut]) {
                        prop_assert_eq!(out.len(), data.len());
                    }
                }
            }
        }
    }
}
