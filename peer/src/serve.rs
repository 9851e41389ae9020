//! Answering peers: HAVE, GET and META requests served from a [`Shelf`] (an install's
//! [`Share`]), within the limits: the batch size of a GET, slots in total and per peer for
//! GET and META, and the upload cap. Also what a node counts as it serves ([`NodeStats`]).
//!
//! [`Server`] decides each answer without touching the swarm: it is given a request and says
//! what to send, now or when a blocking read finishes. The driver sends it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use libp2p::PeerId;
use libp2p::request_response::InboundRequestId;
use relsync_engine::PeerFrames;
use relsync_engine::{HaveAnswer, ManifestId, Share};
use serde::Serialize;
use tokio::time::Instant;

use crate::Limits;
use crate::wire::{
    GetRequest, GetResponse, HaveRequest, HaveResponse, MAX_BATCH_BYTES, MAX_BATCH_CHUNKS,
    MetaRequest, MetaResponse,
};

/// What a node serves. [`Share`] (an install's releases) is the real one; tests plug in
/// peers that lie.
pub trait Shelf: Send + Sync + 'static {
    /// The answer to HAVE for `manifest`, if it is known.
    fn have(&self, manifest: &ManifestId) -> Option<HaveAnswer>;
    /// Uncompressed bytes of chunks `chunks` of `manifest`, if it is known.
    fn batch_bytes(&self, manifest: &ManifestId, chunks: &[u32]) -> Option<u64>;
    /// Compressed frames of chunks `chunks` of `manifest` (blocking).
    fn chunks(&self, manifest: &ManifestId, chunks: &[u32]) -> PeerFrames;
    /// The signed document at origin path `path` (blocking).
    fn metadata(&self, path: &str) -> Option<Vec<u8>>;
}

impl Shelf for Share {
    fn have(&self, manifest: &ManifestId) -> Option<HaveAnswer> {
        Share::have(self, manifest)
    }

    fn batch_bytes(&self, manifest: &ManifestId, chunks: &[u32]) -> Option<u64> {
        Share::batch_bytes(self, manifest, chunks)
    }

    fn chunks(&self, manifest: &ManifestId, chunks: &[u32]) -> PeerFrames {
        Share::chunks(self, manifest, chunks)
    }

    fn metadata(&self, path: &str) -> Option<Vec<u8>> {
        Share::metadata(self, path)
    }
}

/// What a node has served.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NodeStats {
    /// Compressed chunk bytes sent to peers.
    pub bytes_uploaded: u64,
    /// Chunks sent to peers.
    pub chunks_uploaded: u64,
    /// GETs answered `Busy`.
    pub busy_answers: u64,
    /// META requests answered with no document because the node was at its META limit.
    pub meta_busy_answers: u64,
    /// Peers banned for sending bad bytes.
    pub peers_banned: u64,
}

/// [`NodeStats`] as they grow, shared by the swarm task, the answers in flight and the handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    bytes_uploaded: AtomicU64,
    chunks_uploaded: AtomicU64,
    busy_answers: AtomicU64,
    meta_busy_answers: AtomicU64,
    peers_banned: AtomicU64,
}

impl Counters {
    /// The counts now.
    pub(crate) fn stats(&self) -> NodeStats {
        NodeStats {
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            chunks_uploaded: self.chunks_uploaded.load(Ordering::Relaxed),
            busy_answers: self.busy_answers.load(Ordering::Relaxed),
            meta_busy_answers: self.meta_busy_answers.load(Ordering::Relaxed),
            peers_banned: self.peers_banned.load(Ordering::Relaxed),
        }
    }

    /// Counts one more banned peer.
    pub(crate) fn banned(&self) {
        self.peers_banned.fetch_add(1, Ordering::Relaxed);
    }
}

