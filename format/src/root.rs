//! The root of trust: signed root documents that name each role's keys and how many of them
//! must sign.
//!
//! | role | signs | kept |
//! |---|---|---|
//! | root | root documents | offline |
//! | release | manifests | offline or in a KMS |
//! | channel | channel pointers (short-lived) | online, on the publishing host |
//!
//! The origin publishes the chain `keys/root-1`, `keys/root-2`, ... Root `n + 1` counts only if
//! a threshold of root `n`'s root keys *and* a threshold of its own root keys signed it, so
//! neither a stolen old key set nor a forged new one can move the chain alone. A client starts
//! from a root it pins and walks forward, bounded in steps and bytes.
//!
//! A signature counts once per distinct key: keys are compared as curve points (canonical
//! encoding), so a repeated signature, or one key listed twice or in a second encoding,
//! never counts twice.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::envelope::{self, Kind};
use crate::keys::PublicKey;
use crate::{Error, Result};

/// The root document format this engine writes and reads.
pub const ROOT_FORMAT: u32 = 1;

/// Limits on root documents and the chain a client walks.
pub mod limits {
    /// Largest root document accepted.
    pub const ROOT_BYTES: u64 = 64 * 1024;
    /// Most keys in one role.
    pub const ROLE_KEYS: usize = 32;
    /// Most root documents walked in one update.
    pub const CHAIN_STEPS: u64 = 1024;
}

/// A role's keys and its threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    /// The keys, each once.
    pub keys: Vec<PublicKey>,
    /// How many distinct keys must sign.
    pub threshold: u32,
}

impl RoleKeys {
    /// One key, threshold 1: what `--trust KEY` means.
    pub fn single(key: PublicKey) -> Self {
        Self {
            keys: vec![key],
            threshold: 1,
        }
    }

    fn validate(&self, role: &str) -> Result<()> {
        let bad =
            |reason: String| Error::malformed("root document", format!("{role} role: {reason}"));
        if self.keys.is_empty() || self.keys.len() > limits::ROLE_KEYS {
            return Err(bad(format!(
                "has {} keys (1 to {} allowed)",
                self.keys.len(),
                limits::ROLE_KEYS
            )));
        }
        let distinct: HashSet<[u8; 32]> = self.keys.iter().map(PublicKey::canonical).collect();
        if distinct.len() != self.keys.len() {
            return Err(bad("lists a key twice".into()));
        }
        if self.threshold == 0 || self.threshold as usize > self.keys.len() {
            return Err(bad(format!(
                "threshold {} with {} keys",
                self.threshold,
                self.keys.len()
            )));
        }
        Ok(())
    }

    /// Returns the body of `bytes` once at least `threshold` distinct keys of this role signed
    /// it.
    pub fn open<'a>(&self, kind: Kind, bytes: &'a [u8]) -> Result<&'a [u8]> {
        envelope::open_threshold(kind, bytes, &self.keys, self.threshold)
    }
}

/// One version of the key sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// [`ROOT_FORMAT`].
    pub format: u32,
    /// The product these keys publish.
    pub product: String,
    /// 1 for the first root, then one more per rotation.
    pub version: u64,
    /// After this, a client refuses the root for new trust decisions ("stale metadata").
    pub expires_unix: u64,
    /// Signs root documents.
    pub root: RoleKeys,
    /// Signs manifests.
    pub release: RoleKeys,
    /// Signs channel pointers.
    pub channel: RoleKeys,
}

impl Root {
    /// A root that trusts `keys` for every role, one signature each: what a client configured
    /// with bare `--trust` keys starts from. Version 0, so `keys/root-1` follows it.
    pub fn from_keys(product: &str, keys: &[PublicKey]) -> Result<Self> {
        let role = RoleKeys {
            keys: keys.to_vec(),
            threshold: 1,
        };
        let root = Self {
            format: ROOT_FORMAT,
            product: product.to_owned(),
            version: 0,
            expires_unix: u64::MAX,
            root: role.clone(),
            release: role.clone(),
            channel: role,
        };
        root.validate()?;
        Ok(root)
    }

    fn validate(&self) -> Result<()> {
        if self.format != ROOT_FORMAT {
            return Err(Error::malformed(
                "root document",
                format!("format {} (this client reads {ROOT_FORMAT})", self.format),
            ));
        }
        self.root.validate("root")?;
        self.release.validate("release")?;
        self.channel.validate("channel")
    }

    /// The signed body of this root.
    pub fn to_body(&self) -> Result<Vec<u8>> {
        self.validate()?;
        postcard::to_stdvec(self).map_err(|e| Error::malformed("root document", e.to_string()))
    }

    /// Decodes a body without checking signatures (the caller checked them).
    fn from_body(body: &[u8]) -> Result<Self> {
        let root: Self = crate::decode::body("root document", body)?;
        root.validate()?;
        Ok(root)
    }

    /// Decodes a root document without checking any signature, for tools that display one.
    pub(crate) fn read_unverified(bytes: &[u8]) -> Result<Self> {
        Self::from_body(envelope::open_unverified(Kind::Root, bytes)?)
    }

    /// Reads a root the caller pins, such as a file shipped with the app: it must be signed by
    /// a threshold of its own root keys.
    pub fn open_pinned(bytes: &[u8]) -> Result<Self> {
        let claimed = Self::read_unverified(bytes)?;
        claimed.root.open(Kind::Root, bytes)?;
        Ok(claimed)
    }

