//! FastCDC boundaries.

use std::io::{self, Read};

use fastcdc::v2020::{FastCDC, StreamCDC};
use serde::{Deserialize, Serialize};

use crate::{ChunkId, Error, Result};

/// Chunk size bounds for FastCDC.
///
/// # Defaults
/// `min_bytes` 16 KiB, `avg_bytes` 64 KiB, `max_bytes` 256 KiB (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChunkParams {
    /// No cut is made before this many bytes (except at the end of the input).
    pub min_bytes: u32,
    /// The target average chunk size.
    pub avg_bytes: u32,
    /// A cut is forced at this many bytes.
    pub max_bytes: u32,
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self {
            min_bytes: 16 * 1024,
            avg_bytes: 64 * 1024,
            max_bytes: 256 * 1024,
        }
    }
}

impl ChunkParams {
    /// Builds and validates chunk size bounds.
    pub fn new(min_bytes: u32, avg_bytes: u32, max_bytes: u32) -> Result<Self> {
        let params = Self {
            min_bytes,
            avg_bytes,
            max_bytes,
        };
        params.validate()?;
        Ok(params)
    }

    fn as_usize(&self) -> (usize, usize, usize) {
        (
            self.min_bytes as usize,
            self.avg_bytes as usize,
            self.max_bytes as usize,
        )
    }

    /// Checks the bounds against FastCDC's limits and ordering, and that they are even.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason| Error::InvalidParams {
            min: self.min_bytes,
            avg: self.avg_bytes,
            max: self.max_bytes,
            reason,
        };
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = self.as_usize();
        if !(MINIMUM_MIN..=MINIMUM_MAX).contains(&min) {
            return Err(fail("min out of FastCDC range"));
        }
        if !(AVERAGE_MIN..=AVERAGE_MAX).contains(&avg) {
            return Err(fail("avg out of FastCDC range"));
        }
        if !(MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max) {
            return Err(fail("max out of FastCDC range"));
        }
        if !(self.min_bytes <= self.avg_bytes && self.avg_bytes <= self.max_bytes) {
            return Err(fail("need min <= avg <= max"));
        }
        // FastCDC scans in byte pairs: odd sizes trip its debug asserts and shift cut points.
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return Err(fail("sizes must be even"));
        }
        Ok(())
    }
}

/// Where a chunk sits in its file, and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes (at most `max_bytes`).
    pub len: u32,
    /// BLAKE3 of the bytes.
    pub id: ChunkId,
}

/// A chunk's position and its bytes, from a streaming [`Chunker`].
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkData {
    /// Byte offset in the input.
    pub offset: u64,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for ChunkData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkData")
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .finish()
    }
}

impl ChunkData {
    /// Hashes the bytes and returns the chunk's position and id.
    pub fn to_chunk(&self) -> Chunk {
        Chunk {
            offset: self.offset,
            len: self.data.len() as u32,
            id: ChunkId::of(&self.data),
        }
    }
}

/// Streams chunks out of a reader with memory bounded by `max_bytes`.
///
/// Yields nothing for empty input, and a single chunk for input shorter than `min_bytes`.
/// Reads interrupted by a signal are retried; after any other read error the iterator ends.
pub struct Chunker<R: Read> {
    inner: StreamCDC<RetryInterrupted<R>>,
    failed: bool,
}

/// Retries [`io::ErrorKind::Interrupted`], which `StreamCDC` would report as a failure.
struct RetryInterrupted<R>(R);

impl<R: Read> Read for RetryInterrupted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl<R: Read> std::fmt::Debug for Chunker<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker").finish_non_exhaustive()
    }
}

impl<R: Read> Chunker<R> {
    /// Starts chunking `reader`.
    pub fn new(reader: R, params: ChunkParams) -> Result<Self> {
        params.validate()?;
        let (min, avg, max) = params.as_usize();
        Ok(Self {
            inner: StreamCDC::new(RetryInterrupted(reader), min, avg, max),
            failed: false,
        })
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = Result<ChunkData>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.inner.next()?.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => Error::Io(e),
            other => Error::Io(io::Error::other(other.to_string())),
        });
        self.failed = item.is_err();
        Some(item.map(|chunk| ChunkData {
            offset: chunk.offset,
            data: chunk.data,
        }))
    }
}

/// Chunks an in-memory buffer and hashes each chunk.
///
/// Gives the same boundaries as [`Chunker`] over the same bytes.
pub fn chunk_slice(data: &[u8], params: ChunkParams) -> Result<Vec<Chunk>> {
    params.validate()?;
    let (min, avg, max) = params.as_usize();
    Ok(FastCDC::new(data, min, avg, max)
        .map(|c| Chunk {
            offset: c.offset as u64,
            len: c.length as u32,
            id: ChunkId::of(&data[c.offset..c.offset + c.length]),
        })
        .collect())
}
