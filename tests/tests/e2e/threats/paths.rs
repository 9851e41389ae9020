//! Paths: forged releases whose entries would escape or confuse the install. Unsafe path
//! strings (`..`, absolute, backslash, NUL, empty, too long), paths that collide by case or
//! Unicode normalization or are listed twice, paths below files or symlinks, and symlinks
//! that are absolute, escape the release, loop, or pass through a symlink or a file.

use relsync_engine::manifest::EntryKind;

use super::forgery::link;
use super::{Case, Category, case};

pub(super) fn cases() -> Vec<Case> {
    use Category::Paths;
    // Found by this table: the eight `path-*` cases up to `path-too-long` were refused as
    // "malformed manifest: Serde Deserialization Error", naming neither the path nor the rule,
    // because postcard drops `de::Error::custom` messages; engine/src/decode.rs keeps them.
    vec![
        case(
            "path-dotdot",
            Paths,
            &["unsafe path", "`.` or `..` component"],
            |c| c.publish_hostile_path(b"../escaped"),
        ),
        case(
            "path-dotdot-inside",
            Paths,
            &["unsafe path", "`.` or `..` component"],
            |c| c.publish_hostile_path(b"bin/../../escaped"),
        ),
        case(
            "path-absolute",
            Paths,
            &["unsafe path", "absolute path"],
            |c| c.publish_hostile_path(b"/tmp/relsync-escaped"),
        ),
        case(
            "path-backslash",
            Paths,
            &["unsafe path", "backslash"],
            |c| c.publish_hostile_path(b"..\\escaped"),
        ),
        case("path-nul", Paths, &["unsafe path", "nul"], |c| {
            c.publish_hostile_path(b"bin\0x")
        }),
        case(
            "path-empty-component",
            Paths,
            &["unsafe path", "empty component"],
            |c| c.publish_hostile_path(b"bin//x"),
        ),
        case("path-empty", Paths, &["unsafe path", "empty path"], |c| {
            c.publish_hostile_path(b"")
        }),
        case(
            "path-too-long",
            Paths,
            &["unsafe path", "longer than 4096"],
            |c| c.publish_hostile_path(&[b'a'; 4097]),
        ),
        case(
            "path-case-collision",
            Paths,
            &["\"readme.md\"", "collide"],
            |c| c.publish_forged_entries(&[("readme.md", EntryKind::Dir)]),
        ),
        case("path-nfc-nfd-collision", Paths, &["collide"], |c| {
            c.publish_forged_entries(&[
                ("caf\u{e9}", EntryKind::Dir),
                ("cafe\u{301}", EntryKind::Dir),
            ])
        }),
        case(
            "path-listed-twice",
            Paths,
            &["\"readme.md\"", "listed twice"],
            |c| {
                c.publish_forged(|_, m| {
                    let readme = m
                        .entries
                        .iter()
                        .find(|e| e.path.as_str() == "README.md")
                        .cloned()
                        .expect("README.md");
                    m.entries.push(readme);
                })
            },
        ),
        case(
            "path-below-a-file",
            Paths,
            &["readme.md/x", "lies below a regular file"],
            |c| c.publish_forged_entries(&[("README.md/x", EntryKind::Dir)]),
        ),
        case(
            "path-below-a-symlink",
            Paths,
            &["bin/app-link/x", "below a symlink"],
            |c| c.publish_forged_entries(&[("bin/app-link/x", EntryKind::Dir)]),
        ),
        case(
            "symlink-absolute-target",
            Paths,
            &[
                "zz-link -> /etc/passwd",
                "symlink target is empty or absolute",
            ],
            |c| c.publish_forged_entries(&[("zz-link", link("/etc/passwd"))]),
        ),
        case(
            "symlink-escapes",
            Paths,
            &["share/zz-link -> ../../etc", "points outside the release"],
            |c| c.publish_forged_entries(&[("share/zz-link", link("../../etc"))]),
        ),
        case(
            "symlink-through-a-symlink",
            Paths,
            &[
                "zz-d/esc -> up/..",
                "passes through something that is not a directory",
            ],
            |c| {
                // Lexically inside; but the OS would follow zz-d/up (-> the root) first, and
                // then `..` leaves the tree.
                c.publish_forged_entries(&[
                    ("zz-d", EntryKind::Dir),
                    ("zz-d/up", link("..")),
                    ("zz-d/esc", link("up/..")),
                ])
            },
        ),
        case("symlink-loop", Paths, &["zz-a -> zz-b", "loops"], |c| {
            c.publish_forged_entries(&[("zz-a", link("zz-b")), ("zz-b", link("zz-a"))])
        }),
        case(
            "symlink-through-a-file",
            Paths,
            &[
                "zz-link -> readme.md/../bin",
                "passes through something that is not a directory",
            ],
            |c| c.publish_forged_entries(&[("zz-link", link("README.md/../bin"))]),
        ),
    ]
}
