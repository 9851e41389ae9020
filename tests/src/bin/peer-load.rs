//! peer-load: many LAN peers asking one node for chunks at once, for the load test
//! (`tests/e2e/load.rs`).
//!
//! `peer-load --server MULTIADDR --manifest ID --swarm-key FILE [--peers 50] [--seconds 60]
//! [--inflight 2] [--batch-bytes 1048576] [--busy-backoff-ms 100]` starts `--peers` libp2p
//! nodes of the fleet (holding its swarm key) in this
//! process, each with its own identity and swarm, dialing only the server. It reads the
//! manifest's chunk table from the server (META `manifests/<id>`, checked against the id) once
//! every node is connected (30 s at most), then each node keeps `--inflight` GETs going
//! for `--seconds`: batches of up to `--batch-bytes` of chunks, walking the chunk table from its
//! own offset. After a `Busy` answer a worker waits `--busy-backoff-ms` (±50 %); after a failure,
//! 100 ms. Every chunk received is decompressed and hashed against the chunk table: a wrong or
//! missing one counts as a bad chunk.
//!
//! It prints one JSON object: totals, and per requester the GETs sent, served, answered
//! `Busy`, failed, chunks and bytes (compressed, as sent) received, and bad chunks. The whole
//! run is bounded: it gives up after `--seconds` plus 60 s.

use std::sync::Arc;
use std::time::Duration;

use relsync_chunker::frame;
use relsync_engine::manifest::{ChunkEntry, TrustedManifest, decompress_envelope};
use relsync_engine::{HaveAnswer, ManifestId, PeerError, PeerFrames, Peers};
use relsync_peer::wire::MAX_BATCH_CHUNKS;
use relsync_peer::{Multiaddr, Node, NodeConfig, PeerId, Shelf, SwarmKey};
use serde_json::{Value, json};
use tokio::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A requester holds nothing: it only asks.
struct Nothing;

impl Shelf for Nothing {
    fn have(&self, _: &ManifestId) -> Option<HaveAnswer> {
        None
    }

    fn batch_bytes(&self, _: &ManifestId, _: &[u32]) -> Option<u64> {
        None
    }

    fn chunks(&self, _: &ManifestId, chunks: &[u32]) -> PeerFrames {
        vec![None; chunks.len()]
    }

    fn metadata(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
}

#[derive(Debug, Clone)]
struct Options {
    server: Multiaddr,
    manifest: ManifestId,
    swarm_key: SwarmKey,
    peers: usize,
    seconds: u64,
    inflight: usize,
    batch_bytes: u64,
    busy_backoff: Duration,
}

fn options() -> Result<Options, Error> {
    let mut args = std::env::args().skip(1);
    let (mut server, mut manifest, mut swarm_key) = (None, None, None);
    let mut o = (50usize, 60u64, 2usize, 1024 * 1024u64, 100u64);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--server" => server = Some(value.parse::<Multiaddr>()?),
            "--manifest" => manifest = Some(value.parse::<ManifestId>()?),
            "--swarm-key" => swarm_key = Some(SwarmKey::read(std::path::Path::new(&value))?),
            "--peers" => o.0 = value.parse()?,
            "--seconds" => o.1 = value.parse()?,
            "--inflight" => o.2 = value.parse()?,
            "--batch-bytes" => o.3 = value.parse()?,
            "--busy-backoff-ms" => o.4 = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(Options {
        server: server.ok_or("--server is required")?,
        manifest: manifest.ok_or("--manifest is required")?,
        swarm_key: swarm_key.ok_or("--swarm-key is required")?,
        peers: o.0.max(1),
        seconds: o.1,
        inflight: o.2.max(1),
        batch_bytes: o.3.max(1),
        busy_backoff: Duration::from_millis(o.4),
    })
}

/// The peer id at the end of `addr`.
fn peer_of(addr: &Multiaddr) -> Result<String, Error> {
    let text = addr.to_string();
    text.rsplit_once("/p2p/")
        .and_then(|(_, id)| id.parse::<PeerId>().ok())
        .map(|id| id.to_string())
        .ok_or_else(|| format!("{addr} does not end in /p2p/<peer id>").into())
}

/// What one worker (or, summed, one requester) saw.
#[derive(Debug, Default, Clone)]
struct Tally {
    gets: u64,
    served: u64,
    busy: u64,
    errors: u64,
    chunks: u64,
    bytes: u64,
    bad_chunks: u64,
    /// Milliseconds from asking to a served answer, one per served GET.
    served_ms: Vec<f64>,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.gets += other.gets;
        self.served += other.served;
        self.busy += other.busy;
        self.errors += other.errors;
        self.chunks += other.chunks;
        self.bytes += other.bytes;
        self.bad_chunks += other.bad_chunks;
        self.served_ms.extend(other.served_ms);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }

