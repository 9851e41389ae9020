//! `cdn-publisher`: keygen, push layout and stats, idempotent re-push, version monotonicity.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use relsync_tests::{
    Entry, Nginx, NginxOptions, V1, V2, World, assert_trees_equal, current, diff_digests,
    parse_pubkey, tree_digest,
};

fn pub_path(key: &Path) -> std::path::PathBuf {
    let mut s = key.as_os_str().to_os_string();
    s.push(".pub");
    s.into()
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
    let w = World::new();
    let mode = fs::metadata(&w.key)
        .expect("key exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "secret key mode is {mode:o}, want 600");
    let pubp = pub_path(&w.key);
    assert!(pubp.is_file(), "{} missing", pubp.display());
    assert!(
        !fs::read(&pubp).expect("read pub").is_empty(),
        "{} is empty",
        pubp.display()
    );

    let (key_before, pub_before) = (
        fs::read(&w.key).expect("key"),
        fs::read(&pubp).expect("pub"),
    );
    let again = w.keygen(&w.key);
    again.assert_failure("keygen over an existing key");
    assert_eq!(
        fs::read(&w.key).expect("key"),
        key_before,
        "keygen overwrote the secret key"
    );
    assert_eq!(
        fs::read(&pubp).expect("pub"),
        pub_before,
        "keygen overwrote KEY.pub"
    );

    let other = w.path().join("keys/other.key");
    let out = w.keygen(&other);
    out.assert_success("keygen of a second key");
    assert_ne!(
        parse_pubkey(&out),
        w.pubkey,
        "two keygens gave the same key"
    );
}

fn assert_hex_names(snap: &std::collections::BTreeMap<String, Entry>, sub: &str) -> usize {
    let names: Vec<_> = snap
        .iter()
        .filter(|(p, e)| p.starts_with(&format!("{sub}/")) && matches!(e, Entry::File { .. }))
        .map(|(p, _)| p[sub.len() + 1..].to_string())
        .collect();
    for n in &names {
        assert!(
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_hexdigit()),
            "{sub}/{n}: origin object names must be hex ids"
        );
    }
    names.len()
}

fn regular_file_bytes(dir: &Path) -> u64 {
    tree_digest(dir)
        .values()
        .map(|e| match e {
            Entry::File { size, .. } => *size,
            _ => 0,
        })
        .sum()
}

#[test]
fn push_writes_the_layout_and_reports_json() {
    let w = World::new();
    let out = w.push(&w.v1, V1, &["--json"]);
    out.assert_success("push --json");
    let r = relsync_tests::Report::new(out);
    let (files, bytes, chunks, unique, pack) = (
        r.u64("files"),
        r.u64("bytes"),
        r.u64("chunks"),
        r.u64("unique_chunks"),
        r.u64("pack_bytes"),
    );
    assert!(files > 0, "files = 0\n{}", r.out);
    let total = regular_file_bytes(&w.v1);
    assert_eq!(
        bytes, total,
        "`bytes` must be the release's file bytes\n{}",
        r.out
    );
    assert!(
        chunks >= unique && unique >= 1,
        "want chunks >= unique_chunks >= 1\n{}",
        r.out
    );
    // Mostly random data: compression cannot shrink it much, nor may framing bloat it.
    assert!(
        pack > total / 2 && pack <= total + total / 50 + 65_536,
        "pack_bytes {pack} is implausible for {total} bytes of mostly random data\n{}",
        r.out
    );

    let snap = w.origin_snapshot();
    assert!(
        matches!(snap.get("channels/stable"), Some(Entry::File { .. })),
        "origin lacks channels/stable: {:?}",
        snap.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        assert_hex_names(&snap, "manifests"),
        1,
        "one release, one manifest"
    );
    assert!(assert_hex_names(&snap, "packs") >= 1, "no pack written");
    let pack_files: u64 = snap
        .iter()
        .filter(|(p, _)| p.starts_with("packs/"))
        .map(|(_, e)| match e {
            Entry::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    assert_eq!(
        pack_files, pack,
        "pack_bytes must equal the bytes written under packs/"
    );
}

#[test]
fn repushing_the_same_release_changes_nothing() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let s1 = w.origin_snapshot();
    w.push_ok(&w.v1, V1);
    let d = diff_digests(&w.origin_snapshot(), &s1);
    assert!(
        d.is_empty(),
        "re-push of v1 changed the origin:\n  {}",
        d.join("\n  ")
    );

    w.push_ok(&w.v2, V2);
    let s2 = w.origin_snapshot();
    assert_ne!(s1, s2, "push of v2 changed nothing");
    w.push_ok(&w.v2, V2);
    let d = diff_digests(&w.origin_snapshot(), &s2);
    assert!(
        d.is_empty(),
        "re-push of v2 changed the origin:\n  {}",
        d.join("\n  ")
    );
}

#[test]
fn lower_or_equal_version_is_refused_unless_forced() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    w.push_ok(&w.v2, V2);
    let snap = w.origin_snapshot();

    w.push(&w.v1, "1.5.0", &[])
        .assert_failure("push of a lower version");
    let d = diff_digests(&w.origin_snapshot(), &snap);
    assert!(
        d.is_empty(),
        "refused push changed the origin:\n  {}",
        d.join("\n  ")
    );

    w.push(&w.v1, V2, &[])
        .assert_failure("push of the same version with other content");
    let d = diff_digests(&w.origin_snapshot(), &snap);
    assert!(
        d.is_empty(),
        "refused push changed the origin:\n  {}",
        d.join("\n  ")
    );

    w.push(&w.v1, "1.5.0", &["--force"])
        .assert_success("push --force of a lower version");

    // The channel now serves 1.5.0 with v1's content.
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("forced");
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), "1.5.0", "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v1);
}

