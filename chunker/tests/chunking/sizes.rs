//! Edge-case input sizes with the default parameters.

use relsync_chunker::ChunkParams;

use crate::support::{MIB, chunk_both_ways, xof};

fn chunk_len(size: usize) -> Vec<u32> {
    let data = xof(&format!("sizes/{size}"), size);
    chunk_both_ways(&data, ChunkParams::default())
        .iter()
        .map(|c| c.len)
        .collect()
}

#[test]
fn empty_input_has_no_chunks() {
    assert!(chunk_len(0).is_empty());
}

#[test]
fn inputs_up_to_min_are_one_chunk() {
    let min = ChunkParams::default().min_bytes as usize;
    for size in [1, 2, 3, min - 1, min] {
        assert_eq!(chunk_len(size), [size as u32], "size {size}");
    }
}

#[test]
fn inputs_around_avg_and_max() {
    let p = ChunkParams::default();
    let (min, avg, max) = (
        p.min_bytes as usize,
        p.avg_bytes as usize,
        p.max_bytes as usize,
    );
    for size in [min + 1, avg - 1, avg, avg + 1, max - 1, max] {
        // chunk_both_ways already checks coverage and bounds; these fit in one max chunk.
        assert!(!chunk_len(size).is_empty(), "size {size}");
    }
    // More than `max` bytes never fit in one chunk.
    assert!(chunk_len(max + 1).len() >= 2);
}

#[test]
fn multi_chunk_input() {
    let p = ChunkParams::default();
    let size = 3 * MIB;
    let lens = chunk_len(size);
    assert!(lens.len() >= size / p.max_bytes as usize);
    assert!(lens.len() <= size.div_ceil(p.min_bytes as usize));
    // Normalized FastCDC lands near the average on random data.
    let mean = size / lens.len();
    let avg = p.avg_bytes as usize;
    assert!(
        (avg / 2..=avg * 2).contains(&mean),
        "mean chunk {mean} bytes, avg {avg}"
    );
}
