//! relsync LAN peers: installs on one network share verified chunks and signed metadata, so
//! the origin serves each byte about once per LAN.
//!
//! A [`Node`] is a libp2p swarm (TCP, a pnet handshake under the fleet's [`SwarmKey`], Noise,
//! Yamux; peers found by mDNS or given) that serves an install's [`relsync_engine::Share`] and
//! implements [`relsync_engine::Peers`], the engine's view of the LAN. Only nodes
//! holding the same swarm key can connect: there is no way to start a node without one. The
//! engine decides what to ask whom and verifies everything it gets; this crate moves bytes
//! within bounds:
//!
//! | protocol | asks | answers | limit |
//! |---|---|---|---|
//! | `/relsync/have/1` | a manifest id | a bitfield over its chunk table | 2 MiB |
//! | `/relsync/get/1` | chunk indexes, 1–4 MiB of chunks | zstd frames, or `Busy` | 4 MiB batch |
//! | `/relsync/meta/1` | an origin path | the signed document | the asker's limit for that document, ≤ 64 MiB |
//!
//! ```no_run
//! # async fn run(engine: relsync_engine::Engine) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use relsync_peer::{Node, NodeConfig, SwarmKey};
//!
//! let key = SwarmKey::read("/etc/relsync/swarm.key".as_ref())?;
//! let node = Arc::new(Node::start(NodeConfig::new(key), engine.share()).await?);
//! engine.attach_peers(node);
//! let report = engine.update().await?;
//! println!("{} bytes from peers", report.bytes_from_peers);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod driver;
mod identity;
mod node;
mod round;
mod serve;
mod swarm_key;
pub mod wire;

use std::path::PathBuf;

pub use config::{Limits, NodeConfig};
pub use libp2p::{Multiaddr, PeerId};
pub use node::Node;
pub use serve::{NodeStats, Shelf};
pub use swarm_key::SwarmKey;

/// What can go wrong starting a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The swarm key file is unusable.
    #[error("swarm key {}: {reason}", path.display())]
    SwarmKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong, and what to do about it.
        reason: String,
    },
    /// The OS gave no random bytes for a new key.
    #[error("no random bytes from the OS for a new key: {0}")]
    Randomness(String),
    /// The node's key file is unusable.
    #[error("peer identity {}: {reason}", path.display())]
    Identity {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A listen address is unusable.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The transport could not be built.
    #[error("peer transport: {0}")]
    Transport(String),
}
