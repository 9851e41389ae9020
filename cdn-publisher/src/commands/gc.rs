//! `gc`: delete the releases no channel keeps, and the objects only they need.
//!
//! [`plan`] decides (a dry run prints it); [`execute`] deletes what a plan lists.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{OriginAt, emit, format_duration, parse_duration};
use crate::operate::{Counts, Inventory, KeepSet, KeptChannel, ObjectKind, Trust};
use crate::origin::Origin;

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub at: OriginAt,
    /// How many releases before each channel's current one to keep, along its history (the
    /// rollback and yank targets).
    #[arg(long, value_name = "N")]
    pub keep: usize,
    /// Delete; without it, only print what would be deleted.
    #[arg(long)]
    pub delete: bool,
    /// Never delete an object younger than this (90s, 30m, 1h, 7d): a push in flight writes
    /// its packs before its manifest, and a release signed offline waits for its signature.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub min_age: Duration,
    /// List every object deleted (or that would be).
    #[arg(short, long)]
    pub verbose: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// An object a plan deletes.
#[derive(Debug, Clone, Serialize)]
pub struct Doomed {
    pub path: String,
    pub kind: ObjectKind,
    pub bytes: u64,
}

/// What gc keeps and what it deletes, decided before anything is deleted.
#[derive(Debug, Serialize)]
pub struct GcPlan {
    pub keep: usize,
    pub min_age_secs: u64,
    /// The releases each channel keeps, newest first.
    pub channels: Vec<KeptChannel>,
    /// Manifests, manifest deltas and packs kept.
    pub kept: Counts,
    /// In the order they are deleted: manifest deltas, manifests, then packs.
    pub delete: Vec<Doomed>,
    pub delete_total: Counts,
    /// Objects not kept but younger than `--min-age`: left for a later run.
    pub spared_young: Counts,
    /// Objects whose names relsync does not write: never touched.
    pub untouched_unknown: Vec<String>,
    pub notes: Vec<String>,
}

/// Decides what to delete: manifests, manifest deltas and packs that no channel's kept
/// history needs (see [`KeepSet::compute`]) and that are at least `min_age` old. Channel
/// pointers and root documents are never deleted.
///
/// Fails closed, deleting nothing: a broken root chain, an unverifiable pointer, a missing or
/// unverifiable kept manifest, or an origin without channel pointers is an error.
pub fn plan(origin: &Origin, keep: usize, min_age: Duration) -> Result<GcPlan> {
    let inventory = Inventory::list(origin)?;
    if inventory.channels().next().is_none() {
        bail!(
            "the origin has no channel pointers: gc keeps what channels name, so it would \
             delete every release; refusing"
        );
    }
    let trust = Trust::load(origin)?;
    let keep_set = KeepSet::compute(origin, &inventory, &trust, keep)
        .context("refusing to collect garbage (nothing was deleted)")?;
    let now = SystemTime::now();
    let mut plan = GcPlan {
        keep,
        min_age_secs: min_age.as_secs(),
        channels: keep_set.channels.clone(),
        kept: Counts::default(),
        delete: Vec::new(),
        delete_total: Counts::default(),
        spared_young: Counts::default(),
        untouched_unknown: Vec::new(),
        notes: keep_set.notes.clone(),
    };
    let packs = inventory.packs();
    for (id, len) in &keep_set.packs {
        match packs.get(id) {
            None => plan.notes.push(format!(
                "packs/{id}, named by a kept release, is missing: run `cdn-publisher verify`"
            )),
            Some(meta) if meta.len != *len => plan.notes.push(format!(
                "packs/{id}, named by a kept release as {len} bytes, is {} bytes: run \
                 `cdn-publisher verify`",
                meta.len
            )),
            Some(_) => {}
        }
    }
    for (name, meta) in &inventory.objects {
        let kind = name.kind();
        match kind {
            ObjectKind::Channel | ObjectKind::Root => continue,
            ObjectKind::Unknown => {
                plan.untouched_unknown.push(meta.path.clone());
                continue;
            }
            ObjectKind::Manifest | ObjectKind::ManifestDelta | ObjectKind::Pack => {}
        }
        if keep_set.keeps(name) {
            plan.kept.add(meta.len);
            continue;
        }
        // A clock ahead of ours makes an object look new: it is spared, never wrongly old.
        let young = now
            .duration_since(meta.modified)
            .map_or(true, |age| age < min_age);
        if young {
            plan.spared_young.add(meta.len);
            continue;
        }
        plan.delete.push(Doomed {
            path: meta.path.clone(),
            kind,
            bytes: meta.len,
        });
        plan.delete_total.add(meta.len);
    }
    // Delete what refers before what it refers to: a pointer lists manifest deltas, a delta
    // decodes to a manifest, a manifest names packs. Interrupted at any point, the objects
    // left never refer to one already deleted (orphaned packs wait for the next run), and a
    // reader that still finds a manifest finds every pack it names.
    plan.delete.sort_by_key(|d| {
        let order = match d.kind {
            ObjectKind::ManifestDelta => 0,
            ObjectKind::Manifest => 1,
            _ => 2,
        };
        (order, d.path.clone())
    });
    Ok(plan)
}

