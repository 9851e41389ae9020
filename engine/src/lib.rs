//! The relsync update engine.
//!
//! An app or a fleet agent points an [`Engine`] at an origin (a folder served by any HTTP
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
//! use relsync_engine::{Engine, PublicKey};
//!
//! # async fn run() -> relsync_engine::Result<()> {
//! let key: PublicKey = "ed25519:…".parse()?;
//! let engine = Engine::builder("https://cdn.example.com/app/", vec![key], "/opt/app")
//!     .product("app")
//!     .open()?;
//! let report = engine.update().await?;
//! println!("now at {} ({} bytes downloaded)", report.version, report.bytes_downloaded);
//! # Ok(()) }
//! ```
//!
//! [`Engine`] is the one front door: checks that say what is offered and why it is held back
//! (a check's plan is what the next download fetches), background downloads, installs on
//! trial with automatic rollback, a [`Policy`] (interval, maintenance window, channel,
//! critical releases), events, telemetry and the audit log ([`AuditLog`]).
//! [`Engine::local`] opens an install without an origin (status, verify, rollback, an offline
//! install of a staged release); [`blocking::Engine`] is the same API without an async
//! runtime; [`dangerous`] holds the doors around the checks, for tools and benchmarks.
//!
//! LAN peers plug in through [`Peers`] ([`Engine::attach_peers`]) and are served from a
//! [`Share`] ([`Engine::share`]); `relsync-peer` implements both over libp2p. What it does not
//! do (yet): object-store origins. The release format itself (manifests, pointers, roots,
//! directives) is `relsync-format`'s, re-exported here as [`manifest`], [`envelope`], [`root`],
//! [`directive`] and [`paths`] (where each lives on an origin); walking and packing a release
//! is the publisher's job.
//!
//! The public surface is flat: every type at the crate root, plus the modules [`blocking`],
//! [`dangerous`] and the format's.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
pub mod dangerous;
mod engine;
mod error;
mod faults;
mod install;
mod layout;
mod peers;
mod pipeline;
mod platform;
mod policy;
mod progress;
mod runtime;
mod schedule;
mod share;
mod source;

pub use engine::blocking;
pub use relsync_format::{directive, envelope, manifest, paths, root};
pub(crate) use relsync_format::{ids, keys, path};

pub use config::{
    FetchConfig, HealthCheck, OriginConfig, TrialConfig, UpdaterConfig, this_platform,
};
pub use engine::{
    CheckOutcome, Download, Engine, EngineBuilder, ReadOnlyInstall, RepairReport, Sample,
    StartOutcome, Telemetry, UpdateAvailable,
};
pub use error::{Error, Result};
pub use ids::{ChunkId, FileHash, ManifestId, PackId};
pub use install::Status;
pub use install::audit::{
    AuditError, AuditEvent, AuditHash, AuditLog, AuditProblem, AuditRecord, AuditRecords,
    AuditSummary,
};
pub use install::store::{
    BadRelease, Location, ReadOnlyStore, Release, Store, StoreStats, Trial, TrustedState,
};
pub use keys::{PublicKey, SecretKey};
pub use layout::InstallLayout;
pub use path::{
    MAX_SYMLINK_HOPS, NodeKind, RelPath, TreeIndex, TreeNode, check_symlink_in_tree,
    check_symlink_target, collision_key,
};
pub use peers::{ChunkBits, Holding, PeerError, PeerFrames, Peers};
pub use pipeline::check::Hold;
pub use pipeline::plan::{FileAction, FilePlan, PlanTotals, Planned, RangePlan, UpdatePlan};
pub use pipeline::verify::InstallCheck;
pub use pipeline::{HeldBack, UpdateReport};
pub use policy::{MIN_CHECK_INTERVAL, MaintenanceWindow, Policy, PolicyError, WindowState};
pub use progress::{Event, Reporter, Silent};
pub use schedule::RunStats;
pub use share::{HaveAnswer, Share};
pub use source::{Origin, RangeBody, Traffic};
