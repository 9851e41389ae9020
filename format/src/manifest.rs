//! The signed release manifest and channel pointer.
//!
//! Both are postcard-encoded bodies inside a signed [`crate::envelope`]. A manifest travels as
//! one zstd frame of its envelope ([`compress_envelope`]), or as a frame that needs an earlier
//! manifest the client already holds ([`compress_envelope_delta`]): between releases most of
//! a manifest is unchanged, so such a delta is a few KiB. Its id hashes the envelope, so both
//! forms name the same signed bytes. A manifest
//! lists the release's files and its unique chunks in pack order, then the delta frames against
//! each base, then solid frames. A frame's byte offset in its pack is not stored: it is the sum
//! of the lengths of the frames before it in the same pack (plain frames first, then each
//! base's deltas and reference maps, then solid frames).

use std::collections::HashSet;

use relsync_chunker::{ChunkId, ChunkParams};
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::envelope::{self, Kind};
use crate::keys::{PublicKey, SecretKey};
use crate::path::{RelPath, TreeIndex, TreeNode};
use crate::root::RoleKeys;
use crate::{Error, FileHash, ManifestId, PackId, Result};

/// The format version this engine writes and reads, shared by manifests, channel pointers and
/// rollback directives.
///
/// 5 added the signed lifecycle fields: [`Manifest::critical`] and [`Manifest::notes`], and
/// [`Pointer::rollout_percent`], [`Pointer::yanked`] and a roll-back flag. 6 replaced the flag
/// with [`Pointer::rollback`], a directive the release role signs. 7 added reference
/// projection for executables: [`Base::refs`] and [`DeltaCodec::BsdiffRefs`].
pub const FORMAT_VERSION: u32 = 7;

/// Hard caps on what a client accepts from an origin.
pub mod limits {
    /// Largest channel pointer accepted.
    pub const POINTER_BYTES: u64 = 64 * 1024;
    /// Largest manifest accepted, decompressed.
    pub const MANIFEST_BYTES: u64 = 256 * 1024 * 1024;
    /// Most manifest deltas a pointer lists.
    pub const MANIFEST_DELTAS: usize = 16;
    /// Most yanked versions a pointer lists.
    pub const YANKED: usize = 64;
    /// Largest release notes, in bytes of UTF-8.
    pub const NOTES_BYTES: usize = 16 * 1024;
    /// Most chunks in one release.
    pub const CHUNKS: usize = 16 * 1024 * 1024;
    /// Most entries in one release.
    pub const FILES: usize = 4 * 1024 * 1024;
    /// Most delta bases in one release.
    pub const BASES: usize = 16;
    /// Largest delta window.
    pub const WINDOW_BYTES: u32 = 64 * 1024 * 1024;
    /// Largest reference map frame ([`super::RefMap`]).
    pub const REF_MAP_BYTES: u32 = 16 * 1024 * 1024;
    /// Most uncompressed bytes in one solid frame.
    pub const SOLID_BYTES: u64 = 64 * 1024 * 1024;
    /// log2 of the largest decoder window a solid frame may ask for (16 MiB).
    pub const SOLID_WINDOW_LOG: u32 = relsync_chunker::frame::MAX_SOLID_WINDOW_LOG;
    /// Largest frame, relative to its chunk: zstd's worst case is far below this.
    pub const FRAME_OVERHEAD_BYTES: u32 = 64 * 1024;
}

/// One release: what its tree holds and where each chunk's frame is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The product this release belongs to.
    pub product: String,
    /// The channel it was published to.
    pub channel: String,
    /// The platform it is built for (e.g. `x86_64-linux`), if it is bound to one: clients of
    /// any other platform refuse it.
    pub platform: Option<String>,
    /// Its version.
    pub version: Version,
    /// When it was published.
    pub created_unix: u64,
    /// When clients stop accepting it for a new install.
    pub expires_unix: u64,
    /// A critical update (a security fix): clients take it at once, bypassing maintenance
    /// windows and staged rollout ([`Pointer::rollout_percent`]).
    pub critical: bool,
    /// Release notes, UTF-8, at most [`limits::NOTES_BYTES`]; empty when there are none.
    pub notes: String,
    /// The FastCDC bounds used.
    pub chunking: ChunkParams,
    /// The release the channel pointed at before this one.
    pub parent: Option<ManifestId>,
    /// The packs holding this release's frames, plain and delta.
    pub packs: Vec<PackRef>,
    /// Unique chunks, in pack order.
    pub chunks: Vec<ChunkEntry>,
    /// The tree, sorted by path; parents come before children.
    pub entries: Vec<Entry>,
    /// Earlier releases that delta frames are encoded against.
    pub bases: Vec<Base>,
    /// Solid frames, each holding a run of consecutive chunks, for cold data.
    pub solid: Vec<SolidFrame>,
}

/// One zstd frame of the consecutive chunks `first..first + chunks`, compressed together with
/// a window spanning the run, so it costs about what compressing the whole release at once
/// does. Used when a client needs most of the run. Runs are in order and do not overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolidFrame {
    /// Index of its first chunk in [`Manifest::chunks`].
    pub first: u32,
    /// How many chunks it holds.
    pub chunks: u32,
    /// Index into [`Manifest::packs`].
    pub pack: u32,
    /// Length of the frame.
    pub frame_len: u32,
}

/// Delta frames against one earlier release.
///
/// A delta frame encodes one chunk against a window of the base release's bytes
/// ([`DeltaCodec`]). A client that has the base installed decodes it with the same window read
/// from its own (re-verified) files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The base release's manifest.
    pub manifest: ManifestId,
    /// Its version.
    pub version: Version,
    /// Byte ranges of the base's files used as dictionaries.
    pub windows: Vec<Window>,
    /// Delta frames, in pack order after all plain frames.
    pub deltas: Vec<Delta>,
    /// Reference maps of executables, in pack order after this base's deltas.
    pub refs: Vec<RefMap>,
}

/// How the references of a base file moved in a new file: one side object that every
/// [`DeltaCodec::BsdiffRefs`] frame of that file needs (the new file's layout and a shift per
/// target of the old file's references, [`relsync_chunker::frame::refs`]). A client fetches
/// it once, checks its hash, and scans its own copy of the base file for the references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefMap {
    /// Index into the base manifest's `entries`: the old file.
    pub base_entry: u32,
    /// Index into [`Manifest::entries`]: the new file. A projected chunk is decoded at its
    /// first place in this file.
    pub entry: u32,
    /// Index into [`Manifest::packs`].
    pub pack: u32,
    /// Length of the frame.
    pub frame_len: u32,
    /// BLAKE3 of the frame.
    pub hash: ChunkId,
}

