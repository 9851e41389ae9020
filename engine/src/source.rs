//! Reading an origin: one or more mirrors that serve the same files, each a [`Source`].
//!
//! - `mirrors`: [`Origin`], the failover across mirrors, the minimum rate, `Retry-After`,
//!   and what each answer means (the error classes). The same for every kind of source.
//! - `range`: [`RangeBody`], a range's body read piece by piece, also out of a whole-object
//!   answer.
//! - `http`: an HTTP(S) server or CDN (reqwest; one pooled client for every mirror).
//! - `dir`: a local folder (a path, or `file://`).
//! - `mem`: files in memory with injected faults, for unit tests.
//!
//! A source only moves bytes: it answers a request with a status and a body, and says where
//! a path lives. Adding a backend takes a file here implementing [`Source`] and its `open`
//! in [`BACKENDS`].

mod dir;
mod http;
#[cfg(test)]
pub(crate) mod mem;
mod mirrors;
mod range;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use reqwest::StatusCode;

use crate::config::OriginConfig;
use crate::{Error, FetchConfig, Result};

pub use mirrors::{Origin, Traffic};
pub(crate) use mirrors::{backoff, is_mirror_failure, is_transient};
pub use range::RangeBody;

/// What one mirror can do. Every method answers one request, once; retries, failover and
/// the meaning of a status are [`Origin`]'s.
pub(crate) trait Source: Send + Sync + std::fmt::Debug {
    /// A printable location of `path` on this source, for messages and logs.
    fn url(&self, path: &str) -> String;

    /// Whether every range request is answered with exactly the range (a folder), so the
    /// mirror need not learn it from answers.
    fn always_honours_ranges(&self) -> bool;

    /// Asks for the whole object `path`. `limit` is the most bytes the caller accepts: a
    /// source that reads at once needs to read no more than one byte past it.
    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Answer>>;

    /// Asks for `len` bytes (at least one) at `start` of `path`. The answer may be the whole
    /// object, from a server that ignores ranges.
    fn get_range<'a>(
        &'a self,
        path: &'a str,
        start: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Answer>>;
}

/// A source's answer to one request, before anything is read of its body.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The whole object (`200`); `len` is its announced length, if any.
    Whole {
        len: Option<u64>,
        body: Box<dyn Body>,
    },
    /// Part of the object (`206`), with its `Content-Range` (`bytes 10-19/100`; empty if
    /// none).
    Part {
        content_range: String,
        body: Box<dyn Body>,
    },
    /// Any other status (`404` for a missing object), with a `Retry-After` value as sent.
    Refused(Refusal),
}

/// An answer with a status other than the one asked for, to be turned into an error.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: Box<dyn Body>,
}

/// An answer's body, read piece by piece.
pub(crate) trait Body: Send + std::fmt::Debug {
    /// The next piece, or `None` at the end.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Bytes>>>;
}

/// A body already in memory.
#[derive(Debug, Default)]
pub(crate) struct Pieces(pub(crate) std::collections::VecDeque<Bytes>);

impl Pieces {
    /// One piece (none if empty).
    pub(crate) fn one(bytes: impl Into<Bytes>) -> Box<dyn Body> {
        let bytes = bytes.into();
        let mut pieces = Self::default();
        if !bytes.is_empty() {
            pieces.0.push_back(bytes);
        }
        Box::new(pieces)
    }
}

impl Body for Pieces {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Bytes>>> {
        let piece = self.0.pop_front();
        Box::pin(async move { Ok(piece) })
    }
}

/// What the mirrors of one origin share while they are opened: the settings, and an HTTP
/// client built on first use.
pub(crate) struct Opening<'a> {
    pub(crate) config: &'a OriginConfig,
    pub(crate) fetch: &'a FetchConfig,
    pub(crate) http_client: Option<reqwest::Client>,
}

/// A backend's opener: `None` when `spec` is not its kind, else the source or why `spec`
/// is invalid.
type Open = fn(&str, &mut Opening<'_>) -> Option<Result<Arc<dyn Source>>>;

/// Every backend, asked in order which one `spec` names. A folder takes any spec without a
/// scheme, so it comes last.
const BACKENDS: [Open; 2] = [http::open, dir::open];

/// The source a mirror spec names: `http(s)://...`, `file://...` or a plain folder path.
pub(crate) fn open(spec: &str, opening: &mut Opening<'_>) -> Result<Arc<dyn Source>> {
    BACKENDS
        .iter()
        .find_map(|open| open(spec, opening))
        .unwrap_or_else(|| {
            Err(invalid_spec(
                spec,
                "unsupported scheme (use http, https, file or a path)",
            ))
        })
}

/// The error for a mirror spec that names no usable source.
pub(crate) fn invalid_spec(spec: &str, reason: &str) -> Error {
    Error::InvalidOrigin {
        origin: spec.to_owned(),
        reason: reason.to_owned(),
    }
}
