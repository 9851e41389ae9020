//! plan: decide, per file and per chunk, where its bytes will come from.
//!
//! Unchanged files are hard-linked from the installed release once re-hashed. Other files are
//! rebuilt from chunks: reused from installed files or fetched frames (each re-hashed, since
//! installed files drift), or fetched from the origin in coalesced range requests.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;

use rayon::prelude::*;
use relsync_chunker::ChunkId;
use semver::Version;
use serde::Serialize;

use crate::install::local::{hash_file, read_blob, read_chunk_at, read_installed};
use crate::install::store::Store;
use crate::layout::InstallLayout;
use crate::manifest::{DeltaCodec, EntryKind, FileEntry};
use crate::pipeline::check::Checked;
use crate::{Error, FetchConfig, FileHash, Result};

/// What an update will do, before it does it (`--dry-run` prints this).
#[derive(Debug, Clone, Serialize)]
pub struct UpdatePlan {
    /// The release offered.
    pub version: Version,
    /// The release kept for rollback once this plan is applied: the installed one, or, when
    /// up to date, the one already kept.
    pub previous_version: Option<Version>,
    /// The offered manifest's id.
    pub manifest: String,
    /// Nothing to do.
    pub up_to_date: bool,
    /// One action per tree entry.
    pub files: Vec<FilePlan>,
    /// Range requests to the origin.
    pub requests: Vec<RangePlan>,
    /// Sums.
    pub totals: PlanTotals,
}

/// What happens to one path.
#[derive(Debug, Clone, Serialize)]
pub struct FilePlan {
    /// Path in the release.
    pub path: String,
    /// The action.
    #[serde(flatten)]
    pub action: FileAction,
}

/// How a path is produced.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FileAction {
    /// Hard-link an identical installed file (path relative to the install directory).
    Link {
        /// The installed file.
        from: String,
    },
    /// Write from chunks.
    Write {
        /// Chunk references satisfied locally.
        chunks_local: u32,
        /// Chunk references fetched.
        chunks_fetched: u32,
    },
    /// Create a symlink.
    Symlink,
    /// Create a directory.
    Dir,
}

/// One coalesced range request.
#[derive(Debug, Clone, Serialize)]
pub struct RangePlan {
    /// The pack's id.
    pub pack: String,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Frames used from it.
    pub frames: usize,
}

/// Plan totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanTotals {
    /// Files hard-linked.
    pub files_linked: u64,
    /// Files written from chunks.
    pub files_written: u64,
    /// Unique chunks reused from local files.
    pub chunks_reused: u64,
    /// Unique chunks to fetch.
    pub chunks_fetched: u64,
    /// Bytes of reused chunks.
    pub bytes_reused: u64,
    /// Bytes of linked files.
    pub bytes_linked: u64,
    /// Chunks to fetch as delta frames against the installed release.
    pub chunks_delta: u64,
    /// Of those, frames in the bsdiff codecs.
    pub chunks_bsdiff: u64,
    /// Of those, frames with projected references (executables).
    pub chunks_refs: u64,
    /// Reference maps to fetch, one per executable whose frames project references.
    pub ref_maps: u64,
    /// Solid frames to fetch (each a run of chunks).
    pub solid_frames: u64,
    /// Bytes the range requests will download.
    pub bytes_to_fetch: u64,
    /// Bytes the update writes to the install's file system before it applies: fetched
    /// chunks (kept until apply) and the files written into the staging tree.
    pub bytes_to_write: u64,
    /// Range requests.
    pub requests: u64,
}

/// A verified local copy of a chunk.
#[derive(Debug, Clone)]
pub(crate) enum LocalChunk {
    /// Bytes at `offset` in an installed file.
    Installed { path: PathBuf, offset: u64 },
    /// A fetched chunk, verified, stored raw.
    Blob(PathBuf),
}

/// A delta window: (base index in the target manifest, window index in that base).
pub(crate) type WindowKey = (u32, u32);

/// Where a verified window's bytes are: a range of an installed file.
#[derive(Debug, Clone)]
pub(crate) struct WindowSource {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u32,
}

