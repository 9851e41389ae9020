//! The signed envelope around manifests, channel pointers, root documents and rollback
//! directives.
//!
//! ```text
//! magic      8 bytes  "RELSYNC1"
//! kind       1 byte   1 = manifest, 2 = channel pointer, 3 = root document,
//!                     4 = rollback directive
//! body_len   u32 LE
//! body       body_len bytes (postcard)
//! sig_count  u8
//! sigs       sig_count × (public key 32 bytes, ed25519 signature 64 bytes)
//! ```
//!
//! Each signature covers `"relsync-sig-v1\0" || kind || BLAKE3(body)`, so a signature made for
//! one kind cannot be replayed as another, and a large body is hashed, never copied.
//! [`open`] checks signatures *before* anything parses the body.

use crate::keys::{PublicKey, SecretKey};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"RELSYNC1";
const CONTEXT: &[u8] = b"relsync-sig-v1\0";
const SIG_LEN: usize = 32 + 64;

/// What a signed document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A release manifest.
    Manifest = 1,
    /// A channel pointer.
    Pointer = 2,
    /// A root document ([`crate::root`]).
    Root = 3,
    /// A rollback directive ([`crate::directive`]).
    RollbackDirective = 4,
}

impl Kind {
    /// The kind of envelope `bytes` holds, from its header alone (nothing is verified).
    pub fn of(bytes: &[u8]) -> Result<Self> {
        let kind = bytes
            .strip_prefix(MAGIC)
            .and_then(|rest| rest.first())
            .ok_or_else(|| Error::malformed("signed document", "not a relsync envelope"))?;
        [
            Kind::Manifest,
            Kind::Pointer,
            Kind::Root,
            Kind::RollbackDirective,
        ]
        .into_iter()
        .find(|k| *k as u8 == *kind)
        .ok_or_else(|| Error::malformed("signed document", format!("unknown document kind {kind}")))
    }

    /// What the kind is called in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::Pointer => "channel pointer",
            Kind::Root => "root document",
            Kind::RollbackDirective => "rollback directive",
        }
    }
}

/// The bytes a signer signs for `body`: what an external signer (an HSM, a cloud KMS) is
/// given, whose ed25519 signature [`attach`] then adds.
pub fn signing_message(kind: Kind, body: &[u8]) -> Vec<u8> {
    message(kind, body)
}

/// Adds `key`'s detached `signature` to an envelope, refusing one that does not verify.
pub fn attach(kind: Kind, bytes: &[u8], key: &PublicKey, signature: &[u8; 64]) -> Result<Vec<u8>> {
    let (body, sigs) = split(kind, bytes)?;
    let count = sigs.len() / SIG_LEN;
    let more = u8::try_from(count + 1)
        .map_err(|_| Error::malformed(kind.name(), "too many signatures"))?;
    let msg = message(kind, body);
    key.0
        .verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| Error::BadSignature {
            what: kind.name(),
            reason: format!("the signature to attach does not verify for {key}"),
        })?;
    let mut out = bytes[..bytes.len() - sigs.len() - 1].to_vec();
    out.push(more);
    out.extend_from_slice(sigs);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(signature);
    Ok(out)
}

/// Adds `key`'s signature to an envelope.
pub fn sign(kind: Kind, bytes: &[u8], key: &SecretKey) -> Result<Vec<u8>> {
    let (body, _) = split(kind, bytes)?;
    attach(kind, bytes, &key.public(), &key.sign(&message(kind, body)))
}

/// The public keys whose signatures an envelope carries (not checked).
pub fn signers(kind: Kind, bytes: &[u8]) -> Result<Vec<[u8; 32]>> {
    let (_, sigs) = split(kind, bytes)?;
    Ok(sigs
        .chunks_exact(SIG_LEN)
        .map(|s| {
            let mut key = [0u8; 32];
            key.copy_from_slice(&s[..32]);
            key
        })
        .collect())
}

fn message(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CONTEXT.len() + 1 + 32);
    msg.extend_from_slice(CONTEXT);
    msg.push(kind as u8);
    msg.extend_from_slice(blake3::hash(body).as_bytes());
    msg
}

