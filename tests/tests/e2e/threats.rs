//! One hostile input per threat (DESIGN.md §6), as a table: trust, resources, content and
//! paths. Hostile *signed* metadata is forged with the world's own keys ([`Forge`]), so these
//! cases test what the client checks beyond signatures.
//!
//! Each table shares one world: an nginx origin holding v1 and v2, and a template install of
//! v1 made before v2 was pushed. For every case ([`Bench::run`]):
//!
//! 1. a copy of the template install (or, for a fresh-install case, an empty dir) meets the
//!    origin after the case's change to it;
//! 2. `relsync update --json` must exit non-zero, and both stderr and the JSON `error` field
//!    must contain the case's expected words, which name the problem;
//! 3. the install must be untouched: `current` points where it did, and the release it points
//!    to is the same tree, byte for byte;
//! 4. the install dir must hold no stray file ([`strays`] says exactly what may differ);
//! 5. the origin must be intact wherever the case did not change it;
//! 6. once the origin is restored (and checked byte for byte), the same install must update to
//!    v2: nothing the hostile run did is in the way.
//!
//! Every case runs even when an earlier one fails; each test prints its table (case, category,
//! expected words, the error observed) and then fails with every problem found. Run with
//! `--nocapture` to see the tables.
//!
//! The root-chain table runs in its own world, pinned (`--trust-root`) to a root 1 whose root,
//! release and channel roles each need 2 of 2 keys. Its `directive-*` rows are rollback
//! directives (issue 18) that do not carry the release role's threshold or do not fit the
//! pointer; a yank the channel role signs with no directive is accepted and moves nobody down,
//! so it is not a row here but a test in `e2e/trust.rs`.
//!
//! Not here, by design: the manifest cannot express device files, FIFOs, sockets or
//! setuid/setgid bits (only dirs, regular files with mode 0644/0755 and symlinks), so there is
//! no input to send; a chunk table over `limits::CHUNKS` (16 Mi entries of at least 35 bytes)
//! cannot fit in a manifest under `limits::MANIFEST_BYTES` (256 MiB), so `chunk-count-bomb`
//! declares that many chunks in a short body instead; a clock set back needs control of the
//! client's clock, and a `206` whose body stops short needs a server other than nginx (both
//! are transfer faults the fetch retries; see `origin_errors.rs` for slow and failing
//! servers). The update deadline, platform binding, detached signatures, pointer refresh and
//! a corrupt state database have their own tests (`origin_errors.rs`, `e2e/trust.rs`,
//! `drift.rs`).
//!
//! The executables table runs in its own world too, whose releases hold a synthetic x86-64
//! executable pushed with bsdiff on, so that v2 has delta frames with projected references
//! and a reference map (issue 20).
//!
//! Layout: this file holds the case type and one test per table; each table is a module of
//! its own ([`trust`], [`root_chain`], [`resources`], [`content`], [`executables`],
//! [`paths`]). [`bench`] builds
//! a world and runs a table through the steps above, [`snapshot`] takes the install and origin
//! snapshots those steps compare, and [`forgery`] is what a case's `mutate` gets: the forge, the
//! facts about the world, and the helpers that forge hostile releases.

#[path = "threats/bench.rs"]
mod bench;
#[path = "threats/content.rs"]
mod content;
#[path = "threats/executables.rs"]
mod executables;
#[path = "threats/forgery.rs"]
mod forgery;
#[path = "threats/paths.rs"]
mod paths;
#[path = "threats/resources.rs"]
mod resources;
#[path = "threats/root_chain.rs"]
mod root_chain;
#[path = "threats/snapshot.rs"]
mod snapshot;
#[path = "threats/trust.rs"]
mod trust;

use std::collections::BTreeSet;

use bench::Bench;
use forgery::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Trust,
    Resources,
    Content,
    Paths,
}

/// The install the hostile update meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A copy of the v1 template install.
    Installed,
    /// An empty dir: a first install.
    Fresh,
}

/// The server the hostile update talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Normal,
    /// nginx answering every GET with `200` and the whole file.
    IgnoringRanges,
}

/// One hostile input.
struct Case {
    name: &'static str,
    category: Category,
    /// Words the error must contain (compared in lower case).
    expect: &'static [&'static str],
    start: Start,
    server: Server,
    /// Changes the origin through the forge.
    mutate: fn(&mut Ctx<'_>),
}

fn case(
    name: &'static str,
    category: Category,
    expect: &'static [&'static str],
    mutate: fn(&mut Ctx<'_>),
) -> Case {
    Case {
        name,
        category,
        expect,
        start: Start::Installed,
        server: Server::Normal,
        mutate,
    }
}

impl Case {
    fn fresh(mut self) -> Self {
        self.start = Start::Fresh;
        self
    }

    fn server(mut self, server: Server) -> Self {
        self.server = server;
        self
    }
}

#[test]
fn threats_trust() {
    Bench::new().run_all("trust", trust::cases());
}

#[test]
fn threats_root_chain() {
    Bench::with_root_chain().run_all("trust: the root chain", root_chain::cases());
}

#[test]
fn threats_resources() {
    Bench::new().run_all("resources", resources::cases());
}

#[test]
fn threats_content() {
    Bench::new().run_all("content", content::cases());
}

#[test]
fn threats_executables() {
    Bench::with_executables().run_all("executables", executables::cases());
}

#[test]
fn threats_paths() {
    Bench::new().run_all("paths", paths::cases());
}

/// The table must stay a table of distinct threats.
#[test]
fn threat_names_are_distinct_and_numerous() {
    let all: Vec<Case> = [
        trust::cases(),
        root_chain::cases(),
        resources::cases(),
        content::cases(),
        executables::cases(),
        paths::cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let names: BTreeSet<&str> = all.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), all.len(), "two cases share a name");
    assert!(all.len() >= 30, "only {} hostile inputs", all.len());
    for category in [
        Category::Trust,
        Category::Resources,
        Category::Content,
        Category::Paths,
    ] {
        assert!(
            all.iter().filter(|c| c.category == category).count() >= 5,
            "fewer than 5 cases of {category:?}"
        );
    }
}
