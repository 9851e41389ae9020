//! Where releases are published: an origin folder (served by any HTTP server), or a bucket of
//! an object store (S3 or S3-compatible, Google Cloud Storage, Azure Blob) behind a CDN.
//!
//! In a bucket, content-addressed objects (`packs/`, `manifests/`, `keys/`) are written only
//! if absent (a HEAD, then a PUT with `If-None-Match: *`), so a publish is idempotent and
//! resumable and concurrent publishers never clobber each other; channel pointers
//! (`channels/`) are overwritten. Large packs go up as multipart uploads. Every object carries
//! Content-Type and Cache-Control: [`IMMUTABLE_CACHE_CONTROL`] for content-addressed objects,
//! [`CHANNEL_CACHE_CONTROL`] for pointers.
//!
//! In a folder every object lands by an atomic rename (fsync, rename, fsync of the folder,
//! mode 0644). Packs already there are skipped and `keys/` documents are written once; other
//! objects are rewritten, which changes nothing for content-addressed ones and lets a tool
//! repair a damaged object.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, WriteMultipart,
};
use relsync_format::ManifestId;
use relsync_format::manifest::decompress_envelope;
use relsync_format::paths::manifest_path;
use tempfile::{TempDir, TempPath};
use tokio::io::AsyncReadExt;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Content-Type of every object in a bucket.
pub const CONTENT_TYPE: &str = "application/octet-stream";
/// Cache-Control of content-addressed objects: their bytes never change.
pub const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Cache-Control of channel pointers: a CDN or client may serve a pointer this stale, so a new
/// release (or a yank) reaches clients within a minute.
pub const CHANNEL_CACHE_CONTROL: &str = "public, max-age=60";
/// Pack uploads in flight at once by default.
pub const DEFAULT_UPLOADS: usize = 8;
/// Files larger than this go up as multipart uploads.
const MULTIPART_THRESHOLD_BYTES: u64 = 16 << 20;
/// Part size of multipart uploads (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Small reads of a bucket's packs fetch whole blocks of this size, kept in a small cache:
/// reading an earlier release chunk by chunk (for delta frames) then costs a request per
/// block, not per chunk.
const BLOCK_BYTES: u64 = 4 << 20;
/// Blocks kept.
const CACHED_BLOCKS: usize = 16;

/// An object listed in an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its path in the origin, e.g. `packs/<id>`.
    pub path: String,
    /// Its length in bytes.
    pub len: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// What writing an object did, with the object's length on the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Written now.
    Written(u64),
    /// A content-addressed object that was already there, left as it was.
    Present(u64),
}

impl Put {
    /// The object's length on the origin (an object already there keeps its own).
    pub fn object_len(self) -> u64 {
        match self {
            Put::Written(n) | Put::Present(n) => n,
        }
    }
}

/// What the writes to an origin did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriteStats {
    pub objects_written: u64,
    /// Content-addressed objects that were already there.
    pub objects_present: u64,
    pub bytes_written: u64,
    /// Wall-clock seconds during which at least one write was in flight.
    pub busy_seconds: f64,
}

impl WriteStats {
    /// What was done after `earlier`.
    pub fn since(&self, earlier: &WriteStats) -> WriteStats {
        WriteStats {
            objects_written: self.objects_written - earlier.objects_written,
            objects_present: self.objects_present - earlier.objects_present,
            bytes_written: self.bytes_written - earlier.bytes_written,
            busy_seconds: self.busy_seconds - earlier.busy_seconds,
        }
    }
}

/// Counts writes, and the time at least one is in flight.
#[derive(Debug, Default)]
struct Meter(Mutex<MeterState>);

#[derive(Debug, Default)]
struct MeterState {
    stats: WriteStats,
    in_flight: usize,
    busy_since: Option<Instant>,
    busy: Duration,
}

impl Meter {
    fn lock(&self) -> std::sync::MutexGuard<'_, MeterState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a write in flight until the guard drops.
    fn busy(self: &Arc<Self>) -> Busy {
        let mut s = self.lock();
        if s.in_flight == 0 {
            s.busy_since = Some(Instant::now());
        }
        s.in_flight += 1;
        Busy(Arc::clone(self))
    }

    fn record(&self, put: Put) {
        let mut s = self.lock();
        match put {
            Put::Written(n) => {
                s.stats.objects_written += 1;
                s.stats.bytes_written += n;
            }
            Put::Present(_) => s.stats.objects_present += 1,
        }
    }

