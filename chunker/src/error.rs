use std::io;

/// Errors from chunking and frame coding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Io(#[from] io::Error),
    /// The chunk size parameters are out of range or out of order.
    #[error("invalid chunk sizes min={min} avg={avg} max={max}: {reason}")]
    InvalidParams {
        /// Minimum chunk size in bytes.
        min: u32,
        /// Average chunk size in bytes.
        avg: u32,
        /// Maximum chunk size in bytes.
        max: u32,
        /// Which rule they break.
        reason: &'static str,
    },
    /// Compressing a frame failed.
    #[error("zstd compression failed: {0}")]
    Compress(io::Error),
    /// A frame is not valid zstd, or does not decode to the declared size.
    #[error("corrupt frame: {0}")]
    CorruptFrame(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
