//! `verify`: check every object of an origin as clients would, and more.
//!
//! Packs hash to their names; manifests hash to theirs, verify under the root chain and name
//! packs that exist with the stated lengths; manifest deltas decode to exactly their target;
//! channel pointers verify, are fresh and name what exists; the root chain verifies link by
//! link.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use relsync_format::manifest::{Manifest, Pointer, TrustedManifest, decompress_envelope};
use relsync_format::paths::{manifest_delta_path, manifest_path, pack_path};
use relsync_format::{ManifestId, PackId};
use serde::Serialize;

use super::{OriginAt, emit, utc};
use crate::operate::{Inventory, Name, Trust};
use crate::origin::{ObjectMeta, Origin};
use crate::publish::unix_now;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub at: OriginAt,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Largest piece of a pack read at once.
const PIECE_BYTES: u64 = 8 << 20;

/// Something wrong with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub problem: String,
}

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub objects_checked: u64,
    pub bytes_hashed: u64,
    pub problems: Vec<Problem>,
    /// Manifest deltas not decoded: their base is not on the origin (installs holding it can
    /// still use them).
    pub deltas_unchecked: u64,
    pub seconds: f64,
}

impl VerifyReport {
    fn problem(&mut self, path: &str, problem: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            problem: problem.into(),
        });
    }
}

/// A manifest as read from the origin.
struct Read {
    /// The envelope, when the file decompressed and hashes to its name.
    envelope: Option<Vec<u8>>,
    /// Verified under some root of the chain.
    trusted: Option<TrustedManifest>,
}

