//! bsdiff's matcher: instructions that rebuild a new segment from a window of the old file.
//!
//! The scan is bsdiff's (Colin Percival's, as in the `bidiff` crate): walk the new bytes and,
//! at each position, compare the longest exact match in the old bytes with how well the
//! current alignment goes on; start a new instruction where a match is clearly better, and
//! extend the previous and the next alignment over approximate matches. bsdiff finds the
//! longest match with a suffix array, one binary search per new byte wherever the code
//! changed. Here it comes from hash chains of the old bytes' 8-byte seeds (the most recent
//! [`CHAIN_DEPTH`] of each), and the current alignment is always a candidate.
//!
//! On ruff's recompiled binary that is 4 times faster than the suffix array (its sort and its
//! searches) for 2-3% more delta bytes, so it matches against bases older than the nearest
//! (see `DeltaParams::for_base`), where clients are few and the bytes still 0.69x pairwise
//! bsdiff.

/// Bytes hashed per seed: bsdiff moves to a new alignment only for a match 9 bytes longer
/// than the current one's, so shorter matches matter only where they continue it.
const SEED: usize = 8;

/// Candidates tried per seed, newest first.
const CHAIN_DEPTH: usize = 16;

/// No position: chain ends and empty buckets.
const NONE: u32 = u32::MAX;

/// bsdiff instructions, as the scan emits them (the `bidiff` crate's type, so that both
/// matchers feed one consumer).
pub use bidiff::Match;

/// Every 8-byte seed of the old bytes, by hash: a chain per bucket, newest position first.
struct Seeds<'a> {
    old: &'a [u8],
    head: Vec<u32>,
    prev: Vec<u32>,
    shift: u32,
}

impl<'a> Seeds<'a> {
    fn new(old: &'a [u8]) -> Self {
        // About one bucket per old byte, 2^10..2^24.
        let bits = old.len().next_power_of_two().trailing_zeros().clamp(10, 24);
        let mut head = vec![NONE; 1 << bits];
        let mut prev = vec![NONE; old.len().saturating_sub(SEED - 1)];
        let shift = 64 - bits;
        for (i, link) in prev.iter_mut().enumerate() {
            let bucket = &mut head[hash(&old[i..], shift)];
            *link = *bucket;
            *bucket = i as u32;
        }
        Self {
            old,
            head,
            prev,
            shift,
        }
    }

    /// The longest match of `new` found at `hint` or among its seed's candidates: (old
    /// position, length). A length of 0 gives `hint`'s position if it is in the old bytes.
    fn longest(&self, new: &[u8], hint: Option<usize>) -> (usize, usize) {
        let mut best = (0, 0);
        if let Some(at) = hint.filter(|&at| at < self.old.len()) {
            best = (at, common_len(&self.old[at..], new));
        }
        if new.len() < SEED || best.1 >= new.len() {
            return best;
        }
        let mut candidate = self.head[hash(new, self.shift)];
        for _ in 0..CHAIN_DEPTH {
            if candidate == NONE {
                break;
            }
            let at = candidate as usize;
            candidate = self.prev[at];
            let old = &self.old[at..];
            // A candidate can only be longer if it matches at the best length so far.
            if old.len() <= best.1 || old[best.1] != new[best.1] {
                continue;
            }
            let len = common_len(old, new);
            if len > best.1 {
                best = (at, len);
                if len == new.len() {
                    break;
                }
            }
        }
        best
    }
}

