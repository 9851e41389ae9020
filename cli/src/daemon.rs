//! `relsync daemon --config FILE`: keep one install updated under a [`Policy`], as a service.
//!
//! The config file names the install, the origin, whom to trust, the policy, an optional
//! health check and optional LAN peers (see docs/operations.md for every key). The daemon
//! builds an [`Engine`] from it and runs [`Engine::run`] until SIGINT, SIGTERM or
//! `--stop-after`, printing what happens: a line per lifecycle event, or with `--json` one
//! JSON object per line for every engine [`Event`], bracketed by `started` and `stopped`.
//! With `--metrics-listen` (or `metrics_listen`) it also serves Prometheus metrics
//! ([`crate::metrics`]).

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, FromArgMatches};
use relsync_engine::{
    Engine, EngineBuilder, Event, FetchConfig, HealthCheck, OriginConfig, Policy, PublicKey,
    Sample, Telemetry, TrialConfig,
};
use relsync_peer::{Multiaddr, Node, SwarmKey};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::broadcast;
use tracing::warn;

use crate::lan::LanArgs;
use crate::metrics::{self, Metrics};

/// How long a health check may take unless `trial_period` says otherwise.
const DEFAULT_TRIAL_PERIOD: Duration = Duration::from_secs(60);
/// Checking and fetching one release may take this long (as `relsync update --deadline`).
const FETCH_DEADLINE: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The daemon's config, a TOML file: install, origin, trust, and the policy and lan
    /// tables (see docs/operations.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9187 (overrides the
    /// config's metrics_listen). Off unless given.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Print one JSON object per line: `started`, every engine event (`failed` among them), and
    /// `stopped` at exit.
    #[arg(long)]
    pub json: bool,
    /// Stop after this long (default: run until SIGINT or SIGTERM).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    stop_after: Option<Duration>,
}

/// The config file as written. Relative paths are read from the file's folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    install: PathBuf,
    #[serde(deserialize_with = "one_or_many")]
    origin: Vec<String>,
    ca_cert: Option<PathBuf>,
    #[serde(default)]
    trust: Vec<String>,
    trust_root: Option<PathBuf>,
    product: Option<String>,
    #[serde(default)]
    adopt: bool,
    health_check: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    trial_period: Option<Duration>,
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    policy: Policy,
    lan: Option<LanConfig>,
}

/// `[lan]`: the `--swarm-key`, `--peer`, `--no-mdns`, `--listen`, `--max-upload-rate` and
/// `--peer-wait` flags of `relsync update`, as a table. `swarm_key` is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LanConfig {
    swarm_key: Option<PathBuf>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default = "yes")]
    mdns: bool,
    #[serde(default, deserialize_with = "one_or_many")]
    listen: Vec<String>,
    #[serde(default)]
    max_upload_rate: u64,
    #[serde(default, deserialize_with = "duration")]
    peer_wait: Option<Duration>,
}

fn yes() -> bool {
    true
}

/// A daemon config, checked: everything needed to start is here and valid.
#[derive(Debug)]
struct Config {
    install: PathBuf,
    origin: OriginConfig,
    keys: Vec<PublicKey>,
    trusted_root: Option<Vec<u8>>,
    product: Option<String>,
    adopt: bool,
    health_check: Option<HealthCheck>,
    metrics_listen: Option<SocketAddr>,
    policy: Policy,
    lan: Option<LanArgs>,
}

impl Config {
    /// Reads and checks `path`. Every error names the file, and the key when there is one.
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the daemon config {}", path.display()))?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let file = path.display();
        let raw: ConfigFile =
            toml::from_str(text).with_context(|| format!("invalid daemon config {file}"))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: &Path| base.join(p);

