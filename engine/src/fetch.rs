//! fetch: download missing frames in coalesced range requests, several in flight.
//!
//! Frames are verified as they stream in (decompressed within their declared size, then
//! hashed) and kept as blob files, each renamed into place only once verified. A retry, or the
//! next run after a crash, resumes after the last verified frame, so no verified byte is
//! downloaded twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, TryStreamExt, stream};
use relsync_chunker::{ChunkId, frame};
use tracing::{debug, warn};

use crate::layout::{InstallLayout, pack_path};
use crate::manifest::ChunkEntry;
use crate::origin::{Origin, backoff, blocking};
use crate::plan::{LocalChunk, Planned, Range};
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

/// A frame whose content matched its chunk id.
struct VerifiedFrame {
    id: ChunkId,
    frame: Vec<u8>,
}

impl VerifiedFrame {
    fn verify(entry: &ChunkEntry, frame: Vec<u8>, url: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadChunk {
            chunk: entry.id,
            source_name: url.to_owned(),
            reason,
        };
        let data = frame::decompress(&frame, entry.len as usize).map_err(|e| bad(e.to_string()))?;
        let actual = ChunkId::of(&data);
        if actual != entry.id {
            return Err(bad(format!("hash is {actual}")));
        }
        Ok(Self {
            id: entry.id,
            frame,
        })
    }

    /// Writes the frame as a blob: a temporary file renamed into place.
    fn store(self, layout: &InstallLayout) -> Result<(ChunkId, PathBuf)> {
        let path = layout.blob(&self.id);
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, &self.frame).map_err(Error::io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("renaming", &path))?;
        Ok((self.id, path))
    }
}

struct Shared {
    origin: Origin,
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
        layout: layout.clone(),
        store,
        manifest: planned.checked.target.id(),
        reporter,
        received: AtomicU64::new(0),
        total: planned.plan.totals.bytes_to_fetch,
        attempts: config.attempts.max(1),
    });
    let jobs = planned.ranges.iter().map(|range| {
        let frames: Vec<(u64, ChunkEntry)> = range
            .chunks
            .iter()
            .map(|&i| {
                let target = &planned.checked.target;
                (target.frame_offset(i), target.chunks[i as usize])
            })
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
    frames: &[(u64, ChunkEntry)],
) -> Result<Vec<(u32, PathBuf)>> {
    let path = pack_path(&pack);
    let url = shared.origin.url(&path);
    let end = range.start + range.len;
    let mut done: Vec<(u32, PathBuf)> = Vec::with_capacity(frames.len());
    let mut attempt = 0;
    while done.len() < frames.len() {
        attempt += 1;
        let next = done.len();
        let start = frames[next].0;
        match fetch_frames(
            shared,
            &path,
            &url,
            start,
            end,
            &range.chunks[next..],
            &frames[next..],
        )
        .await
        {
            Ok(mut got) => done.append(&mut got),
            Err((mut got, err)) => {
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
    indices: &[u32],
    frames: &[(u64, ChunkEntry)],
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
        while let Some(&(offset, entry)) = frames.get(done.len()) {
            let rel = (offset - buf_start) as usize;
            let frame_end = rel + entry.frame_len as usize;
            if buf.len() < frame_end {
                break;
            }
            let frame = buf[rel..frame_end].to_vec();
            let layout = shared.layout.clone();
            let url_owned = url.to_owned();
            let stored =
                blocking(move || VerifiedFrame::verify(&entry, frame, &url_owned)?.store(&layout))
                    .await;
            match stored {
                Ok((_, blob)) => done.push((indices[done.len()], blob)),
                Err(e) => return Err((done, e)),
            }
            buf.drain(..frame_end);
            buf_start += frame_end as u64;
            let total = shared
                .received
                .fetch_add(u64::from(entry.frame_len), Ordering::Relaxed)
                + u64::from(entry.frame_len);
            shared.reporter.report(Event::Fetched {
                bytes: total,
                total: shared.total,
            });
        }
    }
    debug!(%url, start, end, frames = done.len(), "range done");
    Ok(done)
}
