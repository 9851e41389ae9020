//! Checking a whole audit log ([`verify`]) and reading its records back ([`records`]), without
//! writing anything or taking the install lock.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{AuditHash, AuditRecord, GENESIS, HeadFile, MAX_LINE_BYTES, parse_envelope, read_head};
use crate::layout::InstallLayout;
use crate::platform;
use crate::{Error, Result};

/// What [`AuditLog::verify`](super::AuditLog::verify) found in an intact log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditSummary {
    /// Records in the log, including one an interrupted append left.
    pub records: u64,
    /// The first record's time (Unix seconds), if there are records.
    pub first_time_unix: Option<u64>,
    /// The last record's time (Unix seconds), if there are records.
    pub last_time_unix: Option<u64>,
    /// The log is one record past its head, or ends in a torn line after the head's record:
    /// an append was interrupted between writing the log and the head. Nothing committed is
    /// missing, and the next [`AuditLog::open`](super::AuditLog::open) repairs it.
    pub interrupted_append: bool,
}

/// What is wrong with a log. The [`fmt::Display`] form says it in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditProblem {
    /// The line is not a record: not JSON, a field missing or malformed, or too long.
    Unreadable {
        /// The parser's complaint.
        reason: String,
    },
    /// The line's `seq` is not the one its position calls for.
    OutOfSequence {
        /// The seq this line should have.
        expected: u64,
        /// The seq it has.
        found: u64,
    },
    /// The line's `prev` is not the hash of the line before it.
    ChainBroken {
        /// The line it should chain to, or `None` for line 1 (which chains to
        /// [`AuditHash::genesis`]).
        previous_line: Option<u64>,
    },
    /// The log ends before the record the head names.
    Truncated {
        /// Records in the log.
        records: u64,
        /// Records the head says there are.
        head_records: u64,
        /// The log also ends in a line without a newline.
        incomplete_line: bool,
    },
    /// The record with the head's seq does not have the head's hash.
    HeadMismatch {
        /// The head's seq.
        seq: u64,
    },
    /// The log runs more than one record past its head.
    PastHead {
        /// Records in the log.
        records: u64,
        /// Records the head says there are.
        head_records: u64,
    },
    /// The log ends in a line without a newline that is not an interrupted append.
    Incomplete,
    /// The head file is missing, but the log has records.
    HeadMissing {
        /// Records in the log.
        records: u64,
    },
    /// The head file cannot be parsed.
    HeadUnreadable {
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditProblem::Unreadable { reason } => write!(f, "not an audit record: {reason}"),
            AuditProblem::OutOfSequence { expected, found } if found > expected => write!(
                f,
                "seq {found} where seq {expected} belongs: {} record(s) before it were deleted, \
                 or lines were reordered",
                found - expected
            ),
            AuditProblem::OutOfSequence { expected, found } => write!(
                f,
                "seq {found} where seq {expected} belongs: a record was repeated, or lines \
                 were reordered"
            ),
            AuditProblem::ChainBroken {
                previous_line: Some(previous),
            } => write!(
                f,
                "its prev hash is not the hash of line {previous}: line {previous} was changed \
                 after this line was written, or this line was forged"
            ),
            AuditProblem::ChainBroken {
                previous_line: None,
            } => write!(
                f,
                "its prev hash is not the chain's start (the BLAKE3 of {GENESIS:?}): the line \
                 was changed or forged"
            ),
            AuditProblem::Truncated {
                records,
                head_records,
                incomplete_line,
            } => write!(
                f,
                "the log ends after {records} record(s){}, but the head file says it has \
                 {head_records}: the end of the log was cut off",
                if *incomplete_line {
                    " and a partial line"
                } else {
                    ""
                }
            ),
            AuditProblem::HeadMismatch { seq } => write!(
                f,
                "record {seq} does not match the hash in the head file: the line was changed \
                 after it was written (or the head was replaced)"
            ),
            AuditProblem::PastHead {
                records,
                head_records,
            } => write!(
                f,
                "the log has {records} records but the head file says {head_records}: records \
                 were added without updating the head, or an old head was put back"
            ),
            AuditProblem::Incomplete => {
                f.write_str("the log ends in a partial line (no newline at its end)")
            }
            AuditProblem::HeadMissing { records } => write!(
                f,
                "the head file is missing although the log has {records} records, so the end \
                 of the log cannot be checked (was it deleted?)"
            ),
            AuditProblem::HeadUnreadable { reason } => {
                write!(f, "the head file is unreadable: {reason}")
            }
        }
    }
}