        if raw.origin.is_empty() || raw.origin.iter().any(|o| o.trim().is_empty()) {
            bail!("{file}: `origin` is empty");
        }
        let mut origin = OriginConfig::from(raw.origin);
        if let Some(cert) = &raw.ca_cert {
            let cert = resolve(cert);
            let pem = std::fs::read(&cert)
                .with_context(|| format!("{file}: ca_cert: reading {}", cert.display()))?;
            origin
                .add_ca_cert_pem(&pem)
                .with_context(|| format!("{file}: ca_cert {}", cert.display()))?;
        }
        if raw.trust.is_empty() && raw.trust_root.is_none() {
            bail!(
                "{file}: give the publisher's keys in `trust`, or a root document in `trust_root`"
            );
        }
        let keys = raw
            .trust
            .iter()
            .enumerate()
            .map(|(i, key)| {
                key.parse::<PublicKey>()
                    .with_context(|| format!("{file}: trust[{i}] {key:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let trusted_root =
            match &raw.trust_root {
                Some(root) => {
                    let root = resolve(root);
                    Some(std::fs::read(&root).with_context(|| {
                        format!("{file}: trust_root: reading {}", root.display())
                    })?)
                }
                None => None,
            };
        let health_check = match (raw.health_check, raw.trial_period) {
            (Some(line), period) if !line.trim().is_empty() => Some(HealthCheck::shell(
                line,
                period.unwrap_or(DEFAULT_TRIAL_PERIOD),
            )),
            (Some(_), _) => bail!("{file}: `health_check` is empty"),
            (None, Some(_)) => bail!("{file}: `trial_period` needs a `health_check`"),
            (None, None) => None,
        };
        raw.policy
            .validate()
            .with_context(|| format!("{file}: [policy]"))?;
        let lan = raw
            .lan
            .map(|lan| lan.args(base))
            .transpose()
            .with_context(|| format!("{file}: [lan]"))?;
        Ok(Self {
            install: resolve(&raw.install),
            origin,
            keys,
            trusted_root,
            product: raw.product,
            adopt: raw.adopt,
            health_check,
            metrics_listen: raw.metrics_listen,
            policy: raw.policy,
            lan,
        })
    }

    /// An engine builder with everything but the telemetry.
    fn builder(&self) -> EngineBuilder {
        let mut fetch = FetchConfig::default();
        fetch.deadline = Some(FETCH_DEADLINE);
        let mut builder = Engine::builder(self.origin.clone(), self.keys.clone(), &self.install)
            .policy(self.policy.clone())
            .fetch(fetch)
            .adopt(self.adopt);
        if let Some(product) = &self.product {
            builder = builder.product(product.clone());
        }
        if let Some(root) = &self.trusted_root {
            builder = builder.trusted_root(root.clone());
        }
        if let Some(check) = &self.health_check {
            builder = builder.trial(TrialConfig::health_check(check.clone()));
        }
        builder
    }
}

impl LanConfig {
    /// The table as the LAN flags `relsync update` takes, parsed by the same parser, so
    /// `[lan]` means exactly what those flags mean (defaults included). `swarm_key` is read
    /// from `base` (the config file's folder) when relative.
    fn args(self, base: &Path) -> Result<LanArgs> {
        let mut argv: Vec<OsString> = vec!["lan".into()];
        for (i, peer) in self.peers.iter().enumerate() {
            peer.parse::<Multiaddr>()
                .with_context(|| format!("peers[{i}] {peer:?}"))?;
            argv.extend(["--peer".into(), peer.into()]);
        }
        for (i, addr) in self.listen.iter().enumerate() {
            addr.parse::<Multiaddr>()
                .with_context(|| format!("listen[{i}] {addr:?}"))?;
            argv.extend(["--listen".into(), addr.into()]);
        }
        if !self.mdns {
            argv.push("--no-mdns".into());
        }
        argv.extend([
            "--max-upload-rate".into(),
            self.max_upload_rate.to_string().into(),
        ]);
        if let Some(wait) = self.peer_wait {
            argv.extend([
                "--peer-wait".into(),
                humantime::format_duration(wait).to_string().into(),
            ]);
        }
        let Some(key) = &self.swarm_key else {
            bail!(
                "`swarm_key` is missing: LAN peers are only the nodes holding the fleet's swarm \
                 key. Make one with `relsync swarm-key --out FILE`, copy it to every node and \
                 name it here (a path relative to this file's folder), or remove [lan]"
            );
        };
        // Read here too, for an error that names the key rather than a flag.
        let key = base.join(key);
        SwarmKey::read(&key).context("swarm_key")?;
        argv.extend(["--swarm-key".into(), key.into_os_string()]);
        let matches = LanArgs::augment_args(clap::Command::new("lan"))
            .try_get_matches_from(argv)
            .context("reading the LAN settings")?;
        Ok(LanArgs::from_arg_matches(&matches)?)
    }
}

/// A humantime duration (`"60s"`, `"5m"`).
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        de::Error::custom(format!(
            "invalid duration {text:?}: {e} (expected e.g. \"60s\" or \"5m\")"
        ))
    })
}

