//! Manifests and root documents built from `arbitrary` input.
//!
//! Raw bytes rarely decode to a manifest that passes validation: pack lengths must add up,
//! parents must come first, sizes must match. [`ArbManifest`] builds one field by field and
//! then *repairs* what validation would refuse, unless its `broken` byte asks to skip a
//! repair, so most inputs reach the deep checks (symlinks, collisions) and the planner, and
//! the rest probe one rule at a time. [`ArbRoot`] does the same for root documents, and
//! [`RootModel`] says which chains a correct client accepts.

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use relsync_chunker::{ChunkId, ChunkParams};
use relsync_engine::manifest::{
    Base, ChunkEntry, Delta, DeltaCodec, Entry, EntryKind, FORMAT_VERSION, FileEntry, Manifest,
    PackRef, RefMap, SolidFrame, Window, limits,
};
use relsync_engine::root::{ROOT_FORMAT, RoleKeys, Root};
use relsync_engine::{FileHash, ManifestId, PackId, RelPath};
use semver::{Prerelease, Version};

use crate::keys;

/// Real things the built manifest may refer to: chunks and files of an installed release
/// (so the planner finds them on disk) and that release as a delta base.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// Chunk ids and lengths.
    pub chunks: Vec<(ChunkId, u32)>,
    /// Hashes of whole files.
    pub files: Vec<FileHash>,
    /// Releases to use as delta bases.
    pub bases: Vec<PoolBase>,
}

/// A release the built manifest may name as a delta base.
#[derive(Debug, Clone)]
pub struct PoolBase {
    /// Its manifest id.
    pub id: ManifestId,
    /// Its version.
    pub version: Version,
    /// (entry index, size) of each of its regular files, for windows.
    pub files: Vec<(u32, u64)>,
}

/// A short name: the usual ones, or any string.
#[derive(Debug, Clone, Arbitrary)]
pub enum Name {
    /// `app`
    App,
    /// `stable`
    Stable,
    /// `beta`
    Beta,
    /// `x86_64-linux`
    Platform,
    /// The empty string.
    Empty,
    /// Anything.
    Raw(String),
}

impl Name {
    /// The text.
    pub fn text(&self) -> String {
        match self {
            Name::App => "app".into(),
            Name::Stable => "stable".into(),
            Name::Beta => "beta".into(),
            Name::Platform => "x86_64-linux".into(),
            Name::Empty => String::new(),
            Name::Raw(s) => s.clone(),
        }
    }
}

/// A semver version, small or extreme.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbVersion {
    major: u8,
    minor: u8,
    patch: u8,
    max_major: bool,
    pre: Option<Name>,
}

impl ArbVersion {
    /// The version.
    pub fn version(&self) -> Version {
        let major = if self.max_major {
            u64::MAX
        } else {
            u64::from(self.major)
        };
        let mut v = Version::new(major, u64::from(self.minor), u64::from(self.patch));
        if let Some(pre) = &self.pre {
            v.pre = Prerelease::new(&pre.text()).unwrap_or(Prerelease::EMPTY);
        }
        v
    }
}

/// FastCDC bounds: the defaults, small ones, or any three numbers (decoded without the
/// validation `ChunkParams::new` does, as a hostile manifest would carry them).
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbChunking {
    /// `ChunkParams::default()`.
    Default,
    /// 64 / 256 / 1024, the smallest FastCDC allows.
    Small,
    /// Any bounds.
    Raw(u32, u32, u32),
}

impl ArbChunking {
    fn params(&self) -> ChunkParams {
        match self {
            ArbChunking::Default => ChunkParams::default(),
            ArbChunking::Small => ChunkParams::new(64, 256, 1024).unwrap_or_default(),
            ArbChunking::Raw(min, avg, max) => postcard::to_stdvec(&(*min, *avg, *max))
                .ok()
                .and_then(|b| postcard::from_bytes(&b).ok())
                .unwrap_or_default(),
        }
    }
}

