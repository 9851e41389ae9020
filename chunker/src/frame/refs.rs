//! References in executables, for deltas that see through moved code (issue 20).
//!
//! A recompiled executable changes almost everywhere because its references (call and branch
//! targets, RIP-relative operands) shift when the code between them grows or shrinks. The
//! publisher can predict most of those shifts from the old image; a delta frame then only
//! carries what it could not predict. Both sides must find exactly the same references in the
//! old image, so the scanner here is part of the release format: changing what it finds is a
//! new codec version. So far: the image layout ([`elf`]) and the references in it ([`x86_64`]).

pub mod elf;
pub mod x86_64;
