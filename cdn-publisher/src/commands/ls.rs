//! `ls`: what an origin holds: its channels, its releases, and the bytes of each kind.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use indicatif::HumanBytes;
use relsync_format::ManifestId;
use relsync_format::manifest::{Manifest, decompress_envelope};
use serde::Serialize;

use super::{OriginAt, emit, table, utc};
use crate::lifecycle::RollbackSummary;
use crate::operate::{Counts, Inventory, KeepSet, ObjectKind, Trust};
use crate::origin::Origin;
use crate::publish::unix_now;

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub at: OriginAt,
    /// Print the listing as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A channel pointer, decoded; `error` says why it is unreadable or does not verify.
#[derive(Debug, Default, Serialize)]
pub struct ChannelRow {
    pub channel: String,
    pub version: Option<String>,
    pub manifest: Option<String>,
    pub rollout_percent: Option<u8>,
    pub yanked: Vec<String>,
    /// The rollback directive (verified with the pointer): installs on `from` go back to `to`.
    pub rollback: Option<RollbackSummary>,
    pub issued_unix: Option<u64>,
    pub expires_unix: Option<u64>,
    pub expired: bool,
    pub error: Option<String>,
}

/// A release: one `manifests/<id>`.
#[derive(Debug, Default, Serialize)]
pub struct ReleaseRow {
    pub manifest: String,
    pub version: Option<String>,
    pub channel: Option<String>,
    pub product: Option<String>,
    pub created_unix: Option<u64>,
    pub files: u64,
    /// Bytes of its files, uncompressed.
    pub bytes: u64,
    /// Bytes of the packs it names.
    pub pack_bytes: u64,
    /// Bytes of its manifest file.
    pub manifest_bytes: u64,
    /// The channels whose pointer names it.
    pub offered_by: Vec<String>,
    pub parent: Option<String>,
    pub parent_version: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct KindTotal {
    pub kind: ObjectKind,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub kinds: Vec<KindTotal>,
    pub all: Counts,
    /// Manifests, deltas and packs that no channel's history (however long) needs: what
    /// `gc` could delete. `None` when it cannot be known (see `unreferenced_error`).
    pub unreferenced: Option<Counts>,
    pub unreferenced_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub channels: Vec<ChannelRow>,
    pub releases: Vec<ReleaseRow>,
    pub totals: Totals,
}

/// Lists an origin. Unreadable objects are rows with an error, not a failure.
pub fn list(origin: &Origin) -> Result<Listing> {
    let inventory = Inventory::list(origin)?;
    let trust = Trust::load(origin);
    let channels = channel_rows(origin, &inventory, trust.as_ref());
    let releases = release_rows(origin, &inventory, &channels);
    let totals = totals(origin, &inventory, trust);
    Ok(Listing {
        channels,
        releases,
        totals,
    })
}

/// A row per channel pointer.
fn channel_rows(
    origin: &Origin,
    inventory: &Inventory,
    trust: Result<&Trust, &anyhow::Error>,
) -> Vec<ChannelRow> {
    let now = unix_now();
    let mut channels = Vec::new();
    for (channel, meta) in inventory.channels() {
        let mut row = ChannelRow {
            channel: channel.to_owned(),
            ..ChannelRow::default()
        };
        let opened = origin
            .read(&meta.path)
            .and_then(|bytes| bytes.context("vanished while being listed"))
            .and_then(|bytes| match trust {
                Ok(trust) => trust.pointer(&bytes),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            });
        match opened {
            Ok(p) => {
                row.version = Some(p.version.to_string());
                row.manifest = Some(p.manifest.to_string());
                row.rollout_percent = Some(p.rollout_percent);
                row.yanked = p.yanked.iter().map(ToString::to_string).collect();
                row.rollback = RollbackSummary::of(&p);
                row.issued_unix = Some(p.issued_unix);
                row.expires_unix = Some(p.expires_unix);
                row.expired = p.expires_unix < now;
            }
            Err(e) => row.error = Some(format!("{e:#}")),
        }
        channels.push(row);
    }

    channels
}

/// A row per manifest: by channel, newest first; unreadable ones last.
fn release_rows(
    origin: &Origin,
    inventory: &Inventory,
    channels: &[ChannelRow],
) -> Vec<ReleaseRow> {
    let mut versions: BTreeMap<ManifestId, String> = BTreeMap::new();
    let mut releases = Vec::new();
    let packs = inventory.packs();
    for (id, meta) in inventory.manifests() {
        let mut row = ReleaseRow {
            manifest: id.to_string(),
            manifest_bytes: meta.len,
            offered_by: channels
                .iter()
                .filter(|c| c.manifest.as_deref() == Some(&id.to_string()))
                .map(|c| c.channel.clone())
                .collect(),
            ..ReleaseRow::default()
        };
        match read_manifest(origin, id, &meta.path) {
            Ok(m) => {
                versions.insert(id, m.version.to_string());
                row.version = Some(m.version.to_string());
                row.channel = Some(m.channel.clone());
                row.product = Some(m.product.clone());
                row.created_unix = Some(m.created_unix);
                row.files = m.files().count() as u64;
                row.bytes = m.total_file_bytes();
                row.pack_bytes = m
                    .packs
                    .iter()
                    .map(|p| packs.get(&p.id).map_or(p.len, |found| found.len))
                    .sum();
                row.parent = m.parent.map(|p| p.to_string());
            }
            Err(e) => row.error = Some(format!("{e:#}")),
        }
        releases.push(row);
    }
    for row in &mut releases {
        row.parent_version = row
            .parent
            .as_ref()
            .and_then(|p| p.parse().ok())
            .and_then(|p| versions.get(&p).cloned());
    }
    releases.sort_by(|a, b| {
        let key = |r: &ReleaseRow| {
            (
                r.error.is_some(),
                r.channel.clone(),
                std::cmp::Reverse(
                    r.version
                        .as_ref()
                        .and_then(|v| v.parse::<semver::Version>().ok()),
                ),
            )
        };
        key(a).cmp(&key(b))
    });

    releases
}

/// Objects and bytes of each kind, and what no channel's history needs.
fn totals(origin: &Origin, inventory: &Inventory, trust: Result<Trust>) -> Totals {
    let by_kind = inventory.totals();
    let mut all = Counts::default();
    for counts in by_kind.values() {
        all.objects += counts.objects;
        all.bytes += counts.bytes;
    }
    let (unreferenced, unreferenced_error) =
        match trust.and_then(|trust| KeepSet::compute(origin, inventory, &trust, usize::MAX)) {
            Ok(keep) => {
                let mut counts = Counts::default();
                for (name, meta) in &inventory.objects {
                    if !keep.keeps(name) {
                        counts.add(meta.len);
                    }
                }
                (Some(counts), None)
            }
            Err(e) => (None, Some(format!("{e:#}"))),
        };
    Totals {
        kinds: ObjectKind::ALL
            .iter()
            .filter_map(|kind| {
                by_kind.get(kind).map(|counts| KindTotal {
                    kind: *kind,
                    counts: *counts,
                })
            })
            .collect(),
        all,
        unreferenced,
        unreferenced_error,
    }
}

/// A manifest decoded, checked against its name (not its signatures: `verify` does that).
fn read_manifest(origin: &Origin, id: ManifestId, path: &str) -> Result<Manifest> {
    let file = origin.read(path)?.context("vanished while being listed")?;
    let envelope = decompress_envelope(&file, None)?;
    let actual = ManifestId::of(&envelope);
    if actual != id {
        anyhow::bail!("its envelope hashes to {actual}, not to its name");
    }
    Ok(relsync_format::dangerous::manifest(&envelope)?)
}

pub fn run(args: &LsArgs) -> Result<()> {
    let origin = Origin::open(&args.at.origin)?;
    let listing = list(&origin).with_context(|| format!("listing {}", args.at.origin))?;
    if args.json {
        return emit(&format!("{}\n", serde_json::to_string(&listing)?));
    }
    emit(&listing_text(&listing)?)
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}

fn listing_text(l: &Listing) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "channels")?;
    let mut rows = vec![
        ["CHANNEL", "VERSION", "ROLLOUT", "EXPIRES (UTC)", "YANKED"]
            .map(String::from)
            .to_vec(),
    ];
    for c in &l.channels {
        if let Some(error) = &c.error {
            rows.push(vec![c.channel.clone(), format!("unreadable: {error}")]);
            continue;
        }
        rows.push(vec![
            c.channel.clone(),
            or_dash(c.version.clone()),
            c.rollout_percent.map_or("-".into(), |p| format!("{p}%")),
            c.expires_unix.map_or("-".into(), |e| {
                format!("{}{}", utc(e), if c.expired { " EXPIRED" } else { "" })
            }),
            if c.yanked.is_empty() {
                "-".into()
            } else {
                format!(
                    "{}{}",
                    c.yanked.join(", "),
                    match &c.rollback {
                        Some(r) => format!(" ({} roll back)", r.from.join(", ")),
                        None => String::new(),
                    }
                )
            },
        ]);
    }
    write!(out, "{}", table(&rows))?;

    writeln!(out, "releases")?;
    let mut rows = vec![
        [
            "VERSION",
            "CHANNEL",
            "MANIFEST",
            "CREATED (UTC)",
            "FILES",
            "BYTES",
            "PACKS",
            "OFFERED BY",
            "PARENT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &l.releases {
        let short = r.manifest[..16].to_owned();
        if let Some(error) = &r.error {
            rows.push(vec![
                "?".into(),
                "?".into(),
                short,
                format!("unreadable: {error}"),
            ]);
            continue;
        }
        rows.push(vec![
            or_dash(r.version.clone()),
            or_dash(r.channel.clone()),
            short,
            r.created_unix.map_or("-".into(), utc),
            r.files.to_string(),
            HumanBytes(r.bytes).to_string(),
            HumanBytes(r.pack_bytes).to_string(),
            if r.offered_by.is_empty() {
                "-".into()
            } else {
                r.offered_by.join(", ")
            },
            match (&r.parent_version, &r.parent) {
                (Some(v), _) => v.clone(),
                (None, Some(id)) => format!("{} (gone)", &id[..16]),
                (None, None) => "-".into(),
            },
        ]);
    }
    write!(out, "{}", table(&rows))?;

    writeln!(out, "totals")?;
    let mut rows = vec![["KIND", "OBJECTS", "BYTES"].map(String::from).to_vec()];
    for k in &l.totals.kinds {
        rows.push(vec![
            k.kind.plural().into(),
            k.counts.objects.to_string(),
            HumanBytes(k.counts.bytes).to_string(),
        ]);
    }
    rows.push(vec![
        "all".into(),
        l.totals.all.objects.to_string(),
        HumanBytes(l.totals.all.bytes).to_string(),
    ]);
    write!(out, "{}", table(&rows))?;
    match (&l.totals.unreferenced, &l.totals.unreferenced_error) {
        (Some(u), _) => writeln!(out, "not in any channel's history: {u}")?,
        (None, Some(e)) => writeln!(out, "not in any channel's history: unknown ({e})")?,
        (None, None) => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use relsync_format::paths::manifest_path;

    use super::*;
    use crate::fixture::Fixture;
    use crate::lifecycle::yank;

    #[test]
    fn lists_channels_releases_and_what_no_history_needs() {
        let f = Fixture::new();
        f.push("1.0.0");
        let v2 = f.push("2.0.0");
        let v3 = f.push("3.0.0");
        let b1 = f.push_on("beta", "1.0.0");
        let yanked = yank(&f.origin, "stable", &"3.0.0".parse().unwrap(), true, 7).unwrap();
        f.publish(&yanked);

        let l = list(&f.origin).unwrap();
        let stable = &l.channels.iter().find(|c| c.channel == "stable").unwrap();
        assert_eq!(stable.version.as_deref(), Some("2.0.0"));
        assert_eq!(stable.yanked, ["3.0.0"]);
        let rollback = stable.rollback.as_ref().unwrap();
        assert_eq!(
            (rollback.from.as_slice(), rollback.to.as_str()),
            (&["3.0.0".to_owned()][..], "2.0.0")
        );
        assert!(!stable.expired && stable.error.is_none());
        assert_eq!(stable.rollout_percent, Some(100));

        let order: Vec<(String, String)> = l
            .releases
            .iter()
            .map(|r| (r.channel.clone().unwrap(), r.version.clone().unwrap()))
            .collect();
        let want = [
            ("beta", "1.0.0"),
            ("stable", "3.0.0"),
            ("stable", "2.0.0"),
            ("stable", "1.0.0"),
        ];
        assert_eq!(
            order,
            want.map(|(c, v)| (c.to_owned(), v.to_owned())).to_vec()
        );
        let r2 = l
            .releases
            .iter()
            .find(|r| r.manifest == v2.to_string())
            .unwrap();
        assert_eq!(r2.offered_by, ["stable"]);
        assert_eq!(r2.parent_version.as_deref(), Some("1.0.0"));
        assert_eq!(r2.files, 1);
        assert_eq!(r2.bytes, "the stable app, release 2.0.0\n".len() as u64);
        assert!(r2.pack_bytes > 0);
        let r1 = l
            .releases
            .iter()
            .find(|r| r.manifest == b1.to_string())
            .unwrap();
        assert_eq!(r1.offered_by, ["beta"]);

        // 3.0.0 is yanked and no longer in stable's history: its manifest, its pack and the
        // deltas that decode to it are what no history needs.
        let u = l.totals.unreferenced.unwrap();
        let envelope = f.origin.read_manifest(&v3).unwrap().unwrap();
        let m3 = relsync_format::dangerous::manifest(&envelope).unwrap();
        let deltas: Vec<_> = f
            .origin
            .list("manifests/")
            .unwrap()
            .into_iter()
            .filter(|o| o.path.starts_with(&format!("manifests/{v3}.")))
            .collect();
        assert_eq!(deltas.len(), 2, "against 2.0.0 and 1.0.0");
        let bytes = f.origin.len_of(&manifest_path(&v3)).unwrap().unwrap()
            + m3.packs.iter().map(|p| p.len).sum::<u64>()
            + deltas.iter().map(|d| d.len).sum::<u64>();
        assert_eq!(
            u,
            Counts {
                objects: 1 + m3.packs.len() as u64 + 2,
                bytes
            }
        );
        let manifests = l
            .totals
            .kinds
            .iter()
            .find(|k| k.kind == ObjectKind::Manifest)
            .unwrap();
        assert_eq!(manifests.counts.objects, 4);
    }
}
