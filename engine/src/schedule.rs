//! The update loop that the daemon and apps share: check, decide with [`Policy::step`], act,
//! sleep, forever, until told to stop.
//!
//! ```text
//!        ┌──────────── sleep check_interval ◀──── up to date / nothing / installed
//!        ▼
//!      check ──▶ step ──▶ download ──▶ step (staged) ──▶ install
//!        ▲         │
//!        │         └──▶ wait for window: sleep ≤ 60 s, re-read the wall clock, step again
//!        └── only once check_interval has passed since the last check
//! ```
//!
//! The loop is generic over how updates are done ([`Updates`]) and what time it is
//! ([`WallClock`]), so tests drive it with tokio's paused time and a fake clock. Intervals
//! are measured on tokio's monotonic clock; only the maintenance window reads the wall clock,
//! at least once a minute while waiting for it, so a wall-clock jump is noticed within a
//! minute.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tokio::time::{Instant, sleep};
use tracing::{debug, info, warn};

use crate::policy::{MIN_CHECK_INTERVAL, Offer, Policy, Step};

/// The longest single sleep while waiting for a maintenance window: 60 s.
pub const MAX_WINDOW_SLEEP: Duration = Duration::from_secs(60);

/// The delay after a first failure: 30 s. It doubles with each failure in a row, up to the
/// check interval, and resets once a turn succeeds.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);

/// The operations the loop drives: an updater in the daemon or an app, a fake in tests.
///
/// The loop is generic over it (no `dyn`), so whether [`run`]'s future is `Send` follows
/// the implementation's futures.
#[allow(async_fn_in_trait)]
pub(crate) trait Updates {
    /// Asks the origin what it offers: `None` when up to date. [`Offer::staged`] says whether
    /// the offered release is already downloaded.
    async fn check(&self) -> crate::Result<Option<Offer>>;
    /// Downloads (stages) the offered release.
    async fn download(&self) -> crate::Result<()>;
    /// Installs the staged release.
    async fn install(&self) -> crate::Result<()>;
    /// Says why the offered release is not taken now (the policy's decision).
    fn waiting(&self, _reason: String) {}
}

/// Tells the wall-clock time, which the maintenance window is read against.
pub(crate) trait WallClock {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// What [`Engine::run`](crate::Engine::run) did before it was stopped: operations that
/// succeeded, and failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunStats {
    /// Checks that succeeded.
    pub checks: u64,
    /// Downloads that succeeded.
    pub downloads: u64,
    /// Installs that succeeded.
    pub installs: u64,
    /// Checks, downloads and installs that failed (each was logged and retried).
    pub errors: u64,
}

/// Runs the update loop until `stop` resolves, then returns what it did.
///
/// Each turn checks the origin (unless a fresh offer is pending), then acts on
/// [`Policy::step`]:
///
/// - [`Step::Download`]: downloads, then decides again at once with the release staged
///   (no second check).
/// - [`Step::Install`]: installs, then sleeps [`Policy::check_interval`].
/// - [`Step::WaitForWindow`]: sleeps until the window opens, but at most
///   [`MAX_WINDOW_SLEEP`] at a time, re-reading `clock` after each sleep; it checks the
///   origin again only once `check_interval` has passed since the last check.
/// - [`Step::Nothing`], or up to date: sleeps `check_interval`.
///
/// A failed check, download or install is logged with `tracing::warn` and the turn is
/// retried after [`FIRST_BACKOFF`], doubling per failure in a row, never more than
/// `check_interval`. Errors never end the loop. Intervals shorter than
/// [`MIN_CHECK_INTERVAL`] are raised to it.
///
/// When `stop` resolves the loop ends at once: a check, download or install in flight is
/// dropped, so [`Updates`] implementations must tolerate being cancelled.
pub(crate) async fn run<U: Updates, C: WallClock>(
    policy: &Policy,
    tz: &TimeZone,
    updates: &U,
    clock: &C,
    stop: impl Future<Output = ()>,
) -> RunStats {
    let mut stats = RunStats::default();
    tokio::select! {
        biased;
        () = stop => debug!("update loop stopped"),
        never = drive(policy, tz, updates, clock, &mut stats) => match never {},
    }
    stats
}

