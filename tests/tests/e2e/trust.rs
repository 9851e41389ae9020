//! The root of trust: root documents on the origin (`keys/root-<n>`), key rotation, and a
//! client that pins a root and walks the chain.

use std::fs;
use std::path::{Path, PathBuf};

use relsync_tests::{
    CHANNEL, Nginx, NginxOptions, Output, V1, V2, World, assert_trees_equal, current, current_link,
};

/// A world whose origin has a root chain: separate root, release and channel keys.
struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn new(w: &World, names: &[&str]) -> Self {
        let dir = w.path().join("role-keys");
        fs::create_dir_all(&dir).expect("mkdir role-keys");
        for name in names {
            w.keygen(&dir.join(format!("{name}.key")))
                .assert_success(&format!("keygen {name}"));
        }
        Self { dir }
    }

    fn secret(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    fn public(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key.pub"))
    }
}

fn root(w: &World, args: &[&str]) -> Output {
    w.publisher().arg("root").args(args).run()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// root-1 with one root, release and channel key each, signed and published.
fn init_chain(w: &World, keys: &Keys) -> PathBuf {
    let doc = w.path().join("root-1.doc");
    root(
        w,
        &[
            "init",
            "--root",
            path(&keys.public("root")),
            "--release",
            path(&keys.public("release")),
            "--channel",
            path(&keys.public("channel")),
            "--out",
            path(&doc),
        ],
    )
    .assert_success("root init");
    let unsigned = root(w, &["publish", path(&doc), "--to", path(&w.origin)]);
    unsigned.assert_failure("publishing an unsigned root");
    assert!(
        unsigned.stderr.contains("not a valid first root"),
        "{unsigned}"
    );
    root(
        w,
        &["sign", path(&doc), "--key", path(&keys.secret("root"))],
    )
    .assert_success("root sign");
    root(w, &["publish", path(&doc), "--to", path(&w.origin)]).assert_success("root publish");
    doc
}

/// Pushes `tree` signed by the release key and channel key `channel`.
fn push(w: &World, keys: &Keys, tree: &Path, version: &str, channel: &str) -> Output {
    let (release, channel) = (keys.secret("release"), keys.secret(channel));
    w.publisher()
        .arg("push")
        .arg(tree)
        .args([
            "--version",
            version,
            "--channel",
            CHANNEL,
            "--to",
            path(&w.origin),
        ])
        .args(["--key", path(&release), "--channel-key", path(&channel)])
        .run()
}

/// Rotates the channel role to key `channel`: root 2, signed by the root key, published.
fn rotate_channel(w: &World, keys: &Keys, channel: &str) -> PathBuf {
    let doc = w.path().join("root-2.doc");
    let new_key = keys.public(channel);
    root(
        w,
        &[
            "rotate",
            "--to",
            path(&w.origin),
            "--channel",
            path(&new_key),
            "--out",
            path(&doc),
        ],
    )
    .assert_success("root rotate");
    root(
        w,
        &["sign", path(&doc), "--key", path(&keys.secret("root"))],
    )
    .assert_success("root sign");
    root(w, &["publish", path(&doc), "--to", path(&w.origin)]).assert_success("publish root 2");
    doc
}

fn update_pinned(w: &World, origin: &str, dir: &Path, pinned: &Path) -> Output {
    w.relsync()
        .arg("update")
        .args([
            "--origin",
            origin,
            "--channel",
            CHANNEL,
            "--trust-root",
            path(pinned),
        ])
        .args(["--install", path(dir), "--json"])
        .run()
}

/// A client pinned to root 1 follows a rotation of the channel key to root 2; a push signed
/// with a key the newest root does not name is refused by the publisher.
#[test]
fn a_pinned_client_follows_key_rotation() {
    let w = World::new();
    let keys = Keys::new(&w, &["root", "release", "channel", "channel2"]);
    let pinned = init_chain(&w, &keys);
    let refused = push(&w, &keys, &w.v1, V1, "channel2");
    refused.assert_failure("push signed by a channel key root 1 does not name");
    assert!(
        refused.stderr.contains("channel role of root version 1"),
        "{refused}"
    );
    push(&w, &keys, &w.v1, V1, "channel").assert_success("push v1");
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("pinned");
    update_pinned(&w, &n.url(), &dir, &pinned).assert_success("install v1 from a pinned root");
    assert_trees_equal(&current(&dir), &w.v1);

    rotate_channel(&w, &keys, "channel2");
    let old_channel = push(&w, &keys, &w.v2, V2, "channel");
    old_channel.assert_failure("push signed by the rotated-out channel key");
    push(&w, &keys, &w.v2, V2, "channel2").assert_success("push v2");
    let out = update_pinned(&w, &n.url(), &dir, &pinned);
    out.assert_success("update across the rotation");
    assert_trees_equal(&current(&dir), &w.v2);
}

/// The pointer names root 2, but the origin's `keys/root-2` is tampered, or replaced by one
/// that only an attacker's key signed: the client refuses to walk to it, says why, and keeps
/// its install. With the real root 2 back, the update goes through.
#[test]
fn a_forged_or_tampered_root_is_refused() {
    let w = World::new();
    let keys = Keys::new(&w, &["root", "release", "channel", "channel2", "evil"]);
    let pinned = init_chain(&w, &keys);
    push(&w, &keys, &w.v1, V1, "channel").assert_success("push v1");
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("victim");
    update_pinned(&w, &n.url(), &dir, &pinned).assert_success("install v1");
    let link = current_link(&dir);

    let real = rotate_channel(&w, &keys, "channel2");
    push(&w, &keys, &w.v2, V2, "channel2").assert_success("push v2");

    // The attacker's root 2 names their key for every role and carries only their signature.
    let evil = w.path().join("evil-root-2.doc");
    let evil_key = path(&keys.public("evil")).to_owned();
    root(
        &w,
        &[
            "rotate",
            "--to",
            path(&w.origin),
            "--root",
            &evil_key,
            "--release",
            &evil_key,
            "--channel",
            &evil_key,
            "--out",
            path(&evil),
        ],
    )
    .assert_success("root rotate (attacker)");
    root(
        &w,
        &["sign", path(&evil), "--key", path(&keys.secret("evil"))],
    )
    .assert_success("root sign (attacker)");
    let mut tampered = fs::read(&real).expect("root 2");
    let middle = tampered.len() / 3;
    tampered[middle] ^= 0x20;
    let planted = w.origin.join("keys/root-2");
    for (what, bytes) in [
        ("tampered", tampered),
        ("forged", fs::read(&evil).expect("evil root")),
    ] {
        fs::write(&planted, bytes).expect("plant root 2");
        let out = update_pinned(&w, &n.url(), &dir, &pinned);
        out.assert_failure(&format!("update with a {what} root 2"));
        assert!(out.stderr.contains("root document"), "{what}: {out}");
        assert_eq!(
            current_link(&dir),
            link,
            "a refused update switched `current`\n{out}"
        );
        assert_trees_equal(&current(&dir), &w.v1);
        // The publisher refuses to push on top of a broken chain too.
        let push = push(&w, &keys, &w.v2, "2.1.0", "channel2");
        push.assert_failure(&format!("push over a {what} root 2"));
        assert!(push.stderr.contains("keys/root-2"), "{what}: {push}");
    }
    fs::copy(&real, &planted).expect("restore root 2");
    update_pinned(&w, &n.url(), &dir, &pinned).assert_success("update with the real root 2");
    assert_trees_equal(&current(&dir), &w.v2);
}