/// A byte range of a file of a base release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Index into the base manifest's `entries` (a regular file).
    pub entry: u32,
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

/// One chunk's frame against a base window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Index into [`Manifest::chunks`].
    pub chunk: u32,
    /// Index into [`Base::windows`].
    pub window: u32,
    /// Index into [`Manifest::packs`].
    pub pack: u32,
    /// Length of the frame.
    pub frame_len: u32,
    /// How the frame encodes the chunk.
    pub codec: DeltaCodec,
}

/// How a delta frame encodes its chunk against its window. The publisher keeps whichever is
/// smaller for each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaCodec {
    /// A zstd frame with the window as a raw-content dictionary: exact matches.
    Zstd,
    /// A bsdiff frame ([`relsync_chunker::frame::BsdiffOp`]): approximate matches, which win
    /// where recompiled code shifted its addresses.
    Bsdiff,
    /// A bsdiff frame of the chunk with its references projected
    /// ([`relsync_chunker::frame::refs::Projection`]), undone with reference map `map` of the
    /// same base ([`Base::refs`]).
    BsdiffRefs {
        /// Index into [`Base::refs`].
        map: u32,
    },
}

/// What a [`DeltaCodec::BsdiffRefs`] frame needs besides its window: the file's projection
/// (its reference map decoded against the client's scan of the base file), where the window
/// starts in the base file, and where the chunk starts in the new file.
#[derive(Debug, Clone, Copy)]
pub struct RefContext<'a> {
    /// The decoded reference map.
    pub projection: &'a relsync_chunker::frame::refs::Projection,
    /// [`Window::offset`].
    pub window_at: u64,
    /// The chunk's first offset in [`RefMap::entry`].
    pub at: u64,
}

impl DeltaCodec {
    /// Decodes a delta frame of this codec against `window` into exactly `len` bytes (the
    /// one place a client dispatches on the codec; the codecs themselves live in
    /// `relsync_chunker::frame`). `refs` is needed by [`DeltaCodec::BsdiffRefs`] only.
    pub fn decode(
        self,
        window: &relsync_chunker::frame::WindowDecoder,
        frame: &[u8],
        len: usize,
        refs: Option<RefContext<'_>>,
    ) -> std::result::Result<Vec<u8>, relsync_chunker::Error> {
        match self {
            DeltaCodec::Zstd => window.decompress(frame, len),
            DeltaCodec::Bsdiff => window.decompress_bsdiff(frame, len),
            DeltaCodec::BsdiffRefs { .. } => {
                let refs = refs.ok_or_else(|| {
                    relsync_chunker::Error::CorruptFrame(
                        "a projected frame without its reference map".into(),
                    )
                })?;
                refs.projection
                    .decompress(window, refs.window_at, frame, len, refs.at)
            }
        }
    }

    /// Whether frames of this codec are bsdiff frames (projected or not).
    pub fn is_bsdiff(self) -> bool {
        matches!(self, DeltaCodec::Bsdiff | DeltaCodec::BsdiffRefs { .. })
    }

    /// The reference map this codec's frames need, if any.
    pub fn ref_map(self) -> Option<u32> {
        match self {
            DeltaCodec::BsdiffRefs { map } => Some(map),
            _ => None,
        }
    }
}

/// A pack and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    /// BLAKE3 of the pack.
    pub id: PackId,
    /// Its length in bytes.
    pub len: u64,
}

/// A unique chunk and its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// BLAKE3 of the uncompressed bytes.
    pub id: ChunkId,
    /// Uncompressed length.
    pub len: u32,
    /// Index into [`Manifest::packs`].
    pub pack: u32,
    /// Length of the zstd frame in the pack.
    pub frame_len: u32,
}

/// One path in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it goes.
    pub path: RelPath,
    /// What it is.
    pub kind: EntryKind,
}

/// What a tree entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory (listed so that empty ones survive).
    Dir,
    /// A regular file.
    File(FileEntry),
    /// A symbolic link that stays inside the tree.
    Symlink {
        /// The link's target, relative.
        target: String,
    },
}

/// A regular file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Installed with mode 0755 when set, else 0644.
    pub executable: bool,
    /// Length in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub hash: FileHash,
    /// Indices into [`Manifest::chunks`], in file order.
    pub chunks: Vec<u32>,
}

/// A channel's current release, signed and short-lived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The product.
    pub product: String,
    /// The channel.
    pub channel: String,
    /// The release's version.
    pub version: Version,
    /// The newest root document (`keys/root-<n>`) when this was signed; 0 if the origin has
    /// none. A client behind it walks the root chain up to it before checking this pointer's
    /// signature, which must then hold under that root.
    pub root_version: u64,
    /// The manifest at `manifests/<id>`.
    pub manifest: ManifestId,
    /// Length of that file.
    pub manifest_len: u64,
    /// The same manifest as deltas against earlier ones, newest base first.
    pub manifest_deltas: Vec<ManifestDelta>,
    /// When the pointer was signed.
    pub issued_unix: u64,
    /// When clients stop trusting it.
    pub expires_unix: u64,
    /// Share of installs offered this release, 0 to 100 (100: everyone). Each install puts
    /// itself in a stable bucket ([`rollout_bucket`]) and takes a non-critical release only if
    /// its bucket is below this. Lowering it halts a rollout.
    pub rollout_percent: u8,
    /// Versions of this channel the publisher withdrew, at most [`limits::YANKED`], never
    /// [`Pointer::version`] itself. Installs download nothing new of a yanked version.
    pub yanked: Vec<Version>,
    /// A rollback directive envelope ([`crate::directive`]), at most
    /// [`directive::limits::DIRECTIVE_BYTES`](crate::directive::limits::DIRECTIVE_BYTES):
    /// installs running the yanked versions it names go back to this pointer's release. It
    /// counts only if a threshold of the release role signed it; without one, installs keep
    /// running what they have.
    #[serde(with = "serde_bytes")]
    pub rollback: Option<Vec<u8>>,
}

/// A manifest delta at `manifests/<id>.from-<base>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDelta {
    /// The manifest it needs.
    pub base: ManifestId,
    /// Length of the delta file.
    pub len: u64,
}

/// Level for manifest files: they are small and fetched by every client.
const MANIFEST_LEVEL: i32 = 19;

