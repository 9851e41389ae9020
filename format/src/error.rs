//! What can be wrong with signed metadata and release trees.

use crate::ManifestId;

/// Everything the format can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key is malformed.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A signed document is malformed or not signed by a trusted key.
    #[error("bad signature on {what}: {reason}")]
    BadSignature {
        /// Which document (manifest, channel pointer).
        what: &'static str,
        /// What exactly failed.
        reason: String,
    },
    /// Signed metadata decodes badly or breaks a format rule.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which document.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Signed metadata is past its expiry.
    #[error("stale metadata: {what} expired at unix time {expires_unix} (now {now_unix})")]
    Expired {
        /// Which document.
        what: &'static str,
        /// Its expiry.
        expires_unix: u64,
        /// Our notion of now.
        now_unix: u64,
    },
    /// The manifest's bytes do not hash to the id the signed pointer names.
    #[error("manifest {expected} does not match its bytes (hash {actual})")]
    ManifestHashMismatch {
        /// The id in the pointer.
        expected: ManifestId,
        /// The hash of what we got.
        actual: ManifestId,
    },
    /// A path in a manifest or a release tree is unsafe.
    #[error("unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The path.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two paths of one tree name the same file on a case-insensitive or normalizing file
    /// system: their [`crate::collision_key`]s are equal.
    #[error(
        "paths {first:?} and {second:?} collide: they are equal once Unicode case and \
         compatibility forms are folded, so a case-insensitive or normalizing file system \
         would see one file"
    )]
    PathCollision {
        /// The path listed first.
        first: String,
        /// The later path that collides with it.
        second: String,
    },
    /// The channel pointer carries a rollback directive that does not hold: not signed by a
    /// threshold of the release role, or not for the pointer's release. Nothing changed.
    #[error(
        "rollback directive refused: {reason}. Nothing was changed: only a directive signed by \
         the release role takes installs back (the publisher signs one with `cdn-publisher yank \
         --roll-back --key RELEASE_KEY`, or writes it with `--unsigned-directive-out` for \
         `cdn-publisher sign`)"
    )]
    RollbackDirective {
        /// What exactly failed.
        reason: String,
    },
    /// A frame or chunking step failed.
    #[error(transparent)]
    Chunking(#[from] relsync_chunker::Error),
}

/// Result alias for the format.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            reason: reason.into(),
        }
    }
}
