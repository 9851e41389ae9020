//! Seed corpora: valid inputs for each target, made with the engine's and chunker's own
//! writers, in the layouts the targets read (each target's header documents its layout).
//!
//! Each target calls [`on_init`] before fuzzing: with `RELSYNC_FUZZ_SEEDS=<dir>` set it
//! writes its seeds there and exits, so the instrumented binary that is already built makes
//! them (no second, uninstrumented build of the engine):
//!
//! ```text
//! RELSYNC_FUZZ_SEEDS=fuzz/corpus/manifest cargo fuzz run manifest
//! ```

use std::path::Path;

use relsync_chunker::frame;
use relsync_engine::ManifestId;
use relsync_engine::directive::RollbackDirective;
use relsync_engine::envelope::{self, Kind};
use relsync_engine::manifest::{
    Delta, DeltaCodec, FORMAT_VERSION, Manifest, ManifestDelta, Pointer, RefMap, Window,
    compress_envelope, compress_envelope_delta,
};
use relsync_engine::root::{ROOT_FORMAT, RoleKeys, Root};
use semver::Version;

use crate::sample::{self, Sample, noise};
use crate::{exe, keys, put_doc};

/// The targets, by name.
pub const TARGETS: [&str; 6] = [
    "manifest",
    "pointer",
    "root_chain",
    "frames",
    "plan",
    "refs",
];

/// If `RELSYNC_FUZZ_SEEDS` names a directory, writes `target`'s seeds there and exits.
pub fn on_init(target: &str) {
    let Some(dir) = std::env::var_os("RELSYNC_FUZZ_SEEDS") else {
        return;
    };
    match write(target, Path::new(&dir)) {
        Ok(n) => {
            eprintln!("{target}: wrote {n} seeds to {}", Path::new(&dir).display());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{target}: writing seeds: {e}");
            std::process::exit(1);
        }
    }
}

/// Writes `target`'s seeds into `dir` (created if missing) and returns how many.
pub fn write(target: &str, dir: &Path) -> std::io::Result<usize> {
    let seeds = seeds(target).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("no target {target}"),
        )
    })?;
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(seeds.len())
}

/// The id of `manifest` sealed with no signature, as the plan target opens it.
pub fn unsigned_id(manifest: &Manifest) -> ManifestId {
    ManifestId::of(&unsigned(manifest))
}

fn body(manifest: &Manifest) -> Vec<u8> {
    postcard::to_stdvec(manifest).expect("encoding a sample manifest")
}

fn unsigned(manifest: &Manifest) -> Vec<u8> {
    envelope::seal(Kind::Manifest, &body(manifest), &[]).expect("sealing")
}

fn signed(kind: Kind, body: &[u8], signers: &[usize]) -> Vec<u8> {
    envelope::seal(kind, body, &keys::secrets(signers)).expect("sealing")
}

