//! An append-only, hash-chained audit log per install: what relsync checked, downloaded,
//! installed, rolled back or refused, and when.
//!
//! The format, the crash invariant and what the chain protects are documented on
//! [`AuditLog`].

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use semver::Version;
use serde::{Deserialize, Serialize};

mod verify;

pub use verify::{AuditError, AuditProblem, AuditRecords, AuditSummary};
use verify::{records, verify};

use crate::layout::InstallLayout;
use crate::platform::{self, Dir};
use crate::{Error, Result};

/// The log's file in `.relsync`.
const LOG_FILE: &str = "audit.log";
/// The head's file in `.relsync`.
const HEAD_FILE: &str = "audit.head";

/// What seq 0's `prev` is the BLAKE3 of.
pub const GENESIS: &str = "relsync-audit-v1";

/// The longest line a record may take, newline excluded. Longer lines are not records.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How far back from the end [`AuditLog::open`] looks for the last line before it gives up
/// and treats the end as garbage.
const READ_END_CAP: u64 = 2 * MAX_LINE_BYTES as u64 + 2;

/// How many bytes [`AuditLog::open`] reads backwards at a time.
const READ_END_BLOCK: u64 = 4096;

/// The largest head file worth reading (a head is under 100 bytes).
const MAX_HEAD_BYTES: u64 = 256;

/// A BLAKE3 hash in the audit chain: of a line's bytes (without its newline), or
/// [`AuditHash::genesis`]. JSON and [`fmt::Display`] show it as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuditHash(pub [u8; 32]);

impl AuditHash {
    /// The BLAKE3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The hash seq 0 chains to: the BLAKE3 of `relsync-audit-v1`.
    pub fn genesis() -> Self {
        Self::of(GENESIS.as_bytes())
    }

    fn parse(hex_digits: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Display for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditHash({})", hex::encode(&self.0[..8]))
    }
}

impl Serialize for AuditHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AuditHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not 64 hex digits (a BLAKE3 hash)"))
        })
    }
}

/// Something relsync did or saw, as one audit record. In JSON, `kind` names the variant in
/// snake case (`"rolled_back"`) next to the variant's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A check of the channel.
    Checked {
        /// The channel checked.
        channel: String,
        /// The version the origin offers, if the check got that far.
        offered: Option<Version>,
        /// The installed version at the time.
        installed: Option<Version>,
        /// What came of it, in words (`up to date`, `update available`, an error).
        outcome: String,
    },
    /// A release's missing chunks were fetched and verified.
    Downloaded {
        /// The release.
        version: Version,
        /// Bytes fetched from the origin.
        bytes_from_origin: u64,
        /// Bytes fetched from LAN peers.
        bytes_from_peers: u64,
    },
    /// `current` was switched to a release.
    Installed {
        /// The release now installed.
        version: Version,
        /// The release installed before, if any.
        previous: Option<Version>,
        /// The release's manifest id (hex).
        manifest: String,
    },
    /// `current` was switched back to an earlier release.
    RolledBack {
        /// The release rolled back from.
        from: Version,
        /// The release now installed.
        to: Version,
        /// Why (a user's command, a failed health check, a yank).
        reason: String,
    },
    /// A release was marked bad, so it is not installed again.
    MarkedBad {
        /// The release.
        version: Version,
        /// Why.
        reason: String,
    },
    /// Something failed verification: a signature, a manifest, a chunk, a file.
    VerificationFailed {
        /// What failed.
        what: String,
        /// The error, as displayed.
        error: String,
    },
    /// The publisher yanked a release this install had.
    Yanked {
        /// The release.
        version: Version,
        /// Whether the install was rolled back off it.
        rolled_back: bool,
    },
    /// The installed release was built again because it drifted on disk (`relsync repair`).
    Repaired {
        /// The release.
        version: Version,
        /// How many differences from its signed manifest were found.
        problems: u64,
    },
    /// A release's bad mark was cleared by hand (`relsync retry`): it may be installed
    /// again.
    Unmarked {
        /// The release.
        version: Version,
        /// Why it had been marked.
        reason: String,
    },
    /// A health check ran on a release.
    HealthCheck {
        /// The release.
        version: Version,
        /// Whether it passed.
        passed: bool,
        /// The check's output or error, in short.
        detail: String,
    },
}

impl AuditEvent {
    /// The event's `kind` tag, as written to the log (`"rolled_back"`).
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::Checked { .. } => "checked",
            AuditEvent::Downloaded { .. } => "downloaded",
            AuditEvent::Installed { .. } => "installed",
            AuditEvent::RolledBack { .. } => "rolled_back",
            AuditEvent::MarkedBad { .. } => "marked_bad",
            AuditEvent::VerificationFailed { .. } => "verification_failed",
            AuditEvent::Yanked { .. } => "yanked",
            AuditEvent::Repaired { .. } => "repaired",
            AuditEvent::Unmarked { .. } => "unmarked",
            AuditEvent::HealthCheck { .. } => "health_check",
        }
    }
}

/// A version or `none`.
struct OrNone<'a>(&'a Option<Version>);

impl fmt::Display for OrNone<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("none"),
        }
    }
}

