//! `cdn-publisher`: publish releases to a relsync origin.
#![forbid(unsafe_code)]

mod delta;
#[cfg(test)]
mod fixture;
mod keygen;
mod lifecycle;
mod operate;
mod origin;
mod pack;
mod publish;
mod push;
mod root;
mod sign;
mod solid;
mod target;
mod walk;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use relsync_chunker::{ChunkParams, frame};
use semver::Version;

use crate::delta::DeltaParams;
use crate::lifecycle::Change;
use crate::origin::Origin;
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
    /// Publish directory DIR as VERSION on a channel of an origin (a folder or a bucket).
    Push(Box<PushArgs>),
    /// Manage the root documents that name the keys of each role (root, release, channel).
    Root {
        #[command(subcommand)]
        command: root::RootCommand,
    },
    /// Add a signature to a signed document file (a manifest from `push --unsigned-out`, a
    /// pointer from `--unsigned-pointer-out`, a rollback directive from `yank
    /// --unsigned-directive-out`, or a root): with a secret key, or a detached signature made
    /// elsewhere (HSM, cloud KMS) over the message `show` prints.
    Sign(sign::SignArgs),
    /// Print a signed document file: what it says, who signed it, and the message to sign.
    Show {
        /// The document.
        file: PathBuf,
    },
    /// Publish a manifest signed elsewhere (see `push --unsigned-out`), then the channel
    /// pointer naming it.
    Publish(PublishArgs),
    /// Publish or re-sign a channel pointer.
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Change the share of installs a channel's release is offered to (a staged rollout):
    /// re-signs the channel pointer with the new percentage and fresh issue and expiry times.
    ///
    /// Raise it step by step (5, 25, 100); lower it, down to 0, to halt a rollout. Installs
    /// that already took the release keep it. Critical releases reach every install anyway.
    Promote(PromoteArgs),
    /// Withdraw a version from a channel: re-signs the channel pointer with the version added
    /// to its yanked list.
    ///
    /// If the channel offers that version, it moves back to the newest earlier release of the
    /// channel that is not yanked, offered to every install. Installs running a yanked version
    /// download nothing new of it and keep running it; with --roll-back, and a rollback
    /// directive the release role signs, they go back to the channel's release.
    Yank(YankArgs),
    /// List an origin: its channels (version offered, rollout, yanked versions, expiry), its
    /// releases (size, packs, which channels offer them) and the bytes of each kind of object.
    Ls(operate::LsArgs),
    /// Delete the releases no channel keeps, and the manifests, deltas and packs only they
    /// need. A dry run unless --delete.
    ///
    /// Each channel keeps the release its pointer names and the --keep releases before it
    /// along its history. Channel pointers and root documents are never deleted. It refuses to
    /// delete anything if a pointer or a kept manifest does not verify.
    Gc(operate::GcArgs),
    /// Check every object of an origin: packs and manifests hash to their names, manifests
    /// and pointers verify, deltas decode to their targets, and everything named exists.
    ///
    /// Prints each problem with the object's path; exits 1 if there is any.
    Verify(operate::VerifyArgs),
}

/// The channel a pointer change applies to.
#[derive(Debug, clap::Args)]
struct ChannelAt {
    /// The origin: a folder (a path or file:// URL) or a bucket (s3://, gs://, az://).
    #[arg(long, visible_alias = "to", value_name = "ORIGIN")]
    origin: String,
    /// The channel.
    #[arg(long)]
    channel: String,
}

#[derive(Debug, clap::Args)]
struct PromoteArgs {
    #[command(flatten)]
    at: ChannelAt,
    /// The version the channel offers now; refused if it offers another, so a rollout meant
    /// for one release never applies to the next.
    #[arg(long)]
    version: Version,
    /// Share of installs offered the release, 0 to 100 (100: everyone, 0: halted).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    percent: u8,
    #[command(flatten)]
    pointer: PointerSigning,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct YankArgs {
    #[command(flatten)]
    at: ChannelAt,
    /// The version to withdraw: the channel's current release or an earlier one. Yanking it
    /// again changes only the rollback directive (with --roll-back).
    #[arg(long)]
    version: Version,
    /// Installs running the version go back to the channel's release (without it, they keep
    /// running it). That takes them below a version they trusted, so the channel key alone
    /// cannot do it: a rollback directive signed by the release role must come with the
    /// pointer (--key, or --unsigned-directive-out then --directive).
    #[arg(long)]
    roll_back: bool,
    /// Release key file that signs the rollback directive. Repeat for a threshold.
    #[arg(long, value_name = "KEY", requires = "roll_back")]
    key: Vec<PathBuf>,
    /// Write the rollback directive unsigned to FILE and stop, changing nothing on the origin:
    /// sign it elsewhere (`cdn-publisher show FILE` prints the message, `cdn-publisher sign
    /// FILE` attaches the signature), then run this yank again with --directive FILE.
    #[arg(
        long,
        value_name = "FILE",
        requires = "roll_back",
        conflicts_with_all = ["key", "directive"]
    )]
    unsigned_directive_out: Option<PathBuf>,
    /// The rollback directive from --unsigned-directive-out, signed by the release role.
    #[arg(
        long,
        value_name = "FILE",
        requires = "roll_back",
        conflicts_with = "key"
    )]
    directive: Option<PathBuf>,
    #[command(flatten)]
    pointer: PointerSigning,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// How a channel pointer gets signed: with local channel keys, or written unsigned for a
