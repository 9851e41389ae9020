//! Chunking a release: each file is read once, in order, through FastCDC, and hashed whole on
//! the way. Chunks are gathered into batches of at most [`BATCH_BYTES`]; each batch is hashed
//! and compressed on all cores (rayon), then its new chunks are appended to the pack in release
//! order. Memory stays bounded by the batch size, whatever the file sizes. A chunk the parent
//! release already has keeps the parent's frame ([`Reuse`]), so it is not compressed again.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use relsync_chunker::{ChunkId, ChunkParams, Chunker, frame};
use relsync_format::manifest::ChunkEntry;
use relsync_format::{FileHash, RelPath};

use super::pack::PackWriter;
use super::reuse::Reuse;
use super::timing::{self, Work};
use super::walk::Item;

/// Raw bytes gathered before a batch is hashed and compressed in parallel.
const BATCH_BYTES: usize = 32 << 20;

/// A release's chunks, their plain frames packed.
#[derive(Debug)]
pub struct Chunked {
    /// Unique chunks in pack order: the manifest's chunk table.
    pub chunks: Vec<ChunkEntry>,
    /// Where each unique chunk was first seen: (entry index, offset in its file).
    pub sources: Vec<(usize, u64)>,
    /// Each entry's chunks, as indices into `chunks` (empty for anything but a file).
    pub file_chunks: Vec<Vec<u32>>,
    /// Each file's hash and length as read (`None` for anything but a file).
    pub file_meta: Vec<Option<(FileHash, u64)>>,
    /// Chunks counted with repeats.
    pub refs: u64,
    /// Bytes read.
    pub bytes: u64,
    /// New chunks whose plain frame was copied from the parent release.
    pub reused: u64,
}

