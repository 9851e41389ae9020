//! Publishing to an object store: `cdn-publisher push --to s3://...` against a real
//! S3-compatible server on loopback (`s3s-fs`), with a real nginx in front as its CDN.
//!
//! The bucket's objects are files in the server's folder, so the tests read what was written
//! (and when, by inode and mtime) without going through the publisher.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use relsync_engine::manifest::decompress_envelope;
use relsync_engine::paths::pack_path;
use relsync_tests::{
    CHANNEL, Cmd, Nginx, NginxOptions, Report, S3Server, V1, V2, World, assert_trees_equal,
    current, pseudo_random,
};

/// Where in the bucket the tests publish.
const PREFIX: &str = "releases/app";
/// The publisher's multipart threshold and part size (`cdn-publisher/src/target/bucket.rs`).
const MULTIPART_THRESHOLD_BYTES: u64 = 16 << 20;
const PART_BYTES: u64 = 8 << 20;

/// A world whose origin is a bucket on `s3s-fs`, served by nginx proxying to it.
struct Bucketed {
    w: World,
    s3: S3Server,
    cdn: Nginx,
}

/// One object as stored: its length, and the inode and mtime that change if it is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    len: u64,
    ino: u64,
    modified: SystemTime,
}

impl Bucketed {
    fn new() -> Self {
        let w = World::new();
        let s3 = S3Server::start();
        let cdn_root = w.path().join("cdn-root");
        fs::create_dir_all(&cdn_root).expect("mkdir cdn-root");
        let cdn = Nginx::start(&cdn_root, &NginxOptions::proxying(s3.public_url(PREFIX)));
        Self { w, s3, cdn }
    }

    /// `cdn-publisher push TREE --version V ... --to s3://relsync/releases/app --json EXTRA`.
    fn push_cmd(&self, tree: &Path, version: &str, extra: &[&str]) -> Cmd {
        let mut cmd = self
            .w
            .publisher()
            .arg("push")
            .arg(tree)
            .args(["--version", version, "--channel", CHANNEL, "--key"])
            .arg(&self.w.key)
            .args(["--to", &self.s3.origin(PREFIX), "--json"])
            .args(extra);
        for (k, v) in self.s3.env() {
            cmd = cmd.env(k, v);
        }
        cmd
    }

    fn push(&self, tree: &Path, version: &str, extra: &[&str]) -> Report {
        let out = self.push_cmd(tree, version, extra).run();
        if !out.success() {
            panic!(
                "push {version} to the bucket failed\n{out}\n{}",
                self.s3.logs()
            );
        }
        Report::new(out)
    }

    fn dir(&self) -> PathBuf {
        self.s3.objects_dir(PREFIX)
    }

    /// Every object under the prefix.
    fn objects(&self) -> BTreeMap<String, Stored> {
        objects(&self.dir())
    }

    /// The channel pointer's bytes, if there is one.
    fn pointer(&self) -> Option<Vec<u8>> {
        fs::read(self.dir().join("channels").join(CHANNEL)).ok()
    }
}

fn objects(dir: &Path) -> BTreeMap<String, Stored> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("read_dir entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                pending.push(entry.path());
                continue;
            }
            let key = entry
                .path()
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            out.insert(
                key,
                Stored {
                    len: meta.len(),
                    ino: meta.ino(),
                    modified: meta.modified().expect("mtime"),
                },
            );
        }
    }
    out
}

/// What a reader of the bucket could trip on right now: a pointer naming a missing manifest,
/// a manifest naming a missing (or short) pack, a delta of a missing manifest. Objects are
/// only added during a push, so reading a name and then checking its target is sound.
fn dangling(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir.join("channels")).into_iter().flatten() {
        let path = entry.expect("entry").path();
        let bytes = fs::read(&path).expect("read pointer");
        let pointer = relsync_engine::dangerous::pointer(&bytes).expect("decode pointer");
        if !dir
            .join(format!("manifests/{}", pointer.manifest))
            .is_file()
        {
            found.push(format!(
                "{} names manifest {}, which is missing",
                path.display(),
                pointer.manifest
            ));
        }
    }
    for entry in fs::read_dir(dir.join("manifests")).into_iter().flatten() {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if let Some((target, _)) = name.split_once(".from-") {
            if !dir.join("manifests").join(target).is_file() {
                found.push(format!("delta {name} of missing manifest {target}"));
            }
            continue;
        }
        let file = fs::read(&path).expect("read manifest");
        let envelope = decompress_envelope(&file, None).expect("decompress manifest");
        let manifest = relsync_engine::dangerous::manifest(&envelope).expect("decode manifest");
        for pack in &manifest.packs {
            let len = fs::metadata(dir.join(pack_path(&pack.id))).map(|m| m.len());
            if len.as_ref().ok() != Some(&pack.len) {
                found.push(format!(
                    "manifest {name} names {} of {} bytes; the bucket has {len:?}",
                    pack_path(&pack.id),
                    pack.len
                ));
            }
        }
    }
    found
}

