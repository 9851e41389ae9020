//! Deterministic release trees, and exact tree comparison.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use crate::run::Cmd;

/// Path of the large binary-like file inside a release.
pub const BIG_FILE: &str = "bin/app";
/// Size of the large file in v1 (v2 is 1 KiB longer).
pub const BIG_FILE_LEN: usize = 8 << 20;
/// Size of the insertion in the middle of the large file in v2.
pub const BIG_FILE_INSERT_LEN: usize = 1024;

/// The kind and content of one tree entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// BLAKE3 of the bytes, hex.
        blake3: String,
        /// Whether any exec bit is set.
        exec: bool,
    },
    /// A symbolic link, not followed.
    Symlink {
        /// The link's target text.
        target: String,
    },
    /// Anything else (fifo, socket, device).
    Other,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Dir => write!(f, "dir"),
            Entry::File { size, blake3, exec } => write!(
                f,
                "file {size} B blake3={}{}",
                &blake3[..16],
                if *exec { " +x" } else { "" }
            ),
            Entry::Symlink { target } => write!(f, "symlink -> {target}"),
            Entry::Other => write!(f, "special file"),
        }
    }
}

/// Every entry below `root` (not `root` itself) by relative path with `/` separators. Symlinks
/// are recorded, never followed, except `root` itself, so `tree_digest(install/current)` reads
/// the release that `current` points to.
pub fn tree_digest(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Entry>) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for item in rd {
        let item = item.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        let name = item.file_name().to_string_lossy().into_owned();
        let path = item.path();
        let rel_path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = meta.file_type();
        let entry = if ft.is_symlink() {
            let target =
                fs::read_link(&path).unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()));
            Entry::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else if ft.is_dir() {
            walk(&path, &rel_path, out);
            Entry::Dir
        } else if ft.is_file() {
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            Entry::File {
                size: bytes.len() as u64,
                blake3: blake3::hash(&bytes).to_hex().to_string(),
                exec: meta.permissions().mode() & 0o111 != 0,
            }
        } else {
            Entry::Other
        };
        out.insert(rel_path, entry);
    }
}

/// The differences between two digests, one line each; empty when equal.
pub fn diff_digests(
    actual: &BTreeMap<String, Entry>,
    expected: &BTreeMap<String, Entry>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => lines.push(format!("missing   {p}  (expected {e})")),
            Some(a) if a != e => lines.push(format!("differs   {p}  (expected {e}, found {a})")),
            Some(_) => {}
        }
    }
    for (p, a) in actual {
        if !expected.contains_key(p) {
            lines.push(format!("unexpected {p}  ({a})"));
        }
    }
    lines
}

/// Panic with a readable diff unless the tree at `actual` equals the tree at `expected`:
/// same paths, kinds, bytes, exec bits, symlink targets and empty directories.
pub fn assert_trees_equal(actual: &Path, expected: &Path) {
    assert!(
        actual.exists(),
        "tree {} does not exist (expected a copy of {})",
        actual.display(),
        expected.display()
    );
    let diff = diff_digests(&tree_digest(actual), &tree_digest(expected));
    if !diff.is_empty() {
        let shown: Vec<_> = diff.iter().take(60).cloned().collect();
        panic!(
            "tree {} differs from {} in {} entries:\n  {}{}",
            actual.display(),
            expected.display(),
            diff.len(),
            shown.join("\n  "),
            if diff.len() > shown.len() {
                "\n  ..."
            } else {
                ""
            }
        );
    }
}

/// `len` deterministic pseudo-random bytes (BLAKE3 XOF of `seed`).
pub fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(b"relsync-tests pseudo_random v1\0");
    h.update(seed.as_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// Deterministic text of about `len` bytes (lines of words and hex).
pub fn pseudo_text(seed: &str, len: usize) -> String {
    let mut s = String::with_capacity(len + 100);
    let mut i = 0u64;
    while s.len() < len {
        let h = blake3::hash(format!("{seed}/{i}").as_bytes()).to_hex();
        s.push_str(&format!("{i:06} {seed} lorem ipsum {} dolor\n", &h[..24]));
        i += 1;
    }
    s
}

/// The large file of `version`. v2 = v1 with 20 small overwrites (5 clusters of 4, spread over
/// the file) and a 1 KiB insertion in the middle.
pub fn big_file(version: u32) -> Vec<u8> {
    let mut data = pseudo_random("big-file", BIG_FILE_LEN);
    if version >= 2 {
        let patch = pseudo_random("big-file-edits", 20 * 8);
        let centres = [0.08, 0.27, 0.43, 0.71, 0.93];
        for (c, centre) in centres.iter().enumerate() {
            let base = (BIG_FILE_LEN as f64 * centre) as usize;
            for k in 0..4 {
                let n = 1 + (c * 4 + k) % 8;
                let at = base + k * 3001;
                let src = &patch[(c * 4 + k) * 8..][..n];
                for (j, b) in src.iter().enumerate() {
                    // XOR with a non-zero byte always changes the data.
                    data[at + j] ^= b | 1;
                }
            }
        }
        let mid = BIG_FILE_LEN / 2;
        let insert = pseudo_random("big-file-insert", BIG_FILE_INSERT_LEN);
        data.splice(mid..mid, insert);
    }
    data
}

fn write(root: &Path, rel: &str, bytes: &[u8], mode: u32) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    symlink(target, &p).unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
}

