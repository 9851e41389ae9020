//! Each stage of the pipeline against an in-memory origin (`source::mem`), no server needed.
//!
//! [`Publisher`] builds small signed releases the way `cdn-publisher` lays them out (chunks
//! cut with the chunker, one zstd frame each, in one pack; the manifest and pointer sealed
//! with the format crate) and serves them from a [`MemSource`]. An [`Install`] is a real
//! install directory in a temp dir, with its store.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use relsync_chunker::{ChunkParams, chunk_slice, frame};
use relsync_format::Error as FormatError;
use semver::Version;

use super::apply::{Applied, apply};
use super::assemble::{Assembled, assemble};
use super::check::{Checked, MetaSource, check, now_unix};
use super::fetch::{Fetched, Lan, fetch};
use super::plan::{FileAction, LocalChunk, Planned, plan};
use super::verify::verify;
use crate::install::ensure_install_id;
use crate::install::store::{StagedRelease, Store};
use crate::install::{Opening, open_install};
use crate::layout::{InstallLayout, channel_path, manifest_path, pack_path};
use crate::manifest::{
    ChunkEntry, Entry, EntryKind, FORMAT_VERSION, FileEntry, Manifest, PackRef, Pointer,
    compress_envelope,
};
use crate::progress::{Reporter, Silent};
use crate::root::RoleKeys;
use crate::source::Origin;
use crate::source::mem::{MemSource, Request};
use crate::{
    ChunkId, Error, FetchConfig, FileHash, ManifestId, PackId, RelPath, Result, SecretKey,
    UpdaterConfig,
};

const PRODUCT: &str = "app";
const CHANNEL: &str = "stable";

/// Small chunks (the smallest FastCDC allows), so a few KiB make many.
fn params() -> ChunkParams {
    ChunkParams::new(64, 256, 1024).unwrap()
}

/// Deterministic bytes that do not compress (splitmix64).
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One entry of a release tree.
#[derive(Clone)]
enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
    Link(&'static str),
}

fn file(data: Vec<u8>) -> Node {
    Node::File {
        data,
        executable: false,
    }
}

fn executable(data: Vec<u8>) -> Node {
    Node::File {
        data,
        executable: true,
    }
}

/// Release 1.0.0: a directory with an executable, plain files (one empty), a symlink.
fn tree_v1() -> Vec<(&'static str, Node)> {
    vec![
        ("bin", Node::Dir),
        ("bin/tool", executable(random(6000, 1))),
        ("data.txt", file(random(3000, 2))),
        ("empty", file(Vec::new())),
        ("lib", Node::Dir),
        ("lib/core", file(random(5000, 3))),
        ("tool", Node::Link("bin/tool")),
    ]
}

/// Release 2.0.0: `bin/tool` edited in the middle, `lib/extra` new, the rest unchanged.
fn tree_v2() -> Vec<(&'static str, Node)> {
    let mut tool = random(6000, 1);
    tool[3000..3040].fill(0xAB);
    let mut tree = tree_v1();
    tree[1].1 = executable(tool);
    tree.insert(6, ("lib/extra", file(random(2000, 4))));
    tree
}

/// Builds and signs releases, and serves them from memory.
struct Publisher {
    key: SecretKey,
    mem: Arc<MemSource>,
    parent: Option<ManifestId>,
}

/// A release as published.
struct Published {
    manifest: Manifest,
    id: ManifestId,
    /// Length of `manifests/<id>`.
    len: u64,
}

impl Publisher {
    fn new() -> Self {
        Self {
            key: SecretKey::generate().unwrap(),
            mem: MemSource::new("origin"),
            parent: None,
        }
    }

