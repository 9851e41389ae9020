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
    if let Some(public) = public_key_in(path) {
        bail!("{}", public_key_given(path, &public));
    }
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

/// The public key `path` holds, if it holds one (as `KEY.pub` from keygen does).
fn public_key_in(path: &Path) -> Option<PublicKey> {
    let meta = std::fs::metadata(path).ok()?;
    // A public key file is one short line; never read a large file whole for this.
    if !meta.is_file() || meta.len() > 1024 {
        return None;
    }
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The error for a public key where a secret key belongs.
fn public_key_given(path: &Path, public: &PublicKey) -> String {
    let secret = path
        .to_str()
        .and_then(|p| p.strip_suffix(".pub"))
        .map_or_else(String::new, |s| format!(" ({s}, beside it?)"));
    format!(
        "{} is a public key ({}); signing (--key, --channel-key) needs the secret key file \
         that `cdn-publisher keygen --out FILE` wrote as FILE, not FILE.pub{secret}",
        path.display(),
        public.fmt_short()
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_is_no_secret_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("release.key");
        let public = keygen(&key).unwrap();
        assert!(read_secret(&key).is_ok());
        let err = format!("{:#}", read_secret(&public_path(&key)).unwrap_err());
        assert!(err.contains("release.key.pub is a public key"), "{err}");
        assert!(err.contains(&public.fmt_short()), "{err}");
        assert!(err.contains("needs the secret key file"), "{err}");
        assert!(
            err.contains(&format!("({}, beside it?)", key.display())),
            "{err}"
        );
        assert!(!err.contains("mode"), "{err}");
    }
}
