//! Delta frames: each new chunk compressed against a window of an earlier release.
//!
//! Recompiled executables change almost everywhere (addresses shift), so few chunks repeat
//! exactly, but nearly every chunk is a small edit of bytes at about the same place in the old
//! file. For each file that also exists in the base release, the new chunks are grouped into
//! segments of about `segment_bytes`; each segment is aligned to the base file and compressed,
//! chunk by chunk, with a `window_bytes` window of the base file around the aligned position as
//! a raw-content zstd dictionary. The window's match tables are built once per segment.
//!
//! Alignment comes from anchors: small content-defined chunks (avg 1 KiB) that occur exactly
//! once in both files. A segment's offset shift is the median shift of the anchors inside it.
//!
//! Each chunk is also encoded as a bsdiff frame: bidiff matches the whole segment against the
//! window (a suffix array of the window, built once per segment; against older bases, hashed
//! seeds: [`matcher`]), and each chunk gets the instructions covering its bytes. The smallest
//! frame of the codecs ([`codec`]) is kept.

mod codec;
mod matcher;
mod refs;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;
use relsync_chunker::{ChunkId, ChunkParams, Chunker, frame};
use relsync_format::manifest::{
    Base, ChunkEntry, Delta, DeltaCodec, EntryKind, RefMap, TrustedManifest, Window,
};
use relsync_format::paths::pack_path;
use relsync_format::{ManifestId, RelPath};

use self::codec::{Prepared, SegmentEncoder};
use super::pack::PackWriter;
use super::timing::{self, Work};
use crate::origin::Origin;

/// How delta frames are made.
///
/// # Defaults
/// `window_bytes` 8 MiB, `segment_bytes` 4 MiB, `zstd_level` 19, `bsdiff` and `refs` on,
/// `full_bases` 1 (measured on ruff and numpy; see docs/benchmarks.md).
#[derive(Debug, Clone, Copy)]
pub struct DeltaParams {
    /// Bytes of the base file used as the dictionary of a segment.
    pub window_bytes: u64,
    /// New bytes per segment (one window each).
    pub segment_bytes: u64,
    /// zstd level of the window: zstd window frames and bsdiff's extra bytes.
    pub zstd_level: i32,
    /// Also try bsdiff frames (slower to publish, smaller for recompiled code).
    pub bsdiff: bool,
    /// Also try bsdiff frames with projected references on x86-64 ELF executables (needs
    /// `bsdiff`; a second match per segment).
    pub refs: bool,
    /// How many of the nearest bases get `zstd_level` and exact matches; older ones get at
    /// most [`OLDER_BASE_LEVEL`] and hashed seeds (see [`DeltaParams::for_base`]).
    pub full_bases: usize,
    /// bsdiff's matches from a suffix array (the longest at every position) rather than from
    /// hashed seeds (see `matcher`).
    pub exact_matches: bool,
}

impl Default for DeltaParams {
    fn default() -> Self {
        Self {
            window_bytes: 8 << 20,
            segment_bytes: 4 << 20,
            zstd_level: 19,
            bsdiff: true,
            refs: true,
            full_bases: 1,
            exact_matches: true,
        }
    }
}

/// The highest zstd level of bsdiff's control and diff streams. They hold no long matches:
/// on ruff, level 19 makes them 0.25% smaller than 15 for 3 times the time.
pub const MAX_STREAM_LEVEL: i32 = 15;

/// The highest zstd level of the windows of bases older than [`DeltaParams::full_bases`].
/// Level 19's window tables (binary trees) cost about 10 times level 12's (hash chains); on
/// ruff, clients 2 and 3 releases behind download 13% more for a third of the time, still
/// 0.68x pairwise bsdiff. Most clients are one release behind and get every byte's worth.
pub const OLDER_BASE_LEVEL: i32 = 12;

impl DeltaParams {
    /// The zstd level of bsdiff's control and diff streams.
    pub fn stream_level(&self) -> i32 {
        self.zstd_level.min(MAX_STREAM_LEVEL)
    }