/// A string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(vec![value.to_owned()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(one) = seq.next_element::<String>()? {
                all.push(one);
            }
            Ok(all)
        }
    }
    deserializer.deserialize_any(OneOrMany)
}

/// Counts what the engine did, for the `stopped` line, and forwards each sample to the
/// metrics (if on).
#[derive(Debug)]
struct Tally {
    metrics: Option<Arc<Metrics>>,
    checks: AtomicU64,
    downloads: AtomicU64,
    installs: AtomicU64,
    failed: AtomicU64,
    rollbacks: AtomicU64,
    bytes_from_origin: AtomicU64,
    bytes_from_peers: AtomicU64,
}

/// What the daemon did, printed when it stops.
#[derive(Debug, Serialize)]
struct Stats {
    /// Checks that verified the channel's metadata.
    checks: u64,
    /// Releases downloaded and staged.
    downloads: u64,
    /// Releases installed (and kept).
    installs: u64,
    /// Checks, downloads and installs that failed (each was retried).
    failures: u64,
    /// Releases rolled back.
    rollbacks: u64,
    bytes_from_origin: u64,
    bytes_from_peers: u64,
}

impl Tally {
    fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            metrics,
            checks: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
            installs: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rollbacks: AtomicU64::new(0),
            bytes_from_origin: AtomicU64::new(0),
            bytes_from_peers: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            checks: get(&self.checks),
            downloads: get(&self.downloads),
            installs: get(&self.installs),
            failures: get(&self.failed),
            rollbacks: get(&self.rollbacks),
            bytes_from_origin: get(&self.bytes_from_origin),
            bytes_from_peers: get(&self.bytes_from_peers),
        }
    }
}

impl Telemetry for Tally {
    fn record(&self, sample: Sample) {
        let add = |counter: &AtomicU64, n: u64| counter.fetch_add(n, Ordering::Relaxed);
        match (sample.operation, sample.outcome) {
            (_, "failed") => add(&self.failed, 1),
            ("check", _) => add(&self.checks, 1),
            ("download" | "update", "ok") => add(&self.downloads, 1),
            ("install", "ok") => add(&self.installs, 1),
            _ => 0,
        };
        if sample.outcome == "rolled_back" {
            add(&self.rollbacks, 1);
        }
        add(&self.bytes_from_origin, sample.bytes_from_origin);
        add(&self.bytes_from_peers, sample.bytes_from_peers);
        if let Some(metrics) = &self.metrics {
            metrics.record(sample);
        }
    }
}

/// Why the daemon stopped.
#[derive(Debug, Clone, Copy)]
enum StopReason {
    Terminate,
    Interrupt,
    StopAfter,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
            Self::StopAfter => "stop_after",
        }
    }
}

/// SIGINT, SIGTERM and `--stop-after`. The handlers are installed when this is made, so a
/// signal that arrives while the daemon starts stops it cleanly too.
struct Stop {
    terminate: Signal,
    interrupt: Signal,
    limit: Option<Duration>,
}

impl Stop {
    fn install(limit: Option<Duration>) -> Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("handling SIGINT")?,
            limit,
        })
    }

    async fn wait(&mut self) -> StopReason {
        let limit = async {
            match self.limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.terminate.recv() => StopReason::Terminate,
            _ = self.interrupt.recv() => StopReason::Interrupt,
            () = limit => StopReason::StopAfter,
        }
    }
}

/// `{"event":"started",...}`: the first line with `--json`.
#[derive(Debug, Serialize)]
struct Started<'a> {
    event: &'static str,
    install: &'a Path,
    version: Option<&'a semver::Version>,
    channel: &'a str,
    check_interval_secs: u64,
    /// Where the metrics are served, if they are.
    metrics: Option<SocketAddr>,
    /// The LAN node's listen addresses, if it runs.
    peers: &'a [String],
}

/// `{"event":"stopped",...}`: the last line with `--json`.
#[derive(Debug, Serialize)]
struct Stopped<'a> {
    event: &'static str,
    reason: &'static str,
    stats: &'a Stats,
    /// What the LAN node served, if it ran.
    peers: Option<relsync_peer::NodeStats>,
}

