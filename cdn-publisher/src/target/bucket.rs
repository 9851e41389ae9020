//! A bucket of an object store (S3 or S3-compatible, Google Cloud Storage, Azure Blob) behind
//! a CDN, through `object_store`.
//!
//! Content-addressed objects (`packs/`, `manifests/`, `keys/`) are written only if absent (a
//! HEAD, then a PUT with `If-None-Match: *`), so a publish is idempotent and resumable and
//! concurrent publishers never clobber each other; channel pointers (`channels/`) are
//! overwritten. Large packs go up as multipart uploads. Every object carries Content-Type and
//! Cache-Control ([`super::cache_control`]). Retries and timeouts are `object_store`'s.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

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
use tempfile::TempPath;
use tokio::io::AsyncReadExt;
use tokio::runtime::Runtime;

use super::{CONTENT_TYPE, ObjectMeta, Put, Target, cache_control, is_pointer};

/// Files larger than this go up as multipart uploads.
const MULTIPART_THRESHOLD_BYTES: u64 = 16 << 20;
/// Part size of multipart uploads (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// An object store, the key prefix the origin lives under, and the runtime that drives it from
/// sync code.
#[derive(Debug)]
pub struct Bucket {
    /// The origin as given, e.g. `s3://bucket/prefix`, for messages.
    url: String,
    store: Arc<dyn ObjectStore>,
    /// Without slashes at either end; empty for the bucket's root.
    prefix: String,
    /// The environment variables that hold the credentials, for messages.
    credentials: &'static str,
    runtime: Runtime,
}