/// signer elsewhere.
#[derive(Debug, clap::Args)]
struct PointerSigning {
    /// Secret key file that signs the channel pointer. Repeat for a threshold. Needed unless
    /// --unsigned-pointer-out is given.
    #[arg(long, value_name = "KEY")]
    channel_key: Vec<PathBuf>,
    /// Write the pointer unsigned to FILE instead, to be signed (`cdn-publisher sign`) and
    /// then published with `cdn-publisher channel set`.
    #[arg(long, value_name = "FILE", conflicts_with = "channel_key")]
    unsigned_pointer_out: Option<PathBuf>,
    /// Days until clients stop trusting the pointer; re-sign it before then with
    /// `cdn-publisher channel refresh` (a short life limits how long a withheld update can
    /// go unnoticed).
    #[arg(long, default_value_t = DEFAULT_POINTER_DAYS)]
    pointer_days: u64,
}

#[derive(Debug, clap::Args)]
struct PublishArgs {
    /// The signed manifest file.
    file: PathBuf,
    /// The origin whose packs the manifest names: a folder (a path or file:// URL) or a
    /// bucket (s3://, gs://, az://).
    #[arg(long = "to", value_name = "ORIGIN")]
    to: String,
    #[command(flatten)]
    pointer: PointerSigning,
    /// How many earlier manifests of the channel the new one is also published as a delta of.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=16))]
    manifest_deltas: u64,
    /// Share of installs offered the release at first, 0 to 100; raise it later with
    /// `cdn-publisher promote`.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
    rollout_percent: u8,
    /// Move the channel even to a lower version, or to other content for an equal one.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// Publish a signed channel pointer file (from `--unsigned-pointer-out`, then signed).
    Set {
        /// The signed pointer file.
        file: PathBuf,
        /// The origin: a folder (a path or file:// URL) or a bucket (s3://, gs://, az://).
        #[arg(long = "to", value_name = "ORIGIN")]
        to: String,
        /// Move the channel even to a lower version, or to other content for an equal one.
        #[arg(long)]
        force: bool,
    },
    /// Re-sign the channel's current pointer with a new issue time and expiry (run it from
    /// cron well within --pointer-days): clients refuse an expired pointer as stale.
    Refresh {
        /// The channel.
        #[arg(long)]
        channel: String,
        /// The origin: a folder (a path or file:// URL) or a bucket (s3://, gs://, az://).
        #[arg(long = "to", value_name = "ORIGIN")]
        to: String,
        #[command(flatten)]
        pointer: PointerSigning,
    },
}

impl PointerSigning {
    /// Refuses to start when nothing would sign the pointer (checked before anything is
    /// written, as clap cannot say it for every command that flattens these arguments).
    fn require(&self) -> Result<()> {
        if self.channel_key.is_empty() && self.unsigned_pointer_out.is_none() {
            bail!(
                "nothing signs the channel pointer: give --channel-key KEY (the channel role's \
                 key; repeat for a threshold), or --unsigned-pointer-out FILE to sign it \
                 elsewhere"
            );
        }
        Ok(())
    }
}

