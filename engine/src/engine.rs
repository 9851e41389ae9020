//! The one front door: [`Engine`] keeps one install updated from one origin.
//!
//! It runs the pipeline (check → plan → fetch → assemble → verify → apply) in the operations an
//! app exposes to its users, each reported as [`Event`]s on [`Engine::events`] and recorded in
//! the install's audit log:
//!
//! ```text
//! check() ─▶ UpdateAvailable ─▶ download() (background, resumable) ─▶ install() ─▶ trial
//!                                                                      │
//!                            health check fails / crash loop ◀─────────┘ ─▶ rollback, marked bad
//! ```
//!
//! A check plans too (to say how many bytes a download takes); the next download fetches
//! that plan as it is, unless the channel's pointer changed meanwhile. [`Engine::run`] drives
//! it all under a [`Policy`]; [`blocking::Engine`] is the same API for apps without an async
//! runtime. [`Engine::local`] opens an install without an origin: status, verify, rollback
//! and the install of a staged release.

pub mod blocking;
mod builder;
mod health;
mod read_only;
mod trial;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use semver::Version;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::{OriginConfig, TrialConfig};
use crate::install::Status;
use crate::install::audit::{AuditEvent, AuditLog};
use crate::install::store::BadRelease;
use crate::peers::Peers;
use crate::pipeline::check::Hold;
use crate::pipeline::plan::UpdatePlan;
use crate::pipeline::verify::InstallCheck;
use crate::pipeline::{Pipeline, Prepared, UpdateReport};
use crate::policy::{Offer, Policy};
use crate::progress::Event;
use crate::runtime::blocking as spawn_blocking;
use crate::schedule::{self, Updates};
use crate::share::Share;
use crate::{Error, PublicKey, Result};

pub use builder::EngineBuilder;
pub use read_only::ReadOnlyInstall;
pub use trial::StartOutcome;

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

/// What [`Engine::repair`] found and did.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// The differences from the signed manifest found before the repair, one line each
    /// (empty: nothing to repair, and nothing was done).
    pub problems: Vec<String>,
    /// The rebuild, when there was something to repair.
    pub rebuilt: Option<UpdateReport>,
}

/// Counts and timings of one operation, for an app to forward where it likes. Nothing here
/// identifies the install, the user or the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// The operation: `check`, `download`, `install`, `update`, `rollback` or `repair`.
    pub operation: &'static str,
    /// `ok`, `up_to_date`, `held`, `rolled_back`, `failed`, or `interrupted` (dropped before
    /// it finished, e.g. by a daemon that stopped: its bytes are those received so far).
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

