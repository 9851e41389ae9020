//! The node: one libp2p swarm that serves this install's [`Shelf`] and asks peers for theirs.
//! This module builds the swarm ([`Node::start`]) and holds [`Node`], the handle, which
//! implements the engine's [`Peers`] by sending commands to the swarm's task.
//!
//! Connections are TCP, then a pnet handshake under the fleet's [`SwarmKey`], then Noise and
//! Yamux: a node without the key fails the handshake before it learns anything.
//!
//! The swarm runs in its own task (`driver.rs`). [`Node`] talks to it over a channel, and
//! inbound requests that read files are answered from blocking tasks (`serve.rs`), so the
//! swarm never waits on a disk.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use libp2p::core::upgrade;
use libp2p::multiaddr::Protocol as AddrPart;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport, connection_limits, identity, mdns, noise, tcp, yamux,
};
use relsync_engine::ManifestId;
use relsync_engine::{Holding, PeerError, PeerFrames, Peers};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::driver::{Command, Driver};
use crate::serve::{Counters, Server, Shelf};
use crate::wire::{Codec, Get, GetRequest, Have, Meta, Protocol};
use crate::{Error, Limits, NodeConfig, NodeStats, SwarmKey};

/// Longest a connection may take from TCP connect to a working Yamux session.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the listeners may take to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's protocols: connection limits, the three request-response protocols, and mDNS
/// when it is on.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    connections: connection_limits::Behaviour,
    pub(crate) have: request_response::Behaviour<Codec<Have>>,
    pub(crate) get: request_response::Behaviour<Codec<Get>>,
    pub(crate) meta: request_response::Behaviour<Codec<Meta>>,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Request-response for protocol `P`, whose requests time out after `timeout`.
fn protocol<P: Protocol>(timeout: Duration) -> request_response::Behaviour<Codec<P>> {
    request_response::Behaviour::new(
        [(P::NAME, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(64),
    )
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
            Some(path) => crate::identity::load_or_create(path)?,
            None => identity::Keypair::generate_ed25519(),
        };
        let id = keypair.public().to_peer_id();
        let limits = config.limits.clone();
        let mut swarm = swarm(keypair, config.swarm_key, &limits, config.mdns)?;
        let addrs = listen(&mut swarm, &config.listen).await?;
        let statics: Vec<(Multiaddr, Option<PeerId>)> =
            config.peers.iter().map(split_peer).collect();
        for (addr, peer) in &statics {
            if *peer == Some(id) {
                continue;
            }
            dial(&mut swarm, addr, *peer);
        }

        let counters = Arc::new(Counters::default());
        let server = Server::new(shelf, limits.clone(), counters.clone());
        let (commands, task) = Driver::spawn(swarm, server, limits.ban, statics, counters.clone());
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
        self.counters.stats()
    }

    fn send(&self, command: Command) {
        if let Err(e) = self.commands.try_send(command) {
            warn!(error = %e, "peer node is not taking commands");
        }
    }
}

/// Listens on `listen`; returns the addresses, each ending in `/p2p/<our id>`, once every
/// listener has reported one (and a wildcard has reported all its interfaces).
async fn listen(
    swarm: &mut Swarm<Behaviour>,
    listen: &[Multiaddr],
) -> Result<Vec<Multiaddr>, Error> {
    let id = *swarm.local_peer_id();
    let failed = |reason: String| Error::Listen {
        addr: format!("{listen:?}"),
        reason,
    };
    let mut pending = Vec::new();
    for addr in listen {
        let listener = swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        pending.push(listener);
    }
    let mut addrs = Vec::new();
    let settle = tokio::time::sleep(LISTEN_TIMEOUT);
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
                    return Err(failed(error.to_string()));
                }
                _ => {}
            },
            _ = &mut settle => return Err(failed("no address after 10 s".into())),
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
    Ok(addrs)
}

