//! What the engine asks of the operating system for state a root process touches, behind one
//! small API (Unix; the model is OSTree's libglnx and systemd's `chase()`):
//!
//! - [`Dir`]: a directory opened once, with everything below it reached relative to the
//!   handle (`openat`, `mkdirat`, `renameat`, `unlinkat`), never following a symbolic link in
//!   the last component, and every mode set explicitly, never left to the umask;
//! - [`check_trusted`] and [`check_path`]: refuse a directory that a user other than the
//!   one running relsync (and root) could write or redirect, as OpenSSH's StrictModes does;
//! - [`open_read`]: opens a file for reading without following a final symbolic link.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use crate::{Error, Result};

/// Mode of relsync's private state directory and its subdirectories.
pub(crate) const STATE_DIR_MODE: u32 = 0o700;
/// Mode of every state file.
pub(crate) const STATE_FILE_MODE: u32 = 0o600;
/// Mode of directories of the install that everyone may read: the install directory when
/// relsync creates it, `releases/` and every directory of a release.
pub(crate) const TREE_DIR_MODE: u32 = 0o755;

/// The mode of a release's file: 0755 if the manifest says it is executable, else 0644.
pub(crate) fn file_mode(executable: bool) -> u32 {
    if executable { 0o755 } else { 0o644 }
}

/// The flags every open below a [`Dir`] carries.
fn base_flags() -> OFlags {
    OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// A directory handle: names below it are resolved relative to it, and a final component
/// that is a symbolic link is never followed (the operation fails with the path named).
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// A file's owner, type and permission bits, as `lstat` reports them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub uid: u32,
    pub mode: u32,
    pub kind: FileType,
    pub links: u64,
}

