//! zstd frame round trips and hostile frames.

use relsync_chunker::{ChunkParams, Error, frame};

use crate::support::{KIB, MIB, text_like, xof};

fn sizes() -> Vec<usize> {
    let p = ChunkParams::default();
    let (min, avg, max) = (
        p.min_bytes as usize,
        p.avg_bytes as usize,
        p.max_bytes as usize,
    );
    vec![0, 1, min - 1, min, avg, max, max + 1, 3 * MIB]
}

fn is_corrupt(result: relsync_chunker::Result<Vec<u8>>) -> bool {
    matches!(result, Err(Error::CorruptFrame(_)))
}

#[test]
fn round_trip_every_size() {
    for size in sizes() {
        for data in [xof("frames/xof", size), text_like("frames/text", size)] {
            let levels: &[i32] = if size <= 256 * KIB {
                &[1, 3, frame::DEFAULT_LEVEL]
            } else {
                &[3]
            };
            for &level in levels {
                let packed = frame::compress(&data, level).unwrap();
                assert!(
                    frame::decompress(&packed, size).unwrap() == data,
                    "size {size}"
                );
                let mut out = vec![9; 17];
                frame::decompress_into(&packed, size, &mut out).unwrap();
                assert!(out == data, "size {size} into");
            }
        }
    }
}

#[test]
fn text_compresses() {
    let data = text_like("frames/ratio", 64 * KIB);
    let packed = frame::compress(&data, 3).unwrap();
    assert!(
        packed.len() * 2 < data.len(),
        "{} -> {}",
        data.len(),
        packed.len()
    );
}

#[test]
fn wrong_expected_size_is_rejected() {
    for size in sizes() {
        let data = xof("frames/wrong-size", size);
        let packed = frame::compress(&data, 3).unwrap();
        let mut wrong = vec![size + 1, size * 2 + 1];
        if size > 0 {
            wrong.extend([0, size - 1, size / 2]);
        }
        for expected in wrong {
            assert!(
                is_corrupt(frame::decompress(&packed, expected)),
                "size {size} accepted as {expected}"
            );
        }
    }
}

#[test]
fn small_budget_bounds_a_bomb() {
    // 64 MiB of zeros packs to a few KiB; a 1 KiB budget must not inflate it.
    let packed = frame::compress(&vec![0u8; 64 * MIB], 3).unwrap();
    assert!(packed.len() < 64 * KIB);
    assert!(is_corrupt(frame::decompress(&packed, KIB)));
}

#[test]
fn truncated_frames_are_rejected() {
    for data in [
        xof("frames/truncated", 5_000),
        text_like("frames/truncated", 5_000),
    ] {
        let packed = frame::compress(&data, 3).unwrap();
        for cut in 0..packed.len() {
            assert!(
                is_corrupt(frame::decompress(&packed[..cut], data.len())),
                "prefix of {cut}/{} bytes accepted",
                packed.len()
            );
        }
    }
}

#[test]
fn corrupted_frames_never_panic() {
    let data = text_like("frames/corrupt", 20_000);
    let packed = frame::compress(&data, 3).unwrap();
    // Frames carry no checksum (chunk ids are checked by the caller), so a flipped bit in a
    // block may still decode; it must never panic or return the wrong length.
    for i in 0..packed.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = packed.clone();
            bad[i] ^= flip;
            match frame::decompress(&bad, data.len()) {
                Ok(out) => assert_eq!(out.len(), data.len()),
                Err(e) => assert!(matches!(e, Error::CorruptFrame(_)), "{e}"),
            }
        }
    }
    // A bad magic number is always caught.
    let mut bad = packed.clone();
    bad[0] ^= 0xff;
    assert!(is_corrupt(frame::decompress(&bad, data.len())));
}

#[test]
fn garbage_is_rejected() {
    for junk in [&b""[..], b"\0", b"not a zstd frame at all", &[0xff; 64]] {
        assert!(is_corrupt(frame::decompress(junk, 10)), "{junk:?}");
    }
}

#[test]
fn exactly_one_frame_is_accepted() {
    let data = b"hello world hello world";
    let one = frame::compress(data, 3).unwrap();
    let empty = frame::compress(b"", 3).unwrap();
    let mut two = one.clone();
    two.extend_from_slice(&one);
    let mut with_empty = one.clone();
    with_empty.extend_from_slice(&empty);
    let mut trailing = one.clone();
    trailing.extend_from_slice(&[0; 16]);
    // A skippable frame (magic 0x184D2A50, 4 bytes of payload) before a real one.
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
    skippable.extend_from_slice(&one);
    for (what, bytes, len) in [
        ("no bytes", &[][..], 0),
        ("two frames", &two, 2 * data.len()),
        ("frame + empty frame", &with_empty, data.len()),
        ("trailing zeros", &trailing, data.len()),
        ("skippable frame", &skippable, data.len()),
    ] {
        assert!(is_corrupt(frame::decompress(bytes, len)), "{what} accepted");
    }
    assert_eq!(frame::decompress(&one, data.len()).unwrap(), data);
    assert!(frame::decompress(&empty, 0).unwrap().is_empty());
}