    /// The manifest of `tree` at `version`, its pack stored on the origin.
    fn release(&self, version: &str, tree: &[(&str, Node)]) -> Manifest {
        let (mut chunks, mut pack, mut entries) =
            (Vec::<ChunkEntry>::new(), Vec::new(), Vec::new());
        for (path, node) in tree {
            let kind = match node {
                Node::Dir => EntryKind::Dir,
                Node::Link(target) => EntryKind::Symlink {
                    target: (*target).to_owned(),
                },
                Node::File { data, executable } => {
                    let mut indices = Vec::new();
                    for chunk in chunk_slice(data, params()).unwrap() {
                        let at = chunk.offset as usize;
                        let bytes = &data[at..at + chunk.len as usize];
                        let index = match chunks.iter().position(|c| c.id == chunk.id) {
                            Some(i) => i,
                            None => {
                                let framed = frame::compress(bytes, 3).unwrap();
                                pack.extend_from_slice(&framed);
                                chunks.push(ChunkEntry {
                                    id: chunk.id,
                                    len: chunk.len,
                                    pack: 0,
                                    frame_len: framed.len() as u32,
                                });
                                chunks.len() - 1
                            }
                        };
                        indices.push(index as u32);
                    }
                    EntryKind::File(FileEntry {
                        executable: *executable,
                        size: data.len() as u64,
                        hash: FileHash::of(data),
                        chunks: indices,
                    })
                }
            };
            let path = RelPath::new(*path).unwrap();
            entries.push(Entry { path, kind });
        }
        let pack_id = PackId::of(&pack);
        let pack_len = pack.len() as u64;
        self.mem.put(&pack_path(&pack_id), pack);
        let now = now_unix();
        Manifest {
            format: FORMAT_VERSION,
            product: PRODUCT.into(),
            channel: CHANNEL.into(),
            platform: None,
            version: Version::parse(version).unwrap(),
            created_unix: now,
            expires_unix: now + 3600,
            critical: false,
            notes: String::new(),
            chunking: params(),
            parent: self.parent,
            packs: vec![PackRef {
                id: pack_id,
                len: pack_len,
            }],
            chunks,
            entries,
            bases: Vec::new(),
            solid: Vec::new(),
        }
    }

    /// Signs `manifest` with `key` and stores it on the origin.
    fn put_manifest(&self, manifest: Manifest, key: &SecretKey) -> Published {
        let (id, envelope) = manifest.seal(key).unwrap();
        let compressed = compress_envelope(&envelope).unwrap();
        let len = compressed.len() as u64;
        self.mem.put(&manifest_path(&id), compressed);
        Published { manifest, id, len }
    }

    /// The channel pointer to `release`, as the publisher would sign it.
    fn pointer(&self, release: &Published) -> Pointer {
        let now = now_unix();
        Pointer {
            format: FORMAT_VERSION,
            product: PRODUCT.into(),
            channel: CHANNEL.into(),
            version: release.manifest.version.clone(),
            root_version: 0,
            manifest: release.id,
            manifest_len: release.len,
            manifest_deltas: Vec::new(),
            issued_unix: now,
            expires_unix: now + 3600,
            rollout_percent: 100,
            yanked: Vec::new(),
            rollback: None,
        }
    }

    /// Signs `pointer` with `key` and makes it the channel's.
    fn put_pointer(&self, pointer: &Pointer, key: &SecretKey) {
        let sealed = pointer.seal(&[key]).unwrap();
        self.mem.put(&channel_path(CHANNEL), sealed);
    }

    /// Publishes `tree` as `version` on the channel.
    fn publish(&mut self, version: &str, tree: &[(&str, Node)]) -> Published {
        let release = self.put_manifest(self.release(version, tree), &self.key);
        self.put_pointer(&self.pointer(&release), &self.key);
        self.parent = Some(release.id);
        release
    }

    fn origin(&self) -> Origin {
        self.mem.origin()
    }
}

/// The settings of an install at `root` that follows the publisher's channel and trusts its key.
fn config(publisher: &Publisher, root: std::path::PathBuf) -> UpdaterConfig {
    let mut config =
        UpdaterConfig::new("mem://origin/", CHANNEL, vec![publisher.key.public()], root);
    config.product = Some(PRODUCT.into());
    config
}

/// An install directory trusting the publisher's key.
struct Install {
    _dir: tempfile::TempDir,
    layout: InstallLayout,
    store: Arc<Store>,
    config: UpdaterConfig,
    _lock: File,
}

