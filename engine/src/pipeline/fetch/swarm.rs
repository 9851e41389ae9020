//! fetch with peers: each missing frame from a peer that holds it, else from the origin, once
//! per LAN.
//!
//! Every pass decides each frame not in flight:
//! 1. a peer holds all its chunks: GET them from one such peer (picked by rendezvous hashing,
//!    so the load spreads);
//! 2. else its owner, by rendezvous hashing among this node and the peers fetching the same
//!    release, fetches it from the origin. When the owner is another peer, wait for it to hold
//!    the frame, re-asking HAVE every poll.
//!
//! An owner that gains no chunk this node needs for `peer_stall` stops being a candidate, so
//! its frames move to the next owner, and in the end to this node and the origin; only chunks
//! it is seen holding for the first time count, so a bitfield that flips back and forth is no
//! progress. Whatever peers claim, a frame waits at most `peer_wait_max` in all, then comes
//! from the origin. A peer that withholds what it claims is not asked again for those chunks;
//! one that fails twice is not asked at all; one whose bytes fail verification is banned.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

use super::{FrameJob, Shared, VerifiedChunk, fetch_range};
use crate::peers::{ChunkBits, Holding, PeerError, PeerFrames, Peers, rendezvous_owner};
use crate::pipeline::plan::{FrameRef, adjacent_ranges};
use crate::progress::Event;
use crate::{FetchConfig, Result};

/// Requests a node may have in flight to one peer.
const PER_PEER_REQUESTS: usize = 2;
/// Failed requests after which a peer is no longer asked during this fetch.
const PEER_FAILURES: u32 = 2;
/// `Busy` answers that count as one failure (a peer that is always busy is passed over).
const BUSY_ANSWERS: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Fetching,
    Done,
}

/// What this node knows of one peer during the fetch.
struct PeerView {
    have: ChunkBits,
    /// Chunks it is fetching from the origin.
    fetching: ChunkBits,
    wanting: bool,
    /// Every chunk it was ever seen holding.
    seen: ChunkBits,
    /// Last time it came to hold a chunk this node needs that it was not seen holding before
    /// (or was first seen).
    progress_at: Instant,
    /// Still answering HAVE.
    present: bool,
    in_flight: usize,
    busy_until: Option<Instant>,
    busy_answers: u32,
    failures: u32,
    /// Chunks it claimed but did not send.
    refused: HashSet<u32>,
}

impl PeerView {
    fn new(chunks: u32, wanting: bool, now: Instant) -> Self {
        Self {
            have: ChunkBits::empty(chunks),
            fetching: ChunkBits::empty(chunks),
            wanting,
            seen: ChunkBits::empty(chunks),
            progress_at: now,
            present: true,
            in_flight: 0,
            busy_until: None,
            busy_answers: 0,
            failures: 0,
            refused: HashSet::new(),
        }
    }

    /// Worth asking (perhaps once it has room again).
    fn usable(&self) -> bool {
        self.present && self.failures < PEER_FAILURES
    }

    /// Has room for a request now.
    fn ready(&self, now: Instant) -> bool {
        self.in_flight < PER_PEER_REQUESTS && self.busy_until.is_none_or(|t| t <= now)
    }
}

/// Chunks asked of one peer in one request, and the frames they belong to.
#[derive(Default)]
struct Batch {
    chunks: Vec<u32>,
    frames: Vec<usize>,
    bytes: u64,
}

enum Outcome {
    Origin(Vec<usize>, Result<Vec<(u32, PathBuf)>>),
    Peer {
        peer: String,
        batch: Batch,
        result: std::result::Result<PeerFrames, PeerError>,
    },
    Views(Vec<Holding>),
}

struct Swarm<'a> {
    shared: &'a Arc<Shared>,
    peers: Arc<dyn Peers>,
    config: &'a FetchConfig,
    jobs: Vec<Arc<FrameJob>>,
    status: Vec<Status>,
    /// Requests to peers in flight for each frame.
    requests: Vec<u32>,
    ledger: Ledger,
    stored: Vec<(u32, PathBuf)>,
    origin_in_flight: usize,
    peer_in_flight: usize,
}