    /// The parameters for the base `back` releases before the new one (1: its parent).
    pub fn for_base(self, back: usize) -> Self {
        if back <= self.full_bases {
            return self;
        }
        Self {
            zstd_level: self.zstd_level.min(OLDER_BASE_LEVEL),
            exact_matches: false,
            ..self
        }
    }
}

/// Segments encoded in parallel before their frames are appended (bounds memory).
const SEGMENTS_PER_BATCH: usize = 8;

/// A delta frame is kept only if it saves at least this much over the plain frame, since each
/// costs manifest bytes too.
const MIN_SAVING_BYTES: usize = 16;

/// An earlier release on the origin, readable chunk by chunk.
pub struct BaseRelease<'a> {
    pub id: ManifestId,
    pub manifest: TrustedManifest,
    origin: &'a Origin,
}

impl<'a> BaseRelease<'a> {
    pub fn load(origin: &'a Origin, id: ManifestId) -> Result<Option<Self>> {
        let Some(bytes) = origin.read_manifest(&id)? else {
            return Ok(None);
        };
        let manifest = relsync_format::dangerous::trusted_manifest(bytes)
            .with_context(|| format!("base manifest {id}"))?;
        Ok(Some(Self {
            id,
            manifest,
            origin,
        }))
    }

    /// Reads `len` bytes at `offset` of file `entry` by decoding its chunks from the packs.
    fn read(&self, entry: usize, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        let EntryKind::File(file) = &self.manifest.entries[entry].kind else {
            return Ok(out);
        };
        let end = offset + len;
        for (at, index, chunk) in self.manifest.chunk_spans(file) {
            if at >= end {
                break;
            }
            let chunk_end = at + u64::from(chunk.len);
            if chunk_end > offset {
                let data = self.chunk(index, chunk)?;
                let from = offset.saturating_sub(at) as usize;
                let to = (end.min(chunk_end) - at) as usize;
                out.extend_from_slice(&data[from..to]);
            }
        }
        Ok(out)
    }

    fn chunk(&self, index: u32, chunk: &ChunkEntry) -> Result<Vec<u8>> {
        let pack = self.manifest.packs[chunk.pack as usize].id;
        let frame = self.origin.read_range(
            &pack_path(&pack),
            self.manifest.frame_offset(index),
            chunk.frame_len as usize,
        )?;
        let data = frame::decompress(&frame, chunk.len as usize)?;
        anyhow::ensure!(
            ChunkId::of(&data) == chunk.id,
            "base chunk {} is corrupt",
            chunk.id
        );
        Ok(data)
    }

    fn file_index(&self) -> HashMap<&RelPath, usize> {
        self.manifest
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, EntryKind::File(_)))
            .map(|(i, e)| (&e.path, i))
            .collect()
    }

    fn file_len(&self, entry: usize) -> u64 {
        match &self.manifest.entries[entry].kind {
            EntryKind::File(f) => f.size,
            _ => 0,
        }
    }
}