/// Write release `version` (1 or 2) of a small app into `dir` (created; must not exist or be
/// empty).
///
/// Both versions have: `bin/app` (8 MiB of pseudo-random data, mode 0755; v2 has scattered
/// small edits and a 1 KiB insertion), `bin/run.sh` (0755), a relative symlink
/// `bin/app-link -> app` and `share/readme-link -> ../README.md`, an empty directory
/// `var/empty`, an empty file, a nested `share/data/deep/nested/leaf.txt`, a name with a space,
/// a dot file, and files of the edge sizes 0, 1, 16 KiB - 1, 16 KiB, 64 KiB, 256 KiB and
/// 256 KiB + 1 under `sizes/`. v1 has `share/old.txt` (removed in v2) and `docs/guide.txt`
/// (renamed to `docs/manual.txt` in v2, same bytes); v2 adds `share/new.txt` and changes
/// `VERSION` and `config/settings.toml`.
pub fn make_release(dir: &Path, version: u32) {
    assert!(
        version == 1 || version == 2,
        "make_release: version must be 1 or 2"
    );
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));

    write(dir, BIG_FILE, &big_file(version), 0o755);
    write(
        dir,
        "bin/run.sh",
        b"#!/bin/sh\nexec \"$(dirname \"$0\")/app\" \"$@\"\n",
        0o755,
    );
    link(dir, "bin/app-link", "app");
    write(dir, "VERSION", format!("{version}.0.0\n").as_bytes(), 0o644);
    write(
        dir,
        "README.md",
        pseudo_text("readme", 3000).as_bytes(),
        0o644,
    );
    link(dir, "share/readme-link", "../README.md");
    let settings = format!(
        "[app]\nname = \"demo\"\nthreads = {}\n{}",
        version * 4,
        pseudo_text("settings", 2000)
    );
    write(dir, "config/settings.toml", settings.as_bytes(), 0o644);
    write(dir, "config/.hidden", b"dot file\n", 0o600);
    write(dir, "etc/empty.conf", b"", 0o644);
    write(dir, "docs/read me.txt", b"a name with a space\n", 0o644);
    write(
        dir,
        "share/data/a.txt",
        pseudo_text("data-a", 40_000).as_bytes(),
        0o644,
    );
    write(dir, "share/data/deep/nested/leaf.txt", b"leaf\n", 0o644);
    for (name, len) in [
        ("size-0", 0usize),
        ("size-1", 1),
        ("size-16383", 16 * 1024 - 1),
        ("size-16384", 16 * 1024),
        ("size-65536", 64 * 1024),
        ("size-262144", 256 * 1024),
        ("size-262145", 256 * 1024 + 1),
    ] {
        write(
            dir,
            &format!("sizes/{name}"),
            &pseudo_random(name, len),
            0o644,
        );
    }
    let guide = pseudo_text("guide", 150_000);
    if version == 1 {
        write(dir, "share/old.txt", b"removed in v2\n", 0o644);
        write(dir, "docs/guide.txt", guide.as_bytes(), 0o644);
    } else {
        write(
            dir,
            "share/new.txt",
            pseudo_text("new", 5000).as_bytes(),
            0o644,
        );
        write(dir, "docs/manual.txt", guide.as_bytes(), 0o644);
    }
    let empty = dir.join("var/empty");
    fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("mkdir {}: {e}", empty.display()));
}

/// `cp -a from to` (`to` must not exist): a copy with the same modes, symlinks and hard links.
/// An install is relocatable (`current` is a relative symlink), so a copy of one is an
/// independent install with the same state.
pub fn copy_tree(from: &Path, to: &Path) {
    Cmd::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .run()
        .assert_success(&format!("cp -a {} {}", from.display(), to.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_deterministic_and_differ_as_documented() {
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        make_release(&a, 1);
        make_release(&b, 1);
        make_release(&c, 2);
        assert_trees_equal(&a, &b);
        let d1 = tree_digest(&a);
        let d2 = tree_digest(&c);
        assert_eq!(
            d1.get("bin/app-link"),
            Some(&Entry::Symlink {
                target: "app".into()
            })
        );
        assert_eq!(d1.get("var/empty"), Some(&Entry::Dir));
        assert!(matches!(
            d1.get(BIG_FILE),
            Some(Entry::File { exec: true, .. })
        ));
        assert!(matches!(
            d1.get("README.md"),
            Some(Entry::File { exec: false, .. })
        ));
        assert!(d1.contains_key("share/old.txt") && !d2.contains_key("share/old.txt"));
        assert!(d2.contains_key("share/new.txt") && !d1.contains_key("share/new.txt"));
        assert_eq!(d1.get("docs/guide.txt"), d2.get("docs/manual.txt"));
        let diff = diff_digests(&d2, &d1);
        assert_eq!(diff.len(), 7, "{diff:#?}");

        let (v1, v2) = (big_file(1), big_file(2));
        assert_eq!(v2.len(), v1.len() + BIG_FILE_INSERT_LEN);
        let mid = BIG_FILE_LEN / 2;
        let changed = v1[..mid]
            .iter()
            .zip(&v2[..mid])
            .filter(|(x, y)| x != y)
            .count()
            + v1[mid..]
                .iter()
                .zip(&v2[mid + BIG_FILE_INSERT_LEN..])
                .filter(|(x, y)| x != y)
                .count();
        assert!((20..=90).contains(&changed), "{changed} bytes changed");
    }
}
