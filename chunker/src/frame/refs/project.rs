//! Reference projection: a delta frame's bytes with every reference field rewritten so that a
//! correctly predicted reference costs zero diff bytes.
//!
//! For each add region of a chunk's bsdiff instructions (old bytes `q..` paired with new bytes
//! `p..`) and each old reference wholly inside it, the encoder replaces the new field `v_new`
//! with `v_new - predicted + v_old`, where `predicted` is the field value that would name the
//! old target moved by its label shift, placed at `p` in the new layout. A reference that
//! moved as predicted becomes a copy of the old field: a zero diff byte. The decoder adds it
//! back. The pairs depend only on the instructions (in the frame), the old image and the
//! labels, so a chunk decodes alone.
//!
//! The labels (one shift per distinct old target) and the new image's [`Layout`] travel as one
//! side object per file ([`encode_side`]); the old references never travel: the client scans
//! its installed copy of the old file ([`OldRefs::scan`]).

use std::collections::HashMap;

use super::elf::{Elf, Image, Layout, Load};
use super::x86_64::{self, RefKind};
use crate::frame::varint::{self, put, unzigzag, zigzag};
use crate::frame::{BsdiffOp, DiffStream};
use crate::{Error, Result};

/// Version of the scanner and side-object layout; a change to either is a new version.
pub const VERSION: u8 = 1;
/// Most references an old file may have for projection (8 bytes each in a client's memory).
pub const MAX_REFERENCES: usize = 3 << 20;
/// Most distinct targets (8 bytes each in a client's memory).
pub const MAX_TARGETS: usize = 1 << 20;
/// Largest old file that can be projected (references are addressed with 32 bits).
pub const MAX_IMAGE_BYTES: u64 = u32::MAX as u64;

/// Target indexes use the low 30 bits of a site; the kind the top 2.
const KIND_SHIFT: u32 = 30;

/// The references of an old image, each with the index of its target among the image's
/// distinct targets (sorted by address). Both sides derive this from the old file alone.
#[derive(Debug, Clone)]
pub struct OldRefs {
    /// (file offset, kind << 30 | target index), by offset, not overlapping.
    sites: Vec<(u32, u32)>,
    /// Distinct targets, sorted.
    targets: Vec<u64>,
    /// The old image's layout.
    layout: Layout,
}

impl OldRefs {
    /// Scans `image`; `None` if it is not an x86-64 ELF image or exceeds the limits above.
    pub fn scan(image: &(impl Image + ?Sized)) -> Option<Self> {
        if image.len() > MAX_IMAGE_BYTES {
            return None;
        }
        let elf = Elf::parse(image)?;
        let layout = elf.layout();
        let refs = x86_64::scan(image, &elf, MAX_REFERENCES)?;
        let mut targets: Vec<u64> = refs.iter().map(|r| r.target).collect();
        targets.sort_unstable();
        targets.dedup();
        targets.shrink_to_fit();
        if targets.len() > MAX_TARGETS {
            return None;
        }
        let mut sites = Vec::with_capacity(refs.len());
        for r in refs {
            let index = targets.partition_point(|&t| t < r.target) as u32;
            sites.push((
                u32::try_from(r.offset).ok()?,
                kind_code(r.kind) << KIND_SHIFT | index,
            ));
        }
        Some(Self {
            sites,
            targets,
            layout,
        })
    }

    /// How many references it found.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// Whether it found none.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// How many distinct targets they name.
    pub fn targets(&self) -> usize {
        self.targets.len()
    }

    /// The old image's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The sites wholly inside old file bytes `start..end`: (offset, kind, target index).
    fn within(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, RefKind, usize)> + '_ {
        let first = self.sites.partition_point(|s| u64::from(s.0) < start);
        self.sites[first..]
            .iter()
            .map(|&(offset, packed)| {
                let kind = RefKind::ALL[(packed >> KIND_SHIFT) as usize];
                let index = (packed & ((1 << KIND_SHIFT) - 1)) as usize;
                (u64::from(offset), kind, index)
            })
            .take_while(move |&(offset, _, _)| offset + 4 <= end)
    }

    /// A copy of `image` with every reference field holding its target's low 32 bits: what
    /// the encoder matches on, so that moved references do not break matches.
    pub fn substitute(&self, image: &[u8], target: impl Fn(u64) -> u64) -> Vec<u8> {
        let mut out = image.to_vec();
        for &(offset, packed) in &self.sites {
            let index = (packed & ((1 << KIND_SHIFT) - 1)) as usize;
            let at = offset as usize;
            if let (Some(&t), Some(field)) = (self.targets.get(index), out.get_mut(at..at + 4)) {
                field.copy_from_slice(&(target(t) as u32).to_le_bytes());
            }
        }
        out
    }
}

