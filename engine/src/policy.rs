//! When to check, download and install: the update [`Policy`] and its pure decision,
//! [`Policy::step`].
//!
//! A policy is a plain struct for the API and a TOML table for the CLI:
//!
//! ```toml
//! check_interval = "6h"       # humantime; at least 10 s
//! auto_download = true
//! auto_install = true
//! install_critical = true     # critical updates ignore the two switches above and the window
//! channel = "stable"
//! window = "02:00-04:00"      # local wall-clock time; may wrap midnight ("22:00-04:00")
//! timezone = "Europe/Berlin"  # IANA name or POSIX TZ string; default: the system's
//! ```
//!
//! Nothing here does I/O except resolving a time zone by name; the loop that acts on the
//! decisions is [`crate::schedule::run`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The shortest [`Policy::check_interval`] accepted: 10 s.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// When to check for, download and install updates.
///
/// Build it with [`Policy::default`] and set fields, or read it from TOML with
/// [`Policy::from_toml`] (keys are the field names; unknown keys are refused).
///
/// # Defaults
///
/// | field | default |
/// |---|---|
/// | [`check_interval`](Self::check_interval) | 1 hour (`"1h"`); at least [`MIN_CHECK_INTERVAL`] |
/// | [`auto_download`](Self::auto_download) | `true` |
/// | [`auto_install`](Self::auto_install) | `true` |
/// | [`install_critical`](Self::install_critical) | `true` |
/// | [`channel`](Self::channel) | `"stable"` |
/// | [`window`](Self::window) | none: install at any time |
/// | [`timezone`](Self::timezone) | none: the system's local time zone |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Policy {
    /// How often to ask the origin for an update, measured on the monotonic clock. In TOML a
    /// humantime string such as `"1h"` or `"15m"`. Default: 1 hour; at least
    /// [`MIN_CHECK_INTERVAL`].
    #[serde(with = "interval_serde")]
    pub check_interval: Duration,
    /// Download (stage) an offered update without being asked. Downloading is allowed
    /// outside the maintenance window. Default: `true`.
    pub auto_download: bool,
    /// Install a staged update without being asked, inside the maintenance window if there
    /// is one. Default: `true`.
    pub auto_install: bool,
    /// Download and install a *critical* update at once, even when `auto_download` or
    /// `auto_install` is off and outside the maintenance window. Default: `true`.
    pub install_critical: bool,
    /// The release channel to follow: any valid channel name (`stable`, `beta` and `dev` are
    /// conventional). Switching channels is just setting another value. Default: `"stable"`.
    pub channel: String,
    /// When installs may happen, in local wall-clock time (TOML: `"02:00-04:00"`; an en dash
    /// also works). Default: none, so installs may happen at any time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<MaintenanceWindow>,
    /// The time zone the window is read in: an IANA name (`"Europe/Berlin"`) or a POSIX TZ
    /// string (`"EST5EDT,M3.2.0,M11.1.0"`). Default: none, meaning the system's local time
    /// zone (UTC when it cannot be determined). See [`Policy::time_zone`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(60 * 60),
            auto_download: true,
            auto_install: true,
            install_critical: true,
            channel: "stable".to_owned(),
            window: None,
            timezone: None,
        }
    }
}

impl Policy {
    /// Reads a policy from a TOML document whose top-level keys are the field names (serde,
    /// the one parser: the daemon's config reads its `[policy]` table the same way); a
    /// missing key keeps its default. The result is [validated](Self::validate).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Syntax`] for bad TOML, an unknown key, a value of the wrong type, a bad
    /// interval or window (its message names the key, the line and the problem); another
    /// [`PolicyError`] for a bad channel or time zone.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let policy: Self = toml::from_str(text).map_err(PolicyError::Syntax)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks what the field types cannot: the interval is at least [`MIN_CHECK_INTERVAL`],
    /// the channel is a valid name, and the time zone (if named) resolves.
    ///
    /// # Errors
    ///
    /// [`PolicyError::IntervalTooShort`], [`PolicyError::BadChannel`] or
    /// [`PolicyError::BadTimeZone`].
    pub fn validate(&self) -> Result<(), PolicyError> {
        check_interval(self.check_interval)?;
        if !relsync_format::paths::valid_channel(&self.channel) {
            return Err(PolicyError::BadChannel {
                channel: self.channel.clone(),
            });
        }
        if let Some(name) = &self.timezone {
            resolve_time_zone(name)?;
        }
        Ok(())
    }

