//! The install's state in redb: trusted state, releases, chunk locations, fetch journal.
//!
//! Bulk data never goes in here: installed files are the chunk store, and fetched chunks
//! waiting to be assembled are files in the blob folder (see [`crate::layout`]). All table
//! definitions live in this file, with versioned names.

use std::path::Path;

use redb::{
    ConcurrencyMode, Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};
use relsync_chunker::ChunkId;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::manifest::{EntryKind, TrustedManifest};
use crate::platform::Dir;
use crate::root::RoleKeys;
use crate::{Error, ManifestId, Result};

/// Small named values (`trusted`, `current`, `previous`).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-0");
/// Release directory name → manifest envelope bytes.
const RELEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("releases-0");
/// Chunk id → where an installed file holds it.
const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chunks-0");
/// Chunk id → the manifest it was fetched for; the frame itself is a blob file.
const JOURNAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("journal-0");

/// What the client has come to trust; it only moves forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedState {
    /// The highest version seen in a verified pointer.
    pub highest_version: Version,
    /// The manifest that pointer named.
    pub manifest: ManifestId,
    /// The latest issue time of verified metadata.
    pub time_unix: u64,
}

/// A release on trial: installed, but not yet reported healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// The release's version.
    pub version: Version,
    /// Its manifest.
    pub manifest: ManifestId,
    /// When it was installed.
    pub started_unix: u64,
    /// App starts recorded since, without a healthy report.
    pub starts: u32,
}

/// A release this install will not take again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRelease {
    /// Its version.
    pub version: Version,
    /// Why it was marked.
    pub reason: String,
}

/// Bad releases remembered; the oldest are forgotten first (a newer release supersedes them).
const MAX_BAD_RELEASES: usize = 256;

/// Where an installed release holds a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Release directory name under `releases/`.
    pub release: String,
    /// Path of the file in that release.
    pub path: String,
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

/// An installed release.
#[derive(Debug, Clone)]
pub struct Release {
    /// Its directory name under `releases/`.
    pub dir: String,
    /// Its manifest, verified when it was installed.
    pub manifest: TrustedManifest,
}

/// A release a download fetched and verified, staged for a later (offline) install.
#[derive(Debug, Clone)]
pub(crate) struct StagedRelease {
    /// Its manifest, as the store holds it (its signatures are checked again at install).
    pub(crate) manifest: TrustedManifest,
    /// The release role that verified it when it was downloaded (`None` if an earlier relsync
    /// staged it, which did not record it).
    pub(crate) signers: Option<RoleKeys>,
}

/// Counts for `relsync status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    /// Releases recorded.
    pub releases: u64,
    /// Chunk locations indexed.
    pub chunk_locations: u64,
    /// Fetched chunks waiting to be assembled.
    pub journal_chunks: u64,
}

/// The redb database of one install.
///
/// `Store` (the default parameter) reads and writes; an install's writer holds its lock.
/// [`ReadOnlyStore`] only reads: it takes no lock, needs no write access to the file, never
/// migrates, recovers or changes anything, and may be open beside the writer (both open the
/// database in redb's [`ConcurrencyMode::SingleWriter`]: one writing process, any number of
/// read-only ones, each reading the last commit).
pub struct Store<D = Database> {
    db: D,
}

/// A [`Store`] opened read-only: `relsync status` and `relsync verify`. It has the reading
/// methods only; a write does not compile:
///
/// ```compile_fail
/// fn write(install: &relsync_engine::ReadOnlyInstall) -> relsync_engine::Result<()> {
///     install.store().set_trial(None)
/// }
/// ```
///
/// ```
/// fn read(install: &relsync_engine::ReadOnlyInstall) -> relsync_engine::Result<()> {
///     install.store().trial().map(drop)
/// }
/// ```
pub type ReadOnlyStore = Store<ReadOnlyDatabase>;

