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

use crate::{ManifestId, PackId};

/// Origin path of a channel pointer.
pub fn channel_path(channel: &str) -> String {
    format!("channels/{channel}")
}

/// Origin path of a manifest.
pub fn manifest_path(id: &ManifestId) -> String {
    format!("manifests/{id}")
}

/// Origin path of manifest `id` as a delta against manifest `base`.
pub fn manifest_delta_path(id: &ManifestId, base: &ManifestId) -> String {
    format!("manifests/{id}.from-{base}")
}

/// Origin path of root document `version` (1, 2, ...).
pub fn root_path(version: u64) -> String {
    format!("keys/root-{version}")
}

/// Origin path of a pack.
pub fn pack_path(id: &PackId) -> String {
    format!("packs/{id}")
}

/// Checks a channel name (it becomes a file name on the origin), or a platform name.
pub fn valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

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
        self.root.join("current")
    }

    /// Where installed releases live.
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }

    /// One installed release.
    pub fn release(&self, dir: &str) -> PathBuf {
        self.releases().join(dir)
    }

    /// relsync's private folder.
    pub fn state(&self) -> PathBuf {
        self.root.join(".relsync")
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

    /// The append-only, hash-chained audit log (see [`crate::audit`]).
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
        self.state().join("chunks")
    }

    /// One fetched frame.
    pub fn blob(&self, chunk: &relsync_chunker::ChunkId) -> PathBuf {
        self.blobs().join(chunk.to_string())
    }

    /// Where trees are assembled.
    pub fn staging(&self) -> PathBuf {
        self.state().join("staging")
    }
}
