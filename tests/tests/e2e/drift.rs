//! Local drift: the installed release was modified behind relsync's back. The next update must
//! not trust the corrupted bytes (neither as chunks to reuse nor as files to link) and must still
//! produce the exact new release, with honest accounting.

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use relsync_tests::{
    BIG_FILE, BIG_FILE_LEN, V2, assert_trees_equal, current, diff_digests, flip_byte, tree_digest,
};

use crate::common::{assert_honest_accounting, world_with_v1};

/// An offset in the big file whose chunk v2 reuses unchanged: 5 MiB, well clear (over 0.5 MiB,
/// more than two maximum-size chunks) of v2's edits at 43 % (3.4 MiB) and 71 % (5.7 MiB) and
/// of the insertion at 4 MiB.
const BIG_FILE_FLIP_AT: u64 = (BIG_FILE_LEN as u64) * 5 / 8;

/// A small file that is the same in v1 and v2 (so the update would link or reuse it).
const SMALL_UNCHANGED: &str = "sizes/size-65536";

/// Run `change` on `path` and put back its access and modification times, so only the bytes
/// (and the size, if `change` alters it) tell that the file changed.
fn modify_keeping_times(path: &Path, change: impl FnOnce(&Path)) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    let times = FileTimes::new()
        .set_accessed(meta.accessed().expect("atime"))
        .set_modified(meta.modified().expect("mtime"));
    change(path);
    File::open(path)
        .and_then(|f| f.set_times(times))
        .unwrap_or_else(|e| panic!("restore times of {}: {e}", path.display()));
}

/// Truncate `path` to `len` bytes, even if it is read-only.
fn truncate(path: &Path, len: u64) {
    let perms = fs::metadata(path).expect("stat").permissions();
    let mut writable = perms.clone();
    writable.set_mode(perms.mode() | 0o200);
    fs::set_permissions(path, writable).expect("chmod u+w");
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
    fs::set_permissions(path, perms).expect("restore mode");
}

#[test]
fn corrupted_install_is_repaired_by_the_next_update() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("drift");
    w.update_ok(&n.url(), &dir);
    assert_trees_equal(&current(&dir), &w.v1);
    w.push_ok(&w.v2, V2);

    let big = current(&dir).join(BIG_FILE);
    let small = current(&dir).join(SMALL_UNCHANGED);
    assert_eq!(
        tree_digest(&w.v1).get(SMALL_UNCHANGED),
        tree_digest(&w.v2).get(SMALL_UNCHANGED),
        "{SMALL_UNCHANGED} must be the same in v1 and v2 for this test to mean anything"
    );
    modify_keeping_times(&big, |p| flip_byte(p, BIG_FILE_FLIP_AT));
    modify_keeping_times(&small, |p| truncate(p, 1000));
    let drift = diff_digests(&tree_digest(&current(&dir)), &tree_digest(&w.v1));
    assert_eq!(
        drift.len(),
        2,
        "the install should differ from v1 in exactly the two damaged files: {drift:#?}"
    );

    let mark = n.mark();
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V2, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v2);
    assert_honest_accounting(&n, mark, &r);

    // And it stays right: a second run is up to date and changes nothing.
    let r = w.update_ok(&n.url(), &dir);
    assert!(r.bool("up_to_date"), "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v2);
}

/// The state database is overwritten with garbage. `status` says so and how to recover; the
/// next update moves it aside, rebuilds it and still refuses a rollback (the trusted floor is
/// also kept outside the database); with the origin current again, the update succeeds.
#[test]
fn a_corrupt_state_database_is_rebuilt_without_losing_the_trust_floor() {
    let (w, n) = world_with_v1();
    let v1_pointer =
        fs::read(w.origin.join("channels").join(relsync_tests::CHANNEL)).expect("v1 pointer");
    let dir = w.install_dir("corrupt-db");
    w.update_ok(&n.url(), &dir);
    w.push_ok(&w.v2, V2);
    w.update_ok(&n.url(), &dir);
    let link = relsync_tests::current_link(&dir);

    let db = dir.join(".relsync/state.redb");
    let len = fs::metadata(&db).expect("state.redb").len();
    fs::write(&db, relsync_tests::pseudo_random("garbage", len as usize)).expect("corrupt db");
    let status = w.relsync().args(["status", "--install"]).arg(&dir).run();
    status.assert_failure("status of an install with a corrupt database");
    assert!(
        status.stderr.contains("rebuilds a corrupt database"),
        "{status}"
    );

    let pointer = w.origin.join("channels").join(relsync_tests::CHANNEL);
    let v2_pointer = fs::read(&pointer).expect("v2 pointer");
    fs::write(&pointer, &v1_pointer).expect("replay the v1 pointer");
    let out = w.update(&n.url(), &dir, &[]);
    out.assert_failure("update offered v1 again after the database was rebuilt");
    assert!(out.stderr.contains("rollback refused"), "{out}");
    assert_eq!(relsync_tests::current_link(&dir), link, "{out}");
    assert_trees_equal(&current(&dir), &w.v2);
    assert!(dir.join(".relsync/state.redb.corrupt").exists());

    fs::write(&pointer, &v2_pointer).expect("restore the v2 pointer");
    let r = w.update_ok(&n.url(), &dir);
    assert_eq!(r.str("version"), V2, "{}", r.out);
    assert_trees_equal(&current(&dir), &w.v2);
}

#[test]
fn verify_passes_an_exact_install_and_names_each_difference() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("verify");
    w.update_ok(&n.url(), &dir);
    let verify = |json: bool| {
        let cmd = w.relsync().args(["verify", "--install"]).arg(&dir);
        if json { cmd.arg("--json") } else { cmd }.run()
    };
    let out = verify(false);
    out.assert_success("verify of an untouched install");
    assert!(out.stdout.starts_with("OK: 1.0.0"), "{out}");

    flip_byte(&current(&dir).join(SMALL_UNCHANGED), 100);
    fs::write(current(&dir).join("bin/intruder"), b"not signed").expect("write an extra file");
    let out = verify(true);
    out.assert_failure("verify of a modified install");
    let problems: Vec<String> = out.json()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(problems.len(), 2, "{out}");
    assert!(
        problems.iter().any(|p| p.contains(SMALL_UNCHANGED)),
        "the modified file is not named\n{out}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("bin/intruder") && p.contains("not in the signed manifest")),
        "the extra file is not named\n{out}"
    );
}
