//! `relsync`: install and update a release from a relsync origin.

mod audit;
mod daemon;
mod lan;
mod logs;
mod malloc;
mod metrics;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use relsync_engine::{
    CheckOutcome, Engine, EngineBuilder, HealthCheck, OriginConfig, PublicKey, ReadOnlyInstall,
    TrialConfig, UpdaterConfig,
};

/// The exit codes, as `--help` lists them.
const EXIT_CODES: &str = "\
Exit codes:
  0    success (check: up to date)
  1    error: the message on stderr says what went wrong and what to do
       (verify: the install differs from its signed manifest)
  2    usage error: unknown command or option, missing or bad argument
  100  check: an update is available
  101  check: a release is offered but held back (rollout, channel behind, marked bad)";

/// `relsync check`: an update is available.
const EXIT_UPDATE_AVAILABLE: u8 = 100;
/// `relsync check`: a release is offered but held back.
const EXIT_HELD: u8 = 101;

/// Install, update and roll back releases published with cdn-publisher.
#[derive(Debug, Parser)]
#[command(name = "relsync", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the channel's release into DIR, or update DIR to it, fetching only what is missing.
    Update(UpdateArgs),
    /// Check the channel's signed metadata and say whether there is a release to take (and
    /// why not, when it is held back: rollout, channel behind, marked bad). Changes nothing
    /// but the trusted state. Exits 0 if up to date, 100 if an update is available, 101 if
    /// one is held back.
    #[command(after_help = EXIT_CODES)]
    Check {
        #[command(flatten)]
        source: SourceArgs,
        /// The install directory.
        #[arg(long, value_name = "DIR")]
        install: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show the installed and previous versions and store statistics.
    Status {
        /// The install directory.
        #[arg(long, value_name = "DIR")]
        install: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check the installed release against its signed manifest: every file's hash and mode,
    /// every link, nothing extra. Exits 1, listing each difference, if it is not exact.
    Verify {
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
    /// Share DIR's releases with LAN peers holding the fleet's swarm key (--swarm-key, required)
    /// until stopped; with --origin, also keep DIR updated (from peers first). Prints each
    /// listen address, one per line, as a multiaddr ending in /p2p/PEER_ID: what `--peer`
    /// takes.
    Serve(lan::ServeArgs),
    /// Write a new random swarm key to FILE (mode 0600) for a fleet's LAN sharing: copy it to
    /// every node and give it with --swarm-key (or `swarm_key` in the daemon's [lan] table).
    /// Only nodes holding the same key share with each other.
    SwarmKey {
        /// The key file to create (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Keep an install updated under a policy from a TOML config (install, origin, trust,
    /// and the policy and lan tables; see docs/operations.md) until SIGINT or SIGTERM,
    /// optionally serving Prometheus metrics.
    Daemon(daemon::DaemonArgs),
    /// Check or show DIR's hash-chained audit log (read-only: takes no lock).
    Audit(audit::AuditArgs),
    /// Print a shell completion script for relsync (e.g. `relsync completions bash >
    /// /etc/bash_completion.d/relsync`).
    Completions(relsync_cmdline::manual::CompletionsArgs),
    /// Write relsync's man pages (relsync.1, relsync-update.1, …) into a directory (e.g.
    /// `relsync man --out /usr/local/share/man/man1`).
    Man(relsync_cmdline::manual::ManArgs),
    /// Check the installed release as `verify` does and, if it drifted, build it again as an
    /// update would: re-fetch only what no local file holds, verify, and switch atomically.
    /// Prints what differed and what it fetched.
    Repair {
        #[command(flatten)]
        source: SourceArgs,
        /// The install directory.
        #[arg(long, value_name = "DIR")]
        install: PathBuf,
        /// Print one JSON object: {"problems":[…],"rebuilt":{…} or null}.
        #[arg(long)]
        json: bool,
    },
    /// Clear the bad mark of VERSION (a release that failed its health check here), so that
    /// the next update may install it again; recorded in the audit log.
    Retry {
        /// The release to clear, as `relsync status` lists it under `bad`.
        #[arg(value_name = "VERSION")]
        version: semver::Version,
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
    #[command(flatten)]
    source: SourceArgs,
    /// The install directory; DIR/current is the installed tree.
    #[arg(long, value_name = "DIR")]
    install: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Fetch and verify the release, but stage it instead of switching to it; `relsync
    /// apply` switches later, offline.
    #[arg(long, conflicts_with = "dry_run")]
    download_only: bool,
    /// Print JSON instead of progress and a summary: a progress line
    /// ({"event":"progress",…}) every 10 s while fetching, then one object at the end.
    #[arg(long)]
    json: bool,
    /// After switching, run this shell command (`sh -c CMD`; RELSYNC_INSTALL, RELSYNC_CURRENT
    /// and RELSYNC_VERSION set) as the new release's health check: unless it exits 0 within
    /// --trial-period, the release is rolled back, marked bad here and not taken again until
    /// a newer one appears.
    #[arg(long, value_name = "CMD", conflicts_with_all = ["dry_run", "download_only"])]
    health_check: Option<String>,
    /// How long the health check may take.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "health_check")]
    trial_period: std::time::Duration,
    /// Install into DIR even if it holds files and is not a relsync install yet. relsync
    /// still never deletes or replaces what it did not create (a `current` that is not its
    /// symbolic link is refused, and only the releases it installed are ever removed).
    #[arg(long)]
    adopt: bool,
    #[command(flatten)]
    lan: lan::LanArgs,
}

/// Where releases come from and whom to trust.
#[derive(Debug, Clone, clap::Args)]
struct SourceArgs {
    /// Origin: http(s):// URL, file:// URL or a folder path. Repeat it for mirrors of the
    /// same files, tried in the order given: a request that fails on one moves to the next.
    #[arg(long = "origin", value_name = "URL", required = true)]
    origin: Vec<String>,
    #[command(flatten)]
    options: SourceOptions,
}

/// Everything about the source but the origin.
#[derive(Debug, Clone, clap::Args)]
struct SourceOptions {
    /// Channel to follow [default: stable].
    #[arg(long)]
    channel: Option<String>,
    /// Trusted publisher key, as printed by `cdn-publisher keygen` (repeatable). It may sign
    /// everything, and the origin's root chain (keys/root-N) may take over from it.
    #[arg(long = "trust", value_name = "PUBKEY")]
    trust: Vec<String>,
    /// A pinned root document (keys/root-N as published) to start the root chain from,
    /// instead of --trust keys.
    #[arg(long, value_name = "FILE")]
    trust_root: Option<PathBuf>,
    /// The product to install (as `cdn-publisher push --product` named it); releases of any
    /// other are refused. A fresh install needs it, unless --trust-root pins a root document
    /// (which names its product).
    #[arg(long, env = "RELSYNC_PRODUCT")]
    product: Option<String>,
    /// Also trust the root certificates in this PEM file for HTTPS origins (a private CDN
    /// or mirror with its own CA).
    #[arg(long, value_name = "FILE", env = "RELSYNC_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// This machine's platform: releases bound to another one are refused [default: this
    /// binary's, e.g. x86_64-linux].
    #[arg(long)]
    platform: Option<String>,
    /// Range requests in flight at once [default: 4].
    #[arg(long)]
    parallel: Option<usize>,
    /// Fail a response that averages fewer bytes per second than this after its first 10 s
    /// (0: no minimum) [default: 1024].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    min_rate: Option<u64>,
    /// Give up if checking and fetching take longer than this (e.g. 90s, 30m, 6h; 0: no
    /// limit). Fetched chunks are kept, so the next run resumes [default: 6h].
    #[arg(long, value_parser = humantime::parse_duration)]
    deadline: Option<std::time::Duration>,
}

impl SourceArgs {
    /// The updater config for `install`.
    fn config(&self, install: &std::path::Path) -> Result<UpdaterConfig> {
        self.options.config(&self.origin, install)
    }
}

impl SourceOptions {
    // Defaults are applied here, not by clap: `serve` takes these options only with
    // --origin, which it could not tell apart from defaults.
    fn config(&self, origin: &[String], install: &std::path::Path) -> Result<UpdaterConfig> {
        if self.trust.is_empty() && self.trust_root.is_none() {
            anyhow::bail!("give the publisher's key with --trust, or a root with --trust-root");
        }
        let keys = self
            .trust
            .iter()
            .map(|k| {
                k.parse::<PublicKey>()
                    .with_context(|| format!("--trust {k:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut origin = OriginConfig::from(origin);
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --ca-cert {}", path.display()))?;
            origin
                .add_ca_cert_pem(&pem)
                .with_context(|| format!("--ca-cert {}", path.display()))?;
        }
        let channel = self.channel.as_deref().unwrap_or("stable");
        let mut config = UpdaterConfig::new(origin, channel, keys, install);
        config.product = self.product.clone();
        if let Some(platform) = &self.platform {
            config.platform = platform.clone();
        }
        if let Some(path) = &self.trust_root {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading --trust-root {}", path.display()))?;
            config.trusted_root = Some(bytes);
        }
        config.fetch.max_parallel_requests = self.parallel.unwrap_or(4).max(1);
        config.fetch.min_bytes_per_sec = self.min_rate.unwrap_or(1024);
        let deadline = self
            .deadline
            .unwrap_or(std::time::Duration::from_secs(6 * 3600));
        config.fetch.deadline = (!deadline.is_zero()).then_some(deadline);
        Ok(config)
    }
}

/// An error the command already printed in its `--json` object.
#[derive(Debug)]
struct Printed(String);

impl std::fmt::Display for Printed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Printed {}

fn main() -> ExitCode {
    malloc::return_large_frees_to_the_os();
    relsync_cmdline::exit_quietly_on_a_closed_stdout();
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Update(a) => a.json,
        Command::Serve(a) => a.json,
        Command::Daemon(a) => a.json,
        // Prints its own JSON, failures included.
        Command::Audit(_) => false,
        Command::SwarmKey { .. } | Command::Completions(_) | Command::Man(_) => false,
        Command::Status { json, .. }
        | Command::Check { json, .. }
        | Command::Rollback { json, .. }
        | Command::Retry { json, .. }
        | Command::Repair { json, .. }
        | Command::Verify { json, .. }
        | Command::Apply { json, .. } => *json,
    };
    logs::init(json);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if json && e.downcast_ref::<Printed>().is_none() {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; its exit code is 0 unless it says otherwise (`check`).
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check {
            source,
            install,
            json,
        } => FreshInstall::guard(&install, || check(&source, &install, json)),
        command => run_command(command).map(|()| ExitCode::SUCCESS),
    }
}

fn run_command(command: Command) -> Result<()> {
    match command {
        Command::Update(args) => FreshInstall::guard(&args.install.clone(), || update(args)),
        Command::Serve(args) => lan::serve(args),
        Command::SwarmKey { out } => lan::swarm_key(&out),
        Command::Completions(args) => {
            relsync_cmdline::manual::completions(Cli::command(), &args);
            Ok(())
        }
        Command::Man(args) => relsync_cmdline::manual::man(Cli::command(), &args),
        Command::Daemon(args) => daemon::run(args),
        Command::Audit(args) => audit::run(args),
        // `run` handles it: it has an exit code of its own.
        Command::Check {
            source,
            install,
            json,
        } => check(&source, &install, json).map(drop),
        Command::Status { install, json } => {
            // Read-only: no lock, no write access; works while an update or the daemon runs.
            let status = ReadOnlyInstall::open(&install)?.status()?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                render::print_status(&status);
            }
            Ok(())
        }
        Command::Verify { install, json } => {
            let check = ReadOnlyInstall::open(&install)?.verify()?;
            let differs = (!check.ok()).then(|| {
                format!(
                    "{} differs from release {} in {} place(s); `relsync repair --origin URL \
                     --trust KEY --install {}` rebuilds it",
                    check.dir.display(),
                    check.version,
                    check.problems.len(),
                    install.display()
                )
            });
            if json {
                // One object, with the error in it when there is one.
                let mut object = serde_json::to_value(&check)?;
                if let Some(error) = &differs {
                    object["error"] = error.clone().into();
                }
                println!("{object}");
            } else if check.ok() {
                println!(
                    "OK: {} ({}) matches its signed manifest: {} entries",
                    check.version,
                    check.dir.display(),
                    check.entries
                );
            } else {
                for problem in &check.problems {
                    println!("{problem}");
                }
            }
            match differs {
                Some(error) => Err(Printed(error).into()),
                None => Ok(()),
            }
        }
        Command::Apply { install, json } => {
            let progress = Arc::new(render::Progress::new(render::ProgressMode::of(json)));
            let report = Engine::local(&install)
                .reporter(progress.clone())
                .open_blocking()
                .and_then(|engine| engine.install());
            progress.finish();
            let report = report?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                render::print_report(&report);
            }
            Ok(())
        }
        Command::Repair {
            source,
            install,
            json,
        } => repair(&source, &install, json),
        Command::Retry {
            version,
            install,
            json,
        } => {
            let mark = Engine::local(&install).open_blocking()?.retry(&version)?;
            if json {
                let value = serde_json::json!({ "version": mark.version, "reason": mark.reason });
                println!("{value}");
            } else {
                println!(
                    "cleared the bad mark of {} (it was: {}); the next `relsync update` may \
                     install it again",
                    mark.version, mark.reason
                );
            }
            Ok(())
        }
        Command::Rollback { install, json } => {
            let (from, to) = Engine::local(&install).open_blocking()?.rollback()?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "version": to, "previous_version": from })
                );
            } else if to > from {
                // A second rollback goes forward again, to the newer release kept.
                println!("switched {from} -> {to} (forward: the release kept was the newer one)");
            } else {
                println!("rolled back {from} -> {to}");
            }
            Ok(())
        }
    }
}

