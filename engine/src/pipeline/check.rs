//! check: fetch the channel pointer and manifest, and trust them only once verified.

mod metadata;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use semver::Version;
use serde::Serialize;

use crate::directive::RollbackDirective;
use crate::install::read_install_id;
use crate::install::store::{BadRelease, Release, StagedRelease, Store, TrustCopy, TrustedState};
use crate::layout::{InstallLayout, manifest_delta_path, manifest_path};
use crate::manifest::{Pointer, TrustedManifest, decompress_envelope, limits};
use crate::root::{RoleKeys, Root};
use crate::runtime::blocking;
use crate::{Error, Result, UpdaterConfig};

pub(crate) use metadata::MetaSource;
use metadata::{first_valid, trusted_root};

/// A release the check stage trusts, next to the releases installed: what the plan stage
/// plans from.
///
/// Only this module makes one: from a channel pointer it verified ([`check`]), from a release
/// an earlier download staged, re-opened under the release role that verified it
/// ([`Checked::staged`]), or around a manifest no one verified, for benchmarks and fuzzers
/// ([`Checked::unverified`], reached only through `relsync_engine::dangerous`).
#[derive(Debug)]
pub struct Checked {
    pub(crate) target: TrustedManifest,
    pub(crate) installed: Option<Release>,
    pub(crate) previous: Option<Release>,
    /// `current` points at the installed release's directory, which exists.
    pub(crate) installed_on_disk: bool,
    /// Why the offered release is not taken, if it is not.
    pub(crate) held: Option<Hold>,
    /// The release role `target` verified under (`None`: it was not verified), recorded with
    /// a staged release so that its install re-opens it under the same keys.
    pub(crate) signers: Option<RoleKeys>,
    /// The channel pointer that offers `target`; `None` for a staged release.
    pub(crate) pointer: Option<VerifiedPointer>,
    /// The target is the installed release, built again because it drifted on disk
    /// (`relsync repair`): never up to date, and the release kept for rollback stays.
    pub(crate) repair: bool,
}

/// A channel pointer the check stage verified, with what it takes to read it again.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedPointer {
    pub(crate) pointer: Pointer,
    /// The pointer as signed.
    pub(crate) bytes: Vec<u8>,
    /// The channel role it verified under.
    pub(crate) channel_role: RoleKeys,
    /// Its rollback directive, verified under the release role.
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
    /// The release an earlier download staged, next to what `store` holds installed now: its
    /// manifest re-opened under the release role that verified it then. Not checked for
    /// expiry again: an offline install may come after its metadata expired.
    pub(crate) fn staged(
        staged: StagedRelease,
        layout: &InstallLayout,
        store: &Store,
    ) -> Result<Self> {
        let Some(signers) = staged.signers else {
            return Err(Error::NotStaged(format!(
                "the staged release {} was staged by an earlier relsync, which did not record \
                 the keys that verified it; download it again (`relsync update \
                 --download-only`)",
                staged.manifest.version
            )));
        };
        let bytes = staged.manifest.bytes().to_vec();
        let target = TrustedManifest::open_release(bytes, &staged.manifest.id(), &signers)?;
        let installed = store.current()?;
        Ok(Self {
            installed_on_disk: installed_on_disk(&installed, layout),
            target,
            installed,
            previous: store.previous()?,
            held: None,
            signers: Some(signers),
            pointer: None,
            repair: false,
        })
    }

    /// `target` as if a check had verified it, next to `installed` and `previous`: for
    /// benchmarks and fuzzers, which plan manifests no one signed. Nothing made from it can be
    /// staged.
    pub(crate) fn unverified(
        target: TrustedManifest,
        installed: Option<Release>,
        previous: Option<Release>,
        layout: &InstallLayout,
    ) -> Self {
        Self {
            installed_on_disk: installed_on_disk(&installed, layout),
            target,
            installed,
            previous,
            held: None,
            signers: None,
            pointer: None,
            repair: false,
        }
    }

    /// The installed release as the target, to build it again from its signed manifest
    /// (kept in the store, verified when it was installed): its files that still verify are
    /// linked, the others written from verified chunks, local or fetched.
    pub(crate) fn repair(layout: &InstallLayout, store: &Store) -> Result<Self> {
        let installed = store
            .current()?
            .ok_or_else(|| Error::NothingInstalled("nothing is installed to repair".into()))?;
        Ok(Self {
            installed_on_disk: installed_on_disk(&Some(installed.clone()), layout),
            target: installed.manifest.clone(),
            installed: Some(installed),
            previous: store.previous()?,
            held: None,
            signers: None,
            pointer: None,
            repair: true,
        })
    }

    /// The version the channel offers.
    pub fn version(&self) -> &Version {
        &self.target.version
    }

    /// The installed version, if any.
    pub fn installed_version(&self) -> Option<&Version> {
        self.installed.as_ref().map(|r| &r.manifest.version)
    }

    /// Whether there is nothing to take: the offered release is the installed one, or it is
    /// held back.
    pub fn up_to_date(&self) -> bool {
        if self.repair {
            return false;
        }
        self.held.is_some()
            || self.installed_on_disk
                && self
                    .installed
                    .as_ref()
                    .is_some_and(|r| r.manifest.id() == self.target.id())
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
        let directive = self.pointer.as_ref().and_then(|p| p.directive.as_ref());
        self.installed_version()
            .is_some_and(|v| directive.is_some_and(|d| d.covers(v)))
    }

    /// The signed way back leads to the release kept for rollback: `current` switches back
    /// to it, with nothing to download.
    pub(crate) fn goes_back_to_kept(&self) -> bool {
        self.directed_back()
            && self.held.is_none()
            && self
                .previous
                .as_ref()
                .is_some_and(|previous| previous.manifest.id() == self.target.id())
    }
}