/// Fibonacci hash of the first 8 bytes of `bytes` (which holds at least [`SEED`]).
fn hash(bytes: &[u8], shift: u32) -> usize {
    let mut seed = [0u8; SEED];
    seed.copy_from_slice(&bytes[..SEED]);
    (u64::from_le_bytes(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
}

/// How many leading bytes `a` and `b` share.
fn common_len(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let mut x = [0u8; 8];
        let mut y = [0u8; 8];
        x.copy_from_slice(&a[i..i + 8]);
        y.copy_from_slice(&b[i..i + 8]);
        let diff = u64::from_le_bytes(x) ^ u64::from_le_bytes(y);
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// bsdiff's matches of `new` against `old`, in order, each starting where the last one's copy
/// ends; the last may end before `new` does.
pub fn matches(old: &[u8], new: &[u8]) -> Vec<Match> {
    let seeds = Seeds::new(old);
    let mut out = Vec::new();
    let (mut scan, mut pos, mut length) = (0usize, 0usize, 0usize);
    let (mut lastscan, mut lastpos, mut lastoffset) = (0usize, 0usize, 0isize);
    // The old byte the current alignment puts at new position `at`, if any.
    let aligned =
        |at: usize, offset: isize| at.checked_add_signed(offset).filter(|&oi| oi < old.len());
    while scan < new.len() {
        let mut oldscore = 0usize;
        scan += length;
        let mut scsc = scan;
        while scan < new.len() {
            (pos, length) = seeds.longest(&new[scan..], aligned(scan, lastoffset));
            while scsc < scan + length {
                if aligned(scsc, lastoffset).is_some_and(|oi| old[oi] == new[scsc]) {
                    oldscore += 1;
                }
                scsc += 1;
            }
            if (length == oldscore && length != 0) || length > oldscore + 8 {
                break;
            }
            if aligned(scan, lastoffset).is_some_and(|oi| old[oi] == new[scan]) {
                oldscore -= 1;
            }
            scan += 1;
        }
        if length == oldscore && scan != new.len() {
            continue;
        }
        // How far the last alignment reaches forward, and the new one backward, over
        // approximate matches (more than half the bytes equal).
        let mut lenf = {
            let (mut s, mut sf, mut lenf) = (0isize, 0isize, 0isize);
            for i in 0..(scan - lastscan).min(old.len() - lastpos) {
                if old[lastpos + i] == new[lastscan + i] {
                    s += 1;
                }
                let n = i as isize + 1;
                if s * 2 - n > sf * 2 - lenf {
                    sf = s;
                    lenf = n;
                }
            }
            lenf as usize
        };
        let mut lenb = if scan >= new.len() {
            0
        } else {
            let (mut s, mut sb, mut lenb) = (0isize, 0isize, 0isize);
            for i in 1..=(scan - lastscan).min(pos) {
                if old[pos - i] == new[scan - i] {
                    s += 1;
                }
                if s * 2 - i as isize > sb * 2 - lenb {
                    sb = s;
                    lenb = i as isize;
                }
            }
            lenb as usize
        };
        if lastscan + lenf > scan - lenb {
            // They overlap: split where the bytes favour one over the other.
            let overlap = (lastscan + lenf) - (scan - lenb);
            let (mut s, mut ss, mut lens) = (0isize, 0isize, 0usize);
            for i in 0..overlap {
                if new[lastscan + lenf - overlap + i] == old[lastpos + lenf - overlap + i] {
                    s += 1;
                }
                if new[scan - lenb + i] == old[pos - lenb + i] {
                    s -= 1;
                }
                if s > ss {
                    ss = s;
                    lens = i + 1;
                }
            }
            lenf = lenf + lens - overlap;
            lenb -= lens;
        }
        out.push(Match {
            add_old_start: lastpos,
            add_new_start: lastscan,
            add_length: lenf,
            copy_end: scan - lenb,
        });
        lastscan = scan - lenb;
        lastpos = pos - lenb;
        lastoffset = pos as isize - scan as isize;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rebuilds new from old and the matches, checking each one's ranges.
    fn apply(old: &[u8], new: &[u8], found: &[Match]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in found {
            assert_eq!(
                m.add_new_start,
                out.len(),
                "{m:?} starts where the last ended"
            );
            assert!(m.add_old_start + m.add_length <= old.len(), "{m:?}");
            out.extend((0..m.add_length).map(|i| {
                old[m.add_old_start + i]
                    .wrapping_add(new[m.add_new_start + i].wrapping_sub(old[m.add_old_start + i]))
            }));
            out.extend_from_slice(&new[m.add_new_start + m.add_length..m.copy_end]);
        }
        out
    }

    /// splitmix64's bytes: no 8-byte seed repeats.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    #[test]
    fn common_len_counts_whole_words_and_the_tail() {
        let a = b"0123456789abcdefXY";
        assert_eq!(common_len(a, a), a.len());
        assert_eq!(common_len(a, b"0123456789abcdefXZ"), 17);
        assert_eq!(common_len(a, b"0123Z"), 4);
        assert_eq!(common_len(a, b""), 0);
    }

    #[test]
    fn a_shifted_and_edited_copy_is_matched_as_adds() {
        let old = noise(300_000, 1);
        let mut new = b"a new header".to_vec();
        new.extend_from_slice(&old[5_000..250_000]);
        for b in new.iter_mut().skip(30).step_by(50) {
            *b ^= 0x5a;
        }
        new.extend(noise(3_000, 2));
        let found = matches(&old, &new);
        let covered = found.last().map_or(0, |m| m.copy_end);
        assert_eq!(&apply(&old, &new, &found), &new[..covered]);
        let added: usize = found.iter().map(|m| m.add_length).sum();
        assert!(added > 240_000, "{added} of {} bytes matched", new.len());
        assert!(found.len() < 10, "{} matches", found.len());
    }

    #[test]
    fn moved_blocks_are_found_and_short_or_empty_inputs_work() {
        let old = noise(100_000, 3);
        let mut new = old[60_000..90_000].to_vec();
        new.extend_from_slice(&old[10_000..40_000]);
        let found = matches(&old, &new);
        assert_eq!(apply(&old, &new, &found), new);
        assert!(found.iter().map(|m| m.add_length).sum::<usize>() >= 59_000);
        for (old, new) in [
            (&b""[..], &b"abc"[..]),
            (b"abc", b""),
            (b"abcdefgh", b"abcdefgh"),
        ] {
            let found = matches(old, new);
            let covered = found.last().map_or(0, |m| m.copy_end);
            assert_eq!(&apply(old, new, &found), &new[..covered]);
        }
    }
}