impl Install {
    fn new(publisher: &Publisher) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("app");
        let layout = InstallLayout::new(&root);
        let (lock, store) = open_install(&layout, Opening::Create { adopt: false }).unwrap();
        ensure_install_id(&layout).unwrap();
        let mut config = config(publisher, root);
        // Only adjacent frames share a request, so the requests show which frames are fetched.
        config.fetch = FetchConfig {
            coalesce_gap_bytes: 0,
            ..FetchConfig::default()
        };
        Self {
            _dir: dir,
            layout,
            store: Arc::new(store),
            config,
            _lock: lock,
        }
    }

    async fn check(&self, origin: &Origin) -> Result<Checked> {
        let source = MetaSource {
            origin,
            peers: None,
        };
        check(source, &self.config, &self.layout, &self.store, true).await
    }

    async fn plan(&self, origin: &Origin) -> Result<Planned> {
        plan(
            self.check(origin).await?,
            &self.layout,
            &self.store,
            &self.config.fetch,
        )
    }

    async fn fetch(&self, origin: &Origin, planned: Planned) -> Result<Fetched> {
        let lan = Lan {
            peers: None,
            share: None,
        };
        let (store, reporter) = (self.store.clone(), silent());
        fetch(
            planned,
            origin,
            lan,
            &self.layout,
            store,
            &self.config.fetch,
            reporter,
        )
        .await
    }

    async fn assemble(&self, origin: &Origin) -> Result<Assembled> {
        let fetched = self.fetch(origin, self.plan(origin).await?).await?;
        assemble(fetched, &self.layout, &silent())
    }

    /// Every stage, in order.
    async fn update(&self, origin: &Origin) -> Result<Applied> {
        let tree = verify(self.assemble(origin).await?, &silent())?;
        apply(tree, &self.layout, &self.store)
    }
}

fn silent() -> Arc<dyn Reporter> {
    Arc::new(Silent)
}

/// The chunk ids of a manifest's files.
fn chunk_ids(manifest: &Manifest) -> BTreeSet<ChunkId> {
    manifest.chunks.iter().map(|c| c.id).collect()
}

/// The chunks a plan fetches, by id.
fn planned_chunks(planned: &Planned) -> BTreeSet<ChunkId> {
    let target = &planned.checked.target;
    planned
        .ranges
        .iter()
        .flat_map(|r| &r.frames)
        .map(|f| target.chunks[f.chunk as usize].id)
        .collect()
}

// check

#[tokio::test]
async fn check_accepts_the_signed_pointer_and_manifest() {
    let mut publisher = Publisher::new();
    let v1 = publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let checked = install.check(&publisher.origin()).await.unwrap();
    assert_eq!(checked.version(), &v1.manifest.version);
    assert_eq!(checked.target.id(), v1.id);
    assert_eq!(checked.target.entries, v1.manifest.entries);
    assert_eq!(checked.installed_version(), None);
    assert!(!checked.up_to_date());
    // The pointer is now trusted: its version is the floor.
    let state = install.store.trusted_state(CHANNEL).unwrap().unwrap();
    assert_eq!(state.highest_version, v1.manifest.version);
    assert_eq!(state.manifest, v1.id);
}

#[tokio::test]
async fn check_refuses_a_pointer_or_manifest_signed_by_another_key() {
    let publisher = Publisher::new();
    let intruder = SecretKey::generate().unwrap();
    let install = Install::new(&publisher);
    let origin = publisher.origin();

    let release = publisher.put_manifest(publisher.release("1.0.0", &tree_v1()), &publisher.key);
    publisher.put_pointer(&publisher.pointer(&release), &intruder);
    let err = install.check(&origin).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Format(FormatError::BadSignature {
                what: "channel pointer",
                ..
            })
        ),
        "{err}"
    );

    let forged = publisher.put_manifest(publisher.release("1.0.1", &tree_v1()), &intruder);
    publisher.put_pointer(&publisher.pointer(&forged), &publisher.key);
    let err = install.check(&origin).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Format(FormatError::BadSignature {
                what: "manifest",
                ..
            })
        ),
        "{err}"
    );
    // Nothing was trusted along the way.
    assert!(install.store.trusted_state(CHANNEL).unwrap().is_none());
}

