//! The node: one libp2p swarm that serves this install's [`Share`] and asks peers for theirs.
//!
//! Connections are TCP, then a pnet handshake under the fleet's [`SwarmKey`], then Noise and
//! Yamux: a node without the key fails the handshake before it learns anything.
//!
//! The swarm runs in its own task. [`Node`] talks to it over a channel, and inbound requests
//! that read files are answered from blocking tasks, so the swarm never waits on a disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use libp2p::core::upgrade;
use libp2p::multiaddr::Protocol as AddrPart;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::{
    self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport, connection_limits, identity, mdns, noise, tcp, yamux,
};
use relsync_engine::{
    ChunkBits, HaveAnswer, Holding, ManifestId, PeerError, PeerFrames, Peers, Share,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::wire::{
    Codec, Get, GetRequest, GetResponse, Have, HaveRequest, HaveResponse, MAX_BATCH_BYTES,
    MAX_BATCH_CHUNKS, Meta, MetaRequest, MetaResponse, Protocol,
};
use crate::{Error, SwarmKey};

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

/// Longest a connection may take from TCP connect to a working Yamux session.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits on what a node serves and how long it waits.
///
/// # Defaults
/// - `serve_requests`: 8 GETs served at once, `serve_per_peer`: 2 of them for one peer; more
///   are answered `Busy`. A GET is being served from its arrival until its answer is sent (or
///   fails), so at most this many answers are in memory at once
/// - `serve_meta`: 4 META answers at once, `serve_meta_per_peer`: 2 of them for one peer;
///   more are answered with no document (which the asker takes as "not held")
/// - `upload_bytes_per_sec`: no cap
/// - `max_peers`: 128 inbound connections (and twice that in all), 2 per peer
/// - `ban`: 10 minutes
/// - `have_timeout`: 3 s; `meta_timeout`: 30 s
/// - a GET may take 5 s plus a second per MiB asked (`get_base_timeout`, `get_min_rate`)
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// GETs served at once, in total.
    pub serve_requests: usize,
    /// GETs served at once to one peer.
    pub serve_per_peer: usize,
    /// META answers being served at once, in total.
    pub serve_meta: usize,
    /// META answers being served at once to one peer.
    pub serve_meta_per_peer: usize,
    /// Upload cap (`None`: none). A GET that would wait over 2 s for it is answered `Busy`.
    pub upload_bytes_per_sec: Option<u64>,
    /// Inbound connections accepted at once.
    pub max_peers: u32,
    /// How long a peer that sent bad bytes is ignored.
    pub ban: Duration,
    /// Wait for HAVE answers.
    pub have_timeout: Duration,
    /// Wait for META answers.
    pub meta_timeout: Duration,
    /// Fixed part of a GET's timeout.
    pub get_base_timeout: Duration,
    /// Slowest transfer rate a GET may have, in bytes per second.
    pub get_min_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            serve_requests: 8,
            serve_per_peer: 2,
            serve_meta: 4,
            serve_meta_per_peer: 2,
            upload_bytes_per_sec: None,
            max_peers: 128,
            ban: Duration::from_secs(600),
            have_timeout: Duration::from_secs(3),
            meta_timeout: Duration::from_secs(30),
            get_base_timeout: Duration::from_secs(5),
            get_min_rate: 1024 * 1024,
        }
    }
}

/// How a node joins the LAN. There is no default: a node needs its fleet's swarm key.
///
/// # Defaults
/// - `listen`: every IPv4 interface, a free TCP port (`/ip4/0.0.0.0/tcp/0`)
/// - `peers`: none
/// - `mdns`: on
/// - `identity`: none (a new peer id each run)
/// - `limits`: [`Limits::default()`]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The fleet's pre-shared key: the node connects only with nodes that hold it.
    pub swarm_key: SwarmKey,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial and keep dialing: `/ip4/…/tcp/…/p2p/<peer id>`.
    pub peers: Vec<Multiaddr>,
    /// Find peers by multicast DNS.
    pub mdns: bool,
    /// Where the node's key lives (created on first use); `None`: a new identity each run.
    pub identity: Option<PathBuf>,
    /// Serving and waiting limits.
    pub limits: Limits,
}

