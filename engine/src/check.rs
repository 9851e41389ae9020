//! check: fetch the channel pointer and manifest, and trust them only once verified.

use std::time::{SystemTime, UNIX_EPOCH};

use semver::Version;

use crate::layout::{channel_path, manifest_delta_path, manifest_path};
use crate::manifest::{Pointer, TrustedManifest, decompress_envelope, limits};
use std::sync::Arc;

use crate::layout::InstallLayout;
use crate::origin::{Origin, blocking};
use crate::store::{Release, Store, TrustedState};
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

    /// Whether the offered release is the installed one.
    pub fn up_to_date(&self) -> bool {
        self.installed_on_disk
            && self
                .installed
                .as_ref()
                .is_some_and(|r| r.manifest.id() == self.pointer.manifest)
    }
}

/// How far ahead of our clock a signed issue time may move trusted time.
const MAX_CLOCK_SKEW_SECS: u64 = 24 * 3600;

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the check stage. With `persist`, records the newly trusted state.
pub(crate) async fn check(
    origin: &Origin,
    config: &UpdaterConfig,
    layout: &InstallLayout,
    store: &Arc<Store>,
    persist: bool,
) -> Result<Checked> {
    let (trusted_state, installed, previous) = {
        let store = store.clone();
        blocking(move || Ok((store.trusted_state()?, store.current()?, store.previous()?))).await?
    };
    let installed_on_disk = installed.as_ref().is_some_and(|r| {
        crate::apply::current_dir(layout).as_deref() == Some(r.dir.as_str())
            && layout.release(&r.dir).is_dir()
    });
    let now = now_unix().max(trusted_state.as_ref().map_or(0, |t| t.time_unix));

    let bytes = origin
        .get(
            &channel_path(&config.channel),
            "channel pointer",
            limits::POINTER_BYTES,
        )
        .await?;
    let pointer = Pointer::open(&bytes, &config.trusted_keys)?;
    expect_eq("channel", &config.channel, &pointer.channel)?;
    // Without an explicit product, the installed one binds: a key that signs several
    // products cannot swap one for another.
    let product = config
        .product
        .as_deref()
        .or(installed.as_ref().map(|r| r.manifest.product.as_str()));
    if let Some(product) = product {
        expect_eq("product", product, &pointer.product)?;
    }
    if pointer.expires_unix < now {
        return Err(Error::Expired {
            what: "channel pointer",
            expires_unix: pointer.expires_unix,
            now_unix: now,
        });
    }
    if let Some(seen) = &trusted_state {
        if pointer.version < seen.highest_version {
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

    let target = match &installed {
        Some(release) if release.manifest.id() == pointer.manifest => release.manifest.clone(),
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
            let file = origin
                .get(&path, what, len.min(limits::MANIFEST_BYTES))
                .await?;
            let base = base.map(|(_, m)| m.clone());
            let (id, keys) = (pointer.manifest, config.trusted_keys.clone());
            blocking(move || {
                let envelope = decompress_envelope(&file, base.as_ref().map(|m| m.bytes()))?;
                TrustedManifest::open(envelope, &id, &keys)
            })
            .await?
        }
    };
    expect_eq("manifest channel", &pointer.channel, &target.channel)?;
    expect_eq("manifest product", &pointer.product, &target.product)?;
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

    if persist {
        let state = TrustedState {
            highest_version: pointer.version.clone(),
            manifest: pointer.manifest,
            // A publisher's clock running ahead must not push trusted time far forward.
            time_unix: now.max(pointer.issued_unix.min(now_unix() + MAX_CLOCK_SKEW_SECS)),
        };
        let store = store.clone();
        blocking(move || store.set_trusted_state(&state)).await?;
    }
    Ok(Checked {
        pointer,
        target,
        installed,
        previous,
        installed_on_disk,
    })
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