/// What this node knows of its frames and of the peers, and the rules that pick where each
/// frame comes from. No I/O: the fetch feeds it HAVE answers and stored chunks.
struct Ledger {
    me: String,
    /// Each frame's chunks: the first index in the chunk table, and how many.
    spans: Vec<(u32, u32)>,
    /// Chunks of the frames not stored yet: what this node still needs.
    needed: ChunkBits,
    views: HashMap<String, PeerView>,
    banned: HashSet<String>,
    /// When each frame first waited for a peer.
    waiting_since: Vec<Option<Instant>>,
    /// A frame waited `peer_wait_max` (said once).
    waited_out: bool,
    started: Instant,
    peer_stall: Duration,
    peer_join: Duration,
    peer_wait_max: Duration,
}

/// Fetches `frames`, from peers where they can, from the origin where they cannot. Returns the
/// stored chunks.
pub(super) async fn fetch(
    shared: &Arc<Shared>,
    peers: Arc<dyn Peers>,
    frames: Vec<FrameRef>,
    config: &FetchConfig,
) -> Result<Vec<(u32, PathBuf)>> {
    let target = &shared.target;
    let jobs: Vec<Arc<FrameJob>> = frames
        .into_iter()
        .map(|f| Arc::new(FrameJob::new(target, f)))
        .collect();
    let spans = jobs
        .iter()
        .map(|job| (job.frame.chunk, job.chunks.len() as u32))
        .collect();
    let mut swarm = Swarm {
        shared,
        ledger: Ledger::new(
            peers.local_id(),
            target.chunks.len() as u32,
            spans,
            config,
            Instant::now(),
        ),
        peers,
        config,
        status: vec![Status::Waiting; jobs.len()],
        requests: vec![0; jobs.len()],
        jobs,
        stored: Vec::new(),
        origin_in_flight: 0,
        peer_in_flight: 0,
    };
    let first = swarm
        .peers
        .have(target.id(), target.chunks.len() as u32)
        .await;
    swarm.ledger.merge(first, Instant::now());
    swarm.run().await?;
    Ok(swarm.stored)
}

