//! evil-peer: a LAN peer that lies, for the end-to-end tests. It serves an install like
//! `relsync serve`, but per `--mode`:
//!
//! - `corrupt`: sends every chunk with one byte flipped, recompressed, so only its hash tells
//! - `withhold`: claims every chunk of the releases it knows and sends none
//! - `stall`: claims every chunk and answers no GET (it sleeps past any timeout)
//! - `stall-wanting`: claims to be fetching the release (so it owns a share of the frames) and
//!   never comes to hold a chunk
//! - `churn`: claims to be fetching every chunk (so every frame waits for it) and keeps
//!   changing what it holds: every other HAVE answer claims the chunks whose ids are in
//!   `--known-manifest` (the asker's installed release, whose chunks it never asks for), the
//!   others claim none, so a naive "it holds more than last time" sees progress forever
//! - `meta-bomb`: answers every META with 1 MiB of zeros (over the asker's limit for a
//!   channel pointer, within the protocol's), and HAVE with `Unknown`
//!
//! `evil-peer --install DIR --mode MODE --swarm-key FILE [--known-manifest ID]
//! [--listen MULTIADDR] [--stop-after SECS]` prints its listen addresses like `relsync serve`
//! and exits after `--stop-after` seconds (default 120).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use relsync_chunker::{ChunkId, frame};
use relsync_engine::manifest::{TrustedManifest, decompress_envelope};
use relsync_engine::paths::manifest_path;
use relsync_engine::{ChunkBits, HaveAnswer, ManifestId, PeerFrames, Share};
use relsync_peer::{Node, NodeConfig, Shelf, SwarmKey};

/// What `meta-bomb` answers META with.
const META_BOMB_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Corrupt,
    Withhold,
    Stall,
    StallWanting,
    Churn,
    MetaBomb,
}

struct Evil {
    share: Share,
    mode: Mode,
    /// `churn`: the asker's installed manifest.
    known: Option<ManifestId>,
    /// `churn`: HAVE answers given so far.
    answers: AtomicU64,
    /// `churn`: per manifest asked, the chunks whose ids the known manifest holds.
    unneeded: Mutex<HashMap<ManifestId, ChunkBits>>,
}

impl Evil {
    /// The manifest `id` as this install's share holds it.
    fn manifest(&self, id: &ManifestId) -> Option<TrustedManifest> {
        let file = self.share.metadata(&manifest_path(id))?;
        let envelope = decompress_envelope(&file, None).ok()?;
        relsync_engine::dangerous::trusted_manifest(envelope).ok()
    }

    /// The chunks of `manifest` that the known manifest holds too.
    fn unneeded(&self, manifest: &ManifestId, len: u32) -> ChunkBits {
        let mut cache = self.unneeded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bits) = cache.get(manifest) {
            return bits.clone();
        }
        let mut bits = ChunkBits::empty(len);
        let known: HashSet<ChunkId> = self
            .known
            .and_then(|k| self.manifest(&k))
            .map(|m| m.chunks.iter().map(|c| c.id).collect())
            .unwrap_or_default();
        if let Some(asked) = self.manifest(manifest) {
            for (i, chunk) in asked.chunks.iter().enumerate() {
                if known.contains(&chunk.id) {
                    bits.set(i as u32);
                }
            }
        }
        eprintln!(
            "evil-peer churn: {} of {len} chunks of {manifest} are the asker's already",
            bits.count()
        );
        cache.insert(*manifest, bits.clone());
        bits
    }
}

impl Shelf for Evil {
    fn have(&self, manifest: &ManifestId) -> Option<HaveAnswer> {
        if self.mode == Mode::MetaBomb {
            return None;
        }
        let len = self.share.have(manifest)?.have.len();
        Some(match self.mode {
            Mode::StallWanting => HaveAnswer {
                have: ChunkBits::empty(len),
                fetching: ChunkBits::full(len),
                wanting: true,
            },
            Mode::Churn => {
                let answer = self.answers.fetch_add(1, Ordering::Relaxed);
                HaveAnswer {
                    have: match answer % 2 {
                        0 => self.unneeded(manifest, len),
                        _ => ChunkBits::empty(len),
                    },
                    fetching: ChunkBits::full(len),
                    wanting: true,
                }
            }
            _ => HaveAnswer {
                have: ChunkBits::full(len),
                fetching: ChunkBits::empty(len),
                wanting: false,
            },
        })
    }

    fn batch_bytes(&self, manifest: &ManifestId, chunks: &[u32]) -> Option<u64> {
        self.share.batch_bytes(manifest, chunks)
    }

    fn chunks(&self, manifest: &ManifestId, chunks: &[u32]) -> PeerFrames {
        match self.mode {
            Mode::Corrupt => self
                .share
                .chunks(manifest, chunks)
                .into_iter()
                .map(|f| {
                    let mut data = frame::decompress_declared(&f?, 64 << 20).ok()?;
                    let last = data.len().checked_sub(1)?;
                    data[last] ^= 0x55;
                    frame::compress(&data, 1).ok()
                })
                .collect(),
            Mode::Withhold | Mode::Churn | Mode::MetaBomb => vec![None; chunks.len()],
            Mode::Stall | Mode::StallWanting => {
                std::thread::sleep(Duration::from_secs(600));
                vec![None; chunks.len()]
            }
        }
    }

    fn metadata(&self, path: &str) -> Option<Vec<u8>> {
        match self.mode {
            Mode::MetaBomb => Some(vec![0; META_BOMB_BYTES]),
            _ => self.share.metadata(path),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut install, mut mode, mut listen, mut stop_after) =
        (None, None, "/ip4/127.0.0.1/tcp/0".to_owned(), 120u64);
    let (mut swarm_key, mut known) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--install" => install = Some(value),
            "--mode" => {
                mode = Some(match value.as_str() {
                    "corrupt" => Mode::Corrupt,
                    "withhold" => Mode::Withhold,
                    "stall" => Mode::Stall,
                    "stall-wanting" => Mode::StallWanting,
                    "churn" => Mode::Churn,
                    "meta-bomb" => Mode::MetaBomb,
                    other => return Err(format!("unknown mode {other}").into()),
                })
            }
            "--listen" => listen = value,
            "--swarm-key" => swarm_key = Some(SwarmKey::read(Path::new(&value))?),
            "--known-manifest" => known = Some(value.parse::<ManifestId>()?),
            "--stop-after" => stop_after = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let install = install.ok_or("--install is required")?;
    let mode = mode.ok_or("--mode is required")?;
    let swarm_key = swarm_key.ok_or("--swarm-key is required")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let share = Share::open(&install)?;
        let mut config = NodeConfig::new(swarm_key);
        config.listen = vec![listen.parse()?];
        config.mdns = false;
        let evil = Evil {
            share,
            mode,
            known,
            answers: AtomicU64::new(0),
            unneeded: Mutex::new(HashMap::new()),
        };
        let node = Node::start(config, evil).await?;
        for addr in node.listen_addrs() {
            println!("{addr}");
        }
        tokio::time::sleep(Duration::from_secs(stop_after)).await;
        Ok(())
    })
}
