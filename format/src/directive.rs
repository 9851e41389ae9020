//! The rollback directive: the release role's signed word that installs running yanked
//! versions go back to the channel's release.
//!
//! A yank is the channel role's to make: it withdraws a version, so that installs that do not
//! run it never take it, and halts its rollout. Taking an install *below* the highest version
//! it trusted is a downgrade, and the channel key is online, so a downgrade needs the release
//! role: the channel pointer ([`Pointer::rollback`]) carries a directive (envelope kind 4),
//! signed by a threshold of the release role of the root the pointer verifies under, that
//! names the pointer's product, channel, version and manifest, and the versions, all in the
//! pointer's signed `yanked` list, whose installs go back.
//!
//! ```text
//! { format, product, channel, from: [version], to_version, to: manifest id, issued_unix }
//! ```
//!
//! The size is checked before the signature, and the signature before the body is decoded.

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::envelope::{self, Kind};
use crate::keys::SecretKey;
use crate::manifest::{FORMAT_VERSION, Pointer, decode_versioned};
use crate::root::RoleKeys;
use crate::{Error, ManifestId, Result};

/// Hard caps on rollback directives.
pub mod limits {
    /// Largest directive envelope accepted.
    pub const DIRECTIVE_BYTES: usize = 16 * 1024;
    /// Most versions a directive takes back: as many as a pointer lists as yanked.
    pub const FROM: usize = crate::manifest::limits::YANKED;
}

/// Installs running one of the `from` versions go back to `to_version`, whose manifest is
/// `to`: the release a channel pointer offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackDirective {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The product.
    pub product: String,
    /// The channel.
    pub channel: String,
    /// The yanked versions whose installs go back: 1 to [`limits::FROM`], each once, never
    /// `to_version`.
    pub from: Vec<Version>,
    /// The version they go back to: the pointer's.
    pub to_version: Version,
    /// Its manifest: the pointer's.
    pub to: ManifestId,
    /// When the directive was made.
    pub issued_unix: u64,
}

fn refused(reason: impl Into<String>) -> Error {
    Error::RollbackDirective {
        reason: reason.into(),
    }
}

/// Why a directive envelope of `len` bytes is refused unread, if it is: over
/// [`limits::DIRECTIVE_BYTES`].
pub(crate) fn oversized(len: usize) -> Option<String> {
    (len > limits::DIRECTIVE_BYTES).then(|| {
        format!(
            "rollback directive of {len} bytes, over the {}-byte limit",
            limits::DIRECTIVE_BYTES
        )
    })
}

impl RollbackDirective {
    /// Encodes the directive and signs it with every key of `keys` (none: unsigned, for a
    /// signer elsewhere).
    pub fn seal(&self, keys: &[&SecretKey]) -> Result<Vec<u8>> {
        self.validate()?;
        let body = postcard::to_stdvec(self)
            .map_err(|e| Error::malformed("rollback directive", e.to_string()))?;
        let sealed = envelope::seal(Kind::RollbackDirective, &body, keys)?;
        match oversized(sealed.len()) {
            Some(reason) => Err(Error::malformed("rollback directive", reason)),
            None => Ok(sealed),
        }
    }

    /// Verifies that a threshold of the release role signed `bytes`, then decodes and
    /// validates the directive. It still has to match the pointer carrying it
    /// ([`RollbackDirective::check_for`]).
    pub fn open(bytes: &[u8], release: &RoleKeys) -> Result<Self> {
        if let Some(reason) = oversized(bytes.len()) {
            return Err(refused(reason));
        }
        // The framing first, so that a damaged envelope is not reported as a signature problem.
        envelope::open_unverified(Kind::RollbackDirective, bytes).map_err(|e| match e {
            Error::BadSignature { reason, .. } => refused(reason),
            e => refused(e.to_string()),
        })?;
        let body = release
            .open(Kind::RollbackDirective, bytes)
            .map_err(|e| match e {
                Error::BadSignature { reason, .. } => {
                    refused(format!("not signed by the release role: {reason}"))
                }
                e => refused(e.to_string()),
            })?;
        let directive: Self = decode_versioned("rollback directive", body)?;
        directive.validate()?;
        Ok(directive)
    }

    /// Decodes a directive without checking its signature or its rules (publisher side only).
    pub(crate) fn decode_unverified(bytes: &[u8]) -> Result<Self> {
        if let Some(reason) = oversized(bytes.len()) {
            return Err(Error::malformed("rollback directive", reason));
        }
        let body = envelope::open_unverified(Kind::RollbackDirective, bytes)?;
        decode_versioned("rollback directive", body)
    }

    /// The directive `pointer` carries, if any, once it is signed by a threshold of `release`
    /// (the release role of the root the pointer verified under) and names the pointer's
    /// release.
    pub fn verified(pointer: &Pointer, release: &RoleKeys) -> Result<Option<Self>> {
        let Some(bytes) = &pointer.rollback else {
            return Ok(None);
        };
        let directive = Self::open(bytes, release)?;
        directive.check_for(pointer)?;
        Ok(Some(directive))
    }