impl NodeConfig {
    /// A node of the fleet that holds `swarm_key`, with the defaults for the rest.
    pub fn new(swarm_key: SwarmKey) -> Self {
        Self {
            swarm_key,
            listen: vec![
                Multiaddr::empty()
                    .with(AddrPart::Ip4(std::net::Ipv4Addr::UNSPECIFIED))
                    .with(AddrPart::Tcp(0)),
            ],
            peers: Vec::new(),
            mdns: true,
            identity: None,
            limits: Limits::default(),
        }
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

#[derive(Default)]
struct Counters {
    bytes_uploaded: AtomicU64,
    chunks_uploaded: AtomicU64,
    busy_answers: AtomicU64,
    meta_busy_answers: AtomicU64,
    peers_banned: AtomicU64,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    connections: connection_limits::Behaviour,
    have: request_response::Behaviour<Codec<Have>>,
    get: request_response::Behaviour<Codec<Get>>,
    meta: request_response::Behaviour<Codec<Meta>>,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

fn protocol<P: Protocol>(timeout: Duration) -> request_response::Behaviour<Codec<P>> {
    request_response::Behaviour::new(
        [(P::NAME, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(64),
    )
}

enum Command {
    Have {
        manifest: ManifestId,
        chunks: u32,
        reply: oneshot::Sender<Vec<Holding>>,
    },
    Get {
        peer: PeerId,
        request: GetRequest,
        reply: oneshot::Sender<Result<PeerFrames, PeerError>>,
    },
    Meta {
        path: String,
        limit: u64,
        reply: oneshot::Sender<Vec<(String, Vec<u8>)>>,
    },
    Ban {
        peer: PeerId,
        reason: String,
    },
    Connected {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
}

/// An answer computed off the swarm task, to send.
enum Answer {
    Get {
        id: InboundRequestId,
        channel: ResponseChannel<GetResponse>,
        response: GetResponse,
    },
    Meta {
        id: InboundRequestId,
        channel: ResponseChannel<MetaResponse>,
        response: MetaResponse,
    },
}

/// A running node. Dropping it stops the swarm.
pub struct Node {
    id: PeerId,
    addrs: Vec<Multiaddr>,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    limits: Limits,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads the node key at `path`, or makes one there (mode 0600). Never follows a symlink at
/// `path` or at its temporary file, and refuses a key that group or others may read.
fn identity(path: &Path) -> Result<identity::Keypair, Error> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let bad = |reason: String| Error::Identity {
        path: path.to_path_buf(),
        reason,
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO planted there must not hang the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(file) => {
            let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
            if !meta.is_file() {
                return Err(bad(format!(
                    "not a regular file: remove it ({}) and a new key is made",
                    path.display()
                )));
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(bad(format!(
                    "readable by group or others (mode {mode:03o}): chmod 600 {}",
                    path.display()
                )));
            }
            let mut bytes = Vec::with_capacity(33);
            file.take(33)
                .read_to_end(&mut bytes)
                .map_err(|e| bad(e.to_string()))?;
            let secret = identity::ed25519::SecretKey::try_from_bytes(&mut bytes)
                .map_err(|e| bad(format!("not a 32-byte ed25519 key: {e}")))?;
            Ok(identity::ed25519::Keypair::from(secret).into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = identity::ed25519::Keypair::generate();
            let tmp = path.with_extension("tmp");
            let create = || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&tmp)
            };
            let mut file = match create() {
                // Left by a run that died: unlink it (a link itself, never its target).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::remove_file(&tmp).map_err(|e| bad(e.to_string()))?;
                    create()
                }
                other => other,
            }
            .map_err(|e| bad(e.to_string()))?;
            // The umask may have taken bits away: set the mode exactly.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .and_then(|()| file.write_all(keypair.secret().as_ref()))
                .and_then(|()| file.sync_all())
                .map_err(|e| bad(e.to_string()))?;
            drop(file);
            std::fs::rename(&tmp, path).map_err(|e| bad(e.to_string()))?;
            Ok(keypair.into())
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(bad(format!(
            "a symbolic link, not followed: remove it ({}) and a new key is made",
            path.display()
        ))),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// The swarm: TCP, then pnet under `swarm_key` (only holders of the key get further), then
/// Noise and Yamux, within `HANDSHAKE_TIMEOUT`. A plain function, neither generic nor async,
/// so that the transport (the pnet cipher above all) is compiled in this crate, at its
/// optimization level, not in each caller.
fn swarm(
    keypair: identity::Keypair,
    swarm_key: SwarmKey,
    limits: &Limits,
    use_mdns: bool,
) -> Result<Swarm<Behaviour>, Error> {
    let noise = noise::Config::new(&keypair).map_err(|e| Error::Transport(e.to_string()))?;
    let psk = swarm_key.psk();
    let Ok(builder) = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(move |_| {
            tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                .upgrade(upgrade::Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(HANDSHAKE_TIMEOUT)
        });
    Ok(builder
        .with_behaviour(|key| {
            let mdns = if use_mdns {
                let config = mdns::Config {
                    query_interval: Duration::from_secs(5),
                    ..Default::default()
                };
                Some(mdns::tokio::Behaviour::new(
                    config,
                    key.public().to_peer_id(),
                )?)
            } else {
                None
            };
            let connections = connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(32))
                .with_max_established_incoming(Some(limits.max_peers))
                .with_max_established(Some(2 * limits.max_peers))
                .with_max_established_per_peer(Some(2));
            Ok(Behaviour {
                connections: connection_limits::Behaviour::new(connections),
                have: protocol::<Have>(limits.have_timeout),
                get: protocol::<Get>(Duration::from_secs(120)),
                meta: protocol::<Meta>(limits.meta_timeout),
                mdns: Toggle::from(mdns),
            })
        })
        .map_err(|e| Error::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build())
}

/// Splits `/…/p2p/<id>` into the address and the id.
fn split_peer(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut addr = addr.clone();
    match addr.pop() {
        Some(AddrPart::P2p(id)) => (addr, Some(id)),
        Some(last) => {
            addr.push(last);
            (addr, None)
        }
        None => (addr, None),
    }
}

impl Node {
    /// Starts listening and dialing; returns once the listen addresses are known.
    pub async fn start(config: NodeConfig, shelf: impl Shelf) -> Result<Self, Error> {
        let shelf: Arc<dyn Shelf> = Arc::new(shelf);
        let keypair = match &config.identity {
            Some(path) => identity(path)?,
            None => identity::Keypair::generate_ed25519(),
        };
        let id = keypair.public().to_peer_id();
        let limits = config.limits.clone();
        let mut swarm = swarm(keypair, config.swarm_key, &limits, config.mdns)?;

        let mut listeners = Vec::new();
        for addr in &config.listen {
            let listener = swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
            listeners.push(listener);
        }
        let mut addrs = Vec::new();
        let mut pending = listeners.clone();
        let settle = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(settle);
        while !pending.is_empty() {
            tokio::select! {
                event = swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { listener_id, address } => {
                        pending.retain(|l| *l != listener_id);
                        addrs.push(address.with(AddrPart::P2p(id)));
                    }
                    SwarmEvent::ListenerError { error, .. }
                    | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                        return Err(Error::Listen { addr: format!("{:?}", config.listen), reason: error.to_string() });
                    }
                    _ => {}
                },
                _ = &mut settle => {
                    return Err(Error::Listen { addr: format!("{:?}", config.listen), reason: "no address after 10 s".into() });
                }
            }
        }
        // A wildcard address yields one address per interface, reported together.
        while let Ok(event) =
            tokio::time::timeout(Duration::from_millis(100), swarm.select_next_some()).await
        {
            if let SwarmEvent::NewListenAddr { address, .. } = event {
                addrs.push(address.with(AddrPart::P2p(id)));
            }
        }
        let statics: Vec<(Multiaddr, Option<PeerId>)> =
            config.peers.iter().map(split_peer).collect();
        for (addr, peer) in &statics {
            if *peer == Some(id) {
                continue;
            }
            dial(&mut swarm, addr, *peer);
        }

        let (commands, inbox) = mpsc::channel(256);
        let counters = Arc::new(Counters::default());
        let (answers_tx, answers) = mpsc::channel(256);
        let driver = Driver {
            swarm,
            shelf,
            limits: limits.clone(),
            statics,
            banned: HashMap::new(),
            rounds: HashMap::new(),
            round_of: HashMap::new(),
            next_round: 0,
            gets: HashMap::new(),
            get_slots: Slots::default(),
            meta_slots: Slots::default(),
            answers_tx,
            upload: Arc::new(Mutex::new(Instant::now())),
            counters: counters.clone(),
        };
        let task = tokio::spawn(driver.run(inbox, answers));
        info!(%id, ?addrs, swarm_key = %config.swarm_key.fingerprint(), "peer node listening");
        Ok(Self {
            id,
            addrs,
            commands,
            counters,
            limits,
            task,
        })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.id
    }

    /// Where peers can dial it, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// Peers connected now (banned ones excluded).
    pub async fn connected(&self) -> Vec<PeerId> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Connected { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Waits up to `timeout` for at least `count` connected peers; returns how many there are.
    pub async fn wait_for_peers(&self, count: usize, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        loop {
            let connected = self.connected().await.len();
            if connected >= count || Instant::now() >= until {
                return connected;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What it has served so far.
    pub fn stats(&self) -> NodeStats {
        let c = &self.counters;
        NodeStats {
            bytes_uploaded: c.bytes_uploaded.load(Ordering::Relaxed),
            chunks_uploaded: c.chunks_uploaded.load(Ordering::Relaxed),
            busy_answers: c.busy_answers.load(Ordering::Relaxed),
            meta_busy_answers: c.meta_busy_answers.load(Ordering::Relaxed),
            peers_banned: c.peers_banned.load(Ordering::Relaxed),
        }
    }

    fn send(&self, command: Command) {
        if let Err(e) = self.commands.try_send(command) {
            warn!(error = %e, "peer node is not taking commands");
        }
    }
}

fn dial(swarm: &mut Swarm<Behaviour>, addr: &Multiaddr, peer: Option<PeerId>) {
    let opts = match peer {
        Some(peer) => DialOpts::peer_id(peer)
            .addresses(vec![addr.clone()])
            .build(),
        None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
    };
    if let Err(e) = swarm.dial(opts) {
        debug!(%addr, error = %e, "dial failed");
    }
}

impl Peers for Node {
    fn local_id(&self) -> String {
        self.id.to_string()
    }

    fn metadata(&self, path: String, limit: u64) -> BoxFuture<'static, Vec<(String, Vec<u8>)>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Meta { path, limit, reply });
        Box::pin(async move { answer.await.unwrap_or_default() })
    }

    fn have(&self, manifest: ManifestId, chunks: u32) -> BoxFuture<'static, Vec<Holding>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Have {
            manifest,
            chunks,
            reply,
        });
        Box::pin(async move { answer.await.unwrap_or_default() })
    }

    fn get(
        &self,
        peer: String,
        manifest: ManifestId,
        chunks: Vec<u32>,
        bytes: u64,
    ) -> BoxFuture<'static, Result<PeerFrames, PeerError>> {
        let timeout = self.limits.get_base_timeout
            + Duration::from_secs_f64(bytes as f64 / self.limits.get_min_rate.max(1) as f64);
        let Ok(peer) = peer.parse::<PeerId>() else {
            return Box::pin(async move { Err(PeerError::Failed(format!("bad peer id {peer}"))) });
        };
        let (reply, answer) = oneshot::channel();
        self.send(Command::Get {
            peer,
            request: GetRequest {
                manifest: *manifest.as_bytes(),
                chunks,
            },
            reply,
        });
        Box::pin(async move {
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(PeerError::Failed("peer node stopped".into())),
                Err(_) => Err(PeerError::Failed(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }

    fn ban(&self, peer: &str, reason: &str) {
        if let Ok(peer) = peer.parse() {
            self.send(Command::Ban {
                peer,
                reason: reason.to_owned(),
            });
        }
    }
}

/// One HAVE or META question sent to every peer, and the answers so far.
enum Round {
    Have {
        chunks: u32,
        waiting: usize,
        answers: Vec<Holding>,
        reply: oneshot::Sender<Vec<Holding>>,
    },
    Meta {
        limit: u64,
        waiting: usize,
        answers: Vec<(String, Vec<u8>)>,
        reply: oneshot::Sender<Vec<(String, Vec<u8>)>>,
    },
}

impl Round {
    fn waiting(&mut self) -> &mut usize {
        match self {
            Round::Have { waiting, .. } | Round::Meta { waiting, .. } => waiting,
        }
    }

    fn finish(self) {
        match self {
            Round::Have { answers, reply, .. } => {
                let _ = reply.send(answers);
            }
            Round::Meta { answers, reply, .. } => {
                let _ = reply.send(answers);
            }
        }
    }
}

struct Driver {
    swarm: Swarm<Behaviour>,
    shelf: Arc<dyn Shelf>,
    limits: Limits,
    statics: Vec<(Multiaddr, Option<PeerId>)>,
    banned: HashMap<PeerId, Instant>,
    rounds: HashMap<u64, Round>,
    round_of: HashMap<OutboundRequestId, u64>,
    next_round: u64,
    gets: HashMap<OutboundRequestId, oneshot::Sender<Result<PeerFrames, PeerError>>>,
    /// GETs being served.
    get_slots: Slots,
    /// META answers being served.
    meta_slots: Slots,
    answers_tx: mpsc::Sender<Answer>,
    /// When the upload cap next has room (a leaky bucket).
    upload: Arc<Mutex<Instant>>,
    counters: Arc<Counters>,
}

impl Driver {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        mut answers: mpsc::Receiver<Answer>,
    ) {
        let mut redial = tokio::time::interval(Duration::from_secs(5));
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.event(event),
                command = inbox.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(answer) = answers.recv() => self.answer(answer),
                _ = redial.tick() => self.redial(),
            }
        }
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned
            .get(peer)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Connected peers that are not banned.
    fn peers(&self) -> Vec<PeerId> {
        self.swarm
            .connected_peers()
            .filter(|p| !self.is_banned(p))
            .copied()
            .collect()
    }

    fn redial(&mut self) {
        let now = Instant::now();
        self.banned.retain(|_, until| *until > now);
        for (addr, peer) in self.statics.clone() {
            if let Some(peer) = peer
                && !self.swarm.is_connected(&peer)
                && !self.is_banned(&peer)
                && peer != *self.swarm.local_peer_id()
            {
                dial(&mut self.swarm, &addr, Some(peer));
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Have {
                manifest,
                chunks,
                reply,
            } => {
                let request = HaveRequest {
                    manifest: *manifest.as_bytes(),
                };
                self.broadcast(
                    |waiting| Round::Have {
                        chunks,
                        waiting,
                        answers: Vec::new(),
                        reply,
                    },
                    |behaviour, peer| behaviour.have.send_request(peer, request.clone()),
                );
            }
            Command::Meta { path, limit, reply } => self.broadcast(
                |waiting| Round::Meta {
                    limit,
                    waiting,
                    answers: Vec::new(),
                    reply,
                },
                |behaviour, peer| {
                    let request = MetaRequest {
                        path: path.clone(),
                        limit: Some(limit),
                    };
                    behaviour.meta.send_request(peer, request)
                },
            ),
            Command::Get {
                peer,
                request,
                reply,
            } => {
                if self.is_banned(&peer) || !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(PeerError::Failed("not connected".into())));
                    return;
                }
                let id = self.swarm.behaviour_mut().get.send_request(&peer, request);
                self.gets.insert(id, reply);
            }
            Command::Ban { peer, reason } => {
                warn!(%peer, %reason, "banning peer");
                self.counters.peers_banned.fetch_add(1, Ordering::Relaxed);
                self.banned.insert(peer, Instant::now() + self.limits.ban);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Connected { reply } => {
                let _ = reply.send(self.peers());
            }
        }
    }

    /// Opens a round (given the number of peers it waits for) and sends its question to every
    /// peer.
    fn broadcast(
        &mut self,
        round: impl FnOnce(usize) -> Round,
        mut send: impl FnMut(&mut Behaviour, &PeerId) -> OutboundRequestId,
    ) {
        let peers = self.peers();
        let round = self.open_round(round(peers.len()));
        for peer in peers {
            let id = send(self.swarm.behaviour_mut(), &peer);
            self.round_of.insert(id, round);
        }
    }

    /// Registers a round; one with nobody to ask finishes at once.
    fn open_round(&mut self, mut round: Round) -> u64 {
        let id = self.next_round;
        self.next_round += 1;
        if *round.waiting() == 0 {
            round.finish();
        } else {
            self.rounds.insert(id, round);
        }
        id
    }

    /// Counts one answer (or failure) of a round in.
    fn round_answer(&mut self, request: OutboundRequestId, peer: PeerId, answer: Option<Answered>) {
        let Some(round_id) = self.round_of.remove(&request) else {
            return;
        };
        let Some(round) = self.rounds.get_mut(&round_id) else {
            return;
        };
        match (round, answer) {
            (
                Round::Have {
                    chunks, answers, ..
                },
                Some(Answered::Have(HaveResponse::Have {
                    chunks: theirs,
                    bits,
                    fetching,
                    wanting,
                })),
            ) => {
                let fit = |bits| ChunkBits::from_bytes(bits, *chunks).filter(|_| theirs == *chunks);
                match (fit(bits), fit(fetching)) {
                    (Some(have), Some(fetching)) => answers.push(Holding {
                        peer: peer.to_string(),
                        have,
                        fetching,
                        wanting,
                    }),
                    _ => debug!(%peer, "HAVE answer does not fit the chunk table"),
                }
            }
            (
                Round::Have {
                    chunks, answers, ..
                },
                Some(Answered::Have(HaveResponse::Unknown)),
            ) => answers.push(Holding {
                peer: peer.to_string(),
                have: ChunkBits::empty(*chunks),
                fetching: ChunkBits::empty(*chunks),
                wanting: false,
            }),
            (Round::Meta { limit, answers, .. }, Some(Answered::Meta(document))) => {
                if let Some(document) = document.filter(|d| d.len() as u64 <= *limit) {
                    answers.push((peer.to_string(), document));
                }
            }
            _ => {}
        }
        let Some(round) = self.rounds.get_mut(&round_id) else {
            return;
        };
        *round.waiting() -= 1;
        if *round.waiting() == 0
            && let Some(round) = self.rounds.remove(&round_id)
        {
            round.finish();
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if self.is_banned(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                } else {
                    debug!(%peer_id, "peer connected");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if !self.swarm.is_connected(&peer) && !self.is_banned(&peer) {
                        dial(&mut self.swarm, &addr, Some(peer));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Have(event)) => match Rpc::from(event) {
                Rpc::Request {
                    peer,
                    request,
                    channel,
                    ..
                } => self.serve_have(peer, request, channel),
                Rpc::Response { peer, id, response } => {
                    self.round_answer(id, peer, Some(Answered::Have(response)));
                }
                Rpc::Failed { peer, id, .. } => self.round_answer(id, peer, None),
                Rpc::Answered { .. } => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Meta(event)) => match Rpc::from(event) {
                Rpc::Request {
                    peer,
                    id,
                    request,
                    channel,
                } => self.serve_meta(peer, id, request, channel),
                Rpc::Response { peer, id, response } => {
                    self.round_answer(id, peer, Some(Answered::Meta(response.document)));
                }
                Rpc::Failed { peer, id, error } => {
                    debug!(%peer, %error, "META request failed");
                    self.round_answer(id, peer, None);
                }
                Rpc::Answered { id } => self.meta_slots.release(id),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Get(event)) => match Rpc::from(event) {
                Rpc::Request {
                    peer,
                    id,
                    request,
                    channel,
                } => self.serve_get(peer, id, request, channel),
                Rpc::Response { id, response, .. } => {
                    if let Some(reply) = self.gets.remove(&id) {
                        let _ = reply.send(match response {
                            GetResponse::Frames(frames) => Ok(frames),
                            GetResponse::Busy => Err(PeerError::Busy),
                            GetResponse::Refused(why) => Err(PeerError::Failed(why)),
                        });
                    }
                }
                Rpc::Failed { id, error, .. } => {
                    if let Some(reply) = self.gets.remove(&id) {
                        let _ = reply.send(Err(PeerError::Failed(error)));
                    }
                }
                Rpc::Answered { id } => self.get_slots.release(id),
            },
            _ => {}
        }
    }

    fn serve_have(
        &mut self,
        peer: PeerId,
        request: HaveRequest,
        channel: ResponseChannel<HaveResponse>,
    ) {
        if self.is_banned(&peer) {
            return;
        }
        let response = match self.shelf.have(&ManifestId(request.manifest)) {
            Some(answer) => HaveResponse::Have {
                chunks: answer.have.len(),
                bits: answer.have.as_bytes().to_vec(),
                fetching: answer.fetching.as_bytes().to_vec(),
                wanting: answer.wanting,
            },
            None => HaveResponse::Unknown,
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .have
            .send_response(channel, response);
    }

    /// Answers META from a blocking task, within the META slots; past them, with no
    /// document.
    fn serve_meta(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: MetaRequest,
        channel: ResponseChannel<MetaResponse>,
    ) {
        if self.is_banned(&peer) {
            return;
        }
        let limits = &self.limits;
        if !self
            .meta_slots
            .take(peer, id, limits.serve_meta, limits.serve_meta_per_peer)
        {
            self.counters
                .meta_busy_answers
                .fetch_add(1, Ordering::Relaxed);
            let _ = self
                .swarm
                .behaviour_mut()
                .meta
                .send_response(channel, MetaResponse { document: None });
            return;
        }
        let (shelf, answers) = (self.shelf.clone(), self.answers_tx.clone());
        tokio::task::spawn_blocking(move || {
            let response = MetaResponse {
                document: shelf.metadata(&request.path),
            };
            let _ = answers.blocking_send(Answer::Meta {
                id,
                channel,
                response,
            });
        });
    }

    fn serve_get(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: GetRequest,
        channel: ResponseChannel<GetResponse>,
    ) {
        if self.is_banned(&peer) {
            return;
        }
        let manifest = ManifestId(request.manifest);
        let refuse = if request.chunks.len() > MAX_BATCH_CHUNKS {
            Some(format!("over {MAX_BATCH_CHUNKS} chunks asked"))
        } else {
            match self.shelf.batch_bytes(&manifest, &request.chunks) {
                Some(bytes) if bytes > MAX_BATCH_BYTES => Some(format!(
                    "{bytes} bytes asked, over the {MAX_BATCH_BYTES}-byte batch limit"
                )),
                _ => None,
            }
        };
        if let Some(why) = refuse {
            let _ = self
                .swarm
                .behaviour_mut()
                .get
                .send_response(channel, GetResponse::Refused(why));
            return;
        }
        let limits = &self.limits;
        if !self
            .get_slots
            .take(peer, id, limits.serve_requests, limits.serve_per_peer)
        {
            self.counters.busy_answers.fetch_add(1, Ordering::Relaxed);
            let _ = self
                .swarm
                .behaviour_mut()
                .get
                .send_response(channel, GetResponse::Busy);
            return;
        }
        let (shelf, answers) = (self.shelf.clone(), self.answers_tx.clone());
        let (upload, rate, counters) = (
            self.upload.clone(),
            self.limits.upload_bytes_per_sec,
            self.counters.clone(),
        );
        tokio::spawn(async move {
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
            let _ = answers
                .send(Answer::Get {
                    id,
                    channel,
                    response,
                })
                .await;
        });
    }

    fn answer(&mut self, answer: Answer) {
        match answer {
            Answer::Get {
                id,
                channel,
                response,
            } => {
                let sent = self
                    .swarm
                    .behaviour_mut()
                    .get
                    .send_response(channel, response);
                if sent.is_err() {
                    self.get_slots.release(id);
                }
            }
            Answer::Meta {
                id,
                channel,
                response,
            } => {
                let sent = self
                    .swarm
                    .behaviour_mut()
                    .meta
                    .send_response(channel, response);
                if sent.is_err() {
                    self.meta_slots.release(id);
                }
            }
        }
    }
}

/// Inbound requests being served, in total and per peer, each from its arrival until its
/// answer is sent (or fails).
#[derive(Default)]
struct Slots {
    /// Requests being served to each peer (peers with none are absent).
    per_peer: HashMap<PeerId, usize>,
    total: usize,
    /// The requests being served, and their peer.
    held: HashMap<InboundRequestId, PeerId>,
}

impl Slots {
    /// Takes a slot for request `id` of `peer`, unless that would pass `max_total` or
    /// `max_per_peer`.
    fn take(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        max_total: usize,
        max_per_peer: usize,
    ) -> bool {
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
    fn release(&mut self, id: InboundRequestId) {
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

/// A request-response event, as the driver sees it.
enum Rpc<Request, Response> {
    Request {
        peer: PeerId,
        id: InboundRequestId,
        request: Request,
        channel: ResponseChannel<Response>,
    },
    Response {
        peer: PeerId,
        id: OutboundRequestId,
        response: Response,
    },
    Failed {
        peer: PeerId,
        id: OutboundRequestId,
        error: String,
    },
    /// The answer to inbound request `id` was sent, or can no longer be.
    Answered { id: InboundRequestId },
}

impl<Request, Response> From<request_response::Event<Request, Response>>
    for Rpc<Request, Response>
{
    fn from(event: request_response::Event<Request, Response>) -> Self {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => Rpc::Request {
                peer,
                id: request_id,
                request,
                channel,
            },
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => Rpc::Response {
                peer,
                id: request_id,
                response,
            },
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => Rpc::Failed {
                peer,
                id: request_id,
                error: error.to_string(),
            },
            Event::ResponseSent { request_id, .. } | Event::InboundFailure { request_id, .. } => {
                Rpc::Answered { id: request_id }
            }
        }
    }
}

/// An answer to a round, by protocol.
enum Answered {
    Have(HaveResponse),
    Meta(Option<Vec<u8>>),
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
    use super::*;

    /// Holds one signed document, and takes `delay` to read it.
    struct Slow {
        delay: Duration,
    }

    impl Shelf for Slow {
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
            std::thread::sleep(self.delay);
            Some(b"signed".to_vec())
        }
    }

    /// A node on loopback only, without mDNS, holding `key`, dialing `peers`.
    fn on_loopback(key: SwarmKey, peers: &[Multiaddr]) -> NodeConfig {
        let mut config = NodeConfig::new(key);
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        config.peers = peers.to_vec();
        config.mdns = false;
        config
    }

    fn quick() -> Slow {
        Slow {
            delay: Duration::ZERO,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn meta_is_served_within_its_slots() {
        let key = SwarmKey::generate().unwrap();
        let mut config = on_loopback(key, &[]);
        config.limits.serve_meta = 4;
        config.limits.serve_meta_per_peer = 2;
        let slow = Slow {
            delay: Duration::from_secs(2),
        };
        let server = Node::start(config, slow).await.unwrap();
        let asker = Node::start(on_loopback(key, server.listen_addrs()), quick())
            .await
            .unwrap();
        assert_eq!(asker.wait_for_peers(1, Duration::from_secs(10)).await, 1);

        let asks = (0..3).map(|_| asker.metadata("channels/stable".into(), 1024));
        let answers = tokio::time::timeout(
            Duration::from_secs(20),
            futures_util::future::join_all(asks),
        )
        .await
        .unwrap();
        let served = answers.iter().filter(|a| a.len() == 1).count();
        assert_eq!(served, 2, "two slots per peer: {answers:?}");
        assert_eq!(server.stats().meta_busy_answers, 1);
        // The slots come back once the answers are sent.
        let again = asker.metadata("channels/stable".into(), 1024).await;
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].1, b"signed");
        // An answer over the asker's limit is refused.
        assert!(asker.metadata("channels/stable".into(), 3).await.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_nodes_with_the_same_swarm_key_connect() {
        let key = SwarmKey::generate().unwrap();
        let server = Node::start(on_loopback(key, &[]), quick()).await.unwrap();
        let other = SwarmKey::generate().unwrap();
        let outsider = Node::start(on_loopback(other, server.listen_addrs()), quick())
            .await
            .unwrap();
        assert_eq!(
            outsider.wait_for_peers(1, Duration::from_secs(3)).await,
            0,
            "a node with another swarm key connected"
        );
        assert!(
            outsider
                .metadata("channels/stable".into(), 1024)
                .await
                .is_empty()
        );
        assert!(server.connected().await.is_empty());

        let member = Node::start(on_loopback(key, server.listen_addrs()), quick())
            .await
            .unwrap();
        assert_eq!(member.wait_for_peers(1, Duration::from_secs(10)).await, 1);
        let answers = member.metadata("channels/stable".into(), 1024).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
    }

    #[test]
    fn identities_are_private_files_never_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer-key");
        let first = identity(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(identity(&path).unwrap().public(), first.public());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = identity(&path).unwrap_err().to_string();
        assert!(open.contains("chmod 600"), "{open}");

        // A link planted at the key or at its temporary file is never followed.
        let target = dir.path().join("target");
        std::fs::write(&target, [7u8; 32]).unwrap();
        let linked = dir.path().join("linked-key");
        std::os::unix::fs::symlink(&target, &linked).unwrap();
        let refused = identity(&linked).unwrap_err().to_string();
        assert!(refused.contains("symbolic link"), "{refused}");
        let fresh = dir.path().join("fresh-key");
        std::os::unix::fs::symlink(&target, fresh.with_extension("tmp")).unwrap();
        identity(&fresh).unwrap();
        assert_eq!(
            std::fs::read(&target).unwrap(),
            [7u8; 32],
            "the link was followed"
        );
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