impl<D> std::fmt::Debug for Store<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// How processes share the database: relsync writes it from one process at a time (the
/// install's lock ensures that), while `status` and `verify` read it from others.
const CONCURRENCY: ConcurrencyMode = ConcurrencyMode::SingleWriter;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Store(e.to_string()))
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Store(format!("corrupt record: {e}")))
}

/// What the client trusts, kept beside the database too (`.relsync/trusted`): if the database
/// is lost or corrupt and rebuilt, the floor against rollback and the walked root survive.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrustCopy {
    /// The trusted state of each channel followed.
    pub states: Vec<(String, TrustedState)>,
    /// The newest verified root document, as signed.
    pub root: Option<Vec<u8>>,
    /// Releases marked bad.
    pub bad: Vec<BadRelease>,
}

impl TrustCopy {
    /// The copy's trusted state of `channel`.
    pub fn state(&self, channel: &str) -> Option<&TrustedState> {
        self.states
            .iter()
            .find_map(|(name, state)| (name == channel).then_some(state))
    }
}

impl TrustCopy {
    /// The copy's file in `.relsync`.
    const FILE: &str = "trusted";
    /// Larger than any copy: 256 bad releases, a root document and the channels followed.
    const MAX_BYTES: u64 = 4 << 20;

    /// Reads the copy; a missing or undecodable one is `None` (the database is the primary).
    /// A copy that is not relsync's own (a link, another user's file) is an error: its floors
    /// are not silently dropped.
    pub(crate) fn read(state: &Dir) -> Result<Option<Self>> {
        let Some(bytes) = state.read(Self::FILE, Self::MAX_BYTES)? else {
            return Ok(None);
        };
        match postcard::from_bytes(&bytes) {
            Ok(copy) => Ok(Some(copy)),
            Err(e) => {
                tracing::warn!(error = %e, "the trust copy is unreadable; the database's floors hold");
                Ok(None)
            }
        }
    }

    /// Replaces the copy atomically (write, sync, rename), never through a link.
    pub(crate) fn write(&self, state: &Dir) -> Result<()> {
        state.write_atomic(Self::FILE, &encode(self)?)
    }
}

/// The database's file in `.relsync`.
const DB_FILE: &str = "state.redb";

