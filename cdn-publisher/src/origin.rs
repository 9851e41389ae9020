//! Where releases are published: [`Origin`], what the rest of the publisher reads and writes
//! through, over one [`Target`] (a folder served by any HTTP server, or a bucket of an object
//! store behind a CDN; see [`crate::target`]).
//!
//! What every target shares lives here: write metering ([`WriteStats`]), `keys/` documents
//! written once, the scratch folder packs are built in, background uploads
//! ([`uploads::Uploads`]), and cached small reads of remote packs ([`blocks::Blocks`]).

mod blocks;
mod uploads;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use relsync_format::ManifestId;
use relsync_format::manifest::decompress_envelope;
use relsync_format::paths::manifest_path;
use tempfile::{TempDir, TempPath};

use self::blocks::Blocks;
pub use self::uploads::Uploads;
use crate::target::{self, Target, is_pointer};
pub use crate::target::{ObjectMeta, Put};

/// Pack uploads in flight at once by default.
pub const DEFAULT_UPLOADS: usize = 8;

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
    fn lock(&self) -> MutexGuard<'_, MeterState> {
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

/// Runs `write`, counted by `meter`.
fn metered(meter: &Arc<Meter>, write: impl FnOnce() -> Result<Put>) -> Result<Put> {
    let put = {
        let _busy = meter.busy();
        write()?
    };
    meter.record(put);
    Ok(put)
}

/// Where packs are built before they go to the origin.
#[derive(Debug)]
enum Scratch {
    /// The target's staging folder, on its own file system (moves are atomic).
    Staging(PathBuf),
    /// A local temp dir, deleted with the origin.
    Local(TempDir),
}

/// An origin: a [`Target`] and what every target shares.
#[derive(Debug)]
pub struct Origin {
    target: Arc<dyn Target>,
    meter: Arc<Meter>,
    max_uploads: usize,
    scratch: Scratch,
    /// For a remote target.
    blocks: Option<Blocks>,
}

impl Origin {
    /// Opens the origin `spec`: a folder (a path or `file://` URL, created if missing), or a
    /// bucket `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX` or `az://CONTAINER/PREFIX` configured
    /// from the standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`). A bucket is
    /// listed once here, so a missing bucket or refused credentials fail at once.
    pub fn open(spec: &str) -> Result<Self> {
        Self::new(spec, target::open(spec)?)
    }

    /// The origin `spec` (as given, for messages) stored in `target`.
    fn new(spec: &str, target: Arc<dyn Target>) -> Result<Self> {
        let scratch = match target.staging() {
            Some(dir) => Scratch::Staging(dir.to_path_buf()),
            None => Scratch::Local(
                tempfile::Builder::new()
                    .prefix("relsync-publish-")
                    .tempdir()
                    .context("creating a local folder for packs")?,
            ),
        };
        Ok(Self {
            blocks: target.is_remote().then(|| Blocks::new(spec)),
            target,
            meter: Arc::default(),
            max_uploads: DEFAULT_UPLOADS,
            scratch,
        })
    }

    /// Uploads up to `n` packs to a remote target at once (default [`DEFAULT_UPLOADS`]); a
    /// local one takes them one by one.
    pub fn with_max_uploads(mut self, n: usize) -> Self {
        self.max_uploads = n.max(1);
        self
    }

    /// A folder for temporary files: on the origin's file system for a folder (so moves are
    /// atomic), a local temp dir for a bucket.
    pub fn scratch(&self) -> &Path {
        match &self.scratch {
            Scratch::Staging(dir) => dir,
            Scratch::Local(dir) => dir.path(),
        }
    }

    /// What every write so far did.
    pub fn stats(&self) -> WriteStats {
        self.meter.stats()
    }

    /// Reads an object, if it exists.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.target.read(path)
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

