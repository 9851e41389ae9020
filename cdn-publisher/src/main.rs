//! `cdn-publisher`: publish releases to a relsync origin.
#![forbid(unsafe_code)]

mod delta;
mod keygen;
mod origin;
mod pack;
mod push;
mod root;
mod solid;
mod walk;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use relsync_chunker::{ChunkParams, frame};
use semver::Version;

use crate::delta::DeltaParams;
use crate::origin::LocalOrigin;
use crate::push::{PushOptions, PushSummary, push};

/// Publish releases as signed, content-addressed chunk packs to a relsync origin.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an ed25519 signing key (KEY, mode 0600) and its public key (KEY.pub).
    ///
    /// Prints the public key; give that line to clients as `relsync update --trust`.
    Keygen {
        /// Where to write the secret key.
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Publish directory DIR as VERSION on a channel of an origin folder.
    Push(Box<PushArgs>),
    /// Manage the root documents that name the keys of each role (root, release, channel).
    Root {
        #[command(subcommand)]
        command: root::RootCommand,
    },
}

#[derive(Debug, clap::Args)]
struct PushArgs {
    /// The release: a directory (one binary or a whole app).
    dir: PathBuf,
    /// Semantic version of the release.
    #[arg(long)]
    version: Version,
    /// Channel to publish to (e.g. stable, beta).
    #[arg(long)]
    channel: String,
    /// Secret key file from `cdn-publisher keygen` that signs the manifest (and the pointer,
    /// unless --channel-key is given). Repeat for a threshold.
    #[arg(long, value_name = "KEY", required = true)]
    key: Vec<PathBuf>,
    /// Secret key file that signs the channel pointer (the channel role, kept online when the
    /// release key is not). Repeat for a threshold.
    #[arg(long, value_name = "KEY")]
    channel_key: Vec<PathBuf>,
    /// Origin folder (a path or file:// URL) that an HTTP server or CDN serves.
    #[arg(long = "to", value_name = "ORIGIN")]
    to: String,
    /// Product name bound into the signed metadata.
    #[arg(long, default_value = "app")]
    product: String,
    /// Publish even if the channel has an equal or higher version.
    #[arg(long)]
    force: bool,
    /// zstd level for chunk frames (1-22).
    #[arg(long, default_value_t = frame::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    /// Days until clients stop accepting this release for new installs.
    #[arg(long, default_value_t = 365)]
    expires_days: u64,
    /// Largest pack part, in MiB.
    #[arg(long, default_value_t = 64)]
    max_pack_mib: u64,
    /// How many earlier releases of the channel get delta frames (0: none).
    #[arg(long, default_value_t = 1)]
    delta_from: usize,
    /// Window of the earlier release that each delta segment is compressed against, in KiB.
    #[arg(long, default_value_t = 8192)]
    delta_window_kib: u64,
    /// New bytes per delta segment (one window each), in KiB.
    #[arg(long, default_value_t = 2048)]
    delta_segment_kib: u64,
    /// zstd level for delta frames (default: --level).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    delta_level: Option<i32>,
    /// Make zstd delta frames only, no bsdiff frames: faster to publish, larger updates of
    /// recompiled code.
    #[arg(long)]
    no_bsdiff: bool,
    /// How many earlier manifests of the channel the new one is also published as a delta of,
    /// so clients on those releases download a few KiB instead of the whole manifest (max 16).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=16))]
    manifest_deltas: u64,
    /// Uncompressed MiB per solid frame, for fresh installs (0: none; at most 64).
    #[arg(long, default_value_t = 32)]
    solid_mib: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { out } => {
            let public = keygen::keygen(&out)?;
            println!("{public}");
            Ok(())
        }
        Command::Push(args) => run_push(*args),
        Command::Root { command } => root::run(command),
    }
}

fn run_push(args: PushArgs) -> Result<()> {
    let read = |paths: &[PathBuf]| -> Result<Vec<_>> {
        paths.iter().map(|p| keygen::read_secret(p)).collect()
    };
    let release = read(&args.key)?;
    let channel = if args.channel_key.is_empty() {
        read(&args.key)?
    } else {
        read(&args.channel_key)?
    };
    let signers = push::Signers { release, channel };
    let origin = LocalOrigin::open(&args.to)?;
    let opts = PushOptions {
        dir: args.dir,
        version: args.version,
        channel: args.channel,
        product: args.product,
        force: args.force,
        zstd_level: args.level,
        chunking: ChunkParams::default(),
        expires_days: args.expires_days,
        max_pack_bytes: args.max_pack_mib.max(1) << 20,
        delta_from: args.delta_from,
        delta: DeltaParams {
            window_bytes: args.delta_window_kib.max(1) << 10,
            segment_bytes: args.delta_segment_kib.max(1) << 10,
            zstd_level: args.delta_level.unwrap_or(args.level),
            bsdiff: !args.no_bsdiff,
        },
        manifest_deltas: args.manifest_deltas as usize,
        solid_run_bytes: args.solid_mib << 20,
    };
    let bar = if std::io::stderr().is_terminal() && !args.json {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} packing {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .context("progress template")?,
        );
        Some(bar)
    } else {
        None
    };
    let summary = push(&opts, &signers, &origin, &|done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = summary?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

fn print_summary(s: &PushSummary) {
    if s.unchanged {
        println!(
            "{} {} is already published with this content; nothing changed",
            s.channel, s.version
        );
        return;
    }
    println!("published {} to channel {}", s.version, s.channel);
    println!(
        "  files      {} ({} dirs, {} symlinks)",
        s.files, s.dirs, s.symlinks
    );
    println!("  bytes      {}", s.bytes);
    println!("  chunks     {} ({} unique)", s.chunks, s.unique_chunks);
    println!(
        "  packs      {} bytes ({} new), manifest {} bytes",
        s.pack_bytes, s.pack_bytes_written, s.manifest_bytes
    );
    if !s.delta_bases.is_empty() {
        println!(
            "  deltas     {} frames ({} bsdiff), {} bytes, against {}",
            s.delta_frames,
            s.bsdiff_frames,
            s.delta_bytes,
            s.delta_bases.join(", ")
        );
    }
    if s.solid_frames > 0 {
        println!(
            "  solid      {} frames, {} bytes",
            s.solid_frames, s.solid_bytes
        );
    }
    println!("  manifest   {}", s.manifest);
    println!("  took       {:.2} s ({:.1} MB/s)", s.seconds, s.mb_per_s);
}
