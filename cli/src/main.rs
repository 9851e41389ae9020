//! `relsync`: install and update a release from a relsync origin.

mod malloc;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use relsync_engine::{PublicKey, Updater, UpdaterConfig};

/// Install, update and roll back releases published with cdn-publisher.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the channel's release into DIR, or update DIR to it, fetching only what is missing.
    Update(UpdateArgs),
    /// Show the installed and previous versions and store statistics.
    Status {
        /// The install directory.
        #[arg(long, value_name = "DIR")]
        install: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Apply the release `update --download-only` staged, without the network (its
    /// metadata was verified when it was downloaded, so it may have expired since).
    Apply {
        /// The install directory.
        #[arg(long, value_name = "DIR")]
        install: PathBuf,
        /// Print one JSON object at the end instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Switch DIR/current back to the previous release, atomically.
    Rollback {
        /// The install directory.
        #[arg(long, value_name = "DIR")]
        install: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct UpdateArgs {
    /// Origin: http(s):// URL, file:// URL or a folder path.
    #[arg(long, value_name = "URL")]
    origin: String,
    /// Channel to follow.
    #[arg(long, default_value = "stable")]
    channel: String,
    /// Trusted publisher key, as printed by `cdn-publisher keygen` (repeatable). It may sign
    /// everything, and the origin's root chain (keys/root-N) may take over from it.
    #[arg(
        long = "trust",
        value_name = "PUBKEY",
        required_unless_present = "trust_root"
    )]
    trust: Vec<String>,
    /// A pinned root document (keys/root-N as published) to start the root chain from,
    /// instead of --trust keys.
    #[arg(long, value_name = "FILE")]
    trust_root: Option<PathBuf>,
    /// Refuse releases of any other product.
    #[arg(long)]
    product: Option<String>,
    /// This machine's platform: releases bound to another one are refused.
    #[arg(long, default_value_t = relsync_engine::this_platform())]
    platform: String,
    /// The install directory; DIR/current is the installed tree.
    #[arg(long, value_name = "DIR")]
    install: PathBuf,
    /// Range requests in flight at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Fail a response that averages fewer bytes per second than this after its first 10 s
    /// (0: no minimum).
    #[arg(long, default_value_t = 1024, value_name = "BYTES_PER_SEC")]
    min_rate: u64,
    /// Give up if checking and fetching take longer than this (e.g. 90s, 30m, 6h; 0: no
    /// limit). Fetched chunks are kept, so the next run resumes.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    deadline: std::time::Duration,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Fetch and verify the release, but stage it instead of switching to it; `relsync
    /// apply` switches later, offline.
    #[arg(long, conflicts_with = "dry_run")]
    download_only: bool,
    /// Print one JSON object at the end instead of progress and a summary.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    malloc::return_large_frees_to_the_os();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Update(a) => a.json,
        Command::Status { json, .. }
        | Command::Rollback { json, .. }
        | Command::Apply { json, .. } => *json,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Update(args) => update(args),
        Command::Status { install, json } => {
            let status = relsync_engine::status(&install)?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                render::print_status(&status);
            }
            Ok(())
        }
        Command::Apply { install, json } => {
            let progress = Arc::new(render::Progress::new(!json));
            let report = relsync_engine::apply_staged(&install, progress.clone());
            progress.finish();
            let report = report?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                render::print_report(&report);
            }
            Ok(())
        }
        Command::Rollback { install, json } => {
            let (from, to) = relsync_engine::rollback(&install)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "version": to, "previous_version": from })
                );
            } else {
                println!("rolled back {} -> {}", from, to);
            }
            Ok(())
        }
    }
}

fn update(args: UpdateArgs) -> Result<()> {
    let keys = args
        .trust
        .iter()
        .map(|k| {
            k.parse::<PublicKey>()
                .with_context(|| format!("--trust {k:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut config = UpdaterConfig::new(&args.origin, &args.channel, keys, &args.install);
    config.product = args.product;
    config.platform = args.platform;
    if let Some(path) = &args.trust_root {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading --trust-root {}", path.display()))?;
        config.trusted_root = Some(bytes);
    }
    config.fetch.max_parallel_requests = args.parallel.max(1);
    config.fetch.min_bytes_per_sec = args.min_rate;
    config.fetch.deadline = (!args.deadline.is_zero()).then_some(args.deadline);
    let progress = Arc::new(render::Progress::new(!args.json));
    let updater = Updater::open(config)?.with_reporter(progress.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if args.dry_run {
        let plan = runtime.block_on(updater.dry_run());
        progress.finish();
        let plan = plan?;
        if args.json {
            println!("{}", serde_json::to_string(&plan)?);
        } else {
            render::print_plan(&plan);
        }
        return Ok(());
    }
    let report = if args.download_only {
        runtime.block_on(updater.download())
    } else {
        runtime.block_on(updater.update())
    };
    progress.finish();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        render::print_report(&report);
    }
    Ok(())
}