/// Reads a base file sequentially, for anchoring.
struct BaseFileReader<'b, 'a> {
    base: &'b BaseRelease<'a>,
    entry: usize,
    offset: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for BaseFileReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf = self
                .base
                .read(self.entry, self.offset, 1 << 20)
                .map_err(std::io::Error::other)?;
            self.offset += self.buf.len() as u64;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// (new offset, old offset) pairs of small chunks found exactly once in each file.
fn anchors(new: impl Read, old: impl Read) -> Result<Vec<(u64, u64)>> {
    let params = ChunkParams::new(256, 1024, 8192)?;
    let mut old_at: HashMap<ChunkId, Option<u64>> = HashMap::new();
    for chunk in Chunker::new(old, params)? {
        let chunk = chunk?;
        old_at
            .entry(ChunkId::of(&chunk.data))
            .and_modify(|v| *v = None)
            .or_insert(Some(chunk.offset));
    }
    let mut seen: HashMap<ChunkId, Option<u64>> = HashMap::new();
    for chunk in Chunker::new(new, params)? {
        let chunk = chunk?;
        seen.entry(ChunkId::of(&chunk.data))
            .and_modify(|v| *v = None)
            .or_insert(Some(chunk.offset));
    }
    let mut pairs: Vec<(u64, u64)> = seen
        .into_iter()
        .filter_map(|(id, new)| Some((new?, old_at.get(&id).copied().flatten()?)))
        .collect();
    pairs.sort_unstable();
    Ok(pairs)
}

/// The old offset matching new offset `at` of a segment spanning `start..end`.
fn align(anchors: &[(u64, u64)], start: u64, end: u64, new_len: u64, old_len: u64) -> u64 {
    let lo = anchors.partition_point(|a| a.0 < start);
    let hi = anchors.partition_point(|a| a.0 < end);
    let mut shifts: Vec<i64> = anchors[lo..hi]
        .iter()
        .map(|&(n, o)| o as i64 - n as i64)
        .collect();
    if shifts.is_empty() {
        // The nearest anchor on either side, else proportional.
        let near = [lo.checked_sub(1), (hi < anchors.len()).then_some(hi)];
        shifts = near
            .into_iter()
            .flatten()
            .map(|i| anchors[i].1 as i64 - anchors[i].0 as i64)
            .collect();
    }
    let mid = (start + end) / 2;
    if shifts.is_empty() {
        return (mid as u128 * old_len as u128 / new_len.max(1) as u128) as u64;
    }
    shifts.sort_unstable();
    (mid as i64 + shifts[shifts.len() / 2]).clamp(0, old_len as i64) as u64
}

/// The window of `old_len` bytes centred on `center`, never starting with zstd's dictionary
/// magic.
fn window_around(center: u64, old_len: u64, window_bytes: u64) -> (u64, u64) {
    let len = window_bytes.min(old_len);
    let start = center.saturating_sub(len / 2).min(old_len - len);
    (start, len)
}

/// One segment: consecutive new chunks of one file and their window.
struct Segment {
    new_path: std::path::PathBuf,
    /// The new file's index in the manifest's entries.
    entry: u32,
    base_entry: usize,
    window: (u64, u64),
    /// (chunk index, offset in the new file)
    chunks: Vec<(u32, u64)>,
}

/// A new file of the release: where it is on disk, its path and (offset, chunk) list.
pub struct NewFile<'m> {
    /// Its index in the manifest's entries.
    pub entry: u32,
    pub source: &'m Path,
    pub path: &'m RelPath,
    pub size: u64,
    pub chunks: &'m [u32],
}