/// A reference map to fetch before the delta frames that need it.
#[derive(Debug, Clone)]
pub(crate) struct RefMapSource {
    /// (base index in the target manifest, map index in that base).
    pub key: (u32, u32),
    pub pack: u32,
    pub offset: u64,
    pub frame_len: u32,
    pub hash: relsync_chunker::ChunkId,
    /// The installed base file, verified, whose references the client scans.
    pub base_file: PathBuf,
    /// The new file's index in the target manifest's entries.
    pub entry: u32,
}

/// How a fetched frame decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// One chunk, alone.
    Plain,
    /// One chunk, against a window of the installed release.
    Delta(WindowKey, DeltaCodec),
    /// The chunks `chunk..chunk + count`, as one stream.
    Solid { count: u32 },
}

/// One frame to fetch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRef {
    /// The chunk it holds (the first, for a solid frame).
    pub chunk: u32,
    pub pack: u32,
    pub offset: u64,
    pub frame_len: u32,
    pub kind: FrameKind,
}

impl FrameRef {
    /// Chunks it decodes to.
    pub fn chunks(&self) -> u32 {
        match self.kind {
            FrameKind::Solid { count } => count,
            _ => 1,
        }
    }
}

/// A range request and the frames it carries, in pack order.
#[derive(Debug, Clone)]
pub(crate) struct Range {
    pub pack: u32,
    pub start: u64,
    pub len: u64,
    pub frames: Vec<FrameRef>,
}

/// The output of the plan stage.
#[derive(Debug)]
pub struct Planned {
    pub(crate) checked: Checked,
    pub(crate) plan: UpdatePlan,
    pub(crate) local: HashMap<u32, LocalChunk>,
    pub(crate) ranges: Vec<Range>,
    pub(crate) windows: HashMap<WindowKey, WindowSource>,
    pub(crate) ref_maps: Vec<RefMapSource>,
}

impl Planned {
    /// The plan.
    pub fn plan(&self) -> &UpdatePlan {
        &self.plan
    }
}

/// Runs the plan stage (blocking: it reads and hashes local files).
pub(crate) fn plan(
    checked: Checked,
    layout: &InstallLayout,
    store: &Store,
    fetch: &FetchConfig,
) -> Result<Planned> {
    let target = &checked.target;
    let kept = if checked.up_to_date() || checked.repair {
        checked.previous.as_ref().map(|r| &r.manifest.version)
    } else {
        checked.installed_version()
    };
    // A held release is not taken: the plan is to stay on the installed one.
    let stay = checked
        .installed
        .as_ref()
        .filter(|_| checked.held.is_some())
        .map_or(target, |r| &r.manifest);
    let mut plan = UpdatePlan {
        version: stay.version.clone(),
        previous_version: kept.cloned(),
        manifest: stay.id().to_string(),
        up_to_date: checked.up_to_date(),
        files: Vec::new(),
        requests: Vec::new(),
        totals: PlanTotals::default(),
    };
    if plan.up_to_date {
        return Ok(Planned {
            checked,
            plan,
            local: HashMap::new(),
            ranges: Vec::new(),
            windows: HashMap::new(),
            ref_maps: Vec::new(),
        });
    }
    let needed = plan_files(&checked, layout, &mut plan);
    let (local, missing) = find_chunks(&checked, needed, layout, store, &mut plan)?;
    let (ranges, deltas) = plan_frames(&checked, &local, missing, layout, fetch, &mut plan);
    Ok(Planned {
        checked,
        plan,
        local,
        ranges,
        windows: deltas.windows,
        ref_maps: deltas.ref_maps,
    })
}

/// One action per tree entry: link an unchanged installed file, or write the file from
/// chunks. Returns the chunks the written files need.
fn plan_files(checked: &Checked, layout: &InstallLayout, plan: &mut UpdatePlan) -> Vec<u32> {
    let links = find_links(checked, layout);
    let mut needed = HashSet::new();
    for entry in &checked.target.entries {
        let action = match &entry.kind {
            EntryKind::Dir => FileAction::Dir,
            EntryKind::Symlink { .. } => FileAction::Symlink,
            EntryKind::File(file) => match links.get(&file.hash) {
                Some(from) if from.1 == file.executable => {
                    plan.totals.files_linked += 1;
                    plan.totals.bytes_linked += file.size;
                    FileAction::Link {
                        from: from.0.clone(),
                    }
                }
                _ => {
                    plan.totals.files_written += 1;
                    plan.totals.bytes_to_write += file.size;
                    needed.extend(file.chunks.iter().copied());
                    FileAction::Write {
                        chunks_local: 0,
                        chunks_fetched: 0,
                    }
                }
            },
        };
        plan.files.push(FilePlan {
            path: entry.path.to_string(),
            action,
        });
    }
    let mut needed: Vec<u32> = needed.into_iter().collect();
    needed.sort_unstable();
    needed
}

