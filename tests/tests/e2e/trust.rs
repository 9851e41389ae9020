//! The root of trust: root documents on the origin (`keys/root-<n>`), key rotation, and a
//! client that pins a root and walks the chain.

use std::fs;
use std::path::{Path, PathBuf};

use relsync_engine::ManifestId;
use relsync_engine::directive::RollbackDirective;
use relsync_engine::manifest::{FORMAT_VERSION, Pointer};
use relsync_engine::paths::manifest_path;
use relsync_tests::{
    CHANNEL, Forge, Nginx, NginxOptions, Output, Report, V1, V2, World, assert_trees_equal,
    current, current_link, diff_digests, read_secret_key,
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
    init_chain_releasing(w, keys, &[path(&keys.public("release"))])
}

/// [`init_chain`] with `release` (`.pub` files or `ed25519:` keys, one signature needed) as
/// the release role.
fn init_chain_releasing(w: &World, keys: &Keys, release: &[&str]) -> PathBuf {
    let doc = w.path().join("root-1.doc");
    let (root_key, channel_key) = (keys.public("root"), keys.public("channel"));
    let mut args = vec![
        "init",
        "--root",
        path(&root_key),
        "--channel",
        path(&channel_key),
        "--out",
        path(&doc),
    ];
    for &key in release {
        args.extend(["--release", key]);
    }
    root(w, &args).assert_success("root init");
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

/// `relsync update` pinned to the root document `pinned`, with no `--product`: the pinned
/// root names the product, and binds it.
fn update_pinned(w: &World, origin: &str, dir: &Path, pinned: &Path) -> Output {
    update_pinned_with(w, origin, dir, pinned, &[])
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

/// An ed25519 key held by openssl, standing in for an HSM or cloud KMS: the publisher never
/// sees its secret, only its public key and the signatures it makes.
struct ExternalSigner {
    pem: PathBuf,
}

impl ExternalSigner {
    fn new(w: &World, name: &str) -> Self {
        let pem = w.path().join(format!("{name}.pem"));
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", path(&pem)]);
        Self { pem }
    }

    /// `ed25519:<hex>`: the last 32 bytes of the DER public key are the raw key.
    fn public(&self) -> String {
        let der = self.pem.with_extension("pub.der");
        openssl(&[
            "pkey",
            "-in",
            path(&self.pem),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            path(&der),
        ]);
        let der = fs::read(&der).expect("public key");
        format!("ed25519:{}", hex(&der[der.len() - 32..]))
    }

    /// Signs the message `cdn-publisher show FILE` prints for `file`; returns the hex
    /// signature.
    fn sign(&self, w: &World, file: &Path) -> String {
        let shown = w.publisher().arg("show").arg(file).run();
        shown.assert_success("show");
        let message = shown
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("message"))
            .unwrap_or_else(|| panic!("show prints no message\n{shown}"))
            .trim();
        let (msg, sig) = (file.with_extension("msg"), file.with_extension("sig"));
        fs::write(&msg, unhex(message)).expect("write message");
        openssl(&[
            "pkeyutl",
            "-sign",
            "-rawin",
            "-inkey",
            path(&self.pem),
            "-in",
            path(&msg),
            "-out",
            path(&sig),
        ]);
        hex(&fs::read(&sig).expect("signature"))
    }

    /// Signs `file` and attaches the signature with `cdn-publisher sign`.
    fn sign_into(&self, w: &World, file: &Path) -> Output {
        let signature = self.sign(w, file);
        w.publisher()
            .arg("sign")
            .arg(file)
            .args(["--public", &self.public(), "--signature", &signature])
            .run()
    }
}

fn openssl(args: &[&str]) {
    relsync_tests::Cmd::new("openssl")
        .args(args)
        .run()
        .assert_success("openssl");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The release and channel keys live in an external signer: `push --unsigned-out` writes the
/// packs and an unsigned manifest, openssl signs the printed messages, `sign` attaches them,
/// and `publish` / `channel set` put the documents on the origin only once the roles'
/// thresholds are met. A pointer left to expire is refused as stale metadata until
/// `channel refresh` re-signs it.
#[test]
fn detached_signatures_publish_releases_and_refresh_the_channel() {
    let w = World::new();
    let keys = Keys::new(&w, &["root"]);
    let (release, channel) = (
        ExternalSigner::new(&w, "release"),
        ExternalSigner::new(&w, "channel"),
    );
    let doc = w.path().join("root-1.doc");
    root(
        &w,
        &[
            "init",
            "--root",
            path(&keys.public("root")),
            "--release",
            &release.public(),
            "--channel",
            &channel.public(),
            "--out",
            path(&doc),
        ],
    )
    .assert_success("root init");
    root(
        &w,
        &["sign", path(&doc), "--key", path(&keys.secret("root"))],
    )
    .assert_success("root sign");
    root(&w, &["publish", path(&doc), "--to", path(&w.origin)]).assert_success("root publish");

    let manifest = w.path().join("v1.manifest");
    w.publisher()
        .arg("push")
        .arg(&w.v1)
        .args([
            "--version",
            V1,
            "--channel",
            CHANNEL,
            "--to",
            path(&w.origin),
        ])
        .args(["--unsigned-out", path(&manifest)])
        .run()
        .assert_success("push --unsigned-out");
    let pointer_path = w.origin.join("channels").join(CHANNEL);
    assert!(!pointer_path.exists(), "an unsigned push moved the channel");
    let publish = |extra: &[&str]| {
        w.publisher()
            .arg("publish")
            .arg(&manifest)
            .args(["--to", path(&w.origin)])
            .args(extra)
            .run()
    };
    let pointer = w.path().join("v1.pointer");
    let unsigned = publish(&["--unsigned-pointer-out", path(&pointer)]);
    unsigned.assert_failure("publishing an unsigned manifest");
    assert!(unsigned.stderr.contains("release role"), "{unsigned}");

    // The channel key's signature is not the release key's, and does not verify as it.
    let wrong = w
        .publisher()
        .arg("sign")
        .arg(&manifest)
        .args(["--public", &release.public()])
        .args(["--signature", &channel.sign(&w, &manifest)])
        .run();
    wrong.assert_failure("attaching a signature made by another key");
    assert!(wrong.stderr.contains("does not verify"), "{wrong}");
    release
        .sign_into(&w, &manifest)
        .assert_success("sign the manifest");
    publish(&["--unsigned-pointer-out", path(&pointer)]).assert_success("publish");
    assert!(!pointer_path.exists(), "publish set an unsigned pointer");
    let set = |file: &Path| {
        w.publisher()
            .args(["channel", "set"])
            .arg(file)
            .args(["--to", path(&w.origin)])
            .run()
    };
    set(&pointer).assert_failure("setting an unsigned pointer");
    channel
        .sign_into(&w, &pointer)
        .assert_success("sign the pointer");
    set(&pointer).assert_success("channel set");

    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("hsm");
    update_pinned(&w, &n.url(), &dir, &doc).assert_success("install v1");
    assert_trees_equal(&current(&dir), &w.v1);
    let link = current_link(&dir);

    // A pointer that has expired (here: refreshed, then edited to expire as it is issued,
    // before the channel role signs it) is refused as stale.
    let refresh = |days: &str, file: &Path| {
        let expired = days == "0";
        w.publisher()
            .args(["channel", "refresh", "--channel", CHANNEL])
            .args(["--to", path(&w.origin), "--pointer-days"])
            .arg(if expired { "1" } else { days })
            .args(["--unsigned-pointer-out", path(file)])
            .run()
            .assert_success("channel refresh");
        if expired {
            let mut pointer = relsync_engine::dangerous::pointer(&fs::read(file).expect("read"))
                .expect("decode the unsigned pointer");
            pointer.expires_unix = pointer.issued_unix;
            fs::write(file, pointer.seal(&[]).expect("seal")).expect("write");
        }
        channel
            .sign_into(&w, file)
            .assert_success("sign the refreshed pointer");
        set(file).assert_success("set the refreshed pointer");
    };
    refresh("0", &w.path().join("expired.pointer"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let stale = update_pinned(&w, &n.url(), &dir, &doc);
    stale.assert_failure("update with an expired pointer");
    assert!(stale.stderr.contains("stale metadata"), "{stale}");
    assert_eq!(current_link(&dir), link, "{stale}");
    assert_trees_equal(&current(&dir), &w.v1);

    refresh("7", &w.path().join("fresh.pointer"));
    let out = update_pinned(&w, &n.url(), &dir, &doc);
    out.assert_success("update after the refresh");
    assert!(out.stdout.contains("\"up_to_date\":true"), "{out}");
}

/// A release bound to a platform (`push --platform`) is refused by clients of any other
/// platform, which install nothing; a client of that platform installs it.
#[test]
fn a_release_bound_to_another_platform_is_refused() {
    let w = World::new();
    w.push(&w.v1, V1, &["--platform", "riscv64-plan9"])
        .assert_success("push bound to riscv64-plan9");
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("elsewhere");
    let out = w.update(&n.url(), &dir, &[]);
    out.assert_failure("install of another platform's release");
    assert!(out.stderr.contains("platform mismatch"), "{out}");
    assert!(out.stderr.contains("riscv64-plan9"), "{out}");
    assert!(
        fs::symlink_metadata(current(&dir)).is_err(),
        "a refused install left `current`\n{out}"
    );
    let out = w.update(&n.url(), &dir, &["--platform", "riscv64-plan9"]);
    out.assert_success("install on the bound platform");
    assert_trees_equal(&current(&dir), &w.v1);
}

/// `update --download-only` verifies and stages v2 without switching to it. The channel's
/// pointer then expires, so an online update is refused as stale, but `relsync apply` still
/// installs what was verified before the expiry, with the origin gone.
#[test]
fn a_release_staged_before_its_metadata_expired_applies_offline() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("staged");
    w.update_ok(&n.url(), &dir);
    w.push_ok(&w.v2, V2);
    let staged = w.update(&n.url(), &dir, &["--download-only"]);
    staged.assert_success("download-only");
    assert!(staged.stdout.contains("\"applied\":false"), "{staged}");
    assert_trees_equal(&current(&dir), &w.v1);
    let link = current_link(&dir);

    // The pointer re-signed to expire now (the publisher refuses `--pointer-days 0`).
    expire_pointer(&w);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let stale = w.update(&n.url(), &dir, &[]);
    stale.assert_failure("online update with an expired pointer");
    assert!(stale.stderr.contains("stale metadata"), "{stale}");
    assert_eq!(current_link(&dir), link, "{stale}");

    drop(n);
    let apply = || {
        w.relsync()
            .args(["apply", "--json", "--install"])
            .arg(&dir)
            .run()
    };
    let out = apply();
    out.assert_success("offline apply of the staged release");
    assert!(out.stdout.contains("\"bytes_downloaded\":0"), "{out}");
    assert_trees_equal(&current(&dir), &w.v2);
    let again = apply();
    again.assert_failure("apply with nothing staged");
    assert!(again.stderr.contains("nothing is staged"), "{again}");
}

/// A small release tree: these tests are about who may sign what, not about transfers.
fn small_tree(w: &World, version: &str) -> PathBuf {
    let dir = w.path().join(format!("small-{version}"));
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    fs::write(dir.join("VERSION"), format!("{version}\n")).expect("write");
    fs::write(dir.join("bin/app"), format!("the app, release {version}\n")).expect("write");
    dir
}

/// `cdn-publisher yank --origin ORIGIN --channel stable EXTRA...`.
fn yank(w: &World, extra: &[&str]) -> Output {
    w.publisher()
        .arg("yank")
        .args(["--origin", path(&w.origin), "--channel", CHANNEL])
        .args(extra)
        .run()
}

/// `relsync status --json` of an install: its version and the versions it marked bad.
fn version_and_bad(w: &World, dir: &Path) -> (String, Vec<String>) {
    let status = w.status(dir).json;
    let bad = status["bad_releases"]
        .as_array()
        .expect("bad_releases")
        .iter()
        .map(|b| b["version"].as_str().expect("version").to_owned())
        .collect();
    (status["version"].as_str().unwrap_or("").to_owned(), bad)
}

/// The origin's pointer re-issued by someone holding only the channel key: offering release
/// `id` at `version`, with `yanked` withdrawn and the rollback directive `rollback`.
fn forged_pointer(
    forge: &Forge,
    id: ManifestId,
    version: &str,
    yanked: &[&str],
    rollback: Option<Vec<u8>>,
) -> Pointer {
    let mut p = forge.pointer();
    p.version = version.parse().expect("version");
    p.manifest = id;
    p.manifest_len = forge.read(&manifest_path(&id)).len() as u64;
    p.manifest_deltas.clear();
    p.yanked = yanked.iter().map(|v| v.parse().expect("version")).collect();
    p.rollback = rollback;
    p
}

/// Issue 18: with separate root, release and channel keys, someone holding only the online
/// channel key cannot take installs below a version they trusted. `yank --roll-back` refuses
/// without the release role and changes nothing; pointers forged with the channel key that
/// yank 3.0.0, then 2.0.0 too, leave an install on 3.0.0 running it and do not mark it bad,
/// and one carrying a directive the channel key signed is refused outright. The release key
/// (then an external signer, openssl standing in for an HSM) still takes installs back.
#[test]
fn the_channel_key_alone_cannot_take_installs_back() {
    let w = World::new();
    let keys = Keys::new(&w, &["root", "release", "channel"]);
    let hsm = ExternalSigner::new(&w, "release-hsm");
    let hsm_public = hsm.public();
    let pinned = init_chain_releasing(
        &w,
        &keys,
        &[path(&keys.public("release")), hsm_public.as_str()],
    );
    let mut forge = Forge::new(
        &w.origin,
        CHANNEL,
        Vec::new(),
        vec![read_secret_key(&keys.secret("channel"))],
    );
    let mut ids = Vec::new();
    let trees: Vec<PathBuf> = ["1.0.0", "2.0.0", "3.0.0"]
        .iter()
        .map(|v| small_tree(&w, v))
        .collect();
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    // Two installs follow 2.0.0 then 3.0.0 (2.0.0 is kept for rollback).
    let (victim, other) = (w.install_dir("victim"), w.install_dir("other"));
    for (tree, version) in trees.iter().zip(["1.0.0", "2.0.0", "3.0.0"]) {
        push(&w, &keys, tree, version, "channel").assert_success(&format!("push {version}"));
        ids.push(forge.pointer().manifest);
        if version != "1.0.0" {
            for dir in [&victim, &other] {
                update_pinned(&w, &n.url(), dir, &pinned).assert_success("update");
            }
        }
    }
    assert_trees_equal(&current(&victim), &trees[2]);
    let (channel_key, release_key) = (keys.secret("channel"), keys.secret("release"));
    let (channel_key, release_key) = (path(&channel_key), path(&release_key));

    // (a) The publisher refuses a roll-back signed by the channel key alone, and writes nothing.
    let snap = w.origin_snapshot();
    let out = yank(
        &w,
        &[
            "--version",
            "3.0.0",
            "--roll-back",
            "--channel-key",
            channel_key,
        ],
    );
    out.assert_failure("yank --roll-back with only the channel key");
    assert!(
        out.stderr.contains("needs the release role")
            && out.stderr.contains("--key RELEASE_KEY")
            && out.stderr.contains("--unsigned-directive-out FILE"),
        "{out}"
    );
    let out = yank(
        &w,
        &[
            "--version",
            "3.0.0",
            "--roll-back",
            "--key",
            channel_key,
            "--channel-key",
            channel_key,
        ],
    );
    out.assert_failure("yank --roll-back with the channel key passed as a release key");
    assert!(
        out.stderr
            .contains("does not meet the release role of root version 1"),
        "{out}"
    );
    assert!(diff_digests(&w.origin_snapshot(), &snap).is_empty());

    // (b) Pointers forged with the channel key. Each verifies, but moves nobody down.
    let link = current_link(&victim);
    for (what, version, yanked) in [
        ("yank of 3.0.0", 1, &["3.0.0"][..]),
        ("yank of 3.0.0 and 2.0.0", 0, &["2.0.0", "3.0.0"][..]),
    ] {
        let p = forged_pointer(
            &forge,
            ids[version],
            ["1.0.0", "2.0.0"][version],
            yanked,
            None,
        );
        forge.write_pointer(&p);
        let held = w
            .relsync()
            .arg("check")
            .args(["--origin", &n.url(), "--channel", CHANNEL])
            .args([
                "--trust-root",
                path(&pinned),
                "--install",
                path(&victim),
                "--json",
            ])
            .run();
        assert_eq!(
            held.status.code(),
            Some(101),
            "check after a forged {what}: held back exits 101\n{held}"
        );
        let held = held.json();
        assert_eq!(
            (held["outcome"].as_str(), held["reason"].as_str()),
            (Some("held"), Some("behind")),
            "{what}: {held}"
        );
        let out = Report::new(update_pinned(&w, &n.url(), &victim, &pinned));
        out.out
            .assert_success(&format!("update after a forged {what}"));
        assert!(out.bool("up_to_date"), "{what}: {}", out.out);
        assert_eq!(out.str("version"), "3.0.0", "{what}: {}", out.out);
    }
    let directive = RollbackDirective {
        format: FORMAT_VERSION,
        product: "app".into(),
        channel: CHANNEL.into(),
        from: vec!["2.0.0".parse().expect("v"), "3.0.0".parse().expect("v")],
        to_version: "1.0.0".parse().expect("v"),
        to: ids[0],
        issued_unix: 1,
    };
    let signed_by_channel = directive
        .seal(&forge.channel_keys())
        .expect("seal the directive");
    let p = forged_pointer(
        &forge,
        ids[0],
        "1.0.0",
        &["2.0.0", "3.0.0"],
        Some(signed_by_channel),
    );
    forge.write_pointer(&p);
    let runs: [&[&str]; 2] = [&[], &["--download-only"]];
    for extra in runs {
        let out = update_pinned_with(&w, &n.url(), &victim, &pinned, extra);
        out.assert_failure("update with a rollback directive the channel key signed");
        assert!(
            out.stderr.contains("rollback directive refused")
                && out.stderr.contains("not signed by the release role"),
            "{out}"
        );
    }
    assert_eq!(current_link(&victim), link);
    assert_trees_equal(&current(&victim), &trees[2]);
    let (version, bad) = version_and_bad(&w, &victim);
    assert_eq!(version, "3.0.0");
    // Releases it does not run stay withdrawn here; the one it runs is not marked.
    assert_eq!(bad, ["2.0.0"], "3.0.0 must not be marked bad");
    forge.restore();

    // (c) The release key signs the way back: installs on 3.0.0 go back to 2.0.0.
    let out = yank(
        &w,
        &[
            "--version",
            "3.0.0",
            "--roll-back",
            "--key",
            release_key,
            "--channel-key",
            channel_key,
            "--json",
        ],
    );
    out.assert_success("yank --roll-back signed by the release key");
    let back = Report::new(update_pinned(&w, &n.url(), &other, &pinned));
    back.out.assert_success("follow the directive");
    assert!(back.bool("rolled_back"), "{}", back.out);
    assert_eq!(back.str("version"), "2.0.0", "{}", back.out);
    assert_trees_equal(&current(&other), &trees[1]);
    assert_eq!(version_and_bad(&w, &other).1, ["3.0.0"]);

    // (d) 2.0.0 is yanked too, the directive signed elsewhere: it takes installs on 2.0.0 and
    // on 3.0.0 to 1.0.0. Writing it unsigned changes nothing on the origin.
    let unsigned = w.path().join("rollback.directive");
    let snap = w.origin_snapshot();
    let yank_2 = |extra: &[&str]| {
        let mut args = vec!["--version", "2.0.0", "--roll-back"];
        args.extend(extra);
        yank(&w, &args)
    };
    let out = yank_2(&["--unsigned-directive-out", path(&unsigned)]);
    out.assert_success("yank --unsigned-directive-out");
    assert!(
        out.stdout.contains("nothing on the origin changed"),
        "{out}"
    );
    assert!(diff_digests(&w.origin_snapshot(), &snap).is_empty());
    let shown = w.publisher().arg("show").arg(&unsigned).run();
    shown.assert_success("show the directive");
    assert!(
        shown
            .stdout
            .contains("installs on 2.0.0, 3.0.0 go back to 1.0.0"),
        "{shown}"
    );
    let out = yank_2(&["--directive", path(&unsigned), "--channel-key", channel_key]);
    out.assert_failure("yank with an unsigned directive");
    assert!(out.stderr.contains("release role"), "{out}");
    assert!(diff_digests(&w.origin_snapshot(), &snap).is_empty());
    hsm.sign_into(&w, &unsigned)
        .assert_success("attach the external signature");
    let out = yank_2(&[
        "--directive",
        path(&unsigned),
        "--channel-key",
        channel_key,
        "--json",
    ]);
    out.assert_success("yank with the directive signed elsewhere");
    let r = Report::new(out);
    assert_eq!(
        r.json["rollback"],
        serde_json::json!({ "from": ["2.0.0", "3.0.0"], "to": "1.0.0" }),
        "{}",
        r.out
    );
    for (dir, from) in [(&other, "2.0.0"), (&victim, "3.0.0")] {
        let down = Report::new(update_pinned(&w, &n.url(), dir, &pinned));
        down.out.assert_success(&format!("from {from} to 1.0.0"));
        assert_eq!(down.str("version"), "1.0.0", "{}", down.out);
        assert_trees_equal(&current(dir), &trees[0]);
        assert!(version_and_bad(&w, dir).1.contains(&from.to_owned()));
    }
}

fn update_pinned_with(
    w: &World,
    origin: &str,
    dir: &Path,
    pinned: &Path,
    extra: &[&str],
) -> Output {
    w.relsync()
        .env_remove("RELSYNC_PRODUCT")
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
        .args(extra)
        .run()
}

/// Re-signs the channel's pointer with the world's key to expire as it is issued: an expired
/// pointer, which `cdn-publisher` refuses to make (`--pointer-days 0`).
pub fn expire_pointer(w: &World) {
    let mut forge = Forge::with_key_file(&w.origin, CHANNEL, &w.key);
    let mut pointer = forge.pointer();
    pointer.issued_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .max(pointer.issued_unix);
    pointer.expires_unix = pointer.issued_unix;
    forge.write_pointer(&pointer);
}
