//! Opening an install directory safely: who may write it, what relsync may take over, the
//! lock, and the store.
//!
//! relsync often runs as root on directories other users can see, so before it touches
//! anything it refuses an install that another user could write (the install directory,
//! `.relsync`, or an ancestor they could rename), opens `.relsync` and every state file
//! relative to a handle without following links, sets every mode explicitly, and never takes
//! over a directory it did not make unless told to (`--adopt`).

pub(crate) mod audit;
pub(crate) mod local;
pub(crate) mod store;
pub(crate) mod switch;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::Serialize;

use crate::install::store::{BadRelease, ReadOnlyStore, Release, Store, StoreStats, Trial};
use crate::install::switch::reconcile;
use crate::layout::{InstallLayout, RELEASES_DIR, STAGING_DIR, STATE_DIR};
use crate::platform::{self, Dir, STATE_DIR_MODE, TREE_DIR_MODE};
use crate::{Error, Result};

/// How [`open_install`] treats a directory that is not an install yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// It must be an install already. Its releases are reported on, not refused: before a
    /// release is switched to (rollback, an offline install), [`check_switchable`] checks
    /// that they are relsync's alone.
    Read,
    /// Make it one if it is not: create the directory if it is missing; take over an existing
    /// directory that holds anything only when `adopt` is set.
    Create {
        /// Install into a non-empty directory that is not an install yet.
        adopt: bool,
    },
}

/// Opens (creating, if `opening` says so) the install at `layout`, takes its lock and opens
/// its store. Refuses, before anything is written, an install another user could write and a
/// `current` that relsync did not make.
pub(crate) fn open_install(layout: &InstallLayout, opening: Opening) -> Result<(File, Store)> {
    // The path as written, before anything is created under it, and again once it exists:
    // a directory another user made in a sticky parent meanwhile is caught the second time.
    platform::check_path(layout.root())?;
    let root = open_root(layout, opening)?;
    platform::check_path(layout.root())?;
    platform::check_trusted(layout.root(), &root.meta()?, "the install directory")?;
    if let Opening::Create { .. } = opening {
        refuse_unmanaged_current(layout, &root)?;
    }
    let state = open_state(layout, &root, opening, true)?;
    let lock = take_lock(layout, &state)?;
    let store = match opening {
        Opening::Create { .. } => Store::open_or_rebuild_in(&state)?,
        Opening::Read => Store::open_in(&state).map_err(|e| match e {
            Error::Store(reason) => Error::Store(format!(
                "{reason} (the next `relsync update` rebuilds a corrupt database)"
            )),
            e => e,
        })?,
    };
    if opening != Opening::Read {
        check_releases(layout, &root, &store)?;
    }
    if let Opening::Create { .. } = opening {
        // A tree left by an interrupted run is never resumed; one made by an earlier
        // version may carry looser modes.
        state.remove_tree(STAGING_DIR)?;
    }
    reconcile(layout, &store)?;
    Ok((lock, store))
}

/// Opens the existing install at `layout` to read it (`status`, `verify`): the same checks of
/// who may write it as [`open_install`], but no lock, and nothing created, repaired or
/// changed (no mode set, no interrupted switch reconciled), so it works while an update or
/// the daemon holds the lock and needs no write access to `.relsync`.
pub(crate) fn open_install_read_only(layout: &InstallLayout) -> Result<ReadOnlyStore> {
    platform::check_path(layout.root())?;
    let root = open_root(layout, Opening::Read)?;
    platform::check_trusted(layout.root(), &root.meta()?, "the install directory")?;
    let state = open_state(layout, &root, Opening::Read, false)?;
    ReadOnlyStore::open_read_only_in(&state).map_err(|e| match e {
        Error::Store(reason) if !reason.contains("the next `relsync update`") => Error::Store(
            format!("{reason} (the next `relsync update` rebuilds a corrupt database)"),
        ),
        e => e,
    })
}

/// Refuses to switch releases in an install opened with [`Opening::Read`] unless its releases
/// are relsync's alone, as opening it to create does.
pub(crate) fn check_switchable(layout: &InstallLayout, store: &Store) -> Result<()> {
    check_releases(layout, &Dir::open(layout.root())?, store)
}