/// Splits the `needed` chunks into those with a verified local copy and those to fetch, and
/// counts both per written file.
fn find_chunks(
    checked: &Checked,
    needed: Vec<u32>,
    layout: &InstallLayout,
    store: &Store,
    plan: &mut UpdatePlan,
) -> Result<(HashMap<u32, LocalChunk>, Vec<u32>)> {
    let target = &checked.target;
    let found: Vec<(u32, Option<LocalChunk>)> = needed
        .par_iter()
        .map(|&i| {
            let chunk = &target.chunks[i as usize];
            Ok((i, find_local(chunk.id, chunk.len, layout, store)?))
        })
        .collect::<Result<_>>()?;
    let mut local = HashMap::new();
    let mut missing = Vec::new();
    for (index, source) in found {
        let len = u64::from(target.chunks[index as usize].len);
        match source {
            Some(source) => {
                plan.totals.chunks_reused += 1;
                plan.totals.bytes_reused += len;
                local.insert(index, source);
            }
            None => {
                plan.totals.chunks_fetched += 1;
                plan.totals.bytes_to_write += len;
                missing.push(index);
            }
        }
    }
    for (file_plan, entry) in plan.files.iter_mut().zip(&target.entries) {
        if let (
            FileAction::Write {
                chunks_local,
                chunks_fetched,
            },
            EntryKind::File(file),
        ) = (&mut file_plan.action, &entry.kind)
        {
            let here = file.chunks.iter().filter(|i| local.contains_key(i)).count() as u32;
            *chunks_local = here;
            *chunks_fetched = file.chunks.len() as u32 - here;
        }
    }
    Ok((local, missing))
}

/// The frames that bring the `missing` chunks (plain, delta or solid, the cheapest that is
/// safe to use), grouped into range requests. Returns the requests and what their delta
/// frames decode against.
fn plan_frames(
    checked: &Checked,
    local: &HashMap<u32, LocalChunk>,
    missing: Vec<u32>,
    layout: &InstallLayout,
    fetch: &FetchConfig,
    plan: &mut UpdatePlan,
) -> (Vec<Range>, DeltaSources) {
    let target = &checked.target;
    let mut frames: Vec<FrameRef> = missing
        .iter()
        .map(|&chunk| {
            let entry = &target.chunks[chunk as usize];
            FrameRef {
                chunk,
                pack: entry.pack,
                offset: target.frame_offset(chunk),
                frame_len: entry.frame_len,
                kind: FrameKind::Plain,
            }
        })
        .collect();
    let deltas = choose_deltas(checked, layout, &mut frames);
    let codecs = || {
        frames.iter().filter_map(|f| match f.kind {
            FrameKind::Delta(_, codec) => Some(codec),
            _ => None,
        })
    };
    plan.totals.chunks_delta = codecs().count() as u64;
    plan.totals.chunks_bsdiff = codecs().filter(|c| c.is_bsdiff()).count() as u64;
    plan.totals.chunks_refs = codecs().filter(|c| c.ref_map().is_some()).count() as u64;
    let fetched_before: HashSet<u32> = local
        .iter()
        .filter(|(_, source)| matches!(source, LocalChunk::Blob(_)))
        .map(|(&i, _)| i)
        .collect();
    let frames = choose_solid(checked, frames, &fetched_before);
    plan.totals.solid_frames = frames
        .iter()
        .filter(|f| matches!(f.kind, FrameKind::Solid { .. }))
        .count() as u64;
    let ranges = coalesce(frames, fetch);
    for range in &ranges {
        plan.totals.bytes_to_fetch += range.len;
        plan.requests.push(RangePlan {
            pack: target.packs[range.pack as usize].id.to_string(),
            start: range.start,
            len: range.len,
            frames: range.frames.len(),
        });
    }
    for map in &deltas.ref_maps {
        plan.totals.bytes_to_fetch += u64::from(map.frame_len);
        plan.requests.push(RangePlan {
            pack: target.packs[map.pack as usize].id.to_string(),
            start: map.offset,
            len: u64::from(map.frame_len),
            frames: 1,
        });
    }
    plan.totals.ref_maps = deltas.ref_maps.len() as u64;
    plan.totals.requests = plan.requests.len() as u64;
    (ranges, deltas)
}

