//! Attacks from the same machine, as a second local user would make them (`setpriv` to an
//! unprivileged uid), and the install directories an operator hands relsync: relsync runs as
//! root and must never be the way in (issue 18).
//!
//! Every test here plays the second user with `setpriv`, so it needs root (CI runs as root);
//! run as anyone else, each fails saying so rather than passing without running.
//!
//! | attack | test |
//! |---|---|
//! | a link planted in `.relsync` (lock, database, trust copy, install id, audit files, their temporaries, `chunks/`, `staging/`) redirects a root write | `links_planted_in_relsync_state_are_never_followed` |
//! | a hard link in `.relsync` to a file outside the install | same |
//! | `.relsync` left writable by others (an install made under umask 000): the attacker plants `lock -> /root-only-file` | `an_install_another_user_could_write_is_refused` |
//! | the install directory owned by another user, or below a directory another user owns | same |
//! | with relsync's own modes, the attacker can plant nothing and change nothing in `current` | same |
//! | modes follow the umask (0777 trees, 0666 state) | `modes_are_explicit_whatever_the_umask` |
//! | a drifted directory mode is not reported | same |
//! | `releases/` of a deploy tool, or a backup kept there, deleted after an update | `only_what_relsync_made_is_ever_deleted` |
//! | an unmanaged `current` directory found only after the whole download | same |
//! | `releases/` replaced by a link between runs: the new release renamed through it | `a_releases_link_is_not_followed` |
//! | a fresh install takes whatever product the trusted key signed | `a_fresh_install_must_name_its_product` |
//! | `rollback` switches to a previous release that was tampered with | `rollback_reverifies_the_release_it_switches_to` |
//! | a health check outlives its timeout through the processes it started | `a_health_check_timeout_kills_everything_it_started` |

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use relsync_tests::{
    Cmd, Nginx, Output, V2, World, assert_trees_equal, copy_tree, current, current_link,
    tree_digest,
};

use crate::common::{require_root, run_log, world_with_v1};

/// The second local user: owns nothing here, belongs to no group of ours.
const ATTACKER: u32 = 4242;

/// A world whose temp dir other users may enter (as an ordinary parent directory would be),
/// with v1 pushed and nginx serving it.
fn open_world() -> (World, Nginx) {
    require_root("playing a second local user with setpriv");
    let (w, n) = world_with_v1();
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o755)).expect("chmod world");
    (w, n)
}

/// `script` run by `sh` as [`ATTACKER`].
fn as_attacker(script: &str) -> Output {
    Cmd::new("setpriv")
        .args([
            "--reuid",
            &ATTACKER.to_string(),
            "--regid",
            &ATTACKER.to_string(),
            "--clear-groups",
            "--",
            "sh",
            "-c",
            script,
        ])
        .run()
}

/// A root-only file outside every install: what the attacks aim at.
struct Victim {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Victim {
    fn new(w: &World, name: &str) -> Self {
        let path = w.path().join(name);
        let bytes = format!("root's {name}: never to be written by relsync\n").into_bytes();
        fs::write(&path, &bytes).expect("write victim");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod victim");
        Self { path, bytes }
    }

