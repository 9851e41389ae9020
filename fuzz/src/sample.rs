//! Two small, real releases, chunked and compressed with the chunker's own functions: the
//! plan target installs 1.0.0, and the seeds are made from both.
//!
//! 2.0.0 changes part of `bin/app`, keeps the library, adds a file, and carries delta frames
//! (zstd and bsdiff) against 1.0.0 and one solid frame, so its manifest uses every table.

use std::collections::HashMap;

use relsync_chunker::{ChunkId, ChunkParams, chunk_slice, frame};
use relsync_engine::manifest::{
    Base, ChunkEntry, Delta, DeltaCodec, Entry, EntryKind, FORMAT_VERSION, FileEntry, Manifest,
    PackRef, SolidFrame, Window,
};
use relsync_engine::{FileHash, ManifestId, PackId, RelPath};
use semver::Version;

/// Small FastCDC bounds, so kilobyte files make several chunks.
pub fn params() -> ChunkParams {
    ChunkParams::new(64, 256, 1024).expect("valid bounds")
}

/// A release's tree and manifest.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Regular files: path, bytes, executable.
    pub files: Vec<(String, Vec<u8>, bool)>,
    /// Symlinks: path, target.
    pub links: Vec<(String, String)>,
    /// The manifest (not signed).
    pub manifest: Manifest,
}

impl Sample {
    /// The bytes of the file at `path`.
    pub fn file(&self, path: &str) -> &[u8] {
        self.files
            .iter()
            .find(|(p, _, _)| p == path)
            .map(|(_, data, _)| data.as_slice())
            .expect("a file of the sample")
    }
}

/// splitmix64 bytes: deterministic and incompressible.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn text(len: usize) -> Vec<u8> {
    b"relsync fuzz sample: signed manifests, chunks and frames.\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

const DIRS: [&str; 4] = ["bin", "lib", "share", "share/doc"];

/// Release 1.0.0.
pub fn v1() -> Sample {
    let files = vec![
        ("bin/app".to_owned(), noise(6000, 1), true),
        ("lib/libx.so".to_owned(), noise(3000, 2), false),
        ("share/doc/README".to_owned(), text(900), false),
    ];
    let links = vec![
        ("bin/tool".to_owned(), "app".to_owned()),
        ("lib/libx.so.1".to_owned(), "libx.so".to_owned()),
    ];
    let manifest = build(Version::new(1, 0, 0), &files, &links, None);
    Sample {
        files,
        links,
        manifest,
    }
}

/// Release 2.0.0, with delta frames against `v1` (whose manifest id is `v1_id`).
pub fn v2(v1: &Sample, v1_id: ManifestId) -> Sample {
    let mut app = v1.file("bin/app").to_vec();
    for (i, b) in app[2000..2600].iter_mut().enumerate() {
        *b = b.wrapping_add(i as u8 | 1);
    }
    let files = vec![
        ("bin/app".to_owned(), app, true),
        (
            "lib/libx.so".to_owned(),
            v1.file("lib/libx.so").to_vec(),
            false,
        ),
        ("share/doc/NEWS".to_owned(), text(400), false),
        ("share/doc/README".to_owned(), text(900), false),
    ];
    let links = v1.links.clone();
    let manifest = build(Version::new(2, 0, 0), &files, &links, Some((v1, v1_id)));
    Sample {
        files,
        links,
        manifest,
    }
}

