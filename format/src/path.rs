//! Release-relative paths that are safe to join onto an install directory, and the rules that
//! hold for a release tree as a whole.
//!
//! # Rules
//!
//! - **One path** ([`RelPath`]): non-empty, at most 4096 bytes, relative, `/`-separated, with
//!   no empty, `.` or `..` component, no NUL and no backslash.
//! - **One symlink target** ([`check_symlink_target`]): non-empty, at most 4096 bytes,
//!   relative, no NUL or backslash, and lexically inside the tree.
//! - **The whole tree** ([`TreeIndex`], one pass over the entries, parents first):
//!   - every entry's parent is a directory listed before it, so no entry lies below a symlink
//!     (writing it would follow the link) or below a file;
//!   - no path is listed twice, and no two paths have the same [`collision_key`];
//!   - every symlink target passes only through directories of the tree
//!     ([`check_symlink_in_tree`]), and, resolved over the tree's own symlinks the way the
//!     kernel resolves them (every link followed, the last one too), stays inside the tree and
//!     follows at most [`MAX_SYMLINK_HOPS`] links, so loops are refused.
//!
//! The manifest can only express directories, regular files (mode 0644 or 0755) and
//! symlinks, so device nodes, FIFOs, sockets and setuid/setgid bits cannot reach a client at
//! all; the publisher refuses them while walking a release.
//!
//! # The canonical key
//!
//! Two paths collide when their [`collision_key`]s are equal. The key is Unicode's
//! *compatibility caseless match* (The Unicode Standard, section 3.13, D146) of the whole path:
//!
//! ```text
//! key(p) = NFKD(fold(NFKD(fold(NFD(p)))))
//! ```
//!
//! where `fold` is full default case folding (`CaseFolding.txt`, statuses C and F) and the
//! normalization forms are those of UAX #15. So `README` and `readme`, `é` as U+00E9 and as
//! `e` + U+0301, `ß` and `ss`, `ﬁ` and `fi`, and `A/x` and `a/x` each collide. It is meant to be at
//! least as coarse as the folding of the usual case-insensitive or normalizing file systems
//! (APFS, HFS+, NTFS, ext4 with casefold), so that a tree without collisions installs as the
//! same set of files on each. Known gaps: default-ignorable code points (such as U+200D, which
//! HFS+ ignores) are kept, and NTFS's upper-casing also equates dotless `ı` with `i`. The key
//! compares whole paths, so a component that folds to `/` (fullwidth solidus, U+FF0F) may
//! collide with a path one level deeper; that errs on the side of refusing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};

use caseless::Caseless;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};

/// A `/`-separated path inside a release tree.
///
/// It is never empty or absolute and has no `.`, `..` or empty components, no NUL and no
/// backslash, so joining it onto a directory cannot escape that directory.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct RelPath(String);

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(crate::decode::invalid)
    }
}

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
    if target.len() > 4096 {
        return Err(refuse("symlink target longer than 4096 bytes"));
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

/// The key under which two paths of one tree collide (docs/design.md, "Paths").
///
/// This is `NFKD(fold(NFKD(fold(NFD(path)))))`, with `fold` full default case folding:
/// Unicode's compatibility caseless match (section 3.13, D146) of the whole path. `README`
/// and `readme`, `é` as U+00E9 and as `e` + U+0301, `ß` and `ss`, and `A/x` and `a/x` have
/// equal keys.
///
/// ASCII, the common case, takes a shortcut with the same result: an ASCII character folds
/// to itself or (`A`-`Z`) to `a`-`z`, never decomposes, and is a starter (canonical combining
/// class 0), which canonical reordering never moves anything across. So the key of a path is
/// its ASCII characters lower-cased, with each run of non-ASCII characters between them
/// replaced by that run's key, and an ASCII path that is already lower case is borrowed.
pub fn collision_key(path: &str) -> Cow<'_, str> {
    if path.is_ascii() {
        return if path.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(path.to_ascii_lowercase())
        } else {
            Cow::Borrowed(path)
        };
    }
    let mut key = String::with_capacity(path.len() + 8);
    let mut rest = path;
    while !rest.is_empty() {
        // Splitting at ASCII bytes always falls on a character boundary in UTF-8.
        let ascii = rest
            .bytes()
            .position(|b| !b.is_ascii())
            .unwrap_or(rest.len());
        let (head, tail) = rest.split_at(ascii);
        key.extend(head.chars().map(|c| c.to_ascii_lowercase()));
        let run = tail
            .bytes()
            .position(|b| b.is_ascii())
            .unwrap_or(tail.len());
        let (run, tail) = tail.split_at(run);
        key.extend(compatibility_caseless(run));
        rest = tail;
    }
    Cow::Owned(key)
}

