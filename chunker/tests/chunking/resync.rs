//! Content-defined boundaries resynchronize after a local edit.

use std::collections::HashSet;

use relsync_chunker::{ChunkId, ChunkParams};

use crate::support::{MIB, chunk_both_ways, xof};

/// Returns (chunks of `edited`, how many of them are not chunks of `original`).
fn changed_chunks(original: &[u8], edited: &[u8]) -> (usize, usize) {
    let params = ChunkParams::default();
    let before: HashSet<ChunkId> = chunk_both_ways(original, params)
        .iter()
        .map(|c| c.id)
        .collect();
    let after = chunk_both_ways(edited, params);
    let fresh = after.iter().filter(|c| !before.contains(&c.id)).count();
    (after.len(), fresh)
}

fn assert_local(what: &str, original: &[u8], edited: &[u8]) {
    let (total, fresh) = changed_chunks(original, edited);
    assert!(total > 40, "{what}: only {total} chunks");
    // The edited chunk, plus at most a couple of neighbours before boundaries realign.
    assert!(fresh <= 3, "{what}: {fresh} of {total} chunks changed");
}

#[test]
fn insertion_in_the_middle_changes_few_chunks() {
    let original = xof("resync/base", 4 * MIB);
    let mut edited = original.clone();
    let at = 2 * MIB + 12_345;
    edited.splice(at..at, *b"hello");
    assert_local("insert", &original, &edited);
}

#[test]
fn deletion_in_the_middle_changes_few_chunks() {
    let original = xof("resync/base", 4 * MIB);
    let mut edited = original.clone();
    edited.drain(2 * MIB + 999..2 * MIB + 1_006);
    assert_local("delete", &original, &edited);
}

#[test]
fn prepending_changes_few_chunks() {
    let original = xof("resync/base", 4 * MIB);
    let mut edited = b"#!prefix\n".to_vec();
    edited.extend_from_slice(&original);
    assert_local("prepend", &original, &edited);
}

#[test]
fn overwrite_changes_few_chunks() {
    let original = xof("resync/base", 4 * MIB);
    let mut edited = original.clone();
    for b in &mut edited[3 * MIB..3 * MIB + 100] {
        *b ^= 0x5a;
    }
    assert_local("overwrite", &original, &edited);
}
