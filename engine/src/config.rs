//! Every client setting in one place: where releases come from ([`OriginConfig`]), what to
//! follow and where to install it ([`UpdaterConfig`]), how to transfer ([`FetchConfig`]), and
//! how a new release proves itself ([`TrialConfig`], [`HealthCheck`]). When and whether to
//! update is the [`Policy`](crate::policy::Policy).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::error_chain;
use crate::keys::PublicKey;
use crate::{Error, Result};

/// What to update from, and where.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpdaterConfig {
    /// The origin: one `http(s)://…`, `file://…` or folder path, or several mirrors.
    pub origin: OriginConfig,
    /// The channel to follow.
    pub channel: String,
    /// When set, releases of any other product are refused.
    pub product: Option<String>,
    /// This install's platform: a release bound to another one is refused. Defaults to
    /// [`this_platform`].
    pub platform: String,
    /// Keys whose signature makes metadata trusted, for every role, one signature each: the
    /// starting point when no root document is pinned.
    pub trusted_keys: Vec<PublicKey>,
    /// A pinned root document (`keys/root-<n>` as published): the starting point of the root
    /// chain, instead of `trusted_keys`.
    pub trusted_root: Option<Vec<u8>>,
    /// The install directory (holds `current`).
    pub install_dir: PathBuf,
    /// Install into `install_dir` even if it holds files and is not a relsync install yet
    /// (relsync still never deletes or replaces what it did not create).
    pub adopt: bool,
    /// Transfer settings.
    pub fetch: FetchConfig,
}

impl UpdaterConfig {
    /// A config with default transfer settings and no product binding.
    pub fn new(
        origin: impl Into<OriginConfig>,
        channel: impl Into<String>,
        trusted_keys: Vec<PublicKey>,
        install_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            origin: origin.into(),
            channel: channel.into(),
            product: None,
            platform: this_platform(),
            trusted_keys,
            trusted_root: None,
            install_dir: install_dir.into(),
            adopt: false,
            fetch: FetchConfig::default(),
        }
    }
}

/// The platform this binary was built for, as publishers name it: `<arch>-<os>`, e.g.
/// `x86_64-linux` or `aarch64-macos`.
pub fn this_platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// How the fetch stage talks to origins.
///
/// # Defaults
/// - `max_parallel_requests`: 4
/// - `min_bytes_per_sec`: 1 KiB/s
/// - `max_range_bytes`: 8 MiB
/// - `coalesce_gap_bytes`: 32 KiB (a smaller gap between two needed frames is downloaded
///   rather than paid for with another request)
/// - `attempts`: 4 per range request, for 5xx, resets and truncated bodies
/// - `peer_batch_bytes`: 1 MiB of chunks per request to a peer
/// - `peer_requests`: 8 requests to peers in flight at once
/// - `peer_poll`: 250 ms between HAVE rounds while waiting for peers
/// - `peer_stall`: 5 s without progress before a peer's share of the work moves on
/// - `peer_join`: 2 s in which idle peers still count as owners
/// - `peer_wait_max`: 15 s at most that a frame waits for peers, whatever they claim
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FetchConfig {
    /// Range requests in flight at once.
    pub max_parallel_requests: usize,
    /// Largest single range request.
    pub max_range_bytes: u64,
    /// Largest gap of unneeded bytes bridged to merge two ranges.
    pub coalesce_gap_bytes: u64,
    /// Tries per request before giving up.
    pub attempts: u32,
    /// A response whose average rate after its first 10 s is lower fails (0: no minimum).
    pub min_bytes_per_sec: u64,
    /// The longest an update may spend checking, planning and fetching before it fails
    /// (`None`: no limit). Assembling and applying are local and never cut short.
    pub deadline: Option<Duration>,
    /// Uncompressed bytes of chunks asked of a peer in one request (and the largest origin
    /// range while peers share the work).
    pub peer_batch_bytes: u64,
    /// Requests to peers in flight at once.
    pub peer_requests: usize,
    /// Time between HAVE rounds while frames wait for the peer that owns them.
    pub peer_poll: Duration,
    /// A peer fetching the same release that gains no chunk for this long no longer owns
    /// any: its frames move to another peer or to the origin.
    pub peer_stall: Duration,
    /// For this long after a fetch starts, peers that do not fetch the release yet still own
    /// a share of it: in a flash crowd they are about to start, and taking their share now
    /// would fetch it twice.
    pub peer_join: Duration,
    /// The longest a frame waits for peers that own it or are fetching it, in all: then this
    /// node fetches it from the origin, whatever their bitfields say. A bound on what peers
    /// can delay; on a slow origin, frames an owner has not delivered by then are fetched
    /// twice.
    pub peer_wait_max: Duration,
    /// How often a running fetch re-reads the channel pointer, to stop if the publisher
    /// yanks the release.
    pub withdraw_poll: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            max_parallel_requests: 4,
            max_range_bytes: 8 * 1024 * 1024,
            coalesce_gap_bytes: 32 * 1024,
            attempts: 4,
            min_bytes_per_sec: 1024,
            deadline: None,
            peer_batch_bytes: 1024 * 1024,
            peer_requests: 8,
            peer_poll: Duration::from_millis(250),
            peer_stall: Duration::from_secs(5),
            peer_join: Duration::from_secs(2),
            peer_wait_max: Duration::from_secs(15),
            withdraw_poll: Duration::from_secs(30),
        }
    }
}

