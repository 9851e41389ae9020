//! Determinism, streaming vs. slice, reassembly and reader edge cases.

use std::io::{self, Read};

use relsync_chunker::{ChunkParams, Chunker, Error, chunk_slice};

use crate::support::{
    KIB, MIB, ShortReads, check_chunks, chunk_both_ways, reassemble, small_params, stream,
    text_like, xof,
};

#[test]
fn boundaries_are_deterministic() {
    let data = xof("boundaries/deterministic", 3 * MIB);
    let params = ChunkParams::default();
    let first = chunk_slice(&data, params).unwrap();
    let second = chunk_slice(&data.clone(), params).unwrap();
    assert_eq!(first, second);
    assert!(
        first.len() > 10,
        "expected many chunks, got {}",
        first.len()
    );
    assert_eq!(stream(&data, params, 4099), stream(&data, params, 4099));
}

#[test]
fn streaming_matches_slice_with_short_reads() {
    for (data, params) in [
        (
            xof("boundaries/stream-default", 3 * MIB),
            ChunkParams::default(),
        ),
        (
            text_like("boundaries/stream-text", MIB),
            ChunkParams::default(),
        ),
        (xof("boundaries/stream-small", 256 * KIB), small_params()),
    ] {
        let sliced = chunk_slice(&data, params).unwrap();
        check_chunks(&data, params, &sliced);
        for step in [1, 7, 4099, 65_537, usize::MAX] {
            // One byte at a time is slow in debug builds; keep it to the small input.
            if step == 1 && data.len() > 256 * KIB {
                continue;
            }
            assert_eq!(stream(&data, params, step), sliced, "read size {step}");
        }
    }
}

#[test]
fn reassembly_is_byte_exact() {
    for data in [
        xof("boundaries/reassembly", 3 * MIB + 12_345),
        vec![0; MIB + 1],
    ] {
        for step in [7, 4099] {
            assert!(reassemble(&data, ChunkParams::default(), step) == data);
        }
    }
}

#[test]
fn all_zero_input_cuts_at_max() {
    let params = ChunkParams::default();
    let max = params.max_bytes as usize;
    let data = vec![0u8; 3 * max + 5];
    let chunks = chunk_both_ways(&data, params);
    let lens: Vec<u32> = chunks.iter().map(|c| c.len).collect();
    assert_eq!(
        lens,
        [params.max_bytes, params.max_bytes, params.max_bytes, 5]
    );
    // Equal bytes, equal ids.
    assert_eq!(chunks[0].id, chunks[1].id);
}

/// Retries `Interrupted` like `Read::read_exact` does, which `Chunker` must too.
#[test]
fn interrupted_reads_are_retried() {
    struct Flaky<'a> {
        inner: ShortReads<'a>,
        calls: usize,
    }
    impl Read for Flaky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // Every third call is interrupted.
            self.calls += 1;
            if self.calls == 3 {
                self.calls = 0;
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.inner.read(buf)
        }
    }
    let data = xof("boundaries/interrupted", 300 * KIB);
    let reader = Flaky {
        inner: ShortReads::new(&data, 4099),
        calls: 0,
    };
    let streamed: Vec<_> = Chunker::new(reader, small_params())
        .unwrap()
        .map(|c| c.unwrap().to_chunk())
        .collect();
    assert_eq!(streamed, chunk_slice(&data, small_params()).unwrap());
}

#[test]
fn read_errors_surface_as_io_errors() {
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    // 10 KiB of ones: two max-size chunks, then the error, then the end.
    let items: Vec<_> = Chunker::new(Broken(10 * KIB), small_params())
        .unwrap()
        .take(10)
        .collect();
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(
        items[..2]
            .iter()
            .all(|c| c.as_ref().unwrap().data == [1; 4096])
    );
    match &items[2] {
        Err(Error::Io(e)) => assert!(e.to_string().contains("disk on fire")),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn params_are_validated() {
    let d = ChunkParams::default();
    assert_eq!(
        ChunkParams::new(d.min_bytes, d.avg_bytes, d.max_bytes).unwrap(),
        d
    );
    for (min, avg, max) in [
        (0, 1024, 4096),      // min below FastCDC's floor
        (256, 128, 4096),     // avg below FastCDC's floor
        (256, 1024, 512),     // max below FastCDC's floor
        (8192, 4096, 16_384), // min > avg
        (256, 8192, 4096),    // avg > max
        (257, 1024, 4096),    // odd sizes shift FastCDC's cut points
        (256, 1023, 4096),
        (256, 1024, 4097),
        (256, 1024, 32 << 20), // max above FastCDC's ceiling
        (u32::MAX, u32::MAX, u32::MAX),
    ] {
        let err = ChunkParams::new(min, avg, max).unwrap_err();
        assert!(matches!(err, Error::InvalidParams { .. }), "{err}");
    }
    // Fields are public, so the chunkers check them again.
    let mut odd = ChunkParams::default();
    odd.min_bytes += 1;
    assert!(chunk_slice(b"abc", odd).is_err());
    assert!(Chunker::new(&b"abc"[..], odd).is_err());
}