/// An offer acted on without checking again while the last check is fresh.
#[derive(Debug, Clone, Copy)]
struct Pending {
    checked_at: Instant,
    offer: Offer,
}

/// The loop itself: turns separated by sleeps, with backoff after errors.
async fn drive<U: Updates, C: WallClock>(
    policy: &Policy,
    tz: &TimeZone,
    updates: &U,
    clock: &C,
    stats: &mut RunStats,
) -> Infallible {
    let interval = policy.check_interval.max(MIN_CHECK_INTERVAL);
    let mut backoff = FIRST_BACKOFF;
    let mut pending = None;
    loop {
        let delay = match turn(policy, tz, updates, clock, interval, &mut pending, stats).await {
            Ok(delay) => {
                backoff = FIRST_BACKOFF;
                delay
            }
            Err(error) => {
                stats.errors += 1;
                let delay = backoff.min(interval);
                warn!(
                    %error,
                    retry_in = %humantime::format_duration(delay),
                    "update attempt failed"
                );
                backoff = backoff.saturating_mul(2).min(interval);
                delay
            }
        };
        sleep(delay).await;
    }
}

/// One turn: checks unless `pending` is fresh, then acts until there is nothing to do now.
/// Returns how long to sleep before the next turn. `pending` is left set only while waiting
/// for the window, so every other outcome, errors included, checks again next turn.
async fn turn<U: Updates, C: WallClock>(
    policy: &Policy,
    tz: &TimeZone,
    updates: &U,
    clock: &C,
    interval: Duration,
    pending: &mut Option<Pending>,
    stats: &mut RunStats,
) -> crate::Result<Duration> {
    let mut current = match pending.take() {
        Some(fresh) if fresh.checked_at.elapsed() < interval => fresh,
        _ => {
            let checked_at = Instant::now();
            let offer = updates.check().await?;
            stats.checks += 1;
            let Some(offer) = offer else {
                debug!("up to date");
                return Ok(interval);
            };
            Pending { checked_at, offer }
        }
    };
    loop {
        let now = clock.now();
        match policy.step(&current.offer, now, tz) {
            Step::Nothing(why) => {
                debug!(?why, "an update is offered; nothing to do now");
                updates.waiting(why.to_string());
                return Ok(interval);
            }
            Step::Download => {
                info!(critical = current.offer.critical, "downloading an update");
                updates.download().await?;
                stats.downloads += 1;
                current.offer.staged = true;
            }
            Step::Install => {
                info!(critical = current.offer.critical, "installing an update");
                updates.install().await?;
                stats.installs += 1;
                return Ok(interval);
            }
            Step::WaitForWindow { opens } => {
                debug!(%opens, "the update is staged; waiting for the maintenance window");
                let local = opens.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M %Z");
                updates.waiting(format!(
                    "staged; waiting for the maintenance window, which opens {local}"
                ));
                *pending = Some(current);
                let until_open = Duration::try_from(opens.duration_since(now)).unwrap_or_default();
                return Ok(until_open.min(MAX_WINDOW_SLEEP));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use jiff::SignedDuration;

    use super::*;
    use crate::policy::MaintenanceWindow;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        Check,
        Download,
        Install,
    }

    /// An origin, an install and a wall clock: the clock is a base instant plus tokio's
    /// elapsed time plus an adjustable jump.
    struct World {
        started: Instant,
        base: Timestamp,
        jump: Cell<SignedDuration>,
        /// What the origin offers (its `staged` is ignored); installing clears it.
        offered: Cell<Option<Offer>>,
        staged: Cell<bool>,
        /// How many of the next calls of each kind fail.
        failures: Cell<[u32; 3]>,
        download_takes: Cell<Duration>,
        /// (op, succeeded, wall clock, tokio elapsed), at the end of each call.
        calls: RefCell<Vec<(Op, bool, Timestamp, Duration)>>,
        /// Why the offer waited, each time the loop said so.
        waits: RefCell<Vec<String>>,
    }

    impl World {
        fn new(base: &str, offered: Option<Offer>) -> Self {
            Self {
                started: Instant::now(),
                base: base.parse().unwrap(),
                jump: Cell::new(SignedDuration::ZERO),
                offered: Cell::new(offered),
                staged: Cell::new(false),
                failures: Cell::new([0; 3]),
                download_takes: Cell::new(Duration::ZERO),
                calls: RefCell::new(Vec::new()),
                waits: RefCell::new(Vec::new()),
            }
        }

        fn fail(&self, op: Op, times: u32) {
            let mut failures = self.failures.get();
            failures[op as usize] = times;
            self.failures.set(failures);
        }

        fn jump(&self, by: SignedDuration) {
            self.jump.set(self.jump.get() + by);
        }

        fn record(&self, op: Op) -> crate::Result<()> {
            let mut failures = self.failures.get();
            let ok = failures[op as usize] == 0;
            failures[op as usize] = failures[op as usize].saturating_sub(1);
            self.failures.set(failures);
            let entry = (op, ok, self.now(), self.started.elapsed());
            self.calls.borrow_mut().push(entry);
            if ok {
                Ok(())
            } else {
                Err(crate::Error::Http {
                    url: "https://cdn.example/channels/stable".into(),
                    reason: "503 Service Unavailable".into(),
                    transient: true,
                })
            }
        }

        /// The calls as "DD HH:MM:SS op" by the wall clock, "(failed)" marking failures.
        fn log(&self) -> Vec<String> {
            self.calls
                .borrow()
                .iter()
                .map(|(op, ok, wall, _)| {
                    let failed = if *ok { "" } else { " (failed)" };
                    format!("{} {op:?}{failed}", wall.strftime("%d %H:%M:%S"))
                })
                .collect()
        }

        /// The calls as "seconds since start op".
        fn log_elapsed(&self) -> Vec<String> {
            self.calls
                .borrow()
                .iter()
                .map(|(op, ok, _, elapsed)| {
                    let failed = if *ok { "" } else { " (failed)" };
                    format!("{} {op:?}{failed}", elapsed.as_secs())
                })
                .collect()
        }

        fn installs(&self) -> Vec<(Timestamp, Duration)> {
            let calls = self.calls.borrow();
            let installs = calls.iter().filter(|c| c.0 == Op::Install && c.1);
            installs.map(|c| (c.2, c.3)).collect()
        }
    }

    impl Updates for World {
        async fn check(&self) -> crate::Result<Option<Offer>> {
            self.record(Op::Check)?;
            Ok(self.offered.get().map(|offer| Offer {
                staged: self.staged.get(),
                ..offer
            }))
        }

        async fn download(&self) -> crate::Result<()> {
            sleep(self.download_takes.get()).await;
            self.record(Op::Download)?;
            self.staged.set(true);
            Ok(())
        }

        async fn install(&self) -> crate::Result<()> {
            self.record(Op::Install)?;
            self.staged.set(false);
            self.offered.set(None);
            Ok(())
        }

        fn waiting(&self, reason: String) {
            self.waits.borrow_mut().push(reason);
        }
    }

    impl WallClock for World {
        fn now(&self) -> Timestamp {
            let elapsed = SignedDuration::try_from(self.started.elapsed()).unwrap();
            self.base + elapsed + self.jump.get()
        }
    }

    const ROLLOUT: Option<Offer> = Some(Offer {
        critical: false,
        in_rollout: true,
        staged: false,
    });

    fn policy(window: Option<&str>) -> Policy {
        Policy {
            window: window.map(|w| w.parse::<MaintenanceWindow>().unwrap()),
            ..Policy::default()
        }
    }

    /// Runs the loop for `duration` of tokio time.
    async fn run_for(policy: &Policy, world: &World, duration: Duration) -> RunStats {
        run(policy, &TimeZone::UTC, world, world, sleep(duration)).await
    }

    #[tokio::test(start_paused = true)]
    async fn up_to_date_checks_every_interval() {
        let world = World::new("2025-01-15T00:00:00Z", None);
        let stats = run_for(&policy(None), &world, HOUR * 3 + MINUTE * 30).await;
        assert_eq!(
            world.log(),
            [
                "15 00:00:00 Check",
                "15 01:00:00 Check",
                "15 02:00:00 Check",
                "15 03:00:00 Check"
            ]
        );
        assert_eq!((stats.checks, stats.downloads, stats.installs), (4, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn in_window_downloads_and_installs_at_once() {
        let world = World::new("2025-01-15T02:30:00Z", ROLLOUT);
        let stats = run_for(&policy(Some("02:00-04:00")), &world, HOUR + MINUTE * 30).await;
        assert_eq!(
            world.log(),
            [
                "15 02:30:00 Check",
                "15 02:30:00 Download",
                "15 02:30:00 Install",
                "15 03:30:00 Check"
            ]
        );
        assert_eq!(
            (stats.checks, stats.downloads, stats.installs, stats.errors),
            (2, 1, 1, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn outside_window_downloads_then_installs_when_it_opens() {
        let world = World::new("2025-01-15T00:00:00Z", ROLLOUT);
        run_for(&policy(Some("02:00-04:00")), &world, HOUR * 3 + MINUTE * 30).await;
        assert_eq!(
            world.log(),
            [
                "15 00:00:00 Check",
                "15 00:00:00 Download",
                // Waiting re-checks the origin once per interval, not once per wake-up.
                "15 01:00:00 Check",
                "15 02:00:00 Check",
                "15 02:00:00 Install",
                "15 03:00:00 Check",
            ]
        );
        // Each wake-up says why it waits (the daemon prints a reason once per change).
        let waits = world.waits.borrow();
        assert!(!waits.is_empty());
        for reason in waits.iter() {
            assert_eq!(
                reason,
                "staged; waiting for the maintenance window, which opens 2025-01-15 02:00 UTC"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn auto_install_off_only_downloads() {
        let world = World::new("2025-01-15T00:00:00Z", ROLLOUT);
        let policy = Policy {
            auto_install: false,
            ..policy(None)
        };
        run_for(&policy, &world, HOUR * 2 + MINUTE * 30).await;
        assert_eq!(
            world.log(),
            [
                "15 00:00:00 Check",
                "15 00:00:00 Download",
                "15 01:00:00 Check",
                "15 02:00:00 Check"
            ]
        );
        let waits = world.waits.borrow();
        assert_eq!(waits.len(), 3, "{waits:?}");
        assert!(
            waits.iter().all(|w| w.contains("auto_install is off")),
            "{waits:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn critical_installs_at_once_outside_the_window() {
        let critical = Some(Offer {
            critical: true,
            in_rollout: false,
            staged: false,
        });
        let world = World::new("2025-01-15T12:00:00Z", critical);
        let policy = Policy {
            auto_download: false,
            auto_install: false,
            ..policy(Some("02:00-04:00"))
        };
        run_for(&policy, &world, MINUTE * 30).await;
        assert_eq!(
            world.log(),
            [
                "15 12:00:00 Check",
                "15 12:00:00 Download",
                "15 12:00:00 Install"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn not_in_rollout_only_checks() {
        let outside = Some(Offer {
            in_rollout: false,
            ..ROLLOUT.unwrap()
        });
        let world = World::new("2025-01-15T00:00:00Z", outside);
        let stats = run_for(&policy(None), &world, HOUR + MINUTE).await;
        assert_eq!(world.log(), ["15 00:00:00 Check", "15 01:00:00 Check"]);
        assert_eq!((stats.checks, stats.downloads, stats.installs), (2, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_jump_past_the_window_waits_for_the_next_one() {
        let world = World::new("2025-01-15T00:00:00Z", ROLLOUT);
        let policy = Policy {
            check_interval: HOUR * 6,
            ..policy(Some("02:00-04:00"))
        };
        let stop = async {
            sleep(MINUTE * 10 + Duration::from_secs(30)).await;
            world.jump(SignedDuration::from_hours(5)); // 00:10:30 → 05:10:30
            sleep(HOUR * 30).await;
        };
        run(&policy, &TimeZone::UTC, &world, &world, stop).await;
        assert_eq!(
            world.log(),
            [
                "15 00:00:00 Check",
                "15 00:00:00 Download",
                "15 11:00:00 Check",
                "15 17:00:00 Check",
                "15 23:00:00 Check",
                "16 02:00:00 Install",
                "16 08:00:00 Check",
            ]
        );
        assert_eq!(world.installs(), [(ts("2025-01-16T02:00:00Z"), HOUR * 21)]);
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_jump_into_the_window_is_noticed_within_a_minute() {
        let world = World::new("2025-01-15T00:00:00Z", ROLLOUT);
        let stop = async {
            sleep(MINUTE * 10 + Duration::from_secs(30)).await;
            world.jump(SignedDuration::from_hours(2)); // 00:10:30 → 02:10:30
            sleep(HOUR).await;
        };
        run(
            &policy(Some("02:00-04:00")),
            &TimeZone::UTC,
            &world,
            &world,
            stop,
        )
        .await;
        assert_eq!(
            world.installs(),
            [(ts("2025-01-15T02:11:00Z"), MINUTE * 11)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_jump_backward_delays_the_install() {
        let world = World::new("2025-01-15T01:50:00Z", ROLLOUT);
        let policy = Policy {
            check_interval: HOUR * 6,
            ..policy(Some("02:00-04:00"))
        };
        let stop = async {
            sleep(MINUTE * 5 + Duration::from_secs(30)).await;
            world.jump(SignedDuration::from_hours(-3)); // 01:55:30 → 22:55:30 the day before
            sleep(HOUR * 5).await;
        };
        run(&policy, &TimeZone::UTC, &world, &world, stop).await;
        // Not at 10 minutes in, when the window would have opened without the jump, but
        // when the wall clock reaches 02:00 again.
        assert_eq!(
            world.log(),
            [
                "15 01:50:00 Check",
                "15 01:50:00 Download",
                "15 02:00:00 Install"
            ]
        );
        assert_eq!(
            world.installs(),
            [(ts("2025-01-15T02:00:00Z"), HOUR * 3 + MINUTE * 10)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_and_recover() {
        let world = World::new("2025-01-15T00:00:00Z", ROLLOUT);
        world.fail(Op::Check, 3);
        world.fail(Op::Download, 1);
        let stats = run_for(&policy(None), &world, HOUR * 2).await;
        assert_eq!(
            world.log_elapsed(),
            [
                "0 Check (failed)",
                "30 Check (failed)",
                "90 Check (failed)",
                "210 Check",
                "210 Download (failed)",
                "450 Check",
                "450 Download",
                "450 Install",
                "4050 Check",
            ]
        );
        assert_eq!(
            stats,
            RunStats {
                checks: 3,
                downloads: 1,
                installs: 1,
                errors: 4,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_never_exceeds_the_interval() {
        let world = World::new("2025-01-15T00:00:00Z", None);
        world.fail(Op::Check, 5);
        let policy = Policy {
            check_interval: Duration::from_secs(100),
            ..policy(None)
        };
        run_for(&policy, &world, Duration::from_secs(500)).await;
        let times: Vec<_> = world.calls.borrow().iter().map(|c| c.3.as_secs()).collect();
        assert_eq!(times, [0, 30, 90, 190, 290, 390, 490]);
    }

    #[tokio::test(start_paused = true)]
    async fn too_short_an_interval_is_raised_to_the_minimum() {
        let world = World::new("2025-01-15T00:00:00Z", None);
        let policy = Policy {
            check_interval: Duration::ZERO,
            ..policy(None)
        };
        let stats = run_for(&policy, &world, Duration::from_secs(25)).await;
        assert_eq!(stats.checks, 3); // at 0, 10 and 20 s
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_loop_promptly() {
        let world = World::new("2025-01-15T00:00:00Z", ROLLOUT);
        world.download_takes.set(MINUTE * 10);
        let started = Instant::now();
        let stats = run_for(&policy(None), &world, MINUTE).await;
        // Stopped mid-download, after one minute, not after the download's ten.
        assert_eq!(started.elapsed(), MINUTE);
        assert_eq!(world.log(), ["15 00:00:00 Check"]);
        assert_eq!((stats.checks, stats.downloads), (1, 0));

        // And while sleeping.
        let world = World::new("2025-01-15T00:00:00Z", None);
        let started = Instant::now();
        run_for(&policy(None), &world, MINUTE * 90).await;
        assert_eq!(started.elapsed(), MINUTE * 90);
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }
}