impl Store {
    /// Opens the database in the state folder `state`, or, if it is not a readable redb
    /// database, moves it aside (to `state.redb.corrupt`) and starts a new one.
    pub(crate) fn open_or_rebuild_in(state: &Dir) -> Result<Self> {
        use redb::{DatabaseError, StorageError};
        match Self::create(state)? {
            Err(DatabaseError::Storage(e @ StorageError::Corrupted(_))) => {
                Self::rebuild(state, &e.to_string())
            }
            Err(DatabaseError::Storage(StorageError::Io(e)))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Self::rebuild(state, &e.to_string())
            }
            Err(e) => Err(e.into()),
            Ok(db) => Self::with_tables(db),
        }
    }

    fn rebuild(state: &Dir, reason: &str) -> Result<Self> {
        let aside = format!("{DB_FILE}.corrupt");
        tracing::warn!(reason, aside = %state.path().join(&aside).display(), "the state database is corrupt; rebuilding it");
        state.rename(DB_FILE, state, &aside)?;
        Self::open_in(state)
    }

    /// Opens or creates the database in the state folder `state` (never through a link).
    pub(crate) fn open_in(state: &Dir) -> Result<Self> {
        Self::with_tables(Self::create(state)??)
    }

    /// Opens or creates the database at `path`, a file the caller trusts (benchmarks, tools;
    /// installs open theirs through `.relsync` without following links).
    pub fn open(path: &Path) -> Result<Self> {
        Self::with_tables(
            redb::Builder::new()
                .set_concurrency_mode(CONCURRENCY)
                .create(path)?,
        )
    }

    /// The database file opened (never through a link, mode 0600), then redb's open of it.
    fn create(state: &Dir) -> Result<std::result::Result<Database, redb::DatabaseError>> {
        let file = state.open_state_file(DB_FILE, false)?;
        Ok(redb::backends::FileBackend::new(file).and_then(|backend| {
            redb::Builder::new()
                .set_concurrency_mode(CONCURRENCY)
                .create_with_backend(backend)
        }))
    }

    fn with_tables(db: Database) -> Result<Self> {
        let txn = db.begin_write()?;
        {
            txn.open_table(META)?;
            txn.open_table(RELEASES)?;
            txn.open_table(CHUNKS)?;
            txn.open_table(JOURNAL)?;
        }
        txn.commit()?;
        Ok(Self { db })
    }

    fn set_meta<T: Serialize>(&self, key: &str, value: Option<&T>) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            match value {
                Some(value) => meta.insert(key, encode(value)?.as_slice())?,
                None => meta.remove(key)?,
            };
        }
        txn.commit()?;
        Ok(())
    }

    /// Starts (or, with `None`, ends) a trial.
    pub fn set_trial(&self, trial: Option<&Trial>) -> Result<()> {
        self.set_meta("trial", trial)
    }

    /// Marks `version` bad: checks skip it until a newer release is offered.
    pub fn mark_bad(&self, version: &Version, reason: &str) -> Result<()> {
        let mut bad = self.bad_releases()?;
        bad.retain(|b| &b.version != version);
        bad.push(BadRelease {
            version: version.clone(),
            reason: reason.to_owned(),
        });
        let excess = bad.len().saturating_sub(MAX_BAD_RELEASES);
        bad.drain(..excess);
        self.set_meta("bad", Some(&bad))
    }

    /// Clears `version`'s bad mark; returns the mark, or `None` if it had none.
    pub fn unmark_bad(&self, version: &Version) -> Result<Option<BadRelease>> {
        let mut bad = self.bad_releases()?;
        let Some(at) = bad.iter().position(|b| &b.version == version) else {
            return Ok(None);
        };
        let mark = bad.remove(at);
        self.set_meta("bad", Some(&bad))?;
        Ok(Some(mark))
    }

    /// Records newly verified metadata of `channel`.
    pub fn set_trusted_state(&self, channel: &str, state: &TrustedState) -> Result<()> {
        self.set_meta(&format!("trusted:{channel}"), Some(state))
    }

    /// Records a newly verified root document.
    pub fn set_trusted_root(&self, envelope: &[u8]) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert("root", envelope)?;
        txn.commit()?;
        Ok(())
    }

    /// Records a verified pointer of `channel`.
    pub fn set_pointer(&self, channel: &str, envelope: &[u8]) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?
            .insert(format!("pointer:{channel}").as_str(), envelope)?;
        txn.commit()?;
        Ok(())
    }

    /// Records (or, with `None`, forgets) the staged release: its manifest envelope and the
    /// release role that verified it.
    pub(crate) fn set_staged(&self, staged: Option<&StagedRelease>) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            match staged {
                Some(staged) => {
                    meta.insert("staged", staged.manifest.bytes())?;
                    match &staged.signers {
                        Some(signers) => {
                            meta.insert("staged-signers", encode(signers)?.as_slice())?
                        }
                        None => meta.remove("staged-signers")?,
                    };
                }
                None => {
                    meta.remove("staged")?;
                    meta.remove("staged-signers")?;
                }
            };
        }
        txn.commit()?;
        Ok(())
    }

    /// Records a staged release before `current` is switched to it.
    pub fn add_release(&self, dir: &str, manifest: &TrustedManifest) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(RELEASES)?.insert(dir, manifest.bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// Makes `current` and `previous` the installed releases: forgets all others, re-indexes
    /// chunk locations, and clears the fetch journal. Returns the directories forgotten.
    pub fn set_installed(&self, current: &str, previous: Option<&str>) -> Result<Vec<String>> {
        let txn = self.db.begin_write()?;
        let mut forgotten = Vec::new();
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("current", current.as_bytes())?;
            match previous {
                Some(p) => meta.insert("previous", p.as_bytes())?,
                None => meta.remove("previous")?,
            };
            let mut releases = txn.open_table(RELEASES)?;
            let mut keep = Vec::new();
            for row in releases.iter()? {
                let (dir, bytes) = row?;
                let dir = dir.value().to_owned();
                if dir == current || Some(dir.as_str()) == previous {
                    keep.push((
                        dir,
                        relsync_format::dangerous::trusted_manifest(bytes.value().to_vec())?,
                    ));
                } else {
                    forgotten.push(dir);
                }
            }
            for dir in &forgotten {
                releases.remove(dir.as_str())?;
            }
            let mut chunks = txn.open_table(CHUNKS)?;
            chunks.retain(|_, _| false)?;
            // The previous release first, so the current one wins for shared chunks.
            keep.sort_by_key(|(dir, _)| dir == current);
            for (dir, manifest) in &keep {
                index_chunks(&mut chunks, dir, manifest)?;
            }
            txn.open_table(JOURNAL)?.retain(|_, _| false)?;
        }
        txn.commit()?;
        Ok(forgotten)
    }

    /// Records verified chunks fetched for `manifest`.
    pub fn journal_add(&self, chunks: &[ChunkId], manifest: &ManifestId) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut journal = txn.open_table(JOURNAL)?;
            for chunk in chunks {
                journal.insert(chunk.as_bytes().as_slice(), manifest.as_bytes().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl ReadOnlyStore {
    /// Opens the database in the state folder `state` read-only: the file is opened for
    /// reading only (never through a link), nothing is created, repaired or migrated, and no
    /// lock but redb's shared one is taken, so a writer may have it open meanwhile.
    /// [`Error::NothingInstalled`] if there is no database.
    pub(crate) fn open_read_only_in(state: &Dir) -> Result<Self> {
        let Some(file) = state.open_state_file_read_only(DB_FILE)? else {
            return Err(Error::NothingInstalled(format!(
                "{} has no state database ({DB_FILE})",
                state.path().display()
            )));
        };
        let copy = file
            .try_clone()
            .map_err(Error::io("opening", &state.path().join(DB_FILE)))?;
        let db = redb::backends::FileBackend::new(file).and_then(|backend| {
            redb::Builder::new()
                .set_concurrency_mode(CONCURRENCY)
                .open_read_only_with_backend(backend)
        });
        match db {
            Ok(db) => Ok(Self { db }),
            // Only a writer that does not share the file (a relsync before 0.x opened it
            // exclusively) refuses a reader.
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::Store(format!(
                "{} is open in a process that does not share it (an older relsync); try \
                 again when it is done",
                state.path().join(DB_FILE).display()
            ))),
            // Left unclean by a writer that died (and none has opened it since): recovery
            // writes, so it runs on a copy in memory; the file is the next writer's to recover.
            Err(redb::DatabaseError::RepairAborted) => {
                tracing::info!(path = %state.path().join(DB_FILE).display(), "the state database was not closed cleanly; reading a recovered copy");
                Self::open_recovered_copy(copy).map_err(|e| {
                    Error::Store(format!(
                        "{} was not closed cleanly (a relsync process was killed), and a \
                         recovered copy could not be read either: {e}",
                        state.path().join(DB_FILE).display()
                    ))
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl ReadOnlyStore {
    /// The database in `file`, copied into memory and recovered there, as a writer would
    /// recover the file.
    fn open_recovered_copy(file: std::fs::File) -> std::result::Result<Self, redb::Error> {
        use std::io::Read;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes)?;
        let copy = Snapshot(std::sync::Arc::new(std::sync::RwLock::new(bytes)));
        // Recovers the copy and, when dropped, closes it cleanly.
        drop(redb::Builder::new().create_with_backend(copy.clone())?);
        let db = redb::Builder::new().open_read_only_with_backend(copy)?;
        Ok(Self { db })
    }
}

/// A database file copied into memory, shared between the recovering writer and the reader.
#[derive(Clone)]
struct Snapshot(std::sync::Arc<std::sync::RwLock<Vec<u8>>>);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").finish_non_exhaustive()
    }
}

impl Snapshot {
    fn bytes(&self) -> std::sync::RwLockReadGuard<'_, Vec<u8>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn bytes_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<u8>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "out of range")
}

impl redb::StorageBackend for Snapshot {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.bytes().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let bytes = self.bytes();
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let from = bytes
            .get(start..start.saturating_add(out.len()))
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(from);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        self.bytes_mut().resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut bytes = self.bytes_mut();
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let to = bytes
            .get_mut(start..start.saturating_add(data.len()))
            .ok_or_else(out_of_range)?;
        to.copy_from_slice(data);
        Ok(())
    }
}

impl<D: ReadableDatabase> Store<D> {
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// The release on trial, if the last install is not yet confirmed healthy.
    pub fn trial(&self) -> Result<Option<Trial>> {
        self.meta("trial")?.map(|b| decode(&b)).transpose()
    }

    /// Releases marked bad, oldest first.
    pub fn bad_releases(&self) -> Result<Vec<BadRelease>> {
        Ok(self
            .meta("bad")?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default())
    }

    /// The trusted state of `channel`, if its metadata was ever verified. Each channel has
    /// its own floor: switching channels neither lowers nor borrows one.
    pub fn trusted_state(&self, channel: &str) -> Result<Option<TrustedState>> {
        self.meta(&format!("trusted:{channel}"))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every channel's trusted state.
    pub fn trusted_states(&self) -> Result<Vec<(String, TrustedState)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let mut states = Vec::new();
        for row in table.range("trusted:"..)? {
            let (key, value) = row?;
            let Some(channel) = key.value().strip_prefix("trusted:") else {
                break;
            };
            states.push((channel.to_owned(), decode(value.value())?));
        }
        Ok(states)
    }

    /// The newest root document this client verified, as signed.
    pub fn trusted_root(&self) -> Result<Option<Vec<u8>>> {
        self.meta("root")
    }

    /// The last verified pointer of `channel`, as signed (handed to peers whose origin is
    /// down).
    pub fn pointer(&self, channel: &str) -> Result<Option<Vec<u8>>> {
        self.meta(&format!("pointer:{channel}"))
    }

    fn release_named(&self, key: &str) -> Result<Option<Release>> {
        let Some(dir) = self.meta(key)? else {
            return Ok(None);
        };
        let dir = String::from_utf8(dir).map_err(|e| Error::Store(e.to_string()))?;
        match self.release(&dir)? {
            Some(release) => Ok(Some(release)),
            None => Err(Error::Store(format!("release {dir} has no manifest"))),
        }
    }

    /// The recorded release in directory `dir`, if the store knows it.
    pub(crate) fn release(&self, dir: &str) -> Result<Option<Release>> {
        let txn = self.db.begin_read()?;
        let releases = txn.open_table(RELEASES)?;
        let Some(bytes) = releases.get(dir)? else {
            return Ok(None);
        };
        let manifest = relsync_format::dangerous::trusted_manifest(bytes.value().to_vec())?;
        Ok(Some(Release {
            dir: dir.to_owned(),
            manifest,
        }))
    }

    /// The release `current` points at.
    pub fn current(&self) -> Result<Option<Release>> {
        self.release_named("current")
    }

    /// The release a download verified and staged for a later offline apply.
    pub(crate) fn staged(&self) -> Result<Option<StagedRelease>> {
        let Some(envelope) = self.meta("staged")? else {
            return Ok(None);
        };
        let signers = match self.meta("staged-signers")? {
            Some(bytes) => Some(decode(&bytes)?),
            None => None,
        };
        Ok(Some(StagedRelease {
            manifest: relsync_format::dangerous::trusted_manifest(envelope)?,
            signers,
        }))
    }

    /// The release kept for rollback.
    pub fn previous(&self) -> Result<Option<Release>> {
        self.release_named("previous")
    }

    /// Whether `dir` is a recorded release.
    pub fn has_release(&self, dir: &str) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(RELEASES)?.get(dir)?.is_some())
    }

    /// Where an installed file holds `chunk`.
    pub fn locate(&self, chunk: &ChunkId) -> Result<Option<Location>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHUNKS)?;
        table
            .get(chunk.as_bytes().as_slice())?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Chunks in the fetch journal.
    pub fn journal(&self) -> Result<Vec<ChunkId>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOURNAL)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, _) = row?;
            let bytes: [u8; 32] = key
                .value()
                .try_into()
                .map_err(|_| Error::Store("journal key is not 32 bytes".into()))?;
            out.push(ChunkId(bytes));
        }
        Ok(out)
    }

    /// Counts for status output.
    pub fn stats(&self) -> Result<StoreStats> {
        let txn = self.db.begin_read()?;
        Ok(StoreStats {
            releases: txn.open_table(RELEASES)?.len()?,
            chunk_locations: txn.open_table(CHUNKS)?.len()?,
            journal_chunks: txn.open_table(JOURNAL)?.len()?,
        })
    }
}