/// A release keeps the frames its parent already has (plain frames of shared chunks, solid
/// frames of unchanged runs): copied from the parent's packs, they install like any frame. A
/// damaged parent frame stops the next push with the pack named, and the channel stays as it
/// was.
#[test]
fn frames_the_parent_has_are_copied_and_a_damaged_one_stops_the_push() {
    let w = World::new();
    // No delta frames: they are not what this is about, and they cost most of a push's time.
    let push = |tree: &Path, version: &str, extra: &[&str]| {
        w.push(tree, version, &[&["--delta-from", "0"], extra].concat())
    };
    push(&w.v1, V1, &[]).assert_success("push v1");
    // v2 shares some chunks with v1; v3 is v2 and compressible text (so it has solid frames).
    let out = push(&w.v2, V2, &["--json"]);
    out.assert_success("push v2");
    let r = relsync_tests::Report::new(out);
    let reused = r.u64("plain_reused");
    assert!(
        reused > 0 && reused < r.u64("unique_chunks"),
        "v2 shares some chunks with v1 and changes others\n{}",
        r.out
    );
    let v3 = w.path().join("src-v3");
    relsync_tests::copy_tree(&w.v2, &v3);
    let text = relsync_tests::pseudo_text("added", 1 << 20);
    fs::write(v3.join("added.txt"), text).unwrap();
    let before_v3 = w.origin_snapshot();
    push(&v3, "3.0.0", &[]).assert_success("push v3");

    // The same tree again: every frame is the parent's, solid ones included.
    let out = push(&v3, "3.0.1", &["--json"]);
    out.assert_success("push v3 again as 3.0.1");
    let r = relsync_tests::Report::new(out);
    assert!(
        r.u64("plain_reused") == r.u64("unique_chunks")
            && r.u64("solid_reused") == r.u64("solid_frames")
            && r.u64("solid_frames") >= 1,
        "an unchanged tree copies every frame\n{}",
        r.out
    );
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("fresh");
    let installed = w.update_ok(&n.url(), &dir);
    assert_eq!(installed.str("version"), "3.0.1", "{}", installed.out);
    assert_trees_equal(&current(&dir), &v3);

    // Flip a byte near the start of each pack of 3.0.0 (3.0.1's are the same objects): in the
    // main pack that is a plain frame, which the next release copies.
    let damaged: Vec<String> = w
        .origin_snapshot()
        .into_keys()
        .filter(|p| p.starts_with("packs/") && !before_v3.contains_key(p))
        .collect();
    assert!(!damaged.is_empty(), "3.0.0 wrote no pack");
    for pack in &damaged {
        let path = w.origin.join(pack);
        let mut bytes = fs::read(&path).unwrap();
        bytes[40] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
    }
    let v4 = w.path().join("src-v4");
    relsync_tests::copy_tree(&v3, &v4);
    fs::write(v4.join("added-too.txt"), "a file v3 lacks\n").unwrap();
    let before = w.origin_snapshot();
    let out = push(&v4, "4.0.0", &[]);
    out.assert_failure("push onto a damaged parent");
    assert!(
        out.stderr.contains("is damaged on the origin")
            && damaged
                .iter()
                .any(|p| out.stderr.contains(p.trim_start_matches("packs/"))),
        "the error names the damaged pack\n{out}"
    );
    assert_eq!(
        before.get("channels/stable"),
        w.origin_snapshot().get("channels/stable"),
        "the refused push moved the channel"
    );
    push(&v4, "4.0.0", &["--recompress"])
        .assert_success("push --recompress reads no frame of the parent");
}

