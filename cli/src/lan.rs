//! LAN peers: joining them for `update`, and the `serve` daemon.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use relsync_engine::layout::InstallLayout;
use relsync_engine::{Engine, Share, Updater};
use relsync_peer::{Limits, Multiaddr, Node, NodeConfig};
use tracing::warn;

use crate::SourceOptions;

/// How to find and serve LAN peers.
#[derive(Debug, Clone, clap::Args)]
pub struct LanArgs {
    /// A peer to fetch from and serve, as `relsync serve` prints it:
    /// /ip4/ADDR/tcp/PORT/p2p/PEER_ID (repeatable).
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<Multiaddr>,
    /// Don't look for peers by multicast DNS. With no --peer either, no peers are used.
    #[arg(long, env = "RELSYNC_NO_MDNS", value_parser = clap::builder::BoolishValueParser::new())]
    no_mdns: bool,
    /// Where to listen for peers (repeatable).
    #[arg(long, value_name = "MULTIADDR", default_value = "/ip4/0.0.0.0/tcp/0")]
    listen: Vec<Multiaddr>,
    /// Cap on upload to peers, in bytes per second (0: none).
    #[arg(long, default_value_t = 0, value_name = "BYTES_PER_SEC")]
    max_upload_rate: u64,
    /// How long to wait for peers before fetching (every --peer connected ends the wait).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    peer_wait: Duration,
}

impl LanArgs {
    fn enabled(&self) -> bool {
        !self.peers.is_empty() || !self.no_mdns
    }

    fn node_config(&self, install: &Path) -> NodeConfig {
        let mut limits = Limits::default();
        limits.upload_bytes_per_sec = (self.max_upload_rate > 0).then_some(self.max_upload_rate);
        let mut config = NodeConfig::default();
        config.listen = self.listen.clone();
        config.peers = self.peers.clone();
        config.mdns = !self.no_mdns;
        config.identity = Some(InstallLayout::new(install).peer_key());
        config.limits = limits;
        config
    }

    async fn start(&self, install: &Path, share: Share) -> Result<Arc<Node>> {
        let node = Node::start(self.node_config(install), share)
            .await
            .context("starting the peer node")?;
        let wanted = self.peers.len().max(1);
        node.wait_for_peers(wanted, self.peer_wait).await;
        Ok(Arc::new(node))
    }

    /// Starts a node serving `engine`'s install and attaches it, unless peers are off. Keep
    /// the node until the update ends.
    pub async fn attach(&self, engine: &Engine, install: &Path) -> Result<Option<Arc<Node>>> {
        if !self.enabled() {
            return Ok(None);
        }
        let node = self.start(install, engine.updater().share()).await?;
        engine.updater().attach_peers(node.clone());
        Ok(Some(node))
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The install directory to share.
    #[arg(long, value_name = "DIR")]
    install: PathBuf,
    #[command(flatten)]
    lan: LanArgs,
    /// Also keep DIR updated from this origin (http(s):// URL, file:// URL or a folder),
    /// from peers first; needs --trust or --trust-root. Repeat it for mirrors.
    #[arg(long = "origin", value_name = "URL")]
    origin: Vec<String>,
    #[command(flatten)]
    source: SourceOptions,
    /// Time between update checks, with --origin.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this long (default: run until SIGINT or SIGTERM).
    #[arg(long, value_parser = humantime::parse_duration)]
    stop_after: Option<Duration>,
    /// After the addresses, print one JSON object per line for each update, failed update,
    /// and at exit the upload totals.
    #[arg(long)]
    pub json: bool,
}

/// Runs `relsync serve`.
pub fn serve(args: ServeArgs) -> Result<()> {
    crate::runtime()?.block_on(serve_async(args))
}

async fn serve_async(args: ServeArgs) -> Result<()> {
    let updater = match args.origin.as_slice() {
        [] if !args.source.trust.is_empty() || args.source.trust_root.is_some() => {
            anyhow::bail!("--trust and --trust-root need --origin: what should DIR follow?")
        }
        [] => None,
        origin => Some(Updater::open(args.source.config(origin, &args.install)?)?),
    };
    let share = match &updater {
        Some(updater) => updater.share(),
        None => Share::open(&args.install)?,
    };
    let node = Arc::new(
        Node::start(args.lan.node_config(&args.install), share)
            .await
            .context("starting the peer node")?,
    );
    {
        let mut out = std::io::stdout().lock();
        for addr in node.listen_addrs() {
            writeln!(out, "{addr}")?;
        }
        out.flush()?;
    }
    let updater = updater.map(|u| u.with_peers(node.clone()));
    let work = async {
        let Some(updater) = updater else {
            return std::future::pending::<()>().await;
        };
        node.wait_for_peers(args.lan.peers.len().max(1), args.lan.peer_wait)
            .await;
        loop {
            match updater.update().await {
                Ok(report) if report.up_to_date => {}
                Ok(report) => {
                    if args.json {
                        emit(&serde_json::json!({ "event": "update", "report": report }));
                    } else {
                        crate::render::print_report(&report);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "update failed");
                    if args.json {
                        emit(
                            &serde_json::json!({ "event": "update_failed", "error": e.to_string() }),
                        );
                    } else {
                        eprintln!("update failed: {e}");
                    }
                }
            }
            tokio::time::sleep(args.interval).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = stopped(args.stop_after) => {}
    }
    let stats = node.stats();
    if args.json {
        emit(&serde_json::json!({ "event": "stopped", "stats": stats }));
    } else {
        eprintln!(
            "served {} chunks ({} bytes) to peers",
            stats.chunks_uploaded, stats.bytes_uploaded
        );
    }
    Ok(())
}

fn emit(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Resolves on SIGINT, SIGTERM or after `limit`.
async fn stopped(limit: Option<Duration>) {
    let limit = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = limit => {}
    }
}
