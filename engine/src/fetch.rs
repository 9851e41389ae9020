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
use crate::manifest::ChunkEntry;
use crate::origin::{Origin, backoff, blocking};
use crate::plan::{FrameRef, LocalChunk, Planned, Range, WindowKey, WindowSource};
use crate::progress::{Event, Reporter};
use crate::store::Store;
use crate::{Error, ManifestId, PackId, Result};

/// How the fetch stage talks to origins.
///
/// # Defaults
/// - `max_parallel_requests`: 4
/// - `max_range_bytes`: 8 MiB
/// - `coalesce_gap_bytes`: 32 KiB (a smaller gap between two needed frames is downloaded
///   rather than paid for with another request)
/// - `attempts`: 4 per range request, for 5xx, resets and truncated bodies
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
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_parallel_requests: 4,
            max_range_bytes: 8 * 1024 * 1024,
            coalesce_gap_bytes: 32 * 1024,
            attempts: 4,
        }
    }
}

/// The output of the fetch stage: every chunk of the plan has a verified local copy.
#[derive(Debug)]
pub struct Fetched {
    pub(crate) planned: Planned,
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
        window: Option<&frame::WindowDecoder>,
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
            Some(window) => window.decompress(frame, len),
        }
        .map_err(|e| bad(e.to_string()))?;
        let actual = ChunkId::of(&data);
        if actual != entry.id {
            return Err(bad(format!("hash is {actual}")));
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
        let decoder = Arc::new(frame::WindowDecoder::new(&bytes));
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
    manifest: ManifestId,
    reporter: Arc<dyn Reporter>,
    received: AtomicU64,
    total: u64,
    attempts: u32,
}

/// Runs the fetch stage.
pub(crate) async fn fetch(
    mut planned: Planned,
    origin: &Origin,
    layout: &InstallLayout,
    store: Arc<Store>,
    config: &FetchConfig,
    reporter: Arc<dyn Reporter>,
) -> Result<Fetched> {
    if planned.ranges.is_empty() {
        return Ok(Fetched { planned });
    }
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
        manifest: planned.checked.target.id(),
        reporter,
        received: AtomicU64::new(0),
        total: planned.plan.totals.bytes_to_fetch,
        attempts: config.attempts.max(1),
    });
    let jobs = planned.ranges.iter().map(|range| {
        let frames: Vec<(FrameRef, ChunkEntry)> = range
            .frames
            .iter()
            .map(|f| (*f, planned.checked.target.chunks[f.chunk as usize]))
            .collect();
        let pack = planned.checked.target.packs[range.pack as usize].id;
        let shared = shared.clone();
        let range = range.clone();
        async move { fetch_range(&shared, pack, &range, &frames).await }
    });
    let results: Vec<Vec<(u32, PathBuf)>> = stream::iter(jobs)
        .buffer_unordered(config.max_parallel_requests.max(1))
        .try_collect()
        .await?;
    for (index, path) in results.into_iter().flatten() {
        planned.local.insert(index, LocalChunk::Blob(path));
    }
    Ok(Fetched { planned })
}

/// Fetches one range, retrying transient failures from the first frame not yet verified.
async fn fetch_range(
    shared: &Shared,
    pack: PackId,
    range: &Range,
    frames: &[(FrameRef, ChunkEntry)],
) -> Result<Vec<(u32, PathBuf)>> {
    let path = pack_path(&pack);
    let url = shared.origin.url(&path);
    let end = range.start + range.len;
    let mut done: Vec<(u32, PathBuf)> = Vec::with_capacity(frames.len());
    let mut attempt = 0;
    while done.len() < frames.len() {
        attempt += 1;
        let next = done.len();
        let start = frames[next].0.offset;
        match fetch_frames(shared, &path, &url, start, end, &frames[next..]).await {
            Ok(mut got) => done.append(&mut got),
            Err((mut got, err)) => {
                if !got.is_empty() {
                    // Progress was made: a flaky link, not a dead one.
                    attempt = 0;
                }
                done.append(&mut got);
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
    }
    let ids: Vec<ChunkId> = frames.iter().map(|(_, c)| c.id).collect();
    let store = shared.store.clone();
    let manifest = shared.manifest;
    blocking(move || store.journal_add(&ids, &manifest)).await?;
    Ok(done)
}

type Partial = (Vec<(u32, PathBuf)>, Error);

/// One request for `start..end`; returns the frames verified, even when it fails midway.
async fn fetch_frames(
    shared: &Shared,
    path: &str,
    url: &str,
    start: u64,
    end: u64,
    frames: &[(FrameRef, ChunkEntry)],
) -> std::result::Result<Vec<(u32, PathBuf)>, Partial> {
    let mut done = Vec::new();
    let mut body = match shared.origin.get_range(path, start, end - start).await {
        Ok(body) => body,
        Err(e) => return Err((done, e)),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = start;
    while done.len() < frames.len() {
        let piece = match body.next().await {
            Ok(Some(piece)) => piece,
            Ok(None) => {
                let err = Error::Http {
                    url: url.to_owned(),
                    reason: format!(
                        "body ended {} bytes early",
                        end - buf_start - buf.len() as u64
                    ),
                    transient: true,
                };
                return Err((done, err));
            }
            Err(e) => return Err((done, e)),
        };
        let received = buf_start + buf.len() as u64 + piece.len() as u64;
        if received > end {
            let err = Error::Http {
                url: url.to_owned(),
                reason: "body is longer than the range asked for".into(),
                transient: false,
            };
            return Err((done, err));
        }
        buf.extend_from_slice(&piece);
        while let Some(&(frame_ref, entry)) = frames.get(done.len()) {
            let rel = (frame_ref.offset - buf_start) as usize;
            let frame_end = rel + frame_ref.frame_len as usize;
            if buf.len() < frame_end {
                break;
            }
            let frame = buf[rel..frame_end].to_vec();
            let layout = shared.layout.clone();
            let windows = shared.windows.clone();
            let url_owned = url.to_owned();
            let stored = blocking(move || {
                let window = frame_ref.window.map(|key| windows.get(key)).transpose()?;
                VerifiedChunk::verify(&entry, &frame, window.as_deref(), &url_owned)?.store(&layout)
            })
            .await;
            match stored {
                Ok((_, blob)) => done.push((frame_ref.chunk, blob)),
                Err(e) => return Err((done, e)),
            }
            buf.drain(..frame_end);
            buf_start += frame_end as u64;
            let total = shared
                .received
                .fetch_add(u64::from(frame_ref.frame_len), Ordering::Relaxed)
                + u64::from(frame_ref.frame_len);
            shared.reporter.report(Event::Fetched {
                bytes: total,
                total: shared.total,
            });
        }
    }
    debug!(%url, start, end, frames = done.len(), "range done");
    Ok(done)
}
