//! check: fetch the channel pointer and manifest, and trust them only once verified.

use std::time::{SystemTime, UNIX_EPOCH};

use semver::Version;
use serde::Serialize;
use tracing::warn;

use crate::directive::RollbackDirective;
use crate::layout::{channel_path, manifest_delta_path, manifest_path, root_path};
use crate::manifest::{Pointer, TrustedManifest, decompress_envelope, limits};
use crate::root::{self, Root};
use std::sync::Arc;

use crate::install::store::{Release, Store, TrustCopy, TrustedState};
use crate::layout::InstallLayout;
use crate::peers::Peers;
use crate::runtime::blocking;
use crate::source::Origin;
use crate::{Error, Result, UpdaterConfig};

/// Verified metadata for the release a channel offers, next to what is installed.
#[derive(Debug)]
pub struct Checked {
    pub(crate) pointer: Pointer,
    pub(crate) target: TrustedManifest,
    pub(crate) installed: Option<Release>,
    pub(crate) previous: Option<Release>,
    /// `current` points at the installed release's directory, which exists.
    pub(crate) installed_on_disk: bool,
    /// Why the offered release is not taken, if it is not.
    pub(crate) held: Option<Hold>,
    /// The pointer's rollback directive, verified under the release role.
    pub(crate) directive: Option<RollbackDirective>,
}

/// Why a check takes nothing although the channel names a release other than the installed
/// one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Hold {
    /// The channel offers a release no newer than the installed one: after a switch to a
    /// channel behind this one, or a yank without a rollback directive the release role
    /// signed. The install waits for the channel to pass it.
    Behind,
    /// A staged rollout that has not reached this install's bucket yet.
    Rollout {
        /// The share of installs the publisher has let through, in percent.
        percent: u8,
    },
    /// This install marked the release bad (it failed its trial here, or a pointer listed it
    /// as yanked); a newer one is needed.
    MarkedBad,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Behind => f.write_str("the channel offers no newer release"),
            Hold::Rollout { percent } => write!(
                f,
                "staged rollout at {percent}% has not reached this install"
            ),
            Hold::MarkedBad => {
                f.write_str("the release is marked bad here (it failed its trial, or was yanked)")
            }
        }
    }
}

impl Checked {
    /// The version the channel offers.
    pub fn version(&self) -> &Version {
        &self.pointer.version
    }

    /// The installed version, if any.
    pub fn installed_version(&self) -> Option<&Version> {
        self.installed.as_ref().map(|r| &r.manifest.version)
    }

    /// Whether there is nothing to take: the offered release is the installed one, or it is
    /// held back.
    pub fn up_to_date(&self) -> bool {
        self.held.is_some()
            || self.installed_on_disk
                && self
                    .installed
                    .as_ref()
                    .is_some_and(|r| r.manifest.id() == self.pointer.manifest)
    }

    /// Why the offered release is not taken.
    pub fn held(&self) -> Option<&Hold> {
        self.held.as_ref()
    }

    /// The offered release is signed as critical.
    pub fn critical(&self) -> bool {
        self.target.critical
    }

    /// The offered release's notes.
    pub fn notes(&self) -> &str {
        &self.target.notes
    }

    /// The installed release is yanked, and the release role signed the directive to go back
    /// to the offered one.
    pub fn directed_back(&self) -> bool {
        self.installed_version()
            .is_some_and(|v| self.directive.as_ref().is_some_and(|d| d.covers(v)))
    }
}

/// How far ahead of our clock a signed issue time may move trusted time.
const MAX_CLOCK_SKEW_SECS: u64 = 24 * 3600;

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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
    async fn get(
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
}

/// Unverified copies of one document.
struct Copies {
    bytes: Vec<Vec<u8>>,
    from_peers: bool,
}

