//! The update pipeline, one stage a module, in order:
//! check → plan → fetch → assemble → verify → apply; and [`Pipeline`], which runs it for one
//! install.
//!
//! Each stage takes the previous stage's output type and is the only place that builds its own,
//! so a release can reach `apply` only through every stage before it. A stage imports only
//! earlier stages and the support modules (install, source, runtime, layout, platform, progress,
//! peers, config); never a later stage, this runner or the front door.

pub(crate) mod apply;
pub(crate) mod assemble;
pub(crate) mod check;
pub(crate) mod fetch;
pub(crate) mod plan;
pub(crate) mod verify;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use semver::Version;
use serde::Serialize;
use tracing::{Instrument, info_span};

use crate::config::UpdaterConfig;
use crate::install::store::{BadRelease, StagedRelease, Store, TrustCopy};
use crate::install::switch::switch_current;
use crate::install::{Opening, Status, check_switchable, ensure_install_id, open_install};
use crate::layout::{InstallLayout, valid_channel};
use crate::peers::Peers;
use crate::progress::{Event, Reporter};
use crate::runtime::blocking;
use crate::share::Share;
use crate::source::Origin;
use crate::{Error, FetchConfig, Result};
use apply::apply;
use assemble::assemble;
use check::{Checked, MetaSource, VerifiedPointer, check};
use fetch::{Fetched, Lan, fetch};
use plan::{Planned, UpdatePlan, plan};
use verify::{InstallCheck, verify};

/// The outcome of an update.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateReport {
    /// The version now installed, or staged by a download.
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
    /// Of those, delta frames in the bsdiff codecs.
    pub chunks_bsdiff: u64,
    /// Of those, frames with projected references (executables).
    pub chunks_refs: u64,
    /// Reference maps fetched, one per executable with such frames.
    pub ref_maps: u64,
    /// Solid frames fetched (each a run of chunks, for cold data).
    pub solid_frames: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// The release the channel offers but this install does not take, and why (with
    /// `up_to_date`; `None` when nothing is held back).
    pub held: Option<HeldBack>,
}

/// A release offered but not taken.
#[derive(Debug, Clone, Serialize)]
pub struct HeldBack {
    /// The release offered.
    pub offered: Version,
    /// Why it is not taken.
    #[serde(flatten)]
    pub hold: check::Hold,
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
            chunks_refs: totals.chunks_refs,
            ref_maps: totals.ref_maps,
            solid_frames: totals.solid_frames,
            duration_ms: 0,
            held: None,
        }
    }
}

/// What a check found, planned: a download takes it as it is instead of checking again.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Fetch this plan, then install or stage it.
    Fetch(Box<Planned>),
    /// The publisher yanked the installed release and signed the way back to the release
    /// kept for rollback: switch back to it, with nothing to download.
    GoBack(Box<Checked>),
}

impl Prepared {
    /// The check behind it.
    pub(crate) fn checked(&self) -> &Checked {
        match self {
            Prepared::Fetch(planned) => &planned.checked,
            Prepared::GoBack(checked) => checked,
        }
    }

    /// Bytes its range requests download.
    pub(crate) fn bytes_to_fetch(&self) -> u64 {
        match self {
            Prepared::Fetch(planned) => planned.plan().totals.bytes_to_fetch,
            Prepared::GoBack(_) => 0,
        }
    }
}

