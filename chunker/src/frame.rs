//! Chunks as independent zstd frames.
//!
//! Each frame decodes alone, so a client can fetch any byte range of a pack that covers whole
//! frames and use them. Decoding is bounded by the size the signed manifest declares, so a
//! hostile frame cannot make us allocate more than that.

use crate::{Error, Result};

mod bsdiff;
pub mod refs;
mod varint;
pub use bsdiff::{BsdiffOp, DiffStream, max_control_len, slice_ops};

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

/// Decompresses one frame whose header declares its size, refusing sizes over `limit`.
///
/// Allocates only the declared size, so a small hostile frame cannot claim a huge buffer.
pub fn decompress_declared(frame: &[u8], limit: usize) -> Result<Vec<u8>> {
    decompress(frame, declared_len(frame, limit)?)
}

/// The content size a frame's header declares, if it is at most `limit`.
fn declared_len(frame: &[u8], limit: usize) -> Result<usize> {
    let declared = zstd::zstd_safe::get_frame_content_size(frame)
        .map_err(|_| Error::CorruptFrame("not a zstd frame".into()))?
        .ok_or_else(|| Error::CorruptFrame("frame does not declare its size".into()))?;
    usize::try_from(declared)
        .ok()
        .filter(|&n| n <= limit)
        .ok_or_else(|| {
            Error::CorruptFrame(format!(
                "declares {declared} bytes, over the {limit}-byte limit"
            ))
        })
}

/// Like [`decompress`], reusing `out`'s allocation (it is cleared first).
pub fn decompress_into(frame: &[u8], expected_len: usize, out: &mut Vec<u8>) -> Result<()> {
    let decompressor =
        zstd::bulk::Decompressor::new().map_err(|e| Error::CorruptFrame(e.to_string()))?;
    decode_one(decompressor, frame, expected_len, out)
}

fn decode_one(
    mut decompressor: zstd::bulk::Decompressor<'_>,
    frame: &[u8],
    expected_len: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    check_one_frame(frame)?;
    out.reserve(expected_len);
    let written = decompressor
        .decompress_to_buffer(frame, out)
        .map_err(|e| Error::CorruptFrame(e.to_string()))?;
    check_len(written, expected_len)
}

/// zstd would also accept empty input, skippable frames and concatenated frames.
fn check_one_frame(frame: &[u8]) -> Result<()> {
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(frame)
        .map_err(|code| Error::CorruptFrame(zstd::zstd_safe::get_error_name(code).to_owned()))?;
    if frame_len != frame.len() {
        return Err(Error::CorruptFrame(format!(
            "one frame is {frame_len} of the {} bytes given",
            frame.len()
        )));
    }
    Ok(())
}

fn check_len(written: usize, expected_len: usize) -> Result<()> {
    if written != expected_len {
        return Err(Error::CorruptFrame(format!(
            "decoded {written} bytes, expected {expected_len}"
        )));
    }
    Ok(())
}

/// Compresses a run of chunks into one frame whose window spans the run, up to
/// [`MAX_SOLID_WINDOW_LOG`] (long-distance matching on), so it compresses about as well as the
/// run would inside one big file.
pub fn compress_solid(data: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let window_log = (usize::BITS - data.len().max(1024).saturating_sub(1).leading_zeros())
        .clamp(10, MAX_SOLID_WINDOW_LOG);
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(Error::Compress)?;
    compressor
        .include_contentsize(true)
        .map_err(Error::Compress)?;
    compressor
        .set_parameter(CParameter::WindowLog(window_log))
        .map_err(Error::Compress)?;
    compressor
        .set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(Error::Compress)?;
    compressor.compress(data).map_err(Error::Compress)
}

/// log2 of the largest window a solid frame uses (and a decoder accepts): 16 MiB, which a
/// client holds per solid frame it decodes. On a 32 MiB run of the ruff 0.6.3 binary a 32 MiB
/// window gains nothing (7,225,500 B against 7,225,402 B); an 8 MiB one costs 0.6%.
pub const MAX_SOLID_WINDOW_LOG: u32 = 24;

/// Decodes one solid frame as its bytes arrive, handing out the output in pieces, and never
/// producing more than the size the caller expects.
pub struct SolidDecoder {
    decoder: zstd::stream::raw::Decoder<'static>,
    buf: Vec<u8>,
    expected: u64,
    produced: u64,
    ended: bool,
}

