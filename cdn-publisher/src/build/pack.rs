//! Writing frames into packs of at most `max_pack_bytes`, each named by its BLAKE3. A sealed
//! pack goes to the origin's [`Uploads`] (in the background for a bucket) while packing goes on.

use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use relsync_format::PackId;
use relsync_format::manifest::PackRef;
use relsync_format::paths::pack_path;
use tempfile::NamedTempFile;

use crate::origin::{Origin, Uploads};

/// Appends frames to the current pack, sealing it into the origin when full.
pub struct PackWriter<'a> {
    origin: &'a Origin,
    uploads: Uploads<'a>,
    max_pack_bytes: u64,
    open: Option<OpenPack>,
    sealed: Vec<PackRef>,
}

struct OpenPack {
    file: BufWriter<NamedTempFile>,
    hasher: blake3::Hasher,
    len: u64,
}

impl<'a> PackWriter<'a> {
    pub fn new(origin: &'a Origin, max_pack_bytes: u64) -> Self {
        Self {
            origin,
            uploads: Uploads::new(origin),
            max_pack_bytes,
            open: None,
            sealed: Vec::new(),
        }
    }

    /// Appends a frame; returns the index of the pack it went into.
    pub fn append(&mut self, frame: &[u8]) -> Result<u32> {
        if let Some(open) = &self.open
            && open.len > 0
            && open.len + frame.len() as u64 > self.max_pack_bytes
        {
            self.seal()?;
        }
        let open = match &mut self.open {
            Some(open) => open,
            None => self.open.insert(OpenPack {
                file: BufWriter::with_capacity(
                    1 << 20,
                    NamedTempFile::new_in(self.origin.scratch()).with_context(|| {
                        format!("creating a pack in {}", self.origin.scratch().display())
                    })?,
                ),
                hasher: blake3::Hasher::new(),
                len: 0,
            }),
        };
        open.file.write_all(frame).context("writing pack")?;
        open.hasher.update(frame);
        open.len += frame.len() as u64;
        Ok(self.sealed.len() as u32)
    }

    fn seal(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let id = PackId::from(open.hasher.finalize());
        let tmp = open
            .file
            .into_inner()
            .map_err(|e| e.into_error())
            .context("flushing pack")?;
        self.uploads
            .put_file(pack_path(&id), tmp.into_temp_path())?;
        self.sealed.push(PackRef { id, len: open.len });
        Ok(())
    }

    /// Seals the last pack and waits until every pack is on the origin; returns all packs and
    /// the bytes of those new to the origin.
    pub fn finish(mut self) -> Result<(Vec<PackRef>, u64)> {
        self.seal()?;
        let bytes_written = self.uploads.finish()?;
        Ok((self.sealed, bytes_written))
    }
}

impl std::fmt::Debug for PackWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackWriter")
            .field("sealed", &self.sealed.len())
            .finish_non_exhaustive()
    }
}