impl Meta {
    // The field types differ per platform (`st_mode` is a u16 on macOS).
    #[allow(clippy::useless_conversion)]
    fn of(stat: &Stat) -> Self {
        Self {
            uid: stat.st_uid,
            mode: u32::from(stat.st_mode) & 0o7777,
            kind: FileType::from_raw_mode(stat.st_mode as _),
            links: u64::from(stat.st_nlink),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == FileType::Symlink
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(rustix::io::Errno) -> Error + use<> {
    let path = path.to_path_buf();
    move |errno| Error::io(op, path)(with_hint(io::Error::from(errno)))
}

/// An `ELOOP` from `O_NOFOLLOW` says only "too many levels of symbolic links"; say what it
/// means here.
fn with_hint(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        io::Error::other(
            "it is a symbolic link, and relsync never follows links in an install's state; \
             remove the link",
        )
    } else {
        e
    }
}

impl Dir {
    /// Opens the directory at `path`, as the caller named it (symbolic links in it are the
    /// administrator's, and followed).
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("opening", path))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path this handle was opened as (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The directory's own owner and mode.
    pub(crate) fn meta(&self) -> Result<Meta> {
        rustix::fs::fstat(&self.fd)
            .map(|s| Meta::of(&s))
            .map_err(io_err("checking", &self.path))
    }

    /// What `name` is, without following it; `None` if there is nothing by that name.
    pub(crate) fn meta_at(&self, name: &str) -> Result<Option<Meta>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(Meta::of(&stat))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err("checking", &self.child(name))(e)),
        }
    }

    /// Sets this directory's mode.
    pub(crate) fn set_mode(&self, mode: u32) -> Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode as _))
            .map_err(io_err("setting the mode of", &self.path))
    }

    /// Opens subdirectory `name`; fails if it is a symbolic link.
    pub(crate) fn open_dir(&self, name: &str) -> Result<Dir> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            base_flags() | OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .map_err(|e| {
            // `O_DIRECTORY | O_NOFOLLOW` on a link fails with ENOTDIR, not ELOOP.
            let link = e == rustix::io::Errno::NOTDIR
                && matches!(self.meta_at(name), Ok(Some(meta)) if meta.is_symlink());
            let e = if link { rustix::io::Errno::LOOP } else { e };
            io_err("opening", &self.child(name))(e)
        })?;
        Ok(Dir {
            fd,
            path: self.child(name),
        })
    }

    /// Opens subdirectory `name`, creating it with exactly `mode` if it is missing (an
    /// existing one keeps its mode). Returns the handle and whether it was created.
    pub(crate) fn ensure_dir(&self, name: &str, mode: u32) -> Result<(Dir, bool)> {
        let created = match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode as _)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => return Err(io_err("creating", &self.child(name))(e)),
        };
        let dir = self.open_dir(name)?;
        if created {
            // mkdir's mode passed through the umask.
            dir.set_mode(mode)?;
        }
        Ok((dir, created))
    }

    /// Opens private subdirectory `name` (of `.relsync`), creating it 0700 if missing; an
    /// existing one must be relsync's user's, and gets mode 0700 back if it drifted.
    pub(crate) fn private_dir(&self, name: &str) -> Result<Dir> {
        let (dir, created) = self.ensure_dir(name, STATE_DIR_MODE)?;
        if !created {
            let meta = dir.meta()?;
            if meta.uid != effective_uid() {
                return Err(insecure(
                    dir.path(),
                    format!(
                        "this folder of relsync's state is owned by {}, not by {}",
                        user_name(meta.uid),
                        user_name(effective_uid())
                    ),
                    format!("remove {} (relsync recreates it)", dir.path().display()),
                ));
            }
            if meta.mode != STATE_DIR_MODE {
                dir.set_mode(STATE_DIR_MODE)?;
            }
        }
        Ok(dir)
    }

    /// Creates subdirectory `name` with exactly `mode`; fails if anything is there.
    pub(crate) fn create_dir(&self, name: &str, mode: u32) -> Result<Dir> {
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode as _))
            .map_err(io_err("creating", &self.child(name)))?;
        let dir = self.open_dir(name)?;
        dir.set_mode(mode)?;
        Ok(dir)
    }

    /// Opens state file `name` for reading and writing, creating it (mode 0600) if missing.
    /// Refuses a link, anything but a regular file, a file owned by another user and a file
    /// with other hard links (it could be a file outside the install).
    pub(crate) fn open_state_file(&self, name: &str, append: bool) -> Result<File> {
        let path = self.child(name);
        let mut flags = base_flags() | OFlags::RDWR | OFlags::CREATE;
        if append {
            flags |= OFlags::APPEND;
        }
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags,
            Mode::from_raw_mode(STATE_FILE_MODE as _),
        )
        .map_err(io_err("opening", &path))?;
        let meta = rustix::fs::fstat(&fd)
            .map(|s| Meta::of(&s))
            .map_err(io_err("checking", &path))?;
        check_state_file(&path, &meta)?;
        if meta.mode != STATE_FILE_MODE {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(STATE_FILE_MODE as _))
                .map_err(io_err("setting the mode of", &path))?;
        }
        Ok(File::from(fd))
    }

    /// Opens state file `name` for reading only, with the checks of [`Self::open_state_file`]
    /// and nothing created or changed (not even its mode); `None` if it does not exist.
    pub(crate) fn open_state_file_read_only(&self, name: &str) -> Result<Option<File>> {
        let path = self.child(name);
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            base_flags() | OFlags::RDONLY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        let meta = rustix::fs::fstat(&fd)
            .map(|s| Meta::of(&s))
            .map_err(io_err("checking", &path))?;
        check_state_file(&path, &meta)?;
        Ok(Some(File::from(fd)))
    }

    /// Reads state file `name` (at most `limit` bytes); `None` if it does not exist.
    pub(crate) fn read(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let path = self.child(name);
        let Some(file) = self.open_state_file_read_only(name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(Error::io("reading", &path))?;
        if bytes.len() as u64 > limit {
            return Err(Error::io("reading", &path)(io::Error::other(format!(
                "over {limit} bytes"
            ))));
        }
        Ok(Some(bytes))
    }

    /// Replaces state file `name` atomically with `bytes` (mode 0600): a new temporary file
    /// (never an existing one, never through a link), synced, renamed over `name`, and the
    /// directory synced.
    pub(crate) fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.child(name);
        let tmp = format!("{name}.tmp");
        // A leftover from a crash (or anything planted there) is removed, not reused.
        self.remove_file(&tmp)?;
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            base_flags() | OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(STATE_FILE_MODE as _),
        )
        .map_err(io_err("creating", &self.child(&tmp)))?;
        let written = (|| {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(STATE_FILE_MODE as _))?;
            let mut file = File::from(fd);
            file.write_all(bytes)?;
            file.sync_all()
        })()
        .map_err(Error::io("writing", &path));
        let renamed = written.and_then(|()| self.rename(&tmp, self, name));
        if renamed.is_err() {
            let _ = self.remove_file(&tmp);
        }
        renamed?;
        self.sync()
    }

    /// Creates file `name` (which must not exist) for writing, with exactly `mode`.
    pub(crate) fn create_file(&self, name: &str, mode: u32) -> Result<File> {
        let path = self.child(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            base_flags() | OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(mode as _),
        )
        .map_err(io_err("creating", &path))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode as _))
            .map_err(io_err("setting the mode of", &path))?;
        Ok(File::from(fd))
    }

    /// Renames `from` (here) to `to` in `dir`; neither is followed if it is a link.
    pub(crate) fn rename(&self, from: &str, dir: &Dir, to: &str) -> Result<()> {
        rustix::fs::renameat(&self.fd, from, &dir.fd, to)
            .map_err(io_err("renaming", &self.child(from)))
    }

    /// Creates symbolic link `name` pointing at `target`.
    pub(crate) fn symlink(&self, target: &str, name: &str) -> Result<()> {
        rustix::fs::symlinkat(target, &self.fd, name)
            .map_err(io_err("creating symlink", &self.child(name)))
    }

    /// Removes file (or link) `name`; nothing there is fine.
    pub(crate) fn remove_file(&self, name: &str) -> Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err("removing", &self.child(name))(e)),
        }
    }

    /// Removes `name` and everything below it without following any link (a link is removed,
    /// never what it points at); nothing there is fine.
    pub(crate) fn remove_tree(&self, name: &str) -> Result<()> {
        let Some(meta) = self.meta_at(name)? else {
            return Ok(());
        };
        if !meta.is_dir() {
            return self.remove_file(name);
        }
        self.open_dir(name)?.clear(0)?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err("removing", &self.child(name))(e)),
        }
    }

    /// Removes everything in this directory (`depth`: how deep the recursion already is).
    fn clear(&self, depth: usize) -> Result<()> {
        /// Deeper than any release tree the path rules allow.
        const MAX_DEPTH: usize = 512;
        if depth > MAX_DEPTH {
            return Err(Error::io("removing", &self.path)(io::Error::other(
                "nested too deep",
            )));
        }
        let names = self.list()?;
        for name in names {
            let Some(meta) = self.meta_at(&name)? else {
                continue;
            };
            if meta.is_dir() {
                self.open_dir(&name)?.clear(depth + 1)?;
                rustix::fs::unlinkat(&self.fd, name.as_str(), AtFlags::REMOVEDIR)
                    .map_err(io_err("removing", &self.child(&name)))?;
            } else {
                self.remove_file(&name)?;
            }
        }
        Ok(())
    }

    /// The names in this directory (`.` and `..` left out; names that are not UTF-8 are
    /// reported as an error, since relsync never makes one).
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let dup = rustix::io::dup(&self.fd).map_err(io_err("listing", &self.path))?;
        let mut dir = rustix::fs::Dir::new(dup).map_err(io_err("listing", &self.path))?;
        dir.rewind();
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(io_err("listing", &self.path))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = std::str::from_utf8(name).map_err(|_| {
                Error::io("listing", &self.path)(io::Error::other(format!(
                    "the name {:?} is not UTF-8",
                    String::from_utf8_lossy(name)
                )))
            })?;
            names.push(name.to_owned());
        }
        Ok(names)
    }

    /// Makes the directory's entries durable.
    pub(crate) fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).map_err(io_err("syncing", &self.path))
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Opens `path` for reading, refusing to follow it if it is a symbolic link.
/// Only a regular file or a directory is opened: a FIFO (opened without blocking) or a
/// device is refused.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        base_flags() | OFlags::RDONLY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| with_hint(io::Error::from(e)))?;
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode as _);
    if kind != FileType::RegularFile && kind != FileType::Directory {
        return Err(io::Error::other("not a regular file"));
    }
    // Back to blocking reads (O_NONBLOCK only kept a FIFO's open from waiting for a writer).
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