/// A one-line summary, for people.
impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditEvent::Checked {
                channel,
                offered,
                installed,
                outcome,
            } => write!(
                f,
                "checked {channel}: offered {}, installed {}: {outcome}",
                OrNone(offered),
                OrNone(installed)
            ),
            AuditEvent::Downloaded {
                version,
                bytes_from_origin,
                bytes_from_peers,
            } => write!(
                f,
                "downloaded {version}: {bytes_from_origin} bytes from the origin, \
                 {bytes_from_peers} from peers"
            ),
            AuditEvent::Installed {
                version,
                previous,
                manifest,
            } => write!(
                f,
                "installed {version} (previous {}, manifest {})",
                OrNone(previous),
                // The first 16 hex digits, as `short()` ids elsewhere.
                manifest.get(..16).unwrap_or(manifest)
            ),
            AuditEvent::RolledBack { from, to, reason } => {
                write!(f, "rolled back {from} -> {to}: {reason}")
            }
            AuditEvent::MarkedBad { version, reason } => {
                write!(f, "marked {version} bad: {reason}")
            }
            AuditEvent::VerificationFailed { what, error } => {
                write!(f, "verification of {what} failed: {error}")
            }
            AuditEvent::Yanked {
                version,
                rolled_back,
            } => {
                write!(f, "{version} was yanked")?;
                if *rolled_back {
                    f.write_str(", rolled back off it")?;
                }
                Ok(())
            }
            AuditEvent::Repaired { version, problems } => {
                write!(
                    f,
                    "repaired {version}: {problems} difference(s) from its manifest"
                )
            }
            AuditEvent::Unmarked { version, reason } => {
                write!(f, "cleared the bad mark of {version} (it was: {reason})")
            }
            AuditEvent::HealthCheck {
                version,
                passed,
                detail,
            } => write!(
                f,
                "health check of {version} {}: {detail}",
                if *passed { "passed" } else { "failed" }
            ),
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The record's number, from 0.
    pub seq: u64,
    /// When it was written, in seconds since the Unix epoch (the writer's clock).
    pub time_unix: u64,
    /// The hash of the previous line, or [`AuditHash::genesis`] for seq 0.
    pub prev: AuditHash,
    /// What happened.
    pub event: AuditEvent,
}

/// A line as [`verify`] reads it: the chain's fields, with the event left opaque.
#[derive(Deserialize)]
struct Envelope {
    seq: u64,
    time_unix: u64,
    prev: AuditHash,
    // Only checked for shape, so events from newer versions verify.
    #[serde(rename = "event")]
    _event: EventShape,
}

#[derive(Deserialize)]
struct EventShape {
    #[serde(rename = "kind")]
    _kind: String,
}

fn parse_envelope(line: &[u8]) -> Result<Envelope, AuditProblem> {
    serde_json::from_slice(line).map_err(|e| AuditProblem::Unreadable {
        reason: e.to_string(),
    })
}

/// What the head file says: the last committed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: AuditHash,
}

enum HeadFile {
    Missing,
    Unreadable(String),
    Present(Head),
}

fn read_head(path: &Path) -> Result<HeadFile> {
    let file = match platform::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HeadFile::Missing),
        Err(e) => return Err(Error::io("opening", path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_HEAD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io("reading", path))?;
    Ok(parse_head(&bytes).map_or_else(HeadFile::Unreadable, HeadFile::Present))
}

fn parse_head(bytes: &[u8]) -> Result<Head, String> {
    if bytes.len() as u64 > MAX_HEAD_BYTES {
        return Err(format!("over {MAX_HEAD_BYTES} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let body = text.strip_suffix('\n').unwrap_or(text);
    let (seq, hash) = body
        .split_once(' ')
        .ok_or_else(|| format!("{body:?} is not `<seq> <hash>`"))?;
    let seq = seq
        .parse()
        .map_err(|_| format!("{seq:?} is not a record number"))?;
    let hash = AuditHash::parse(hash).ok_or_else(|| format!("{hash:?} is not a BLAKE3 hash"))?;
    Ok(Head { seq, hash })
}

/// Replaces the head file atomically: write a temporary file, sync, rename, sync the folder
/// (never through a link; mode 0600).
fn write_head(state: &Dir, head: Head) -> Result<()> {
    state.write_atomic(
        HEAD_FILE,
        format!("{} {}\n", head.seq, head.hash).as_bytes(),
    )
}

/// The end of a log, as [`AuditLog::open`] sees it.
struct LogEnd {
    /// The log's length.
    len: u64,
    /// The last line that ends in a newline.
    last: LastLine,
    /// Where the bytes after the last newline start (`len` if the log ends with one), or
    /// `None` if there are more of them than [`READ_END_CAP`].
    torn_from: Option<u64>,
}

enum LastLine {
    /// No line ends in a newline.
    None,
    /// The last complete line, without its newline.
    Line(Vec<u8>),
    /// The last complete line is too long to be a record, or too far from the end.
    TooLong,
}

impl LogEnd {
    fn torn(&self) -> bool {
        self.torn_from != Some(self.len)
    }
}

/// Reads the log backwards from its end until it has the last complete line.
fn read_end(path: &Path) -> Result<LogEnd> {
    let mut file = match platform::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(LogEnd {
                len: 0,
                last: LastLine::None,
                torn_from: Some(0),
            });
        }
        Err(e) => return Err(Error::io("opening", path)(e)),
    };
    let len = file.metadata().map_err(Error::io("reading", path))?.len();
    // The bytes from `start` to the end.
    let mut buf: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        let last_newline = buf.iter().rposition(|&b| b == b'\n');
        if let Some(end) = last_newline {
            let torn_from = Some(start + end as u64 + 1);
            let line_start = match buf[..end].iter().rposition(|&b| b == b'\n') {
                Some(i) => Some(i + 1),
                None if start == 0 => Some(0),
                None => None,
            };
            if let Some(line_start) = line_start {
                let line = &buf[line_start..end];
                let last = if line.len() > MAX_LINE_BYTES {
                    LastLine::TooLong
                } else {
                    LastLine::Line(line.to_vec())
                };
                return Ok(LogEnd {
                    len,
                    last,
                    torn_from,
                });
            }
        } else if start == 0 {
            return Ok(LogEnd {
                len,
                last: LastLine::None,
                torn_from: Some(0),
            });
        }
        if len - start > READ_END_CAP {
            return Ok(LogEnd {
                len,
                last: LastLine::TooLong,
                torn_from: last_newline.map(|end| start + end as u64 + 1),
            });
        }
        let n = start.min(READ_END_BLOCK);
        start -= n;
        let mut block = vec![0u8; n as usize];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut block))
            .map_err(Error::io("reading", path))?;
        block.extend_from_slice(&buf);
        buf = block;
    }
}