impl std::fmt::Debug for SolidDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolidDecoder")
            .field("expected", &self.expected)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

impl SolidDecoder {
    /// A decoder for a frame that must decode to exactly `expected` bytes.
    pub fn new(expected: u64) -> Result<Self> {
        let corrupt = |e: std::io::Error| Error::CorruptFrame(e.to_string());
        let mut decoder = zstd::stream::raw::Decoder::new().map_err(corrupt)?;
        decoder
            .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(
                MAX_SOLID_WINDOW_LOG,
            ))
            .map_err(corrupt)?;
        Ok(Self {
            decoder,
            buf: vec![0u8; 128 * 1024],
            expected,
            produced: 0,
            ended: false,
        })
    }

    /// Decodes all of `input`, passing each piece of output to `sink`.
    pub fn push<E: From<Error>>(
        &mut self,
        input: &[u8],
        mut sink: impl FnMut(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut input = InBuffer::around(input);
        loop {
            if self.ended {
                if input.pos < input.src.len() {
                    return Err(
                        Error::CorruptFrame("bytes after the end of the frame".into()).into(),
                    );
                }
                return Ok(());
            }
            let mut output = OutBuffer::around(&mut self.buf[..]);
            let hint = self
                .decoder
                .run(&mut input, &mut output)
                .map_err(|e| Error::CorruptFrame(e.to_string()))?;
            let written = output.pos();
            self.produced += written as u64;
            if self.produced > self.expected {
                return Err(Error::CorruptFrame(format!(
                    "decodes to more than the {} bytes expected",
                    self.expected
                ))
                .into());
            }
            self.ended = hint == 0;
            if written > 0 {
                sink(&self.buf[..written])?;
            }
            if written == 0 && input.pos == input.src.len() && !self.ended {
                return Ok(());
            }
        }
    }

    /// Checks that the frame ended and decoded to exactly the expected size.
    pub fn finish(&self) -> Result<()> {
        if !self.ended || self.produced != self.expected {
            return Err(Error::CorruptFrame(format!(
                "solid frame ended after {} of {} bytes",
                self.produced, self.expected
            )));
        }
        Ok(())
    }
}

/// zstd's magic for formatted dictionaries. A window starting with it would be parsed as one,
/// so encoders must not use such a window (shift it by a byte).
pub const DICTIONARY_MAGIC: [u8; 4] = [0x37, 0xA4, 0x30, 0xEC];

/// Compresses chunks against a window of older bytes, used as a raw-content dictionary.
///
/// The window's match tables are built once and reused for every chunk compressed with it.
pub struct WindowEncoder {
    compressor: zstd::bulk::Compressor<'static>,
    /// For streams that do not use the window (bsdiff control and diff streams).
    plain: zstd::bulk::Compressor<'static>,
    window: Vec<u8>,
}

impl std::fmt::Debug for WindowEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowEncoder").finish_non_exhaustive()
    }
}

impl WindowEncoder {
    /// Prepares `window` as a dictionary at `level`.
    pub fn new(window: &[u8], level: i32) -> Result<Self> {
        Self::with_levels(window, level, level)
    }

    /// Prepares `window` as a dictionary at `window_level` (frames that use the window: zstd
    /// window frames, bsdiff extra streams), with `stream_level` for the bsdiff streams that do
    /// not (control and diff). zstd builds the window's tables on first use; below level 13
    /// (hash chains, not binary trees) they cost about 10 times less than at level 19.
    pub fn with_levels(window: &[u8], window_level: i32, stream_level: i32) -> Result<Self> {
        if window.starts_with(&DICTIONARY_MAGIC) {
            return Err(Error::Compress(std::io::Error::other(
                "window starts with the zstd dictionary magic",
            )));
        }
        let mut compressor = zstd::bulk::Compressor::with_dictionary(window_level, window)
            .map_err(Error::Compress)?;
        compressor
            .include_contentsize(true)
            .map_err(Error::Compress)?;
        // Reference the window's match tables instead of copying them into every frame.
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ForceAttachDict(
                zstd::zstd_safe::DictAttachPref::ForceAttach,
            ))
            .map_err(Error::Compress)?;
        let mut plain = zstd::bulk::Compressor::new(stream_level).map_err(Error::Compress)?;
        plain.include_contentsize(true).map_err(Error::Compress)?;
        Ok(Self {
            compressor,
            plain,
            window: window.to_vec(),
        })
    }

    /// The window's bytes.
    pub fn window(&self) -> &[u8] {
        &self.window
    }

    /// Compresses one chunk into one frame that needs the window to decode.
    pub fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.compressor.compress(data).map_err(Error::Compress)
    }
}

