//! The plan stage over arbitrary manifests: what an update would link, reuse and fetch.
//!
//! Input: a mode byte, then the manifest. Mode bit 0: the rest is `arbitrary` bytes for a
//! repaired manifest ([`relsync_fuzz::model`], drawing on the installed release's chunks,
//! files and its id as a delta base) rather than a manifest body. Bit 1: plan against the
//! install holding release 1.0.0 rather than the empty one. Bits 2-3: the fetch settings
//! (default, or small ranges and gaps so requests split and merge).
//!
//! The manifest is sealed with no signature and opened with `relsync_engine::dangerous::trusted_manifest`
//! (validation as for a signed one), then planned with `relsync_engine::dangerous::plan`, the
//! plan stage alone;
//! the plan must satisfy [`relsync_fuzz::check::plan`]. The installs are made once per
//! process ([`relsync_fuzz::install`]); planning only reads them.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use relsync_engine::FetchConfig;
use relsync_engine::envelope::{self, Kind};
use relsync_fuzz::model::ArbManifest;
use relsync_fuzz::{Reader, check, install};

fuzz_target!(init: relsync_fuzz::seeds::on_init("plan"), |data: &[u8]| {
    let fixture = install::fixture();
    let mut input = Reader::new(data);
    let mode = input.u8();
    let body = if mode & 1 == 0 {
        input.rest().to_vec()
    } else {
        let mut u = Unstructured::new(input.rest());
        let Ok(model) = ArbManifest::arbitrary(&mut u) else {
            return;
        };
        postcard::to_stdvec(&model.build(&fixture.pool)).expect("a built manifest encodes")
    };
    let Ok(sealed) = envelope::seal(Kind::Manifest, &body, &[]) else {
        return;
    };
    let Ok(target) = relsync_engine::dangerous::trusted_manifest(sealed) else {
        return;
    };
    let fresh = mode & 2 == 0;
    let at = if fresh { &fixture.fresh } else { &fixture.installed };
    let mut fetch = FetchConfig::default();
    match (mode >> 2) & 3 {
        0 => {}
        1 => fetch.coalesce_gap_bytes = 0,
        2 => fetch.max_range_bytes = 4096,
        _ => {
            fetch.max_range_bytes = 1;
            fetch.coalesce_gap_bytes = 1 << 20;
        }
    }
    let planned = relsync_engine::dangerous::plan(
        target.clone(),
        at.release.clone(),
        None,
        &at.layout,
        &at.store,
        &fetch,
    );
    // Planning fails only on local I/O errors, which these installs do not have.
    let planned = planned.expect("planning a valid manifest");
    check::plan(&target, &planned, &fetch, fresh);
});