/// Where the next record goes.
#[derive(Debug)]
struct Tail {
    next_seq: u64,
    prev: AuditHash,
    /// The log ends in a torn line that is not ours to cut off: end it first.
    newline_first: bool,
}

/// An install's audit log, open for appending.
///
/// Only one process should append at a time: the one holding the install lock. Appends from
/// threads of that process are serialized here.
///
/// [`AuditLog::open`] then [`AuditLog::append`] write records; [`AuditLog::verify`] checks a
/// whole log without writing anything or taking the install lock, so it works while a daemon
/// runs; [`AuditLog::records`] reads the records back for display.
///
/// # Format
///
/// `<install>/.relsync/audit.log` ([`InstallLayout::audit_log`]) holds one JSON object per
/// line, each ending in `\n`:
///
/// ```text
/// {"seq":0,"time_unix":1764000000,"prev":"<64 hex digits>","event":{"kind":"checked",...}}
/// ```
///
/// - `seq` numbers the records from 0, one per line, without gaps.
/// - `time_unix` is the writer's wall clock in seconds. Clocks get set, so nothing checks
///   that it never goes backwards.
/// - `prev` is the hex BLAKE3 of the previous line's bytes, without its newline. For seq 0
///   it is the BLAKE3 of the string `relsync-audit-v1` ([`AuditHash::genesis`]).
/// - `event` is an [`AuditEvent`], tagged by `kind`. Readers ignore fields they do not know,
///   and [`AuditLog::verify`] needs only `kind` to be a string, so a log that a newer
///   relsync wrote still verifies.
///
/// `<install>/.relsync/audit.head` ([`InstallLayout::audit_head`]) names the last record:
/// `<seq> <hex BLAKE3 of its line>\n`. Without it, nobody could tell that the end of the log
/// was cut off or that its last line was edited.
///
/// # Crash invariant
///
/// An append writes its line with `O_APPEND` and syncs it. Then it replaces the head: it
/// writes a temporary file, syncs it, renames it and syncs the folder. After a crash, the log
/// either ends at the head's record or has one more record (the line was durable, the head
/// was not yet). That last line may be torn (it ends without a newline), but only after the
/// head's record. [`AuditLog::verify`] accepts these cases and says so
/// ([`AuditSummary::interrupted_append`]). [`AuditLog::open`] repairs them: it points the
/// head at a complete record that chains onto it, and it cuts off a torn line.
///
/// # What the chain protects, and what it does not
///
/// The chain makes accidents and naive edits evident: a changed, deleted, reordered, repeated
/// or inserted line, a log cut short, a deleted head or a forged line that does not chain.
/// Nothing is signed, though. Whoever can write the install's `.relsync` folder can rewrite
/// the chain and the head consistently, and [`AuditLog::verify`] cannot tell. The same goes
/// for one forged record appended after the head with a correct `prev`, which looks like an
/// interrupted append. Ship the head somewhere else (a log collector) to anchor the chain.
///
/// # Appending to a damaged log
///
/// [`AuditLog::open`] does not refuse a damaged log, because a broken audit trail must not
/// stop updates. It never rewrites records either. When the log's end does not match the
/// head, new records continue the chain from the head, because the head names the last
/// record that was known to be committed. They do not continue from whatever the log now ends
/// with. So the break stays visible: [`AuditLog::verify`] keeps reporting it at the first new
/// line even after the head is rewritten. Without a usable head, records continue from the log's
/// last line. To start a new log, remove both files.
#[derive(Debug)]
pub struct AuditLog {
    log: PathBuf,
    head: PathBuf,
    layout: InstallLayout,
    tail: Mutex<Tail>,
}