/// Whether `current` points at `installed`'s directory, which exists.
fn installed_on_disk(installed: &Option<Release>, layout: &InstallLayout) -> bool {
    installed.as_ref().is_some_and(|r| {
        crate::install::switch::current_dir(layout).as_deref() == Some(r.dir.as_str())
            && layout.release(&r.dir).is_dir()
    })
}

/// How far ahead of our clock a signed issue time may move trusted time.
const MAX_CLOCK_SKEW_SECS: u64 = 24 * 3600;

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether the channel's pointer still is, byte for byte, the one `checked` verified: then
/// what was checked and planned from it still holds. Fetches the pointer alone.
pub(crate) async fn pointer_unchanged(
    source: MetaSource<'_>,
    checked: &VerifiedPointer,
) -> Result<bool> {
    let copies = source.pointer(&checked.pointer.channel).await?;
    Ok(copies.bytes.contains(&checked.bytes))
}

/// Whether the channel's pointer now lists `version` as yanked, for a fetch of it to stop.
/// Fetches the pointer alone: a copy equal to `checked` says no at once; another must verify
/// under the channel role `checked` verified under and name the same channel and product. A
/// pointer signed under a newer root does not verify here; the next check walks to it.
pub(crate) async fn withdrawn(
    source: MetaSource<'_>,
    checked: &VerifiedPointer,
    version: &Version,
) -> Result<bool> {
    let copies = source.pointer(&checked.pointer.channel).await?;
    let mut first_err = None;
    for bytes in copies.bytes.iter().filter(|b| **b != checked.bytes) {
        let opened = Pointer::open(bytes, &checked.channel_role)
            .map_err(Error::from)
            .and_then(|pointer| {
                expect_eq("channel", &checked.pointer.channel, &pointer.channel)?;
                expect_eq("product", &checked.pointer.product, &pointer.product)?;
                Ok(pointer)
            });
        match opened {
            Ok(pointer) if pointer.is_yanked(version) => return Ok(true),
            Ok(_) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) if copies.bytes.iter().all(|b| *b != checked.bytes) => Err(e),
        _ => Ok(false),
    }
}

/// What the install holds and trusts before a check: read from the store and the trust copy.
struct LocalState {
    copy: TrustCopy,
    installed: Option<Release>,
    previous: Option<Release>,
    bad: Vec<BadRelease>,
    /// The channel's floor: the database's, raised by the copy's.
    floor: Option<TrustedState>,
    /// Trusted time: the clock, never behind the latest time a verified pointer moved it to.
    now: u64,
}

impl LocalState {
    async fn read(layout: &InstallLayout, store: &Arc<Store>, channel: &str) -> Result<Self> {
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
            .find_map(|(name, state)| (name == channel).then(|| state.clone()));
        // The copy only ever raises the floor: it matters once a lost database was rebuilt.
        let floor = match (db_state, copy.state(channel).cloned()) {
            (Some(db), Some(copy)) if copy.highest_version > db.highest_version => Some(copy),
            (None, copy) => copy,
            (db, _) => db,
        };
        // Trusted time is one clock, whatever the channel.
        let latest = states
            .iter()
            .chain(&copy.states)
            .map(|(_, s)| s.time_unix)
            .max();
        let now = now_unix().max(latest.unwrap_or(0));
        Ok(Self {
            copy,
            installed,
            previous,
            bad,
            floor,
            now,
        })
    }
}