/// Wraps `body` in an envelope signed by every key in `keys`.
pub fn seal(kind: Kind, body: &[u8], keys: &[&SecretKey]) -> Result<Vec<u8>> {
    let body_len =
        u32::try_from(body.len()).map_err(|_| Error::malformed(kind.name(), "body over 4 GiB"))?;
    let sig_count =
        u8::try_from(keys.len()).map_err(|_| Error::malformed(kind.name(), "too many keys"))?;
    let msg = message(kind, body);
    let mut out = Vec::with_capacity(13 + body.len() + 1 + keys.len() * SIG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(body);
    out.push(sig_count);
    for key in keys {
        out.extend_from_slice(key.public().as_bytes());
        out.extend_from_slice(&key.sign(&msg));
    }
    Ok(out)
}

/// Returns the body of an envelope once a trusted key's signature on it checks out.
pub fn open<'a>(kind: Kind, bytes: &'a [u8], trusted: &[PublicKey]) -> Result<&'a [u8]> {
    open_threshold(kind, bytes, trusted, 1)
}

/// Returns the body of an envelope once valid signatures of at least `threshold` distinct
/// keys of `trusted` are on it. Keys are compared as curve points, so a repeated signature or
/// a second encoding of one key counts once; signatures of other keys are ignored.
pub fn open_threshold<'a>(
    kind: Kind,
    bytes: &'a [u8],
    trusted: &[PublicKey],
    threshold: u32,
) -> Result<&'a [u8]> {
    let (body, sigs) = split(kind, bytes)?;
    let msg = message(kind, body);
    let trusted: Vec<([u8; 32], &PublicKey)> = trusted.iter().map(|k| (k.canonical(), k)).collect();
    let mut signed: Vec<[u8; 32]> = Vec::new();
    let mut untrusted: Vec<PublicKey> = Vec::new();
    let mut failed = 0;
    for sig in sigs.chunks_exact(SIG_LEN) {
        let (key_bytes, sig_bytes) = sig.split_at(32);
        let mut raw_key = [0u8; 32];
        raw_key.copy_from_slice(key_bytes);
        let Ok(claimed) = PublicKey::from_bytes(&raw_key) else {
            continue;
        };
        let canonical = claimed.canonical();
        let Some((_, key)) = trusted.iter().find(|(c, _)| *c == canonical) else {
            untrusted.push(claimed);
            continue;
        };
        if signed.contains(&canonical) {
            continue;
        }
        let mut raw = [0u8; 64];
        raw.copy_from_slice(sig_bytes);
        let signature = ed25519_dalek::Signature::from_bytes(&raw);
        if key.0.verify_strict(&msg, &signature).is_ok() {
            signed.push(canonical);
            if signed.len() as u64 >= u64::from(threshold.max(1)) {
                return Ok(body);
            }
        } else {
            failed += 1;
        }
    }
    Err(Error::BadSignature {
        what: kind.name(),
        reason: match (signed.len(), failed) {
            (0, 0) => format!(
                "not signed by any trusted key (unknown key): signed by {}; trusted: {}",
                short_keys(untrusted.iter()),
                short_keys(trusted.iter().map(|(_, k)| *k)),
            ),
            (0, _) if threshold <= 1 => "signature does not verify (tampered or corrupt)".into(),
            (n, f) => format!(
                "{n} valid signature(s) of trusted keys, {threshold} needed ({f} did not verify)"
            ),
        },
    })
}

/// Keys as short fingerprints, comma-separated (`none` for no key).
fn short_keys<'k>(keys: impl Iterator<Item = &'k PublicKey>) -> String {
    let shown: Vec<String> = keys.map(PublicKey::fmt_short).collect();
    if shown.is_empty() {
        "none".into()
    } else {
        shown.join(", ")
    }
}

/// Returns the body without checking signatures: for publishers reading their own origin, and
/// for a pinned root, whose body names the keys that must then have signed it.
pub(crate) fn open_unverified(kind: Kind, bytes: &[u8]) -> Result<&[u8]> {
    split(kind, bytes).map(|(body, _)| body)
}

