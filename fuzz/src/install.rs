//! The `plan` target's two install directories, made once per process: one with release
//! 1.0.0 installed (files on disk, `current` pointing at them, chunk locations in the store)
//! and one empty. Planning only reads them, so an input costs no file-system writes.
//!
//! They live in `$TMPDIR/relsync-fuzz-plan-<pid>`. libFuzzer exits without running
//! destructors, so each process removes the directories of processes that are gone.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use relsync_engine::envelope::{self, Kind};
use relsync_engine::manifest::EntryKind;
use relsync_engine::{InstallLayout, Release, Store};

use crate::model::{Pool, PoolBase};
use crate::sample;

const PREFIX: &str = "relsync-fuzz-plan-";

/// An install directory, its store, and what it has installed.
#[derive(Debug)]
pub struct Install {
    /// Its paths.
    pub layout: InstallLayout,
    /// Its open store.
    pub store: Store,
    /// The installed release.
    pub release: Option<Release>,
}

/// Both installs and the pool of real chunks, files and bases that model manifests draw on.
#[derive(Debug)]
pub struct Fixture {
    /// 1.0.0 installed.
    pub installed: Install,
    /// Nothing installed.
    pub fresh: Install,
    /// 1.0.0's chunks and files, and 1.0.0 as a delta base.
    pub pool: Pool,
}

/// The fixture, made on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| make().expect("making the plan fixture"))
}

/// Removes the fixture directories of processes that no longer run.
fn remove_stale(tmp: &Path) {
    let Ok(dir) = fs::read_dir(tmp) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn make() -> Result<Fixture, Box<dyn std::error::Error>> {
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    let root: PathBuf = tmp.join(format!("{PREFIX}{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);

    let v1 = sample::v1();
    let body = postcard::to_stdvec(&v1.manifest).expect("encoding 1.0.0");
    let manifest =
        relsync_engine::dangerous::trusted_manifest(envelope::seal(Kind::Manifest, &body, &[])?)?;

    // 1.0.0 installed, as the apply stage leaves it.
    let layout = InstallLayout::new(root.join("installed"));
    let dir = format!("1.0.0-{}", manifest.id().short());
    let tree = layout.release(&dir);
    for entry in &manifest.entries {
        let path = entry.path.under(&tree);
        match &entry.kind {
            EntryKind::Dir => fs::create_dir_all(&path)?,
            EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &path)?,
            EntryKind::File(file) => {
                fs::write(&path, v1.file(entry.path.as_str()))?;
                let mode = if file.executable { 0o755 } else { 0o644 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            }
        }
    }
    fs::create_dir_all(layout.state())?;
    std::os::unix::fs::symlink(format!("releases/{dir}"), layout.current())?;
    let store = Store::open(&layout.db())?;
    store.add_release(&dir, &manifest)?;
    store.set_installed(&dir, None)?;

    let fresh_layout = InstallLayout::new(root.join("fresh"));
    fs::create_dir_all(fresh_layout.state())?;
    let fresh_store = Store::open(&fresh_layout.db())?;

    let pool = Pool {
        chunks: manifest.chunks.iter().map(|c| (c.id, c.len)).collect(),
        files: manifest.files().map(|(_, f)| f.hash).collect(),
        bases: vec![PoolBase {
            id: manifest.id(),
            version: manifest.version.clone(),
            files: manifest
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| match &e.kind {
                    EntryKind::File(f) => Some((i as u32, f.size)),
                    _ => None,
                })
                .collect(),
        }],
    };
    Ok(Fixture {
        installed: Install {
            layout,
            store,
            release: Some(Release { dir, manifest }),
        },
        fresh: Install {
            layout: fresh_layout,
            store: fresh_store,
            release: None,
        },
        pool,
    })
}