/// Why a log failed [`AuditLog::verify`](super::AuditLog::verify), or why [`AuditLog::records`](super::AuditLog::records) could not read a line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log is damaged; `line` is where it shows (1-based). Head problems are reported at
    /// the line of the record the head should name.
    #[error("audit log broken at line {line}: {problem}")]
    Broken {
        /// The line, from 1.
        line: u64,
        /// What is wrong.
        problem: AuditProblem,
    },
    /// Reading the log or the head failed.
    #[error(transparent)]
    Io(#[from] Error),
}

/// Reads lines without holding more than [`MAX_LINE_BYTES`] of one. At the end of the file a
/// partial line stays pending, and reading again picks up bytes appended since.
pub(super) struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    pending: Vec<u8>,
    overlong: bool,
}

pub(super) enum Line {
    Complete(Vec<u8>),
    TooLong,
}

impl Lines {
    pub(super) fn open(path: &Path) -> Result<Option<Self>> {
        match platform::open_read(path) {
            Ok(file) => Ok(Some(Self {
                reader: BufReader::with_capacity(64 * 1024, file),
                path: path.to_path_buf(),
                pending: Vec::new(),
                overlong: false,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("opening", path)(e)),
        }
    }

    /// The next line ending in a newline, or `None` at the end of the file.
    pub(super) fn next_line(&mut self) -> Result<Option<Line>> {
        loop {
            let available = self
                .reader
                .fill_buf()
                .map_err(Error::io("reading", &self.path))?;
            if available.is_empty() {
                return Ok(None);
            }
            let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            if !self.overlong {
                if self.pending.len() + chunk.len() > MAX_LINE_BYTES {
                    self.overlong = true;
                    self.pending = Vec::new();
                } else {
                    self.pending.extend_from_slice(chunk);
                }
            }
            let used = chunk.len() + usize::from(found_newline);
            self.reader.consume(used);
            if found_newline {
                let line = if std::mem::take(&mut self.overlong) {
                    Line::TooLong
                } else {
                    Line::Complete(std::mem::take(&mut self.pending))
                };
                return Ok(Some(line));
            }
        }
    }

    /// Whether bytes without a newline are pending at the end.
    pub(super) fn partial(&self) -> bool {
        self.overlong || !self.pending.is_empty()
    }
}

fn too_long() -> AuditProblem {
    AuditProblem::Unreadable {
        reason: format!("the line is longer than {MAX_LINE_BYTES} bytes"),
    }
}

/// The chain as verified so far.
#[derive(Default)]
pub(super) struct Chain {
    records: u64,
    first_time_unix: Option<u64>,
    last: Option<LastRecord>,
}

struct LastRecord {
    seq: u64,
    time_unix: u64,
    prev: AuditHash,
    hash: AuditHash,
}

impl Chain {
    fn broken(&self, line: u64, problem: AuditProblem) -> AuditError {
        AuditError::Broken { line, problem }
    }

    pub(super) fn push(&mut self, line: Line) -> Result<(), AuditError> {
        let number = self.records + 1;
        let Line::Complete(bytes) = line else {
            return Err(self.broken(number, too_long()));
        };
        let record = parse_envelope(&bytes).map_err(|p| self.broken(number, p))?;
        if record.seq != self.records {
            return Err(self.broken(
                number,
                AuditProblem::OutOfSequence {
                    expected: self.records,
                    found: record.seq,
                },
            ));
        }
        let expected_prev = self
            .last
            .as_ref()
            .map_or_else(AuditHash::genesis, |l| l.hash);
        if record.prev != expected_prev {
            return Err(self.broken(
                number,
                AuditProblem::ChainBroken {
                    previous_line: self.last.as_ref().map(|_| number - 1),
                },
            ));
        }
        self.first_time_unix.get_or_insert(record.time_unix);
        self.last = Some(LastRecord {
            seq: record.seq,
            time_unix: record.time_unix,
            prev: record.prev,
            hash: AuditHash::of(&bytes),
        });
        self.records += 1;
        Ok(())
    }

    /// Whether the head names a record this chain has not read yet.
    pub(super) fn behind(&self, head: &HeadFile) -> bool {
        match head {
            HeadFile::Present(h) => h.seq >= self.records,
            _ => false,
        }
    }

    /// Checks the chain's end against the head.
    pub(super) fn finish(self, head: HeadFile, partial: bool) -> Result<AuditSummary, AuditError> {
        let n = self.records;
        let head = match head {
            HeadFile::Present(h) => Some(h),
            HeadFile::Missing => None,
            HeadFile::Unreadable(reason) => {
                return Err(self.broken(n.max(1), AuditProblem::HeadUnreadable { reason }));
            }
        };
        let interrupted = match (&self.last, head) {
            (None, None) => partial,
            (None, Some(h)) => {
                return Err(self.broken(
                    1,
                    AuditProblem::Truncated {
                        records: 0,
                        head_records: h.seq + 1,
                        incomplete_line: partial,
                    },
                ));
            }
            (Some(_), None) => {
                if n == 1 && !partial {
                    // The first append, interrupted before it wrote the head.
                    true
                } else {
                    return Err(self.broken(n, AuditProblem::HeadMissing { records: n }));
                }
            }
            (Some(last), Some(h)) => {
                if h.seq == last.seq {
                    if h.hash != last.hash {
                        return Err(self.broken(n, AuditProblem::HeadMismatch { seq: h.seq }));
                    }
                    partial
                } else if h.seq > last.seq {
                    return Err(self.broken(
                        n + 1,
                        AuditProblem::Truncated {
                            records: n,
                            head_records: h.seq + 1,
                            incomplete_line: partial,
                        },
                    ));
                } else if h.seq + 1 == last.seq {
                    if h.hash != last.prev {
                        // The line the head names chains on, but is not what the head says.
                        return Err(
                            self.broken(h.seq + 1, AuditProblem::HeadMismatch { seq: h.seq })
                        );
                    }
                    if partial {
                        return Err(self.broken(n + 1, AuditProblem::Incomplete));
                    }
                    true
                } else {
                    return Err(self.broken(
                        h.seq + 3,
                        AuditProblem::PastHead {
                            records: n,
                            head_records: h.seq + 1,
                        },
                    ));
                }
            }
        };
        Ok(AuditSummary {
            records: n,
            first_time_unix: self.first_time_unix,
            last_time_unix: self.last.as_ref().map(|l| l.time_unix),
            interrupted_append: interrupted,
        })
    }
}

/// Verifies an install's audit log without writing anything and without the install lock.
///
/// It streams the log line by line (holding one line at a time) and checks that each line
/// is a record, that `seq` counts up from 0 and that each `prev` is the hash of the line
/// before it. Then it checks that the last record is the one the head file names. The
/// exception is an interrupted append: one complete record past the head that chains onto
/// it, or a partial line after the head's record. That passes, with
/// [`AuditSummary::interrupted_append`] set. Times are not checked, because clocks move.
/// A missing log with a missing head is an empty, intact log.
///
/// If a daemon appends while this runs, the head may name records written after this read
/// the log's end. It then reads on, up to three times, before it calls the log truncated.
///
/// Stops at the first problem found, and reports the line where it shows: an edited line
/// shows at the next line (its `prev` no longer matches), or at the head for the last line.
/// Deleted, repeated, reordered or inserted lines show as a wrong `seq` or `prev`. A cut-off
/// end shows against the head.
pub(crate) fn verify(layout: &InstallLayout) -> Result<AuditSummary, AuditError> {
    let head_path = layout.audit_head();
    let mut chain = Chain::default();
    let Some(mut lines) = Lines::open(&layout.audit_log())? else {
        return chain.finish(read_head(&head_path)?, false);
    };
    let mut rereads = 0;
    loop {
        while let Some(line) = lines.next_line()? {
            chain.push(line)?;
        }
        let head = read_head(&head_path)?;
        // Appends write the log before the head, so the records the head names are there.
        if chain.behind(&head) && rereads < 3 {
            rereads += 1;
            continue;
        }
        return chain.finish(head, lines.partial());
    }
}

/// The records of an install's log, in order; see [`AuditLog::records`](super::AuditLog::records).
pub struct AuditRecords {
    lines: Option<Lines>,
    line: u64,
}

impl fmt::Debug for AuditRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditRecords")
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl Iterator for AuditRecords {
    type Item = Result<AuditRecord, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        let lines = self.lines.as_mut()?;
        let next = lines.next_line();
        let line = match next {
            Err(e) => {
                self.lines = None;
                return Some(Err(e.into()));
            }
            Ok(None) => {
                let partial = lines.partial();
                self.lines = None;
                return partial.then(|| {
                    Err(AuditError::Broken {
                        line: self.line + 1,
                        problem: AuditProblem::Incomplete,
                    })
                });
            }
            Ok(Some(line)) => line,
        };
        self.line += 1;
        let broken = |problem| AuditError::Broken {
            line: self.line,
            problem,
        };
        Some(match line {
            Line::TooLong => Err(broken(too_long())),
            Line::Complete(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                broken(AuditProblem::Unreadable {
                    reason: e.to_string(),
                })
            }),
        })
    }
}

/// Reads an install's records, in order, without checking the chain ([`verify`] does that).
/// A line that is not a record this version understands (an event kind from a newer relsync,
/// say) comes out as an error, and the records after it still follow. An absent log has no
/// records.
pub(crate) fn records(layout: &InstallLayout) -> Result<AuditRecords> {
    Ok(AuditRecords {
        lines: Lines::open(&layout.audit_log())?,
        line: 0,
    })
}