/// Keeps one install updated: the API an app embeds, and what `relsync` runs.
///
/// Cloning is cheap; clones share the install (and its lock). Operations run one at a time.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    pipeline: Pipeline,
    policy: Mutex<Policy>,
    time_zone: jiff::tz::TimeZone,
    events: broadcast::Sender<Event>,
    /// `None` until the first record of an engine opened for the install alone.
    audit: Mutex<Option<AuditLog>>,
    telemetry: Option<Arc<dyn Telemetry>>,
    /// The release the scheduler's last check found available, named by its waits.
    offered: Mutex<Option<Version>>,
    trial: TrialConfig,
    /// One operation at a time. Holds what the last check found and planned, for the next
    /// download (or update) to fetch; any other operation that changes the install drops it.
    op: tokio::sync::Mutex<Option<Prepared>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("pipeline", &self.inner.pipeline)
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
    /// [`OriginConfig`]) and trusting metadata signed by `trusted_keys`.
    pub fn builder(
        origin: impl Into<OriginConfig>,
        trusted_keys: Vec<PublicKey>,
        install_dir: impl Into<PathBuf>,
    ) -> EngineBuilder {
        EngineBuilder::new(origin.into(), trusted_keys, install_dir.into(), false)
    }

    /// Starts building an engine for the existing install at `install_dir` alone, with no
    /// origin: [`status`](Self::status), [`verify`](Self::verify),
    /// [`rollback`](Self::rollback), [`install`](Self::install) of a release a download
    /// staged (offline), [`share`](Self::share) and the trial calls work; `check`,
    /// `download`, `update` and `dry_run` fail with [`Error::NoOrigin`]. The install is
    /// never created, and its releases are only checked for ownership before a switch. The
    /// builder's origin, channel, trust and transfer settings do not apply.
    pub fn local(install_dir: impl Into<PathBuf>) -> EngineBuilder {
        EngineBuilder::new(
            OriginConfig::default(),
            Vec::new(),
            install_dir.into(),
            true,
        )
    }

    /// Every event from now on. A receiver that falls more than 1,024 events behind skips
    /// the oldest ([`broadcast`] semantics).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        lock(&self.inner.policy).clone()
    }

    /// Follows `channel` from the next check on. A channel behind the installed release is
    /// held until it passes it: a switch never downgrades.
    pub fn set_channel(&self, channel: &str) -> Result<()> {
        self.inner.pipeline.set_channel(channel)?;
        lock(&self.inner.policy).channel = channel.to_owned();
        Ok(())
    }

    /// What this install offers LAN peers: hand it to the network (`relsync-peer`'s node)
    /// before updating, so peers can fetch from it while it fetches.
    pub fn share(&self) -> Share {
        self.inner.pipeline.share().clone()
    }

    /// Asks `peers` for chunks (and, when the origin fails, for metadata) before the origin,
    /// from the next operation on. Returns false, changing nothing, if peers were attached
    /// before (here or with [`EngineBuilder::peers`]).
    pub fn attach_peers(&self, peers: Arc<dyn Peers>) -> bool {
        self.inner.pipeline.attach_peers(peers)
    }

    fn audit(&self, event: AuditEvent) {
        let mut audit = lock(&self.inner.audit);
        let appended = match &mut *audit {
            Some(log) => log.append(event),
            None => AuditLog::open(self.inner.pipeline.layout()).and_then(|log| {
                let log = audit.insert(log);
                log.append(event)
            }),
        };
        if let Err(e) = appended {
            tracing::warn!(error = %e, "could not write the audit log");
        }
    }

    fn emit(&self, event: Event) {
        self.inner.pipeline.reporter().report(event);
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
    ///
    /// What it planned for an offered release (reported as
    /// [`UpdateAvailable::bytes_on_wire`]) is kept: the next [`download`](Self::download) or
    /// [`update`](Self::update) fetches it without checking again, unless the channel's
    /// pointer changed meanwhile.
    pub async fn check(&self) -> Result<CheckOutcome> {
        let mut op = self.inner.op.lock().await;
        let started = Instant::now();
        let channel = self.inner.pipeline.channel();
        *op = None;
        let result = match self.inner.pipeline.prepare("check").await {
            Ok(prepared) => {
                let outcome = self.check_outcome(&prepared);
                if let CheckOutcome::Available(_) = &outcome {
                    *op = Some(prepared);
                }
                Ok(outcome)
            }
            Err(e) => Err(e),
        };
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

    /// What `prepared` offers, reported as an event when it is a release to take.
    fn check_outcome(&self, prepared: &Prepared) -> CheckOutcome {
        let checked = prepared.checked();
        if let Some(hold) = checked.held() {
            self.emit(Event::Waiting {
                version: checked.version().clone(),
                reason: format!("held: {hold}"),
            });
            return CheckOutcome::Held {
                offered: checked.version().clone(),
                hold: hold.clone(),
            };
        }
        if checked.up_to_date() {
            return CheckOutcome::UpToDate {
                version: checked.version().clone(),
            };
        }
        let available = UpdateAvailable {
            version: checked.version().clone(),
            installed: checked.installed_version().cloned(),
            bytes_on_wire: prepared.bytes_to_fetch(),
            critical: checked.critical(),
            notes: checked.notes().to_owned(),
            rollback: checked.directed_back(),
        };
        self.emit(Event::UpdateAvailable {
            version: available.version.clone(),
            bytes_on_wire: available.bytes_on_wire,
            critical: available.critical,
        });
        CheckOutcome::Available(available)
    }

    /// Checks and plans without changing anything: what an update would do
    /// (`relsync update --dry-run`).
    pub async fn dry_run(&self) -> Result<UpdatePlan> {
        self.inner.pipeline.dry_run().await
    }

    /// Downloads the channel's release in the background: fetched, verified and staged for
    /// [`install`](Self::install). Progress arrives as [`Event::Fetched`]; an interrupted
    /// download resumes from the chunks already verified. Stops with
    /// [`Error::Withdrawn`] if the publisher yanks the release meanwhile. It fetches what the
    /// last [`check`](Self::check) planned, if the channel's pointer is still the one that
    /// check verified; else it checks and plans again.
    ///
    /// Call it inside a Tokio runtime: it spawns a task.
    pub fn download(&self) -> Download {
        let engine = self.clone();
        Download {
            task: tokio::spawn(async move { engine.download_now().await }),
        }
    }

    async fn download_now(&self) -> Result<UpdateReport> {
        let mut op = self.inner.op.lock().await;
        let started = Instant::now();
        let unfinished = Unfinished::new(self, "download", started);
        let result = self.inner.pipeline.run(op.take(), false, "download").await;
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
                let bytes = (unfinished.origin_bytes(), 0);
                self.sample_bytes("download", "failed", started, bytes);
            }
        }
        unfinished.finish();
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
    ///
    /// On an engine from [`Engine::local`] this is `relsync apply`: offline, and the staged
    /// manifest is not checked for expiry again (it was verified before it expired).
    pub async fn install(&self) -> Result<UpdateReport> {
        let mut op = self.inner.op.lock().await;
        *op = None;
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
        if let Some(staged) = self.inner.pipeline.store().staged()? {
            self.emit(Event::InstallStarted {
                version: staged.manifest.version.clone(),
            });
        }
        let engine = self.clone();
        let report = spawn_blocking(move || engine.inner.pipeline.install_staged()).await;
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
        let mut op = self.inner.op.lock().await;
        let started = Instant::now();
        let unfinished = Unfinished::new(self, "update", started);
        let prepared = op.take();
        let result = self.update_locked(prepared).await;
        let outcome = match &result {
            Ok(r) if r.up_to_date => "up_to_date",
            Ok(r) if r.rolled_back => "rolled_back",
            Ok(_) => "ok",
            Err(Error::Unhealthy { .. }) => "rolled_back",
            Err(_) => "failed",
        };
        let bytes = result.as_ref().map_or((unfinished.origin_bytes(), 0), |r| {
            (r.bytes_from_origin, r.bytes_from_peers)
        });
        unfinished.finish();
        self.sample_bytes("update", outcome, started, bytes);
        self.failure("update", &result);
        result
    }

    async fn update_locked(&self, prepared: Option<Prepared>) -> Result<UpdateReport> {
        self.resume_trial().await?;
        let report = match self.inner.pipeline.run(prepared, true, "update").await {
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

    /// Switches `current` back to the release kept for rollback. Returns (left, now current).
    pub async fn rollback(&self) -> Result<(Version, Version)> {
        let mut op = self.inner.op.lock().await;
        *op = None;
        let started = Instant::now();
        let engine = self.clone();
        let result = spawn_blocking(move || engine.inner.pipeline.roll_back()).await;
        self.sample(
            "rollback",
            if result.is_ok() { "ok" } else { "failed" },
            started,
        );
        self.failure("rollback", &result);
        let (from, to) = result?;
        self.inner.pipeline.share().refresh()?;
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

    /// Checks the installed release against its signed manifest (as [`verify`](Self::verify))
    /// and, if it drifted, builds it again as an update would (`relsync repair`): the files
    /// that still verify are linked, the others written from verified chunks (local, else
    /// fetched from the origin), the tree verified and switched to atomically. The release
    /// kept for rollback stays.
    pub async fn repair(&self) -> Result<RepairReport> {
        let mut op = self.inner.op.lock().await;
        *op = None;
        let started = Instant::now();
        let engine = self.clone();
        let check = spawn_blocking(move || engine.inner.pipeline.verify_install()).await?;
        if check.ok() {
            return Ok(RepairReport {
                problems: check.problems,
                rebuilt: None,
            });
        }
        let result = self.inner.pipeline.repair().await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        let bytes = result
            .as_ref()
            .map_or((0, 0), |r| (r.bytes_from_origin, r.bytes_from_peers));
        self.sample_bytes("repair", outcome, started, bytes);
        self.failure("repair", &result);
        let report = result?;
        self.audit(AuditEvent::Repaired {
            version: report.version.clone(),
            problems: check.problems.len() as u64,
        });
        self.emit(Event::RestartRequired {
            version: report.version.clone(),
        });
        Ok(RepairReport {
            problems: check.problems,
            rebuilt: Some(report),
        })
    }

    /// Clears the bad mark of `version` (a release that failed its trial here), so that it
    /// may be installed again, and records that in the audit log. Returns why it had been
    /// marked; [`Error::NotMarkedBad`] if it was not.
    pub async fn retry(&self, version: &Version) -> Result<BadRelease> {
        let _op = self.inner.op.lock().await;
        let engine = self.clone();
        let wanted = version.clone();
        let mark = spawn_blocking(move || engine.inner.pipeline.unmark_bad(&wanted)).await?;
        let Some(mark) = mark else {
            return Err(Error::NotMarkedBad(version.clone()));
        };
        self.audit(AuditEvent::Unmarked {
            version: mark.version.clone(),
            reason: mark.reason.clone(),
        });
        Ok(mark)
    }

    /// What the install holds: versions, staged release, trial, releases marked bad. Read
    /// through this engine's store; to read an install another process holds (no lock, no
    /// write access), use [`ReadOnlyInstall`](crate::ReadOnlyInstall).
    pub async fn status(&self) -> Result<Status> {
        let engine = self.clone();
        spawn_blocking(move || engine.inner.pipeline.status()).await
    }

    /// Checks the installed release against its signed manifest (`relsync verify`):
    /// `current` points at the release the store records, every file has its signed hash and
    /// mode, every link its target, and nothing else is in the tree. Without this engine's
    /// lock: [`ReadOnlyInstall::verify`](crate::ReadOnlyInstall::verify).
    pub async fn verify(&self) -> Result<InstallCheck> {
        let engine = self.clone();
        spawn_blocking(move || engine.inner.pipeline.verify_install()).await
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

/// An operation under way: dropped before [`Unfinished::finish`] (the daemon stopping, a
/// caller giving up), it records a sample with outcome `interrupted` and the origin bytes
/// received so far, so byte counts include work that was cut short. (Bytes from peers are
/// counted only by operations that finish.)
struct Unfinished<'a> {
    engine: &'a Engine,
    operation: &'static str,
    started: Instant,
    /// The origin's byte count when the operation started.
    origin_bytes_before: Option<u64>,
    finished: bool,
}

impl<'a> Unfinished<'a> {
    fn new(engine: &'a Engine, operation: &'static str, started: Instant) -> Self {
        Self {
            engine,
            operation,
            started,
            origin_bytes_before: engine.inner.pipeline.origin_bytes(),
            finished: false,
        }
    }

    /// Bytes the origin sent since the operation started.
    fn origin_bytes(&self) -> u64 {
        let now = self.engine.inner.pipeline.origin_bytes();
        now.unwrap_or(0)
            .saturating_sub(self.origin_bytes_before.unwrap_or(0))
    }

    /// The operation records its own sample.
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let bytes = (self.origin_bytes(), 0);
            self.engine
                .sample_bytes(self.operation, "interrupted", self.started, bytes);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Updates for Engine {
    async fn check(&self) -> Result<Option<Offer>> {
        match Engine::check(self).await? {
            CheckOutcome::Available(available) => {
                *lock(&self.inner.offered) = Some(available.version.clone());
                let staged = self.inner.pipeline.store().staged()?;
                Ok(Some(Offer {
                    critical: available.critical,
                    in_rollout: true,
                    staged: staged.is_some_and(|s| s.manifest.version == available.version),
                }))
            }
            CheckOutcome::UpToDate { .. } | CheckOutcome::Held { .. } => Ok(None),
        }
    }

    async fn download(&self) -> Result<()> {
        // Not spawned: a daemon that stops drops it here, and its sample says what it fetched.
        self.download_now().await.map(drop)
    }

    fn waiting(&self, reason: String) {
        if let Some(version) = lock(&self.inner.offered).clone() {
            self.emit(Event::Waiting { version, reason });
        }
    }

    async fn install(&self) -> Result<()> {
        // A download that followed a signed rollback directive switched already.
        if self.inner.pipeline.store().staged()?.is_none() {
            return Ok(());
        }
        Engine::install(self).await.map(drop)
    }
}