/// An answer to send: at once, or once a blocking read is done.
pub(crate) enum Serving<R> {
    /// Send this now.
    Now(R),
    /// Send what this yields; `None` (the read failed): send nothing, and the asker's request
    /// fails.
    Later(BoxFuture<'static, Option<R>>),
}

/// Answers inbound requests from a [`Shelf`] within [`Limits`]. `Id` tells requests apart
/// (libp2p's inbound request id; plain numbers in tests).
pub(crate) struct Server<Id = InboundRequestId> {
    shelf: Arc<dyn Shelf>,
    limits: Limits,
    /// GETs being served.
    get_slots: Slots<Id>,
    /// META answers being served.
    meta_slots: Slots<Id>,
    /// When the upload cap next has room (a leaky bucket).
    upload: Arc<Mutex<Instant>>,
    counters: Arc<Counters>,
}

impl<Id: Copy + Eq + Hash> Server<Id> {
    /// A server of `shelf` within `limits`, counting into `counters`.
    pub(crate) fn new(shelf: Arc<dyn Shelf>, limits: Limits, counters: Arc<Counters>) -> Self {
        Self {
            shelf,
            limits,
            get_slots: Slots::default(),
            meta_slots: Slots::default(),
            upload: Arc::new(Mutex::new(Instant::now())),
            counters,
        }
    }

    /// The answer to HAVE: the shelf's bits for the manifest, or `Unknown`.
    pub(crate) fn have(&self, request: &HaveRequest) -> HaveResponse {
        match self.shelf.have(&ManifestId(request.manifest)) {
            Some(answer) => HaveResponse::Have {
                chunks: answer.have.len(),
                bits: answer.have.as_bytes().to_vec(),
                fetching: answer.fetching.as_bytes().to_vec(),
                wanting: answer.wanting,
            },
            None => HaveResponse::Unknown,
        }
    }

    /// The answer to META request `id` of `peer`: read from a blocking task within the META
    /// slots; past them, no document now. The slot is held until [`Self::meta_done`].
    pub(crate) fn meta(
        &mut self,
        peer: PeerId,
        id: Id,
        request: MetaRequest,
    ) -> Serving<MetaResponse> {
        let limits = &self.limits;
        if !self
            .meta_slots
            .take(peer, id, limits.serve_meta, limits.serve_meta_per_peer)
        {
            self.counters
                .meta_busy_answers
                .fetch_add(1, Ordering::Relaxed);
            return Serving::Now(MetaResponse { document: None });
        }
        let shelf = self.shelf.clone();
        Serving::Later(Box::pin(async move {
            let document = tokio::task::spawn_blocking(move || shelf.metadata(&request.path));
            document
                .await
                .ok()
                .map(|document| MetaResponse { document })
        }))
    }

    /// The answer to GET request `id` of `peer`: `Refused` if it asks too much, `Busy` past
    /// the GET slots or the upload cap, else the frames, read from a blocking task. The slot
    /// is held until [`Self::get_done`].
    pub(crate) fn get(
        &mut self,
        peer: PeerId,
        id: Id,
        request: GetRequest,
    ) -> Serving<GetResponse> {
        let manifest = ManifestId(request.manifest);
        if let Some(why) = self.too_much(&manifest, &request.chunks) {
            return Serving::Now(GetResponse::Refused(why));
        }
        let limits = &self.limits;
        if !self
            .get_slots
            .take(peer, id, limits.serve_requests, limits.serve_per_peer)
        {
            self.counters.busy_answers.fetch_add(1, Ordering::Relaxed);
            return Serving::Now(GetResponse::Busy);
        }
        let shelf = self.shelf.clone();
        let (upload, rate, counters) = (
            self.upload.clone(),
            self.limits.upload_bytes_per_sec,
            self.counters.clone(),
        );
        Serving::Later(Box::pin(async move {
            let frames =
                tokio::task::spawn_blocking(move || shelf.chunks(&manifest, &request.chunks))
                    .await
                    .unwrap_or_default();
            let bytes: u64 = frames.iter().flatten().map(|f| f.len() as u64).sum();
            let response = match rate.map(|rate| reserve(&upload, bytes, rate)) {
                Some(None) => {
                    counters.busy_answers.fetch_add(1, Ordering::Relaxed);
                    GetResponse::Busy
                }
                Some(Some(at)) => {
                    tokio::time::sleep_until(at).await;
                    GetResponse::Frames(frames)
                }
                None => GetResponse::Frames(frames),
            };
            if let GetResponse::Frames(frames) = &response {
                counters.bytes_uploaded.fetch_add(bytes, Ordering::Relaxed);
                counters
                    .chunks_uploaded
                    .fetch_add(frames.iter().flatten().count() as u64, Ordering::Relaxed);
            }
            Some(response)
        }))
    }

