//! Shared by the delta, store and plan benches: deterministic data, scratch dirs on disk, and
//! synthetic manifests built from the engine's public types.
//!
//! Each bench is its own crate and uses only part of this module.
#![allow(dead_code)]

use relsync_chunker::{ChunkId, ChunkParams};
use relsync_engine::manifest::TrustedManifest;
use relsync_engine::manifest::{
    Base, ChunkEntry, Entry, EntryKind, FORMAT_VERSION, FileEntry, Manifest, PackRef, SolidFrame,
};
use relsync_engine::{FileHash, PackId, RelPath, SecretKey};
use semver::Version;

/// Criterion settings shared by the benches: few samples, short warm-up, so a full run stays
/// within minutes on 2 cores.
pub fn criterion_config(measurement: std::time::Duration) -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(measurement)
}

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

/// splitmix64, as in chunker.rs: fast, deterministic, defeats compression and CDC patterns.
pub fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&next(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like runs mixed with random runs, like a binary with strings and tables.
pub fn semi_compressible(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 8] = [
        b"update ",
        b"chunk ",
        b"manifest ",
        b"signed ",
        b"origin ",
        b"peer ",
        b"0x0000 ",
        b"\n",
    ];
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let r = next(&mut state);
        match r % 3 {
            // A third of the runs are noise.
            0 => {
                for _ in 0..8 {
                    out.extend_from_slice(&next(&mut state).to_le_bytes());
                }
            }
            _ => {
                for i in 0..8 {
                    out.extend_from_slice(WORDS[((r >> (8 * i)) & 7) as usize]);
                }
            }
        }
    }
    out.truncate(len);
    out
}

/// A scratch directory under cargo's per-target tmp dir (on disk, not a tmpfs `/tmp`), removed
/// when dropped.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("creating a scratch dir in CARGO_TARGET_TMPDIR")
}

/// One file of a synthetic release: its path and chunk indices into the chunk table.
#[derive(Debug, Clone)]
pub struct SynthFile {
    pub path: String,
    pub chunks: Vec<u32>,
    pub hash: FileHash,
}

/// A release manifest built directly from the engine's public types.
///
/// `files` must be sorted by path; each of `dirs` (one level deep) is listed right before the
/// first file under it. Packs are laid out by [`lay_out_packs`].
pub struct ManifestParts {
    pub version: Version,
    pub chunks: Vec<ChunkEntry>,
    pub dirs: Vec<String>,
    pub files: Vec<SynthFile>,
    pub bases: Vec<Base>,
    pub solid: Vec<SolidFrame>,
}

/// Largest pack the publisher writes.
pub const PACK_BYTES: u64 = 64 << 20;

/// Assigns plain frames to packs of at most [`PACK_BYTES`] (in chunk order), appends one pack
/// for all delta frames and one for all solid frames, and returns the pack table (whose
/// lengths add up, as the manifest's validation requires).
pub fn lay_out_packs(
    chunks: &mut [ChunkEntry],
    bases: &mut [Base],
    solid: &mut [SolidFrame],
) -> Vec<PackRef> {
    let mut lens: Vec<u64> = vec![0];
    for chunk in chunks.iter_mut() {
        let frame = u64::from(chunk.frame_len);
        if lens
            .last()
            .is_some_and(|&l| l > 0 && l + frame > PACK_BYTES)
        {
            lens.push(0);
        }
        chunk.pack = (lens.len() - 1) as u32;
        *lens.last_mut().expect("one pack at least") += frame;
    }
    let delta_bytes: u64 = bases
        .iter()
        .flat_map(|b| &b.deltas)
        .map(|d| u64::from(d.frame_len))
        .sum();
    if delta_bytes > 0 {
        let pack = lens.len() as u32;
        for delta in bases.iter_mut().flat_map(|b| b.deltas.iter_mut()) {
            delta.pack = pack;
        }
        lens.push(delta_bytes);
    }
    let solid_bytes: u64 = solid.iter().map(|s| u64::from(s.frame_len)).sum();
    if solid_bytes > 0 {
        let pack = lens.len() as u32;
        for s in solid.iter_mut() {
            s.pack = pack;
        }
        lens.push(solid_bytes);
    }
    lens.iter()
        .enumerate()
        .map(|(i, &len)| PackRef {
            id: PackId::of(&(i as u64).to_le_bytes()),
            len,
        })
        .collect()
}

impl ManifestParts {
    /// The manifest, with packs laid out.
    pub fn build(mut self) -> Manifest {
        let packs = lay_out_packs(&mut self.chunks, &mut self.bases, &mut self.solid);
        let mut entries = Vec::with_capacity(self.dirs.len() + self.files.len());
        let rel = |p: &str| RelPath::new(p).expect("a valid synthetic path");
        let mut dirs = self.dirs.iter().peekable();
        for file in self.files {
            // Each directory right before the first file under it.
            while let Some(dir) = dirs.next_if(|d| file.path.starts_with(&format!("{d}/"))) {
                entries.push(Entry {
                    path: rel(dir),
                    kind: EntryKind::Dir,
                });
            }
            let size = file
                .chunks
                .iter()
                .map(|&i| u64::from(self.chunks[i as usize].len))
                .sum();
            entries.push(Entry {
                path: rel(&file.path),
                kind: EntryKind::File(FileEntry {
                    executable: false,
                    size,
                    hash: file.hash,
                    chunks: file.chunks,
                }),
            });
        }
        for dir in dirs {
            entries.push(Entry {
                path: rel(dir),
                kind: EntryKind::Dir,
            });
        }
        Manifest {
            format: FORMAT_VERSION,
            product: "bench".into(),
            channel: "stable".into(),
            platform: None,
            version: self.version,
            created_unix: 1_700_000_000,
            expires_unix: u64::MAX,
            critical: false,
            notes: String::new(),
            chunking: ChunkParams::default(),
            parent: None,
            packs,
            chunks: self.chunks,
            entries,
            bases: self.bases,
            solid: self.solid,
        }
    }
}

/// Signs `manifest` and opens it as the store and the plan stage see it (validated).
pub fn seal(manifest: &Manifest, key: &SecretKey) -> TrustedManifest {
    let (_, bytes) = manifest.seal(key).expect("sealing the synthetic manifest");
    relsync_engine::dangerous::trusted_manifest(bytes).expect("the synthetic manifest validates")
}

/// A chunk entry for `id` with a plausible frame length for its size.
pub fn chunk_entry(id: ChunkId, len: u32, frame_len: u32) -> ChunkEntry {
    ChunkEntry {
        id,
        len,
        pack: 0,
        frame_len,
    }
}

/// Peak and current resident set size of this process, from `/proc/self/status`, in MiB.
pub fn rss_mib() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs`), so a later [`rss_mib`] shows
/// the peak of what ran in between. Best effort.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
