//! Content: what the origin (or anyone in the path) serves in place of the signed bytes.
//! Channel pointers, manifests and packs truncated, emptied, garbled or withheld; pack bytes
//! flipped or cut mid-range; a whole-object answer longer than signed; and forged releases
//! whose chunks, files, delta frames or pack and chunk tables do not add up.

use relsync_chunker::ChunkId;
use relsync_engine::FileHash;
use relsync_engine::manifest::{Delta, DeltaCodec};
use relsync_tests::{pseudo_random, varint};

use super::forgery::{add_chunk, add_entry, file, random_chunk};
use super::{Case, Category, Server, case};

pub(super) fn cases() -> Vec<Case> {
    use Category::Content;
    vec![
        case(
            "pointer-truncated",
            Content,
            &["channel pointer", "truncated"],
            |c| {
                let path = c.forge.pointer_path();
                let len = c.forge.read(&path).len() as u64;
                c.forge.truncate(&path, len / 2);
            },
        ),
        case(
            "pointer-garbage",
            Content,
            &["channel pointer", "wrong magic"],
            |c| {
                let path = c.forge.pointer_path();
                c.forge.put(&path, &pseudo_random("garbage pointer", 300));
            },
        ),
        case(
            "pointer-empty",
            Content,
            &["channel pointer", "wrong magic"],
            |c| {
                let path = c.forge.pointer_path();
                c.forge.put(&path, b"");
            },
        ),
        case(
            "pointer-withheld",
            Content,
            &["no channel pointer", "channels/stable"],
            |c| {
                let path = c.forge.pointer_path();
                c.forge.remove(&path);
            },
        ),
        case(
            "manifest-delta-truncated",
            Content,
            &["manifest delta"],
            |c| {
                let path = c.delta_path();
                let len = c.forge.read(&path).len() as u64;
                c.forge.truncate(&path, len / 2);
            },
        ),
        case(
            "manifest-truncated",
            Content,
            &["malformed manifest"],
            |c| {
                let path = format!("manifests/{}", c.facts.v2);
                let len = c.forge.read(&path).len() as u64;
                c.forge.truncate(&path, len / 2);
            },
        )
        .fresh(),
        case(
            "pack-flipped-byte",
            Content,
            &["chunk", "is corrupt"],
            |c| {
                let (pack, start, len) = c.first_range();
                c.forge.flip_byte(&pack, start + len / 2);
            },
        ),
        case(
            "pack-truncated-mid-range",
            Content,
            &["content-range", "is not the range asked for"],
            |c| {
                // The server can only answer with the bytes up to the cut (a 206 with a shorter
                // Content-Range).
                let (pack, start, len) = c.last_range();
                assert!(
                    len >= 2,
                    "range {pack} {start}+{len} is too short to cut in two"
                );
                c.forge.truncate(&pack, start + len / 2);
            },
        ),
        case(
            "pack-truncated-before-range",
            Content,
            &["http 416", "packs/"],
            |c| {
                let (pack, start, _) = c.first_range();
                c.forge.truncate(&pack, start);
            },
        ),
        case("pack-withheld", Content, &["no pack", "packs/"], |c| {
            let (pack, _, _) = c.first_range();
            c.forge.remove(&pack);
        }),
        case(
            // A server that ignores Range is served from (see `mirrors.rs`), but never past
            // the pack's signed length.
            "pack-200-longer-than-signed",
            Content,
            &[
                "whole-object answer (200)",
                "more than the object's",
                "packs/",
            ],
            |c| {
                let (pack, _, _) = c.first_range();
                c.forge.append(&pack, &[0u8; 4096]);
            },
        )
        .server(Server::IgnoringRanges),
        case(
            "file-hash-mismatch",
            Content,
            &["file zz-file failed verification"],
            |c| {
                // Its chunk is right; the file's signed hash is not.
                let (data, frame) = random_chunk("file-hash-mismatch");
                let chunk = (ChunkId::of(&data), 64 * 1024, frame.as_slice());
                let hash = FileHash::of(b"something else");
                c.publish_forged(|c, m| c.add_file(m, "zz-file", chunk, hash));
            },
        ),
        case(
            "chunk-id-mismatch",
            Content,
            &["is corrupt", "hash is"],
            |c| {
                // A frame whose bytes are not those its signed chunk id names.
                let (data, frame) = random_chunk("chunk-id-mismatch");
                let wanted = pseudo_random("what the id names", 64 * 1024);
                let chunk = (ChunkId::of(&wanted), 64 * 1024, frame.as_slice());
                c.publish_forged(|c, m| c.add_file(m, "zz-file", chunk, FileHash::of(&data)));
            },
        ),
        case(
            "chunk-length-understated",
            Content,
            &["chunk", "is corrupt"],
            |c| {
                // The chunk's signed length is one byte less than its frame decodes to.
                let (data, frame) = random_chunk("chunk-length-understated");
                let short = &data[..data.len() - 1];
                let chunk = (ChunkId::of(short), 64 * 1024 - 1, frame.as_slice());
                c.publish_forged(|c, m| c.add_file(m, "zz-file", chunk, FileHash::of(short)));
            },
        ),
        case(
            "delta-frame-reads-outside-window",
            Content,
            &["is corrupt", "seeks before the window"],
            |c| {
                // A new chunk with a plain frame and a smaller bsdiff frame against v1 (which
                // the install holds, so the client prefers it) whose instruction seeks before
                // the start of its window.
                let (data, plain) = random_chunk("delta-frame");
                let ctrl: Vec<u8> = [1, 64 * 1024, 0].into_iter().flat_map(varint).collect();
                let ctrl = relsync_chunker::frame::compress(&ctrl, 3).expect("compress");
                let diff = relsync_chunker::frame::compress(&[0; 64 * 1024], 3).expect("compress");
                let mut delta = varint(ctrl.len() as u64);
                delta.extend(varint(diff.len() as u64));
                delta.extend_from_slice(&ctrl);
                delta.extend_from_slice(&diff);
                c.publish_forged(|c, m| {
                    let pack = c.add_pack(m, &[&plain, &delta]);
                    let chunk = add_chunk(m, ChunkId::of(&data), 64 * 1024, pack, plain.len());
                    let v1 = c.facts.v1;
                    let base = m
                        .bases
                        .iter_mut()
                        .find(|b| b.manifest == v1)
                        .expect("v2 has deltas against v1");
                    assert!(!base.windows.is_empty(), "v2's base v1 has no window");
                    base.deltas.push(Delta {
                        chunk,
                        window: 0,
                        pack,
                        frame_len: delta.len() as u32,
                        codec: DeltaCodec::Bsdiff,
                    });
                    let hash = FileHash::of(&data);
                    add_entry(m, "zz-delta", file(64 * 1024, hash, vec![chunk]));
                });
            },
        ),
        case(
            "pack-length-disagrees",
            Content,
            &["malformed manifest", "frames do not add up"],
            |c| c.publish_forged(|_, m| m.packs[0].len += 1),
        ),
        case(
            "chunk-index-out-of-range",
            Content,
            &["malformed manifest", "names chunk"],
            |c| {
                c.publish_forged(|_, m| {
                    let past = m.chunks.len() as u32;
                    add_entry(m, "zz-file", file(0, FileHash::of(b""), vec![past]));
                })
            },
        ),
        case(
            "chunk-listed-twice",
            Content,
            &["malformed manifest", "listed twice"],
            |c| {
                c.publish_forged(|_, m| {
                    let first = m.chunks[0];
                    m.chunks.push(first);
                    m.packs[first.pack as usize].len += u64::from(first.frame_len);
                })
            },
        ),
    ]
}
