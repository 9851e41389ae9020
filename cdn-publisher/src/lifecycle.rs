//! `promote` and `yank`: re-signing a channel's pointer to change who gets what.
//!
//! A staged rollout raises (or, to halt it, lowers) [`Pointer::rollout_percent`]. A yank adds
//! a version to [`Pointer::yanked`]. If the channel offers that very version, the channel
//! moves back to the newest earlier release that is not yanked, found by following the
//! manifests' `parent` links on the origin; that release is checked as clients will check it
//! (hash, signatures under the newest root, structure) before anything is signed.
//!
//! The pointer for such a release lists the manifest deltas published with it
//! (`manifests/<id>.from-<base>`, still on the origin), so installs on its ancestors fetch a
//! few KiB. Installs on the yanked release have no delta against it and fetch the whole
//! manifest.
//!
//! Installs running a yanked version keep it unless the pointer carries a rollback directive
//! ([`RollbackDirective`]) that the release role signed: `yank --roll-back` makes one, to be
//! signed with the release keys or elsewhere, since going below a version installs trusted
//! must not rest on the online channel key.

use anyhow::{Context, Result, bail};
use relsync_format::directive::RollbackDirective;
use relsync_format::manifest::{FORMAT_VERSION, ManifestDelta, Pointer, limits};
use relsync_format::paths::manifest_delta_path;
use semver::Version;
use serde::Serialize;

use crate::history::{History, Release};
use crate::origin::Origin;
use crate::publish::{check_manifest, current_pointer, reissued, unix_now};

/// A re-issued channel pointer, and what changed.
#[derive(Debug, Clone)]
pub struct Change {
    /// The new pointer, unsigned.
    pub pointer: Pointer,
    /// The rollout percentage before.
    pub previous_percent: u8,
    /// The version the channel offered before, when the change moved it.
    pub moved_from: Option<Version>,
    /// The version just yanked ([`yank`] only).
    pub yanked_now: Option<Version>,
    /// The version was yanked already; only the roll-back directive may have changed.
    pub already_yanked: bool,
    /// The rollback directive to sign (`yank --roll-back`), unsigned: the pointer carries it
    /// ([`Pointer::rollback`]) once the release role has signed it.
    pub directive: Option<RollbackDirective>,
    /// Things the operator should know (say, the release fallen back to has expired).
    pub warnings: Vec<String>,
}

/// A rollback directive as `--json` prints it: installs on `from` go back to `to`.
#[derive(Debug, Serialize)]
pub struct RollbackSummary {
    pub from: Vec<String>,
    pub to: String,
}

impl RollbackSummary {
    /// The directive `pointer` carries (decoded, not verified), if any.
    pub fn of(pointer: &Pointer) -> Option<Self> {
        let bytes = pointer.rollback.as_deref()?;
        let directive = relsync_format::dangerous::directive(bytes).ok()?;
        Some(Self::from_directive(&directive))
    }

    pub fn from_directive(directive: &RollbackDirective) -> Self {
        Self {
            from: directive.from.iter().map(ToString::to_string).collect(),
            to: directive.to_version.to_string(),
        }
    }
}

/// A [`Change`] as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct ChangeSummary {
    pub channel: String,
    /// The version the channel offers now.
    pub version: String,
    pub manifest: String,
    pub rollout_percent: u8,
    pub previous_rollout_percent: u8,
    pub yanked: Vec<String>,
    /// The rollback directive the pointer carries: installs on `from` go back to `to`.
    pub rollback: Option<RollbackSummary>,
    /// The version the channel offered before, when it moved.
    pub moved_from: Option<String>,
    pub already_yanked: bool,
    pub expires_unix: u64,
    /// Where the unsigned pointer was written, when it is to be signed elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsigned: Option<String>,
    pub warnings: Vec<String>,
}

impl Change {
    /// The summary, given where the pointer was written unsigned (if it was).
    pub fn summary(&self, unsigned: Option<String>) -> ChangeSummary {
        let p = &self.pointer;
        ChangeSummary {
            channel: p.channel.clone(),
            version: p.version.to_string(),
            manifest: p.manifest.to_string(),
            rollout_percent: p.rollout_percent,
            previous_rollout_percent: self.previous_percent,
            yanked: p.yanked.iter().map(ToString::to_string).collect(),
            rollback: RollbackSummary::of(p),
            moved_from: self.moved_from.as_ref().map(ToString::to_string),
            already_yanked: self.already_yanked,
            expires_unix: p.expires_unix,
            unsigned,
            warnings: self.warnings.clone(),
        }
    }
}

