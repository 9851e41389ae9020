//! Reference projection for executables (issue 20): the ELF parser and x86-64 scanner on
//! arbitrary images, the checked decoder of a file's reference map (side object), projected
//! bsdiff frames (`DeltaCodec::BsdiffRefs`) against arbitrary windows and offsets, and
//! project/unproject round trips. The realistic parts run against a fixed update of a small
//! synthetic executable ([`relsync_fuzz::exe`]).
//!
//! Input: a mode byte (modulo 5), then
//! - 0 scan: u32 bytes the image claims to have past its data (0: none; reads there fail,
//!   as for a file cut while it is scanned), then the image: `Elf::parse`, `x86_64::scan`,
//!   `OldRefs::scan`;
//! - 1 side object: a reference map frame, decoded with `Projection::decode` against the
//!   scan of the fixture's old image;
//! - 2 raw side object: its decoded bytes, compressed here, then as 1 (so the fuzzer reaches
//!   the layout and label checks without writing zstd);
//! - 3 projected frame: u16 fixture chunk (modulo their count), u8 flags choosing which of
//!   the chunk's honest values to replace: bit 0 the window (u32 start, u32 length, in the
//!   old image), bit 1 the window's offset in the old file (u64), bit 2 the chunk's offset
//!   in the new file (u64), bit 3 the expected length (u32, at most 4 MiB); then those
//!   values in that order, then the frame, decoded as `DeltaCodec::BsdiffRefs`;
//! - 4 round trip: `arbitrary` data, bsdiff instructions, window and offsets; labels voted
//!   from them, sent through a side object, and `unproject(project(x))` with the decoded
//!   projection; fitted instructions are also encoded as a frame and decoded.
//!
//! Asserts: scans are sorted, never overlap, lie inside the image and inside scanned
//! sections, and each field names its reference's target; a lower limit refuses;
//! `OldRefs::scan` agrees with the scan and stays within its limits; every refusal is `Error::CorruptFrame`; a projected
//! frame decodes exactly when the plain bsdiff frame does, to the same length, and
//! projecting the output gives back the plain output; honest frames decode to their chunk;
//! a side object the encoder made decodes, and unproject undoes project.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use relsync_chunker::Error;
use relsync_chunker::frame::refs::elf::{Elf, Image, SHF_EXECINSTR};
use relsync_chunker::frame::refs::x86_64::{self, RefKind};
use relsync_chunker::frame::refs::{
    MAX_REFERENCES, MAX_TARGETS, OldRefs, Projection, Votes, encode_side,
};
use relsync_chunker::frame::{self, BsdiffOp, DiffStream, WindowDecoder, WindowEncoder};
use relsync_engine::manifest::{DeltaCodec, RefContext};
use relsync_fuzz::Reader;
use relsync_fuzz::exe::{self, Fixture};

/// Largest expected length of a projected frame (FastCDC's largest chunk is 16 MiB).
const MAX_CHUNK: u32 = 4 << 20;

fuzz_target!(init: relsync_fuzz::seeds::on_init("refs"), |data: &[u8]| {
    let mut input = Reader::new(data);
    match input.u8() % 5 {
        0 => {
            let extra = u64::from(input.u32());
            scan(input.rest(), extra);
        }
        1 => side(input.rest()),
        2 => {
            let Ok(frame) = frame::compress(input.rest(), 1) else {
                return;
            };
            side(&frame);
        }
        3 => projected(&mut input),
        _ => {
            let mut u = Unstructured::new(input.rest());
            if let Ok(trip) = RoundTrip::arbitrary(&mut u) {
                trip.run(exe::fixture());
            }
        }
    }
});

/// An image of `data` that claims `extra` more bytes, whose reads there fail.
struct Claimed<'a> {
    data: &'a [u8],
    extra: u64,
}

impl Image for Claimed<'_> {
    fn len(&self) -> u64 {
        self.data.len() as u64 + self.extra
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.data.read_at(offset, buf)
    }
}