    fn assert_intact(&self, what: &str, out: &Output) {
        let meta = fs::symlink_metadata(&self.path).expect("stat victim");
        assert!(meta.is_file(), "{what}: the victim was replaced\n{out}");
        assert_eq!(
            fs::read(&self.path).expect("read victim"),
            self.bytes,
            "{what}: relsync wrote to a file outside the install\n{out}"
        );
        assert_eq!(meta.mode() & 0o7777, 0o600, "{what}: victim mode\n{out}");
        assert_eq!(meta.uid(), 0, "{what}: victim owner\n{out}");
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn status(w: &World, dir: &Path) -> Output {
    w.relsync()
        .arg("status")
        .arg("--install")
        .arg(dir)
        .arg("--json")
        .run()
}

/// The error a failed run printed, in lower case (stderr carries the whole cause chain).
fn error_text(out: &Output) -> String {
    out.stderr.to_lowercase()
}

fn assert_refused(out: &Output, what: &str, words: &[&str]) {
    out.assert_failure(what);
    let text = error_text(out);
    for word in words {
        assert!(
            text.contains(&word.to_lowercase()),
            "{what}: the error should say {word:?}\n{out}"
        );
    }
}

/// Links (and a hard link) planted in `.relsync` in place of each state file and folder: no
/// run follows one, and the file outside stays as it was. A run refuses when it cannot do
/// without the file (naming the link); one that only replaces the file replaces the link.
#[test]
fn links_planted_in_relsync_state_are_never_followed() {
    let (w, n) = open_world();
    let dir = w.install_dir("links");
    w.update_ok(&n.url(), &dir);
    let state = dir.join(".relsync");
    let victim = Victim::new(&w, "victim");
    let mut table = Vec::new();

    // Files read or written by every run, even one that finds nothing new.
    for name in [
        "lock",
        "state.redb",
        "trusted",
        "trusted.tmp",
        "install-id",
        "install-id.tmp",
        "audit.log",
        "audit.head",
        "audit.head.tmp",
    ] {
        let real = state.join(name);
        let aside = state.join(format!("{name}.aside"));
        let had = real.exists();
        if had {
            fs::rename(&real, &aside).expect("move aside");
        }
        symlink(&victim.path, &real).expect("plant link");
        let out = w.update(&n.url(), &dir, &[]);
        victim.assert_intact(name, &out);
        if !out.success() {
            assert_refused(&out, name, &["symbolic link"]);
        }
        table.push(format!(
            "{name:<16} {}",
            if out.success() {
                "replaced the link"
            } else {
                "refused, naming the link"
            }
        ));
        let _ = fs::remove_file(&real);
        if had {
            fs::rename(&aside, &real).expect("restore");
        }
    }
    // The files a run cannot do without are refused, not replaced.
    for name in [
        "lock",
        "state.redb",
        "trusted",
        "install-id",
        "audit.log",
        "audit.head",
    ] {
        assert!(
            table
                .iter()
                .any(|row| row.starts_with(name) && row.contains("refused")),
            "{name} must be refused:\n{}",
            table.join("\n")
        );
    }

    // A hard link to a file outside the install.
    fs::remove_file(state.join("lock")).expect("rm lock");
    fs::hard_link(&victim.path, state.join("lock")).expect("hard link");
    let out = w.update(&n.url(), &dir, &[]);
    assert_refused(&out, "hard-linked lock", &["hard links", "lock"]);
    victim.assert_intact("hard-linked lock", &out);
    fs::remove_file(state.join("lock")).expect("rm lock");
    table.push("lock (hard link) refused, naming it".into());

    // Folders a fetching run writes in: a link to a folder outside.
    w.push_ok(&w.v2, V2);
    let outside = w.path().join("outside");
    fs::create_dir_all(&outside).expect("mkdir outside");
    fs::write(outside.join("keep"), "keep").expect("write keep");
    // `chunks/` is refused; `staging/` is removed at open (a tree left behind is never
    // resumed), which removes a link there, never what it points at.
    for (name, refused) in [("chunks", true), ("staging", false)] {
        let link = state.join(name);
        let _ = fs::remove_dir_all(&link);
        symlink(&outside, &link).expect("plant dir link");
        let out = w.update(&n.url(), &dir, &[]);
        if refused {
            assert_refused(&out, name, &["symbolic link", name]);
            assert_trees_equal(&current(&dir), &w.v1);
        } else {
            out.assert_success(name);
            assert!(
                fs::symlink_metadata(&link).is_err(),
                "{name}: the link must be gone\n{out}"
            );
        }
        assert_eq!(
            fs::read_dir(&outside).expect("list outside").count(),
            1,
            "{name}: relsync wrote into the folder a link pointed at\n{out}"
        );
        // A failed run may have removed the link itself (never what it points at).
        let _ = fs::remove_file(&link);
        table.push(format!(
            "{name:<16} {}",
            if refused {
                "refused, naming the link"
            } else {
                "removed the link"
            }
        ));
    }
    let out = w.update(&n.url(), &dir, &[]);
    out.assert_success("update once the links are gone");
    assert_trees_equal(&current(&dir), &w.v2);
    println!("{}", table.join("\n"));
}

/// The attack of the issue: an install whose `.relsync` others can write (made under umask
/// 000 before relsync set its modes, or chmod'ed by hand), where the second user links `lock`
/// to a root-only file. Root's next routine run refuses to work on it, naming the directory,
/// its mode and the fix; the file stays intact. The same for an install directory owned by
/// the second user and one below a directory they own. With the modes relsync sets, the
/// second user cannot plant anything or change the installed release at all.
#[test]
fn an_install_another_user_could_write_is_refused() {
    let (w, n) = open_world();
    let victim = Victim::new(&w, "shadow");

    let dir = w.install_dir("loose");
    w.update_ok(&n.url(), &dir);
    let state = dir.join(".relsync");
    chmod(&state, 0o777);
    let planted = as_attacker(&format!(
        "rm -f {lock} && ln -s {victim} {lock}",
        lock = state.join("lock").display(),
        victim = victim.path.display()
    ));
    planted.assert_success("the second user plants a link in a world-writable .relsync");
    for out in [w.update(&n.url(), &dir, &[]), status(&w, &dir)] {
        assert_refused(
            &out,
            "a world-writable .relsync",
            &["refusing to work on", ".relsync", "mode 0777", "chmod go-w"],
        );
        victim.assert_intact("a world-writable .relsync", &out);
    }

    // The install directory owned by the second user: they could swap anything in it.
    let theirs = w.install_dir("theirs");
    w.update_ok(&n.url(), &theirs);
    chown(&theirs, ATTACKER);
    let out = w.update(&n.url(), &theirs, &[]);
    assert_refused(
        &out,
        "an install dir owned by another user",
        &["owned by uid 4242", "relsync runs as root", "chown"],
    );

    // An install below a directory the second user owns: they could move it aside and put a
    // link in its place.
    let home = w.path().join("home-of-4242");
    fs::create_dir(&home).expect("mkdir home");
    let below = home.join("app");
    let out = w.update(&n.url(), &below, &[]);
    out.assert_success("install below a root-owned directory");
    chown(&home, ATTACKER);
    let out = w.update(&n.url(), &below, &[]);
    assert_refused(
        &out,
        "an install below another user's directory",
        &["passes through", "home-of-4242", "owned by uid 4242"],
    );

    // The same through a link: the admin names a path through the second user's directory
    // that links to a real one. Whoever may write the directory holding a link decides
    // where it points, so the link is refused too.
    let real = w.path().join("real-app");
    fs::create_dir(&real).expect("mkdir real");
    let theirs_dir = w.path().join("theirs-links");
    fs::create_dir(&theirs_dir).expect("mkdir theirs-links");
    symlink(&real, theirs_dir.join("app")).expect("link");
    chown(&theirs_dir, ATTACKER);
    let out = w.update(&n.url(), &theirs_dir.join("app"), &[]);
    assert_refused(
        &out,
        "an install path through a link in another user's directory",
        &["passes through", "theirs-links", "owned by uid 4242"],
    );
    assert!(
        fs::read_dir(&real).expect("list real").next().is_none(),
        "nothing may be created through the link\n{out}"
    );

    // Releases another user can change: an install made before relsync set its modes, under
    // umask 000 (`releases/` and the trees 0777), and a `releases/` another user owns
    // (a deploy tool's, adopted with --adopt).
    let old = w.install_dir("old-umask");
    w.update_ok(&n.url(), &old);
    let release = fs::canonicalize(current(&old)).expect("resolve current");
    chmod(&old.join("releases"), 0o777);
    let out = w.update(&n.url(), &old, &[]);
    assert_refused(
        &out,
        "a world-writable releases/",
        &["releases", "mode 0777", "chmod -r go-w"],
    );
    chmod(&old.join("releases"), 0o755);
    chmod(&release.join("bin"), 0o777);
    let out = w.update(&n.url(), &old, &[]);
    assert_refused(
        &out,
        "a world-writable directory in the installed release",
        &["bin", "mode 0777", "chmod -r go-w", "relsync verify"],
    );
    chmod(&release.join("bin"), 0o755);
    chown(&release.join("bin/app"), ATTACKER);
    let out = w.update(&n.url(), &old, &[]);
    assert_refused(
        &out,
        "a file of the installed release owned by another user",
        &["bin/app", "owned by uid 4242"],
    );
    let out = w.relsync().arg("verify").arg("--install").arg(&old).run();
    out.assert_failure("verify of a release with another user's file");
    chown(&old.join("releases"), ATTACKER);
    chown(&release.join("bin/app"), 0);
    let out = w.update(&n.url(), &old, &[]);
    assert_refused(
        &out,
        "a releases/ owned by another user",
        &["releases", "owned by uid 4242"],
    );

    // With relsync's modes the second user cannot plant or change anything.
    let dir = w.install_dir("tight");
    w.update_ok(&n.url(), &dir);
    let tries = [
        format!(
            "ln -s {} {}/.relsync/lock2",
            victim.path.display(),
            dir.display()
        ),
        format!("ls {}/.relsync", dir.display()),
        format!("mv {d}/releases {d}/moved", d = dir.display()),
        format!("ln -sfn /tmp {}/current", dir.display()),
        format!("echo x >> {}/current/bin/app", dir.display()),
        format!("touch {}/current/new-file", dir.display()),
    ];
    for attempt in &tries {
        let out = as_attacker(attempt);
        assert!(
            !out.success(),
            "the second user could {attempt:?} in an install relsync made\n{out}"
        );
    }
    let out = w.relsync().arg("verify").arg("--install").arg(&dir).run();
    out.assert_success("verify after the attempts");
    assert!(current_link(&dir).is_some());
}

/// Under `umask 000` (and 077), relsync still makes `.relsync` 0700, its files 0600, the
/// install directory, `releases/` and every directory of a release 0755, and files 0644 or
/// 0755 as signed. `relsync verify` reports a directory whose mode drifted, with the mode
/// found and the one expected.
#[test]
fn modes_are_explicit_whatever_the_umask() {
    let (w, n) = open_world();
    for umask in ["000", "077"] {
        let dir = w.install_dir(&format!("umask-{umask}"));
        let script = format!("umask {umask}; exec \"$0\" \"$@\"");
        let out = w
            .update_cmd(&n.url(), &dir)
            .wrapped(&["sh", "-c", &script])
            .run();
        out.assert_success(&format!("update under umask {umask}"));

        assert_eq!(mode(&dir), 0o755, "umask {umask}: the install directory");
        let state = dir.join(".relsync");
        assert_eq!(mode(&state), 0o700, "umask {umask}: .relsync");
        for entry in fs::read_dir(&state).expect("list .relsync") {
            let path = entry.expect("entry").path();
            assert_eq!(mode(&path), 0o600, "umask {umask}: {}", path.display());
        }
        assert_eq!(
            mode(&dir.join("releases")),
            0o755,
            "umask {umask}: releases/"
        );
        let release = fs::canonicalize(current(&dir)).expect("resolve current");
        check_tree_modes(&release, &w.v1, umask);
    }

    // A directory of the installed release made writable by all: verify names it and the mode.
    let dir = w.install_dir("umask-000");
    let release = fs::canonicalize(current(&dir)).expect("resolve current");
    chmod(&release.join("bin"), 0o777);
    let out = w.relsync().arg("verify").arg("--install").arg(&dir).run();
    out.assert_failure("verify of a release with a 0777 directory");
    assert!(
        out.stdout.contains("bin") && out.stdout.contains("mode 0777, expected 0755"),
        "verify must name the directory and both modes\n{out}"
    );
    chmod(&release.join("bin"), 0o755);
    let out = w.relsync().arg("verify").arg("--install").arg(&dir).run();
    out.assert_success("verify once the mode is back");
}

/// Every directory below `release` is 0755 and every file has the exec bit it has in the
/// source tree `source` (0755 or 0644).
fn check_tree_modes(release: &Path, source: &Path, umask: &str) {
    assert_eq!(mode(release), 0o755, "umask {umask}: {}", release.display());
    for entry in fs::read_dir(release).expect("list release") {
        let entry = entry.expect("entry");
        let (path, src) = (entry.path(), source.join(entry.file_name()));
        let meta = fs::symlink_metadata(&path).expect("stat");
        if meta.is_dir() {
            check_tree_modes(&path, &src, umask);
        } else if meta.is_file() {
            let expected = if mode(&src) & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            assert_eq!(mode(&path), expected, "umask {umask}: {}", path.display());
        }
    }
}

/// A directory laid out as deploy tools lay them out (`releases/<stamp>` and a `current` link,
/// a `shared/` folder) is refused without `--adopt`, before any request; with it, relsync
/// installs beside what is there and, three releases later, has deleted only its own. A
/// `current` that is a directory is refused before anything is downloaded, `--adopt` or not.
#[test]
fn only_what_relsync_made_is_ever_deleted() {
    let (w, n) = open_world();
    let dir = w.install_dir("deploy");
    let theirs = dir.join("releases/20240101");
    fs::create_dir_all(&theirs).expect("mkdir their release");
    fs::write(theirs.join("app.txt"), "their release\n").expect("write");
    fs::create_dir_all(dir.join("shared")).expect("mkdir shared");
    fs::write(dir.join("shared/config"), "their config\n").expect("write");
    symlink("releases/20240101", dir.join("current")).expect("their current");
    let theirs_before = tree_digest(&dir);

    let mark = n.mark();
    let out = w.update(&n.url(), &dir, &[]);
    assert_refused(
        &out,
        "a non-empty directory that is not an install",
        &[
            "not empty and not a relsync install",
            "current",
            "releases",
            "shared",
            "--adopt",
        ],
    );
    assert!(
        run_log(&n, mark).is_empty(),
        "the refusal must come before any request"
    );
    assert!(!dir.join(".relsync").exists(), "nothing may be created");
    assert_eq!(tree_digest(&dir), theirs_before);

    let out = w.update(&n.url(), &dir, &["--adopt"]);
    out.assert_success("install with --adopt");
    assert_trees_equal(&current(&dir), &w.v1);
    w.push_ok(&w.v2, V2);
    w.update_ok(&n.url(), &dir);
    // A third release, so that the first is cleaned up.
    let v3 = w.path().join("src-v3");
    copy_tree(&w.v2, &v3);
    fs::write(v3.join("NEWS"), "3.0.0\n").expect("write v3");
    w.push_ok(&v3, "3.0.0");
    w.update_ok(&n.url(), &dir);
    assert_trees_equal(&current(&dir), &v3);
    let releases: Vec<String> = fs::read_dir(dir.join("releases"))
        .expect("list releases")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        releases.len(),
        3,
        "theirs, v2 (kept for rollback) and v3: {releases:?}"
    );
    assert!(
        !releases.iter().any(|r| r.starts_with("1.0.0")),
        "relsync's own v1 goes: {releases:?}"
    );
    assert_eq!(
        fs::read_to_string(theirs.join("app.txt")).expect("their release"),
        "their release\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("shared/config")).expect("their config"),
        "their config\n"
    );

    // A `current` that is a directory: someone's data, never replaced.
    let dir = w.install_dir("unmanaged");
    fs::create_dir_all(dir.join("current")).expect("mkdir current");
    fs::write(dir.join("current/data"), "precious\n").expect("write data");
    for extra in [&[][..], &["--adopt"][..]] {
        let mark = n.mark();
        let out = w.update(&n.url(), &dir, extra);
        assert_refused(
            &out,
            "a current directory",
            &[
                "current",
                "is a directory that relsync did not make",
                "move it away",
            ],
        );
        assert!(
            run_log(&n, mark).is_empty(),
            "refused before any request\n{out}"
        );
        assert_eq!(
            fs::read_to_string(dir.join("current/data")).expect("data"),
            "precious\n"
        );
    }
}

/// `releases/` replaced by a link to a folder outside (after the install was made): the new
/// release is never renamed through it, the folder it points at is untouched, and once the
/// link is gone the update goes through.
#[test]
fn a_releases_link_is_not_followed() {
    let (w, n) = open_world();
    let dir = w.install_dir("releases-link");
    w.update_ok(&n.url(), &dir);
    w.push_ok(&w.v2, V2);
    let outside = w.path().join("outside");
    fs::create_dir_all(&outside).expect("mkdir outside");
    fs::write(outside.join("keep"), "keep\n").expect("write");
    let real = dir.join("releases.real");
    fs::rename(dir.join("releases"), &real).expect("move releases");
    symlink(&outside, dir.join("releases")).expect("plant releases link");
    let out = w.update(&n.url(), &dir, &[]);
    assert_refused(&out, "a releases link", &["releases", "symbolic link"]);
    let left: Vec<_> = fs::read_dir(&outside)
        .expect("list outside")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        ["keep"],
        "nothing may be written through the link\n{out}"
    );
    fs::remove_file(dir.join("releases")).expect("rm link");
    fs::rename(&real, dir.join("releases")).expect("restore releases");
    w.update_ok(&n.url(), &dir);
    assert_trees_equal(&current(&dir), &w.v2);
}

/// Item 5: a fresh install knows the product it wants. Without `--product` (or a pinned root)
/// it is refused, naming the product the origin offers and the flag; with another product it
/// is refused as a mismatch; with the right one it installs.
#[test]
fn a_fresh_install_must_name_its_product() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("unbound");
    let out = w
        .update_cmd(&n.url(), &dir)
        .env_remove("RELSYNC_PRODUCT")
        .run();
    assert_refused(
        &out,
        "a fresh install without a product",
        &[
            "does not say which product",
            "offers \"app\"",
            "--product app",
        ],
    );
    assert!(current_link(&dir).is_none(), "nothing installed\n{out}");
    let out = w
        .update_cmd(&n.url(), &dir)
        .env("RELSYNC_PRODUCT", "other-app")
        .run();
    assert_refused(
        &out,
        "a fresh install of another product",
        &["product mismatch", "other-app"],
    );
    assert!(current_link(&dir).is_none(), "nothing installed\n{out}");
    let out = w.update(&n.url(), &dir, &["--product", "app"]);
    out.assert_success("a fresh install of the product it names");
    // Once installed, the installed release binds the product.
    let out = w
        .update_cmd(&n.url(), &dir)
        .env_remove("RELSYNC_PRODUCT")
        .run();
    out.assert_success("a later update binds the installed product");
}

