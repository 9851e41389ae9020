//! References in executables, for deltas that see through moved code (issue 20).
//!
//! A recompiled executable changes almost everywhere because its references (call and branch
//! targets, RIP-relative operands) shift when the code between them grows or shrinks. The
//! publisher can predict most of those shifts from the old image; a delta frame then only
//! carries what it could not predict. Both sides must find exactly the same references in the
//! old image, so the scanner here is part of the release format: changing what it finds is a
//! new codec version. The image layout is [`elf`], the references in it [`x86_64`], and the projection that
//! turns them into zero diff bytes [`Projection`].

pub mod elf;
mod project;
pub mod x86_64;

pub use project::{
    Labels, MAX_IMAGE_BYTES, MAX_REFERENCES, MAX_TARGETS, OldRefs, Projection, VERSION, Votes,
    encode_side, max_side_len,
};