    /// The time zone [`window`](Self::window) is read in: [`timezone`](Self::timezone)
    /// resolved as an IANA name, else as a POSIX TZ string; without one, the system's local
    /// time zone, or UTC (with a warning) when that cannot be determined.
    ///
    /// # Errors
    ///
    /// [`PolicyError::BadTimeZone`] when a named zone is neither.
    pub fn time_zone(&self) -> Result<TimeZone, PolicyError> {
        match &self.timezone {
            Some(name) => resolve_time_zone(name),
            None => Ok(TimeZone::try_system().unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot determine the local time zone; using UTC");
                TimeZone::UTC
            })),
        }
    }

    /// Decides what to do about `offer` at `now`, in time zone `tz`. Pure.
    ///
    /// 1. Neither in the rollout nor critical: [`Step::Nothing`].
    /// 2. Critical and [`install_critical`](Self::install_critical): [`Step::Download`] if
    ///    not staged, else [`Step::Install`], whatever the switches and the window say.
    /// 3. Not staged: [`Step::Download`] if [`auto_download`](Self::auto_download), else
    ///    nothing. Downloading is allowed outside the window.
    /// 4. Staged: nothing unless [`auto_install`](Self::auto_install); then
    ///    [`Step::WaitForWindow`] while the window is closed, else [`Step::Install`].
    pub(crate) fn step(&self, offer: &Offer, now: Timestamp, tz: &TimeZone) -> Step {
        if !offer.in_rollout && !offer.critical {
            return Step::Nothing(Idle::NotInRollout);
        }
        if offer.critical && self.install_critical {
            return if offer.staged {
                Step::Install
            } else {
                Step::Download
            };
        }
        if !offer.staged {
            return if self.auto_download {
                Step::Download
            } else {
                Step::Nothing(Idle::AutoDownloadOff)
            };
        }
        if !self.auto_install {
            return Step::Nothing(Idle::AutoInstallOff);
        }
        match self.window.map(|window| window.state(now, tz)) {
            Some(WindowState::Closed { opens }) => Step::WaitForWindow { opens },
            None | Some(WindowState::Open { .. }) => Step::Install,
        }
    }
}

/// What the origin offers, as far as the policy cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Offer {
    /// The release is marked critical (a security fix, say).
    pub critical: bool,
    /// This install falls inside the release's staged rollout.
    pub in_rollout: bool,
    /// The release is already downloaded and waits to be installed.
    pub staged: bool,
}

/// What to do next about an [`Offer`], as decided by [`Policy::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing until the next check, for the given reason.
    Nothing(Idle),
    /// Download (stage) the release now.
    Download,
    /// Install the staged release now.
    Install,
    /// Install the staged release once the maintenance window opens.
    WaitForWindow {
        /// When the window opens next.
        opens: Timestamp,
    },
}

/// Why [`Policy::step`] decided to do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// The release is not critical and this install is outside its rollout.
    NotInRollout,
    /// The release is not staged and [`Policy::auto_download`] is off.
    AutoDownloadOff,
    /// The release is staged and [`Policy::auto_install`] is off.
    AutoInstallOff,
}

impl std::fmt::Display for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Idle::NotInRollout => "the staged rollout has not reached this install",
            Idle::AutoDownloadOff => {
                "auto_download is off: `relsync update` (with the daemon stopped) takes it"
            }
            Idle::AutoInstallOff => {
                "staged; auto_install is off: `relsync apply` (with the daemon stopped) \
                 installs it"
            }
        })
    }
}

