//! Reading a release directory into a sorted list of safe entries.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use std::collections::HashMap;

use relsync_engine::{NodeKind, RelPath, check_symlink_in_tree, check_symlink_target};

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
    let kinds: HashMap<&str, NodeKind> = out
        .iter()
        .map(|(path, item)| {
            let kind = match item {
                Item::Dir => NodeKind::Dir,
                Item::File { .. } => NodeKind::File,
                Item::Symlink { .. } => NodeKind::Symlink,
            };
            (path.as_str(), kind)
        })
        .collect();
    for (path, item) in &out {
        if let Item::Symlink { target } = item {
            check_symlink_in_tree(path, target, |p| kinds.get(p).copied())
                .with_context(|| format!("{}: refused", root.join(path.as_str()).display()))?;
        }
    }
    Ok(out)
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