    /// Why a GET of `chunks` of `manifest` is refused, if it is: over the batch limits.
    fn too_much(&self, manifest: &ManifestId, chunks: &[u32]) -> Option<String> {
        if chunks.len() > MAX_BATCH_CHUNKS {
            return Some(format!("over {MAX_BATCH_CHUNKS} chunks asked"));
        }
        match self.shelf.batch_bytes(manifest, chunks) {
            Some(bytes) if bytes > MAX_BATCH_BYTES => Some(format!(
                "{bytes} bytes asked, over the {MAX_BATCH_BYTES}-byte batch limit"
            )),
            _ => None,
        }
    }

    /// The answer to GET `id` was sent, or can no longer be: frees its slot.
    pub(crate) fn get_done(&mut self, id: Id) {
        self.get_slots.release(id);
    }

    /// The answer to META `id` was sent, or can no longer be: frees its slot.
    pub(crate) fn meta_done(&mut self, id: Id) {
        self.meta_slots.release(id);
    }
}

/// Inbound requests being served, in total and per peer, each from its arrival until its
/// answer is sent (or fails).
struct Slots<Id> {
    /// Requests being served to each peer (peers with none are absent).
    per_peer: HashMap<PeerId, usize>,
    total: usize,
    /// The requests being served, and their peer.
    held: HashMap<Id, PeerId>,
}

impl<Id> Default for Slots<Id> {
    fn default() -> Self {
        Self {
            per_peer: HashMap::new(),
            total: 0,
            held: HashMap::new(),
        }
    }
}

impl<Id: Eq + Hash> Slots<Id> {
    /// Takes a slot for request `id` of `peer`, unless that would pass `max_total` or
    /// `max_per_peer`.
    fn take(&mut self, peer: PeerId, id: Id, max_total: usize, max_per_peer: usize) -> bool {
        let mine = self.per_peer.get(&peer).copied().unwrap_or(0);
        if mine >= max_per_peer || self.total >= max_total {
            return false;
        }
        *self.per_peer.entry(peer).or_default() += 1;
        self.total += 1;
        self.held.insert(id, peer);
        true
    }

    /// Frees the slot of request `id`, if it held one: its answer was sent or failed.
    fn release(&mut self, id: Id) {
        let Some(peer) = self.held.remove(&id) else {
            return;
        };
        if let Some(count) = self.per_peer.get_mut(&peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_peer.remove(&peer);
            }
        }
        self.total = self.total.saturating_sub(1);
    }
}

/// Books `bytes` of upload at `rate`: when they may be sent, or `None` if that is over 2 s
/// away (the caller answers `Busy`).
fn reserve(next_free: &Mutex<Instant>, bytes: u64, rate: u64) -> Option<Instant> {
    let mut next = next_free.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    let start = (*next).max(now);
    if start.duration_since(now) > Duration::from_secs(2) {
        return None;
    }
    *next = start + Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
    Some(start)
}

#[cfg(test)]
mod tests {
    use relsync_engine::ChunkBits;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// Holds manifest `[1; 32]`, a table of 8 chunks of 1 MiB each, the even ones held as
    /// 100-byte frames (the odd ones on their way), and the document `channels/stable`.
    struct Fixed;

    const KNOWN: [u8; 32] = [1; 32];

    impl Shelf for Fixed {
        fn have(&self, manifest: &ManifestId) -> Option<HaveAnswer> {
            (manifest.0 == KNOWN).then(|| {
                let (mut have, mut fetching) = (ChunkBits::empty(8), ChunkBits::empty(8));
                for i in 0..8u32 {
                    if i.is_multiple_of(2) {
                        have.set(i)
                    } else {
                        fetching.set(i)
                    }
                }
                HaveAnswer {
                    have,
                    fetching,
                    wanting: true,
                }
            })
        }

        fn batch_bytes(&self, manifest: &ManifestId, chunks: &[u32]) -> Option<u64> {
            (manifest.0 == KNOWN).then_some(chunks.len() as u64 * MIB)
        }

        fn chunks(&self, manifest: &ManifestId, chunks: &[u32]) -> PeerFrames {
            let held = |i: u32| manifest.0 == KNOWN && i < 8 && i.is_multiple_of(2);
            chunks
                .iter()
                .map(|&i| held(i).then(|| vec![i as u8; 100]))
                .collect()
        }

        fn metadata(&self, path: &str) -> Option<Vec<u8>> {
            (path == "channels/stable").then(|| b"signed".to_vec())
        }
    }