/// A signed manifest envelope as the file stored at `manifests/<id>`.
pub fn compress_envelope(envelope: &[u8]) -> Result<Vec<u8>> {
    Ok(relsync_chunker::frame::compress(envelope, MANIFEST_LEVEL)?)
}

/// A signed manifest envelope as a delta against the envelope of `base`.
pub fn compress_envelope_delta(envelope: &[u8], base: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = relsync_chunker::frame::WindowEncoder::new(base, MANIFEST_LEVEL)?;
    Ok(encoder.compress(envelope)?)
}

/// The envelope in a manifest file or, given its `base`, a manifest delta; bounded by
/// [`limits::MANIFEST_BYTES`]. The caller checks the result's hash and signature.
pub fn decompress_envelope(file: &[u8], base: Option<&[u8]>) -> Result<Vec<u8>> {
    let limit = limits::MANIFEST_BYTES as usize;
    let envelope = match base {
        None => relsync_chunker::frame::decompress_declared(file, limit),
        Some(base) => relsync_chunker::frame::WindowDecoder::new(base.to_vec())
            .decompress_declared(file, limit),
    };
    envelope.map_err(|e| {
        let what = if base.is_some() {
            "manifest delta"
        } else {
            "manifest"
        };
        Error::malformed(what, e.to_string())
    })
}

impl Manifest {
    /// Encodes and signs the manifest, returning its id and envelope bytes.
    pub fn seal(&self, key: &SecretKey) -> Result<(ManifestId, Vec<u8>)> {
        self.seal_by(&[key])
    }

    /// Like [`Manifest::seal`], signed by every key of `keys` (for a threshold).
    pub fn seal_by(&self, keys: &[&SecretKey]) -> Result<(ManifestId, Vec<u8>)> {
        let body =
            postcard::to_stdvec(self).map_err(|e| Error::malformed("manifest", e.to_string()))?;
        let bytes = envelope::seal(Kind::Manifest, &body, keys)?;
        Ok((ManifestId::of(&bytes), bytes))
    }

    /// Decodes an envelope without checking its signature (publisher side only).
    pub(crate) fn decode_unverified(bytes: &[u8]) -> Result<Self> {
        Self::decode_body(envelope::open_unverified(Kind::Manifest, bytes)?)
    }

    fn decode_body(body: &[u8]) -> Result<Self> {
        decode_versioned("manifest", body)
    }

    /// Total bytes of all regular files.
    pub fn total_file_bytes(&self) -> u64 {
        self.files().map(|(_, f)| f.size).sum()
    }

    /// A file's chunks in file order, each with its byte offset in the file and its index.
    ///
    /// The manifest must be validated (every index in range).
    pub fn chunk_spans<'m>(
        &'m self,
        file: &'m FileEntry,
    ) -> impl Iterator<Item = (u64, u32, &'m ChunkEntry)> + 'm {
        file.chunks.iter().scan(0u64, move |at, &index| {
            let chunk = &self.chunks[index as usize];
            let offset = *at;
            *at += u64::from(chunk.len);
            Some((offset, index, chunk))
        })
    }

    /// The regular files with their paths.
    pub fn files(&self) -> impl Iterator<Item = (&RelPath, &FileEntry)> {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::File(f) => Some((&e.path, f)),
            _ => None,
        })
    }

    /// Checks every structural rule a client relies on.
    fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::malformed("manifest", reason);
        if self.format != FORMAT_VERSION {
            return Err(bad(format!("unsupported format {}", self.format)));
        }
        if let Some(platform) = &self.platform
            && !crate::paths::valid_channel(platform)
        {
            return Err(bad(format!("invalid platform name {platform:?}")));
        }
        if self.notes.len() > limits::NOTES_BYTES {
            return Err(bad(format!(
                "release notes are {} bytes, more than the {} allowed",
                self.notes.len(),
                limits::NOTES_BYTES
            )));
        }
        self.chunking
            .validate()
            .map_err(|e| bad(format!("chunking: {e}")))?;
        self.check_frames()?;
        self.check_tree()
    }

    /// Every chunk, delta and solid frame in range, and each pack exactly the sum of its
    /// frames.
    fn check_frames(&self) -> Result<()> {
        let bad = |reason: String| Error::malformed("manifest", reason);
        if self.chunks.len() > limits::CHUNKS || self.entries.len() > limits::FILES {
            return Err(bad("too many chunks or entries".into()));
        }
        let max_frame = self.chunking.max_bytes + limits::FRAME_OVERHEAD_BYTES;
        let mut pack_used = vec![0u64; self.packs.len()];
        let mut ids = HashSet::with_capacity(self.chunks.len());
        for c in &self.chunks {
            let used = pack_used
                .get_mut(c.pack as usize)
                .ok_or_else(|| bad(format!("chunk {} names pack {}", c.id, c.pack)))?;
            if c.len > self.chunking.max_bytes || c.frame_len > max_frame || c.frame_len == 0 {
                return Err(bad(format!("chunk {} has a bad size", c.id)));
            }
            if !ids.insert(c.id) {
                return Err(bad(format!("chunk {} listed twice", c.id)));
            }
            *used += u64::from(c.frame_len);
        }
        if self.bases.len() > limits::BASES {
            return Err(bad("too many delta bases".into()));
        }
        for base in &self.bases {
            if base.windows.iter().any(|w| w.len > limits::WINDOW_BYTES) {
                return Err(bad(format!(
                    "a window of base {} is oversized",
                    base.version
                )));
            }
            for d in &base.deltas {
                let used = pack_used
                    .get_mut(d.pack as usize)
                    .ok_or_else(|| bad(format!("a delta names pack {}", d.pack)))?;
                if d.chunk as usize >= self.chunks.len()
                    || d.window as usize >= base.windows.len()
                    || d.frame_len > max_frame
                    || d.frame_len == 0
                    || d.codec
                        .ref_map()
                        .is_some_and(|m| m as usize >= base.refs.len())
                {
                    return Err(bad(format!(
                        "a delta against {} is out of range",
                        base.version
                    )));
                }
                *used += u64::from(d.frame_len);
            }
            if base.refs.len() > self.entries.len() {
                return Err(bad(format!(
                    "too many reference maps against {}",
                    base.version
                )));
            }
            // One map per file: the publisher maps each new file from the base file at its
            // path, and a client scans each base file once.
            let mut old_files = HashSet::with_capacity(base.refs.len());
            let mut new_files = HashSet::with_capacity(base.refs.len());
            if !base
                .refs
                .iter()
                .all(|m| old_files.insert(m.base_entry) && new_files.insert(m.entry))
            {
                return Err(bad(format!(
                    "two reference maps against {} share a file",
                    base.version
                )));
            }
            for map in &base.refs {
                let used = pack_used
                    .get_mut(map.pack as usize)
                    .ok_or_else(|| bad(format!("a reference map names pack {}", map.pack)))?;
                let is_file = self
                    .entries
                    .get(map.entry as usize)
                    .is_some_and(|e| matches!(e.kind, EntryKind::File(_)));
                if !is_file || map.frame_len == 0 || map.frame_len > limits::REF_MAP_BYTES {
                    return Err(bad(format!(
                        "a reference map against {} is out of range",
                        base.version
                    )));
                }
                *used += u64::from(map.frame_len);
            }
        }
        let mut covered = 0usize;
        for solid in &self.solid {
            let first = solid.first as usize;
            if first < covered {
                return Err(bad("solid frames overlap or are out of order".into()));
            }
            let end = first + solid.chunks as usize;
            let run = self
                .chunks
                .get(first..end)
                .filter(|run| !run.is_empty())
                .ok_or_else(|| bad("a solid frame runs past the chunk table".into()))?;
            let bytes: u64 = run.iter().map(|c| u64::from(c.len)).sum();
            if bytes > limits::SOLID_BYTES || solid.frame_len == 0 {
                return Err(bad("a solid frame has a bad size".into()));
            }
            let used = pack_used
                .get_mut(solid.pack as usize)
                .ok_or_else(|| bad(format!("a solid frame names pack {}", solid.pack)))?;
            *used += u64::from(solid.frame_len);
            covered = end;
        }
        for (pack, used) in self.packs.iter().zip(&pack_used) {
            if *used != pack.len {
                return Err(bad(format!("pack {} frames do not add up", pack.id)));
            }
        }
        Ok(())
    }

    /// The file tree: each file's chunks add up to its size, and the tree rules of path.rs.
    fn check_tree(&self) -> Result<()> {
        let bad = |reason: String| Error::malformed("manifest", reason);
        // Parents first and real directories, no duplicates, no case/normalization
        // collisions, then every symlink resolved over the tree (path.rs).
        let mut tree = TreeIndex::with_capacity(self.entries.len());
        for entry in &self.entries {
            let node = match &entry.kind {
                EntryKind::Dir => TreeNode::Dir,
                EntryKind::File(_) => TreeNode::File,
                EntryKind::Symlink { target } => TreeNode::Symlink(target),
            };
            tree.insert(&entry.path, node)?;
            match &entry.kind {
                EntryKind::Dir | EntryKind::Symlink { .. } => {}
                EntryKind::File(f) => {
                    let mut size = 0u64;
                    for &i in &f.chunks {
                        let chunk = self
                            .chunks
                            .get(i as usize)
                            .ok_or_else(|| bad(format!("{} names chunk {i}", entry.path)))?;
                        size += u64::from(chunk.len);
                    }
                    if size != f.size {
                        return Err(bad(format!("{} chunk sizes do not add up", entry.path)));
                    }
                }
            }
        }
        tree.check_symlinks()
    }
}