/// Encodes delta frames of `files` against `base`, appending them to `packs`.
pub fn encode(
    base: &BaseRelease<'_>,
    files: &[NewFile<'_>],
    chunks: &[ChunkEntry],
    params: DeltaParams,
    packs: &mut PackWriter<'_>,
) -> Result<Base> {
    let segments = segments(base, files, chunks, params)?;
    let mut out = Base {
        manifest: base.id,
        version: base.manifest.version.clone(),
        windows: Vec::new(),
        deltas: Vec::new(),
        refs: Vec::new(),
    };
    let mut maps: Vec<(u32, u32, Vec<u8>)> = Vec::new();
    let mut rest: Vec<&Segment> = Vec::new();
    for file in segments.chunk_by(|a, b| a.new_path == b.new_path) {
        let file: Vec<&Segment> = file.iter().collect();
        if params.refs && params.bsdiff && is_elf(&file[0].new_path)? {
            let map = maps.len() as u32;
            if let Some(encoded) = refs::encode_file(base, &file, chunks, params, map)? {
                for (segment, frames) in file.iter().zip(encoded.segments) {
                    append(&mut out, segment, frames, packs)?;
                }
                if let Some(frame) = encoded.map {
                    maps.push((file[0].base_entry as u32, file[0].entry, frame));
                }
                continue;
            }
        }
        rest.extend(file);
    }
    for batch in rest.chunks(SEGMENTS_PER_BATCH) {
        let encoded: Vec<Encoded> = batch
            .par_iter()
            .map(|segment| encode_segment(base, segment, chunks, params))
            .collect::<Result<_>>()?;
        for (segment, frames) in batch.iter().zip(encoded) {
            append(&mut out, segment, frames, packs)?;
        }
    }
    // Reference maps follow the base's deltas in pack order.
    for (base_entry, entry, frame) in maps {
        let pack = packs.append(&frame)?;
        out.refs.push(RefMap {
            base_entry,
            entry,
            pack,
            frame_len: frame.len() as u32,
            hash: ChunkId::of(&frame),
        });
    }
    Ok(out)
}

/// Appends a segment's frames to the packs and lists them in `out`.
fn append(
    out: &mut Base,
    segment: &Segment,
    (offset, len, frames): Encoded,
    packs: &mut PackWriter<'_>,
) -> Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    let window = out.windows.len() as u32;
    out.windows.push(Window {
        entry: segment.base_entry as u32,
        offset,
        len: len as u32,
    });
    for (chunk, codec, frame) in frames {
        let pack = packs.append(&frame)?;
        out.deltas.push(Delta {
            chunk,
            window,
            pack,
            frame_len: frame.len() as u32,
            codec,
        });
    }
    Ok(())
}

/// Whether the file at `path` starts like an ELF image.
fn is_elf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF")
}

