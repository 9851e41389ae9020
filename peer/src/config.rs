//! How a node is set up: [`NodeConfig`] (its swarm key, addresses, peers and identity) and the
//! [`Limits`] on what it serves and how long it waits.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol as AddrPart;

use crate::SwarmKey;

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

impl Limits {
    /// How long a GET of `bytes` uncompressed bytes may take.
    pub(crate) fn get_timeout(&self, bytes: u64) -> Duration {
        self.get_base_timeout
            + Duration::from_secs_f64(bytes as f64 / self.get_min_rate.max(1) as f64)
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
                    .with(AddrPart::Ip4(Ipv4Addr::UNSPECIFIED))
                    .with(AddrPart::Tcp(0)),
            ],
            peers: Vec::new(),
            mdns: true,
            identity: None,
            limits: Limits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_their_docs() {
        let config = NodeConfig::new(SwarmKey::generate().unwrap());
        let wildcard: Multiaddr = "/ip4/0.0.0.0/tcp/0".parse().unwrap();
        assert_eq!(config.listen, vec![wildcard]);
        assert!(config.peers.is_empty());
        assert!(config.mdns);
        assert!(config.identity.is_none());
        let limits = config.limits;
        assert_eq!((limits.serve_requests, limits.serve_per_peer), (8, 2));
        assert_eq!((limits.serve_meta, limits.serve_meta_per_peer), (4, 2));
        assert_eq!(limits.upload_bytes_per_sec, None);
        assert_eq!(limits.max_peers, 128);
        assert_eq!(limits.ban, Duration::from_secs(600));
        assert_eq!(limits.have_timeout, Duration::from_secs(3));
        assert_eq!(limits.meta_timeout, Duration::from_secs(30));
    }

    #[test]
    fn a_get_may_take_five_seconds_plus_one_per_mib() {
        let limits = Limits::default();
        assert_eq!(limits.get_timeout(0), Duration::from_secs(5));
        assert_eq!(limits.get_timeout(4 << 20), Duration::from_secs(9));
        let stalled = Limits {
            get_min_rate: 0,
            ..Limits::default()
        };
        // A zero rate counts as one byte a second, not as a division by zero.
        assert_eq!(stalled.get_timeout(3), Duration::from_secs(8));
    }
}
