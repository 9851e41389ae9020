//! The relsync release format: what a publisher writes and a client verifies, as bytes.
//!
//! - [`ids`]: BLAKE3 content ids ([`ChunkId`], [`ManifestId`], [`PackId`], [`FileHash`]);
//! - [`keys`]: ed25519 keys as text ([`PublicKey`], [`SecretKey`]);
//! - [`envelope`]: the signed envelope around every document;
//! - [`root`]: root documents, roles and thresholds, the root chain;
//! - [`manifest`]: manifests, channel pointers, frames and their codecs;
//! - [`directive`]: rollback directives, the release role's word that installs go back;
//! - [`path`]: the rules a release's paths and links follow;
//! - [`paths`]: where each document lives on an origin;
//! - [`dangerous`]: decoding without verifying, for publishers and tools only.
//!
//! Every document is verified before it is decoded: signatures first, then the body, then
//! the format's rules. The crate does no I/O beyond bytes: fetching, storing and installing
//! belong to `relsync-engine`, publishing to `cdn-publisher`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod dangerous;
mod decode;
pub mod directive;
pub mod envelope;
mod error;
pub mod ids;
pub mod keys;
pub mod manifest;
pub mod path;
pub mod paths;
pub mod root;
mod time;

pub use error::{Error, Result};
pub use ids::{ChunkId, FileHash, ManifestId, PackId};
pub use keys::{PublicKey, SecretKey};
pub use path::{
    MAX_SYMLINK_HOPS, NodeKind, RelPath, TreeIndex, TreeNode, check_symlink_in_tree,
    check_symlink_target, collision_key,
};
pub use time::format_utc;
