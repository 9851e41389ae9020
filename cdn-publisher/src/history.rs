//! A channel's history: its releases newest first, along the manifests' `parent` links.

use std::collections::HashSet;

use anyhow::{Context, Result, anyhow, bail};
use relsync_format::ManifestId;
use relsync_format::manifest::{Manifest, decompress_envelope};
use relsync_format::paths::manifest_path;

use crate::origin::Origin;

/// A release on the origin: its manifest file, checked against its name (not its signatures).
#[derive(Debug)]
pub struct Release {
    pub id: ManifestId,
    pub envelope: Vec<u8>,
    /// Decoded without checking its signatures.
    pub manifest: Manifest,
    /// Length of `manifests/<id>`.
    pub file_len: u64,
}

/// A channel's releases, newest first, along the manifests' `parent` links. Ends at a
/// manifest with no parent or one missing from the origin.
pub struct History<'a> {
    origin: &'a Origin,
    next: Option<ManifestId>,
    seen: HashSet<ManifestId>,
}

impl<'a> History<'a> {
    pub fn new(origin: &'a Origin, start: Option<ManifestId>) -> Self {
        Self {
            origin,
            next: start,
            seen: HashSet::new(),
        }
    }

    fn read(&self, id: ManifestId) -> Result<Option<Release>> {
        let Some(file) = self.origin.read(&manifest_path(&id))? else {
            return Ok(None);
        };
        let envelope =
            decompress_envelope(&file, None).with_context(|| format!("manifest {id}"))?;
        if ManifestId::of(&envelope) != id {
            bail!("manifests/{id} on the origin does not hash to its name");
        }
        let manifest = relsync_format::dangerous::manifest(&envelope)
            .with_context(|| format!("manifest {id}"))?;
        Ok(Some(Release {
            id,
            envelope,
            manifest,
            file_len: file.len() as u64,
        }))
    }
}

impl Iterator for History<'_> {
    type Item = Result<Release>;

    fn next(&mut self) -> Option<Result<Release>> {
        let id = self.next.take()?;
        if !self.seen.insert(id) {
            return Some(Err(anyhow!("the parent links loop at manifest {id}")));
        }
        match self.read(id) {
            Ok(Some(release)) => {
                self.next = release.manifest.parent;
                Some(Ok(release))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
