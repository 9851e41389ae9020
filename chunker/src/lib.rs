//! Content-defined chunking for relsync.
//!
//! A file is cut into chunks with FastCDC (the 2020 variant, normalized), each chunk is named by
//! the BLAKE3 hash of its bytes ([`ChunkId`]), and stored as an independent zstd frame
//! ([`frame`]), so any chunk can be fetched, verified and used alone.
//!
//! ```
//! use relsync_chunker::{frame, ChunkId, ChunkParams, Chunker};
//!
//! let data = vec![7u8; 300_000];
//! let mut rebuilt = Vec::new();
//! for chunk in Chunker::new(&data[..], ChunkParams::default())? {
//!     let chunk = chunk?;
//!     let packed = frame::compress(&chunk.data, 3)?;
//!     let unpacked = frame::decompress(&packed, chunk.data.len())?;
//!     assert_eq!(ChunkId::of(&unpacked), ChunkId::of(&chunk.data));
//!     rebuilt.extend_from_slice(&unpacked);
//! }
//! assert_eq!(rebuilt, data);
//! # Ok::<(), relsync_chunker::Error>(())
//! ```
//!
//! This crate is sync and pure: it does no file-system walking, no networking and no threading.
//! Callers parallelize across chunks (the publisher uses rayon).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod chunk;
mod error;
pub mod frame;
mod id;

pub use chunk::{Chunk, ChunkData, ChunkParams, Chunker, chunk_slice};
pub use error::{Error, Result};
pub use id::{ChunkId, IdParseError};

#[doc(hidden)]
pub use blake3 as __blake3;
#[doc(hidden)]
pub use hex as __hex;