    fn json(&self) -> Value {
        json!({
            "gets": self.gets,
            "served": self.served,
            "busy": self.busy,
            "errors": self.errors,
            "chunks": self.chunks,
            "bytes": self.bytes,
            "bad_chunks": self.bad_chunks,
            "first_error": self.first_error,
        })
    }
}

/// The `q` quantile of `sorted`, 0 if it is empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Chunks `[start..]` of `table` (wrapping) up to `max_bytes` (at least one): their indexes,
/// uncompressed bytes and the index after them.
fn batch(table: &[ChunkEntry], start: usize, max_bytes: u64) -> (Vec<u32>, u64, usize) {
    let (mut chunks, mut bytes, mut i) = (Vec::new(), 0u64, start % table.len());
    while chunks.len() < MAX_BATCH_CHUNKS.min(table.len()) {
        let len = u64::from(table[i].len);
        if !chunks.is_empty() && bytes + len > max_bytes {
            break;
        }
        chunks.push(i as u32);
        bytes += len;
        i = (i + 1) % table.len();
    }
    (chunks, bytes, i)
}

/// How many of `frames` (answering `chunks`) are missing or do not hash to their id. Blocking.
fn bad_chunks(table: &[ChunkEntry], chunks: &[u32], frames: &PeerFrames) -> u64 {
    chunks
        .iter()
        .zip(frames)
        .filter(|(i, frame)| {
            let entry = &table[**i as usize];
            let good = frame.as_ref().and_then(|f| {
                frame::decompress_declared(f, entry.len as usize)
                    .ok()
                    .filter(|data| data.len() == entry.len as usize)
                    .map(|data| relsync_chunker::ChunkId::of(&data) == entry.id)
            });
            good != Some(true)
        })
        .count() as u64
}

