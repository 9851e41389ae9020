//! Publishing signed metadata: a manifest (and its deltas), then the channel pointer naming
//! it. `push` does both with local keys; `publish` and `channel` do each step for documents
//! signed elsewhere, and `channel refresh` re-signs an unchanged channel before it expires.
//! `promote` and `yank` ([`crate::lifecycle`]) re-sign the pointer with other lifecycle fields.
//!
//! Nothing is written that clients would refuse: signatures are checked against the origin's
//! newest root document first.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use relsync_format::directive::RollbackDirective;
use relsync_format::envelope::{self, Kind};
use relsync_format::manifest::{
    FORMAT_VERSION, Manifest, ManifestDelta, Pointer, TrustedManifest, compress_envelope,
    compress_envelope_delta,
};
use relsync_format::paths::{channel_path, manifest_delta_path, manifest_path};
use relsync_format::root::{RoleKeys, Root};
use relsync_format::{ManifestId, PublicKey};

use crate::origin::Origin;

/// A manifest now on the origin.
#[derive(Debug)]
pub struct PublishedManifest {
    pub id: ManifestId,
    pub manifest: Manifest,
    /// Length of `manifests/<id>`.
    pub file_len: u64,
    pub deltas: Vec<ManifestDelta>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `now + days`, as an expiry time.
pub fn expiry(days: u64) -> Result<u64> {
    days.checked_mul(86_400)
        .and_then(|s| s.checked_add(unix_now()))
        .context("the number of days is too large")
}

/// The origin's newest root, if it has any.
fn newest_root(origin: &Origin) -> Result<Option<Root>> {
    Ok(crate::roots::newest(origin)?.map(|(root, _)| root))
}

/// Checks a signed manifest envelope as clients will (a threshold of the newest root's release
/// role; without roots, at least one valid signature; every structural rule).
pub fn check_manifest(origin: &Origin, envelope: &[u8]) -> Result<TrustedManifest> {
    let id = ManifestId::of(envelope);
    match newest_root(origin)? {
        Some(root) => TrustedManifest::open_release(envelope.to_vec(), &id, &root.release)
            .with_context(|| {
                format!(
                    "the manifest's signatures do not meet the release role of root version {}",
                    root.version
                )
            }),
        None => TrustedManifest::open_release(
            envelope.to_vec(),
            &id,
            &own_signers(Kind::Manifest, envelope)?,
        )
        .context("the release breaks a rule clients enforce"),
    }
}

/// Checks a signed manifest envelope ([`check_manifest`]) and writes it, with deltas against
/// up to `delta_depth` of its nearest ancestors.
pub fn put_manifest(
    origin: &Origin,
    envelope: &[u8],
    delta_depth: usize,
) -> Result<PublishedManifest> {
    let id = ManifestId::of(envelope);
    check_manifest(origin, envelope)?;
    let manifest = relsync_format::dangerous::manifest(envelope)?;
    let file = compress_envelope(envelope)?;
    // A manifest already there keeps its bytes, which another compressor may have made.
    let file_len = origin.put(&manifest_path(&id), &file)?.object_len();
    let deltas = put_manifest_deltas(origin, &id, envelope, manifest.parent, delta_depth)?;
    Ok(PublishedManifest {
        id,
        manifest,
        file_len,
        deltas,
    })
}

/// Without a root on the origin, the publisher cannot know which keys clients trust: the
/// keys an envelope claims signed it, any one of which must verify.
pub fn own_signers(kind: Kind, bytes: &[u8]) -> Result<RoleKeys> {
    let keys = envelope::signers(kind, bytes)?
        .into_iter()
        .map(|k| PublicKey::from_bytes(&k))
        .collect::<relsync_format::Result<Vec<_>>>()?;
    if keys.is_empty() {
        bail!(
            "the {} is not signed; sign it with `cdn-publisher sign` first",
            kind.name()
        );
    }
    Ok(RoleKeys { keys, threshold: 1 })
}

/// Writes manifest `id` as a delta against each of its `depth` nearest ancestors on the origin.
fn put_manifest_deltas(
    origin: &Origin,
    id: &ManifestId,
    envelope: &[u8],
    parent: Option<ManifestId>,
    depth: usize,
) -> Result<Vec<ManifestDelta>> {
    let mut deltas = Vec::new();
    let mut next = parent;
    while let Some(base) = next
        && deltas.len() < depth
    {
        let Some(base_envelope) = origin.read_manifest(&base)? else {
            break;
        };
        let delta = compress_envelope_delta(envelope, &base_envelope)?;
        let len = origin
            .put(&manifest_delta_path(id, &base), &delta)?
            .object_len();
        deltas.push(ManifestDelta { base, len });
        next = relsync_format::dangerous::manifest(&base_envelope)?.parent;
    }
    Ok(deltas)
}

/// The (unsigned) pointer naming a published manifest, issued now and expiring in `days`,
/// offered to `rollout_percent` of installs. It keeps the channel's yanked versions and carries
/// no rollback directive; a yanked version cannot be published again.
pub fn pointer_for(
    origin: &Origin,
    m: &PublishedManifest,
    days: u64,
    rollout_percent: u8,
) -> Result<Pointer> {
    let channel = &m.manifest.channel;
    let yanked = current_pointer(origin, channel)?.map_or_else(Vec::new, |p| p.yanked);
    refuse_yanked(channel, &m.manifest.version, &yanked)?;
    if rollout_percent > 100 {
        bail!("the rollout percentage is {rollout_percent}; it must be 0 to 100");
    }
    Ok(Pointer {
        format: FORMAT_VERSION,
        product: m.manifest.product.clone(),
        channel: m.manifest.channel.clone(),
        version: m.manifest.version.clone(),
        root_version: newest_root(origin)?.map_or(0, |r| r.version),
        manifest: m.id,
        manifest_len: m.file_len,
        manifest_deltas: m.deltas.clone(),
        issued_unix: unix_now(),
        expires_unix: expiry(days)?,
        rollout_percent,
        yanked,
        rollback: None,
    })
}

/// Refuses to offer `version` on a channel that withdrew it.
pub fn refuse_yanked(
    channel: &str,
    version: &semver::Version,
    yanked: &[semver::Version],
) -> Result<()> {
    if yanked.contains(version) {
        bail!(
            "version {version} was yanked from channel {channel}; publish the fix as a new \
             version"
        );
    }
    Ok(())
}

/// The channel's current pointer re-issued now, expiring in `days`, under the newest root:
/// what `channel refresh` signs so clients keep trusting an unchanged channel.
pub fn refreshed(origin: &Origin, channel: &str, days: u64) -> Result<Pointer> {
    let current = current_pointer(origin, channel)?
        .with_context(|| format!("channel {channel} has no pointer on the origin to refresh"))?;
    reissued(origin, current, days)
}

/// `current` re-issued now (never earlier than it was), expiring in `days`, under the newest
/// root; every other field, the lifecycle ones included, stays.
pub fn reissued(origin: &Origin, current: Pointer, days: u64) -> Result<Pointer> {
    if !origin.try_exists(&manifest_path(&current.manifest))? {
        bail!(
            "channel {} names manifest {}, which is not on the origin",
            current.channel,
            current.manifest
        );
    }
    Ok(Pointer {
        root_version: newest_root(origin)?.map_or(0, |r| r.version),
        issued_unix: unix_now().max(current.issued_unix),
        expires_unix: expiry(days)?,
        ..current
    })
}

/// The channel's pointer on the origin, decoded without checking its signature.
pub fn current_pointer(origin: &Origin, channel: &str) -> Result<Option<Pointer>> {
    match origin.read(&channel_path(channel))? {
        Some(bytes) => Ok(Some(
            relsync_format::dangerous::pointer(&bytes)
                .context("the origin's current channel pointer is unreadable")?,
        )),
        None => Ok(None),
    }
}

/// Checks the rollback directive `pointer` carries, if any, as clients will: a threshold of
/// the newest root's release role (without roots, at least one valid signature), naming the
/// pointer's release and only versions it lists as yanked.
pub fn check_directive(origin: &Origin, pointer: &Pointer) -> Result<Option<RollbackDirective>> {
    let Some(bytes) = &pointer.rollback else {
        return Ok(None);
    };
    match newest_root(origin)? {
        Some(root) => RollbackDirective::verified(pointer, &root.release).with_context(|| {
            format!(
                "the rollback directive does not meet the release role of root version {}",
                root.version
            )
        }),
        None => Ok(RollbackDirective::verified(
            pointer,
            &own_signers(Kind::RollbackDirective, bytes)?,
        )?),
    }
}

/// Checks a signed pointer (a threshold of the newest root's channel role; without roots, at
/// least one valid signature) and its rollback directive ([`check_directive`]), that the
/// manifest it names is on the origin, and that it neither moves the channel back nor drops a
/// yanked version (unless `force`); then writes it.
pub fn put_pointer(origin: &Origin, sealed: &[u8], force: bool) -> Result<Pointer> {
    let pointer = match newest_root(origin)? {
        Some(root) => Pointer::open(sealed, &root.channel).with_context(|| {
            format!(
                "the pointer's signatures do not meet the channel role of root version {}",
                root.version
            )
        })?,
        None => Pointer::open(sealed, &own_signers(Kind::Pointer, sealed)?)?,
    };
    check_directive(origin, &pointer)?;
    if !origin.try_exists(&manifest_path(&pointer.manifest))? {
        bail!(
            "the pointer names manifest {}, which is not on the origin; publish it first",
            pointer.manifest
        );
    }
    if let Some(current) = current_pointer(origin, &pointer.channel)?
        && !force
    {
        if pointer.version < current.version {
            bail!(
                "channel {} is at {}; refusing to move it back to {} (use --force)",
                pointer.channel,
                current.version,
                pointer.version
            );
        }
        if pointer.version == current.version && pointer.manifest != current.manifest {
            bail!(
                "channel {} already names a different manifest for {}; clients that saw it \
                 would refuse this one as equivocation (use --force)",
                pointer.channel,
                pointer.version
            );
        }
        let dropped: Vec<String> = current
            .yanked
            .iter()
            .filter(|v| !pointer.is_yanked(v))
            .map(ToString::to_string)
            .collect();
        if !dropped.is_empty() {
            bail!(
                "channel {} has yanked {}; refusing a pointer that no longer lists them (use --force)",
                pointer.channel,
                dropped.join(", ")
            );
        }
    }
    origin.put(&channel_path(&pointer.channel), sealed)?;
    Ok(pointer)
}
