//! check: fetch the channel pointer and manifest, and trust them only once verified.

use std::time::{SystemTime, UNIX_EPOCH};

use semver::Version;

use crate::layout::{channel_path, manifest_path};
use crate::manifest::{Pointer, TrustedManifest, limits};
use crate::origin::Origin;
use crate::store::{Release, Store, TrustedState};
use crate::{Error, Result, UpdaterConfig};

/// Verified metadata for the release a channel offers, next to what is installed.
#[derive(Debug)]
pub struct Checked {
    pub(crate) pointer: Pointer,
    pub(crate) target: TrustedManifest,
    pub(crate) installed: Option<Release>,
    pub(crate) previous: Option<Release>,
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
        self.installed
            .as_ref()
            .is_some_and(|r| r.manifest.id() == self.pointer.manifest)
    }
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the check stage. With `persist`, records the newly trusted state.
pub(crate) async fn check(
    origin: &Origin,
    config: &UpdaterConfig,
    store: &Store,
    persist: bool,
) -> Result<Checked> {
    let trusted_state = store.trusted_state()?;
    let installed = store.current()?;
    let previous = store.previous()?;
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
    if let Some(product) = &config.product {
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
            let limit = pointer.manifest_len.min(limits::MANIFEST_BYTES);
            let bytes = origin
                .get(&manifest_path(&pointer.manifest), "manifest", limit)
                .await?;
            TrustedManifest::open(bytes, &pointer.manifest, &config.trusted_keys)?
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
        store.set_trusted_state(&TrustedState {
            highest_version: pointer.version.clone(),
            manifest: pointer.manifest,
            time_unix: now.max(pointer.issued_unix),
        })?;
    }
    Ok(Checked {
        pointer,
        target,
        installed,
        previous,
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