/// Chunks every file of `items`, appending each new chunk's frame (zstd at `zstd_level`, or
/// the parent's frame from `reuse`) to `packs`. `progress` gets (bytes read, total bytes).
pub fn chunk_files(
    items: &[(RelPath, Item)],
    params: ChunkParams,
    zstd_level: i32,
    reuse: Option<&Reuse<'_>>,
    packs: &mut PackWriter<'_>,
    progress: &dyn Fn(u64, u64),
) -> Result<Chunked> {
    let total_bytes: u64 = items
        .iter()
        .map(|(_, i)| match i {
            Item::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    let mut table = ChunkTable {
        out: Chunked {
            chunks: Vec::new(),
            sources: Vec::new(),
            file_chunks: vec![Vec::new(); items.len()],
            file_meta: vec![None; items.len()],
            refs: 0,
            bytes: 0,
            reused: 0,
        },
        index: HashMap::new(),
        zstd_level,
        reuse,
    };
    let mut batch = Batch::default();
    for (entry, (_, item)) in items.iter().enumerate() {
        let Item::File { source, .. } = item else {
            continue;
        };
        let file = File::open(source).with_context(|| format!("opening {}", source.display()))?;
        let mut reader = HashingReader {
            inner: BufReader::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            len: 0,
        };
        let mut chunker = Chunker::new(&mut reader, params)?;
        while let Some(chunk) = timing::time(Work::Read, || chunker.next()) {
            let chunk = chunk.with_context(|| format!("reading {}", source.display()))?;
            table.out.bytes += chunk.data.len() as u64;
            batch.bytes += chunk.data.len();
            batch.items.push((entry, chunk.offset, chunk.data));
            if batch.bytes >= BATCH_BYTES {
                table.flush(&mut batch, packs)?;
                progress(table.out.bytes, total_bytes);
            }
        }
        drop(chunker);
        table.out.file_meta[entry] = Some((FileHash::from(reader.hasher.finalize()), reader.len));
    }
    table.flush(&mut batch, packs)?;
    progress(table.out.bytes, total_bytes);
    Ok(table.out)
}

/// Counts bytes as the chunker reads them, and hashes the whole file on the way.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    len: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// A chunk of a batch: (entry index, offset in the file, bytes).
type BatchItem = (usize, u64, Vec<u8>);

/// Chunks gathered for one parallel step.
#[derive(Default)]
struct Batch {
    items: Vec<BatchItem>,
    bytes: usize,
}

/// The chunk table under construction.
struct ChunkTable<'r, 'o> {
    out: Chunked,
    index: HashMap<ChunkId, u32>,
    zstd_level: i32,
    reuse: Option<&'r Reuse<'o>>,
}

impl ChunkTable<'_, '_> {
    /// Hashes and compresses a batch on all cores, then records it in release order.
    fn flush(&mut self, batch: &mut Batch, packs: &mut PackWriter<'_>) -> Result<()> {
        let items = std::mem::take(&mut batch.items);
        batch.bytes = 0;
        let ids: Vec<ChunkId> = items
            .par_iter()
            .map(|(_, _, d)| timing::time(Work::ChunkIds, || ChunkId::of(d)))
            .collect();
        let mut fresh = Vec::new();
        let mut seen_here = HashSet::new();
        for (k, id) in ids.iter().enumerate() {
            if !self.index.contains_key(id) && seen_here.insert(*id) {
                fresh.push(k);
            }
        }
        let frames = self.frames(&items, &ids, &fresh)?;
        self.out.reused += frames.reused;
        let mut frames = frames.frames.into_iter();
        let out = &mut self.out;
        for ((entry, offset, data), id) in items.iter().zip(ids) {
            let index = match self.index.get(&id) {
                Some(&i) => i,
                None => {
                    let Some(frame) = frames.next() else {
                        bail!("internal: frame count mismatch");
                    };
                    let pack = packs.append(&frame)?;
                    let i = out.chunks.len() as u32;
                    out.chunks.push(ChunkEntry {
                        id,
                        len: data.len() as u32,
                        pack,
                        frame_len: frame.len() as u32,
                    });
                    self.index.insert(id, i);
                    out.sources.push((*entry, *offset));
                    i
                }
            };
            out.file_chunks[*entry].push(index);
            out.refs += 1;
        }
        Ok(())
    }

    /// The frames of chunks `fresh` of a batch: the parent's where it has one, else compressed
    /// (both on all cores).
    fn frames(&self, items: &[BatchItem], ids: &[ChunkId], fresh: &[usize]) -> Result<Frames> {
        let (known, new): (Vec<usize>, Vec<usize>) = fresh
            .iter()
            .partition(|&&k| self.reuse.is_some_and(|r| r.has_chunk(&ids[k])));
        let level = self.zstd_level;
        let compressed: Vec<Vec<u8>> = new
            .par_iter()
            .map(|&k| timing::time(Work::PlainFrames, || frame::compress(&items[k].2, level)))
            .collect::<Result<_, _>>()?;
        let reused = match self.reuse {
            Some(reuse) if !known.is_empty() => {
                let chunks: Vec<(ChunkId, &[u8])> =
                    known.iter().map(|&k| (ids[k], &items[k].2[..])).collect();
                timing::time(Work::PlainReused, || reuse.plain_frames(&chunks))?
            }
            _ => Vec::new(),
        };
        // Back in batch order.
        let mut compressed = compressed.into_iter();
        let count = known.len() as u64;
        let mut reused = reused.into_iter();
        let mut known = known.iter().peekable();
        let mut frames = Vec::with_capacity(fresh.len());
        for &k in fresh {
            let frame = if known.next_if(|&&j| j == k).is_some() {
                reused.next()
            } else {
                compressed.next()
            };
            frames.push(frame.context("internal: frame count mismatch")?);
        }
        Ok(Frames {
            frames,
            reused: count,
        })
    }
}

/// The frames of a batch's new chunks, in batch order.
struct Frames {
    frames: Vec<Vec<u8>>,
    /// How many were copied from the parent.
    reused: u64,
}
