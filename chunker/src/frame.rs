//! Chunks as independent zstd frames.
//!
//! Each frame decodes alone, so a client can fetch any byte range of a pack that covers whole
//! frames and use them. Decoding is bounded by the size the signed manifest declares, so a
//! hostile frame cannot make us allocate more than that.

use crate::{Error, Result};

/// The zstd level used when the caller has no opinion.
pub const DEFAULT_LEVEL: i32 = 19;

/// Compresses `data` into one zstd frame that records its content size.
pub fn compress(data: &[u8], level: i32) -> Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(Error::Compress)?;
    compressor
        .include_contentsize(true)
        .map_err(Error::Compress)?;
    compressor.compress(data).map_err(Error::Compress)
}

/// Decompresses one frame that must decode to exactly `expected_len` bytes.
///
/// Never allocates more than `expected_len` bytes for the output.
pub fn decompress(frame: &[u8], expected_len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(expected_len);
    decompress_into(frame, expected_len, &mut out)?;
    Ok(out)
}

/// Like [`decompress`], reusing `out`'s allocation (it is cleared first).
pub fn decompress_into(frame: &[u8], expected_len: usize, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    // zstd would also accept empty input, skippable frames and concatenated frames.
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(frame)
        .map_err(|code| Error::CorruptFrame(zstd::zstd_safe::get_error_name(code).to_owned()))?;
    if frame_len != frame.len() {
        return Err(Error::CorruptFrame(format!(
            "one frame is {frame_len} of the {} bytes given",
            frame.len()
        )));
    }
    out.reserve(expected_len);
    let mut decompressor =
        zstd::bulk::Decompressor::new().map_err(|e| Error::CorruptFrame(e.to_string()))?;
    let written = decompressor
        .decompress_to_buffer(frame, out)
        .map_err(|e| Error::CorruptFrame(e.to_string()))?;
    if written != expected_len {
        return Err(Error::CorruptFrame(format!(
            "decoded {written} bytes, expected {expected_len}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let frame = compress(&data, 3).unwrap();
        assert!(frame.len() < data.len());
        assert_eq!(decompress(&frame, data.len()).unwrap(), data);
        assert!(decompress(&frame, data.len() - 1).is_err());
        assert!(decompress(&frame, data.len() + 1).is_err());
        let mut bad = frame.clone();
        bad[frame.len() / 2] ^= 0xff;
        assert!(
            decompress(&bad, data.len()).is_err() || decompress(&bad, data.len()).unwrap() != data
        );
        assert!(decompress(&frame[..frame.len() - 3], data.len()).is_err());
    }

    #[test]
    fn empty_chunk() {
        let frame = compress(&[], 19).unwrap();
        assert_eq!(decompress(&frame, 0).unwrap(), Vec::<u8>::new());
    }
}