/// Dials `addr` (as `peer`, if its id is known); a failure is only logged, as the driver
/// redials.
pub(crate) fn dial(swarm: &mut Swarm<Behaviour>, addr: &Multiaddr, peer: Option<PeerId>) {
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
        let timeout = self.limits.get_timeout(bytes);
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

#[cfg(test)]
mod tests {
    use relsync_engine::ChunkBits;
    use relsync_engine::HaveAnswer;

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

    const MIB: u64 = 1024 * 1024;
    const KNOWN: [u8; 32] = [1; 32];

    /// Holds manifest `KNOWN`: a table of 4 chunks of 1 MiB, the first two as 64-byte frames.
    struct Releases;

    impl Shelf for Releases {
        fn have(&self, manifest: &ManifestId) -> Option<HaveAnswer> {
            (manifest.0 == KNOWN).then(|| {
                let mut have = ChunkBits::empty(4);
                have.set(0);
                have.set(1);
                HaveAnswer {
                    have,
                    fetching: ChunkBits::empty(4),
                    wanting: false,
                }
            })
        }

        fn batch_bytes(&self, manifest: &ManifestId, chunks: &[u32]) -> Option<u64> {
            (manifest.0 == KNOWN).then_some(chunks.len() as u64 * MIB)
        }

        fn chunks(&self, _: &ManifestId, chunks: &[u32]) -> PeerFrames {
            chunks
                .iter()
                .map(|&i| (i < 2).then(|| vec![i as u8; 64]))
                .collect()
        }

        fn metadata(&self, _: &str) -> Option<Vec<u8>> {
            None
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_on_loopback_share_chunks_within_the_limits() {
        let key = SwarmKey::generate().unwrap();
        let server = Node::start(on_loopback(key, &[]), Releases).await.unwrap();
        let asker = Node::start(on_loopback(key, server.listen_addrs()), quick())
            .await
            .unwrap();
        let holder = server.peer_id().to_string();
        let shared = async {
            assert_eq!(asker.wait_for_peers(1, Duration::from_secs(10)).await, 1);
            let holdings = asker.have(ManifestId(KNOWN), 4).await;
            assert_eq!(holdings.len(), 1, "{holdings:?}");
            assert_eq!(holdings[0].peer, holder);
            let held: Vec<bool> = (0..4).map(|i| holdings[0].have.get(i)).collect();
            assert_eq!(held, [true, true, false, false]);
            // A table of another size: the answer does not fit, and is dropped.
            assert!(asker.have(ManifestId(KNOWN), 5).await.is_empty());
            // A manifest it does not know: it holds nothing.
            let unknown = asker.have(ManifestId([2; 32]), 4).await;
            assert_eq!(unknown.len(), 1, "{unknown:?}");
            assert_eq!(unknown[0].have.count(), 0);

            let get = |chunks: Vec<u32>| {
                let bytes = chunks.len() as u64 * MIB;
                asker.get(holder.clone(), ManifestId(KNOWN), chunks, bytes)
            };
            let frames = get(vec![0, 1, 3]).await.unwrap();
            assert_eq!(frames, vec![Some(vec![0; 64]), Some(vec![1; 64]), None]);
            // 5 MiB: over the batch limit, refused by the server.
            let refused = get(vec![0, 1, 2, 3, 0]).await.unwrap_err().to_string();
            assert!(
                refused.contains("over the 4194304-byte batch limit"),
                "{refused}"
            );
            let stats = server.stats();
            assert_eq!((stats.bytes_uploaded, stats.chunks_uploaded), (128, 2));
            assert_eq!(stats.busy_answers, 0);

            // A ban disconnects the peer, and nothing more is asked of it.
            asker.ban(&holder, "sent bad bytes");
            assert!(asker.connected().await.is_empty());
            let refused = get(vec![0]).await.unwrap_err().to_string();
            assert_eq!(refused, "not connected");
            assert!(asker.have(ManifestId(KNOWN), 4).await.is_empty());
            assert_eq!(asker.stats().peers_banned, 1);
            let refused = asker.get("not-a-peer".into(), ManifestId(KNOWN), vec![0], 1);
            let refused = refused.await.unwrap_err().to_string();
            assert_eq!(refused, "bad peer id not-a-peer");
        };
        tokio::time::timeout(Duration::from_secs(60), shared)
            .await
            .expect("two nodes on loopback took over 60 s");
    }

    #[tokio::test]
    async fn an_address_tcp_cannot_listen_on_is_refused() {
        let mut config = on_loopback(SwarmKey::generate().unwrap(), &[]);
        config.listen = vec!["/ip4/127.0.0.1/udp/0".parse().unwrap()];
        let err = Node::start(config, quick()).await.unwrap_err();
        assert!(
            matches!(&err, Error::Listen { addr, .. } if addr == "/ip4/127.0.0.1/udp/0"),
            "{err}"
        );
    }

    #[test]
    fn peer_addresses_split_into_address_and_id() {
        let id = identity::Keypair::generate_ed25519().public().to_peer_id();
        let bare: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let full = bare.clone().with(AddrPart::P2p(id));
        assert_eq!(split_peer(&full), (bare.clone(), Some(id)));
        assert_eq!(split_peer(&bare), (bare, None));
        assert_eq!(split_peer(&Multiaddr::empty()), (Multiaddr::empty(), None));
    }
}