fn scan(data: &[u8], extra: u64) {
    if extra > 0 {
        // A file that shrank under the scan: whatever the result, no panic, no huge read.
        let image = Claimed { data, extra };
        if let Some(elf) = Elf::parse(&image) {
            let _ = x86_64::scan(&image, &elf, MAX_REFERENCES);
        }
        let _ = OldRefs::scan(&image);
        return;
    }
    let elf = Elf::parse(data);
    let old = OldRefs::scan(data);
    let Some(elf) = elf else {
        assert!(old.is_none(), "references of an image that does not parse");
        return;
    };
    for section in &elf.sections {
        if let Some(range) = section.file_range() {
            assert!(
                range.end <= data.len(),
                "section {:?} past the end",
                section.name
            );
        }
    }
    let Some(refs) = x86_64::scan(data, &elf, MAX_REFERENCES) else {
        assert!(old.is_none(), "a projection of an image the scan refused");
        return;
    };
    // A limit below what it found refuses; no limit finds the same.
    if let Some(fewer) = refs.len().checked_sub(1) {
        assert_eq!(x86_64::scan(data, &elf, fewer), None);
    }
    assert_eq!(
        x86_64::scan(data, &elf, usize::MAX).as_deref(),
        Some(&refs[..])
    );
    for pair in refs.windows(2) {
        assert!(
            pair[0].offset + 4 <= pair[1].offset,
            "references out of order or overlapping: {pair:?}"
        );
    }
    let layout = elf.layout();
    for r in &refs {
        let at = usize::try_from(r.offset).expect("offset");
        let field = data
            .get(at..at + 4)
            .unwrap_or_else(|| panic!("reference {r:?} past the end of {} bytes", data.len()));
        let field = u32::from_le_bytes(field.try_into().expect("4 bytes"));
        let scanned = elf.sections.iter().any(|s| {
            s.file_range().is_some_and(|range| {
                range.start <= at
                    && at + 4 <= range.end
                    && (s.flags & SHF_EXECINSTR != 0
                        || s.name == ".eh_frame"
                        || s.name == ".eh_frame_hdr")
            })
        });
        assert!(scanned, "reference {r:?} outside every scanned section");
        // A table entry of `.eh_frame_hdr` is relative to its own section, which need not be
        // the first of that name (the one the layout records).
        if r.kind != RefKind::DataRel32 {
            let base = r.kind.base(r.offset, &layout).expect("a mapped reference");
            assert_eq!(r.kind.target(base, field), r.target, "{r:?}");
            assert_eq!(r.kind.field_for(base, r.target), field, "{r:?}");
        }
    }
    match old {
        Some(old) => {
            assert_eq!(old.len(), refs.len());
            let mut targets: Vec<u64> = refs.iter().map(|r| r.target).collect();
            targets.sort_unstable();
            targets.dedup();
            assert_eq!(old.targets(), targets.len());
            assert!(old.len() <= MAX_REFERENCES && old.targets() <= MAX_TARGETS);
            assert_eq!(old.layout(), &layout);
            // Substituting changes reference fields only.
            let substituted = old.substitute(data, |t| t ^ 0x5555_5555);
            assert_eq!(substituted.len(), data.len());
            let mut fields = vec![false; data.len()];
            for r in &refs {
                fields[r.offset as usize..r.offset as usize + 4].fill(true);
            }
            for (i, (a, b)) in data.iter().zip(&substituted).enumerate() {
                assert!(fields[i] || a == b, "byte {i} changed outside a reference");
            }
        }
        None => {
            let mut targets: Vec<u64> = refs.iter().map(|r| r.target).collect();
            targets.sort_unstable();
            targets.dedup();
            assert!(
                targets.len() > MAX_TARGETS,
                "{} references to {} targets, yet no projection",
                refs.len(),
                targets.len()
            );
        }
    }
}