    fn server(limits: Limits) -> Server<u64> {
        Server::new(Arc::new(Fixed), limits, Arc::new(Counters::default()))
    }

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn get(chunks: impl IntoIterator<Item = u32>) -> GetRequest {
        GetRequest {
            manifest: KNOWN,
            chunks: chunks.into_iter().collect(),
        }
    }

    fn meta(path: &str) -> MetaRequest {
        MetaRequest {
            path: path.into(),
            limit: None,
        }
    }

    /// What `serving` sends, waiting for it if it is read later.
    async fn sent<R>(serving: Serving<R>) -> Option<R> {
        match serving {
            Serving::Now(response) => Some(response),
            Serving::Later(answer) => answer.await,
        }
    }

    fn is_later<R>(serving: &Serving<R>) -> bool {
        matches!(serving, Serving::Later(_))
    }

    #[test]
    fn have_answers_the_bits_or_unknown() {
        let server = server(Limits::default());
        match server.have(&HaveRequest { manifest: KNOWN }) {
            HaveResponse::Have {
                chunks,
                bits,
                fetching,
                wanting,
            } => {
                assert_eq!(chunks, 8);
                assert_eq!(bits, [0b0101_0101]);
                assert_eq!(fetching, [0b1010_1010]);
                assert!(wanting);
            }
            other => panic!("{other:?}"),
        }
        let unknown = server.have(&HaveRequest { manifest: [2; 32] });
        assert!(matches!(unknown, HaveResponse::Unknown), "{unknown:?}");
    }

    #[test]
    fn gets_over_the_batch_limits_are_refused_without_a_slot() {
        let mut server = server(Limits {
            serve_requests: 1,
            ..Limits::default()
        });
        let a = peer();
        let refused = |serving: Serving<GetResponse>| match serving {
            Serving::Now(GetResponse::Refused(why)) => why,
            Serving::Now(other) => panic!("not refused: {other:?}"),
            Serving::Later(_) => panic!("not refused: served"),
        };
        let why = refused(server.get(a, 1, get(0..MAX_BATCH_CHUNKS as u32 + 1)));
        assert_eq!(why, "over 4096 chunks asked");
        // 5 chunks of 1 MiB: over the 4 MiB batch.
        let why = refused(server.get(a, 2, get(0..5)));
        assert_eq!(
            why,
            "5242880 bytes asked, over the 4194304-byte batch limit"
        );
        // Exactly at both limits is served: 4 MiB, and 4096 chunks of a manifest it does not
        // know (so of no known size).
        assert!(is_later(&server.get(a, 3, get(0..4))));
        server.get_done(3);
        let unknown = GetRequest {
            manifest: [2; 32],
            chunks: (0..MAX_BATCH_CHUNKS as u32).collect(),
        };
        assert!(is_later(&server.get(a, 4, unknown)));
        // Refusals took no slot and count as no `Busy`.
        assert_eq!(server.counters.stats().busy_answers, 0);
    }

    #[tokio::test]
    async fn gets_are_answered_with_frames_and_counted() {
        let mut server = server(Limits::default());
        let answer = sent(server.get(peer(), 1, get([0, 1, 2, 9]))).await;
        match answer {
            Some(GetResponse::Frames(frames)) => assert_eq!(
                frames,
                vec![Some(vec![0; 100]), None, Some(vec![2; 100]), None]
            ),
            other => panic!("{other:?}"),
        }
        let stats = server.counters.stats();
        assert_eq!((stats.bytes_uploaded, stats.chunks_uploaded), (200, 2));

        // A manifest it does not know: no frame at all, and nothing counted.
        let unknown = GetRequest {
            manifest: [2; 32],
            chunks: vec![0, 2],
        };
        match sent(server.get(peer(), 2, unknown)).await {
            Some(GetResponse::Frames(frames)) => assert_eq!(frames, vec![None, None]),
            other => panic!("{other:?}"),
        }
        assert_eq!(server.counters.stats().chunks_uploaded, 2);
    }

