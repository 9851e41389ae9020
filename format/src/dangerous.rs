//! Decoding without verifying.
//!
//! Everything here skips the signature checks the rest of the format makes before it decodes
//! a document: for a publisher reading its own origin, a tool that displays a document, and
//! an install's own store, which verified each manifest when it took it. A client deciding
//! what to trust never calls these: it opens documents through [`crate::manifest::Pointer::open`],
//! [`crate::manifest::TrustedManifest::open_release`], [`crate::root::Root::open_next`] and
//! [`crate::directive::RollbackDirective::open`].

use crate::Result;
use crate::directive::RollbackDirective;
use crate::envelope::{self, Kind};
use crate::manifest::{Manifest, Pointer, TrustedManifest};
use crate::root::Root;

/// A manifest envelope's body, decoded, its signatures unchecked.
pub fn manifest(bytes: &[u8]) -> Result<Manifest> {
    Manifest::decode_unverified(bytes)
}

/// A channel pointer, decoded, its signature and rules unchecked.
pub fn pointer(bytes: &[u8]) -> Result<Pointer> {
    Pointer::decode_unverified(bytes)
}

/// A root document, decoded, its signatures unchecked.
pub fn root(bytes: &[u8]) -> Result<Root> {
    Root::read_unverified(bytes)
}

/// A rollback directive, decoded, its signatures and rules unchecked.
pub fn directive(bytes: &[u8]) -> Result<RollbackDirective> {
    RollbackDirective::decode_unverified(bytes)
}

/// The body of an envelope of `kind`, its signatures unchecked.
pub fn envelope_body(kind: Kind, bytes: &[u8]) -> Result<&[u8]> {
    envelope::open_unverified(kind, bytes)
}

/// A manifest from a source already trusted, without its signatures: the install's own
/// store (the keys that signed an installed release may since have been rotated out), or a
/// publisher reading its own origin. Its structure is still validated.
pub fn trusted_manifest(bytes: Vec<u8>) -> Result<TrustedManifest> {
    TrustedManifest::open_local(bytes)
}
