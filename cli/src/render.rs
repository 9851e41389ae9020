//! Rendering engine events and results for people.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use relsync_engine::{CheckOutcome, Event, FileAction, Reporter, Status, UpdatePlan, UpdateReport};

/// Progress bars on a terminal, a few plain lines otherwise, nothing with `--json`.
pub struct Progress {
    enabled: bool,
    tty: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }

    fn set_bar(&self, bar: Option<ProgressBar>) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.take() {
                old.finish_and_clear();
            }
            *slot = bar;
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            f(bar);
        }
    }

    pub fn finish(&self) {
        self.set_bar(None);
    }

    fn bar(&self, len: u64, template: &str) -> Option<ProgressBar> {
        if !self.tty {
            return None;
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Some(bar)
    }
}

impl Reporter for Progress {
    fn report(&self, event: Event) {
        if !self.enabled {
            return;
        }
        match event {
            Event::Checked {
                version,
                installed,
                up_to_date: false,
            } => match installed {
                Some(old) => eprintln!("updating {old} -> {version}"),
                None => eprintln!("installing {version}"),
            },
            Event::Planned {
                bytes_to_fetch,
                requests,
                bytes_reused,
            } => {
                if !self.tty {
                    eprintln!(
                        "fetching {} in {requests} requests, reusing {} locally",
                        human_bytes(bytes_to_fetch),
                        human_bytes(bytes_reused)
                    );
                }
                self.set_bar(self.bar(
                    bytes_to_fetch,
                    "fetch    [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                ));
            }
            // Progress counts frame bytes, not the gaps the plan's total includes.
            Event::Fetched { bytes, total, .. } => self.with_bar(|b| {
                b.set_length(total);
                b.set_position(bytes);
            }),
            Event::Assembled { files, total } => {
                if files == 1 {
                    self.set_bar(self.bar(total, "assemble [{bar:30}] {pos}/{len} files"));
                }
                self.with_bar(|b| b.set_position(files));
            }
            Event::Verified { files } => {
                self.set_bar(None);
                if !self.tty {
                    eprintln!("verified {files} paths");
                }
            }
            _ => {}
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn print_report(r: &UpdateReport) {
    if r.up_to_date {
        println!("already up to date at {}", r.version);
        return;
    }
    match (&r.previous_version, r.applied) {
        (_, false) => println!(
            "staged {} (verified); `relsync apply` installs it, offline",
            r.version
        ),
        (Some(old), true) => println!("updated {old} -> {}", r.version),
        (None, true) => println!("installed {}", r.version),
    }
    if r.bytes_from_peers > 0 {
        println!(
            "  downloaded {} from the origin in {} requests, {} from LAN peers",
            human_bytes(r.bytes_from_origin),
            r.requests,
            human_bytes(r.bytes_from_peers)
        );
    } else {
        println!(
            "  downloaded {} in {} requests",
            human_bytes(r.bytes_downloaded),
            r.requests
        );
    }
    println!(
        "  reused     {} of chunks, {} files linked unchanged ({})",
        human_bytes(r.bytes_reused),
        r.files_linked,
        human_bytes(r.bytes_linked)
    );
    println!(
        "  wrote      {} files; fetched {} chunks ({} as deltas, {} of them bsdiff, {} with \
         projected references through {} reference maps)",
        r.files_written,
        r.chunks_fetched,
        r.chunks_delta,
        r.chunks_bsdiff,
        r.chunks_refs,
        r.ref_maps
    );
    println!("  took       {:.2} s", r.duration_ms as f64 / 1000.0);
}

pub fn print_plan(p: &UpdatePlan) {
    if p.up_to_date {
        println!("up to date at {}", p.version);
        return;
    }
    match &p.previous_version {
        Some(old) => println!("plan: {old} -> {} (manifest {})", p.version, p.manifest),
        None => println!("plan: install {} (manifest {})", p.version, p.manifest),
    }
    for f in &p.files {
        match &f.action {
            FileAction::Link { .. } => println!("  link   {}", f.path),
            FileAction::Write {
                chunks_local,
                chunks_fetched,
            } => println!(
                "  write  {} ({chunks_local} chunks local, {chunks_fetched} fetched)",
                f.path
            ),
            FileAction::Symlink => println!("  link-> {}", f.path),
            FileAction::Dir => println!("  dir    {}", f.path),
        }
    }
    let t = &p.totals;
    println!(
        "would fetch {} in {} requests; reuse {} of chunks; link {} files, write {}",
        human_bytes(t.bytes_to_fetch),
        t.requests,
        human_bytes(t.bytes_reused),
        t.files_linked,
        t.files_written
    );
}

pub fn print_check(outcome: &CheckOutcome) {
    match outcome {
        CheckOutcome::UpToDate { version } => println!("up to date at {version}"),
        CheckOutcome::Held { offered, hold } => println!("{offered} is offered but held: {hold}"),
        CheckOutcome::Available(a) => {
            let from = a
                .installed
                .as_ref()
                .map_or_else(|| "nothing".to_owned(), |v| v.to_string());
            let kind = match (a.critical, a.rollback) {
                (_, true) => " (yanked release: going back)",
                (true, false) => " (critical)",
                _ => "",
            };
            println!(
                "update available: {from} -> {}{kind}, {} to download",
                a.version,
                human_bytes(a.bytes_on_wire)
            );
            if !a.notes.is_empty() {
                // Signed, but still not the publisher's to drive this terminal with.
                let notes: String = a
                    .notes
                    .chars()
                    .map(|c| match c {
                        '\n' | '\t' => c,
                        c if c.is_control() => '\u{fffd}',
                        c => c,
                    })
                    .collect();
                println!("notes:\n{notes}");
            }
        }
        _ => println!("{}", serde_json::to_string(outcome).unwrap_or_default()),
    }
}

pub fn print_status(s: &Status) {
    println!("install   {}", s.install_dir.display());
    match &s.version {
        Some(v) => println!(
            "version   {v} ({} files, {})",
            s.files,
            human_bytes(s.bytes)
        ),
        None => println!("version   (nothing installed)"),
    }
    if let Some(p) = &s.previous_version {
        println!("previous  {p}");
    }
    if let Some(h) = &s.highest_version_seen {
        println!("highest   {h} (trusted)");
    }
    if let Some(c) = &s.channel {
        println!("channel   {c}");
    }
    if let Some(v) = &s.staged_version {
        println!("staged    {v} (run `relsync apply` to install it)");
    }
    if let Some(t) = &s.trial {
        println!(
            "trial     {} on trial, {} starts without a healthy report",
            t.version, t.starts
        );
    }
    for bad in &s.bad_releases {
        println!("bad       {} ({})", bad.version, bad.reason);
    }
    println!(
        "store     {} releases, {} chunk locations, {} fetched chunks pending",
        s.store.releases, s.store.chunk_locations, s.store.journal_chunks
    );
}
