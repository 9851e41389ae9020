//! Peers: other installs on the LAN, asked for chunks and signed metadata before the origin.
//!
//! The engine decides what to ask whom and trusts nothing it is given: metadata from a peer is
//! verified exactly as if the origin had served it, and every chunk is hashed before it is
//! stored or used. The network (`relsync-peer`, on libp2p) implements [`Peers`].

use std::fmt;

use futures_util::future::BoxFuture;

use crate::ManifestId;

/// Which chunks of one manifest's chunk table a peer holds: bit `i` (byte `i / 8`, least
/// significant bit first) is chunk `i`.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkBits {
    bytes: Vec<u8>,
    len: u32,
}

impl ChunkBits {
    /// No chunk of `len`.
    pub fn empty(len: u32) -> Self {
        Self {
            bytes: vec![0; (len as usize).div_ceil(8)],
            len,
        }
    }

    /// Every chunk of `len`.
    pub fn full(len: u32) -> Self {
        let mut bits = Self::empty(len);
        (0..len).for_each(|i| bits.set(i));
        bits
    }

    /// Bits as sent on the wire, refused unless they are exactly `len` bits long (with the
    /// spare bits of the last byte clear).
    pub fn from_bytes(bytes: Vec<u8>, len: u32) -> Option<Self> {
        let spare = (len % 8) as u8;
        let clean = match bytes.last() {
            Some(last) if spare > 0 => last >> spare == 0,
            _ => true,
        };
        (bytes.len() == (len as usize).div_ceil(8) && clean).then_some(Self { bytes, len })
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Chunks in the table.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether chunk `i` is held.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Marks chunk `i` held (ignored past the end).
    pub fn set(&mut self, i: u32) {
        if i < self.len {
            self.bytes[(i / 8) as usize] |= 1 << (i % 8);
        }
    }

    /// Marks chunk `i` not held.
    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            self.bytes[(i / 8) as usize] &= !(1 << (i % 8));
        }
    }

    /// Chunks held.
    pub fn count(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether this holds a chunk of `among` that `before` did not (all three of one length).
    pub(crate) fn gains(&self, before: &ChunkBits, among: &ChunkBits) -> bool {
        self.len == before.len
            && self.len == among.len
            && self
                .bytes
                .iter()
                .zip(&before.bytes)
                .zip(&among.bytes)
                .any(|((now, was), among)| now & among & !was != 0)
    }

    /// Adds every chunk `other` holds (ignored unless both are of one length).
    pub(crate) fn add_all(&mut self, other: &ChunkBits) {
        if self.len == other.len {
            self.bytes
                .iter_mut()
                .zip(&other.bytes)
                .for_each(|(mine, theirs)| *mine |= theirs);
        }
    }
}

impl fmt::Debug for ChunkBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkBits({}/{})", self.count(), self.len)
    }
}

/// A peer's answer to HAVE for one manifest.
#[derive(Debug, Clone)]
pub struct Holding {
    /// The peer (its libp2p peer id, as text).
    pub peer: String,
    /// The chunks it holds.
    pub have: ChunkBits,
    /// The chunks it is fetching from the origin now.
    pub fetching: ChunkBits,
    /// It is fetching this release now, so it will come to hold more.
    pub wanting: bool,
}

/// Why a request to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The peer is at its upload limit: ask again later, or elsewhere.
    #[error("peer is busy")]
    Busy,
    /// Timeout, disconnect, protocol violation or refusal.
    #[error("{0}")]
    Failed(String),
}

/// Compressed frames a peer sent for the chunks asked, in order: `None` where it had none.
pub type PeerFrames = Vec<Option<Vec<u8>>>;

/// The LAN as a source of chunks and metadata. Implementations bound every request in size and
/// time, and answer only from peers that are not banned.
pub trait Peers: Send + Sync + fmt::Debug {
    /// This node's id, as peers see it (rendezvous hashing ranks it with theirs).
    fn local_id(&self) -> String;

    /// The document at origin path `path` (a channel pointer, manifest or root) from every
    /// peer that has one, at most `limit` bytes each: `(peer, bytes)`, unverified.
    fn metadata(&self, path: String, limit: u64) -> BoxFuture<'static, Vec<(String, Vec<u8>)>>;

    /// What each reachable peer holds of `manifest`, a table of `chunks` chunks. A peer that
    /// does not know the manifest holds nothing and wants nothing (yet).
    fn have(&self, manifest: ManifestId, chunks: u32) -> BoxFuture<'static, Vec<Holding>>;

    /// Chunks `chunks` of `manifest` from `peer`, each zstd-compressed; `bytes`, their
    /// uncompressed size, scales the timeout.
    fn get(
        &self,
        peer: String,
        manifest: ManifestId,
        chunks: Vec<u32>,
        bytes: u64,
    ) -> BoxFuture<'static, Result<PeerFrames, PeerError>>;

    /// Stops using `peer` for a while: it sent bytes that failed verification.
    fn ban(&self, peer: &str, reason: &str);
}

/// The rank of `node` for `key` by rendezvous (highest random weight) hashing: every node
/// that sees the same candidates picks the same owner for a key, and a departing candidate
/// moves only its own keys.
pub(crate) fn rendezvous_rank(node: &str, key: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(node.len() as u64).to_le_bytes());
    hasher.update(node.as_bytes());
    hasher.update(key);
    let hash = hasher.finalize();
    let mut rank = [0u8; 8];
    rank.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(rank)
}

/// The candidate `key` belongs to (`None` when there are none).
pub(crate) fn rendezvous_owner<'a>(
    key: &[u8],
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .max_by_key(|node| (rendezvous_rank(node, key), *node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bits_refuse_wrong_lengths_and_stray_bits() {
        assert!(ChunkBits::from_bytes(vec![0xff], 8).is_some());
        assert!(ChunkBits::from_bytes(vec![0x07], 3).is_some());
        assert!(ChunkBits::from_bytes(vec![0x08], 3).is_none());
        assert!(ChunkBits::from_bytes(vec![0, 0], 8).is_none());
        assert!(ChunkBits::from_bytes(vec![], 1).is_none());
        assert_eq!(ChunkBits::full(11).count(), 11);
        assert!(!ChunkBits::full(11).get(11));
    }

    #[test]
    fn owners_spread_and_move_only_the_leavers_keys() {
        let nodes = ["a", "b", "c", "d"];
        let keys: Vec<[u8; 4]> = (0u32..4000).map(|k| k.to_le_bytes()).collect();
        let owner = |k: &[u8], n: &[&'static str]| rendezvous_owner(k, n.iter().copied());
        let mut per_node = [0usize; 4];
        for key in &keys {
            let o = owner(key, &nodes).unwrap();
            per_node[nodes.iter().position(|n| *n == o).unwrap()] += 1;
            let without_d = owner(key, &nodes[..3]).unwrap();
            if o != "d" {
                assert_eq!(o, without_d, "a key moved although its owner stayed");
            }
        }
        for count in per_node {
            assert!((800..1200).contains(&count), "uneven spread {per_node:?}");
        }
    }

    proptest! {
        #[test]
        fn bits_round_trip(len in 0u32..200, set in proptest::collection::vec(0u32..200, 0..50)) {
            let mut bits = ChunkBits::empty(len);
            for i in &set {
                bits.set(*i);
            }
            let back = ChunkBits::from_bytes(bits.as_bytes().to_vec(), len).unwrap();
            for i in 0..len {
                prop_assert_eq!(back.get(i), set.contains(&i));
            }
        }
    }
}
