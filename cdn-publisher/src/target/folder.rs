//! An origin folder on a local file system, served by any HTTP server.
//!
//! Every object lands by an atomic rename: written to a temp file in `.tmp` (on the same file
//! system), fsynced, given mode 0644 (temp files are created 0600; the web server must read
//! them), renamed into place, and the folder fsynced. A pack already there is skipped; other
//! objects are rewritten, which changes nothing for content-addressed ones and lets a tool
//! repair a damaged object.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use bytes::Bytes;
use tempfile::{NamedTempFile, TempPath};

use super::{ObjectMeta, Put, Target};

/// The folders of an origin, made when it is opened; `.tmp` stages files before their rename.
const FOLDERS: [&str; 5] = ["channels", "manifests", "packs", "keys", STAGING];
const STAGING: &str = ".tmp";

/// An origin folder.
#[derive(Debug)]
pub struct Folder {
    root: PathBuf,
    staging: PathBuf,
}

impl Folder {
    /// Opens the origin folder `root`, creating it and its folders if missing.
    pub fn open(root: &Path) -> Result<Self> {
        for dir in FOLDERS {
            let path = root.join(dir);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            staging: root.join(STAGING),
        })
    }

    /// Moves a finished local file into place as `path`, atomically (fsync, mode 0644,
    /// rename, fsync of the folder).
    fn rename_into(&self, path: &str, local: &Path) -> Result<()> {
        let full = self.root.join(path);
        File::open(local)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", local.display()))?;
        fs::set_permissions(local, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting mode of {}", local.display()))?;
        fs::rename(local, &full).with_context(|| format!("writing {}", full.display()))?;
        if let Some(parent) = full.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", parent.display()))?;
        }
        Ok(())
    }
}

impl Target for Folder {
    fn staging(&self) -> Option<&Path> {
        Some(&self.staging)
    }

