//! A range's body, read piece by piece under the minimum rate and counted as it arrives;
//! out of a whole-object answer, it yields exactly the range.

use std::sync::Arc;

use bytes::Bytes;
use tracing::debug;

use super::Body;
use super::mirrors::{RateGuard, Traffic};
use crate::{Error, Result};

/// The rest of a whole-object answer past the range is read (and counted) when at most this
/// long, keeping the connection; a longer rest is cut off with the connection.
const TAIL_READ_BYTES: u64 = 1 << 20;

/// What a range request takes of a whole-object (`200`) answer: the bytes before the range
/// are skipped, the range is delivered, and reading stops after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Window {
    /// Offset in the object of the next byte received.
    at: u64,
    start: u64,
    end: u64,
    object_len: u64,
}

impl Window {
    pub(super) fn new(start: u64, end: u64, object_len: u64) -> Self {
        Self {
            at: 0,
            start,
            end,
            object_len,
        }
    }

    /// Refuses an announced body length that is not the object's, or that ends before the
    /// range.
    pub(super) fn check_length(&self, announced: u64) -> std::result::Result<(), String> {
        if announced > self.object_len {
            return Err(format!(
                "the whole-object answer (200) has {announced} bytes, more than the object's \
                 {} bytes",
                self.object_len
            ));
        }
        if announced < self.end {
            return Err(format!(
                "the whole-object answer (200) has {announced} bytes and ends before the \
                 range asked for ({}..{})",
                self.start, self.end
            ));
        }
        Ok(())
    }

    /// Delivers on up to `end`, never past the object.
    fn extend_to(&mut self, end: u64) {
        self.end = self.end.max(end.min(self.object_len));
    }

    /// Whether the whole range was delivered.
    fn done(&self) -> bool {
        self.at >= self.end
    }

    /// The part of `piece`, the next bytes received, inside the range (possibly empty).
    fn take(&mut self, piece: Bytes) -> std::result::Result<Bytes, String> {
        let from = self.at;
        let to = from + piece.len() as u64;
        self.at = to;
        if to > self.object_len {
            return Err(format!(
                "the whole-object answer (200) goes on past the object's {} bytes",
                self.object_len
            ));
        }
        let (lo, hi) = (from.max(self.start), to.min(self.end));
        if lo >= hi {
            return Ok(Bytes::new());
        }
        Ok(piece.slice((lo - from) as usize..(hi - from) as usize))
    }
}

/// The body of a range response, read piece by piece.
#[derive(Debug)]
pub struct RangeBody {
    body: Box<dyn Body>,
    url: String,
    guard: RateGuard,
    /// For a whole-object answer: the range within it, and the object's announced length.
    window: Option<(Window, Option<u64>)>,
    traffic: Arc<Traffic>,
}

impl RangeBody {
    /// The body of a `206` (`window` `None`), or of a whole-object answer with the range
    /// to take of it and its announced length.
    pub(super) fn new(
        body: Box<dyn Body>,
        url: String,
        guard: RateGuard,
        window: Option<(Window, Option<u64>)>,
        traffic: Arc<Traffic>,
    ) -> Self {
        Self {
            body,
            url,
            guard,
            window,
            traffic,
        }
    }

    /// The next piece of the range, or `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.window.as_ref().is_some_and(|(w, _)| w.done()) {
                return Ok(None);
            }
            let piece = self.guard.bound(self.body.next(), &self.url).await??;
            let Some(piece) = piece else {
                return Ok(None);
            };
            // Counted before any refusal, so every byte received is accounted for.
            self.traffic.add_bytes(piece.len());
            self.guard.add(piece.len(), &self.url)?;
            let Some((window, _)) = &mut self.window else {
                return Ok(Some(piece));
            };
            let part = window.take(piece).map_err(|reason| Error::Http {
                url: self.url.clone(),
                reason,
                transient: false,
            })?;
            if !part.is_empty() {
                return Ok(Some(part));
            }
        }
    }

    /// Whether the server sent the whole object (it ignored the Range header).
    pub fn is_whole_object(&self) -> bool {
        self.window.is_some()
    }

    /// For a whole object: goes on delivering up to `end` (at most the object's length)
    /// instead of stopping at the end of the range asked for.
    pub fn extend_to(&mut self, end: u64) {
        if let Some((window, _)) = &mut self.window {
            window.extend_to(end);
        }
    }

    /// Ends a body whose range was read: what the server still sends is read and counted
    /// when short (so the connection serves the next request), else the connection is
    /// dropped.
    pub async fn finish(mut self) {
        let url = &self.url;
        let rest = match &self.window {
            Some((w, Some(len))) => len.saturating_sub(w.at),
            Some((_, None)) => u64::MAX,
            // A 206 ends with its range; this reads its end.
            None => 0,
        };
        if rest > TAIL_READ_BYTES {
            debug!(%url, rest, "dropping the connection rather than reading the rest");
            return;
        }
        let mut read = 0u64;
        loop {
            let Ok(piece) = self.guard.bound(self.body.next(), url).await else {
                debug!(%url, "the end of a response came too slowly");
                return;
            };
            match piece {
                Ok(Some(piece)) => {
                    self.traffic.add_bytes(piece.len());
                    read += piece.len() as u64;
                    if self.guard.add(piece.len(), url).is_err() || read > rest.max(64 * 1024) {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    debug!(%url, error = %e, "reading the end of a response failed");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_pieces(window: &mut Window, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(&window.take(Bytes::copy_from_slice(piece)).unwrap());
        }
        out
    }

    #[test]
    fn a_window_skips_the_prefix_and_stops_after_the_range() {
        let object: Vec<u8> = (0..100u8).collect();
        let mut window = Window::new(10, 20, 100);
        let got = window_pieces(
            &mut window,
            &[&object[..4], &object[4..15], &object[15..30]],
        );
        assert_eq!(got, &object[10..20]);
        assert!(window.done());
        // A piece wholly before the range yields nothing.
        let mut window = Window::new(50, 60, 100);
        assert!(
            window
                .take(Bytes::from_static(&[0; 50]))
                .unwrap()
                .is_empty()
        );
        assert!(!window.done());
        // Extended, it delivers on to the new end, never past the object.
        let mut window = Window::new(0, 10, 100);
        window.extend_to(1000);
        assert_eq!(window_pieces(&mut window, &[&object]), object);
        assert!(window.done());
    }

    #[test]
    fn a_window_refuses_answers_longer_than_the_object_or_short_of_the_range() {
        let window = Window::new(10, 20, 100);
        assert!(window.check_length(100).is_ok());
        let long = window.check_length(101).unwrap_err();
        assert!(long.contains("more than the object's 100 bytes"), "{long}");
        let short = window.check_length(15).unwrap_err();
        assert!(short.contains("ends before the range"), "{short}");
        let mut window = Window::new(90, 100, 100);
        assert!(window.take(Bytes::from_static(&[0; 99])).is_ok());
        assert!(window.take(Bytes::from_static(&[0; 2])).is_err());
    }
}
