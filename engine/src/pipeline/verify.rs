//! verify: check every path of the staged tree against the signed manifest; and, for
//! `relsync verify`, the installed release the same way.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use semver::Version;
use serde::Serialize;

use crate::install::local::hash_file;
use crate::install::store::{Release, Store};
use crate::install::switch::current_dir;
use crate::layout::InstallLayout;
use crate::manifest::{Entry, EntryKind};
use crate::pipeline::assemble::Assembled;
use crate::platform::{self, TREE_DIR_MODE, file_mode};
use crate::progress::{Event, Reporter};
use crate::{Error, Result};

/// A staged tree whose every file, link and directory matched the signed manifest.
///
/// Only the verify stage makes one, and only a `VerifiedTree` can be applied.
#[derive(Debug)]
pub struct VerifiedTree {
    pub(crate) assembled: Assembled,
}

/// Runs the verify stage (blocking).
pub(crate) fn verify(assembled: Assembled, reporter: &Arc<dyn Reporter>) -> Result<VerifiedTree> {
    let target = &assembled.planned.checked.target;
    let staging = &assembled.staging;
    target
        .entries
        .par_iter()
        .try_for_each(|entry| check_entry(entry, staging))?;
    reporter.report(Event::Verified {
        files: target.entries.len() as u64,
    });
    Ok(VerifiedTree { assembled })
}

/// Checks one entry of a manifest against the tree at `root`.
fn check_entry(entry: &Entry, root: &Path) -> Result<()> {
    let path = entry.path.under(root);
    let meta = fs::symlink_metadata(&path).map_err(Error::io("checking", &path))?;
    let wrong = |what: &str| {
        Error::io("verifying", &path)(std::io::Error::other(format!("{what} is wrong")))
    };
    let wrong_mode = |expected: u32| {
        let actual = meta.permissions().mode() & 0o7777;
        (actual != expected).then(|| {
            Error::io("verifying", &path)(std::io::Error::other(format!(
                "mode {actual:04o}, expected {expected:04o}"
            )))
        })
    };
    if !meta.is_symlink() {
        use std::os::unix::fs::MetadataExt;
        let (owner, me) = (meta.uid(), platform::effective_uid());
        if owner != me && owner != 0 {
            return Err(Error::io("verifying", &path)(std::io::Error::other(
                format!(
                    "owned by {}, expected {}",
                    platform::user_name(owner),
                    platform::user_name(me)
                ),
            )));
        }
    }
    match &entry.kind {
        EntryKind::Dir if !meta.is_dir() => return Err(wrong("type")),
        EntryKind::Dir => {
            if let Some(e) = wrong_mode(TREE_DIR_MODE) {
                return Err(e);
            }
        }
        EntryKind::Symlink { target } => {
            let actual = fs::read_link(&path).map_err(Error::io("reading link", &path))?;
            if !meta.is_symlink() || actual.as_os_str() != target.as_str() {
                return Err(wrong("symlink"));
            }
        }
        EntryKind::File(file) => {
            if !meta.is_file() {
                return Err(wrong("type"));
            }
            let actual = hash_file(&path)?;
            if actual != file.hash {
                return Err(Error::FileMismatch {
                    path: entry.path.to_string(),
                    expected: file.hash,
                    actual,
                });
            }
            if let Some(e) = wrong_mode(file_mode(file.executable)) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// What `relsync verify` found in an install.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct InstallCheck {
    /// The current release's version.
    pub version: Version,
    /// Its manifest id.
    pub manifest: String,
    /// The release directory `current` points at.
    pub dir: PathBuf,
    /// Entries of the manifest checked (files hashed, links and directories compared).
    pub entries: u64,
    /// Every difference from the signed manifest, one line each; empty when the install is
    /// exactly the release.
    pub problems: Vec<String>,
}

impl InstallCheck {
    /// Whether the install is exactly its signed release.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the installed release against its signed manifest: `current` points at the release
/// the store records, every file has its signed hash and mode, every link its target, and
/// nothing else is in the tree.
pub(crate) fn verify_install<D: redb::ReadableDatabase>(
    layout: &InstallLayout,
    store: &Store<D>,
) -> Result<InstallCheck> {
    let release = crate::install::installed_releases(layout, store)?
        .0
        .ok_or_else(|| Error::NothingInstalled("nothing is installed".into()))?;
    let mut problems = Vec::new();
    if current_dir(layout).as_deref() != Some(release.dir.as_str()) {
        problems.push(format!(
            "`current` does not point at releases/{}, the release the store records",
            release.dir
        ));
    }
    problems.extend(check_release(layout, &release)?);
    let manifest = &release.manifest;
    Ok(InstallCheck {
        version: manifest.version.clone(),
        manifest: manifest.id().to_string(),
        dir: layout.release(&release.dir),
        entries: manifest.entries.len() as u64,
        problems,
    })
}

/// Every difference between an installed release and its signed manifest, one line each:
/// files (hash, type, mode), links, directories (type, mode 0755), the release directory's
/// own mode, and anything in the tree the manifest does not list.
pub(crate) fn check_release(layout: &InstallLayout, release: &Release) -> Result<Vec<String>> {
    let root = layout.release(&release.dir);
    let mut problems = Vec::new();
    let meta = fs::symlink_metadata(&root).map_err(Error::io("checking", &root))?;
    if !meta.is_dir() {
        problems.push(format!("{}: not a directory", root.display()));
        return Ok(problems);
    }
    {
        use std::os::unix::fs::MetadataExt;
        let (owner, me) = (meta.uid(), platform::effective_uid());
        if owner != me && owner != 0 {
            problems.push(format!(
                "{}: owned by {}, expected {}",
                root.display(),
                platform::user_name(owner),
                platform::user_name(me)
            ));
        }
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != TREE_DIR_MODE {
        problems.push(format!(
            "{}: mode {mode:04o}, expected {TREE_DIR_MODE:04o}",
            root.display()
        ));
    }
    let manifest = &release.manifest;
    let mut found: Vec<String> = manifest
        .entries
        .par_iter()
        .filter_map(|entry| check_entry(entry, &root).err())
        .map(|e| describe(&e))
        .collect();
    found.sort();
    problems.extend(found);
    let expected: BTreeSet<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    let mut extra = Vec::new();
    walk(&root, "", &mut extra)?;
    problems.extend(
        extra
            .into_iter()
            .filter(|p| !expected.contains(p.as_str()))
            .map(|p| format!("{p}: not in the signed manifest")),
    );
    Ok(problems)
}

/// An error and its causes on one line: "verifying PATH: mode 0777, expected 0755".
fn describe(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Every path under `dir`, relative (`/`-separated), without following symlinks.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        let entry = entry.map_err(Error::io("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry
            .file_type()
            .map_err(Error::io("checking", entry.path()))?;
        if kind.is_dir() {
            walk(&entry.path(), &rel, out)?;
        }
        out.push(rel);
    }
    Ok(())
}