/// The publisher refuses trees a client would refuse, before writing anything: a symlink whose
/// target passes through another symlink (`d/up -> ..`, `esc -> d/up/../x` resolves outside
/// the tree), and special files.
#[test]
fn unsafe_trees_are_refused_with_the_file_named() {
    let w = World::new();
    let tree = w.v1.with_file_name("hostile");
    fs::create_dir_all(tree.join("d")).expect("mkdir");
    std::os::unix::fs::symlink("..", tree.join("d/up")).expect("symlink");
    std::os::unix::fs::symlink("d/up/../x", tree.join("esc")).expect("symlink");
    let out = w.push(&tree, V1, &[]);
    assert!(!out.status.success(), "escaping symlink accepted\n{out}");
    assert!(out.stderr.contains("esc"), "the file is not named\n{out}");
    assert!(
        !w.origin.join("channels/stable").exists(),
        "a refused push wrote a pointer"
    );

    let fifo_tree = w.v1.with_file_name("fifo");
    fs::create_dir_all(&fifo_tree).expect("mkdir");
    let status = std::process::Command::new("mkfifo")
        .arg(fifo_tree.join("pipe"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let out = w.push(&fifo_tree, V1, &[]);
    assert!(!out.status.success(), "FIFO accepted\n{out}");
    assert!(out.stderr.contains("FIFO"), "{out}");
}

/// A release with no files (an empty build directory, say) would replace every install's
/// files with nothing: `push` refuses it, writing nothing, unless `--allow-empty`.
#[test]
fn an_empty_release_is_refused_unless_allowed() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let before = w.origin_snapshot();
    let empty = w.v1.with_file_name("empty-build");
    fs::create_dir_all(empty.join("lib")).expect("mkdir");
    let out = w.push(&empty, V2, &[]);
    assert!(
        !out.status.success(),
        "an empty release was published\n{out}"
    );
    assert!(
        out.stderr.contains("holds no files") && out.stderr.contains("--allow-empty"),
        "the refusal must say why and how to override it\n{out}"
    );
    assert_eq!(
        w.origin_snapshot(),
        before,
        "a refused push changed the origin"
    );
    let out = w.push(&empty, V2, &["--allow-empty"]);
    assert!(out.status.success(), "--allow-empty publishes\n{out}");
}

/// `promote` and `yank` through the real binary: both re-sign the pointer (its signature
/// still verifies), `promote` refuses another version, `yank` moves the channel back to the
/// previous release and refuses when there is nothing left to fall back to.
#[test]
fn promote_and_yank_resign_the_channel_pointer() {
    use relsync_engine::directive::RollbackDirective;
    use relsync_engine::manifest::Pointer;
    use relsync_engine::root::RoleKeys;

    let w = World::new();
    // Small trees: the test is about the pointer, not the packing.
    for (version, tree) in [(V1, "small-1"), (V2, "small-2")] {
        let tree = w.path().join(tree);
        fs::create_dir_all(&tree).expect("mkdir");
        fs::write(tree.join("VERSION"), version).expect("write");
        w.push(&tree, version, &["--rollout-percent", "10"])
            .assert_success("push to 10%");
    }
    let signed = || {
        let bytes = fs::read(w.origin.join("channels/stable")).expect("read the pointer");
        let key = w.pubkey.parse().expect("public key");
        Pointer::open(&bytes, &RoleKeys::single(key)).expect("the pointer verifies")
    };
    assert_eq!(signed().rollout_percent, 10);
    let lifecycle = |command: &str, version: &str, extra: &[&str]| {
        w.publisher()
            .arg(command)
            .arg("--origin")
            .arg(&w.origin)
            .args(["--channel", "stable", "--version", version, "--channel-key"])
            .arg(&w.key)
            .args(extra)
            .arg("--json")
            .run()
    };

    let snap = w.origin_snapshot();
    let out = lifecycle("promote", V1, &["--percent", "50"]);
    out.assert_failure("promote of a version the channel does not offer");
    assert!(out.stderr.contains("offers 2.0.0, not 1.0.0"), "{out}");
    assert!(diff_digests(&w.origin_snapshot(), &snap).is_empty());
    lifecycle("promote", V2, &["--percent", "101"]).assert_failure("promote to 101%");

    let out = lifecycle("promote", V2, &["--percent", "50"]);
    out.assert_success("promote to 50%");
    let r = relsync_tests::Report::new(out);
    assert_eq!(r.u64("previous_rollout_percent"), 10, "{}", r.out);
    let p = signed();
    assert_eq!((p.version.to_string(), p.rollout_percent), (V2.into(), 50));

    // Rolling installs back takes the release key; the channel key alone changes nothing.
    let snap = w.origin_snapshot();
    let out = lifecycle("yank", V2, &["--roll-back"]);
    out.assert_failure("yank --roll-back without the release key");
    assert!(
        out.stderr.contains("needs the release role")
            && out.stderr.contains("--key RELEASE_KEY")
            && out.stderr.contains("--unsigned-directive-out FILE"),
        "{out}"
    );
    assert!(diff_digests(&w.origin_snapshot(), &snap).is_empty());
    let key = w.key.to_str().expect("utf-8 path");
    let out = lifecycle("yank", V2, &["--roll-back", "--key", key]);
    out.assert_success("yank of the current release");
    let r = relsync_tests::Report::new(out);
    assert_eq!(r.str("moved_from"), V2, "{}", r.out);
    assert_eq!(
        r.json["rollback"],
        serde_json::json!({ "from": [V2], "to": V1 }),
        "{}",
        r.out
    );
    let p = signed();
    assert_eq!(p.version.to_string(), V1);
    assert_eq!(p.rollout_percent, 100);
    assert_eq!(p.yanked, vec![V2.parse().expect("version")]);
    let key = w.pubkey.parse().expect("public key");
    let directive = RollbackDirective::verified(&p, &RoleKeys::single(key))
        .expect("the directive verifies")
        .expect("a directive");
    assert_eq!(directive.from, p.yanked);

    let out = lifecycle("yank", V1, &[]);
    out.assert_failure("yank of the last release standing");
    assert!(
        out.stderr.contains("no earlier release that is not yanked"),
        "{out}"
    );
    assert_eq!(signed().version.to_string(), V1);
}

/// Release notes larger than clients accept are refused before anything is written.
#[test]
fn oversized_or_conflicting_release_notes_are_refused() {
    let w = World::new();
    let notes = w.path().join("NOTES.md");
    fs::write(&notes, vec![b'n'; 16 * 1024 + 1]).expect("write notes");
    let notes = notes.to_str().expect("utf-8 path");
    let out = w.push(&w.v1, V1, &["--notes-file", notes]);
    out.assert_failure("push with 16 KiB + 1 of notes");
    assert!(out.stderr.contains("16385 bytes"), "{out}");
    w.push(&w.v1, V1, &["--notes-file", notes, "--notes", "hi"])
        .assert_failure("push with --notes and --notes-file");
    assert!(
        !w.origin.join("channels/stable").exists(),
        "a refused push wrote a pointer"
    );
}