/// Refusals of the reference-projection codec are corrupt frames, never anything else.
fn corrupt<T: std::fmt::Debug>(result: &Result<T, Error>, what: &str) {
    if let Err(e) = result {
        assert!(matches!(e, Error::CorruptFrame(_)), "{what}: {e:?}");
    }
}

fn side(frame: &[u8]) {
    let fx = exe::fixture();
    let decoded = Projection::decode(fx.old_refs.clone(), frame);
    corrupt(&decoded, "decoding a side object");
    let Ok(projection) = decoded else {
        return;
    };
    // Whatever layout and labels it holds, projection is undone, and frames decode or fail
    // cleanly.
    for chunk in fx.chunks.iter().step_by(3) {
        let window = fx.window(chunk);
        let mut data = chunk.data.clone();
        projection.project(window, chunk.window_at, &chunk.ops, &mut data, chunk.at);
        projection.unproject(window, chunk.window_at, &chunk.ops, &mut data, chunk.at);
        assert_eq!(data, chunk.data);
        let decoder = WindowDecoder::new(window.to_vec());
        let out = projection.decompress(
            &decoder,
            chunk.window_at,
            &chunk.frame,
            chunk.data.len(),
            chunk.at,
        );
        corrupt(&out, "decoding with a fuzzed side object");
        assert_eq!(
            out.expect("an honest frame decodes whatever the map").len(),
            chunk.data.len()
        );
    }
    if frame == fx.side {
        for chunk in &fx.chunks {
            decode_honest(fx, &projection, chunk);
        }
    }
}

fn decode_honest(fx: &Fixture, projection: &Projection, chunk: &exe::Chunk) {
    let decoder = WindowDecoder::new(fx.window(chunk).to_vec());
    let out = projection
        .decompress(
            &decoder,
            chunk.window_at,
            &chunk.frame,
            chunk.data.len(),
            chunk.at,
        )
        .expect("an honest frame decodes");
    assert_eq!(out, chunk.data, "chunk at {}", chunk.at);
}

fn projected(input: &mut Reader<'_>) {
    let fx = exe::fixture();
    let chunk = &fx.chunks[usize::from(input.u16()) % fx.chunks.len()];
    let flags = input.u8();
    let old_len = fx.old.len() as u64;
    let (mut start, mut window_len) = (chunk.window_at, chunk.window_len);
    if flags & 1 != 0 {
        start = u64::from(input.u32()) % old_len;
        window_len = u64::from(input.u32()) % (old_len - start + 1);
    }
    let window_at = if flags & 2 != 0 {
        u64::from(input.u32()) | u64::from(input.u32()) << 32
    } else {
        start
    };
    let at = if flags & 4 != 0 {
        u64::from(input.u32()) | u64::from(input.u32()) << 32
    } else {
        chunk.at
    };
    let len = if flags & 8 != 0 {
        (input.u32() % (MAX_CHUNK + 1)) as usize
    } else {
        chunk.data.len()
    };
    let frame = input.rest();
    let window = WindowDecoder::new(fx.old[start as usize..(start + window_len) as usize].to_vec());
    let codec = DeltaCodec::BsdiffRefs { map: 0 };
    let refs = RefContext {
        projection: &fx.projection,
        window_at,
        at,
    };
    let got = codec.decode(&window, frame, len, Some(refs));
    corrupt(&got, "decoding a projected frame");
    let plain = window.decompress_bsdiff_ops(frame, len, DiffStream::Sparse);
    match (got, plain) {
        (Ok(out), Ok((plain, ops))) => {
            assert_eq!(out.len(), len);
            let mut again = out.clone();
            fx.projection
                .project(window.window(), window_at, &ops, &mut again, at);
            assert_eq!(
                again, plain,
                "projecting the output does not give the frame's bytes"
            );
            let honest = flags & 0x0f == 0 && frame == chunk.frame;
            if honest {
                assert_eq!(out, chunk.data, "an honest frame decodes to its chunk");
            }
        }
        (Err(_), Err(_)) => {}
        (got, plain) => panic!(
            "projection changed whether a frame decodes: {:?} against {:?}",
            got.map(|d| d.len()),
            plain.map(|d| d.0.len())
        ),
    }
    let without = codec.decode(&window, frame, len, None);
    assert!(
        matches!(without, Err(Error::CorruptFrame(_))),
        "a projected frame without its map: {without:?}"
    );
}