/// `relsync rollback` hashes the release it goes back to first: one whose file was changed,
/// or whose mode drifted, while it was not current is refused, naming the file; `current` stays.
#[test]
fn rollback_reverifies_the_release_it_switches_to() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("rollback");
    w.update_ok(&n.url(), &dir);
    let v1_link = current_link(&dir).expect("v1 link");
    w.push_ok(&w.v2, V2);
    w.update_ok(&n.url(), &dir);
    let v2_link = current_link(&dir).expect("v2 link");
    let previous = dir.join(&v1_link);

    let file = previous.join("bin/run.sh");
    let original = fs::read(&file).expect("read");
    chmod(&file, 0o755);
    fs::write(&file, b"#!/bin/sh\necho tampered\n").expect("tamper");
    let out = w.rollback(&dir);
    assert_refused(
        &out,
        "rollback to a tampered release",
        &[
            "refusing to roll back to 1.0.0",
            "bin/run.sh",
            "nothing was switched",
        ],
    );
    assert_eq!(current_link(&dir), Some(v2_link.clone()));
    fs::write(&file, &original).expect("restore");

    chmod(&previous.join("bin"), 0o777);
    let out = w.rollback(&dir);
    assert_refused(
        &out,
        "rollback to a loosened release",
        &["bin", "mode 0777"],
    );
    assert_eq!(current_link(&dir), Some(v2_link));
    chmod(&previous.join("bin"), 0o755);

    let out = w.rollback(&dir);
    out.assert_success("rollback to the intact release");
    assert_eq!(current_link(&dir), Some(v1_link));
}

/// A health check that starts background processes and outlives its trial period: the
/// release is rolled back, and none of the processes it started survives.
#[test]
fn a_health_check_timeout_kills_everything_it_started() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("health");
    w.update_ok(&n.url(), &dir);
    w.push_ok(&w.v2, V2);
    let pids = w.path().join("health-pids");
    let check = format!(
        "sleep 300 & echo $! > {p}; sh -c 'sleep 300' & echo $! >> {p}; wait",
        p = pids.display()
    );
    let out = w.update(
        &n.url(),
        &dir,
        &["--health-check", &check, "--trial-period", "3s"],
    );
    assert_refused(
        &out,
        "a health check that hangs",
        &["did not finish", "rolled back"],
    );
    assert_trees_equal(&current(&dir), &w.v1);
    let started: Vec<u32> = fs::read_to_string(&pids)
        .expect("pids")
        .lines()
        .map(|l| l.trim().parse().expect("pid"))
        .collect();
    assert_eq!(started.len(), 2, "{out}");
    let alive = |pid: &u32| {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    };
    for _ in 0..100 {
        if !started.iter().any(alive) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("processes the health check started outlived its timeout: {started:?}\n{out}");
}