    /// Accepts `bytes` as the next root after this one: version `self.version + 1`, same
    /// product, signed by a threshold of this root's root keys and of its own.
    pub fn open_next(&self, bytes: &[u8]) -> Result<Self> {
        if bytes.len() as u64 > limits::ROOT_BYTES {
            return Err(Error::malformed(
                "root document",
                format!(
                    "{} bytes, over the {}-byte limit",
                    bytes.len(),
                    limits::ROOT_BYTES
                ),
            ));
        }
        // Signatures of the keys we trust first, before the body is parsed at all.
        let body = self.root.open(Kind::Root, bytes)?;
        let next = Self::from_body(body)?;
        next.root.open(Kind::Root, bytes)?;
        if self.version.checked_add(1) != Some(next.version) {
            return Err(Error::malformed(
                "root document",
                format!("version {} follows version {}", next.version, self.version),
            ));
        }
        // A root made from bare keys names no product; the pointer binds it.
        if !self.product.is_empty() && next.product != self.product {
            return Err(Error::malformed(
                "root document",
                format!("for product {:?}, not {:?}", next.product, self.product),
            ));
        }
        Ok(next)
    }

    /// Refuses this root if it expired before `now_unix` (the caller passes the later of its
    /// clock and the last trusted time).
    pub fn check_fresh(&self, now_unix: u64) -> Result<()> {
        if self.expires_unix < now_unix {
            return Err(Error::Expired {
                what: "root document",
                expires_unix: self.expires_unix,
                now_unix,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn keys(n: usize) -> Vec<SecretKey> {
        (0..n).map(|_| SecretKey::generate().unwrap()).collect()
    }

    fn role(keys: &[SecretKey], threshold: u32) -> RoleKeys {
        RoleKeys {
            keys: keys.iter().map(SecretKey::public).collect(),
            threshold,
        }
    }

    fn root(version: u64, root_keys: &[SecretKey], threshold: u32) -> Root {
        Root {
            format: ROOT_FORMAT,
            product: "app".into(),
            version,
            expires_unix: 2_000_000_000,
            root: role(root_keys, threshold),
            release: role(root_keys, 1),
            channel: role(root_keys, 1),
        }
    }

    fn sign(root: &Root, by: &[&SecretKey]) -> Vec<u8> {
        envelope::seal(Kind::Root, &root.to_body().unwrap(), by).unwrap()
    }

    #[test]
    fn rotation_needs_old_and_new_thresholds() {
        let old = keys(3);
        let new = keys(2);
        let first = root(1, &old, 2);
        let second = root(2, &new, 2);
        let (o, n) = (&old, &new);
        // Two old and both new keys: accepted.
        let ok = sign(&second, &[&o[0], &o[2], &n[0], &n[1]]);
        assert_eq!(first.open_next(&ok).unwrap(), second);
        // One old key short, or one new key short: refused.
        for by in [
            vec![&o[0], &n[0], &n[1]],
            vec![&o[0], &o[1], &n[0]],
            vec![&n[0], &n[1]],
        ] {
            let err = first.open_next(&sign(&second, &by)).unwrap_err();
            assert!(err.to_string().contains("signature"), "{err}");
        }
        // Skipping a version, or another product, is refused even when well signed.
        let mut skip = root(3, &new, 2);
        let err = first
            .open_next(&sign(&skip, &[&o[0], &o[1], &n[0], &n[1]]))
            .unwrap_err();
        assert!(
            err.to_string().contains("version 3 follows version 1"),
            "{err}"
        );
        skip.version = 2;
        skip.product = "other".into();
        let err = first
            .open_next(&sign(&skip, &[&o[0], &o[1], &n[0], &n[1]]))
            .unwrap_err();
        assert!(err.to_string().contains("product"), "{err}");
    }

    /// Found by the `root_chain` fuzz target: `u64::MAX + 1` overflowed (a panic in debug
    /// builds, version 0 accepted in release builds).
    #[test]
    fn nothing_follows_the_last_version() {
        let k = keys(2);
        let last = root(u64::MAX, &k, 1);
        let wrapped = root(0, &k, 1);
        let err = last
            .open_next(&sign(&wrapped, &[&k[0], &k[1]]))
            .unwrap_err();
        assert!(err.to_string().contains("follows version"), "{err}");
    }

    #[test]
    fn one_key_counts_once() {
        let k = keys(2);
        let first = root(1, &k, 2);
        let mut second = root(2, &k, 2);
        // The same key signing twice is one signature.
        let twice = sign(&second, &[&k[0], &k[0]]);
        assert!(first.open_next(&twice).is_err());
        // A role may not list one key twice, so a threshold of 2 cannot be met by one key.
        second.root.keys = vec![k[0].public(), k[0].public()];
        assert!(second.to_body().is_err());
        let body = postcard::to_stdvec(&second).unwrap();
        let sealed = envelope::seal(Kind::Root, &body, &[&k[0], &k[1]]).unwrap();
        let err = first.open_next(&sealed).unwrap_err();
        assert!(err.to_string().contains("lists a key twice"), "{err}");
    }

    #[test]
    fn thresholds_and_sizes_are_validated() {
        let k = keys(2);
        for threshold in [0, 3] {
            let bad = root(1, &k, threshold);
            assert!(bad.to_body().is_err(), "threshold {threshold}");
        }
        let ok = root(1, &k, 2);
        let pinned = sign(&ok, &[&k[0], &k[1]]);
        assert_eq!(Root::open_pinned(&pinned).unwrap(), ok);
        assert!(Root::open_pinned(&sign(&ok, &[&k[0]])).is_err());
        let huge = vec![0u8; limits::ROOT_BYTES as usize + 1];
        assert!(
            ok.open_next(&huge)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        assert!(ok.check_fresh(2_000_000_001).is_err());
        ok.check_fresh(2_000_000_000).unwrap();
    }
}
