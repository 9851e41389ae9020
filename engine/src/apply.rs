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
//! reconciles the store with `current` (see [`reconcile`]) and removes what a crash left behind.
//! A failure before step 4 removes the new release's directory itself.
//!
//! Every file system step first passes through the fault-injecting seam (`faults::step`).

use std::fs::{self, File};
use std::path::Path;

use semver::Version;
use tracing::{info, warn};

use crate::faults::step;
use crate::layout::InstallLayout;
use crate::manifest::EntryKind;
use crate::store::Store;
use crate::verify::VerifiedTree;
use crate::{Error, Result};

/// What apply did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The version now current.
    pub version: Version,
    /// The version kept for rollback.
    pub previous: Option<Version>,
    /// The release directory name.
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

    let releases = layout.releases();
    step("apply.mkdir-releases", &releases)?;
    fs::create_dir_all(&releases).map_err(Error::io("creating", &releases))?;
    let dir = free_name(
        layout,
        &format!("{}-{}", target.version, target.id().short()),
    );
    let release = layout.release(&dir);
    step("apply.record-release", &layout.db())?;
    store.add_release(&dir, target)?;
    step("apply.rename-release", &release)?;
    fs::rename(&assembled.staging, &release).map_err(Error::io("renaming", &release))?;
    if let Err(e) = sync_dir(&releases).and_then(|()| switch_current(layout, &dir)) {
        if current_dir(layout).as_deref() != Some(dir.as_str()) {
            // Never made current: leave nothing behind (the store forgets it at the next apply).
            let _ = fs::remove_dir_all(&release);
        }
        return Err(e);
    }
    let previous = checked.installed.as_ref().map(|r| r.dir.as_str());
    step("apply.record-current", &layout.db())?;
    let forgotten = store.set_installed(&dir, previous)?;
    info!(%dir, ?previous, "applied");
    cleanup(layout, &dir, previous, &forgotten);
    Ok(Applied {
        version: target.version.clone(),
        previous: checked.installed_version().cloned(),
        dir,
    })
}

/// Points `current` at `releases/<dir>` with one atomic rename.
pub(crate) fn switch_current(layout: &InstallLayout, dir: &str) -> Result<()> {
    let current = layout.current();
    if let Ok(meta) = fs::symlink_metadata(&current)
        && !meta.is_symlink()
    {
        return Err(Error::io("replacing", &current)(std::io::Error::other(
            "not a symlink managed by relsync; move it away first",
        )));
    }
    let tmp = layout.root().join(".current.tmp");
    step("apply.symlink", &tmp)?;
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("releases/{dir}"), &tmp)
        .map_err(Error::io("creating symlink", &tmp))?;
    step("apply.swap", &current)?;
    fs::rename(&tmp, &current).map_err(Error::io("switching", &current))?;
    sync_dir(layout.root())
}

/// The release directory `current` points at, if any.
pub(crate) fn current_dir(layout: &InstallLayout) -> Option<String> {
    let target = fs::read_link(layout.current()).ok()?;
    let name = target.strip_prefix("releases").ok()?.to_str()?;
    Some(name.to_owned())
}

/// Brings the store in line with `current` after a crash between the switch and the record.
pub(crate) fn reconcile(layout: &InstallLayout, store: &Store) -> Result<()> {
    let Some(on_disk) = current_dir(layout) else {
        return Ok(());
    };
    let recorded = store.current()?.map(|r| r.dir);
    if recorded.as_deref() == Some(on_disk.as_str()) {
        return Ok(());
    }
    if !store.has_release(&on_disk)? {
        warn!(%on_disk, "current points at a release the store does not know");
        return Ok(());
    }
    let previous = recorded.filter(|p| layout.release(p).is_dir());
    info!(%on_disk, ?previous, "finishing an interrupted apply");
    step("apply.record-current", &layout.db())?;
    let forgotten = store.set_installed(&on_disk, previous.as_deref())?;
    cleanup(layout, &on_disk, previous.as_deref(), &forgotten);
    Ok(())
}

/// Removes releases other than current and previous, blobs, and staging leftovers.
/// Best effort: a failure here never undoes a successful apply.
fn cleanup(layout: &InstallLayout, current: &str, previous: Option<&str>, forgotten: &[String]) {
    if step("apply.cleanup", &layout.releases()).is_err() {
        return;
    }
    let mut stale: Vec<String> = forgotten.to_vec();
    if let Ok(dirs) = fs::read_dir(layout.releases()) {
        stale.extend(
            dirs.flatten()
                .filter_map(|d| d.file_name().into_string().ok()),
        );
    }
    for dir in stale {
        if dir != current && Some(dir.as_str()) != previous {
            let _ = fs::remove_dir_all(layout.release(&dir));
        }
    }
    let _ = fs::remove_dir_all(layout.blobs());
    let _ = fs::remove_dir_all(layout.staging());
}

fn free_name(layout: &InstallLayout, base: &str) -> String {
    let mut name = base.to_owned();
    let mut n = 1;
    while fs::symlink_metadata(layout.release(&name)).is_ok() {
        name = format!("{base}.{n}");
        n += 1;
    }
    name
}

pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    step("apply.fsync-dir", path)?;
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing", path))
}