/// Where releases come from: mirrors that serve the same files, and how to reach them.
///
/// Built from one origin (`"https://cdn.example.com/app/".into()`) or a list of mirrors
/// (`vec![primary, backup].into()`).
///
/// # Defaults
/// - `mirrors`: none (at least one is needed)
/// - root certificates: the built-in (webpki) roots only; see
///   [`add_ca_cert_pem`](Self::add_ca_cert_pem)
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OriginConfig {
    /// `http(s)://…`, `file://…` or folder paths, all serving the same files, tried in this
    /// order.
    pub mirrors: Vec<String>,
    /// Extra root certificates for HTTPS mirrors.
    pub(crate) ca_certs: Vec<reqwest::Certificate>,
}

impl OriginConfig {
    /// Trusts the root certificates in `pem` (a PEM file of one or more certificates) for
    /// HTTPS mirrors, besides the built-in roots: a private CDN or a mirror with a private CA.
    /// Fails unless `pem` holds at least one valid certificate.
    pub fn add_ca_cert_pem(&mut self, pem: &[u8]) -> Result<()> {
        let bad = |reason: String| Error::malformed("CA certificate", reason);
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| bad(error_chain(&e)))?;
        if certs.is_empty() {
            return Err(bad(
                "no PEM certificate in it (a `-----BEGIN CERTIFICATE-----` block)".into(),
            ));
        }
        // Certificates are parsed only when a client is built: build one now, so a bad one
        // fails here rather than at the first request.
        let mut probe = reqwest::Client::builder().tls_built_in_root_certs(false);
        for cert in &certs {
            probe = probe.add_root_certificate(cert.clone());
        }
        probe.build().map_err(|e| bad(error_chain(&e)))?;
        self.ca_certs.extend(certs);
        Ok(())
    }
}

impl From<String> for OriginConfig {
    fn from(mirror: String) -> Self {
        vec![mirror].into()
    }
}

impl From<&str> for OriginConfig {
    fn from(mirror: &str) -> Self {
        mirror.to_owned().into()
    }
}

impl From<&String> for OriginConfig {
    fn from(mirror: &String) -> Self {
        mirror.clone().into()
    }
}

impl From<Vec<String>> for OriginConfig {
    fn from(mirrors: Vec<String>) -> Self {
        Self {
            mirrors,
            ca_certs: Vec::new(),
        }
    }
}

impl From<&[String]> for OriginConfig {
    fn from(mirrors: &[String]) -> Self {
        mirrors.to_vec().into()
    }
}

/// How a newly installed release proves itself before it is kept.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TrialConfig {
    /// Run after each install; the release is rolled back if it fails.
    pub health_check: Option<HealthCheck>,
    /// For apps that report their own health: after an install, the release stays on trial
    /// until [`Engine::confirm_healthy`](crate::Engine::confirm_healthy); this many [`Engine::record_start`](crate::Engine::record_start)s without it
    /// count as a crash loop, and the release is rolled back. `None`: no app trial.
    pub max_starts: Option<u32>,
}

impl TrialConfig {
    /// A trial that runs `check` after each install.
    pub fn health_check(check: HealthCheck) -> Self {
        Self {
            health_check: Some(check),
            max_starts: None,
        }
    }

    /// A trial the app ends with [`Engine::confirm_healthy`](crate::Engine::confirm_healthy), failing after `max_starts`
    /// starts without it.
    pub fn app(max_starts: u32) -> Self {
        Self {
            health_check: None,
            max_starts: Some(max_starts),
        }
    }
}

/// A command run after each install, with the trial period as its time limit. It passes by
/// exiting 0 in time; anything else fails the release.
///
/// It runs with `RELSYNC_INSTALL` (the install directory), `RELSYNC_CURRENT` (its `current`
/// link) and `RELSYNC_VERSION` (the new release) in its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// How long it may take.
    pub trial_period: Duration,
}

impl HealthCheck {
    /// A shell command line (`sh -c LINE`).
    pub fn shell(line: impl Into<String>, trial_period: Duration) -> Self {
        Self {
            command: vec!["sh".into(), "-c".into(), line.into()],
            trial_period,
        }
    }
}