#[tokio::test]
async fn check_refuses_a_pointer_of_another_channel_or_product() {
    let publisher = Publisher::new();
    let install = Install::new(&publisher);
    let origin = publisher.origin();
    let release = publisher.put_manifest(publisher.release("1.0.0", &tree_v1()), &publisher.key);
    type Change = fn(&mut Pointer);
    let cases: [(&str, Change); 2] = [
        ("channel", |p| p.channel = "beta".into()),
        ("product", |p| p.product = "other".into()),
    ];
    for (what, change) in cases {
        let mut pointer = publisher.pointer(&release);
        change(&mut pointer);
        publisher.put_pointer(&pointer, &publisher.key);
        let err = install.check(&origin).await.unwrap_err();
        match &err {
            Error::Mismatch { what: field, .. } => assert_eq!(*field, what, "{err}"),
            _ => panic!("{what}: {err}"),
        }
    }
}

#[tokio::test]
async fn check_refuses_an_expired_pointer() {
    let publisher = Publisher::new();
    let install = Install::new(&publisher);
    let release = publisher.put_manifest(publisher.release("1.0.0", &tree_v1()), &publisher.key);
    let mut pointer = publisher.pointer(&release);
    pointer.issued_unix -= 7200;
    pointer.expires_unix = now_unix() - 60;
    publisher.put_pointer(&pointer, &publisher.key);
    let err = install.check(&publisher.origin()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Format(FormatError::Expired {
                what: "channel pointer",
                ..
            })
        ),
        "{err}"
    );
}

// plan

#[tokio::test]
async fn plan_of_a_fresh_install_fetches_every_chunk() {
    let mut publisher = Publisher::new();
    let v1 = publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let planned = install.plan(&publisher.origin()).await.unwrap();
    let totals = &planned.plan().totals;
    assert_eq!(totals.chunks_fetched, v1.manifest.chunks.len() as u64);
    assert_eq!((totals.bytes_reused, totals.files_linked), (0, 0));
    assert_eq!(totals.files_written, 4);
    assert_eq!(planned_chunks(&planned), chunk_ids(&v1.manifest));
    // One pack, all of it, in one request.
    let pack = v1.manifest.packs[0];
    let ranges: Vec<_> = planned.ranges.iter().map(|r| (r.start, r.len)).collect();
    assert_eq!(ranges, [(0, pack.len)]);
}

#[tokio::test]
async fn plan_of_an_update_reuses_unchanged_chunks() {
    let mut publisher = Publisher::new();
    let v1 = publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let origin = publisher.origin();
    install.update(&origin).await.unwrap();
    let v2 = publisher.publish("2.0.0", &tree_v2());

    let planned = install.plan(&origin).await.unwrap();
    let totals = &planned.plan().totals;
    let new: BTreeSet<ChunkId> = chunk_ids(&v2.manifest)
        .difference(&chunk_ids(&v1.manifest))
        .copied()
        .collect();
    assert!(!new.is_empty() && new.len() < v2.manifest.chunks.len());
    assert_eq!(planned_chunks(&planned), new);
    assert_eq!(totals.chunks_fetched, new.len() as u64);
    // Unchanged files are linked as they are; `bin/tool` keeps its unchanged chunks.
    let linked: BTreeSet<&str> = planned
        .plan()
        .files
        .iter()
        .filter(|f| matches!(f.action, FileAction::Link { .. }))
        .map(|f| f.path.as_str())
        .collect();
    assert!(
        linked.contains("data.txt") && linked.contains("lib/core"),
        "{linked:?}"
    );
    assert!(
        !linked.contains("bin/tool") && !linked.contains("lib/extra"),
        "{linked:?}"
    );
    assert!(totals.bytes_reused > 0, "{totals:?}");
    let reused = planned
        .local
        .values()
        .filter(|l| matches!(l, LocalChunk::Installed { .. }))
        .count();
    assert!(reused > 0);
    // Only the new frames are asked for: less than the pack.
    let asked: u64 = planned.ranges.iter().map(|r| r.len).sum();
    assert!(asked < v2.manifest.packs[0].len, "{asked}");
}

// fetch

