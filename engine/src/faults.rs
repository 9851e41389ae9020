//! A fault-injecting seam: every file system step that assemble, apply and the audit log take
//! first passes through [`step`].
//!
//! In a normal build `step` does nothing. Built with the `fault-injection` feature (only the
//! end-to-end tests do), two environment variables drive it:
//!
//! - `RELSYNC_FAULT=fail@N` makes the N-th step of the process (1-based) fail with an injected
//!   I/O error instead of running; `kill@N` sends the process SIGKILL there instead.
//! - `RELSYNC_FAULT_LOG=FILE` appends `N PHASE.STEP PATH` for each step as it starts, with one
//!   unbuffered write, so the line is there even when the process is killed right after.
//!
//! A test lists the steps of an update from the log, then faults each one in turn.

/// Runs before file system step `name` (`phase.step`) on `path`: `Err` when a failure is
/// injected here, and no return at all when a kill is.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn step(_name: &'static str, _path: &std::path::Path) -> crate::Result<()> {
    Ok(())
}

#[cfg(feature = "fault-injection")]
pub(crate) use injected::step;

#[cfg(feature = "fault-injection")]
mod injected {
    use std::fs::File;
    use std::io::Write;
    use std::path::Path;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::{Error, Result};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Action {
        Fail,
        Kill,
    }

    #[derive(Debug, Default)]
    struct Plan {
        at: Option<(Action, u64)>,
        log: Option<File>,
    }

    impl Plan {
        fn from_env() -> Self {
            let at = std::env::var("RELSYNC_FAULT").ok().and_then(|spec| {
                let (action, n) = spec.split_once('@')?;
                let action = match action {
                    "fail" => Action::Fail,
                    "kill" => Action::Kill,
                    _ => return None,
                };
                Some((action, n.parse().ok()?))
            });
            let log = std::env::var_os("RELSYNC_FAULT_LOG")
                .and_then(|path| File::options().create(true).append(true).open(path).ok());
            Self { at, log }
        }
    }

    static PLAN: OnceLock<Plan> = OnceLock::new();
    static STEPS: AtomicU64 = AtomicU64::new(0);

    pub(crate) fn step(name: &'static str, path: &Path) -> Result<()> {
        let plan = PLAN.get_or_init(Plan::from_env);
        let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(mut log) = plan.log.as_ref() {
            let _ = log.write_all(format!("{n} {name} {}\n", path.display()).as_bytes());
        }
        match plan.at {
            Some((Action::Kill, at)) if at == n => {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
                // SIGKILL cannot be caught; this only waits for it to land.
                loop {
                    std::thread::park();
                }
            }
            Some((Action::Fail, at)) if at == n => Err(Error::io("injected fault before", path)(
                std::io::Error::other(format!("step {n} ({name})")),
            )),
            _ => Ok(()),
        }
    }
}
