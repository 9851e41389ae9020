//! `relsync audit`: check and show an install's hash-chained audit log.
//!
//! Both commands only read the files: they take no lock, so they work while a daemon updates
//! the install. They print their own JSON, failures included: `verify --json` prints one
//! object with `"ok"`, and `show --json` prints one record per line.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use relsync_engine::{AuditError, AuditLog, AuditRecord, InstallLayout};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Check that DIR's audit log is intact; exit non-zero, naming the line, if not.
    ///
    /// Every record must chain onto the one before it, and the last one must be the one the
    /// head file names (or one past it: an append interrupted before it updated the head).
    Verify {
        /// The install directory.
        #[arg(long, value_name = "DIR")]
        install: PathBuf,
        /// Print one JSON object: {"ok":true,"records":N,...} or {"ok":false,"line":N,...}.
        #[arg(long)]
        json: bool,
    },
    /// Print DIR's audit records, oldest first, without checking the chain (see `verify`).
    Show {
        /// The install directory.
        #[arg(long, value_name = "DIR")]
        install: PathBuf,
        /// Print each record as one JSON object per line, as the log stores it.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: AuditArgs) -> Result<()> {
    match args.command {
        AuditCommand::Verify { install, json } => verify(&install, json),
        AuditCommand::Show { install, json } => show(&install, json).inspect_err(|e| {
            if json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
        }),
    }
}

fn layout(install: &Path) -> Result<InstallLayout> {
    if !install.is_dir() {
        bail!("no install directory at {}", install.display());
    }
    Ok(InstallLayout::new(install))
}

fn time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn verify(install: &Path, json: bool) -> Result<()> {
    let outcome = layout(install).and_then(|layout| match AuditLog::verify(&layout) {
        Ok(summary) => Ok(Ok(summary)),
        Err(AuditError::Broken { line, problem }) => Ok(Err((line, problem))),
        Err(e) => Err(anyhow::Error::new(e).context("reading the audit log")),
    });
    let summary = match outcome {
        Ok(Ok(summary)) => summary,
        Ok(Err((line, problem))) => {
            let message = format!("audit log BROKEN at line {line}: {problem}");
            if json {
                let value = serde_json::json!({
                    "ok": false,
                    "line": line,
                    "problem": problem.to_string(),
                    "error": message,
                });
                println!("{value}");
            }
            bail!(message)
        }
        Err(e) => {
            if json {
                let value = serde_json::json!({ "ok": false, "error": format!("{e:#}") });
                println!("{value}");
            }
            return Err(e);
        }
    };
    if json {
        let mut value = serde_json::to_value(&summary)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("ok".into(), true.into());
        }
        println!("{value}");
        return Ok(());
    }
    let mut line = match (summary.first_time_unix, summary.last_time_unix) {
        (Some(first), Some(last)) => format!(
            "audit log OK: {} records, {} … {}",
            summary.records,
            time(first),
            time(last)
        ),
        _ => "audit log OK: no records".to_owned(),
    };
    if summary.interrupted_append {
        line.push_str(
            " (the last append was interrupted before it updated the head; the next append \
             repairs that)",
        );
    }
    println!("{line}");
    Ok(())
}

fn show(install: &Path, json: bool) -> Result<()> {
    let layout = layout(install)?;
    let records = AuditLog::records(&layout).context("reading the audit log")?;
    let mut out = io::stdout().lock();
    let mut unreadable = 0u64;
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(AuditError::Broken { line, problem }) => {
                unreadable += 1;
                eprintln!("line {line}: {problem}");
                continue;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("reading the audit log")),
        };
        let written = if json {
            serde_json::to_string(&record)
                .map_err(io::Error::from)
                .and_then(|text| writeln!(out, "{text}"))
        } else {
            writeln!(out, "{}", human(&record))
        };
        match written {
            // A closed pipe (`| head`) is a reader that has seen enough.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing to stdout")?,
        }
    }
    if unreadable > 0 {
        eprintln!(
            "{unreadable} line(s) could not be read; `relsync audit verify` checks the whole chain"
        );
    }
    Ok(())
}

fn human(record: &AuditRecord) -> String {
    format!(
        "{:>6}  {}  {:<19}  {}",
        record.seq,
        time(record.time_unix),
        record.event.kind(),
        record.event
    )
}