/// One install and where its releases come from: runs the pipeline's stages in order.
pub(crate) struct Pipeline {
    config: UpdaterConfig,
    /// The channel followed now (apps may switch it).
    channel: RwLock<String>,
    /// `None` for an engine opened for the install alone.
    origin: Option<Origin>,
    layout: InstallLayout,
    store: Arc<Store>,
    reporter: Arc<dyn Reporter>,
    peers: OnceLock<Arc<dyn Peers>>,
    share: Share,
    _lock: File,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("install", &self.layout.root())
            .field(
                "origin",
                &self.origin.as_ref().map(|_| &self.config.origin.mirrors),
            )
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Opens (creating if needed) the install directory and takes its lock.
    pub(crate) fn open(config: UpdaterConfig, reporter: Arc<dyn Reporter>) -> Result<Self> {
        check_channel(&config.channel)?;
        if config.trusted_keys.is_empty() && config.trusted_root.is_none() {
            return Err(Error::Format(relsync_format::Error::InvalidKey(
                "no trusted keys or root document given".into(),
            )));
        }
        let origin = Origin::open(&config.origin, &config.fetch)?;
        let opening = Opening::Create {
            adopt: config.adopt,
        };
        Self::with_install(config, Some(origin), opening, reporter)
    }

    /// Opens an existing install only (no origin) and takes its lock: status, verify,
    /// rollback and the install of a staged release.
    pub(crate) fn open_local(config: UpdaterConfig, reporter: Arc<dyn Reporter>) -> Result<Self> {
        Self::with_install(config, None, Opening::Read, reporter)
    }

