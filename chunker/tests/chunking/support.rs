//! Deterministic inputs, short-read readers and chunk-list checks.

use std::io::{self, Read};

use relsync_chunker::{Chunk, ChunkId, ChunkParams, Chunker, chunk_slice};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

/// `len` pseudo-random bytes: the BLAKE3 XOF of `seed`.
pub fn xof(seed: &str, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut buf);
    buf
}

/// The word list behind [`text_like`].
pub const WORDS: [&str; 16] = [
    "the", "update", "chunk", "manifest", "relsync", "of", "and", "a", "signed", "origin", "peer",
    "to", "file", "is", "delta", "in",
];

/// Low-entropy, text-like bytes: word `i` is `WORDS[xof(seed)[i] % 16]`, followed by `'\n'`
/// after every 10th word and `' '` otherwise; truncated to `len`.
pub fn text_like(seed: &str, len: usize) -> Vec<u8> {
    let mut picks = [0u8; 4096];
    let mut reader = blake3::Hasher::new().update(seed.as_bytes()).finalize_xof();
    let mut out = Vec::with_capacity(len + 16);
    let mut word = 0usize;
    while out.len() < len {
        let pick = word % picks.len();
        if pick == 0 {
            reader.fill(&mut picks);
        }
        out.extend_from_slice(WORDS[usize::from(picks[pick] % 16)].as_bytes());
        word += 1;
        out.push(match word % 10 {
            0 => b'\n',
            _ => b' ',
        });
    }
    out.truncate(len);
    out
}

/// min 256 / avg 1 KiB / max 4 KiB, for many chunks from small inputs.
pub fn small_params() -> ChunkParams {
    ChunkParams::new(256, 1024, 4096).unwrap()
}

/// A reader that hands out at most `step` bytes per `read`.
#[derive(Debug)]
pub struct ShortReads<'a> {
    data: &'a [u8],
    step: usize,
}

impl<'a> ShortReads<'a> {
    pub fn new(data: &'a [u8], step: usize) -> Self {
        assert!(step > 0);
        Self { data, step }
    }
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Chunks `data` with the streaming [`Chunker`], reading `step` bytes at a time, and checks
/// that the chunk bytes match the input at their offsets.
pub fn stream(data: &[u8], params: ChunkParams, step: usize) -> Vec<Chunk> {
    Chunker::new(ShortReads::new(data, step), params)
        .unwrap()
        .map(|c| {
            let c = c.unwrap();
            let start = usize::try_from(c.offset).unwrap();
            assert_eq!(
                c.data,
                data[start..start + c.data.len()],
                "bytes at {start}"
            );
            c.to_chunk()
        })
        .collect()
}

/// The streaming chunker's bytes, concatenated.
pub fn reassemble(data: &[u8], params: ChunkParams, step: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for c in Chunker::new(ShortReads::new(data, step), params).unwrap() {
        out.extend_from_slice(&c.unwrap().data);
    }
    out
}

/// Asserts the chunks tile `data` exactly, respect the size bounds, and carry the right ids.
pub fn check_chunks(data: &[u8], params: ChunkParams, chunks: &[Chunk]) {
    let mut pos = 0usize;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.offset, pos as u64, "chunk {i} is not contiguous");
        let len = c.len as usize;
        assert!(len > 0, "chunk {i} is empty");
        assert!(c.len <= params.max_bytes, "chunk {i}: {len} > max");
        if i + 1 < chunks.len() {
            assert!(c.len >= params.min_bytes, "chunk {i}: {len} < min");
        }
        assert_eq!(c.id, ChunkId::of(&data[pos..pos + len]), "chunk {i} id");
        pos += len;
    }
    assert_eq!(pos, data.len(), "chunks do not cover the input");
}

/// Slices and streams `data` (at a few read sizes), checks the result, and returns it.
pub fn chunk_both_ways(data: &[u8], params: ChunkParams) -> Vec<Chunk> {
    let sliced = chunk_slice(data, params).unwrap();
    check_chunks(data, params, &sliced);
    for step in [7, 4099, usize::MAX] {
        assert_eq!(stream(data, params, step), sliced, "read size {step}");
    }
    sliced
}