impl Swarm<'_> {
    async fn run(&mut self) -> Result<()> {
        let mut in_flight: FuturesUnordered<BoxFuture<'static, Outcome>> = FuturesUnordered::new();
        let mut poll = tokio::time::interval(self.config.peer_poll);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        poll.tick().await;
        let mut polling = false;
        while self.status.iter().any(|s| *s != Status::Done) {
            self.launch(&mut in_flight);
            tokio::select! {
                Some(outcome) = in_flight.next() => match outcome {
                    Outcome::Views(views) => {
                        polling = false;
                        self.ledger.merge(views, Instant::now());
                    }
                    Outcome::Origin(frames, result) => {
                        self.origin_in_flight -= 1;
                        self.announce(&frames, false);
                        for (index, path) in result? {
                            self.ledger.needed.clear(index);
                            self.stored.push((index, path));
                        }
                        frames.into_iter().for_each(|i| self.status[i] = Status::Done);
                    }
                    Outcome::Peer { peer, batch, result } => {
                        self.peer_in_flight -= 1;
                        self.received(&peer, batch, result).await?;
                    }
                },
                _ = poll.tick(), if !polling => {
                    polling = true;
                    let (peers, id, n) = (
                        self.peers.clone(),
                        self.shared.target.id(),
                        self.shared.target.chunks.len() as u32,
                    );
                    in_flight.push(Box::pin(async move { Outcome::Views(peers.have(id, n).await) }));
                }
            }
        }
        Ok(())
    }

    /// Starts every request the limits allow.
    fn launch(&mut self, in_flight: &mut FuturesUnordered<BoxFuture<'static, Outcome>>) {
        let now = Instant::now();
        let mut for_origin = Vec::new();
        let mut for_peer: HashMap<String, Vec<usize>> = HashMap::new();
        for i in 0..self.jobs.len() {
            if self.status[i] != Status::Waiting {
                continue;
            }
            match self.ledger.decide(i, now) {
                Source::Peer(peer) => for_peer.entry(peer).or_default().push(i),
                Source::Origin => for_origin.push(i),
                Source::Wait => {}
            }
        }
        for (peer, frames) in for_peer {
            self.launch_gets(&peer, frames, in_flight);
        }
        if for_origin.is_empty() || self.origin_in_flight >= self.config.max_parallel_requests {
            return;
        }
        // Small ranges while peers may still share the work: frames not yet started can
        // still move to an owner that shows up. No gaps bridged: they are others' frames.
        let mut config = self.config.clone();
        config.max_range_bytes = config.max_range_bytes.min(self.config.peer_batch_bytes);
        config.coalesce_gap_bytes = 0;
        let frames: Vec<FrameRef> = for_origin.iter().map(|&i| self.jobs[i].frame).collect();
        let index: HashMap<(u32, u64), usize> = for_origin
            .iter()
            .map(|&i| ((self.jobs[i].frame.pack, self.jobs[i].frame.offset), i))
            .collect();
        for range in adjacent_ranges(frames, &config) {
            if self.origin_in_flight >= self.config.max_parallel_requests {
                break;
            }
            let members: Vec<usize> = range
                .frames
                .iter()
                .map(|f| index[&(f.pack, f.offset)])
                .collect();
            let jobs: Vec<FrameJob> = members.iter().map(|&i| (*self.jobs[i]).clone()).collect();
            members
                .iter()
                .for_each(|&i| self.status[i] = Status::Fetching);
            self.announce(&members, true);
            self.origin_in_flight += 1;
            let shared = self.shared.clone();
            in_flight.push(Box::pin(async move {
                let pack = shared.target.packs[range.pack as usize].id;
                let result = fetch_range(&shared, pack, &range, &jobs).await;
                Outcome::Origin(members, result)
            }));
        }
    }

    /// Tells peers (through HAVE) that `frames` are on their way from the origin, or no
    /// longer.
    fn announce(&self, frames: &[usize], fetching: bool) {
        if let Some(offer) = &self.shared.offer {
            let chunks = frames.iter().flat_map(|&i| {
                let job = &self.jobs[i];
                job.frame.chunk..job.frame.chunk + job.chunks.len() as u32
            });
            offer.fetching(chunks, fetching);
        }
    }

    /// Asks `peer` for the missing chunks of `frames`, in batches of up to `peer_batch_bytes`
    /// (a big solid frame spans several), as far as the in-flight limits allow.
    fn launch_gets(
        &mut self,
        peer: &str,
        frames: Vec<usize>,
        in_flight: &mut FuturesUnordered<BoxFuture<'static, Outcome>>,
    ) {
        let mut batch = Batch::default();
        for i in frames {
            let job = self.jobs[i].clone();
            for (k, entry) in job.chunks.iter().enumerate() {
                let index = job.frame.chunk + k as u32;
                if !self.ledger.needed.get(index) {
                    continue;
                }
                let len = u64::from(entry.len);
                if !batch.chunks.is_empty() && batch.bytes + len > self.config.peer_batch_bytes {
                    if !self.can_ask(peer) {
                        return;
                    }
                    in_flight.push(self.get(peer, std::mem::take(&mut batch)));
                }
                batch.chunks.push(index);
                batch.bytes += len;
                if batch.frames.last() != Some(&i) {
                    batch.frames.push(i);
                }
            }
        }
        if !batch.chunks.is_empty() && self.can_ask(peer) {
            in_flight.push(self.get(peer, batch));
        }
    }

    fn can_ask(&self, peer: &str) -> bool {
        self.peer_in_flight < self.config.peer_requests
            && self
                .ledger
                .views
                .get(peer)
                .is_some_and(|v| v.ready(Instant::now()))
    }

    fn get(&mut self, peer: &str, batch: Batch) -> BoxFuture<'static, Outcome> {
        for &i in &batch.frames {
            self.status[i] = Status::Fetching;
            self.requests[i] += 1;
        }
        if let Some(view) = self.ledger.views.get_mut(peer) {
            view.in_flight += 1;
        }
        self.peer_in_flight += 1;
        let request = self.peers.get(
            peer.to_owned(),
            self.shared.target.id(),
            batch.chunks.clone(),
            batch.bytes,
        );
        let peer = peer.to_owned();
        Box::pin(async move {
            Outcome::Peer {
                peer,
                batch,
                result: request.await,
            }
        })
    }

    /// Verifies and stores what a peer sent for `batch`. A frame is done once all its chunks
    /// are here; one left incomplete with nothing in flight goes back to waiting.
    async fn received(
        &mut self,
        peer: &str,
        batch: Batch,
        result: std::result::Result<PeerFrames, PeerError>,
    ) -> Result<()> {
        if let Some(view) = self.ledger.views.get_mut(peer) {
            view.in_flight -= 1;
        }
        let outcome = self.store_sent(peer, &batch, result).await;
        for &i in &batch.frames {
            self.requests[i] -= 1;
            let job = &self.jobs[i];
            let complete = (job.frame.chunk..job.frame.chunk + job.chunks.len() as u32)
                .all(|c| !self.ledger.needed.get(c));
            if complete {
                self.status[i] = Status::Done;
                let frame_len = u64::from(job.frame.frame_len);
                let received = self.shared.received.fetch_add(frame_len, Ordering::Relaxed);
                self.shared.reporter.report(Event::Fetched {
                    bytes: received + frame_len,
                    total: self.shared.total,
                    from_peers: self.shared.from_peers.load(Ordering::Relaxed),
                });
            } else if self.requests[i] == 0 {
                self.status[i] = Status::Waiting;
            }
        }
        outcome
    }

    /// Stores the chunks of a peer's answer that verify; bans the peer if one does not.
    async fn store_sent(
        &mut self,
        peer: &str,
        batch: &Batch,
        result: std::result::Result<PeerFrames, PeerError>,
    ) -> Result<()> {
        let sent = match result {
            Ok(sent) if sent.len() == batch.chunks.len() => sent,
            Ok(_) => {
                self.refuse(peer, "answered with the wrong number of chunks");
                return Ok(());
            }
            Err(err) => {
                debug!(peer, error = %err, "peer request failed");
                if let Some(view) = self.ledger.views.get_mut(peer) {
                    match err {
                        PeerError::Busy => {
                            view.busy_until =
                                Some(Instant::now() + self.config.peer_poll.saturating_mul(2));
                            view.busy_answers += 1;
                            if view.busy_answers % BUSY_ANSWERS == 0 {
                                view.failures += 1;
                            }
                        }
                        PeerError::Failed(_) => view.failures += 1,
                    }
                }
                return Ok(());
            }
        };
        let shared = self.shared.clone();
        let chunks = batch.chunks.clone();
        let source = format!("peer {peer}");
        let (stored, withheld, bad) = crate::runtime::blocking(move || {
            let (mut stored, mut withheld) = (Vec::new(), Vec::new());
            for (index, frame) in chunks.into_iter().zip(sent) {
                let Some(frame) = frame else {
                    withheld.push(index);
                    continue;
                };
                let entry = &shared.target.chunks[index as usize];
                match VerifiedChunk::verify(entry, &frame, None, &source) {
                    Ok(chunk) => {
                        let (_, path) = chunk.store(&shared.blobs)?;
                        shared
                            .from_peers
                            .fetch_add(frame.len() as u64, Ordering::Relaxed);
                        shared.stored(index);
                        stored.push((index, path));
                    }
                    Err(bad) => return Ok((stored, withheld, Some(bad))),
                }
            }
            Ok((stored, withheld, None))
        })
        .await?;
        let ids: Vec<_> = stored
            .iter()
            .map(|(index, _)| self.shared.target.chunks[*index as usize].id)
            .collect();
        for (index, path) in stored {
            self.ledger.needed.clear(index);
            self.stored.push((index, path));
        }
        let (store, manifest) = (self.shared.store.clone(), self.shared.target.id());
        crate::runtime::blocking(move || store.journal_add(&ids, &manifest)).await?;
        if let Some(bad) = bad {
            warn!(peer, error = %bad, "peer sent a corrupt chunk; banning it");
            self.peers.ban(peer, &bad.to_string());
            self.ledger.banned.insert(peer.to_owned());
            self.ledger.views.remove(peer);
        } else if !withheld.is_empty()
            && let Some(view) = self.ledger.views.get_mut(peer)
        {
            debug!(
                peer,
                chunks = withheld.len(),
                "peer withheld chunks it claimed"
            );
            for index in withheld {
                view.refused.insert(index);
                view.have.clear(index);
            }
        }
        Ok(())
    }

    fn refuse(&mut self, peer: &str, why: &str) {
        warn!(peer, why, "not asking this peer again");
        if let Some(view) = self.ledger.views.get_mut(peer) {
            view.failures = PEER_FAILURES;
        }
    }
}