/// Prints what happens, as lines for people or as NDJSON.
#[derive(Debug)]
struct Output {
    json: bool,
    /// The offer last reported, and why it last waited: each is said once per change, not
    /// at every check.
    said: std::sync::Mutex<Said>,
}

/// What [`Output`] last said about the offered release.
#[derive(Debug, Default)]
struct Said {
    available: Option<semver::Version>,
    waiting: Option<(semver::Version, String)>,
}

impl Output {
    fn new(json: bool) -> Self {
        Self {
            json,
            said: std::sync::Mutex::new(Said::default()),
        }
    }

    /// Whether `event` says something new (an offer or a wait said before is not).
    fn is_news(&self, event: &Event) -> bool {
        let Ok(mut said) = self.said.lock() else {
            return true;
        };
        match event {
            Event::UpdateAvailable { version, .. } => {
                let news = said.available.as_ref() != Some(version);
                said.available = Some(version.clone());
                news
            }
            Event::Waiting { version, reason } => {
                let now = (version.clone(), reason.clone());
                let news = said.waiting.as_ref() != Some(&now);
                said.waiting = Some(now);
                news
            }
            // The install changed: the next offer or wait is news again.
            Event::Applied { .. } | Event::RolledBack { .. } => {
                *said = Said::default();
                true
            }
            _ => true,
        }
    }
}

