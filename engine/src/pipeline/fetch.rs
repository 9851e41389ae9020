//! fetch: download missing frames in coalesced range requests, several in flight.
//!
//! Frames are verified as they stream in (decompressed within their declared size, with the
//! delta window from an installed file where the frame is a delta, then hashed) and the chunks
//! kept as blob files, each renamed into place only once verified. A retry, or the
//! next run after a crash, resumes after the last verified frame, so no verified byte is
//! downloaded twice.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt, stream};
use relsync_chunker::frame::refs::{OldRefs, Projection, elf::Image};
use relsync_chunker::{ChunkId, frame};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::config::FetchConfig;
use crate::install::store::Store;
use crate::layout::{BLOB_DIR, InstallLayout, pack_path};
use crate::manifest::{ChunkEntry, DeltaCodec, RefContext, TrustedManifest};
use crate::peers::Peers;
use crate::pipeline::plan::{
    FrameKind, FrameRef, LocalChunk, Planned, Range, RefMapSource, WindowKey, WindowSource,
};
use crate::platform::{Dir, STATE_FILE_MODE};
use crate::progress::{Event, Reporter};
use crate::runtime::blocking;
use crate::share::{Offer, Share};
use crate::source::{Origin, RangeBody, backoff, is_mirror_failure, is_transient};
use crate::{Error, PackId, Result};

mod swarm;

/// The output of the fetch stage: every chunk of the plan has a verified local copy.
#[derive(Debug)]
pub struct Fetched {
    pub(crate) planned: Planned,
    /// Compressed chunk bytes received from peers.
    pub(crate) bytes_from_peers: u64,
}

/// A fetched chunk whose bytes matched its id.
struct VerifiedChunk {
    id: ChunkId,
    data: Vec<u8>,
}

impl VerifiedChunk {
    /// Decodes a plain frame, or a delta frame with its window (and reference map), and
    /// checks the chunk's hash.
    fn verify(
        entry: &ChunkEntry,
        frame: &[u8],
        window: Option<(&frame::WindowDecoder, DeltaCodec, Option<RefContext<'_>>)>,
        url: &str,
    ) -> Result<Self> {
        let bad = |reason: String| Error::BadChunk {
            chunk: entry.id,
            source_name: url.to_owned(),
            reason,
        };
        let len = entry.len as usize;
        let data = match window {
            None => frame::decompress(frame, len),
            Some((window, codec, refs)) => codec.decode(window, frame, len, refs),
        }
        .map_err(|e| bad(e.to_string()))?;
        Self::check(entry, data, url)
    }

    /// Accepts decoded bytes only if they hash to the chunk's id.
    fn check(entry: &ChunkEntry, data: Vec<u8>, url: &str) -> Result<Self> {
        let actual = ChunkId::of(&data);
        if actual != entry.id {
            return Err(Error::BadChunk {
                chunk: entry.id,
                source_name: url.to_owned(),
                reason: format!("hash is {actual}"),
            });
        }
        Ok(Self { id: entry.id, data })
    }

    /// Writes the chunk as a blob in `blobs` (`.relsync/chunks`): a new temporary file
    /// (mode 0600, never through a link) renamed into place.
    fn store(self, blobs: &Dir) -> Result<(ChunkId, PathBuf)> {
        let name = self.id.to_string();
        let tmp = format!("{name}.part");
        let path = blobs.path().join(&name);
        let stored = blobs
            .remove_file(&tmp)
            .and_then(|()| blobs.create_file(&tmp, STATE_FILE_MODE))
            .and_then(|mut file| {
                file.write_all(&self.data)
                    .map_err(Error::io("writing", blobs.path().join(&tmp)))
            })
            .and_then(|()| blobs.rename(&tmp, blobs, &name));
        if stored.is_err() {
            // A full disk, say: leave no partial blob behind.
            let _ = blobs.remove_file(&tmp);
        }
        stored.map(|()| (self.id, path))
    }
}

/// Fetches each planned reference map and checks it against its hash in the signed manifest
/// (maps are small: tens of KB per executable).
async fn fetch_ref_maps(
    origin: &Origin,
    target: &TrustedManifest,
    maps: &[RefMapSource],
    config: &FetchConfig,
) -> Result<HashMap<RefMapKey, FetchedMap>> {
    let mut out = HashMap::new();
    for map in maps {
        let pack = &target.packs[map.pack as usize];
        let path = pack_path(&pack.id);
        let frame = get_exact(origin, &path, map.offset, map.frame_len, pack.len, config)
            .await
            .map_err(|e| match e {
                // Say which object the range was: a pack range is most often frames.
                Error::Http {
                    url,
                    reason,
                    transient,
                } => Error::Http {
                    url,
                    reason: format!(
                        "{reason} (reference map of {})",
                        target.entries[map.entry as usize].path
                    ),
                    transient,
                },
                other => other,
            })?;
        let actual = ChunkId::of(&frame);
        if actual != map.hash {
            return Err(Error::malformed(
                "reference map",
                format!(
                    "{path} bytes {}..{} hash to {actual}, the manifest says {}",
                    map.offset,
                    map.offset + u64::from(map.frame_len),
                    map.hash
                ),
            ));
        }
        let fetched = FetchedMap {
            frame,
            base_file: map.base_file.clone(),
            entry: map.entry,
        };
        out.insert(map.key, fetched);
    }
    Ok(out)
}

/// Exactly `len` bytes at `start` of origin object `path` (`object_len` long), retried
/// like a range of frames: up to `config.attempts` tries, with a backoff between.
async fn get_exact(
    origin: &Origin,
    path: &str,
    start: u64,
    len: u32,
    object_len: u64,
    config: &FetchConfig,
) -> Result<Vec<u8>> {
    let len = len as usize;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let got = async {
            let mut body = origin
                .get_range(path, start, len as u64, object_len)
                .await?;
            let mut bytes = Vec::with_capacity(len);
            while bytes.len() < len {
                let Some(piece) = body.next().await? else {
                    break;
                };
                bytes.extend_from_slice(&piece[..piece.len().min(len - bytes.len())]);
            }
            if bytes.len() != len {
                return Err(Error::Http {
                    url: origin.url(path),
                    reason: format!("the range ended after {} of {len} bytes", bytes.len()),
                    transient: true,
                });
            }
            body.finish().await;
            Ok(bytes)
        }
        .await;
        match got {
            Err(err) if is_mirror_failure(&err) && attempt < config.attempts.max(1) => {
                warn!(error = %err, "reference map request failed, retrying");
                backoff(attempt).await;
            }
            other => return other,
        }
    }
}