    /// Whether installs running `version` go back.
    pub fn covers(&self, version: &Version) -> bool {
        self.from.contains(version)
    }

    /// Checks that the directive is for `pointer`: the same product, channel, version and
    /// manifest, and every version it takes back listed as yanked.
    pub fn check_for(&self, pointer: &Pointer) -> Result<()> {
        let differs = |what: &str, said: &str, offered: &str| {
            refused(format!(
                "it names {what} {said}, but the channel pointer offers {offered}"
            ))
        };
        if self.product != pointer.product {
            return Err(differs("product", &self.product, &pointer.product));
        }
        if self.channel != pointer.channel {
            return Err(differs("channel", &self.channel, &pointer.channel));
        }
        if self.to_version != pointer.version {
            return Err(differs(
                "version",
                &self.to_version.to_string(),
                &pointer.version.to_string(),
            ));
        }
        if self.to != pointer.manifest {
            return Err(differs(
                "manifest",
                &self.to.to_string(),
                &pointer.manifest.to_string(),
            ));
        }
        if let Some(version) = self.from.iter().find(|v| !pointer.is_yanked(v)) {
            return Err(refused(format!(
                "it takes installs of {version} back, but the channel pointer does not list \
                 {version} as yanked"
            )));
        }
        Ok(())
    }

