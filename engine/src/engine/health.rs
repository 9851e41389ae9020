//! The health check a new release must pass before it is kept.

use std::path::Path;
use std::process::Stdio;

use semver::Version;
use tokio::process::Command;

use crate::config::HealthCheck;

impl HealthCheck {
    /// Runs the check in its own process group; `Err` says why it failed. When it ends (or
    /// times out), every process left in its group is killed.
    pub(crate) async fn run(&self, install: &Path, version: &Version) -> Result<(), String> {
        let Some((program, args)) = self.command.split_first() else {
            return Err("the health check command is empty".into());
        };
        // Its own process group, so that a timeout kills whatever it started too.
        let mut child = Command::new(program)
            .args(args)
            .env("RELSYNC_INSTALL", install)
            .env("RELSYNC_CURRENT", install.join("current"))
            .env("RELSYNC_VERSION", version.to_string())
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start {program:?}: {e}"))?;
        let group = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32));
        let waited = tokio::time::timeout(self.trial_period, child.wait()).await;
        // Whatever it started in the background goes with it, passed or not.
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        match waited {
            Err(_) => {
                let _ = child.kill().await;
                Err(format!(
                    "{program:?} did not finish within the {} s trial period (it was killed, \
                     with every process it started)",
                    self.trial_period.as_secs_f64()
                ))
            }
            Ok(Err(e)) => Err(format!("waiting for {program:?}: {e}")),
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("{program:?} exited with {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether process `pid` still exists (and is not a zombie).
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let line = format!(
            "sleep 300 & echo $! > {p}; sh -c 'sleep 300' & echo $! >> {p}; wait",
            p = pids.display()
        );
        let check = HealthCheck::shell(line, Duration::from_millis(1500));
        let err = check
            .run(dir.path(), &Version::new(1, 0, 0))
            .await
            .unwrap_err();
        assert!(err.contains("trial period"), "{err}");
        let started: Vec<u32> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(started.len(), 2);
        // SIGKILL is delivered at once; give the kernel a moment to reap.
        for _ in 0..100 {
            if started.iter().all(|&pid| !running(pid)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("processes the health check started survived its timeout: {started:?}");
    }

    #[tokio::test]
    async fn a_check_passes_by_exiting_zero_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let ok = HealthCheck::shell("test -n \"$RELSYNC_VERSION\"", Duration::from_secs(10));
        ok.run(dir.path(), &Version::new(1, 0, 0)).await.unwrap();
        let bad = HealthCheck::shell("exit 3", Duration::from_secs(10));
        let err = bad
            .run(dir.path(), &Version::new(1, 0, 0))
            .await
            .unwrap_err();
        assert!(err.contains("exit status: 3"), "{err}");
    }
}