impl Ledger {
    fn new(
        me: String,
        chunks: u32,
        spans: Vec<(u32, u32)>,
        config: &FetchConfig,
        now: Instant,
    ) -> Self {
        let mut needed = ChunkBits::empty(chunks);
        for &(first, count) in &spans {
            (first..first + count).for_each(|c| needed.set(c));
        }
        Self {
            me,
            waiting_since: vec![None; spans.len()],
            spans,
            needed,
            views: HashMap::new(),
            banned: HashSet::new(),
            waited_out: false,
            started: now,
            peer_stall: config.peer_stall,
            peer_join: config.peer_join,
            peer_wait_max: config.peer_wait_max,
        }
    }

    /// Updates the views from a HAVE round.
    fn merge(&mut self, holdings: Vec<Holding>, now: Instant) {
        let answered: HashSet<&str> = holdings.iter().map(|h| h.peer.as_str()).collect();
        for (peer, view) in &mut self.views {
            view.present = answered.contains(peer.as_str());
        }
        for holding in holdings {
            if self.banned.contains(&holding.peer) || holding.peer == self.me {
                continue;
            }
            let view = self
                .views
                .entry(holding.peer)
                .or_insert_with(|| PeerView::new(holding.have.len(), holding.wanting, now));
            let mut have = holding.have;
            if have.len() != view.have.len() || holding.fetching.len() != have.len() {
                continue;
            }
            for &i in &view.refused {
                have.clear(i);
            }
            // Progress is a chunk this node needs, held for the first time: dropping chunks
            // and showing them again, or gaining chunks no one here needs, is not.
            if have.gains(&view.seen, &self.needed) {
                view.progress_at = now;
            }
            view.seen.add_all(&have);
            view.have = have;
            view.fetching = holding.fetching;
            view.wanting = holding.wanting;
            view.present = true;
        }
    }

