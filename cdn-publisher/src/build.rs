//! Building a release: everything a manifest says about a release's content, with its packs on
//! the origin.
//!
//! ```text
//! walk ─▶ chunk ─┬▶ delta ─┬▶ packs sealed ─▶ entries
//!                 └▶ solid ─┘
//!          └──── frames appended to packs; sealed packs upload meanwhile ────┘
//! ```
//!
//! [`walk`] reads the directory into safe entries; [`chunk`] cuts, hashes and compresses each
//! file once (plain frames); [`delta`] encodes the new chunks against earlier releases of the
//! channel while [`solid`] compresses runs of chunks together for fresh installs (into packs of
//! their own, so both run at once); [`pack`] appends every frame to packs of a bounded size
//! and hands each sealed pack to the origin. Frames the parent release already has (plain
//! frames of unchanged chunks, solid frames of unchanged runs) are copied from its packs
//! ([`reuse`]) instead of being compressed again.

mod chunk;
mod delta;
mod pack;
mod reuse;
mod solid;
mod timing;
mod walk;

use std::path::Path;

use anyhow::{Context, Result, bail};
use relsync_chunker::ChunkParams;
use relsync_format::manifest::{
    Base, ChunkEntry, Entry, EntryKind, FileEntry, PackRef, SolidFrame, limits,
};
use relsync_format::{ManifestId, RelPath};

use self::chunk::Chunked;
pub use self::delta::DeltaParams;
use self::delta::NewFile;
use self::pack::PackWriter;
use self::reuse::Reuse;
use self::solid::Solid;
use self::timing::Clock;
pub use self::timing::Timings;
use self::walk::Item;
use crate::origin::Origin;

/// How to build a release.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions<'a> {
    /// The release directory.
    pub dir: &'a Path,
    pub chunking: ChunkParams,
    /// zstd level of plain and solid frames.
    pub zstd_level: i32,
    pub max_pack_bytes: u64,
    /// How many earlier releases (along `parent` links) get delta frames.
    pub delta_from: usize,
    pub delta: DeltaParams,
    /// Uncompressed bytes per solid frame (0: no solid frames).
    pub solid_run_bytes: u64,
    /// Build a release that holds no files.
    pub allow_empty: bool,
    /// Copy the frames the parent release already has (plain frames of unchanged chunks, solid
    /// frames of unchanged runs) instead of compressing them again.
    pub reuse_frames: bool,
}

/// What building did.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Chunks counted with repeats.
    pub chunks: u64,
    /// Pack bytes that were not already on the origin.
    pub pack_bytes_written: u64,
    /// Plain frames copied from the parent release instead of compressed again.
    pub plain_reused: u64,
    /// Solid frames copied from the parent release instead of compressed again.
    pub solid_reused: u64,
}

/// A release's content, as its manifest lists it; every pack named is on the origin.
#[derive(Debug)]
pub struct Built {
    pub entries: Vec<Entry>,
    pub packs: Vec<PackRef>,
    pub chunks: Vec<ChunkEntry>,
    pub bases: Vec<Base>,
    pub solid: Vec<SolidFrame>,
    pub stats: BuildStats,
    pub timings: Timings,
}

/// Builds the release in `opts.dir` into packs on `origin`, with delta frames against `parent`
/// and its ancestors. `progress` gets (bytes read, total bytes) while chunking.
pub fn build(
    opts: &BuildOptions<'_>,
    origin: &Origin,
    parent: Option<ManifestId>,
    progress: &dyn Fn(u64, u64),
) -> Result<Built> {
    let mut clock = Clock::start();
    let items = read_tree(opts)?;
    let reuse = match opts.reuse_frames {
        true => Reuse::load(origin, parent)?,
        false => None,
    };
    let mut packs = PackWriter::new(origin, opts.max_pack_bytes);
    let chunked = chunk::chunk_files(
        &items,
        opts.chunking,
        opts.zstd_level,
        reuse.as_ref(),
        &mut packs,
        progress,
    )?;
    clock.lap("chunk");
    // Solid frames go to packs of their own, so that they are compressed while the deltas are.
    let mut solid_packs = PackWriter::new(origin, opts.max_pack_bytes);
    let (bases, solid) = rayon::join(
        || {
            delta_frames(
                opts, origin, parent, &items, &chunked, &mut packs, &mut clock,
            )
        },
        || {
            let started = std::time::Instant::now();
            let solid = solid_frames(opts, &items, &chunked, reuse.as_ref(), &mut solid_packs);
            (solid, started.elapsed())
        },
    );
    let (solid, solid_took) = solid;
    let (bases, solid) = (bases?, solid?);
    clock.lap("waiting for solid frames");
    clock.record("solid (during deltas)", solid_took);
    let (mut pack_refs, mut pack_bytes_written) = packs.finish()?;
    let (solid_pack_refs, solid_bytes_written) = solid_packs.finish()?;
    let solid_reused = solid.reused;
    let solid = offset_packs(solid.frames, pack_refs.len())?;
    pack_refs.extend(solid_pack_refs);
    pack_bytes_written += solid_bytes_written;
    clock.lap("packs");
    let Chunked {
        chunks,
        file_chunks,
        file_meta,
        refs,
        bytes,
        reused,
        ..
    } = chunked;
    let (entries, mut stats) = entries(items, file_chunks, &file_meta)?;
    stats.bytes = bytes;
    stats.chunks = refs;
    stats.pack_bytes_written = pack_bytes_written;
    stats.plain_reused = reused;
    stats.solid_reused = solid_reused;
    Ok(Built {
        entries,
        packs: pack_refs,
        chunks,
        bases,
        solid,
        stats,
        timings: clock.finish(),
    })
}

