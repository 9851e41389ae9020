//! The updater: one install directory, one origin, the whole pipeline.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use semver::Version;
use serde::Serialize;
use tracing::{Instrument, info_span};

use crate::config::UpdaterConfig;
use crate::install::audit::{AuditEvent, AuditLog};
use crate::install::store::{BadRelease, Store, StoreStats, Trial};
use crate::install::switch::switch_current;
use crate::install::{Opening, open_install};
use crate::layout::{InstallLayout, valid_channel};
use crate::peers::Peers;
use crate::pipeline::apply::apply;
use crate::pipeline::assemble::assemble;
use crate::pipeline::check::{Checked, MetaSource, check};
use crate::pipeline::fetch::{Fetched, Lan, fetch};
use crate::pipeline::plan::{UpdatePlan, plan, plan_stage};
use crate::pipeline::verify::verify;
use crate::progress::{Event, Reporter, Silent};
use crate::runtime::blocking;
use crate::share::Share;
use crate::source::Origin;
use crate::{Error, FetchConfig, Result};

/// The outcome of an update.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateReport {
    /// The version now installed, or staged by [`Updater::download`].
    pub version: Version,
    /// The version installed before (kept for rollback).
    pub previous_version: Option<Version>,
    /// Nothing needed doing.
    pub up_to_date: bool,
    /// The release was switched to (not so after a download that only staged it).
    pub applied: bool,
    /// The installed release was yanked, and `current` went back to the release kept for
    /// rollback, as the publisher's signed directive said.
    pub rolled_back: bool,
    /// Bytes received over all requests, metadata included: from the origin plus from peers.
    pub bytes_downloaded: u64,
    /// Response body bytes received from the origin.
    pub bytes_from_origin: u64,
    /// Compressed chunk bytes received from LAN peers.
    pub bytes_from_peers: u64,
    /// Bytes of chunks reused from local files (linked files not included).
    pub bytes_reused: u64,
    /// Bytes of files hard-linked unchanged.
    pub bytes_linked: u64,
    /// Requests sent to the origin.
    pub requests: u64,
    /// Files hard-linked from the installed release.
    pub files_linked: u64,
    /// Files written from chunks.
    pub files_written: u64,
    /// Unique chunks fetched.
    pub chunks_fetched: u64,
    /// Of those, chunks fetched as delta frames against the installed release.
    pub chunks_delta: u64,
    /// Of those, delta frames in the bsdiff codec.
    pub chunks_bsdiff: u64,
    /// Solid frames fetched (each a run of chunks, for cold data).
    pub solid_frames: u64,
    /// Wall time.
    pub duration_ms: u64,
}

impl UpdateReport {
    /// The report of `plan` before anything ran: no traffic yet, nothing applied.
    fn planned(plan: &UpdatePlan) -> Self {
        let totals = &plan.totals;
        Self {
            version: plan.version.clone(),
            previous_version: plan.previous_version.clone(),
            up_to_date: plan.up_to_date,
            applied: false,
            rolled_back: false,
            bytes_downloaded: 0,
            bytes_from_origin: 0,
            bytes_from_peers: 0,
            bytes_reused: totals.bytes_reused,
            bytes_linked: totals.bytes_linked,
            requests: 0,
            files_linked: totals.files_linked,
            files_written: totals.files_written,
            chunks_fetched: totals.chunks_fetched,
            chunks_delta: totals.chunks_delta,
            chunks_bsdiff: totals.chunks_bsdiff,
            solid_frames: totals.solid_frames,
            duration_ms: 0,
        }
    }
}

