//! `yank`: withdraw a version from a channel, and with `--roll-back` take its installs back.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use relsync_format::directive::RollbackDirective;
use semver::Version;

use super::pointer::{ChannelAt, PointerSigning, finish_change};
use super::{read_file, read_secrets, write_file};
use crate::lifecycle;
use crate::origin::Origin;
use crate::publish;

#[derive(Debug, clap::Args)]
pub struct YankArgs {
    #[command(flatten)]
    pub at: ChannelAt,
    /// The version to withdraw: the channel's current release or an earlier one. Yanking it
    /// again changes only the rollback directive (with --roll-back).
    #[arg(long)]
    pub version: Version,
    /// Installs running the version go back to the channel's release (without it, they keep
    /// running it). That takes them below a version they trusted, so the channel key alone
    /// cannot do it: a rollback directive signed by the release role must come with the
    /// pointer (--key, or --unsigned-directive-out then --directive).
    #[arg(long)]
    pub roll_back: bool,
    /// Release key file that signs the rollback directive. Repeat for a threshold.
    #[arg(long, value_name = "KEY", requires = "roll_back")]
    pub key: Vec<PathBuf>,
    /// Write the rollback directive unsigned to FILE and stop, changing nothing on the origin:
    /// sign it elsewhere (`cdn-publisher show FILE` prints the message, `cdn-publisher sign
    /// FILE` attaches the signature), then run this yank again with --directive FILE.
    #[arg(
        long,
        value_name = "FILE",
        requires = "roll_back",
        conflicts_with_all = ["key", "directive"]
    )]
    pub unsigned_directive_out: Option<PathBuf>,
    /// The rollback directive from --unsigned-directive-out, signed by the release role.
    #[arg(
        long,
        value_name = "FILE",
        requires = "roll_back",
        conflicts_with = "key"
    )]
    pub directive: Option<PathBuf>,
    #[command(flatten)]
    pub pointer: PointerSigning,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `yank`: the pointer re-issued, with a rollback directive the release role signed when
/// installs are to go back.
pub fn run(args: &YankArgs) -> Result<()> {
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
        let Some(sealed) = signed_directive(args, directive)? else {
            return Ok(());
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

/// The rollback directive signed by the release role: with `--key`, or given with
/// `--directive`. `None` once it is written unsigned (`--unsigned-directive-out`), which ends
/// the yank.
fn signed_directive(args: &YankArgs, directive: &RollbackDirective) -> Result<Option<Vec<u8>>> {
    if let Some(out) = &args.unsigned_directive_out {
        write_file(out, &directive.seal(&[])?)?;
        print_unsigned(out, directive, args.json);
        return Ok(None);
    }
    if let Some(file) = &args.directive {
        let bytes = read_file(file)?;
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
        return Ok(Some(bytes));
    }
    let keys = read_secrets(&args.key)?;
    Ok(Some(directive.seal(&keys.iter().collect::<Vec<_>>())?))
}

/// Says where the unsigned directive went and what to do next.
fn print_unsigned(out: &Path, directive: &RollbackDirective, json: bool) {
    let summary = lifecycle::RollbackSummary::from_directive(directive);
    if json {
        let json = serde_json::json!({
            "unsigned_directive": out.display().to_string(),
            "rollback": summary,
        });
        println!("{json}");
        return;
    }
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

fn versions_text(versions: &[Version]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
