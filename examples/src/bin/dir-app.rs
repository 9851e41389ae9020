//! `dir-app`: a directory app (several files) kept updated with relsync's async API.
//!
//! Each start: record the start (a release that keeps failing before it reports healthy is
//! rolled back), self-test and confirm the release if it is on trial, then check, download
//! in the background while printing progress, install, and ask for a restart.
//!
//! ```text
//! start ─▶ record_start ─▶ (on trial: self-test ─▶ confirm_healthy) ─▶ check
//!       ─▶ download (background; Event::Fetched) ─▶ install ─▶ RestartRequired
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use relsync_engine::{CheckOutcome, Engine, Event, PublicKey, StartOutcome, TrialConfig};

/// A directory app that updates itself with relsync.
#[derive(Debug, Parser)]
struct Cli {
    /// Where releases are published (`http(s)://…`, `file://…` or a folder).
    #[arg(long)]
    origin: String,
    /// A public key releases may be signed with (`ed25519:…`; repeatable).
    #[arg(long, required = true)]
    trust: Vec<PublicKey>,
    /// The product to install, as the publisher named it (`cdn-publisher push --product`);
    /// releases of any other product are refused.
    #[arg(long)]
    product: String,
    /// The channel to follow.
    #[arg(long, default_value = "stable")]
    channel: String,
    /// The app's install: `DIR/current` is the release running.
    #[arg(long, value_name = "DIR")]
    install: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    match try_main(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn try_main(cli: Cli) -> Result<()> {
    let engine = Engine::builder(cli.origin, cli.trust, &cli.install)
        .channel(cli.channel)
        .product(cli.product)
        // A new release stays on trial until it confirms it is healthy; three starts
        // without that count as a crash loop, and the fourth rolls it back.
        .trial(TrialConfig::app(3))
        .open()
        .with_context(|| format!("opening {}", cli.install.display()))?;

    match engine.record_start().await? {
        StartOutcome::RolledBack { from, to: Some(to) } => {
            println!("{from} kept failing: rolled back to {to}; restart to run it");
            return Ok(());
        }
        StartOutcome::RolledBack { from, to: None } => {
            println!("{from} kept failing, and there is no earlier release to go back to");
            return Ok(());
        }
        StartOutcome::OnTrial { starts } => {
            // Only the new release's own code can vouch for it, so it confirms at its first
            // start, not right after the install (when the old code is still running).
            if let Err(e) = self_test(&cli.install.join("current")) {
                match engine.report_unhealthy(&format!("{e:#}")).await? {
                    Some(to) => println!("self-test failed ({e:#}): rolled back to {to}"),
                    None => println!("self-test failed ({e:#})"),
                }
                return Ok(());
            }
            engine.confirm_healthy().await?;
            println!("start {starts} on trial: self-test passed, release kept");
        }
        StartOutcome::Committed => {}
        other => println!("start: {other:?}"),
    }
    let running = engine.status().await?.version;
    println!(
        "running {}",
        running.map_or("nothing yet".into(), |v| v.to_string())
    );

    let offer = match engine.check().await.context("checking for an update")? {
        CheckOutcome::Available(offer) => offer,
        CheckOutcome::UpToDate { version } => {
            println!("{version} is current");
            return Ok(());
        }
        CheckOutcome::Held { offered, hold } => {
            println!("not taking {offered}: {hold}");
            return Ok(());
        }
        other => {
            println!("{other:?}");
            return Ok(());
        }
    };
    println!(
        "UpdateAvailable {{ version: {}, bytes_on_wire: {}, critical: {}, notes: {:?} }}",
        offer.version, offer.bytes_on_wire, offer.critical, offer.notes
    );

    // Subscribe before starting, so no event is missed. A real app would go on with its
    // work meanwhile; this one only shows the progress.
    let mut events = engine.events();
    let download = engine.download().wait();
    tokio::pin!(download);
    let downloaded = loop {
        tokio::select! {
            // Events first: all of the download's are queued by the time it is done.
            biased;
            Ok(event) = events.recv() => show(event),
            done = &mut download => break done.context("downloading")?,
        }
    };
    println!(
        "downloaded {}: {} bytes from the origin, {} from peers (metadata included)",
        downloaded.version, downloaded.bytes_from_origin, downloaded.bytes_from_peers
    );

    engine.install().await.context("installing")?;
    while let Ok(event) = events.try_recv() {
        show(event);
    }
    Ok(())
}

fn show(event: Event) {
    match event {
        Event::Fetched {
            bytes,
            total,
            from_peers,
        } => println!(
            "fetched {bytes}/{total} bytes: {from_peers} from peers, {} from the origin",
            bytes - from_peers
        ),
        Event::RestartRequired { version } => println!("RestartRequired: restart to run {version}"),
        _ => {}
    }
}

/// A stand-in for a real self-test: every file of the release reads back.
fn self_test(release: &Path) -> Result<()> {
    let mut files = 0;
    let mut dirs = vec![release.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                files += 1;
            }
        }
    }
    ensure!(files > 0, "{} holds no files", release.display());
    Ok(())
}
