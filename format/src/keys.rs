//! Ed25519 keys and their one-line text forms.
//!
//! A public key is written `ed25519:<64 hex>`; a secret key file holds
//! `relsync-ed25519-secret:<64 hex>` (the 32-byte seed).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::{Error, Result};

const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "relsync-ed25519-secret:";

/// A trusted (or to be trusted) Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(crate) VerifyingKey);

impl PublicKey {
    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The key's curve point in its one canonical encoding. Two encodings of one point (the
    /// y coordinate is also accepted unreduced) are one key: thresholds count this.
    pub fn canonical(&self) -> [u8; 32] {
        self.0.to_edwards().compress().to_bytes()
    }

    /// A short form for messages: `ed25519:` and the first 8 hex digits, as the full key
    /// (`ed25519:<64 hex>`) begins.
    pub fn fmt_short(&self) -> String {
        let hex = hex::encode(&self.0.as_bytes()[..4]);
        format!("{PUBLIC_PREFIX}{hex}…")
    }

    /// Parses the raw 32 bytes, refusing weak (small-order) points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|e| Error::InvalidKey(format!("not an ed25519 point: {e}")))?;
        if key.is_weak() {
            return Err(Error::InvalidKey("weak ed25519 key".into()));
        }
        Ok(Self(key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Serialized as its 32 raw bytes; decoding refuses what [`PublicKey::from_bytes`] refuses.
impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.as_bytes().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let bytes = <[u8; 32]>::deserialize(deserializer)?;
        Self::from_bytes(&bytes).map_err(crate::decode::invalid)
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let hex_part = s.strip_prefix(PUBLIC_PREFIX).ok_or_else(|| {
            Error::InvalidKey(format!("public key must start with {PUBLIC_PREFIX:?}"))
        })?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|_| Error::InvalidKey("public key needs 64 hex characters".into()))?;
        Self::from_bytes(&bytes)
    }
}

/// A signing key. Its `Debug` output never shows the secret.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Generates a key from the OS random source.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::InvalidKey(format!("no OS randomness: {e}")))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The key file's text (one line, ends with a newline).
    pub fn to_file_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", hex::encode(self.0.to_bytes()))
    }

    /// Parses a key file's text.
    pub fn from_file_text(text: &str) -> Result<Self> {
        let hex_part = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            Error::InvalidKey(format!("secret key file must start with {SECRET_PREFIX:?}"))
        })?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut seed)
            .map_err(|_| Error::InvalidKey("secret key needs 64 hex characters".into()))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let secret = SecretKey::generate().unwrap();
        let again = SecretKey::from_file_text(&secret.to_file_text()).unwrap();
        assert_eq!(again.public(), secret.public());
        let text = secret.public().to_string();
        assert_eq!(text.parse::<PublicKey>().unwrap(), secret.public());
        assert_eq!(
            format!(" {text}\n").parse::<PublicKey>().unwrap(),
            secret.public()
        );
        assert!(!format!("{secret:?}").contains(&hex::encode(secret.0.to_bytes())));
    }

    #[test]
    fn rejects_bad_text() {
        assert!("ed25519:abcd".parse::<PublicKey>().is_err());
        assert!("rsa:00".parse::<PublicKey>().is_err());
        // The identity point is a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_bytes(&identity).is_err());
        assert!(SecretKey::from_file_text("garbage").is_err());
    }
}
