use std::io;
use std::path::PathBuf;

use relsync_chunker::ChunkId;

use crate::{FileHash, ManifestId};

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed (the OS error is the source).
    #[error("{op} {}", path.display())]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The install's state database failed.
    #[error("state database: {0}")]
    Store(String),
    /// The origin URL or path is not usable.
    #[error("invalid origin {origin:?}: {reason}")]
    InvalidOrigin {
        /// The origin as given.
        origin: String,
        /// Why it is not usable.
        reason: String,
    },
    /// The origin has no such object.
    #[error("origin has no {what} at {url}")]
    NotFound {
        /// What we asked for (pointer, manifest, pack).
        what: &'static str,
        /// Where.
        url: String,
    },
    /// A network or HTTP error (after retries, when `transient`).
    #[error("fetching {url}: {reason}")]
    Http {
        /// Where.
        url: String,
        /// Status or transport error.
        reason: String,
        /// Whether a retry might succeed (5xx, reset, truncation).
        transient: bool,
    },
    /// A response was larger than allowed.
    #[error("{what} at {url} exceeds the {limit}-byte limit")]
    TooLarge {
        /// What it was.
        what: &'static str,
        /// Where.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
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
    /// The install's file system lacks the space an update needs; nothing was fetched.
    #[error(
        "not enough free space on {}: the update needs {needed} bytes (plus a margin), {available} are available",
        path.display()
    )]
    NoSpace {
        /// The install directory.
        path: PathBuf,
        /// Bytes the update would write.
        needed: u64,
        /// Bytes free for this user.
        available: u64,
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
    /// The origin offers an older version than one we already trusted.
    #[error("rollback refused: origin offers {offered}, but {seen} was already seen")]
    Rollback {
        /// What the origin offers.
        offered: semver::Version,
        /// The highest version we saw.
        seen: semver::Version,
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
    /// Metadata is for another product or channel.
    #[error("{what} mismatch: expected {expected:?}, got {got:?}")]
    Mismatch {
        /// Which field.
        what: &'static str,
        /// What we asked for.
        expected: String,
        /// What the document says.
        got: String,
    },
    /// The manifest's bytes do not hash to the id the signed pointer names.
    #[error("manifest {expected} does not match its bytes (hash {actual})")]
    ManifestHashMismatch {
        /// The id in the pointer.
        expected: ManifestId,
        /// The hash of what we got.
        actual: ManifestId,
    },
    /// A chunk's bytes do not match its id.
    #[error("chunk {chunk} from {source_name} is corrupt: {reason}")]
    BadChunk {
        /// The chunk.
        chunk: ChunkId,
        /// Where it came from.
        source_name: String,
        /// Hash mismatch or frame error.
        reason: String,
    },
    /// An assembled file does not match its signed hash.
    #[error("file {path} failed verification: expected {expected}, got {actual}")]
    FileMismatch {
        /// Path in the release.
        path: String,
        /// Signed hash.
        expected: FileHash,
        /// Hash of what is on disk.
        actual: FileHash,
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
    /// The install has no release yet, or no previous one for rollback.
    #[error("{0}")]
    NothingInstalled(String),
    /// Nothing usable is staged for an offline apply.
    #[error("{0}")]
    NotStaged(String),
    /// A frame or chunking step failed.
    #[error(transparent)]
    Chunking(#[from] relsync_chunker::Error),
    /// The update's overall deadline passed before its release was fetched; nothing was
    /// applied.
    #[error(
        "update deadline passed: checking and fetching took over {} s; nothing was applied \
         (fetched chunks are kept for the next run)",
        .0.as_secs()
    )]
    Deadline(std::time::Duration),
    /// Another updater holds the install. The lock is the OS's (`flock`), so it dies with
    /// its process: a lock never outlives a crashed or killed updater.
    #[error(
        "another relsync process{} is working on {}",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        dir.display()
    )]
    Locked {
        /// The install directory.
        dir: PathBuf,
        /// The process holding the lock, as it recorded itself.
        holder: Option<u32>,
    },
    /// A newly installed release failed its health check and was rolled back.
    #[error(
        "release {version} failed its health check ({detail}); {}",
        match restored {
            Some(v) => format!("rolled back to {v}"),
            None => "no earlier release to roll back to: it stays, marked bad".into(),
        }
    )]
    Unhealthy {
        /// The release that failed; it is marked bad here.
        version: semver::Version,
        /// What failed.
        detail: String,
        /// The release now current again, if there was one to go back to.
        restored: Option<semver::Version>,
    },
    /// The release offered is marked bad here, and nothing is installed to stay on.
    #[error("release {version} is marked bad here ({reason}); waiting for a newer one")]
    MarkedBad {
        /// The release.
        version: semver::Version,
        /// Why it was marked.
        reason: String,
    },
    /// The update policy is not usable.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// An install another user could write, or state that is not relsync's own: relsync
    /// refuses to work on it, since links planted there could make it overwrite or delete
    /// files outside the install.
    #[error("refusing to work on {}: {problem}; {fix}", path.display())]
    Insecure {
        /// The directory or file at fault.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// A fresh install into a directory that holds something and is not a relsync install.
    #[error(
        "{} is not empty and not a relsync install (it holds {}); relsync never deletes what \
         it did not create, but an update could replace `current`: pass --adopt to install \
         into it anyway, or choose an empty directory",
        dir.display(),
        listed(found)
    )]
    NotAnInstall {
        /// The directory.
        dir: PathBuf,
        /// What is in it.
        found: Vec<String>,
    },
    /// `current` exists and is not relsync's symbolic link.
    #[error(
        "{} is {what} that relsync did not make (relsync's `current` is a symbolic link); \
         move it away first: relsync never replaces what it did not create",
        path.display()
    )]
    Unmanaged {
        /// The path.
        path: PathBuf,
        /// What is there.
        what: String,
    },
    /// A fresh install that does not say which product it wants.
    #[error(
        "this install does not say which product it wants, and the origin offers {offered:?}: \
         pass --product {offered} (config key `product`) if that is the product to install, \
         or pin a root document (--trust-root) that names it"
    )]
    ProductRequired {
        /// The product the origin's signed pointer names.
        offered: String,
    },
    /// The release to go back to no longer matches its signed manifest.
    #[error(
        "refusing to roll back to {version}: releases/{dir} no longer matches its signed \
         manifest ({problem}); nothing was switched. `relsync update` installs a verified \
         release"
    )]
    RollbackRefused {
        /// The release that would have become current.
        version: semver::Version,
        /// Its directory under `releases/`.
        dir: String,
        /// The first difference found.
        problem: String,
    },
    /// The publisher yanked the release while it was being fetched; the download stopped.
    #[error("release {0} was withdrawn by the publisher; the download stopped")]
    Withdrawn(semver::Version),
    /// The engine was opened for an install alone ([`crate::Engine::local`]), with no origin
    /// to check or download from.
    #[error(
        "{operation} needs an origin, and this engine was opened for the install alone; open          it with `Engine::builder(origin, keys, dir)` (relsync: give --origin and --trust)"
    )]
    NoOrigin {
        /// The operation asked for: `check`, `download`, `update` or `dry run`.
        operation: &'static str,
    },
}