impl AuditLog {
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
    pub fn verify(layout: &InstallLayout) -> Result<AuditSummary, AuditError> {
        verify(layout)
    }

    /// Reads an install's records, in order, without checking the chain
    /// ([`verify`](Self::verify) does that). A line that is not a record this version
    /// understands (an event kind from a newer relsync, say) comes out as an error, and the
    /// records after it still follow. An absent log has no records.
    pub fn records(layout: &InstallLayout) -> Result<AuditRecords> {
        records(layout)
    }

    /// Opens the install's audit log for appending. The log and head files are created on
    /// the first append, in the install's `.relsync`, which must exist (opening the install
    /// makes it; an append never creates state).
    ///
    /// It reads only the log's last line and the head. It repairs what an interrupted append
    /// left behind: the head is pointed at a record one past it that chains onto it, and a
    /// torn line after the head's record is cut off. A log whose end disagrees with its head
    /// in any other way is kept as it is, and appends continue after the head's record, so
    /// [`AuditLog::verify`] still reports the break (see [`AuditLog`]).
    ///
    /// Fails only on I/O errors.
    pub fn open(layout: &InstallLayout) -> Result<Self> {
        let log = layout.audit_log();
        let head_path = layout.audit_head();
        let mut head = match read_head(&head_path)? {
            HeadFile::Present(h) => Some(h),
            HeadFile::Missing => None,
            HeadFile::Unreadable(reason) => {
                tracing::warn!(path = %head_path.display(), reason, "the audit head is unreadable; ignoring it");
                None
            }
        };
        let mut end = read_end(&log)?;

        // The last line: parsed if it is a record, and its hash.
        let last = match &end.last {
            LastLine::Line(line) => Some((parse_envelope(line).ok(), AuditHash::of(line))),
            LastLine::TooLong => Some((None, AuditHash::genesis())),
            LastLine::None => None,
        };

        // An append that wrote its line but not the head: complete it.
        if let Some((Some(record), hash)) = &last {
            let chains_on = match head {
                Some(h) => record.seq == h.seq + 1 && record.prev == h.hash,
                None => record.seq == 0 && record.prev == AuditHash::genesis(),
            };
            if chains_on {
                let repaired = Head {
                    seq: record.seq,
                    hash: *hash,
                };
                tracing::warn!(
                    seq = record.seq,
                    "an audit append was interrupted before its head was written; repairing the head"
                );
                write_head(&layout.state_dir()?, repaired)?;
                head = Some(repaired);
            }
        }

        let at_head = match (&last, head) {
            (None, None) => true,
            (Some((Some(record), hash)), Some(h)) => record.seq == h.seq && *hash == h.hash,
            _ => false,
        };

        // A torn line after the committed record is an append that never finished: it was
        // never committed, so it can go.
        if at_head
            && end.torn()
            && let Some(torn_from) = end.torn_from
        {
            tracing::warn!(
                bytes = end.len - torn_from,
                "cutting off a torn audit line left by an interrupted append"
            );
            let file = layout.state_dir()?.open_state_file(LOG_FILE, false)?;
            file.set_len(torn_from)
                .and_then(|()| file.sync_all())
                .map_err(Error::io("truncating", &log))?;
            end.len = torn_from;
        }

        let (next_seq, prev) = match (&last, head) {
            (None, None) => (0, AuditHash::genesis()),
            (Some((Some(record), hash)), Some(_)) if at_head => (record.seq + 1, *hash),
            (_, Some(h)) => {
                tracing::warn!(
                    path = %log.display(),
                    head_seq = h.seq,
                    "the audit log does not end at its head; appending after the head's record (`relsync audit verify` reports the break)"
                );
                (h.seq + 1, h.hash)
            }
            (Some((record, hash)), None) => {
                tracing::warn!(path = %log.display(), "the audit log has no head; appending after its last line");
                (record.as_ref().map_or(0, |r| r.seq + 1), *hash)
            }
        };
        Ok(Self {
            log,
            head: head_path,
            layout: layout.clone(),
            tail: Mutex::new(Tail {
                next_seq,
                prev,
                newline_first: end.torn(),
            }),
        })
    }