/// `NFKD(fold(NFKD(fold(NFD(text)))))`, character by character.
fn compatibility_caseless(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars()
        .nfd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkd()
}

/// The most symlinks one resolution may follow, as Linux's `MAXSYMLINKS`: past it the kernel
/// fails with `ELOOP`, and a tree that needs more is refused as a loop.
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// One entry of a tree, as [`TreeIndex`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeNode<'a> {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink and its target.
    Symlink(&'a str),
}

impl TreeNode<'_> {
    fn kind(self) -> NodeKind {
        match self {
            TreeNode::Dir => NodeKind::Dir,
            TreeNode::File => NodeKind::File,
            TreeNode::Symlink(_) => NodeKind::Symlink,
        }
    }
}

/// The paths of one release tree, checked against the rules that concern the tree as a whole
/// (docs/design.md, "Paths"): parents are real directories listed first, no path twice, no
/// two paths with the same [`collision_key`], and every symlink inside the tree and free of
/// loops once the tree's other symlinks are followed.
///
/// Add every entry with [`insert`](Self::insert), parents first, then call
/// [`check_symlinks`](Self::check_symlinks) (or [`check_symlink`](Self::check_symlink) for
/// each link). Both the client (manifest validation) and the publisher (walking a release
/// directory) use it, so they refuse the same trees. It costs two hash-map entries per path,
/// and each symlink is resolved once.
#[derive(Debug, Default)]
pub struct TreeIndex<'a> {
    nodes: HashMap<&'a str, TreeNode<'a>>,
    keys: HashMap<Cow<'a, str>, &'a str>,
    symlinks: Vec<&'a RelPath>,
    resolved: HashMap<&'a str, Resolved>,
}

/// Where a symlink leads once every link on the way is followed.
#[derive(Debug, Clone)]
struct Resolved {
    /// The place inside the tree (`""` is the root); past a missing component it is lexical.
    path: String,
    /// Links followed, this one included.
    hops: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unresolvable {
    Escapes,
    Loops,
}

impl Unresolvable {
    fn reason(self) -> &'static str {
        match self {
            Unresolvable::Escapes => {
                "symlink resolves outside the release once the tree's other symlinks are followed"
            }
            Unresolvable::Loops => {
                "symlink loops, or its chain follows more than 40 links (MAX_SYMLINK_HOPS)"
            }
        }
    }
}

impl<'a> TreeIndex<'a> {
    /// An empty index with room for `entries` paths.
    pub fn with_capacity(entries: usize) -> Self {
        Self {
            nodes: HashMap::with_capacity(entries),
            keys: HashMap::with_capacity(entries),
            symlinks: Vec::new(),
            resolved: HashMap::new(),
        }
    }