/// Refuses installed releases another user could change: `releases/` must be a directory
/// only relsync's user (or root) may write, and so must every directory and file of the
/// current and previous releases (a release made under a loose umask before relsync set its
/// modes, or a `releases/` of a deploy tool adopted with `--adopt`). Owners and modes only:
/// no hashing.
fn check_releases(layout: &InstallLayout, root: &Dir, store: &Store) -> Result<()> {
    let path = layout.releases();
    let Some(meta) = root.meta_at(RELEASES_DIR)? else {
        return Ok(());
    };
    if meta.is_symlink() {
        return Err(Error::Insecure {
            path,
            problem: "it is a symbolic link, and relsync never follows links in an install".into(),
            fix: "remove the link (and check where it pointed)".into(),
        });
    }
    if !meta.is_dir() {
        return Err(Error::Insecure {
            path,
            problem: "it is not a directory (relsync's releases live in one)".into(),
            fix: "move it away".into(),
        });
    }
    platform::check_trusted(
        &path,
        &root.open_dir(RELEASES_DIR)?.meta()?,
        "the releases directory",
    )
    .map_err(|e| with_fix(e, &path))?;
    for release in [store.current()?, store.previous()?].into_iter().flatten() {
        let dir = layout.release(&release.dir);
        if std::fs::symlink_metadata(&dir).is_ok() {
            check_tree(&dir, 0).map_err(|e| with_fix(e, &path))?;
        }
    }
    Ok(())
}

/// Every directory and file below (and including) `dir`: owned by relsync's user or root,
/// writable by nobody else, no setuid or setgid bit. Links are not followed.
fn check_tree(dir: &Path, depth: usize) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    /// Deeper than any release tree the path rules allow.
    const MAX_DEPTH: usize = 512;
    let meta = std::fs::symlink_metadata(dir).map_err(Error::io("checking", dir))?;
    check_entry_owner(dir, meta.uid(), meta.mode())?;
    if depth > MAX_DEPTH {
        return Err(Error::io("checking", dir)(std::io::Error::other(
            "nested too deep",
        )));
    }
    for entry in std::fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        let entry = entry.map_err(Error::io("listing", dir))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io("checking", &path))?;
        if meta.is_dir() {
            check_tree(&path, depth + 1)?;
        } else if !meta.file_type().is_symlink() {
            check_entry_owner(&path, meta.uid(), meta.mode())?;
        }
    }
    Ok(())
}

