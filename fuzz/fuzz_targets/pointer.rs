//! The channel pointer: a small signed envelope that names the current release.
//!
//! Input: a mode byte (modulo 2), then
//! - 0 envelope: raw envelope bytes, opened for a one-key and a two-key channel role;
//! - 1 body: a signer mask byte, a threshold byte, then a pointer body that the target seals
//!   with the fixed keys of the mask and opens for the role {key 0, key 1, key 2} with that
//!   threshold (1 to 3); acceptance must match counting the distinct signers of the role.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relsync_engine::envelope::{self, Kind};
use relsync_engine::manifest::{FORMAT_VERSION, Pointer, limits};
use relsync_engine::root::RoleKeys;
use relsync_fuzz::{Reader, keys};

fuzz_target!(init: relsync_fuzz::seeds::on_init("pointer"), |data: &[u8]| {
    let mut input = Reader::new(data);
    if input.u8() & 1 == 0 {
        let bytes = input.rest();
        let decoded = Pointer::decode_unverified(bytes);
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
