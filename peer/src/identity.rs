//! The node's libp2p identity: an ed25519 key in a private file (mode 0600), loaded if it is
//! there and made on first use. A link or a key that group or others may read is refused.

use std::fs::{OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::{Keypair, ed25519};

use crate::Error;

/// Loads the node key at `path`, or makes one there (mode 0600). Never follows a symlink at
/// `path` or at its temporary file, and refuses a key that group or others may read.
pub(crate) fn load_or_create(path: &Path) -> Result<Keypair, Error> {
    let opened = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO planted there must not hang the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(file) => load(file, path),
        Err(e) if e.kind() == ErrorKind::NotFound => create(path),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(bad(
            path,
            format!(
                "a symbolic link, not followed: remove it ({}) and a new key is made",
                path.display()
            ),
        )),
        Err(e) => Err(bad(path, e.to_string())),
    }
}

/// The key in `file`, opened from `path`: a regular file only its owner may read, holding a
/// 32-byte ed25519 secret.
fn load(file: std::fs::File, path: &Path) -> Result<Keypair, Error> {
    let meta = file.metadata().map_err(|e| bad(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(bad(
            path,
            format!(
                "not a regular file: remove it ({}) and a new key is made",
                path.display()
            ),
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(
            path,
            format!(
                "readable by group or others (mode {mode:03o}): chmod 600 {}",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(33);
    file.take(33)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(path, e.to_string()))?;
    let secret = ed25519::SecretKey::try_from_bytes(&mut bytes)
        .map_err(|e| bad(path, format!("not a 32-byte ed25519 key: {e}")))?;
    Ok(ed25519::Keypair::from(secret).into())
}

/// Makes a new key at `path`: written to `<path>.tmp` (created anew, mode 0600, never through
/// a link), synced, then renamed over `path`.
fn create(path: &Path) -> Result<Keypair, Error> {
    let keypair = ed25519::Keypair::generate();
    let tmp = path.with_extension("tmp");
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
    };
    let mut file = match create() {
        // Left by a run that died: unlink it (a link itself, never its target).
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp).map_err(|e| bad(path, e.to_string()))?;
            create()
        }
        other => other,
    }
    .map_err(|e| bad(path, e.to_string()))?;
    // The umask may have taken bits away: set the mode exactly.
    file.set_permissions(Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(keypair.secret().as_ref()))
        .and_then(|()| file.sync_all())
        .map_err(|e| bad(path, e.to_string()))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| bad(path, e.to_string()))?;
    Ok(keypair.into())
}

fn bad(path: &Path, reason: String) -> Error {
    Error::Identity {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_new_key_is_a_private_file_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer-key");
        let first = load_or_create(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        assert!(
            !path.with_extension("tmp").exists(),
            "the temporary file stayed"
        );
        assert_eq!(load_or_create(&path).unwrap().public(), first.public());
        // The owner's own bits do not matter: read-only is fine.
        set_mode(&path, 0o400);
        assert_eq!(load_or_create(&path).unwrap().public(), first.public());
    }

    #[test]
    fn a_key_group_or_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer-key");
        let key = load_or_create(&path).unwrap();
        for loose in [0o640, 0o604, 0o644, 0o660, 0o606] {
            set_mode(&path, loose);
            let err = load_or_create(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("mode {loose:03o}")), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
        }
        // Refused, not replaced.
        set_mode(&path, 0o600);
        assert_eq!(load_or_create(&path).unwrap().public(), key.public());
    }

    #[test]
    fn a_link_at_the_key_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, [7u8; 32]).unwrap();
        set_mode(&target, 0o600);
        let linked = dir.path().join("linked-key");
        symlink(&target, &linked).unwrap();
        let err = load_or_create(&linked).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        // A dangling link is refused too, not written through.
        let dangling = dir.path().join("dangling-key");
        symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let err = load_or_create(&dangling).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(std::fs::read(&target).unwrap(), [7u8; 32]);
    }

    #[test]
    fn a_link_or_leftover_at_the_temporary_file_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, [7u8; 32]).unwrap();
        let fresh = dir.path().join("fresh-key");
        symlink(&target, fresh.with_extension("tmp")).unwrap();
        load_or_create(&fresh).unwrap();
        assert_eq!(
            std::fs::read(&target).unwrap(),
            [7u8; 32],
            "the link was followed"
        );
        assert_eq!(mode(&fresh), 0o600);

        // A temporary file left by a run that died, readable by all.
        let other = dir.path().join("other-key");
        std::fs::write(other.with_extension("tmp"), b"half a key").unwrap();
        set_mode(&other.with_extension("tmp"), 0o644);
        load_or_create(&other).unwrap();
        assert_eq!(mode(&other), 0o600);
        assert_eq!(std::fs::read(&other).unwrap().len(), 32);
    }

    #[test]
    fn what_is_not_a_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a-dir");
        std::fs::create_dir(&folder).unwrap();
        set_mode(&folder, 0o700);
        let err = load_or_create(&folder).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");

        for len in [0, 31, 33, 64] {
            let path = dir.path().join(format!("key-{len}"));
            std::fs::write(&path, vec![1u8; len]).unwrap();
            set_mode(&path, 0o600);
            let err = load_or_create(&path).unwrap_err().to_string();
            assert!(
                err.contains("not a 32-byte ed25519 key"),
                "{len} bytes: {err}"
            );
        }
    }

    #[test]
    fn a_fifo_at_the_key_does_not_hang_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo-key");
        let made = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&fifo)
            .status()
            .expect("this test needs mkfifo (coreutils) on PATH");
        assert!(made.success(), "mkfifo failed: {made}");
        let err = load_or_create(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