/// Whether `e`, from a hard link, means this file system (or this pair of directories)
/// cannot link, so a copy must do: across devices, not permitted, too many links, or not
/// supported at all.
pub(crate) fn cannot_hard_link(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::XDEV, Errno::PERM, Errno::MLINK, Errno::OPNOTSUPP]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

/// The user relsync runs as.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A user for messages: the name from `/etc/passwd` when there is one, and the uid.
pub(crate) fn user_name(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id: u32 = fields.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_owned())
            })
        });
    match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

fn insecure(path: &Path, problem: String, fix: String) -> Error {
    Error::Insecure {
        path: path.to_path_buf(),
        problem,
        fix,
    }
}

/// Refuses a directory of an install (the install directory itself or `.relsync`) that a
/// user other than the one running relsync and root could write: owned by another user, or
/// writable by its group or by others. `what` names it in the message.
pub(crate) fn check_trusted(path: &Path, meta: &Meta, what: &str) -> Result<()> {
    let me = effective_uid();
    if meta.uid != me && meta.uid != 0 {
        return Err(insecure(
            path,
            format!(
                "{what} is owned by {}, but relsync runs as {}: that user could plant links \
                 that make relsync overwrite or delete files outside the install",
                user_name(meta.uid),
                user_name(me)
            ),
            format!(
                "run relsync as that user, or `chown -R {me} {}` if relsync's user should own it",
                path.display()
            ),
        ));
    }
    if meta.mode & 0o022 != 0 {
        let who = match (meta.mode & 0o020 != 0, meta.mode & 0o002 != 0) {
            (true, true) => "its group and all users",
            (true, false) => "its group",
            _ => "all users",
        };
        return Err(insecure(
            path,
            format!(
                "{what} has mode {:04o}: {who} can write it, so someone other than {} could \
                 plant links in it",
                meta.mode,
                user_name(me)
            ),
            format!(
                "check that nothing in it was planted, then `chmod go-w {}`",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses a state file that is not relsync's own: a link (never followed), not a regular
/// file, owned by another user, or with other hard links.
fn check_state_file(path: &Path, meta: &Meta) -> Result<()> {
    let me = effective_uid();
    let problem = if meta.kind != FileType::RegularFile {
        Some("it is not a regular file".to_owned())
    } else if meta.uid != me {
        Some(format!(
            "it is owned by {}, not by {}",
            user_name(meta.uid),
            user_name(me)
        ))
    } else if meta.links > 1 {
        Some(format!(
            "it has {} hard links, so it may be a file outside the install",
            meta.links
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(insecure(
            path,
            format!("this state file is not relsync's own: {problem}"),
            format!("remove {} (relsync recreates it)", path.display()),
        )),
        None => Ok(()),
    }
}

/// Refuses an install whose path another user could redirect: every directory the path
/// passes through *as written* must be owned by root or by relsync's user, and one that others
/// may write must have the sticky bit (as `/tmp` does). A symbolic link in the path is
/// followed only after the directory holding it passed the same check, since whoever may
/// write that directory may change where the link points (systemd's `chase()` and OpenSSH's
/// StrictModes check the same way). Components that do not exist yet end the walk: relsync
/// creates them itself, and the caller checks again once they exist.
pub(crate) fn check_path(install: &Path) -> Result<()> {
    /// As many links as the kernel follows in one path.
    const MAX_LINKS: usize = 40;
    let absolute = if install.is_absolute() {
        install.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(Error::io("resolving", install))?
            .join(install)
    };
    let mut pending: VecDeque<OsString> = absolute
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    let mut at = PathBuf::from("/");
    check_traversed(install, &at)?;
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            // `at` holds no links (each was resolved), so its parent is the real one.
            at.pop();
            continue;
        }
        let next = at.join(&name);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("checking", &next)(e)),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(Error::io("resolving", install)(io::Error::other(
                    "more than 40 symbolic links in the path",
                )));
            }
            let target = std::fs::read_link(&next).map_err(Error::io("reading link", &next))?;
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            for part in target.components().rev() {
                match part {
                    Component::Normal(name) => pending.push_front(name.to_os_string()),
                    Component::ParentDir => pending.push_front(OsString::from("..")),
                    _ => {}
                }
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(Error::io("opening", install)(io::Error::other(format!(
                "{} is not a directory",
                next.display()
            ))));
        }
        // The install directory itself gets the stricter `check_trusted` from the caller.
        if !pending.is_empty() {
            check_traversed(install, &next)?;
        }
        at = next;
    }
    Ok(())
}

/// One directory an install's path passes through: owned by root or relsync's user, and not
/// writable by others unless sticky.
fn check_traversed(install: &Path, dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(Error::io("checking", dir))?;
    let (uid, mode) = (meta.uid(), meta.mode() & 0o7777);
    let me = effective_uid();
    if uid != me && uid != 0 {
        return Err(insecure(
            install,
            format!(
                "its path passes through {}, owned by {}, who could move things aside and put \
                 a link in their place",
                dir.display(),
                user_name(uid)
            ),
            "put the install below directories owned by root or by relsync's user (and use \
             no links through other users' directories)"
                .into(),
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(insecure(
            install,
            format!(
                "its path passes through {} (mode {mode:04o}), which other users can write, so \
                 they could move things aside and put a link in their place",
                dir.display(),
            ),
            format!("`chmod go-w {}`, or install elsewhere", dir.display()),
        ));
    }
    Ok(())
}
