//! `relsync daemon --metrics-listen ADDR`: an opt-in Prometheus endpoint.
//!
//! [`Metrics`] holds the registry. It learns outcomes and byte counts from the engine's
//! [`Telemetry`] hook and versions from its [`Event`]s; [`serve`] answers `GET /metrics` on one
//! address with the registry in the OpenMetrics text format (which Prometheus scrapes as is)
//! and everything else with 404 or 405. Nothing listens unless the operator asks for it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use relsync_engine::{Event, Sample, Telemetry};
use semver::Version;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may live, whatever it does (keep-alive is off).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// What an OpenMetrics exposition is served as.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    operation: String,
    outcome: String,
}

/// A `*_version_info` gauge family that holds at most one version, set to 1.
#[derive(Debug, Default)]
struct VersionInfo {
    family: Family<VersionLabels, Gauge>,
    shown: Mutex<Option<Version>>,
}

impl VersionInfo {
    /// Shows `version` instead of the one shown so far. The new series is set before the old
    /// one goes, so a scrape never sees none while there is a version.
    fn set(&self, version: Option<&Version>) {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        if shown.as_ref() == version {
            return;
        }
        if let Some(version) = version {
            self.family.get_or_create(&labels(version)).set(1);
        }
        if let Some(old) = shown.take() {
            self.family.remove(&labels(&old));
        }
        *shown = version.cloned();
    }

    fn get(&self) -> Option<Version> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn labels(version: &Version) -> VersionLabels {
    VersionLabels {
        version: version.to_string(),
    }
}

/// The daemon's metrics, all named `relsync_*`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    installed: VersionInfo,
    available: VersionInfo,
    outcomes: Family<OutcomeLabels, Counter>,
    bytes_from_origin: Counter,
    bytes_from_peers: Counter,
    last_check: Gauge<f64, std::sync::atomic::AtomicU64>,
    rollbacks: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("relsync");
        let metrics = Self {
            registry: Registry::default(),
            installed: VersionInfo::default(),
            available: VersionInfo::default(),
            outcomes: Family::default(),
            bytes_from_origin: Counter::default(),
            bytes_from_peers: Counter::default(),
            last_check: Gauge::default(),
            rollbacks: Counter::default(),
        };
        registry.register(
            "installed_version_info",
            "The release `current` points at (value 1, version in the label)",
            metrics.installed.family.clone(),
        );
        registry.register(
            "available_version_info",
            "A release the last check offered this install and it has not installed yet \
             (value 1, version in the label)",
            metrics.available.family.clone(),
        );
        registry.register(
            "update_outcomes",
            "Operations by outcome: check (ok, up_to_date, held, failed), download (ok, \
             up_to_date, rolled_back, failed, interrupted), install (ok, rolled_back, failed)",
            metrics.outcomes.clone(),
        );
        registry.register(
            "bytes_from_origin",
            "Bytes downloaded from the origin by downloads",
            metrics.bytes_from_origin.clone(),
        );
        registry.register(
            "bytes_from_peers",
            "Bytes downloaded from LAN peers by downloads",
            metrics.bytes_from_peers.clone(),
        );
        registry.register(
            "last_check_timestamp_seconds",
            "Unix time of the last check that verified the channel's metadata",
            metrics.last_check.clone(),
        );
        registry.register(
            "rollbacks",
            "Releases rolled back: failed health checks and yanks signed with --roll-back",
            metrics.rollbacks.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Sets the installed version, as read at start.
    pub fn set_installed(&self, version: Option<&Version>) {
        self.installed.set(version);
    }

    /// Follows the versions an engine event names.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::UpdateAvailable { version, .. } => self.available.set(Some(version)),
            // `RestartRequired` names the release now installed after every switch, rollbacks
            // signed by the publisher included (they emit no `Applied`).
            Event::Applied { version } | Event::RestartRequired { version } => {
                self.installed.set(Some(version));
                if self.available.get().as_ref() == Some(version) {
                    self.available.set(None);
                }
            }
            Event::RolledBack { to, .. } => self.installed.set(Some(to)),
            _ => {}
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Telemetry for Metrics {
    fn record(&self, sample: Sample) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                operation: sample.operation.to_owned(),
                outcome: sample.outcome.to_owned(),
            })
            .inc();
        self.bytes_from_origin.inc_by(sample.bytes_from_origin);
        self.bytes_from_peers.inc_by(sample.bytes_from_peers);
        if sample.outcome == "rolled_back"
            || (sample.operation == "rollback" && sample.outcome == "ok")
        {
            self.rollbacks.inc();
        }
        if sample.operation == "check" && sample.outcome != "failed" {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.last_check.set(now.as_secs_f64());
            // Nothing to take (up to date, or held back): nothing available.
            if sample.outcome != "ok" {
                self.available.set(None);
            }
        }
    }
}

