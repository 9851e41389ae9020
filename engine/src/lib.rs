//! The relsync update engine.
//!
//! An app or a fleet agent points an [`Updater`] at an origin (a folder served by any HTTP
//! server or CDN), a channel and a set of trusted keys. Each update runs one pipeline, in which
//! every stage consumes the previous stage's type:
//!
//! ```text
//! check ──▶ plan ──▶ fetch ──▶ assemble ──▶ verify ──▶ apply
//! signed    reuse    ranges    staging      hashes     atomic
//! pointer   local    of packs  dir          of every   switch of
//! +manifest chunks                          file       `current`
//! ```
//!
//! ```no_run
//! use relsync_engine::{PublicKey, Updater, UpdaterConfig};
//!
//! # async fn run() -> relsync_engine::Result<()> {
//! let key: PublicKey = "ed25519:…".parse()?;
//! let config = UpdaterConfig::new("https://cdn.example.com/app/", "stable", vec![key], "/opt/app");
//! let report = Updater::open(config)?.update().await?;
//! println!("now at {} ({} bytes downloaded)", report.version, report.bytes_downloaded);
//! # Ok(()) }
//! ```
//!
//! Apps and agents usually want the whole lifecycle instead: [`Engine`] adds checks that say
//! what is offered and why it is held back, background downloads, installs on trial with
//! automatic rollback, a [`policy::Policy`] (interval, maintenance window, channel, critical
//! releases), events, telemetry and the audit log ([`audit`]); see [`lifecycle`].
//!
//! LAN peers plug in through [`peers::Peers`] ([`Updater::with_peers`]) and are served from a
//! [`Share`]; `relsync-peer` implements both over libp2p. What it does not do (yet):
//! object-store origins. Manifest and pack *writing* helpers live here so the publisher and
//! the client share one format, but walking and packing a release is the publisher's job.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod error;
mod faults;
mod install;
pub mod layout;
pub mod lifecycle;
pub mod peers;
mod pipeline;
mod platform;
pub mod policy;
mod progress;
mod runtime;
pub mod schedule;
mod share;
mod source;
mod updater;

pub use install::audit;
pub use relsync_format::{dangerous, directive, envelope, manifest, root};
pub(crate) use relsync_format::{ids, keys, path};

pub use config::{
    FetchConfig, HealthCheck, OriginConfig, TrialConfig, UpdaterConfig, this_platform,
};
pub use error::{Error, Result};
pub use ids::{ChunkId, FileHash, ManifestId, PackId};
pub use install::store::{BadRelease, Location, Release, Store, StoreStats, Trial, TrustedState};
pub use keys::{PublicKey, SecretKey};
pub use lifecycle::{
    CheckOutcome, Download, Engine, EngineBuilder, Sample, StartOutcome, Telemetry, UpdateAvailable,
};
pub use path::{
    MAX_SYMLINK_HOPS, NodeKind, RelPath, TreeIndex, TreeNode, check_symlink_in_tree,
    check_symlink_target, collision_key,
};
pub use pipeline::apply::Applied;
pub use pipeline::assemble::Assembled;
pub use pipeline::check::{Checked, Hold};
pub use pipeline::fetch::Fetched;
#[doc(hidden)]
pub use pipeline::plan::plan_stage;
pub use pipeline::plan::{FileAction, FilePlan, PlanTotals, Planned, RangePlan, UpdatePlan};
pub use pipeline::verify::{InstallCheck, VerifiedTree, verify_install};
pub use progress::{Event, Reporter, Silent};
pub use share::{HaveAnswer, Share};
pub use source::{Origin, RangeBody, Traffic};
pub use updater::{Status, UpdateReport, Updater, apply_staged, rollback, status};
