//! Frames already on the origin. A release shares most chunks with its parent (the channel's
//! current release), and those chunks' plain frames, and the solid frames of runs that did not
//! change, are already in the parent's packs. They are copied from there instead of being
//! compressed again, so publishing costs what changed, not what the release holds.
//!
//! Every copied frame is checked first: a plain frame must decode to the chunk's bytes, a solid
//! frame to chunks with the run's ids. zstd decodes about 400 times faster than level 19
//! compresses, so the check costs little.

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use rayon::prelude::*;
use relsync_chunker::{ChunkId, frame};
use relsync_format::ManifestId;
use relsync_format::manifest::{ChunkEntry, SolidFrame, TrustedManifest};
use relsync_format::paths::pack_path;

use crate::origin::Origin;

/// Frames bigger than this are read alone; smaller neighbours are read together.
const MAX_READ_BYTES: u64 = 8 << 20;

/// The parent release's frames, by chunk id.
pub struct Reuse<'a> {
    origin: &'a Origin,
    manifest: TrustedManifest,
    /// Chunk id to its index in the parent's chunk table.
    chunks: HashMap<ChunkId, u32>,
    /// A solid frame's first chunk id to the frame's index.
    solid: HashMap<ChunkId, usize>,
}

impl std::fmt::Debug for Reuse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reuse")
            .field("manifest", &self.manifest.id())
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Reuse<'a> {
    /// The frames of `parent` on `origin`, if there is one.
    pub fn load(origin: &'a Origin, parent: Option<ManifestId>) -> Result<Option<Self>> {
        let Some(id) = parent else {
            return Ok(None);
        };
        let Some(bytes) = origin.read_manifest(&id)? else {
            return Ok(None);
        };
        let manifest = relsync_format::dangerous::trusted_manifest(bytes)
            .with_context(|| format!("parent manifest {id}"))?;
        let chunks = (manifest.chunks.iter().enumerate())
            .map(|(i, c)| (c.id, i as u32))
            .collect();
        let solid = (manifest.solid.iter().enumerate())
            .map(|(i, s)| (manifest.chunks[s.first as usize].id, i))
            .collect();
        Ok(Some(Self {
            origin,
            manifest,
            chunks,
            solid,
        }))
    }

    /// Whether the parent has a plain frame of chunk `id`.
    pub fn has_chunk(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    /// The plain frames of `chunks` (each with its bytes, all in the parent), read from the
    /// parent's packs and checked against those bytes.
    pub fn plain_frames(&self, chunks: &[(ChunkId, &[u8])]) -> Result<Vec<Vec<u8>>> {
        let places: Vec<Place> = chunks
            .iter()
            .map(|(id, _)| {
                let index = *self
                    .chunks
                    .get(id)
                    .context("internal: chunk not in the parent")?;
                let chunk = &self.manifest.chunks[index as usize];
                Ok(Place {
                    pack: chunk.pack,
                    offset: self.manifest.frame_offset(index),
                    len: chunk.frame_len,
                })
            })
            .collect::<Result<_>>()?;
        let frames = self.read(&places)?;
        frames.par_iter().zip(chunks).zip(&places).try_for_each(
            |((frame, (id, data)), place)| {
                let same = frame::decompress(frame, data.len()).is_ok_and(|d| d == *data);
                ensure!(same, "{}", self.damaged(place.pack, &format!("chunk {id}")));
                Ok(())
            },
        )?;
        Ok(frames)
    }

    /// The parent's solid frame of exactly the run `chunks`, if it has one: its bytes, checked
    /// to decode to chunks with those ids.
    pub fn solid_frame(&self, chunks: &[ChunkEntry]) -> Result<Option<Vec<u8>>> {
        let Some((index, solid)) = self.solid_of(chunks) else {
            return Ok(None);
        };
        let place = Place {
            pack: solid.pack,
            offset: self.manifest.solid_offset(index),
            len: solid.frame_len,
        };
        let frame = self
            .read(&[place])?
            .pop()
            .context("internal: no frame read")?;
        ensure!(
            check_solid(&frame, chunks).is_ok(),
            "{}",
            self.damaged(
                solid.pack,
                &format!("the solid frame of chunks from {}", chunks[0].id)
            )
        );
        Ok(Some(frame))
    }

    /// How many chunks from the start of `rest` the parent has one solid frame of (the same
    /// chunks in the same order), if it has one starting there.
    pub fn solid_run(&self, rest: &[ChunkEntry]) -> Option<usize> {
        let (_, solid) = self.solid_of(rest.get(..self.solid_at(rest)?.chunks as usize)?)?;
        Some(solid.chunks as usize)
    }

    /// The parent's solid frame starting with `rest`'s first chunk.
    fn solid_at(&self, rest: &[ChunkEntry]) -> Option<&SolidFrame> {
        self.manifest.solid.get(*self.solid.get(&rest.first()?.id)?)
    }

    /// The parent's solid frame holding exactly the chunks `chunks`, and its index.
    fn solid_of(&self, chunks: &[ChunkEntry]) -> Option<(usize, &SolidFrame)> {
        let index = *self.solid.get(&chunks.first()?.id)?;
        let solid = &self.manifest.solid[index];
        let first = solid.first as usize;
        let theirs = self
            .manifest
            .chunks
            .get(first..first + solid.chunks as usize)?;
        (theirs.len() == chunks.len() && theirs.iter().zip(chunks).all(|(a, b)| a.id == b.id))
            .then_some((index, solid))
    }

    /// What to say when the parent's frame of `what` in pack `pack` is not what its
    /// manifest says.
    fn damaged(&self, pack: u32, what: &str) -> String {
        let pack = self
            .manifest
            .packs
            .get(pack as usize)
            .map(|p| p.id.to_string());
        format!(
            "the parent release ({}) is damaged on the origin: its frame of {what} in pack {} \
             does not decode to it. `cdn-publisher verify --origin ORIGIN` lists every damaged \
             object; restore them (from a backup, or the release's files pushed to a new \
             origin) before publishing on top of it",
            self.manifest.version,
            pack.as_deref().unwrap_or("?"),
        )
    }

    /// Reads frames at `places`, joining neighbours in a pack into one read.
    fn read(&self, places: &[Place]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(places.len());
        let mut start = 0;
        while start < places.len() {
            let first = places[start];
            let mut end = start + 1;
            let mut len = u64::from(first.len);
            while let Some(next) = places.get(end)
                && next.pack == first.pack
                && next.offset == first.offset + len
                && len + u64::from(next.len) <= MAX_READ_BYTES
            {
                len += u64::from(next.len);
                end += 1;
            }
            let pack = self
                .manifest
                .packs
                .get(first.pack as usize)
                .context("internal: a frame in a pack the parent lacks")?;
            let bytes = self
                .origin
                .read_range(&pack_path(&pack.id), first.offset, len as usize)
                .with_context(|| format!("reading pack {}", pack.id))?;
            if bytes.len() as u64 != len {
                bail!("pack {} is shorter than its manifest says", pack.id);
            }
            let mut at = 0;
            for place in &places[start..end] {
                out.push(bytes[at..at + place.len as usize].to_vec());
                at += place.len as usize;
            }
            start = end;
        }
        Ok(out)
    }
}

/// Where a frame is in the parent's packs.
#[derive(Debug, Clone, Copy)]
struct Place {
    pack: u32,
    offset: u64,
    len: u32,
}

/// Checks that a solid frame decodes to chunks with the ids of `chunks`, in order.
fn check_solid(frame: &[u8], chunks: &[ChunkEntry]) -> Result<()> {
    let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    let data = frame::decompress(frame, total as usize)?;
    let mut at = 0;
    for chunk in chunks {
        let bytes = &data[at..at + chunk.len as usize];
        ensure!(
            ChunkId::of(bytes) == chunk.id,
            "chunk {} decodes to other bytes",
            chunk.id
        );
        at += bytes.len();
    }
    Ok(())
}
