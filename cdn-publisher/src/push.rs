//! `cdn-publisher push`: chunk, hash, compress and pack a release, then sign and publish it.
//!
//! Files are read once, in order, through FastCDC. Chunks are gathered into batches of at most
//! [`BATCH_BYTES`]; each batch is hashed and compressed on all cores (rayon), then appended to
//! the pack in release order. Memory stays bounded by the batch size, whatever the file sizes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use relsync_chunker::{ChunkId, ChunkParams, Chunker, frame};
use relsync_format::manifest::{
    ChunkEntry, DeltaCodec, Entry, EntryKind, FORMAT_VERSION, FileEntry, Manifest, limits,
};
use relsync_format::paths::{channel_path, valid_channel};
use relsync_format::{FileHash, SecretKey};
use semver::Version;
use serde::Serialize;

use crate::delta::{self, DeltaParams, NewFile};
use crate::origin::{Origin, WriteStats};
use crate::pack::PackWriter;
use crate::publish::{expiry, pointer_for, put_manifest, put_pointer, refuse_yanked, unix_now};
use crate::solid;
use crate::walk::{Item, walk};

/// Raw bytes gathered before a batch is hashed and compressed in parallel.
const BATCH_BYTES: usize = 32 << 20;

/// What to publish and how.
#[derive(Debug)]
pub struct PushOptions {
    pub dir: PathBuf,
    pub version: Version,
    pub channel: String,
    pub product: String,
    pub platform: Option<String>,
    pub force: bool,
    pub zstd_level: i32,
    pub chunking: ChunkParams,
    pub expires_days: u64,
    pub max_pack_bytes: u64,
    /// How many earlier releases of the channel get delta frames.
    pub delta_from: usize,
    pub delta: DeltaParams,
    /// How many earlier manifests of the channel the new one is also published as a delta of.
    pub manifest_deltas: usize,
    /// Uncompressed bytes per solid frame (0: no solid frames).
    pub solid_run_bytes: u64,
    /// Days until the channel pointer expires.
    pub pointer_days: u64,
    /// Write the manifest unsigned to this file, for signing elsewhere, instead of signing
    /// and publishing it (packs are still written).
    pub unsigned_out: Option<PathBuf>,
    /// A critical update: clients bypass maintenance windows and staged rollout.
    pub critical: bool,
    /// Release notes (at most [`limits::NOTES_BYTES`]).
    pub notes: String,
    /// Share of installs the channel pointer offers the release to, 0 to 100.
    pub rollout_percent: u8,
    /// Publish a release that holds no files.
    pub allow_empty: bool,
}

/// Reads a release notes file: UTF-8, at most [`limits::NOTES_BYTES`].
pub fn read_notes_file(path: &Path) -> Result<String> {
    let reading = || format!("reading release notes {}", path.display());
    let file = File::open(path).with_context(reading)?;
    let len = file.metadata().with_context(reading)?.len();
    let limit = limits::NOTES_BYTES as u64;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(reading)?;
    if bytes.len() as u64 > limit {
        bail!(
            "release notes {} are {} bytes; at most {limit} are allowed",
            path.display(),
            len.max(bytes.len() as u64),
        );
    }
    let notes = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "release notes {} are not UTF-8 (at byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    check_notes(&notes)?;
    Ok(notes)
}

/// Refuses release notes longer than clients accept.
fn check_notes(notes: &str) -> Result<()> {
    if notes.len() > limits::NOTES_BYTES {
        bail!(
            "the release notes are {} bytes; at most {} are allowed",
            notes.len(),
            limits::NOTES_BYTES
        );
    }
    Ok(())
}

/// What a push did.
#[derive(Debug, Serialize)]
pub struct PushSummary {
    pub version: String,
    pub channel: String,
    pub manifest: String,
    /// The release was already published as is; nothing was written.
    pub unchanged: bool,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub unique_chunks: u64,
    pub pack_bytes: u64,
    /// Pack bytes that were not already on the origin.
    pub pack_bytes_written: u64,
    /// Objects written to the origin: new packs, the manifest and its deltas, the pointer.
    pub objects_written: u64,
    /// Content-addressed objects already on the origin, not written again.
    pub objects_present: u64,
    /// Bytes of the objects written.
    pub bytes_uploaded: u64,
    /// Seconds during which at least one write to the origin was in flight.
    pub upload_seconds: f64,
    /// `bytes_uploaded` over `upload_seconds`, in MB/s.
    pub upload_mb_per_s: f64,
    pub manifest_bytes: u64,
    /// Where the unsigned manifest was written, when it is to be signed elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsigned: Option<String>,
    /// Marked critical.
    pub critical: bool,
    /// Bytes of release notes.
    pub notes_bytes: u64,
    /// Share of installs the pointer offers the release to.
    pub rollout_percent: u8,
    /// The channel's yanked versions, carried over to the new pointer.
    pub yanked: Vec<String>,
    /// Versions delta frames were made against.
    pub delta_bases: Vec<String>,
    pub delta_frames: u64,
    /// Of those, frames in the bsdiff codec.
    pub bsdiff_frames: u64,
    pub delta_bytes: u64,
    pub solid_frames: u64,
    pub solid_bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
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

/// Chunks gathered for one parallel step: (entry index, offset in the file, bytes).
#[derive(Default)]
struct Batch {
    items: Vec<(usize, u64, Vec<u8>)>,
    bytes: usize,
}

/// The manifest's chunk table under construction.
struct ChunkTable<'a> {
    chunks: Vec<ChunkEntry>,
    /// Where each unique chunk was first seen: (entry index, offset).
    sources: Vec<(usize, u64)>,
    index: HashMap<ChunkId, u32>,
    refs: u64,
    packs: PackWriter<'a>,
    zstd_level: i32,
}