/// A daily maintenance window in local wall-clock time, such as `02:00-04:00`; it may wrap
/// midnight (`22:00-04:00`). Parse it from a string (`"HH:MM-HH:MM"`, with a hyphen or an en
/// dash; `24:00` is accepted as an end) or build it with [`MaintenanceWindow::new`]. A start
/// equal to the end is refused.
///
/// # Semantics
///
/// Each calendar day has one occurrence of the window. It opens at the instant that day's
/// `start` wall-clock time resolves to in the time zone, with the "compatible"
/// disambiguation of RFC 5545 and Temporal:
///
/// - a start inside a spring-forward gap is moved forward by the gap's length, so in
///   `America/New_York` 02:00 becomes 03:00 EDT (the instant the gap ends) and 02:30 becomes
///   03:30 EDT;
/// - a start inside a fall-back fold resolves to the earlier of its two instants.
///
/// The occurrence then stays open for the window's nominal length in real time: `end` −
/// `start` in wall minutes, plus 24 hours if it wraps midnight. So on the spring-forward day a
/// 02:00-03:00 window is open 03:00-04:00 EDT, and on the fall-back day a 01:00-02:00 window
/// opens once, at the first 01:00, for 60 real minutes (until the second 01:00). Occurrences
/// are half-open: open at the opening instant, closed at the closing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceWindow {
    start: Time,
    end: Time,
}

/// Whether a [`MaintenanceWindow`] is open at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// The window is open.
    Open {
        /// When it closes.
        closes: Timestamp,
    },
    /// The window is closed.
    Closed {
        /// When it opens next.
        opens: Timestamp,
    },
}

impl MaintenanceWindow {
    /// A window from `start` to `end`, each an `(hour, minute)` pair in local wall-clock
    /// time; `end` may be before `start` (wrapping midnight) and may be `(24, 0)`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::BadWindow`] if a time is out of range or `start == end`.
    pub fn new(start: (u8, u8), end: (u8, u8)) -> Result<Self, PolicyError> {
        let text = format!("{:02}:{:02}-{:02}:{:02}", start.0, start.1, end.0, end.1);
        let bad = |reason: String| PolicyError::BadWindow {
            value: text.clone(),
            reason,
        };
        let start = wall_time(start, false).map_err(bad)?;
        let end = wall_time(end, true).map_err(bad)?;
        if start == end {
            return Err(bad(
                "start and end are equal; omit the window to install at any time".into(),
            ));
        }
        Ok(Self { start, end })
    }

    /// The opening wall-clock time, `(hour, minute)`.
    pub fn start(&self) -> (u8, u8) {
        hour_minute(self.start)
    }

    /// The closing wall-clock time, `(hour, minute)`; midnight is `(0, 0)`.
    pub fn end(&self) -> (u8, u8) {
        hour_minute(self.end)
    }

    /// The nominal length: `end` − `start` in wall-clock time, plus 24 hours if the window
    /// wraps midnight.
    pub fn length(&self) -> Duration {
        let minutes = |t: Time| i64::from(t.hour()) * 60 + i64::from(t.minute());
        let length = (minutes(self.end) - minutes(self.start)).rem_euclid(24 * 60);
        Duration::from_secs(length.unsigned_abs() * 60)
    }

    /// Whether the window is open at `now` in time zone `tz` (see the type's docs for the
    /// rules), and until or from when.
    pub fn state(&self, now: Timestamp, tz: &TimeZone) -> WindowState {
        let today = tz.to_datetime(now).date();
        // Yesterday's occurrence may wrap into today and tomorrow's bounds the wait; the
        // day after only matters when a time zone change makes two occurrences overlap.
        let first = today.yesterday().unwrap_or(today);
        let days = std::iter::successors(Some(first), |day| day.tomorrow().ok()).take(4);
        let mut occurrences: Vec<(Timestamp, Timestamp)> =
            days.filter_map(|day| self.occurrence(day, tz)).collect();
        // A day skipped whole (Samoa, 2011-12-30) resolves to the next day's instant.
        occurrences.sort();
        occurrences.dedup();

        let Some(index) = occurrences
            .iter()
            .position(|&(opens, closes)| opens <= now && now < closes)
        else {
            let opens = occurrences
                .iter()
                .map(|&(opens, _)| opens)
                .find(|&opens| opens > now)
                // Only near the end of representable time.
                .unwrap_or(Timestamp::MAX);
            return WindowState::Closed { opens };
        };
        // A later occurrence opening before this one closes keeps the window open.
        let mut closes = occurrences[index].1;
        for &(next_opens, next_closes) in &occurrences[index + 1..] {
            if next_opens > closes {
                break;
            }
            closes = closes.max(next_closes);
        }
        WindowState::Open { closes }
    }