    /// Checks the rules that hold whatever the pointer: format, and 1 to [`limits::FROM`]
    /// distinct versions to take back, none of them the version they go back to.
    fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::malformed("rollback directive", reason);
        if self.format != FORMAT_VERSION {
            return Err(bad(format!(
                "unsupported format {} (this engine reads {FORMAT_VERSION})",
                self.format
            )));
        }
        if self.from.is_empty() || self.from.len() > limits::FROM {
            return Err(bad(format!(
                "it takes back {} versions (1 to {} allowed)",
                self.from.len(),
                limits::FROM
            )));
        }
        for (i, version) in self.from.iter().enumerate() {
            if self.from[..i].contains(version) {
                return Err(bad(format!("version {version} is listed twice")));
            }
        }
        if self.covers(&self.to_version) {
            return Err(bad(format!(
                "it takes installs of {} back to {0}",
                self.to_version
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        let seed = format!("{byte:02x}").repeat(32);
        SecretKey::from_file_text(&format!("relsync-ed25519-secret:{seed}")).unwrap()
    }

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    /// The release role: keys 1 and 2, both needed. Key 3 is the channel role's.
    fn release() -> RoleKeys {
        RoleKeys {
            keys: vec![key(1).public(), key(2).public()],
            threshold: 2,
        }
    }

    fn pointer() -> Pointer {
        Pointer {
            format: FORMAT_VERSION,
            product: "app".into(),
            channel: "stable".into(),
            version: v("1.0.0"),
            root_version: 1,
            manifest: ManifestId([1; 32]),
            manifest_len: 100,
            manifest_deltas: Vec::new(),
            issued_unix: 0,
            expires_unix: u64::MAX,
            rollout_percent: 100,
            yanked: vec![v("2.0.0"), v("3.0.0")],
            rollback: None,
        }
    }

    fn directive() -> RollbackDirective {
        RollbackDirective {
            format: FORMAT_VERSION,
            product: "app".into(),
            channel: "stable".into(),
            from: vec![v("3.0.0"), v("2.0.0")],
            to_version: v("1.0.0"),
            to: ManifestId([1; 32]),
            issued_unix: 1_700_000_000,
        }
    }

    /// `pointer()` carrying `d` signed by `keys`, checked as a client checks it.
    fn carried(d: &RollbackDirective, keys: &[&SecretKey]) -> Result<Option<RollbackDirective>> {
        let bytes = d.seal(keys)?;
        let p = Pointer {
            rollback: Some(bytes),
            ..pointer()
        };
        p.validate()?;
        RollbackDirective::verified(&p, &release())
    }

    fn refusal(result: Result<Option<RollbackDirective>>) -> String {
        match result {
            Ok(d) => panic!("accepted: {d:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_directive_of_the_release_role_for_this_pointer_is_followed() {
        let d = carried(&directive(), &[&key(1), &key(2)]).unwrap().unwrap();
        assert_eq!(d, directive());
        assert!(d.covers(&v("3.0.0")) && d.covers(&v("2.0.0")));
        assert!(!d.covers(&v("1.0.0")));
        assert_eq!(
            RollbackDirective::verified(&pointer(), &release()).unwrap(),
            None
        );
        // Other signatures beside the threshold do not matter.
        carried(&directive(), &[&key(3), &key(2), &key(1)]).unwrap();
    }

    #[test]
    fn the_channel_role_or_too_few_release_keys_cannot_sign_one() {
        for (what, keys, needle) in [
            (
                "channel key",
                vec![key(3)],
                "not signed by the release role: not signed by any trusted key",
            ),
            (
                "one of two release keys",
                vec![key(1)],
                "1 valid signature(s) of trusted keys, 2 needed",
            ),
            (
                "one release key twice",
                vec![key(2), key(2)],
                "1 valid signature(s) of trusted keys, 2 needed",
            ),
            ("nobody", vec![], "not signed by the release role"),
        ] {
            let keys: Vec<&SecretKey> = keys.iter().collect();
            let err = refusal(carried(&directive(), &keys));
            assert!(
                err.contains("rollback directive refused") && err.contains(needle),
                "{what}: {err}"
            );
            assert!(
                err.contains("cdn-publisher yank --roll-back --key"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_directive_for_another_release_is_refused() {
        let both = [&key(1), &key(2)];
        let cases: Vec<(&str, RollbackDirective)> = vec![
            (
                "names product other, but the channel pointer offers app",
                RollbackDirective {
                    product: "other".into(),
                    ..directive()
                },
            ),
            (
                "names channel beta, but the channel pointer offers stable",
                RollbackDirective {
                    channel: "beta".into(),
                    ..directive()
                },
            ),
            (
                "names version 0.9.0, but the channel pointer offers 1.0.0",
                RollbackDirective {
                    to_version: v("0.9.0"),
                    ..directive()
                },
            ),
            (
                "names manifest 0909",
                RollbackDirective {
                    to: ManifestId([9; 32]),
                    ..directive()
                },
            ),
            (
                "takes installs of 4.0.0 back, but the channel pointer does not list 4.0.0 as \
                 yanked",
                RollbackDirective {
                    from: vec![v("3.0.0"), v("4.0.0")],
                    ..directive()
                },
            ),
        ];
        for (needle, d) in cases {
            let err = refusal(carried(&d, &both));
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn broken_directives_are_refused_before_or_while_decoding() {
        let both = [&key(1), &key(2)];
        // Rules of the directive itself: the seal refuses, and so does a client.
        for (needle, d) in [
            (
                "takes back 0 versions",
                RollbackDirective {
                    from: vec![],
                    ..directive()
                },
            ),
            (
                "takes back 65 versions (1 to 64 allowed)",
                RollbackDirective {
                    from: (0..=64).map(|i| Version::new(5, i, 0)).collect(),
                    ..directive()
                },
            ),
            (
                "version 3.0.0 is listed twice",
                RollbackDirective {
                    from: vec![v("3.0.0"), v("3.0.0")],
                    ..directive()
                },
            ),
            (
                "takes installs of 1.0.0 back to 1.0.0",
                RollbackDirective {
                    from: vec![v("1.0.0")],
                    ..directive()
                },
            ),
            (
                "unsupported format 5",
                RollbackDirective {
                    format: 5,
                    ..directive()
                },
            ),
        ] {
            assert!(d.seal(&both).is_err(), "{needle}");
            let body = postcard::to_stdvec(&d).unwrap();
            let sealed = envelope::seal(Kind::RollbackDirective, &body, &both).unwrap();
            let err = RollbackDirective::open(&sealed, &release())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }

        // Garbage, another kind of document, a flipped byte, and a body that does not decode.
        let good = directive().seal(&both).unwrap();
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        let garbage = envelope::seal(Kind::RollbackDirective, b"\x06garbage", &both).unwrap();
        let pointer_kind = envelope::seal(Kind::Pointer, &good[13..good.len() - 193], &both);
        for (what, bytes, needle) in [
            ("noise", b"not an envelope".to_vec(), "wrong magic"),
            ("pointer kind", pointer_kind.unwrap(), "wrong document kind"),
            ("flipped", flipped, "2 did not verify"),
            ("garbage body", garbage, "malformed rollback directive"),
        ] {
            let err = RollbackDirective::open(&bytes, &release())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{what}: {err}");
        }

        // Oversized: refused before any signature is checked, by the pointer and by `open`.
        let huge = vec![0u8; limits::DIRECTIVE_BYTES + 1];
        let err = RollbackDirective::open(&huge, &release())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("16385 bytes, over the 16384-byte limit"),
            "{err}"
        );
        let p = Pointer {
            rollback: Some(huge),
            ..pointer()
        };
        assert!(p.validate().is_err());
        // A directive too large to seal.
        let long = RollbackDirective {
            from: (0..64)
                .map(|i| Version::parse(&format!("5.{i}.0-{}", "x".repeat(300))).unwrap())
                .collect(),
            ..directive()
        };
        let err = long.seal(&both).unwrap_err().to_string();
        assert!(err.contains("over the 16384-byte limit"), "{err}");
    }
}