/// What the chosen delta frames decode against.
#[derive(Debug, Default)]
struct DeltaSources {
    windows: HashMap<WindowKey, WindowSource>,
    ref_maps: Vec<RefMapSource>,
}

/// Swaps plain frames for smaller delta frames where the installed release is a delta base
/// and the window's bytes re-hash correctly. A frame with projected references also needs
/// its file's reference map: used only if the base file verifies and the map costs less
/// than its frames save. Returns the windows and maps to use.
fn choose_deltas(
    checked: &Checked,
    layout: &InstallLayout,
    frames: &mut [FrameRef],
) -> DeltaSources {
    let target = &checked.target;
    let Some(installed) = &checked.installed else {
        return DeltaSources::default();
    };
    let Some(k) = target
        .bases
        .iter()
        .position(|b| b.manifest == installed.manifest.id())
    else {
        return DeltaSources::default();
    };
    let base = &target.bases[k];
    let wanted: HashMap<u32, usize> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (f.chunk, i))
        .collect();
    // The smallest delta of each chunk, and the smallest that needs no reference map.
    let (mut best, mut best_plain): (HashMap<u32, usize>, HashMap<u32, usize>) = Default::default();
    for (d, delta) in base.deltas.iter().enumerate() {
        let Some(&i) = wanted.get(&delta.chunk) else {
            continue;
        };
        let consider = |chosen: &mut HashMap<u32, usize>| {
            let current = chosen
                .get(&delta.chunk)
                .map_or(frames[i].frame_len, |&b| base.deltas[b].frame_len);
            if delta.frame_len < current {
                chosen.insert(delta.chunk, d);
            }
        };
        consider(&mut best);
        if delta.codec.ref_map().is_none() {
            consider(&mut best_plain);
        }
    }
    let ref_maps = choose_ref_maps(checked, layout, k, frames, &wanted, &mut best, &best_plain);
    let needed: HashSet<u32> = best.values().map(|&d| base.deltas[d].window).collect();
    let windows: HashMap<WindowKey, WindowSource> = needed
        .into_par_iter()
        .filter_map(|w| {
            let window = base.windows.get(w as usize)?;
            let source = verify_window(installed, window, layout).ok()?;
            Some(((k as u32, w), source))
        })
        .collect();
    let mut used_maps = HashSet::new();
    for (chunk, d) in best {
        let delta = &base.deltas[d];
        let key = (k as u32, delta.window);
        if windows.contains_key(&key) {
            frames[wanted[&chunk]] = FrameRef {
                chunk,
                pack: delta.pack,
                offset: target.delta_offset(k, d),
                frame_len: delta.frame_len,
                kind: FrameKind::Delta(key, delta.codec),
            };
            used_maps.extend(delta.codec.ref_map());
        }
    }
    // A map whose frames all lost their window (it did not re-hash) would be fetched and
    // decoded for nothing.
    let ref_maps = ref_maps
        .into_iter()
        .filter(|m| used_maps.contains(&m.key.1))
        .collect();
    DeltaSources { windows, ref_maps }
}