    fn is_remote(&self) -> bool {
        false
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let full = self.root.join(path);
        match fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", full.display())),
        }
    }

    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        let full = self.root.join(path);
        let file = File::open(&full).with_context(|| format!("opening {}", full.display()))?;
        let mut out = vec![0u8; (range.end - range.start) as usize];
        file.read_exact_at(&mut out, range.start)
            .with_context(|| format!("reading {} at {}", full.display(), range.start))?;
        Ok(out.into())
    }

    fn len_of(&self, path: &str) -> Result<Option<u64>> {
        let full = self.root.join(path);
        match fs::metadata(&full) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", full.display())),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut pending = vec![self.root.join(prefix)];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
            };
            for entry in entries {
                let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                let meta = entry.metadata()?;
                let path = entry.path();
                if meta.is_dir() {
                    pending.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root)
                    && let Some(rel) = rel.to_str()
                {
                    out.push(ObjectMeta {
                        path: rel.to_owned(),
                        len: meta.len(),
                        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    });
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<()> {
        let full = self.root.join(path);
        match fs::remove_file(&full) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {}", full.display())),
        }
    }

    fn put(&self, path: &str, bytes: &[u8]) -> Result<Put> {
        let staging = || format!("writing a file in {}", self.staging.display());
        let mut tmp = NamedTempFile::new_in(&self.staging).with_context(staging)?;
        tmp.write_all(bytes).with_context(staging)?;
        self.rename_into(path, &tmp.into_temp_path())?;
        Ok(Put::Written(bytes.len() as u64))
    }

    fn put_file(&self, path: &str, local: TempPath) -> Result<Put> {
        if let Some(len) = self.len_of(path)? {
            return Ok(Put::Present(len));
        }
        let len = fs::metadata(&local)
            .with_context(|| format!("reading {}", local.display()))?
            .len();
        self.rename_into(path, &local)?;
        // Moved: nothing left to delete.
        local.keep().ok();
        Ok(Put::Written(len))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// A folder origin in a temp dir.
    fn folder() -> (tempfile::TempDir, Folder) {
        let tmp = tempfile::tempdir().unwrap();
        let folder = Folder::open(&tmp.path().join("origin")).unwrap();
        (tmp, folder)
    }

    /// A finished file in the staging folder, as a pack is before its move.
    fn staged(folder: &Folder, bytes: &[u8]) -> TempPath {
        let mut f = NamedTempFile::new_in(&folder.staging).unwrap();
        f.write_all(bytes).unwrap();
        f.into_temp_path()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn staging_is_empty(folder: &Folder) -> bool {
        fs::read_dir(&folder.staging).unwrap().count() == 0
    }

    #[test]
    fn opening_makes_the_layout() {
        let (_tmp, folder) = folder();
        for dir in FOLDERS {
            assert!(folder.root.join(dir).is_dir(), "{dir}");
        }
        assert_eq!(folder.staging(), Some(folder.root.join(".tmp").as_path()));
        assert!(!folder.is_remote());
    }

    #[test]
    fn writes_replace_objects_whole_with_mode_0644_and_leave_no_temp_files() {
        let (_tmp, folder) = folder();
        assert_eq!(folder.put("channels/s", b"first").unwrap(), Put::Written(5));
        assert_eq!(
            folder.put("channels/s", b"second").unwrap(),
            Put::Written(6)
        );
        assert_eq!(folder.read("channels/s").unwrap().unwrap(), b"second");
        assert_eq!(mode(&folder.root.join("channels/s")), 0o644);
        // A content-addressed object is rewritten too, so a damaged one can be repaired.
        folder.put("manifests/m", b"damaged").unwrap();
        folder.put("manifests/m", b"good").unwrap();
        assert_eq!(folder.read("manifests/m").unwrap().unwrap(), b"good");
        assert!(staging_is_empty(&folder), "temp files left behind");
    }

    #[test]
    fn objects_are_renamed_in_so_a_reader_never_sees_a_part() {
        let (_tmp, folder) = folder();
        let path = folder.root.join("channels/s");
        folder.put("channels/s", b"old").unwrap();
        // A reader that opened the old object keeps reading it whole.
        let mut reader = File::open(&path).unwrap();
        folder.put("channels/s", b"new!").unwrap();
        let mut old = Vec::new();
        reader.read_to_end(&mut old).unwrap();
        assert_eq!(old, b"old");
        assert_ne!(
            fs::metadata(&path).unwrap().ino(),
            reader.metadata().unwrap().ino()
        );
        // A staged pack becomes the object itself: a rename, not a copy.
        let local = staged(&folder, b"pack bytes");
        let staged_ino = fs::metadata(&local).unwrap().ino();
        assert_eq!(folder.put_file("packs/p", local).unwrap(), Put::Written(10));
        let pack = folder.root.join("packs/p");
        assert_eq!(fs::metadata(&pack).unwrap().ino(), staged_ino);
        assert_eq!(mode(&pack), 0o644);
        assert!(staging_is_empty(&folder));
    }

    #[test]
    fn a_pack_already_there_is_skipped_and_the_staged_file_deleted() {
        let (_tmp, folder) = folder();
        let first = staged(&folder, b"aaaa");
        assert_eq!(folder.put_file("packs/a", first).unwrap(), Put::Written(4));
        let again = staged(&folder, b"other");
        assert_eq!(folder.put_file("packs/a", again).unwrap(), Put::Present(4));
        assert_eq!(folder.read("packs/a").unwrap().unwrap(), b"aaaa");
        assert!(
            staging_is_empty(&folder),
            "the skipped file was left behind"
        );
    }

    #[test]
    fn reads_ranges_and_lengths() {
        let (_tmp, folder) = folder();
        folder.put("packs/p", b"0123456789").unwrap();
        assert_eq!(&folder.read_range("packs/p", 2..5).unwrap()[..], b"234");
        assert_eq!(folder.read_range("packs/p", 10..10).unwrap().len(), 0);
        assert!(folder.read_range("packs/p", 8..11).is_err());
        assert!(folder.read_range("packs/none", 0..1).is_err());
        assert_eq!(folder.len_of("packs/p").unwrap(), Some(10));
        assert_eq!(folder.len_of("packs/none").unwrap(), None);
        assert_eq!(folder.read("packs/none").unwrap(), None);
    }

    #[test]
    fn lists_objects_under_a_prefix_with_their_lengths() {
        let (_tmp, folder) = folder();
        folder.put("packs/a", b"aa").unwrap();
        folder.put("packs/b", b"bbb").unwrap();
        folder.put("manifests/m", b"m").unwrap();
        folder.put("channels/stable", b"p").unwrap();
        let mut packs = folder.list("packs/").unwrap();
        packs.sort_by(|a, b| a.path.cmp(&b.path));
        let found: Vec<_> = packs.iter().map(|o| (o.path.as_str(), o.len)).collect();
        assert_eq!(found, [("packs/a", 2), ("packs/b", 3)]);
        assert!(packs.iter().all(|o| o.modified > SystemTime::UNIX_EPOCH));
        let mut all: Vec<_> = folder
            .list("")
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        all.sort();
        assert_eq!(
            all,
            ["channels/stable", "manifests/m", "packs/a", "packs/b"]
        );
        assert!(folder.list("missing/").unwrap().is_empty());
    }

    #[test]
    fn deletes_objects_and_a_missing_one_is_no_error() {
        let (_tmp, folder) = folder();
        folder.put("manifests/m", b"m").unwrap();
        folder.delete("manifests/m").unwrap();
        assert_eq!(folder.len_of("manifests/m").unwrap(), None);
        folder.delete("manifests/m").unwrap();
    }
}
