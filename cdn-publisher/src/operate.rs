//! What operating an origin takes (`ls` lists what it holds, `gc` deletes what no channel
//! keeps, `verify` checks every object; see `commands/`): the [`Inventory`] of an origin's
//! objects by kind, the [`Trust`] its root chain gives, and the [`KeepSet`] of what each
//! channel's history needs.
//!
//! They use only [`Origin`]'s methods (`list`, `read`, `read_range`, `delete`), never a file
//! system, so they work on every target.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use relsync_format::directive::RollbackDirective;
use relsync_format::envelope::Kind;
use relsync_format::manifest::{Pointer, TrustedManifest};
use relsync_format::paths::{manifest_path, valid_channel};
use relsync_format::root::Root;
use relsync_format::{ManifestId, PackId};
use serde::Serialize;

use crate::history::History;
use crate::origin::{ObjectMeta, Origin};
use crate::publish::own_signers;

/// The folders of an origin that hold objects (`.tmp` and anything else are not listed).
const FOLDERS: [&str; 4] = ["channels/", "manifests/", "packs/", "keys/"];

/// What an origin path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Channel(String),
    Manifest(ManifestId),
    /// `manifests/<target>.from-<base>`.
    ManifestDelta {
        target: ManifestId,
        base: ManifestId,
    },
    Pack(PackId),
    Root(u64),
    /// Nothing relsync writes.
    Unknown,
}

impl Name {
    pub fn parse(path: &str) -> Self {
        let parsed = if let Some(channel) = path.strip_prefix("channels/") {
            valid_channel(channel).then(|| Self::Channel(channel.to_owned()))
        } else if let Some(name) = path.strip_prefix("manifests/") {
            match name.split_once(".from-") {
                Some((target, base)) => target
                    .parse()
                    .ok()
                    .zip(base.parse().ok())
                    .map(|(target, base)| Self::ManifestDelta { target, base }),
                None => name.parse().ok().map(Self::Manifest),
            }
        } else if let Some(name) = path.strip_prefix("packs/") {
            name.parse().ok().map(Self::Pack)
        } else {
            path.strip_prefix("keys/root-")
                .filter(|n| !n.starts_with('0') && !n.starts_with('+'))
                .and_then(|n| n.parse().ok())
                .map(Self::Root)
        };
        parsed.unwrap_or(Self::Unknown)
    }

    pub fn kind(&self) -> ObjectKind {
        match self {
            Self::Channel(_) => ObjectKind::Channel,
            Self::Manifest(_) => ObjectKind::Manifest,
            Self::ManifestDelta { .. } => ObjectKind::ManifestDelta,
            Self::Pack(_) => ObjectKind::Pack,
            Self::Root(_) => ObjectKind::Root,
            Self::Unknown => ObjectKind::Unknown,
        }
    }
}

/// The kinds of objects, in the order `ls` totals them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Channel,
    Manifest,
    ManifestDelta,
    Pack,
    Root,
    Unknown,
}

impl ObjectKind {
    pub const ALL: [Self; 6] = [
        Self::Channel,
        Self::Manifest,
        Self::ManifestDelta,
        Self::Pack,
        Self::Root,
        Self::Unknown,
    ];

    /// Plural, for tables.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Channel => "channel pointers",
            Self::Manifest => "manifests",
            Self::ManifestDelta => "manifest deltas",
            Self::Pack => "packs",
            Self::Root => "root documents",
            Self::Unknown => "other objects",
        }
    }
}

/// Objects and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub objects: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} objects, {}",
            self.objects,
            indicatif::HumanBytes(self.bytes)
        )
    }
}

/// Every object of an origin, by what its path names.
#[derive(Debug, Default)]
pub struct Inventory {
    pub objects: Vec<(Name, ObjectMeta)>,
}

impl Inventory {
    /// Lists the origin's folders.
    pub fn list(origin: &Origin) -> Result<Self> {
        let mut objects = Vec::new();
        for folder in FOLDERS {
            for meta in origin
                .list(folder)
                .with_context(|| format!("listing {folder} of the origin"))?
            {
                objects.push((Name::parse(&meta.path), meta));
            }
        }
        Ok(Self { objects })
    }

    pub fn channels(&self) -> impl Iterator<Item = (&str, &ObjectMeta)> {
        self.objects.iter().filter_map(|(name, meta)| match name {
            Name::Channel(channel) => Some((channel.as_str(), meta)),
            _ => None,
        })
    }