fn kind_code(kind: RefKind) -> u32 {
    RefKind::ALL.iter().position(|&k| k == kind).unwrap_or(0) as u32
}

/// (old start in the window, length, start in the chunk) of each add region of `ops`.
fn add_regions(ops: &[BsdiffOp]) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    let mut at = 0u64;
    ops.iter().filter_map(move |op| {
        let region = (op.src, op.add, at);
        // Instructions of a decoded frame add up to its chunk; others must not overflow.
        at = at.saturating_add(op.add).saturating_add(op.copy);
        (op.add > 0).then_some(region)
    })
}

fn field(bytes: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// Each (old reference, new field) pair that `ops` align: the old site's offset in the old
/// file, its kind and target index, its old field value, and the new field's offset in the
/// chunk. `window` starts at old file offset `window_at`.
fn pairs<'a>(
    old: &'a OldRefs,
    window: &'a [u8],
    window_at: u64,
    ops: &'a [BsdiffOp],
) -> impl Iterator<Item = (RefKind, usize, u32, u64)> + 'a {
    add_regions(ops).flat_map(move |(src, len, to)| {
        let start = window_at.saturating_add(src);
        old.within(start, start.saturating_add(len))
            .filter_map(move |(offset, kind, index)| {
                let v_old = field(window, offset - window_at)?;
                Some((kind, index, v_old, to.saturating_add(offset - start)))
            })
    })
}

/// Shifts learned by the encoder: one per distinct old target, where the new release's
/// counterpart of that target is (`target + shift`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    shifts: Vec<i64>,
}

/// Votes for each old target's shift from the references that bsdiff's matches align, plus
/// the matches themselves for targets no reference votes on.
#[derive(Debug)]
pub struct Votes<'a> {
    old: &'a OldRefs,
    new: &'a Layout,
    counts: HashMap<usize, HashMap<i64, u32>>,
    /// (old file offset, length, new file offset) of every add region seen.
    regions: Vec<(u64, u64, u64)>,
}

impl<'a> Votes<'a> {
    /// No votes yet, for references of `old` into a new image laid out as `new`.
    pub fn new(old: &'a OldRefs, new: &'a Layout) -> Self {
        Self {
            old,
            new,
            counts: HashMap::new(),
            regions: Vec::new(),
        }
    }

    /// Counts the votes of new bytes `data` (at new file offset `at`) matched by `ops`
    /// against `window` (at old file offset `window_at`).
    pub fn add(&mut self, window: &[u8], window_at: u64, ops: &[BsdiffOp], data: &[u8], at: u64) {
        for (kind, index, _, p) in pairs(self.old, window, window_at, ops) {
            let base = at.checked_add(p).and_then(|p| kind.base(p, self.new));
            let (Some(v_new), Some(base)) = (field(data, p), base) else {
                continue;
            };
            let Some(&t_old) = self.old.targets.get(index) else {
                continue;
            };
            let shift = kind.target(base, v_new).wrapping_sub(t_old) as i64;
            *self
                .counts
                .entry(index)
                .or_default()
                .entry(shift)
                .or_default() += 1;
        }
        for (src, len, to) in add_regions(ops) {
            self.regions
                .push((window_at.saturating_add(src), len, at.saturating_add(to)));
        }
    }

    /// Each target's shift: the most voted, counting two more for the previous
    /// target's shift (the smaller on a tie); for a target without votes, the shift of the
    /// longest match holding its bytes; else the previous target's.
    pub fn labels(mut self) -> Labels {
        self.regions.sort_unstable();
        let mut shifts = Vec::with_capacity(self.old.targets.len());
        let mut previous = 0i64;
        for (index, &target) in self.old.targets.iter().enumerate() {
            let shift = match self.counts.get(&index) {
                Some(votes) => votes
                    .iter()
                    .max_by_key(|&(&shift, &count)| {
                        let stay = if shift == previous { STAY_VOTES } else { 0 };
                        (count + stay, std::cmp::Reverse(shift))
                    })
                    .map(|(&shift, _)| shift),
                None => self.moved(target),
            };
            previous = shift.unwrap_or(previous);
            shifts.push(previous);
        }
        Labels { shifts }
    }

