//! `cdn-publisher keygen`: a new signing key, written so only its owner can read it.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use relsync_format::{PublicKey, SecretKey};

/// `KEY.pub` beside `KEY`.
pub fn public_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Writes a new secret key to `out` (mode 0600) and its public key to `out.pub`.
pub fn keygen(out: &Path) -> Result<PublicKey> {
    let public_file = public_path(out);
    for path in [out, public_file.as_path()] {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            );
        }
    }
    let secret = SecretKey::generate()?;
    let public = secret.public();
    write_new(out, secret.to_file_text().as_bytes(), 0o600)?;
    write_new(&public_file, format!("{public}\n").as_bytes(), 0o644)?;
    Ok(public)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a secret key file, refusing one that others can read.
pub fn read_secret(path: &Path) -> Result<SecretKey> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).with_context(|| format!("reading key {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "key {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    SecretKey::from_file_text(&text).with_context(|| format!("key {}", path.display()))
}

/// A public key: `ed25519:<hex>`, or a file holding it (such as `KEY.pub` from keygen).
pub fn parse_public(spec: &str) -> Result<PublicKey> {
    if spec.starts_with("ed25519:") {
        return Ok(spec.parse()?);
    }
    let text = std::fs::read_to_string(spec).with_context(|| format!("reading key {spec}"))?;
    text.parse()
        .with_context(|| format!("{spec} does not hold an ed25519: public key"))
}