/// The channel's pointer re-issued (fresh issue time, expiring in `days`) with `percent` as
/// its rollout percentage. Refused unless the channel offers `version`.
pub fn promote(
    origin: &Origin,
    channel: &str,
    version: &Version,
    percent: u8,
    days: u64,
) -> Result<Change> {
    if percent > 100 {
        bail!("the rollout percentage is {percent}; it must be 0 to 100");
    }
    let current = current_or_refuse(origin, channel)?;
    if current.version != *version {
        bail!(
            "channel {channel} offers {}, not {version}; promote changes the rollout of the \
             release a channel offers",
            current.version
        );
    }
    let previous_percent = current.rollout_percent;
    let pointer = Pointer {
        rollout_percent: percent,
        ..reissued(origin, current, days)?
    };
    Ok(Change {
        pointer,
        previous_percent,
        moved_from: None,
        yanked_now: None,
        already_yanked: false,
        directive: None,
        warnings: Vec::new(),
    })
}

/// The channel's pointer re-issued with `version` yanked. If the channel offers `version`, it
/// offers the newest earlier release that is not yanked instead, to every install. Refused for
/// a version the channel never offered, and when there is nothing to fall back to.
///
/// The channel's rollback directive is carried forward while it names the release the channel
/// offers, and dropped when the channel moves. With `roll_back`, the change holds a new
/// directive ([`Change::directive`], to be signed by the release role) taking installs on
/// `version`, and on the versions the channel's directive took back, to the channel's release.
pub fn yank(
    origin: &Origin,
    channel: &str,
    version: &Version,
    roll_back: bool,
    days: u64,
) -> Result<Change> {
    let current = current_or_refuse(origin, channel)?;
    let mut change = withdraw(origin, channel, version, &current, days)?;
    let earlier = directed_from(&current);
    if change.moved_from.is_some() {
        // It names the release the channel left.
        change.pointer.rollback = None;
        if !earlier.is_empty() && !roll_back {
            change.warnings.push(format!(
                "the rollback directive for installs on {} named {}, which the channel left; \
                 it is dropped, so those installs keep what they run (yank with --roll-back \
                 to take them to {})",
                listed(&earlier.iter().map(ToString::to_string).collect::<Vec<_>>()),
                current.version,
                change.pointer.version
            ));
        }
    }
    if roll_back {
        let mut from = earlier;
        from.push(version.clone());
        from.sort();
        from.dedup();
        let p = &change.pointer;
        change.directive = Some(RollbackDirective {
            format: FORMAT_VERSION,
            product: p.product.clone(),
            channel: p.channel.clone(),
            from,
            to_version: p.version.clone(),
            to: p.manifest,
            issued_unix: unix_now(),
        });
        // Until the release role signs the new one.
        change.pointer.rollback = None;
    }
    Ok(change)
}

/// The versions whose installs the channel's rollback directive takes back, if it has one
/// for the release it offers (not verified: the new directive is, before it is published).
fn directed_from(current: &Pointer) -> Vec<Version> {
    current
        .rollback
        .as_deref()
        .and_then(|bytes| relsync_format::dangerous::directive(bytes).ok())
        .filter(|d| d.to == current.manifest)
        .map_or_else(Vec::new, |d| d.from)
}

