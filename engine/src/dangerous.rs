//! Doors around the checks, for tools, benchmarks and fuzzers: never for deciding what to
//! trust.
//!
//! Everything in [`relsync_format::dangerous`] (decoding documents without verifying their
//! signatures), and [`plan`]: the plan stage over a manifest no one verified.

pub use relsync_format::dangerous::*;

use crate::Result;
use crate::config::FetchConfig;
use crate::install::store::{Release, Store};
use crate::layout::InstallLayout;
use crate::manifest::TrustedManifest;
use crate::pipeline::check::Checked;
use crate::pipeline::plan::{self, Planned};

/// Plans `target` as if a check had verified it, against the install at `layout` with
/// `installed` and `previous` as its releases (read from `store`): the plan stage alone, for
/// benchmarks and fuzzers, which plan manifests no one signed. Nothing planned here can be
/// fetched, staged or applied.
pub fn plan(
    target: TrustedManifest,
    installed: Option<Release>,
    previous: Option<Release>,
    layout: &InstallLayout,
    store: &Store,
    fetch: &FetchConfig,
) -> Result<Planned> {
    let checked = Checked::unverified(target, installed, previous, layout);
    plan::plan(checked, layout, store, fetch)
}