/// One worker: GETs one after the other until `deadline`.
async fn worker(
    node: Arc<Node>,
    server: String,
    manifest: Arc<TrustedManifest>,
    mut next: usize,
    mut seed: u64,
    deadline: Instant,
    o: Options,
) -> Tally {
    let mut t = Tally::default();
    while Instant::now() < deadline {
        let (chunks, bytes, after) = batch(&manifest.chunks, next, o.batch_bytes);
        next = after;
        t.gets += 1;
        let asked = Instant::now();
        let answer = node
            .get(server.clone(), manifest.id(), chunks.clone(), bytes)
            .await;
        match answer {
            Ok(frames) if frames.len() != chunks.len() => t.fail(format!(
                "{} frames for {} chunks asked",
                frames.len(),
                chunks.len()
            )),
            Ok(frames) => {
                let ms = asked.elapsed().as_secs_f64() * 1000.0;
                let received: u64 = frames.iter().flatten().map(|f| f.len() as u64).sum();
                let table = manifest.clone();
                let count = chunks.len() as u64;
                let bad = tokio::task::spawn_blocking(move || {
                    bad_chunks(&table.chunks, &chunks, &frames)
                })
                .await
                .unwrap_or(count);
                t.served += 1;
                t.served_ms.push(ms);
                t.chunks += count - bad;
                t.bytes += received;
                t.bad_chunks += bad;
            }
            Err(PeerError::Busy) => {
                t.busy += 1;
                // xorshift: a jitter in [0.5, 1.5) of the backoff, so workers do not march in step.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let factor = 0.5 + (seed % 1000) as f64 / 1000.0;
                tokio::time::sleep(o.busy_backoff.mul_f64(factor)).await;
            }
            Err(PeerError::Failed(why)) => {
                t.fail(why);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    t
}

/// Starts `count` requester nodes dialing `server`, 16 at once (a node limits the connections
/// it has yet to accept), each group connected before the next starts.
async fn start_nodes(
    server: &Multiaddr,
    swarm_key: SwarmKey,
    count: usize,
    limit: Duration,
) -> Result<Vec<Arc<Node>>, Error> {
    let until = Instant::now() + limit;
    let mut nodes = Vec::with_capacity(count);
    while nodes.len() < count {
        let group = (count - nodes.len()).min(16);
        let mut starting = Vec::with_capacity(group);
        for _ in 0..group {
            let mut config = NodeConfig::new(swarm_key);
            config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
            config.peers = vec![server.clone()];
            config.mdns = false;
            starting.push(tokio::spawn(Node::start(config, Nothing)));
        }
        for start in starting {
            let node = Arc::new(start.await??);
            let left = until.saturating_duration_since(Instant::now());
            if node.wait_for_peers(1, left).await == 0 {
                return Err(format!(
                    "only {} of {count} requesters connected within {limit:?}",
                    nodes.len()
                )
                .into());
            }
            nodes.push(node);
        }
    }
    Ok(nodes)
}

/// The manifest the server holds as `id`, asked of it by `node`.
async fn manifest(node: &Node, id: ManifestId) -> Result<TrustedManifest, Error> {
    let path = relsync_engine::paths::manifest_path(&id);
    let answers = node.metadata(path.clone(), 64 << 20).await;
    let (_, file) = answers
        .into_iter()
        .next()
        .ok_or(format!("the server did not answer META {path}"))?;
    let envelope = decompress_envelope(&file, None)?;
    if ManifestId::of(&envelope) != id {
        return Err(format!("the server's {path} does not hash to its id").into());
    }
    Ok(relsync_engine::dangerous::trusted_manifest(envelope)?)
}

async fn run(o: Options) -> Result<Value, Error> {
    let server = peer_of(&o.server)?;
    let started = Instant::now();
    let nodes = start_nodes(&o.server, o.swarm_key, o.peers, Duration::from_secs(30)).await?;
    let connect_ms = started.elapsed().as_millis() as u64;
    let manifest = Arc::new(manifest(&nodes[0], o.manifest).await?);
    let table_len = manifest.chunks.len();
    if table_len == 0 {
        return Err("the manifest has no chunks".into());
    }
    let holding = nodes[0].have(o.manifest, table_len as u32).await;
    let held = holding.first().map_or(0, |h| h.have.count());
    if held as usize != table_len {
        return Err(format!("the server holds {held} of {table_len} chunks").into());
    }

    let began = Instant::now();
    let deadline = began + Duration::from_secs(o.seconds);
    let workers = o.peers * o.inflight;
    let mut handles = Vec::with_capacity(nodes.len());
    for (r, node) in nodes.iter().enumerate() {
        let mut mine = Vec::with_capacity(o.inflight);
        for w in 0..o.inflight {
            let k = r * o.inflight + w;
            mine.push(tokio::spawn(worker(
                node.clone(),
                server.clone(),
                manifest.clone(),
                k * table_len / workers,
                0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1),
                deadline,
                o.clone(),
            )));
        }
        handles.push(mine);
    }
    let mut requesters = Vec::with_capacity(nodes.len());
    let mut total = Tally::default();
    for (node, mine) in nodes.iter().zip(handles) {
        let mut t = Tally::default();
        for handle in mine {
            t.add(handle.await?);
        }
        let mut row = t.json();
        row["peer"] = json!(node.peer_id().to_string());
        requesters.push(row);
        total.add(t);
    }
    let seconds = began.elapsed().as_secs_f64();
    let mut ms = std::mem::take(&mut total.served_ms);
    ms.sort_by(f64::total_cmp);
    let mut totals = total.json();
    totals["served_per_sec"] = json!(total.served as f64 / seconds);
    totals["mib_per_sec"] = json!(total.bytes as f64 / seconds / (1024.0 * 1024.0));
    totals["served_ms_p50"] = json!(quantile(&ms, 0.5));
    totals["served_ms_p99"] = json!(quantile(&ms, 0.99));
    totals["served_ms_max"] = json!(ms.last().copied().unwrap_or(0.0));
    Ok(json!({
        "peers": o.peers,
        "inflight": o.inflight,
        "batch_bytes": o.batch_bytes,
        "busy_backoff_ms": o.busy_backoff.as_millis() as u64,
        "table_chunks": table_len,
        "connect_ms": connect_ms,
        "seconds": seconds,
        "totals": totals,
        "requesters": requesters,
    }))
}

fn main() -> Result<(), Error> {
    let o = options()?;
    let limit = Duration::from_secs(o.seconds + 60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(async {
        tokio::time::timeout(limit, run(o))
            .await
            .map_err(|_| format!("peer-load did not finish within {limit:?}"))?
    })?;
    println!("{summary}");
    Ok(())
}
