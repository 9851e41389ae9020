//! `cdn-publisher sign` and `show`: signatures on any signed document (manifest, channel
//! pointer, root, rollback directive), added with a local key or attached from a signer
//! elsewhere (an HSM, a cloud KMS) that signed the message `show` prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use relsync_format::envelope::{self, Kind, signing_message};

use super::{read_file, write_file};
use crate::keys::{parse_public, read_secret};

/// A signature to add to a document file.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The document: an unsigned or partly signed manifest, channel pointer, root or rollback
    /// directive.
    pub file: PathBuf,
    /// Secret key file.
    #[arg(long, conflicts_with_all = ["public", "signature"])]
    pub key: Option<PathBuf>,
    /// The external signer's public key (`ed25519:<hex>` or a `.pub` file).
    #[arg(long, requires = "signature")]
    pub public: Option<String>,
    /// The external signer's ed25519 signature over the message `show` prints, 128 hex
    /// characters.
    #[arg(long, requires = "public")]
    pub signature: Option<String>,
}

/// Adds one signature to the document, refusing one that does not verify.
pub fn sign(args: &SignArgs) -> Result<()> {
    let bytes = read_file(&args.file)?;
    let kind = Kind::of(&bytes).with_context(|| format!("reading {}", args.file.display()))?;
    let signed = match (&args.key, &args.public, &args.signature) {
        (Some(key), _, _) => envelope::sign(kind, &bytes, &read_secret(key)?)?,
        (None, Some(public), Some(signature)) => {
            let public = parse_public(public)?;
            let mut raw = [0u8; 64];
            hex::decode_to_slice(signature.trim(), &mut raw)
                .context("--signature needs 128 hex characters")?;
            envelope::attach(kind, &bytes, &public, &raw)?
        }
        _ => bail!("give --key, or --public with --signature"),
    };
    write_file(&args.file, &signed)?;
    println!(
        "{} ({}) now carries {} signature(s)",
        args.file.display(),
        kind.name(),
        envelope::signers(kind, &signed)?.len()
    );
    Ok(())
}

/// A unix time as a UTC date, with the number for scripts.
fn dated(unix: u64) -> String {
    format!("{} (unix {unix})", relsync_format::format_utc(unix))
}

/// Prints what a document says, who signed it, and the message a signer signs.
pub fn show(file: &Path) -> Result<()> {
    let bytes = read_file(file)?;
    let kind = Kind::of(&bytes).with_context(|| format!("reading {}", file.display()))?;
    match kind {
        Kind::Root => {
            let root = relsync_format::dangerous::root(&bytes)?;
            println!(
                "root version {} for product {:?}",
                root.version, root.product
            );
            println!("expires    {}", dated(root.expires_unix));
            for (name, role) in [
                ("root", &root.root),
                ("release", &root.release),
                ("channel", &root.channel),
            ] {
                println!("{name:<10} {} of {}:", role.threshold, role.keys.len());
                for key in &role.keys {
                    println!("             {key}");
                }
            }
        }
        Kind::Manifest => {
            let m = relsync_format::dangerous::manifest(&bytes)?;
            println!(
                "manifest of {} {} on channel {}",
                m.product, m.version, m.channel
            );
            if let Some(platform) = &m.platform {
                println!("platform   {platform}");
            }
            println!(
                "files      {} ({} bytes)",
                m.files().count(),
                m.total_file_bytes()
            );
            println!("expires    {}", dated(m.expires_unix));
            if m.critical {
                println!("critical   yes");
            }
            if !m.notes.is_empty() {
                println!("notes      {} bytes:", m.notes.len());
                for line in m.notes.lines() {
                    println!("  {}", line.escape_debug());
                }
            }
        }
        Kind::Pointer => {
            let p = relsync_format::dangerous::pointer(&bytes)?;
            println!(
                "channel pointer {} -> {} {} (root version {})",
                p.channel, p.product, p.version, p.root_version
            );
            println!("manifest   {}", p.manifest);
            println!("issued     {}", dated(p.issued_unix));
            println!("expires    {}", dated(p.expires_unix));
            println!("rollout    {}%", p.rollout_percent);
            if !p.yanked.is_empty() {
                let yanked: Vec<String> = p.yanked.iter().map(ToString::to_string).collect();
                println!("yanked     {}", yanked.join(", "));
                match p.rollback.as_deref() {
                    Some(bytes) => match relsync_format::dangerous::directive(bytes) {
                        Ok(d) => println!(
                            "rollback   installs on {} go back to {} (directive signed by {} \
                             key(s))",
                            versions(&d.from),
                            d.to_version,
                            envelope::signers(Kind::RollbackDirective, bytes)?.len()
                        ),
                        Err(e) => println!("rollback   unreadable directive: {e}"),
                    },
                    None => println!("rollback   no: installs on a yanked version keep it"),
                }
            }
        }
        Kind::RollbackDirective => {
            let d = relsync_format::dangerous::directive(&bytes)?;
            println!(
                "rollback directive for {} on channel {}: installs on {} go back to {}",
                d.product,
                d.channel,
                versions(&d.from),
                d.to_version
            );
            println!("manifest   {}", d.to);
            println!("issued     {}", dated(d.issued_unix));
        }
    }
    for key in envelope::signers(kind, &bytes)? {
        println!("signed by  ed25519:{}", hex::encode(key));
    }
    let body = relsync_format::dangerous::envelope_body(kind, &bytes)?;
    println!("message    {}", hex::encode(signing_message(kind, body)));
    Ok(())
}

fn versions(versions: &[semver::Version]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