/// The manifest of a tree: chunks in first-use order in pack 0, delta frames against `base`
/// (for the chunks it lacks) in pack 1, and one solid frame of every chunk in pack 2.
fn build(
    version: Version,
    files: &[(String, Vec<u8>, bool)],
    links: &[(String, String)],
    base: Option<(&Sample, ManifestId)>,
) -> Manifest {
    let mut chunks: Vec<ChunkEntry> = Vec::new();
    let mut data: Vec<&[u8]> = Vec::new();
    let mut index: HashMap<ChunkId, u32> = HashMap::new();
    let mut entries: Vec<Entry> = DIRS
        .iter()
        .map(|d| Entry {
            path: RelPath::new(*d).expect("a valid path"),
            kind: EntryKind::Dir,
        })
        .collect();
    let mut offsets: HashMap<ChunkId, (&str, u64)> = HashMap::new();
    for (path, bytes, executable) in files {
        let mut file_chunks = Vec::new();
        for c in chunk_slice(bytes, params()).expect("chunking") {
            let slice = &bytes[c.offset as usize..c.offset as usize + c.len as usize];
            let i = *index.entry(c.id).or_insert_with(|| {
                let frame = frame::compress(slice, 3).expect("compressing");
                chunks.push(ChunkEntry {
                    id: c.id,
                    len: c.len,
                    pack: 0,
                    frame_len: frame.len() as u32,
                });
                data.push(slice);
                offsets.insert(c.id, (path.as_str(), c.offset));
                chunks.len() as u32 - 1
            });
            file_chunks.push(i);
        }
        entries.push(Entry {
            path: RelPath::new(path.as_str()).expect("a valid path"),
            kind: EntryKind::File(FileEntry {
                executable: *executable,
                size: bytes.len() as u64,
                hash: FileHash::of(bytes),
                chunks: file_chunks,
            }),
        });
    }
    for (path, target) in links {
        entries.push(Entry {
            path: RelPath::new(path.as_str()).expect("a valid path"),
            kind: EntryKind::Symlink {
                target: target.clone(),
            },
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));

    let mut bases = Vec::new();
    if let Some((old, old_id)) = base {
        let old_app = old.file("bin/app");
        let app_entry = old
            .manifest
            .entries
            .iter()
            .position(|e| e.path.as_str() == "bin/app")
            .expect("bin/app in the base") as u32;
        let old_ids: std::collections::HashSet<ChunkId> =
            old.manifest.chunks.iter().map(|c| c.id).collect();
        let mut encoder = frame::WindowEncoder::new(old_app, 3).expect("a window");
        let mut deltas = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let (path, offset) = offsets[&c.id];
            if old_ids.contains(&c.id) || path != "bin/app" {
                continue;
            }
            let zstd = encoder.compress(data[i]).expect("a delta frame");
            deltas.push(Delta {
                chunk: i as u32,
                window: 0,
                pack: 1,
                frame_len: zstd.len() as u32,
                codec: DeltaCodec::Zstd,
            });
            let op = frame::BsdiffOp {
                src: offset,
                add: u64::from(c.len),
                copy: 0,
            };
            if let Ok(Some(bsdiff)) = encoder.compress_bsdiff(data[i], &[op]) {
                deltas.push(Delta {
                    chunk: i as u32,
                    window: 0,
                    pack: 1,
                    frame_len: bsdiff.len() as u32,
                    codec: DeltaCodec::Bsdiff,
                });
            }
        }
        bases.push(Base {
            manifest: old_id,
            version: old.manifest.version.clone(),
            windows: vec![Window {
                entry: app_entry,
                offset: 0,
                len: old_app.len() as u32,
            }],
            deltas,
            refs: Vec::new(),
        });
    }
    let all: Vec<u8> = data.concat();
    let solid = vec![SolidFrame {
        first: 0,
        chunks: chunks.len() as u32,
        pack: 2,
        frame_len: frame::compress_solid(&all, 3).expect("a solid frame").len() as u32,
    }];

    let mut lens = [0u64; 3];
    for c in &chunks {
        lens[0] += u64::from(c.frame_len);
    }
    for d in bases.iter().flat_map(|b: &Base| &b.deltas) {
        lens[1] += u64::from(d.frame_len);
    }
    lens[2] = u64::from(solid[0].frame_len);
    let packs = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| PackRef {
            id: PackId([i as u8 + 1; 32]),
            len,
        })
        .collect();
    Manifest {
        format: FORMAT_VERSION,
        product: "app".into(),
        channel: "stable".into(),
        platform: None,
        version,
        created_unix: 1_700_000_000,
        expires_unix: 4_000_000_000,
        critical: false,
        notes: String::new(),
        chunking: params(),
        parent: base.map(|(_, id)| id),
        packs,
        chunks,
        entries,
        bases,
        solid,
    }
}