/// An install directory with no relsync state yet, before a command that may create it, so
/// that a failed first install leaves nothing behind.
struct FreshInstall {
    dir: PathBuf,
    /// The directory itself did not exist.
    created_dir: bool,
}

impl FreshInstall {
    /// Runs `command` on the install at `dir`; if it fails and `dir` held no relsync state
    /// before, cleans up what it left ([`FreshInstall::clean_up`]).
    fn guard<T>(dir: &std::path::Path, command: impl FnOnce() -> Result<T>) -> Result<T> {
        let fresh = Self::before(dir);
        let result = command();
        if result.is_err()
            && let Some(fresh) = fresh
        {
            fresh.clean_up();
        }
        result
    }

    /// `Some` when `dir` holds no `.relsync` yet.
    fn before(dir: &std::path::Path) -> Option<Self> {
        if dir.join(".relsync").symlink_metadata().is_ok() {
            return None;
        }
        Some(Self {
            dir: dir.to_path_buf(),
            created_dir: dir.symlink_metadata().is_err(),
        })
    }

    /// After the command failed (its engine closed): removes the `.relsync` it created, and
    /// the directory if it created that too, unless a release was installed or chunks were
    /// fetched (those stay, so that the next run resumes).
    fn clean_up(self) {
        let state = self.dir.join(".relsync");
        let installed = ["current", "releases"]
            .iter()
            .any(|name| self.dir.join(name).symlink_metadata().is_ok());
        let fetched =
            std::fs::read_dir(state.join("chunks")).is_ok_and(|mut chunks| chunks.next().is_some());
        let is_dir = state.symlink_metadata().is_ok_and(|m| m.is_dir());
        if installed || fetched || !is_dir {
            if fetched && !installed {
                eprintln!(
                    "note: the chunks fetched so far are kept in {}; the next run resumes",
                    state.display()
                );
            }
            return;
        }
        // Not followed if it were a link: remove_dir_all removes a link itself.
        if let Err(e) = std::fs::remove_dir_all(&state) {
            tracing::warn!(path = %state.display(), error = %e, "could not remove what a failed first install left");
            return;
        }
        if self.created_dir {
            // Only if empty: never anything relsync did not create.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// An engine for `install` with `source`'s settings.
fn engine(source: &SourceArgs, install: &std::path::Path) -> Result<EngineBuilder> {
    Ok(builder(source.config(install)?))
}

/// An engine with `config`'s settings.
fn builder(config: UpdaterConfig) -> EngineBuilder {
    let mut builder = Engine::builder(config.origin, config.trusted_keys, config.install_dir)
        .channel(config.channel)
        .fetch(config.fetch);
    if let Some(product) = config.product {
        builder = builder.product(product);
    }
    if let Some(root) = config.trusted_root {
        builder = builder.trusted_root(root);
    }
    builder.platform(config.platform)
}

fn check(source: &SourceArgs, install: &std::path::Path, json: bool) -> Result<ExitCode> {
    let runtime = runtime()?;
    let engine = {
        let _entered = runtime.enter();
        engine(source, install)?.open()?
    };
    let outcome = runtime.block_on(engine.check())?;
    if json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        render::print_check(&outcome);
    }
    Ok(ExitCode::from(check_exit_code(&outcome)))
}

/// 0 up to date, [`EXIT_UPDATE_AVAILABLE`], or [`EXIT_HELD`].
fn check_exit_code(outcome: &CheckOutcome) -> u8 {
    match outcome {
        CheckOutcome::UpToDate { .. } => 0,
        CheckOutcome::Available(_) => EXIT_UPDATE_AVAILABLE,
        // Held, and any outcome this binary does not know: nothing to take now.
        _ => EXIT_HELD,
    }
}

fn repair(source: &SourceArgs, install: &std::path::Path, json: bool) -> Result<()> {
    let progress = Arc::new(render::Progress::new(render::ProgressMode::of(json)));
    let runtime = runtime()?;
    let engine = {
        let _entered = runtime.enter();
        engine(source, install)?.reporter(progress.clone()).open()?
    };
    let report = runtime.block_on(engine.repair());
    progress.finish();
    let report = report?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let Some(rebuilt) = &report.rebuilt else {
        println!("nothing to repair: the install matches its signed manifest");
        return Ok(());
    };
    println!(
        "repaired {} ({} difference(s) from its signed manifest):",
        rebuilt.version,
        report.problems.len()
    );
    for problem in &report.problems {
        println!("  {problem}");
    }
    render::print_transfer(rebuilt);
    Ok(())
}

fn update(args: UpdateArgs) -> Result<()> {
    // Before anything touches the install.
    args.lan.check()?;
    let progress = Arc::new(render::Progress::new(render::ProgressMode::of(args.json)));
    let mut builder = engine(&args.source, &args.install)?
        .reporter(progress.clone())
        .adopt(args.adopt);
    if let Some(cmd) = &args.health_check {
        builder = builder.trial(TrialConfig::health_check(HealthCheck::shell(
            cmd,
            args.trial_period,
        )));
    }
    let runtime = runtime()?;
    let engine = {
        let _entered = runtime.enter();
        builder.open()?
    };
    // Started before the check, so peers can fetch from this install while it fetches.
    let _node = runtime.block_on(args.lan.attach(&engine, &args.install))?;
    if args.dry_run {
        let plan = runtime.block_on(engine.dry_run());
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
        runtime.block_on(async { engine.download().wait().await })
    } else {
        runtime.block_on(engine.update())
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
