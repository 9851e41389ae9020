//! The root of trust: a pinned root document, then the chain of rotations a client walks.
//!
//! Input: a mode byte (modulo 3), then
//! - 0 envelopes: up to 8 documents (u16 length, bytes): the first is pinned
//!   (`Root::open_pinned`), each later one must follow the newest accepted root
//!   (`Root::open_next`); a refused one is skipped;
//! - 1 bodies: the same, but each document is a signer mask byte and a root body that the
//!   target seals with the fixed keys of the mask;
//! - 2 model: `arbitrary` root documents over the fixed keys, sealed by the keys they pick;
//!   every decision must match [`relsync_fuzz::model::RootModel`].
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use relsync_engine::envelope::{self, Kind};
use relsync_engine::root::Root;
use relsync_fuzz::model::{ArbRoot, RootModel};
use relsync_fuzz::{Reader, keys};

/// Most documents in one input.
const MAX_DOCS: usize = 8;

fuzz_target!(init: relsync_fuzz::seeds::on_init("root_chain"), |data: &[u8]| {
    let mut input = Reader::new(data);
    match input.u8() % 3 {
        0 => walk(input.docs(MAX_DOCS)),
        1 => {
            let sealed: Vec<Vec<u8>> = input
                .docs(MAX_DOCS)
                .into_iter()
                .filter_map(|doc| {
                    let mut doc = Reader::new(doc);
                    let signers = keys::signers(doc.u8());
                    envelope::seal(Kind::Root, doc.rest(), &keys::secrets(&signers)).ok()
                })
                .collect();
            walk(sealed.iter().map(Vec::as_slice).collect());
        }
        _ => model(input.rest()),
    }
});

/// Pins the first document and walks the rest.
fn walk(docs: Vec<&[u8]>) {
    let Some((first, rest)) = docs.split_first() else {
        return;
    };
    let _ = relsync_engine::dangerous::root(first);
    let Ok(mut current) = Root::open_pinned(first) else {
        return;
    };
    for doc in rest {
        if let Ok(next) = current.open_next(doc) {
            assert_eq!(Some(next.version), current.version.checked_add(1));
            current = next;
        }
    }
}

/// Builds a chain from the model and checks every decision against it.
fn model(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(roots) = Vec::<ArbRoot>::arbitrary(&mut u) else {
        return;
    };
    let mut current: Option<Root> = None;
    for arb in roots.iter().take(MAX_DOCS) {
        let root = arb.build(current.as_ref().map_or(0, |c| c.version));
        let signers = keys::signers(arb.signers);
        let body = postcard::to_stdvec(&root).expect("a root encodes");
        let bytes = envelope::seal(Kind::Root, &body, &keys::secrets(&signers)).expect("sealing");
        match &current {
            None => {
                let pinned = Root::open_pinned(&bytes);
                assert_eq!(
                    pinned.is_ok(),
                    RootModel::pins(&root, &signers),
                    "pinning {root:?} signed by {signers:?}: {pinned:?}"
                );
                current = pinned.ok();
            }
            Some(at) => {
                let next = at.open_next(&bytes);
                assert_eq!(
                    next.is_ok(),
                    RootModel::follows(at, &root, &signers, bytes.len()),
                    "{root:?} signed by {signers:?} after {at:?}: {next:?}"
                );
                if let Ok(next) = next {
                    assert_eq!(next, root);
                    current = Some(next);
                }
            }
        }
    }
}
