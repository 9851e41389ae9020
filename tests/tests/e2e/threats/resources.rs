//! Resources: inputs that would exhaust memory, disk or time if believed. Documents over
//! their size caps or endless, decompression bombs, chunk tables, delta bases and windows
//! over their limits, chunks over the maximum size, and releases larger than the free disk.

use relsync_chunker::ChunkId;
use relsync_engine::manifest::{Base, ManifestDelta, Window};
use relsync_engine::{FileHash, ManifestId};
use relsync_tests::{V1, manifest_body_claiming_chunks, zstd_zero_bomb};

use super::forgery::{add_entry, file};
use super::{Case, Category, case};

pub(super) fn cases() -> Vec<Case> {
    use Category::Resources;
    vec![
        case(
            "pointer-over-size-cap",
            Resources,
            &["channel pointer", "exceeds the 65536-byte limit"],
            |c| {
                let path = c.forge.pointer_path();
                c.forge.append(&path, &vec![0u8; 64 * 1024]);
            },
        ),
        case(
            "pointer-endless",
            Resources,
            &["channel pointer", "exceeds the 65536-byte limit"],
            |c| {
                let path = c.forge.pointer_path();
                c.forge.put_sparse(&path, 4 << 30);
            },
        ),
        case(
            "manifest-longer-than-signed",
            Resources,
            &["manifest delta", "exceeds the"],
            |c| {
                let path = c.delta_path();
                c.forge.append(&path, b"x");
            },
        ),
        case(
            "manifest-endless",
            Resources,
            &["manifest", "exceeds the 268435456-byte limit"],
            |c| {
                // A signed pointer allowing any manifest length, and a 1 GiB manifest file.
                let (mut p, _) = c.forge.release();
                p.manifest_len = u64::MAX;
                p.manifest_deltas.clear();
                c.forge.write_pointer(&p);
                let path = format!("manifests/{}", p.manifest);
                c.forge.put_sparse(&path, 1 << 30);
            },
        ),
        case(
            "manifest-decompression-bomb",
            Resources,
            &["manifest delta", "over the 268435456-byte limit"],
            |c| {
                // The delta the client fetches becomes a zstd frame declaring 1 GiB, cut to
                // the delta's signed length (all a CDN can serve).
                let path = c.delta_path();
                let len = c.forge.read(&path).len();
                let mut bomb = zstd_zero_bomb(1 << 30, true);
                bomb.truncate(len);
                c.forge.put(&path, &bomb);
            },
        ),
        case(
            "chunk-count-bomb",
            Resources,
            &["malformed manifest"],
            |c| {
                // A short signed body whose chunk table claims 2^40 entries.
                let (p, m) = c.forge.release();
                let body = manifest_body_claiming_chunks(&m, 1 << 40);
                c.forge.publish_body(p, &body);
            },
        ),
        case(
            "pointer-too-many-manifest-deltas",
            Resources,
            &["channel pointer", "too many manifest deltas"],
            |c| {
                let mut p = c.forge.pointer();
                p.manifest_deltas = (0..17u8)
                    .map(|i| ManifestDelta {
                        base: ManifestId([i; 32]),
                        len: 100,
                    })
                    .collect();
                c.forge.write_pointer(&p);
            },
        ),
        case(
            "manifest-too-many-bases",
            Resources,
            &["malformed manifest", "too many delta bases"],
            |c| {
                c.publish_forged(|c, m| {
                    let base = Base {
                        manifest: c.facts.v1,
                        version: V1.parse().expect("v"),
                        windows: Vec::new(),
                        deltas: Vec::new(),
                        refs: Vec::new(),
                    };
                    m.bases.extend(std::iter::repeat_n(base, 17));
                })
            },
        ),
        case(
            "manifest-oversized-window",
            Resources,
            &["malformed manifest", "window", "oversized"],
            |c| {
                c.publish_forged(|c, m| {
                    m.bases.push(Base {
                        manifest: c.facts.v1,
                        version: V1.parse().expect("v"),
                        windows: vec![Window {
                            entry: 0,
                            offset: 0,
                            len: 64 * 1024 * 1024 + 1,
                        }],
                        deltas: Vec::new(),
                        refs: Vec::new(),
                    })
                })
            },
        ),
        case(
            "chunk-over-max-size",
            Resources,
            &["malformed manifest", "bad size"],
            |c| {
                // One chunk of 1 MiB, over the 256 KiB maximum the manifest declares.
                let data = vec![7u8; 1 << 20];
                let frame = relsync_chunker::frame::compress(&data, 3).expect("compress");
                let chunk = (ChunkId::of(&data), 1 << 20, frame.as_slice());
                c.publish_forged(|c, m| c.add_file(m, "zz-big-chunk", chunk, FileHash::of(&data)));
            },
        ),
        case(
            "total-size-over-free-space",
            Resources,
            &["not enough free space"],
            |c| {
                // A file of twice the free disk space: one local chunk, repeated.
                c.publish_forged(|c, m| {
                    let (index, len) = m
                        .chunks
                        .iter()
                        .enumerate()
                        .take(128)
                        .max_by_key(|(_, ch)| ch.len)
                        .map(|(i, ch)| (i as u32, u64::from(ch.len)))
                        .expect("a chunk");
                    let repeats = (2 * c.facts.free_bytes) / len + 1;
                    let chunks = vec![index; repeats as usize];
                    let huge = file(repeats * len, FileHash([0; 32]), chunks);
                    add_entry(m, "zz-huge", huge);
                })
            },
        ),
        case(
            "chunk-decompression-bomb",
            Resources,
            &["chunk", "is corrupt"],
            |c| {
                // 64 KiB declared; the frame (no size in its header) decodes to 1 GiB.
                let data = vec![0u8; 64 * 1024];
                let bomb = zstd_zero_bomb(1 << 30, false);
                let chunk = (ChunkId::of(&data), 64 * 1024, bomb.as_slice());
                c.publish_forged(|c, m| c.add_file(m, "zz-bomb", chunk, FileHash::of(&data)));
            },
        ),
    ]
}