#[tokio::test]
async fn fetch_asks_for_exactly_the_planned_ranges_and_stores_their_chunks() {
    let mut publisher = Publisher::new();
    publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let origin = publisher.origin();
    install.update(&origin).await.unwrap();
    let v2 = publisher.publish("2.0.0", &tree_v2());

    let planned = install.plan(&origin).await.unwrap();
    let pack = pack_path(&v2.manifest.packs[0].id);
    let mut wanted: Vec<_> = planned
        .ranges
        .iter()
        .map(|r| (pack.clone(), Some((r.start, r.len))))
        .collect();
    let chunks = planned_chunks(&planned);
    publisher.mem.take_requests();
    let (bytes, requests) = (origin.traffic().bytes(), origin.traffic().requests());

    let fetched = install.fetch(&origin, planned).await.unwrap();
    let mut asked: Vec<_> = publisher
        .mem
        .take_requests()
        .into_iter()
        .map(|r| (r.path, r.range))
        .collect();
    asked.sort();
    wanted.sort();
    assert_eq!(asked, wanted);
    let range_bytes: u64 = wanted.iter().map(|(_, r)| r.unwrap().1).sum();
    assert_eq!(origin.traffic().bytes() - bytes, range_bytes);
    assert_eq!(origin.traffic().requests() - requests, wanted.len() as u64);
    // Each fetched chunk is a verified blob now.
    let target = fetched.planned.checked.target.clone();
    let stored: BTreeSet<ChunkId> = fetched
        .planned
        .local
        .iter()
        .filter(|(_, l)| matches!(l, LocalChunk::Blob(_)))
        .map(|(i, _)| target.chunks[*i as usize].id)
        .collect();
    assert_eq!(stored, chunks);
    for id in &stored {
        let blob = install.layout.state().join("chunks").join(id.to_string());
        assert_eq!(ChunkId::of(&std::fs::read(&blob).unwrap()), *id);
    }
}

#[tokio::test]
async fn fetch_refuses_a_corrupt_frame() {
    let mut publisher = Publisher::new();
    let v1 = publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let origin = publisher.origin();
    // Flip a byte in the middle of the third frame.
    let manifest = &v1.manifest;
    let offset: u64 = manifest.chunks[..2]
        .iter()
        .map(|c| u64::from(c.frame_len))
        .sum();
    let at = (offset + u64::from(manifest.chunks[2].frame_len) / 2) as usize;
    publisher
        .mem
        .edit(&pack_path(&manifest.packs[0].id), |pack| pack[at] ^= 0x40);

    let planned = install.plan(&origin).await.unwrap();
    let err = install.fetch(&origin, planned).await.unwrap_err();
    match &err {
        Error::BadChunk {
            chunk, source_name, ..
        } => {
            assert_eq!(*chunk, manifest.chunks[2].id, "{err}");
            assert!(source_name.starts_with("mem://origin/packs/"), "{err}");
        }
        _ => panic!("{err}"),
    }
    // The corrupt chunk was not kept; the frames before it were.
    let blobs = install.layout.state().join("chunks");
    assert!(!blobs.join(manifest.chunks[2].id.to_string()).exists());
    assert!(blobs.join(manifest.chunks[0].id.to_string()).exists());
}

#[tokio::test]
async fn fetch_resumes_a_cut_body_after_its_last_verified_frame() {
    let mut publisher = Publisher::new();
    let v1 = publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let origin = publisher.origin();
    let planned = install.plan(&origin).await.unwrap();
    publisher.mem.take_requests();
    publisher.mem.set_faults(crate::source::mem::Faults {
        truncate_next: 1,
        truncate_after: 4000,
        ..Default::default()
    });
    // The retry waits a backoff: let the clock jump it.
    tokio::time::pause();
    install.fetch(&origin, planned).await.unwrap();
    let requests = publisher.mem.take_requests();
    let pack_len = v1.manifest.packs[0].len;
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range, Some((0, pack_len)));
    // The second asks from the first frame not verified, at most the cut one again.
    let frame_ends: Vec<u64> = v1
        .manifest
        .chunks
        .iter()
        .scan(0, |end, c| {
            *end += u64::from(c.frame_len);
            Some(*end)
        })
        .collect();
    let resumed_at = frame_ends
        .iter()
        .copied()
        .filter(|&e| e <= 4000)
        .max()
        .unwrap();
    assert_eq!(requests[1].range, Some((resumed_at, pack_len - resumed_at)));
}

// assemble and verify

