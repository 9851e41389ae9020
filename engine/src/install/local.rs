//! Reading what is already on disk: files of installed releases and fetched blobs, every
//! read checked against the hash the manifest names.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::ids::{ChunkId, FileHash};
use crate::{Error, Result};

/// BLAKE3 of a regular file's bytes (refusing symlinks and special files).
pub(crate) fn hash_file(path: &Path) -> Result<FileHash> {
    let meta = std::fs::symlink_metadata(path).map_err(Error::io("reading", path))?;
    if !meta.is_file() {
        return Err(Error::io("reading", path)(std::io::Error::other(
            "not a regular file",
        )));
    }
    let mut file = crate::platform::open_read(path).map_err(Error::io("opening", path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(Error::io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Reads a fetched chunk and returns its bytes, verified.
pub(crate) fn read_blob(path: &Path, id: ChunkId, len: u32) -> Result<Vec<u8>> {
    let file = crate::platform::open_read(path).map_err(Error::io("opening", path))?;
    let mut data = Vec::with_capacity(len as usize);
    file.take(u64::from(len) + 1)
        .read_to_end(&mut data)
        .map_err(Error::io("reading", path))?;
    if data.len() != len as usize {
        return Err(bad_local(
            id,
            path,
            format!("{} bytes, expected {len}", data.len()),
        ));
    }
    check_chunk(id, &data, path)?;
    Ok(data)
}

/// Reads a chunk from an installed file and returns its bytes, verified.
pub(crate) fn read_installed(path: &Path, offset: u64, id: ChunkId, len: u32) -> Result<Vec<u8>> {
    let file = crate::platform::open_read(path).map_err(Error::io("opening", path))?;
    read_chunk_at(&file, path, offset, id, len)
}

/// Reads `len` bytes at `offset` of an open installed file and checks them against `id`.
pub(crate) fn read_chunk_at(
    file: &File,
    path: &Path,
    offset: u64,
    id: ChunkId,
    len: u32,
) -> Result<Vec<u8>> {
    let mut data = vec![0u8; len as usize];
    file.read_exact_at(&mut data, offset)
        .map_err(Error::io("reading", path))?;
    check_chunk(id, &data, path)?;
    Ok(data)
}

fn check_chunk(id: ChunkId, data: &[u8], path: &Path) -> Result<()> {
    let actual = ChunkId::of(data);
    if actual == id {
        Ok(())
    } else {
        Err(bad_local(id, path, format!("hash is {actual}")))
    }
}

fn bad_local(chunk: ChunkId, path: &Path, reason: impl ToString) -> Error {
    Error::BadChunk {
        chunk,
        source_name: path.display().to_string(),
        reason: reason.to_string(),
    }
}