fn index_chunks(
    table: &mut redb::Table<&[u8], &[u8]>,
    dir: &str,
    manifest: &TrustedManifest,
) -> Result<()> {
    for entry in &manifest.entries {
        let EntryKind::File(file) = &entry.kind else {
            continue;
        };
        for (offset, _, chunk) in manifest.chunk_spans(file) {
            let location = Location {
                release: dir.to_owned(),
                path: entry.path.to_string(),
                offset,
                len: chunk.len,
            };
            table.insert(
                chunk.id.as_bytes().as_slice(),
                encode(&location)?.as_slice(),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_garbage_database_is_moved_aside_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        std::fs::write(&path, vec![0xa5; 8192]).unwrap();
        let state = Dir::open(dir.path()).unwrap();
        assert!(Store::open_in(&state).is_err());
        let store = Store::open_or_rebuild_in(&state).unwrap();
        assert!(store.trusted_state("stable").unwrap().is_none());
        assert_eq!(
            std::fs::read(dir.path().join("state.redb.corrupt")).unwrap(),
            vec![0xa5; 8192]
        );
    }

    fn trial(starts: u32) -> Trial {
        Trial {
            version: Version::new(1, 2, 3),
            manifest: ManifestId([7; 32]),
            started_unix: 11,
            starts,
        }
    }

    #[test]
    fn a_read_only_store_reads_beside_the_writer_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = Dir::open(dir.path()).unwrap();
        let writer = Store::open_in(&state).unwrap();
        writer.set_trial(Some(&trial(1))).unwrap();
        let names = || {
            let mut names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let (before, files) = (std::fs::read(dir.path().join(DB_FILE)).unwrap(), names());
        let reader = ReadOnlyStore::open_read_only_in(&state).unwrap();
        assert_eq!(reader.trial().unwrap(), Some(trial(1)));
        assert_eq!(reader.stats().unwrap().releases, 0);
        drop(reader);
        // Not a byte written, no lock file made.
        assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap(), before);
        assert_eq!(names(), files);
        // The writer still writes while a reader is open, and the reader follows its commits.
        let reader = ReadOnlyStore::open_read_only_in(&state).unwrap();
        writer.set_trial(Some(&trial(2))).unwrap();
        assert_eq!(reader.trial().unwrap(), Some(trial(2)));
    }

    #[test]
    fn a_read_only_store_is_only_opened_for_reading() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let state = Dir::open(dir.path()).unwrap();
        drop(Store::open_in(&state).unwrap());
        let file = state.open_state_file_read_only(DB_FILE).unwrap().unwrap();
        let flags =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).unwrap();
        let flags = flags
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        // O_ACCMODE is 0o3, O_RDONLY 0: any write through it fails with EBADF.
        assert_eq!(flags & 0o3, 0, "{flags:o}");
        assert!(std::io::Write::write(&mut &file, b"x").is_err());
    }

    #[test]
    fn an_unclean_database_is_read_through_a_recovered_copy_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = Dir::open(dir.path()).unwrap();
        let writer = Store::open_in(&state).unwrap();
        writer.set_trial(Some(&trial(4))).unwrap();
        // The file as a killed writer leaves it: copied while the writer has it open.
        let unclean = std::fs::read(dir.path().join(DB_FILE)).unwrap();
        drop(writer);
        std::fs::write(dir.path().join(DB_FILE), &unclean).unwrap();
        let plain = redb::Builder::new()
            .set_concurrency_mode(CONCURRENCY)
            .open_read_only(dir.path().join(DB_FILE));
        assert!(
            matches!(plain, Err(redb::DatabaseError::RepairAborted)),
            "the copy must be unclean"
        );
        let reader = ReadOnlyStore::open_read_only_in(&state).unwrap();
        assert_eq!(reader.trial().unwrap(), Some(trial(4)));
        drop(reader);
        assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap(), unclean);
        // The next writer recovers the file itself.
        assert_eq!(
            Store::open_in(&state).unwrap().trial().unwrap(),
            Some(trial(4))
        );
    }

    #[test]
    fn a_missing_database_is_nothing_installed_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let state = Dir::open(dir.path()).unwrap();
        let err = ReadOnlyStore::open_read_only_in(&state).unwrap_err();
        assert!(matches!(err, Error::NothingInstalled(_)), "{err}");
        assert!(err.to_string().contains("no state database"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_database_an_earlier_relsync_wrote_opens_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        {
            // As relsync wrote it before the single-writer mode: redb's default, exclusive.
            let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
            let store = Store::with_tables(db).unwrap();
            store.set_trial(Some(&trial(3))).unwrap();
        }
        let state = Dir::open(dir.path()).unwrap();
        let reader = ReadOnlyStore::open_read_only_in(&state).unwrap();
        assert_eq!(reader.trial().unwrap(), Some(trial(3)));
        drop(reader);
        let writer = Store::open_in(&state).unwrap();
        assert_eq!(writer.trial().unwrap(), Some(trial(3)));
        writer.set_trial(None).unwrap();
    }

    #[test]
    fn the_trust_copy_round_trips_and_ignores_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trusted");
        let state = Dir::open(dir.path()).unwrap();
        assert!(TrustCopy::read(&state).unwrap().is_none());
        let copy = TrustCopy {
            states: vec![(
                "stable".into(),
                TrustedState {
                    highest_version: Version::new(2, 0, 0),
                    manifest: ManifestId([3; 32]),
                    time_unix: 7,
                },
            )],
            root: Some(b"root".to_vec()),
            bad: vec![BadRelease {
                version: Version::new(1, 0, 0),
                reason: "yanked".into(),
            }],
        };
        copy.write(&state).unwrap();
        let read = TrustCopy::read(&state).unwrap().unwrap();
        assert_eq!(read.state("stable"), copy.state("stable"));
        assert_eq!(read.state("beta"), None);
        assert_eq!(read.root, copy.root);
        assert_eq!(read.bad, copy.bad);
        std::fs::write(&path, b"\xff\xff\xff").unwrap();
        assert!(TrustCopy::read(&state).unwrap().is_none());
    }

    #[test]
    fn state_files_are_never_opened_through_a_link_and_get_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("state.redb")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("trusted.tmp")).unwrap();
        let state = Dir::open(dir.path()).unwrap();
        let chain = |e: Error| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text += &format!(": {cause}");
                source = cause.source();
            }
            text
        };
        let err = chain(Store::open_in(&state).unwrap_err());
        assert!(err.contains("symbolic link"), "{err}");
        TrustCopy::default().write(&state).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        let mode = std::fs::metadata(dir.path().join("trusted"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        std::fs::remove_file(dir.path().join("state.redb")).unwrap();
        std::fs::hard_link(&target, dir.path().join("state.redb")).unwrap();
        let err = chain(Store::open_in(&state).unwrap_err());
        assert!(err.contains("hard links"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }
}
