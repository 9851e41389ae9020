//! share: what an install offers its peers.
//!
//! The chunks of the releases it holds (current and previous) and of the one it is fetching,
//! each read back and hashed on every request, so a damaged file is never passed on; and the
//! signed metadata it trusted, for peers whose origin is unreachable (each manifest compressed
//! once per offer, not per request).

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use relsync_chunker::frame;

use crate::install::local::{read_blob, read_installed};
use crate::install::store::Store;
use crate::layout::{InstallLayout, manifest_path, root_path, valid_channel};
use crate::manifest::TrustedManifest;
use crate::peers::{ChunkBits, PeerFrames};
use crate::{ChunkId, ManifestId, Result};

/// zstd level for chunks sent to peers: the LAN is fast, the CPU is shared.
const PEER_LEVEL: i32 = 1;
/// zstd level for manifests sent to peers.
const PEER_MANIFEST_LEVEL: i32 = 3;

/// What this install offers peers. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Share {
    inner: Arc<Inner>,
}

struct Inner {
    layout: InstallLayout,
    store: Arc<Store>,
    offers: Mutex<Vec<Arc<Offer>>>,
    /// The install lock, when this share opened the install itself.
    _lock: Option<File>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("install", &self.inner.layout.root())
            .finish_non_exhaustive()
    }
}

/// One release on offer and the chunks of it this install holds.
#[derive(Debug)]
pub(crate) struct Offer {
    manifest: TrustedManifest,
    have: Mutex<ChunkBits>,
    /// Chunks being fetched from the origin right now.
    fetching: Mutex<ChunkBits>,
    wanting: AtomicBool,
    /// The manifest as peers get it (compressed), made on the first request; `None` if it
    /// could not be compressed.
    compressed: OnceLock<Option<Arc<Vec<u8>>>>,
}

impl Offer {
    fn new(manifest: TrustedManifest, have: ChunkBits, wanting: bool) -> Self {
        let len = manifest.chunks.len() as u32;
        Self {
            manifest,
            have: Mutex::new(have),
            fetching: Mutex::new(ChunkBits::empty(len)),
            wanting: AtomicBool::new(wanting),
            compressed: OnceLock::new(),
        }
    }

    /// The compressed manifest, made once.
    fn compressed(&self) -> Option<Arc<Vec<u8>>> {
        self.compressed
            .get_or_init(|| {
                frame::compress(self.manifest.bytes(), PEER_MANIFEST_LEVEL)
                    .ok()
                    .map(Arc::new)
            })
            .clone()
    }

    /// Marks `chunks` as being fetched from the origin (or, with `on` false, no longer).
    pub(crate) fn fetching(&self, chunks: impl IntoIterator<Item = u32>, on: bool) {
        let mut bits = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        for chunk in chunks {
            if on {
                bits.set(chunk);
            } else {
                bits.clear(chunk);
            }
        }
    }

    /// The fetch ended: this install will gain no more chunks of the release.
    pub(crate) fn finished(&self) {
        self.wanting.store(false, Ordering::Relaxed);
    }

    /// Marks chunk `index` held: its verified copy is on disk.
    pub(crate) fn add(&self, index: u32) {
        self.have
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(index);
    }
}

/// The answer to HAVE for one manifest.
#[derive(Debug, Clone)]
pub struct HaveAnswer {
    /// Chunks held.
    pub have: ChunkBits,
    /// Chunks on their way from the origin: peers wait for them rather than fetch them too.
    pub fetching: ChunkBits,
    /// The release is being fetched, so more will come.
    pub wanting: bool,
}

impl Share {
    pub(crate) fn new(
        layout: InstallLayout,
        store: Arc<Store>,
        lock: Option<File>,
    ) -> Result<Self> {
        let share = Self {
            inner: Arc::new(Inner {
                layout,
                store,
                offers: Mutex::new(Vec::new()),
                _lock: lock,
            }),
        };
        share.refresh()?;
        Ok(share)
    }

    /// Opens an install only to share it (`relsync serve` without an origin), holding its
    /// lock until the last clone is dropped.
    pub fn open(install_dir: impl Into<PathBuf>) -> Result<Self> {
        let layout = InstallLayout::new(install_dir);
        let (lock, store) = crate::install::open_install(&layout, crate::install::Opening::Read)?;
        Self::new(layout, Arc::new(store), Some(lock))
    }

