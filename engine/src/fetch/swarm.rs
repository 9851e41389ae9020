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
//! An owner that gains no chunk for `peer_stall` stops being a candidate, so its frames move
//! to the next owner, and in the end to this node and the origin. A peer that withholds what it
//! claims is not asked again for those chunks; one that fails twice is not asked at all; one
//! whose bytes fail verification is banned.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

use super::{FrameJob, Shared, VerifiedChunk, fetch_range};
use crate::peers::{ChunkBits, Holding, PeerError, PeerFrames, Peers, rendezvous_owner};
use crate::plan::{FrameRef, adjacent_ranges};
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
    /// Last time it came to hold more chunks (or was first seen).
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
    me: String,
    jobs: Vec<Arc<FrameJob>>,
    status: Vec<Status>,
    /// Requests to peers in flight for each frame.
    requests: Vec<u32>,
    /// Chunks of the target stored so far, by index.
    local: Vec<bool>,
    views: HashMap<String, PeerView>,
    banned: HashSet<String>,
    stored: Vec<(u32, PathBuf)>,
    origin_in_flight: usize,
    peer_in_flight: usize,
    started: Instant,
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
    let mut swarm = Swarm {
        shared,
        me: peers.local_id(),
        peers,
        config,
        status: vec![Status::Waiting; jobs.len()],
        requests: vec![0; jobs.len()],
        local: vec![false; target.chunks.len()],
        jobs,
        views: HashMap::new(),
        banned: HashSet::new(),
        stored: Vec::new(),
        origin_in_flight: 0,
        peer_in_flight: 0,
        started: Instant::now(),
    };
    let first = swarm
        .peers
        .have(target.id(), target.chunks.len() as u32)
        .await;
    swarm.merge(first);
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
                        self.merge(views);
                    }
                    Outcome::Origin(frames, result) => {
                        self.origin_in_flight -= 1;
                        self.announce(&frames, false);
                        for (index, path) in result? {
                            self.local[index as usize] = true;
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

    /// Updates the views from a HAVE round.
    fn merge(&mut self, holdings: Vec<Holding>) {
        let now = Instant::now();
        let answered: HashSet<&str> = holdings.iter().map(|h| h.peer.as_str()).collect();
        for (peer, view) in &mut self.views {
            view.present = answered.contains(peer.as_str());
        }
        for holding in holdings {
            if self.banned.contains(&holding.peer) || holding.peer == self.me {
                continue;
            }
            let view = self.views.entry(holding.peer).or_insert_with(|| PeerView {
                have: ChunkBits::empty(holding.have.len()),
                fetching: ChunkBits::empty(holding.have.len()),
                wanting: holding.wanting,
                progress_at: now,
                present: true,
                in_flight: 0,
                busy_until: None,
                busy_answers: 0,
                failures: 0,
                refused: HashSet::new(),
            });
            let mut have = holding.have;
            if have.len() != view.have.len() || holding.fetching.len() != have.len() {
                continue;
            }
            for &i in &view.refused {
                have.clear(i);
            }
            if have.count() > view.have.count() {
                view.progress_at = now;
            }
            view.have = have;
            view.fetching = holding.fetching;
            view.wanting = holding.wanting;
            view.present = true;
        }
    }

    /// Where frame `i` should come from now.
    fn decide(&self, i: usize, now: Instant) -> Source {
        let job = &self.jobs[i];
        let first = (job.frame.chunk, job.chunks.len() as u32);
        let key = owner_key(job.frame.chunk);
        let missing = (first.0..first.0 + first.1).filter(|&c| !self.local[c as usize]);
        let missing: Vec<u32> = missing.collect();
        let holds = |v: &PeerView| missing.iter().all(|&c| v.have.get(c));
        let holders = self
            .views
            .iter()
            .filter(|(_, v)| v.usable() && holds(v))
            .map(|(p, _)| p.as_str());
        if let Some(peer) = rendezvous_owner(&key, holders) {
            return Source::Peer(peer.to_owned());
        }
        let stall = self.config.peer_stall;
        let joining = now.duration_since(self.started) < self.config.peer_join;
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
        if wanting
            .iter()
            .any(|(_, v)| missing.iter().all(|&c| v.fetching.get(c)))
        {
            return Source::Wait;
        }
        let wanting = wanting.into_iter();
        let candidates = wanting.map(|(p, _)| p.as_str()).chain([self.me.as_str()]);
        match rendezvous_owner(&key, candidates) {
            Some(owner) if owner != self.me => Source::Wait,
            _ => Source::Origin,
        }
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
            match self.decide(i, now) {
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
                if self.local[index as usize] {
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
                .views
                .get(peer)
                .is_some_and(|v| v.ready(Instant::now()))
    }

    fn get(&mut self, peer: &str, batch: Batch) -> BoxFuture<'static, Outcome> {
        for &i in &batch.frames {
            self.status[i] = Status::Fetching;
            self.requests[i] += 1;
        }
        if let Some(view) = self.views.get_mut(peer) {
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
        if let Some(view) = self.views.get_mut(peer) {
            view.in_flight -= 1;
        }
        let outcome = self.store_sent(peer, &batch, result).await;
        for &i in &batch.frames {
            self.requests[i] -= 1;
            let job = &self.jobs[i];
            let complete = (job.frame.chunk..job.frame.chunk + job.chunks.len() as u32)
                .all(|c| self.local[c as usize]);
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
                if let Some(view) = self.views.get_mut(peer) {
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
        let (stored, withheld, bad) = crate::origin::blocking(move || {
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
            self.local[index as usize] = true;
            self.stored.push((index, path));
        }
        let (store, manifest) = (self.shared.store.clone(), self.shared.target.id());
        crate::origin::blocking(move || store.journal_add(&ids, &manifest)).await?;
        if let Some(bad) = bad {
            warn!(peer, error = %bad, "peer sent a corrupt chunk; banning it");
            self.peers.ban(peer, &bad.to_string());
            self.banned.insert(peer.to_owned());
            self.views.remove(peer);
        } else if !withheld.is_empty()
            && let Some(view) = self.views.get_mut(peer)
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
        if let Some(view) = self.views.get_mut(peer) {
            view.failures = PEER_FAILURES;
        }
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