    fn with_install(
        config: UpdaterConfig,
        origin: Option<Origin>,
        opening: Opening,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Self> {
        let layout = InstallLayout::new(&config.install_dir);
        let (lock, store) = open_install(&layout, opening)?;
        if origin.is_some() {
            ensure_install_id(&layout)?;
        }
        let store = Arc::new(store);
        let share = Share::new(layout.clone(), store.clone(), None)?;
        Ok(Self {
            channel: RwLock::new(config.channel.clone()),
            config,
            origin,
            layout,
            store,
            reporter,
            peers: OnceLock::new(),
            share,
            _lock: lock,
        })
    }

    /// Asks `peers` for chunks (and, when the origin fails, for metadata) before the origin.
    /// Returns false, changing nothing, if peers were attached before.
    pub(crate) fn attach_peers(&self, peers: Arc<dyn Peers>) -> bool {
        self.peers.set(peers).is_ok()
    }

    /// What this install offers peers.
    pub(crate) fn share(&self) -> &Share {
        &self.share
    }

    /// The channel followed now.
    pub(crate) fn channel(&self) -> String {
        self.channel
            .read()
            .map_or_else(|e| e.into_inner().clone(), |c| c.clone())
    }

    /// Follows `channel` from the next check on.
    pub(crate) fn set_channel(&self, channel: &str) -> Result<()> {
        check_channel(channel)?;
        *self.channel.write().unwrap_or_else(|e| e.into_inner()) = channel.to_owned();
        Ok(())
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

    /// Response body bytes the origin received over the engine's life (`None`: no origin).
    pub(crate) fn origin_bytes(&self) -> Option<u64> {
        self.origin.as_ref().map(|origin| origin.traffic().bytes())
    }

    /// The origin, or why there is none.
    fn origin(&self, operation: &'static str) -> Result<&Origin> {
        self.origin.as_ref().ok_or(Error::NoOrigin { operation })
    }

    fn meta_source<'a>(&'a self, origin: &'a Origin) -> MetaSource<'a> {
        MetaSource {
            origin,
            peers: self.peers.get().map(|p| p.as_ref()),
        }
    }

    /// The check stage. With `persist`, records the newly trusted state.
    async fn check(&self, persist: bool, operation: &'static str) -> Result<Checked> {
        let origin = self.origin(operation)?;
        let channel = self.channel();
        self.reporter.report(Event::CheckStarted {
            channel: channel.clone(),
        });
        let config = UpdaterConfig {
            channel,
            ..self.config.clone()
        };
        let checked = check(
            self.meta_source(origin),
            &config,
            &self.layout,
            &self.store,
            persist,
        )
        .await?;
        self.reporter.report(Event::Checked {
            version: checked.version().clone(),
            installed: checked.installed_version().cloned(),
            up_to_date: checked.up_to_date(),
        });
        Ok(checked)
    }

    /// The plan stage (blocking work, on a worker thread).
    async fn plan(&self, checked: Checked) -> Result<Planned> {
        let (layout, store) = (self.layout.clone(), self.store.clone());
        let fetch_config = self.config.fetch.clone();
        blocking(move || plan(checked, &layout, &store, &fetch_config)).await
    }

    /// Checks (recording what it trusts) and plans: what [`run`](Self::run) takes.
    pub(crate) async fn prepare(&self, operation: &'static str) -> Result<Prepared> {
        self.prepare_in(tracing::Span::none(), operation).await
    }

    /// [`prepare`](Self::prepare), the check in `span`.
    async fn prepare_in(&self, span: tracing::Span, operation: &'static str) -> Result<Prepared> {
        let checked = self.check(true, operation).instrument(span).await?;
        if checked.goes_back_to_kept() {
            return Ok(Prepared::GoBack(Box::new(checked)));
        }
        Ok(Prepared::Fetch(Box::new(self.plan(checked).await?)))
    }

    /// Builds the installed release again from its signed manifest, as an update builds a
    /// new one (plan, fetch what no local file holds, assemble, verify, switch atomically):
    /// files that drifted are written from verified chunks, the rest linked. The release
    /// kept for rollback stays; the drifted directory is removed.
    pub(crate) async fn repair(&self) -> Result<UpdateReport> {
        let started = Instant::now();
        let origin = self.origin("repair")?;
        let traffic = origin.traffic();
        let before = Traffic {
            bytes: traffic.bytes(),
            requests: traffic.requests(),
            started,
        };
        let (layout, store) = (self.layout.clone(), self.store.clone());
        let checked = blocking(move || Checked::repair(&layout, &store)).await?;
        let planned = self.plan(checked).await?;
        let deadline = self
            .config
            .fetch
            .deadline
            .map(|limit| (tokio::time::Instant::from_std(started) + limit, limit));
        let mut report = self.fetch_and_finish(planned, deadline, true).await?;
        report.bytes_from_origin = traffic.bytes() - before.bytes;
        report.bytes_downloaded = report.bytes_from_origin + report.bytes_from_peers;
        report.requests = traffic.requests() - before.requests;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Checks and plans without changing anything.
    pub(crate) async fn dry_run(&self) -> Result<UpdatePlan> {
        let checked = self.check(false, "dry run").await?;
        Ok(self.plan(checked).await?.plan)
    }

    /// Runs the pipeline: check → plan (or `prepared`, what an earlier check planned, as long
    /// as the channel's pointer has not changed since) → fetch, then assemble → verify →
    /// apply with `apply_now`, else stages the release for
    /// [`install_staged`](Self::install_staged).
    pub(crate) async fn run(
        &self,
        prepared: Option<Prepared>,
        apply_now: bool,
        operation: &'static str,
    ) -> Result<UpdateReport> {
        let started = Instant::now();
        let origin = self.origin(operation)?;
        // The origin counts over the engine's life (`relsync serve` runs many updates).
        let traffic = origin.traffic();
        let before = Traffic {
            bytes: traffic.bytes(),
            requests: traffic.requests(),
            started,
        };
        let deadline = self
            .config
            .fetch
            .deadline
            .map(|limit| (tokio::time::Instant::from_std(started) + limit, limit));
        let prepared = by_deadline(deadline, self.reuse_or_prepare(prepared, operation)).await?;
        let mut report = match prepared {
            Prepared::GoBack(checked) => return self.go_back(*checked, origin, before).await,
            Prepared::Fetch(planned) => {
                self.fetch_and_finish(*planned, deadline, apply_now).await?
            }
        };
        report.bytes_from_origin = traffic.bytes() - before.bytes;
        report.bytes_downloaded = report.bytes_from_origin + report.bytes_from_peers;
        report.requests = traffic.requests() - before.requests;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// `prepared` if the channel's pointer is still the one it was checked against (one
    /// request), else a new check and plan.
    async fn reuse_or_prepare(
        &self,
        prepared: Option<Prepared>,
        operation: &'static str,
    ) -> Result<Prepared> {
        if let Some(prepared) = prepared
            && let Some(pointer) = &prepared.checked().pointer
            && pointer.pointer.channel == self.channel()
        {
            let source = self.meta_source(self.origin(operation)?);
            if check::pointer_unchanged(source, pointer).await? {
                return Ok(prepared);
            }
            tracing::debug!("the channel's pointer changed since the check; checking again");
        }
        self.prepare_in(info_span!("check"), operation).await
    }

    /// fetch, then assemble → verify → apply (or stage): the report of `planned`, without its
    /// traffic counts and time.
    async fn fetch_and_finish(
        &self,
        planned: Planned,
        deadline: Option<(tokio::time::Instant, std::time::Duration)>,
        apply_now: bool,
    ) -> Result<UpdateReport> {
        let checked = &planned.checked;
        let yanked_from = checked
            .directed_back()
            .then(|| checked.installed_version().cloned())
            .flatten();
        let pointer = checked.pointer.clone();
        let mut report = UpdateReport::planned(planned.plan());
        if report.up_to_date {
            report.held = checked.held.clone().map(|hold| HeldBack {
                offered: checked.version().clone(),
                hold,
            });
            return Ok(report);
        }
        let totals = &planned.plan().totals;
        self.reporter.report(Event::Planned {
            bytes_to_fetch: totals.bytes_to_fetch,
            requests: totals.requests,
            bytes_reused: totals.bytes_reused,
        });
        let version = planned.plan().version.clone();
        let fetching = fetch(
            planned,
            self.origin("download")?,
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
                withdrawn = self.withdrawn(pointer, &version) => Err(withdrawn),
            }
        })
        .await?;
        report.bytes_from_peers = fetched.bytes_from_peers;
        let (layout, store) = (self.layout.clone(), self.store.clone());
        let reporter = self.reporter.clone();
        let share = self.share.clone();
        let previous = blocking(move || {
            if apply_now {
                let previous = finish(fetched, &layout, &store, &reporter);
                share.refresh()?;
                previous.map(Some)
            } else {
                let checked = &fetched.planned.checked;
                store.set_staged(Some(&StagedRelease {
                    manifest: checked.target.clone(),
                    signers: checked.signers.clone(),
                }))?;
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
        Ok(report)
    }

    /// Resolves once a pointer verified under the checked channel role lists `version` as
    /// yanked, polled quietly every `withdraw_poll` so that a fetch can stop. Each poll
    /// fetches the channel pointer alone.
    async fn withdrawn(&self, pointer: Option<VerifiedPointer>, version: &Version) -> Error {
        let (Some(pointer), Some(origin)) = (pointer, &self.origin) else {
            return std::future::pending().await;
        };
        let source = self.meta_source(origin);
        loop {
            tokio::time::sleep(self.config.fetch.withdraw_poll).await;
            match check::withdrawn(source, &pointer, version).await {
                Ok(true) => return Error::Withdrawn(version.clone()),
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "re-reading the channel pointer failed"),
            }
        }
    }

    /// Follows a signed rollback directive to the release kept for rollback.
    async fn go_back(
        &self,
        checked: Checked,
        origin: &Origin,
        before: Traffic,
    ) -> Result<UpdateReport> {
        drop(checked);
        let (layout, store) = (self.layout.clone(), self.store.clone());
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
        let traffic = origin.traffic();
        let bytes_from_origin = traffic.bytes() - before.bytes;
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
            requests: traffic.requests() - before.requests,
            files_linked: 0,
            files_written: 0,
            chunks_fetched: 0,
            chunks_delta: 0,
            chunks_bsdiff: 0,
            chunks_refs: 0,
            ref_maps: 0,
            solid_frames: 0,
            duration_ms: before.started.elapsed().as_millis() as u64,
            held: None,
        })
    }

    /// Applies the release a download staged, offline: its manifest is re-opened under the
    /// release role that verified it, and not checked for expiry again. Refuses when nothing
    /// is staged, when the staged release is marked bad or no newer than the installed one,
    /// or when any of its chunks is no longer on disk. Blocking.
    pub(crate) fn install_staged(&self) -> Result<UpdateReport> {
        let (layout, store) = (&self.layout, self.store.as_ref());
        if self.origin.is_none() {
            check_switchable(layout, store)?;
        }
        let started = Instant::now();
        let staged = store.staged()?.ok_or_else(|| {
            Error::NotStaged("nothing is staged; run `relsync update --download-only` first".into())
        })?;
        let version = staged.manifest.version.clone();
        let bad = store.bad_releases()?;
        if let Some(bad) = bad.iter().find(|b| b.version == version) {
            store.set_staged(None)?;
            return Err(Error::NotStaged(format!(
                "the staged release {version} is marked bad ({}); it was discarded",
                bad.reason
            )));
        }
        // Going down is allowed only away from a release marked bad. The release running here
        // is marked only by a rollback directive the release role signed (check.rs) or by its
        // failed trial here, never by a yank of the channel role alone.
        if let Some(installed) = store.current()?
            && installed.manifest.version >= version
            && !bad.iter().any(|b| b.version == installed.manifest.version)
        {
            store.set_staged(None)?;
            return Err(Error::NotStaged(format!(
                "the staged release {version} is not newer than the installed {}",
                installed.manifest.version
            )));
        }
        let checked = Checked::staged(staged, layout, store)?;
        let planned = plan(checked, layout, store, &FetchConfig::default())?;
        let mut report = UpdateReport::planned(planned.plan());
        let fetched = Fetched::local(planned)?;
        report.previous_version = finish(fetched, layout, store, &self.reporter)?;
        report.applied = true;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Switches `current` back to the release kept for rollback; ends any trial. Returns
    /// (left, now current). Blocking.
    /// Clears `version`'s bad mark (see [`crate::Engine::retry`]).
    pub(crate) fn unmark_bad(&self, version: &Version) -> Result<Option<BadRelease>> {
        let mark = self.store.unmark_bad(version)?;
        // The trust copy restores marks a rebuilt database lost: it forgets this one too.
        let state = self.layout.state_dir()?;
        if let Some(mut copy) = TrustCopy::read(&state)?
            && copy.bad.iter().any(|b| &b.version == version)
        {
            copy.bad.retain(|b| &b.version != version);
            copy.write(&state)?;
        }
        Ok(mark)
    }

    pub(crate) fn roll_back(&self) -> Result<(Version, Version)> {
        if self.origin.is_none() {
            check_switchable(&self.layout, &self.store)?;
        }
        roll_back(&self.layout, &self.store)
    }

    /// What the install holds. Blocking.
    pub(crate) fn status(&self) -> Result<Status> {
        crate::install::status(&self.layout, &self.store)
    }

    /// The installed release checked against its signed manifest. Blocking.
    pub(crate) fn verify_install(&self) -> Result<InstallCheck> {
        verify::verify_install(&self.layout, &self.store)
    }
}

/// Refuses a channel name that could not be an origin path.
fn check_channel(channel: &str) -> Result<()> {
    if valid_channel(channel) {
        Ok(())
    } else {
        Err(Error::malformed(
            "channel name",
            format!("{channel:?} (use letters, digits, '-', '_', '.')"),
        ))
    }
}

/// The origin's counters when a run started.
#[derive(Clone, Copy)]
struct Traffic {
    bytes: u64,
    requests: u64,
    started: Instant,
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
            tracing::info!(version = %applied.version, release = %applied.dir, "switched current");
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

/// Switches `current` back to the previous release, the one left becoming the previous; ends
/// any trial. Returns (left, now current).
fn roll_back(layout: &InstallLayout, store: &Store) -> Result<(Version, Version)> {
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
    if let Some(problem) = verify::check_release(layout, &previous)?.into_iter().next() {
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
