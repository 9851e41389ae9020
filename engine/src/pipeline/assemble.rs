//! assemble: build the new tree in a staging directory on the install's file system.

use std::collections::HashMap;
use std::fs::{self, File, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::faults::step;
use crate::layout::{InstallLayout, STAGING_DIR};
use crate::manifest::EntryKind;
use crate::pipeline::fetch::Fetched;
use crate::pipeline::plan::{FileAction, Planned, chunk_bytes, file_entry};
use crate::platform::{self, TREE_DIR_MODE, file_mode};
use crate::progress::{Event, Reporter};
use crate::{Error, Result};

/// The output of the assemble stage: a complete, not yet verified tree.
#[derive(Debug)]
pub struct Assembled {
    pub(crate) planned: Planned,
    /// The tree: `.relsync/staging/<name>`.
    pub(crate) staging: PathBuf,
    /// Its name in `.relsync/staging`.
    pub(crate) name: String,
}

/// Runs the assemble stage (blocking).
pub(crate) fn assemble(
    fetched: Fetched,
    layout: &InstallLayout,
    reporter: &Arc<dyn Reporter>,
) -> Result<Assembled> {
    let planned = fetched.planned;
    let target = &planned.checked.target;
    // `.relsync/staging` is private (0700), so nobody else can reach the tree while it is
    // built by path below; the tree itself gets the modes it will be installed with.
    let staging_dir = layout.state_dir()?.private_dir(STAGING_DIR)?;
    let name = target.id().short();
    let staging = staging_dir.path().join(&name);
    if staging_dir.meta_at(&name)?.is_some() {
        step("assemble.clear-staging", &staging)?;
        staging_dir.remove_tree(&name)?;
    }
    step("assemble.create-staging", &staging)?;
    staging_dir.create_dir(&name, TREE_DIR_MODE)?;

    // Directories and symlinks first, in order (parents before children), then files.
    for entry in &target.entries {
        let path = entry.path.under(&staging);
        match &entry.kind {
            EntryKind::Dir => {
                step("assemble.mkdir", &path)?;
                fs::create_dir(&path)
                    .and_then(|()| {
                        fs::set_permissions(&path, Permissions::from_mode(TREE_DIR_MODE))
                    })
                    .map_err(Error::io("creating", &path))?;
            }
            EntryKind::Symlink { target } => {
                step("assemble.symlink", &path)?;
                std::os::unix::fs::symlink(target, &path)
                    .map_err(Error::io("creating symlink", &path))?;
            }
            EntryKind::File(_) => {}
        }
    }
    let total = planned.plan.files.len() as u64;
    let done = AtomicU64::new(0);
    planned
        .plan
        .files
        .par_iter()
        .enumerate()
        .try_for_each(|(row, file_plan)| {
            let Some(file) = file_entry(&planned, row) else {
                return Ok(());
            };
            let path = target.entries[row].path.under(&staging);
            match &file_plan.action {
                FileAction::Link { from } => {
                    link(&layout.root().join(from), &path, file.executable)?
                }
                _ => write_file(&planned, &file.chunks, &path, file.executable)?,
            }
            let files = done.fetch_add(1, Ordering::Relaxed) + 1;
            reporter.report(Event::Assembled { files, total });
            Ok::<_, Error>(())
        })?;
    Ok(Assembled {
        planned,
        staging,
        name,
    })
}

/// Hard-links an installed file into the new tree, or copies it where the file system
/// cannot link (verify checks the result either way).
fn link(from: &Path, to: &Path, executable: bool) -> Result<()> {
    step("assemble.link", to)?;
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if platform::cannot_hard_link(&e) => {
            let mut src = platform::open_read(from).map_err(Error::io("opening", from))?;
            let mut out = create_new(to)?;
            std::io::copy(&mut src, &mut out).map_err(Error::io("copying", from))?;
            // The signed mode, not the source's.
            out.set_permissions(Permissions::from_mode(file_mode(executable)))
                .map_err(Error::io("setting mode of", to))?;
            out.sync_all().map_err(Error::io("syncing", to))
        }
        Err(e) => Err(Error::io("linking", to)(e)),
    }
}

/// Creates a file that must not exist yet: never follows or reuses whatever is at `path`
/// (on a case-insensitive file system two release paths could name one file).
fn create_new(path: &Path) -> Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(Error::io("creating", path))
}

fn write_file(planned: &Planned, chunks: &[u32], path: &Path, executable: bool) -> Result<()> {
    step("assemble.create", path)?;
    let mut out = create_new(path)?;
    let mut sources = HashMap::new();
    step("assemble.write", path)?;
    for &index in chunks {
        let data = chunk_bytes(planned, &mut sources, index)?;
        out.write_all(&data).map_err(Error::io("writing", path))?;
    }
    step("assemble.chmod", path)?;
    out.set_permissions(Permissions::from_mode(file_mode(executable)))
        .map_err(Error::io("setting mode of", path))?;
    step("assemble.fsync-file", path)?;
    out.sync_all().map_err(Error::io("syncing", path))?;
    Ok(())
}
