//! The engine for apps without an async runtime.

use semver::Version;
use tokio::runtime::Runtime;

use super::{CheckOutcome, EngineBuilder, StartOutcome};
use crate::install::Status;
use crate::pipeline::UpdateReport;
use crate::pipeline::plan::UpdatePlan;
use crate::pipeline::verify::InstallCheck;
use crate::{Error, Result};

/// [`super::Engine`] behind a small runtime of its own: every call blocks until done.
#[derive(Debug)]
pub struct Engine {
    engine: super::Engine,
    runtime: Runtime,
}

impl EngineBuilder {
    /// Opens a blocking engine. Don't call it from inside an async runtime.
    pub fn open_blocking(self) -> Result<Engine> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                op: "starting a runtime for",
                path: "the update engine".into(),
                source,
            })?;
        let _entered = runtime.enter();
        let engine = self.open()?;
        Ok(Engine { engine, runtime })
    }
}

impl Engine {
    /// The async engine inside.
    pub fn inner(&self) -> &super::Engine {
        &self.engine
    }

    /// See [`super::Engine::check`].
    pub fn check(&self) -> Result<CheckOutcome> {
        self.runtime.block_on(self.engine.check())
    }

    /// Downloads the offered release (in the foreground); see [`super::Engine::download`].
    pub fn download(&self) -> Result<UpdateReport> {
        self.runtime
            .block_on(async { self.engine.download().wait().await })
    }

    /// See [`super::Engine::update`].
    pub fn update(&self) -> Result<UpdateReport> {
        self.runtime.block_on(self.engine.update())
    }

    /// See [`super::Engine::events`]; use `blocking_recv` on the receiver.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<crate::Event> {
        self.engine.events()
    }

    /// See [`super::Engine::report_unhealthy`].
    pub fn report_unhealthy(&self, detail: &str) -> Result<Option<Version>> {
        self.runtime.block_on(self.engine.report_unhealthy(detail))
    }

    /// See [`super::Engine::install`].
    pub fn install(&self) -> Result<UpdateReport> {
        self.runtime.block_on(self.engine.install())
    }

    /// See [`super::Engine::rollback`].
    pub fn rollback(&self) -> Result<(Version, Version)> {
        self.runtime.block_on(self.engine.rollback())
    }

    /// See [`super::Engine::repair`].
    pub fn repair(&self) -> Result<super::RepairReport> {
        self.runtime.block_on(self.engine.repair())
    }

    /// See [`super::Engine::retry`].
    pub fn retry(&self, version: &Version) -> Result<crate::BadRelease> {
        self.runtime.block_on(self.engine.retry(version))
    }

    /// See [`super::Engine::status`].
    pub fn status(&self) -> Result<Status> {
        self.runtime.block_on(self.engine.status())
    }

    /// See [`super::Engine::verify`].
    pub fn verify(&self) -> Result<InstallCheck> {
        self.runtime.block_on(self.engine.verify())
    }

    /// See [`super::Engine::dry_run`].
    pub fn dry_run(&self) -> Result<UpdatePlan> {
        self.runtime.block_on(self.engine.dry_run())
    }

    /// See [`super::Engine::record_start`].
    pub fn record_start(&self) -> Result<StartOutcome> {
        self.runtime.block_on(self.engine.record_start())
    }

    /// See [`super::Engine::confirm_healthy`].
    pub fn confirm_healthy(&self) -> Result<bool> {
        self.runtime.block_on(self.engine.confirm_healthy())
    }

    /// See [`super::Engine::set_channel`].
    pub fn set_channel(&self, channel: &str) -> Result<()> {
        self.engine.set_channel(channel)
    }
}
