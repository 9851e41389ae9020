//! Where things live, on an origin and in an install directory.
//!
//! ```text
//! origin/                              install/
//!   channels/<channel>   pointer         current -> releases/<version>-<id8>
//!   manifests/<id>       manifests       releases/<version>-<id8>/...   current and previous
//!   manifests/<id>.from-<base>   deltas
//!   packs/<id>           chunk packs     .relsync/state.redb            the store
//!   keys/root-<n>        root chain
//!                                        .relsync/chunks/<chunk id>     fetched, verified frames
//!                                        .relsync/staging/<id8>/        tree being assembled
//!                                        .relsync/lock
//!                                        .relsync/audit.log             hash-chained records
//!                                        .relsync/audit.head            its last record
//! ```

use std::path::{Path, PathBuf};

use crate::Result;
use crate::platform::Dir;

/// The name of relsync's private folder in an install.
pub(crate) const STATE_DIR: &str = ".relsync";
/// The symbolic link to the installed release.
pub(crate) const CURRENT: &str = "current";
/// The folder of installed releases.
pub(crate) const RELEASES_DIR: &str = "releases";
/// Its folder of fetched, verified frames.
pub(crate) const BLOB_DIR: &str = "chunks";
/// Its folder of trees being assembled.
pub(crate) const STAGING_DIR: &str = "staging";

pub(crate) use relsync_format::paths::{
    channel_path, manifest_delta_path, manifest_path, pack_path, root_path, valid_channel,
};

/// The paths of one install directory.
#[derive(Debug, Clone)]
pub struct InstallLayout {
    root: PathBuf,
}

impl InstallLayout {
    /// The layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The install directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `current` symlink.
    pub fn current(&self) -> PathBuf {
        self.root.join(CURRENT)
    }

    /// Where installed releases live.
    pub fn releases(&self) -> PathBuf {
        self.root.join(RELEASES_DIR)
    }

    /// One installed release.
    pub fn release(&self, dir: &str) -> PathBuf {
        self.releases().join(dir)
    }

    /// relsync's private folder.
    pub fn state(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// A handle on the install directory.
    pub(crate) fn root_dir(&self) -> Result<Dir> {
        Dir::open(&self.root)
    }

    /// A handle on relsync's private folder, opened without following a link (the install
    /// was checked when it was opened; see `install::open_install`).
    pub(crate) fn state_dir(&self) -> Result<Dir> {
        self.root_dir()?.open_dir(STATE_DIR)
    }

    /// The redb database.
    pub fn db(&self) -> PathBuf {
        self.state().join("state.redb")
    }

    /// A copy of the trusted state and root outside the database.
    pub fn trust_copy(&self) -> PathBuf {
        self.state().join("trusted")
    }

    /// This install's LAN peer identity (an ed25519 key).
    pub fn peer_key(&self) -> PathBuf {
        self.state().join("peer-key")
    }

    /// The lock file.
    pub fn lock(&self) -> PathBuf {
        self.state().join("lock")
    }

    /// The append-only, hash-chained audit log (see [`AuditLog`](crate::AuditLog)).
    pub fn audit_log(&self) -> PathBuf {
        self.state().join("audit.log")
    }

    /// The audit log's head: the seq and hash of its last committed record.
    pub fn audit_head(&self) -> PathBuf {
        self.state().join("audit.head")
    }

    /// This install's random id (rollout bucket), kept across updates and store rebuilds.
    pub fn install_id(&self) -> PathBuf {
        self.state().join("install-id")
    }

    /// Fetched, verified frames waiting to be assembled.
    pub fn blobs(&self) -> PathBuf {
        self.state().join(BLOB_DIR)
    }

    /// One fetched frame.
    pub fn blob(&self, chunk: &relsync_chunker::ChunkId) -> PathBuf {
        self.blobs().join(chunk.to_string())
    }

    /// Where trees are assembled.
    pub fn staging(&self) -> PathBuf {
        self.state().join(STAGING_DIR)
    }
}
