//! The update lifecycle for apps and agents: check, download, install, health, rollback.
//!
//! [`Engine`] wraps the pipeline ([`Updater`]) in the operations an app exposes to its users,
//! each reported as [`Event`]s on [`Engine::events`] and recorded in the install's audit log:
//!
//! ```text
//! check() ─▶ UpdateAvailable ─▶ download() (background, resumable) ─▶ install() ─▶ trial
//!                                                                      │
//!                            health check fails / crash loop ◀─────────┘ ─▶ rollback, marked bad
//! ```
//!
//! [`Engine::run`] drives it all under a [`Policy`]; [`blocking::Engine`] is the same API for
//! apps without an async runtime.

pub mod blocking;
mod health;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use semver::Version;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::TrialConfig;
use crate::install::audit::{AuditEvent, AuditLog};
use crate::install::store::Trial;
use crate::peers::Peers;
use crate::pipeline::check::{Checked, Hold, now_unix};
use crate::pipeline::plan::plan;
use crate::policy::{Offer, Policy};
use crate::progress::{Event, Reporter};
use crate::runtime::blocking as spawn_blocking;
use crate::schedule::{self, Updates};
use crate::updater::{install_staged, roll_back, status_of};
use crate::{Error, FetchConfig, PublicKey, Result, Status, UpdateReport, Updater, UpdaterConfig};

/// What a check found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckOutcome {
    /// The installed release is the channel's.
    UpToDate {
        /// The installed version.
        version: Version,
    },
    /// The channel names another release, which this install does not take now.
    Held {
        /// The release offered.
        offered: Version,
        /// Why it is not taken.
        #[serde(flatten)]
        hold: Hold,
    },
    /// A release to take.
    Available(UpdateAvailable),
}

/// A release this install may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateAvailable {
    /// Its version.
    pub version: Version,
    /// The version installed now.
    pub installed: Option<Version>,
    /// Bytes a download would transfer (frames planned; metadata not included).
    pub bytes_on_wire: u64,
    /// Signed as critical: it bypasses maintenance windows and staged rollout.
    pub critical: bool,
    /// Release notes, as signed.
    pub notes: String,
    /// The installed release was yanked and the release role signed the way back to this one
    /// (a rollback directive).
    pub rollback: bool,
}

/// Counts and timings of one operation, for an app to forward where it likes. Nothing here
/// identifies the install, the user or the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// The operation: `check`, `download`, `install`, `update` or `rollback`.
    pub operation: &'static str,
    /// `ok`, `up_to_date`, `held`, `rolled_back` or `failed`.
    pub outcome: &'static str,
    /// Wall time.
    pub duration_ms: u64,
    /// Bytes received from the origin.
    pub bytes_from_origin: u64,
    /// Bytes received from LAN peers.
    pub bytes_from_peers: u64,
}

/// Receives a [`Sample`] after each operation. Nothing is collected unless an app installs
/// one, and relsync itself never sends it anywhere.
pub trait Telemetry: Send + Sync {
    /// Handles one sample; must be cheap.
    fn record(&self, sample: Sample);
}

/// What [`Engine::record_start`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StartOutcome {
    /// No release on trial.
    Committed,
    /// The current release is on trial: this is start number `starts`.
    OnTrial {
        /// Starts recorded without a healthy report.
        starts: u32,
    },
    /// The release crash-looped and was marked bad: restart into `to`.
    RolledBack {
        /// The release left (now marked bad).
        from: Version,
        /// The release now current; `None` if there was none to go back to (the bad one
        /// stays current until a newer release replaces it).
        to: Option<Version>,
    },
}

/// Builds an [`Engine`].
#[must_use]
pub struct EngineBuilder {
    config: UpdaterConfig,
    policy: Policy,
    peers: Option<Arc<dyn Peers>>,
    reporter: Option<Arc<dyn Reporter>>,
    telemetry: Option<Arc<dyn Telemetry>>,
    trial: TrialConfig,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
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

