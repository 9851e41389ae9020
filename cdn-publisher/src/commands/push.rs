//! `cdn-publisher push`: build a release into packs on the origin ([`crate::build`]), then sign
//! and publish its manifest and the channel pointer naming it.
//!
//! The write order keeps the origin consistent for readers at every moment: all packs (the
//! uploads to a bucket overlap the packing, and all must succeed), then the manifest and its
//! deltas, then the channel pointer.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use relsync_chunker::{ChunkParams, frame};
use relsync_format::manifest::{FORMAT_VERSION, Manifest, Pointer, limits};
use relsync_format::paths::valid_channel;
use relsync_format::{ManifestId, SecretKey};
use semver::Version;
use serde::Serialize;

use super::pointer::DEFAULT_POINTER_DAYS;
use super::{read_secrets, write_file};
use crate::build::{self, BuildOptions, Built, DeltaParams};
use crate::origin::{self, Origin, WriteStats};
use crate::publish::{
    current_pointer, expiry, pointer_for, put_manifest, put_pointer, refuse_yanked, unix_now,
};

#[derive(Debug, clap::Args)]
pub struct PushArgs {
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
    #[arg(long, default_value_t = DEFAULT_POINTER_DAYS, value_parser = super::pointer::parse_pointer_days)]
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
    #[arg(long = "origin", visible_alias = "to", value_name = "ORIGIN")]
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
    /// How many earlier releases of the channel get delta frames (0: none). The default, 4,
    /// gives a client up to four releases behind a delta from its own release.
    #[arg(long, default_value_t = 4)]
    delta_from: usize,
    /// Window of the earlier release that each delta segment is compressed against, in KiB.
    #[arg(long, default_value_t = 8192)]
    delta_window_kib: u64,
    /// New bytes per delta segment (one window each), in KiB.
    #[arg(long, default_value_t = 4096)]
    delta_segment_kib: u64,
    /// zstd level for delta frames (default: --level).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
    delta_level: Option<i32>,
    /// How many of the nearest earlier releases get delta frames at --delta-level with exact
    /// bsdiff matches; older ones get at most level 12 and matches from hashed seeds (a
    /// fifth of the time per base, a little more to download for clients that far behind).
    #[arg(long, default_value_t = 1)]
    delta_full_bases: usize,
    /// Make zstd delta frames only, no bsdiff frames: faster to publish, larger updates of
    /// recompiled code.
    #[arg(long)]
    no_bsdiff: bool,
    /// Make bsdiff frames of x86-64 ELF executables without projecting their references
    /// (calls, branches, RIP-relative operands, unwind tables): faster to publish, larger
    /// updates of recompiled executables.
    #[arg(long)]
    no_refs: bool,
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
    /// Compress every frame again, even those the parent release has (plain frames of unchanged
    /// chunks, solid frames of unchanged runs), which are otherwise copied from its packs: for
    /// a release pushed with other --level or --solid-mib than its parent.
    #[arg(long)]
    recompress: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// What to publish and how.
#[derive(Debug)]
pub struct PushOptions {
    pub dir: PathBuf,
    pub version: Version,
    pub channel: String,
    pub product: String,
    pub platform: Option<String>,
    pub force: bool,
    pub zstd_level: i32,
    pub chunking: ChunkParams,
    pub expires_days: u64,
    pub max_pack_bytes: u64,
    /// How many earlier releases of the channel get delta frames.
    pub delta_from: usize,
    pub delta: DeltaParams,
    /// How many earlier manifests of the channel the new one is also published as a delta of.
    pub manifest_deltas: usize,
    /// Uncompressed bytes per solid frame (0: no solid frames).
    pub solid_run_bytes: u64,
    /// Days until the channel pointer expires.
    pub pointer_days: u64,
    /// Write the manifest unsigned to this file, for signing elsewhere, instead of signing
    /// and publishing it (packs are still written).
    pub unsigned_out: Option<PathBuf>,
    /// A critical update: clients bypass maintenance windows and staged rollout.
    pub critical: bool,
    /// Release notes (at most [`limits::NOTES_BYTES`]).
    pub notes: String,
    /// Share of installs the channel pointer offers the release to, 0 to 100.
    pub rollout_percent: u8,
    /// Publish a release that holds no files.
    pub allow_empty: bool,
    /// Copy the frames the parent release has instead of compressing them again.
    pub reuse_frames: bool,
}

impl PushOptions {
    /// What building the release takes.
    fn build_options(&self) -> BuildOptions<'_> {
        BuildOptions {
            dir: &self.dir,
            chunking: self.chunking,
            zstd_level: self.zstd_level,
            max_pack_bytes: self.max_pack_bytes,
            delta_from: self.delta_from,
            delta: self.delta,
            solid_run_bytes: self.solid_run_bytes,
            allow_empty: self.allow_empty,
            reuse_frames: self.reuse_frames,
        }
    }
}