/// Path components that exercise the path rules: case and Unicode collisions, `.` and `..`,
/// empty components.
const COMPONENTS: [&str; 20] = [
    "a",
    "b",
    "c",
    "lib",
    "bin",
    "A",
    "B",
    "README",
    "readme",
    "\u{df}",
    "ss",
    "caf\u{e9}",
    "cafe\u{301}",
    "\u{fb01}",
    "fi",
    ".",
    "..",
    "",
    "x.so",
    "K",
];

/// A path (or symlink target) made of [`COMPONENTS`], or any string.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbPath {
    /// Up to 5 components joined with `/`; `absolute` prefixes a `/`.
    Parts {
        /// Indices into [`COMPONENTS`].
        parts: Vec<u8>,
        /// Start with `/`.
        absolute: bool,
    },
    /// Anything.
    Raw(String),
}

impl ArbPath {
    fn text(&self) -> String {
        match self {
            ArbPath::Parts { parts, absolute } => {
                let joined = parts
                    .iter()
                    .take(5)
                    .map(|&p| COMPONENTS[usize::from(p) % COMPONENTS.len()])
                    .collect::<Vec<_>>()
                    .join("/");
                if *absolute {
                    format!("/{joined}")
                } else {
                    joined
                }
            }
            ArbPath::Raw(s) => s.clone(),
        }
    }
}

/// Where a chunk id comes from.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbChunkId {
    /// A chunk of the pool (with its length).
    Pool(u8),
    /// `[b; 32]`: few distinct values, so duplicates happen.
    Byte(u8),
    /// Any id.
    Raw([u8; 32]),
}

/// A chunk table entry.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbChunk {
    id: ArbChunkId,
    len: u32,
    pack: u8,
    frame_len: u32,
}

/// A file's hash.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbHash {
    /// A file of the pool: the planner may hard-link it.
    Pool(u8),
    /// `[b; 32]`.
    Byte(u8),
}

/// A tree entry.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbKind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Mode 0755.
        executable: bool,
        /// Chunk indices (taken modulo the table's length when repaired).
        chunks: Vec<u16>,
        /// Its hash.
        hash: ArbHash,
        /// Its size, when not repaired to the chunks' sum.
        size: u64,
    },
    /// A symlink.
    Symlink(ArbPath),
}

/// One path of the tree.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbEntry {
    path: ArbPath,
    kind: ArbKind,
}

/// A delta window.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbWindow {
    entry: u8,
    offset: u32,
    len: u32,
}

/// A delta frame.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbDelta {
    chunk: u16,
    window: u8,
    pack: u8,
    frame_len: u32,
    bsdiff: bool,
    /// With projected references: the index of its reference map (taken modulo the base's
    /// maps when repaired).
    refs: Option<u8>,
}

/// A reference map of an executable.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbRefMap {
    /// The old file: one of the pool base's files (by index) when repaired.
    base_entry: u8,
    /// The new file: one of the built manifest's files (by index) when repaired.
    entry: u8,
    pack: u8,
    frame_len: u32,
    hash: u8,
}

/// A delta base.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbBase {
    /// A pool base (by index), or `[b; 32]`.
    manifest: Result<u8, u8>,
    version: ArbVersion,
    windows: Vec<ArbWindow>,
    deltas: Vec<ArbDelta>,
    refs: Vec<ArbRefMap>,
}

/// A solid frame: when repaired, it starts `skip % 4` chunks after the previous one.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbSolid {
    skip: u8,
    chunks: u8,
    pack: u8,
    frame_len: u32,
}

/// A manifest, built and then repaired (see the module docs).
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbManifest {
    /// Repairs to skip: none when bit 7 is clear, else those whose bit is set (see
    /// [`Repair`]).
    broken: u8,
    format: u32,
    product: Name,
    channel: Name,
    platform: Option<Name>,
    version: ArbVersion,
    created_unix: u64,
    expires_unix: u64,
    critical: bool,
    notes: String,
    chunking: ArbChunking,
    parent: Option<[u8; 32]>,
    packs: Vec<(u8, u64)>,
    chunks: Vec<ArbChunk>,
    entries: Vec<ArbEntry>,
    bases: Vec<ArbBase>,
    solid: Vec<ArbSolid>,
}