    /// Opens the install (creating it if needed) and takes its lock for the engine's life.
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
        let mut updater = Updater::open(config)?.with_reporter(fanout);
        if let Some(peers) = self.peers {
            updater = updater.with_peers(peers);
        }
        let audit = AuditLog::open(updater.layout())?;
        let time_zone = self.policy.time_zone()?;
        Ok(Engine {
            inner: Arc::new(Inner {
                updater,
                policy: Mutex::new(self.policy),
                time_zone,
                events,
                audit: Mutex::new(audit),
                telemetry: self.telemetry,
                trial: self.trial,
                op: tokio::sync::Mutex::new(()),
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

/// Keeps one install updated: the API an app embeds, and what `relsync daemon` runs.
///
/// Cloning is cheap; clones share the install (and its lock). Operations run one at a time.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    updater: Updater,
    policy: Mutex<Policy>,
    time_zone: jiff::tz::TimeZone,
    events: broadcast::Sender<Event>,
    audit: Mutex<AuditLog>,
    telemetry: Option<Arc<dyn Telemetry>>,
    trial: TrialConfig,
    /// One operation at a time.
    op: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("updater", &self.inner.updater)
            .finish_non_exhaustive()
    }
}

/// A download running in the background.
#[derive(Debug)]
pub struct Download {
    task: JoinHandle<Result<UpdateReport>>,
}

impl Download {
    /// Waits for it to finish.
    pub async fn wait(self) -> Result<UpdateReport> {
        self.task.await.map_err(|e| Error::Io {
            op: "waiting for",
            path: PathBuf::from("the download task"),
            source: std::io::Error::other(e.to_string()),
        })?
    }

    /// Stops it. Verified chunks stay on disk, so the next download resumes where it stopped.
    pub fn cancel(&self) {
        self.task.abort();
    }

    /// Whether it has finished (or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Engine {
    /// Starts building an engine for the install at `install_dir`, updated from `origin`
    /// (`http(s)://…`, `file://…` or a folder, or several mirrors as an
    /// [`OriginConfig`](crate::OriginConfig)) and trusting metadata signed by `trusted_keys`.
    pub fn builder(
        origin: impl Into<crate::OriginConfig>,
        trusted_keys: Vec<PublicKey>,
        install_dir: impl Into<PathBuf>,
    ) -> EngineBuilder {
        let policy = Policy::default();
        EngineBuilder {
            config: UpdaterConfig::new(origin, policy.channel.clone(), trusted_keys, install_dir),
            policy,
            peers: None,
            reporter: None,
            telemetry: None,
            trial: TrialConfig::default(),
        }
    }

    /// Every event from now on. A receiver that falls more than 1,024 events behind skips
    /// the oldest ([`broadcast`] semantics).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The pipeline underneath, for what the lifecycle API does not cover (dry runs,
    /// [`Updater::share`] for peers).
    pub fn updater(&self) -> &Updater {
        &self.inner.updater
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        lock(&self.inner.policy).clone()
    }

    /// Follows `channel` from the next check on. A channel behind the installed release is
    /// held until it passes it: a switch never downgrades.
    pub fn set_channel(&self, channel: &str) -> Result<()> {
        self.inner.updater.set_channel(channel)?;
        lock(&self.inner.policy).channel = channel.to_owned();
        Ok(())
    }

    fn audit(&self, event: AuditEvent) {
        if let Err(e) = lock(&self.inner.audit).append(event) {
            tracing::warn!(error = %e, "could not write the audit log");
        }
    }

    fn emit(&self, event: Event) {
        self.inner.updater.reporter().report(event);
    }

    /// Reports a failed operation as an event, with its cause.
    fn failure<T>(&self, operation: &'static str, result: &Result<T>) {
        if let Err(e) = result {
            self.emit(Event::Failed {
                operation: operation.to_owned(),
                error: e.to_string(),
            });
        }
    }

    fn sample(&self, operation: &'static str, outcome: &'static str, started: Instant) {
        self.sample_bytes(operation, outcome, started, (0, 0));
    }

    fn sample_bytes(
        &self,
        operation: &'static str,
        outcome: &'static str,
        started: Instant,
        (bytes_from_origin, bytes_from_peers): (u64, u64),
    ) {
        if let Some(telemetry) = &self.inner.telemetry {
            telemetry.record(Sample {
                operation,
                outcome,
                duration_ms: started.elapsed().as_millis() as u64,
                bytes_from_origin,
                bytes_from_peers,
            });
        }
    }

    /// Fetches and verifies the channel's signed metadata, and says whether there is a
    /// release to take.
    pub async fn check(&self) -> Result<CheckOutcome> {
        let _op = self.inner.op.lock().await;
        let started = Instant::now();
        let channel = self.inner.updater.channel();
        let result = self.check_locked().await;
        let outcome = match &result {
            Ok(CheckOutcome::UpToDate { .. }) => "up_to_date",
            Ok(CheckOutcome::Held { .. }) => "held",
            Ok(CheckOutcome::Available(_)) => "ok",
            Err(_) => "failed",
        };
        self.sample("check", outcome, started);
        self.failure("check", &result);
        match &result {
            Ok(found) => {
                let (offered, installed) = match found {
                    CheckOutcome::UpToDate { version } => (Some(version), Some(version)),
                    CheckOutcome::Held { offered, .. } => (Some(offered), None),
                    CheckOutcome::Available(a) => (Some(&a.version), a.installed.as_ref()),
                };
                self.audit(AuditEvent::Checked {
                    channel,
                    offered: offered.cloned(),
                    installed: installed.cloned(),
                    outcome: outcome.to_owned(),
                });
            }
            Err(e) if e.is_verification_failure() => {
                self.audit(AuditEvent::VerificationFailed {
                    what: "channel metadata".into(),
                    error: e.to_string(),
                });
            }
            Err(_) => {}
        }
        result
    }

    async fn check_locked(&self) -> Result<CheckOutcome> {
        let updater = &self.inner.updater;
        let checked = updater.check(true).await?;
        let installed = checked.installed_version().cloned();
        if let Some(hold) = checked.held() {
            return Ok(CheckOutcome::Held {
                offered: checked.version().clone(),
                hold: hold.clone(),
            });
        }
        if checked.up_to_date() {
            return Ok(CheckOutcome::UpToDate {
                version: checked.version().clone(),
            });
        }
        let available = UpdateAvailable {
            version: checked.version().clone(),
            installed,
            bytes_on_wire: 0,
            critical: checked.critical(),
            notes: checked.notes().to_owned(),
            rollback: checked.directed_back(),
        };
        let bytes_on_wire = self.plan_bytes(checked).await?;
        let available = UpdateAvailable {
            bytes_on_wire,
            ..available
        };
        self.emit(Event::UpdateAvailable {
            version: available.version.clone(),
            bytes_on_wire,
            critical: available.critical,
        });
        Ok(CheckOutcome::Available(available))
    }

    async fn plan_bytes(&self, checked: Checked) -> Result<u64> {
        let updater = &self.inner.updater;
        let (layout, store) = (updater.layout().clone(), updater.store().clone());
        let fetch = updater.fetch_config().clone();
        let planned = spawn_blocking(move || plan(checked, &layout, &store, &fetch)).await?;
        Ok(planned.plan().totals.bytes_to_fetch)
    }

    /// Downloads the channel's release in the background: fetched, verified and staged for
    /// [`install`](Self::install). Progress arrives as [`Event::Fetched`]; an interrupted
    /// download resumes from the chunks already verified. Stops with
    /// [`Error::Withdrawn`] if the publisher yanks the release meanwhile.
    ///
    /// Call it inside a Tokio runtime: it spawns a task.
    pub fn download(&self) -> Download {
        let engine = self.clone();
        Download {
            task: tokio::spawn(async move { engine.download_now().await }),
        }
    }

    async fn download_now(&self) -> Result<UpdateReport> {
        let _op = self.inner.op.lock().await;
        let started = Instant::now();
        let result = self.inner.updater.download().await;
        match &result {
            Ok(report) if report.rolled_back => {
                // A signed rollback directive was followed: nothing to stage.
                self.rolled_back_by_directive(report);
                self.sample("download", "rolled_back", started);
            }
            Ok(report) => {
                let bytes = (report.bytes_from_origin, report.bytes_from_peers);
                if !report.up_to_date {
                    self.emit(Event::Downloaded {
                        version: report.version.clone(),
                        bytes_from_origin: report.bytes_from_origin,
                        bytes_from_peers: report.bytes_from_peers,
                    });
                    self.audit(AuditEvent::Downloaded {
                        version: report.version.clone(),
                        bytes_from_origin: report.bytes_from_origin,
                        bytes_from_peers: report.bytes_from_peers,
                    });
                }
                let outcome = if report.up_to_date {
                    "up_to_date"
                } else {
                    "ok"
                };
                self.sample_bytes("download", outcome, started, bytes);
            }
            Err(e) => {
                if let Error::Withdrawn(version) = e {
                    self.audit(AuditEvent::Yanked {
                        version: version.clone(),
                        rolled_back: false,
                    });
                }
                self.failed(e);
                self.sample("download", "failed", started);
            }
        }
        self.failure("download", &result);
        result
    }

    fn rolled_back_by_directive(&self, report: &UpdateReport) {
        if let Some(from) = &report.previous_version {
            self.audit(AuditEvent::Yanked {
                version: from.clone(),
                rolled_back: true,
            });
            self.audit(AuditEvent::RolledBack {
                from: from.clone(),
                to: report.version.clone(),
                reason: "the publisher yanked it".into(),
            });
            self.emit(Event::RestartRequired {
                version: report.version.clone(),
            });
        }
    }

    fn failed(&self, e: &Error) {
        if e.is_verification_failure() {
            self.audit(AuditEvent::VerificationFailed {
                what: "download".into(),
                error: e.to_string(),
            });
        }
    }

    /// Installs the downloaded release: switches `current` to it atomically, keeping the
    /// one before for rollback, then puts it on trial ([`TrialConfig`]). A failed health
    /// check rolls it back, marks it bad and returns [`Error::Unhealthy`].
    pub async fn install(&self) -> Result<UpdateReport> {
        let _op = self.inner.op.lock().await;
        let started = Instant::now();
        let result = self.install_locked().await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::Unhealthy { .. }) => "rolled_back",
            Err(_) => "failed",
        };
        self.sample("install", outcome, started);
        self.failure("install", &result);
        result
    }

    async fn install_locked(&self) -> Result<UpdateReport> {
        let updater = &self.inner.updater;
        let (layout, store) = (updater.layout().clone(), updater.store().clone());
        if let Some(staged) = store.staged()? {
            self.emit(Event::InstallStarted {
                version: staged.version.clone(),
            });
        }
        let reporter = updater.reporter().clone();
        let report = {
            let (layout, store) = (layout.clone(), store.clone());
            spawn_blocking(move || install_staged(&layout, &store, &reporter)).await
        };
        let report = match report {
            Ok(report) => report,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        self.settle(report).await
    }

    /// Checks, downloads and installs in one go, as the policy's auto flags would, but now:
    /// held releases ([`Hold`]) are still not taken. The new release goes on trial like
    /// after [`install`](Self::install).
    pub async fn update(&self) -> Result<UpdateReport> {
        let _op = self.inner.op.lock().await;
        let started = Instant::now();
        let result = self.update_locked().await;
        let outcome = match &result {
            Ok(r) if r.up_to_date => "up_to_date",
            Ok(r) if r.rolled_back => "rolled_back",
            Ok(_) => "ok",
            Err(Error::Unhealthy { .. }) => "rolled_back",
            Err(_) => "failed",
        };
        let bytes = result
            .as_ref()
            .map_or((0, 0), |r| (r.bytes_from_origin, r.bytes_from_peers));
        self.sample_bytes("update", outcome, started, bytes);
        self.failure("update", &result);
        result
    }

    async fn update_locked(&self) -> Result<UpdateReport> {
        self.resume_trial().await?;
        let report = match self.inner.updater.update().await {
            Ok(report) => report,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        if report.rolled_back {
            self.rolled_back_by_directive(&report);
            return Ok(report);
        }
        if report.up_to_date {
            return Ok(report);
        }
        self.audit(AuditEvent::Downloaded {
            version: report.version.clone(),
            bytes_from_origin: report.bytes_from_origin,
            bytes_from_peers: report.bytes_from_peers,
        });
        self.settle(report).await
    }

    /// After a switch: records it, starts the trial, runs the health check.
    async fn settle(&self, report: UpdateReport) -> Result<UpdateReport> {
        let updater = &self.inner.updater;
        let store = updater.store().clone();
        let current = store.current()?;
        // First, so a crash from here on leaves the release on trial, not kept.
        let on_trial =
            self.inner.trial.health_check.is_some() || self.inner.trial.max_starts.is_some();
        if on_trial && let Some(current) = &current {
            store.set_trial(Some(&Trial {
                version: current.manifest.version.clone(),
                manifest: current.manifest.id(),
                started_unix: now_unix(),
                starts: 0,
            }))?;
        }
        self.audit(AuditEvent::Installed {
            version: report.version.clone(),
            previous: report.previous_version.clone(),
            manifest: current
                .map(|r| r.manifest.id().to_string())
                .unwrap_or_default(),
        });
        updater.share().refresh()?;
        self.run_health_check(&report.version).await?;
        self.emit(Event::RestartRequired {
            version: report.version.clone(),
        });
        Ok(report)
    }

    /// Runs the health check (if any) of the release on trial: passing ends the trial
    /// (unless the app confirms its own health too), failing rejects the release.
    async fn run_health_check(&self, version: &Version) -> Result<()> {
        let updater = &self.inner.updater;
        let (layout, store) = (updater.layout().clone(), updater.store().clone());
        if let Some(check) = &self.inner.trial.health_check {
            let report_version = version.clone();
            let verdict = check.run(layout.root(), &report_version).await;
            self.audit(AuditEvent::HealthCheck {
                version: report_version.clone(),
                passed: verdict.is_ok(),
                detail: verdict.as_ref().err().cloned().unwrap_or_default(),
            });
            match verdict {
                Ok(()) if self.inner.trial.max_starts.is_none() => store.set_trial(None)?,
                Ok(()) => {}
                Err(detail) => {
                    let restored = self.reject(&report_version, &detail).await?;
                    return Err(Error::Unhealthy {
                        version: report_version,
                        detail,
                        restored,
                    });
                }
            }
        }
        Ok(())
    }

    /// A health check a crash interrupted is run again: a release is never kept without it.
    async fn resume_trial(&self) -> Result<()> {
        if self.inner.trial.health_check.is_none() {
            return Ok(());
        }
        match self.current_trial()? {
            Some(trial) => self.run_health_check(&trial.version).await,
            None => Ok(()),
        }
    }

    /// The trial of the current release, if it is on one; a trial left from another release
    /// is dropped.
    fn current_trial(&self) -> Result<Option<Trial>> {
        let store = self.inner.updater.store();
        let Some(trial) = store.trial()? else {
            return Ok(None);
        };
        if store.current()?.map(|r| r.manifest.id()) == Some(trial.manifest) {
            return Ok(Some(trial));
        }
        store.set_trial(None)?;
        Ok(None)
    }

    /// Marks the release on trial bad and rolls it back; returns the version restored, or
    /// `None` when there is no earlier release to go back to (it stays, marked bad).
    async fn reject(&self, version: &Version, reason: &str) -> Result<Option<Version>> {
        let updater = &self.inner.updater;
        let (layout, store) = (updater.layout().clone(), updater.store().clone());
        let (bad, why) = (version.clone(), reason.to_owned());
        let moved = spawn_blocking(move || {
            store.mark_bad(&bad, &why)?;
            store.set_trial(None)?;
            match roll_back(&layout, &store) {
                Ok(moved) => Ok(Some(moved)),
                Err(Error::NothingInstalled(_)) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        self.audit(AuditEvent::MarkedBad {
            version: version.clone(),
            reason: reason.to_owned(),
        });
        let Some((from, to)) = moved else {
            return Ok(None);
        };
        updater.share().refresh()?;
        self.audit(AuditEvent::RolledBack {
            from: from.clone(),
            to: to.clone(),
            reason: reason.to_owned(),
        });
        self.emit(Event::RolledBack {
            from,
            to: to.clone(),
            reason: reason.to_owned(),
        });
        self.emit(Event::RestartRequired {
            version: to.clone(),
        });
        Ok(Some(to))
    }

    /// Switches `current` back to the release kept for rollback. Returns (left, now current).
    pub async fn rollback(&self) -> Result<(Version, Version)> {
        let _op = self.inner.op.lock().await;
        let started = Instant::now();
        let updater = &self.inner.updater;
        let (layout, store) = (updater.layout().clone(), updater.store().clone());
        let result = spawn_blocking(move || roll_back(&layout, &store)).await;
        self.sample(
            "rollback",
            if result.is_ok() { "ok" } else { "failed" },
            started,
        );
        self.failure("rollback", &result);
        let (from, to) = result?;
        updater.share().refresh()?;
        self.audit(AuditEvent::RolledBack {
            from: from.clone(),
            to: to.clone(),
            reason: "asked for".into(),
        });
        self.emit(Event::RolledBack {
            from: from.clone(),
            to: to.clone(),
            reason: "asked for".into(),
        });
        self.emit(Event::RestartRequired {
            version: to.clone(),
        });
        Ok((from, to))
    }

    /// What the install holds: versions, staged release, trial, releases marked bad.
    pub async fn status(&self) -> Result<Status> {
        let updater = &self.inner.updater;
        let (layout, store) = (updater.layout().clone(), updater.store().clone());
        spawn_blocking(move || status_of(&layout, &store)).await
    }

    /// Records an app start. Call it once at startup: while the current release is on trial
    /// (see [`TrialConfig::max_starts`]), too many starts without
    /// [`confirm_healthy`](Self::confirm_healthy) roll it back.
    pub async fn record_start(&self) -> Result<StartOutcome> {
        let _op = self.inner.op.lock().await;
        let store = self.inner.updater.store().clone();
        let Some(mut trial) = self.current_trial()? else {
            return Ok(StartOutcome::Committed);
        };
        trial.starts += 1;
        let max = self.inner.trial.max_starts.unwrap_or(u32::MAX);
        if trial.starts <= max {
            store.set_trial(Some(&trial))?;
            return Ok(StartOutcome::OnTrial {
                starts: trial.starts,
            });
        }
        let reason = format!("{} starts without a healthy report", trial.starts - 1);
        self.audit(AuditEvent::HealthCheck {
            version: trial.version.clone(),
            passed: false,
            detail: reason.clone(),
        });
        let to = self.reject(&trial.version, &reason).await?;
        Ok(StartOutcome::RolledBack {
            from: trial.version,
            to,
        })
    }

    /// Reports the current release healthy: it leaves its trial and is kept. Returns false
    /// if nothing was on trial. A report after that — healthy or not — never rolls back.
    pub async fn confirm_healthy(&self) -> Result<bool> {
        let _op = self.inner.op.lock().await;
        let store = self.inner.updater.store().clone();
        let Some(trial) = store.trial()? else {
            return Ok(false);
        };
        store.set_trial(None)?;
        self.audit(AuditEvent::HealthCheck {
            version: trial.version,
            passed: true,
            detail: "reported healthy by the app".into(),
        });
        Ok(true)
    }

    /// Reports the current release unhealthy. On trial, it is marked bad and rolled back
    /// (returns the version restored, if there was one); once committed, the report is only
    /// recorded.
    pub async fn report_unhealthy(&self, detail: &str) -> Result<Option<Version>> {
        let _op = self.inner.op.lock().await;
        let store = self.inner.updater.store().clone();
        let Some(version) = store.current()?.map(|r| r.manifest.version.clone()) else {
            return Ok(None);
        };
        self.audit(AuditEvent::HealthCheck {
            version: version.clone(),
            passed: false,
            detail: detail.to_owned(),
        });
        match self.current_trial()? {
            Some(_) => self.reject(&version, detail).await,
            None => Ok(None),
        }
    }

    /// Keeps the install updated under the policy until `stop` resolves: checks every
    /// interval, downloads and installs as the policy allows (critical releases at once),
    /// and retries failures with backoff. Errors never end it.
    pub async fn run(&self, stop: impl Future<Output = ()>) -> schedule::RunStats {
        {
            let _op = self.inner.op.lock().await;
            if let Err(e) = self.resume_trial().await {
                self.emit(Event::Failed {
                    operation: "install".into(),
                    error: e.to_string(),
                });
            }
        }
        let policy = self.policy();
        let tz = &self.inner.time_zone;
        schedule::run(&policy, tz, self, &schedule::SystemClock, stop).await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Updates for Engine {
    async fn check(&self) -> Result<Option<Offer>> {
        match Engine::check(self).await? {
            CheckOutcome::Available(available) => {
                let staged = self.inner.updater.store().staged()?;
                Ok(Some(Offer {
                    critical: available.critical,
                    in_rollout: true,
                    staged: staged.is_some_and(|m| m.version == available.version),
                }))
            }
            CheckOutcome::UpToDate { .. } | CheckOutcome::Held { .. } => Ok(None),
        }
    }

    async fn download(&self) -> Result<()> {
        Engine::download(self).wait().await.map(drop)
    }

    async fn install(&self) -> Result<()> {
        // A download that followed a signed rollback directive switched already.
        if self.inner.updater.store().staged()?.is_none() {
            return Ok(());
        }
        Engine::install(self).await.map(drop)
    }
}