impl Output {
    fn line(&self, text: fmt::Arguments<'_>) {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the updates.
        let _ = out.write_fmt(text);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    fn json(&self, value: &impl Serialize) {
        if let Ok(text) = serde_json::to_string(value) {
            self.line(format_args!("{text}"));
        }
    }

    fn event(&self, event: &Event) {
        if !self.is_news(event) {
            return;
        }
        if self.json {
            return self.json(event);
        }
        match event {
            Event::Waiting { version, reason } => {
                self.line(format_args!("{version} waits: {reason}"))
            }
            Event::UpdateAvailable {
                version,
                bytes_on_wire,
                critical,
            } => self.line(format_args!(
                "update available: {version} ({bytes_on_wire} bytes to download{})",
                if *critical { ", critical" } else { "" }
            )),
            Event::Downloaded {
                version,
                bytes_from_origin,
                bytes_from_peers,
            } => self.line(format_args!(
                "downloaded {version} ({bytes_from_origin} bytes from the origin, \
                 {bytes_from_peers} from peers)"
            )),
            Event::Applied { version } => self.line(format_args!("installed {version}")),
            Event::RolledBack { from, to, reason } => {
                self.line(format_args!("rolled back {from} -> {to}: {reason}"))
            }
            Event::Failed { operation, error } => {
                self.line(format_args!("{operation} failed (retrying later): {error}"))
            }
            _ => {}
        }
    }
}

/// Runs `relsync daemon`.
pub fn run(args: DaemonArgs) -> Result<()> {
    // Everything the config could get wrong fails here, before anything starts.
    let config = Config::load(&args.config)?;
    crate::runtime()?.block_on(run_async(args, config))
}

async fn run_async(args: DaemonArgs, config: Config) -> Result<()> {
    let out = Output::new(args.json);
    let mut stop = Stop::install(args.stop_after)?;
    let metrics_listen = args.metrics_listen.or(config.metrics_listen);
    let metrics = metrics_listen.map(|_| Arc::new(Metrics::new()));
    let tally = Arc::new(Tally::new(metrics.clone()));
    let engine = config
        .builder()
        .telemetry(tally.clone())
        .open()
        .with_context(|| format!("opening the install {}", config.install.display()))?;
    let mut events = engine.events();
    let status = engine.status().await?;
    let server = match (metrics_listen, &metrics) {
        (Some(addr), Some(metrics)) => {
            metrics.set_installed(status.version.as_ref());
            Some(metrics::serve(addr, metrics.clone()).await?)
        }
        _ => None,
    };
    let node: Option<Arc<Node>> = match &config.lan {
        Some(lan) => lan.attach(&engine, &config.install).await?,
        None => None,
    };

    let policy = engine.policy();
    let metrics_addr = server.as_ref().map(metrics::MetricsServer::local_addr);
    let peer_addrs: Vec<String> = node
        .iter()
        .flat_map(|node| node.listen_addrs().iter().map(ToString::to_string))
        .collect();
    if out.json {
        out.json(&Started {
            event: "started",
            install: &config.install,
            version: status.version.as_ref(),
            channel: &policy.channel,
            check_interval_secs: policy.check_interval.as_secs(),
            metrics: metrics_addr,
            peers: &peer_addrs,
        });
    } else {
        let version = status.version.map_or_else(
            || "(nothing installed yet)".to_owned(),
            |v| format!("at {v}"),
        );
        out.line(format_args!(
            "relsync daemon: {} {version}, following {} from {}, checking every {}",
            config.install.display(),
            policy.channel,
            config.origin.mirrors.join(", "),
            humantime::format_duration(policy.check_interval)
        ));
        if let Some(addr) = metrics_addr {
            out.line(format_args!("metrics on http://{addr}/metrics"));
        }
        for addr in &peer_addrs {
            out.line(format_args!("sharing with LAN peers on {addr}"));
        }
    }

    let reason = std::cell::Cell::new(StopReason::StopAfter);
    {
        let run = engine.run(async { reason.set(stop.wait().await) });
        tokio::pin!(run);
        let mut listening = true;
        loop {
            tokio::select! {
                _ = &mut run => break,
                received = events.recv(), if listening => match received {
                    Ok(event) => show(&out, metrics.as_deref(), &event),
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        warn!(skipped, "the daemon's output fell behind; events skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => listening = false,
                },
            }
        }
    }
    // What the last operation reported before it stopped.
    while let Ok(event) = events.try_recv() {
        show(&out, metrics.as_deref(), &event);
    }
    if let Some(server) = server {
        server.shutdown().await;
    }
    let stats = tally.stats();
    let peers = node.as_ref().map(|node| node.stats());
    if out.json {
        out.json(&Stopped {
            event: "stopped",
            reason: reason.get().as_str(),
            stats: &stats,
            peers,
        });
    } else {
        out.line(format_args!(
            "stopped ({}): {} checks, {} downloads, {} installs, {} failures, {} rollbacks; \
             {} bytes from the origin, {} from peers",
            reason.get().as_str(),
            stats.checks,
            stats.downloads,
            stats.installs,
            stats.failures,
            stats.rollbacks,
            stats.bytes_from_origin,
            stats.bytes_from_peers,
        ));
    }
    Ok(())
}

fn show(out: &Output, metrics: Option<&Metrics>, event: &Event) {
    if let Some(metrics) = metrics {
        metrics.observe(event);
    }
    out.event(event);
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032, test 1.
    const KEY: &str = "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/relsync/daemon.toml"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    fn minimal(extra: &str) -> String {
        format!(
            "install = \"/opt/app\"\norigin = \"https://cdn.example.com/app/\"\ntrust = [\"{KEY}\"]\n{extra}"
        )
    }

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let config = parse(&minimal("")).unwrap();
        assert_eq!(config.install, Path::new("/opt/app"));
        assert_eq!(config.policy, Policy::default());
        assert!(config.health_check.is_none() && config.lan.is_none());
        assert!(config.metrics_listen.is_none() && config.trusted_root.is_none());
    }

    /// A swarm key file (mode 0600) in a new temporary folder.
    fn swarm_key_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        SwarmKey::create(&path).unwrap();
        (dir, path)
    }

