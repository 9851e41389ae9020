//! Switching `current`: the one atomic step that changes which release runs, and bringing the
//! store in line with it after a crash. Only releases the store forgot are ever deleted.

use std::fs;

use tracing::{info, warn};

use crate::faults::step;
use crate::install::store::Store;
use crate::layout::{BLOB_DIR, CURRENT, InstallLayout, RELEASES_DIR, STAGING_DIR};
use crate::{Error, Result};

/// Points `current` at `releases/<dir>` with one atomic rename. Refuses a `current` that is
/// not a symbolic link: relsync never replaces what it did not make.
pub(crate) fn switch_current(layout: &InstallLayout, dir: &str) -> Result<()> {
    let root = layout.root_dir()?;
    if let Some(meta) = root.meta_at(CURRENT)?
        && !meta.is_symlink()
    {
        return Err(Error::Unmanaged {
            path: layout.current(),
            what: if meta.is_dir() {
                "a directory".into()
            } else {
                "a file".into()
            },
        });
    }
    let tmp = ".current.tmp";
    step("apply.symlink", &layout.root().join(tmp))?;
    root.remove_file(tmp)?;
    root.symlink(&format!("{RELEASES_DIR}/{dir}"), tmp)?;
    step("apply.swap", &layout.current())?;
    root.rename(tmp, &root, CURRENT)?;
    step("apply.fsync-dir", layout.root())?;
    root.sync()
}

/// The release directory `current` points at, if any.
pub(crate) fn current_dir(layout: &InstallLayout) -> Option<String> {
    let target = fs::read_link(layout.current()).ok()?;
    let name = target.strip_prefix(RELEASES_DIR).ok()?.to_str()?;
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

/// Removes the releases the store just forgot (every one of them made by relsync: a release
/// directory is recorded before it is renamed into `releases/`), fetched blobs and staging
/// leftovers. Nothing else under `releases/` is touched: relsync deletes only what it made.
/// Best effort: a failure here never undoes a successful apply.
pub(crate) fn cleanup(
    layout: &InstallLayout,
    current: &str,
    previous: Option<&str>,
    forgotten: &[String],
) {
    if step("apply.cleanup", &layout.releases()).is_err() {
        return;
    }
    if let Ok(releases) = layout
        .root_dir()
        .and_then(|root| root.open_dir(RELEASES_DIR))
    {
        for dir in forgotten {
            if dir != current && Some(dir.as_str()) != previous {
                let _ = releases.remove_tree(dir);
            }
        }
    }
    if let Ok(state) = layout.state_dir() {
        let _ = state.remove_tree(BLOB_DIR);
        let _ = state.remove_tree(STAGING_DIR);
    }
}