    /// Reads `len` bytes at `offset` of an object; small reads of a remote target's
    /// content-addressed objects go through cached blocks.
    pub fn read_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if let Some(blocks) = &self.blocks
            && !is_pointer(path)
            && Blocks::suits(len)
        {
            return blocks.read(&*self.target, path, offset, len);
        }
        let range = offset..offset + len as u64;
        Ok(Vec::from(self.target.read_range(path, range)?))
    }

    /// An object's length, if it exists.
    pub fn len_of(&self, path: &str) -> Result<Option<u64>> {
        self.target.len_of(path)
    }

    /// Every object under folder `prefix` (such as `packs/`), sorted by path.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = self.target.list(prefix)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Deletes an object; deleting one that is gone is not an error.
    pub fn delete(&self, path: &str) -> Result<()> {
        self.target.delete(path)
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
        metered(&self.meter, || self.target.put(path, bytes))
    }

    /// Writes the finished local file `local` (in [`Origin::scratch`]) as content-addressed
    /// object `path`, unless it is there; `local` is moved into place or deleted.
    pub fn put_file(&self, path: &str, local: TempPath) -> Result<Put> {
        metered(&self.meter, || self.target.put_file(path, local))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;
    use std::io::Write;
    use std::ops::Range;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_folder_writes_objects_atomically_and_keys_once() {
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
        assert_eq!(origin.scratch(), tmp.path().join(".tmp"));
        assert_eq!(
            fs::read_dir(origin.scratch()).unwrap().count(),
            0,
            "scratch files left behind"
        );
    }

    /// A finished local file in `origin`'s scratch folder, as a pack is before its upload.
    fn scratch_file(origin: &Origin, bytes: &[u8]) -> TempPath {
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

    /// An origin in an in-memory bucket.
    fn memory_origin() -> Origin {
        Origin::new("memory://test/rel", target::memory_bucket())
            .unwrap()
            .with_max_uploads(2)
    }

    #[test]
    fn a_bucket_writes_content_addressed_objects_once_and_lists_them_sorted() {
        let origin = memory_origin();
        assert_eq!(origin.put("manifests/m", b"one").unwrap(), Put::Written(3));
        assert_eq!(origin.put("manifests/m", b"two!").unwrap(), Put::Present(3));
        assert_eq!(origin.put("channels/s", b"p1").unwrap(), Put::Written(2));
        assert_eq!(origin.put("channels/s", b"p22").unwrap(), Put::Written(3));
        let s = origin.stats();
        assert_eq!((s.objects_written, s.objects_present), (3, 1), "{s:?}");
        assert_eq!(s.bytes_written, 3 + 2 + 3);
        let listed: Vec<_> = origin.list("").unwrap();
        let paths: Vec<_> = listed.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(paths, ["channels/s", "manifests/m"]);
        origin.delete("manifests/m").unwrap();
        assert!(!origin.try_exists("manifests/m").unwrap());
    }

    #[test]
    fn a_bucket_uploads_packs_in_the_background() {
        let origin = memory_origin();
        let local = |bytes: &[u8]| scratch_file(&origin, bytes);
        let mut uploads = Uploads::new(&origin);
        for (name, bytes) in [
            ("a", &b"aaaa"[..]),
            ("b", b"bbb"),
            ("c", b"cc"),
            ("d", b"d"),
        ] {
            uploads
                .put_file(format!("packs/{name}"), local(bytes))
                .unwrap();
        }
        assert_eq!(uploads.finish().unwrap(), 4 + 3 + 2 + 1);
        let mut uploads = Uploads::new(&origin);
        uploads.put_file("packs/a".into(), local(b"aaaa")).unwrap();
        assert_eq!(uploads.finish().unwrap(), 0);
        assert_eq!(origin.read("packs/c").unwrap().unwrap(), b"cc");
        let s = origin.stats();
        assert_eq!((s.objects_written, s.objects_present), (4, 1), "{s:?}");
        assert_eq!(
            fs::read_dir(origin.scratch()).unwrap().count(),
            0,
            "local packs left behind"
        );
    }

    #[test]
    fn small_reads_of_a_bucket_cross_blocks_and_stop_at_its_end() {
        let origin = memory_origin();
        let data: Vec<u8> = (0..(2 * blocks::BLOCK_BYTES + 1000))
            .map(|i| (i % 253) as u8)
            .collect();
        origin.put("packs/p", &data).unwrap();
        let b = blocks::BLOCK_BYTES as usize;
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

    /// A remote target in memory that counts range reads and uploads in flight, and fails
    /// uploads of paths that contain `fail`.
    #[derive(Debug, Default)]
    struct Counting {
        objects: Mutex<HashMap<String, Vec<u8>>>,
        range_reads: AtomicUsize,
        uploading: AtomicUsize,
        most_uploading: AtomicUsize,
    }

    impl Target for Counting {
        fn staging(&self) -> Option<&Path> {
            None
        }
        fn is_remote(&self) -> bool {
            true
        }
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.objects.lock().unwrap().get(path).cloned())
        }
        fn read_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
            self.range_reads.fetch_add(1, Ordering::SeqCst);
            let objects = self.objects.lock().unwrap();
            let bytes = objects.get(path).context("missing")?;
            let got = bytes.get(range.start as usize..range.end as usize);
            Ok(Bytes::copy_from_slice(got.context("short")?))
        }
        fn len_of(&self, path: &str) -> Result<Option<u64>> {
            Ok(self.read(path)?.map(|b| b.len() as u64))
        }
        fn list(&self, _: &str) -> Result<Vec<ObjectMeta>> {
            Ok(Vec::new())
        }
        fn delete(&self, path: &str) -> Result<()> {
            self.objects.lock().unwrap().remove(path);
            Ok(())
        }
        fn put(&self, path: &str, bytes: &[u8]) -> Result<Put> {
            let mut objects = self.objects.lock().unwrap();
            objects.insert(path.to_owned(), bytes.to_vec());
            Ok(Put::Written(bytes.len() as u64))
        }
        fn put_file(&self, path: &str, local: TempPath) -> Result<Put> {
            let now = self.uploading.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_uploading.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            self.uploading.fetch_sub(1, Ordering::SeqCst);
            if path.contains("fail") {
                bail!("refused {path}");
            }
            self.put(path, &fs::read(&local)?)
        }
    }

    #[test]
    fn background_uploads_stay_within_the_limit_and_report_the_first_failure() {
        let counting = Arc::new(Counting::default());
        let origin = Origin::new("counting://", counting.clone())
            .unwrap()
            .with_max_uploads(3);
        let mut uploads = Uploads::new(&origin);
        for i in 0..10 {
            uploads
                .put_file(format!("packs/{i}"), scratch_file(&origin, b"pack"))
                .unwrap();
        }
        assert_eq!(uploads.finish().unwrap(), 40);
        let most = counting.most_uploading.load(Ordering::SeqCst);
        assert!((2..=3).contains(&most), "{most} uploads at once");

        let mut uploads = Uploads::new(&origin);
        uploads
            .put_file("packs/fail".into(), scratch_file(&origin, b"x"))
            .unwrap();
        uploads
            .put_file("packs/ok".into(), scratch_file(&origin, b"y"))
            .unwrap();
        let err = uploads.finish().unwrap_err();
        assert!(format!("{err:#}").contains("refused packs/fail"), "{err:#}");
        assert!(
            origin.try_exists("packs/ok").unwrap(),
            "the others still finish"
        );
    }

    #[test]
    fn small_reads_of_a_remote_pack_cost_a_request_per_block_and_pointers_none() {
        let counting = Arc::new(Counting::default());
        let origin = Origin::new("counting://", counting.clone()).unwrap();
        origin.put("packs/p", &[7u8; 1000]).unwrap();
        for offset in 0..100 {
            assert_eq!(
                origin.read_range("packs/p", offset * 10, 10).unwrap(),
                [7; 10]
            );
        }
        assert_eq!(counting.range_reads.load(Ordering::SeqCst), 1);
        origin.put("channels/s", b"pointer").unwrap();
        origin.read_range("channels/s", 0, 3).unwrap();
        origin.read_range("channels/s", 3, 3).unwrap();
        assert_eq!(counting.range_reads.load(Ordering::SeqCst), 3);
    }
}
