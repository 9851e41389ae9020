//! `publish` and `channel`: publish documents signed elsewhere (a manifest, then the pointer
//! naming it; or a pointer alone), and re-sign a channel's pointer before it expires.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use super::pointer::{PointerSigning, set_pointer};
use super::read_file;
use crate::origin::Origin;
use crate::publish;

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The signed manifest file.
    pub file: PathBuf,
    /// The origin whose packs the manifest names: a folder (a path or file:// URL) or a
    /// bucket (s3://, gs://, az://).
    #[arg(long = "origin", visible_alias = "to", value_name = "ORIGIN")]
    pub to: String,
    #[command(flatten)]
    pub pointer: PointerSigning,
    /// How many earlier manifests of the channel the new one is also published as a delta of.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=16))]
    pub manifest_deltas: u64,
    /// Share of installs offered the release at first, 0 to 100; raise it later with
    /// `cdn-publisher promote`.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rollout_percent: u8,
    /// Move the channel even to a lower version, or to other content for an equal one.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Publish a signed channel pointer file (from `--unsigned-pointer-out`, then signed).
    Set {
        /// The signed pointer file.
        file: PathBuf,
        /// The origin: a folder (a path or file:// URL) or a bucket (s3://, gs://, az://).
        #[arg(long = "origin", visible_alias = "to", value_name = "ORIGIN")]
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
        #[arg(long = "origin", visible_alias = "to", value_name = "ORIGIN")]
        to: String,
        #[command(flatten)]
        pointer: PointerSigning,
    },
}

/// `publish`: the signed manifest, then the pointer naming it.
pub fn run(args: &PublishArgs) -> Result<()> {
    args.pointer.require()?;
    let origin = Origin::open(&args.to)?;
    let envelope = read_file(&args.file)?;
    let published = publish::put_manifest(&origin, &envelope, args.manifest_deltas as usize)?;
    println!("published manifest {}", published.id);
    let pointer = publish::pointer_for(
        &origin,
        &published,
        args.pointer.pointer_days,
        args.rollout_percent,
    )?;
    set_pointer(&origin, &pointer, &args.pointer, args.force)
}

/// `channel set` and `channel refresh`.
pub fn run_channel(command: &ChannelCommand) -> Result<()> {
    match command {
        ChannelCommand::Set { file, to, force } => {
            let origin = Origin::open(to)?;
            let pointer = publish::put_pointer(&origin, &read_file(file)?, *force)?;
            println!("channel {} now offers {}", pointer.channel, pointer.version);
            Ok(())
        }
        ChannelCommand::Refresh {
            channel,
            to,
            pointer,
        } => {
            pointer.require()?;
            let origin = Origin::open(to)?;
            let refreshed = publish::refreshed(&origin, channel, pointer.pointer_days)?;
            set_pointer(&origin, &refreshed, pointer, false)
        }
    }
}