impl ChunkTable<'_> {
    /// Hashes and compresses a batch on all cores, then records it in release order.
    fn flush(&mut self, batch: &mut Batch, file_chunks: &mut [Vec<u32>]) -> Result<()> {
        let items = std::mem::take(&mut batch.items);
        batch.bytes = 0;
        let ids: Vec<ChunkId> = items.par_iter().map(|(_, _, d)| ChunkId::of(d)).collect();
        let mut fresh = Vec::new();
        let mut seen_here = std::collections::HashSet::new();
        for (k, id) in ids.iter().enumerate() {
            if !self.index.contains_key(id) && seen_here.insert(*id) {
                fresh.push(k);
            }
        }
        let level = self.zstd_level;
        let frames: Vec<Vec<u8>> = fresh
            .par_iter()
            .map(|&k| frame::compress(&items[k].2, level))
            .collect::<Result<_, _>>()?;
        let mut frames = frames.into_iter();
        for ((entry, offset, data), id) in items.iter().zip(ids) {
            let index = match self.index.get(&id) {
                Some(&i) => i,
                None => {
                    let Some(frame) = frames.next() else {
                        bail!("internal: frame count mismatch");
                    };
                    let pack = self.packs.append(&frame)?;
                    let i = self.chunks.len() as u32;
                    self.chunks.push(ChunkEntry {
                        id,
                        len: data.len() as u32,
                        pack,
                        frame_len: frame.len() as u32,
                    });
                    self.index.insert(id, i);
                    self.sources.push((*entry, *offset));
                    i
                }
            };
            file_chunks[*entry].push(index);
            self.refs += 1;
        }
        Ok(())
    }
}

/// The keys a push signs with.
#[derive(Debug)]
pub struct Signers {
    /// Sign the manifest.
    pub release: Vec<SecretKey>,
    /// Sign the channel pointer.
    pub channel: Vec<SecretKey>,
}