    /// The occurrence that opens on local date `day`: `(opens, closes)`. `None` only at the
    /// limits of representable time.
    fn occurrence(&self, day: Date, tz: &TimeZone) -> Option<(Timestamp, Timestamp)> {
        let opens = tz
            .to_ambiguous_timestamp(day.to_datetime(self.start))
            .compatible()
            .ok()?;
        let length = SignedDuration::try_from(self.length()).ok()?;
        let closes = opens.checked_add(length).ok()?;
        Some((opens, closes))
    }
}

impl FromStr for MaintenanceWindow {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, PolicyError> {
        let bad = |reason: &str| PolicyError::BadWindow {
            value: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (start, end) = text
            .split_once(['-', '–'])
            .ok_or_else(|| bad("expected HH:MM-HH:MM"))?;
        let start = parse_hh_mm(start.trim()).ok_or_else(|| bad("the start is not HH:MM"))?;
        let end = parse_hh_mm(end.trim()).ok_or_else(|| bad("the end is not HH:MM"))?;
        Self::new(start, end).map_err(|error| match error {
            PolicyError::BadWindow { reason, .. } => PolicyError::BadWindow {
                value: text.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, end) = (self.start(), self.end());
        write!(f, "{:02}:{:02}-{:02}:{:02}", start.0, start.1, end.0, end.1)
    }
}

impl Serialize for MaintenanceWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MaintenanceWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Why a [`Policy`] or [`MaintenanceWindow`] was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not a policy: bad TOML, an unknown key, a value of the wrong type, or a
    /// bad interval or window. The message names the key and the line.
    #[error("invalid policy: {0}")]
    Syntax(#[source] toml::de::Error),
    /// A check interval that is not a duration.
    #[error(
        "invalid check_interval {value:?}: {reason} (expected a duration such as \"1h\" or \"15m\")"
    )]
    BadInterval {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A check interval below [`MIN_CHECK_INTERVAL`].
    #[error(
        "check_interval {} is too short: the minimum is {}",
        humantime::format_duration(*.interval),
        humantime::format_duration(MIN_CHECK_INTERVAL)
    )]
    IntervalTooShort {
        /// The interval asked for.
        interval: Duration,
    },
    /// A maintenance window that cannot be parsed or is empty.
    #[error("invalid maintenance window {value:?}: {reason}")]
    BadWindow {
        /// The window as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A channel name that is not valid.
    #[error(
        "invalid channel {channel:?}: use 1-64 ASCII letters, digits, '-', '_' or '.', not \
         starting with '.'"
    )]
    BadChannel {
        /// The name as given.
        channel: String,
    },
    /// A time zone that is neither a known IANA name nor a POSIX TZ string.
    #[error("unknown time zone {name:?}: {reason}")]
    BadTimeZone {
        /// The name as given.
        name: String,
        /// Why neither reading worked.
        reason: String,
    },
}

fn resolve_time_zone(name: &str) -> Result<TimeZone, PolicyError> {
    TimeZone::get(name).or_else(|iana| {
        TimeZone::posix(name).map_err(|posix| PolicyError::BadTimeZone {
            name: name.to_owned(),
            reason: format!("not an IANA time zone name ({iana}) nor a POSIX TZ string ({posix})"),
        })
    })
}

fn parse_interval(text: &str) -> Result<Duration, PolicyError> {
    let interval = humantime::parse_duration(text).map_err(|error| PolicyError::BadInterval {
        value: text.to_owned(),
        reason: error.to_string(),
    })?;
    check_interval(interval)?;
    Ok(interval)
}

fn check_interval(interval: Duration) -> Result<(), PolicyError> {
    if interval < MIN_CHECK_INTERVAL {
        return Err(PolicyError::IntervalTooShort { interval });
    }
    Ok(())
}