    /// Adds one entry. Entries must come parents first.
    ///
    /// Refuses ([`Error::UnsafePath`]) an entry whose parent is not a directory added before
    /// it (so nothing lies below a symlink or a file) and a path added twice, and refuses
    /// ([`Error::PathCollision`], naming both paths) a path whose [`collision_key`] equals an
    /// earlier one's.
    pub fn insert(&mut self, path: &'a RelPath, node: TreeNode<'a>) -> Result<()> {
        let refuse = |reason| {
            Err(Error::UnsafePath {
                path: path.to_string(),
                reason,
            })
        };
        if let Some((parent, _)) = path.as_str().rsplit_once('/') {
            match self.nodes.get(parent) {
                Some(TreeNode::Dir) => {}
                Some(TreeNode::Symlink(_)) => {
                    return refuse("lies below a symlink; parents must be real directories");
                }
                Some(TreeNode::File) => return refuse("lies below a regular file"),
                None => return refuse("comes before its directory"),
            }
        }
        if self.nodes.insert(path.as_str(), node).is_some() {
            return refuse("listed twice");
        }
        match self.keys.entry(collision_key(path.as_str())) {
            Entry::Occupied(earlier) => {
                return Err(Error::PathCollision {
                    first: (*earlier.get()).to_owned(),
                    second: path.to_string(),
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(path.as_str());
            }
        }
        if let TreeNode::Symlink(_) = node {
            self.symlinks.push(path);
        }
        Ok(())
    }

    /// Checks every symlink added so far, in the order added; see
    /// [`check_symlink`](Self::check_symlink).
    pub fn check_symlinks(&mut self) -> Result<()> {
        for i in 0..self.symlinks.len() {
            let link = self.symlinks[i];
            self.check_symlink(link)?;
        }
        Ok(())
    }

    /// Checks one symlink of the tree once every entry is added (a path that is not a symlink
    /// of the tree passes): its target passes only through directories of the tree
    /// ([`check_symlink_in_tree`]), and, resolved over the tree's own symlinks, stays inside
    /// the tree within [`MAX_SYMLINK_HOPS`] links. Resolution follows the last component too,
    /// and looks a name up by its [`collision_key`] when no entry has it exactly, so a loop
    /// cannot hide on a case-insensitive file system. The error names the link and its target.
    pub fn check_symlink(&mut self, link: &RelPath) -> Result<()> {
        let Some((&path, &TreeNode::Symlink(target))) = self.nodes.get_key_value(link.as_str())
        else {
            return Ok(());
        };
        check_symlink_in_tree(link, target, |p| self.nodes.get(p).map(|n| n.kind()))?;
        self.resolve(path, target, MAX_SYMLINK_HOPS)
            .map(drop)
            .map_err(|why| Error::UnsafePath {
                path: format!("{link} -> {target}"),
                reason: why.reason(),
            })
    }

    /// The entry at `path`, exactly or else by [`collision_key`].
    fn lookup(&self, path: &str) -> Option<(&'a str, TreeNode<'a>)> {
        if let Some((&exact, &node)) = self.nodes.get_key_value(path) {
            return Some((exact, node));
        }
        let exact = *self.keys.get(collision_key(path).as_ref())?;
        self.nodes.get(exact).map(|&node| (exact, node))
    }

    /// Resolves the symlink at `link` like the kernel, following at most `budget` links.
    ///
    /// A component that names nothing (or a file) is passed lexically: the link dangles now,
    /// but the app may create that directory later, and `..` after it must still stay inside.
    /// Results are remembered, so each link is resolved once; the recursion is at most
    /// `budget` deep, as each level follows one more link.
    fn resolve(
        &mut self,
        link: &'a str,
        target: &'a str,
        budget: u32,
    ) -> Result<Resolved, Unresolvable> {
        if let Some(done) = self.resolved.get(link) {
            return if done.hops > budget {
                Err(Unresolvable::Loops)
            } else {
                Ok(done.clone())
            };
        }
        let mut hops = 1;
        if hops > budget {
            return Err(Unresolvable::Loops);
        }
        if target.starts_with('/') {
            return Err(Unresolvable::Escapes);
        }
        let mut at = link.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
        for component in target.split('/') {
            match component {
                "" | "." => continue,
                ".." => {
                    if at.is_empty() {
                        return Err(Unresolvable::Escapes);
                    }
                    at.truncate(at.rfind('/').unwrap_or(0));
                    continue;
                }
                name => {
                    if !at.is_empty() {
                        at.push('/');
                    }
                    at.push_str(name);
                }
            }
            match self.lookup(&at) {
                Some((next, TreeNode::Symlink(next_target))) => {
                    let via = self.resolve(next, next_target, budget - hops)?;
                    hops += via.hops;
                    if hops > budget {
                        return Err(Unresolvable::Loops);
                    }
                    at = via.path;
                }
                // Found by its collision key: continue from the entry's own spelling.
                Some((exact, _)) if exact != at => at = exact.to_owned(),
                Some(_) | None => {}
            }
        }
        let done = Resolved { path: at, hops };
        self.resolved.insert(link, done.clone());
        Ok(done)
    }
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

    fn rel(paths: &[&str]) -> Vec<RelPath> {
        paths.iter().map(|p| RelPath::new(*p).unwrap()).collect()
    }

    /// An index of `paths` (parents first) with `nodes`, or the first refusal.
    fn index<'a>(paths: &'a [RelPath], nodes: &[TreeNode<'a>]) -> Result<TreeIndex<'a>> {
        let mut tree = TreeIndex::with_capacity(paths.len());
        for (path, node) in paths.iter().zip(nodes) {
            tree.insert(path, *node)?;
        }
        Ok(tree)
    }

    /// Inserts and checks every symlink; the error text, if refused.
    fn refusal(paths: &[RelPath], nodes: &[TreeNode<'_>]) -> Option<String> {
        let mut tree = match index(paths, nodes) {
            Ok(tree) => tree,
            Err(e) => return Some(e.to_string()),
        };
        tree.check_symlinks().err().map(|e| e.to_string())
    }

    #[test]
    fn collision_keys_fold_case_and_unicode_forms() {
        let same = [
            ("README", "readme"),
            ("A/x", "a/x"),
            ("caf\u{e9}", "cafe\u{301}"),                 // NFC vs NFD
            ("Stra\u{df}e", "STRASSE"),                   // sharp s folds to ss
            ("\u{1e9e}", "ss"),                           // capital sharp s
            ("\u{212a}elvin", "kelvin"),                  // KELVIN SIGN
            ("\u{fb01}le", "file"),                       // fi ligature (compatibility)
            ("\u{ff32}\u{ff25}\u{ff21}\u{ff24}", "read"), // fullwidth
            ("\u{3a3}\u{391}\u{3a3}", "\u{3c3}\u{3b1}\u{3c2}"), // final sigma
            ("\u{c5}ngstr\u{f6}m", "A\u{30a}NGSTRO\u{308}M"),
        ];
        for (a, b) in same {
            assert_eq!(collision_key(a), collision_key(b), "{a:?} vs {b:?}");
        }
        let different = [("a", "b"), ("\u{e9}", "e"), ("a/bc", "ab/c"), ("x", "x ")];
        for (a, b) in different {
            assert_ne!(collision_key(a), collision_key(b), "{a:?} vs {b:?}");
        }
        assert!(matches!(collision_key("lower/case"), Cow::Borrowed(_)));
    }

    /// The key without the ASCII shortcut.
    fn full_collision_key(path: &str) -> String {
        compatibility_caseless(path).collect()
    }

    proptest::proptest! {
        #[test]
        fn ascii_shortcut_matches_the_full_key(path in "[ -~]{0,64}") {
            let key = collision_key(&path).into_owned();
            proptest::prop_assert_eq!(key, full_collision_key(&path));
        }

        #[test]
        fn ascii_runs_shortcut_matches_the_full_key(
            // ASCII mixed with combining marks, letters with case and decompositions, and
            // the awkward ones: U+0345 (a combining mark that folds to a starter), the
            // Kelvin sign, capital sharp s, the fi ligature, fullwidth letters.
            path in "[a-zA-Z/. \\x{300}-\\x{36f}\\x{c0}-\\x{17f}\\x{345}\\x{390}-\\x{3cf}\\x{1f80}-\\x{1fff}\\x{1e9e}\\x{212a}\\x{fb00}-\\x{fb06}\\x{ff21}-\\x{ff5a}]{0,24}",
            any in "\\PC{0,24}",
        ) {
            for text in [&path, &any] {
                let key = collision_key(text).into_owned();
                proptest::prop_assert_eq!(key, full_collision_key(text), "{:?}", text);
            }
        }

        #[test]
        fn canonically_equivalent_paths_collide(path in "\\PC{0,24}") {
            let nfc: String = path.nfc().collect();
            let nfd: String = path.nfd().collect();
            proptest::prop_assert_eq!(collision_key(&nfc), collision_key(&nfd));
        }
    }

    #[test]
    fn tree_refuses_collisions_naming_both_paths() {
        let cases = [
            (["README", "readme"], "README", "readme"),
            (["caf\u{e9}", "cafe\u{301}"], "caf\u{e9}", "cafe\u{301}"),
            (["Stra\u{df}e", "strasse"], "Stra\u{df}e", "strasse"),
        ];
        for (paths, first, second) in cases {
            let paths = rel(&paths);
            let err = index(&paths, &[TreeNode::File, TreeNode::File]).unwrap_err();
            match &err {
                Error::PathCollision {
                    first: f,
                    second: s,
                } => {
                    assert_eq!((f.as_str(), s.as_str()), (first, second));
                }
                other => panic!("{first:?} and {second:?}: {other}"),
            }
            let text = err.to_string();
            assert!(text.contains(&format!("{first:?}")), "{text}");
            assert!(text.contains(&format!("{second:?}")), "{text}");
        }
        // Whole paths compare: the first collision is the parent directory.
        let paths = rel(&["A", "A/x", "a", "a/x"]);
        let err = index(
            &paths,
            &[TreeNode::Dir, TreeNode::File, TreeNode::Dir, TreeNode::File],
        )
        .unwrap_err();
        assert!(matches!(err, Error::PathCollision { .. }), "{err}");
        // Exact duplicates keep their own message.
        let paths = rel(&["a", "a"]);
        let err = index(&paths, &[TreeNode::Dir, TreeNode::Dir]).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }

    #[test]
    fn entries_below_a_symlink_or_a_file_are_refused() {
        // `dir -> deep/er` with an entry `dir/link`: writing `dir/link` would follow `dir`.
        let paths = rel(&["deep", "deep/er", "dir", "dir/link"]);
        let nodes = [
            TreeNode::Dir,
            TreeNode::Dir,
            TreeNode::Symlink("deep/er"),
            TreeNode::Symlink("../x"),
        ];
        let err = index(&paths, &nodes).unwrap_err().to_string();
        assert!(
            err.contains("\"dir/link\"") && err.contains("below a symlink"),
            "{err}"
        );

        let paths = rel(&["f", "f/x"]);
        let err = index(&paths, &[TreeNode::File, TreeNode::File]).unwrap_err();
        assert!(err.to_string().contains("below a regular file"), "{err}");

        let paths = rel(&["d/x", "d"]);
        let err = index(&paths, &[TreeNode::File, TreeNode::Dir]).unwrap_err();
        assert!(err.to_string().contains("before its directory"), "{err}");
    }

    #[test]
    fn symlink_loops_are_refused() {
        let paths = rel(&["a", "b"]);
        let err = refusal(&paths, &[TreeNode::Symlink("b"), TreeNode::Symlink("a")]).unwrap();
        assert!(err.contains("\"a -> b\"") && err.contains("loops"), "{err}");

        let paths = rel(&["self"]);
        assert!(refusal(&paths, &[TreeNode::Symlink("./self")]).is_some());

        let paths = rel(&["d", "d/x", "y"]);
        let nodes = [
            TreeNode::Dir,
            TreeNode::Symlink("../y"),
            TreeNode::Symlink("d/x"),
        ];
        assert!(refusal(&paths, &nodes).is_some());

        // On a case-insensitive file system `B` is `b`: the loop must not hide there.
        let paths = rel(&["a", "b"]);
        let err = refusal(&paths, &[TreeNode::Symlink("B"), TreeNode::Symlink("A")]).unwrap();
        assert!(err.contains("loops"), "{err}");
    }

    #[test]
    fn symlink_chains_longer_than_the_kernel_follows_are_refused() {
        // l0 -> l1 -> ... -> l{n-1} -> f: resolving l0 follows n links.
        let chain = |n: usize| {
            let mut paths = vec!["f".to_owned()];
            paths.extend((0..n).map(|i| format!("l{i}")));
            let targets: Vec<String> = (0..n)
                .map(|i| {
                    if i + 1 == n {
                        "f".to_owned()
                    } else {
                        format!("l{}", i + 1)
                    }
                })
                .collect();
            (paths, targets)
        };
        let hops = MAX_SYMLINK_HOPS as usize;
        for (n, refused) in [(hops, false), (hops + 1, true)] {
            let (paths, targets) = chain(n);
            let paths: Vec<RelPath> = paths
                .into_iter()
                .map(|p| RelPath::new(p).unwrap())
                .collect();
            let mut nodes = vec![TreeNode::File];
            nodes.extend(targets.iter().map(|t| TreeNode::Symlink(t)));
            assert_eq!(refusal(&paths, &nodes).is_some(), refused, "chain of {n}");
        }
    }

    #[test]
    fn symlink_chains_that_escape_are_refused() {
        // `d/up -> ..` lands on the root; `d/esc -> up/..` reads as `d` but is `..` of the
        // root once `d/up` is followed.
        let paths = rel(&["d", "d/up", "d/esc"]);
        let nodes = [
            TreeNode::Dir,
            TreeNode::Symlink(".."),
            TreeNode::Symlink("up/.."),
        ];
        assert!(
            check_symlink_target(&paths[2], "up/..").is_ok(),
            "lexically fine"
        );
        let err = refusal(&paths, &nodes).unwrap();
        assert!(err.contains("d/esc -> up/.."), "{err}");
        let mut tree = index(&paths, &nodes).unwrap();
        assert_eq!(
            tree.resolve("d/esc", "up/..", MAX_SYMLINK_HOPS)
                .unwrap_err(),
            Unresolvable::Escapes
        );

        // `a -> .` then `b -> a/../etc`: lexically `etc`, really `../etc`.
        let paths = rel(&["a", "b"]);
        let nodes = [TreeNode::Symlink("."), TreeNode::Symlink("a/../etc")];
        assert!(refusal(&paths, &nodes).is_some());
        let mut tree = index(&paths, &nodes).unwrap();
        assert!(tree.check_symlink(&paths[0]).is_ok());
        assert_eq!(
            tree.resolve("b", "a/../etc", MAX_SYMLINK_HOPS).unwrap_err(),
            Unresolvable::Escapes
        );

        // The resolver alone, through a directory symlink that points deeper.
        let paths = rel(&["x", "x/y", "deep", "top"]);
        let nodes = [
            TreeNode::Dir,
            TreeNode::Dir,
            TreeNode::Symlink("x/y"),
            TreeNode::Symlink("deep/../../.."),
        ];
        let mut tree = index(&paths, &nodes).unwrap();
        assert_eq!(
            tree.resolve("top", "deep/../../..", MAX_SYMLINK_HOPS)
                .unwrap_err(),
            Unresolvable::Escapes
        );
        assert_eq!(
            tree.resolve("deep", "x/y", MAX_SYMLINK_HOPS).unwrap().path,
            "x/y"
        );
        // ... and `..` past a directory that does not exist yet stays lexical.
        let paths = rel(&["d", "d/l"]);
        let mut tree = index(&paths, &[TreeNode::Dir, TreeNode::Symlink("m/../..")]).unwrap();
        assert_eq!(
            tree.resolve("d/l", "m/../..", MAX_SYMLINK_HOPS)
                .unwrap()
                .path,
            ""
        );
        assert_eq!(
            tree.resolve("d/l2", "m/../../..", MAX_SYMLINK_HOPS)
                .unwrap_err(),
            Unresolvable::Escapes
        );
    }

    #[test]
    fn sane_trees_with_symlink_chains_pass() {
        let paths = rel(&["d", "d/f", "d/back", "l1", "l2", "dangling", "Data"]);
        let nodes = [
            TreeNode::Dir,
            TreeNode::File,
            TreeNode::Symlink("../l2"),
            TreeNode::Symlink("d/f"),
            TreeNode::Symlink("l1"),
            TreeNode::Symlink("not-yet-there"),
            TreeNode::Dir,
        ];
        assert_eq!(refusal(&paths, &nodes), None);
        let mut tree = index(&paths, &nodes).unwrap();
        tree.check_symlinks().unwrap();
        assert_eq!(tree.resolve("d/back", "../l2", 40).unwrap().hops, 3);
        assert_eq!(tree.resolve("d/back", "../l2", 40).unwrap().path, "d/f");
    }
}
