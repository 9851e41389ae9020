//! Progress as data: the engine reports [`Event`]s; front ends render them.

use semver::Version;
use serde::Serialize;

/// Something that happened during an update.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Fetching the channel pointer and manifest.
    CheckStarted {
        /// The channel.
        channel: String,
    },
    /// Metadata verified.
    Checked {
        /// The release offered.
        version: Version,
        /// What is installed now.
        installed: Option<Version>,
        /// Nothing to do.
        up_to_date: bool,
    },
    /// The plan is ready.
    Planned {
        /// Bytes to download (frames, plus small gaps between them).
        bytes_to_fetch: u64,
        /// Range requests planned.
        requests: u64,
        /// Bytes of chunks reused from local files.
        bytes_reused: u64,
    },
    /// Some verified frames arrived.
    Fetched {
        /// Bytes of planned frames done so far in this stage (each counted once, however
        /// it arrived).
        bytes: u64,
        /// Bytes of planned frames (gaps between them excluded).
        total: u64,
        /// Of `bytes`, compressed chunk bytes that came from LAN peers (the rest came from
        /// the origin).
        from_peers: u64,
    },
    /// A file of the new tree was written or linked.
    Assembled {
        /// Files done.
        files: u64,
        /// Files in the release.
        total: u64,
    },
    /// Every file matched its signed hash.
    Verified {
        /// Files checked.
        files: u64,
    },
    /// `current` now points at the new release.
    Applied {
        /// The new version.
        version: Version,
    },
    /// A check found a release this install may take.
    UpdateAvailable {
        /// The release offered.
        version: Version,
        /// Bytes the download would transfer.
        bytes_on_wire: u64,
        /// Signed as critical by the publisher.
        critical: bool,
    },
    /// A download finished: the release is verified and staged.
    Downloaded {
        /// The staged release.
        version: Version,
        /// Bytes received from the origin, metadata included.
        bytes_from_origin: u64,
        /// Bytes received from LAN peers.
        bytes_from_peers: u64,
    },
    /// Installing a staged release began.
    InstallStarted {
        /// The release being installed.
        version: Version,
    },
    /// The app must restart to run the new release: its running files are the old ones.
    RestartRequired {
        /// The release now installed.
        version: Version,
    },
    /// An operation failed (it is retried or reported; nothing was switched).
    Failed {
        /// `check`, `download`, `install`, `update` or `rollback`.
        operation: String,
        /// What went wrong.
        error: String,
    },
    /// `current` went back to an earlier release.
    RolledBack {
        /// The release left.
        from: Version,
        /// The release now current.
        to: Version,
        /// Why.
        reason: String,
    },
    /// The channel offers a release this install does not take now, and why: held back by
    /// the check (rollout, marked bad, channel behind), or waiting under the policy
    /// (maintenance window, auto-download or auto-install off).
    Waiting {
        /// The release offered.
        version: Version,
        /// Why it is not taken now, in words.
        reason: String,
    },
}

/// Receives events. Must be cheap: it is called from the pipeline's workers.
pub trait Reporter: Send + Sync {
    /// Handles one event.
    fn report(&self, event: Event);
}

/// Ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event) {}
}

impl<F: Fn(Event) + Send + Sync> Reporter for F {
    fn report(&self, event: Event) {
        self(event)
    }
}
