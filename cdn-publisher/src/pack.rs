//! Writing frames into packs of at most `max_pack_bytes`, each named by its BLAKE3.

use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use relsync_engine::PackId;
use relsync_engine::layout::pack_path;
use relsync_engine::manifest::PackRef;
use tempfile::NamedTempFile;

use crate::origin::LocalOrigin;

/// Appends frames to the current pack, sealing it into the origin when full.
pub struct PackWriter<'a> {
    origin: &'a LocalOrigin,
    max_pack_bytes: u64,
    open: Option<OpenPack>,
    sealed: Vec<PackRef>,
    bytes_written: u64,
}

struct OpenPack {
    file: BufWriter<NamedTempFile>,
    hasher: blake3::Hasher,
    len: u64,
}

impl<'a> PackWriter<'a> {
    pub fn new(origin: &'a LocalOrigin, max_pack_bytes: u64) -> Self {
        Self {
            origin,
            max_pack_bytes,
            open: None,
            sealed: Vec::new(),
            bytes_written: 0,
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
                    NamedTempFile::new_in(self.origin.scratch())
                        .context("creating a pack in the origin's .tmp folder")?,
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
        let path = pack_path(&id);
        if self.origin.exists(&path) {
            drop(tmp);
        } else {
            let tmp = tmp.into_temp_path();
            self.origin.put_file(&path, &tmp)?;
            tmp.keep().ok();
            self.bytes_written += open.len;
        }
        self.sealed.push(PackRef { id, len: open.len });
        Ok(())
    }

    /// Seals the last pack; returns all packs and the bytes of those new to the origin.
    pub fn finish(mut self) -> Result<(Vec<PackRef>, u64)> {
        self.seal()?;
        Ok((self.sealed, self.bytes_written))
    }
}

impl std::fmt::Debug for PackWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackWriter")
            .field("sealed", &self.sealed.len())
            .finish_non_exhaustive()
    }
}