    /// Where the longest add region holding old address `target` puts it in the new image.
    fn moved(&self, target: u64) -> Option<i64> {
        let offset = self.old.layout.offset_of(target)?;
        let k = self.regions.partition_point(|r| r.0 <= offset);
        let (old, _, new) = self.regions[k.saturating_sub(64)..k]
            .iter()
            .filter(|r| r.0.saturating_add(r.1) > offset)
            .max_by_key(|r| r.1)?;
        let new_va = self.new.address_of(new.checked_add(offset - old)?)?;
        Some(new_va.wrapping_sub(target) as i64)
    }
}

/// Extra votes for keeping the previous target's shift: a new run in the reference map costs
/// about what two mispredicted references do in the frames. On ruff's three pairs, delta frames
/// plus maps 1.3% smaller than with none (maps 12-17% smaller, frames smaller too).
const STAY_VOTES: u32 = 2;

/// The side object of one file: [`VERSION`], the new layout and the labels as runs of equal
/// shift over the old targets in address order, as one zstd frame.
pub fn encode_side(new: &Layout, labels: &Labels, level: i32) -> Result<Vec<u8>> {
    let mut out = vec![VERSION];
    put(&mut out, new.loads.len() as u64);
    for load in &new.loads {
        for v in [load.vaddr, load.offset, load.file_size, load.mem_size] {
            put(&mut out, v);
        }
    }
    put(&mut out, new.eh_frame_hdr.map_or(0, |a| a.wrapping_add(1)));
    put_runs(&mut out, labels);
    super::super::compress(&out, level)
}

/// Appends `labels` as runs of equal shift: a varint count and a zigzag varint change of
/// shift each.
fn put_runs(out: &mut Vec<u8>, labels: &Labels) {
    let mut previous = 0i64;
    let mut i = 0;
    while i < labels.shifts.len() {
        let shift = labels.shifts[i];
        let run = labels.shifts[i..]
            .iter()
            .take_while(|&&s| s == shift)
            .count();
        put(out, run as u64);
        put(out, zigzag(shift.wrapping_sub(previous)));
        previous = shift;
        i += run;
    }
}

/// The largest side object (decoded) for an old image with `targets` distinct targets.
pub fn max_side_len(targets: usize) -> usize {
    64 + Layout::MAX_LOADS * 40 + 20 * targets
}

/// What a client needs to decode a file's projected frames: the old references, and for
/// each target where its counterpart is in the new image, with the new layout.
#[derive(Debug)]
pub struct Projection {
    old: OldRefs,
    /// Per old target: the predicted new target.
    predicted: Vec<u64>,
    new: Layout,
}

impl Projection {
    /// The projection the encoder chose for `old` into an image laid out as `new`.
    pub fn new(old: OldRefs, new: Layout, labels: &Labels) -> Result<Self> {
        if labels.shifts.len() != old.targets.len() {
            return Err(corrupt("labels do not match the old image"));
        }
        let predicted = old
            .targets
            .iter()
            .zip(&labels.shifts)
            .map(|(&t, &s)| t.wrapping_add(s as u64))
            .collect();
        Ok(Self {
            old,
            predicted,
            new,
        })
    }

    /// Decodes side object `frame` ([`encode_side`]) for the client's scan `old` of the base
    /// file, checking every bound.
    pub fn decode(old: OldRefs, frame: &[u8]) -> Result<Self> {
        let side = super::super::decompress_declared(frame, max_side_len(old.targets.len()))?;
        let mut at = 0;
        if side.first() != Some(&VERSION) {
            return Err(corrupt("an unknown side-object version"));
        }
        at += 1;
        let loads = get(&side, &mut at)?;
        if loads > Layout::MAX_LOADS as u64 {
            return Err(corrupt(format!("{loads} loadable segments")));
        }
        let mut layout = Layout::default();
        for _ in 0..loads {
            let mut v = [0u64; 4];
            for slot in &mut v {
                *slot = get(&side, &mut at)?;
            }
            let [vaddr, offset, file_size, mem_size] = v;
            if offset.checked_add(file_size).is_none() || vaddr.checked_add(mem_size).is_none() {
                return Err(corrupt("a segment wraps around"));
            }
            if file_size > mem_size {
                // Its file bytes would map past its end (and past 2^64): ELF forbids it.
                return Err(corrupt("a segment with more file bytes than memory"));
            }
            layout.loads.push(Load {
                vaddr,
                offset,
                file_size,
                mem_size,
            });
        }
        layout.eh_frame_hdr = get(&side, &mut at)?.checked_sub(1);
        let mut shifts = Vec::with_capacity(old.targets.len());
        let mut shift = 0i64;
        while at < side.len() {
            let run = get(&side, &mut at)?;
            shift = shift.wrapping_add(unzigzag(get(&side, &mut at)?));
            let room = (old.targets.len() - shifts.len()) as u64;
            if run == 0 || run > room {
                return Err(corrupt(format!(
                    "a run of {run} labels where {room} remain"
                )));
            }
            shifts.resize(shifts.len() + run as usize, shift);
        }
        if shifts.len() != old.targets.len() {
            return Err(corrupt(format!(
                "{} labels for {} targets",
                shifts.len(),
                old.targets.len()
            )));
        }
        Self::new(old, layout, &Labels { shifts })
    }