/// Reads a release notes file: UTF-8, at most [`limits::NOTES_BYTES`].
pub fn read_notes_file(path: &Path) -> Result<String> {
    let reading = || format!("reading release notes {}", path.display());
    let file = File::open(path).with_context(reading)?;
    let len = file.metadata().with_context(reading)?.len();
    let limit = limits::NOTES_BYTES as u64;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(reading)?;
    if bytes.len() as u64 > limit {
        bail!(
            "release notes {} are {} bytes; at most {limit} are allowed",
            path.display(),
            len.max(bytes.len() as u64),
        );
    }
    let notes = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "release notes {} are not UTF-8 (at byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    check_notes(&notes)?;
    Ok(notes)
}

/// Refuses release notes longer than clients accept.
fn check_notes(notes: &str) -> Result<()> {
    if notes.len() > limits::NOTES_BYTES {
        bail!(
            "the release notes are {} bytes; at most {} are allowed",
            notes.len(),
            limits::NOTES_BYTES
        );
    }
    Ok(())
}

/// What a push did.
#[derive(Debug, Serialize)]
pub struct PushSummary {
    pub version: String,
    pub channel: String,
    pub manifest: String,
    /// The release was already published as is; nothing was written.
    pub unchanged: bool,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub unique_chunks: u64,
    pub pack_bytes: u64,
    /// Pack bytes that were not already on the origin.
    pub pack_bytes_written: u64,
    /// Objects written to the origin: new packs, the manifest and its deltas, the pointer.
    pub objects_written: u64,
    /// Content-addressed objects already on the origin, not written again.
    pub objects_present: u64,
    /// Bytes of the objects written.
    pub bytes_uploaded: u64,
    /// Seconds during which at least one write to the origin was in flight.
    pub upload_seconds: f64,
    /// `bytes_uploaded` over `upload_seconds`, in MB/s.
    pub upload_mb_per_s: f64,
    pub manifest_bytes: u64,
    /// Where the unsigned manifest was written, when it is to be signed elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsigned: Option<String>,
    /// Marked critical.
    pub critical: bool,
    /// Bytes of release notes.
    pub notes_bytes: u64,
    /// Share of installs the pointer offers the release to.
    pub rollout_percent: u8,
    /// The channel's yanked versions, carried over to the new pointer.
    pub yanked: Vec<String>,
    /// Versions delta frames were made against.
    pub delta_bases: Vec<String>,
    pub delta_frames: u64,
    /// Of those, frames in the bsdiff codecs.
    pub bsdiff_frames: u64,
    /// Of those, frames with projected references.
    pub refs_frames: u64,
    /// Bytes of reference maps.
    pub ref_map_bytes: u64,
    pub delta_bytes: u64,
    pub solid_frames: u64,
    pub solid_bytes: u64,
    /// Plain frames of new chunks copied from the parent release's packs, not compressed again.
    pub plain_reused: u64,
    /// Solid frames copied from the parent release's packs.
    pub solid_reused: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    /// Where building took its time.
    pub timings: build::Timings,
}

