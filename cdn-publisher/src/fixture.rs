//! Unit-test support: a folder origin that releases are pushed to in-process.

use anyhow::Result;
use relsync_chunker::ChunkParams;
use relsync_format::manifest::Pointer;
use relsync_format::paths::channel_path;
use relsync_format::root::RoleKeys;
use relsync_format::{ManifestId, SecretKey};

use crate::build::DeltaParams;
use crate::commands::push::{PushOptions, Signers, push};
use crate::lifecycle::Change;
use crate::origin::Origin;
use crate::publish::put_pointer;

/// The key that signs every release and pointer of a [`Fixture`].
pub fn key() -> SecretKey {
    SecretKey::from_file_text(&format!("relsync-ed25519-secret:{}", "11".repeat(32))).unwrap()
}

/// A temp dir holding an origin folder and the release trees pushed to it.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub origin: Origin,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let origin = Origin::open(tmp.path().join("origin").to_str().unwrap()).unwrap();
        Self { tmp, origin }
    }

    /// Options to push `version` of a one-file tree on channel `stable`.
    pub fn opts(&self, version: &str) -> PushOptions {
        self.opts_on("stable", version)
    }

    /// Options to push `version` of a one-file tree on `channel`; add files to its `dir` to
    /// vary it.
    pub fn opts_on(&self, channel: &str, version: &str) -> PushOptions {
        let dir = self.tmp.path().join(format!("src-{channel}-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("app"),
            format!("the {channel} app, release {version}\n"),
        )
        .unwrap();
        PushOptions {
            dir,
            version: version.parse().unwrap(),
            channel: channel.into(),
            product: "app".into(),
            platform: None,
            force: false,
            zstd_level: 3,
            chunking: ChunkParams::default(),
            expires_days: 30,
            max_pack_bytes: 64 << 20,
            delta_from: 1,
            delta: DeltaParams::default(),
            manifest_deltas: 4,
            solid_run_bytes: 0,
            pointer_days: 7,
            unsigned_out: None,
            critical: false,
            notes: String::new(),
            rollout_percent: 100,
            allow_empty: false,
            reuse_frames: true,
        }
    }

    pub fn push_with(&self, opts: &PushOptions) -> Result<ManifestId> {
        let signers = Signers {
            release: vec![key()],
            channel: vec![key()],
        };
        let summary = push(opts, &signers, &self.origin, &|_, _| {})?;
        Ok(summary.manifest.parse()?)
    }

    /// Pushes `version` on channel `stable`.
    pub fn push(&self, version: &str) -> ManifestId {
        self.push_with(&self.opts(version)).unwrap()
    }

    /// Pushes `version` on `channel`.
    pub fn push_on(&self, channel: &str, version: &str) -> ManifestId {
        self.push_with(&self.opts_on(channel, version)).unwrap()
    }

    /// Signs and publishes a change as `main` does (its rollback directive too); returns the
    /// pointer as clients see it.
    pub fn publish(&self, change: &Change) -> Pointer {
        let mut pointer = change.pointer.clone();
        if let Some(directive) = &change.directive {
            pointer.rollback = Some(directive.seal(&[&key()]).unwrap());
        }
        let sealed = pointer.seal(&[&key()]).unwrap();
        put_pointer(&self.origin, &sealed, change.moved_from.is_some()).unwrap();
        self.pointer_of(&change.pointer.channel)
    }

    /// The pointer of channel `stable`, opened with its signature checked.
    pub fn pointer(&self) -> Pointer {
        self.pointer_of("stable")
    }

    /// The origin's pointer of `channel`, opened with its signature checked.
    pub fn pointer_of(&self, channel: &str) -> Pointer {
        let bytes = self.origin.read(&channel_path(channel)).unwrap().unwrap();
        Pointer::open(&bytes, &RoleKeys::single(key().public())).unwrap()
    }
}