/// Default life of a channel pointer.
const DEFAULT_POINTER_DAYS: u64 = 7;

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
    #[arg(long, value_name = "KEY", required_unless_present = "unsigned_out")]
    key: Vec<PathBuf>,
    /// Write the packs, but the manifest unsigned to FILE instead of publishing it: sign it
    /// elsewhere (`cdn-publisher show FILE` prints the message), attach the signature with
    /// `cdn-publisher sign`, then publish with `cdn-publisher publish`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key", "channel_key"])]
    unsigned_out: Option<PathBuf>,
    /// Days until clients stop trusting the channel pointer (see `channel refresh`).
    #[arg(long, default_value_t = DEFAULT_POINTER_DAYS)]
    pointer_days: u64,
    /// Secret key file that signs the channel pointer (the channel role, kept online when the
    /// release key is not). Repeat for a threshold.
    #[arg(long, value_name = "KEY")]
    channel_key: Vec<PathBuf>,
    /// The origin an HTTP server or CDN serves: a folder (a path or file:// URL), or a bucket
    /// `s3://BUCKET/PREFIX` (any S3-compatible store), `gs://BUCKET/PREFIX` or
    /// `az://CONTAINER/PREFIX`, with credentials and settings from the standard environment
    /// variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL,
    /// AWS_ALLOW_HTTP; GOOGLE_APPLICATION_CREDENTIALS; AZURE_STORAGE_ACCOUNT_NAME,
    /// AZURE_STORAGE_ACCOUNT_KEY). Objects already in a bucket are not uploaded again.
    #[arg(long = "to", value_name = "ORIGIN")]
    to: String,
    /// Packs uploading to a bucket at once, while packing goes on.
    #[arg(long, default_value_t = origin::DEFAULT_UPLOADS as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
    uploads: u64,
    /// Product name bound into the signed metadata.
    #[arg(long, default_value = "app")]
    product: String,
    /// Bind the release to one platform (e.g. x86_64-linux, as `relsync update --help`
    /// shows for each client): clients of any other platform refuse it.
    #[arg(long)]
    platform: Option<String>,
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
    /// Mark the release critical (a security fix): clients take it at once, bypassing
    /// maintenance windows and the staged rollout.
    #[arg(long)]
    critical: bool,
    /// Release notes, signed into the manifest (UTF-8, at most 16 KiB).
    #[arg(long, value_name = "TEXT", conflicts_with = "notes_file")]
    notes: Option<String>,
    /// Read the release notes from PATH (UTF-8, at most 16 KiB).
    #[arg(long, value_name = "PATH")]
    notes_file: Option<PathBuf>,
    /// Share of installs offered the release at first, 0 to 100 (100: everyone); raise it
    /// later with `cdn-publisher promote`. Critical releases reach every install anyway.
    /// (With --unsigned-out, give it to `cdn-publisher publish` instead.)
    #[arg(
        long,
        default_value_t = 100,
        value_parser = clap::value_parser!(u8).range(0..=100),
        conflicts_with = "unsigned_out"
    )]
    rollout_percent: u8,
    /// Publish even if the release holds no files (refused by default: an empty release
    /// replaces every install's files with nothing, usually by mistake).
    #[arg(long)]
    allow_empty: bool,
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
        Command::Sign(args) => sign::sign(&args),
        Command::Show { file } => sign::show(&file),
        Command::Publish(args) => {
            args.pointer.require()?;
            let origin = Origin::open(&args.to)?;
            let envelope = sign::read(&args.file)?;
            let published =
                publish::put_manifest(&origin, &envelope, args.manifest_deltas as usize)?;
            println!("published manifest {}", published.id);
            let pointer = publish::pointer_for(
                &origin,
                &published,
                args.pointer.pointer_days,
                args.rollout_percent,
            )?;
            set_pointer(&origin, &pointer, &args.pointer, args.force)
        }
        Command::Channel {
            command: ChannelCommand::Set { file, to, force },
        } => {
            let origin = Origin::open(&to)?;
            let pointer = publish::put_pointer(&origin, &sign::read(&file)?, force)?;
            println!("channel {} now offers {}", pointer.channel, pointer.version);
            Ok(())
        }
        Command::Channel {
            command:
                ChannelCommand::Refresh {
                    channel,
                    to,
                    pointer,
                },
        } => {
            pointer.require()?;
            let origin = Origin::open(&to)?;
            let refreshed = publish::refreshed(&origin, &channel, pointer.pointer_days)?;
            set_pointer(&origin, &refreshed, &pointer, false)
        }
        Command::Promote(args) => {
            args.pointer.require()?;
            let origin = Origin::open(&args.at.origin)?;
            let change = lifecycle::promote(
                &origin,
                &args.at.channel,
                &args.version,
                args.percent,
                args.pointer.pointer_days,
            )?;
            finish_change(&origin, &change, &args.pointer, false, args.json)
        }
        Command::Yank(args) => run_yank(&args),
        Command::Ls(args) => operate::run_ls(&args),
        Command::Gc(args) => operate::run_gc(&args),
        Command::Verify(args) => operate::run_verify(&args),
    }
}

