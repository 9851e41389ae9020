//! Where an origin's objects are stored: the [`Target`] trait, one implementation per kind of
//! storage (`target/`), and [`open`], which picks one from the origin's URL.
//!
//! A target stores objects by path and nothing more. What every origin shares (metering,
//! write-once `keys/` documents, background uploads, cached reads of remote packs) lives in
//! [`crate::origin`]. A new kind of storage is one file under `target/` (its `mod` line
//! below) and one arm in [`open`].

mod bucket;
mod folder;

use std::fmt::Debug;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Result, bail};
use bytes::Bytes;
use tempfile::TempPath;

use self::bucket::Bucket;
use self::folder::Folder;

/// Content-Type of every object served over HTTP.
pub const CONTENT_TYPE: &str = "application/octet-stream";
/// Cache-Control of content-addressed objects: their bytes never change.
pub const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Cache-Control of channel pointers: a CDN or client may serve a pointer this stale, so a new
/// release (or a yank) reaches clients within a minute.
pub const CHANNEL_CACHE_CONTROL: &str = "public, max-age=60";

/// Whether `path` is a channel pointer, the one kind of object that is overwritten. Every
/// other object (`packs/`, `manifests/`, `keys/`) is named by its content.
pub fn is_pointer(path: &str) -> bool {
    path.starts_with("channels/")
}

/// The Cache-Control an object is served with.
pub fn cache_control(path: &str) -> &'static str {
    if is_pointer(path) {
        CHANNEL_CACHE_CONTROL
    } else {
        IMMUTABLE_CACHE_CONTROL
    }
}

/// An object listed in an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its path in the origin, e.g. `packs/<id>`.
    pub path: String,
    /// Its length in bytes.
    pub len: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// What writing an object did, with the object's length on the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Written now.
    Written(u64),
    /// A content-addressed object that was already there, left as it was.
    Present(u64),
}

impl Put {
    /// The object's length on the origin (an object already there keeps its own).
    pub fn object_len(self) -> u64 {
        match self {
            Put::Written(n) | Put::Present(n) => n,
        }
    }
}

/// Storage for an origin's objects, addressed by `/`-separated paths such as `packs/<id>`.
///
/// Methods block; a target that talks to a network drives its own runtime. They may be called
/// from several threads at once (background uploads).
pub trait Target: Debug + Send + Sync {
    /// A folder on the target's own file system where files are staged, so that
    /// [`Target::put_file`] moves them in atomically; `None` when the target has none (the
    /// origin then stages files in a local temp dir).
    fn staging(&self) -> Option<&Path>;

    /// Whether each request is a network round trip: sealed packs then upload in the
    /// background while packing goes on, and small reads of content-addressed objects go
    /// through cached blocks.
    fn is_remote(&self) -> bool;

    /// An object's bytes, or `None` if it does not exist.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>>;

    /// Exactly the bytes of `range` of an object; an error if it is missing or shorter.
    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Bytes>;

    /// An object's length, or `None` if it does not exist.
    fn len_of(&self, path: &str) -> Result<Option<u64>>;

    /// Every object whose path starts with folder `prefix` (such as `packs/`; empty for all),
    /// in any order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes an object; deleting one that is gone is not an error.
    fn delete(&self, path: &str) -> Result<()>;

    /// Writes `bytes` as object `path`, so that a reader sees the old object or the new one,
    /// never a part. A channel pointer ([`is_pointer`]) is replaced; a content-addressed
    /// object already there may be left as it is ([`Put::Present`]) or rewritten.
    fn put(&self, path: &str, bytes: &[u8]) -> Result<Put>;

    /// Writes the finished local file `local` (staged in [`Target::staging`] or the origin's
    /// scratch folder) as content-addressed object `path`, unless it is there. `local` is
    /// moved into place or deleted.
    fn put_file(&self, path: &str, local: TempPath) -> Result<Put>;
}

/// The target origin `spec` names: a folder (a path or `file://` URL, created if missing), or
/// a bucket `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX` or `az://CONTAINER/PREFIX` configured
/// from the standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
pub fn open(spec: &str) -> Result<Arc<dyn Target>> {
    Ok(match spec.split_once("://") {
        None => Arc::new(Folder::open(Path::new(spec))?),
        Some(("file", path)) => Arc::new(Folder::open(Path::new(path))?),
        Some((scheme @ ("s3" | "gs" | "az"), rest)) => Arc::new(Bucket::open(spec, scheme, rest)?),
        Some(_) => {
            bail!("unsupported origin {spec:?}: use a folder path, file://, s3://, gs:// or az://")
        }
    })
}

/// A bucket in memory (`object_store`'s own), for tests.
#[cfg(test)]
pub fn memory_bucket() -> Arc<dyn Target> {
    Arc::new(bucket::tests::memory_bucket())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_and_bucketless_urls_are_refused() {
        let err = open("ftp://host/x").unwrap_err();
        assert!(format!("{err:#}").contains("unsupported origin"), "{err:#}");
        let err = open("s3:///prefix").unwrap_err();
        assert!(format!("{err:#}").contains("names no bucket"), "{err:#}");
    }

    #[test]
    fn pointers_are_cached_a_minute_and_everything_else_for_good() {
        assert_eq!(cache_control("channels/stable"), CHANNEL_CACHE_CONTROL);
        for path in [
            "packs/ab",
            "manifests/ab",
            "manifests/ab.from-cd",
            "keys/root-1",
        ] {
            assert_eq!(cache_control(path), IMMUTABLE_CACHE_CONTROL, "{path}");
        }
    }
}
