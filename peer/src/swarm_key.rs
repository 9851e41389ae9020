//! The fleet's pre-shared swarm key: libp2p private networks (pnet).
//!
//! Every connection starts with a pnet handshake under this key before Noise, so only nodes
//! holding the same key can talk at all: an outsider's connection fails before any peer id,
//! protocol name or byte of relsync traffic is exchanged. The file is go-libp2p's `swarm.key`
//! format: `/key/swarm/psk/1.0.0/`, `/base16/`, then 64 hex digits, one per line.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::pnet::PreSharedKey;

use crate::Error;

/// Largest swarm key file read: the format takes 86 bytes.
const MAX_FILE_BYTES: u64 = 4096;

/// A fleet's pre-shared key. Its `Debug` shows only the fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SwarmKey(PreSharedKey);

impl std::fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SwarmKey(fingerprint {})", self.fingerprint())
    }
}

impl SwarmKey {
    /// A new random key.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| Error::Randomness(e.to_string()))?;
        Ok(Self(PreSharedKey::new(bytes)))
    }

    /// Reads the key file at `path`, refusing one that group or others may read.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::SwarmKey {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| bad(e.to_string()))?;
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "readable by group or others (mode {mode:03o}), but it is a secret: chmod 600 {}",
                path.display()
            )));
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("not a swarm key file: {e}")))?;
        // The parser slices the hex digits by byte: keep it to ASCII.
        if !text.is_ascii() {
            return Err(bad("not a swarm key file: it holds non-ASCII text".into()));
        }
        text.parse::<PreSharedKey>().map(Self).map_err(|e| {
            bad(format!(
                "not a swarm key file ({e:?}): expected `/key/swarm/psk/1.0.0/`, `/base16/` \
                 and 64 hex digits, one per line"
            ))
        })
    }

    /// Writes a new random key to `path` (a new file, mode 0600) and returns it. Refuses to
    /// overwrite anything, a symlink included.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::SwarmKey {
            path: path.to_path_buf(),
            reason,
        };
        let key = Self::generate()?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    bad("already exists; refusing to overwrite a key".into())
                }
                _ => bad(e.to_string()),
            })?;
        // The umask may have taken bits away: set the mode exactly.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| file.write_all(key.0.to_key_file().as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(|e| bad(e.to_string()))?;
        Ok(key)
    }

    /// A fingerprint that names the key without revealing it (go-libp2p's): compare it
    /// across nodes to check they hold the same key.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_string()
    }

    pub(crate) fn psk(&self) -> PreSharedKey {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_are_private_read_back_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        let key = SwarmKey::create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"),
            "{text}"
        );
        assert_eq!(SwarmKey::read(&path).unwrap(), key);
        assert_ne!(SwarmKey::generate().unwrap(), key);

        let again = SwarmKey::create(&path).unwrap_err().to_string();
        assert!(again.contains("already exists"), "{again}");
        assert_eq!(
            SwarmKey::read(&path).unwrap(),
            key,
            "the key was overwritten"
        );

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert!(SwarmKey::create(&link).is_err());
        assert!(
            !dir.path().join("elsewhere").exists(),
            "the link was followed"
        );
    }

    #[test]
    fn keys_others_can_read_or_malformed_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        SwarmKey::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let open = SwarmKey::read(&path).unwrap_err().to_string();
        assert!(open.contains("chmod 600"), "{open}");

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "/key/swarm/psk/1.0.0/\n/base16/\nnot-hex\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let malformed = SwarmKey::read(&bad).unwrap_err().to_string();
        assert!(malformed.contains("not a swarm key file"), "{malformed}");
    }
}