/// Deletes every object of `plan`, in its order; returns what was deleted.
pub fn execute(origin: &Origin, plan: &GcPlan) -> Result<Counts> {
    let mut deleted = Counts::default();
    for doomed in &plan.delete {
        origin.delete(&doomed.path).with_context(|| {
            format!(
                "deleting {} (after deleting {deleted}; run gc again to finish)",
                doomed.path
            )
        })?;
        deleted.add(doomed.bytes);
    }
    Ok(deleted)
}

/// The summary `--json` prints.
#[derive(Debug, Serialize)]
struct GcSummary<'a> {
    dry_run: bool,
    #[serde(flatten)]
    plan: &'a GcPlan,
    deleted: Counts,
    seconds: f64,
}

pub fn run(args: &GcArgs) -> Result<()> {
    let started = Instant::now();
    let origin = Origin::open(&args.at.origin)?;
    let plan = plan(&origin, args.keep, args.min_age)
        .with_context(|| format!("gc of {}", args.at.origin))?;
    let deleted = if args.delete {
        execute(&origin, &plan).with_context(|| format!("gc of {}", args.at.origin))?
    } else {
        Counts::default()
    };
    if args.json {
        let summary = GcSummary {
            dry_run: !args.delete,
            plan: &plan,
            deleted,
            seconds: started.elapsed().as_secs_f64(),
        };
        return emit(&format!("{}\n", serde_json::to_string(&summary)?));
    }
    emit(&plan_text(&plan, args, deleted)?)
}