    /// Rewrites the reference fields of `data` (a new chunk at new file offset `at`, matched
    /// by `ops` against `window` at old file offset `window_at`) for encoding.
    pub fn project(
        &self,
        window: &[u8],
        window_at: u64,
        ops: &[BsdiffOp],
        data: &mut [u8],
        at: u64,
    ) {
        self.rewrite(window, window_at, ops, data, at, |cur, predicted, old| {
            cur.wrapping_sub(predicted).wrapping_add(old)
        });
    }

    /// Undoes [`project`](Self::project) on decoded bytes.
    pub fn unproject(
        &self,
        window: &[u8],
        window_at: u64,
        ops: &[BsdiffOp],
        data: &mut [u8],
        at: u64,
    ) {
        self.rewrite(window, window_at, ops, data, at, |cur, predicted, old| {
            cur.wrapping_add(predicted).wrapping_sub(old)
        });
    }

    fn rewrite(
        &self,
        window: &[u8],
        window_at: u64,
        ops: &[BsdiffOp],
        data: &mut [u8],
        at: u64,
        f: impl Fn(u32, u32, u32) -> u32,
    ) {
        for (kind, index, v_old, p) in pairs(&self.old, window, window_at, ops) {
            let (Some(&predicted), Some(base)) = (
                self.predicted.get(index),
                at.checked_add(p).and_then(|p| kind.base(p, &self.new)),
            ) else {
                continue;
            };
            let Some(cur) = field(data, p) else {
                continue;
            };
            let value = f(cur, kind.field_for(base, predicted), v_old);
            let p = p as usize;
            data[p..p + 4].copy_from_slice(&value.to_le_bytes());
        }
    }

    /// A copy of new image `image` (whose references are `new_refs`) with every reference
    /// field holding the old target its new target was predicted from: with
    /// [`OldRefs::substitute`] on the old image, moved code matches again.
    pub fn substitute_new(&self, new_refs: &OldRefs, image: &[u8]) -> Vec<u8> {
        let mut back: HashMap<u64, u64> = HashMap::with_capacity(self.predicted.len());
        for (&predicted, &target) in self.predicted.iter().zip(&self.old.targets) {
            back.entry(predicted).or_insert(target);
        }
        new_refs.substitute(image, |t| back.get(&t).copied().unwrap_or(t))
    }
}

fn corrupt(reason: impl Into<String>) -> Error {
    Error::CorruptFrame(format!("reference side object: {}", reason.into()))
}

fn get(buf: &[u8], at: &mut usize) -> Result<u64> {
    varint::get(buf, at).map_err(corrupt)
}

impl Projection {
    /// Encodes chunk `data` (at new file offset `at`) as a projected bsdiff frame of the
    /// instructions `ops` against `encoder`'s window (at old file offset `window_at`): the
    /// chunk with its references projected, its diff bytes coded sparse. `None` if the
    /// instructions are too many for the chunk ([`crate::frame::max_control_len`]).
    pub fn compress(
        &self,
        encoder: &mut crate::frame::WindowEncoder,
        window_at: u64,
        ops: &[BsdiffOp],
        data: &[u8],
        at: u64,
    ) -> Result<Option<Vec<u8>>> {
        let mut projected = data.to_vec();
        self.project(encoder.window(), window_at, ops, &mut projected, at);
        encoder.compress_bsdiff_as(&projected, ops, DiffStream::Sparse)
    }

