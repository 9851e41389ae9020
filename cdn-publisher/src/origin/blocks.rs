//! Small reads of a remote target's content-addressed objects, through cached blocks: reading
//! an earlier release chunk by chunk (for delta frames) then costs a request per block, not
//! per chunk.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use crate::target::Target;

/// Blocks are read whole, at this size.
pub const BLOCK_BYTES: u64 = 4 << 20;
/// Blocks kept.
const CACHED_BLOCKS: usize = 16;

/// Blocks of content-addressed objects read lately, and those objects' lengths. Their bytes
/// never change, so nothing is ever stale.
#[derive(Debug)]
pub struct Blocks {
    /// The origin as given, for messages.
    origin: String,
    cached: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    lens: HashMap<String, u64>,
    /// (path, block index) and its bytes, the most recently used last.
    recent: VecDeque<((String, u64), Bytes)>,
}

impl Blocks {
    /// An empty cache for the target of origin `origin` (as given, for messages).
    pub fn new(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            cached: Mutex::default(),
        }
    }

    /// Whether a read of `len` bytes is small enough to go through blocks.
    pub fn suits(len: usize) -> bool {
        (len as u64) < BLOCK_BYTES / 2
    }

    fn lock(&self) -> MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `len` bytes at `offset` of content-addressed object `path` of `target`.
    pub fn read(
        &self,
        target: &dyn Target,
        path: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let end = offset + len as u64;
        let known = self.lock().lens.get(path).copied();
        let object_len = match known {
            Some(n) => n,
            None => {
                let n = target.len_of(path)?.with_context(|| {
                    format!("reading {path} from {}: it is missing", self.origin)
                })?;
                self.lock().lens.insert(path.to_owned(), n);
                n
            }
        };
        if end > object_len {
            bail!(
                "reading {path} at {offset}..{end} from {}: it has {object_len} bytes",
                self.origin
            );
        }
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while at < end {
            let index = at / BLOCK_BYTES;
            let start = index * BLOCK_BYTES;
            let block = self.block(target, path, index, object_len)?;
            let to = (end - start).min(block.len() as u64);
            out.extend_from_slice(&block[(at - start) as usize..to as usize]);
            at = start + to;
        }
        Ok(out)
    }

    /// Block `index` of `path`, from the cache or the target.
    fn block(&self, target: &dyn Target, path: &str, index: u64, object_len: u64) -> Result<Bytes> {
        let key = (path.to_owned(), index);
        {
            let mut cached = self.lock();
            if let Some(i) = cached.recent.iter().position(|(k, _)| *k == key)
                && let Some(hit) = cached.recent.remove(i)
            {
                let bytes = hit.1.clone();
                cached.recent.push_back(hit);
                return Ok(bytes);
            }
        }
        let start = index * BLOCK_BYTES;
        let bytes = target.read_range(path, start..object_len.min(start + BLOCK_BYTES))?;
        let mut cached = self.lock();
        if cached.recent.len() >= CACHED_BLOCKS {
            cached.recent.pop_front();
        }
        cached.recent.push_back((key, bytes.clone()));
        Ok(bytes)
    }
}
