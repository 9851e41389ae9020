//! Chunk frames under the limits their callers give: plain zstd frames of a known or a
//! declared size, delta frames against a window (zstd with the window as dictionary, and
//! bsdiff), and solid frames decoded as a stream. Decoded output must never exceed, and on
//! success must equal, the size the caller expects.
//!
//! Input: a mode byte (modulo 6), then
//! - 0 plain: u32 expected length (at most 4 MiB), the frame;
//! - 1 declared: u32 limit (at most `manifest::limits::MANIFEST_BYTES`), the frame;
//! - 2 window: a document (u16 length, bytes) holding the window, u32 expected length, the
//!   zstd delta frame;
//! - 3 bsdiff: as 2, with a bsdiff frame;
//! - 4 solid: u32 expected length (at most `limits::SOLID_BYTES`), u16 piece size, the frame,
//!   pushed to a `SolidDecoder` in pieces of that size;
//! - 5 round trip: `arbitrary` data, window and bsdiff instructions, encoded with the
//!   chunker's encoders and decoded back (also `slice_ops`).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use relsync_chunker::frame::{self, BsdiffOp, SolidDecoder, WindowDecoder, WindowEncoder};
use relsync_engine::manifest::limits;
use relsync_fuzz::Reader;

/// Largest expected length for plain and delta frames: FastCDC's largest chunk is 16 MiB, but
/// 4 MiB keeps each run fast and reaches every branch.
const MAX_CHUNK: u32 = 4 << 20;

fuzz_target!(init: relsync_fuzz::seeds::on_init("frames"), |data: &[u8]| {
    let mut input = Reader::new(data);
    match input.u8() % 6 {
        0 => {
            let expected = (input.u32() % (MAX_CHUNK + 1)) as usize;
            if let Ok(out) = frame::decompress(input.rest(), expected) {
                assert_eq!(out.len(), expected);
            }
        }
        1 => {
            let limit = (u64::from(input.u32()) % (limits::MANIFEST_BYTES + 1)) as usize;
            if let Ok(out) = frame::decompress_declared(input.rest(), limit) {
                assert!(out.len() <= limit, "{} bytes over the {limit}-byte limit", out.len());
            }
        }
        mode @ (2 | 3) => {
            let decoder = WindowDecoder::new(input.doc().to_vec());
            let expected = (input.u32() % (MAX_CHUNK + 1)) as usize;
            let frame = input.rest();
            let out = if mode == 2 {
                decoder.decompress(frame, expected)
            } else {
                decoder.decompress_bsdiff(frame, expected)
            };
            if let Ok(out) = out {
                assert_eq!(out.len(), expected);
            }
            if mode == 2
                && let Ok(out) = decoder.decompress_declared(frame, MAX_CHUNK as usize)
            {
                assert!(out.len() <= MAX_CHUNK as usize);
            }
        }
        4 => {
            let expected = u64::from(input.u32()) % (limits::SOLID_BYTES + 1);
            let piece = usize::from(input.u16()).max(1);
            solid(input.rest(), expected, piece);
        }
        _ => {
            let mut u = Unstructured::new(input.rest());
            if let Ok(trip) = RoundTrip::arbitrary(&mut u) {
                trip.run();
            }
        }
    }
});

/// Streams `frame` through a solid decoder in `piece`-byte pieces; returns the output.
fn solid(frame: &[u8], expected: u64, piece: usize) -> Option<Vec<u8>> {
    let mut decoder = SolidDecoder::new(expected).ok()?;
    let mut out = Vec::new();
    let mut failed = false;
    for input in frame.chunks(piece) {
        let pushed = decoder.push::<relsync_chunker::Error>(input, |d| {
            out.extend_from_slice(d);
            Ok(())
        });
        assert!(
            out.len() as u64 <= expected,
            "{} bytes of {expected} expected",
            out.len()
        );
        if pushed.is_err() {
            failed = true;
            break;
        }
    }
    if failed || decoder.finish().is_err() {
        return None;
    }
    assert_eq!(out.len() as u64, expected);
    Some(out)
}