/// The first candidate `open` accepts, or the first error.
fn first_valid<T>(
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

/// Runs the check stage. With `persist`, records the newly trusted state.
pub(crate) async fn check(
    source: MetaSource<'_>,
    config: &UpdaterConfig,
    layout: &InstallLayout,
    store: &Arc<Store>,
    persist: bool,
) -> Result<Checked> {
    let (states, copy, installed, previous, bad) = {
        let (store, layout) = (store.clone(), layout.clone());
        blocking(move || {
            let copy = TrustCopy::read(&layout.state_dir()?)?.unwrap_or_default();
            // The copy's marks survive a rebuilt database, like its floors.
            let mut bad = store.bad_releases()?;
            for lost in &copy.bad {
                if !bad.iter().any(|b| b.version == lost.version) {
                    store.mark_bad(&lost.version, &lost.reason)?;
                    bad.push(lost.clone());
                }
            }
            Ok((
                store.trusted_states()?,
                copy,
                store.current()?,
                store.previous()?,
                bad,
            ))
        })
        .await?
    };
    let db_state = states
        .iter()
        .find_map(|(name, state)| (*name == config.channel).then(|| state.clone()));
    // The copy only ever raises the floor: it matters once a lost database was rebuilt.
    let trusted_state = match (db_state, copy.state(&config.channel).cloned()) {
        (Some(db), Some(copy)) if copy.highest_version > db.highest_version => Some(copy),
        (None, copy) => copy,
        (db, _) => db,
    };
    let installed_on_disk = installed.as_ref().is_some_and(|r| {
        crate::install::switch::current_dir(layout).as_deref() == Some(r.dir.as_str())
            && layout.release(&r.dir).is_dir()
    });
    // Trusted time is one clock, whatever the channel.
    let latest = states
        .iter()
        .chain(&copy.states)
        .map(|(_, s)| s.time_unix)
        .max();
    let now = now_unix().max(latest.unwrap_or(0));

    let path = channel_path(&config.channel);
    let mut candidates = source
        .get(
            &path,
            (&path, limits::POINTER_BYTES),
            "channel pointer",
            limits::POINTER_BYTES,
        )
        .await?
        .bytes;
    // Newest first: a peer's older pointer must not shadow a newer one.
    candidates.sort_by_cached_key(|bytes| {
        std::cmp::Reverse(
            relsync_format::dangerous::pointer(bytes)
                .ok()
                .map(|p| p.version),
        )
    });
    let mut opened = Err(Error::malformed("channel pointer", "no copy to check"));
    for bytes in candidates {
        opened = async {
            let (root, new_root) =
                trusted_root(source, config, store, copy.root.clone(), &bytes).await?;
            if root.version > 0 {
                root.check_fresh(now)?;
            }
            let pointer = Pointer::open(&bytes, &root.channel)?;
            // Going below the trusted version takes the release role, never the channel's.
            let directive = RollbackDirective::verified(&pointer, &root.release)?;
            Ok((root, new_root, pointer, directive, bytes))
        }
        .await;
        if opened.is_ok() {
            break;
        }
    }
    let (root, new_root, pointer, directive, pointer_bytes) = opened?;
    expect_eq("channel", &config.channel, &pointer.channel)?;
    // The product is bound: by the config, else by the installed release, else by a root
    // document (pinned, or walked to). A key that signs several products cannot swap one
    // for another, and a fresh install with none of these says what the origin offers.
    let product = config
        .product
        .as_deref()
        .or(installed.as_ref().map(|r| r.manifest.product.as_str()))
        .or((root.version > 0).then_some(root.product.as_str()));
    match product {
        Some(product) => expect_eq("product", product, &pointer.product)?,
        None => {
            return Err(Error::ProductRequired {
                offered: pointer.product.clone(),
            });
        }
    }
    if pointer.expires_unix < now {
        return Err(Error::Expired {
            what: "channel pointer",
            expires_unix: pointer.expires_unix,
            now_unix: now,
        });
    }
    // A signed yank may move the channel back past what was seen. (A switch to a channel
    // behind the installed release is held below, never taken: each channel has its floor.)
    let withdrawn = |seen: &Version| pointer.yanked.contains(seen);
    if let Some(seen) = &trusted_state {
        if pointer.version < seen.highest_version && !withdrawn(&seen.highest_version) {
            return Err(Error::Rollback {
                offered: pointer.version.clone(),
                seen: seen.highest_version.clone(),
            });
        }
        if pointer.version == seen.highest_version && pointer.manifest != seen.manifest {
            return Err(Error::Mismatch {
                what: "manifest for an already trusted version",
                expected: seen.manifest.to_string(),
                got: pointer.manifest.to_string(),
            });
        }
    }

    let held_release = [&installed, &previous]
        .into_iter()
        .flatten()
        .find(|r| r.manifest.id() == pointer.manifest);
    let target = match held_release {
        Some(release) => release.manifest.clone(),
        _ => {
            let held = [&installed, &previous];
            let base = held.into_iter().flatten().find_map(|r| {
                let id = r.manifest.id();
                let delta = pointer.manifest_deltas.iter().find(|d| d.base == id)?;
                Some((delta, &r.manifest))
            });
            let (path, what, len) = match base {
                Some((delta, _)) => (
                    manifest_delta_path(&pointer.manifest, &delta.base),
                    "manifest delta",
                    delta.len,
                ),
                None => (
                    manifest_path(&pointer.manifest),
                    "manifest",
                    pointer.manifest_len,
                ),
            };
            // Peers keep whole manifests, not deltas, compressed their own way.
            let whole = manifest_path(&pointer.manifest);
            let files = source
                .get(
                    &path,
                    (&whole, limits::MANIFEST_BYTES),
                    what,
                    len.min(limits::MANIFEST_BYTES),
                )
                .await?;
            let base = base.map(|(_, m)| m.clone()).filter(|_| !files.from_peers);
            let (id, release) = (pointer.manifest, root.release.clone());
            blocking(move || {
                first_valid(files.bytes, |file| {
                    let envelope = decompress_envelope(&file, base.as_ref().map(|m| m.bytes()))?;
                    Ok(TrustedManifest::open_release(envelope, &id, &release)?)
                })
            })
            .await?
        }
    };
    expect_eq("manifest channel", &pointer.channel, &target.channel)?;
    expect_eq("manifest product", &pointer.product, &target.product)?;
    if let Some(platform) = &target.platform {
        expect_eq("platform", &config.platform, platform)?;
    }
    expect_eq(
        "manifest version",
        &pointer.version.to_string(),
        &target.version.to_string(),
    )?;
    if installed.is_none() && target.expires_unix < now {
        return Err(Error::Expired {
            what: "manifest",
            expires_unix: target.expires_unix,
            now_unix: now,
        });
    }

    if installed.is_none()
        && let Some(bad) = bad.iter().find(|b| b.version == pointer.version)
    {
        return Err(Error::MarkedBad {
            version: bad.version.clone(),
            reason: bad.reason.clone(),
        });
    }
    let directed_back = |version: &Version| directive.as_ref().is_some_and(|d| d.covers(version));
    let held = match &installed {
        Some(release) if release.manifest.id() != pointer.manifest => {
            let directed_back = directed_back(&release.manifest.version);
            let bucket = || {
                crate::manifest::rollout_bucket(
                    &read_install_id(layout).unwrap_or_default(),
                    &pointer.channel,
                    &pointer.version,
                )
            };
            if pointer.version <= release.manifest.version && !directed_back {
                Some(Hold::Behind)
            } else if bad.iter().any(|b| b.version == pointer.version) {
                Some(Hold::MarkedBad)
            } else if !target.critical && !directed_back && bucket() >= pointer.rollout_percent {
                Some(Hold::Rollout {
                    percent: pointer.rollout_percent,
                })
            } else {
                None
            }
        }
        _ => None,
    };

    if persist {
        if let Some(envelope) = new_root {
            let store = store.clone();
            blocking(move || store.set_trusted_root(&envelope)).await?;
        }
        // A publisher's clock running ahead must not push trusted time far forward.
        let time_unix = now.max(pointer.issued_unix.min(now_unix() + MAX_CLOCK_SKEW_SECS));
        // The floor never moves down (a yank or another channel may offer less).
        let state = match &trusted_state {
            Some(seen) if seen.highest_version > pointer.version => TrustedState {
                time_unix,
                ..seen.clone()
            },
            _ => TrustedState {
                highest_version: pointer.version.clone(),
                manifest: pointer.manifest,
                time_unix,
            },
        };
        let (store, layout) = (store.clone(), layout.clone());
        let channel = config.channel.clone();
        // Remembered, so a replay of a pointer from before the yank cannot bring it back. The
        // release running here is marked only on the release role's word: a mark lets an
        // install go down, which the channel role alone must not make it do.
        let running = installed.as_ref().map(|r| &r.manifest.version);
        let newly_yanked: Vec<Version> = pointer
            .yanked
            .iter()
            .filter(|v| !bad.iter().any(|b| &b.version == *v))
            .filter(|v| running != Some(*v) || directed_back(v))
            .cloned()
            .collect();
        blocking(move || {
            for version in &newly_yanked {
                store.mark_bad(version, "yanked by the publisher")?;
            }
            store.set_trusted_state(&channel, &state)?;
            store.set_pointer(&channel, &pointer_bytes)?;
            TrustCopy {
                states: store.trusted_states()?,
                root: store.trusted_root()?,
                bad: store.bad_releases()?,
            }
            .write(&layout.state_dir()?)
        })
        .await?;
    }
    Ok(Checked {
        pointer,
        target,
        installed,
        previous,
        installed_on_disk,
        held,
        directive,
    })
}

/// The install id's file in `.relsync`.
const INSTALL_ID_FILE: &str = "install-id";

/// This install's random id, if it has a readable one (installs get one when opened).
fn read_install_id(layout: &InstallLayout) -> Option<[u8; 16]> {
    let bytes = layout.state_dir().ok()?.read(INSTALL_ID_FILE, 64).ok()??;
    let mut id = [0; 16];
    hex::decode_to_slice(std::str::from_utf8(&bytes).ok()?.trim(), &mut id).ok()?;
    Some(id)
}

/// Reads this install's random id, creating it on first use (mode 0600, never through a
/// link).
pub(crate) fn ensure_install_id(layout: &InstallLayout) -> Result<[u8; 16]> {
    // A link (or anything unreadable) in its place is an error, not a reason to start over.
    if layout.state_dir()?.read(INSTALL_ID_FILE, 64)?.is_some()
        && let Some(id) = read_install_id(layout)
    {
        return Ok(id);
    }
    let mut id = [0; 16];
    getrandom::fill(&mut id).map_err(|e| Error::Io {
        op: "generating an install id for",
        path: layout.install_id(),
        source: std::io::Error::other(e.to_string()),
    })?;
    layout
        .state_dir()?
        .write_atomic(INSTALL_ID_FILE, hex::encode(id).as_bytes())?;
    Ok(id)
}

/// The root to check `pointer` (not yet verified) against: the newest trusted one (stored,
/// else the pinned root or keys), walked forward along `keys/root-<n>` up to the root version
/// the pointer names. Returns the root and, if it moved, its envelope to persist.
///
/// The pointer's hint is unverified, but only picks how far to walk: every step is checked
/// against the root before it, and the pointer must then verify under the result.
async fn trusted_root(
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

fn expect_eq(what: &'static str, expected: &str, got: &str) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::Mismatch {
            what,
            expected: expected.to_owned(),
            got: got.to_owned(),
        })
    }
}