/// The repairs [`ArbManifest::build`] makes, by bit of `broken`.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub enum Repair {
    /// `format` is [`FORMAT_VERSION`].
    Format = 0,
    /// Indices (packs, chunks, windows) are in range and frames are not empty.
    Indices = 1,
    /// Pack lengths are the sums of their frames.
    PackLens = 2,
    /// File sizes are the sums of their chunks; chunk lengths fit the chunking bounds.
    Sizes = 3,
    /// Entries sorted, with missing parent directories added.
    Tree = 4,
    /// Solid frames in order, not overlapping, inside the chunk table.
    Solid = 5,
    /// Platform and channel names are valid.
    Names = 6,
}

/// Index `i` modulo `len`, or `i` itself (likely out of range) when `len` is 0 or not
/// repairing.
fn index(i: u64, len: usize, repair: bool) -> u32 {
    if repair && len > 0 {
        (i % len as u64) as u32
    } else {
        i as u32
    }
}

impl ArbManifest {
    fn repair(&self, what: Repair) -> bool {
        self.broken & 0x80 == 0 || self.broken & (1 << what as u8) == 0
    }

    /// Builds the manifest against `pool`.
    pub fn build(&self, pool: &Pool) -> Manifest {
        let chunking = self.chunking.params();
        let fix_index = self.repair(Repair::Indices);
        let fix_sizes = self.repair(Repair::Sizes);
        let mut packs: Vec<PackRef> = self
            .packs
            .iter()
            .take(8)
            .map(|&(id, len)| PackRef {
                id: PackId([id; 32]),
                len,
            })
            .collect();
        if fix_index && packs.is_empty() {
            packs.push(PackRef {
                id: PackId([0; 32]),
                len: 0,
            });
        }
        let frame_len = |len: u32| if fix_index { len.max(1) } else { len };

        let chunks: Vec<ChunkEntry> = self
            .chunks
            .iter()
            .map(|c| {
                let (id, len) = match (&c.id, pool.chunks.len()) {
                    (ArbChunkId::Pool(i), n) if n > 0 => pool.chunks[usize::from(*i) % n],
                    (ArbChunkId::Pool(b) | ArbChunkId::Byte(b), _) => (ChunkId([*b; 32]), c.len),
                    (ArbChunkId::Raw(id), _) => (ChunkId(*id), c.len),
                };
                let len = if fix_sizes {
                    len.min(chunking.max_bytes)
                } else {
                    len
                };
                ChunkEntry {
                    id,
                    len,
                    pack: index(u64::from(c.pack), packs.len(), fix_index),
                    frame_len: frame_len(c.frame_len % chunking.max_bytes.saturating_mul(2).max(1)),
                }
            })
            .collect();

        let mut entries = Vec::new();
        for e in self.entries.iter().take(64) {
            let Ok(path) = RelPath::new(e.path.text()) else {
                continue;
            };
            let kind = match &e.kind {
                ArbKind::Dir => EntryKind::Dir,
                ArbKind::Symlink(target) => EntryKind::Symlink {
                    target: target.text(),
                },
                ArbKind::File {
                    executable,
                    chunks: file_chunks,
                    hash,
                    size,
                } => {
                    let file_chunks: Vec<u32> = file_chunks
                        .iter()
                        .map(|&i| index(u64::from(i), chunks.len(), fix_index))
                        .collect();
                    let sum = file_chunks
                        .iter()
                        .filter_map(|&i| chunks.get(i as usize))
                        .map(|c| u64::from(c.len))
                        .sum();
                    let hash = match (hash, pool.files.len()) {
                        (ArbHash::Pool(i), n) if n > 0 => pool.files[usize::from(*i) % n],
                        (ArbHash::Pool(b) | ArbHash::Byte(b), _) => FileHash([*b; 32]),
                    };
                    EntryKind::File(FileEntry {
                        executable: *executable,
                        size: if fix_sizes { sum } else { *size },
                        hash,
                        chunks: file_chunks,
                    })
                }
            };
            entries.push(Entry { path, kind });
        }
        if self.repair(Repair::Tree) {
            entries = repair_tree(entries);
        }

        // The built manifest's regular files, for reference maps.
        let new_files: Vec<u32> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, EntryKind::File(_)))
            .map(|(i, _)| i as u32)
            .collect();
        let bases: Vec<Base> = self
            .bases
            .iter()
            .take(4)
            .map(|b| {
                let pooled = match b.manifest {
                    Ok(i) if !pool.bases.is_empty() => {
                        Some(&pool.bases[usize::from(i) % pool.bases.len()])
                    }
                    _ => None,
                };
                let (manifest, version) = match (pooled, b.manifest) {
                    (Some(base), _) => (base.id, base.version.clone()),
                    (None, Ok(x) | Err(x)) => (ManifestId([x; 32]), b.version.version()),
                };
                let files = pooled.map_or(&[][..], |base| base.files.as_slice());
                let windows: Vec<Window> = b
                    .windows
                    .iter()
                    .take(16)
                    .map(|w| match files {
                        // A window inside one of the base's files.
                        [_, ..] if fix_index => {
                            let (entry, size) = files[usize::from(w.entry) % files.len()];
                            let offset = u64::from(w.offset) % size.max(1);
                            let room = u32::try_from(size - offset).unwrap_or(u32::MAX);
                            Window {
                                entry,
                                offset,
                                len: 1 + w.len % room.max(1),
                            }
                        }
                        _ => Window {
                            entry: u32::from(w.entry),
                            offset: u64::from(w.offset),
                            len: w.len,
                        },
                    })
                    .collect();
                let mut refs: Vec<RefMap> = b
                    .refs
                    .iter()
                    .take(4)
                    .map(|r| RefMap {
                        base_entry: match files {
                            [_, ..] if fix_index => {
                                files[usize::from(r.base_entry) % files.len()].0
                            }
                            _ => u32::from(r.base_entry),
                        },
                        entry: match new_files.as_slice() {
                            [_, ..] if fix_index => {
                                new_files[usize::from(r.entry) % new_files.len()]
                            }
                            _ => u32::from(r.entry),
                        },
                        pack: index(u64::from(r.pack), packs.len(), fix_index),
                        frame_len: if fix_index {
                            1 + r.frame_len % limits::REF_MAP_BYTES
                        } else {
                            r.frame_len
                        },
                        hash: ChunkId([r.hash; 32]),
                    })
                    .collect();
                if fix_index {
                    // One map per old file and per new file.
                    let (mut old, mut new) = (BTreeSet::new(), BTreeSet::new());
                    refs.retain(|r| old.insert(r.base_entry) & new.insert(r.entry));
                }
                let deltas = b
                    .deltas
                    .iter()
                    .take(64)
                    .map(|d| Delta {
                        chunk: index(u64::from(d.chunk), chunks.len(), fix_index),
                        window: index(u64::from(d.window), windows.len(), fix_index),
                        pack: index(u64::from(d.pack), packs.len(), fix_index),
                        frame_len: frame_len(
                            d.frame_len % chunking.max_bytes.saturating_mul(2).max(1),
                        ),
                        codec: match d.refs {
                            // Without maps to name, a repaired delta stays plain bsdiff.
                            Some(m) if !fix_index || !refs.is_empty() => DeltaCodec::BsdiffRefs {
                                map: index(u64::from(m), refs.len(), fix_index),
                            },
                            _ if d.bsdiff || d.refs.is_some() => DeltaCodec::Bsdiff,
                            _ => DeltaCodec::Zstd,
                        },
                    })
                    .collect();
                Base {
                    manifest,
                    version,
                    windows,
                    deltas,
                    refs,
                }
            })
            .collect();

        let mut solid = Vec::new();
        let mut covered = 0u32;
        for s in self.solid.iter().take(16) {
            let frame = if self.repair(Repair::Solid) {
                let first = covered.saturating_add(u32::from(s.skip % 4));
                let count = 1 + u32::from(s.chunks % 16);
                let count = count.min((chunks.len() as u32).saturating_sub(first));
                if count == 0 {
                    break;
                }
                covered = first + count;
                SolidFrame {
                    first,
                    chunks: count,
                    pack: index(u64::from(s.pack), packs.len(), fix_index),
                    frame_len: frame_len(s.frame_len),
                }
            } else {
                SolidFrame {
                    first: u32::from(s.skip),
                    chunks: u32::from(s.chunks),
                    pack: u32::from(s.pack),
                    frame_len: s.frame_len,
                }
            };
            solid.push(frame);
        }

        if self.repair(Repair::PackLens) {
            for p in &mut packs {
                p.len = 0;
            }
            let frames = chunks
                .iter()
                .map(|c| (c.pack, c.frame_len))
                .chain(
                    bases
                        .iter()
                        .flat_map(|b| b.deltas.iter().map(|d| (d.pack, d.frame_len))),
                )
                .chain(
                    bases
                        .iter()
                        .flat_map(|b| b.refs.iter().map(|r| (r.pack, r.frame_len))),
                )
                .chain(solid.iter().map(|s| (s.pack, s.frame_len)));
            for (pack, len) in frames {
                if let Some(p) = packs.get_mut(pack as usize) {
                    p.len += u64::from(len);
                }
            }
        }

        let names = self.repair(Repair::Names);
        let valid_name = |n: &Name| {
            let text = n.text();
            if names && !relsync_engine::paths::valid_channel(&text) {
                "stable".to_owned()
            } else {
                text
            }
        };
        Manifest {
            format: if self.repair(Repair::Format) {
                FORMAT_VERSION
            } else {
                self.format
            },
            product: self.product.text(),
            channel: valid_name(&self.channel),
            platform: self.platform.as_ref().map(valid_name),
            version: self.version.version(),
            created_unix: self.created_unix,
            expires_unix: self.expires_unix,
            critical: self.critical,
            notes: self.notes.clone(),
            chunking,
            parent: self.parent.map(ManifestId),
            packs,
            chunks,
            entries,
            bases,
            solid,
        }
    }
}

