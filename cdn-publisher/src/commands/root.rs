//! `cdn-publisher root`: create, rotate, sign and publish the root documents that name each
//! role's keys (`relsync_format::root`).
//!
//! A root document is made unsigned into a file, signed by as many holders of root keys as its
//! thresholds need (with `--key`, or with a detached signature from an HSM or KMS), then
//! published to the origin as `keys/root-<n>`, which refuses it unless the thresholds are met.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use relsync_format::envelope::{self, Kind};
use relsync_format::paths::root_path;
use relsync_format::root::{ROOT_FORMAT, RoleKeys, Root};

use super::sign::{SignArgs, show, sign};
use super::{read_file, write_file};
use crate::keys::parse_public;
use crate::origin::Origin;
use crate::roots::newest;

/// Keys and thresholds for the roles, as given on the command line.
#[derive(Debug, clap::Args)]
pub struct RoleArgs {
    /// A root key (signs root documents): `ed25519:<hex>` or a `.pub` file. Repeatable.
    #[arg(long = "root", value_name = "KEY")]
    root: Vec<String>,
    /// A release key (signs manifests). Repeatable.
    #[arg(long = "release", value_name = "KEY")]
    release: Vec<String>,
    /// A channel key (signs channel pointers). Repeatable.
    #[arg(long = "channel", value_name = "KEY")]
    channel: Vec<String>,
    /// Signatures of distinct root keys needed.
    #[arg(long)]
    root_threshold: Option<u32>,
    /// Signatures of distinct release keys needed.
    #[arg(long)]
    release_threshold: Option<u32>,
    /// Signatures of distinct channel keys needed.
    #[arg(long)]
    channel_threshold: Option<u32>,
    /// Days until clients stop trusting this root for new decisions.
    #[arg(long, default_value_t = 365)]
    expires_days: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum RootCommand {
    /// Write the first root document (version 1, unsigned) to FILE.
    Init {
        /// Product the keys publish; clients refuse roots of another product.
        #[arg(long, default_value = "app")]
        product: String,
        #[command(flatten)]
        roles: RoleArgs,
        /// Where to write the document.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write the next root document (unsigned) to FILE: the origin's newest root with the roles
    /// given replaced. It needs signatures of the old root keys and of the new ones.
    Rotate {
        /// The origin: a folder (a path or file:// URL) or a bucket (s3://, gs://, az://).
        #[arg(long = "origin", visible_alias = "to", value_name = "ORIGIN")]
        to: String,
        #[command(flatten)]
        roles: RoleArgs,
        /// Where to write the document.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Add a signature to a root document file: with a secret key, or a detached signature
    /// made elsewhere over the message `root show` prints (the same as `cdn-publisher sign`).
    Sign(SignArgs),
    /// Print a root document: version, roles, who signed it, and the message to sign.
    Show {
        /// The document.
        file: PathBuf,
    },
    /// Publish a signed root document as `keys/root-<n>`, refusing it unless it is the
    /// next root of the origin's chain with every threshold met.
    Publish {
        /// The document.
        file: PathBuf,
        /// The origin: a folder (a path or file:// URL) or a bucket (s3://, gs://, az://).
        #[arg(long = "origin", visible_alias = "to", value_name = "ORIGIN")]
        to: String,
    },
}

pub fn run(command: RootCommand) -> Result<()> {
    match command {
        RootCommand::Init {
            product,
            roles,
            out,
        } => {
            let root = Root {
                format: ROOT_FORMAT,
                product,
                version: 1,
                expires_unix: expires(roles.expires_days),
                root: role("root", &roles.root, roles.root_threshold, None)?,
                release: role("release", &roles.release, roles.release_threshold, None)?,
                channel: role("channel", &roles.channel, roles.channel_threshold, None)?,
            };
            write_unsigned(&root, &out)
        }
        RootCommand::Rotate { to, roles, out } => {
            let origin = Origin::open(&to)?;
            let (current, _) = newest(&origin)?
                .with_context(|| format!("{to} has no root documents; use `root init`"))?;
            let next = Root {
                format: ROOT_FORMAT,
                product: current.product.clone(),
                version: current
                    .version
                    .checked_add(1)
                    .context("the newest root's version cannot be followed")?,
                expires_unix: expires(roles.expires_days),
                root: role(
                    "root",
                    &roles.root,
                    roles.root_threshold,
                    Some(&current.root),
                )?,
                release: role(
                    "release",
                    &roles.release,
                    roles.release_threshold,
                    Some(&current.release),
                )?,
                channel: role(
                    "channel",
                    &roles.channel,
                    roles.channel_threshold,
                    Some(&current.channel),
                )?,
            };
            write_unsigned(&next, &out)
        }
        RootCommand::Sign(args) => sign(&args),
        RootCommand::Show { file } => show(&file),
        RootCommand::Publish { file, to } => {
            let bytes = read_file(&file)?;
            let origin = Origin::open(&to)?;
            let root = match newest(&origin)? {
                Some((current, _)) => current
                    .open_next(&bytes)
                    .context("the document is not a valid next root for this origin")?,
                None => {
                    let root = Root::open_pinned(&bytes)
                        .context("the document is not a valid first root")?;
                    if root.version != 1 {
                        bail!("the origin has no roots yet; the first must be version 1");
                    }
                    root
                }
            };
            origin.put(&root_path(root.version), &bytes)?;
            println!(
                "published {} (root version {})",
                root_path(root.version),
                root.version
            );
            Ok(())
        }
    }
}

fn role(
    name: &str,
    keys: &[String],
    threshold: Option<u32>,
    old: Option<&RoleKeys>,
) -> Result<RoleKeys> {
    if keys.is_empty() {
        return match old {
            Some(old) => Ok(RoleKeys {
                threshold: threshold.unwrap_or(old.threshold),
                ..old.clone()
            }),
            None => bail!("give at least one --{name} key"),
        };
    }
    Ok(RoleKeys {
        keys: keys
            .iter()
            .map(|k| parse_public(k))
            .collect::<Result<_>>()?,
        threshold: threshold.unwrap_or(1),
    })
}

fn expires(days: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now.saturating_add(days.saturating_mul(86_400))
}

fn write_unsigned(root: &Root, out: &Path) -> Result<()> {
    let sealed = envelope::seal(Kind::Root, &root.to_body()?, &[])?;
    write_file(out, &sealed)?;
    println!(
        "wrote root version {} to {}; it needs {} root signature(s){}",
        root.version,
        out.display(),
        root.root.threshold,
        if root.version > 1 {
            " from the new root keys and a threshold of the old ones"
        } else {
            ""
        }
    );
    Ok(())
}
