//! Files in memory as a source, for unit tests: a map of path → bytes that answers as an
//! HTTP server would (`200`, `206`, `404`, `416`), logs every request, and injects faults on
//! demand ([`Faults`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use reqwest::StatusCode;

use super::{Answer, Body, Origin, Pieces, Refusal, Source};
use crate::{Error, Result};

/// Bodies arrive in pieces of at most this many bytes, as from a socket.
const PIECE_BYTES: usize = 1024;

/// An in-memory origin.
#[derive(Debug, Default)]
pub(crate) struct MemSource {
    name: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, Bytes>,
    faults: Faults,
    log: Vec<Request>,
}

/// What the source does wrong, on purpose.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    /// The next this many requests are answered with `status` instead.
    pub(crate) fail_next: u32,
    /// The status of a failed request (`503` if unset).
    pub(crate) status: Option<StatusCode>,
    /// The `Retry-After` sent with it.
    pub(crate) retry_after: Option<String>,
    /// Range requests are answered with the whole object (`200`), as by a CDN that ignores
    /// `Range`.
    pub(crate) ignore_ranges: bool,
    /// The next this many bodies break off after `truncate_after` bytes, as a connection
    /// cut mid-body.
    pub(crate) truncate_next: u32,
    pub(crate) truncate_after: usize,
}

/// One request as the source saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) path: String,
    /// `(start, len)` of a range request.
    pub(crate) range: Option<(u64, u64)>,
}

impl MemSource {
    /// An empty source whose URLs start with `mem://<name>/`.
    pub(crate) fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            state: Mutex::default(),
        })
    }

    /// An origin of this one mirror, without a minimum rate.
    pub(crate) fn origin(self: &Arc<Self>) -> Origin {
        Origin::of_sources(vec![self.clone()], 0).expect("one mirror")
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `bytes` at `path`.
    pub(crate) fn put(&self, path: &str, bytes: impl Into<Bytes>) {
        self.state().files.insert(path.to_owned(), bytes.into());
    }

    /// Changes the bytes at `path` in place.
    pub(crate) fn edit(&self, path: &str, change: impl FnOnce(&mut Vec<u8>)) {
        let mut state = self.state();
        let mut bytes = state
            .files
            .get(path)
            .map(|b| b.to_vec())
            .unwrap_or_default();
        change(&mut bytes);
        state.files.insert(path.to_owned(), bytes.into());
    }

    /// Injects `faults` from the next request on.
    pub(crate) fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    /// Every request so far, in order, and forgets them.
    pub(crate) fn take_requests(&self) -> Vec<Request> {
        std::mem::take(&mut self.state().log)
    }

    /// Logs a request and answers it from the files and the faults.
    fn answer(&self, path: &str, range: Option<(u64, u64)>) -> Answer {
        let mut state = self.state();
        state.log.push(Request {
            path: path.to_owned(),
            range,
        });
        let faults = &mut state.faults;
        if faults.fail_next > 0 {
            faults.fail_next -= 1;
            return Answer::Refused(Refusal {
                status: faults.status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                retry_after: faults.retry_after.clone(),
                body: Pieces::one(&b"busy"[..]),
            });
        }
        let ignore_ranges = faults.ignore_ranges;
        let cut = (faults.truncate_next > 0).then_some(faults.truncate_after);
        let Some(file) = state.files.get(path).cloned() else {
            return refused(StatusCode::NOT_FOUND);
        };
        if cut.is_some() {
            state.faults.truncate_next -= 1;
        }
        let body = |bytes: Bytes| self.body(path, bytes, cut);
        let file_len = file.len() as u64;
        match range {
            Some((start, len)) if !ignore_ranges => {
                if start >= file_len {
                    return refused(StatusCode::RANGE_NOT_SATISFIABLE);
                }
                let end = (start + len).min(file_len);
                Answer::Part {
                    content_range: format!("bytes {start}-{}/{file_len}", end - 1),
                    body: body(file.slice(start as usize..end as usize)),
                }
            }
            _ => Answer::Whole {
                len: Some(file_len),
                body: body(file),
            },
        }
    }

    /// `bytes` in pieces, broken off after `cut` bytes if set.
    fn body(&self, path: &str, bytes: Bytes, cut: Option<usize>) -> Box<dyn Body> {
        let kept = cut.map_or(bytes.len(), |cut| cut.min(bytes.len()));
        let pieces = (0..kept)
            .step_by(PIECE_BYTES)
            .map(|at| bytes.slice(at..(at + PIECE_BYTES).min(kept)))
            .collect();
        Box::new(MemBody {
            pieces,
            broken: (kept < bytes.len()).then(|| self.url(path)),
        })
    }
}