/// Sorts entries by path and adds missing parent directories, so parents come first.
/// Duplicates stay (validation must refuse them).
fn repair_tree(mut entries: Vec<Entry>) -> Vec<Entry> {
    let have: BTreeSet<String> = entries.iter().map(|e| e.path.to_string()).collect();
    let mut parents = BTreeSet::new();
    for e in &entries {
        let mut at = e.path.parent();
        while let Some(p) = at {
            if !have.contains(p.as_str()) {
                parents.insert(p.to_string());
            }
            at = p.parent();
        }
    }
    entries.extend(parents.into_iter().filter_map(|p| {
        Some(Entry {
            path: RelPath::new(p).ok()?,
            kind: EntryKind::Dir,
        })
    }));
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries
}

/// A role over the fixed keys: those picked by the low 4 bits of `mask`, and a threshold.
/// With bit 7 of `mask` clear the role is valid; with it set, bit 4 lists a key twice, bit 5
/// pads the role past 32 keys, and the threshold may be 0 or above the key count.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbRole {
    mask: u8,
    threshold: u8,
}

impl ArbRole {
    fn role(&self) -> RoleKeys {
        let mut picked: Vec<usize> = (0..keys::COUNT)
            .filter(|i| self.mask & (1 << i) != 0)
            .collect();
        if picked.is_empty() && self.mask & 0x80 == 0 {
            picked.push(0);
        }
        let len = picked.len() as u32;
        let threshold = if self.mask & 0x80 == 0 {
            1 + u32::from(self.threshold) % len
        } else {
            if self.mask & 0x10 != 0
                && let Some(&first) = picked.first()
            {
                picked.push(first);
            }
            if self.mask & 0x20 != 0 && !picked.is_empty() {
                while picked.len() <= relsync_engine::root::limits::ROLE_KEYS {
                    picked.push(picked[picked.len() % len as usize]);
                }
            }
            u32::from(self.threshold) % (len + 2)
        };
        RoleKeys {
            keys: picked.into_iter().map(keys::public).collect(),
            threshold,
        }
    }
}