/// The keys a push signs with.
#[derive(Debug)]
pub struct Signers {
    /// Sign the manifest.
    pub release: Vec<SecretKey>,
    /// Sign the channel pointer.
    pub channel: Vec<SecretKey>,
}

/// Publishes `opts.dir` to `origin`. `progress` gets (bytes read, total bytes).
pub fn push(
    opts: &PushOptions,
    signers: &Signers,
    origin: &Origin,
    progress: &dyn Fn(u64, u64),
) -> Result<PushSummary> {
    let started = (Instant::now(), origin.stats());
    check_options(opts)?;
    let current = channel_now(opts, origin)?;
    let parent = parent_of(opts, origin, current.as_ref())?;
    let built = build::build(&opts.build_options(), origin, parent, progress)?;
    let mut summary = PushSummary::new(opts, &built, current.as_ref());
    let manifest = manifest_of(opts, parent, built)?;
    if let Some(current) = &current
        && current.version == opts.version
        && is_published(opts, origin, current, &manifest)?
    {
        summary.unchanged = true;
        summary.manifest = current.manifest.to_string();
        return Ok(finish(summary, started, origin));
    }
    if let Some(out) = &opts.unsigned_out {
        let (_, unsigned) = manifest.seal_by(&[])?;
        write_file(out, &unsigned)?;
        summary.unsigned = Some(out.display().to_string());
        return Ok(finish(summary, started, origin));
    }
    let release: Vec<&SecretKey> = signers.release.iter().collect();
    let (_, bytes) = manifest.seal_by(&release)?;
    let published = put_manifest(origin, &bytes, opts.manifest_deltas)?;
    let pointer = pointer_for(origin, &published, opts.pointer_days, opts.rollout_percent)?;
    let channel: Vec<&SecretKey> = signers.channel.iter().collect();
    put_pointer(origin, &pointer.seal(&channel)?, opts.force)?;
    summary.manifest = published.id.to_string();
    summary.manifest_bytes = published.file_len;
    Ok(finish(summary, started, origin))
}
/// Refuses options clients would refuse, before anything is read or written.
fn check_options(opts: &PushOptions) -> Result<()> {
    if !valid_channel(&opts.channel) {
        bail!(
            "invalid channel name {:?}: use letters, digits, '-', '_', '.'",
            opts.channel
        );
    }
    if let Some(platform) = &opts.platform
        && !valid_channel(platform)
    {
        bail!("invalid platform name {platform:?}: use letters, digits, '-', '_', '.'");
    }
    opts.chunking.validate()?;
    check_notes(&opts.notes)?;
    if opts.rollout_percent > 100 {
        bail!(
            "the rollout percentage is {}; it must be 0 to 100",
            opts.rollout_percent
        );
    }
    Ok(())
}

/// The channel's pointer on the origin, refusing a push that would move the channel to a
/// lower version (without `--force`) or offer a yanked one.
fn channel_now(opts: &PushOptions, origin: &Origin) -> Result<Option<Pointer>> {
    let current = current_pointer(origin, &opts.channel)?;
    if let Some(current) = &current {
        if opts.version < current.version {
            if !opts.force {
                bail!(
                    "channel {} is at {}; refusing to publish the lower version {}. To withdraw \
                     {}, `cdn-publisher yank --channel {} --version {}` moves the channel back; \
                     --force publishes {} anyway",
                    opts.channel,
                    current.version,
                    opts.version,
                    current.version,
                    opts.channel,
                    current.version,
                    opts.version
                );
            }
            eprintln!("warning: {}", lower_version_warning(opts, &current.version));
        }
        refuse_yanked(&opts.channel, &opts.version, &current.yanked)?;
    }
    Ok(current)
}