fn plan_text(plan: &GcPlan, args: &GcArgs, deleted: Counts) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "kept (the current release of each channel and {} before it):",
        plan.keep
    )?;
    for channel in &plan.channels {
        let releases: Vec<String> = channel
            .releases
            .iter()
            .map(|r| format!("{} ({})", r.version, &r.manifest[..16]))
            .collect();
        writeln!(out, "  {:<12} {}", channel.channel, releases.join(", "))?;
    }
    writeln!(out, "  {:<12} {}", "total", plan.kept)?;
    let count = |kind: ObjectKind| plan.delete.iter().filter(|d| d.kind == kind).count();
    let what = format!(
        "{} ({} manifests, {} manifest deltas, {} packs)",
        plan.delete_total,
        count(ObjectKind::Manifest),
        count(ObjectKind::ManifestDelta),
        count(ObjectKind::Pack)
    );
    if args.delete && deleted == plan.delete_total {
        writeln!(out, "deleted {what}")?;
    } else if args.delete {
        writeln!(out, "deleted {deleted} of the {what} planned")?;
    } else {
        writeln!(out, "would delete {what}")?;
    }
    if args.verbose {
        for d in &plan.delete {
            writeln!(out, "  {} ({})", d.path, indicatif::HumanBytes(d.bytes))?;
        }
    }
    if plan.spared_young.objects > 0 {
        writeln!(
            out,
            "spared {} younger than {} (--min-age)",
            plan.spared_young,
            format_duration(Duration::from_secs(plan.min_age_secs))
        )?;
    }
    if !plan.untouched_unknown.is_empty() {
        writeln!(
            out,
            "left {} objects whose names relsync does not write, e.g. {}",
            plan.untouched_unknown.len(),
            plan.untouched_unknown[0]
        )?;
    }
    for note in &plan.notes {
        writeln!(out, "note: {note}")?;
    }
    if !args.delete {
        if plan.delete.is_empty() {
            writeln!(out, "dry run: there is nothing to delete")?;
        } else {
            writeln!(
                out,
                "dry run: nothing was deleted; to delete them, run it again with --delete \
                 (`cdn-publisher gc --origin {} --keep {} --min-age {} --delete`)",
                args.at.origin,
                plan.keep,
                format_duration(args.min_age)
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs::File;

    use relsync_format::ManifestId;
    use relsync_format::paths::{channel_path, manifest_path, pack_path};

    use super::*;
    use crate::fixture::Fixture;

    /// The origin's objects under a folder.
    fn paths(f: &Fixture, folder: &str) -> BTreeSet<String> {
        f.origin
            .list(folder)
            .unwrap()
            .into_iter()
            .map(|m| m.path)
            .collect()
    }

    /// Every object of the origin.
    fn everything(f: &Fixture) -> BTreeSet<String> {
        ["channels/", "manifests/", "packs/", "keys/"]
            .iter()
            .flat_map(|folder| paths(f, folder))
            .collect()
    }

    /// The objects a release needs: its manifest, the deltas decoding to it, its packs.
    fn objects_of(f: &Fixture, id: ManifestId) -> BTreeSet<String> {
        let envelope = f.origin.read_manifest(&id).unwrap().unwrap();
        let m = relsync_format::dangerous::manifest(&envelope).unwrap();
        let mut out: BTreeSet<String> = m.packs.iter().map(|p| pack_path(&p.id)).collect();
        out.insert(manifest_path(&id));
        out.extend(
            paths(f, "manifests/")
                .into_iter()
                .filter(|p| p.starts_with(&format!("manifests/{id}.from-"))),
        );
        out
    }

    /// Makes every object `age` old.
    fn age(f: &Fixture, objects: &BTreeSet<String>, age: Duration) {
        let when = SystemTime::now() - age;
        for path in objects {
            let file = File::options()
                .write(true)
                .open(f.tmp.path().join("origin").join(path))
                .unwrap();
            file.set_modified(when).unwrap();
        }
    }

    fn doomed(plan: &GcPlan) -> BTreeSet<String> {
        plan.delete.iter().map(|d| d.path.clone()).collect()
    }

    fn versions(plan: &GcPlan, channel: &str) -> Vec<String> {
        let c = plan.channels.iter().find(|c| c.channel == channel).unwrap();
        c.releases.iter().map(|r| r.version.clone()).collect()
    }

    /// stable 1..4 and beta 1..2, each release with its own content.
    fn two_channels() -> (Fixture, Vec<ManifestId>, Vec<ManifestId>) {
        let f = Fixture::new();
        let stable: Vec<_> = ["1.0.0", "2.0.0", "3.0.0", "4.0.0"]
            .iter()
            .map(|v| f.push(v))
            .collect();
        let beta: Vec<_> = ["1.0.0", "2.0.0"]
            .iter()
            .map(|v| f.push_on("beta", v))
            .collect();
        (f, stable, beta)
    }

    #[test]
    fn keeps_each_channels_current_release_and_n_before_it() {
        let (f, stable, beta) = two_channels();
        let all = everything(&f);
        for keep in [0, 1, 2, 5] {
            let plan = plan(&f.origin, keep, Duration::ZERO).unwrap();
            let kept_stable = &stable[stable.len().saturating_sub(keep + 1)..];
            let kept_beta = &beta[beta.len().saturating_sub(keep + 1)..];
            let want: Vec<String> = ["4.0.0", "3.0.0", "2.0.0", "1.0.0"][..kept_stable.len()]
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(versions(&plan, "stable"), want, "keep {keep}");
            assert_eq!(
                versions(&plan, "beta").len(),
                kept_beta.len(),
                "keep {keep}"
            );

            let mut kept: BTreeSet<String> = all
                .iter()
                .filter(|p| p.starts_with("channels/"))
                .cloned()
                .collect();
            for id in kept_stable.iter().chain(kept_beta) {
                kept.extend(objects_of(&f, *id));
            }
            let expected: BTreeSet<String> = all.difference(&kept).cloned().collect();
            assert_eq!(doomed(&plan), expected, "keep {keep}");
            assert!(plan.spared_young.objects == 0 && plan.untouched_unknown.is_empty());
            // Deltas first, then manifests, then packs.
            let kinds: Vec<ObjectKind> = plan.delete.iter().map(|d| d.kind).collect();
            assert!(kinds.is_sorted_by_key(|k| match k {
                ObjectKind::ManifestDelta => 0,
                ObjectKind::Manifest => 1,
                _ => 2,
            }));
        }
        // keep 0: stable 1..3 go, with their packs and the deltas that decode to them; the
        // deltas of 4.0.0 against them stay (installs on those releases fetch them).
        let plan = plan(&f.origin, 0, Duration::ZERO).unwrap();
        assert!(doomed(&plan).contains(&manifest_path(&stable[0])));
        let delta_of_4 = format!("manifests/{}.from-{}", stable[3], stable[2]);
        assert!(all.contains(&delta_of_4) && !doomed(&plan).contains(&delta_of_4));

        // Dry run by default: nothing changed. Executing deletes exactly the plan.
        assert_eq!(everything(&f), all);
        let deleted = execute(&f.origin, &plan).unwrap();
        assert_eq!(deleted, plan.delete_total);
        let left = everything(&f);
        assert_eq!(
            left,
            all.difference(&doomed(&plan))
                .cloned()
                .collect::<BTreeSet<_>>()
        );
        // A second run keeps the same, notes the histories end early, and deletes nothing.
        let again = super::plan(&f.origin, 1, Duration::ZERO).unwrap();
        assert!(again.delete.is_empty(), "{:?}", again.delete);
        assert_eq!(versions(&again, "stable"), ["4.0.0"]);
        assert!(
            again
                .notes
                .iter()
                .any(|n| n.contains("history of channel stable ends early")),
            "{:?}",
            again.notes
        );
    }

    #[test]
    fn objects_younger_than_min_age_are_spared() {
        let (f, stable, _) = two_channels();
        let old = objects_of(&f, stable[0]);
        age(&f, &old, Duration::from_secs(7_200));
        let plan = plan(&f.origin, 1, Duration::from_secs(3_600)).unwrap();
        // Only 1.0.0 is old enough; 2.0.0 (not kept either) is spared.
        assert_eq!(doomed(&plan), old);
        let young = objects_of(&f, stable[1])
            .difference(&objects_of(&f, stable[2]))
            .count();
        assert!(young > 0);
        assert_eq!(plan.spared_young.objects, young as u64);
        execute(&f.origin, &plan).unwrap();
        assert!(old.iter().all(|p| !f.origin.exists(p)));
        assert!(f.origin.exists(&manifest_path(&stable[1])));
    }

    #[test]
    fn fails_closed_on_a_pointer_or_kept_manifest_it_cannot_verify() {
        let (f, stable, beta) = two_channels();
        let all = everything(&f);
        let err = |f: &Fixture| format!("{:#}", plan(&f.origin, 1, Duration::ZERO).unwrap_err());

        // A flipped byte in a pointer's signed body.
        let path = channel_path("beta");
        let good = f.origin.read(&path).unwrap().unwrap();
        let mut bad = good.clone();
        let at = bad.len() - 70;
        bad[at] ^= 1;
        f.origin.put(&path, &bad).unwrap();
        let e = err(&f);
        assert!(
            e.contains("channels/beta: the channel pointer does not verify")
                && e.contains("nothing was deleted"),
            "{e}"
        );
        f.origin.put(&path, &good).unwrap();

        // A kept ancestor that does not hash to its name.
        let kept = manifest_path(&stable[2]);
        let file = f.origin.read(&kept).unwrap().unwrap();
        let other = f.origin.read(&manifest_path(&beta[0])).unwrap().unwrap();
        f.origin.put(&kept, &other).unwrap();
        let e = err(&f);
        assert!(
            e.contains(&format!("{kept} on the origin does not hash")),
            "{e}"
        );
        f.origin.put(&kept, &file).unwrap();

        // The manifest a pointer names is missing.
        let current = manifest_path(&beta[1]);
        let file = f.origin.read(&current).unwrap().unwrap();
        f.origin.delete(&current).unwrap();
        let e = err(&f);
        assert!(
            e.contains(&format!("channels/beta names manifest {}", beta[1])),
            "{e}"
        );
        f.origin.put(&current, &file).unwrap();

        // No channel at all.
        let empty = Fixture::new();
        empty.origin.put("packs/unreferenced", b"x").unwrap();
        let e = err(&empty);
        assert!(e.contains("no channel pointers"), "{e}");

        assert_eq!(everything(&f), all);
        assert!(plan(&f.origin, 1, Duration::ZERO).is_ok());
    }
}