/// A root document's version, relative to the one before it in the chain.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ArbRootVersion {
    /// One more: what a valid rotation has.
    Next,
    /// The same version again.
    Same,
    /// Two more.
    Skip,
    /// `u64::MAX`.
    Max,
    /// Any version.
    Raw(u64),
}

/// One root document of a chain, and which fixed keys sign it.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbRoot {
    /// Bit 7 set: the format is wrong.
    flags: u8,
    product: Name,
    version: ArbRootVersion,
    expires_unix: u64,
    root: ArbRole,
    release: ArbRole,
    channel: ArbRole,
    /// See [`keys::signers`].
    pub signers: u8,
}

impl ArbRoot {
    /// The root, placed after a root of version `previous`.
    pub fn build(&self, previous: u64) -> Root {
        Root {
            format: if self.flags & 0x80 != 0 {
                u32::from(self.flags)
            } else {
                ROOT_FORMAT
            },
            product: self.product.text(),
            version: match self.version {
                ArbRootVersion::Next => previous.wrapping_add(1),
                ArbRootVersion::Same => previous,
                ArbRootVersion::Skip => previous.wrapping_add(2),
                ArbRootVersion::Max => u64::MAX,
                ArbRootVersion::Raw(v) => v,
            },
            expires_unix: self.expires_unix,
            root: self.root.role(),
            release: self.release.role(),
            channel: self.channel.role(),
        }
    }
}