    fn stats(&self) -> WriteStats {
        let s = self.lock();
        let running = s.busy_since.map_or(Duration::ZERO, |t| t.elapsed());
        WriteStats {
            busy_seconds: (s.busy + running).as_secs_f64(),
            ..s.stats
        }
    }
}

/// A write in flight.
struct Busy(Arc<Meter>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight -= 1;
        if s.in_flight == 0
            && let Some(since) = s.busy_since.take()
        {
            s.busy += since.elapsed();
        }
    }
}

/// Whether `path` is a channel pointer, the one kind of object that is overwritten.
fn is_pointer(path: &str) -> bool {
    path.starts_with("channels/")
}

/// An origin: a local folder or a bucket.
#[derive(Debug, Clone)]
pub struct Origin {
    backend: Backend,
    meter: Arc<Meter>,
    max_uploads: usize,
}

#[derive(Debug, Clone)]
enum Backend {
    Folder(PathBuf),
    Bucket(Arc<Remote>),
}

/// A bucket and what drives it from sync code.
#[derive(Debug)]
struct Remote {
    bucket: Arc<Bucket>,
    runtime: Runtime,
    /// Packs are built here before they are uploaded.
    scratch: TempDir,
}

/// An object store and the key prefix the origin lives under.
#[derive(Debug)]
struct Bucket {
    /// The origin as given, e.g. `s3://bucket/prefix`, for messages.
    url: String,
    store: Arc<dyn ObjectStore>,
    /// Without slashes at either end; empty for the bucket's root.
    prefix: String,
    /// The environment variables that hold the credentials, for messages.
    credentials: &'static str,
    blocks: Mutex<Blocks>,
}

/// Blocks of content-addressed objects read lately, and those objects' lengths.
#[derive(Debug, Default)]
struct Blocks {
    lens: HashMap<String, u64>,
    /// (path, block index) and its bytes, the most recently used last.
    recent: VecDeque<((String, u64), Bytes)>,
}

impl Origin {
    /// Opens the origin `spec`: a folder (a path or `file://` URL, created if missing), or a
    /// bucket `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX` or `az://CONTAINER/PREFIX` configured
    /// from the standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`). A bucket is
    /// listed once here, so a missing bucket or refused credentials fail at once.
    pub fn open(spec: &str) -> Result<Self> {
        let backend = match spec.split_once("://") {
            None => Backend::Folder(open_folder(spec)?),
            Some(("file", path)) => Backend::Folder(open_folder(path)?),
            Some((scheme, rest)) => Backend::Bucket(Arc::new(Remote::open(spec, scheme, rest)?)),
        };
        Ok(Self {
            backend,
            meter: Arc::default(),
            max_uploads: DEFAULT_UPLOADS,
        })
    }

    /// Uploads up to `n` packs to a bucket at once (default [`DEFAULT_UPLOADS`]); a folder
    /// takes them one by one.
    pub fn with_max_uploads(mut self, n: usize) -> Self {
        self.max_uploads = n.max(1);
        self
    }

    /// A folder for temporary files: on the origin's file system for a folder (so moves are
    /// atomic), a local temp dir for a bucket.
    pub fn scratch(&self) -> PathBuf {
        match &self.backend {
            Backend::Folder(root) => root.join(".tmp"),
            Backend::Bucket(r) => r.scratch.path().to_path_buf(),
        }
    }

    /// What every write so far did.
    pub fn stats(&self) -> WriteStats {
        self.meter.stats()
    }

