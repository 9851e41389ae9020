//! The health check a new release must pass before it is kept.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use semver::Version;
use tokio::process::Command;

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

    /// Runs the check; `Err` says why it failed.
    pub(crate) async fn run(&self, install: &Path, version: &Version) -> Result<(), String> {
        let Some((program, args)) = self.command.split_first() else {
            return Err("the health check command is empty".into());
        };
        let child = Command::new(program)
            .args(args)
            .env("RELSYNC_INSTALL", install)
            .env("RELSYNC_CURRENT", install.join("current"))
            .env("RELSYNC_VERSION", version.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start {program:?}: {e}"))?;
        let waited = tokio::time::timeout(self.trial_period, child.wait_with_output()).await;
        match waited {
            Err(_) => Err(format!(
                "{program:?} did not finish within the {} s trial period",
                self.trial_period.as_secs_f64()
            )),
            Ok(Err(e)) => Err(format!("waiting for {program:?}: {e}")),
            Ok(Ok(output)) if output.status.success() => Ok(()),
            Ok(Ok(output)) => Err(format!("{program:?} exited with {}", output.status)),
        }
    }
}
