//! What can be wrong with signed metadata and release trees.

use crate::{ManifestId, format_utc};

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
    #[error(
        "stale metadata: {what} expired at {} (now {}); {}",
        format_utc(*expires_unix),
        format_utc(*now_unix),
        expiry_fix(what)
    )]
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

/// What the publisher does about an expired document (or this host, about its clock).
fn expiry_fix(what: &str) -> &'static str {
    match what {
        "channel pointer" => {
            "the publisher re-signs it with `cdn-publisher channel refresh` (run it from cron, \
             more often than `--pointer-days`), or this machine's clock is wrong"
        }
        "manifest" => {
            "the publisher must push a newer release (an expired release cannot be installed \
             fresh), or this machine's clock is wrong"
        }
        "root document" => {
            "the publisher must publish the next root (`cdn-publisher root rotate`, then `root \
             sign` and `root publish`), or this machine's clock is wrong"
        }
        _ => "the publisher must sign it again, or this machine's clock is wrong",
    }
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