/// The reference maps of base `k` worth fetching for the frames in `best`; the chunks of
/// any other map fall back to their best frame without one (in `best_plain`, else plain).
fn choose_ref_maps(
    checked: &Checked,
    layout: &InstallLayout,
    k: usize,
    frames: &[FrameRef],
    wanted: &HashMap<u32, usize>,
    best: &mut HashMap<u32, usize>,
    best_plain: &HashMap<u32, usize>,
) -> Vec<RefMapSource> {
    let target = &checked.target;
    let base = &target.bases[k];
    let mut by_map: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&chunk, &d) in best.iter() {
        if let Some(map) = base.deltas[d].codec.ref_map() {
            by_map.entry(map).or_default().push(chunk);
        }
    }
    let mut chosen = Vec::new();
    for (m, chunks) in by_map {
        let saving: u64 = chunks
            .iter()
            .map(|chunk| {
                let without = best_plain
                    .get(chunk)
                    .map_or(frames[wanted[chunk]].frame_len, |&d| {
                        base.deltas[d].frame_len
                    });
                u64::from(without.saturating_sub(base.deltas[best[chunk]].frame_len))
            })
            .sum();
        let map = &base.refs[m as usize];
        let source = (saving > u64::from(map.frame_len))
            .then(|| verify_base_file(checked, map.base_entry, layout))
            .flatten();
        match source {
            Some(base_file) => chosen.push(RefMapSource {
                key: (k as u32, m),
                pack: map.pack,
                offset: target.ref_map_offset(k, m as usize),
                frame_len: map.frame_len,
                hash: map.hash,
                base_file,
                entry: map.entry,
            }),
            None => {
                for chunk in chunks {
                    match best_plain.get(&chunk) {
                        Some(&d) => best.insert(chunk, d),
                        None => best.remove(&chunk),
                    };
                }
            }
        }
    }
    chosen.sort_by_key(|m| m.key);
    chosen
}

/// The installed base file `entry`, if every byte of it still matches its signed chunks
/// (a client scans all of it for references).
fn verify_base_file(checked: &Checked, entry: u32, layout: &InstallLayout) -> Option<PathBuf> {
    let installed = checked.installed.as_ref()?;
    let EntryKind::File(file) = &installed.manifest.entries.get(entry as usize)?.kind else {
        return None;
    };
    let whole = crate::manifest::Window {
        entry,
        offset: 0,
        len: u32::try_from(file.size).ok()?,
    };
    verify_window(installed, &whole, layout)
        .ok()
        .map(|source| source.path)
}

/// Replaces the frames of a run of chunks by the run's solid frame where that is cheaper.
///
/// Never for a run holding chunks fetched by an interrupted earlier run: those bytes were
/// verified once and must not be downloaded again.
fn choose_solid(
    checked: &Checked,
    frames: Vec<FrameRef>,
    fetched_before: &HashSet<u32>,
) -> Vec<FrameRef> {
    let target = &checked.target;
    if target.solid.is_empty() {
        return frames;
    }
    let by_chunk: HashMap<u32, usize> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (f.chunk, i))
        .collect();
    let mut replaced = vec![false; frames.len()];
    let mut solid = Vec::new();
    for (index, run) in target.solid.iter().enumerate() {
        let chunks = run.first..run.first + run.chunks;
        if chunks.clone().any(|c| fetched_before.contains(&c)) {
            continue;
        }
        let inside: Vec<usize> = chunks.filter_map(|c| by_chunk.get(&c).copied()).collect();
        let cost: u64 = inside.iter().map(|&i| u64::from(frames[i].frame_len)).sum();
        if u64::from(run.frame_len) < cost {
            for i in inside {
                replaced[i] = true;
            }
            solid.push(FrameRef {
                chunk: run.first,
                pack: run.pack,
                offset: target.solid_offset(index),
                frame_len: run.frame_len,
                kind: FrameKind::Solid { count: run.chunks },
            });
        }
    }
    frames
        .into_iter()
        .zip(replaced)
        .filter_map(|(f, r)| (!r).then_some(f))
        .chain(solid)
        .collect()
}