fn split(kind: Kind, bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let bad = |reason: &str| Error::BadSignature {
        what: kind.name(),
        reason: format!("malformed envelope: {reason}"),
    };
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("wrong magic"))?;
    let (&k, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    if k != kind as u8 {
        return Err(bad("wrong document kind"));
    }
    if rest.len() < 4 {
        return Err(bad("truncated"));
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < len + 1 {
        return Err(bad("truncated body"));
    }
    let (body, rest) = rest.split_at(len);
    let (&count, sigs) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    if sigs.len() != count as usize * SIG_LEN {
        return Err(bad("signature block length is wrong"));
    }
    Ok((body, sigs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let sealed = seal(Kind::Manifest, b"hello", &[&key]).unwrap();
        assert_eq!(
            open(Kind::Manifest, &sealed, &[key.public()]).unwrap(),
            b"hello"
        );
        // Wrong kind, unknown key, any flipped byte, truncation, trailing bytes.
        assert!(open(Kind::Pointer, &sealed, &[key.public()]).is_err());
        let unknown = open(Kind::Manifest, &sealed, &[other.public()]).unwrap_err();
        assert!(unknown.to_string().contains("unknown key"), "{unknown}");
        // Both the key seen and the trusted one, as short fingerprints.
        let seen = key.public().fmt_short();
        let want = format!("signed by {seen}; trusted: {}", other.public().fmt_short());
        assert!(unknown.to_string().contains(&want), "{unknown}");
        assert_eq!(seen.len(), "ed25519:".len() + 8 + '…'.len_utf8(), "{seen}");
        assert!(
            key.public()
                .to_string()
                .starts_with(seen.trim_end_matches('…'))
        );
        let unsigned = seal(Kind::Manifest, b"hello", &[]).unwrap();
        let none = open(Kind::Manifest, &unsigned, &[key.public()]).unwrap_err();
        assert!(
            none.to_string().contains("signed by none; trusted: "),
            "{none}"
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                open(Kind::Manifest, &bad, &[key.public()]).is_err(),
                "byte {i}"
            );
        }
        for n in 0..sealed.len() {
            assert!(open(Kind::Manifest, &sealed[..n], &[key.public()]).is_err());
        }
        let mut long = sealed.clone();
        long.push(0);
        assert!(open(Kind::Manifest, &long, &[key.public()]).is_err());
    }

    #[test]
    fn detached_signatures_attach_and_count_toward_thresholds() {
        let (a, b) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let keys = [a.public(), b.public()];
        let unsigned = seal(Kind::Root, b"body", &[]).unwrap();
        assert!(open_threshold(Kind::Root, &unsigned, &keys, 1).is_err());
        // An external signer signs the message; attaching checks it.
        let external = a.sign(&signing_message(Kind::Root, b"body"));
        let one = attach(Kind::Root, &unsigned, &a.public(), &external).unwrap();
        assert!(attach(Kind::Root, &unsigned, &b.public(), &external).is_err());
        assert_eq!(open_threshold(Kind::Root, &one, &keys, 1).unwrap(), b"body");
        let err = open_threshold(Kind::Root, &one, &keys, 2).unwrap_err();
        assert!(
            err.to_string()
                .contains("1 valid signature(s) of trusted keys, 2 needed"),
            "{err}"
        );
        // The same key again does not make two.
        let again = sign(Kind::Root, &one, &a).unwrap();
        assert!(open_threshold(Kind::Root, &again, &keys, 2).is_err());
        let both = sign(Kind::Root, &one, &b).unwrap();
        assert_eq!(
            open_threshold(Kind::Root, &both, &keys, 2).unwrap(),
            b"body"
        );
        assert_eq!(signers(Kind::Root, &both).unwrap().len(), 2);
        // A signature made for another kind never counts.
        let other = b.sign(&signing_message(Kind::Manifest, b"body"));
        assert!(attach(Kind::Root, &one, &b.public(), &other).is_err());
    }

    #[test]
    fn kind_is_read_from_the_header() {
        for kind in [
            Kind::Manifest,
            Kind::Pointer,
            Kind::Root,
            Kind::RollbackDirective,
        ] {
            let sealed = seal(kind, b"body", &[]).unwrap();
            assert_eq!(Kind::of(&sealed).unwrap(), kind);
        }
        let mut unknown = seal(Kind::Root, b"body", &[]).unwrap();
        unknown[MAGIC.len()] = 9;
        assert!(
            Kind::of(&unknown)
                .unwrap_err()
                .to_string()
                .contains("kind 9")
        );
        assert!(Kind::of(b"RELSYNC").is_err());
        assert!(Kind::of(b"not an envelope").is_err());
    }
}
