//! Writing a channel pointer from a command: signed with local channel keys and published,
//! or written unsigned for a signer elsewhere; and what `promote` and `yank` print about it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use relsync_format::manifest::Pointer;

use super::{read_secrets, write_file};
use crate::lifecycle::{self, Change};
use crate::origin::Origin;
use crate::publish;

/// The channel a pointer change applies to.
#[derive(Debug, clap::Args)]
pub struct ChannelAt {
    /// The origin: a folder (a path or file:// URL) or a bucket (s3://, gs://, az://).
    #[arg(long, visible_alias = "to", value_name = "ORIGIN")]
    pub origin: String,
    /// The channel.
    #[arg(long)]
    pub channel: String,
}

/// How a channel pointer gets signed: with local channel keys, or written unsigned for a
/// signer elsewhere.
#[derive(Debug, clap::Args)]
pub struct PointerSigning {
    /// Secret key file that signs the channel pointer. Repeat for a threshold. Needed unless
    /// --unsigned-pointer-out is given.
    #[arg(long, value_name = "KEY")]
    pub channel_key: Vec<PathBuf>,
    /// Write the pointer unsigned to FILE instead, to be signed (`cdn-publisher sign`) and
    /// then published with `cdn-publisher channel set`.
    #[arg(long, value_name = "FILE", conflicts_with = "channel_key")]
    pub unsigned_pointer_out: Option<PathBuf>,
    /// Days until clients stop trusting the pointer; re-sign it before then with
    /// `cdn-publisher channel refresh` (a short life limits how long a withheld update can
    /// go unnoticed).
    #[arg(long, default_value_t = DEFAULT_POINTER_DAYS, value_parser = parse_pointer_days)]
    pub pointer_days: u64,
}

impl PointerSigning {
    /// Refuses to start when nothing would sign the pointer (checked before anything is
    /// written, as clap cannot say it for every command that flattens these arguments).
    pub fn require(&self) -> Result<()> {
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
pub const DEFAULT_POINTER_DAYS: u64 = 7;

/// Where a pointer went: published, or written unsigned to a file.
pub enum PointerOut {
    Published(Box<Pointer>),
    Unsigned(PathBuf),
}

/// Signs `pointer` and publishes it, or writes it unsigned for a signer elsewhere.
pub fn write_pointer(
    origin: &Origin,
    pointer: &Pointer,
    signing: &PointerSigning,
    force: bool,
) -> Result<PointerOut> {
    if let Some(out) = &signing.unsigned_pointer_out {
        pointer.validate()?;
        write_file(out, &pointer.seal(&[])?)?;
        return Ok(PointerOut::Unsigned(out.clone()));
    }
    let keys = read_secrets(&signing.channel_key)?;
    let sealed = pointer.seal(&keys.iter().collect::<Vec<_>>())?;
    Ok(PointerOut::Published(Box::new(publish::put_pointer(
        origin, &sealed, force,
    )?)))
}

/// [`write_pointer`], saying what happened.
pub fn set_pointer(
    origin: &Origin,
    pointer: &Pointer,
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
            "channel {} now offers {} until {}",
            pointer.channel,
            pointer.version,
            relsync_format::format_utc(pointer.expires_unix)
        ),
    }
    Ok(())
}

/// Writes the pointer of a `promote` or `yank` and prints what changed.
pub fn finish_change(
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
            "  pointer    signed; channel {} offers {} until {}",
            p.channel,
            p.version,
            relsync_format::format_utc(p.expires_unix)
        ),
    }
    Ok(())
}

/// `--pointer-days`: at least 1, since a pointer that expires as it is published is refused
/// by every client ("stale metadata").
pub fn parse_pointer_days(text: &str) -> Result<u64, String> {
    let days: u64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number of days: {e}"))?;
    if days == 0 {
        return Err(
            "0 would publish a pointer that has already expired, which every client refuses as \
             stale metadata; give 1 or more (7 by default), and refresh it before then"
                .into(),
        );
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::parse_pointer_days;

    #[test]
    fn pointer_days_are_at_least_one() {
        assert_eq!(parse_pointer_days("1"), Ok(1));
        assert_eq!(parse_pointer_days("7"), Ok(7));
        let zero = parse_pointer_days("0").unwrap_err();
        assert!(zero.contains("already expired"), "{zero}");
        assert!(parse_pointer_days("-1").is_err());
        assert!(parse_pointer_days("seven").is_err());
    }
}