    fn offers(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Offer>>> {
        self.inner
            .offers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers the installed releases (every chunk) in place of whatever was offered.
    pub(crate) fn refresh(&self) -> Result<()> {
        let store = &self.inner.store;
        let held: Vec<Arc<Offer>> = [store.current()?, store.previous()?]
            .into_iter()
            .flatten()
            .map(|release| {
                let len = release.manifest.chunks.len() as u32;
                Arc::new(Offer::new(release.manifest, ChunkBits::full(len), false))
            })
            .collect();
        let mut offers = self.offers();
        // A manifest offered before keeps its compressed copy.
        for offer in &held {
            let before = offers
                .iter()
                .find(|o| o.manifest.id() == offer.manifest.id());
            if let Some(Some(compressed)) = before.and_then(|o| o.compressed.get()) {
                let _ = offer.compressed.set(Some(compressed.clone()));
            }
        }
        *offers = held;
        Ok(())
    }

    /// Offers the release being fetched, holding every chunk but `missing`; returns the offer
    /// for the fetch to mark chunks as they arrive.
    pub(crate) fn begin(
        &self,
        manifest: &TrustedManifest,
        missing: impl IntoIterator<Item = u32>,
    ) -> Arc<Offer> {
        let missing: HashSet<u32> = missing.into_iter().collect();
        let len = manifest.chunks.len() as u32;
        let mut have = ChunkBits::empty(len);
        (0..len)
            .filter(|i| !missing.contains(i))
            .for_each(|i| have.set(i));
        let offer = Arc::new(Offer::new(manifest.clone(), have, true));
        let mut offers = self.offers();
        offers.retain(|o| o.manifest.id() != manifest.id());
        offers.push(offer.clone());
        offer
    }

    fn offer(&self, manifest: &ManifestId) -> Option<Arc<Offer>> {
        self.offers()
            .iter()
            .rev()
            .find(|o| o.manifest.id() == *manifest)
            .cloned()
    }

    /// What this install holds of `manifest`, if it knows it.
    pub fn have(&self, manifest: &ManifestId) -> Option<HaveAnswer> {
        let offer = self.offer(manifest)?;
        let have = offer
            .have
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let fetching = offer
            .fetching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Some(HaveAnswer {
            have,
            fetching,
            wanting: offer.wanting.load(Ordering::Relaxed),
        })
    }

    /// Chunks `indexes` of `manifest`, each read back, verified and compressed; `None` for a
    /// chunk it does not hold (or whose copy no longer verifies). Blocking: reads files.
    pub fn chunks(&self, manifest: &ManifestId, indexes: &[u32]) -> PeerFrames {
        let Some(offer) = self.offer(manifest) else {
            return vec![None; indexes.len()];
        };
        indexes
            .iter()
            .map(|&i| {
                let entry = offer.manifest.chunks.get(i as usize)?;
                let data = self.read(entry.id, entry.len)?;
                frame::compress(&data, PEER_LEVEL).ok()
            })
            .collect()
    }

    /// Uncompressed bytes of chunks `indexes` of `manifest` (`None` if it is unknown).
    pub fn batch_bytes(&self, manifest: &ManifestId, indexes: &[u32]) -> Option<u64> {
        let offer = self.offer(manifest)?;
        let chunks = &offer.manifest.chunks;
        Some(
            indexes
                .iter()
                .filter_map(|&i| chunks.get(i as usize))
                .map(|c| u64::from(c.len))
                .sum(),
        )
    }

    /// A verified chunk from a fetched blob or an installed file.
    fn read(&self, id: ChunkId, len: u32) -> Option<Vec<u8>> {
        let layout = &self.inner.layout;
        let blob = layout.blob(&id);
        if let Ok(data) = read_blob(&blob, id, len) {
            return Some(data);
        }
        let location = self.inner.store.locate(&id).ok()??;
        let path = layout.release(&location.release).join(&location.path);
        (location.len == len)
            .then(|| read_installed(&path, location.offset, id, len).ok())
            .flatten()
    }

    /// The signed document at origin path `path` as this install trusted it: the pointer of a
    /// channel it follows, a manifest it holds (compressed, as the origin serves it) or its
    /// newest root. Peers verify it as they would the origin's copy.
    pub fn metadata(&self, path: &str) -> Option<Vec<u8>> {
        let store = &self.inner.store;
        if let Some(channel) = path.strip_prefix("channels/") {
            return valid_channel(channel)
                .then(|| store.pointer(channel).ok().flatten())
                .flatten();
        }
        if path.starts_with("keys/") {
            let root = store.trusted_root().ok()??;
            let version = relsync_format::dangerous::root(&root).ok()?.version;
            return (root_path(version) == path).then_some(root);
        }
        let offer = self
            .offers()
            .iter()
            .find(|o| manifest_path(&o.manifest.id()) == path)
            .cloned()?;
        // Compressed outside the offers' lock, once per offer.
        offer.compressed().map(|bytes| bytes.as_ref().clone())
    }
}