/// One bsdiff instruction before it is fitted to the data and window.
#[derive(Debug, Arbitrary)]
struct Op {
    src: u16,
    add: u16,
    copy: u16,
}

#[derive(Debug, Arbitrary)]
struct RoundTrip {
    data: Vec<u8>,
    window: Vec<u8>,
    level: u8,
    ops: Vec<Op>,
    /// Keep instructions as given (likely invalid) instead of fitting them.
    raw: bool,
    slice: (u16, u16),
}

impl RoundTrip {
    fn run(&self) {
        let data = &self.data[..];
        let level = i32::from(self.level % 5) - 1;
        let plain = frame::compress(data, level).expect("compressing");
        assert_eq!(
            frame::decompress(&plain, data.len()).expect("decoding"),
            data
        );
        assert_eq!(
            frame::decompress_declared(&plain, data.len()).expect("decoding"),
            data
        );
        let solid_frame = frame::compress_solid(data, level).expect("compressing solid");
        assert_eq!(
            solid(&solid_frame, data.len() as u64, 7).as_deref(),
            Some(data)
        );

        let Ok(mut encoder) = WindowEncoder::new(&self.window, level) else {
            assert!(self.window.starts_with(&frame::DICTIONARY_MAGIC));
            return;
        };
        let decoder = WindowDecoder::new(self.window.clone());
        let delta = encoder
            .compress(data)
            .expect("compressing against the window");
        assert_eq!(
            decoder.decompress(&delta, data.len()).expect("decoding"),
            data
        );

        let ops = self.ops();
        match encoder.compress_bsdiff(data, &ops) {
            Ok(Some(frame)) => {
                let out = decoder
                    .decompress_bsdiff(&frame, data.len())
                    .expect("decoding bsdiff");
                assert_eq!(out, data);
                self.check_slice(&ops, &mut encoder, &decoder);
            }
            Ok(None) => {}
            Err(_) => assert!(self.raw, "fitted instructions were refused: {ops:?}"),
        }
    }

    /// The instructions: as given when `raw`, else fitted to cover the data exactly and to
    /// read inside the window.
    fn ops(&self) -> Vec<BsdiffOp> {
        if self.raw {
            return self
                .ops
                .iter()
                .map(|o| BsdiffOp {
                    src: u64::from(o.src),
                    add: u64::from(o.add),
                    copy: u64::from(o.copy),
                })
                .collect();
        }
        let (len, window) = (self.data.len() as u64, self.window.len() as u64);
        let mut at = 0u64;
        let mut ops = Vec::new();
        for o in &self.ops {
            if at == len {
                break;
            }
            let add = (u64::from(o.add) % (len - at + 1)).min(window);
            let src = if window > add {
                u64::from(o.src) % (window - add + 1)
            } else {
                0
            };
            let copy = u64::from(o.copy) % (len - at - add + 1);
            if add + copy > 0 {
                ops.push(BsdiffOp { src, add, copy });
                at += add + copy;
            }
        }
        if at < len {
            ops.push(BsdiffOp {
                src: 0,
                add: 0,
                copy: len - at,
            });
        }
        ops
    }

    /// `slice_ops` of a range of the data encodes exactly that range.
    fn check_slice(&self, ops: &[BsdiffOp], encoder: &mut WindowEncoder, decoder: &WindowDecoder) {
        let len = self.data.len() as u64;
        let from = u64::from(self.slice.0) % (len + 1);
        let to = from + u64::from(self.slice.1) % (len - from + 1);
        let part = &self.data[from as usize..to as usize];
        let sliced = frame::slice_ops(ops, from, to);
        match encoder.compress_bsdiff(part, &sliced) {
            Ok(Some(frame)) => {
                let out = decoder
                    .decompress_bsdiff(&frame, part.len())
                    .expect("decoding a slice");
                assert_eq!(out, part);
            }
            Ok(None) => {}
            Err(e) => panic!("slice_ops({from}..{to}) of {ops:?} gave {sliced:?}: {e}"),
        }
    }
}