/// [`yank`] without the rollback directive: the pointer with `version` yanked, moved back if
/// it offered `version`.
fn withdraw(
    origin: &Origin,
    channel: &str,
    version: &Version,
    current: &Pointer,
    days: u64,
) -> Result<Change> {
    let mut change = Change {
        pointer: reissued(origin, current.clone(), days)?,
        previous_percent: current.rollout_percent,
        moved_from: None,
        yanked_now: Some(version.clone()),
        already_yanked: current.is_yanked(version),
        directive: None,
        warnings: Vec::new(),
    };
    if change.already_yanked {
        return Ok(change);
    }
    if current.yanked.len() >= limits::YANKED {
        bail!(
            "channel {channel} already lists {} yanked versions, the most a pointer holds",
            current.yanked.len()
        );
    }
    let mut yanked = current.yanked.clone();
    yanked.push(version.clone());
    yanked.sort();

    if current.version != *version {
        // An older release: it must be in the channel's history.
        let mut passed = Vec::new();
        for release in History::new(origin, Some(current.manifest)) {
            let release = release?;
            if release.manifest.version == *version {
                change.pointer.yanked = yanked;
                return Ok(change);
            }
            passed.push(release.manifest.version.to_string());
        }
        bail!(
            "channel {channel} never offered {version}: its releases on the origin are {}",
            listed(&passed)
        );
    }

    // The channel offers the yanked version: fall back along its history.
    let mut passed = Vec::new();
    let mut fallback = None;
    for release in History::new(origin, Some(current.manifest)) {
        let release = release?;
        let m = &release.manifest;
        if m.channel != channel || m.product != current.product {
            bail!(
                "manifest {} in the history of channel {channel} is a release of {} on channel \
                 {}",
                release.id,
                m.product,
                m.channel
            );
        }
        if yanked.contains(&m.version) {
            passed.push(format!("{} (yanked)", m.version));
            continue;
        }
        fallback = Some(release);
        break;
    }
    let Some(fallback) = fallback else {
        bail!(
            "channel {channel} has no earlier release that is not yanked to fall back to \
             (its history on the origin: {}); publish a fixed release instead",
            listed(&passed)
        );
    };
    check_manifest(origin, &fallback.envelope).with_context(|| {
        format!(
            "{} (manifest {}), the release to fall back to, would be refused by clients",
            fallback.manifest.version, fallback.id
        )
    })?;
    if fallback.manifest.expires_unix < unix_now() {
        change.warnings.push(format!(
            "{} expired at {}: new installs will refuse it until a newer release is \
             published",
            fallback.manifest.version,
            relsync_format::format_utc(fallback.manifest.expires_unix)
        ));
    }
    let manifest_deltas = published_deltas(origin, &fallback);
    change.moved_from = Some(current.version.clone());
    change.pointer = Pointer {
        version: fallback.manifest.version.clone(),
        manifest: fallback.id,
        manifest_len: fallback.file_len,
        manifest_deltas,
        rollout_percent: 100,
        yanked,
        ..change.pointer
    };
    Ok(change)
}

/// Versions for a message: the first few, and how many more.
fn listed(versions: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut text = versions[..versions.len().min(SHOWN)].join(", ");
    if versions.len() > SHOWN {
        text.push_str(&format!(" and {} older", versions.len() - SHOWN));
    }
    text
}

fn current_or_refuse(origin: &Origin, channel: &str) -> Result<Pointer> {
    current_pointer(origin, channel)?
        .with_context(|| format!("channel {channel} has no pointer on the origin"))
}