    pub fn manifests(&self) -> impl Iterator<Item = (ManifestId, &ObjectMeta)> {
        self.objects.iter().filter_map(|(name, meta)| match name {
            Name::Manifest(id) => Some((*id, meta)),
            _ => None,
        })
    }

    pub fn packs(&self) -> BTreeMap<PackId, &ObjectMeta> {
        self.objects
            .iter()
            .filter_map(|(name, meta)| match name {
                Name::Pack(id) => Some((*id, meta)),
                _ => None,
            })
            .collect()
    }

    /// Objects and bytes of each kind.
    pub fn totals(&self) -> BTreeMap<ObjectKind, Counts> {
        let mut totals = BTreeMap::new();
        for (name, meta) in &self.objects {
            totals
                .entry(name.kind())
                .or_insert_with(Counts::default)
                .add(meta.len);
        }
        totals
    }
}

/// The keys the origin's root chain names: what clients check signatures against.
#[derive(Debug)]
pub struct Trust {
    /// Oldest first; empty if the origin has no root documents.
    roots: Vec<Root>,
}

impl Trust {
    /// Reads and checks the root chain link by link.
    pub fn load(origin: &Origin) -> Result<Self> {
        let roots = crate::roots::chain(origin)
            .context("the origin's root chain (keys/root-N) does not verify")?;
        Ok(Self {
            roots: roots.into_iter().map(|(root, _)| root).collect(),
        })
    }

    /// How many roots the chain has.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Opens a channel pointer as clients do: a threshold of the newest root's channel role
    /// (without roots, at least one valid signature, as `publish` checks), and its rollback
    /// directive, if any, under the release role.
    pub fn pointer(&self, bytes: &[u8]) -> Result<Pointer> {
        let pointer = match self.roots.last() {
            Some(root) => Pointer::open(bytes, &root.channel).with_context(|| {
                format!(
                    "its signatures do not meet the channel role of root version {}",
                    root.version
                )
            })?,
            None => Pointer::open(bytes, &own_signers(Kind::Pointer, bytes)?)?,
        };
        if let Some(directive) = &pointer.rollback {
            match self.roots.last() {
                Some(root) => {
                    RollbackDirective::verified(&pointer, &root.release).with_context(|| {
                        format!(
                            "its rollback directive does not meet the release role of root \
                             version {}",
                            root.version
                        )
                    })?
                }
                None => RollbackDirective::verified(
                    &pointer,
                    &own_signers(Kind::RollbackDirective, directive)?,
                )?,
            };
        }
        Ok(pointer)
    }

    /// Opens a manifest as clients of the newest root do (see `publish::check_manifest`).
    pub fn manifest_now(&self, envelope: Vec<u8>, id: &ManifestId) -> Result<TrustedManifest> {
        match self.roots.last() {
            Some(root) => {
                TrustedManifest::open_release(envelope, id, &root.release).with_context(|| {
                    format!(
                        "it does not meet the release role of root version {}",
                        root.version
                    )
                })
            }
            None => {
                let signers = own_signers(Kind::Manifest, &envelope)?;
                Ok(TrustedManifest::open_release(envelope, id, &signers)?)
            }
        }
    }

    /// Opens a manifest signed under any root of the chain: a release published before a
    /// rotation of the release keys is still a genuine release of this origin.
    pub fn manifest(&self, envelope: Vec<u8>, id: &ManifestId) -> Result<TrustedManifest> {
        let now = self.manifest_now(envelope.clone(), id);
        if now.is_ok() || self.roots.len() < 2 {
            return now;
        }
        for root in self.roots.iter().rev().skip(1) {
            if let Ok(m) = TrustedManifest::open_release(envelope.clone(), id, &root.release) {
                return Ok(m);
            }
        }
        now.context("nor that of any earlier root")
    }
}

/// A release a channel keeps.
#[derive(Debug, Clone, Serialize)]
pub struct KeptRelease {
    pub version: String,
    pub manifest: String,
}

/// The releases one channel keeps: the one its pointer names, then its ancestors.
#[derive(Debug, Clone, Serialize)]
pub struct KeptChannel {
    pub channel: String,
    pub releases: Vec<KeptRelease>,
}

