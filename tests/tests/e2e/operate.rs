//! Operating an origin: `cdn-publisher ls`, `gc` and `verify`, and installs from what gc
//! leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use relsync_tests::{
    CHANNEL, Entry, Nginx, NginxOptions, Output, Report, V1, V2, World, assert_trees_equal,
    current, flip_byte, make_release,
};

/// Push options: a fast zstd level and zstd delta frames only (bsdiff is slow in debug builds).
const FAST: &[&str] = &["--level", "3", "--no-bsdiff"];
const V3: &str = "3.0.0";

/// The origin's objects (what `cdn-publisher` reads and deletes), by path.
fn objects(w: &World) -> BTreeMap<String, Entry> {
    w.origin_snapshot()
        .into_iter()
        .filter(|(path, e)| {
            matches!(e, Entry::File { .. })
                && ["channels/", "manifests/", "packs/", "keys/"]
                    .iter()
                    .any(|folder| path.starts_with(folder))
        })
        .collect()
}

/// `cdn-publisher SUBCOMMAND --origin ORIGIN ARGS...`.
fn operate(w: &World, subcommand: &str, args: &[&str]) -> Output {
    w.publisher()
        .arg(subcommand)
        .arg("--origin")
        .arg(&w.origin)
        .args(args)
        .run()
}

fn operate_json(w: &World, subcommand: &str, args: &[&str]) -> Value {
    let out = operate(w, subcommand, &[args, &["--json"]].concat());
    out.assert_success(subcommand);
    out.json()
}

fn paths(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|d| d["path"].as_str().expect("path").to_owned())
        .collect()
}

/// v2 with one more file and its own VERSION: a third release.
fn make_v3(w: &World) -> PathBuf {
    let dir = w.path().join("src-v3");
    make_release(&dir, 2);
    fs::write(dir.join("VERSION"), "3.0.0\n").expect("write VERSION");
    fs::write(dir.join("THREE"), "the third release\n").expect("write THREE");
    dir
}

#[test]
fn gc_deletes_only_what_no_channel_keeps_and_verify_finds_a_damaged_pack() {
    let w = World::new();
    w.push(&w.v1, V1, FAST).assert_success("push v1");
    let v1_objects: BTreeSet<String> = objects(&w)
        .into_keys()
        .filter(|p| !p.starts_with("channels/"))
        .collect();
    w.push(&w.v2, V2, FAST).assert_success("push v2");
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let on_v2 = w.install_dir("on-v2");
    w.update_ok(&n.url(), &on_v2);
    let v3 = make_v3(&w);
    w.push(&v3, V3, FAST).assert_success("push v3");

    // ls: every release, which channel offers it, and nothing outside the history.
    let ls = operate_json(&w, "ls", &[]);
    assert_eq!(ls["channels"][0]["channel"], CHANNEL, "{ls}");
    assert_eq!(ls["channels"][0]["version"], V3, "{ls}");
    let releases: Vec<(&str, Vec<Value>)> = ls["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| {
            (
                r["version"].as_str().expect("version"),
                r["offered_by"].as_array().expect("offered_by").clone(),
            )
        })
        .collect();
    assert_eq!(
        releases,
        [(V3, vec![Value::from(CHANNEL)]), (V2, vec![]), (V1, vec![])],
        "{ls}"
    );
    assert_eq!(ls["totals"]["unreferenced"]["objects"], 0, "{ls}");
    let human = operate(&w, "ls", &[]);
    human.assert_success("ls");
    assert!(
        human.stdout.contains("channels") && human.stdout.contains(V3),
        "{human}"
    );

    // A dry run deletes nothing and lists exactly v1's manifest and packs: v2 and v3 keep
    // their deltas against v1, which installs on v1 still use.
    let before = objects(&w);
    let dry = operate_json(&w, "gc", &["--keep", "1", "--min-age", "0s"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(paths(&dry["delete"]), v1_objects, "{dry}");
    assert_eq!(dry["deleted"]["objects"], 0, "{dry}");
    let kept: Vec<&str> = dry["channels"][0]["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| r["version"].as_str().expect("version"))
        .collect();
    assert_eq!(kept, [V3, V2], "{dry}");
    let listed = operate(&w, "gc", &["--keep", "1", "--min-age", "0s", "-v"]);
    listed.assert_success("gc -v");
    for path in &v1_objects {
        assert!(listed.stdout.contains(path.as_str()), "{path}\n{listed}");
    }
    assert!(
        listed.stdout.contains("nothing was deleted") && listed.stdout.contains("--delete"),
        "{listed}"
    );
    // The default --min-age (1h) spares objects just written.
    let young = operate_json(&w, "gc", &["--keep", "1"]);
    assert_eq!(paths(&young["delete"]), BTreeSet::new(), "{young}");
    assert_eq!(
        young["spared_young"]["objects"],
        v1_objects.len() as u64,
        "{young}"
    );
    assert_eq!(objects(&w), before, "a dry run changed the origin");

    let done = operate_json(&w, "gc", &["--keep", "1", "--min-age", "0s", "--delete"]);
    assert_eq!(
        done["deleted"]["objects"],
        v1_objects.len() as u64,
        "{done}"
    );
    let mut expected = before.clone();
    expected.retain(|path, _| !v1_objects.contains(path));
    assert_eq!(objects(&w), expected, "gc deleted other than v1's objects");
    let clean = operate(&w, "verify", &[]);
    clean.assert_success("verify after gc");
    assert!(clean.stdout.contains(": no problems"), "{clean}");

    // Every kept release still installs from scratch, and an install on v2 updates.
    let fresh = w.update_ok(&n.url(), &w.install_dir("fresh-v3"));
    assert_eq!(fresh.str("version"), V3, "{}", fresh.out);
    assert_trees_equal(&current(&w.install_dir("fresh-v3")), &v3);
    let updated = w.update_ok(&n.url(), &on_v2);
    assert_eq!(updated.str("version"), V3, "{}", updated.out);
    assert_trees_equal(&current(&on_v2), &v3);
    w.publisher()
        .arg("yank")
        .arg("--origin")
        .arg(&w.origin)
        .args(["--channel", CHANNEL, "--version", V3])
        .arg("--channel-key")
        .arg(&w.key)
        .run()
        .assert_success("yank v3");
    let back = Report::new(w.update(&n.url(), &w.install_dir("fresh-v2"), &[]));
    back.out.assert_success("fresh install after the yank");
    assert_eq!(back.str("version"), V2, "{}", back.out);
    assert_trees_equal(&current(&w.install_dir("fresh-v2")), &w.v2);

    // One flipped byte in a pack: verify names it and fails.
    let pack = objects(&w)
        .into_keys()
        .find(|p| p.starts_with("packs/"))
        .expect("a pack");
    flip_byte(&w.origin.join(&pack), 100);
    let damaged = operate(&w, "verify", &[]);
    damaged.assert_failure("verify of a damaged pack");
    assert!(
        damaged
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("{pack}: ")) && l.contains("not to its name")),
        "{damaged}"
    );
    let summary = damaged
        .stdout
        .lines()
        .find(|l| l.starts_with("checked "))
        .unwrap_or_else(|| panic!("no summary line\n{damaged}"));
    assert!(
        summary.contains(": 1 problem") && !summary.contains("problems"),
        "{damaged}"
    );
    let report = operate(&w, "verify", &["--json"]);
    report.assert_failure("verify --json of a damaged pack");
    let problems = report.json()["problems"].clone();
    assert_eq!(paths(&problems), BTreeSet::from([pack]), "{report}");
}