    /// Reads an object, if it exists.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match &self.backend {
            Backend::Folder(root) => {
                let full = root.join(path);
                match fs::read(&full) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("reading {}", full.display())),
                }
            }
            Backend::Bucket(r) => r.runtime.block_on(r.bucket.read(path)),
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
        match &self.backend {
            Backend::Folder(root) => {
                use std::os::unix::fs::FileExt;
                let full = root.join(path);
                let file =
                    File::open(&full).with_context(|| format!("opening {}", full.display()))?;
                let mut out = vec![0u8; len];
                file.read_exact_at(&mut out, offset)
                    .with_context(|| format!("reading {} at {offset}", full.display()))?;
                Ok(out)
            }
            Backend::Bucket(r) => r.runtime.block_on(r.bucket.read_range(path, offset, len)),
        }
    }

    /// An object's length, if it exists.
    pub fn len_of(&self, path: &str) -> Result<Option<u64>> {
        match &self.backend {
            Backend::Folder(root) => folder_len(root, path),
            Backend::Bucket(r) => r.runtime.block_on(r.bucket.head(path)),
        }
    }

    /// Every object under folder `prefix` (such as `packs/`), sorted by path.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = match &self.backend {
            Backend::Folder(root) => list_folder(root, prefix)?,
            Backend::Bucket(r) => r.runtime.block_on(r.bucket.list(prefix))?,
        };
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Deletes an object; deleting one that is gone is not an error.
    pub fn delete(&self, path: &str) -> Result<()> {
        match &self.backend {
            Backend::Folder(root) => {
                let full = root.join(path);
                match fs::remove_file(&full) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e).with_context(|| format!("deleting {}", full.display())),
                }
            }
            Backend::Bucket(r) => r.runtime.block_on(r.bucket.delete(path)),
        }
    }

    /// Whether an object exists (`false` when that cannot be told).
    #[cfg(test)]
    pub fn exists(&self, path: &str) -> bool {
        self.try_exists(path).unwrap_or(false)
    }

    /// Whether an object exists.
    pub fn try_exists(&self, path: &str) -> Result<bool> {
        Ok(self.len_of(path)?.is_some())
    }

    /// Writes an object. In a bucket, only a channel pointer is overwritten; in a folder,
    /// anything but a `keys/` document is. An existing `keys/` document must have the same
    /// bytes.
    pub fn put(&self, path: &str, bytes: &[u8]) -> Result<Put> {
        if path.starts_with("keys/")
            && let Some(existing) = self.read(path)?
        {
            if existing != bytes {
                bail!("{path} is already on the origin with other content");
            }
            self.meter.record(Put::Present(existing.len() as u64));
            return Ok(Put::Present(existing.len() as u64));
        }
        let put = {
            let _busy = self.meter.busy();
            match &self.backend {
                Backend::Folder(root) => {
                    let scratch = root.join(".tmp");
                    let mut tmp = tempfile::NamedTempFile::new_in(&scratch)
                        .with_context(|| format!("creating a file in {}", scratch.display()))?;
                    tmp.write_all(bytes)
                        .with_context(|| format!("writing a file in {}", scratch.display()))?;
                    rename_into(root, path, &tmp.into_temp_path())?;
                    Put::Written(bytes.len() as u64)
                }
                Backend::Bucket(r) => r
                    .runtime
                    .block_on(r.bucket.put(path, PutPayload::from(bytes.to_vec())))?,
            }
        };
        self.meter.record(put);
        Ok(put)
    }

    /// Writes the finished local file `local` as content-addressed object `path`, unless it
    /// is there; `local` is moved into place or deleted.
    pub fn put_file(&self, path: &str, local: TempPath) -> Result<Put> {
        let put = {
            let _busy = self.meter.busy();
            match &self.backend {
                Backend::Folder(root) => match folder_len(root, path)? {
                    Some(len) => Put::Present(len),
                    None => {
                        let len = fs::metadata(&local)
                            .with_context(|| format!("reading {}", local.display()))?
                            .len();
                        rename_into(root, path, &local)?;
                        // Moved: nothing left to delete.
                        local.keep().ok();
                        Put::Written(len)
                    }
                },
                Backend::Bucket(r) => r.runtime.block_on(r.bucket.put_file(path, &local))?,
            }
        };
        self.meter.record(put);
        Ok(put)
    }
}