impl Pointer {
    /// Encodes the pointer and signs it with every key of `keys`.
    pub fn seal(&self, keys: &[&SecretKey]) -> Result<Vec<u8>> {
        let body = postcard::to_stdvec(self)
            .map_err(|e| Error::malformed("channel pointer", e.to_string()))?;
        envelope::seal(Kind::Pointer, &body, keys)
    }

    /// Verifies that a threshold of the channel role signed it, then decodes and validates.
    pub fn open(bytes: &[u8], channel: &RoleKeys) -> Result<Self> {
        let body = channel.open(Kind::Pointer, bytes)?;
        let pointer: Pointer = decode_versioned("channel pointer", body)?;
        pointer.validate()?;
        Ok(pointer)
    }

    /// Decodes without checking the signature or the rules [`Pointer::open`] enforces
    /// (publisher side only).
    pub(crate) fn decode_unverified(bytes: &[u8]) -> Result<Self> {
        let body = envelope::open_unverified(Kind::Pointer, bytes)?;
        decode_versioned("channel pointer", body)
    }

    /// Whether the publisher withdrew `version` from this channel.
    pub fn is_yanked(&self, version: &Version) -> bool {
        self.yanked.contains(version)
    }

    /// Checks the rules a client relies on: format, list sizes, the rollout share, a yanked
    /// list without repeats that does not name the pointer's own release, and the size of the
    /// rollback directive (whose signature and binding [`crate::directive`] checks).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::malformed("channel pointer", reason);
        if self.format != FORMAT_VERSION {
            return Err(bad(format!("unsupported format {}", self.format)));
        }
        if self.manifest_deltas.len() > limits::MANIFEST_DELTAS {
            return Err(bad("too many manifest deltas".into()));
        }
        if self.rollout_percent > 100 {
            return Err(bad(format!(
                "rollout of {}% is above 100%",
                self.rollout_percent
            )));
        }
        if self.yanked.len() > limits::YANKED {
            return Err(bad(format!(
                "{} yanked versions, more than the {} allowed",
                self.yanked.len(),
                limits::YANKED
            )));
        }
        let mut seen = HashSet::with_capacity(self.yanked.len());
        for version in &self.yanked {
            if !seen.insert(version) {
                return Err(bad(format!("yanked version {version} is listed twice")));
            }
        }
        if self.is_yanked(&self.version) {
            return Err(bad(format!(
                "it offers {}, which it lists as yanked",
                self.version
            )));
        }
        if let Some(reason) = self
            .rollback
            .as_ref()
            .and_then(|d| crate::directive::oversized(d.len()))
        {
            return Err(bad(reason));
        }
        Ok(())
    }
}

/// Decodes a manifest, pointer or directive body. A body of another format version usually
/// does not decode at all; the error then names its version instead of the field that failed.
pub(crate) fn decode_versioned<'a, T: Deserialize<'a>>(
    what: &'static str,
    body: &'a [u8],
) -> Result<T> {
    crate::decode::body(what, body).map_err(|e| match postcard::take_from_bytes::<u32>(body) {
        Ok((format, _)) if format != FORMAT_VERSION => Error::malformed(
            what,
            format!("unsupported format {format} (this engine reads {FORMAT_VERSION})"),
        ),
        _ => e,
    })
}

/// Domain separation for [`rollout_bucket`].
const ROLLOUT_CONTEXT: &str = "relsync 2026 rollout bucket v1";