    /// Where frame `i` should come from now.
    fn decide(&mut self, i: usize, now: Instant) -> Source {
        let (first, count) = self.spans[i];
        let key = owner_key(first);
        let missing: Vec<u32> = (first..first + count)
            .filter(|&c| self.needed.get(c))
            .collect();
        let holds = |v: &PeerView| missing.iter().all(|&c| v.have.get(c));
        let holders = self
            .views
            .iter()
            .filter(|(_, v)| v.usable() && holds(v))
            .map(|(p, _)| p.as_str());
        if let Some(peer) = rendezvous_owner(&key, holders) {
            return Source::Peer(peer.to_owned());
        }
        let stall = self.peer_stall;
        let joining = now.duration_since(self.started) < self.peer_join;
        let wanting: Vec<(&String, &PeerView)> = self
            .views
            .iter()
            .filter(|(_, v)| {
                let idle = !v.wanting && v.have.count() == 0;
                (v.wanting || (joining && idle))
                    && v.usable()
                    && now.duration_since(v.progress_at) < stall
                    && !missing.iter().any(|c| v.refused.contains(c))
            })
            .collect();
        // Already on its way to a peer (perhaps one that started before it saw us): wait.
        let on_its_way = wanting
            .iter()
            .any(|(_, v)| missing.iter().all(|&c| v.fetching.get(c)));
        let candidates = wanting
            .iter()
            .map(|(p, _)| p.as_str())
            .chain([self.me.as_str()]);
        let owned_elsewhere =
            matches!(rendezvous_owner(&key, candidates), Some(owner) if owner != self.me);
        if !on_its_way && !owned_elsewhere {
            return Source::Origin;
        }
        // However the peers' bitfields move, a frame waits for them only so long.
        let since = *self.waiting_since[i].get_or_insert(now);
        if now.duration_since(since) < self.peer_wait_max {
            return Source::Wait;
        }
        if !self.waited_out {
            self.waited_out = true;
            warn!(
                wait_ms = self.peer_wait_max.as_millis() as u64,
                "peers did not deliver frames they claimed in time; fetching those from the \
                 origin"
            );
        }
        Source::Origin
    }
}

