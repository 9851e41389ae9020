//! The manifest as a client receives it: a zstd file (or a delta against an older manifest)
//! holding a signed envelope whose body is the postcard manifest.
//!
//! Input: a mode byte (modulo 5), then
//! - 0 file: the manifest file, decompressed and opened with fixed key 0;
//! - 1 delta: a document (u16 length, bytes) holding the base envelope, then the delta file;
//! - 2 envelope: raw envelope bytes, opened under thresholds and re-signed;
//! - 3 body: a signer mask byte, then a manifest body that the target seals with the fixed
//!   keys of the mask, so validation runs behind a good signature;
//! - 4 model: `arbitrary` bytes for a repaired manifest ([`relsync_fuzz::model`]), sealed
//!   and opened like 3.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use relsync_engine::ManifestId;
use relsync_engine::envelope::{self, Kind};
use relsync_engine::manifest::{self, TrustedManifest, limits};
use relsync_engine::root::RoleKeys;
use relsync_fuzz::model::{ArbManifest, Pool};
use relsync_fuzz::{Reader, check, keys};

fuzz_target!(init: relsync_fuzz::seeds::on_init("manifest"), |data: &[u8]| {
    let mut input = Reader::new(data);
    match input.u8() % 5 {
        0 => {
            if let Ok(envelope) = manifest::decompress_envelope(input.rest(), None) {
                open_envelope(envelope);
            }
        }
        1 => {
            let base = input.doc();
            if let Ok(envelope) = manifest::decompress_envelope(input.rest(), Some(base)) {
                open_envelope(envelope);
            }
        }
        2 => raw_envelope(input.rest()),
        3 => {
            let signers = keys::signers(input.u8());
            signed_body(input.rest(), &signers);
        }
        _ => {
            let mut u = Unstructured::new(input.rest());
            if let Ok(model) = ArbManifest::arbitrary(&mut u) {
                let m = model.build(&Pool::default());
                let body = postcard::to_stdvec(&m).expect("a built manifest encodes");
                if let Some(trusted) = signed_body(&body, &[0]) {
                    // What was accepted is what was built.
                    assert_eq!(&*trusted, &m);
                }
            }
        }
    }
});

/// Opens a decompressed envelope as the check stage does, with key 0 trusted.
fn open_envelope(envelope: Vec<u8>) {
    assert!(envelope.len() as u64 <= limits::MANIFEST_BYTES);
    let id = ManifestId::of(&envelope);
    let _ = relsync_engine::dangerous::manifest(&envelope);
    let release = RoleKeys {
        keys: vec![keys::public(0), keys::public(1)],
        threshold: 2,
    };
    let _ = TrustedManifest::open_release(envelope.clone(), &id, &release);
    if let Ok(m) = TrustedManifest::open(envelope, &id, &[keys::public(0)]) {
        check::trusted_manifest(&m);
    }
}

/// Envelope parsing: thresholds, and that adding a good signature makes any well-formed
/// envelope open for that key.
fn raw_envelope(bytes: &[u8]) {
    let trusted = [keys::public(0), keys::public(1)];
    let _ = envelope::signers(Kind::Manifest, bytes);
    for threshold in [0, 1, 2, 3] {
        if let Ok(body) = envelope::open_threshold(Kind::Manifest, bytes, &trusted, threshold) {
            assert!(threshold <= 2, "a threshold above the trusted keys was met");
            assert_eq!(
                Ok(body),
                relsync_engine::dangerous::envelope_body(Kind::Manifest, bytes).map_err(drop)
            );
        }
    }
    let Ok(body) = relsync_engine::dangerous::envelope_body(Kind::Manifest, bytes) else {
        return;
    };
    let _ = relsync_engine::dangerous::manifest(bytes);
    for kind in [Kind::Pointer, Kind::Root] {
        assert!(
            relsync_engine::dangerous::envelope_body(kind, bytes).is_err(),
            "{kind:?} opened a manifest"
        );
    }
    let count = envelope::signers(Kind::Manifest, bytes)
        .expect("well formed")
        .len();
    match envelope::sign(Kind::Manifest, bytes, keys::secret(2)) {
        Ok(more) => {
            let opened = envelope::open(Kind::Manifest, &more, &[keys::public(2)])
                .expect("a fresh signature opens");
            assert_eq!(opened, body);
        }
        Err(_) => assert_eq!(count, 255, "re-signing a well-formed envelope failed"),
    }
}

/// Seals `body` by `signers` and opens it every way a client and publisher can; returns the
/// manifest if it is valid.
fn signed_body(body: &[u8], signers: &[usize]) -> Option<TrustedManifest> {
    let envelope = envelope::seal(Kind::Manifest, body, &keys::secrets(signers)).ok()?;
    let id = ManifestId::of(&envelope);
    let local = relsync_engine::dangerous::trusted_manifest(envelope.clone());
    let by_key0 = TrustedManifest::open(envelope.clone(), &id, &[keys::public(0)]);
    assert_eq!(
        by_key0.is_ok(),
        local.is_ok() && signers.contains(&0),
        "a signature check disagrees with the signers {signers:?}"
    );
    let pair = RoleKeys {
        keys: vec![keys::public(0), keys::public(1)],
        threshold: 2,
    };
    let both = signers.contains(&0) && signers.contains(&1);
    assert_eq!(
        TrustedManifest::open_release(envelope.clone(), &id, &pair).is_ok(),
        local.is_ok() && both,
        "threshold 2 of keys 0 and 1 disagrees with the signers {signers:?}"
    );
    // The wrong id is refused whatever the signature.
    let mut wrong = id;
    wrong.0[0] ^= 1;
    assert!(TrustedManifest::open(envelope, &wrong, &[keys::public(0)]).is_err());
    let m = local.ok()?;
    check::trusted_manifest(&m);
    Some(m)
}