/// `yank`: the pointer re-issued, with a rollback directive the release role signed when
/// installs are to go back.
fn run_yank(args: &YankArgs) -> Result<()> {
    if args.roll_back
        && args.key.is_empty()
        && args.directive.is_none()
        && args.unsigned_directive_out.is_none()
    {
        bail!(
            "--roll-back takes installs below a version they trusted, which needs the release \
             role, not the channel key alone: sign the rollback directive with the release key \
             (--key RELEASE_KEY, repeated for a threshold), or write it unsigned with \
             --unsigned-directive-out FILE, sign it elsewhere (`cdn-publisher show FILE`, \
             `cdn-publisher sign FILE`) and give it with --directive FILE"
        );
    }
    if args.unsigned_directive_out.is_none() {
        args.pointer.require()?;
    }
    let origin = Origin::open(&args.at.origin)?;
    let mut change = lifecycle::yank(
        &origin,
        &args.at.channel,
        &args.version,
        args.roll_back,
        args.pointer.pointer_days,
    )?;
    if let Some(directive) = &change.directive {
        let sealed = if let Some(out) = &args.unsigned_directive_out {
            sign::write_file(out, &directive.seal(&[])?)?;
            let summary = lifecycle::RollbackSummary::from_directive(directive);
            if args.json {
                let json = serde_json::json!({
                    "unsigned_directive": out.display().to_string(),
                    "rollback": summary,
                });
                println!("{json}");
            } else {
                println!(
                    "wrote the unsigned rollback directive (installs on {} go back to {}) to {}; \
                     nothing on the origin changed",
                    summary.from.join(", "),
                    summary.to,
                    out.display()
                );
                println!(
                    "  next       sign it with the release role (`cdn-publisher show {0}` prints \
                     the message; `cdn-publisher sign {0}` attaches signatures), then run this \
                     yank again with --directive {0}",
                    out.display()
                );
            }
            return Ok(());
        } else if let Some(file) = &args.directive {
            let bytes = sign::read(file)?;
            let given = relsync_format::dangerous::directive(&bytes)
                .with_context(|| format!("reading {}", file.display()))?;
            if !given.covers(&args.version) {
                bail!(
                    "the rollback directive in {} takes installs of {} back, not {}: it was \
                     made for another yank; make a new one with --unsigned-directive-out",
                    file.display(),
                    versions_text(&given.from),
                    args.version
                );
            }
            bytes
        } else {
            let keys = read_secrets(&args.key)?;
            directive.seal(&keys.iter().collect::<Vec<_>>())?
        };
        change.pointer.rollback = Some(sealed);
        publish::check_directive(&origin, &change.pointer).with_context(|| {
            format!(
                "refusing to publish the yank of {}: installs go back only on a directive the \
                 release role signed for the channel's new pointer",
                args.version
            )
        })?;
    }
    // Moving the channel back to an earlier release is the point of the yank.
    let force = change.moved_from.is_some();
    finish_change(&origin, &change, &args.pointer, force, args.json)
}

