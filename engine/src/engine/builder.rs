//! Building an [`Engine`]: the install, where its releases come from, and what it reports.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{Engine, Inner, Telemetry};
use crate::config::{OriginConfig, TrialConfig, UpdaterConfig};
use crate::install::audit::AuditLog;
use crate::peers::Peers;
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::progress::{Event, Reporter};
use crate::{FetchConfig, PublicKey, Result};

/// Builds an [`Engine`]: [`Engine::builder`] for an install updated from an origin,
/// [`Engine::local`] for the install alone.
///
/// # Defaults
/// - channel, check interval, window: [`Policy::default`] (`stable`, hourly, any time)
/// - product: none (a fresh install needs one, or a pinned root document)
/// - platform: [`this_platform`](crate::this_platform)
/// - transfer: [`FetchConfig::default`]
/// - trial: none ([`TrialConfig::default`])
/// - peers, reporter, telemetry: none
/// - adopt: off (a non-empty directory that is not an install is refused)
#[must_use]
pub struct EngineBuilder {
    pub(super) config: UpdaterConfig,
    /// Opened for the install alone: no origin.
    pub(super) local: bool,
    pub(super) policy: Policy,
    pub(super) peers: Option<Arc<dyn Peers>>,
    pub(super) reporter: Option<Arc<dyn Reporter>>,
    pub(super) telemetry: Option<Arc<dyn Telemetry>>,
    pub(super) trial: TrialConfig,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .field("local", &self.local)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    pub(super) fn new(
        origin: OriginConfig,
        trusted_keys: Vec<PublicKey>,
        install_dir: PathBuf,
        local: bool,
    ) -> Self {
        let policy = Policy::default();
        Self {
            config: UpdaterConfig::new(origin, policy.channel.clone(), trusted_keys, install_dir),
            local,
            policy,
            peers: None,
            reporter: None,
            telemetry: None,
            trial: TrialConfig::default(),
        }
    }

    /// The channel to follow (default: the policy's, `stable`).
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.policy.channel = channel.into();
        self
    }

    /// The product to install; releases of any other are refused. A fresh install needs it
    /// (or a pinned root document, which names its product).
    pub fn product(mut self, product: impl Into<String>) -> Self {
        self.config.product = Some(product.into());
        self
    }

    /// Installs into the directory even if it holds files and is not a relsync install yet
    /// (default: refused). relsync still never deletes or replaces what it did not create.
    pub fn adopt(mut self, adopt: bool) -> Self {
        self.config.adopt = adopt;
        self
    }

    /// Starts the root chain at a pinned root document instead of the trusted keys.
    pub fn trusted_root(mut self, root: Vec<u8>) -> Self {
        self.config.trusted_root = Some(root);
        self
    }

    /// This install's platform (default: [`this_platform`](crate::this_platform)).
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.config.platform = platform.into();
        self
    }

    /// Transfer settings.
    pub fn fetch(mut self, fetch: FetchConfig) -> Self {
        self.config.fetch = fetch;
        self
    }

    /// The policy [`Engine::run`] follows; its channel becomes the engine's.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Fetches from LAN peers before the origin.
    pub fn peers(mut self, peers: Arc<dyn Peers>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Also sends every event to `reporter` (besides [`Engine::events`]).
    pub fn reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = Some(reporter);
        self
    }

    /// Hands counts and timings of each operation to `telemetry`.
    pub fn telemetry(mut self, telemetry: Arc<dyn Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// How new releases prove themselves.
    pub fn trial(mut self, trial: TrialConfig) -> Self {
        self.trial = trial;
        self
    }

    /// Opens the install and takes its lock for the engine's life. An engine from
    /// [`Engine::builder`] creates the install if needed; one from [`Engine::local`] needs an
    /// existing install.
    pub fn open(self) -> Result<Engine> {
        let (events, _) = broadcast::channel(1024);
        let fanout = Arc::new(Fanout {
            events: events.clone(),
            also: self.reporter,
        });
        let config = UpdaterConfig {
            channel: self.policy.channel.clone(),
            ..self.config
        };
        let (pipeline, audit) = if self.local {
            // The audit log is opened at the first record: a status or a verify writes
            // nothing.
            (Pipeline::open_local(config, fanout)?, None)
        } else {
            let pipeline = Pipeline::open(config, fanout)?;
            let audit = AuditLog::open(pipeline.layout())?;
            (pipeline, Some(audit))
        };
        if let Some(peers) = self.peers {
            pipeline.attach_peers(peers);
        }
        let time_zone = self.policy.time_zone()?;
        Ok(Engine {
            inner: Arc::new(Inner {
                pipeline,
                policy: Mutex::new(self.policy),
                time_zone,
                events,
                audit: Mutex::new(audit),
                telemetry: self.telemetry,
                trial: self.trial,
                op: tokio::sync::Mutex::new(None),
                offered: Mutex::new(None),
            }),
        })
    }
}

/// Sends events to subscribers and to an optional reporter.
struct Fanout {
    events: broadcast::Sender<Event>,
    also: Option<Arc<dyn Reporter>>,
}

impl Reporter for Fanout {
    fn report(&self, event: Event) {
        if let Some(also) = &self.also {
            also.report(event.clone());
        }
        // No subscriber is fine.
        let _ = self.events.send(event);
    }
}