/// Checks that a window's bytes in the installed release still match the signed chunks.
fn verify_window(
    installed: &crate::install::store::Release,
    window: &crate::manifest::Window,
    layout: &InstallLayout,
) -> Result<WindowSource> {
    let bad = |reason: &str| Error::malformed("delta window", reason.to_owned());
    let entry = installed
        .manifest
        .entries
        .get(window.entry as usize)
        .ok_or_else(|| bad("names a missing entry"))?;
    let EntryKind::File(file) = &entry.kind else {
        return Err(bad("names an entry that is not a file"));
    };
    let end = window
        .offset
        .checked_add(u64::from(window.len))
        .filter(|&end| end <= file.size && window.len > 0)
        .ok_or_else(|| bad("lies outside its file"))?;
    let path = entry.path.under(&layout.release(&installed.dir));
    for (at, _, chunk) in installed.manifest.chunk_spans(file) {
        if at >= end {
            break;
        }
        if at + u64::from(chunk.len) > window.offset {
            read_installed(&path, at, chunk.id, chunk.len)?;
        }
    }
    Ok(WindowSource {
        path,
        offset: window.offset,
        len: window.len,
    })
}

/// Installed files, by hash, that still hash to what their manifest says.
fn find_links(checked: &Checked, layout: &InstallLayout) -> HashMap<FileHash, (String, bool)> {
    let wanted: HashSet<FileHash> = checked.target.files().map(|(_, f)| f.hash).collect();
    let mut candidates: HashMap<FileHash, (String, bool)> = HashMap::new();
    for release in checked.previous.iter().chain(checked.installed.iter()) {
        for (path, file) in release.manifest.files() {
            if wanted.contains(&file.hash) {
                let rel = format!("releases/{}/{}", release.dir, path);
                candidates.insert(file.hash, (rel, file.executable));
            }
        }
    }
    candidates
        .into_par_iter()
        .filter(|(hash, (rel, executable))| {
            // The link shares the inode, so its mode must already be right.
            let path = layout.root().join(rel);
            let mode_ok = std::fs::symlink_metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o7777 == crate::platform::file_mode(*executable)
            });
            mode_ok && hash_file(&path).ok() == Some(*hash)
        })
        .collect()
}

/// A local copy of the chunk that re-hashes correctly, if there is one.
fn find_local(
    id: ChunkId,
    len: u32,
    layout: &InstallLayout,
    store: &Store,
) -> Result<Option<LocalChunk>> {
    let blob = layout.blob(&id);
    if blob.exists() {
        if read_blob(&blob, id, len).is_ok() {
            return Ok(Some(LocalChunk::Blob(blob)));
        }
        // A torn or corrupt blob: drop it and fetch again.
        let _ = std::fs::remove_file(&blob);
    }
    if let Some(location) = store.locate(&id)? {
        let path = layout.release(&location.release).join(&location.path);
        if location.len == len && read_installed(&path, location.offset, id, len).is_ok() {
            return Ok(Some(LocalChunk::Installed {
                path,
                offset: location.offset,
            }));
        }
    }
    Ok(None)
}

/// Groups frames into range requests: adjacent frames, or frames separated by at most
/// `coalesce_gap_bytes`, up to `max_range_bytes` a request; then merges ranges further to fit
/// the request budget.
pub(crate) fn coalesce(frames: Vec<FrameRef>, config: &FetchConfig) -> Vec<Range> {
    let mut ranges = adjacent_ranges(frames, config);
    fit_request_budget(&mut ranges, config.max_range_bytes);
    ranges
}

/// Groups frames into range requests as [`coalesce`] does, without the request budget.
pub(crate) fn adjacent_ranges(mut frames: Vec<FrameRef>, config: &FetchConfig) -> Vec<Range> {
    frames.sort_unstable_by_key(|f| (f.pack, f.offset));
    let mut ranges: Vec<Range> = Vec::new();
    for frame in frames {
        let start = frame.offset;
        let end = start + u64::from(frame.frame_len);
        if let Some(last) = ranges.last_mut() {
            let last_end = last.start + last.len;
            if last.pack == frame.pack
                && start >= last_end
                && start - last_end <= config.coalesce_gap_bytes
                && end - last.start <= config.max_range_bytes
            {
                last.len = end - last.start;
                last.frames.push(frame);
                continue;
            }
        }
        ranges.push(Range {
            pack: frame.pack,
            start,
            len: end - start,
            frames: vec![frame],
        });
    }
    ranges
}

/// Range requests allowed beside the pointer and manifest: with those two, an update makes at
/// most 8 requests plus 1 per MiB it downloads.
fn request_budget(ranges: &[Range]) -> usize {
    const MIB: u64 = 1 << 20;
    6 + ranges.iter().map(|r| r.len).sum::<u64>().div_ceil(MIB) as usize
}