    /// The seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_seq
    }

    /// Appends `event`, stamped with the current time, and makes it durable: the line is
    /// written with `O_APPEND` and synced, then the head is replaced atomically. This blocks
    /// on two syncs, so async code should call it from a blocking task.
    ///
    /// If writing the line fails, the log is cut back to where it was. If only the head
    /// update fails, the record stays: the error is returned, and the next append or
    /// [`AuditLog::open`] rewrites the head.
    pub fn append(&self, event: AuditEvent) -> Result<()> {
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        let time_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let record = AuditRecord {
            seq: tail.next_seq,
            time_unix,
            prev: tail.prev,
            event,
        };
        let line = serde_json::to_vec(&record)
            .map_err(|e| Error::malformed("audit record", e.to_string()))?;
        if line.len() > MAX_LINE_BYTES {
            return Err(Error::malformed(
                "audit record",
                format!(
                    "{} bytes, over the {MAX_LINE_BYTES}-byte line limit",
                    line.len()
                ),
            ));
        }
        let hash = AuditHash::of(&line);
        let mut bytes = Vec::with_capacity(line.len() + 2);
        if tail.newline_first {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');

        // The install was opened (and `.relsync` made) before anything is appended.
        let state = self.layout.state_dir()?;
        let mut file = state.open_state_file(LOG_FILE, true)?;
        let len_before = file
            .metadata()
            .map_err(Error::io("reading", &self.log))?
            .len();
        crate::faults::step("audit.append", &self.log)?;
        if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
            // Leave no partial line behind for the next append to continue.
            let _ = file.set_len(len_before).and_then(|()| file.sync_data());
            return Err(Error::io("appending to", &self.log)(e));
        }
        if len_before == 0 {
            // A new file: make its name durable too.
            state.sync()?;
        }
        tail.next_seq = record.seq + 1;
        tail.prev = hash;
        tail.newline_first = false;
        crate::faults::step("audit.head", &self.head)?;
        tracing::debug!(
            seq = record.seq,
            kind = record.event.kind(),
            "audit record appended"
        );
        write_head(
            &state,
            Head {
                seq: record.seq,
                hash,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::verify::{Chain, Lines};
    use super::*;
    use std::fs::{self, OpenOptions};

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn events() -> Vec<AuditEvent> {
        vec![
            AuditEvent::Checked {
                channel: "stable".into(),
                offered: Some(v("1.1.0")),
                installed: Some(v("1.0.0")),
                outcome: "update available".into(),
            },
            AuditEvent::Downloaded {
                version: v("1.1.0"),
                bytes_from_origin: 1234,
                bytes_from_peers: 56,
            },
            AuditEvent::Installed {
                version: v("1.1.0"),
                previous: Some(v("1.0.0")),
                manifest: "ab".repeat(32),
            },
            AuditEvent::HealthCheck {
                version: v("1.1.0"),
                passed: false,
                detail: "exit 3\nsecond line".into(),
            },
            AuditEvent::RolledBack {
                from: v("1.1.0"),
                to: v("1.0.0"),
                reason: "health check failed".into(),
            },
            AuditEvent::MarkedBad {
                version: v("1.1.0"),
                reason: "health check failed".into(),
            },
            AuditEvent::VerificationFailed {
                what: "manifest".into(),
                error: "bad signature".into(),
            },
            AuditEvent::Yanked {
                version: v("1.1.0"),
                rolled_back: true,
            },
        ]
    }

    /// An install with `events()` appended.
    fn written() -> (tempfile::TempDir, InstallLayout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = InstallLayout::new(dir.path());
        fs::create_dir(layout.state()).unwrap();
        let log = AuditLog::open(&layout).unwrap();
        for e in events() {
            log.append(e).unwrap();
        }
        (dir, layout)
    }

    fn lines(layout: &InstallLayout) -> Vec<String> {
        fs::read_to_string(layout.audit_log())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(layout: &InstallLayout, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(layout.audit_log(), text).unwrap();
    }

    fn broken(layout: &InstallLayout) -> (u64, AuditProblem) {
        match verify(layout) {
            Err(AuditError::Broken { line, problem }) => (line, problem),
            other => panic!("expected a broken log, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let (_dir, layout) = written();
        let summary = verify(&layout).unwrap();
        assert_eq!(summary.records, events().len() as u64);
        assert!(!summary.interrupted_append);
        assert!(summary.first_time_unix.unwrap() <= summary.last_time_unix.unwrap());
        let read: Vec<AuditRecord> = records(&layout).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            read.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
            events()
        );
        assert_eq!(read[0].prev, AuditHash::genesis());
        for (i, r) in read.iter().enumerate() {
            assert_eq!(r.seq, i as u64);
        }
        // The chain: each prev is the hash of the previous line's bytes.
        let text = lines(&layout);
        for i in 1..read.len() {
            assert_eq!(read[i].prev, AuditHash::of(text[i - 1].as_bytes()));
        }
        // The head names the last line.
        let head = fs::read_to_string(layout.audit_head()).unwrap();
        let last = AuditHash::of(text.last().unwrap().as_bytes());
        assert_eq!(head, format!("{} {last}\n", read.len() - 1));
    }

    #[test]
    fn format_is_as_documented() {
        let (_dir, layout) = written();
        let first = &lines(&layout)[0];
        let value: serde_json::Value = serde_json::from_str(first).unwrap();
        let keys: Vec<&str> = first
            .trim_start_matches('{')
            .split(',')
            .take(3)
            .map(|kv| kv.split(':').next().unwrap().trim_matches('"'))
            .collect();
        assert_eq!(keys, ["seq", "time_unix", "prev"]);
        assert_eq!(value["seq"], 0);
        assert_eq!(
            value["prev"],
            blake3::hash(b"relsync-audit-v1").to_hex().as_str()
        );
        assert_eq!(value["event"]["kind"], "checked");
        assert_eq!(value["event"]["offered"], "1.1.0");
        for e in events() {
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["kind"], e.kind(), "{e:?}");
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn empty_and_absent_logs_verify() {
        let dir = tempfile::tempdir().unwrap();
        let layout = InstallLayout::new(dir.path().join("nowhere"));
        let summary = verify(&layout).unwrap();
        assert_eq!(summary.records, 0);
        assert_eq!(summary.first_time_unix, None);
        assert_eq!(records(&layout).unwrap().count(), 0);
    }

    #[test]
    fn reopening_continues_the_chain() {
        let (_dir, layout) = written();
        let log = AuditLog::open(&layout).unwrap();
        assert_eq!(log.next_seq(), events().len() as u64);
        log.append(events()[0].clone()).unwrap();
        assert_eq!(verify(&layout).unwrap().records, events().len() as u64 + 1);
    }

    #[test]
    fn an_edited_middle_line_shows_at_the_next_line() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        assert!(text[2].contains("\"1.1.0\""));
        text[2] = text[2].replacen("\"1.1.0\"", "\"1.1.1\"", 1);
        write_lines(&layout, &text);
        let (line, problem) = broken(&layout);
        assert_eq!(line, 4);
        assert_eq!(
            problem,
            AuditProblem::ChainBroken {
                previous_line: Some(3)
            }
        );
        assert!(problem.to_string().contains("line 3 was changed"));
    }

    #[test]
    fn an_edited_first_line_shows_at_line_2() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        text[0] = text[0].replace("stable", "beta");
        write_lines(&layout, &text);
        assert_eq!(broken(&layout).0, 2);
    }

    #[test]
    fn an_edited_last_line_shows_at_the_head() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        let last = text.len() - 1;
        text[last] = text[last].replace("true", "false");
        write_lines(&layout, &text);
        let (line, problem) = broken(&layout);
        assert_eq!(line, text.len() as u64);
        assert_eq!(problem, AuditProblem::HeadMismatch { seq: last as u64 });
    }

    #[test]
    fn swapped_lines_are_out_of_sequence() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        text.swap(3, 4);
        write_lines(&layout, &text);
        let (line, problem) = broken(&layout);
        assert_eq!(line, 4);
        assert_eq!(
            problem,
            AuditProblem::OutOfSequence {
                expected: 3,
                found: 4
            }
        );
    }

    #[test]
    fn a_deleted_middle_line_is_out_of_sequence() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        text.remove(2);
        write_lines(&layout, &text);
        let (line, problem) = broken(&layout);
        assert_eq!(line, 3);
        assert_eq!(
            problem,
            AuditProblem::OutOfSequence {
                expected: 2,
                found: 3
            }
        );
        assert!(problem.to_string().contains("deleted"));
    }

    #[test]
    fn a_repeated_line_is_out_of_sequence() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        text.insert(3, text[2].clone());
        write_lines(&layout, &text);
        assert_eq!(
            broken(&layout),
            (
                4,
                AuditProblem::OutOfSequence {
                    expected: 3,
                    found: 2
                }
            )
        );
    }

    #[test]
    fn deleted_first_lines_are_out_of_sequence() {
        let (_dir, layout) = written();
        let text = lines(&layout);
        write_lines(&layout, &text[2..]);
        assert_eq!(
            broken(&layout),
            (
                1,
                AuditProblem::OutOfSequence {
                    expected: 0,
                    found: 2
                }
            )
        );
    }

    #[test]
    fn cut_off_last_lines_are_truncation() {
        let n = events().len() as u64;
        for cut in [1, 2] {
            let (_dir, layout) = written();
            let text = lines(&layout);
            write_lines(&layout, &text[..text.len() - cut]);
            assert_eq!(
                broken(&layout),
                (
                    n - cut as u64 + 1,
                    AuditProblem::Truncated {
                        records: n - cut as u64,
                        head_records: n,
                        incomplete_line: false
                    }
                ),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_log_cut_mid_line_is_truncation() {
        let n = events().len() as u64;
        let (_dir, layout) = written();
        let bytes = fs::read(layout.audit_log()).unwrap();
        fs::write(layout.audit_log(), &bytes[..bytes.len() - 20]).unwrap();
        assert_eq!(
            broken(&layout),
            (
                n,
                AuditProblem::Truncated {
                    records: n - 1,
                    head_records: n,
                    incomplete_line: true
                }
            )
        );
        // Only the newline cut off: still the committed line, so still truncation.
        let (_dir, layout) = written();
        let bytes = fs::read(layout.audit_log()).unwrap();
        fs::write(layout.audit_log(), &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(
            broken(&layout).1,
            AuditProblem::Truncated {
                incomplete_line: true,
                ..
            }
        ));
    }

    #[test]
    fn an_emptied_or_deleted_log_with_a_head_is_truncation() {
        let (_dir, layout) = written();
        fs::write(layout.audit_log(), "").unwrap();
        assert!(matches!(
            broken(&layout),
            (1, AuditProblem::Truncated { records: 0, .. })
        ));
        fs::remove_file(layout.audit_log()).unwrap();
        assert!(matches!(
            broken(&layout),
            (1, AuditProblem::Truncated { records: 0, .. })
        ));
    }

    #[test]
    fn a_removed_head_is_reported() {
        let (_dir, layout) = written();
        fs::remove_file(layout.audit_head()).unwrap();
        let n = events().len() as u64;
        assert_eq!(
            broken(&layout),
            (n, AuditProblem::HeadMissing { records: n })
        );
    }

    #[test]
    fn a_garbled_head_is_reported() {
        let (_dir, layout) = written();
        fs::write(layout.audit_head(), "seven zz\n").unwrap();
        assert!(matches!(
            broken(&layout).1,
            AuditProblem::HeadUnreadable { .. }
        ));
    }

    #[test]
    fn a_forged_line_with_a_wrong_prev_is_caught() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        let n = text.len();
        let forged = format!(
            r#"{{"seq":{n},"time_unix":1,"prev":"{}","event":{{"kind":"yanked","version":"9.9.9","rolled_back":false}}}}"#,
            AuditHash::of(b"anything")
        );
        text.push(forged);
        write_lines(&layout, &text);
        assert_eq!(
            broken(&layout),
            (
                n as u64 + 1,
                AuditProblem::ChainBroken {
                    previous_line: Some(n as u64)
                }
            )
        );
    }

    #[test]
    fn garbage_lines_are_unreadable() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        text.insert(2, "hello".into());
        write_lines(&layout, &text);
        assert!(matches!(
            broken(&layout),
            (3, AuditProblem::Unreadable { .. })
        ));

        let (_dir, layout) = written();
        let mut text = lines(&layout);
        text[1] = text[1].replace("\"seq\"", "\"sequence\"");
        write_lines(&layout, &text);
        assert!(matches!(
            broken(&layout),
            (2, AuditProblem::Unreadable { .. })
        ));

        let (_dir, layout) = written();
        let mut text = lines(&layout);
        text.insert(1, "x".repeat(MAX_LINE_BYTES + 10));
        write_lines(&layout, &text);
        assert!(matches!(
            broken(&layout),
            (2, AuditProblem::Unreadable { .. })
        ));
    }

    #[test]
    fn an_interrupted_append_passes_and_open_repairs_it() {
        let (_dir, layout) = written();
        let head_before = fs::read(layout.audit_head()).unwrap();
        AuditLog::open(&layout)
            .unwrap()
            .append(events()[0].clone())
            .unwrap();
        // As if the crash came after the log's sync and before the head's rename.
        fs::write(layout.audit_head(), &head_before).unwrap();
        let summary = verify(&layout).unwrap();
        assert!(summary.interrupted_append);
        assert_eq!(summary.records, events().len() as u64 + 1);

        let log = AuditLog::open(&layout).unwrap();
        assert_ne!(fs::read(layout.audit_head()).unwrap(), head_before);
        let summary = verify(&layout).unwrap();
        assert!(!summary.interrupted_append);
        log.append(events()[1].clone()).unwrap();
        assert_eq!(verify(&layout).unwrap().records, events().len() as u64 + 2);
    }

    #[test]
    fn an_interrupted_first_append_passes_and_open_repairs_it() {
        let (_dir, layout) = written();
        let text = lines(&layout);
        write_lines(&layout, &text[..1]);
        fs::remove_file(layout.audit_head()).unwrap();
        assert!(verify(&layout).unwrap().interrupted_append);
        AuditLog::open(&layout).unwrap();
        assert!(layout.audit_head().exists());
        assert!(!verify(&layout).unwrap().interrupted_append);
    }

    #[test]
    fn two_records_past_the_head_are_not_an_interrupted_append() {
        let (_dir, layout) = written();
        let head_before = fs::read(layout.audit_head()).unwrap();
        let log = AuditLog::open(&layout).unwrap();
        log.append(events()[0].clone()).unwrap();
        log.append(events()[1].clone()).unwrap();
        fs::write(layout.audit_head(), &head_before).unwrap();
        let n = events().len() as u64;
        assert_eq!(
            broken(&layout),
            (
                n + 2,
                AuditProblem::PastHead {
                    records: n + 2,
                    head_records: n
                }
            )
        );
    }

    #[test]
    fn a_torn_append_passes_and_open_cuts_it_off() {
        let (_dir, layout) = written();
        let size = fs::metadata(layout.audit_log()).unwrap().len();
        let mut file = OpenOptions::new()
            .append(true)
            .open(layout.audit_log())
            .unwrap();
        file.write_all(br#"{"seq":8,"time_u"#).unwrap();
        let summary = verify(&layout).unwrap();
        assert!(summary.interrupted_append);
        assert_eq!(summary.records, events().len() as u64);
        // `records` reports the partial line.
        assert!(records(&layout).unwrap().last().unwrap().is_err());

        let log = AuditLog::open(&layout).unwrap();
        assert_eq!(fs::metadata(layout.audit_log()).unwrap().len(), size);
        log.append(events()[0].clone()).unwrap();
        let summary = verify(&layout).unwrap();
        assert!(!summary.interrupted_append);
        assert_eq!(summary.records, events().len() as u64 + 1);
    }

    #[test]
    fn appends_after_a_cut_off_end_keep_the_break_visible() {
        let n = events().len() as u64;
        let (_dir, layout) = written();
        let text = lines(&layout);
        write_lines(&layout, &text[..text.len() - 2]);
        let log = AuditLog::open(&layout).unwrap();
        assert_eq!(log.next_seq(), n);
        log.append(events()[0].clone()).unwrap();
        assert_eq!(
            broken(&layout),
            (
                n - 1,
                AuditProblem::OutOfSequence {
                    expected: n - 2,
                    found: n
                }
            )
        );
    }

    #[test]
    fn appends_after_an_edited_last_line_keep_the_break_visible() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        let last = text.len() - 1;
        text[last] = text[last].replace("true", "false");
        write_lines(&layout, &text);
        AuditLog::open(&layout)
            .unwrap()
            .append(events()[0].clone())
            .unwrap();
        assert_eq!(
            broken(&layout),
            (
                text.len() as u64 + 1,
                AuditProblem::ChainBroken {
                    previous_line: Some(text.len() as u64)
                }
            )
        );
    }

    #[test]
    fn appends_after_a_foreign_partial_line_start_on_a_new_line() {
        let (_dir, layout) = written();
        let text = lines(&layout);
        // Cut mid-line: the partial line is a committed record, so open must keep it.
        let bytes = fs::read(layout.audit_log()).unwrap();
        fs::write(layout.audit_log(), &bytes[..bytes.len() - 20]).unwrap();
        AuditLog::open(&layout)
            .unwrap()
            .append(events()[0].clone())
            .unwrap();
        let now = lines(&layout);
        assert_eq!(now.len(), text.len() + 1);
        assert!(
            now.last()
                .unwrap()
                .starts_with(&format!("{{\"seq\":{}", text.len()))
        );
        assert!(matches!(
            broken(&layout),
            (line, AuditProblem::Unreadable { .. }) if line == text.len() as u64
        ));
    }

    #[test]
    fn a_head_with_no_log_continues_after_the_head() {
        let (_dir, layout) = written();
        fs::remove_file(layout.audit_log()).unwrap();
        let log = AuditLog::open(&layout).unwrap();
        assert_eq!(log.next_seq(), events().len() as u64);
        log.append(events()[0].clone()).unwrap();
        assert!(matches!(
            broken(&layout),
            (1, AuditProblem::OutOfSequence { expected: 0, .. })
        ));
    }

    #[test]
    fn open_finds_the_last_line_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let layout = InstallLayout::new(dir.path());
        fs::create_dir(layout.state()).unwrap();
        let log = AuditLog::open(&layout).unwrap();
        let long = "x".repeat(3 * READ_END_BLOCK as usize);
        for _ in 0..3 {
            log.append(AuditEvent::VerificationFailed {
                what: "chunk".into(),
                error: long.clone(),
            })
            .unwrap();
        }
        let log = AuditLog::open(&layout).unwrap();
        assert_eq!(log.next_seq(), 3);
        log.append(events()[0].clone()).unwrap();
        assert_eq!(verify(&layout).unwrap().records, 4);
    }

    #[test]
    fn oversized_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = InstallLayout::new(dir.path());
        fs::create_dir(layout.state()).unwrap();
        let log = AuditLog::open(&layout).unwrap();
        let err = log
            .append(AuditEvent::VerificationFailed {
                what: "chunk".into(),
                error: "x".repeat(MAX_LINE_BYTES),
            })
            .unwrap_err();
        assert!(
            matches!(err, Error::Format(relsync_format::Error::Malformed { .. })),
            "{err}"
        );
        assert_eq!(log.next_seq(), 0);
        assert!(verify(&layout).unwrap().records == 0);
    }

    #[test]
    fn unknown_event_kinds_verify_but_do_not_decode() {
        let (_dir, layout) = written();
        let mut text = lines(&layout);
        let n = text.len();
        let line = format!(
            r#"{{"seq":{n},"time_unix":5,"prev":"{}","event":{{"kind":"from_the_future","x":1}}}}"#,
            AuditHash::of(text[n - 1].as_bytes())
        );
        let hash = AuditHash::of(line.as_bytes());
        text.push(line);
        write_lines(&layout, &text);
        fs::write(layout.audit_head(), format!("{n} {hash}\n")).unwrap();
        assert_eq!(verify(&layout).unwrap().records, n as u64 + 1);
        let read: Vec<_> = records(&layout).unwrap().collect();
        assert!(read[..n].iter().all(Result::is_ok));
        assert!(matches!(
            read[n],
            Err(AuditError::Broken { line, .. }) if line == n as u64 + 1
        ));
    }

    #[test]
    fn verify_reads_on_when_the_head_is_ahead() {
        // The head names a record the first read did not see: simulate an append landing
        // between the read of the log and the read of the head, by appending from the
        // reader's point of view after opening it.
        let (_dir, layout) = written();
        let mut lines = Lines::open(&layout.audit_log()).unwrap().unwrap();
        let mut chain = Chain::default();
        while let Some(line) = lines.next_line().unwrap() {
            chain.push(line).unwrap();
        }
        AuditLog::open(&layout)
            .unwrap()
            .append(events()[0].clone())
            .unwrap();
        let head = read_head(&layout.audit_head()).unwrap();
        assert!(chain.behind(&head));
        while let Some(line) = lines.next_line().unwrap() {
            chain.push(line).unwrap();
        }
        let head = read_head(&layout.audit_head()).unwrap();
        let summary = chain.finish(head, lines.partial()).unwrap();
        assert_eq!(summary.records, events().len() as u64 + 1);
    }
}