/// The packs manifest `id` names.
fn packs_of(dir: &Path, id: &str) -> Vec<String> {
    let file = fs::read(dir.join("manifests").join(id)).expect("read manifest");
    let envelope = decompress_envelope(&file, None).expect("decompress manifest");
    relsync_engine::dangerous::manifest(&envelope)
        .expect("decode manifest")
        .packs
        .iter()
        .map(|p| pack_path(&p.id))
        .collect()
}

/// A raw `HEAD` request: the status and the headers (names in lower case).
fn head(addr: SocketAddr, path: &str) -> (u16, BTreeMap<String, String>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("HEAD {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let mut lines = resp.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {resp:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// The keys of `after` that `before` lacks.
fn added(before: &BTreeMap<String, Stored>, after: &BTreeMap<String, Stored>) -> Vec<String> {
    after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect()
}

/// Objects of `before` (pointers aside) that are gone or were rewritten in `after`.
fn rewritten(before: &BTreeMap<String, Stored>, after: &BTreeMap<String, Stored>) -> Vec<String> {
    before
        .iter()
        .filter(|(k, _)| !k.starts_with("channels/"))
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v:?} -> {:?}", after.get(k)))
        .collect()
}

#[test]
fn a_release_in_a_bucket_installs_through_its_cdn_and_the_next_writes_only_new_objects() {
    let b = Bucketed::new();
    // Random bytes make a pack larger than the multipart threshold.
    fs::write(
        b.w.v1.join("share/blob.bin"),
        pseudo_random("multipart", 24 << 20),
    )
    .expect("write blob");

    let r1 = b.push(&b.w.v1, V1, &[]);
    let v1_objects = b.objects();
    let total: u64 = v1_objects.values().map(|o| o.len).sum();
    assert_eq!(
        (r1.u64("objects_written"), r1.u64("objects_present")),
        (v1_objects.len() as u64, 0),
        "every object of the bucket was written by this push\n{}\n{v1_objects:#?}",
        r1.out
    );
    assert_eq!(r1.u64("bytes_uploaded"), total, "{}", r1.out);
    assert_eq!(r1.u64("pack_bytes_written"), r1.u64("pack_bytes"));
    assert!(dangling(&b.dir()).is_empty(), "{:?}", dangling(&b.dir()));

    let dir = b.w.install_dir("bucket");
    b.w.update_ok(&b.cdn.url(), &dir);
    assert_trees_equal(&current(&dir), &b.w.v1);

    let r2 = b.push(&b.w.v2, V2, &[]);
    let v2_objects = b.objects();
    let changed = rewritten(&v1_objects, &v2_objects);
    assert!(
        changed.is_empty(),
        "pushing v2 rewrote objects of v1:\n{}",
        changed.join("\n")
    );
    let new = added(&v1_objects, &v2_objects);
    let pointer_len = v2_objects[&format!("channels/{CHANNEL}")].len;
    let new_bytes: u64 = new.iter().map(|k| v2_objects[k].len).sum();
    assert!(
        new.iter().any(|k| k.starts_with("packs/")) && new.iter().any(|k| k.contains(".from-")),
        "v2 added no packs or no manifest delta: {new:?}"
    );
    assert_eq!(
        r2.u64("objects_written"),
        new.len() as u64 + 1,
        "v2 wrote its new objects and the pointer, nothing else\n{}\nnew: {new:#?}",
        r2.out
    );
    assert_eq!(
        r2.u64("bytes_uploaded"),
        new_bytes + pointer_len,
        "{}",
        r2.out
    );

    // Every object carries its type and caching policy, as the CDN serves it.
    let mut multipart = 0;
    for (key, stored) in &v2_objects {
        let (status, h) = head(b.cdn.addr(), &format!("/{key}"));
        assert_eq!(status, 200, "HEAD /{key} through the CDN: {h:?}");
        assert_eq!(
            h.get("content-type").map(String::as_str),
            Some("application/octet-stream"),
            "{key}: {h:?}"
        );
        let cache = if key.starts_with("channels/") {
            "public, max-age=60"
        } else {
            "public, max-age=31536000, immutable"
        };
        assert_eq!(
            h.get("cache-control").map(String::as_str),
            Some(cache),
            "{key}: {h:?}"
        );
        // A multipart upload's ETag ends in `-<parts>`.
        let etag = h.get("etag").cloned().unwrap_or_default();
        let parts = etag
            .trim_matches('"')
            .rsplit_once('-')
            .map(|(_, n)| n.parse::<u64>().expect("part count"));
        if stored.len > MULTIPART_THRESHOLD_BYTES {
            assert_eq!(
                parts,
                Some(stored.len.div_ceil(PART_BYTES)),
                "{key} ({} bytes) was not uploaded in parts of {PART_BYTES} bytes: ETag {etag}",
                stored.len
            );
            multipart += 1;
        } else {
            assert_eq!(parts, None, "{key} ({} bytes): ETag {etag}", stored.len);
        }
    }
    assert!(multipart > 0, "no pack went up as a multipart upload");

    let r = b.w.update_ok(&b.cdn.url(), &dir);
    assert_trees_equal(&current(&dir), &b.w.v2);
    assert_eq!(r.str("version"), V2, "{}", r.out);

    let again = b.push(&b.w.v2, V2, &[]);
    assert!(again.bool("unchanged"), "{}", again.out);
    assert_eq!(again.u64("objects_written"), 0, "{}", again.out);
    let v2_packs = packs_of(&b.dir(), &r2.str("manifest")).len() as u64;
    assert_eq!(
        again.u64("objects_present"),
        v2_packs,
        "each of v2's packs was found in the bucket\n{}",
        again.out
    );
    assert_eq!(b.objects(), v2_objects, "a no-op push changed the bucket");
}

/// Pushes v2 in packs of 1 MiB and SIGKILLs the publisher once `packs` of them are in the
/// bucket; returns those packs.
fn interrupt_push(b: &Bucketed, packs: usize) -> Vec<String> {
    let before = b.objects();
    let mut push = b
        .push_cmd(&b.w.v2, V2, &["--max-pack-mib", "1", "--uploads", "2"])
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    let new_packs = loop {
        let new: Vec<String> = added(&before, &b.objects())
            .into_iter()
            .filter(|k| k.starts_with("packs/"))
            .collect();
        if new.len() >= packs {
            break new;
        }
        assert!(
            !push.has_exited(),
            "the push ended with {} new packs; it needs {packs} to be interrupted\n{}",
            new.len(),
            push.kill9()
        );
        assert!(Instant::now() < deadline, "no {packs} packs after 120 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(!push.has_exited(), "the push ended before it was killed");
    let out = push.kill9();
    assert!(!out.success(), "{out}");
    new_packs
}

#[test]
fn an_interrupted_publish_leaves_the_channel_as_it_was_and_resumes() {
    let b = Bucketed::new();
    b.push(&b.w.v1, V1, &[]);
    let pointer = b.pointer();
    let dir = b.w.install_dir("resume");
    b.w.update_ok(&b.cdn.url(), &dir);

    let uploaded = interrupt_push(&b, 3);
    let after_kill = b.objects();
    assert_eq!(b.pointer(), pointer, "the killed push moved the pointer");
    let found = dangling(&b.dir());
    assert!(found.is_empty(), "after the kill:\n{}", found.join("\n"));
    let r = b.w.update_ok(&b.cdn.url(), &dir);
    assert_eq!(r.str("version"), V1, "{}", r.out);

    let resumed = b.push(&b.w.v2, V2, &["--max-pack-mib", "1"]);
    let skipped = resumed.u64("objects_present");
    assert!(
        skipped >= uploaded.len() as u64,
        "{} packs were in the bucket before the resume, {skipped} were skipped\n{}",
        uploaded.len(),
        resumed.out
    );
    let changed = rewritten(&after_kill, &b.objects());
    assert!(
        changed.is_empty(),
        "the resumed push rewrote what the killed one wrote:\n{}",
        changed.join("\n")
    );
    let v2_packs = packs_of(&b.dir(), &resumed.str("manifest"));
    assert!(
        uploaded.iter().all(|p| v2_packs.contains(p)),
        "the resumed push did not reuse the packs of the killed one"
    );
    assert!(dangling(&b.dir()).is_empty(), "{:?}", dangling(&b.dir()));

    let r = b.w.update_ok(&b.cdn.url(), &dir);
    assert_eq!(r.str("version"), V2, "{}", r.out);
    assert_trees_equal(&current(&dir), &b.w.v2);
}

#[test]
fn while_a_push_runs_no_pointer_or_manifest_names_a_missing_object() {
    let b = Bucketed::new();
    b.push(&b.w.v1, V1, &[]);
    let before = b.objects();
    let old_pointer = b.pointer();
    let mut push = b.push_cmd(&b.w.v2, V2, &["--max-pack-mib", "1"]).spawn();
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut polls, mut packs_before_manifest, mut moved) = (0u32, false, false);
    loop {
        // Whether the push has ended is read first, so the last poll sees its final state.
        let ended = push.has_exited();
        let found = dangling(&b.dir());
        assert!(
            found.is_empty(),
            "poll {polls} saw:\n{}\n{}",
            found.join("\n"),
            b.s3.logs()
        );
        let new = added(&before, &b.objects());
        let has = |kind: &str| new.iter().any(|k| k.starts_with(kind));
        packs_before_manifest |= has("packs/") && !has("manifests/");
        moved |= b.pointer() != old_pointer;
        polls += 1;
        if ended {
            break;
        }
        assert!(Instant::now() < deadline, "the push ran over 180 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = push.wait();
    out.assert_success("push v2 while polling");
    assert!(
        packs_before_manifest,
        "{polls} polls never saw the push between its first pack and its manifest"
    );
    assert!(moved, "the pointer never moved\n{out}");
}

impl Bucketed {
    /// `cdn-publisher SUBCOMMAND --origin s3://... ARGS...` with the bucket's credentials.
    fn operate(&self, subcommand: &str, args: &[&str]) -> relsync_tests::Output {
        let mut cmd = self
            .w
            .publisher()
            .arg(subcommand)
            .args(["--origin", &self.s3.origin(PREFIX)])
            .args(args);
        for (k, v) in self.s3.env() {
            cmd = cmd.env(k, v);
        }
        cmd.run()
    }
}

#[test]
fn gc_on_a_bucket_deletes_only_what_no_kept_release_needs_and_kept_ones_install() {
    const FAST: &[&str] = &["--level", "3", "--no-bsdiff"];
    let b = Bucketed::new();
    b.push(&b.w.v1, V1, FAST);
    let v1_objects: Vec<String> = b
        .objects()
        .into_keys()
        .filter(|k| !k.starts_with("channels/"))
        .collect();
    b.push(&b.w.v2, V2, FAST);
    let v3 = b.w.path().join("src-v3");
    relsync_tests::make_release(&v3, 2);
    fs::write(v3.join("THREE"), "the third release\n").expect("write THREE");
    b.push(&v3, "3.0.0", FAST);
    let before = b.objects();

    let dry = b.operate("gc", &["--keep", "1", "--min-age", "0s", "--json"]);
    dry.assert_success("gc dry run on the bucket");
    assert_eq!(b.objects(), before, "a dry run changed the bucket\n{dry}");
    let done = b.operate(
        "gc",
        &["--keep", "1", "--min-age", "0s", "--delete", "--json"],
    );
    done.assert_success("gc --delete on the bucket");
    let deleted: Vec<String> = added(&b.objects(), &before);
    let mut expected = v1_objects.clone();
    expected.sort();
    assert_eq!(
        deleted, expected,
        "gc deleted other than v1's objects\n{done}"
    );
    b.operate("verify", &[])
        .assert_success("verify of the bucket after gc");

    // Every kept release installs from scratch through the CDN.
    let fresh = b.w.install_dir("fresh-v3");
    b.w.update_ok(&b.cdn.url(), &fresh);
    assert_trees_equal(&current(&fresh), &v3);
    let mut yank =
        b.w.publisher()
            .arg("yank")
            .args(["--origin", &b.s3.origin(PREFIX)])
            .args(["--channel", CHANNEL, "--version", "3.0.0", "--channel-key"])
            .arg(&b.w.key);
    for (k, v) in b.s3.env() {
        yank = yank.env(k, v);
    }
    yank.run().assert_success("yank 3.0.0 on the bucket");
    let back = b.w.install_dir("fresh-v2");
    b.w.update_ok(&b.cdn.url(), &back);
    assert_trees_equal(&current(&back), &b.w.v2);
}

#[test]
fn a_missing_bucket_or_refused_credentials_fail_naming_the_origin() {
    let b = Bucketed::new();
    let missing = "s3://no-such-bucket/releases";
    let mut cmd =
        b.w.publisher()
            .arg("push")
            .arg(&b.w.v1)
            .args(["--version", V1, "--channel", CHANNEL, "--key"])
            .arg(&b.w.key)
            .args(["--to", missing]);
    for (k, v) in b.s3.env() {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run();
    out.assert_failure("push to a missing bucket");
    assert!(
        out.stderr
            .contains(&format!("origin {missing}: the bucket does not exist")),
        "{out}"
    );

    let out = b
        .push_cmd(&b.w.v1, V1, &[])
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .run();
    out.assert_failure("push with a wrong secret key");
    assert!(
        out.stderr.contains(&format!(
            "origin {}: the store refused the credentials",
            b.s3.origin(PREFIX)
        )),
        "{out}"
    );
    assert!(
        b.objects().is_empty(),
        "a refused push wrote {:?}",
        b.objects()
    );
}