/// Frames are owned in blocks of this many chunks of the chunk table, so that an owner's
/// frames lie together in the packs and its origin ranges carry no one else's bytes.
const OWNER_BLOCK_CHUNKS: u32 = 16;

/// The rendezvous key of the block holding chunk `index`.
fn owner_key(index: u32) -> [u8; 4] {
    (index / OWNER_BLOCK_CHUNKS).to_le_bytes()
}

/// Where a frame comes from.
enum Source {
    Peer(String),
    Origin,
    /// Another peer owns it: wait until it holds it.
    Wait,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::ManifestId;

    /// A peer that claims to be fetching every chunk (so this node waits for it) while what it
    /// holds follows `script(round, chunks)`, one HAVE round after the other.
    struct Scripted {
        round: Mutex<u32>,
        script: fn(u32, u32) -> ChunkBits,
    }

    impl std::fmt::Debug for Scripted {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Scripted")
        }
    }

    impl Peers for Scripted {
        fn local_id(&self) -> String {
            "me".into()
        }

        fn metadata(&self, _: String, _: u64) -> BoxFuture<'static, Vec<(String, Vec<u8>)>> {
            Box::pin(async { Vec::new() })
        }

        fn have(&self, _: ManifestId, chunks: u32) -> BoxFuture<'static, Vec<Holding>> {
            let round = {
                let mut round = self.round.lock().unwrap();
                *round += 1;
                *round
            };
            let holding = Holding {
                peer: "scripted".into(),
                have: (self.script)(round, chunks),
                fetching: ChunkBits::full(chunks),
                wanting: true,
            };
            Box::pin(async move { vec![holding] })
        }

        fn get(
            &self,
            _: String,
            _: ManifestId,
            _: Vec<u32>,
            _: u64,
        ) -> BoxFuture<'static, std::result::Result<PeerFrames, PeerError>> {
            Box::pin(async { Err(PeerError::Failed("not in this test".into())) })
        }

        fn ban(&self, _: &str, _: &str) {}
    }

    fn bits(chunks: u32, held: impl IntoIterator<Item = u32>) -> ChunkBits {
        let mut bits = ChunkBits::empty(chunks);
        held.into_iter().for_each(|c| bits.set(c));
        bits
    }

    /// Polls `peers` every `peer_poll` from `t0` (as the fetch does) for frame 0 of `ledger`,
    /// up to `limit`: when it first goes to the origin or to a peer, and how long after its
    /// last progress the peer was then.
    async fn run(
        ledger: &mut Ledger,
        peers: &Scripted,
        config: &FetchConfig,
        t0: Instant,
        limit: Duration,
    ) -> (Duration, Source, Duration) {
        let chunks = ledger.needed.len();
        let mut now = t0;
        loop {
            ledger.merge(peers.have(ManifestId([0; 32]), chunks).await, now);
            match ledger.decide(0, now) {
                Source::Wait => {}
                source => {
                    let since = now.duration_since(ledger.views["scripted"].progress_at);
                    return (now.duration_since(t0), source, since);
                }
            }
            assert!(
                now.duration_since(t0) < limit,
                "still waiting after {limit:?}"
            );
            now += config.peer_poll;
        }
    }

    #[tokio::test]
    async fn a_frame_waits_for_peers_at_most_peer_wait_max() {
        // One frame of 1000 chunks. The peer gains one new needed chunk every round, so it
        // keeps making progress for 250 s, and never holds the whole frame.
        let config = FetchConfig::default();
        let t0 = Instant::now();
        let mut ledger = Ledger::new("me".into(), 1000, vec![(0, 1000)], &config, t0);
        let peers = Scripted {
            round: Mutex::new(0),
            script: |round, chunks| bits(chunks, 0..round.min(chunks - 1)),
        };
        let (waited, source, since_progress) =
            run(&mut ledger, &peers, &config, t0, Duration::from_secs(60)).await;
        assert!(matches!(source, Source::Origin));
        assert!(
            waited >= config.peer_wait_max && waited <= config.peer_wait_max + config.peer_poll,
            "waited {waited:?}, bound {:?}",
            config.peer_wait_max
        );
        assert!(
            since_progress < config.peer_stall,
            "the peer was still making progress: the bound, not the stall rule, ended the wait"
        );
        // And it stays with the origin (if the origin is busy, the frame is decided again).
        assert!(matches!(
            ledger.decide(0, t0 + config.peer_wait_max * 2),
            Source::Origin
        ));
    }

    #[tokio::test]
    async fn flipping_bits_and_unneeded_chunks_are_no_progress() {
        // Chunks 0..16 form the frame this node needs; 16..64 it holds already. The peer
        // flips between holding nothing and holding chunk 0 and every chunk not needed.
        let config = FetchConfig {
            peer_wait_max: Duration::from_secs(3600),
            ..FetchConfig::default()
        };
        let t0 = Instant::now();
        let mut ledger = Ledger::new("me".into(), 64, vec![(0, 16)], &config, t0);
        let peers = Scripted {
            round: Mutex::new(0),
            script: |round, chunks| match round % 2 {
                1 => bits(chunks, [0].into_iter().chain(16..chunks)),
                _ => ChunkBits::empty(chunks),
            },
        };
        let (waited, source, since_progress) =
            run(&mut ledger, &peers, &config, t0, Duration::from_secs(60)).await;
        assert!(matches!(source, Source::Origin));
        assert!(
            since_progress >= config.peer_stall,
            "the peer stalled ({since_progress:?} without progress)"
        );
        assert!(
            waited <= config.peer_stall + 2 * config.peer_poll,
            "waited {waited:?}: only the first sight of chunk 0 was progress"
        );
    }

    #[tokio::test]
    async fn a_peer_that_delivers_in_time_serves_the_frame() {
        let config = FetchConfig::default();
        let t0 = Instant::now();
        let mut ledger = Ledger::new("me".into(), 32, vec![(0, 16)], &config, t0);
        let peers = Scripted {
            round: Mutex::new(0),
            script: |round, chunks| match round {
                0..8 => bits(chunks, 0..round),
                _ => ChunkBits::full(chunks),
            },
        };
        let (waited, source, _) =
            run(&mut ledger, &peers, &config, t0, Duration::from_secs(60)).await;
        assert!(matches!(source, Source::Peer(ref p) if p == "scripted"));
        assert!(waited < config.peer_wait_max, "{waited:?}");
    }
}
