//! Sealed packs on their way to the origin. A local target takes each at once; a remote one
//! takes up to the origin's `max_uploads` at a time, in the background, while the caller keeps
//! packing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};

use anyhow::{Context, Result, anyhow};
use tempfile::TempPath;

use super::{Origin, metered};
use crate::target::Put;

/// Uploads in flight and what the finished ones did.
///
/// Dropped unfinished (the push failed), it leaves the uploads in flight to end on their own;
/// none of them names anything a reader could follow.
#[derive(Debug)]
pub struct Uploads<'a> {
    origin: &'a Origin,
    done: Sender<Result<Put>>,
    finished: Receiver<Result<Put>>,
    in_flight: usize,
    bytes_written: u64,
}

impl<'a> Uploads<'a> {
    pub fn new(origin: &'a Origin) -> Self {
        let (done, finished) = channel();
        Self {
            origin,
            done,
            finished,
            in_flight: 0,
            bytes_written: 0,
        }
    }

    /// Writes `local` as content-addressed object `path` unless it is there, now or in the
    /// background; waits while `max_uploads` are running. Fails if an earlier upload failed.
    pub fn put_file(&mut self, path: String, local: TempPath) -> Result<()> {
        if !self.origin.target.is_remote() {
            let put = self.origin.put_file(&path, local)?;
            self.count(put);
            return Ok(());
        }
        self.reap()?;
        while self.in_flight >= self.origin.max_uploads {
            let put = self.next_finished()?;
            self.count(put);
        }
        let target = Arc::clone(&self.origin.target);
        let meter = Arc::clone(&self.origin.meter);
        let done = self.done.clone();
        std::thread::Builder::new()
            .name("origin-upload".into())
            .spawn(move || {
                let put = catch_unwind(AssertUnwindSafe(|| {
                    metered(&meter, || target.put_file(&path, local))
                }))
                .unwrap_or_else(|_| Err(anyhow!("uploading {path} panicked")));
                // The receiver is gone only if the push gave up.
                let _ = done.send(put);
            })
            .context("starting an upload")?;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for every upload; fails with the first error. Returns the bytes written.
    pub fn finish(mut self) -> Result<u64> {
        let mut first_error = None;
        while self.in_flight > 0 {
            match self.next_finished() {
                Ok(put) => self.count(put),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(self.bytes_written),
        }
    }

    /// Waits for the next upload to end.
    fn next_finished(&mut self) -> Result<Put> {
        let put = self
            .finished
            .recv()
            .context("an upload task failed")
            .and_then(|put| put);
        self.in_flight -= 1;
        put
    }

    /// Counts finished uploads; fails on the first that failed.
    fn reap(&mut self) -> Result<()> {
        loop {
            match self.finished.try_recv() {
                Ok(put) => {
                    self.in_flight -= 1;
                    self.count(put?);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(()),
            }
        }
    }

    fn count(&mut self, put: Put) {
        if let Put::Written(n) = put {
            self.bytes_written += n;
        }
    }
}