/// Checks every object of the origin; problems are in the report, errors are failures to
/// list the origin.
pub fn verify(origin: &Origin) -> Result<VerifyReport> {
    let started = Instant::now();
    let inventory = Inventory::list(origin)?;
    let mut report = VerifyReport {
        objects_checked: inventory.objects.len() as u64,
        ..VerifyReport::default()
    };
    let trust = check_layout(origin, &inventory, &mut report);
    let packs = inventory.packs();
    check_packs(origin, &packs, &mut report);
    let manifests = check_manifests(origin, trust.as_ref(), &inventory, &packs, &mut report);
    check_deltas(origin, &inventory, &manifests, &mut report);

    // Channel pointers.
    let lens: HashMap<&str, u64> = inventory
        .objects
        .iter()
        .map(|(_, meta)| (meta.path.as_str(), meta.len))
        .collect();
    let listed = Listed {
        manifests: &manifests,
        lens: &lens,
    };
    for (channel, meta) in inventory.channels() {
        check_pointer(origin, trust.as_ref(), channel, meta, &listed, &mut report);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The root chain (every `keys/` object must be one of its links), names relsync does not
/// write, and an origin without channels. Returns the chain's trust, if it verifies.
fn check_layout(
    origin: &Origin,
    inventory: &Inventory,
    report: &mut VerifyReport,
) -> Option<Trust> {
    let trust = match Trust::load(origin) {
        Ok(trust) => Some(trust),
        Err(e) => {
            report.problem("keys/", format!("{e:#}; signatures were not checked"));
            None
        }
    };
    for (name, meta) in &inventory.objects {
        match name {
            Name::Root(version) => {
                if let Some(trust) = &trust
                    && *version > trust.len() as u64
                {
                    report.problem(
                        &meta.path,
                        format!(
                            "not part of the root chain, which ends at keys/root-{}",
                            trust.len()
                        ),
                    );
                }
            }
            Name::Unknown => report.problem(&meta.path, "not a name relsync writes here"),
            _ => {}
        }
    }
    if inventory.channels().next().is_none() {
        report.problem(
            "channels/",
            "no channel pointers: nothing is published here (is it the right origin?)",
        );
    }

    trust
}

/// Packs: streamed in pieces, hashed in parallel.
fn check_packs(origin: &Origin, packs: &BTreeMap<PackId, &ObjectMeta>, report: &mut VerifyReport) {
    let hashed: Vec<(u64, Option<Problem>)> = packs
        .par_iter()
        .map(|(id, meta)| match hash_object(origin, meta) {
            Ok((hash, len)) if hash == *id.as_bytes() => (len, None),
            Ok((hash, len)) => (
                len,
                Some(Problem {
                    path: meta.path.clone(),
                    problem: format!(
                        "its {len} bytes hash to {}, not to its name",
                        hex::encode(hash)
                    ),
                }),
            ),
            Err(e) => (
                0,
                Some(Problem {
                    path: meta.path.clone(),
                    problem: format!("unreadable: {e:#}"),
                }),
            ),
        })
        .collect();
    for (len, problem) in hashed {
        report.bytes_hashed += len;
        report.problems.extend(problem);
    }
}

/// Manifests, and the packs each names.
fn check_manifests(
    origin: &Origin,
    trust: Option<&Trust>,
    inventory: &Inventory,
    packs: &BTreeMap<PackId, &ObjectMeta>,
    report: &mut VerifyReport,
) -> HashMap<ManifestId, Read> {
    let mut manifests: HashMap<ManifestId, Read> = HashMap::new();
    for (id, meta) in inventory.manifests() {
        let read = check_manifest(origin, trust, id, meta, report);
        if let Some(m) = &read.trusted {
            for pack in &m.packs {
                let path = pack_path(&pack.id);
                match packs.get(&pack.id) {
                    None => report.problem(
                        &meta.path,
                        format!(
                            "{} names {path} ({} bytes), which is missing",
                            m.version, pack.len
                        ),
                    ),
                    Some(found) if found.len != pack.len => report.problem(
                        &meta.path,
                        format!(
                            "{} names {path} as {} bytes, but it is {} bytes",
                            m.version, pack.len, found.len
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
        manifests.insert(id, read);
    }

    manifests
}

/// Manifest deltas: each decodes, against its base, to exactly its target.
fn check_deltas(
    origin: &Origin,
    inventory: &Inventory,
    manifests: &HashMap<ManifestId, Read>,
    report: &mut VerifyReport,
) {
    for (name, meta) in &inventory.objects {
        let Name::ManifestDelta { target, base } = name else {
            continue;
        };
        if !manifests.contains_key(target) {
            report.problem(
                &meta.path,
                format!("a delta of manifest {target}, which is not on the origin"),
            );
            continue;
        }
        let Some(read) = manifests.get(base) else {
            report.deltas_unchecked += 1;
            continue;
        };
        let Some(base_envelope) = &read.envelope else {
            // The base's own problem is reported.
            report.deltas_unchecked += 1;
            continue;
        };
        let decoded = origin
            .read(&meta.path)
            .and_then(|f| f.with_context(|| format!("{} vanished", meta.path)))
            .and_then(|file| Ok(decompress_envelope(&file, Some(base_envelope))?));
        match decoded {
            Ok(envelope) => {
                report.bytes_hashed += envelope.len() as u64;
                let got = ManifestId::of(&envelope);
                if got != *target {
                    report.problem(
                        &meta.path,
                        format!("decodes to manifest {got}, not to its target {target}"),
                    );
                }
            }
            Err(e) => report.problem(&meta.path, format!("does not decode: {e:#}")),
        }
    }
}

/// BLAKE3 of an object read in pieces of at most [`PIECE_BYTES`], and its length.
fn hash_object(origin: &Origin, meta: &ObjectMeta) -> Result<([u8; 32], u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0;
    while offset < meta.len {
        let len = (meta.len - offset).min(PIECE_BYTES);
        let piece = origin.read_range(&meta.path, offset, len as usize)?;
        if piece.len() as u64 != len {
            bail!(
                "read {} bytes at {offset} instead of {len}: it changed while being read",
                piece.len()
            );
        }
        hasher.update(&piece);
        offset += len;
    }
    Ok((*hasher.finalize().as_bytes(), meta.len))
}

fn check_manifest(
    origin: &Origin,
    trust: Option<&Trust>,
    id: ManifestId,
    meta: &ObjectMeta,
    report: &mut VerifyReport,
) -> Read {
    let mut read = Read {
        envelope: None,
        trusted: None,
    };
    let file = match origin.read(&meta.path) {
        Ok(Some(file)) => file,
        Ok(None) => {
            report.problem(&meta.path, "vanished while being checked");
            return read;
        }
        Err(e) => {
            report.problem(&meta.path, format!("unreadable: {e:#}"));
            return read;
        }
    };
    let envelope = match decompress_envelope(&file, None) {
        Ok(envelope) => envelope,
        Err(e) => {
            report.problem(&meta.path, format!("does not decompress: {e}"));
            return read;
        }
    };
    report.bytes_hashed += envelope.len() as u64;
    let actual = ManifestId::of(&envelope);
    if actual != id {
        report.problem(
            &meta.path,
            format!("its envelope hashes to {actual}, not to its name"),
        );
        return read;
    }
    read.envelope = Some(envelope.clone());
    match trust {
        Some(trust) => match trust.manifest(envelope, &id) {
            Ok(m) => read.trusted = Some(m),
            Err(e) => report.problem(&meta.path, format!("does not verify: {e:#}")),
        },
        // Without a root chain, the structure is still checked.
        None => match relsync_format::dangerous::trusted_manifest(envelope) {
            Ok(m) => read.trusted = Some(m),
            Err(e) => report.problem(&meta.path, format!("is malformed: {e}")),
        },
    }
    read
}

/// What the listing and the manifest checks found, for checking pointers against.
struct Listed<'a> {
    manifests: &'a HashMap<ManifestId, Read>,
    /// Every object's length, by path.
    lens: &'a HashMap<&'a str, u64>,
}

fn check_pointer(
    origin: &Origin,
    trust: Option<&Trust>,
    channel: &str,
    meta: &ObjectMeta,
    listed: &Listed<'_>,
    report: &mut VerifyReport,
) {
    let path = &meta.path;
    let bytes = match origin.read(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return report.problem(path, "vanished while being checked"),
        Err(e) => return report.problem(path, format!("unreadable: {e:#}")),
    };
    let opened = match trust {
        Some(trust) => trust.pointer(&bytes),
        None => relsync_format::dangerous::pointer(&bytes).map_err(Into::into),
    };
    let pointer = match opened {
        Ok(pointer) => pointer,
        Err(e) => return report.problem(path, format!("does not verify: {e:#}")),
    };
    if pointer.channel != channel {
        report.problem(
            path,
            format!("is the pointer of channel {}", pointer.channel),
        );
    }
    let now = unix_now();
    if pointer.expires_unix < now {
        report.problem(
            path,
            format!(
                "expired at {} UTC: clients refuse it as stale; re-sign it with `cdn-publisher \
                 channel refresh`",
                utc(pointer.expires_unix)
            ),
        );
    }
    let m = manifest_path(&pointer.manifest);
    let Some(read) = listed.manifests.get(&pointer.manifest) else {
        return report.problem(
            path,
            format!("names {m} ({}), which is missing", pointer.version),
        );
    };
    if let Some(&len) = listed.lens.get(m.as_str())
        && len != pointer.manifest_len
    {
        report.problem(
            path,
            format!(
                "names {m} as {} bytes, but it is {len} bytes",
                pointer.manifest_len
            ),
        );
    }
    if let Some(m) = &read.trusted {
        check_names(path, &pointer, m, report);
    }
    if let (Some(trust), Some(envelope)) = (trust, &read.envelope)
        && let Err(e) = trust.manifest_now(envelope.clone(), &pointer.manifest)
    {
        report.problem(path, format!("names {m}, which clients refuse: {e:#}"));
    }
    for delta in &pointer.manifest_deltas {
        let d = manifest_delta_path(&pointer.manifest, &delta.base);
        match listed.lens.get(d.as_str()) {
            Some(&len) if len == delta.len => {}
            Some(&len) => report.problem(
                path,
                format!("lists {d} as {} bytes, but it is {len} bytes", delta.len),
            ),
            None => report.problem(path, format!("lists {d}, which is missing")),
        }
    }
}

/// The pointer and the manifest it names agree on what clients compare.
fn check_names(path: &str, pointer: &Pointer, m: &Manifest, report: &mut VerifyReport) {
    for (what, said, is) in [
        ("channel", pointer.channel.clone(), m.channel.clone()),
        ("product", pointer.product.clone(), m.product.clone()),
        (
            "version",
            pointer.version.to_string(),
            m.version.to_string(),
        ),
    ] {
        if said != is {
            report.problem(
                path,
                format!("says {what} {said}, but the manifest it names says {is}"),
            );
        }
    }
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    let origin = Origin::open(&args.at.origin)?;
    let report = verify(&origin).with_context(|| format!("verifying {}", args.at.origin))?;
    let mut out = String::new();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        for p in &report.problems {
            writeln!(out, "{}: {}", p.path, p.problem)?;
        }
        writeln!(
            out,
            "checked {} objects, hashed {}: {}{}",
            report.objects_checked,
            indicatif::HumanBytes(report.bytes_hashed),
            match report.problems.len() {
                0 => "no problems".to_owned(),
                1 => "1 problem".to_owned(),
                n => format!("{n} problems"),
            },
            if report.deltas_unchecked > 0 {
                format!(
                    " ({} manifest deltas not decoded: their base is no longer on the origin)",
                    report.deltas_unchecked
                )
            } else {
                String::new()
            }
        )?;
    }
    emit(&out)?;
    if !report.problems.is_empty() {
        bail!(
            "{} on {} (listed above)",
            match report.problems.len() {
                1 => "1 problem".to_owned(),
                n => format!("{n} problems"),
            },
            args.at.origin
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use relsync_format::paths::channel_path;

    use relsync_format::SecretKey;
    use relsync_format::envelope::{self, Kind};
    use relsync_format::paths::root_path;
    use relsync_format::root::{ROOT_FORMAT, RoleKeys, Root};

    use super::*;
    use crate::fixture::{Fixture, key};

    /// stable 1.0.0 and 2.0.0, each with a file big enough for several chunks.
    fn origin() -> (Fixture, ManifestId, ManifestId) {
        let f = Fixture::new();
        let mut ids = Vec::new();
        for (i, version) in ["1.0.0", "2.0.0"].iter().enumerate() {
            let opts = f.opts(version);
            let data: Vec<u8> = (0..600_000u32)
                .map(|k| (k.wrapping_mul(2_654_435_761).rotate_left(i as u32 + 5) >> 24) as u8)
                .collect();
            std::fs::write(opts.dir.join("data.bin"), data).unwrap();
            ids.push(f.push_with(&opts).unwrap());
        }
        (f, ids[0], ids[1])
    }

    fn problems(f: &Fixture) -> Vec<Problem> {
        verify(&f.origin).unwrap().problems
    }

    fn first_pack(f: &Fixture, id: ManifestId) -> (String, Vec<u8>) {
        let envelope = f.origin.read_manifest(&id).unwrap().unwrap();
        let m = relsync_format::dangerous::manifest(&envelope).unwrap();
        let path = pack_path(&m.packs[0].id);
        let bytes = f.origin.read(&path).unwrap().unwrap();
        (path, bytes)
    }

    fn assert_one(problems: &[Problem], path: &str, what: &str) {
        assert!(
            problems
                .iter()
                .any(|p| p.path == path && p.problem.contains(what)),
            "no problem {what:?} at {path} in {problems:#?}"
        );
    }

    #[test]
    fn a_clean_origin_has_no_problems() {
        let (f, _, _) = origin();
        let report = verify(&f.origin).unwrap();
        assert_eq!(report.problems, []);
        let objects = ["channels/", "manifests/", "packs/", "keys/"]
            .iter()
            .map(|d| f.origin.list(d).unwrap().len() as u64)
            .sum::<u64>();
        assert_eq!(report.objects_checked, objects);
        let packs: u64 = f.origin.list("packs/").unwrap().iter().map(|m| m.len).sum();
        assert!(report.bytes_hashed > packs, "{report:?}");
    }

    #[test]
    fn finds_a_flipped_byte_and_a_truncated_pack() {
        let (f, v1, v2) = origin();
        let (flipped, mut bytes) = first_pack(&f, v1);
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        f.origin.put(&flipped, &bytes).unwrap();
        let (truncated, bytes) = first_pack(&f, v2);
        f.origin.put(&truncated, &bytes[..bytes.len() - 1]).unwrap();

        let found = problems(&f);
        assert_one(&found, &flipped, "not to its name");
        assert_one(&found, &truncated, "not to its name");
        assert_one(&found, &manifest_path(&v2), "but it is");
        assert_eq!(found.len(), 3, "{found:#?}");
    }

    #[test]
    fn finds_a_misnamed_manifest_and_a_missing_pack() {
        let (f, v1, v2) = origin();
        let misnamed = manifest_path(&ManifestId::of(b"another name"));
        let file = f.origin.read(&manifest_path(&v1)).unwrap().unwrap();
        f.origin.put(&misnamed, &file).unwrap();
        let (gone, _) = first_pack(&f, v2);
        f.origin.delete(&gone).unwrap();

        let found = problems(&f);
        assert_one(
            &found,
            &misnamed,
            &format!("hashes to {v1}, not to its name"),
        );
        assert_one(&found, &manifest_path(&v2), &format!("names {gone}"));
        assert_one(&found, &manifest_path(&v2), "which is missing");
        assert_eq!(found.len(), 2, "{found:#?}");
    }

    #[test]
    fn finds_a_bad_delta_a_bad_pointer_and_stray_objects() {
        let (f, v1, v2) = origin();
        // A delta that decodes to its base, not its target.
        let delta = manifest_delta_path(&v2, &v1);
        let base = f.origin.read_manifest(&v1).unwrap().unwrap();
        let wrong = relsync_format::manifest::compress_envelope_delta(&base, &base).unwrap();
        f.origin.put(&delta, &wrong).unwrap();
        let pointer = channel_path("stable");
        let mut bytes = f.origin.read(&pointer).unwrap().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        f.origin.put(&pointer, &bytes).unwrap();
        f.origin.put("packs/stray", b"x").unwrap();
        f.origin.put("keys/root-2", b"not a root").unwrap();

        let found = problems(&f);
        assert_one(&found, &delta, &format!("decodes to manifest {v1}"));
        assert_one(&found, &pointer, "does not verify");
        assert_one(&found, "packs/stray", "not a name relsync writes");
        assert_one(&found, "keys/root-2", "not part of the root chain");
        assert_eq!(found.len(), 4, "{found:#?}");
    }

    /// Root `version` naming `root_key` for the root role, `release` for releases and the
    /// fixture's key for channels.
    fn put_root(f: &Fixture, version: u64, root_key: &SecretKey, release: &SecretKey) {
        let root = Root {
            format: ROOT_FORMAT,
            product: "app".into(),
            version,
            expires_unix: u64::MAX / 2,
            root: RoleKeys::single(root_key.public()),
            release: RoleKeys::single(release.public()),
            channel: RoleKeys::single(key().public()),
        };
        let sealed = envelope::seal(Kind::Root, &root.to_body().unwrap(), &[root_key]).unwrap();
        f.origin.put(&root_path(version), &sealed).unwrap();
    }

    #[test]
    fn a_release_signed_before_a_key_rotation_verifies_but_not_as_the_one_offered() {
        let f = Fixture::new();
        let root_key = SecretKey::generate().unwrap();
        put_root(&f, 1, &root_key, &key());
        let v1 = f.push("1.0.0");
        assert_eq!(problems(&f), []);

        // Root 2 names another release key: 1.0.0 is still a genuine release of this origin,
        // but clients of root 2 refuse it as the channel's release.
        put_root(&f, 2, &root_key, &SecretKey::generate().unwrap());
        let found = problems(&f);
        assert_one(
            &found,
            "channels/stable",
            &format!("names {}", manifest_path(&v1)),
        );
        assert_one(&found, "channels/stable", "which clients refuse");
        assert_eq!(found.len(), 1, "{found:#?}");
        let trust = Trust::load(&f.origin).unwrap();
        let envelope = f.origin.read_manifest(&v1).unwrap().unwrap();
        assert!(trust.manifest_now(envelope.clone(), &v1).is_err());
        assert!(trust.manifest(envelope, &v1).is_ok());

        // A root that does not follow the chain, and a broken first root.
        f.origin.put(&root_path(4), b"a gap before it").unwrap();
        assert_one(&problems(&f), "keys/root-4", "not part of the root chain");
        // (The origin refuses to overwrite a root: damage it behind its back.)
        let first = f.tmp.path().join("origin").join(root_path(1));
        std::fs::write(first, b"not a root").unwrap();
        let found = problems(&f);
        assert_one(&found, "keys/", "root chain (keys/root-N) does not verify");
    }
}
