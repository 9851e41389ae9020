//! evil-peer: a LAN peer that lies, for the end-to-end tests. It serves an install like
//! `relsync serve`, but per `--mode`:
//!
//! - `corrupt`: sends every chunk with one byte flipped, recompressed, so only its hash tells
//! - `withhold`: claims every chunk of the releases it knows and sends none
//! - `stall`: claims every chunk and answers no GET (it sleeps past any timeout)
//! - `stall-wanting`: claims to be fetching the release (so it owns a share of the frames) and
//!   never comes to hold a chunk
//!
//! `evil-peer --install DIR --mode MODE [--listen MULTIADDR] [--stop-after SECS]` prints its
//! listen addresses like `relsync serve` and exits after `--stop-after` seconds (default 120).

use std::time::Duration;

use relsync_chunker::frame;
use relsync_engine::peers::{ChunkBits, PeerFrames};
use relsync_engine::{HaveAnswer, ManifestId, Share};
use relsync_peer::{Node, NodeConfig, Shelf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Corrupt,
    Withhold,
    Stall,
    StallWanting,
}

struct Evil {
    share: Share,
    mode: Mode,
}

impl Shelf for Evil {
    fn have(&self, manifest: &ManifestId) -> Option<HaveAnswer> {
        let len = self.share.have(manifest)?.have.len();
        Some(match self.mode {
            Mode::StallWanting => HaveAnswer {
                have: ChunkBits::empty(len),
                fetching: ChunkBits::full(len),
                wanting: true,
            },
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
            Mode::Withhold => vec![None; chunks.len()],
            Mode::Stall | Mode::StallWanting => {
                std::thread::sleep(Duration::from_secs(600));
                vec![None; chunks.len()]
            }
        }
    }

    fn metadata(&self, path: &str) -> Option<Vec<u8>> {
        self.share.metadata(path)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut install, mut mode, mut listen, mut stop_after) =
        (None, None, "/ip4/127.0.0.1/tcp/0".to_owned(), 120u64);
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
                    other => return Err(format!("unknown mode {other}").into()),
                })
            }
            "--listen" => listen = value,
            "--stop-after" => stop_after = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let install = install.ok_or("--install is required")?;
    let mode = mode.ok_or("--mode is required")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let share = Share::open(&install)?;
        let mut config = NodeConfig::default();
        config.listen = vec![listen.parse()?];
        config.mdns = false;
        let node = Node::start(config, Evil { share, mode }).await?;
        for addr in node.listen_addrs() {
            println!("{addr}");
        }
        tokio::time::sleep(Duration::from_secs(stop_after)).await;
        Ok(())
    })
}
