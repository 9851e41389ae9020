//! A folder as a source: a plain path or `file://...`. Reads run off the async workers; a
//! missing file answers as a `404` would.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use reqwest::StatusCode;

use super::{Answer, Opening, Pieces, Refusal, Source, invalid_spec};
use crate::runtime::blocking;
use crate::{Error, Result};

/// A folder holding the origin's files.
#[derive(Debug)]
pub(crate) struct DirSource {
    root: PathBuf,
}

/// A plain path or `file://` spec (`None` for a spec with another scheme).
pub(super) fn open(spec: &str, _: &mut Opening<'_>) -> Option<Result<Arc<dyn Source>>> {
    let path = spec.strip_prefix("file://").unwrap_or(spec);
    if path.contains("://") {
        return None;
    }
    let root = PathBuf::from(path);
    if !root.is_dir() {
        return Some(Err(invalid_spec(spec, "no such directory")));
    }
    Some(Ok(Arc::new(DirSource { root })))
}

impl Source for DirSource {
    fn url(&self, path: &str) -> String {
        self.root.join(path).display().to_string()
    }

    fn always_honours_ranges(&self) -> bool {
        true
    }

    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Answer>> {
        let file = self.root.join(path);
        Box::pin(blocking(move || {
            let Some(f) = open_file(&file)? else {
                return Ok(missing());
            };
            let mut out = Vec::new();
            f.take(limit.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(Error::io("reading", &file))?;
            Ok(Answer::Whole {
                len: Some(out.len() as u64),
                body: Pieces::one(out),
            })
        }))
    }

    fn get_range<'a>(
        &'a self,
        path: &'a str,
        start: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Answer>> {
        let file = self.root.join(path);
        Box::pin(blocking(move || {
            let Some(mut f) = open_file(&file)? else {
                return Ok(missing());
            };
            f.seek(SeekFrom::Start(start))
                .map_err(Error::io("reading", &file))?;
            let mut out = Vec::with_capacity(len as usize);
            f.take(len)
                .read_to_end(&mut out)
                .map_err(Error::io("reading", &file))?;
            Ok(Answer::Part {
                content_range: format!("bytes {start}-{}/*", start + len - 1),
                body: Pieces::one(out),
            })
        }))
    }
}

/// Opens `file` for reading; `None` if there is none.
fn open_file(file: &Path) -> Result<Option<File>> {
    match File::open(file) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", file)(e)),
    }
}

/// The answer for a file that is not there.
fn missing() -> Answer {
    Answer::Refused(Refusal {
        status: StatusCode::NOT_FOUND,
        retry_after: None,
        body: Box::new(Pieces::default()),
    })
}
