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
        /// Pack bytes received so far in this stage.
        bytes: u64,
        /// Pack bytes planned.
        total: u64,
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