impl Bucket {
    /// Opens bucket origin `spec` (`scheme://rest`) and lists its prefix once, so a missing
    /// bucket or refused credentials fail at once.
    pub fn open(spec: &str, scheme: &str, rest: &str) -> Result<Self> {
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
            _ => bail!("unsupported origin {spec:?}: use s3://, gs:// or az://"),
        };
        let bucket = Self::new(spec, store, prefix, credentials)?;
        bucket.runtime.block_on(bucket.probe())?;
        Ok(bucket)
    }

    /// A bucket origin in `store` under `prefix`, with its runtime.
    fn new(
        url: &str,
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        credentials: &'static str,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("origin-io")
            .enable_all()
            .build()
            .context("starting the upload runtime")?;
        Ok(Self {
            url: url.to_owned(),
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            credentials,
            runtime,
        })
    }

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

    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
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

    async fn list_under(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
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

    async fn remove(&self, path: &str) -> Result<()> {
        match self.store.delete(&self.key(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).store_context(|| format!("deleting {path} from {}", self.url)),
        }
    }

    /// Writes `payload` as `path`: a channel pointer always, anything else only if absent.
    async fn put_payload(&self, path: &str, payload: PutPayload) -> Result<Put> {
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
    async fn upload(&self, path: &str, local: &Path) -> Result<Put> {
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
        self.upload_parts(path, local).await?;
        Ok(Put::Written(len))
    }

    /// Uploads local file `local` as `path` in parts of [`PART_BYTES`]. A multipart upload
    /// cannot be conditional: a concurrent publisher's copy of the same content-addressed
    /// object may be replaced, by the same bytes.
    async fn upload_parts(&self, path: &str, local: &Path) -> Result<()> {
        let reading = || format!("reading {}", local.display());
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
                Ok(())
            }
            Err(e) => {
                // Best effort: the error that matters is the one that stopped the upload.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

impl Target for Bucket {
    fn staging(&self) -> Option<&Path> {
        None
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.runtime.block_on(self.get(path))
    }

    fn read_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        self.runtime.block_on(self.get_range(path, range))
    }

    fn len_of(&self, path: &str) -> Result<Option<u64>> {
        self.runtime.block_on(self.head(path))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.runtime.block_on(self.list_under(prefix))
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.runtime.block_on(self.remove(path))
    }

    fn put(&self, path: &str, bytes: &[u8]) -> Result<Put> {
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime.block_on(self.put_payload(path, payload))
    }

    fn put_file(&self, path: &str, local: TempPath) -> Result<Put> {
        // `local` is deleted when it drops, uploaded or not.
        self.runtime.block_on(self.upload(path, &local))
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
    a.insert(Attribute::CacheControl, cache_control(path).into());
    a
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;
    use crate::target::{CHANNEL_CACHE_CONTROL, IMMUTABLE_CACHE_CONTROL};

    /// A bucket in memory, under prefix `rel`.
    pub(crate) fn memory_bucket() -> Bucket {
        let store = Arc::new(object_store::memory::InMemory::new());
        Bucket::new("memory://test/rel", store, "rel", "").unwrap()
    }

    /// The attributes stored with `path`.
    fn stored_attributes(bucket: &Bucket, path: &str) -> Attributes {
        bucket
            .runtime
            .block_on(bucket.store.get(&bucket.key(path)))
            .unwrap()
            .attributes
    }

    fn local_file(dir: &Path, bytes: &[u8]) -> TempPath {
        let mut f = tempfile::NamedTempFile::new_in(dir).unwrap();
        f.write_all(bytes).unwrap();
        f.into_temp_path()
    }

    #[test]
    fn content_addressed_objects_are_written_once_and_pointers_always() {
        let bucket = memory_bucket();
        assert_eq!(bucket.put("manifests/m", b"one").unwrap(), Put::Written(3));
        assert_eq!(bucket.put("manifests/m", b"two!").unwrap(), Put::Present(3));
        assert_eq!(bucket.read("manifests/m").unwrap().unwrap(), b"one");
        assert_eq!(bucket.put("channels/s", b"p1").unwrap(), Put::Written(2));
        assert_eq!(bucket.put("channels/s", b"p22").unwrap(), Put::Written(3));
        assert_eq!(bucket.read("channels/s").unwrap().unwrap(), b"p22");
        assert!(bucket.read("manifests/none").unwrap().is_none());
        // A conditional PUT that loses a race counts the object as present.
        let raced = bucket.runtime.block_on(async {
            bucket
                .put_new("manifests/m", PutPayload::from(b"late".to_vec()))
                .await
        });
        assert_eq!(raced.unwrap(), Put::Present(3));
        for path in ["manifests/m", "channels/s"] {
            assert_eq!(stored_attributes(&bucket, path), attributes(path), "{path}");
        }
        let mut listed: Vec<_> = bucket
            .list("")
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        listed.sort();
        assert_eq!(listed, ["channels/s", "manifests/m"]);
        bucket.delete("manifests/m").unwrap();
        bucket.delete("manifests/m").unwrap();
        assert_eq!(bucket.len_of("manifests/m").unwrap(), None);
    }

    #[test]
    fn large_files_go_up_in_parts_with_their_attributes() {
        let bucket = memory_bucket();
        let dir = tempfile::tempdir().unwrap();
        let large: Vec<u8> = (0..(MULTIPART_THRESHOLD_BYTES + PART_BYTES as u64 + 5))
            .map(|i| (i % 251) as u8)
            .collect();
        let local = local_file(dir.path(), &large);
        let put = bucket.put_file("packs/big", local).unwrap();
        assert_eq!(put, Put::Written(large.len() as u64));
        assert_eq!(bucket.read("packs/big").unwrap().unwrap(), large);
        assert_eq!(
            stored_attributes(&bucket, "packs/big"),
            attributes("packs/big")
        );
        let again = local_file(dir.path(), b"small");
        let put = bucket.put_file("packs/big", again).unwrap();
        assert_eq!(put, Put::Present(large.len() as u64));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "local files left behind"
        );
    }

    #[test]
    fn range_reads_are_exact() {
        let bucket = memory_bucket();
        bucket.put("packs/p", b"0123456789").unwrap();
        assert_eq!(&bucket.read_range("packs/p", 2..5).unwrap()[..], b"234");
        assert!(bucket.read_range("packs/p", 8..11).is_err());
        assert!(bucket.read_range("packs/none", 0..1).is_err());
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