/// An installed file read in pieces, for the reference scan (never held whole in memory).
struct InstalledImage {
    file: std::fs::File,
    len: u64,
    path: PathBuf,
}

impl InstalledImage {
    fn open(path: &std::path::Path) -> Result<Self> {
        let file = crate::platform::open_read(path).map_err(Error::io("opening", path))?;
        let len = file
            .metadata()
            .map_err(Error::io("reading the size of", path))?
            .len();
        Ok(Self {
            file,
            len,
            path: path.to_path_buf(),
        })
    }
}

impl Image for InstalledImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

/// Refuses to start an update that cannot fit: `needed` bytes plus a 1% (at least 1 MiB)
/// margin must be free for an unprivileged user on the install's file system.
fn check_free_space(install: &std::path::Path, needed: u64) -> Result<()> {
    let stat = rustix::fs::statvfs(install)
        .map_err(|e| Error::io("checking free space of", install)(std::io::Error::from(e)))?;
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    let margin = (needed / 100).max(1 << 20);
    if needed.saturating_add(margin) > available {
        return Err(Error::NoSpace {
            path: install.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Decoders for the delta windows in use, read from installed files on first use, and the
/// reference maps their projected frames need.
struct WindowCache {
    sources: HashMap<WindowKey, WindowSource>,
    loaded: Mutex<VecDeque<(WindowKey, Arc<frame::WindowDecoder>)>>,
    /// The fetched, hash-checked maps.
    maps: HashMap<RefMapKey, FetchedMap>,
    /// Maps decoded against their base file's scan, most recent last.
    projections: Mutex<VecDeque<(RefMapKey, Arc<Projection>)>>,
}

/// A reference map: (base index in the target manifest, map index in that base).
type RefMapKey = (u32, u32);

/// A reference map's frame, checked against its hash, and what it applies to.
struct FetchedMap {
    frame: Vec<u8>,
    base_file: PathBuf,
    /// The new file's index in the target manifest's entries.
    entry: u32,
}

/// Decoded reference maps kept in memory at once (each up to 40 MiB for the largest
/// executable a map may cover; 9 MiB for a 28 MB one).
const PROJECTIONS_CACHED: usize = 2;

/// Windows kept in memory at once (each up to `limits::WINDOW_BYTES`). Windows of
/// consecutive segments overlap by most of their bytes, so a larger cache mostly holds the
/// same bytes again: with 4, a ruff update with its reference map peaked at 70 MiB; with 2,
/// at 53 MiB and no slower (docs/benchmarks.md).
const WINDOWS_CACHED: usize = 2;

impl WindowCache {
    /// Decodes delta frame `frame` of chunk `chunk` against window `key`.
    fn decode(
        &self,
        key: WindowKey,
        codec: DeltaCodec,
        chunk: u32,
        target: &TrustedManifest,
        frame: &[u8],
        url: &str,
    ) -> Result<VerifiedChunk> {
        let window = self.get(key)?;
        let entry = &target.chunks[chunk as usize];
        let refs = match codec.ref_map() {
            None => None,
            Some(map) => {
                let (projection, file) = self.projection((key.0, map))?;
                let at = target
                    .chunk_offset_in(file as usize, chunk)
                    .ok_or_else(|| {
                        Error::malformed(
                            "reference map",
                            format!(
                                "{} does not hold chunk {}, which a frame projected with its \
                                 map decodes",
                                target.entries[file as usize].path, entry.id
                            ),
                        )
                    })?;
                let window_at = self.sources.get(&key).map_or(0, |s| s.offset);
                Some((projection, window_at, at))
            }
        };
        let refs = refs.as_ref().map(|(projection, window_at, at)| RefContext {
            projection,
            window_at: *window_at,
            at: *at,
        });
        VerifiedChunk::verify(entry, frame, Some((&window, codec, refs)), url)
    }

    /// Reference map `key` decoded against a scan of its installed base file (scanned on
    /// first use, and again if it was evicted), and its new file's entry index.
    fn projection(&self, key: RefMapKey) -> Result<(Arc<Projection>, u32)> {
        let map = self
            .maps
            .get(&key)
            .ok_or_else(|| Error::malformed("reference map", "not fetched"))?;
        if let Ok(cached) = self.projections.lock()
            && let Some((_, projection)) = cached.iter().find(|(k, _)| *k == key)
        {
            return Ok((projection.clone(), map.entry));
        }
        let file = InstalledImage::open(&map.base_file)?;
        let old = OldRefs::scan(&file).ok_or_else(|| {
            Error::malformed(
                "reference map",
                format!(
                    "its base file {} is not an x86-64 ELF image within the scanner's limits",
                    map.base_file.display()
                ),
            )
        })?;
        let projection = Arc::new(
            Projection::decode(old, &map.frame)
                .map_err(|e| Error::malformed("reference map", e.to_string()))?,
        );
        if let Ok(mut cached) = self.projections.lock() {
            if cached.len() >= PROJECTIONS_CACHED {
                cached.pop_front();
            }
            cached.push_back((key, projection.clone()));
        }
        Ok((projection, map.entry))
    }

    fn get(&self, key: WindowKey) -> Result<Arc<frame::WindowDecoder>> {
        if let Ok(loaded) = self.loaded.lock()
            && let Some((_, decoder)) = loaded.iter().find(|(k, _)| *k == key)
        {
            return Ok(decoder.clone());
        }
        let source = self
            .sources
            .get(&key)
            .ok_or_else(|| Error::malformed("delta window", "not planned"))?;
        let file =
            crate::platform::open_read(&source.path).map_err(Error::io("opening", &source.path))?;
        let mut bytes = vec![0u8; source.len as usize];
        file.read_exact_at(&mut bytes, source.offset)
            .map_err(Error::io("reading", &source.path))?;
        if bytes.starts_with(&frame::DICTIONARY_MAGIC) {
            return Err(Error::malformed(
                "delta window",
                "starts with the zstd dictionary magic",
            ));
        }
        let decoder = Arc::new(frame::WindowDecoder::new(bytes));
        if let Ok(mut loaded) = self.loaded.lock() {
            if loaded.len() >= WINDOWS_CACHED {
                loaded.pop_front();
            }
            loaded.push_back((key, decoder.clone()));
        }
        Ok(decoder)
    }
}

struct Shared {
    origin: Origin,
    windows: Arc<WindowCache>,
    /// `.relsync/chunks`, where verified frames are stored.
    blobs: Arc<Dir>,
    store: Arc<Store>,
    target: TrustedManifest,
    reporter: Arc<dyn Reporter>,
    /// Bytes of planned frames done (progress): each counted once, however often it was
    /// requested.
    received: AtomicU64,
    /// Bytes of the planned frames (the gaps between them not included).
    total: u64,
    attempts: u32,
    /// Marks chunks held as they are stored, for peers.
    offer: Option<Arc<Offer>>,
    from_peers: AtomicU64,
}

impl Shared {
    /// `bytes` more of the planned frames are done.
    fn progress(&self, bytes: u64) {
        let done = self.received.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.reporter.report(Event::Fetched {
            bytes: done,
            total: self.total,
            from_peers: self.from_peers.load(Ordering::Relaxed),
        });
    }

    /// Chunk `index` is stored: peers may have it now.
    fn stored(&self, index: u32) {
        if let Some(offer) = &self.offer {
            offer.add(index);
        }
    }
}

/// Runs the fetch stage.
impl Fetched {
    /// A plan that needs nothing from the network (every chunk is on disk) as fetched: how an
    /// offline apply passes the fetch stage.
    pub(crate) fn local(planned: Planned) -> Result<Self> {
        let missing = planned.plan.totals.bytes_to_fetch;
        if missing > 0 {
            return Err(Error::NotStaged(format!(
                "the staged release {} is incomplete: {missing} bytes are no longer on disk; \
                 run `relsync update` online",
                planned.plan.version
            )));
        }
        Ok(Self {
            planned,
            bytes_from_peers: 0,
        })
    }
}

/// Where the fetch stage gets chunks besides the origin, and what it shares meanwhile.
#[derive(Clone, Copy)]
pub(crate) struct Lan<'a> {
    pub peers: Option<&'a Arc<dyn Peers>>,
    pub share: Option<&'a Share>,
}

pub(crate) async fn fetch(
    mut planned: Planned,
    origin: &Origin,
    lan: Lan<'_>,
    layout: &InstallLayout,
    store: Arc<Store>,
    config: &FetchConfig,
    reporter: Arc<dyn Reporter>,
) -> Result<Fetched> {
    check_free_space(layout.root(), planned.plan.totals.bytes_to_write)?;
    if planned.ranges.is_empty() {
        return Ok(Fetched {
            planned,
            bytes_from_peers: 0,
        });
    }
    let offer = lan.share.map(|share| {
        let missing = planned.ranges.iter().flat_map(|r| &r.frames);
        share.begin(
            &planned.checked.target,
            missing.flat_map(|f| f.chunk..f.chunk + f.chunks()),
        )
    });
    let blobs = layout.state_dir()?.private_dir(BLOB_DIR)?;
    let shared = Arc::new(Shared {
        origin: origin.clone(),
        windows: Arc::new(WindowCache {
            sources: std::mem::take(&mut planned.windows),
            loaded: Mutex::new(VecDeque::new()),
            maps: fetch_ref_maps(origin, &planned.checked.target, &planned.ref_maps, config)
                .await?,
            projections: Mutex::new(VecDeque::new()),
        }),
        blobs: Arc::new(blobs),
        store,
        target: planned.checked.target.clone(),
        reporter,
        received: AtomicU64::new(0),
        total: planned
            .ranges
            .iter()
            .flat_map(|r| &r.frames)
            .map(|f| u64::from(f.frame_len))
            .sum(),
        attempts: config.attempts.max(1),
        offer,
        from_peers: AtomicU64::new(0),
    });
    let stored = match lan.peers {
        Some(peers) => {
            let frames = planned.ranges.iter().flat_map(|r| r.frames.clone());
            swarm::fetch(&shared, peers.clone(), frames.collect(), config).await
        }
        None => from_origin(&shared, &planned.ranges, config).await,
    };
    if let Some(offer) = &shared.offer {
        offer.finished();
    }
    let stored = stored?;
    for (index, path) in stored {
        planned.local.insert(index, LocalChunk::Blob(path));
    }
    Ok(Fetched {
        planned,
        bytes_from_peers: shared.from_peers.load(Ordering::Relaxed),
    })
}

/// A frame to fetch and the chunks it decodes to, in order.
#[derive(Clone)]
struct FrameJob {
    frame: FrameRef,
    chunks: Arc<[ChunkEntry]>,
}

impl FrameJob {
    fn new(target: &TrustedManifest, frame: FrameRef) -> Self {
        let first = frame.chunk as usize;
        Self {
            frame,
            chunks: target.chunks[first..first + frame.chunks() as usize].into(),
        }
    }
}

/// A solid frame part-way decoded. It outlives a failed request, so the retry continues from
/// the exact byte where the last one stopped: nothing received is received twice.
struct SolidProgress {
    decoder: frame::SolidDecoder,
    /// Compressed bytes of the frame fed to the decoder.
    consumed: u64,
    /// Chunks of the run verified and stored.
    next: usize,
    /// Decoded bytes of the chunk being assembled.
    pending: Vec<u8>,
}

/// How far one range request has got.
#[derive(Default)]
struct RangeProgress {
    /// Frames fully done.
    frames: usize,
    solid: Option<SolidProgress>,
    stored: Vec<(u32, PathBuf)>,
}

impl RangeProgress {
    fn mark(&self) -> (usize, u64) {
        (self.frames, self.solid.as_ref().map_or(0, |s| s.consumed))
    }
}

/// The no-peer path: every range from the origin, `max_parallel_requests` at once.
///
/// A mirror that ignores Range headers answers each request with the whole pack. Unless the
/// active mirror is known to honour ranges, the first range goes first, and its answer
/// decides how the rest go: a whole pack carries the rest of its pack too, and the ranges
/// of each other pack merge into one request. Either way no pack is received twice. The
/// rest start as soon as that answer's status is in, while its body streams.
async fn from_origin(
    shared: &Arc<Shared>,
    ranges: &[Range],
    config: &FetchConfig,
) -> Result<Vec<(u32, PathBuf)>> {
    let parallel = config.max_parallel_requests.max(1);
    let [first, later @ ..] = ranges else {
        return Ok(Vec::new());
    };
    if later.is_empty() || shared.origin.honours_ranges() {
        return fetch_ranges(shared, ranges, parallel).await;
    }
    let same_pack = later.iter().take_while(|r| r.pack == first.pack).count();
    let jobs = frame_jobs(&shared.target, std::slice::from_ref(first));
    let more = frame_jobs(&shared.target, &later[..same_pack]);
    let pack = shared.target.packs[first.pack as usize].id;
    let (answered, whole) = oneshot::channel();
    let probe = async {
        let (stored, _) = fetch_span(shared, pack, first, &jobs, &more, Some(answered)).await?;
        Ok(stored)
    };
    let rest = |whole: bool| {
        let rest = if whole { &later[same_pack..] } else { later };
        if whole || shared.origin.ignores_ranges() {
            merge_by_pack(rest)
        } else {
            rest.to_vec()
        }
    };
    let (mut stored, others) = if parallel == 1 {
        let stored = probe.await?;
        let others = fetch_ranges(shared, &rest(whole.await.unwrap_or(false)), 1).await?;
        (stored, others)
    } else {
        let others = async {
            // Without an answer the first range failed, and its error ends the fetch.
            let Ok(whole) = whole.await else {
                return Ok(Vec::new());
            };
            fetch_ranges(shared, &rest(whole), parallel - 1).await
        };
        futures_util::try_join!(probe, others)?
    };
    stored.extend(others);
    Ok(stored)
}

/// Fetches `ranges`, `parallel` at once.
async fn fetch_ranges(
    shared: &Arc<Shared>,
    ranges: &[Range],
    parallel: usize,
) -> Result<Vec<(u32, PathBuf)>> {
    // Collected, so the stream's type holds futures, not a closure: a closure over
    // borrowed ranges would keep the whole fetch from being `Send`.
    let jobs: Vec<_> = ranges
        .iter()
        .map(|range| {
            let frames = frame_jobs(&shared.target, std::slice::from_ref(range));
            let pack = shared.target.packs[range.pack as usize].id;
            let shared = shared.clone();
            async move { fetch_range(&shared, pack, range, &frames).await }
        })
        .collect();
    let results: Vec<Vec<(u32, PathBuf)>> = stream::iter(jobs)
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await?;
    Ok(results.into_iter().flatten().collect())
}

/// The frames of `ranges`, in order, with their chunks.
fn frame_jobs(target: &TrustedManifest, ranges: &[Range]) -> Vec<FrameJob> {
    ranges
        .iter()
        .flat_map(|r| &r.frames)
        .map(|f| FrameJob::new(target, *f))
        .collect()
}

/// The ranges of each pack as one (`ranges` sorted by pack and offset): for a mirror that
/// sends whole packs anyway. The frames keep their order; the gaps between them are skipped.
fn merge_by_pack(ranges: &[Range]) -> Vec<Range> {
    let mut merged: Vec<Range> = Vec::new();
    for range in ranges {
        match merged.last_mut() {
            Some(last) if last.pack == range.pack => {
                last.len = (range.start + range.len).max(last.start + last.len) - last.start;
                last.frames.extend_from_slice(&range.frames);
            }
            _ => merged.push(range.clone()),
        }
    }
    merged
}

/// The end of a frame in its pack.
fn frame_end(job: &FrameJob) -> u64 {
    job.frame.offset + u64::from(job.frame.frame_len)
}

/// Fetches one range, retrying failures from the first byte not yet verified.
async fn fetch_range(
    shared: &Shared,
    pack: PackId,
    range: &Range,
    jobs: &[FrameJob],
) -> Result<Vec<(u32, PathBuf)>> {
    fetch_span(shared, pack, range, jobs, &[], None)
        .await
        .map(|(stored, _)| stored)
}

/// One mirror's failures while fetching a range.
#[derive(Default)]
struct Tries {
    /// Failures since the range last made progress.
    failures: u32,
    /// It failed in a way a retry does not cure (a 404, a bad answer).
    out: bool,
    /// Tried since the last backoff.
    this_round: bool,
    last: Option<Error>,
}

/// Fetches the frames `jobs` of `range`, retrying failures from the first byte not yet
/// verified: on the next mirror when there are several, and after a backoff once every
/// mirror left failed since the last one (or after the wait a mirror's `Retry-After` asked
/// for, if longer: see [`Origin::get`]). A mirror is left after `attempts` failures in a row,
/// or one no retry cures. Should a mirror send the whole pack, the frames `more` (later in
/// the same pack) are taken from it too. `answered` learns, at the first answer with a body,
/// whether it is the whole pack. Returns the chunks stored, and whether `more` was taken.
async fn fetch_span(
    shared: &Shared,
    pack: PackId,
    range: &Range,
    jobs: &[FrameJob],
    more: &[FrameJob],
    mut answered: Option<oneshot::Sender<bool>>,
) -> Result<(Vec<(u32, PathBuf)>, bool)> {
    let path = pack_path(&pack);
    let pack_len = shared.target.packs[range.pack as usize].len;
    let all: Vec<FrameJob> = jobs.iter().chain(more).cloned().collect();
    let (mut wanted, mut end) = (jobs.len(), range.start + range.len);
    let mut tries: Vec<Tries> = (0..shared.origin.mirror_count())
        .map(|_| Tries::default())
        .collect();
    let usable = |t: &Tries| !t.out && t.failures < shared.attempts;
    let mut round = 0;
    let mut progress = RangeProgress::default();
    while progress.frames < wanted {
        let Some(mirror) = shared.origin.pick(|i| usable(&tries[i])) else {
            let failures = tries.into_iter().map(|t| t.last).collect();
            return Err(shared.origin.every_mirror_failed(&path, "pack", failures));
        };
        if tries[mirror].this_round {
            round += 1;
            backoff(round).await;
            tries.iter_mut().for_each(|t| t.this_round = false);
        }
        tries[mirror].this_round = true;
        let url = shared.origin.url_on(mirror, &path);
        let before = progress.mark();
        let (frame, consumed) = before;
        let start = all[frame].frame.offset + consumed;
        let body = shared
            .origin
            .get_range_on(mirror, &path, start, end - start, pack_len)
            .await;
        let result = match body {
            Ok(mut body) => {
                if body.is_whole_object() && wanted < all.len() {
                    // The whole pack is coming: take its later frames from it too.
                    wanted = all.len();
                    end = frame_end(&all[wanted - 1]);
                    body.extend_to(end);
                }
                if let Some(answered) = answered.take() {
                    let _ = answered.send(body.is_whole_object());
                }
                let fetched = fetch_frames(
                    shared,
                    &mut body,
                    &url,
                    start,
                    end,
                    &all[..wanted],
                    &mut progress,
                )
                .await;
                if fetched.is_ok() {
                    body.finish().await;
                }
                fetched
            }
            Err(err) => Err(err),
        };
        let Err(err) = result else { continue };
        if progress.mark() != before {
            // Progress was made: a flaky link, not a dead one.
            tries.iter_mut().for_each(|t| t.failures = 0);
            round = 0;
        }
        if !is_mirror_failure(&err) {
            return Err(err);
        }
        shared.origin.move_on_from(mirror);
        let tried = &mut tries[mirror];
        tried.failures += 1;
        tried.out |= !is_transient(&err);
        if tries.iter().any(usable) {
            warn!(%url, error = %err, "range request failed, retrying");
        }
        tries[mirror].last = Some(err);
    }
    let ids: Vec<ChunkId> = all[..wanted]
        .iter()
        .flat_map(|j| j.chunks.iter().map(|c| c.id))
        .collect();
    let store = shared.store.clone();
    let manifest = shared.target.id();
    blocking(move || store.journal_add(&ids, &manifest)).await?;
    Ok((progress.stored, wanted > jobs.len()))
}

/// Reads `start..end` from `body`, decoding frames as they complete (solid frames as they
/// stream). Progress is kept in `progress` even when it fails midway.
async fn fetch_frames(
    shared: &Shared,
    body: &mut RangeBody,
    url: &str,
    start: u64,
    end: u64,
    jobs: &[FrameJob],
    progress: &mut RangeProgress,
) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = start;
    while progress.frames < jobs.len() {
        let piece = body.next().await?.ok_or_else(|| Error::Http {
            url: url.to_owned(),
            reason: format!(
                "body ended {} bytes early",
                end - buf_start - buf.len() as u64
            ),
            transient: true,
        })?;
        if buf_start + (buf.len() + piece.len()) as u64 > end {
            return Err(Error::Http {
                url: url.to_owned(),
                reason: "body is longer than the range asked for".into(),
                transient: false,
            });
        }
        buf.extend_from_slice(&piece);
        while let Some(job) = jobs.get(progress.frames) {
            let frame_start = job.frame.offset + progress.solid.as_ref().map_or(0, |s| s.consumed);
            let frame_end = frame_end(job);
            let available = (buf_start + buf.len() as u64).min(frame_end);
            if let FrameKind::Solid { .. } = job.frame.kind {
                if available <= frame_start {
                    break;
                }
                let from = (frame_start - buf_start) as usize;
                let input = buf[from..(available - buf_start) as usize].to_vec();
                let solid = match progress.solid.take() {
                    Some(solid) => solid,
                    None => SolidProgress {
                        decoder: frame::SolidDecoder::new(
                            job.chunks.iter().map(|c| u64::from(c.len)).sum(),
                        )
                        .map_err(|e| bad_frame(job, url, e))?,
                        consumed: 0,
                        next: 0,
                        pending: Vec::new(),
                    },
                };
                let (solid, mut stored) =
                    decode_solid(shared, job, solid, input, url.to_owned()).await?;
                shared.progress(available - frame_start);
                progress.stored.append(&mut stored);
                buf.drain(..(available - buf_start) as usize);
                buf_start = available;
                if solid.consumed < u64::from(job.frame.frame_len) {
                    progress.solid = Some(solid);
                    break;
                }
                solid.decoder.finish().map_err(|e| bad_frame(job, url, e))?;
                progress.frames += 1;
                continue;
            }
            if available < frame_end {
                break;
            }
            let from = (job.frame.offset - buf_start) as usize;
            let frame = buf[from..(frame_end - buf_start) as usize].to_vec();
            let (blobs, windows, url_owned) =
                (shared.blobs.clone(), shared.windows.clone(), url.to_owned());
            let (kind, entry) = (job.frame.kind, job.chunks[0]);
            let (target, chunk) = (shared.target.clone(), job.frame.chunk);
            let stored = blocking(move || {
                let verified = match kind {
                    FrameKind::Delta(key, codec) => {
                        windows.decode(key, codec, chunk, &target, &frame, &url_owned)?
                    }
                    _ => VerifiedChunk::verify(&entry, &frame, None, &url_owned)?,
                };
                verified.store(&blobs)
            })
            .await?;
            shared.stored(job.frame.chunk);
            shared.progress(u64::from(job.frame.frame_len));
            progress.stored.push((job.frame.chunk, stored.1));
            buf.drain(..(frame_end - buf_start) as usize);
            buf_start = frame_end;
            progress.frames += 1;
        }
    }
    debug!(%url, start, end, "range done");
    Ok(())
}

fn bad_frame(job: &FrameJob, url: &str, e: impl ToString) -> Error {
    Error::BadChunk {
        chunk: job.chunks.first().map_or(ChunkId([0; 32]), |c| c.id),
        source_name: url.to_owned(),
        reason: e.to_string(),
    }
}

/// Feeds more of a solid frame to its decoder; verifies and stores each chunk it completes.
async fn decode_solid(
    shared: &Shared,
    job: &FrameJob,
    mut solid: SolidProgress,
    input: Vec<u8>,
    url: String,
) -> Result<(SolidProgress, Vec<(u32, PathBuf)>)> {
    let blobs = shared.blobs.clone();
    let chunks = job.chunks.clone();
    let first = job.frame.chunk;
    let offer = shared.offer.clone();
    blocking(move || {
        let mut stored = Vec::new();
        let SolidProgress {
            decoder,
            next,
            pending,
            ..
        } = &mut solid;
        decoder
            .push::<Error>(&input, |mut out| {
                while !out.is_empty() {
                    let entry = chunks.get(*next).ok_or_else(|| Error::BadChunk {
                        chunk: chunks[0].id,
                        source_name: url.clone(),
                        reason: "solid frame decodes past its chunks".into(),
                    })?;
                    let take = (entry.len as usize - pending.len()).min(out.len());
                    pending.extend_from_slice(&out[..take]);
                    out = &out[take..];
                    if pending.len() == entry.len as usize {
                        let data = std::mem::take(pending);
                        let (_, path) = VerifiedChunk::check(entry, data, &url)?.store(&blobs)?;
                        offer.as_ref().inspect(|o| o.add(first + *next as u32));
                        stored.push((first + *next as u32, path));
                        *next += 1;
                    }
                }
                Ok(())
            })
            .map_err(|e| match e {
                Error::Format(relsync_format::Error::Chunking(inner)) => Error::BadChunk {
                    chunk: chunks[solid.next.min(chunks.len() - 1)].id,
                    source_name: url.clone(),
                    reason: inner.to_string(),
                },
                other => other,
            })?;
        solid.consumed += input.len() as u64;
        Ok((solid, stored))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(pack: u32, frames: &[(u64, u32)]) -> Range {
        let frames: Vec<FrameRef> = frames
            .iter()
            .enumerate()
            .map(|(i, &(offset, frame_len))| FrameRef {
                chunk: pack * 100 + i as u32,
                pack,
                offset,
                frame_len,
                kind: FrameKind::Plain,
            })
            .collect();
        let start = frames[0].offset;
        let end = frames
            .last()
            .map_or(start, |f| f.offset + u64::from(f.frame_len));
        Range {
            pack,
            start,
            len: end - start,
            frames,
        }
    }

    #[test]
    fn the_ranges_of_each_pack_merge_into_one_in_order() {
        let ranges = [
            range(0, &[(10, 5), (15, 5)]),
            range(0, &[(1000, 10)]),
            range(1, &[(0, 3)]),
            range(2, &[(50, 5)]),
            range(2, &[(90, 10), (200, 1)]),
        ];
        let merged = merge_by_pack(&ranges);
        let summary: Vec<(u32, u64, u64, Vec<u64>)> = merged
            .iter()
            .map(|r| {
                let offsets = r.frames.iter().map(|f| f.offset).collect();
                (r.pack, r.start, r.len, offsets)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, 10, 1000, vec![10, 15, 1000]),
                (1, 0, 3, vec![0]),
                (2, 50, 151, vec![50, 90, 200]),
            ]
        );
        assert!(merge_by_pack(&[]).is_empty());
    }
}