/// The sample releases 1.0.0 and 2.0.0, and an empty release.
fn releases() -> (Sample, Sample, Manifest) {
    let v1 = sample::v1();
    let v2 = sample::v2(&v1, unsigned_id(&v1.manifest));
    let mut empty = v1.manifest.clone();
    empty.packs.clear();
    empty.chunks.clear();
    empty.entries.clear();
    empty.solid.clear();
    empty.platform = Some("x86_64-linux".into());
    (v1, v2, empty)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// 2.0.0 with one more delta frame of a changed chunk of `bin/app`, the smallest, with
/// projected references, and its reference map; its window lies past the end of the base
/// file, so it never re-hashes and the chunk comes as a plain frame. The planner must not
/// fetch the map for no frame (`check::plan`: maps at most the frames that use them).
fn map_without_window(v1: &Sample, v2: &Sample) -> Manifest {
    let index = |m: &Manifest| {
        m.entries
            .iter()
            .position(|e| e.path.as_str() == "bin/app")
            .expect("bin/app") as u32
    };
    let (old_app, new_app) = (index(&v1.manifest), index(&v2.manifest));
    let mut m = v2.manifest.clone();
    let base = &mut m.bases[0];
    let chunk = base.deltas[0].chunk;
    let pack = base.deltas[0].pack;
    base.windows.push(Window {
        entry: old_app,
        offset: 1 << 30,
        len: 16,
    });
    base.deltas.push(Delta {
        chunk,
        window: (base.windows.len() - 1) as u32,
        pack,
        frame_len: 1,
        codec: DeltaCodec::BsdiffRefs { map: 0 },
    });
    base.refs.push(RefMap {
        base_entry: old_app,
        entry: new_app,
        pack,
        frame_len: 1,
        hash: relsync_chunker::ChunkId([0; 32]),
    });
    m.packs[pack as usize].len += 2;
    m
}

fn seeds(target: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| out.push((name.to_owned(), bytes));
    match target {
        "manifest" => {
            let (v1, v2, empty) = releases();
            let manifests = [
                ("v1", &v1.manifest),
                ("v2", &v2.manifest),
                ("empty", &empty),
            ];
            for (name, m) in manifests {
                let env = signed(Kind::Manifest, &body(m), &[0]);
                add(
                    &format!("file-{name}"),
                    cat(&[&[0], &compress_envelope(&env).ok()?]),
                );
                add(&format!("envelope-{name}"), cat(&[&[2], &env]));
                add(&format!("body-{name}"), cat(&[&[3, 0x01], &body(m)]));
            }
            let old = signed(Kind::Manifest, &body(&v1.manifest), &[0]);
            let new = signed(Kind::Manifest, &body(&v2.manifest), &[0, 1]);
            let mut delta = vec![1];
            put_doc(&mut delta, &old);
            delta.extend_from_slice(&compress_envelope_delta(&new, &old).ok()?);
            add("delta-v2-from-v1", delta);
            add("envelope-v2-two-signers", cat(&[&[2], &new]));
            add(
                "body-v2-two-signers",
                cat(&[&[3, 0x03], &body(&v2.manifest)]),
            );
            add("model", cat(&[&[4], &noise(512, 4)]));
        }
        "pointer" => {
            let (v1, v2, _) = releases();
            // Installs on 2.5.0 go back to 2.0.0, signed by the release role {key 1, key 2}.
            let directive = RollbackDirective {
                format: FORMAT_VERSION,
                product: "app".into(),
                channel: "stable".into(),
                from: vec![Version::new(2, 5, 0), Version::new(1, 5, 0)],
                to_version: Version::new(2, 0, 0),
                to: unsigned_id(&v2.manifest),
                issued_unix: 1_700_000_000,
            };
            let directive_body = postcard::to_stdvec(&directive).ok()?;
            let directive_signed = signed(Kind::RollbackDirective, &directive_body, &[1, 2]);
            let pointer = Pointer {
                format: FORMAT_VERSION,
                product: "app".into(),
                channel: "stable".into(),
                version: Version::new(2, 0, 0),
                root_version: 1,
                manifest: unsigned_id(&v2.manifest),
                manifest_len: 4321,
                manifest_deltas: vec![ManifestDelta {
                    base: unsigned_id(&v1.manifest),
                    len: 321,
                }],
                issued_unix: 1_700_000_000,
                expires_unix: 1_700_086_400,
                rollout_percent: 50,
                yanked: vec![Version::new(1, 5, 0), Version::new(2, 5, 0)],
                rollback: Some(directive_signed.clone()),
            };
            let body = postcard::to_stdvec(&pointer).ok()?;
            for (name, signers) in [("k0", &[0][..]), ("k0-k1", &[0, 1]), ("unsigned", &[])] {
                add(
                    &format!("envelope-{name}"),
                    cat(&[&[0], &signed(Kind::Pointer, &body, signers)]),
                );
            }
            add("body-k0", cat(&[&[1, 0x01, 1], &body]));
            add("body-k0-k1-threshold-2", cat(&[&[1, 0x03, 2], &body]));
            add("directive-k1-k2", cat(&[&[2, 0x02], &directive_signed]));
            add(
                "directive-body-k1-k2-threshold-2",
                cat(&[&[2, 0x03, 0x06], &directive_body]),
            );
            add(
                "directive-body-k1-threshold-2",
                cat(&[&[2, 0x03, 0x02], &directive_body]),
            );
        }
        "root_chain" => {
            let role = |keys: &[usize], threshold| RoleKeys {
                keys: keys.iter().map(|&i| keys::public(i)).collect(),
                threshold,
            };
            let root = |version, root_keys: &[usize], threshold| Root {
                format: ROOT_FORMAT,
                product: "app".into(),
                version,
                expires_unix: 4_000_000_000,
                root: role(root_keys, threshold),
                release: role(&[2], 1),
                channel: role(&[3], 1),
            };
            // Rotations: {0,1} needs 2 -> {1,2} needs 2 -> {3} needs 1.
            let chain = [
                (root(1, &[0, 1], 2), &[0, 1][..], 0x03u8),
                (root(2, &[1, 2], 2), &[0, 1, 2], 0x07),
                (root(3, &[3], 1), &[1, 2, 3], 0x0e),
            ];
            let mut envelopes = vec![0];
            let mut bodies = vec![1];
            for (r, signers, mask) in &chain {
                let body = r.to_body().ok()?;
                put_doc(&mut envelopes, &signed(Kind::Root, &body, signers));
                put_doc(&mut bodies, &cat(&[&[*mask], &body]));
            }
            add("envelopes-1-2-3", envelopes);
            add("bodies-1-2-3", bodies);
            add("model", cat(&[&[2], &noise(256, 5)]));
        }
        "frames" => {
            let (v1, v2, _) = releases();
            let texts = b"zstd frames decode to exactly the declared size\n".repeat(20);
            let datas: [(&str, &[u8]); 3] = [
                ("empty", b""),
                ("text", &texts),
                ("noise", &v1.file("lib/libx.so")[..1000]),
            ];
            for (name, data) in datas {
                let len = (data.len() as u32).to_le_bytes();
                let plain = frame::compress(data, 3).ok()?;
                add(&format!("plain-{name}"), cat(&[&[0], &len, &plain]));
                add(
                    &format!("declared-{name}"),
                    cat(&[&[1], &(1u32 << 20).to_le_bytes(), &plain]),
                );
                let solid = frame::compress_solid(data, 3).ok()?;
                add(
                    &format!("solid-{name}"),
                    cat(&[&[4], &len, &100u16.to_le_bytes(), &solid]),
                );
            }
            // A changed part of bin/app against the old file as the window.
            let window = &v1.file("bin/app")[1000..4000];
            let new = &v2.file("bin/app")[1500..2500];
            let len = (new.len() as u32).to_le_bytes();
            let mut encoder = frame::WindowEncoder::new(window, 3).ok()?;
            let zstd = encoder.compress(new).ok()?;
            let op = frame::BsdiffOp {
                src: 500,
                add: new.len() as u64 - 100,
                copy: 100,
            };
            let bsdiff = encoder.compress_bsdiff(new, &[op]).ok()??;
            for (mode, name, frame) in [(2u8, "window-zstd", &zstd), (3, "window-bsdiff", &bsdiff)]
            {
                let mut seed = vec![mode];
                put_doc(&mut seed, window);
                seed.extend_from_slice(&len);
                seed.extend_from_slice(frame);
                add(name, seed);
            }
            add("round-trip", cat(&[&[5], &noise(300, 6)]));
        }
        "plan" => {
            let (v1, v2, _) = releases();
            // Mode byte: bit 0 model, bit 1 installed, bits 2-3 fetch settings.
            add("update-v2", cat(&[&[0b0010], &body(&v2.manifest)]));
            add("up-to-date-v1", cat(&[&[0b0010], &body(&v1.manifest)]));
            add("fresh-v2", cat(&[&[0b0000], &body(&v2.manifest)]));
            add(
                "fresh-v2-small-ranges",
                cat(&[&[0b1100], &body(&v2.manifest)]),
            );
            add(
                "update-v2-map-without-window",
                cat(&[&[0b0010], &body(&map_without_window(&v1, &v2))]),
            );
            add("model-update", cat(&[&[0b0011], &noise(1024, 7)]));
            add("model-fresh", cat(&[&[0b0101], &noise(1024, 8)]));
        }
        "refs" => {
            let fx = exe::fixture();
            let (v1, v2) = (exe::executable(1), exe::executable(2));
            let none = 0u32.to_le_bytes();
            add("scan-v1", cat(&[&[0], &none, &v1]));
            add("scan-v2", cat(&[&[0], &none, &v2]));
            add("scan-v1-cut", cat(&[&[0], &none, &v1[..v1.len() / 2]]));
            add(
                "scan-v1-claims-more",
                cat(&[&[0], &(1u32 << 20).to_le_bytes(), &v1]),
            );
            add("side", cat(&[&[1], &fx.side]));
            add("side-raw", cat(&[&[2], &fx.side_raw]));
            let step = (fx.chunks.len() / 4).max(1);
            for (i, chunk) in fx.chunks.iter().enumerate().step_by(step) {
                let index = (i as u16).to_le_bytes();
                add(
                    &format!("frame-{}", chunk.at),
                    cat(&[&[3], &index, &[0], &chunk.frame]),
                );
            }
            // The middle chunk against a window it was not made for: the whole old image.
            let i = fx.chunks.len() / 2;
            let whole = cat(&[&0u32.to_le_bytes(), &(fx.old.len() as u32).to_le_bytes()]);
            add(
                "frame-other-window",
                cat(&[
                    &[3],
                    &(i as u16).to_le_bytes(),
                    &[1],
                    &whole,
                    &fx.chunks[i].frame,
                ]),
            );
            add("round-trip", cat(&[&[4], &noise(600, 9)]));
        }
        _ => return None,
    }
    Some(out)
}