/// Names for a message: the first few, and how many more.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut shown: Vec<&str> = names.iter().take(SHOWN).map(String::as_str).collect();
    shown.sort_unstable();
    let mut text = shown.join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// Whether this is signed data or content failing its checks (worth an audit record),
    /// rather than a network, disk or usage problem.
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            Error::BadSignature { .. }
                | Error::RollbackDirective { .. }
                | Error::Malformed { .. }
                | Error::Expired { .. }
                | Error::Rollback { .. }
                | Error::Mismatch { .. }
                | Error::ManifestHashMismatch { .. }
                | Error::BadChunk { .. }
                | Error::FileMismatch { .. }
                | Error::UnsafePath { .. }
                | Error::PathCollision { .. }
        )
    }

    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

/// Each refusal of the format is the engine's error of the same name.
impl From<relsync_format::Error> for Error {
    fn from(e: relsync_format::Error) -> Self {
        use relsync_format::Error as F;
        match e {
            F::InvalidKey(reason) => Error::InvalidKey(reason),
            F::BadSignature { what, reason } => Error::BadSignature { what, reason },
            F::Malformed { what, reason } => Error::Malformed { what, reason },
            F::Expired {
                what,
                expires_unix,
                now_unix,
            } => Error::Expired {
                what,
                expires_unix,
                now_unix,
            },
            F::ManifestHashMismatch { expected, actual } => {
                Error::ManifestHashMismatch { expected, actual }
            }
            F::UnsafePath { path, reason } => Error::UnsafePath { path, reason },
            F::PathCollision { first, second } => Error::PathCollision { first, second },
            F::RollbackDirective { reason } => Error::RollbackDirective { reason },
            F::Chunking(e) => Error::Chunking(e),
            // A variant a later format adds: its message, as a format error.
            other => Error::malformed("release format", other.to_string()),
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Store(e.to_string())
    }
}

macro_rules! store_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        }
    )*};
}
store_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// An error and its sources, joined with `: ` (reqwest and hyper hide the cause in a source).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        reason = format!("{reason}: {inner}");
        source = inner.source();
    }
    reason
}
