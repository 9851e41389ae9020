//! Writing to an origin folder: every object lands by an atomic rename.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use relsync_engine::ManifestId;
use relsync_engine::layout::manifest_path;
use relsync_engine::manifest::decompress_envelope;

/// An origin that is a local folder (served by any HTTP server).
#[derive(Debug, Clone)]
pub struct LocalOrigin {
    root: PathBuf,
}

impl LocalOrigin {
    /// Opens (creating) the origin folder `spec` (a path or `file://` URL).
    pub fn open(spec: &str) -> Result<Self> {
        if spec.contains("://") && !spec.starts_with("file://") {
            bail!("unsupported origin {spec:?}: use a folder path or file:// URL");
        }
        let root = PathBuf::from(spec.strip_prefix("file://").unwrap_or(spec));
        for dir in ["channels", "manifests", "packs", "keys", ".tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        Ok(Self { root })
    }

    /// A folder for temporary files on the same file system as the origin.
    pub fn scratch(&self) -> PathBuf {
        self.root.join(".tmp")
    }

    /// Reads an object, if it exists.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let full = self.root.join(path);
        match fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", full.display())),
        }
    }

    /// Reads manifest `id`'s signed envelope, if it exists.
    pub fn read_manifest(&self, id: &ManifestId) -> Result<Option<Vec<u8>>> {
        let Some(file) = self.read(&manifest_path(id))? else {
            return Ok(None);
        };
        let envelope =
            decompress_envelope(&file, None).with_context(|| format!("manifest {id}"))?;
        Ok(Some(envelope))
    }

    /// Reads `len` bytes at `offset` of an object.
    pub fn read_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let full = self.root.join(path);
        let file = File::open(&full).with_context(|| format!("opening {}", full.display()))?;
        let mut out = vec![0u8; len];
        file.read_exact_at(&mut out, offset)
            .with_context(|| format!("reading {} at {offset}", full.display()))?;
        Ok(out)
    }

    /// An object's length, if it exists.
    pub fn len_of(&self, path: &str) -> Result<Option<u64>> {
        let full = self.root.join(path);
        match fs::metadata(&full) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", full.display())),
        }
    }

    /// Whether an object exists.
    pub fn exists(&self, path: &str) -> bool {
        self.root.join(path).exists()
    }

    /// Writes an object atomically (temp file, fsync, rename, fsync dir).
    pub fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(self.scratch())?;
        tmp.write_all(bytes)?;
        self.put_file(path, tmp.into_temp_path().as_ref())
    }

    /// Moves a finished local file into place as `path`, atomically.
    pub fn put_file(&self, path: &str, local: &Path) -> Result<()> {
        let full = self.root.join(path);
        File::open(local)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", local.display()))?;
        set_readable(local)?;
        fs::rename(local, &full).with_context(|| format!("writing {}", full.display()))?;
        if let Some(parent) = full.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", parent.display()))?;
        }
        Ok(())
    }
}

/// Temp files are created 0600; published objects must be readable by the web server.
fn set_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting mode of {}", path.display()))
}
