//! verify: check every path of the staged tree against the signed manifest.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rayon::prelude::*;

use crate::assemble::{Assembled, mode};
use crate::manifest::EntryKind;
use crate::plan::hash_file;
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
    target.entries.par_iter().try_for_each(|entry| {
        let path = entry.path.under(staging);
        let meta = fs::symlink_metadata(&path).map_err(Error::io("checking", &path))?;
        let wrong = |what: &str| {
            Error::io("verifying", &path)(std::io::Error::other(format!("{what} is wrong")))
        };
        match &entry.kind {
            EntryKind::Dir if !meta.is_dir() => return Err(wrong("type")),
            EntryKind::Dir => {}
            EntryKind::Symlink { target } => {
                let actual = fs::read_link(&path).map_err(Error::io("reading link", &path))?;
                if !meta.is_symlink() || actual.as_os_str() != target.as_str() {
                    return Err(wrong("symlink"));
                }
            }
            EntryKind::File(file) => {
                let actual = hash_file(&path)?;
                if actual != file.hash {
                    return Err(Error::FileMismatch {
                        path: entry.path.to_string(),
                        expected: file.hash,
                        actual,
                    });
                }
                if meta.permissions().mode() & 0o7777 != mode(file.executable) {
                    return Err(wrong("mode"));
                }
            }
        }
        Ok(())
    })?;
    reporter.report(Event::Verified {
        files: target.entries.len() as u64,
    });
    Ok(VerifiedTree { assembled })
}