/// Merges the two neighbouring ranges of one pack with the smallest gap until the ranges fit
/// [`request_budget`] (or no two can merge within `max_range_bytes`). The gaps are downloaded
/// and skipped: a few wasted bytes cost less than a round trip each.
fn fit_request_budget(ranges: &mut Vec<Range>, max_range_bytes: u64) {
    while ranges.len() > request_budget(ranges) {
        let best = ranges
            .windows(2)
            .enumerate()
            .filter(|(_, w)| {
                w[0].pack == w[1].pack && w[1].start + w[1].len - w[0].start <= max_range_bytes
            })
            .min_by_key(|(_, w)| w[1].start - (w[0].start + w[0].len))
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let next = ranges.remove(i + 1);
        let merged = &mut ranges[i];
        merged.len = next.start + next.len - merged.start;
        merged.frames.extend(next.frames);
    }
}

/// The bytes of a file entry's chunks come from `local`; used by assemble.
pub(crate) fn chunk_bytes(
    planned: &Planned,
    local_files: &mut HashMap<PathBuf, File>,
    index: u32,
) -> Result<Vec<u8>> {
    let chunk = &planned.checked.target.chunks[index as usize];
    match planned.local.get(&index) {
        Some(LocalChunk::Blob(path)) => read_blob(path, chunk.id, chunk.len),
        Some(LocalChunk::Installed { path, offset }) => {
            let file = match local_files.entry(path.clone()) {
                std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => slot
                    .insert(crate::platform::open_read(path).map_err(Error::io("opening", path))?),
            };
            read_chunk_at(file, path, *offset, chunk.id, chunk.len)
        }
        None => Err(Error::BadChunk {
            chunk: chunk.id,
            source_name: "plan".into(),
            reason: "no local copy after fetch".into(),
        }),
    }
}

/// The file entry behind a plan row, for assemble.
pub(crate) fn file_entry(planned: &Planned, row: usize) -> Option<&FileEntry> {
    match &planned.checked.target.entries.get(row)?.kind {
        EntryKind::File(f) => Some(f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pack: u32, offset: u64, frame_len: u32) -> FrameRef {
        FrameRef {
            chunk: 0,
            pack,
            offset,
            frame_len,
            kind: FrameKind::Plain,
        }
    }

    #[test]
    fn scattered_frames_fit_the_request_budget() {
        // 40 frames of 64 KiB with gaps of 1 MiB and more: 40 requests without merging.
        let mut frames: Vec<FrameRef> = (0..40u64)
            .map(|i| frame(0, i * (1 << 20) + i * i * 4096, 65_536))
            .collect();
        frames.push(frame(1, 0, 1000));
        let config = FetchConfig::default();
        let ranges = coalesce(frames.clone(), &config);
        assert!(ranges.len() <= request_budget(&ranges), "{}", ranges.len());
        assert!(ranges.len() > 2, "merging went past the budget");
        let carried: Vec<(u32, u64)> = ranges
            .iter()
            .flat_map(|r| r.frames.iter().map(|f| (f.pack, f.offset)))
            .collect();
        let expected: Vec<(u32, u64)> = frames.iter().map(|f| (f.pack, f.offset)).collect();
        assert_eq!(carried, expected, "every frame once, in pack order");
        for r in &ranges {
            assert!(r.len <= config.max_range_bytes);
            for f in &r.frames {
                assert!(f.pack == r.pack && f.offset >= r.start);
                assert!(f.offset + u64::from(f.frame_len) <= r.start + r.len);
            }
        }
    }

    #[test]
    fn near_frames_merge_and_far_packs_stay_apart() {
        let frames = vec![frame(0, 0, 100), frame(0, 100, 100), frame(2, 5 << 20, 100)];
        let ranges = coalesce(frames, &FetchConfig::default());
        assert_eq!(ranges.len(), 2);
        assert_eq!((ranges[0].start, ranges[0].len), (0, 200));
        assert_eq!((ranges[1].pack, ranges[1].start), (2, 5 << 20));
    }
}
