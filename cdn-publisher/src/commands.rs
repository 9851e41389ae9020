//! The subcommands `main` dispatches to: each parses its arguments, runs, and prints what it
//! did. What several share (the origin argument, key and document files, text output) is here.

pub mod gc;
pub mod ls;
pub mod pointer;
pub mod promote;
pub mod publish;
pub mod push;
pub mod root;
pub mod sign;
pub mod verify;
pub mod yank;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use relsync_format::SecretKey;

/// The origin a command operates on.
#[derive(Debug, clap::Args)]
pub struct OriginAt {
    /// The origin: a folder path, a file:// URL, or an object store URL, as `push --to` takes.
    #[arg(long, visible_alias = "to", value_name = "ORIGIN")]
    pub origin: String,
}

/// Reads secret key files ([`crate::keys::read_secret`]).
pub fn read_secrets(paths: &[PathBuf]) -> Result<Vec<SecretKey>> {
    paths.iter().map(|p| crate::keys::read_secret(p)).collect()
}

/// Reads a document file.
pub fn read_file(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// Writes a document file.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes `text` to stdout; a closed pipe (`ls | head`) is not an error.
pub fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.context("writing to stdout"),
    }
}

/// Parses a duration such as `90s`, `30m`, `1h`, `1h30m`, `7d` (or `0`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: use e.g. 90s, 30m, 1h, 1h30m or 7d");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut secs: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        secs = n
            .checked_mul(scale)
            .and_then(|s| secs.checked_add(s))
            .ok_or_else(bad)?;
        rest = tail;
    }
    Ok(Duration::from_secs(secs))
}

/// A duration as `parse_duration` reads it back, largest units first.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, scale) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= scale {
            out.push_str(&format!("{}{unit}", secs / scale));
            secs %= scale;
        }
    }
    out
}

/// A unix time as `YYYY-MM-DD HH:MM` in UTC.
pub fn utc(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || format!("unix {unix}"),
            |t| t.strftime("%Y-%m-%d %H:%M").to_string(),
        )
}

/// Rows as text columns padded to their widest cell, two spaces apart and indented by two.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("  {cell:<width$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        for (text, secs) in [
            ("0", 0),
            ("0s", 0),
            ("90s", 90),
            ("30m", 1_800),
            ("1h", 3_600),
            ("1h30m", 5_400),
            ("7d", 604_800),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d.as_secs(), secs, "{text}");
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        for bad in ["", "h", "1", "1x", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59");
    }
}
