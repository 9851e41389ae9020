//! What a case's `mutate` gets ([`Ctx`]): the world's [`Forge`], the facts the cases need
//! about the world, and helpers that forge hostile releases, root documents and rollback
//! directives with the world's own keys.

use std::time::{SystemTime, UNIX_EPOCH};

use relsync_chunker::ChunkId;
use relsync_engine::directive::RollbackDirective;
use relsync_engine::envelope::{self, Kind};
use relsync_engine::manifest::{
    ChunkEntry, Entry as ManifestEntry, EntryKind, FileEntry, Manifest, Pointer,
};
use relsync_engine::paths::manifest_path;
use relsync_engine::root::Root;
use relsync_engine::{FileHash, ManifestId, RelPath, SecretKey};
use relsync_tests::{CHANNEL, Forge, V1, V2, manifest_body_replacing, pseudo_random};
use semver::Version;

/// The version of forged releases that pass the check stage and fail later: between v1 (the
/// install) and v2 (the honest origin), so the client's record of having seen it does not
/// stand in the way of the honest update that follows.
const FORGED: &str = "1.5.0";

/// The keys of the root-chain world.
pub(super) struct RootKeys {
    pub(super) root: [SecretKey; 2],
    pub(super) release: [SecretKey; 2],
    pub(super) channel: [SecretKey; 2],
    /// Root 1, which the installs pin.
    pub(super) first: Root,
}

impl RootKeys {
    /// Both release keys: a signature meeting the release role's threshold.
    pub(super) fn release_role(&self) -> [&SecretKey; 2] {
        [&self.release[0], &self.release[1]]
    }

    /// Both channel keys: a signature meeting the channel role's threshold.
    pub(super) fn channel_role(&self) -> [&SecretKey; 2] {
        [&self.channel[0], &self.channel[1]]
    }
}

/// What the cases need to know about the world.
pub(super) struct Facts {
    pub(super) v1: ManifestId,
    pub(super) v2: ManifestId,
    /// The pack ranges the v1 -> v2 update fetches: (origin path, start, len).
    pub(super) ranges: Vec<(String, u64, u64)>,
    /// Free bytes on the file system of the installs.
    pub(super) free_bytes: u64,
    pub(super) roots: Option<RootKeys>,
}

/// What a case's `mutate` gets.
pub(super) struct Ctx<'a> {
    pub(super) forge: &'a mut Forge,
    pub(super) facts: &'a Facts,
}