/// Updates one install directory from one origin.
pub struct Updater {
    config: UpdaterConfig,
    /// The channel followed now (apps may switch it).
    channel: std::sync::RwLock<String>,
    origin: Origin,
    layout: InstallLayout,
    store: Arc<Store>,
    reporter: Arc<dyn Reporter>,
    peers: std::sync::OnceLock<Arc<dyn Peers>>,
    share: Share,
    _lock: File,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Updater {
    /// Opens (creating if needed) the install directory and takes its lock.
    pub fn open(config: UpdaterConfig) -> Result<Self> {
        if !valid_channel(&config.channel) {
            return Err(Error::malformed(
                "channel name",
                format!("{:?} (use letters, digits, '-', '_', '.')", config.channel),
            ));
        }
        if config.trusted_keys.is_empty() && config.trusted_root.is_none() {
            return Err(Error::InvalidKey(
                "no trusted keys or root document given".into(),
            ));
        }
        let origin = Origin::open(&config.origin, &config.fetch)?;
        let layout = InstallLayout::new(&config.install_dir);
        let (lock, store) = open_install(
            &layout,
            Opening::Create {
                adopt: config.adopt,
            },
        )?;
        crate::pipeline::check::ensure_install_id(&layout)?;
        let store = Arc::new(store);
        let share = Share::new(layout.clone(), store.clone(), None)?;
        Ok(Self {
            channel: std::sync::RwLock::new(config.channel.clone()),
            config,
            origin,
            layout,
            store,
            reporter: Arc::new(Silent),
            peers: std::sync::OnceLock::new(),
            share,
            _lock: lock,
        })
    }

    /// Asks `peers` for chunks (and, when the origin fails, for metadata) before the origin.
    pub fn with_peers(self, peers: Arc<dyn Peers>) -> Self {
        self.attach_peers(peers);
        self
    }

    /// [`with_peers`](Self::with_peers) on an updater already shared (as inside an
    /// [`Engine`](crate::Engine)). Returns false, changing nothing, if peers were attached
    /// before.
    pub fn attach_peers(&self, peers: Arc<dyn Peers>) -> bool {
        self.peers.set(peers).is_ok()
    }

    /// What this install offers peers: hand it to the network before updating, so peers can
    /// fetch from it while it fetches.
    pub fn share(&self) -> Share {
        self.share.clone()
    }

    /// Sends progress events to `reporter`.
    pub fn with_reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// The channel followed now.
    pub fn channel(&self) -> String {
        self.channel
            .read()
            .map_or_else(|e| e.into_inner().clone(), |c| c.clone())
    }

    /// Follows `channel` from the next check on. A channel behind the installed release is
    /// held until it passes it: switching never downgrades.
    pub fn set_channel(&self, channel: &str) -> Result<()> {
        if !valid_channel(channel) {
            return Err(Error::malformed(
                "channel name",
                format!("{channel:?} (use letters, digits, '-', '_', '.')"),
            ));
        }
        *self.channel.write().unwrap_or_else(|e| e.into_inner()) = channel.to_owned();
        Ok(())
    }

    pub(crate) fn fetch_config(&self) -> &FetchConfig {
        &self.config.fetch
    }

    pub(crate) fn layout(&self) -> &InstallLayout {
        &self.layout
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub(crate) fn reporter(&self) -> &Arc<dyn Reporter> {
        &self.reporter
    }

    pub(crate) async fn check(&self, persist: bool) -> Result<Checked> {
        let channel = self.channel();
        self.reporter.report(Event::CheckStarted {
            channel: channel.clone(),
        });
        let source = MetaSource {
            origin: &self.origin,
            peers: self.peers.get().map(|p| p.as_ref()),
        };
        let config = UpdaterConfig {
            channel,
            ..self.config.clone()
        };
        let checked = check(source, &config, &self.layout, &self.store, persist).await?;
        self.reporter.report(Event::Checked {
            version: checked.version().clone(),
            installed: checked.installed_version().cloned(),
            up_to_date: checked.up_to_date(),
        });
        Ok(checked)
    }

    /// Checks and plans without changing anything.
    pub async fn dry_run(&self) -> Result<UpdatePlan> {
        let checked = self.check(false).await?;
        let (layout, store, fetch) = self.parts();
        let planned = blocking(move || plan(checked, &layout, &store, &fetch)).await?;
        Ok(planned.plan().clone())
    }

    fn parts(&self) -> (InstallLayout, Arc<Store>, FetchConfig) {
        (
            self.layout.clone(),
            self.store.clone(),
            self.config.fetch.clone(),
        )
    }

    /// Runs check → plan → fetch → assemble → verify → apply.
    pub async fn update(&self) -> Result<UpdateReport> {
        self.run(true).await
    }

    /// Runs check → plan → fetch and stops: the release is verified and staged, and
    /// [`apply_staged`] applies it later without the network, even once its metadata has
    /// expired. A later `update` or `download` replaces what is staged.
    pub async fn download(&self) -> Result<UpdateReport> {
        self.run(false).await
    }

    async fn run(&self, apply_now: bool) -> Result<UpdateReport> {
        let started = Instant::now();
        // The origin counts over the updater's life (`relsync serve` runs many updates).
        let traffic = self.origin.traffic();
        let (bytes_before, requests_before) = (traffic.bytes(), traffic.requests());
        let deadline = self
            .config
            .fetch
            .deadline
            .map(|limit| (tokio::time::Instant::from_std(started) + limit, limit));
        let planned = by_deadline(deadline, async {
            let checked = self.check(true).instrument(info_span!("check")).await?;
            if checked.directed_back()
                && checked.held().is_none()
                && let Some(previous) = &checked.previous
                && previous.manifest.id() == checked.pointer.manifest
            {
                return Ok(Err(checked));
            }
            let (layout, store, fetch_config) = self.parts();
            blocking(move || plan(checked, &layout, &store, &fetch_config))
                .await
                .map(Ok)
        })
        .await?;
        let planned = match planned {
            Ok(planned) => planned,
            // The publisher yanked the installed release and signed the way back to the one
            // kept for rollback: no download needed.
            Err(checked) => {
                return self
                    .go_back(checked, started, (bytes_before, requests_before))
                    .await;
            }
        };
        let yanked_from = planned
            .checked
            .directed_back()
            .then(|| planned.checked.installed_version().cloned())
            .flatten();
        let mut report = UpdateReport::planned(planned.plan());
        if !report.up_to_date {
            let totals = &planned.plan().totals;
            self.reporter.report(Event::Planned {
                bytes_to_fetch: totals.bytes_to_fetch,
                requests: totals.requests,
                bytes_reused: totals.bytes_reused,
            });
            let version = planned.plan().version.clone();
            let fetching = fetch(
                planned,
                &self.origin,
                Lan {
                    peers: self.peers.get(),
                    share: Some(&self.share),
                },
                &self.layout,
                self.store.clone(),
                &self.config.fetch,
                self.reporter.clone(),
            );
            let fetched = by_deadline(deadline, async {
                tokio::select! {
                    fetched = fetching => fetched,
                    withdrawn = self.withdrawn(&version) => Err(withdrawn),
                }
            })
            .await?;
            report.bytes_from_peers = fetched.bytes_from_peers;
            let (layout, store, _) = self.parts();
            let reporter = self.reporter.clone();
            let share = self.share.clone();
            let previous = blocking(move || {
                if apply_now {
                    let previous = finish(fetched, &layout, &store, &reporter);
                    share.refresh()?;
                    previous.map(Some)
                } else {
                    store.set_staged(Some(fetched.target().bytes()))?;
                    Ok(None)
                }
            })
            .await?;
            report.applied = apply_now;
            if let Some(previous) = previous {
                report.previous_version = previous;
                if let Some(yanked) = yanked_from {
                    self.store.mark_bad(&yanked, "yanked by the publisher")?;
                }
            }
        }
        report.bytes_from_origin = traffic.bytes() - bytes_before;
        report.bytes_downloaded = report.bytes_from_origin + report.bytes_from_peers;
        report.requests = traffic.requests() - requests_before;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}

impl Updater {
    /// Resolves once a verified pointer lists `version` as yanked (polled quietly, so a
    /// fetch can stop).
    async fn withdrawn(&self, version: &Version) -> Error {
        let config = UpdaterConfig {
            channel: self.channel(),
            ..self.config.clone()
        };
        let source = MetaSource {
            origin: &self.origin,
            peers: self.peers.get().map(|p| p.as_ref()),
        };
        loop {
            tokio::time::sleep(self.config.fetch.withdraw_poll).await;
            match check(source, &config, &self.layout, &self.store, false).await {
                Ok(checked) if checked.pointer.yanked.contains(version) => {
                    return Error::Withdrawn(version.clone());
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "re-reading the channel pointer failed"),
            }
        }
    }

    /// Follows a signed rollback directive to the release kept for rollback.
    async fn go_back(
        &self,
        checked: Checked,
        started: Instant,
        (bytes_before, requests_before): (u64, u64),
    ) -> Result<UpdateReport> {
        let (layout, store, _) = self.parts();
        let share = self.share.clone();
        let (from, to) = blocking(move || {
            let moved = roll_back(&layout, &store)?;
            store.mark_bad(&moved.0, "yanked by the publisher")?;
            share.refresh()?;
            Ok(moved)
        })
        .await?;
        self.reporter.report(Event::RolledBack {
            from: from.clone(),
            to: to.clone(),
            reason: "the publisher yanked it".into(),
        });
        let traffic = self.origin.traffic();
        let bytes_from_origin = traffic.bytes() - bytes_before;
        drop(checked);
        Ok(UpdateReport {
            version: to,
            previous_version: Some(from),
            up_to_date: false,
            applied: true,
            rolled_back: true,
            bytes_downloaded: bytes_from_origin,
            bytes_from_origin,
            bytes_from_peers: 0,
            bytes_reused: 0,
            bytes_linked: 0,
            requests: traffic.requests() - requests_before,
            files_linked: 0,
            files_written: 0,
            chunks_fetched: 0,
            chunks_delta: 0,
            chunks_bsdiff: 0,
            solid_frames: 0,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// assemble → verify → apply, reporting the switch; returns the version kept for rollback.
fn finish(
    fetched: Fetched,
    layout: &InstallLayout,
    store: &Store,
    reporter: &Arc<dyn Reporter>,
) -> Result<Option<Version>> {
    let applied = (|| {
        let assembled = info_span!("assemble").in_scope(|| assemble(fetched, layout, reporter))?;
        let tree = info_span!("verify").in_scope(|| verify(assembled, reporter))?;
        info_span!("apply").in_scope(|| apply(tree, layout, store))
    })();
    match applied {
        Ok(applied) => {
            crate::faults::step("finish.record", &layout.db())?;
            store.set_staged(None)?;
            // Whatever was on trial is no longer current.
            store.set_trial(None)?;
            reporter.report(Event::Applied {
                version: applied.version,
            });
            Ok(applied.previous)
        }
        Err(e) => {
            // A failed tree is never used; don't leave it filling the disk. Verified fetched
            // chunks stay, so a retry does not download them again.
            if let Ok(state) = layout.state_dir() {
                let _ = state.remove_tree(crate::layout::STAGING_DIR);
            }
            Err(e)
        }
    }
}

/// Applies the release an earlier [`Updater::download`] staged, offline: its metadata was
/// verified when it was downloaded, so it is not checked for expiry again. Refuses when
/// nothing is staged, when the staged release is no newer than the installed one, or when
/// any of its chunks is no longer on disk.
pub fn apply_staged(
    install_dir: impl Into<PathBuf>,
    reporter: Arc<dyn Reporter>,
) -> Result<UpdateReport> {
    let layout = InstallLayout::new(install_dir);
    let (_lock, store) = open_install(&layout, Opening::Existing)?;
    let report = install_staged(&layout, &store, &reporter)?;
    let manifest = store.current()?.map(|r| r.manifest.id().to_string());
    AuditLog::open(&layout)?.append(AuditEvent::Installed {
        version: report.version.clone(),
        previous: report.previous_version.clone(),
        manifest: manifest.unwrap_or_default(),
    })?;
    Ok(report)
}

/// [`apply_staged`] with the lock held.
pub(crate) fn install_staged(
    layout: &InstallLayout,
    store: &Store,
    reporter: &Arc<dyn Reporter>,
) -> Result<UpdateReport> {
    let started = Instant::now();
    let target = store.staged()?.ok_or_else(|| {
        Error::NotStaged("nothing is staged; run `relsync update --download-only` first".into())
    })?;
    let bad = store.bad_releases()?;
    if let Some(bad) = bad.iter().find(|b| b.version == target.version) {
        store.set_staged(None)?;
        return Err(Error::NotStaged(format!(
            "the staged release {} is marked bad ({}); it was discarded",
            target.version, bad.reason
        )));
    }
    let installed = store.current()?;
    // Going down is allowed only away from a release marked bad. The release running here is
    // marked only by a rollback directive the release role signed (check.rs) or by its failed
    // trial here, never by a yank of the channel role alone.
    if let Some(installed) = &installed
        && installed.manifest.version >= target.version
        && !bad.iter().any(|b| b.version == installed.manifest.version)
    {
        store.set_staged(None)?;
        return Err(Error::NotStaged(format!(
            "the staged release {} is not newer than the installed {}",
            target.version, installed.manifest.version
        )));
    }
    let planned = plan_stage(
        target,
        installed,
        store.previous()?,
        layout,
        store,
        &FetchConfig::default(),
    )?;
    let mut report = UpdateReport::planned(planned.plan());
    let fetched = Fetched::local(planned)?;
    report.previous_version = finish(fetched, layout, store, reporter)?;
    report.applied = true;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Runs `work`, failing with [`Error::Deadline`] if `deadline` passes first.
async fn by_deadline<T>(
    deadline: Option<(tokio::time::Instant, std::time::Duration)>,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    match deadline {
        Some((at, limit)) => tokio::time::timeout_at(at, work)
            .await
            .map_err(|_| Error::Deadline(limit))?,
        None => work.await,
    }
}

/// What an install holds.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The install directory.
    pub install_dir: PathBuf,
    /// The current version.
    pub version: Option<Version>,
    /// The version kept for rollback.
    pub previous_version: Option<Version>,
    /// The current manifest id.
    pub manifest: Option<String>,
    /// Files and bytes in the current release.
    pub files: u64,
    /// Bytes of regular files in the current release.
    pub bytes: u64,
    /// Highest version ever trusted.
    pub highest_version_seen: Option<Version>,
    /// The channel of the current release.
    pub channel: Option<String>,
    /// A release downloaded and waiting to be installed.
    pub staged_version: Option<Version>,
    /// The current release, if it is on trial (not yet reported healthy).
    pub trial: Option<Trial>,
    /// Releases this install will not take again.
    pub bad_releases: Vec<BadRelease>,
    /// Store counters.
    pub store: StoreStats,
}

/// Reads an install's status (takes the lock briefly).
pub fn status(install_dir: impl Into<PathBuf>) -> Result<Status> {
    let layout = InstallLayout::new(install_dir);
    let (_lock, store) = open_install(&layout, Opening::Read)?;
    status_of(&layout, &store)
}

pub(crate) fn status_of(layout: &InstallLayout, store: &Store) -> Result<Status> {
    let current = store.current()?;
    Ok(Status {
        channel: current.as_ref().map(|r| r.manifest.channel.clone()),
        staged_version: store.staged()?.map(|m| m.version.clone()),
        trial: store.trial()?,
        bad_releases: store.bad_releases()?,
        install_dir: layout.root().to_path_buf(),
        version: current.as_ref().map(|r| r.manifest.version.clone()),
        previous_version: store.previous()?.map(|r| r.manifest.version.clone()),
        manifest: current.as_ref().map(|r| r.manifest.id().to_string()),
        files: current
            .as_ref()
            .map_or(0, |r| r.manifest.files().count() as u64),
        bytes: current
            .as_ref()
            .map_or(0, |r| r.manifest.total_file_bytes()),
        highest_version_seen: match &current {
            Some(r) => store
                .trusted_state(&r.manifest.channel)?
                .map(|t| t.highest_version),
            None => None,
        },
        store: store.stats()?,
    })
}

/// Switches `current` back to the previous release; the one left becomes the previous.
pub fn rollback(install_dir: impl Into<PathBuf>) -> Result<(Version, Version)> {
    let layout = InstallLayout::new(install_dir);
    let (_lock, store) = open_install(&layout, Opening::Existing)?;
    let (from, to) = roll_back(&layout, &store)?;
    AuditLog::open(&layout)?.append(AuditEvent::RolledBack {
        from: from.clone(),
        to: to.clone(),
        reason: "asked for".into(),
    })?;
    Ok((from, to))
}

/// [`rollback`] with the lock held; ends any trial. Returns (left, now current).
pub(crate) fn roll_back(layout: &InstallLayout, store: &Store) -> Result<(Version, Version)> {
    let current = store
        .current()?
        .ok_or_else(|| Error::NothingInstalled("nothing is installed".into()))?;
    let previous = store
        .previous()?
        .ok_or_else(|| Error::NothingInstalled("no previous release to roll back to".into()))?;
    if !layout.release(&previous.dir).is_dir() {
        return Err(Error::NothingInstalled(format!(
            "previous release {} is missing from disk",
            previous.dir
        )));
    }
    // Never switch to a tree that is not exactly its signed release: it may have drifted or
    // been tampered with while it was not current.
    if let Some(problem) = crate::pipeline::verify::check_release(layout, &previous)?
        .into_iter()
        .next()
    {
        return Err(Error::RollbackRefused {
            version: previous.manifest.version.clone(),
            dir: previous.dir.clone(),
            problem,
        });
    }
    switch_current(layout, &previous.dir)?;
    store.set_installed(&previous.dir, Some(&current.dir))?;
    store.set_trial(None)?;
    Ok((
        current.manifest.version.clone(),
        previous.manifest.version.clone(),
    ))
}