/// One bsdiff instruction before it is fitted (or not) to the data and window.
#[derive(Debug, Arbitrary)]
struct Op {
    src: u64,
    add: u64,
    copy: u64,
}

#[derive(Debug, Arbitrary)]
struct RoundTrip {
    data: Vec<u8>,
    ops: Vec<Op>,
    /// Keep the instructions as given (any `u64`s, likely invalid) instead of fitting them.
    raw: bool,
    /// The window: start and length in the old image (modulo).
    window: (u32, u32),
    /// The window's offset in the old file: the window's start if `None`.
    window_at: Option<u64>,
    /// The data's offset in the new file (modulo the new image's length unless `raw`).
    at: u64,
}

impl RoundTrip {
    fn run(&self, fx: &Fixture) {
        let old_len = fx.old.len() as u64;
        let start = u64::from(self.window.0) % old_len;
        let len = u64::from(self.window.1) % (old_len - start + 1);
        let window = &fx.old[start as usize..(start + len) as usize];
        let window_at = self.window_at.unwrap_or(start);
        let at = if self.raw {
            self.at
        } else {
            self.at % fx.new.len() as u64
        };
        let ops = self.ops(len);
        let data = &self.data[..];

        // The publisher's side: votes, labels, the side object; the client decodes it.
        let layout = Elf::parse(&fx.new).expect("the new image parses").layout();
        let mut votes = Votes::new(&fx.old_refs, &layout);
        votes.add(window, window_at, &ops, data, at);
        votes.add(&fx.old, 0, &exe::ops(&fx.old, &fx.new), &fx.new, 0);
        let labels = votes.labels();
        let encoder = Projection::new(fx.old_refs.clone(), layout.clone(), &labels)
            .expect("labels of the old image's targets");
        let side = encode_side(&layout, &labels, 1).expect("encoding a side object");
        let decoder = Projection::decode(fx.old_refs.clone(), &side)
            .expect("a side object the encoder made decodes");

        let mut projected = data.to_vec();
        encoder.project(window, window_at, &ops, &mut projected, at);
        let mut back = projected.clone();
        decoder.unproject(window, window_at, &ops, &mut back, at);
        assert_eq!(back, data, "unproject(project(data)) with {ops:?}");
        if self.raw {
            return;
        }
        let mut encoded = WindowEncoder::new(window, 1).expect("a window");
        let Some(frame) = encoded
            .compress_bsdiff_as(&projected, &ops, DiffStream::Sparse)
            .expect("fitted instructions encode")
        else {
            return;
        };
        let out = decoder
            .decompress(
                &WindowDecoder::new(window.to_vec()),
                window_at,
                &frame,
                data.len(),
                at,
            )
            .expect("a projected frame the encoder made decodes");
        assert_eq!(out, data, "a projected frame decodes to its data");
    }

    /// The instructions: as given when `raw`, else fitted to cover the data exactly and to
    /// read inside a window of `window` bytes.
    fn ops(&self, window: u64) -> Vec<BsdiffOp> {
        if self.raw {
            return self
                .ops
                .iter()
                .map(|o| BsdiffOp {
                    src: o.src,
                    add: o.add,
                    copy: o.copy,
                })
                .collect();
        }
        let len = self.data.len() as u64;
        let mut at = 0u64;
        let mut ops = Vec::new();
        for o in &self.ops {
            if at == len {
                break;
            }
            let add = (o.add % (len - at + 1)).min(window);
            let src = o.src % (window - add + 1);
            let copy = o.copy % (len - at - add + 1);
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
}
