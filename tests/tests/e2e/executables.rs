//! Executables: delta frames with projected references and their reference maps (issue 20).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use relsync_engine::manifest::Manifest;
use relsync_engine::paths::pack_path;
use relsync_tests::{
    CHANNEL, Forge, Nginx, NginxOptions, Report, World, assert_trees_equal, current, executable,
};

use crate::common::assert_honest_accounting;

/// A release tree holding version `version` of the synthetic executable (`bin/app`) and a
/// `README`.
pub(crate) fn tree(root: &Path, version: u32) -> std::path::PathBuf {
    let dir = root.join(format!("exe-v{version}"));
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    let app = dir.join("bin/app");
    fs::write(&app, executable(version)).expect("write app");
    fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(dir.join("README"), format!("app {version}\n")).expect("write readme");
    dir
}

/// Publishes v1 and v2 with `flags`, installs v1 and updates to v2. Returns the update's
/// report, the world and its nginx.
fn update_with(flags: &[&str]) -> (Report, World, Nginx) {
    let w = World::new();
    let (v1, v2) = (tree(w.path(), 1), tree(w.path(), 2));
    w.push(&v1, "1.0.0", flags).assert_success("push v1");
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    w.push(&v2, "2.0.0", flags).assert_success("push v2");
    let mark = n.mark();
    let r = w.update_ok(&n.url(), &dir);
    assert_trees_equal(&current(&dir), &v2);
    assert_honest_accounting(&n, mark, &r);
    (r, w, n)
}

#[test]
fn an_executable_updates_through_projected_references_for_a_fraction_of_the_bytes() {
    let (refs, ..) = update_with(&[]);
    let (plain, ..) = update_with(&["--no-refs"]);
    assert_eq!(refs.u64("ref_maps"), 1, "{}", refs.out);
    assert!(refs.u64("chunks_refs") > 0, "{}", refs.out);
    assert_eq!(plain.u64("ref_maps"), 0, "{}", plain.out);
    assert_eq!(plain.u64("chunks_refs"), 0, "{}", plain.out);
    assert!(plain.u64("chunks_bsdiff") > 0, "{}", plain.out);
    let (with, without) = (refs.u64("bytes_downloaded"), plain.u64("bytes_downloaded"));
    assert!(
        with * 3 < without,
        "projected references must cut the update to under a third: {with} B against {without} B \
         without\n{}\n{}",
        refs.out,
        plain.out
    );
}

/// Where reference map `map` of base `base` sits: (pack path, offset, length).
pub(crate) fn ref_map_at(m: &Manifest, base: usize, map: usize) -> (String, u64, u64) {
    let target = m.bases[base].refs[map];
    let mut offset = 0u64;
    offset += m
        .chunks
        .iter()
        .filter(|c| c.pack == target.pack)
        .map(|c| u64::from(c.frame_len))
        .sum::<u64>();
    for (b, earlier) in m.bases.iter().enumerate().take(base + 1) {
        offset += earlier
            .deltas
            .iter()
            .filter(|d| d.pack == target.pack)
            .map(|d| u64::from(d.frame_len))
            .sum::<u64>();
        let maps = if b == base { map } else { earlier.refs.len() };
        offset += earlier.refs[..maps]
            .iter()
            .filter(|r| r.pack == target.pack)
            .map(|r| u64::from(r.frame_len))
            .sum::<u64>();
    }
    let pack = m.packs[target.pack as usize].id;
    (pack_path(&pack), offset, u64::from(target.frame_len))
}

#[test]
fn a_corrupt_reference_map_is_refused_by_name_and_the_install_stays_usable() {
    let w = World::new();
    let (v1, v2) = (tree(w.path(), 1), tree(w.path(), 2));
    w.push(&v1, "1.0.0", &[]).assert_success("push v1");
    let n = Nginx::start(&w.origin, &NginxOptions::default());
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    w.push(&v2, "2.0.0", &[]).assert_success("push v2");
    let mut forge = Forge::with_key_file(&w.origin, CHANNEL, &w.key);
    let (_, manifest) = forge.release();
    let (pack, offset, len) = ref_map_at(&manifest, 0, 0);
    forge.flip_byte(&pack, offset + len / 2);
    let out = w.update(&n.url(), &dir, &[]);
    assert!(!out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("reference map") && out.stderr.contains("hash"),
        "the error must name the reference map and its hash:\n{}",
        out.stderr
    );
    assert_trees_equal(&current(&dir), &v1);
    forge.restore();
    let r = w.update_ok(&n.url(), &dir);
    assert_trees_equal(&current(&dir), &v2);
    assert_eq!(r.u64("ref_maps"), 1, "{}", r.out);
}
