//! fetch: download missing frames in coalesced range requests, several in flight.
//!
//! Frames are verified as they stream in (decompressed within their declared size, with the
//! delta window from an installed file where the frame is a delta, then hashed) and the chunks
//! kept as blob files, each renamed into place only once verified. A retry, or the
//! next run after a crash, resumes after the last verified frame, so no verified byte is
//! downloaded twice.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt, stream};
use relsync_chunker::{ChunkId, frame};
use tracing::{debug, warn};

use crate::layout::{InstallLayout, pack_path};
use crate::manifest::{ChunkEntry, DeltaCodec, TrustedManifest};
use crate::origin::{Origin, backoff, blocking};
use crate::peers::Peers;
use crate::plan::{FrameKind, FrameRef, LocalChunk, Planned, Range, WindowKey, WindowSource};
use crate::progress::{Event, Reporter};
use crate::share::{Offer, Share};
use crate::store::Store;
use crate::{Error, PackId, Result};

mod swarm;

/// How the fetch stage talks to origins.
///
/// # Defaults
/// - `max_parallel_requests`: 4
/// - `min_bytes_per_sec`: 1 KiB/s
/// - `max_range_bytes`: 8 MiB
/// - `coalesce_gap_bytes`: 32 KiB (a smaller gap between two needed frames is downloaded
///   rather than paid for with another request)
/// - `attempts`: 4 per range request, for 5xx, resets and truncated bodies
/// - `peer_batch_bytes`: 1 MiB of chunks per request to a peer
/// - `peer_requests`: 8 requests to peers in flight at once
/// - `peer_poll`: 250 ms between HAVE rounds while waiting for peers
/// - `peer_stall`: 5 s without progress before a peer's share of the work moves on
/// - `peer_join`: 2 s in which idle peers still count as owners
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FetchConfig {
    /// Range requests in flight at once.
    pub max_parallel_requests: usize,
    /// Largest single range request.
    pub max_range_bytes: u64,
    /// Largest gap of unneeded bytes bridged to merge two ranges.
    pub coalesce_gap_bytes: u64,
    /// Tries per request before giving up.
    pub attempts: u32,
    /// A response whose average rate after its first 10 s is lower fails (0: no minimum).
    pub min_bytes_per_sec: u64,
    /// The longest an update may spend checking, planning and fetching before it fails
    /// (`None`: no limit). Assembling and applying are local and never cut short.
    pub deadline: Option<std::time::Duration>,
    /// Uncompressed bytes of chunks asked of a peer in one request (and the largest origin
    /// range while peers share the work).
    pub peer_batch_bytes: u64,
    /// Requests to peers in flight at once.
    pub peer_requests: usize,
    /// Time between HAVE rounds while frames wait for the peer that owns them.
    pub peer_poll: std::time::Duration,
    /// A peer fetching the same release that gains no chunk for this long no longer owns
    /// any: its frames move to another peer or to the origin.
    pub peer_stall: std::time::Duration,
    /// For this long after a fetch starts, peers that do not fetch the release yet still own
    /// a share of it: in a flash crowd they are about to start, and taking their share now
    /// would fetch it twice.
    pub peer_join: std::time::Duration,
    /// How often a running fetch re-reads the channel pointer, to stop if the publisher
    /// yanks the release.
    pub withdraw_poll: std::time::Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_parallel_requests: 4,
            max_range_bytes: 8 * 1024 * 1024,
            coalesce_gap_bytes: 32 * 1024,
            attempts: 4,
            min_bytes_per_sec: 1024,
            deadline: None,
            peer_batch_bytes: 1024 * 1024,
            peer_requests: 8,
            peer_poll: std::time::Duration::from_millis(250),
            peer_stall: std::time::Duration::from_secs(5),
            peer_join: std::time::Duration::from_secs(2),
            withdraw_poll: std::time::Duration::from_secs(30),
        }
    }
}

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
    /// Decodes a plain frame, or a delta frame with its window, and checks the chunk's hash.
    fn verify(
        entry: &ChunkEntry,
        frame: &[u8],
        window: Option<(&frame::WindowDecoder, DeltaCodec)>,
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
            Some((window, DeltaCodec::Zstd)) => window.decompress(frame, len),
            Some((window, DeltaCodec::Bsdiff)) => window.decompress_bsdiff(frame, len),
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

    /// Writes the chunk as a blob: a temporary file renamed into place.
    fn store(self, layout: &InstallLayout) -> Result<(ChunkId, PathBuf)> {
        let path = layout.blob(&self.id);
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, &self.data).map_err(Error::io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("renaming", &path))?;
        Ok((self.id, path))
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

/// Decoders for the delta windows in use, read from installed files on first use.
struct WindowCache {
    sources: HashMap<WindowKey, WindowSource>,
    loaded: Mutex<VecDeque<(WindowKey, Arc<frame::WindowDecoder>)>>,
}

/// Windows kept in memory at once (each up to `limits::WINDOW_BYTES`).
const WINDOWS_CACHED: usize = 4;

impl WindowCache {
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
        let file = std::fs::File::open(&source.path).map_err(Error::io("opening", &source.path))?;
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
    layout: InstallLayout,
    store: Arc<Store>,
    target: TrustedManifest,
    reporter: Arc<dyn Reporter>,
    /// Bytes of planned frames done (progress).
    received: AtomicU64,
    total: u64,
    attempts: u32,
    /// Marks chunks held as they are stored, for peers.
    offer: Option<Arc<Offer>>,
    from_peers: AtomicU64,
}

impl Shared {
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

    /// The release being installed.
    pub(crate) fn target(&self) -> &TrustedManifest {
        &self.planned.checked.target
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
    let blobs = layout.blobs();
    std::fs::create_dir_all(&blobs).map_err(Error::io("creating", &blobs))?;
    let shared = Arc::new(Shared {
        origin: origin.clone(),
        windows: Arc::new(WindowCache {
            sources: std::mem::take(&mut planned.windows),
            loaded: Mutex::new(VecDeque::new()),
        }),
        layout: layout.clone(),
        store,
        target: planned.checked.target.clone(),
        reporter,
        received: AtomicU64::new(0),
        total: planned.plan.totals.bytes_to_fetch,
        attempts: config.attempts.max(1),
        offer,
        from_peers: AtomicU64::new(0),
    });
    let stored = match lan.peers {
        Some(peers) => {
            let frames = planned.ranges.iter().flat_map(|r| r.frames.clone());
            swarm::fetch(&shared, peers.clone(), frames.collect(), config).await
        }
        None => {
            // Collected, so the stream's type holds futures, not a closure: a closure over
            // borrowed ranges would keep the whole fetch from being `Send`.
            let jobs: Vec<_> = planned
                .ranges
                .iter()
                .map(|range| {
                    let frames: Vec<FrameJob> = range
                        .frames
                        .iter()
                        .map(|f| FrameJob::new(&shared.target, *f))
                        .collect();
                    let pack = shared.target.packs[range.pack as usize].id;
                    let shared = shared.clone();
                    async move { fetch_range(&shared, pack, range, &frames).await }
                })
                .collect();
            let results: Result<Vec<Vec<(u32, PathBuf)>>> = stream::iter(jobs)
                .buffer_unordered(config.max_parallel_requests.max(1))
                .try_collect()
                .await;
            results.map(|r| r.into_iter().flatten().collect())
        }
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

/// Fetches one range, retrying transient failures from the first byte not yet verified.
async fn fetch_range(
    shared: &Shared,
    pack: PackId,
    range: &Range,
    jobs: &[FrameJob],
) -> Result<Vec<(u32, PathBuf)>> {
    let path = pack_path(&pack);
    let url = shared.origin.url(&path);
    let end = range.start + range.len;
    let mut progress = RangeProgress::default();
    let mut attempt = 0;
    while progress.frames < jobs.len() {
        attempt += 1;
        let before = progress.mark();
        let (frame, consumed) = before;
        let start = jobs[frame].frame.offset + consumed;
        if let Err(err) = fetch_frames(shared, &path, &url, start, end, jobs, &mut progress).await {
            if progress.mark() != before {
                // Progress was made: a flaky link, not a dead one.
                attempt = 1;
            }
            let transient = matches!(
                err,
                Error::Http {
                    transient: true,
                    ..
                }
            );
            if !transient || attempt >= shared.attempts {
                return Err(err);
            }
            warn!(%url, attempt, error = %err, "range request failed, retrying");
            backoff(attempt).await;
        }
    }
    let ids: Vec<ChunkId> = jobs
        .iter()
        .flat_map(|j| j.chunks.iter().map(|c| c.id))
        .collect();
    let store = shared.store.clone();
    let manifest = shared.target.id();
    blocking(move || store.journal_add(&ids, &manifest)).await?;
    Ok(progress.stored)
}

/// One request for `start..end`, decoding frames as they complete (solid frames as they
/// stream). Progress is kept in `progress` even when it fails midway.
async fn fetch_frames(
    shared: &Shared,
    path: &str,
    url: &str,
    start: u64,
    end: u64,
    jobs: &[FrameJob],
    progress: &mut RangeProgress,
) -> Result<()> {
    let mut body = shared.origin.get_range(path, start, end - start).await?;
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
        let received = shared
            .received
            .fetch_add(piece.len() as u64, Ordering::Relaxed)
            + piece.len() as u64;
        shared.reporter.report(Event::Fetched {
            bytes: received,
            total: shared.total,
            from_peers: shared.from_peers.load(Ordering::Relaxed),
        });
        while let Some(job) = jobs.get(progress.frames) {
            let frame_start = job.frame.offset + progress.solid.as_ref().map_or(0, |s| s.consumed);
            let frame_end = job.frame.offset + u64::from(job.frame.frame_len);
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
            let (layout, windows, url_owned) = (
                shared.layout.clone(),
                shared.windows.clone(),
                url.to_owned(),
            );
            let (kind, entry) = (job.frame.kind, job.chunks[0]);
            let stored = blocking(move || {
                let window = match kind {
                    FrameKind::Delta(key, codec) => Some((windows.get(key)?, codec)),
                    _ => None,
                };
                let window = window.as_ref().map(|(w, codec)| (&**w, *codec));
                VerifiedChunk::verify(&entry, &frame, window, &url_owned)?.store(&layout)
            })
            .await?;
            shared.stored(job.frame.chunk);
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
    let layout = shared.layout.clone();
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
                        let (_, path) = VerifiedChunk::check(entry, data, &url)?.store(&layout)?;
                        offer.as_ref().inspect(|o| o.add(first + *next as u32));
                        stored.push((first + *next as u32, path));
                        *next += 1;
                    }
                }
                Ok(())
            })
            .map_err(|e| match e {
                Error::Chunking(inner) => Error::BadChunk {
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