    #[test]
    fn gets_past_the_slots_are_busy_until_answers_are_done() {
        let mut server = server(Limits {
            serve_requests: 3,
            serve_per_peer: 2,
            ..Limits::default()
        });
        let (a, b, c) = (peer(), peer(), peer());
        assert!(is_later(&server.get(a, 1, get([0]))));
        assert!(is_later(&server.get(a, 2, get([0]))));
        // Two per peer...
        let busy = server.get(a, 3, get([0]));
        assert!(matches!(busy, Serving::Now(GetResponse::Busy)));
        assert!(is_later(&server.get(b, 4, get([0]))));
        // ...and three in all.
        let busy = server.get(c, 5, get([0]));
        assert!(matches!(busy, Serving::Now(GetResponse::Busy)));
        assert_eq!(server.counters.stats().busy_answers, 2);

        server.get_done(1);
        assert!(is_later(&server.get(c, 6, get([0]))));
        // Done twice, or for a request that held no slot: nothing more is freed.
        server.get_done(1);
        server.get_done(3);
        let busy = server.get(c, 7, get([0]));
        assert!(matches!(busy, Serving::Now(GetResponse::Busy)));
        // META has slots of its own.
        assert!(is_later(&server.meta(c, 8, meta("channels/stable"))));
    }

    #[tokio::test]
    async fn gets_that_would_wait_over_two_seconds_for_the_upload_cap_are_busy() {
        // 100 bytes go at once, then 300 after 1 s, which books the upload for 4 s.
        let mut server = server(Limits {
            upload_bytes_per_sec: Some(100),
            ..Limits::default()
        });
        let first = sent(server.get(peer(), 1, get([0]))).await;
        assert!(matches!(first, Some(GetResponse::Frames(_))), "{first:?}");
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            sent(server.get(peer(), 2, get([0, 2, 4]))),
        )
        .await
        .expect("the second GET waits about 1 s");
        assert!(matches!(second, Some(GetResponse::Frames(_))), "{second:?}");
        // The third would wait about 3 s.
        let third = sent(server.get(peer(), 3, get([0]))).await;
        assert!(matches!(third, Some(GetResponse::Busy)), "{third:?}");
        let stats = server.counters.stats();
        assert_eq!(stats.busy_answers, 1);
        assert_eq!((stats.bytes_uploaded, stats.chunks_uploaded), (400, 4));
    }

    #[test]
    fn the_upload_cap_books_bytes_back_to_back() {
        let bucket = Mutex::new(Instant::now());
        let start = Instant::now();
        let at = |instant: Instant| instant.duration_since(start).as_secs_f64();
        let first = reserve(&bucket, 1000, 1000).unwrap();
        assert!(at(first) < 0.5, "{}", at(first));
        let second = reserve(&bucket, 1000, 1000).unwrap();
        assert!((at(second) - 1.0).abs() < 0.1, "{}", at(second));
        let third = reserve(&bucket, 500, 1000).unwrap();
        assert!((at(third) - 2.0).abs() < 0.1, "{}", at(third));
        // Past 2 s of wait: refused, and nothing booked.
        assert_eq!(reserve(&bucket, 1, 1000), None);
        // A zero rate counts as one byte a second.
        let stalled = Mutex::new(Instant::now());
        reserve(&stalled, 3, 0).unwrap();
        assert_eq!(reserve(&stalled, 1, 0), None);
    }

    #[tokio::test]
    async fn meta_past_the_slots_has_no_document() {
        let mut server = server(Limits {
            serve_meta: 3,
            serve_meta_per_peer: 2,
            ..Limits::default()
        });
        let (a, b) = (peer(), peer());
        let first = server.meta(a, 1, meta("channels/stable"));
        assert!(is_later(&server.meta(a, 2, meta("channels/beta"))));
        let busy = server.meta(a, 3, meta("channels/stable"));
        assert!(matches!(
            busy,
            Serving::Now(MetaResponse { document: None })
        ));
        assert!(is_later(&server.meta(b, 4, meta("channels/stable"))));
        let busy = server.meta(b, 5, meta("channels/stable"));
        assert!(matches!(
            busy,
            Serving::Now(MetaResponse { document: None })
        ));
        assert_eq!(server.counters.stats().meta_busy_answers, 2);
        assert_eq!(server.counters.stats().busy_answers, 0);

        let document = sent(first).await.unwrap().document;
        assert_eq!(document.as_deref(), Some(&b"signed"[..]));
        server.meta_done(1);
        let unknown = sent(server.meta(a, 6, meta("channels/other"))).await;
        assert_eq!(unknown.unwrap().document, None);
    }
}