fn versions_text(versions: &[Version]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a pointer went: published, or written unsigned to a file.
enum PointerOut {
    Published(Box<relsync_format::manifest::Pointer>),
    Unsigned(PathBuf),
}

/// Signs `pointer` and publishes it, or writes it unsigned for a signer elsewhere.
fn write_pointer(
    origin: &Origin,
    pointer: &relsync_format::manifest::Pointer,
    signing: &PointerSigning,
    force: bool,
) -> Result<PointerOut> {
    if let Some(out) = &signing.unsigned_pointer_out {
        pointer.validate()?;
        sign::write_file(out, &pointer.seal(&[])?)?;
        return Ok(PointerOut::Unsigned(out.clone()));
    }
    let keys = read_secrets(&signing.channel_key)?;
    let sealed = pointer.seal(&keys.iter().collect::<Vec<_>>())?;
    Ok(PointerOut::Published(Box::new(publish::put_pointer(
        origin, &sealed, force,
    )?)))
}

/// [`write_pointer`], saying what happened.
fn set_pointer(
    origin: &Origin,
    pointer: &relsync_format::manifest::Pointer,
    signing: &PointerSigning,
    force: bool,
) -> Result<()> {
    match write_pointer(origin, pointer, signing, force)? {
        PointerOut::Unsigned(out) => println!(
            "wrote the unsigned pointer to {}; sign it, then `cdn-publisher channel set{}`",
            out.display(),
            if force { " --force" } else { "" }
        ),
        PointerOut::Published(pointer) => println!(
            "channel {} now offers {} until unix {}",
            pointer.channel, pointer.version, pointer.expires_unix
        ),
    }
    Ok(())
}

/// Writes the pointer of a `promote` or `yank` and prints what changed.
fn finish_change(
    origin: &Origin,
    change: &Change,
    signing: &PointerSigning,
    force: bool,
    json: bool,
) -> Result<()> {
    let unsigned = match write_pointer(origin, &change.pointer, signing, force)? {
        PointerOut::Unsigned(out) => Some(out.display().to_string()),
        PointerOut::Published(_) => None,
    };
    if json {
        println!("{}", serde_json::to_string(&change.summary(unsigned))?);
        return Ok(());
    }
    let p = &change.pointer;
    match (&change.yanked_now, &change.moved_from) {
        (None, _) => println!(
            "channel {}: {} offered to {}% of installs (was {}%)",
            p.channel, p.version, p.rollout_percent, change.previous_percent
        ),
        (Some(v), _) if change.already_yanked => {
            println!("channel {}: {v} was yanked already", p.channel);
        }
        (Some(v), None) => println!("channel {}: yanked {v}", p.channel),
        (Some(v), Some(from)) => println!(
            "channel {}: yanked {v}; it offers {} again instead of {from}, to every install",
            p.channel, p.version
        ),
    }
    if change.yanked_now.is_some() {
        println!(
            "  yanked     {}",
            p.yanked
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        match lifecycle::RollbackSummary::of(p) {
            Some(r) => println!(
                "  installs   on {} roll back to {} (directive signed by the release role)",
                r.from.join(", "),
                r.to
            ),
            None => {
                println!(
                    "  installs   on a yanked version keep it, and download nothing new of it"
                );
            }
        }
    }
    for warning in &change.warnings {
        println!("  warning    {warning}");
    }
    match unsigned {
        Some(out) => println!(
            "  pointer    unsigned, in {out}; sign it, then `cdn-publisher channel set{}`",
            if force { " --force" } else { "" }
        ),
        None => println!(
            "  pointer    signed; channel {} offers {} until unix {}",
            p.channel, p.version, p.expires_unix
        ),
    }
    Ok(())
}

fn read_secrets(paths: &[PathBuf]) -> Result<Vec<relsync_format::SecretKey>> {
    paths.iter().map(|p| keygen::read_secret(p)).collect()
}

fn run_push(args: PushArgs) -> Result<()> {
    let release = read_secrets(&args.key)?;
    let channel = if args.channel_key.is_empty() {
        read_secrets(&args.key)?
    } else {
        read_secrets(&args.channel_key)?
    };
    let signers = push::Signers { release, channel };
    let notes = match (args.notes, &args.notes_file) {
        (Some(text), _) => text,
        (None, Some(path)) => push::read_notes_file(path)?,
        (None, None) => String::new(),
    };
    let origin = Origin::open(&args.to)?.with_max_uploads(args.uploads as usize);
    let opts = PushOptions {
        dir: args.dir,
        version: args.version,
        channel: args.channel,
        product: args.product,
        platform: args.platform,
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
        pointer_days: args.pointer_days,
        unsigned_out: args.unsigned_out,
        critical: args.critical,
        notes,
        rollout_percent: args.rollout_percent,
        allow_empty: args.allow_empty,
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
    let done = if s.unsigned.is_some() {
        "packed"
    } else {
        "published"
    };
    println!("{done} {} for channel {}", s.version, s.channel);
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
    if s.critical {
        println!("  critical   yes: clients skip maintenance windows and the staged rollout");
    }
    if s.notes_bytes > 0 {
        println!("  notes      {} bytes", s.notes_bytes);
    }
    if s.rollout_percent < 100 {
        println!(
            "  rollout    {}% of installs (raise it with `cdn-publisher promote`)",
            s.rollout_percent
        );
    }
    if !s.yanked.is_empty() {
        println!("  yanked     {} (kept)", s.yanked.join(", "));
    }
    match &s.unsigned {
        Some(file) => {
            println!("  manifest   unsigned, in {file}");
            println!(
                "  next       sign it (`cdn-publisher show {file}` prints the message; \
                 `cdn-publisher sign {file}` attaches signatures), then \
                 `cdn-publisher publish {file}`"
            );
        }
        None => println!("  manifest   {}", s.manifest),
    }
    println!(
        "  origin     {} objects written ({} already there), {} bytes in {:.2} s ({:.1} MB/s)",
        s.objects_written, s.objects_present, s.bytes_uploaded, s.upload_seconds, s.upload_mb_per_s
    );
    println!("  took       {:.2} s ({:.1} MB/s)", s.seconds, s.mb_per_s);
}