/// The release directory's entries, refusing one without files unless allowed.
fn read_tree(opts: &BuildOptions<'_>) -> Result<Vec<(RelPath, Item)>> {
    let items = walk::walk(opts.dir)?;
    if !opts.allow_empty && !items.iter().any(|(_, i)| matches!(i, Item::File { .. })) {
        bail!(
            "{} holds no files: publishing it would replace every install's release with an \
             empty one. Check the path (a build that produced nothing?), or pass --allow-empty \
             if an empty release is what you mean",
            opts.dir.display()
        );
    }
    Ok(items)
}

/// Delta frames against `parent` and up to `opts.delta_from` releases along its history.
fn delta_frames(
    opts: &BuildOptions<'_>,
    origin: &Origin,
    parent: Option<ManifestId>,
    items: &[(RelPath, Item)],
    chunked: &Chunked,
    packs: &mut PackWriter<'_>,
    clock: &mut Clock,
) -> Result<Vec<Base>> {
    let new_files: Vec<NewFile<'_>> = items
        .iter()
        .enumerate()
        .filter_map(|(i, (path, item))| match item {
            Item::File { source, .. } => Some(NewFile {
                entry: i as u32,
                source,
                path,
                size: chunked.file_meta[i].map_or(0, |m| m.1),
                chunks: &chunked.file_chunks[i],
            }),
            _ => None,
        })
        .collect();
    let mut bases = Vec::new();
    for (back, base) in (1..).zip(delta::base_chain(origin, parent, opts.delta_from)?) {
        bases.push(delta::encode(
            &base,
            &new_files,
            &chunked.chunks,
            opts.delta.for_base(back),
            packs,
        )?);
        clock.lap(format!("delta {}", base.manifest.version));
    }
    Ok(bases)
}

/// Solid frames of the chunk table, unless `opts.solid_run_bytes` is 0.
fn solid_frames(
    opts: &BuildOptions<'_>,
    items: &[(RelPath, Item)],
    chunked: &Chunked,
    reuse: Option<&Reuse<'_>>,
    packs: &mut PackWriter<'_>,
) -> Result<Solid> {
    if opts.solid_run_bytes == 0 {
        return Ok(Solid::default());
    }
    let sources: Vec<solid::ChunkSource<'_>> = chunked
        .sources
        .iter()
        .map(|&(entry, offset)| match &items[entry].1 {
            Item::File { source, .. } => Ok((source.as_path(), offset)),
            _ => Err(anyhow::anyhow!("internal: a chunk of a non-file")),
        })
        .collect::<Result<_>>()?;
    solid::encode(
        &chunked.chunks,
        &sources,
        opts.solid_run_bytes.min(limits::SOLID_BYTES),
        opts.zstd_level,
        reuse,
        packs,
    )
}

/// `solid` with its pack indices moved past the first `packs` packs of the release.
fn offset_packs(mut solid: Vec<SolidFrame>, packs: usize) -> Result<Vec<SolidFrame>> {
    let packs = u32::try_from(packs).context("too many packs")?;
    for frame in &mut solid {
        frame.pack += packs;
    }
    Ok(solid)
}

/// The manifest's entries, with the counts of each kind.
fn entries(
    items: Vec<(RelPath, Item)>,
    mut file_chunks: Vec<Vec<u32>>,
    file_meta: &[Option<(relsync_format::FileHash, u64)>],
) -> Result<(Vec<Entry>, BuildStats)> {
    let mut stats = BuildStats::default();
    let mut entries = Vec::with_capacity(items.len());
    for (i, (path, item)) in items.into_iter().enumerate() {
        let kind = match item {
            Item::Dir => {
                stats.dirs += 1;
                EntryKind::Dir
            }
            Item::Symlink { target } => {
                stats.symlinks += 1;
                EntryKind::Symlink { target }
            }
            Item::File { executable, .. } => {
                stats.files += 1;
                let (hash, size) =
                    file_meta[i].with_context(|| format!("internal: {path} was not read"))?;
                EntryKind::File(FileEntry {
                    executable,
                    size,
                    hash,
                    chunks: std::mem::take(&mut file_chunks[i]),
                })
            }
        };
        entries.push(Entry { path, kind });
    }
    Ok((entries, stats))
}
