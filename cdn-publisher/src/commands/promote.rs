//! `promote`: change the share of installs a channel's release is offered to.

use anyhow::Result;
use semver::Version;

use super::pointer::{ChannelAt, PointerSigning, finish_change};
use crate::lifecycle;
use crate::origin::Origin;

#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub at: ChannelAt,
    /// The version the channel offers now; refused if it offers another, so a rollout meant
    /// for one release never applies to the next.
    #[arg(long)]
    pub version: Version,
    /// Share of installs offered the release, 0 to 100 (100: everyone, 0: halted).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub percent: u8,
    #[command(flatten)]
    pub pointer: PointerSigning,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `promote`: the pointer re-issued with the new percentage.
pub fn run(args: &PromoteArgs) -> Result<()> {
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
