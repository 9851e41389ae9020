//! Property tests: streaming equals slicing, and reassembly is exact, for arbitrary input.

use proptest::prelude::*;
use relsync_chunker::{ChunkParams, Chunker, chunk_slice};

use crate::support::{KIB, MIB, check_chunks, reassemble, small_params, stream, text_like, xof};

/// Raw bytes (shrinkable), or up to 1 MiB of generated data with some structure.
fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..=64 * KIB),
        (any::<u64>(), 0..=MIB, 0u8..3).prop_map(|(seed, len, kind)| {
            let seed = seed.to_string();
            match kind {
                0 => xof(&seed, len),
                1 => text_like(&seed, len),
                // Long runs of one byte, so that max-size cuts happen too.
                _ => {
                    let mut data = text_like(&seed, len);
                    for (i, b) in data.iter_mut().enumerate() {
                        if (i / 10_000) % 2 == 0 {
                            *b = 0;
                        }
                    }
                    data
                }
            }
        }),
    ]
}

/// Mostly even sizes (FastCDC needs them), sometimes odd ones.
fn size(hi: u32) -> impl Strategy<Value = u32> {
    prop_oneof![4 => (0..=hi / 2).prop_map(|x| x * 2), 1 => 0..=hi]
}

/// Unvalidated parameters.
fn raw_params(min: u32, avg: u32, max: u32) -> ChunkParams {
    let mut p = ChunkParams::default();
    (p.min_bytes, p.avg_bytes, p.max_bytes) = (min, avg, max);
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn streaming_equals_slice(data in input(), step in 1usize..=10_000) {
        let params = small_params();
        let sliced = chunk_slice(&data, params).unwrap();
        check_chunks(&data, params, &sliced);
        prop_assert_eq!(stream(&data, params, step), sliced);
        prop_assert!(reassemble(&data, params, step) == data);
    }

    /// Any parameters either fail validation or chunk correctly; nothing panics.
    #[test]
    fn any_params_are_safe(
        sizes in [size(20_000), size(40_000), size(80_000)],
        data in proptest::collection::vec(any::<u8>(), 0..=20 * KIB),
    ) {
        let mut sizes = sizes;
        sizes.sort_unstable();
        let [min, avg, max] = sizes;
        let Ok(params) = ChunkParams::new(min, avg, max) else {
            prop_assert!(chunk_slice(&data, raw_params(min, avg, max)).is_err());
            return Ok(());
        };
        let sliced = chunk_slice(&data, params).unwrap();
        check_chunks(&data, params, &sliced);
        let streamed: Vec<_> = Chunker::new(&data[..], params)
            .unwrap()
            .map(|c| c.unwrap().to_chunk())
            .collect();
        prop_assert_eq!(streamed, sliced);
    }
}