impl Ctx<'_> {
    /// v2's pointer and manifest, both at version [`FORGED`].
    pub(super) fn forged_release(&self) -> (Pointer, Manifest) {
        let (mut p, mut m) = self.forge.release();
        let v: Version = FORGED.parse().expect("version");
        p.version = v.clone();
        m.version = v;
        (p, m)
    }

    /// Publishes the forged release ([`Ctx::forged_release`]) after `edit` changed its
    /// manifest, signed by the release keys.
    pub(super) fn publish_forged(&mut self, edit: impl FnOnce(&mut Self, &mut Manifest)) {
        let (p, mut m) = self.forged_release();
        edit(self, &mut m);
        self.forge.publish(p, &m);
    }

    /// Publishes the forged release with `entries` (path, kind) added.
    pub(super) fn publish_forged_entries(&mut self, entries: &[(&str, EntryKind)]) {
        self.publish_forged(|_, m| {
            for (path, kind) in entries {
                add_entry(m, path, kind.clone());
            }
        });
    }

    /// Publishes the forged release with one extra top-level entry whose path is `hostile`,
    /// swapped into the signed body in place of a placeholder (the manifest's own types
    /// cannot hold such a path).
    pub(super) fn publish_hostile_path(&mut self, hostile: &[u8]) {
        let (p, mut m) = self.forged_release();
        add_entry(&mut m, "zz-placeholder-path", EntryKind::Dir);
        let body = manifest_body_replacing(&m, &[("zz-placeholder-path", hostile)]);
        self.forge.publish_body(p, &body);
    }

    /// Adds a pack of `frames` to the origin and to `m`; returns its index in `m`.
    pub(super) fn add_pack(&mut self, m: &mut Manifest, frames: &[&[u8]]) -> u32 {
        let pack = self.forge.add_pack(frames);
        m.packs.push(pack);
        (m.packs.len() - 1) as u32
    }

    /// Adds to `m` a file `path` of one chunk, `(id, declared length, frame)`, in a new pack,
    /// whose signed hash is `hash`.
    pub(super) fn add_file(
        &mut self,
        m: &mut Manifest,
        path: &str,
        (id, len, frame): (ChunkId, u32, &[u8]),
        hash: FileHash,
    ) {
        let pack = self.add_pack(m, &[frame]);
        let chunk = add_chunk(m, id, len, pack, frame.len());
        add_entry(m, path, file(u64::from(len), hash, vec![chunk]));
    }

    /// The v1 -> v2 update's first pack range.
    pub(super) fn first_range(&self) -> (String, u64, u64) {
        self.facts
            .ranges
            .first()
            .cloned()
            .expect("the v1 -> v2 update fetches a pack range")
    }

    /// The v1 -> v2 update's last range (highest offset) in the pack of its first range: the
    /// other ranges of that pack end before it.
    pub(super) fn last_range(&self) -> (String, u64, u64) {
        let (pack, _, _) = self.first_range();
        self.facts
            .ranges
            .iter()
            .filter(|(p, _, _)| *p == pack)
            .max_by_key(|(_, start, _)| *start)
            .cloned()
            .expect("a range")
    }

    /// The manifest delta the v1 install fetches.
    pub(super) fn delta_path(&self) -> String {
        format!("manifests/{}.from-{}", self.facts.v2, self.facts.v1)
    }

    pub(super) fn roots(&self) -> &RootKeys {
        self.facts.roots.as_ref().expect("a root-chain world")
    }

    /// Root 2: root 1 with `edit` applied, at `keys/root-2` signed by the root keys `by`, and
    /// the pointer naming it.
    pub(super) fn publish_root_2(&mut self, edit: fn(&mut Root), by: &[usize]) {
        let mut root = self.roots().first.clone();
        root.version = 2;
        edit(&mut root);
        let body = postcard::to_stdvec(&root).expect("encode root");
        self.publish_root_2_body(&body, by);
    }

    /// Like [`Ctx::publish_root_2`] with an encoded body.
    pub(super) fn publish_root_2_body(&mut self, body: &[u8], by: &[usize]) {
        let keys: Vec<&SecretKey> = by.iter().map(|&i| &self.roots().root[i]).collect();
        let sealed = envelope::seal(Kind::Root, body, &keys).expect("seal root");
        self.forge.put("keys/root-2", &sealed);
        let mut p = self.forge.pointer();
        p.root_version = 2;
        self.forge.write_pointer(&p);
    }

    /// What someone holding only the channel keys can publish: the channel moved back to v1,
    /// with v2 yanked, carrying `rollback` as its rollback directive.
    pub(super) fn publish_yank_back(&mut self, rollback: Vec<u8>) {
        let mut p = self.forge.pointer();
        p.version = V1.parse().expect("version");
        p.manifest = self.facts.v1;
        p.manifest_len = self.forge.read(&manifest_path(&self.facts.v1)).len() as u64;
        p.manifest_deltas.clear();
        p.yanked = vec![V2.parse().expect("version")];
        p.rollback = Some(rollback);
        self.forge.write_pointer(&p);
    }

    /// [`Ctx::publish_yank_back`] with `directive` sealed by the keys `signers` picks.
    pub(super) fn publish_directive(
        &mut self,
        directive: &RollbackDirective,
        signers: fn(&RootKeys) -> [&SecretKey; 2],
    ) {
        let sealed = directive
            .seal(&signers(self.roots()))
            .expect("seal directive");
        self.publish_yank_back(sealed);
    }

    /// The directive that takes installs on v2 back to v1.
    pub(super) fn directive_back(&self) -> RollbackDirective {
        RollbackDirective {
            format: relsync_engine::manifest::FORMAT_VERSION,
            product: "app".into(),
            channel: CHANNEL.into(),
            from: vec![V2.parse().expect("version")],
            to_version: V1.parse().expect("version"),
            to: self.facts.v1,
            issued_unix: now_unix(),
        }
    }
}

pub(super) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A second copy of `key` (a [`SecretKey`] is not `Clone`).
pub(super) fn dup(key: &SecretKey) -> SecretKey {
    SecretKey::from_file_text(&key.to_file_text()).expect("key")
}

/// Appends to `m`'s chunk table a chunk `id` of `len` bytes whose frame of `frame_len` bytes
/// is in pack `pack`; returns its index.
pub(super) fn add_chunk(
    m: &mut Manifest,
    id: ChunkId,
    len: u32,
    pack: u32,
    frame_len: usize,
) -> u32 {
    m.chunks.push(ChunkEntry {
        id,
        len,
        pack,
        frame_len: frame_len as u32,
    });
    (m.chunks.len() - 1) as u32
}

pub(super) fn add_entry(m: &mut Manifest, path: &str, kind: EntryKind) {
    m.entries.push(ManifestEntry {
        path: RelPath::new(path).expect("path"),
        kind,
    });
}

/// A regular file (mode 0644) of `size` bytes made of `chunks`, whose signed hash is `hash`.
pub(super) fn file(size: u64, hash: FileHash, chunks: Vec<u32>) -> EntryKind {
    EntryKind::File(FileEntry {
        executable: false,
        size,
        hash,
        chunks,
    })
}

pub(super) fn link(target: &str) -> EntryKind {
    EntryKind::Symlink {
        target: target.to_owned(),
    }
}

/// 64 KiB of pseudo-random bytes and their zstd frame.
pub(super) fn random_chunk(seed: &str) -> (Vec<u8>, Vec<u8>) {
    let data = pseudo_random(seed, 64 * 1024);
    let frame = relsync_chunker::frame::compress(&data, 3).expect("compress");
    (data, frame)
}