fn check_entry_owner(path: &Path, uid: u32, mode: u32) -> Result<()> {
    let me = platform::effective_uid();
    let problem = if uid != me && uid != 0 {
        format!(
            "it is owned by {}, not by {}",
            platform::user_name(uid),
            platform::user_name(me)
        )
    } else if mode & 0o022 != 0 {
        format!("it has mode {:04o}: others can change it", mode & 0o7777)
    } else if mode & 0o6000 != 0 {
        format!(
            "it has mode {:04o}: a setuid or setgid bit no release has",
            mode & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(Error::Insecure {
        path: path.to_path_buf(),
        problem: format!("an installed release is not relsync's alone: {problem}"),
        fix: String::new(),
    })
}

/// The fix for a release tree someone else could change.
fn with_fix(e: Error, releases: &Path) -> Error {
    match e {
        Error::Insecure { path, problem, .. } => Error::Insecure {
            path,
            problem,
            fix: format!(
                "check the releases for planted files, then `chmod -R go-w,ug-s {r}` (and \
                 `chown -R` them to relsync's user if another user owns them), then \
                 `relsync verify`",
                r = releases.display()
            ),
        },
        e => e,
    }
}

/// The install directory, created (with its missing parents, each 0755) if `opening` allows.
fn open_root(layout: &InstallLayout, opening: Opening) -> Result<Dir> {
    let path = layout.root();
    if std::fs::symlink_metadata(path).is_err() {
        if !matches!(opening, Opening::Create { .. }) {
            return Err(Error::NothingInstalled(format!(
                "{} is not a relsync install (it does not exist)",
                path.display()
            )));
        }
        create_dirs(path)?;
    }
    Dir::open(path)
}

/// Creates `path` and its missing parents, each with mode 0755 whatever the umask.
fn create_dirs(path: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = path;
    while std::fs::symlink_metadata(at).is_err() {
        missing.push(at);
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    for dir in missing.into_iter().rev() {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            continue;
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let name = name.to_str().ok_or_else(|| {
            Error::io("creating", dir)(std::io::Error::other("the name is not UTF-8"))
        })?;
        Dir::open(parent)?.ensure_dir(name, TREE_DIR_MODE)?;
    }
    Ok(())
}

/// Refuses a `current` that is not a symbolic link: relsync's `current` always is one, so
/// anything else is someone else's data, which an update would have to replace.
fn refuse_unmanaged_current(layout: &InstallLayout, root: &Dir) -> Result<()> {
    match root.meta_at("current")? {
        Some(meta) if !meta.is_symlink() => Err(Error::Unmanaged {
            path: layout.current(),
            what: if meta.is_dir() {
                "a directory".into()
            } else {
                "a file".into()
            },
        }),
        _ => Ok(()),
    }
}

/// `.relsync`: checked (only relsync's user or root may write it) and made private (0700);
/// created when `opening` allows, in an empty directory or, with `adopt`, any. Its mode is
/// left alone unless `fix_mode`.
fn open_state(layout: &InstallLayout, root: &Dir, opening: Opening, fix_mode: bool) -> Result<Dir> {
    let path = layout.state();
    match (root.meta_at(STATE_DIR)?, opening) {
        (None, Opening::Read) => Err(Error::NothingInstalled(format!(
            "{} is not a relsync install (it has no {STATE_DIR})",
            layout.root().display()
        ))),
        (None, Opening::Create { adopt }) => {
            let found = root.list()?;
            if !found.is_empty() && !adopt {
                return Err(Error::NotAnInstall {
                    dir: layout.root().to_path_buf(),
                    found,
                });
            }
            root.create_dir(STATE_DIR, STATE_DIR_MODE)
        }
        (Some(meta), _) if meta.is_symlink() => Err(Error::Insecure {
            path,
            problem: "relsync's state directory is a symbolic link, and relsync never follows \
                      links in an install's state"
                .into(),
            fix: "remove the link (and check where it pointed)".into(),
        }),
        (Some(_), _) => {
            let state = root.open_dir(STATE_DIR)?;
            let meta = state.meta()?;
            platform::check_trusted(&path, &meta, "relsync's state directory")?;
            if fix_mode && meta.mode != STATE_DIR_MODE && meta.uid == platform::effective_uid() {
                state.set_mode(STATE_DIR_MODE)?;
            }
            Ok(state)
        }
    }
}

/// Takes the install's lock (`flock` on `.relsync/lock`, opened without following links)
/// and writes this process's pid into it for the next one's message.
fn take_lock(layout: &InstallLayout, state: &Dir) -> Result<File> {
    let lock = state.open_state_file("lock", false)?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => Error::Locked {
            dir: layout.root().to_path_buf(),
            holder: lock_holder(&lock),
        },
        std::fs::TryLockError::Error(e) => Error::io("locking", layout.lock())(e),
    })?;
    // For the message a second updater prints (best effort); the lock itself is the flock.
    // One write of a fixed width at offset 0, so a reader never sees a half-written pid.
    let _ = lock
        .write_all_at(format!("{:>10}\n", std::process::id()).as_bytes(), 0)
        .and_then(|()| lock.set_len(11));
    Ok(lock)
}

/// The pid the lock's holder wrote, waiting briefly (at most 100 ms) for a holder that has
/// just taken the lock to write it over an earlier holder's.
fn lock_holder(lock: &File) -> Option<u32> {
    let alive = |pid: u32| {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        pid.is_some_and(|pid| {
            !matches!(
                rustix::process::test_kill_process(pid),
                Err(rustix::io::Errno::SRCH)
            )
        })
    };
    for _ in 0..50 {
        let mut text = [0u8; 16];
        let pid = lock
            .read_at(&mut text, 0)
            .ok()
            .and_then(|n| std::str::from_utf8(&text[..n]).ok()?.trim().parse().ok())
            .filter(|&pid| alive(pid));
        if pid.is_some() {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    None
}

/// What an install holds ([`Engine::status`](crate::Engine::status)).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The install directory.
    pub install_dir: PathBuf,
    /// The current version.
    pub version: Option<Version>,
    /// The version kept for rollback.
    pub previous_version: Option<Version>,
    /// The current manifest id.
    pub manifest: Option<String>,
    /// Files and bytes in the current release.
    pub files: u64,
    /// Bytes of regular files in the current release.
    pub bytes: u64,
    /// Highest version ever trusted.
    pub highest_version_seen: Option<Version>,
    /// The channel of the current release.
    pub channel: Option<String>,
    /// A release downloaded and waiting to be installed.
    pub staged_version: Option<Version>,
    /// The current release, if it is on trial (not yet reported healthy).
    pub trial: Option<Trial>,
    /// Releases this install will not take again.
    pub bad_releases: Vec<BadRelease>,
    /// Store counters.
    pub store: StoreStats,
}

/// The current and previous releases as the store records them or, after a crash between
/// the switch and its record, as the next writer will record them ([`reconcile`]): `current`
/// on disk wins if the store knows its release. Read only: nothing is recorded.
pub(crate) fn installed_releases<D: redb::ReadableDatabase>(
    layout: &InstallLayout,
    store: &Store<D>,
) -> Result<(Option<Release>, Option<Release>)> {
    let recorded = store.current()?;
    if let Some(on_disk) = switch::current_dir(layout)
        && recorded.as_ref().map(|r| r.dir.as_str()) != Some(on_disk.as_str())
        && let Some(release) = store.release(&on_disk)?
    {
        let previous = recorded.filter(|p| layout.release(&p.dir).is_dir());
        return Ok((Some(release), previous));
    }
    Ok((recorded, store.previous()?))
}

pub(crate) fn status<D: redb::ReadableDatabase>(
    layout: &InstallLayout,
    store: &Store<D>,
) -> Result<Status> {
    let (current, previous) = installed_releases(layout, store)?;
    Ok(Status {
        channel: current.as_ref().map(|r| r.manifest.channel.clone()),
        staged_version: store.staged()?.map(|s| s.manifest.version.clone()),
        trial: store.trial()?,
        bad_releases: store.bad_releases()?,
        install_dir: layout.root().to_path_buf(),
        version: current.as_ref().map(|r| r.manifest.version.clone()),
        previous_version: previous.map(|r| r.manifest.version.clone()),
        manifest: current.as_ref().map(|r| r.manifest.id().to_string()),
        files: current
            .as_ref()
            .map_or(0, |r| r.manifest.files().count() as u64),
        bytes: current
            .as_ref()
            .map_or(0, |r| r.manifest.total_file_bytes()),
        highest_version_seen: match &current {
            Some(r) => store
                .trusted_state(&r.manifest.channel)?
                .map(|t| t.highest_version),
            None => None,
        },
        store: store.stats()?,
    })
}

/// The install id's file in `.relsync`.
const INSTALL_ID_FILE: &str = "install-id";

/// This install's random id, if it has a readable one (installs get one when opened).
pub(crate) fn read_install_id(layout: &InstallLayout) -> Option<[u8; 16]> {
    let bytes = layout.state_dir().ok()?.read(INSTALL_ID_FILE, 64).ok()??;
    let mut id = [0; 16];
    hex::decode_to_slice(std::str::from_utf8(&bytes).ok()?.trim(), &mut id).ok()?;
    Some(id)
}

/// Reads this install's random id, creating it on first use (mode 0600, never through a
/// link).
pub(crate) fn ensure_install_id(layout: &InstallLayout) -> Result<[u8; 16]> {
    // A link (or anything unreadable) in its place is an error, not a reason to start over.
    if layout.state_dir()?.read(INSTALL_ID_FILE, 64)?.is_some()
        && let Some(id) = read_install_id(layout)
    {
        return Ok(id);
    }
    let mut id = [0; 16];
    getrandom::fill(&mut id).map_err(|e| Error::Io {
        op: "generating an install id for",
        path: layout.install_id(),
        source: std::io::Error::other(e.to_string()),
    })?;
    layout
        .state_dir()?
        .write_atomic(INSTALL_ID_FILE, hex::encode(id).as_bytes())?;
    Ok(id)
}
