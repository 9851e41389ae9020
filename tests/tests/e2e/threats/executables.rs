//! Executables (issue 20): the reference map of a file whose delta frames project its
//! references (`DeltaCodec::BsdiffRefs`), served damaged, withheld, or replaced under a
//! valid signature by a hostile side object, and manifests whose maps or projected deltas
//! point where they must not. The world's releases hold the synthetic executable
//! ([`relsync_tests::executable`]), so v2 carries one map against v1 ([`Bench::with_executables`]).
//!
//! [`Bench::with_executables`]: super::bench::Bench::with_executables

use relsync_chunker::ChunkId;
use relsync_chunker::frame::{self, refs::OldRefs, refs::elf::Elf};
use relsync_engine::manifest::{DeltaCodec, EntryKind, Manifest, RefMap, limits};
use relsync_tests::{executable, varint, zstd_zero_bomb};

use super::forgery::Ctx;
use super::{Case, Category, case};
use crate::executables::ref_map_at;

pub(super) fn cases() -> Vec<Case> {
    use Category::{Content, Resources};
    vec![
        case(
            "ref-map-flipped-byte",
            Content,
            &["reference map", "hash to", "the manifest says"],
            |c| {
                let (pack, at, len) = map_range(c);
                c.forge.flip_byte(&pack, at + len / 2);
            },
        ),
        case(
            "ref-map-truncated",
            Content,
            &[
                "content-range",
                "is not the range asked for",
                "packs/",
                "reference map of bin/app",
            ],
            |c| {
                let (pack, at, len) = map_range(c);
                c.forge.truncate(&pack, at + len / 2);
            },
        ),
        case(
            "ref-map-withheld",
            Content,
            &["http 416", "packs/", "reference map of bin/app"],
            |c| {
                let (pack, at, _) = map_range(c);
                c.forge.truncate(&pack, at);
            },
        ),
        case(
            "ref-map-wrong-label-count",
            Content,
            &["reference map", "labels for", "targets"],
            |c| {
                let targets = old_targets();
                publish_map(c, &frame(&side(1, &[(targets - 1, 0)])));
            },
        ),
        case(
            "ref-map-label-run-overflows",
            Content,
            &["reference map", "a run of", "labels where"],
            |c| {
                let targets = old_targets();
                publish_map(c, &frame(&side(1, &[(targets, 0), (u64::MAX, 1)])));
            },
        ),
        case(
            "ref-map-unknown-version",
            Content,
            &["reference map", "unknown side-object version"],
            |c| {
                let targets = old_targets();
                publish_map(c, &frame(&side(2, &[(targets, 0)])));
            },
        ),
        case(
            "ref-map-declares-oversized",
            Resources,
            &["reference map", "declares 268435456 bytes", "limit"],
            |c| publish_map(c, &zstd_zero_bomb(256 << 20, true)),
        ),
        case(
            "ref-map-frame-over-limit",
            Resources,
            &[
                "malformed manifest",
                "reference map against 1.0.0",
                "out of range",
            ],
            |c| {
                c.publish_forged(|_, m| {
                    m.bases[0].refs[0].frame_len = limits::REF_MAP_BYTES + 1;
                })
            },
        ),
        case(
            "ref-map-base-not-an-executable",
            Content,
            &["reference map", "readme", "is not an x86-64 elf image"],
            |c| {
                let v1 = c.forge.manifest(&c.facts.v1);
                let readme = entry_index(&v1, "README");
                c.publish_forged(|_, m| m.bases[0].refs[0].base_entry = readme);
            },
        ),
        case(
            "ref-map-file-lacks-the-chunk",
            Content,
            &["reference map", "readme does not hold chunk"],
            |c| {
                c.publish_forged(|_, m| {
                    m.bases[0].refs[0].entry = entry_index(m, "README");
                })
            },
        ),
        case(
            "ref-map-index-out-of-range",
            Content,
            &["malformed manifest", "delta against 1.0.0", "out of range"],
            |c| {
                c.publish_forged(|_, m| {
                    let past = m.bases[0].refs.len() as u32;
                    for d in &mut m.bases[0].deltas {
                        if d.codec.ref_map().is_some() {
                            d.codec = DeltaCodec::BsdiffRefs { map: past };
                        }
                    }
                })
            },
        ),
    ]
}

/// Where v2's reference map (the only one, against v1) lies: (pack path, offset, length).
fn map_range(c: &Ctx<'_>) -> (String, u64, u64) {
    let (_, m) = c.forge.release();
    assert_eq!(m.bases.len(), 1, "v2 has one base, v1");
    assert_eq!(
        m.bases[0].refs.len(),
        1,
        "v2 has a reference map against v1"
    );
    ref_map_at(&m, 0, 0)
}

/// The index of the regular file `path` in `m`.
fn entry_index(m: &Manifest, path: &str) -> u32 {
    let i = m
        .entries
        .iter()
        .position(|e| e.path.as_str() == path)
        .unwrap_or_else(|| panic!("no entry {path}"));
    assert!(matches!(m.entries[i].kind, EntryKind::File(_)), "{path}");
    i as u32
}

/// How many distinct reference targets a client's scan of v1's executable finds.
fn old_targets() -> u64 {
    let refs = OldRefs::scan(&executable(1)).expect("v1's executable scans");
    refs.targets() as u64
}

/// A side object in `version`'s layout: v2's executable's segments, no `.eh_frame_hdr`,
/// then label runs of (count, shift delta).
fn side(version: u8, runs: &[(u64, i64)]) -> Vec<u8> {
    let layout = Elf::parse(&executable(2)).expect("v2 parses").layout();
    let mut out = vec![version];
    out.extend(varint(layout.loads.len() as u64));
    for l in &layout.loads {
        for v in [l.vaddr, l.offset, l.file_size, l.mem_size] {
            out.extend(varint(v));
        }
    }
    out.extend(varint(0));
    for &(count, shift) in runs {
        out.extend(varint(count));
        out.extend(varint(((shift << 1) ^ (shift >> 63)) as u64));
    }
    out
}

fn frame(side: &[u8]) -> Vec<u8> {
    frame::compress(side, 3).expect("compress")
}

/// Publishes the forged release with `map` as the reference map of its executable (in a pack
/// of its own, with its true hash) and every projected delta using it: the map passes the
/// hash check, so what the client does with its content is what is tested. The honest map
/// stays in its pack (which its bytes tile), as the map of the READMEs, which no frame uses
/// (a base's maps name distinct files).
fn publish_map(c: &mut Ctx<'_>, map: &[u8]) {
    let v1 = c.forge.manifest(&c.facts.v1);
    c.publish_forged(|c, m| {
        let pack = c.add_pack(m, &[map]);
        let readme = entry_index(m, "README");
        let base = &mut m.bases[0];
        let honest = base.refs[0];
        base.refs[0].base_entry = entry_index(&v1, "README");
        base.refs[0].entry = readme;
        base.refs.push(RefMap {
            pack,
            frame_len: map.len() as u32,
            hash: ChunkId::of(map),
            ..honest
        });
        let index = (base.refs.len() - 1) as u32;
        let mut moved = 0;
        for d in &mut base.deltas {
            if d.codec.ref_map().is_some() {
                d.codec = DeltaCodec::BsdiffRefs { map: index };
                moved += 1;
            }
        }
        assert!(moved > 0, "v2 has projected deltas");
    });
}