fn open_folder(spec: &str) -> Result<PathBuf> {
    let root = PathBuf::from(spec);
    for dir in ["channels", "manifests", "packs", "keys", ".tmp"] {
        let path = root.join(dir);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(root)
}

fn folder_len(root: &Path, path: &str) -> Result<Option<u64>> {
    let full = root.join(path);
    match fs::metadata(&full) {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", full.display())),
    }
}

/// Moves a finished local file into place as `path`, atomically (fsync, rename, fsync dir).
fn rename_into(root: &Path, path: &str, local: &Path) -> Result<()> {
    let full = root.join(path);
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

fn list_folder(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>> {
    let mut out = Vec::new();
    let mut pending = vec![root.join(prefix)];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let meta = entry.metadata()?;
            let path = entry.path();
            if meta.is_dir() {
                pending.push(path);
            } else if let Ok(rel) = path.strip_prefix(root)
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

/// Temp files are created 0600; published objects must be readable by the web server.
fn set_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting mode of {}", path.display()))
}

impl Remote {
    /// Opens bucket origin `spec` (`scheme://rest`) and lists its prefix once.
    fn open(spec: &str, scheme: &str, rest: &str) -> Result<Self> {
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            bail!("origin {spec:?} names no bucket");
        }
        fn built<S: ObjectStore>(
            store: object_store::Result<S>,
            service: &str,
            spec: &str,
        ) -> Result<Arc<dyn ObjectStore>> {
            let store = store.store_context(|| format!("configuring {service} for {spec}"))?;
            Ok(Arc::new(store))
        }
        let url = format!("{scheme}://{name}");
        let (store, credentials) = match scheme {
            "s3" => (
                built(
                    AmazonS3Builder::from_env().with_url(url).build(),
                    "S3",
                    spec,
                )?,
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)",
            ),
            "gs" => (
                built(
                    GoogleCloudStorageBuilder::from_env().with_url(url).build(),
                    "Google Cloud Storage",
                    spec,
                )?,
                "GOOGLE_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS",
            ),
            "az" => (
                built(
                    MicrosoftAzureBuilder::from_env().with_url(url).build(),
                    "Azure Blob Storage",
                    spec,
                )?,
                "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY",
            ),
            _ => bail!(
                "unsupported origin {spec:?}: use a folder path, file://, s3://, gs:// or az://"
            ),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("origin-io")
            .enable_all()
            .build()
            .context("starting the upload runtime")?;
        let scratch = tempfile::Builder::new()
            .prefix("relsync-publish-")
            .tempdir()
            .context("creating a local folder for packs")?;
        let bucket = Bucket {
            url: spec.to_owned(),
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            credentials,
            blocks: Mutex::default(),
        };
        runtime.block_on(bucket.probe())?;
        Ok(Self {
            bucket: Arc::new(bucket),
            runtime,
            scratch,
        })
    }
}

/// Context for `object_store` errors, whose messages repeat their causes: `what`, then the
/// innermost cause only.
trait StoreContext<T> {
    fn store_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> StoreContext<T> for std::result::Result<T, object_store::Error> {
    fn store_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| anyhow::anyhow!("{}: {}", what(), innermost(&e)))
    }
}

/// The message of the last error in `e`'s source chain.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// The attributes of object `path`.
fn attributes(path: &str) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, CONTENT_TYPE.into());
    let cache = if is_pointer(path) {
        CHANNEL_CACHE_CONTROL
    } else {
        IMMUTABLE_CACHE_CONTROL
    };
    a.insert(Attribute::CacheControl, cache.into());
    a
}

