//! Where signed metadata and packs live on an origin:
//!
//! ```text
//! channels/<channel>              channel pointer
//! manifests/<id>                  manifest
//! manifests/<id>.from-<base>      the same manifest as a delta against manifest <base>
//! packs/<id>                      packs of frames
//! keys/root-<n>                   the root chain
//! ```

use crate::{ManifestId, PackId};

/// Origin path of a channel pointer.
pub fn channel_path(channel: &str) -> String {
    format!("channels/{channel}")
}

/// Origin path of a manifest.
pub fn manifest_path(id: &ManifestId) -> String {
    format!("manifests/{id}")
}

/// Origin path of manifest `id` as a delta against manifest `base`.
pub fn manifest_delta_path(id: &ManifestId, base: &ManifestId) -> String {
    format!("manifests/{id}.from-{base}")
}

/// Origin path of root document `version` (1, 2, ...).
pub fn root_path(version: u64) -> String {
    format!("keys/root-{version}")
}

/// Origin path of a pack.
pub fn pack_path(id: &PackId) -> String {
    format!("packs/{id}")
}

/// Checks a channel name (it becomes a file name on the origin), or a platform name.
pub fn valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}