#[tokio::test]
async fn assemble_and_verify_build_the_tree_with_its_modes() {
    let mut publisher = Publisher::new();
    publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let assembled = install.assemble(&publisher.origin()).await.unwrap();
    let staging = assembled.staging.clone();
    for (path, node) in tree_v1() {
        let at = staging.join(path);
        let meta = std::fs::symlink_metadata(&at).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        match node {
            Node::Dir => assert!(meta.is_dir() && mode == 0o755, "{path}: {mode:o}"),
            Node::File { data, executable } => {
                assert!(meta.is_file(), "{path}");
                assert_eq!(std::fs::read(&at).unwrap(), data, "{path}");
                assert_eq!(mode, if executable { 0o755 } else { 0o644 }, "{path}");
            }
            Node::Link(target) => {
                assert!(meta.is_symlink(), "{path}");
                assert_eq!(std::fs::read_link(&at).unwrap().to_str(), Some(target));
            }
        }
    }
    verify(assembled, &silent()).unwrap();
}

#[tokio::test]
async fn verify_catches_a_tampered_staged_file() {
    let mut publisher = Publisher::new();
    publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let origin = publisher.origin();

    let assembled = install.assemble(&origin).await.unwrap();
    let data = assembled.staging.join("data.txt");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let err = verify(assembled, &silent()).unwrap_err();
    assert!(
        matches!(&err, Error::FileMismatch { path, .. } if path == "data.txt"),
        "{err}"
    );

    // Right bytes, wrong mode: caught too.
    let assembled = install.assemble(&origin).await.unwrap();
    let tool = assembled.staging.join("bin/tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = verify(assembled, &silent()).unwrap_err();
    match &err {
        Error::Io { path, source, .. } => {
            assert!(path.ends_with("bin/tool"), "{err}");
            assert_eq!(source.to_string(), "mode 0644, expected 0755");
        }
        _ => panic!("{err}"),
    }
}

// apply

#[tokio::test]
async fn apply_switches_current_and_keeps_the_previous_release() {
    let mut publisher = Publisher::new();
    let v1 = publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let origin = publisher.origin();
    let current = install.layout.current();

    let first = install.update(&origin).await.unwrap();
    assert_eq!(
        (first.version.clone(), first.previous.clone()),
        (v1.manifest.version.clone(), None)
    );
    assert_eq!(
        std::fs::read_link(&current).unwrap(),
        std::path::Path::new("releases").join(&first.dir)
    );
    assert_eq!(
        std::fs::read(current.join("lib/core")).unwrap(),
        random(5000, 3)
    );

    let v2 = publisher.publish("2.0.0", &tree_v2());
    let second = install.update(&origin).await.unwrap();
    assert_eq!(second.version, v2.manifest.version);
    assert_eq!(second.previous.as_ref(), Some(&v1.manifest.version));
    assert_eq!(
        std::fs::read_link(&current).unwrap(),
        std::path::Path::new("releases").join(&second.dir)
    );
    assert!(current.join("lib/extra").is_file());
    // The previous release stays whole, for rollback.
    let previous = install.layout.release(&first.dir);
    assert_eq!(
        std::fs::read(previous.join("lib/core")).unwrap(),
        random(5000, 3)
    );
    assert!(!previous.join("lib/extra").exists());
    let store = &install.store;
    assert_eq!(store.current().unwrap().unwrap().dir, second.dir);
    assert_eq!(store.previous().unwrap().unwrap().dir, first.dir);

    // A third release keeps only the one before it.
    let mut tree = tree_v2();
    tree.push(("zz", file(b"three".to_vec())));
    publisher.publish("3.0.0", &tree);
    let third = install.update(&origin).await.unwrap();
    assert_eq!(store.previous().unwrap().unwrap().dir, second.dir);
    let releases: HashSet<String> = std::fs::read_dir(install.layout.releases())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(releases, HashSet::from([second.dir, third.dir]));
}

// the runner: one check and one plan per download

/// The runner over the publisher's in-memory origin, for a new install in `dir`.
fn runner(publisher: &Publisher, dir: &std::path::Path) -> super::Pipeline {
    let config = config(publisher, dir.join("app"));
    let opening = Opening::Create { adopt: false };
    super::Pipeline::with_install(config, Some(publisher.origin()), opening, silent()).unwrap()
}

fn requests_of(requests: &[Request], path: &str) -> usize {
    requests.iter().filter(|r| r.path == path).count()
}

#[tokio::test]
async fn a_download_takes_the_checks_plan_after_one_pointer_request() {
    let mut publisher = Publisher::new();
    publisher.publish("1.0.0", &tree_v1());
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(&publisher, dir.path());
    runner.run(None, true, "update").await.unwrap();
    let v2 = publisher.publish("2.0.0", &tree_v2());
    publisher.mem.take_requests();

    let prepared = runner.prepare("check").await.unwrap();
    let checking = publisher.mem.take_requests();
    assert_eq!(requests_of(&checking, &channel_path(CHANNEL)), 1);
    assert_eq!(requests_of(&checking, &manifest_path(&v2.id)), 1);
    assert!(prepared.bytes_to_fetch() > 0);

    let report = runner.run(Some(prepared), true, "download").await.unwrap();
    assert_eq!(report.version, v2.manifest.version);
    assert!(report.applied);
    let downloading = publisher.mem.take_requests();
    // The pointer once, to see that it has not moved; no manifest; the rest are pack ranges.
    assert_eq!(requests_of(&downloading, &channel_path(CHANNEL)), 1);
    let packs = downloading.iter().filter(|r| r.path.starts_with("packs/"));
    assert_eq!(packs.count(), downloading.len() - 1, "{downloading:?}");
    assert!(downloading.len() > 1, "{downloading:?}");
    assert_eq!(report.requests, downloading.len() as u64);
    assert_eq!(
        std::fs::read(runner.layout().current().join("lib/extra")).unwrap(),
        random(2000, 4)
    );
}

#[tokio::test]
async fn a_download_checks_again_when_the_pointer_moved_since_the_check() {
    let mut publisher = Publisher::new();
    publisher.publish("1.0.0", &tree_v1());
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(&publisher, dir.path());
    let prepared = runner.prepare("check").await.unwrap();
    assert_eq!(prepared.checked().version(), &Version::new(1, 0, 0));
    let v2 = publisher.publish("2.0.0", &tree_v2());
    publisher.mem.take_requests();

    let report = runner.run(Some(prepared), true, "download").await.unwrap();
    assert_eq!(report.version, v2.manifest.version);
    let downloading = publisher.mem.take_requests();
    // Once to compare, once for the new check.
    assert_eq!(requests_of(&downloading, &channel_path(CHANNEL)), 2);
    assert_eq!(requests_of(&downloading, &manifest_path(&v2.id)), 1);
}

#[tokio::test]
async fn a_staged_release_reopens_only_under_the_role_that_verified_it() {
    let mut publisher = Publisher::new();
    let v1 = publisher.publish("1.0.0", &tree_v1());
    let install = Install::new(&publisher);
    let checked = install.check(&publisher.origin()).await.unwrap();
    let staged = |signers| StagedRelease {
        manifest: checked.target.clone(),
        signers,
    };
    let (layout, store) = (&install.layout, &install.store);

    let signers = checked.signers.clone();
    assert_eq!(signers, Some(RoleKeys::single(publisher.key.public())));
    let reopened = Checked::staged(staged(signers), layout, store).unwrap();
    assert_eq!(reopened.target.id(), v1.id);
    assert!(reopened.pointer.is_none());

    let intruder = SecretKey::generate().unwrap();
    let other = Some(RoleKeys::single(intruder.public()));
    let err = Checked::staged(staged(other), layout, store).unwrap_err();
    assert!(
        matches!(err, Error::Format(FormatError::BadSignature { .. })),
        "{err}"
    );
    let two_of_one = Some(RoleKeys {
        keys: vec![publisher.key.public(), intruder.public()],
        threshold: 2,
    });
    let err = Checked::staged(staged(two_of_one), layout, store).unwrap_err();
    assert!(
        matches!(err, Error::Format(FormatError::BadSignature { .. })),
        "{err}"
    );
    let err = Checked::staged(staged(None), layout, store).unwrap_err();
    assert!(matches!(err, Error::NotStaged(_)), "{err}");
}