impl Bucket {
    fn key(&self, path: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(path)
        } else {
            Key::from(format!("{}/{path}", self.prefix))
        }
    }

    /// Lists the prefix, so a missing bucket or refused credentials show at once.
    async fn probe(&self) -> Result<()> {
        let prefix = (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()));
        let Err(e) = self.store.list_with_delimiter(prefix.as_ref()).await else {
            return Ok(());
        };
        let cause = innermost(&e);
        let status = |codes: &[&str]| codes.iter().any(|c| cause.contains(c));
        let what = if matches!(e, object_store::Error::NotFound { .. })
            || status(&["NoSuchBucket", "ContainerNotFound", " 404 "])
        {
            "the bucket does not exist (or these credentials cannot see it)".to_owned()
        } else if matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || status(&[" 401 ", " 403 "])
        {
            format!(
                "the store refused the credentials (from the environment: {})",
                self.credentials
            )
        } else {
            "cannot list it".to_owned()
        };
        bail!("origin {}: {what}: {cause}", self.url)
    }

    async fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let got = match self.store.get(&self.key(path)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => {
                return Err(e).store_context(|| format!("reading {path} from {}", self.url));
            }
        };
        let bytes = got
            .bytes()
            .await
            .store_context(|| format!("reading {path} from {}", self.url))?;
        Ok(Some(bytes.to_vec()))
    }

    /// Reads `len` bytes at `offset`; small reads of content-addressed objects go through
    /// cached blocks of [`BLOCK_BYTES`].
    async fn read_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset + len as u64;
        if is_pointer(path) || len as u64 >= BLOCK_BYTES / 2 {
            return Ok(self.get_range(path, offset..end).await?.to_vec());
        }
        let known = self.lock_blocks().lens.get(path).copied();
        let object_len = match known {
            Some(n) => n,
            None => {
                let n = self
                    .head(path)
                    .await?
                    .with_context(|| format!("reading {path} from {}: it is missing", self.url))?;
                self.lock_blocks().lens.insert(path.to_owned(), n);
                n
            }
        };
        if end > object_len {
            bail!(
                "reading {path} at {offset}..{end} from {}: it has {object_len} bytes",
                self.url
            );
        }
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while at < end {
            let index = at / BLOCK_BYTES;
            let start = index * BLOCK_BYTES;
            let block = self.block(path, index, object_len).await?;
            let to = (end - start).min(block.len() as u64);
            out.extend_from_slice(&block[(at - start) as usize..to as usize]);
            at = start + to;
        }
        Ok(out)
    }

    /// Block `index` of `path`, from the cache or the store.
    async fn block(&self, path: &str, index: u64, object_len: u64) -> Result<Bytes> {
        let key = (path.to_owned(), index);
        {
            let mut blocks = self.lock_blocks();
            if let Some(i) = blocks.recent.iter().position(|(k, _)| *k == key)
                && let Some(hit) = blocks.recent.remove(i)
            {
                let bytes = hit.1.clone();
                blocks.recent.push_back(hit);
                return Ok(bytes);
            }
        }
        let start = index * BLOCK_BYTES;
        let bytes = self
            .get_range(path, start..object_len.min(start + BLOCK_BYTES))
            .await?;
        let mut blocks = self.lock_blocks();
        if blocks.recent.len() >= CACHED_BLOCKS {
            blocks.recent.pop_front();
        }
        blocks.recent.push_back((key, bytes.clone()));
        Ok(bytes)
    }

    fn lock_blocks(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exactly the bytes of `range`.
    async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        let bytes = self
            .store
            .get_range(&self.key(path), range.clone())
            .await
            .store_context(|| format!("reading {path} at {range:?} from {}", self.url))?;
        if bytes.len() as u64 != range.end - range.start {
            bail!(
                "reading {path} at {range:?} from {}: got {} bytes",
                self.url,
                bytes.len()
            );
        }
        Ok(bytes)
    }

    async fn head(&self, path: &str) -> Result<Option<u64>> {
        match self.store.head(&self.key(path)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).store_context(|| format!("reading {path} in {}", self.url)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.trim_matches('/');
        let under = match (self.prefix.is_empty(), prefix.is_empty()) {
            (true, true) => None,
            (true, false) => Some(Key::from(prefix)),
            (false, true) => Some(Key::from(self.prefix.as_str())),
            (false, false) => Some(Key::from(format!("{}/{prefix}", self.prefix))),
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(under.as_ref())
            .try_collect()
            .await
            .store_context(|| format!("listing {prefix} in {}", self.url))?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let path = o.location.as_ref().strip_prefix(strip.as_str())?.to_owned();
                Some(ObjectMeta {
                    path,
                    len: o.size,
                    modified: SystemTime::from(o.last_modified),
                })
            })
            .collect())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&self.key(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).store_context(|| format!("deleting {path} from {}", self.url)),
        }
    }

    /// Writes `payload` as `path`: a channel pointer always, anything else only if absent.
    async fn put(&self, path: &str, payload: PutPayload) -> Result<Put> {
        if !is_pointer(path)
            && let Some(len) = self.head(path).await?
        {
            return Ok(Put::Present(len));
        }
        self.put_new(path, payload).await
    }

    /// One PUT; for a content-addressed object, only if absent (`If-None-Match: *`), so a
    /// concurrent publisher's copy is never replaced.
    async fn put_new(&self, path: &str, payload: PutPayload) -> Result<Put> {
        let len = payload.content_length() as u64;
        let opts = PutOptions {
            mode: if is_pointer(path) {
                PutMode::Overwrite
            } else {
                PutMode::Create
            },
            attributes: attributes(path),
            ..PutOptions::default()
        };
        match self.store.put_opts(&self.key(path), payload, opts).await {
            Ok(_) => Ok(Put::Written(len)),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Ok(Put::Present(self.head(path).await?.unwrap_or(len)))
            }
            Err(e) => Err(e).store_context(|| format!("writing {path} to {}", self.url)),
        }
    }

    /// Uploads local file `local` as content-addressed object `path` unless it is there: in
    /// one PUT, or a multipart upload if it is large.
    async fn put_file(&self, path: &str, local: &Path) -> Result<Put> {
        if let Some(len) = self.head(path).await? {
            return Ok(Put::Present(len));
        }
        let reading = || format!("reading {}", local.display());
        let len = tokio::fs::metadata(local)
            .await
            .with_context(reading)?
            .len();
        if len <= MULTIPART_THRESHOLD_BYTES {
            let bytes = tokio::fs::read(local).await.with_context(reading)?;
            return self.put_new(path, PutPayload::from(bytes)).await;
        }
        // A multipart upload cannot be conditional: a concurrent publisher's copy of the same
        // content-addressed object may be replaced, by the same bytes.
        let uploading = || format!("uploading {path} to {}", self.url);
        let upload = self
            .store
            .put_multipart_opts(
                &self.key(path),
                PutMultipartOptions {
                    attributes: attributes(path),
                    ..PutMultipartOptions::default()
                },
            )
            .await
            .store_context(uploading)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let sent = async {
            let mut file = tokio::fs::File::open(local).await.with_context(reading)?;
            loop {
                let mut part = Vec::with_capacity(PART_BYTES);
                (&mut file)
                    .take(PART_BYTES as u64)
                    .read_to_end(&mut part)
                    .await
                    .with_context(reading)?;
                if part.is_empty() {
                    return anyhow::Ok(());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .store_context(uploading)?;
                writer.put(part.into());
            }
        }
        .await;
        match sent {
            Ok(()) => {
                writer.finish().await.store_context(uploading)?;
                Ok(Put::Written(len))
            }
            Err(e) => {
                // Best effort: the error that matters is the one that stopped the upload.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

/// Sealed packs on their way to the origin. A folder takes each at once; a bucket uploads up
/// to the origin's `max_uploads` in the background while the caller keeps packing.
#[derive(Debug)]
pub struct Uploads<'a> {
    origin: &'a Origin,
    permits: Arc<Semaphore>,
    tasks: JoinSet<Result<Put>>,
    bytes_written: u64,
}

impl<'a> Uploads<'a> {
    pub fn new(origin: &'a Origin) -> Self {
        Self {
            origin,
            permits: Arc::new(Semaphore::new(origin.max_uploads)),
            tasks: JoinSet::new(),
            bytes_written: 0,
        }
    }

    /// Writes `local` as content-addressed object `path` unless it is there, now or in the
    /// background; waits while `max_uploads` are running. Fails if an earlier upload failed.
    pub fn put_file(&mut self, path: String, local: TempPath) -> Result<()> {
        let Backend::Bucket(remote) = &self.origin.backend else {
            let put = self.origin.put_file(&path, local)?;
            self.count(put);
            return Ok(());
        };
        self.reap()?;
        let permit = remote
            .runtime
            .block_on(Arc::clone(&self.permits).acquire_owned())
            .context("the upload queue closed")?;
        self.reap()?;
        let bucket = Arc::clone(&remote.bucket);
        let meter = Arc::clone(&self.origin.meter);
        self.tasks.spawn_on(
            async move {
                let put = {
                    let _busy = meter.busy();
                    bucket.put_file(&path, &local).await?
                };
                meter.record(put);
                drop((local, permit));
                Ok(put)
            },
            remote.runtime.handle(),
        );
        Ok(())
    }

    /// Waits for every upload; fails with the first error. Returns the bytes written.
    pub fn finish(mut self) -> Result<u64> {
        if let Backend::Bucket(remote) = &self.origin.backend {
            let mut first_error = None;
            let results = remote.runtime.block_on(async {
                let mut results = Vec::new();
                while let Some(r) = self.tasks.join_next().await {
                    results.push(r);
                }
                results
            });
            for r in results {
                match r.context("an upload task failed").and_then(|r| r) {
                    Ok(put) => self.count(put),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(self.bytes_written)
    }

    /// Counts finished uploads; fails on the first that failed.
    fn reap(&mut self) -> Result<()> {
        while let Some(r) = self.tasks.try_join_next() {
            let put = r.context("an upload task failed")??;
            self.count(put);
        }
        Ok(())
    }

    fn count(&mut self, put: Put) {
        if let Put::Written(n) = put {
            self.bytes_written += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_writes_objects_atomically_and_keys_once() {
        let tmp = tempfile::tempdir().unwrap();
        let origin = Origin::open(tmp.path().to_str().unwrap()).unwrap();
        assert_eq!(origin.put("manifests/ab", b"one").unwrap(), Put::Written(3));
        assert_eq!(origin.put("manifests/ab", b"one").unwrap(), Put::Written(3));
        assert_eq!(origin.put("channels/s", b"p1").unwrap(), Put::Written(2));
        assert_eq!(origin.put("channels/s", b"p22").unwrap(), Put::Written(3));
        assert_eq!(origin.read("channels/s").unwrap().unwrap(), b"p22");
        assert_eq!(origin.put("keys/root-1", b"r").unwrap(), Put::Written(1));
        assert_eq!(origin.put("keys/root-1", b"r").unwrap(), Put::Present(1));
        let err = origin.put("keys/root-1", b"other").unwrap_err();
        assert!(format!("{err:#}").contains("other content"), "{err:#}");
        assert_eq!(origin.read("keys/root-1").unwrap().unwrap(), b"r");
        let s = origin.stats();
        assert_eq!((s.objects_written, s.objects_present), (5, 1), "{s:?}");
        assert_eq!(s.bytes_written, 3 + 3 + 2 + 3 + 1);
        assert!(s.busy_seconds > 0.0);
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(tmp.path().join("manifests/ab"))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(
            fs::read_dir(origin.scratch()).unwrap().count(),
            0,
            "scratch files left behind"
        );
    }

    /// A finished local file in `origin`'s scratch folder, as a pack is before its upload.
    fn scratch_file(origin: &Origin, bytes: &[u8]) -> tempfile::TempPath {
        let mut f = tempfile::NamedTempFile::new_in(origin.scratch()).unwrap();
        f.write_all(bytes).unwrap();
        f.into_temp_path()
    }

    #[test]
    fn folder_uploads_move_new_packs_and_drop_present_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let origin = Origin::open(&format!("file://{}", tmp.path().display())).unwrap();
        let local = |bytes: &[u8]| scratch_file(&origin, bytes);
        let mut uploads = Uploads::new(&origin);
        uploads.put_file("packs/a".into(), local(b"aaaa")).unwrap();
        uploads.put_file("packs/a".into(), local(b"aaaa")).unwrap();
        uploads.put_file("packs/b".into(), local(b"bb")).unwrap();
        assert_eq!(uploads.finish().unwrap(), 6);
        assert_eq!(fs::read(tmp.path().join("packs/a")).unwrap(), b"aaaa");
        assert_eq!(
            fs::read_dir(origin.scratch()).unwrap().count(),
            0,
            "scratch files left behind"
        );
        let listed: Vec<_> = origin.list("packs/").unwrap();
        let paths: Vec<_> = listed.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(paths, ["packs/a", "packs/b"]);
    }

    /// An origin in an in-memory bucket, under prefix `rel`.
    fn memory_origin() -> Origin {
        let bucket = Bucket {
            url: "memory://test/rel".into(),
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: "rel".into(),
            credentials: "",
            blocks: Mutex::default(),
        };
        let remote = Remote {
            bucket: Arc::new(bucket),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        };
        Origin {
            backend: Backend::Bucket(Arc::new(remote)),
            meter: Arc::default(),
            max_uploads: 2,
        }
    }

    /// The attributes stored with `path`.
    fn stored_attributes(origin: &Origin, path: &str) -> Attributes {
        let Backend::Bucket(r) = &origin.backend else {
            panic!("not a bucket");
        };
        r.runtime
            .block_on(r.bucket.store.get(&r.bucket.key(path)))
            .unwrap()
            .attributes
    }

    #[test]
    fn a_bucket_writes_content_addressed_objects_once_and_pointers_always() {
        let origin = memory_origin();
        assert_eq!(origin.put("manifests/m", b"one").unwrap(), Put::Written(3));
        assert_eq!(origin.put("manifests/m", b"two!").unwrap(), Put::Present(3));
        assert_eq!(origin.read("manifests/m").unwrap().unwrap(), b"one");
        assert_eq!(origin.put("channels/s", b"p1").unwrap(), Put::Written(2));
        assert_eq!(origin.put("channels/s", b"p22").unwrap(), Put::Written(3));
        assert_eq!(origin.read("channels/s").unwrap().unwrap(), b"p22");
        assert!(origin.read("manifests/none").unwrap().is_none());
        assert_eq!(
            stored_attributes(&origin, "manifests/m"),
            attributes("manifests/m")
        );
        assert_eq!(
            stored_attributes(&origin, "channels/s"),
            attributes("channels/s")
        );
        let s = origin.stats();
        assert_eq!((s.objects_written, s.objects_present), (3, 1), "{s:?}");
        assert_eq!(s.bytes_written, 3 + 2 + 3);
        let listed: Vec<_> = origin.list("").unwrap();
        let paths: Vec<_> = listed.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(paths, ["channels/s", "manifests/m"]);
        origin.delete("manifests/m").unwrap();
        origin.delete("manifests/m").unwrap();
        assert!(!origin.try_exists("manifests/m").unwrap());
    }

    #[test]
    fn a_bucket_uploads_packs_in_the_background_and_large_ones_in_parts() {
        let origin = memory_origin();
        let large: Vec<u8> = (0..(MULTIPART_THRESHOLD_BYTES + PART_BYTES as u64 + 5))
            .map(|i| (i % 251) as u8)
            .collect();
        let local = |bytes: &[u8]| scratch_file(&origin, bytes);
        let mut uploads = Uploads::new(&origin);
        uploads.put_file("packs/a".into(), local(b"aaaa")).unwrap();
        uploads.put_file("packs/big".into(), local(&large)).unwrap();
        uploads.put_file("packs/c".into(), local(b"cc")).unwrap();
        assert_eq!(uploads.finish().unwrap(), 4 + large.len() as u64 + 2);
        let mut uploads = Uploads::new(&origin);
        uploads.put_file("packs/a".into(), local(b"aaaa")).unwrap();
        assert_eq!(uploads.finish().unwrap(), 0);
        assert_eq!(origin.read("packs/big").unwrap().unwrap(), large);
        assert_eq!(
            stored_attributes(&origin, "packs/big"),
            attributes("packs/big")
        );
        let s = origin.stats();
        assert_eq!((s.objects_written, s.objects_present), (3, 1), "{s:?}");
        assert_eq!(
            fs::read_dir(origin.scratch()).unwrap().count(),
            0,
            "local packs left behind"
        );
    }

    #[test]
    fn small_reads_of_a_bucket_cross_blocks_and_stop_at_its_end() {
        let origin = memory_origin();
        let data: Vec<u8> = (0..(2 * BLOCK_BYTES + 1000))
            .map(|i| (i % 253) as u8)
            .collect();
        origin.put("packs/p", &data).unwrap();
        let b = BLOCK_BYTES as usize;
        for (offset, len) in [
            (0, 10),
            (b - 3, 7),
            (b, 1),
            (2 * b - 100, 1100),
            (data.len() - 5, 5),
            (1, b),
        ] {
            let got = origin.read_range("packs/p", offset as u64, len).unwrap();
            assert!(got == data[offset..offset + len], "{offset}+{len}");
        }
        let err = origin
            .read_range("packs/p", data.len() as u64 - 2, 3)
            .unwrap_err();
        assert!(format!("{err:#}").contains("bytes"), "{err:#}");
        assert!(origin.read_range("packs/none", 0, 1).is_err());
    }

    #[test]
    fn unknown_schemes_and_bucketless_urls_are_refused() {
        let err = Origin::open("ftp://host/x").unwrap_err();
        assert!(format!("{err:#}").contains("unsupported origin"), "{err:#}");
        let err = Origin::open("s3:///prefix").unwrap_err();
        assert!(format!("{err:#}").contains("names no bucket"), "{err:#}");
    }

    #[test]
    fn objects_carry_content_type_and_cache_control() {
        let pack = attributes("packs/ab");
        assert_eq!(
            pack.get(&Attribute::CacheControl).map(|v| v.as_ref()),
            Some(IMMUTABLE_CACHE_CONTROL)
        );
        assert_eq!(
            pack.get(&Attribute::ContentType).map(|v| v.as_ref()),
            Some(CONTENT_TYPE)
        );
        let pointer = attributes("channels/stable");
        assert_eq!(
            pointer.get(&Attribute::CacheControl).map(|v| v.as_ref()),
            Some(CHANNEL_CACHE_CONTROL)
        );
    }
}