/// The chunks of `files` that `base` lacks, grouped into segments of about
/// `params.segment_bytes`, each with the window of the base file aligned to it.
fn segments(
    base: &BaseRelease<'_>,
    files: &[NewFile<'_>],
    chunks: &[ChunkEntry],
    params: DeltaParams,
) -> Result<Vec<Segment>> {
    let known: HashSet<ChunkId> = base.manifest.chunks.iter().map(|c| c.id).collect();
    let base_files = base.file_index();
    let mut done: HashSet<u32> = HashSet::new();
    let mut segments = Vec::new();
    for file in files {
        let Some(&base_entry) = base_files.get(file.path) else {
            continue;
        };
        let old_len = base.file_len(base_entry);
        if old_len == 0 {
            continue;
        }
        let mut wanted = Vec::new();
        let mut offset = 0u64;
        for &index in file.chunks {
            let chunk = &chunks[index as usize];
            if !known.contains(&chunk.id) && done.insert(index) {
                wanted.push((index, offset));
            }
            offset += u64::from(chunk.len);
        }
        if wanted.is_empty() {
            continue;
        }
        let new = File::open(file.source)
            .with_context(|| format!("opening {}", file.source.display()))?;
        let old = BaseFileReader {
            base,
            entry: base_entry,
            offset: 0,
            buf: Vec::new(),
            pos: 0,
        };
        let anchors = timing::time(Work::Anchors, || anchors(std::io::BufReader::new(new), old))?;
        let mut current: Vec<(u32, u64)> = Vec::new();
        let flush = |current: &mut Vec<(u32, u64)>, segments: &mut Vec<Segment>| {
            let Some(&(_, start)) = current.first() else {
                return;
            };
            let &(last, last_at) = current.last().unwrap_or(&(0, start));
            let end = last_at + u64::from(chunks[last as usize].len);
            let center = align(&anchors, start, end, file.size, old_len);
            segments.push(Segment {
                new_path: file.source.to_path_buf(),
                entry: file.entry,
                base_entry,
                window: window_around(center, old_len, params.window_bytes),
                chunks: std::mem::take(current),
            });
        };
        for (index, at) in wanted {
            if let Some(&(_, start)) = current.first()
                && at + u64::from(chunks[index as usize].len) - start > params.segment_bytes
            {
                flush(&mut current, &mut segments);
            }
            current.push((index, at));
        }
        flush(&mut current, &mut segments);
    }
    Ok(segments)
}

/// A segment's window as used (offset, length) and its delta frames.
type Encoded = (u64, u64, Vec<(u32, DeltaCodec, Vec<u8>)>);

fn encode_segment(
    base: &BaseRelease<'_>,
    segment: &Segment,
    chunks: &[ChunkEntry],
    params: DeltaParams,
) -> Result<Encoded> {
    let (start, len) = segment.window;
    let mut window = timing::time(Work::BaseRead, || base.read(segment.base_entry, start, len))?;
    let start = window_start(&window, start, start);
    if start > segment.window.0 {
        window.remove(0);
    }
    let file = File::open(&segment.new_path)
        .with_context(|| format!("opening {}", segment.new_path.display()))?;
    // The new bytes the segment spans, gaps between its chunks included.
    let (first, last) = match (segment.chunks.first(), segment.chunks.last()) {
        (Some(&(_, first)), Some(&(index, at))) => {
            (first, at + u64::from(chunks[index as usize].len))
        }
        _ => return Ok((start, window.len() as u64, Vec::new())),
    };
    let mut new = vec![0u8; (last - first) as usize];
    file.read_exact_at(&mut new, first)
        .with_context(|| format!("reading {}", segment.new_path.display()))?;
    let mut encoder = SegmentEncoder::new(&window, &new, params, Prepared::default())?;

    let mut frames = Vec::new();
    for &(index, at) in &segment.chunks {
        let entry = &chunks[index as usize];
        let from = at - first;
        let data = &new[from as usize..][..entry.len as usize];
        anyhow::ensure!(
            ChunkId::of(data) == entry.id,
            "{} changed while it was being published",
            segment.new_path.display()
        );
        if let Some((codec, frame)) = encoder.smallest(data, from)?
            && frame.len() + MIN_SAVING_BYTES < entry.frame_len as usize
        {
            frames.push((index, codec, frame));
        }
    }
    Ok((start, window.len() as u64, frames))
}

/// Where a window of the old file that would start at `start` starts: a byte later if
/// its bytes (`bytes`, holding the old file from `from`) begin with zstd's dictionary magic.
fn window_start(bytes: &[u8], start: u64, from: u64) -> u64 {
    let at = (start - from) as usize;
    match bytes.get(at..at + 4) {
        Some(head) if head == frame::DICTIONARY_MAGIC => start + 1,
        _ => start,
    }
}

/// The manifests `depth` steps back from `start` along `parent` links.
pub fn base_chain(
    origin: &Origin,
    start: Option<ManifestId>,
    depth: usize,
) -> Result<Vec<BaseRelease<'_>>> {
    let mut out = Vec::new();
    let mut next = start;
    while let Some(id) = next {
        if out.len() == depth {
            break;
        }
        let Some(base) = BaseRelease::load(origin, id)? else {
            break;
        };
        next = base.manifest.parent;
        out.push(base);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_bases_get_a_cheaper_window_and_everything_else_unchanged() {
        let params = DeltaParams::default();
        assert_eq!(params.for_base(1).zstd_level, 19);
        assert_eq!(params.stream_level(), MAX_STREAM_LEVEL);
        let older = params.for_base(2);
        assert_eq!(older.zstd_level, OLDER_BASE_LEVEL);
        assert!(older.refs && older.bsdiff && !older.exact_matches);
        assert!(params.for_base(1).exact_matches);
        assert_eq!(older.window_bytes, params.window_bytes);
        let all = DeltaParams {
            full_bases: 4,
            ..params
        };
        assert_eq!(all.for_base(4).zstd_level, 19);
        let low = DeltaParams {
            zstd_level: 3,
            ..params
        };
        assert_eq!(low.for_base(3).zstd_level, 3, "never raised");
        assert_eq!(low.stream_level(), 3);
    }
}
