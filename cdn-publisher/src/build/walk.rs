//! Reading a release directory into a sorted list of safe entries.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use relsync_format::{Error, RelPath, TreeIndex, TreeNode, check_symlink_target};

/// One path of the release, before chunking.
#[derive(Debug)]
pub enum Item {
    Dir,
    File {
        source: PathBuf,
        size: u64,
        executable: bool,
    },
    Symlink {
        target: String,
    },
}

/// All paths under `root`, sorted so that parents come before children.
pub fn walk(root: &Path) -> Result<Vec<(RelPath, Item)>> {
    let meta = fs::metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut out = Vec::new();
    visit(root, root, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    check_tree(root, &out)?;
    Ok(out)
}

/// The rules a client applies to the tree as a whole (relsync_engine's `TreeIndex`): no two
/// names that collide under Unicode case folding and normalization, and no symlink that
/// leaves the tree or loops once the tree's other symlinks are followed.
fn check_tree(root: &Path, items: &[(RelPath, Item)]) -> Result<()> {
    let mut tree = TreeIndex::with_capacity(items.len());
    for (path, item) in items {
        let node = match item {
            Item::Dir => TreeNode::Dir,
            Item::File { .. } => TreeNode::File,
            Item::Symlink { target } => TreeNode::Symlink(target),
        };
        match tree.insert(path, node) {
            Ok(()) => {}
            // Quoted and escaped (`{:?}`), so that `é` and `e` + U+0301 look different.
            Err(Error::PathCollision { first, second }) => bail!(
                "{:?} and {:?} collide: their names are equal once Unicode case and compatibility \
                 forms are folded, so a case-insensitive or normalizing file system (macOS, \
                 Windows) would install one over the other; rename one of them",
                root.join(first),
                root.join(second)
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{}: refused", root.join(path.as_str()).display()));
            }
        }
    }
    for (path, item) in items {
        if let Item::Symlink { .. } = item {
            tree.check_symlink(path)
                .with_context(|| format!("{}: refused", root.join(path.as_str()).display()))?;
        }
    }
    Ok(())
}

fn visit(root: &Path, dir: &Path, out: &mut Vec<(RelPath, Item)>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let Some(text) = rel.to_str() else {
            bail!("{}: file names must be UTF-8", path.display());
        };
        let rel = RelPath::new(text)?;
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let kind = meta.file_type();
        let mode = meta.permissions().mode();
        if mode & 0o6000 != 0 && !kind.is_symlink() {
            bail!("{}: setuid/setgid files are refused", path.display());
        }
        if kind.is_dir() {
            out.push((rel, Item::Dir));
            visit(root, &path, out)?;
        } else if kind.is_file() {
            out.push((
                rel,
                Item::File {
                    source: path,
                    size: meta.len(),
                    executable: mode & 0o111 != 0,
                },
            ));
        } else if kind.is_symlink() {
            let target = fs::read_link(&path)?;
            let Some(target) = target.to_str() else {
                bail!("{}: symlink target must be UTF-8", path.display());
            };
            check_symlink_target(&rel, target)
                .with_context(|| format!("{}: refused", path.display()))?;
            out.push((
                rel,
                Item::Symlink {
                    target: target.to_owned(),
                },
            ));
        } else {
            let what = if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "a device node"
            };
            bail!("{}: {what} cannot be published", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn refusal(root: &Path) -> String {
        format!("{:#}", walk(root).expect_err("the tree was accepted"))
    }

    #[test]
    fn refuses_names_that_collide_under_case_folding_or_normalization() {
        for (first, second) in [
            ("README", "readme"),
            ("cafe\u{301}", "caf\u{e9}"),
            ("STRASSE", "stra\u{df}e"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("docs")).unwrap();
            fs::write(dir.path().join("docs").join(first), "a").unwrap();
            fs::write(dir.path().join("docs").join(second), "b").unwrap();
            let err = refusal(dir.path());
            for name in [first, second] {
                let file = dir.path().join("docs").join(name);
                assert!(err.contains(&format!("{file:?}")), "{err}");
            }
            assert!(err.contains("collide"), "{err}");
        }
    }

    #[test]
    fn refuses_symlinks_that_escape_through_other_symlinks_or_loop() {
        // Each link alone reads as inside the tree.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        symlink("..", dir.path().join("d/up")).unwrap();
        symlink("up/..", dir.path().join("d/esc")).unwrap();
        let err = refusal(dir.path());
        let esc = dir.path().join("d/esc").display().to_string();
        assert!(err.contains(&format!("{esc}: refused")), "{err}");
        assert!(err.contains("d/esc -> up/.."), "{err}");

        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        let err = refusal(dir.path());
        assert!(err.contains("loops"), "{err}");
        assert!(
            err.contains(&dir.path().join("a").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn accepts_a_tree_with_a_symlink_chain_inside() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("lib")).unwrap();
        fs::write(dir.path().join("lib/libx.so.1.2"), "x").unwrap();
        symlink("libx.so.1.2", dir.path().join("lib/libx.so.1")).unwrap();
        symlink("libx.so.1", dir.path().join("lib/libx.so")).unwrap();
        symlink("lib/libx.so", dir.path().join("current")).unwrap();
        fs::write(dir.path().join("README"), "r").unwrap();
        let items = walk(dir.path()).unwrap();
        assert_eq!(items.len(), 6);
    }
}
