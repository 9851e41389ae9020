//! The trial a new release goes through: the health check, the app's own reports of its
//! starts and health, and the rollback of a release that fails.

use semver::Version;
use serde::Serialize;

use super::Engine;
use crate::install::audit::AuditEvent;
use crate::install::store::Trial;
use crate::pipeline::UpdateReport;
use crate::pipeline::check::now_unix;
use crate::progress::Event;
use crate::runtime::blocking as spawn_blocking;
use crate::{Error, Result};

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

impl Engine {
    /// After a switch: records it, starts the trial, runs the health check.
    pub(super) async fn settle(&self, report: UpdateReport) -> Result<UpdateReport> {
        let pipeline = &self.inner.pipeline;
        let store = pipeline.store().clone();
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
        pipeline.share().refresh()?;
        self.run_health_check(&report.version).await?;
        self.emit(Event::RestartRequired {
            version: report.version.clone(),
        });
        Ok(report)
    }

    /// Runs the health check (if any) of the release on trial: passing ends the trial
    /// (unless the app confirms its own health too), failing rejects the release.
    async fn run_health_check(&self, version: &Version) -> Result<()> {
        let pipeline = &self.inner.pipeline;
        let (layout, store) = (pipeline.layout(), pipeline.store());
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
    pub(super) async fn resume_trial(&self) -> Result<()> {
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
        let store = self.inner.pipeline.store();
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
        let pipeline = &self.inner.pipeline;
        let engine = self.clone();
        let (bad, why) = (version.clone(), reason.to_owned());
        let moved = spawn_blocking(move || {
            let pipeline = &engine.inner.pipeline;
            let store = pipeline.store();
            store.mark_bad(&bad, &why)?;
            store.set_trial(None)?;
            match pipeline.roll_back() {
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
        pipeline.share().refresh()?;
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

    /// Records an app start. Call it once at startup: while the current release is on trial
    /// (see [`TrialConfig::max_starts`](crate::TrialConfig::max_starts)), too many starts
    /// without [`confirm_healthy`](Self::confirm_healthy) roll it back.
    pub async fn record_start(&self) -> Result<StartOutcome> {
        let mut op = self.inner.op.lock().await;
        let store = self.inner.pipeline.store().clone();
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
        *op = None;
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
        let store = self.inner.pipeline.store().clone();
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
        let mut op = self.inner.op.lock().await;
        let store = self.inner.pipeline.store().clone();
        let Some(version) = store.current()?.map(|r| r.manifest.version.clone()) else {
            return Ok(None);
        };
        self.audit(AuditEvent::HealthCheck {
            version: version.clone(),
            passed: false,
            detail: detail.to_owned(),
        });
        match self.current_trial()? {
            Some(_) => {
                *op = None;
                self.reject(&version, detail).await
            }
            None => Ok(None),
        }
    }
}
