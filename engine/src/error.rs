use std::io;
use std::path::PathBuf;

use relsync_chunker::ChunkId;

use crate::FileHash;

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
    /// The origin offers an older version than one we already trusted.
    #[error(
        "rollback refused: origin offers {offered}, but {seen} was already seen; if the \
         publisher went back on purpose (`push --force` of {offered}), it must also yank {seen} \
         (`cdn-publisher yank --channel {channel} --version {seen}`), and installs then take \
         {offered}"
    )]
    Rollback {
        /// The channel.
        channel: String,
        /// What the origin offers.
        offered: semver::Version,
        /// The highest version we saw.
        seen: semver::Version,
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
    /// Signed metadata or a release tree that the format refuses: a bad key, signature,
    /// expiry, hash, path or frame, or a document that breaks a format rule.
    #[error(transparent)]
    Format(#[from] relsync_format::Error),
    /// The install has no release yet, or no previous one for rollback.
    #[error("{0}")]
    NothingInstalled(String),
    /// Nothing usable is staged for an offline apply.
    #[error("{0}")]
    NotStaged(String),
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
    /// `retry` of a release this install has not marked bad.
    #[error("release {0} is not marked bad here; `relsync status` lists the releases that are")]
    NotMarkedBad(semver::Version),
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
        match self {
            Error::Format(e) => !matches!(
                e,
                relsync_format::Error::InvalidKey(_) | relsync_format::Error::Chunking(_)
            ),
            Error::Rollback { .. }
            | Error::Mismatch { .. }
            | Error::BadChunk { .. }
            | Error::FileMismatch { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Format(relsync_format::Error::Malformed {
            what,
            reason: reason.into(),
        })
    }
}

/// A frame that does not decode is the format's refusal (the format owns the codec dispatch).
impl From<relsync_chunker::Error> for Error {
    fn from(e: relsync_chunker::Error) -> Self {
        Error::Format(e.into())
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