/// What a forced push below the channel's version does to the installs that saw it.
fn lower_version_warning(opts: &PushOptions, current: &Version) -> String {
    format!(
        "channel {channel} offered {current}: installs that saw it refuse {version} (\"rollback \
         refused\") until {current} is yanked: `cdn-publisher yank --channel {channel} --version \
         {current}`",
        channel = opts.channel,
        version = opts.version,
    )
}

/// The new release's parent: the channel's current release; a re-push of the same version
/// keeps the parent it had.
fn parent_of(
    opts: &PushOptions,
    origin: &Origin,
    current: Option<&Pointer>,
) -> Result<Option<ManifestId>> {
    Ok(match current {
        Some(current) if current.version == opts.version => origin
            .read_manifest(&current.manifest)?
            .and_then(|b| relsync_format::dangerous::manifest(&b).ok())
            .and_then(|m| m.parent),
        Some(current) => Some(current.manifest),
        None => None,
    })
}

/// The manifest of the built release, created now.
fn manifest_of(opts: &PushOptions, parent: Option<ManifestId>, built: Built) -> Result<Manifest> {
    Ok(Manifest {
        format: FORMAT_VERSION,
        product: opts.product.clone(),
        channel: opts.channel.clone(),
        platform: opts.platform.clone(),
        version: opts.version.clone(),
        created_unix: unix_now(),
        expires_unix: expiry(opts.expires_days).context("--expires-days")?,
        critical: opts.critical,
        notes: opts.notes.clone(),
        chunking: opts.chunking,
        parent,
        packs: built.packs,
        chunks: built.chunks,
        entries: built.entries,
        bases: built.bases,
        solid: built.solid,
    })
}

/// Whether `manifest` is the release `current` names already (ignoring when it was signed).
/// Other content under the same version is refused without `--force`.
fn is_published(
    opts: &PushOptions,
    origin: &Origin,
    current: &Pointer,
    manifest: &Manifest,
) -> Result<bool> {
    let same = origin
        .read_manifest(&current.manifest)?
        .and_then(|b| relsync_format::dangerous::manifest(&b).ok())
        .is_some_and(|old| same_release(&old, manifest));
    if !same && !opts.force {
        bail!(
            "version {} is already published on channel {} with different content; \
             bump the version (or use --force)",
            opts.version,
            opts.channel
        );
    }
    Ok(same)
}

impl PushSummary {
    /// What building did; the rest is filled in as the push goes on.
    fn new(opts: &PushOptions, built: &Built, current: Option<&Pointer>) -> Self {
        let deltas = || built.bases.iter().flat_map(|b| &b.deltas);
        let stats = built.stats;
        Self {
            version: opts.version.to_string(),
            channel: opts.channel.clone(),
            manifest: String::new(),
            unchanged: false,
            files: stats.files,
            dirs: stats.dirs,
            symlinks: stats.symlinks,
            bytes: stats.bytes,
            chunks: stats.chunks,
            unique_chunks: built.chunks.len() as u64,
            pack_bytes: built.packs.iter().map(|p| p.len).sum(),
            pack_bytes_written: stats.pack_bytes_written,
            objects_written: 0,
            objects_present: 0,
            bytes_uploaded: 0,
            upload_seconds: 0.0,
            upload_mb_per_s: 0.0,
            manifest_bytes: 0,
            unsigned: None,
            critical: opts.critical,
            notes_bytes: opts.notes.len() as u64,
            rollout_percent: opts.rollout_percent,
            yanked: current
                .iter()
                .flat_map(|p| &p.yanked)
                .map(ToString::to_string)
                .collect(),
            delta_bases: built.bases.iter().map(|b| b.version.to_string()).collect(),
            delta_frames: deltas().count() as u64,
            bsdiff_frames: deltas().filter(|d| d.codec.is_bsdiff()).count() as u64,
            refs_frames: deltas().filter(|d| d.codec.ref_map().is_some()).count() as u64,
            ref_map_bytes: built
                .bases
                .iter()
                .flat_map(|b| &b.refs)
                .map(|m| u64::from(m.frame_len))
                .sum(),
            delta_bytes: deltas().map(|d| u64::from(d.frame_len)).sum(),
            solid_frames: built.solid.len() as u64,
            plain_reused: stats.plain_reused,
            solid_reused: stats.solid_reused,
            solid_bytes: built.solid.iter().map(|s| u64::from(s.frame_len)).sum(),
            seconds: 0.0,
            mb_per_s: 0.0,
            timings: built.timings.clone(),
        }
    }
}