/// `H:MM` or `HH:MM`, unchecked ranges.
fn parse_hh_mm(text: &str) -> Option<(u8, u8)> {
    let (hour, minute) = text.split_once(':')?;
    let digits = |s: &str, max_len| {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u8>().ok())
            .flatten()
    };
    if minute.len() != 2 {
        return None;
    }
    Some((digits(hour, 2)?, digits(minute, 2)?))
}

/// A wall-clock time from `(hour, minute)`; `(24, 0)` means midnight when `end`.
fn wall_time((hour, minute): (u8, u8), end: bool) -> Result<Time, String> {
    let which = if end { "end" } else { "start" };
    if end && (hour, minute) == (24, 0) {
        return Ok(Time::midnight());
    }
    if hour > 23 {
        return Err(format!("the {which} hour {hour} is out of range (0-23)"));
    }
    if minute > 59 {
        return Err(format!(
            "the {which} minute {minute} is out of range (0-59)"
        ));
    }
    // In range by the checks above, so this cannot fail.
    Time::new(hour as i8, minute as i8, 0, 0).map_err(|error| error.to_string())
}

fn hour_minute(time: Time) -> (u8, u8) {
    (time.hour().unsigned_abs(), time.minute().unsigned_abs())
}

/// `Duration` as a humantime string (`"1h"`), validated on the way in.
mod interval_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        interval: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*interval))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        super::parse_interval(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn window(text: &str) -> MaintenanceWindow {
        text.parse().unwrap()
    }

    fn new_york() -> TimeZone {
        TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap()
    }

    fn open(closes: &str) -> WindowState {
        WindowState::Open { closes: ts(closes) }
    }

    fn closed(opens: &str) -> WindowState {
        WindowState::Closed { opens: ts(opens) }
    }

    // ---- TOML ----

    #[test]
    fn empty_toml_gives_the_defaults() {
        let policy = Policy::from_toml("").unwrap();
        assert_eq!(policy, Policy::default());
        assert_eq!(policy.check_interval, Duration::from_secs(3600));
        assert!(policy.auto_download && policy.auto_install && policy.install_critical);
        assert_eq!(policy.channel, "stable");
        assert_eq!(policy.window, None);
        assert_eq!(policy.timezone, None);
    }

    const FULL: &str = r#"
        check_interval = "15m"
        auto_download = false
        auto_install = false
        install_critical = false
        channel = "beta"
        window = "22:30-04:00"
        timezone = "EST5EDT,M3.2.0,M11.1.0"
    "#;

    #[test]
    fn every_field_is_read() {
        let policy = Policy::from_toml(FULL).unwrap();
        assert_eq!(policy.check_interval, Duration::from_secs(15 * 60));
        assert!(!policy.auto_download && !policy.auto_install && !policy.install_critical);
        assert_eq!(policy.channel, "beta");
        let window = policy.window.unwrap();
        assert_eq!((window.start(), window.end()), ((22, 30), (4, 0)));
        assert_eq!(policy.timezone.as_deref(), Some("EST5EDT,M3.2.0,M11.1.0"));
        assert_eq!(policy.time_zone().unwrap(), new_york());
    }

    #[test]
    fn a_policy_round_trips_through_toml() {
        let policy = Policy::from_toml(FULL).unwrap();
        let text = toml::to_string(&policy).unwrap();
        assert!(text.contains("check_interval = \"15m\""), "{text}");
        assert!(text.contains("window = \"22:30-04:00\""), "{text}");
        assert_eq!(Policy::from_toml(&text).unwrap(), policy);
        // The defaults serialize without the optional keys and read back the same.
        let text = toml::to_string(&Policy::default()).unwrap();
        assert_eq!(Policy::from_toml(&text).unwrap(), Policy::default());
    }

    #[test]
    fn serde_refuses_unknown_keys_and_short_intervals() {
        let error = toml::from_str::<Policy>("colour = \"red\"").unwrap_err();
        assert!(error.to_string().contains("colour"), "{error}");
        let error = toml::from_str::<Policy>("check_interval = \"1s\"").unwrap_err();
        assert!(error.to_string().contains("too short"), "{error}");
        let error = toml::from_str::<Policy>("window = \"25:00-03:00\"").unwrap_err();
        assert!(error.to_string().contains("hour 25"), "{error}");
    }

    #[test]
    fn toml_errors_name_the_key_and_the_problem() {
        let error = |text: &str| Policy::from_toml(text).unwrap_err();
        let message = |text: &str| error(text).to_string();
        // Each bad document: what its message must say.
        let cases: [(&str, &[&str]); 7] = [
            ("window = ", &["invalid policy", "line 1"]),
            (
                "colour = 'red'",
                &["unknown field `colour`", "check_interval"],
            ),
            (
                "auto_install = 'yes'",
                &["auto_install", "expected a boolean"],
            ),
            ("check_interval = 3600", &["check_interval", "integer"]),
            (
                "check_interval = 'often'",
                &["check_interval", "\"often\"", "such as \"1h\""],
            ),
            (
                "check_interval = '9s'",
                &["check_interval", "9s is too short: the minimum is 10s"],
            ),
            (
                "window = '25:00-03:00'",
                &["window", "the start hour 25 is out of range (0-23)"],
            ),
        ];
        for (text, parts) in cases {
            let message = message(text);
            for part in parts {
                assert!(
                    message.contains(part),
                    "{text:?}: {message:?} lacks {part:?}"
                );
            }
            assert!(matches!(error(text), PolicyError::Syntax(_)), "{text:?}");
        }
        assert!(Policy::from_toml("check_interval = '10s'").is_ok());
        assert!(matches!(
            error("channel = '../etc'"),
            PolicyError::BadChannel { channel } if channel == "../etc"
        ));
        assert!(matches!(
            error("timezone = 'Nowhere/Atlantis'"),
            PolicyError::BadTimeZone { name, .. } if name == "Nowhere/Atlantis"
        ));
    }

    #[test]
    fn validate_checks_api_built_policies() {
        let mut policy = Policy::default();
        assert!(policy.validate().is_ok());
        policy.check_interval = Duration::from_secs(1);
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::IntervalTooShort { .. })
        ));
        policy.check_interval = Duration::from_secs(60);
        policy.channel = String::new();
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::BadChannel { .. })
        ));
        policy.channel = "dev".into();
        policy.timezone = Some("UTC".into());
        assert_eq!(policy.time_zone().unwrap(), TimeZone::UTC);
    }

    // ---- window parsing ----

    #[test]
    fn windows_parse_and_display() {
        for (text, start, end, shown) in [
            ("02:00-04:00", (2, 0), (4, 0), "02:00-04:00"),
            ("02:00–04:00", (2, 0), (4, 0), "02:00-04:00"),
            (" 2:00 - 4:30 ", (2, 0), (4, 30), "02:00-04:30"),
            ("22:00-04:00", (22, 0), (4, 0), "22:00-04:00"),
            ("22:00-24:00", (22, 0), (0, 0), "22:00-00:00"),
            ("00:00-23:59", (0, 0), (23, 59), "00:00-23:59"),
        ] {
            let window = window(text);
            assert_eq!((window.start(), window.end()), (start, end), "{text}");
            assert_eq!(window.to_string(), shown);
            assert_eq!(shown.parse::<MaintenanceWindow>().unwrap(), window);
        }
        assert_eq!(
            window("02:00-04:30").length(),
            Duration::from_secs(150 * 60)
        );
        assert_eq!(
            window("22:00-04:00").length(),
            Duration::from_secs(6 * 3600)
        );
    }

    #[test]
    fn bad_windows_are_refused() {
        for (text, reason) in [
            ("25:00-03:00", "start hour 25"),
            ("02:60-03:00", "start minute 60"),
            ("02:00-24:30", "end hour 24"),
            ("24:00-02:00", "start hour 24"),
            ("02:00-02:00", "equal"),
            ("00:00-24:00", "equal"),
            ("0200-0400", "start is not HH:MM"),
            ("02:00", "expected HH:MM-HH:MM"),
            ("02:0-03:00", "start is not HH:MM"),
            ("02:00-+3:00", "end is not HH:MM"),
            ("", "expected HH:MM-HH:MM"),
        ] {
            match text.parse::<MaintenanceWindow>() {
                Err(PolicyError::BadWindow { value, reason: got }) => {
                    assert_eq!(value, text);
                    assert!(got.contains(reason), "{text}: {got}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(MaintenanceWindow::new((1, 0), (1, 0)).is_err());
        assert!(MaintenanceWindow::new((1, 0), (24, 0)).is_ok());
    }

    // ---- window state ----

    #[test]
    fn plain_window() {
        let w = window("02:00-04:00");
        let utc = TimeZone::UTC;
        let state = |now| w.state(ts(now), &utc);
        assert_eq!(
            state("2025-01-15T00:00:00Z"),
            closed("2025-01-15T02:00:00Z")
        );
        assert_eq!(
            state("2025-01-15T01:59:59Z"),
            closed("2025-01-15T02:00:00Z")
        );
        assert_eq!(state("2025-01-15T02:00:00Z"), open("2025-01-15T04:00:00Z"));
        assert_eq!(state("2025-01-15T03:59:59Z"), open("2025-01-15T04:00:00Z"));
        assert_eq!(
            state("2025-01-15T04:00:00Z"),
            closed("2025-01-16T02:00:00Z")
        );
        assert_eq!(
            state("2025-01-15T23:59:59Z"),
            closed("2025-01-16T02:00:00Z")
        );
        // Read in another zone: 02:00 EST is 07:00 UTC.
        assert_eq!(
            w.state(ts("2025-01-15T06:00:00Z"), &new_york()),
            closed("2025-01-15T07:00:00Z")
        );
    }

    #[test]
    fn window_wrapping_midnight() {
        let w = window("22:00-04:00");
        let utc = TimeZone::UTC;
        let state = |now| w.state(ts(now), &utc);
        assert_eq!(
            state("2025-01-15T12:00:00Z"),
            closed("2025-01-15T22:00:00Z")
        );
        assert_eq!(state("2025-01-15T22:00:00Z"), open("2025-01-16T04:00:00Z"));
        assert_eq!(state("2025-01-15T23:30:00Z"), open("2025-01-16T04:00:00Z"));
        // Just after midnight, yesterday's occurrence is still open.
        assert_eq!(state("2025-01-16T00:00:00Z"), open("2025-01-16T04:00:00Z"));
        assert_eq!(state("2025-01-16T03:59:00Z"), open("2025-01-16T04:00:00Z"));
        assert_eq!(
            state("2025-01-16T04:00:00Z"),
            closed("2025-01-16T22:00:00Z")
        );
    }

    #[test]
    fn window_on_spring_forward_day() {
        // 2025-03-09: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        let tz = new_york();
        let w = window("02:00-03:00");
        let state = |now| w.state(ts(now), &tz);
        // 01:59 EST: opens when the gap ends, 03:00 EDT.
        assert_eq!(
            state("2025-03-09T06:59:00Z"),
            closed("2025-03-09T07:00:00Z")
        );
        // Open 03:00-04:00 EDT: the nominal 60 minutes.
        assert_eq!(state("2025-03-09T07:00:00Z"), open("2025-03-09T08:00:00Z"));
        assert_eq!(state("2025-03-09T07:59:59Z"), open("2025-03-09T08:00:00Z"));
        assert_eq!(
            state("2025-03-09T08:00:00Z"),
            closed("2025-03-10T06:00:00Z")
        );
        // A start inside the gap moves forward by the gap's length: 02:30 → 03:30 EDT.
        let w = window("02:30-03:30");
        assert_eq!(
            w.state(ts("2025-03-09T07:00:00Z"), &tz),
            closed("2025-03-09T07:30:00Z")
        );
        assert_eq!(
            w.state(ts("2025-03-09T07:30:00Z"), &tz),
            open("2025-03-09T08:30:00Z")
        );
        // A window wrapping over the change lasts its nominal 6 hours: 22:00 EST to
        // 05:00 EDT by the wall clock.
        let w = window("22:00-04:00");
        assert_eq!(
            w.state(ts("2025-03-09T08:30:00Z"), &tz),
            open("2025-03-09T09:00:00Z")
        );
        assert_eq!(
            w.state(ts("2025-03-09T09:00:00Z"), &tz),
            closed("2025-03-10T02:00:00Z")
        );
    }

    #[test]
    fn window_on_fall_back_day() {
        // 2025-11-02: 02:00 EDT falls back to 01:00 EST (06:00 UTC); 01:xx happens twice.
        let tz = new_york();
        let w = window("01:00-02:00");
        let state = |now| w.state(ts(now), &tz);
        // Opens once, at the first 01:00 (EDT, 05:00 UTC), for 60 real minutes.
        assert_eq!(
            state("2025-11-02T04:59:00Z"),
            closed("2025-11-02T05:00:00Z")
        );
        assert_eq!(state("2025-11-02T05:00:00Z"), open("2025-11-02T06:00:00Z"));
        assert_eq!(state("2025-11-02T05:59:59Z"), open("2025-11-02T06:00:00Z"));
        // The second 01:00-02:00 (EST) is not a second occurrence.
        assert_eq!(
            state("2025-11-02T06:00:00Z"),
            closed("2025-11-03T06:00:00Z")
        );
        assert_eq!(
            state("2025-11-02T06:30:00Z"),
            closed("2025-11-03T06:00:00Z")
        );
        // A window ending in the fold still lasts its nominal length: 00:00 EDT + 90 min.
        let w = window("00:00-01:30");
        assert_eq!(
            w.state(ts("2025-11-02T04:00:00Z"), &tz),
            open("2025-11-02T05:30:00Z")
        );
    }

    // ---- step ----

    #[test]
    fn step_follows_every_rule() {
        use Step::{Download, Install, Nothing};
        let now = ts("2025-01-15T12:00:00Z");
        let wait = Step::WaitForWindow {
            opens: ts("2025-01-16T02:00:00Z"),
        };
        let (open, shut) = (Some(window("11:00-13:00")), Some(window("02:00-04:00")));
        let (y, n) = (true, false);
        // auto_download, auto_install, install_critical, window,
        // offer (critical, in_rollout, staged), expected
        #[rustfmt::skip]
        let cases = [
            // Neither in the rollout nor critical: nothing, whatever else.
            (y, y, y, None, (n, n, n), Nothing(Idle::NotInRollout)),
            (y, y, y, None, (n, n, y), Nothing(Idle::NotInRollout)),
            // Critical with install_critical: ignores the switches, the rollout, the window.
            (n, n, y, shut, (y, n, n), Download),
            (n, n, y, shut, (y, n, y), Install),
            (y, y, y, shut, (y, y, y), Install),
            // Critical without install_critical: the ordinary rules (counts as in rollout).
            (n, y, n, None, (y, n, n), Nothing(Idle::AutoDownloadOff)),
            (y, y, n, shut, (y, n, y), wait),
            // Not staged: download iff auto_download, window or not.
            (y, n, y, shut, (n, y, n), Download),
            (y, y, y, open, (n, y, n), Download),
            (n, y, y, None, (n, y, n), Nothing(Idle::AutoDownloadOff)),
            // Staged: install iff auto_install and the window (if any) is open.
            (y, n, y, None, (n, y, y), Nothing(Idle::AutoInstallOff)),
            (y, n, y, shut, (n, y, y), Nothing(Idle::AutoInstallOff)),
            (n, y, y, None, (n, y, y), Install),
            (y, y, y, open, (n, y, y), Install),
            (y, y, y, shut, (n, y, y), wait),
        ];
        for (i, (auto_download, auto_install, install_critical, window, offer, expected)) in
            cases.into_iter().enumerate()
        {
            let policy = Policy {
                auto_download,
                auto_install,
                install_critical,
                window,
                ..Policy::default()
            };
            let (critical, in_rollout, staged) = offer;
            let offer = Offer {
                critical,
                in_rollout,
                staged,
            };
            assert_eq!(
                policy.step(&offer, now, &TimeZone::UTC),
                expected,
                "case {i}"
            );
        }
    }
}
