//! Release-relative paths that are safe to join onto an install directory.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A `/`-separated path inside a release tree.
///
/// It is never empty or absolute and has no `.`, `..` or empty components, no NUL and no
/// backslash, so joining it onto a directory cannot escape that directory.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Validates `path`.
    pub fn new(path: impl Into<String>) -> Result<Self> {
        let path = path.into();
        let unsafe_path = |reason| Error::UnsafePath {
            path: path.clone(),
            reason,
        };
        if path.is_empty() {
            return Err(unsafe_path("empty path"));
        }
        if path.len() > 4096 {
            return Err(unsafe_path("longer than 4096 bytes"));
        }
        if path.starts_with('/') {
            return Err(unsafe_path("absolute path"));
        }
        if path.contains('\0') {
            return Err(unsafe_path("contains NUL"));
        }
        if path.contains('\\') {
            return Err(unsafe_path("contains a backslash"));
        }
        for component in path.split('/') {
            match component {
                "" => return Err(unsafe_path("empty component")),
                "." | ".." => return Err(unsafe_path("`.` or `..` component")),
                _ => {}
            }
        }
        Ok(Self(path))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory, if any.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_owned()))
    }

    /// `root` joined with this path.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }
}

impl TryFrom<String> for RelPath {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Checks that a symlink at `link` with `target` resolves, lexically, inside the tree.
pub fn check_symlink_target(link: &RelPath, target: &str) -> Result<()> {
    let refuse = |reason| Error::UnsafePath {
        path: format!("{link} -> {target}"),
        reason,
    };
    if target.is_empty() || target.starts_with('/') {
        return Err(refuse("symlink target is empty or absolute"));
    }
    if target.contains('\0') || target.contains('\\') {
        return Err(refuse("symlink target contains NUL or a backslash"));
    }
    let mut depth: Vec<&str> = link.as_str().split('/').collect();
    depth.pop();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return Err(refuse("symlink points outside the release"));
                }
            }
            name => depth.push(name),
        }
    }
    Ok(())
}

/// What a tree entry is, for resolving symlink targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink.
    Symlink,
}

/// Checks that a symlink resolves inside the tree, given every path's kind: each component the
/// target passes *through* must be a directory of the tree (never another symlink), so the OS
/// resolves it exactly as it reads. The last component may be anything.
pub fn check_symlink_in_tree(
    link: &RelPath,
    target: &str,
    kind_of: impl Fn(&str) -> Option<NodeKind>,
) -> Result<()> {
    check_symlink_target(link, target)?;
    let refuse = |reason| Error::UnsafePath {
        path: format!("{link} -> {target}"),
        reason,
    };
    let mut at: Vec<&str> = link.as_str().split('/').collect();
    at.pop();
    let components: Vec<&str> = target
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let Some((_, through)) = components.split_last() else {
        return Ok(());
    };
    for component in through {
        if *component == ".." {
            at.pop();
            continue;
        }
        at.push(component);
        if kind_of(&at.join("/")) != Some(NodeKind::Dir) {
            return Err(refuse(
                "symlink target passes through something that is not a directory of the release",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        for bad in [
            "", "/etc", "a/../b", "..", "a//b", "a/", "./a", "a\\b", "a\0b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b", "a/.hidden", "a/b..c"] {
            assert!(RelPath::new(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn symlinks_through_symlinks_are_refused() {
        let kinds = |p: &str| match p {
            "d" | "d/e" => Some(NodeKind::Dir),
            "d/up" => Some(NodeKind::Symlink),
            "f" => Some(NodeKind::File),
            _ => None,
        };
        let link = RelPath::new("esc").unwrap();
        // `d/up -> ..` then `esc -> d/up/../..` would climb out of the tree.
        assert!(check_symlink_in_tree(&link, "d/up/../x", kinds).is_err());
        assert!(check_symlink_in_tree(&link, "f/x", kinds).is_err());
        assert!(check_symlink_in_tree(&link, "missing/x", kinds).is_err());
        assert!(check_symlink_in_tree(&link, "d/e/../f", kinds).is_ok());
        assert!(check_symlink_in_tree(&link, "d/up", kinds).is_ok());
        assert!(check_symlink_in_tree(&RelPath::new("d/l").unwrap(), "../f", kinds).is_ok());
    }

    #[test]
    fn symlink_targets() {
        let link = RelPath::new("bin/tool").unwrap();
        assert!(check_symlink_target(&link, "app").is_ok());
        assert!(check_symlink_target(&link, "../lib/x").is_ok());
        assert!(check_symlink_target(&link, "../../x").is_err());
        assert!(check_symlink_target(&link, "/etc/passwd").is_err());
        assert!(check_symlink_target(&link, "").is_err());
    }
}