/// Decodes frames made by a [`WindowEncoder`] with the same window.
///
/// Holds the window once: zstd frames reference it in place as a raw-content dictionary.
pub struct WindowDecoder {
    window: Vec<u8>,
}

impl std::fmt::Debug for WindowDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowDecoder").finish_non_exhaustive()
    }
}

impl WindowDecoder {
    /// Takes `window` for decoding.
    pub fn new(window: Vec<u8>) -> Self {
        Self { window }
    }

    /// The window's bytes.
    pub fn window(&self) -> &[u8] {
        &self.window
    }

    /// Decompresses one frame that must decode to exactly `expected_len` bytes.
    pub fn decompress(&self, frame: &[u8], expected_len: usize) -> Result<Vec<u8>> {
        check_one_frame(frame)?;
        let mut out = Vec::with_capacity(expected_len);
        let written = zstd::zstd_safe::DCtx::create()
            .decompress_using_dict(&mut out, frame, &self.window)
            .map_err(|code| {
                Error::CorruptFrame(zstd::zstd_safe::get_error_name(code).to_owned())
            })?;
        check_len(written, expected_len)?;
        Ok(out)
    }

    /// Like [`decompress_declared`], with the window.
    pub fn decompress_declared(&self, frame: &[u8], limit: usize) -> Result<Vec<u8>> {
        self.decompress(frame, declared_len(frame, limit)?)
    }
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
    fn window_frames_need_their_window() {
        let old: Vec<u8> = (0..400_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let mut new = old[100_000..164_000].to_vec();
        new[10] ^= 1;
        let plain = compress(&new, 19).unwrap();
        let mut encoder = WindowEncoder::new(&old, 19).unwrap();
        let delta = encoder.compress(&new).unwrap();
        assert!(
            delta.len() * 10 < plain.len(),
            "{} vs {}",
            delta.len(),
            plain.len()
        );
        assert_eq!(
            WindowDecoder::new(old.clone())
                .decompress(&delta, new.len())
                .unwrap(),
            new
        );
        // Matches are distances back from the window's end: a window ending elsewhere decodes
        // to the wrong bytes or fails.
        let wrong = WindowDecoder::new(old[..old.len() - 1].to_vec()).decompress(&delta, new.len());
        assert!(wrong.map_or(true, |d| d != new));
        assert!(decompress(&delta, new.len()).is_err());
        let mut magic = DICTIONARY_MAGIC.to_vec();
        magic.extend_from_slice(&old);
        assert!(WindowEncoder::new(&magic, 3).is_err());
    }

    #[test]
    fn solid_frames_stream_and_are_bounded() {
        let data: Vec<u8> = (0..3_000_000u64)
            .map(|i| ((i / 7) as u8).wrapping_mul((i >> 12) as u8))
            .collect();
        let frame = compress_solid(&data, 3).unwrap();
        for piece in [1usize, 997, 65536, frame.len()] {
            let mut decoder = SolidDecoder::new(data.len() as u64).unwrap();
            let mut out = Vec::new();
            for input in frame.chunks(piece) {
                decoder
                    .push::<Error>(input, |d| {
                        out.extend_from_slice(d);
                        Ok(())
                    })
                    .unwrap();
            }
            decoder.finish().unwrap();
            assert_eq!(out, data);
        }
        // Declared too small: refused while decoding, never allocating past it.
        let mut small = SolidDecoder::new(1000).unwrap();
        assert!(small.push::<Error>(&frame, |_| Ok(())).is_err());
        // Truncated: finish reports it.
        let mut cut = SolidDecoder::new(data.len() as u64).unwrap();
        cut.push::<Error>(&frame[..frame.len() / 2], |_| Ok(()))
            .unwrap();
        assert!(cut.finish().is_err());
        // Trailing garbage after the frame.
        let mut long = frame.clone();
        long.extend_from_slice(b"junk");
        let mut trailing = SolidDecoder::new(data.len() as u64).unwrap();
        assert!(trailing.push::<Error>(&long, |_| Ok(())).is_err());
    }

    #[test]
    fn empty_chunk() {
        let frame = compress(&[], 19).unwrap();
        assert_eq!(decompress(&frame, 0).unwrap(), Vec::<u8>::new());
    }
}