/// Fills in the times and what was written since `started`.
fn finish(
    mut summary: PushSummary,
    started: (Instant, WriteStats),
    origin: &Origin,
) -> PushSummary {
    let (at, before) = started;
    summary.seconds = at.elapsed().as_secs_f64();
    summary.mb_per_s = summary.bytes as f64 / 1e6 / summary.seconds.max(1e-9);
    let writes = origin.stats().since(&before);
    summary.objects_written = writes.objects_written;
    summary.objects_present = writes.objects_present;
    summary.bytes_uploaded = writes.bytes_written;
    summary.upload_seconds = writes.busy_seconds;
    summary.upload_mb_per_s = writes.bytes_written as f64 / 1e6 / writes.busy_seconds.max(1e-9);
    summary
}

/// The same release, ignoring when it was signed.
fn same_release(a: &Manifest, b: &Manifest) -> bool {
    let strip = |m: &Manifest| Manifest {
        created_unix: 0,
        expires_unix: 0,
        ..m.clone()
    };
    strip(a) == strip(b)
}

/// `push`: publishes the release and prints what it did.
pub fn run(args: PushArgs) -> Result<()> {
    let release = read_secrets(&args.key)?;
    let channel = if args.channel_key.is_empty() {
        read_secrets(&args.key)?
    } else {
        read_secrets(&args.channel_key)?
    };
    let signers = Signers { release, channel };
    let notes = match (args.notes, &args.notes_file) {
        (Some(text), _) => text,
        (None, Some(path)) => read_notes_file(path)?,
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
            refs: !args.no_refs,
            full_bases: args.delta_full_bases,
            exact_matches: true,
        },
        manifest_deltas: args.manifest_deltas as usize,
        solid_run_bytes: args.solid_mib << 20,
        pointer_days: args.pointer_days,
        unsigned_out: args.unsigned_out,
        critical: args.critical,
        notes,
        rollout_percent: args.rollout_percent,
        allow_empty: args.allow_empty,
        reuse_frames: !args.recompress,
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
            "  deltas     {} frames ({} bsdiff, {} with projected references), {} bytes \
             + {} bytes of reference maps, against {}",
            s.delta_frames,
            s.bsdiff_frames,
            s.refs_frames,
            s.delta_bytes,
            s.ref_map_bytes,
            s.delta_bases.join(", ")
        );
    }
    if s.solid_frames > 0 {
        println!(
            "  solid      {} frames, {} bytes",
            s.solid_frames, s.solid_bytes
        );
    }
    if s.plain_reused + s.solid_reused > 0 {
        println!(
            "  reused     {} plain and {} solid frames of the parent release",
            s.plain_reused, s.solid_reused
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

#[cfg(test)]
mod tests {
    use crate::fixture::Fixture;

    #[test]
    fn a_release_without_files_is_refused_unless_allowed() {
        let f = Fixture::new();
        let dir = f.tmp.path().join("empty");
        std::fs::create_dir_all(dir.join("only/dirs")).unwrap();
        let opts = super::PushOptions {
            dir: dir.clone(),
            ..f.opts("1.0.0")
        };
        let err = format!("{:#}", f.push_with(&opts).unwrap_err());
        assert!(
            err.contains("holds no files") && err.contains("--allow-empty"),
            "{err}"
        );
        assert!(f.origin.read("channels/stable").unwrap().is_none());
        f.push_with(&super::PushOptions {
            allow_empty: true,
            ..opts
        })
        .unwrap();
        assert!(f.origin.read("channels/stable").unwrap().is_some());
    }
}
