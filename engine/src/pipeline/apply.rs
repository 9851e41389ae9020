//! apply: make the verified tree durable, then switch `current` to it atomically.
//!
//! Order, each step durable before the next:
//! 1. fsync the staged tree's directories (files were synced as they were written);
//! 2. record the release in the store;
//! 3. rename the staged tree into `releases/`;
//! 4. point a fresh symlink at it and rename it over `current` (the commit point);
//! 5. record current and previous in the store, then delete older releases and blobs.
//!
//! A crash before step 4 leaves the old release in place; after it, the new one. The next run
//! reconciles the store with `current` (`install::switch::reconcile`) and removes what a crash left behind.
//! A failure before step 4 removes the new release's directory itself.
//!
//! Every file system step first passes through the fault-injecting seam (`faults::step`).

use std::path::Path;

use semver::Version;
use tracing::info;

use crate::faults::step;
use crate::install::store::Store;
use crate::install::switch::{cleanup, current_dir, switch_current};
use crate::layout::{InstallLayout, RELEASES_DIR, STAGING_DIR};
use crate::manifest::EntryKind;
use crate::pipeline::verify::VerifiedTree;
use crate::platform::{self, Dir, TREE_DIR_MODE};
use crate::{Error, Result};

/// What apply did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The version now current.
    pub version: Version,
    /// The version kept for rollback.
    pub previous: Option<Version>,
    /// The release directory name, under `releases/`.
    pub dir: String,
}

/// Runs the apply stage (blocking).
pub(crate) fn apply(tree: VerifiedTree, layout: &InstallLayout, store: &Store) -> Result<Applied> {
    let assembled = tree.assembled;
    let checked = &assembled.planned.checked;
    let target = &checked.target;

    for entry in &target.entries {
        if matches!(entry.kind, EntryKind::Dir) {
            sync_dir(&entry.path.under(&assembled.staging))?;
        }
    }
    sync_dir(&assembled.staging)?;

    let root = layout.root_dir()?;
    step("apply.mkdir-releases", &layout.releases())?;
    let (releases, _) = root.ensure_dir(RELEASES_DIR, TREE_DIR_MODE)?;
    let dir = free_name(
        &releases,
        &format!("{}-{}", target.version, target.id().short()),
    )?;
    let release = layout.release(&dir);
    step("apply.record-release", &layout.db())?;
    store.add_release(&dir, target)?;
    step("apply.rename-release", &release)?;
    let staging = layout.state_dir()?.open_dir(STAGING_DIR)?;
    staging.rename(&assembled.name, &releases, &dir)?;
    let switched = step("apply.fsync-dir", &layout.releases())
        .and_then(|()| releases.sync())
        .and_then(|()| switch_current(layout, &dir));
    if let Err(e) = switched {
        if current_dir(layout).as_deref() != Some(dir.as_str()) {
            // Never made current: leave nothing behind (the store forgets it at the next apply).
            let _ = releases.remove_tree(&dir);
        }
        return Err(e);
    }
    // A repair replaces the installed release: the one kept for rollback stays.
    let kept = if checked.repair {
        &checked.previous
    } else {
        &checked.installed
    };
    let previous = kept.as_ref().map(|r| r.dir.as_str());
    step("apply.record-current", &layout.db())?;
    let forgotten = store.set_installed(&dir, previous)?;
    info!(%dir, ?previous, "applied");
    cleanup(layout, &dir, previous, &forgotten);
    Ok(Applied {
        version: target.version.clone(),
        previous: kept.as_ref().map(|r| r.manifest.version.clone()),
        dir,
    })
}

/// `base`, or `base.1`, `base.2`, … : the first name not taken in `releases`.
fn free_name(releases: &Dir, base: &str) -> Result<String> {
    let mut name = base.to_owned();
    let mut n = 1;
    while releases.meta_at(&name)?.is_some() {
        name = format!("{base}.{n}");
        n += 1;
    }
    Ok(name)
}

/// Makes a directory of the staged tree durable (never through a link).
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    step("apply.fsync-dir", path)?;
    platform::open_read(path)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing", path))
}