/// The manifest deltas published with `release` that are still on the origin, nearest base
/// first (the order a pointer lists them in). Best effort: the walk stops at the first gap.
fn published_deltas(origin: &Origin, release: &Release) -> Vec<ManifestDelta> {
    let mut deltas = Vec::new();
    for base in History::new(origin, release.manifest.parent).take(limits::MANIFEST_DELTAS) {
        let Ok(base) = base else { break };
        let Ok(Some(len)) = origin.len_of(&manifest_delta_path(&release.id, &base.id)) else {
            break;
        };
        deltas.push(ManifestDelta { base: base.id, len });
    }
    deltas
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use relsync_format::paths::{channel_path, manifest_path};
    use relsync_format::root::RoleKeys;

    use super::*;
    use crate::commands::push::{PushOptions, read_notes_file};
    use crate::fixture::{Fixture, key};
    use crate::publish::{check_directive, put_pointer, refreshed};

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn err_text<T: std::fmt::Debug>(result: Result<T>) -> String {
        format!("{:#}", result.unwrap_err())
    }

    #[test]
    fn promote_changes_only_the_percentage_of_the_named_release() {
        let f = Fixture::new();
        f.push_with(&PushOptions {
            rollout_percent: 10,
            ..f.opts("1.0.0")
        })
        .unwrap();
        let before = f.pointer();
        assert_eq!(before.rollout_percent, 10);

        let err = err_text(promote(&f.origin, "stable", &v("2.0.0"), 50, 7));
        assert!(err.contains("offers 1.0.0, not 2.0.0"), "{err}");
        let err = err_text(promote(&f.origin, "beta", &v("1.0.0"), 50, 7));
        assert!(err.contains("channel beta has no pointer"), "{err}");

        let change = promote(&f.origin, "stable", &v("1.0.0"), 50, 7).unwrap();
        assert_eq!(change.previous_percent, 10);
        let after = f.publish(&change);
        assert_eq!(after.rollout_percent, 50);
        assert!(after.issued_unix >= before.issued_unix);
        assert_eq!(
            Pointer {
                rollout_percent: 10,
                issued_unix: before.issued_unix,
                expires_unix: before.expires_unix,
                ..after.clone()
            },
            before
        );
        // Lowering halts the rollout; refresh keeps the percentage.
        f.publish(&promote(&f.origin, "stable", &v("1.0.0"), 0, 7).unwrap());
        let sealed = refreshed(&f.origin, "stable", 7)
            .unwrap()
            .seal(&[&key()])
            .unwrap();
        put_pointer(&f.origin, &sealed, false).unwrap();
        assert_eq!(f.pointer().rollout_percent, 0);
    }

    #[test]
    fn yank_falls_back_along_the_history_and_is_carried_forward() {
        let f = Fixture::new();
        let v1 = f.push("1.0.0");
        let v2 = f.push("2.0.0");
        f.push_with(&PushOptions {
            rollout_percent: 20,
            ..f.opts("3.0.0")
        })
        .unwrap();

        let change = yank(&f.origin, "stable", &v("3.0.0"), true, 7).unwrap();
        assert_eq!(change.moved_from, Some(v("3.0.0")));
        let p = f.publish(&change);
        assert_eq!(
            (p.version.clone(), p.manifest, p.rollout_percent),
            (v("2.0.0"), v2, 100)
        );
        assert_eq!(p.yanked, vec![v("3.0.0")]);
        assert_eq!(directed(&p), Some((vec![v("3.0.0")], v("2.0.0"))));
        // The delta published with 2.0.0 against 1.0.0 is offered again.
        assert_eq!(
            p.manifest_deltas.iter().map(|d| d.base).collect::<Vec<_>>(),
            vec![v1]
        );
        let file = f.origin.read(&manifest_path(&v2)).unwrap().unwrap();
        assert_eq!(p.manifest_len, file.len() as u64);

        // Yanking an older release only lists it, and keeps the directive, which still names
        // the channel's release; yanking it again with --roll-back adds it to the directive.
        let p = f.publish(&yank(&f.origin, "stable", &v("1.0.0"), false, 7).unwrap());
        assert_eq!((p.version.clone(), p.manifest), (v("2.0.0"), v2));
        assert_eq!(p.yanked, vec![v("1.0.0"), v("3.0.0")]);
        assert_eq!(directed(&p), Some((vec![v("3.0.0")], v("2.0.0"))));
        let change = yank(&f.origin, "stable", &v("1.0.0"), true, 7).unwrap();
        assert!(change.already_yanked);
        let p = f.publish(&change);
        assert_eq!(
            directed(&p),
            Some((vec![v("1.0.0"), v("3.0.0")], v("2.0.0")))
        );
        // Promote and refresh carry it unchanged.
        let promoted = f.publish(&promote(&f.origin, "stable", &v("2.0.0"), 50, 7).unwrap());
        assert_eq!(promoted.rollback, p.rollback);
        let sealed = refreshed(&f.origin, "stable", 7)
            .unwrap()
            .seal(&[&key()])
            .unwrap();
        put_pointer(&f.origin, &sealed, false).unwrap();
        assert_eq!(f.pointer().rollback, p.rollback);

        // 2.0.0 has nothing left to fall back to: 1.0.0 is yanked.
        let err = err_text(yank(&f.origin, "stable", &v("2.0.0"), true, 7));
        assert!(
            err.contains("no earlier release that is not yanked")
                && err.contains("2.0.0 (yanked), 1.0.0 (yanked)"),
            "{err}"
        );
        let err = err_text(yank(&f.origin, "stable", &v("2.5.0"), true, 7));
        assert!(
            err.contains("never offered 2.5.0") && err.contains("2.0.0, 1.0.0"),
            "{err}"
        );

        // A yanked version cannot come back; a new one keeps the yanked list.
        let err = err_text(f.push_with(&PushOptions {
            force: true,
            ..f.opts("3.0.0")
        }));
        assert!(
            err.contains("3.0.0 was yanked from channel stable"),
            "{err}"
        );
        f.push("4.0.0");
        let p = f.pointer();
        assert_eq!(p.version, v("4.0.0"));
        assert_eq!(p.yanked, vec![v("1.0.0"), v("3.0.0")]);
        assert_eq!(p.rollback, None);
        assert_eq!(p.rollout_percent, 100);
    }

    /// The rollback directive `p` carries, verified: (from, to).
    fn directed(p: &Pointer) -> Option<(Vec<Version>, Version)> {
        RollbackDirective::verified(p, &RoleKeys::single(key().public()))
            .unwrap()
            .map(|d| (d.from, d.to_version))
    }

    #[test]
    fn a_second_roll_back_takes_the_earlier_directive_along_and_a_plain_yank_drops_it() {
        let f = Fixture::new();
        for version in ["1.0.0", "2.0.0", "3.0.0", "4.0.0"] {
            f.push(version);
        }
        f.publish(&yank(&f.origin, "stable", &v("4.0.0"), true, 7).unwrap());
        // 3.0.0, the release fallen back to, is yanked too: installs on 4.0.0 come along.
        let change = yank(&f.origin, "stable", &v("3.0.0"), true, 7).unwrap();
        assert!(change.warnings.is_empty(), "{:?}", change.warnings);
        let p = f.publish(&change);
        assert_eq!(p.version, v("2.0.0"));
        assert_eq!(
            directed(&p),
            Some((vec![v("3.0.0"), v("4.0.0")], v("2.0.0")))
        );
        let summary = change.summary(None);
        assert_eq!(summary.rollback.map(|r| r.from), None, "set once signed");
        let summary = Change {
            pointer: p.clone(),
            ..change
        }
        .summary(None);
        let rollback = summary.rollback.unwrap();
        assert_eq!(
            (rollback.from, rollback.to),
            (
                vec!["3.0.0".to_owned(), "4.0.0".to_owned()],
                "2.0.0".to_owned()
            )
        );

        // Without --roll-back the channel moves and the directive, naming 2.0.0, is dropped.
        let change = yank(&f.origin, "stable", &v("2.0.0"), false, 7).unwrap();
        assert!(change.directive.is_none());
        assert!(
            change
                .warnings
                .iter()
                .any(|w| w.contains("installs on 3.0.0, 4.0.0 named 2.0.0")),
            "{:?}",
            change.warnings
        );
        let p = f.publish(&change);
        assert_eq!((p.version.clone(), p.rollback), (v("1.0.0"), None));
    }

    /// A root with its own release and channel keys: the channel key signs the pointer, but
    /// only the release key makes a rollback directive that `put_pointer` and clients accept.
    #[test]
    fn a_rollback_directive_needs_the_release_role() {
        use relsync_format::SecretKey;
        use relsync_format::envelope::{self, Kind};
        use relsync_format::root::{ROOT_FORMAT, Root};

        use crate::commands::push::{Signers, push};

        let f = Fixture::new();
        let [root_key, release, channel] = [1u8, 2, 3].map(|b| {
            SecretKey::from_file_text(&format!(
                "relsync-ed25519-secret:{}",
                format!("{b:02x}").repeat(32)
            ))
            .unwrap()
        });
        let root = Root {
            format: ROOT_FORMAT,
            product: "app".into(),
            version: 1,
            expires_unix: unix_now() + 86_400,
            root: RoleKeys::single(root_key.public()),
            release: RoleKeys::single(release.public()),
            channel: RoleKeys::single(channel.public()),
        };
        let sealed = envelope::seal(Kind::Root, &root.to_body().unwrap(), &[&root_key]).unwrap();
        f.origin.put("keys/root-1", &sealed).unwrap();
        for version in ["1.0.0", "2.0.0", "3.0.0"] {
            let signers = Signers {
                release: vec![SecretKey::from_file_text(&release.to_file_text()).unwrap()],
                channel: vec![SecretKey::from_file_text(&channel.to_file_text()).unwrap()],
            };
            push(&f.opts(version), &signers, &f.origin, &|_, _| {}).unwrap();
        }
        let before = f.origin.read(&channel_path("stable")).unwrap().unwrap();

        let change = yank(&f.origin, "stable", &v("3.0.0"), true, 7).unwrap();
        let directive = change.directive.clone().unwrap();
        for (what, signers) in [
            ("the channel key", vec![&channel]),
            ("no key", vec![]),
            ("the root key", vec![&root_key]),
        ] {
            let mut p = change.pointer.clone();
            p.rollback = Some(directive.seal(&signers).unwrap());
            let err = err_text(check_directive(&f.origin, &p));
            assert!(
                err.contains("does not meet the release role of root version 1")
                    && err.contains("not signed by the release role"),
                "{what}: {err}"
            );
            let err = err_text(put_pointer(&f.origin, &p.seal(&[&channel]).unwrap(), true));
            assert!(err.contains("release role"), "{what}: {err}");
            assert_eq!(
                f.origin.read(&channel_path("stable")).unwrap().unwrap(),
                before,
                "{what}: the origin changed"
            );
        }
        // `ls`, `verify` and `gc` check the directive as clients do.
        let mut p = change.pointer.clone();
        p.rollback = Some(directive.seal(&[&channel]).unwrap());
        let err = err_text(
            crate::operate::Trust::load(&f.origin)
                .unwrap()
                .pointer(&p.seal(&[&channel]).unwrap()),
        );
        assert!(
            err.contains("its rollback directive does not meet the release role"),
            "{err}"
        );
        // A directive for another release, even well signed, is refused too.
        let mut p = change.pointer.clone();
        let other = RollbackDirective {
            to_version: v("1.0.0"),
            ..directive.clone()
        };
        p.rollback = Some(other.seal(&[&release]).unwrap());
        let err = err_text(check_directive(&f.origin, &p));
        assert!(err.contains("names version 1.0.0"), "{err}");

        let mut p = change.pointer.clone();
        p.rollback = Some(directive.seal(&[&release]).unwrap());
        assert_eq!(
            check_directive(&f.origin, &p).unwrap(),
            Some(directive.clone())
        );
        let published = put_pointer(&f.origin, &p.seal(&[&channel]).unwrap(), true).unwrap();
        assert_eq!(published.version, v("2.0.0"));
        let on_origin = f.origin.read(&channel_path("stable")).unwrap().unwrap();
        let opened = Pointer::open(&on_origin, &RoleKeys::single(channel.public())).unwrap();
        assert_eq!(
            RollbackDirective::verified(&opened, &RoleKeys::single(release.public())).unwrap(),
            Some(directive)
        );
    }

    #[test]
    fn yank_refuses_the_only_release() {
        let f = Fixture::new();
        f.push("1.0.0");
        let err = err_text(yank(&f.origin, "stable", &v("1.0.0"), false, 7));
        assert!(
            err.contains("channel stable has no earlier release that is not yanked"),
            "{err}"
        );
        assert!(f.pointer().yanked.is_empty());
    }

    #[test]
    fn a_pointer_that_drops_a_yank_is_refused_unless_forced() {
        let f = Fixture::new();
        f.push("1.0.0");
        f.push("2.0.0");
        f.publish(&yank(&f.origin, "stable", &v("1.0.0"), false, 7).unwrap());
        let mut p = f.pointer();
        p.yanked.clear();
        let sealed = p.seal(&[&key()]).unwrap();
        let err = err_text(put_pointer(&f.origin, &sealed, false));
        assert!(err.contains("has yanked 1.0.0"), "{err}");
        put_pointer(&f.origin, &sealed, true).unwrap();
    }

    #[test]
    fn notes_and_critical_are_signed_into_the_manifest() {
        let f = Fixture::new();
        let notes_path = |name: &str, bytes: &[u8]| -> PathBuf {
            let path = f.tmp.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let max = limits::NOTES_BYTES;
        let ok = read_notes_file(&notes_path("ok", &vec![b'n'; max])).unwrap();
        assert_eq!(ok.len(), max);
        let err = err_text(read_notes_file(&notes_path("big", &vec![b'n'; max + 1])));
        assert!(err.contains("are 16385 bytes; at most 16384"), "{err}");
        let err = err_text(read_notes_file(&notes_path("latin1", b"caf\xe9")));
        assert!(err.contains("not UTF-8 (at byte 3)"), "{err}");
        let err = err_text(read_notes_file(Path::new("/nonexistent/notes")));
        assert!(err.contains("/nonexistent/notes"), "{err}");

        let err = err_text(f.push_with(&PushOptions {
            notes: "x".repeat(max + 1),
            ..f.opts("1.0.0")
        }));
        assert!(err.contains("16385 bytes"), "{err}");
        let id = f
            .push_with(&PushOptions {
                critical: true,
                notes: "Fixes CVE-2026-0001.\n".into(),
                ..f.opts("1.0.0")
            })
            .unwrap();
        let envelope = f.origin.read_manifest(&id).unwrap().unwrap();
        let m = check_manifest(&f.origin, &envelope).unwrap();
        assert!(m.critical);
        assert_eq!(m.notes, "Fixes CVE-2026-0001.\n");
    }
}