    #[test]
    fn every_key_is_read() {
        let (_dir, key) = swarm_key_file();
        let config = parse(&minimal(&format!(
            r#"
            product = "app"
            health_check = "systemctl is-active app"
            trial_period = "90s"
            metrics_listen = "127.0.0.1:9187"
            [policy]
            check_interval = "10m"
            channel = "beta"
            window = "02:00-04:00"
            timezone = "UTC"
            [lan]
            swarm_key = {key:?}
            peers = ["/ip4/10.0.0.5/tcp/4001"]
            mdns = false
            listen = "/ip4/127.0.0.1/tcp/0"
            max_upload_rate = 1000
            peer_wait = "1s"
            "#,
        )))
        .unwrap();
        assert_eq!(config.product.as_deref(), Some("app"));
        let check = config.health_check.unwrap();
        assert_eq!(check.trial_period, Duration::from_secs(90));
        assert_eq!(check.command.last().unwrap(), "systemctl is-active app");
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9187".parse().unwrap())
        );
        assert_eq!(config.policy.check_interval, Duration::from_secs(600));
        assert_eq!(config.policy.channel, "beta");
        let lan = format!("{:?}", config.lan.unwrap());
        let fingerprint = SwarmKey::read(&key).unwrap().fingerprint();
        for part in [
            "10.0.0.5",
            "no_mdns: true",
            "127.0.0.1",
            "1000",
            "1s",
            &fingerprint,
        ] {
            assert!(lan.contains(part), "{part} in {lan}");
        }
    }

    #[test]
    fn lan_needs_a_private_swarm_key() {
        let missing = error(&minimal("[lan]\nmdns = false"));
        assert!(
            missing.contains("[lan]: `swarm_key` is missing")
                && missing.contains("relsync swarm-key"),
            "{missing}"
        );
        let relative = error(&minimal("[lan]\nswarm_key = \"swarm.key\""));
        assert!(
            relative.contains("[lan]: swarm_key: swarm key /etc/relsync/swarm.key"),
            "{relative}"
        );
        let (_dir, key) = swarm_key_file();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = error(&minimal(&format!("[lan]\nswarm_key = {key:?}")));
        assert!(open.contains("chmod 600"), "{open}");
    }

    #[test]
    fn origin_is_one_url_or_a_list_of_mirrors() {
        let one = parse(&minimal("")).unwrap();
        assert_eq!(one.origin.mirrors, ["https://cdn.example.com/app/"]);
        let text = minimal("").replace(
            "origin = \"https://cdn.example.com/app/\"",
            "origin = [\"https://a.example.com/app/\", \"https://b.example.com/app/\"]",
        );
        let two = parse(&text).unwrap();
        assert_eq!(
            two.origin.mirrors,
            ["https://a.example.com/app/", "https://b.example.com/app/"]
        );
        let none = minimal("").replace("\"https://cdn.example.com/app/\"", "[]");
        assert!(
            error(&none).contains("`origin` is empty"),
            "{}",
            error(&none)
        );
        let cert = error(&minimal("ca_cert = \"ca.pem\""));
        assert!(
            cert.contains("ca_cert: reading /etc/relsync/ca.pem"),
            "{cert}"
        );
    }

    #[test]
    fn relative_paths_are_read_from_the_config_folder() {
        let config = parse(&minimal("").replace("/opt/app", "app")).unwrap();
        assert_eq!(config.install, Path::new("/etc/relsync/app"));
        let error = error(&minimal("trust_root = \"root-1\""));
        assert!(
            error.contains("trust_root: reading /etc/relsync/root-1"),
            "{error}"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        for (text, wanted) in [
            (minimal("colour = \"red\""), "unknown field `colour`"),
            (
                minimal("[policy]\ncolour = \"red\""),
                "unknown field `colour`",
            ),
            (minimal("[lan]\ncolour = \"red\""), "unknown field `colour`"),
            (minimal("[policy]\ncheck_interval = \"1s\""), "too short"),
            (
                minimal("[policy]\ntimezone = \"Nowhere/Atlantis\""),
                "[policy]: unknown time zone",
            ),
            (
                minimal("trial_period = \"5s\""),
                "`trial_period` needs a `health_check`",
            ),
            (
                minimal("health_check = \"true\"\ntrial_period = \"soon\""),
                "invalid duration \"soon\"",
            ),
            (minimal("metrics_listen = \"localhost\""), "metrics_listen"),
            (
                minimal("[lan]\npeers = [\"nowhere\"]"),
                "[lan]: peers[0] \"nowhere\"",
            ),
            (
                "origin = \"https://x/\"\n".to_owned(),
                "missing field `install`",
            ),
            (
                "install = \"/opt/app\"\norigin = \"https://x/\"\n".to_owned(),
                "give the publisher's keys in `trust`",
            ),
            (
                "install = \"/opt/app\"\norigin = \"https://x/\"\ntrust = [\"nope\"]\n".to_owned(),
                "trust[0] \"nope\"",
            ),
        ] {
            let error = error(&text);
            assert!(error.contains("/etc/relsync/daemon.toml"), "{error}");
            assert!(error.contains(wanted), "{wanted:?} in {error}");
        }
    }
}