    /// Decodes a frame made by [`compress`](Self::compress) of a chunk at new file offset
    /// `at` against `window` (at old file offset `window_at`) into exactly `len` bytes.
    pub fn decompress(
        &self,
        window: &crate::frame::WindowDecoder,
        window_at: u64,
        frame: &[u8],
        len: usize,
        at: u64,
    ) -> Result<Vec<u8>> {
        let (mut data, ops) = window.decompress_bsdiff_ops(frame, len, DiffStream::Sparse)?;
        self.unproject(window.window(), window_at, &ops, &mut data, at);
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::super::elf::tests::image;
    use super::*;
    use crate::frame::{WindowDecoder, WindowEncoder};
    use proptest::prelude::*;

    /// `.text` of the test image starts at this file offset (see `elf::tests::image`).
    const TEXT_AT: u64 = 0x40 + 56;

    /// Code of `functions` 32-byte functions, each calling two others, with `inserted` bytes
    /// of new code after function `at`: calls across it shift.
    fn code(functions: usize, at: usize, inserted: usize) -> Vec<u8> {
        let start = |f: usize| (f * 32 + if f > at { inserted } else { 0 }) as i64;
        let mut text = Vec::new();
        for f in 0..functions {
            if f == at + 1 {
                text.extend(std::iter::repeat_n(0xCC, inserted));
            }
            let mut body = vec![0x55u8, 0x48, 0x89, 0xE5];
            for callee in [(f * 7 + 3) % functions, (f * 13 + 5) % functions] {
                let field_end = start(f) + body.len() as i64 + 5;
                body.push(0xE8);
                body.extend(((start(callee) - field_end) as i32).to_le_bytes());
            }
            body.resize(31, 0x90);
            body.push(0xC3);
            text.extend(body);
        }
        text
    }

    /// Old and new images and the bsdiff instructions a good matcher would find.
    fn recompiled() -> (Vec<u8>, Vec<u8>, Vec<BsdiffOp>) {
        let (functions, at, inserted) = (400, 150, 48);
        let old = image(&code(functions, at, 0));
        let new = image(&code(functions, at, inserted));
        let split = TEXT_AT + (at as u64 + 1) * 32;
        let ops = vec![
            BsdiffOp {
                src: 0,
                add: split,
                copy: inserted as u64,
            },
            BsdiffOp {
                src: split,
                add: old.len() as u64 - split,
                copy: 0,
            },
        ];
        (old, new, ops)
    }

    fn learned(old: &[u8], new: &[u8], ops: &[BsdiffOp]) -> Projection {
        let old_refs = OldRefs::scan(old).unwrap();
        let layout = Elf::parse(new).unwrap().layout();
        let mut votes = Votes::new(&old_refs, &layout);
        votes.add(old, 0, ops, new, 0);
        let labels = votes.labels();
        Projection::new(old_refs, layout, &labels).unwrap()
    }

    #[test]
    fn a_label_keeps_the_previous_shift_unless_clearly_outvoted() {
        let old = image(&code(400, 150, 0));
        let old_refs = OldRefs::scan(&old).unwrap();
        assert!(old_refs.targets.len() >= 4);
        let layout = Elf::parse(&old).unwrap().layout();
        let mut votes = Votes::new(&old_refs, &layout);
        let tally = |pairs: &[(i64, u32)]| pairs.iter().copied().collect::<HashMap<_, _>>();
        votes.counts.insert(0, tally(&[(10, 3)]));
        // 1 + STAY_VOTES for staying at 10 against 2 for 20: stays.
        votes.counts.insert(1, tally(&[(10, 1), (20, 2)]));
        // 1 + STAY_VOTES against 4: moves.
        votes.counts.insert(2, tally(&[(10, 1), (20, 4)]));
        // Only 30 voted: moves, whatever the bonus.
        votes.counts.insert(3, tally(&[(30, 1)]));
        let labels = votes.labels();
        assert_eq!(labels.shifts[..4], [10, 10, 20, 30]);
    }

    #[test]
    fn moved_calls_project_to_their_old_bytes_and_back() {
        let (old, new, ops) = recompiled();
        let refs = OldRefs::scan(&old).unwrap();
        assert_eq!(refs.len(), 800);
        let projection = learned(&old, &new, &ops);
        let mut projected = new.clone();
        projection.project(&old, 0, &ops, &mut projected, 0);
        // Every call now reads as its old field: the add regions are byte-identical.
        let split = ops[0].add as usize;
        let inserted = ops[0].copy as usize;
        let differs = |a: &[u8], b: &[u8]| a.iter().zip(b).filter(|(x, y)| x != y).count();
        // (Headers differ where the text grew; the code itself is compared.)
        let (text, end) = (TEXT_AT as usize, TEXT_AT as usize + 400 * 32);
        let moved = |b: &[u8], from: usize| b[from..from + end - split].to_vec();
        assert!(differs(&moved(&new, split + inserted), &moved(&old, split)) > 100);
        assert_eq!(differs(&projected[text..split], &old[text..split]), 0);
        assert_eq!(
            differs(&moved(&projected, split + inserted), &moved(&old, split)),
            0
        );
        projection.unproject(&old, 0, &ops, &mut projected, 0);
        assert_eq!(projected, new);
    }

    #[test]
    fn projected_frames_are_smaller_and_decode_alone_through_the_side_object() {
        let (old, new, ops) = recompiled();
        let projection = learned(&old, &new, &ops);
        let mut encoder = WindowEncoder::new(&old, 19).unwrap();
        let plain = encoder.compress_bsdiff(&new, &ops).unwrap().unwrap();
        let frame = projection
            .compress(&mut encoder, 0, &ops, &new, 0)
            .unwrap()
            .unwrap();
        assert!(
            frame.len() * 2 < plain.len(),
            "{} vs {}",
            frame.len(),
            plain.len()
        );

        let layout = Elf::parse(&new).unwrap().layout();
        let side = encode_side(&layout, &labels_of(&old, &new, &ops), 19).unwrap();
        let client = Projection::decode(OldRefs::scan(&old).unwrap(), &side).unwrap();
        let window = WindowDecoder::new(old.clone());
        let decoded = client.decompress(&window, 0, &frame, new.len(), 0).unwrap();
        assert_eq!(decoded, new);
    }

    fn labels_of(old: &[u8], new: &[u8], ops: &[BsdiffOp]) -> Labels {
        let old_refs = OldRefs::scan(old).unwrap();
        let layout = Elf::parse(new).unwrap().layout();
        let mut votes = Votes::new(&old_refs, &layout);
        votes.add(old, 0, ops, new, 0);
        votes.labels()
    }

    #[test]
    fn hostile_side_objects_are_refused_with_a_reason() {
        let (old, new, ops) = recompiled();
        let refs = || OldRefs::scan(&old).unwrap();
        let layout = Elf::parse(&new).unwrap().layout();
        let labels = labels_of(&old, &new, &ops);
        let good = encode_side(&layout, &labels, 3).unwrap();
        assert!(Projection::decode(refs(), &good).is_ok());
        let raw = crate::frame::decompress_declared(&good, 1 << 20).unwrap();
        let reject = |side: &[u8]| {
            let frame = crate::frame::compress(side, 3).unwrap();
            Projection::decode(refs(), &frame).unwrap_err().to_string()
        };
        let mut version = raw.clone();
        version[0] = 9;
        assert!(reject(&version).contains("version"));
        // Labels for fewer or more targets than the client's scan found.
        let targets = refs().targets() as u64;
        let runs = |counts: &[u64]| {
            let mut side = raw[..raw.len() - labels_len(&labels)].to_vec();
            for &c in counts {
                put(&mut side, c);
                put(&mut side, 0);
            }
            side
        };
        assert!(reject(&runs(&[targets - 1])).contains("labels for"));
        assert!(reject(&runs(&[targets, 1])).contains("remain"));
        assert!(reject(&runs(&[0, targets])).contains("a run of 0"));
        assert!(reject(&runs(&[u64::MAX])).contains("remain"));
        // Too many segments, a wrapping segment, truncation.
        let mut loads = vec![VERSION];
        put(&mut loads, 65);
        assert!(reject(&loads).contains("65 loadable segments"));
        let mut wraps = vec![VERSION];
        put(&mut wraps, 1);
        for v in [0, u64::MAX, 2, 2] {
            put(&mut wraps, v);
        }
        assert!(reject(&wraps).contains("wraps"));
        for len in 0..raw.len().min(64) {
            let _ = reject(&raw[..len]);
        }
        // A frame declaring more than any side object of this file may hold.
        let bomb =
            crate::frame::compress(&vec![0u8; max_side_len(targets as usize) + 1], 3).unwrap();
        assert!(Projection::decode(refs(), &bomb).is_err());
        assert!(Projection::decode(refs(), b"not zstd").is_err());
    }

    /// Refusals the test above does not cover, each with its reason.
    #[test]
    fn more_hostile_side_objects_are_refused_with_a_reason() {
        let (old, new, ops) = recompiled();
        let refs = || OldRefs::scan(&old).unwrap();
        let targets = refs().targets() as u64;
        let layout = Elf::parse(&new).unwrap().layout();
        let labels = labels_of(&old, &new, &ops);
        let raw = crate::frame::decompress_declared(
            &encode_side(&layout, &labels, 3).unwrap(),
            max_side_len(targets as usize),
        )
        .unwrap();
        let prefix = &raw[..raw.len() - labels_len(&labels)];
        let reject = |side: &[u8]| {
            let frame = crate::frame::compress(side, 3).unwrap();
            match Projection::decode(refs(), &frame) {
                Err(Error::CorruptFrame(reason)) => reason,
                other => panic!("accepted or not a corrupt frame: {:?}", other.map(|_| ())),
            }
        };
        // A layout and no labels at all; a label run cut short; a varint that never ends.
        assert!(reject(prefix).contains(&format!("0 labels for {targets} targets")));
        let mut cut = prefix.to_vec();
        put(&mut cut, targets);
        assert!(reject(&cut).contains("truncated varint"));
        let mut endless = prefix.to_vec();
        endless.extend([0xff; 11]);
        assert!(reject(&endless).contains("overlong varint"));
        // A segment with more file bytes than memory: its file offsets would map to
        // addresses past its end (here past 2^64).
        let mut short = vec![VERSION];
        put(&mut short, 1);
        for v in [u64::MAX - 8, 0, 64, 8] {
            put(&mut short, v);
        }
        put(&mut short, 0);
        put(&mut short, targets);
        put(&mut short, 0);
        assert!(reject(&short).contains("more file bytes than memory"));
        // The most segments a layout may list is fine; the labels still have to add up.
        let mut many = vec![VERSION];
        put(&mut many, Layout::MAX_LOADS as u64);
        for i in 0..Layout::MAX_LOADS as u64 {
            for v in [0x1000 * i, 0x1000 * i, 0x1000, 0x1000] {
                put(&mut many, v);
            }
        }
        put(&mut many, 0);
        let frame = crate::frame::compress(&many, 3).unwrap();
        assert!(Projection::decode(refs(), &frame).is_err());
        put(&mut many, targets);
        put(&mut many, 0);
        let frame = crate::frame::compress(&many, 3).unwrap();
        assert!(Projection::decode(refs(), &frame).is_ok());
        // An old image without references takes no labels.
        let bare = OldRefs::scan(&image(&[0x90; 64])).unwrap();
        assert_eq!(bare.targets(), 0);
        let mut none = vec![VERSION];
        put(&mut none, 0);
        put(&mut none, 0);
        let frame = crate::frame::compress(&none, 3).unwrap();
        assert!(Projection::decode(bare.clone(), &frame).is_ok());
        put(&mut none, 1);
        put(&mut none, 0);
        let frame = crate::frame::compress(&none, 3).unwrap();
        let err = Projection::decode(bare, &frame).unwrap_err().to_string();
        assert!(err.contains("a run of 1 labels where 0 remain"), "{err}");
    }

    /// Calls to `targets` distinct places, `n` in all (`n` at least `targets`).
    fn calls(n: usize, targets: usize) -> Vec<u8> {
        let mut text = Vec::with_capacity(5 * n + 1);
        for i in 0..n {
            // A call to the next instruction names a new target; the others call the last.
            let field = if i < targets {
                0
            } else {
                (5 * (targets as i64 - i as i64 - 1)) as i32
            };
            text.push(0xE8);
            text.extend(field.to_le_bytes());
        }
        // The scan looks 8 bytes ahead of an instruction.
        text.push(0xC3);
        text.extend([0xCC; 7]);
        text
    }

    #[test]
    fn images_over_the_reference_or_target_limits_are_not_projected() {
        let refs = OldRefs::scan(&image(&calls(1000, 10))).unwrap();
        assert_eq!((refs.len(), refs.targets()), (1000, 10));
        let refs = OldRefs::scan(&image(&calls(MAX_TARGETS, MAX_TARGETS))).unwrap();
        assert_eq!(refs.targets(), MAX_TARGETS);
        assert!(OldRefs::scan(&image(&calls(MAX_TARGETS + 1, MAX_TARGETS + 1))).is_none());
        // (`x86_64::scan` checks the boundary of its limit with a small one.)
        assert!(OldRefs::scan(&image(&calls(MAX_REFERENCES + 1, 1))).is_none());
    }

    /// A decoded layout that maps file bytes to addresses near 2^64 and offsets near 2^64
    /// never overflow while projecting.
    #[test]
    fn extreme_layouts_and_offsets_project_without_overflow() {
        let (old, new, ops) = recompiled();
        let labels = labels_of(&old, &new, &ops);
        let edge = Layout {
            loads: vec![Load {
                vaddr: u64::MAX - 0x10_0000,
                offset: 0,
                file_size: 0x10_0000,
                mem_size: 0x10_0000,
            }],
            eh_frame_hdr: Some(u64::MAX - 1),
        };
        let side = encode_side(&edge, &labels, 3).unwrap();
        let projection = Projection::decode(OldRefs::scan(&old).unwrap(), &side).unwrap();
        assert_eq!(projection.new, edge, "the layout survives its side object");
        for at in [0, 0xF_FFF0, u64::MAX - 8, u64::MAX] {
            for window_at in [0, u64::MAX - 8] {
                let mut data = new.clone();
                projection.project(&old, window_at, &ops, &mut data, at);
                projection.unproject(&old, window_at, &ops, &mut data, at);
                assert_eq!(data, new);
            }
        }
    }

    /// Instructions whose lengths add up past 2^64 (only a caller's bug can make them: a
    /// decoded frame's instructions add up to its chunk) neither panic nor break the round
    /// trip, on the encoder's side (votes) or in projection.
    #[test]
    fn instructions_that_overflow_neither_panic_nor_break_the_round_trip() {
        let (old, new, real_ops) = recompiled();
        let projection = learned(&old, &new, &real_ops);
        let huge = [
            BsdiffOp {
                src: 0,
                add: 64,
                copy: u64::MAX,
            },
            BsdiffOp {
                src: u64::MAX,
                add: u64::MAX,
                copy: u64::MAX,
            },
            BsdiffOp {
                src: TEXT_AT,
                add: 256,
                copy: 0,
            },
        ];
        for window_at in [0, u64::MAX] {
            for at in [0, u64::MAX - 1] {
                let mut data = new[..512].to_vec();
                projection.project(&old, window_at, &huge, &mut data, at);
                projection.unproject(&old, window_at, &huge, &mut data, at);
                assert_eq!(data, &new[..512]);
                let refs = OldRefs::scan(&old).unwrap();
                let layout = Elf::parse(&new).unwrap().layout();
                let mut votes = Votes::new(&refs, &layout);
                votes.add(&old, window_at, &huge, &new, at);
                votes.add(&old, 0, &real_ops, &new, 0);
                let _ = votes.labels();
            }
        }
    }

    /// Bytes the label runs take at the end of a raw side object.
    fn labels_len(labels: &Labels) -> usize {
        let mut out = Vec::new();
        put_runs(&mut out, labels);
        out.len()
    }

    /// The lean scan finds what the plain scan finds, on a real executable (this test).
    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn the_lean_scan_matches_the_reference_scan_on_a_real_binary() {
        let image = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = Elf::parse(&image).unwrap();
        let plain = x86_64::scan(&image, &elf, MAX_REFERENCES).unwrap();
        let lean = OldRefs::scan(&image).unwrap();
        assert!(plain.len() > 10_000, "{} references", plain.len());
        assert_eq!(lean.len(), plain.len());
        let mut targets: Vec<u64> = plain.iter().map(|r| r.target).collect();
        targets.sort_unstable();
        targets.dedup();
        assert_eq!(lean.targets, targets);
        for (r, (offset, kind, index)) in plain.iter().zip(lean.within(0, u64::MAX)) {
            assert_eq!((r.offset, r.kind, r.target), (offset, kind, targets[index]));
        }
    }

    proptest! {
        /// Any instructions, any bytes, any window position: unproject undoes project, and
        /// neither reads or writes out of bounds.
        #[test]
        fn unproject_inverts_project(
            ops in proptest::collection::vec((0u64..20_000, 0u64..3000, 0u64..200), 0..12),
            window_at in 0u64..2000,
            at in 0u64..100_000,
            seed in any::<u64>(),
        ) {
            let (old, new, real_ops) = recompiled();
            let projection = learned(&old, &new, &real_ops);
            let ops: Vec<BsdiffOp> = ops
                .into_iter()
                .map(|(src, add, copy)| BsdiffOp { src, add, copy })
                .collect();
            let window = &old[window_at as usize..];
            let len = ops.iter().map(|op| op.add + op.copy).sum::<u64>() as usize;
            let data: Vec<u8> = (0..len as u64)
                .map(|i| (i.wrapping_mul(seed | 1) >> 7) as u8)
                .collect();
            let mut rewritten = data.clone();
            projection.project(window, window_at, &ops, &mut rewritten, at);
            projection.unproject(window, window_at, &ops, &mut rewritten, at);
            prop_assert_eq!(rewritten, data);
        }
    }
}