/// A channel pointer verified under the trusted root, walked forward as far as it names.
struct OpenedPointer {
    root: Root,
    /// The newest root document walked to, if the walk moved the trusted root.
    new_root: Option<Vec<u8>>,
    pointer: Pointer,
    directive: Option<RollbackDirective>,
    /// The pointer as signed.
    bytes: Vec<u8>,
}

/// Runs the check stage. With `persist`, records the newly trusted state.
pub(crate) async fn check(
    source: MetaSource<'_>,
    config: &UpdaterConfig,
    layout: &InstallLayout,
    store: &Arc<Store>,
    persist: bool,
) -> Result<Checked> {
    let local = LocalState::read(layout, store, &config.channel).await?;
    let opened = open_pointer(source, config, store, &local).await?;
    bind_pointer(config, &local, &opened)?;
    let target = fetch_target(source, &opened, &local).await?;
    bind_target(config, &local, &opened.pointer, &target)?;
    let held = hold(layout, &local, &opened, &target)?;
    let signers = opened.root.release.clone();
    let channel_role = opened.root.channel.clone();
    let installed_on_disk = installed_on_disk(&local.installed, layout);
    if persist {
        persist_trust(layout, store, &config.channel, &local, &opened).await?;
    }
    let OpenedPointer {
        pointer,
        directive,
        bytes,
        ..
    } = opened;
    Ok(Checked {
        target,
        installed: local.installed,
        previous: local.previous,
        installed_on_disk,
        held,
        signers: Some(signers),
        pointer: Some(VerifiedPointer {
            pointer,
            bytes,
            channel_role,
            directive,
        }),
        repair: false,
    })
}

/// Fetches the channel pointer (from the origin, else from peers) and verifies it: signed by
/// the channel role of the trusted root (walked forward as far as the pointer names), that
/// root fresh, its rollback directive signed by the release role, and for the channel
/// followed. The newest copy that verifies wins.
async fn open_pointer(
    source: MetaSource<'_>,
    config: &UpdaterConfig,
    store: &Arc<Store>,
    local: &LocalState,
) -> Result<OpenedPointer> {
    let mut candidates = source.pointer(&config.channel).await?.bytes;
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
                trusted_root(source, config, store, local.copy.root.clone(), &bytes).await?;
            if root.version > 0 {
                root.check_fresh(local.now)?;
            }
            let pointer = Pointer::open(&bytes, &root.channel)
                .map_err(|e| name_trust(e.into(), &root, "channel"))?;
            // Going below the trusted version takes the release role, never the channel's.
            let directive = RollbackDirective::verified(&pointer, &root.release)?;
            Ok(OpenedPointer {
                root,
                new_root,
                pointer,
                directive,
                bytes,
            })
        }
        .await;
        if opened.is_ok() {
            break;
        }
    }
    let opened = opened?;
    expect_eq("channel", &config.channel, &opened.pointer.channel)?;
    Ok(opened)
}

