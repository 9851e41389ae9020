//! Invariants of what the engine accepts and produces. A violation panics, which libFuzzer
//! reports as a crash.

use std::collections::HashSet;

use relsync_engine::envelope::{self, Kind};
use relsync_engine::manifest::{EntryKind, TrustedManifest, limits};
use relsync_engine::{FetchConfig, FileAction, Planned};

/// What holding a [`TrustedManifest`] promises its users (the planner indexes with these
/// without checking): frames tile their packs exactly, every index is in range, file sizes
/// are their chunks' sum, and the manifest survives re-encoding.
pub fn trusted_manifest(m: &TrustedManifest) {
    assert!(
        m.notes.len() <= limits::NOTES_BYTES,
        "release notes too long"
    );
    let chunks = m.chunks.len();
    // (pack, start, end) of every frame.
    let mut frames: Vec<(u32, u64, u64)> = Vec::new();
    for (i, c) in m.chunks.iter().enumerate() {
        let at = m.frame_offset(i as u32);
        frames.push((c.pack, at, at + u64::from(c.frame_len)));
    }
    for (b, base) in m.bases.iter().enumerate() {
        for (d, delta) in base.deltas.iter().enumerate() {
            assert!((delta.chunk as usize) < chunks, "delta chunk out of range");
            assert!(
                (delta.window as usize) < base.windows.len(),
                "delta window out of range"
            );
            if let Some(map) = delta.codec.ref_map() {
                assert!(
                    (map as usize) < base.refs.len(),
                    "reference map out of range"
                );
            }
            let at = m.delta_offset(b, d);
            frames.push((delta.pack, at, at + u64::from(delta.frame_len)));
        }
        for (r, map) in base.refs.iter().enumerate() {
            assert!(
                matches!(
                    m.entries.get(map.entry as usize).map(|e| &e.kind),
                    Some(EntryKind::File(_))
                ),
                "a reference map of no file"
            );
            assert!(
                map.frame_len <= limits::REF_MAP_BYTES,
                "an oversized reference map"
            );
            let at = m.ref_map_offset(b, r);
            frames.push((map.pack, at, at + u64::from(map.frame_len)));
        }
    }
    for (s, solid) in m.solid.iter().enumerate() {
        let end = solid.first as usize + solid.chunks as usize;
        assert!(solid.chunks > 0 && end <= chunks, "solid run out of range");
        let at = m.solid_offset(s);
        frames.push((solid.pack, at, at + u64::from(solid.frame_len)));
    }
    frames.sort_unstable();
    let mut ends = vec![0u64; m.packs.len()];
    for (pack, start, end) in frames {
        let at = &mut ends[pack as usize];
        assert_eq!(*at, start, "frames of pack {pack} leave a gap or overlap");
        assert!(end > start, "an empty frame");
        *at = end;
    }
    for (pack, end) in m.packs.iter().zip(ends) {
        assert_eq!(pack.len, end, "pack {} is not tiled by its frames", pack.id);
    }
    for (path, file) in m.files() {
        let mut size = 0u64;
        for (at, index, chunk) in m.chunk_spans(file) {
            assert!((index as usize) < chunks);
            assert_eq!(at, size);
            size += u64::from(chunk.len);
        }
        assert_eq!(size, file.size, "{path}: chunks do not add up");
    }
    let _ = m.total_file_bytes();

    let body = postcard::to_stdvec(&**m).expect("an accepted manifest re-encodes");
    let again = envelope::seal(Kind::Manifest, &body, &[]).expect("sealing");
    let again = relsync_engine::dangerous::trusted_manifest(again)
        .expect("a re-encoded manifest opens again");
    assert_eq!(&*again, &**m, "re-encoding changed the manifest");
}

/// What a plan of `target` must satisfy. `fresh`: the install holds nothing, so nothing can
/// be linked, reused or fetched as a delta.
pub fn plan(target: &TrustedManifest, planned: &Planned, fetch: &FetchConfig, fresh: bool) {
    let plan = planned.plan();
    let t = &plan.totals;
    if plan.up_to_date {
        assert!(!fresh, "a fresh install is never up to date");
        assert!(plan.files.is_empty() && plan.requests.is_empty());
        return;
    }
    assert_eq!(plan.files.len(), target.entries.len());
    let mut needed = HashSet::new();
    let (mut linked, mut written) = (0, 0);
    for (file_plan, entry) in plan.files.iter().zip(&target.entries) {
        assert_eq!(file_plan.path, entry.path.as_str());
        match (&file_plan.action, &entry.kind) {
            (FileAction::Dir, EntryKind::Dir)
            | (FileAction::Symlink, EntryKind::Symlink { .. }) => {}
            (FileAction::Link { .. }, EntryKind::File(_)) => linked += 1,
            (
                FileAction::Write {
                    chunks_local,
                    chunks_fetched,
                },
                EntryKind::File(file),
            ) => {
                written += 1;
                assert_eq!(
                    *chunks_local as usize + *chunks_fetched as usize,
                    file.chunks.len(),
                    "{}: chunk counts",
                    entry.path
                );
                needed.extend(file.chunks.iter().copied());
            }
            (action, kind) => panic!("{}: {action:?} for {kind:?}", entry.path),
        }
    }
    assert_eq!((t.files_linked, t.files_written), (linked, written));
    assert_eq!(t.chunks_reused + t.chunks_fetched, needed.len() as u64);
    assert!(t.chunks_bsdiff <= t.chunks_delta && t.chunks_delta <= t.chunks_fetched);
    assert!(t.chunks_refs <= t.chunks_bsdiff);
    // A map is fetched only for frames that use it, and at most once.
    assert!(t.ref_maps <= t.chunks_refs);
    let maps: usize = target.bases.iter().map(|b| b.refs.len()).sum();
    assert!(t.ref_maps as usize <= maps);
    if fresh {
        assert_eq!(
            (t.files_linked, t.chunks_reused, t.chunks_delta, t.ref_maps),
            (0, 0, 0, 0)
        );
    }

    assert_eq!(t.requests, plan.requests.len() as u64);
    assert_eq!(
        t.bytes_to_fetch,
        plan.requests.iter().map(|r| r.len).sum::<u64>()
    );
    let mut ranges: Vec<(&str, u64, u64)> = Vec::new();
    for r in &plan.requests {
        let end = r.start + r.len;
        assert!(r.len > 0 && r.frames > 0, "an empty request: {r:?}");
        assert!(
            target
                .packs
                .iter()
                .any(|p| p.id.to_string() == r.pack && end <= p.len),
            "request past the end of its pack: {r:?}"
        );
        assert!(
            r.frames == 1 || r.len <= fetch.max_range_bytes,
            "a merged request over max_range_bytes: {r:?}"
        );
        ranges.push((&r.pack, r.start, end));
    }
    // Two packs may share an id; only requests to a pack whose id is unique are comparable.
    let mut ids = HashSet::new();
    let shared: HashSet<String> = target
        .packs
        .iter()
        .map(|p| p.id.to_string())
        .filter(|id| !ids.insert(id.clone()))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if pair[0].0 == pair[1].0 && !shared.contains(pair[0].0) {
            assert!(pair[0].2 <= pair[1].1, "requests overlap: {pair:?}");
        }
    }
}