/// An answer with `status` and an empty body.
fn refused(status: StatusCode) -> Answer {
    Answer::Refused(Refusal {
        status,
        retry_after: None,
        body: Box::new(Pieces::default()),
    })
}

impl Source for MemSource {
    fn url(&self, path: &str) -> String {
        format!("mem://{}/{path}", self.name)
    }

    fn always_honours_ranges(&self) -> bool {
        false
    }

    fn get<'a>(&'a self, path: &'a str, _limit: u64) -> BoxFuture<'a, Result<Answer>> {
        Box::pin(async move { Ok(self.answer(path, None)) })
    }

    fn get_range<'a>(
        &'a self,
        path: &'a str,
        start: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Answer>> {
        Box::pin(async move { Ok(self.answer(path, Some((start, len)))) })
    }
}

/// A body in pieces that may break off before its end.
#[derive(Debug)]
struct MemBody {
    pieces: VecDeque<Bytes>,
    /// The URL, if the body breaks off after the pieces.
    broken: Option<String>,
}

impl Body for MemBody {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Bytes>>> {
        let next = match (self.pieces.pop_front(), self.broken.take()) {
            (Some(piece), broken) => {
                self.broken = broken;
                Ok(Some(piece))
            }
            (None, Some(url)) => Err(Error::Http {
                url,
                reason: "connection closed before the end of the body".into(),
                transient: true,
            }),
            (None, None) => Ok(None),
        };
        Box::pin(async move { next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mem_origin_serves_ranges_and_fails_over_its_faults() {
        let mem = MemSource::new("a");
        let object: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        mem.put("packs/p", object.clone());
        let origin = mem.origin();
        assert_eq!(origin.get("packs/p", "pack", 5000).await.unwrap(), object);
        let err = origin.get("packs/p", "pack", 4999).await.unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        let err = origin.get("packs/q", "pack", 10).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            Error::NotFound {
                what: "pack",
                url: "mem://a/packs/q".into()
            }
            .to_string()
        );

        let read = |mut body: super::super::RangeBody| async move {
            let mut got = Vec::new();
            while let Some(piece) = body.next().await? {
                got.extend_from_slice(&piece);
            }
            Ok::<_, Error>((got, body.is_whole_object()))
        };
        let body = origin.get_range("packs/p", 1000, 2500, 5000).await.unwrap();
        assert_eq!(
            read(body).await.unwrap(),
            (object[1000..3500].to_vec(), false)
        );
        assert!(origin.honours_ranges());

        // A CDN that ignores ranges: the range is still exactly what comes out.
        mem.set_faults(Faults {
            ignore_ranges: true,
            ..Faults::default()
        });
        let body = origin.get_range("packs/p", 1000, 2500, 5000).await.unwrap();
        assert_eq!(
            read(body).await.unwrap(),
            (object[1000..3500].to_vec(), true)
        );
        assert!(origin.ignores_ranges());

        // A cut body fails as a transient error; a 503 is retried and then answered.
        mem.set_faults(Faults {
            truncate_next: 1,
            truncate_after: 100,
            ..Faults::default()
        });
        let body = origin.get_range("packs/p", 0, 2000, 5000).await.unwrap();
        let err = read(body).await.unwrap_err();
        assert!(crate::source::is_transient(&err), "{err}");
        mem.set_faults(Faults {
            fail_next: 1,
            ..Faults::default()
        });
        tokio::time::pause();
        let got = origin.get("packs/p", "pack", 5000).await.unwrap();
        assert_eq!(got, object);
        let log = mem.take_requests();
        let last: Vec<_> = log[log.len() - 2..].iter().map(|r| r.range).collect();
        assert_eq!(last, [None, None]);
        assert_eq!(log.len(), 8);
    }
}