/// The rollout bucket, 0 to 99, of one install for one release of a channel: an install takes
/// a non-critical release only if its bucket is below [`Pointer::rollout_percent`].
///
/// It is stable (the same install, channel and version always give the same bucket, so raising
/// the percentage only adds installs) and spread evenly over installs, and it changes with the
/// version, so the same installs are not always first. It is BLAKE3 in key-derivation mode
/// over `install_id ‖ len(channel) as u64 LE ‖ channel ‖ version` (the version as text), the
/// first 8 bytes of the hash as a little-endian `u64`, modulo 100.
pub fn rollout_bucket(install_id: &[u8; 16], channel: &str, version: &Version) -> u8 {
    let mut hasher = blake3::Hasher::new_derive_key(ROLLOUT_CONTEXT);
    hasher.update(install_id);
    hasher.update(&(channel.len() as u64).to_le_bytes());
    hasher.update(channel.as_bytes());
    hasher.update(version.to_string().as_bytes());
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) % 100) as u8
}

/// A manifest whose signature, hash and structure were checked, with derived lookups.
///
/// Only [`TrustedManifest::open`] makes one, so holding one proves the checks ran.
#[derive(Debug, Clone)]
pub struct TrustedManifest {
    id: ManifestId,
    bytes: Vec<u8>,
    manifest: Manifest,
    frame_offsets: Vec<u64>,
    delta_offsets: Vec<Vec<u64>>,
    ref_offsets: Vec<Vec<u64>>,
    /// Offset in its pack of each solid frame.
    solid_at: Vec<u64>,
}

impl TrustedManifest {
    /// Verifies `bytes` against `expected` and the trusted keys, then decodes and validates.
    pub fn open(bytes: Vec<u8>, expected: &ManifestId, trusted: &[PublicKey]) -> Result<Self> {
        Self::open_signed(bytes, expected, trusted, 1)
    }

    /// Like [`TrustedManifest::open`], requiring a threshold of the release role.
    pub fn open_release(bytes: Vec<u8>, expected: &ManifestId, release: &RoleKeys) -> Result<Self> {
        Self::open_signed(bytes, expected, &release.keys, release.threshold)
    }

    fn open_signed(
        bytes: Vec<u8>,
        expected: &ManifestId,
        trusted: &[PublicKey],
        threshold: u32,
    ) -> Result<Self> {
        let actual = ManifestId::of(&bytes);
        if actual != *expected {
            return Err(Error::ManifestHashMismatch {
                expected: *expected,
                actual,
            });
        }

        envelope::open_threshold(Kind::Manifest, &bytes, trusted, threshold)?;
        Self::open_local(bytes)
    }

    /// Opens a manifest from a source that is already trusted, without checking signatures:
    /// the install's own store (the keys that signed an installed release may since have been
    /// rotated out), or a publisher reading its own origin. Structure is still validated.
    pub(crate) fn open_local(bytes: Vec<u8>) -> Result<Self> {
        let manifest = Manifest::decode_body(envelope::open_unverified(Kind::Manifest, &bytes)?)?;
        manifest.validate()?;
        let mut next = vec![0u64; manifest.packs.len()];
        let mut place = |pack: u32, len: u32| {
            let at = &mut next[pack as usize];
            let offset = *at;
            *at += u64::from(len);
            offset
        };
        let frame_offsets = manifest
            .chunks
            .iter()
            .map(|c| place(c.pack, c.frame_len))
            .collect();
        let (delta_offsets, ref_offsets) = manifest
            .bases
            .iter()
            .map(|b| {
                let deltas = b
                    .deltas
                    .iter()
                    .map(|d| place(d.pack, d.frame_len))
                    .collect();
                let refs = b.refs.iter().map(|m| place(m.pack, m.frame_len)).collect();
                (deltas, refs)
            })
            .unzip();
        let solid_at = manifest
            .solid
            .iter()
            .map(|s| place(s.pack, s.frame_len))
            .collect();
        Ok(Self {
            id: ManifestId::of(&bytes),
            bytes,
            manifest,
            frame_offsets,
            delta_offsets,
            ref_offsets,
            solid_at,
        })
    }

    /// The manifest id.
    pub fn id(&self) -> ManifestId {
        self.id
    }

    /// The envelope bytes as signed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where chunk `index`'s frame starts in its pack.
    pub fn frame_offset(&self, index: u32) -> u64 {
        self.frame_offsets[index as usize]
    }

    /// Where delta `delta` of base `base` starts in its pack.
    pub fn delta_offset(&self, base: usize, delta: usize) -> u64 {
        self.delta_offsets[base][delta]
    }

    /// Where reference map `map` of base `base` starts in its pack.
    pub fn ref_map_offset(&self, base: usize, map: usize) -> u64 {
        self.ref_offsets[base][map]
    }

    /// The first offset of chunk `chunk` in file entry `entry`, if it is there.
    pub fn chunk_offset_in(&self, entry: usize, chunk: u32) -> Option<u64> {
        let EntryKind::File(file) = &self.entries.get(entry)?.kind else {
            return None;
        };
        self.chunk_spans(file)
            .find(|&(_, index, _)| index == chunk)
            .map(|(at, _, _)| at)
    }

    /// Where solid frame `index` starts in its pack.
    pub fn solid_offset(&self, index: usize) -> u64 {
        self.solid_at[index]
    }
}

impl std::ops::Deref for TrustedManifest {
    type Target = Manifest;

    fn deref(&self) -> &Manifest {
        &self.manifest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_file_text(&format!("relsync-ed25519-secret:{}", "11".repeat(32))).unwrap()
    }

