//! The channel pointer: a small signed envelope that names the current release.
//!
//! Input: a mode byte (modulo 3), then
//! - 0 envelope: raw envelope bytes, opened for a one-key and a two-key channel role;
//! - 1 body: a signer mask byte, a threshold byte, then a pointer body that the target seals
//!   with the fixed keys of the mask and opens for the role {key 0, key 1, key 2} with that
//!   threshold (1 to 3); acceptance must match counting the distinct signers of the role;
//! - 2 rollback directive: a flags byte, then either (bit 0 clear) raw directive envelope
//!   bytes, opened for the release role {key 1, key 2} with threshold 1 or 2 (bit 1), or
//!   (bit 0 set) a signer mask byte and a directive body that the target seals and checks as
//!   carried by a pointer made to fit it (bit 2: offering another version; bit 3: not listing
//!   its last version as yanked); acceptance must match the directive rules, the binding and
//!   the distinct release keys that signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relsync_engine::ManifestId;
use relsync_engine::directive::{self, RollbackDirective};
use relsync_engine::envelope::{self, Kind};
use relsync_engine::manifest::{FORMAT_VERSION, Pointer, limits};
use relsync_engine::root::RoleKeys;
use relsync_fuzz::{Reader, keys};

fuzz_target!(init: relsync_fuzz::seeds::on_init("pointer"), |data: &[u8]| {
    let mut input = Reader::new(data);
    let mode = input.u8() % 3;
    if mode == 2 {
        return rollback_directive(input);
    }
    if mode == 0 {
        let bytes = input.rest();
        let decoded = relsync_engine::dangerous::pointer(bytes);
        for role in [
            RoleKeys::single(keys::public(0)),
            RoleKeys {
                keys: vec![keys::public(0), keys::public(1)],
                threshold: 2,
            },
        ] {
            if let Ok(p) = Pointer::open(bytes, &role) {
                assert_eq!(decoded.as_ref().ok(), Some(&p), "open and decode_unverified differ");
                round_trip(&p);
            }
        }
        return;
    }
    let signers = keys::signers(input.u8());
    let threshold = 1 + u32::from(input.u8() % 3);
    let body = input.rest();
    let role = RoleKeys {
        keys: vec![keys::public(0), keys::public(1), keys::public(2)],
        threshold,
    };
    let Ok(bytes) = envelope::seal(Kind::Pointer, body, &keys::secrets(&signers)) else {
        return;
    };
    let opened = Pointer::open(&bytes, &role);
    let mut distinct: Vec<usize> = signers.iter().copied().filter(|&i| i < 3).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let decodes = postcard::from_bytes::<Pointer>(body).is_ok_and(|p| {
        p.format == FORMAT_VERSION
            && p.manifest_deltas.len() <= limits::MANIFEST_DELTAS
            && p.rollout_percent <= 100
            && p.yanked.len() <= limits::YANKED
            && !p.yanked.contains(&p.version)
            && (1..p.yanked.len()).all(|i| !p.yanked[..i].contains(&p.yanked[i]))
            && p.rollback.as_ref().is_none_or(|d| d.len() <= directive::limits::DIRECTIVE_BYTES)
    });
    assert_eq!(
        opened.is_ok(),
        decodes && distinct.len() as u32 >= threshold,
        "signers {signers:?}, threshold {threshold}: {opened:?}"
    );
    if let Ok(p) = opened {
        round_trip(&p);
    }
});

/// An accepted pointer seals and opens back to itself.
fn round_trip(p: &Pointer) {
    let again = p
        .seal(&[keys::secret(3)])
        .expect("sealing an accepted pointer");
    let opened = Pointer::open(&again, &RoleKeys::single(keys::public(3)))
        .expect("a re-sealed pointer opens");
    assert_eq!(&opened, p);
}

/// Mode 2: a rollback directive, raw or sealed by the target and carried by a pointer.
fn rollback_directive(mut input: Reader) {
    let flags = input.u8();
    let release = RoleKeys {
        keys: vec![keys::public(1), keys::public(2)],
        threshold: 1 + u32::from(flags >> 1 & 1),
    };
    if flags & 1 == 0 {
        let bytes = input.rest();
        let decoded = relsync_engine::dangerous::directive(bytes);
        if let Ok(d) = RollbackDirective::open(bytes, &release) {
            assert_eq!(
                decoded.as_ref().ok(),
                Some(&d),
                "open and decode_unverified differ"
            );
            // As many signatures as needed, so the result is no larger than what was accepted.
            let signers = [keys::secret(1), keys::secret(2)];
            let again = d
                .seal(&signers[..release.threshold as usize])
                .expect("sealing an accepted directive");
            let reopened =
                RollbackDirective::open(&again, &release).expect("a re-sealed directive opens");
            assert_eq!(reopened, d);
        }
        return;
    }
    let signers = keys::signers(input.u8());
    let body = input.rest();
    let Ok(bytes) = envelope::seal(Kind::RollbackDirective, body, &keys::secrets(&signers)) else {
        return;
    };
    let decoded = postcard::from_bytes::<RollbackDirective>(body).ok();
    let mut pointer = Pointer {
        format: FORMAT_VERSION,
        product: "app".into(),
        channel: "stable".into(),
        version: semver::Version::new(1, 0, 0),
        root_version: 0,
        manifest: ManifestId([1; 32]),
        manifest_len: 1,
        manifest_deltas: Vec::new(),
        issued_unix: 0,
        expires_unix: u64::MAX,
        rollout_percent: 100,
        yanked: Vec::new(),
        rollback: Some(bytes.clone()),
    };
    if let Some(d) = &decoded {
        pointer.product = d.product.clone();
        pointer.channel = d.channel.clone();
        pointer.version = d.to_version.clone();
        pointer.manifest = d.to;
        pointer.yanked = d.from.clone();
    }
    if flags & 4 != 0 {
        pointer.version.patch = pointer.version.patch.wrapping_add(1);
    }
    if flags & 8 != 0 {
        pointer.yanked.pop();
    }
    let verified = RollbackDirective::verified(&pointer, &release);
    let mut distinct: Vec<usize> = signers
        .iter()
        .copied()
        .filter(|&i| i == 1 || i == 2)
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let follows_rules = decoded.as_ref().is_some_and(|d| {
        d.format == FORMAT_VERSION
            && !d.from.is_empty()
            && d.from.len() <= directive::limits::FROM
            && (1..d.from.len()).all(|i| !d.from[..i].contains(&d.from[i]))
            && !d.from.contains(&d.to_version)
            && d.product == pointer.product
            && d.channel == pointer.channel
            && d.to_version == pointer.version
            && d.to == pointer.manifest
            && d.from.iter().all(|v| pointer.yanked.contains(v))
    });
    assert_eq!(
        verified.as_ref().is_ok_and(Option::is_some),
        follows_rules
            && bytes.len() <= directive::limits::DIRECTIVE_BYTES
            && distinct.len() as u32 >= release.threshold,
        "signers {signers:?}, threshold {}, flags {flags:#x}: {verified:?}",
        release.threshold
    );
    if let Ok(Some(d)) = verified {
        assert_eq!(Some(&d), decoded.as_ref());
        assert!(d.from.iter().all(|v| d.covers(v)));
    }
}