/// Checks the verified pointer against what this install is bound to: the product, the
/// pointer's expiry at trusted time, and the channel's floor (never below it unless the
/// publisher yanked the floor's version, never another manifest for the floor's version).
fn bind_pointer(config: &UpdaterConfig, local: &LocalState, opened: &OpenedPointer) -> Result<()> {
    let pointer = &opened.pointer;
    // The product is bound: by the config, else by the installed release, else by a root
    // document (pinned, or walked to). A key that signs several products cannot swap one
    // for another, and a fresh install with none of these says what the origin offers.
    let product = config
        .product
        .as_deref()
        .or(local
            .installed
            .as_ref()
            .map(|r| r.manifest.product.as_str()))
        .or((opened.root.version > 0).then_some(opened.root.product.as_str()));
    match product {
        Some(product) => expect_eq("product", product, &pointer.product)?,
        None => {
            return Err(Error::ProductRequired {
                offered: pointer.product.clone(),
            });
        }
    }
    if pointer.expires_unix < local.now {
        return Err(Error::Format(relsync_format::Error::Expired {
            what: "channel pointer",
            expires_unix: pointer.expires_unix,
            now_unix: local.now,
        }));
    }
    // A signed yank may move the channel back past what was seen. (A switch to a channel
    // behind the installed release is held, never taken: each channel has its floor.)
    if let Some(seen) = &local.floor {
        if pointer.version < seen.highest_version && !pointer.is_yanked(&seen.highest_version) {
            return Err(Error::Rollback {
                channel: pointer.channel.clone(),
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
    Ok(())
}

/// The manifest the pointer names: an installed or kept release's as stored, else fetched
/// (as a delta against one of them when the pointer lists one, from peers whole when the
/// origin fails) and verified against the pointer's id and the release role.
async fn fetch_target(
    source: MetaSource<'_>,
    opened: &OpenedPointer,
    local: &LocalState,
) -> Result<TrustedManifest> {
    let pointer = &opened.pointer;
    let held = [&local.installed, &local.previous];
    if let Some(release) = held
        .into_iter()
        .flatten()
        .find(|r| r.manifest.id() == pointer.manifest)
    {
        return Ok(release.manifest.clone());
    }
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
    let (id, release) = (pointer.manifest, opened.root.release.clone());
    blocking(move || {
        first_valid(files.bytes, |file| {
            let envelope = decompress_envelope(&file, base.as_ref().map(|m| m.bytes()))?;
            Ok(TrustedManifest::open_release(envelope, &id, &release)?)
        })
    })
    .await
    .map_err(|e| name_trust(e, &opened.root, "release"))
}

/// A signature by no trusted key, with where the trusted keys came from: the keys given
/// (`--trust`), or a root document (`role` names which of its key sets).
fn name_trust(e: Error, root: &Root, role: &str) -> Error {
    match e {
        Error::Format(relsync_format::Error::BadSignature { what, reason })
            if reason.starts_with("not signed by any trusted key") =>
        {
            let from = if root.version == 0 {
                "the trusted keys are the --trust keys (`trust` in the daemon's config); \
                 trust the key the publisher signs with, as `cdn-publisher keygen` printed it"
                    .to_owned()
            } else {
                format!(
                    "the trusted keys are the {role} role of root document {v} (--trust-root, \
                     or keys/root-{v} on the origin); the publisher must sign with one of them \
                     or rotate the root (`cdn-publisher root rotate`)",
                    v = root.version
                )
            };
            Error::Format(relsync_format::Error::BadSignature {
                what,
                reason: format!("{reason} ({from})"),
            })
        }
        e => e,
    }
}

/// Checks the manifest against the pointer (channel, product, version) and this install
/// (platform; expiry and marks for a fresh install).
fn bind_target(
    config: &UpdaterConfig,
    local: &LocalState,
    pointer: &Pointer,
    target: &TrustedManifest,
) -> Result<()> {
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
    if local.installed.is_none() && target.expires_unix < local.now {
        return Err(Error::Format(relsync_format::Error::Expired {
            what: "manifest",
            expires_unix: target.expires_unix,
            now_unix: local.now,
        }));
    }
    if local.installed.is_none()
        && let Some(bad) = local.bad.iter().find(|b| b.version == pointer.version)
    {
        return Err(Error::MarkedBad {
            version: bad.version.clone(),
            reason: bad.reason.clone(),
        });
    }
    Ok(())
}

/// Why the offered release is not taken, if it is not: behind the installed one, marked bad
/// here, or outside the staged rollout (see [`Hold`]).
fn hold(
    layout: &InstallLayout,
    local: &LocalState,
    opened: &OpenedPointer,
    target: &TrustedManifest,
) -> Result<Option<Hold>> {
    let pointer = &opened.pointer;
    let Some(release) = local
        .installed
        .as_ref()
        .filter(|r| r.manifest.id() != pointer.manifest)
    else {
        return Ok(None);
    };
    let directed_back = opened
        .directive
        .as_ref()
        .is_some_and(|d| d.covers(&release.manifest.version));
    let bucket = || {
        crate::manifest::rollout_bucket(
            &read_install_id(layout).unwrap_or_default(),
            &pointer.channel,
            &pointer.version,
        )
    };
    Ok(
        if pointer.version <= release.manifest.version && !directed_back {
            Some(Hold::Behind)
        } else if local.bad.iter().any(|b| b.version == pointer.version) {
            Some(Hold::MarkedBad)
        } else if !target.critical && !directed_back && bucket() >= pointer.rollout_percent {
            Some(Hold::Rollout {
                percent: pointer.rollout_percent,
            })
        } else {
            None
        },
    )
}

/// Records what the check trusts now: the walked root, the channel's state (its floor never
/// moves down), the pointer, and the versions it lists as yanked; then the trust copy.
async fn persist_trust(
    layout: &InstallLayout,
    store: &Arc<Store>,
    channel: &str,
    local: &LocalState,
    opened: &OpenedPointer,
) -> Result<()> {
    let pointer = &opened.pointer;
    if let Some(envelope) = opened.new_root.clone() {
        let store = store.clone();
        blocking(move || store.set_trusted_root(&envelope)).await?;
    }
    let now = local.now;
    // A publisher's clock running ahead must not push trusted time far forward.
    let time_unix = now.max(pointer.issued_unix.min(now_unix() + MAX_CLOCK_SKEW_SECS));
    // The floor never moves down (a yank or another channel may offer less).
    let state = match &local.floor {
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
    // Remembered, so a replay of a pointer from before the yank cannot bring it back. The
    // release running here is marked only on the release role's word: a mark lets an
    // install go down, which the channel role alone must not make it do.
    let running = local.installed.as_ref().map(|r| &r.manifest.version);
    let directed_back =
        |version: &Version| opened.directive.as_ref().is_some_and(|d| d.covers(version));
    let newly_yanked: Vec<Version> = pointer
        .yanked
        .iter()
        .filter(|v| !local.bad.iter().any(|b| &b.version == *v))
        .filter(|v| running != Some(*v) || directed_back(v))
        .cloned()
        .collect();
    let (store, layout) = (store.clone(), layout.clone());
    let channel = channel.to_owned();
    let pointer_bytes = opened.bytes.clone();
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
    .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FetchConfig, OriginConfig};
    use crate::layout::channel_path;
    use crate::manifest::FORMAT_VERSION;
    use crate::source::Origin;
    use crate::{ManifestId, SecretKey};

    fn pointer(version: &str, yanked: &[&str], issued_unix: u64) -> Pointer {
        Pointer {
            format: FORMAT_VERSION,
            product: "app".into(),
            channel: "stable".into(),
            version: version.parse().unwrap(),
            root_version: 0,
            manifest: ManifestId::of(version.as_bytes()),
            manifest_len: 100,
            manifest_deltas: Vec::new(),
            issued_unix,
            expires_unix: issued_unix + 3600,
            rollout_percent: 100,
            yanked: yanked.iter().map(|v| v.parse().unwrap()).collect(),
            rollback: None,
        }
    }

    /// A folder origin whose channel pointer is `bytes`.
    fn publish(origin: &std::path::Path, bytes: &[u8]) {
        let path = origin.join(channel_path("stable"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// What the check stage verified: the pointer signed by `key`, for the channel role of
    /// that key alone.
    fn checked(key: &SecretKey, pointer: Pointer) -> VerifiedPointer {
        VerifiedPointer {
            bytes: pointer.seal(&[key]).unwrap(),
            pointer,
            channel_role: RoleKeys::single(key.public()),
            directive: None,
        }
    }

    #[tokio::test]
    async fn the_withdrawal_poll_reads_only_the_pointer_and_trusts_only_the_checked_role() {
        let dir = tempfile::tempdir().unwrap();
        let origin = Origin::open(
            &OriginConfig::from(dir.path().to_str().unwrap()),
            &FetchConfig::default(),
        )
        .unwrap();
        let source = MetaSource {
            origin: &origin,
            peers: None,
        };
        let key = SecretKey::generate().unwrap();
        let seen = checked(&key, pointer("2.0.0", &[], 1000));
        let v2 = seen.pointer.version.clone();
        let requests = |n| assert_eq!(origin.traffic().requests(), n, "one request a poll");

        // The same pointer: nothing changed, and the plan still holds.
        publish(dir.path(), &seen.bytes);
        assert!(pointer_unchanged(source, &seen).await.unwrap());
        assert!(!withdrawn(source, &seen, &v2).await.unwrap());
        requests(2);

        // Refreshed: the plan is not reused, but the release is not withdrawn.
        publish(
            dir.path(),
            &pointer("2.0.0", &[], 2000).seal(&[&key]).unwrap(),
        );
        assert!(!pointer_unchanged(source, &seen).await.unwrap());
        assert!(!withdrawn(source, &seen, &v2).await.unwrap());

        // Yanked, the channel moved back: withdrawn.
        let yanked = pointer("1.0.0", &["2.0.0"], 3000);
        publish(dir.path(), &yanked.seal(&[&key]).unwrap());
        assert!(withdrawn(source, &seen, &v2).await.unwrap());
        requests(5);

        // The same yank signed by a key the check did not trust, or for another product:
        // refused, never taken as a withdrawal.
        let stranger = SecretKey::generate().unwrap();
        publish(dir.path(), &yanked.seal(&[&stranger]).unwrap());
        assert!(withdrawn(source, &seen, &v2).await.is_err());
        let other = Pointer {
            product: "other".into(),
            ..yanked
        };
        publish(dir.path(), &other.seal(&[&key]).unwrap());
        let err = withdrawn(source, &seen, &v2).await.unwrap_err();
        assert!(err.to_string().contains("product"), "{err}");
    }
}
