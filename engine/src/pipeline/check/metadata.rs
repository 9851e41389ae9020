//! Where the check stage's signed metadata comes from (the origin, else peers), and the walk
//! along the root chain to the root a pointer names.

use std::sync::Arc;

use tracing::warn;

use crate::install::store::Store;
use crate::layout::{channel_path, root_path};
use crate::manifest::limits;
use crate::peers::Peers;
use crate::root::{self, Root};
use crate::runtime::blocking;
use crate::source::Origin;
use crate::{Error, Result, UpdaterConfig};

/// Where signed metadata comes from: the origin or, when it cannot answer, peers. Either way
/// it is only a candidate until verified.
#[derive(Clone, Copy)]
pub(crate) struct MetaSource<'a> {
    pub origin: &'a Origin,
    pub peers: Option<&'a dyn Peers>,
}

impl MetaSource<'_> {
    /// The origin's copy of `path` (at most `limit` bytes), or, if the origin is unreachable
    /// or lacks it, every peer's copy of `peer` (a path and a limit; the origin's error when no
    /// peer has one).
    pub(super) async fn get(
        &self,
        path: &str,
        peer: (&str, u64),
        what: &'static str,
        limit: u64,
    ) -> Result<Copies> {
        let err = match self.origin.get(path, what, limit).await {
            Ok(bytes) => {
                return Ok(Copies {
                    bytes: vec![bytes],
                    from_peers: false,
                });
            }
            Err(err @ (Error::Http { .. } | Error::NotFound { .. })) => err,
            Err(err) => return Err(err),
        };
        let Some(peers) = self.peers else {
            return Err(err);
        };
        let copies = peers.metadata(peer.0.to_owned(), peer.1).await;
        if copies.is_empty() {
            return Err(err);
        }
        warn!(error = %err, peers = copies.len(), "origin failed; trying {what} from peers");
        Ok(Copies {
            bytes: copies.into_iter().map(|(_, bytes)| bytes).collect(),
            from_peers: true,
        })
    }

    /// Unverified copies of `channel`'s pointer.
    pub(super) async fn pointer(&self, channel: &str) -> Result<Copies> {
        let path = channel_path(channel);
        self.get(
            &path,
            (&path, limits::POINTER_BYTES),
            "channel pointer",
            limits::POINTER_BYTES,
        )
        .await
    }
}

/// Unverified copies of one document.
pub(super) struct Copies {
    pub(super) bytes: Vec<Vec<u8>>,
    pub(super) from_peers: bool,
}

/// The first candidate `open` accepts, or the first error.
pub(super) fn first_valid<T>(
    candidates: Vec<Vec<u8>>,
    mut open: impl FnMut(Vec<u8>) -> Result<T>,
) -> Result<T> {
    let mut first_err = None;
    for candidate in candidates {
        match open(candidate) {
            Ok(value) => return Ok(value),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| Error::malformed("metadata", "no copy to check")))
}

/// The root to check `pointer` (not yet verified) against: the newest trusted one (stored,
/// else the pinned root or keys), walked forward along `keys/root-<n>` up to the root version
/// the pointer names. Returns the root and, if it moved, its envelope to persist.
///
/// The pointer's hint is unverified, but only picks how far to walk: every step is checked
/// against the root before it, and the pointer must then verify under the result.
pub(super) async fn trusted_root(
    source: MetaSource<'_>,
    config: &UpdaterConfig,
    store: &Arc<Store>,
    copy: Option<Vec<u8>>,
    pointer: &[u8],
) -> Result<(Root, Option<Vec<u8>>)> {
    let stored = {
        let store = store.clone();
        blocking(move || store.trusted_root()).await?
    };
    let copy = copy.filter(|bytes| Root::open_pinned(bytes).is_ok());
    let stored = match (stored, copy) {
        (None, copy) => copy,
        (Some(db), Some(copy))
            if relsync_format::dangerous::root(&copy)
                .map(|r| r.version)
                .ok()
                > relsync_format::dangerous::root(&db).map(|r| r.version).ok() =>
        {
            Some(copy)
        }
        (db, _) => db,
    };
    let pinned = match &config.trusted_root {
        Some(bytes) => Root::open_pinned(bytes)?,
        None => Root::from_keys(
            config.product.as_deref().unwrap_or_default(),
            &config.trusted_keys,
        )?,
    };
    let mut root = match stored {
        Some(bytes) => {
            let stored = Root::open_pinned(&bytes)?;
            if stored.version >= pinned.version {
                stored
            } else {
                pinned
            }
        }
        None => pinned,
    };
    let wanted = relsync_format::dangerous::pointer(pointer).map_or(0, |p| p.root_version);
    let steps = wanted.saturating_sub(root.version);
    if steps > root::limits::CHAIN_STEPS {
        return Err(Error::malformed(
            "channel pointer",
            format!(
                "names root version {wanted}, {steps} steps past the trusted {} (at most {})",
                root.version,
                root::limits::CHAIN_STEPS
            ),
        ));
    }
    let mut newest = None;
    while root.version < wanted {
        let path = root_path(root.version + 1);
        let copies = source
            .get(
                &path,
                (&path, root::limits::ROOT_BYTES),
                "root document",
                root::limits::ROOT_BYTES,
            )
            .await?;
        let (next, bytes) =
            first_valid(copies.bytes, |bytes| Ok((root.open_next(&bytes)?, bytes)))?;
        root = next;
        newest = Some(bytes);
    }
    Ok((root, newest))
}