/// What a correct client decides about root documents, written from the rules in
/// `engine/src/root.rs`'s docs rather than its code.
#[derive(Debug, Clone, Copy)]
pub struct RootModel;

impl RootModel {
    fn role_ok(role: &RoleKeys) -> bool {
        let distinct: BTreeSet<[u8; 32]> = role.keys.iter().map(|k| *k.as_bytes()).collect();
        (1..=relsync_engine::root::limits::ROLE_KEYS).contains(&role.keys.len())
            && distinct.len() == role.keys.len()
            && role.threshold >= 1
            && role.threshold as usize <= role.keys.len()
    }

    /// Whether `root` is well formed.
    pub fn valid(root: &Root) -> bool {
        root.format == ROOT_FORMAT
            && Self::role_ok(&root.root)
            && Self::role_ok(&root.release)
            && Self::role_ok(&root.channel)
    }

    /// Whether the fixed keys `signers` meet `role`'s threshold (each key counts once).
    pub fn signed(role: &RoleKeys, signers: &[usize]) -> bool {
        let signed: BTreeSet<[u8; 32]> = signers
            .iter()
            .map(|&i| *keys::public(i).as_bytes())
            .filter(|k| role.keys.iter().any(|r| r.as_bytes() == k))
            .collect();
        signed.len() as u64 >= u64::from(role.threshold.max(1))
    }

    /// Whether a client pins `root` signed by `signers`.
    pub fn pins(root: &Root, signers: &[usize]) -> bool {
        Self::valid(root) && Self::signed(&root.root, signers)
    }

    /// Whether a client at `current` accepts `next`, signed by `signers`, as the next root.
    pub fn follows(current: &Root, next: &Root, signers: &[usize], envelope_len: usize) -> bool {
        envelope_len as u64 <= relsync_engine::root::limits::ROOT_BYTES
            && Self::signed(&current.root, signers)
            && Self::valid(next)
            && Self::signed(&next.root, signers)
            && current.version.checked_add(1) == Some(next.version)
            && (current.product.is_empty() || next.product == current.product)
    }
}
