//! What a case compares before and after the hostile update: the install ([`InstallSnapshot`],
//! with [`strays`] saying what a refused update may leave in it) and the origin
//! ([`origin_digest`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use relsync_tests::{Entry, current, current_link, tree_digest};

/// A digest of an origin folder (path -> kind and BLAKE3), leaving out `skip` (files a case
/// wrote, which may be GiB-sized sparse files).
pub(super) fn origin_digest(root: &Path, skip: &BTreeSet<String>) -> BTreeMap<String, String> {
    fn walk(dir: &Path, rel: &str, skip: &BTreeSet<String>, out: &mut BTreeMap<String, String>) {
        let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for item in rd {
            let item = item.expect("dir entry");
            let name = item.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if skip.contains(&rel) {
                continue;
            }
            let path = item.path();
            let ft = fs::symlink_metadata(&path).expect("lstat").file_type();
            let value = if ft.is_dir() {
                walk(&path, &rel, skip, out);
                "dir".to_owned()
            } else if ft.is_file() {
                let bytes = fs::read(&path).expect("read");
                format!("file {}", blake3::hash(&bytes).to_hex())
            } else {
                format!("other {ft:?}")
            };
            out.insert(rel, value);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", skip, &mut out);
    out
}

pub(super) fn digest_diff(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", a.get(k), b.get(k)))
        .collect()
}

/// An install dir as a case finds it.
pub(super) struct InstallSnapshot {
    pub(super) link: Option<PathBuf>,
    /// The tree `current` resolves to.
    pub(super) release: Option<BTreeMap<String, Entry>>,
    /// Everything in the install dir, `current` as a symlink.
    pub(super) listing: BTreeMap<String, Entry>,
}

impl InstallSnapshot {
    pub(super) fn take(dir: &Path) -> Self {
        let listing = if dir.exists() {
            tree_digest(dir)
        } else {
            BTreeMap::new()
        };
        let release = current(dir).is_dir().then(|| tree_digest(&current(dir)));
        Self {
            link: current_link(dir),
            release,
            listing,
        }
    }
}

fn is_chunk_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a refused update left in the install dir that it must not have: one line per stray
/// or changed entry; empty when clean.
///
/// Allowed, and nothing else:
/// - `.relsync/state.redb` may change content: the trusted state (versions and times seen, a
///   newer root) and the fetch journal live there; so may `.relsync/trusted`, the copy of the
///   trusted state kept outside the database (it may also appear);
/// - `.relsync/chunks/` may appear, holding only *verified* fetched chunks, kept so a retry
///   does not download them again: each a file named by its chunk id whose BLAKE3 is that id
///   (chunks are stored raw);
/// - `.relsync/audit.log` and `.relsync/audit.head` may change or appear: the refusal is
///   recorded there;
/// - `.relsync/lock` may change content: its holder writes its pid there;
/// - on a first install, `.relsync/` itself may appear with `state.redb`, `lock` and
///   `install-id`.
///
/// So `current`, every release dir and `.relsync/install-id` must be exactly as before, and there
/// must be no new release dir, no `.relsync/staging/`, no `*.part` or `.current.tmp` file, and
/// no unverified chunk.
pub(super) fn strays(
    before: &BTreeMap<String, Entry>,
    after: &BTreeMap<String, Entry>,
    fresh: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, entry) in after {
        if before.get(path) == Some(entry) {
            continue;
        }
        let allowed = match (path.as_str(), entry) {
            (
                ".relsync/state.redb"
                | ".relsync/trusted"
                | ".relsync/lock"
                | ".relsync/audit.log"
                | ".relsync/audit.head",
                Entry::File { .. },
            ) => true,
            (".relsync/chunks", Entry::Dir) => true,
            (".relsync", Entry::Dir) | (".relsync/install-id", Entry::File { .. }) => fresh,
            (p, Entry::File { blake3, .. }) => p
                .strip_prefix(".relsync/chunks/")
                .is_some_and(|name| is_chunk_id(name) && *blake3 == name.to_ascii_lowercase()),
            _ => false,
        };
        if !allowed {
            match before.get(path) {
                Some(old) => out.push(format!("changed   {path}: {old} -> {entry}")),
                None => out.push(format!("stray     {path} ({entry})")),
            }
        }
    }
    for (path, entry) in before {
        if !after.contains_key(path) {
            out.push(format!("removed   {path} ({entry})"));
        }
    }
    out
}
