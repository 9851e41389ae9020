//! LAN peers: joining them for `update`, the `serve` daemon, and `swarm-key`.
//!
//! LAN sharing is opt-in: without the fleet's swarm key a node neither serves nor asks peers,
//! and listens nowhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use relsync_engine::{Engine, InstallLayout, Share};
use relsync_peer::{Limits, Multiaddr, Node, NodeConfig, SwarmKey};
use tracing::warn;

use crate::SourceOptions;

/// Where a node listens unless `--listen` says otherwise.
const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/0";
/// How long to wait for peers unless `--peer-wait` says otherwise.
const DEFAULT_PEER_WAIT: Duration = Duration::from_secs(2);
/// What to do without a swarm key, for error messages.
const GET_A_KEY: &str = "make one with `relsync swarm-key --out FILE` and copy it to every \
                         node of the fleet";

/// How to find and serve LAN peers.
#[derive(Debug, Clone, clap::Args)]
pub struct LanArgs {
    /// The fleet's swarm key (a file `relsync swarm-key` wrote, mode 0600). LAN sharing is
    /// only among nodes holding the same key: without it no peer is asked or served, and
    /// nothing listens.
    #[arg(long, value_name = "FILE", env = "RELSYNC_SWARM_KEY", value_parser = read_swarm_key)]
    swarm_key: Option<SwarmKey>,
    /// A peer to fetch from and serve, as `relsync serve` prints it:
    /// /ip4/ADDR/tcp/PORT/p2p/PEER_ID (repeatable; needs --swarm-key).
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<Multiaddr>,
    /// Don't look for peers by multicast DNS. With no --peer either, no peers are used.
    #[arg(long, env = "RELSYNC_NO_MDNS", value_parser = clap::builder::BoolishValueParser::new())]
    no_mdns: bool,
    /// Where to listen for peers (repeatable; needs --swarm-key) [default: /ip4/0.0.0.0/tcp/0].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Cap on upload to peers, in bytes per second (0: none; needs --swarm-key) [default: 0].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    max_upload_rate: Option<u64>,
    /// How long to wait for peers before fetching (every --peer connected ends the wait;
    /// needs --swarm-key) [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    peer_wait: Option<Duration>,
}

fn read_swarm_key(path: &str) -> Result<SwarmKey, String> {
    SwarmKey::read(Path::new(path)).map_err(|e| e.to_string())
}

impl LanArgs {
    /// Refuses LAN flags without a swarm key (there is no LAN then).
    pub fn check(&self) -> Result<()> {
        if self.swarm_key.is_none() {
            let given: Vec<&str> = [
                ("--peer", !self.peers.is_empty()),
                ("--listen", !self.listen.is_empty()),
                ("--max-upload-rate", self.max_upload_rate.is_some()),
                ("--peer-wait", self.peer_wait.is_some()),
            ]
            .into_iter()
            .filter_map(|(flag, given)| given.then_some(flag))
            .collect();
            if !given.is_empty() {
                bail!(
                    "{} given without --swarm-key FILE: LAN peers are only the nodes holding \
                     the fleet's swarm key; {GET_A_KEY}",
                    given.join(", ")
                );
            }
        }
        Ok(())
    }

    /// The node's config, or `None` without a swarm key: then no LAN at all, and LAN flags
    /// are an error.
    fn node_config(&self, install: &Path) -> Result<Option<NodeConfig>> {
        self.check()?;
        let Some(key) = self.swarm_key else {
            return Ok(None);
        };
        let mut limits = Limits::default();
        let rate = self.max_upload_rate.unwrap_or(0);
        limits.upload_bytes_per_sec = (rate > 0).then_some(rate);
        let mut config = NodeConfig::new(key);
        config.listen = match self.listen.as_slice() {
            [] => vec![
                DEFAULT_LISTEN
                    .parse()
                    .context("the default listen address")?,
            ],
            listen => listen.to_vec(),
        };
        config.peers = self.peers.clone();
        config.mdns = !self.no_mdns;
        config.identity = Some(InstallLayout::new(install).peer_key());
        config.limits = limits;
        Ok(Some(config))
    }

    fn peer_wait(&self) -> Duration {
        self.peer_wait.unwrap_or(DEFAULT_PEER_WAIT)
    }

    /// Starts a node serving `engine`'s install and attaches it, unless there is no swarm
    /// key or no way to find peers (no `--peer`, mDNS off). Keep the node until the update
    /// ends.
    pub async fn attach(&self, engine: &Engine, install: &Path) -> Result<Option<Arc<Node>>> {
        let Some(config) = self.node_config(install)? else {
            return Ok(None);
        };
        if self.peers.is_empty() && self.no_mdns {
            return Ok(None);
        }
        let node = Node::start(config, engine.share())
            .await
            .context("starting the peer node")?;
        node.wait_for_peers(self.peers.len().max(1), self.peer_wait())
            .await;
        let node = Arc::new(node);
        engine.attach_peers(node.clone());
        Ok(Some(node))
    }
}

/// Runs `relsync swarm-key --out FILE`: a new random key, in a new file of mode 0600.
pub fn swarm_key(out: &Path) -> Result<()> {
    let key = SwarmKey::create(out).context("writing a new swarm key")?;
    println!(
        "wrote a new swarm key to {} (fingerprint {}).\n\
         Copy it to every node of the fleet, readable only by the user relsync runs as \
         (mode 0600, e.g. /etc/relsync/swarm.key), and give it with --swarm-key FILE \
         (relsync update, serve) or `swarm_key` in the daemon's [lan] table. Only nodes \
         holding it share with each other: keep it secret, and make a new one to shut a \
         node out.",
        out.display(),
        key.fingerprint()
    );
    Ok(())
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
    let Some(config) = args.lan.node_config(&args.install)? else {
        bail!(
            "relsync serve shares DIR only with LAN peers holding the fleet's swarm key: give \
             it with --swarm-key FILE ({GET_A_KEY})"
        );
    };
    let engine = match args.origin.as_slice() {
        [] if !args.source.trust.is_empty() || args.source.trust_root.is_some() => {
            anyhow::bail!("--trust and --trust-root need --origin: what should DIR follow?")
        }
        [] => None,
        origin => {
            let config = args.source.config(origin, &args.install)?;
            Some(crate::builder(config).open()?)
        }
    };
    let share = match &engine {
        Some(engine) => engine.share(),
        None => Share::open(&args.install)?,
    };
    let node = Arc::new(
        Node::start(config, share)
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
    if let Some(engine) = &engine {
        engine.attach_peers(node.clone());
    }
    let work = async {
        let Some(engine) = engine else {
            return std::future::pending::<()>().await;
        };
        node.wait_for_peers(args.lan.peers.len().max(1), args.lan.peer_wait())
            .await;
        loop {
            match engine.update().await {
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