    fn manifest(entries: Vec<Entry>, chunks: Vec<ChunkEntry>, pack_len: u64) -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            product: "app".into(),
            channel: "stable".into(),
            platform: None,
            version: Version::new(1, 0, 0),
            created_unix: 0,
            expires_unix: u64::MAX,
            critical: false,
            notes: String::new(),
            chunking: ChunkParams::default(),
            parent: None,
            packs: vec![PackRef {
                id: PackId([7; 32]),
                len: pack_len,
            }],
            chunks,
            entries,
            bases: Vec::new(),
            solid: Vec::new(),
        }
    }

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind,
        }
    }

    fn link(target: &str) -> EntryKind {
        EntryKind::Symlink {
            target: target.into(),
        }
    }

    fn open(m: &Manifest) -> Result<TrustedManifest> {
        let (id, bytes) = m.seal(&key())?;
        TrustedManifest::open(bytes, &id, &[key().public()])
    }

    #[test]
    fn accepts_a_sane_release_and_derives_offsets() {
        let chunk = |b: u8, frame_len| ChunkEntry {
            id: ChunkId([b; 32]),
            len: 10,
            pack: 0,
            frame_len,
        };
        let file = EntryKind::File(FileEntry {
            executable: false,
            size: 20,
            hash: FileHash([0; 32]),
            chunks: vec![0, 1],
        });
        let m = manifest(
            vec![
                entry("d", EntryKind::Dir),
                entry("d/f", file),
                entry("l", link("d/f")),
            ],
            vec![chunk(1, 5), chunk(2, 6)],
            11,
        );
        let trusted = open(&m).unwrap();
        assert_eq!(trusted.frame_offset(0), 0);
        assert_eq!(trusted.frame_offset(1), 5);
    }

    #[test]
    fn refuses_hostile_structure() {
        let cases: Vec<(&str, Manifest)> = vec![
            (
                "symlink through a symlink",
                manifest(
                    vec![
                        entry("d", EntryKind::Dir),
                        entry("d/up", link("..")),
                        entry("esc", link("d/up/../x")),
                    ],
                    vec![],
                    0,
                ),
            ),
            (
                "file under a symlink",
                manifest(
                    vec![entry("l", link(".")), entry("l/f", EntryKind::Dir)],
                    vec![],
                    0,
                ),
            ),
            (
                "duplicate path",
                manifest(
                    vec![entry("a", EntryKind::Dir), entry("a", EntryKind::Dir)],
                    vec![],
                    0,
                ),
            ),
            (
                "chunk index out of range",
                manifest(
                    vec![entry(
                        "f",
                        EntryKind::File(FileEntry {
                            executable: false,
                            size: 0,
                            hash: FileHash([0; 32]),
                            chunks: vec![9],
                        }),
                    )],
                    vec![],
                    0,
                ),
            ),
            (
                "pack length mismatch",
                manifest(
                    vec![],
                    vec![ChunkEntry {
                        id: ChunkId([1; 32]),
                        len: 1,
                        pack: 0,
                        frame_len: 9,
                    }],
                    10,
                ),
            ),
            (
                "empty frame",
                manifest(
                    vec![],
                    vec![ChunkEntry {
                        id: ChunkId([1; 32]),
                        len: 1,
                        pack: 0,
                        frame_len: 0,
                    }],
                    0,
                ),
            ),
        ];
        for (what, m) in cases {
            assert!(open(&m).is_err(), "{what} was accepted");
        }
    }

    #[test]
    fn refuses_colliding_looping_and_nested_trees_naming_the_paths() {
        let dir = || EntryKind::Dir;
        let cases: Vec<(&str, Vec<Entry>, &[&str])> = vec![
            (
                "case collision",
                vec![entry("README", dir()), entry("readme", dir())],
                &["\"README\"", "\"readme\"", "collide"],
            ),
            (
                "NFC vs NFD collision",
                vec![entry("caf\u{e9}", dir()), entry("cafe\u{301}", dir())],
                // Debug escapes the combining accent, which shows the difference.
                &["\"caf\u{e9}\"", "\"cafe\\u{301}\"", "collide"],
            ),
            (
                "sharp s vs ss",
                vec![entry("Stra\u{df}e", dir()), entry("strasse", dir())],
                &["Stra\u{df}e", "strasse", "collide"],
            ),
            (
                "collision one level down",
                vec![
                    entry("lib", dir()),
                    entry("lib/Foo.so", dir()),
                    entry("lib/foo.so", dir()),
                ],
                &["\"lib/Foo.so\"", "\"lib/foo.so\""],
            ),
            (
                "symlink loop",
                vec![entry("a", link("b")), entry("b", link("a"))],
                &["\"a -> b\"", "loops"],
            ),
            (
                "symlink chain that escapes",
                vec![
                    entry("d", dir()),
                    entry("d/up", link("..")),
                    entry("d/esc", link("up/..")),
                ],
                &["\"d/esc -> up/..\""],
            ),
            (
                "entry below a symlink",
                vec![
                    entry("real", dir()),
                    entry("l", link("real")),
                    entry("l/f", dir()),
                ],
                &["\"l/f\"", "below a symlink"],
            ),
        ];
        for (what, entries, needles) in cases {
            let err = match open(&manifest(entries, vec![], 0)) {
                Ok(_) => panic!("{what} was accepted"),
                Err(e) => e.to_string(),
            };
            for needle in needles {
                assert!(err.contains(needle), "{what}: {err:?} lacks {needle:?}");
            }
        }
        // The same names without a twin, and a chain that stays inside, are fine.
        let ok = manifest(
            vec![
                entry("README", dir()),
                entry("Stra\u{df}e", dir()),
                entry("d", dir()),
                entry("d/back", link("../l")),
                entry("l", link("README")),
            ],
            vec![],
            0,
        );
        open(&ok).unwrap();
    }

    #[test]
    fn manifest_files_and_deltas_round_trip_and_refuse_damage() {
        let dirs = |n: usize| {
            (0..n)
                .map(|i| entry(&format!("d{i}"), EntryKind::Dir))
                .collect()
        };
        let (old_id, old) = manifest(dirs(400), vec![], 0).seal(&key()).unwrap();
        let (id, new) = manifest(dirs(401), vec![], 0).seal(&key()).unwrap();

        let file = compress_envelope(&new).unwrap();
        assert_eq!(decompress_envelope(&file, None).unwrap(), new);
        let delta = compress_envelope_delta(&new, &old).unwrap();
        assert!(
            delta.len() * 4 < file.len(),
            "{} vs {}",
            delta.len(),
            file.len()
        );
        let envelope = decompress_envelope(&delta, Some(&old)).unwrap();
        let trusted = TrustedManifest::open(envelope, &id, &[key().public()]).unwrap();
        assert_eq!(trusted.entries.len(), 401);

        // A delta applied to the wrong base cannot pass for the manifest it names.
        let (_, other) = manifest(dirs(3), vec![], 0).seal(&key()).unwrap();
        if let Ok(wrong) = decompress_envelope(&delta, Some(&other)) {
            assert!(TrustedManifest::open(wrong, &id, &[key().public()]).is_err());
        }
        assert_ne!(old_id, id);
        for cut in [0, 1, delta.len() / 2, delta.len() - 1] {
            let err = decompress_envelope(&delta[..cut], Some(&old)).unwrap_err();
            assert!(err.to_string().contains("manifest delta"), "{err}");
        }
    }

    #[test]
    fn refuses_tampering_and_wrong_ids() {
        let m = manifest(vec![entry("d", EntryKind::Dir)], vec![], 0);
        let (_, mut bytes) = m.seal(&key()).unwrap();
        let other = ManifestId([0; 32]);
        assert!(TrustedManifest::open(bytes.clone(), &other, &[key().public()]).is_err());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let id2 = ManifestId::of(&bytes);
        assert!(TrustedManifest::open(bytes, &id2, &[key().public()]).is_err());
    }

    /// A release of one executable `bin/app` (chunks 0 and 1, frames of 5 and 6 bytes) with
    /// a projected delta of chunk 1 (7 bytes) against base 0.9.0, and its reference map (9
    /// bytes), all in pack 0.
    fn projected_release() -> Manifest {
        let chunk = |b: u8, frame_len| ChunkEntry {
            id: ChunkId([b; 32]),
            len: 10,
            pack: 0,
            frame_len,
        };
        let file = EntryKind::File(FileEntry {
            executable: true,
            size: 20,
            hash: FileHash([0; 32]),
            chunks: vec![0, 1],
        });
        let mut m = manifest(
            vec![entry("bin", EntryKind::Dir), entry("bin/app", file)],
            vec![chunk(1, 5), chunk(2, 6)],
            5 + 6 + 7 + 9,
        );
        m.bases.push(Base {
            manifest: ManifestId([3; 32]),
            version: Version::new(0, 9, 0),
            windows: vec![Window {
                entry: 1,
                offset: 0,
                len: 20,
            }],
            deltas: vec![Delta {
                chunk: 1,
                window: 0,
                pack: 0,
                frame_len: 7,
                codec: DeltaCodec::BsdiffRefs { map: 0 },
            }],
            refs: vec![RefMap {
                base_entry: 1,
                entry: 1,
                pack: 0,
                frame_len: 9,
                hash: ChunkId([4; 32]),
            }],
        });
        m
    }

    #[test]
    fn reference_maps_and_projected_deltas_are_checked() {
        let m = projected_release();
        let trusted = open(&m).unwrap();
        // Plain frames, then the base's deltas, then its reference maps.
        assert_eq!(trusted.delta_offset(0, 0), 11);
        assert_eq!(trusted.ref_map_offset(0, 0), 18);
        assert_eq!(trusted.chunk_offset_in(1, 1), Some(10));
        assert_eq!(trusted.chunk_offset_in(1, 2), None);
        assert_eq!(
            trusted.chunk_offset_in(0, 1),
            None,
            "a directory holds no chunk"
        );
        assert_eq!(trusted.chunk_offset_in(7, 1), None);

        // A second executable with its own map.
        let mut two = projected_release();
        two.entries
            .push(entry("bin/tool", two.entries[1].kind.clone()));
        let map = two.bases[0].refs[0];
        two.bases[0].refs.push(RefMap {
            base_entry: 2,
            entry: 2,
            ..map
        });
        two.packs[0].len += 9;
        assert_eq!(open(&two).unwrap().ref_map_offset(0, 1), 27);

        // The largest map the limit allows.
        let mut largest = projected_release();
        largest.bases[0].refs[0].frame_len = limits::REF_MAP_BYTES;
        largest.packs[0].len += u64::from(limits::REF_MAP_BYTES) - 9;
        open(&largest).unwrap();

        type Edit = fn(&mut Manifest);
        let cases: [(&str, &str, Edit); 12] = [
            (
                "a projected delta naming map 1 of 1",
                "delta against 0.9.0 is out of range",
                |m| m.bases[0].deltas[0].codec = DeltaCodec::BsdiffRefs { map: 1 },
            ),
            (
                "a projected delta naming map u32::MAX",
                "delta against 0.9.0 is out of range",
                |m| m.bases[0].deltas[0].codec = DeltaCodec::BsdiffRefs { map: u32::MAX },
            ),
            (
                "a map of an entry out of range",
                "reference map against 0.9.0 is out of range",
                |m| m.bases[0].refs[0].entry = 2,
            ),
            (
                "a map of a directory",
                "reference map against 0.9.0 is out of range",
                |m| m.bases[0].refs[0].entry = 0,
            ),
            (
                "an empty map",
                "reference map against 0.9.0 is out of range",
                |m| {
                    m.bases[0].refs[0].frame_len = 0;
                    m.packs[0].len -= 9;
                },
            ),
            (
                "a map over the limit",
                "reference map against 0.9.0 is out of range",
                |m| {
                    m.bases[0].refs[0].frame_len = limits::REF_MAP_BYTES + 1;
                    m.packs[0].len += u64::from(limits::REF_MAP_BYTES) + 1 - 9;
                },
            ),
            (
                "a map in a pack out of range",
                "reference map names pack 1",
                |m| m.bases[0].refs[0].pack = 1,
            ),
            (
                "more maps than entries",
                "too many reference maps against 0.9.0",
                |m| {
                    let map = m.bases[0].refs[0];
                    m.bases[0].refs = vec![map; 3];
                    m.packs[0].len += 2 * 9;
                },
            ),
            (
                "two maps of one base file",
                "two reference maps against 0.9.0 share a file",
                |m| {
                    m.entries.push(entry("bin/tool", m.entries[1].kind.clone()));
                    let map = m.bases[0].refs[0];
                    m.bases[0].refs.push(RefMap { entry: 2, ..map });
                    m.packs[0].len += 9;
                },
            ),
            (
                "two maps of one new file",
                "two reference maps against 0.9.0 share a file",
                |m| {
                    let map = m.bases[0].refs[0];
                    m.bases[0].refs.push(RefMap {
                        base_entry: 0,
                        ..map
                    });
                    m.packs[0].len += 9;
                },
            ),
            (
                "a map the pack does not hold",
                "frames do not add up",
                |m| m.packs[0].len -= 9,
            ),
            (
                "a map that outgrows its pack",
                "frames do not add up",
                |m| m.bases[0].refs[0].frame_len += 1,
            ),
        ];
        for (what, needle, edit) in cases {
            let mut m = projected_release();
            edit(&mut m);
            let err = match open(&m) {
                Ok(_) => panic!("{what} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(needle), "{what}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn a_projected_frame_needs_its_reference_map() {
        let window = relsync_chunker::frame::WindowDecoder::new(vec![0; 64]);
        let mut encoder = relsync_chunker::frame::WindowEncoder::new(&[0; 64], 3).unwrap();
        let op = relsync_chunker::frame::BsdiffOp {
            src: 0,
            add: 16,
            copy: 0,
        };
        let frame = encoder.compress_bsdiff(&[1; 16], &[op]).unwrap().unwrap();
        assert_eq!(
            DeltaCodec::Bsdiff
                .decode(&window, &frame, 16, None)
                .unwrap(),
            [1; 16]
        );
        let err = DeltaCodec::BsdiffRefs { map: 0 }
            .decode(&window, &frame, 16, None)
            .unwrap_err();
        assert!(
            matches!(&err, relsync_chunker::Error::CorruptFrame(m) if m.contains("without its reference map")),
            "{err:?}"
        );
        assert!(DeltaCodec::BsdiffRefs { map: 3 }.is_bsdiff());
        assert_eq!(DeltaCodec::BsdiffRefs { map: 3 }.ref_map(), Some(3));
        assert_eq!(DeltaCodec::Bsdiff.ref_map(), None);
    }

    #[test]
    fn release_notes_are_bounded() {
        let mut m = manifest(vec![], vec![], 0);
        m.critical = true;
        m.notes = "\u{e9}".repeat(limits::NOTES_BYTES / 2);
        let trusted = open(&m).unwrap();
        assert!(trusted.critical);
        assert_eq!(trusted.notes.len(), limits::NOTES_BYTES);
        m.notes.push('x');
        let err = open(&m).unwrap_err().to_string();
        assert!(err.contains("release notes are 16385 bytes"), "{err}");
    }

    fn pointer() -> Pointer {
        Pointer {
            format: FORMAT_VERSION,
            product: "app".into(),
            channel: "stable".into(),
            version: Version::new(2, 0, 0),
            root_version: 0,
            manifest: ManifestId([1; 32]),
            manifest_len: 100,
            manifest_deltas: Vec::new(),
            issued_unix: 0,
            expires_unix: u64::MAX,
            rollout_percent: 100,
            yanked: Vec::new(),
            rollback: None,
        }
    }

    fn open_pointer(p: &Pointer) -> Result<Pointer> {
        let sealed = p.seal(&[&key()])?;
        Pointer::open(&sealed, &RoleKeys::single(key().public()))
    }

    #[test]
    fn pointer_lifecycle_fields_round_trip() {
        let mut p = pointer();
        p.rollout_percent = 0;
        p.yanked = (0..limits::YANKED as u64)
            .map(|i| Version::new(3, i, 0))
            .collect();
        p.rollback = Some(vec![7; crate::directive::limits::DIRECTIVE_BYTES]);
        assert_eq!(open_pointer(&p).unwrap(), p);
        assert!(p.is_yanked(&Version::new(3, 1, 0)));
        assert!(!p.is_yanked(&p.version));
    }

    #[test]
    fn pointer_refuses_bad_lifecycle_fields() {
        let cases: Vec<(&str, Pointer)> = vec![
            (
                "rollout of 101% is above 100%",
                Pointer {
                    rollout_percent: 101,
                    ..pointer()
                },
            ),
            (
                "65 yanked versions, more than the 64",
                Pointer {
                    yanked: (0..=limits::YANKED as u64)
                        .map(|i| Version::new(1, i, 0))
                        .collect(),
                    ..pointer()
                },
            ),
            (
                "listed twice",
                Pointer {
                    yanked: vec![Version::new(1, 0, 0), Version::new(1, 0, 0)],
                    ..pointer()
                },
            ),
            (
                "offers 2.0.0, which it lists as yanked",
                Pointer {
                    yanked: vec![Version::new(1, 0, 0), Version::new(2, 0, 0)],
                    ..pointer()
                },
            ),
            (
                "rollback directive of 16385 bytes, over the 16384-byte limit",
                Pointer {
                    rollback: Some(vec![0; crate::directive::limits::DIRECTIVE_BYTES + 1]),
                    ..pointer()
                },
            ),
            (
                "too many manifest deltas",
                Pointer {
                    manifest_deltas: vec![
                        ManifestDelta {
                            base: ManifestId([2; 32]),
                            len: 1,
                        };
                        limits::MANIFEST_DELTAS + 1
                    ],
                    ..pointer()
                },
            ),
        ];
        for (needle, p) in cases {
            let err = open_pointer(&p).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
            assert!(p.validate().is_err());
        }
        open_pointer(&pointer()).unwrap();
    }

    #[test]
    fn an_older_format_is_named_not_misread() {
        // A format-4 pointer: the fields before the lifecycle ones.
        let p = pointer();
        let old = postcard::to_stdvec(&(
            4u32,
            &p.product,
            &p.channel,
            &p.version,
            p.root_version,
            p.manifest,
            p.manifest_len,
            &p.manifest_deltas,
            p.issued_unix,
            p.expires_unix,
        ))
        .unwrap();
        let sealed = envelope::seal(Kind::Pointer, &old, &[&key()]).unwrap();
        for err in [
            Pointer::open(&sealed, &RoleKeys::single(key().public())).unwrap_err(),
            Pointer::decode_unverified(&sealed).unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(err.contains("unsupported format 4"), "{err}");
        }
    }

    #[test]
    fn rollout_buckets_are_stable_and_even() {
        let v = Version::new(1, 2, 3);
        let id = |i: u32| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id
        };
        assert_eq!(
            rollout_bucket(&id(7), "stable", &v),
            rollout_bucket(&id(7), "stable", &v)
        );
        let n = 20_000u32;
        let mut counts = [0u32; 100];
        for i in 0..n {
            let bucket = rollout_bucket(&id(i), "stable", &v);
            assert!(bucket < 100);
            counts[bucket as usize] += 1;
        }
        // 200 expected per bucket; a fair hash stays well inside +-35% (about 5 sigma).
        for (bucket, &count) in counts.iter().enumerate() {
            assert!((130..=270).contains(&count), "bucket {bucket}: {count}");
        }
        // About 10% of installs are in buckets 0..10.
        let first_ten: u32 = counts[..10].iter().sum();
        assert!((1_800..=2_200).contains(&first_ten), "{first_ten}");
        // Another version reshuffles the installs.
        let moved = (0..1000)
            .filter(|&i| {
                rollout_bucket(&id(i), "stable", &v)
                    != rollout_bucket(&id(i), "stable", &Version::new(1, 2, 4))
            })
            .count();
        assert!(moved > 900, "{moved}");
        // The channel's length is hashed too: "beta1" + "2.0.0" is not "beta" + "12.0.0".
        let moved = (0..1000)
            .filter(|&i| {
                rollout_bucket(&id(i), "beta1", &Version::new(2, 0, 0))
                    != rollout_bucket(&id(i), "beta", &Version::new(12, 0, 0))
            })
            .count();
        assert!(moved > 900, "{moved}");
    }
}