/// A metrics endpoint running in the background; stopped when dropped or by
/// [`MetricsServer::shutdown`].
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the port is known even when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and drops every open connection.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `metrics` on it until the returned server is shut down.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
    let addr = listener
        .local_addr()
        .context("reading the metrics address")?;
    let task = tokio::spawn(accept_loop(listener, metrics));
    Ok(MetricsServer { addr, task })
}

/// Accepts connections, at most [`MAX_CONNECTIONS`] at once. The connections live in a
/// [`JoinSet`] owned by this task, so aborting the task closes them all.
async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                debug!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&request, &metrics)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => debug!(%peer, %error, "metrics endpoint: connection failed"),
                Err(_) => debug!(%peer, "metrics endpoint: connection timed out"),
            }
        });
    }
}

fn respond(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match metrics.encode() {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(OPENMETRICS),
            );
            response
        }
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the metrics\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn sample(operation: &'static str, outcome: &'static str, origin: u64) -> Sample {
        Sample {
            operation,
            outcome,
            duration_ms: 1,
            bytes_from_origin: origin,
            bytes_from_peers: 0,
        }
    }

    #[test]
    fn versions_follow_events_and_samples() {
        let m = Metrics::new();
        m.set_installed(Some(&v("1.0.0")));
        m.observe(&Event::UpdateAvailable {
            version: v("2.0.0"),
            bytes_on_wire: 10,
            critical: false,
        });
        m.record(sample("check", "ok", 0));
        m.record(sample("download", "ok", 1234));
        let text = m.encode().unwrap();
        assert!(
            text.contains("relsync_installed_version_info{version=\"1.0.0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("relsync_available_version_info{version=\"2.0.0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("relsync_bytes_from_origin_total 1234\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "relsync_update_outcomes_total{operation=\"download\",outcome=\"ok\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("relsync_last_check_timestamp_seconds "),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");

        m.observe(&Event::Applied {
            version: v("2.0.0"),
        });
        let text = m.encode().unwrap();
        assert!(
            text.contains("relsync_installed_version_info{version=\"2.0.0\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("version=\"1.0.0\""), "{text}");
        assert!(!text.contains("relsync_available_version_info{"), "{text}");

        // A failed health check rolls back.
        m.observe(&Event::RolledBack {
            from: v("2.0.0"),
            to: v("1.0.0"),
            reason: "unhealthy".into(),
        });
        m.record(sample("install", "rolled_back", 0));
        let text = m.encode().unwrap();
        assert!(
            text.contains("relsync_installed_version_info{version=\"1.0.0\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("relsync_rollbacks_total 1\n"), "{text}");
    }

    #[test]
    fn an_up_to_date_check_clears_the_available_version() {
        let m = Metrics::new();
        m.observe(&Event::UpdateAvailable {
            version: v("2.0.0"),
            bytes_on_wire: 10,
            critical: false,
        });
        m.record(sample("check", "held", 0));
        assert!(
            !m.encode()
                .unwrap()
                .contains("relsync_available_version_info{")
        );
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let metrics = Arc::new(Metrics::new());
        metrics.set_installed(Some(&v("1.2.3")));
        let server = serve("127.0.0.1:0".parse().unwrap(), metrics)
            .await
            .unwrap();
        let addr = server.local_addr();

        let ok = get(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: application/openmetrics-text"),
            "{ok}"
        );
        assert!(
            ok.contains("relsync_installed_version_info{version=\"1.2.3\"} 1\n"),
            "{ok}"
        );

        let missing = get(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let post = get(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );

        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