/// What the channels' histories need: every object gc must keep besides channels and keys.
#[derive(Debug, Default)]
pub struct KeepSet {
    pub channels: Vec<KeptChannel>,
    pub manifests: BTreeSet<ManifestId>,
    /// Every pack a kept manifest names, with the length it states.
    pub packs: BTreeMap<PackId, u64>,
    /// Things worth knowing that do not stop gc (a history that ends early).
    pub notes: Vec<String>,
}

impl KeepSet {
    /// Whether gc keeps the object `name`: kept manifests, deltas that decode to one (clients
    /// on any base, even one gone from the origin, fetch them), and the packs they name.
    pub fn keeps(&self, name: &Name) -> bool {
        match name {
            Name::Manifest(id) | Name::ManifestDelta { target: id, .. } => {
                self.manifests.contains(id)
            }
            Name::Pack(id) => self.packs.contains_key(id),
            Name::Channel(_) | Name::Root(_) | Name::Unknown => true,
        }
    }

    /// For every channel, the release its pointer names and the `keep` releases before it
    /// along the manifests' `parent` links.
    ///
    /// Fails closed: an unreadable or unverifiable pointer, a pointer naming a manifest that
    /// is missing, or a kept manifest that does not hash to its name or verify is an error,
    /// since the packs it needs cannot be known. A history that ends early at a manifest no
    /// longer on the origin (collected by an earlier gc) is a note.
    pub fn compute(
        origin: &Origin,
        inventory: &Inventory,
        trust: &Trust,
        keep: usize,
    ) -> Result<Self> {
        let mut set = Self::default();
        for (channel, meta) in inventory.channels() {
            let path = &meta.path;
            let bytes = origin
                .read(path)?
                .with_context(|| format!("{path} vanished while it was being read"))?;
            let pointer = trust
                .pointer(&bytes)
                .with_context(|| format!("{path}: the channel pointer does not verify"))?;
            if pointer.channel != channel {
                bail!("{path} is the pointer of channel {}", pointer.channel);
            }
            let mut kept = KeptChannel {
                channel: channel.to_owned(),
                releases: Vec::new(),
            };
            let mut last_parent = None;
            for release in History::new(origin, Some(pointer.manifest)).take(keep.saturating_add(1))
            {
                let release =
                    release.with_context(|| format!("the history of channel {channel}"))?;
                let what = format!(
                    "{} ({}, in the history of channel {channel})",
                    manifest_path(&release.id),
                    release.manifest.version
                );
                let manifest = trust
                    .manifest(release.envelope, &release.id)
                    .with_context(|| format!("{what} does not verify"))?;
                for pack in &manifest.packs {
                    set.packs.insert(pack.id, pack.len);
                }
                set.manifests.insert(release.id);
                kept.releases.push(KeptRelease {
                    version: manifest.version.to_string(),
                    manifest: release.id.to_string(),
                });
                last_parent = manifest.parent;
            }
            if kept.releases.is_empty() {
                bail!(
                    "{path} names manifest {}, which is not on the origin",
                    pointer.manifest
                );
            }
            if kept.releases.len() <= keep
                && let Some(parent) = last_parent
            {
                set.notes.push(format!(
                    "the history of channel {channel} ends early: manifest {parent}, the \
                     parent of {}, is not on the origin",
                    kept.releases.last().map_or("", |r| r.version.as_str()),
                ));
            }
            set.channels.push(kept);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_what_the_layout_writes() {
        let id = ManifestId::of(b"m");
        let base = ManifestId::of(b"b");
        let pack = PackId::of(b"p");
        assert_eq!(
            Name::parse("channels/stable"),
            Name::Channel("stable".into())
        );
        assert_eq!(Name::parse(&manifest_path(&id)), Name::Manifest(id));
        assert_eq!(
            Name::parse(&relsync_format::paths::manifest_delta_path(&id, &base)),
            Name::ManifestDelta { target: id, base }
        );
        assert_eq!(
            Name::parse(&relsync_format::paths::pack_path(&pack)),
            Name::Pack(pack)
        );
        assert_eq!(Name::parse("keys/root-12"), Name::Root(12));
        for other in [
            "channels/.hidden",
            "manifests/abc",
            "manifests/x.from-y",
            "packs/abc",
            "keys/root-01",
            "keys/root-x",
            "keys/other",
            "notes.txt",
        ] {
            assert_eq!(Name::parse(other), Name::Unknown, "{other}");
        }
    }
}
