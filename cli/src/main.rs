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
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
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
        Command::Status { json, .. } | Command::Rollback { json, .. } => *json,
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
    if let Some(path) = &args.trust_root {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading --trust-root {}", path.display()))?;
        config.trusted_root = Some(bytes);
    }
    config.fetch.max_parallel_requests = args.parallel.max(1);
    config.fetch.min_bytes_per_sec = args.min_rate;
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
    let report = runtime.block_on(updater.update());
    progress.finish();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        render::print_report(&report);
    }
    Ok(())
}