/// Publishes `opts.dir` to `origin`. `progress` gets (bytes read, total bytes).
///
/// The write order keeps the origin consistent for readers at every moment: all packs (the
/// uploads to a bucket overlap the packing, and all must succeed), then the manifest and its
/// deltas, then the channel pointer.
pub fn push(
    opts: &PushOptions,
    signers: &Signers,
    origin: &Origin,
    progress: &dyn Fn(u64, u64),
) -> Result<PushSummary> {
    let started = (Instant::now(), origin.stats());
    if !valid_channel(&opts.channel) {
        bail!(
            "invalid channel name {:?}: use letters, digits, '-', '_', '.'",
            opts.channel
        );
    }
    if let Some(platform) = &opts.platform
        && !valid_channel(platform)
    {
        bail!("invalid platform name {platform:?}: use letters, digits, '-', '_', '.'");
    }
    opts.chunking.validate()?;
    check_notes(&opts.notes)?;
    if opts.rollout_percent > 100 {
        bail!(
            "the rollout percentage is {}; it must be 0 to 100",
            opts.rollout_percent
        );
    }
    let existing = match origin.read(&channel_path(&opts.channel))? {
        Some(bytes) => Some(
            relsync_format::dangerous::pointer(&bytes)
                .context("the origin's current channel pointer is unreadable")?,
        ),
        None => None,
    };
    if let Some(current) = &existing
        && opts.version < current.version
        && !opts.force
    {
        bail!(
            "channel {} is at {}; refusing to publish the lower version {} (use --force)",
            opts.channel,
            current.version,
            opts.version
        );
    }
    if let Some(current) = &existing {
        refuse_yanked(&opts.channel, &opts.version, &current.yanked)?;
    }

    let items = walk(&opts.dir)?;
    if !opts.allow_empty && !items.iter().any(|(_, i)| matches!(i, Item::File { .. })) {
        bail!(
            "{} holds no files: publishing it would replace every install's release with an \
             empty one. Check the path (a build that produced nothing?), or pass --allow-empty \
             if an empty release is what you mean",
            opts.dir.display()
        );
    }
    let total_bytes: u64 = items
        .iter()
        .map(|(_, i)| match i {
            Item::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    let mut table = ChunkTable {
        chunks: Vec::new(),
        sources: Vec::new(),
        index: HashMap::new(),
        refs: 0,
        packs: PackWriter::new(origin, opts.max_pack_bytes),
        zstd_level: opts.zstd_level,
    };
    let mut file_chunks: Vec<Vec<u32>> = vec![Vec::new(); items.len()];
    let mut file_meta: Vec<Option<(FileHash, u64)>> = vec![None; items.len()];
    let mut batch = Batch::default();
    let mut read = 0u64;
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
        for chunk in Chunker::new(&mut reader, opts.chunking)? {
            let chunk = chunk.with_context(|| format!("reading {}", source.display()))?;
            read += chunk.data.len() as u64;
            batch.bytes += chunk.data.len();
            batch.items.push((entry, chunk.offset, chunk.data));
            if batch.bytes >= BATCH_BYTES {
                table.flush(&mut batch, &mut file_chunks)?;
                progress(read, total_bytes);
            }
        }
        file_meta[entry] = Some((FileHash::from(reader.hasher.finalize()), reader.len));
    }
    table.flush(&mut batch, &mut file_chunks)?;
    progress(read, total_bytes);
    let ChunkTable {
        chunks,
        sources,
        refs,
        packs: mut pack_writer,
        ..
    } = table;

    // The channel's previous release is the parent; a re-push of the same version keeps the
    // parent it had.
    let parent = match &existing {
        Some(current) if current.version == opts.version => origin
            .read_manifest(&current.manifest)?
            .and_then(|b| relsync_format::dangerous::manifest(&b).ok())
            .and_then(|m| m.parent),
        Some(current) => Some(current.manifest),
        None => None,
    };
    let new_files: Vec<NewFile<'_>> = items
        .iter()
        .enumerate()
        .filter_map(|(i, (path, item))| match item {
            Item::File { source, .. } => Some(NewFile {
                source,
                path,
                size: file_meta[i].map_or(0, |m| m.1),
                chunks: &file_chunks[i],
            }),
            _ => None,
        })
        .collect();
    let mut bases = Vec::new();
    for base in delta::base_chain(origin, parent, opts.delta_from)? {
        bases.push(delta::encode(
            &base,
            &new_files,
            &chunks,
            opts.delta,
            &mut pack_writer,
        )?);
    }
    drop(new_files);
    let solid = if opts.solid_run_bytes == 0 {
        Vec::new()
    } else {
        let sources: Vec<solid::ChunkSource<'_>> = sources
            .iter()
            .map(|&(entry, offset)| match &items[entry].1 {
                Item::File { source, .. } => Ok((source.as_path(), offset)),
                _ => Err(anyhow::anyhow!("internal: a chunk of a non-file")),
            })
            .collect::<Result<_>>()?;
        solid::encode(
            &chunks,
            &sources,
            opts.solid_run_bytes.min(limits::SOLID_BYTES),
            opts.zstd_level,
            &mut pack_writer,
        )?
    };
    let (packs, pack_bytes_written) = pack_writer.finish()?;

    let mut summary = PushSummary {
        version: opts.version.to_string(),
        channel: opts.channel.clone(),
        manifest: String::new(),
        unchanged: false,
        files: 0,
        dirs: 0,
        symlinks: 0,
        bytes: read,
        chunks: refs,
        unique_chunks: chunks.len() as u64,
        pack_bytes: packs.iter().map(|p| p.len).sum(),
        pack_bytes_written,
        objects_written: 0,
        objects_present: 0,
        bytes_uploaded: 0,
        upload_seconds: 0.0,
        upload_mb_per_s: 0.0,
        manifest_bytes: 0,
        unsigned: None,
        critical: opts.critical,
        notes_bytes: opts.notes.len() as u64,
        rollout_percent: opts.rollout_percent,
        yanked: existing
            .iter()
            .flat_map(|p| &p.yanked)
            .map(ToString::to_string)
            .collect(),
        delta_bases: bases.iter().map(|b| b.version.to_string()).collect(),
        delta_frames: bases.iter().map(|b| b.deltas.len() as u64).sum(),
        bsdiff_frames: bases
            .iter()
            .flat_map(|b| &b.deltas)
            .filter(|d| d.codec == DeltaCodec::Bsdiff)
            .count() as u64,
        delta_bytes: bases
            .iter()
            .flat_map(|b| &b.deltas)
            .map(|d| u64::from(d.frame_len))
            .sum(),
        solid_frames: solid.len() as u64,
        solid_bytes: solid.iter().map(|s| u64::from(s.frame_len)).sum(),
        seconds: 0.0,
        mb_per_s: 0.0,
    };
    let mut entries = Vec::with_capacity(items.len());
    for (i, (path, item)) in items.into_iter().enumerate() {
        let kind = match item {
            Item::Dir => {
                summary.dirs += 1;
                EntryKind::Dir
            }
            Item::Symlink { target } => {
                summary.symlinks += 1;
                EntryKind::Symlink { target }
            }
            Item::File { executable, .. } => {
                summary.files += 1;
                let Some((hash, size)) = file_meta[i] else {
                    bail!("internal: {path} was not read");
                };
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
    let created = unix_now();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        product: opts.product.clone(),
        channel: opts.channel.clone(),
        platform: opts.platform.clone(),
        version: opts.version.clone(),
        created_unix: created,
        expires_unix: expiry(opts.expires_days).context("--expires-days")?,
        critical: opts.critical,
        notes: opts.notes.clone(),
        chunking: opts.chunking,
        parent,
        packs,
        chunks,
        entries,
        bases,
        solid,
    };

    if let Some(current) = &existing
        && current.version == opts.version
    {
        let same = origin
            .read_manifest(&current.manifest)?
            .and_then(|b| relsync_format::dangerous::manifest(&b).ok())
            .is_some_and(|old| same_release(&old, &manifest));
        if same {
            summary.unchanged = true;
            summary.manifest = current.manifest.to_string();
            return Ok(finish(summary, started, origin));
        }
        if !opts.force {
            bail!(
                "version {} is already published on channel {} with different content; \
                 bump the version (or use --force)",
                opts.version,
                opts.channel
            );
        }
    }

    if let Some(out) = &opts.unsigned_out {
        let (_, unsigned) = manifest.seal_by(&[])?;
        crate::sign::write_file(out, &unsigned)?;
        summary.unsigned = Some(out.display().to_string());
        return Ok(finish(summary, started, origin));
    }
    let release: Vec<&SecretKey> = signers.release.iter().collect();
    let (_, bytes) = manifest.seal_by(&release)?;
    let published = put_manifest(origin, &bytes, opts.manifest_deltas)?;
    let pointer = pointer_for(origin, &published, opts.pointer_days, opts.rollout_percent)?;
    let channel: Vec<&SecretKey> = signers.channel.iter().collect();
    put_pointer(origin, &pointer.seal(&channel)?, opts.force)?;
    summary.manifest = published.id.to_string();
    summary.manifest_bytes = published.file_len;
    Ok(finish(summary, started, origin))
}

/// Fills in the times and what was written since `started`.
fn finish(
    mut summary: PushSummary,
    started: (Instant, WriteStats),
    origin: &Origin,
) -> PushSummary {
    let (at, before) = started;
    summary.seconds = at.elapsed().as_secs_f64();
    summary.mb_per_s = summary.bytes as f64 / 1e6 / summary.seconds.max(1e-9);
    let writes = origin.stats().since(&before);
    summary.objects_written = writes.objects_written;
    summary.objects_present = writes.objects_present;
    summary.bytes_uploaded = writes.bytes_written;
    summary.upload_seconds = writes.busy_seconds;
    summary.upload_mb_per_s = writes.bytes_written as f64 / 1e6 / writes.busy_seconds.max(1e-9);
    summary
}

/// The same release, ignoring when it was signed.
fn same_release(a: &Manifest, b: &Manifest) -> bool {
    let strip = |m: &Manifest| Manifest {
        created_unix: 0,
        expires_unix: 0,
        ..m.clone()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use crate::fixture::Fixture;

    #[test]
    fn a_release_without_files_is_refused_unless_allowed() {
        let f = Fixture::new();
        let dir = f.tmp.path().join("empty");
        std::fs::create_dir_all(dir.join("only/dirs")).unwrap();
        let opts = crate::push::PushOptions {
            dir: dir.clone(),
            ..f.opts("1.0.0")
        };
        let err = format!("{:#}", f.push_with(&opts).unwrap_err());
        assert!(
            err.contains("holds no files") && err.contains("--allow-empty"),
            "{err}"
        );
        assert!(f.origin.read("channels/stable").unwrap().is_none());
        f.push_with(&crate::push::PushOptions {
            allow_empty: true,
            ..opts
        })
        .unwrap();
        assert!(f.origin.read("channels/stable").unwrap().is_some());
    }
}
