//! Measurement experiment: reference-aware transforms before bsdiff (whole file and relsync-style
//! per-segment / per-chunk frames). Not production code.
use std::time::Instant;

// ---------------------------------------------------------------- varints
fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
fn get(buf: &[u8], pos: &mut usize) -> u64 {
    let (mut v, mut s) = (0u64, 0);
    loop {
        let b = buf[*pos];
        *pos += 1;
        v |= ((b & 0x7f) as u64) << s;
        if b < 0x80 {
            return v;
        }
        s += 7;
    }
}
fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}
fn unzz(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

// ---------------------------------------------------------------- bsdiff ops
#[derive(Clone, Copy, Debug)]
struct Op {
    src: u64,
    add: u64,
    copy: u64,
}

fn bsdiff_ops(old: &[u8], new: &[u8]) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    let mut at = 0usize;
    let literal = |ops: &[Op], from: usize, to: usize| Op {
        src: ops.last().map_or(0, |op| op.src + op.add),
        add: 0,
        copy: (to - from) as u64,
    };
    let params = bidiff::DiffParams::default();
    bidiff::diff(old, new, &params, |m| {
        if m.add_new_start < at || m.copy_end < m.copy_start() {
            return Ok(());
        }
        if m.add_new_start > at {
            ops.push(literal(&ops, at, m.add_new_start));
        }
        ops.push(Op { src: m.add_old_start as u64, add: m.add_length as u64, copy: (m.copy_end - m.copy_start()) as u64 });
        at = m.copy_end;
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap();
    if at < new.len() {
        ops.push(literal(&ops, at, new.len()));
    }
    merge_ops(ops, old.len() as u64)
}

/// Encoder-side: joins an op to the previous one when it continues the previous diagonal and
/// the literal run between them is at most `maxgap` bytes (the literals become diff bytes).
fn merge_ops(ops: Vec<Op>, old_len: u64) -> Vec<Op> {
    let Ok(maxgap) = std::env::var("MERGE").map(|v| v.parse::<u64>().unwrap()) else { return ops };
    let before = ops.len();
    let mut out: Vec<Op> = Vec::new();
    for op in ops {
        if let Some(l) = out.last_mut() {
            if l.add > 0 && op.src == l.src + l.add + l.copy && l.copy <= maxgap && op.src + op.add <= old_len {
                l.add += l.copy + op.add;
                l.copy = op.copy;
                continue;
            }
        }
        out.push(op);
    }
    MERGED.with(|m| *m.borrow_mut() += before - out.len());
    out
}
thread_local!(static MERGED: std::cell::RefCell<usize> = const { std::cell::RefCell::new(0) });

fn slice_ops(ops: &[Op], from: u64, to: u64) -> Vec<Op> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for op in ops {
        let (a0, a1) = (at, at + op.add);
        let c1 = a1 + op.copy;
        at = c1;
        if c1 <= from {
            continue;
        }
        if a0 >= to {
            break;
        }
        let s = a0.max(from);
        let add = if s < a1 { a1.min(to) - s } else { 0 };
        let cs = a1.max(from);
        let copy = if cs < c1.min(to) { c1.min(to) - cs } else { 0 };
        out.push(Op { src: op.src + (s.min(a1) - a0), add, copy });
    }
    out
}

/// Add regions: (old_start, len, new_start) in `ops` coordinates.
fn add_regions(ops: &[Op]) -> Vec<(u64, u64, u64)> {
    let mut at = 0;
    let mut out = Vec::new();
    for op in ops {
        if op.add > 0 {
            out.push((op.src, op.add, at));
        }
        at += op.add + op.copy;
    }
    out
}

fn z(data: &[u8], level: i32) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    zstd::bulk::compress(data, level).unwrap()
}
fn unz(data: &[u8], cap: usize) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    zstd::bulk::decompress(data, cap).unwrap()
}

/// relsync-style bsdiff frame: varint ctrl_len, varint diff_len, zstd(ctrl) zstd(diff) zstd(extra).
fn encode_frame(ops: &[Op], new: &[u8], old: &[u8], level: i32) -> (Vec<u8>, [usize; 3]) {
    let r = encode_frame_raw(ops, new, old, level);
    r.0
}
fn encode_frame_raw(ops: &[Op], new: &[u8], old: &[u8], level: i32) -> ((Vec<u8>, [usize; 3]), [Vec<u8>; 3]) {
    let (mut ctrl, mut diff, mut extra) = (Vec::new(), Vec::new(), Vec::new());
    let (mut prev, mut at) = (0u64, 0usize);
    for op in ops {
        put(&mut ctrl, zz(op.src as i64 - prev as i64));
        put(&mut ctrl, op.add);
        put(&mut ctrl, op.copy);
        for i in 0..op.add as usize {
            diff.push(new[at + i].wrapping_sub(old[op.src as usize + i]));
        }
        at += op.add as usize;
        extra.extend_from_slice(&new[at..at + op.copy as usize]);
        at += op.copy as usize;
        prev = op.src + op.add;
    }
    assert_eq!(at, new.len());
    let (c, d, e) = (z(&ctrl, level), z(&diff, level), z(&extra, level));
    let mut f = Vec::new();
    put(&mut f, c.len() as u64);
    put(&mut f, d.len() as u64);
    let sizes = [c.len(), d.len(), e.len()];
    f.extend_from_slice(&c);
    f.extend_from_slice(&d);
    f.extend_from_slice(&e);
    ((f, sizes), [ctrl, diff, extra])
}

fn decode_frame(frame: &[u8], old: &[u8], len: usize) -> (Vec<u8>, Vec<Op>) {
    let mut pos = 0;
    let cl = get(frame, &mut pos) as usize;
    let dl = get(frame, &mut pos) as usize;
    let ctrl = unz(&frame[pos..pos + cl], 4 * len + 64);
    let diff = unz(&frame[pos + cl..pos + cl + dl], len);
    let extra = unz(&frame[pos + cl + dl..], len);
    let (mut out, mut ops) = (Vec::with_capacity(len), Vec::new());
    let (mut p, mut prev, mut di, mut ei) = (0, 0u64, 0, 0);
    while p < ctrl.len() {
        let src = (prev as i64 + unzz(get(&ctrl, &mut p))) as u64;
        let add = get(&ctrl, &mut p);
        let copy = get(&ctrl, &mut p);
        for i in 0..add as usize {
            out.push(old[src as usize + i].wrapping_add(diff[di]));
            di += 1;
        }
        out.extend_from_slice(&extra[ei..ei + copy as usize]);
        ei += copy as usize;
        prev = src + add;
        ops.push(Op { src, add, copy });
    }
    assert!(di == diff.len() && ei == extra.len() && out.len() == len);
    (out, ops)
}

// ---------------------------------------------------------------- ELF
#[derive(Clone, Debug)]
struct Sec {
    name: String,
    ty: u32,
    flags: u64,
    addr: u64,
    off: u64,
    size: u64,
}
#[derive(Clone, Debug)]
struct Elf {
    secs: Vec<Sec>,
    loads: Vec<(u64, u64, u64, u64)>, // va, off, filesz, memsz
}
fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn parse_elf(b: &[u8]) -> Elf {
    assert_eq!(&b[..4], b"\x7fELF");
    let phoff = u64le(b, 0x20) as usize;
    let shoff = u64le(b, 0x28) as usize;
    let (phn, shn, shstr) = (u16le(b, 0x38) as usize, u16le(b, 0x3c) as usize, u16le(b, 0x3e) as usize);
    let mut loads = Vec::new();
    for i in 0..phn {
        let p = phoff + i * 56;
        if u32le(b, p) == 1 {
            loads.push((u64le(b, p + 16), u64le(b, p + 8), u64le(b, p + 32), u64le(b, p + 40)));
        }
    }
    let stro = u64le(b, shoff + shstr * 64 + 24) as usize;
    let secs = (0..shn)
        .map(|i| {
            let s = shoff + i * 64;
            let n = stro + u32le(b, s) as usize;
            let end = n + b[n..].iter().position(|&c| c == 0).unwrap();
            Sec {
                name: String::from_utf8_lossy(&b[n..end]).into(),
                ty: u32le(b, s + 4),
                flags: u64le(b, s + 8),
                addr: u64le(b, s + 16),
                off: u64le(b, s + 24),
                size: u64le(b, s + 32),
            }
        })
        .collect();
    Elf { secs, loads }
}
impl Elf {
    fn off_to_va(&self, off: u64) -> Option<u64> {
        self.loads.iter().find(|l| off >= l.1 && off < l.1 + l.2).map(|l| l.0 + off - l.1)
    }
    fn va_to_off(&self, va: u64) -> Option<u64> {
        self.loads.iter().find(|l| va >= l.0 && va < l.0 + l.2).map(|l| l.1 + va - l.0)
    }
    fn in_image(&self, va: u64) -> bool {
        va >= 0x1000 && self.loads.iter().any(|l| va >= l.0 && va < l.0 + l.3)
    }
    fn in_exec(&self, va: u64) -> bool {
        self.secs.iter().any(|s| s.flags & 4 != 0 && va >= s.addr && va < s.addr + s.size)
    }
    /// An alloc section holding `va` (for targets with no file bytes, e.g. .bss).
    fn sec_of_va(&self, va: u64) -> Option<&Sec> {
        self.secs.iter().find(|s| s.flags & 2 != 0 && s.size > 0 && va >= s.addr && va < s.addr + s.size && s.ty == 8)
    }
    /// What the frame header carries about the new file: loads and alloc section (name, addr).
    fn header_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for l in &self.loads {
            for x in [l.0, l.1, l.2, l.3] {
                put(&mut v, x);
            }
        }
        for s in &self.secs {
            if s.flags & 2 != 0 {
                v.extend_from_slice(s.name.as_bytes());
                v.push(0);
                put(&mut v, s.addr);
                put(&mut v, s.size);
            }
        }
        v
    }
}

// ---------------------------------------------------------------- references in the old image
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Rel32,     // code: target = va(operand end) + v
    PcRel32,   // .eh_frame pc_begin / LSDA: target = va(field) + v
    DataRel32, // .eh_frame_hdr table: target = va(.eh_frame_hdr) + v
    NegRel32,  // .eh_frame CIE pointer: target = va(field) - v
    StrOff,    // .symtab st_name: target = STR_SPACE + v (offset in .strtab)
    Abs64,
}
const STR_SPACE: u64 = 1 << 44;
fn base_va(elf: &Elf, kind: Kind, off: u64) -> Option<u64> {
    match kind {
        Kind::Rel32 => elf.off_to_va(off + 4),
        Kind::PcRel32 | Kind::NegRel32 => elf.off_to_va(off),
        Kind::DataRel32 => elf.secs.iter().find(|s| s.name == ".eh_frame_hdr" && off >= s.off && off < s.off + s.size).map(|s| s.addr),
        Kind::Abs64 => Some(0),
        Kind::StrOff => Some(STR_SPACE),
    }
}
fn read_v(b: &[u8], p: usize, k: Kind) -> u64 {
    if k == Kind::Abs64 { u64le(b, p) } else { u32le(b, p) as u64 }
}
fn write_v(b: &mut [u8], p: usize, k: Kind, v: u64) {
    if k == Kind::Abs64 { b[p..p + 8].copy_from_slice(&v.to_le_bytes()) } else { b[p..p + 4].copy_from_slice(&(v as u32).to_le_bytes()) }
}
fn target_from(k: Kind, base: u64, v: u64) -> u64 {
    match k {
        Kind::Abs64 => v,
        Kind::NegRel32 => base.wrapping_sub(v as u32 as i32 as i64 as u64),
        Kind::StrOff => base + (v as u32 as u64),
        _ => base.wrapping_add(v as u32 as i32 as i64 as u64),
    }
}
fn value_for(k: Kind, base: u64, t: u64) -> u64 {
    match k {
        Kind::Abs64 => t,
        Kind::NegRel32 => base.wrapping_sub(t) as u32 as u64,
        _ => t.wrapping_sub(base) as u32 as u64,
    }
}
#[derive(Clone, Copy, Debug)]
struct Ref {
    pos: u64,
    kind: Kind,
}
impl Ref {
    fn width(&self) -> u64 {
        if self.kind != Kind::Abs64 { 4 } else { 8 }
    }
}

const NOIMM: &[u8] = &[
    0x01, 0x03, 0x09, 0x0B, 0x11, 0x13, 0x19, 0x1B, 0x21, 0x23, 0x29, 0x2B, 0x31, 0x33, 0x39, 0x3B, 0x63, 0x84, 0x85,
    0x86, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8D,
];
const SSE: &[u8] = &[
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x28, 0x29, 0x2A, 0x2C, 0x2D, 0x2E, 0x2F, 0x40, 0x41, 0x42, 0x43,
    0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x4B, 0x4C, 0x4D, 0x4E, 0x4F, 0x51, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
    0x5A, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F, 0x6E, 0x6F, 0x7E, 0x7F, 0xAF, 0xB6, 0xB7, 0xBE, 0xBF, 0xD6, 0xE7, 0xEF, 0xDB,
    0xEB, 0xFE, 0xFA, 0xD4, 0xFB,
];

/// (operand offset, is branch) of a rel32 candidate starting at i.
fn match_rel32(b: &[u8], i: usize) -> Option<(usize, bool)> {
    if i + 8 > b.len() {
        return None;
    }
    let c = b[i];
    if c == 0xE8 || c == 0xE9 {
        return Some((i + 1, true));
    }
    if c == 0x0F && (0x80..=0x8F).contains(&b[i + 1]) {
        return Some((i + 2, true));
    }
    let mut j = i;
    if matches!(b[j], 0x66 | 0xF2 | 0xF3) {
        j += 1;
    }
    if (0x40..=0x4F).contains(&b[j]) {
        j += 1;
    }
    let op = b[j];
    if op == 0x0F {
        if SSE.contains(&b[j + 1]) && (b[j + 2] & 0xC7) == 0x05 {
            return Some((j + 3, false));
        }
        return None;
    }
    if NOIMM.contains(&op) && (b[j + 1] & 0xC7) == 0x05 {
        return Some((j + 2, false));
    }
    if op == 0xFF && matches!(b[j + 1], 0x15 | 0x25 | 0x35) {
        return Some((j + 2, false));
    }
    None
}

struct RefOpts {
    rel32: bool,
    rip: bool,
    abs64: bool,
    symtab: bool,
    eh: bool,
    strname: bool,
}

fn find_refs(b: &[u8], elf: &Elf, o: &RefOpts) -> Vec<Ref> {
    let mut refs = Vec::new();
    for s in &elf.secs {
        let (start, end) = (s.off as usize, (s.off + s.size) as usize);
        if s.ty == 8 || end > b.len() {
            continue;
        }
        if s.flags & 4 != 0 && (o.rel32 || o.rip) {
            let mut i = start;
            while i + 8 <= end {
                if let Some((q, branch)) = match_rel32(b, i) {
                    if (branch && o.rel32) || (!branch && o.rip) {
                        let rel = u32le(b, q) as i32 as i64;
                        if let Some(base) = elf.off_to_va(q as u64 + 4) {
                            let t = (base as i64 + rel) as u64;
                            let ok = if branch { elf.in_exec(t) } else { elf.in_image(t) };
                            if ok && q + 4 <= end {
                                refs.push(Ref { pos: q as u64, kind: Kind::Rel32 });
                                i = q + 4;
                                continue;
                            }
                        }
                    }
                }
                i += 1;
            }
        } else if o.eh && s.name == ".eh_frame_hdr" && b[start + 3] == 0x3b && b[start + 2] == 0x03 {
            let count = u32le(b, start + 8) as usize;
            for i in 0..count {
                let p = start + 12 + 8 * i;
                if p + 8 <= end {
                    refs.push(Ref { pos: p as u64, kind: Kind::DataRel32 });
                    refs.push(Ref { pos: p as u64 + 4, kind: Kind::DataRel32 });
                }
            }
        } else if o.eh && s.name == ".eh_frame" {
            let mut p = start;
            while p + 8 <= end {
                let len = u32le(b, p) as usize;
                if len == 0 || len == 0xffff_ffff || p + 4 + len > end {
                    break;
                }
                if u32le(b, p + 4) != 0 && len >= 12 {
                    refs.push(Ref { pos: p as u64 + 4, kind: Kind::NegRel32 });
                    let t = target_from(Kind::PcRel32, elf.off_to_va(p as u64 + 8).unwrap_or(0), u32le(b, p + 8) as u64);
                    if elf.in_exec(t) {
                        refs.push(Ref { pos: p as u64 + 8, kind: Kind::PcRel32 });
                    }
                    // augmentation length 4 => LSDA pointer (pcrel sdata4)
                    if len >= 21 && b[p + 16] == 4 {
                        let t = target_from(Kind::PcRel32, elf.off_to_va(p as u64 + 17).unwrap_or(0), u32le(b, p + 17) as u64);
                        if elf.in_image(t) {
                            refs.push(Ref { pos: p as u64 + 17, kind: Kind::PcRel32 });
                        }
                    }
                }
                p += 4 + len;
            }
        } else if o.abs64 && s.flags & 2 != 0 {
            let fields: &[usize] = match s.name.as_str() {
                ".rela.dyn" | ".rela.plt" => &[0, 16],
                ".init_array" | ".fini_array" | ".data.rel.ro" | ".got" | ".data" | ".got.plt" => &[0],
                _ => &[],
            };
            let stride = if fields.len() == 2 { 24 } else { 8 };
            let mut i = start;
            while i + stride <= end {
                for &f in fields {
                    if elf.in_image(u64le(b, i + f)) {
                        refs.push(Ref { pos: (i + f) as u64, kind: Kind::Abs64 });
                    }
                }
                i += stride;
            }
        } else if o.symtab && s.name == ".symtab" {
            let mut i = start;
            while i + 24 <= end {
                if u32le(b, i) != 0 && o.strname {
                    refs.push(Ref { pos: i as u64, kind: Kind::StrOff });
                }
                if elf.in_image(u64le(b, i + 8)) {
                    refs.push(Ref { pos: (i + 8) as u64, kind: Kind::Abs64 });
                }
                i += 24;
            }
        }
    }
    refs.sort_by_key(|r| r.pos);
    refs
}

// ---------------------------------------------------------------- old -> new offset map
struct Map {
    /// (old_start, len, new_start), sorted by old_start, absolute file offsets.
    regions: Vec<(u64, u64, u64)>,
}
impl Map {
    fn new(mut regions: Vec<(u64, u64, u64)>) -> Self {
        regions.sort();
        Map { regions }
    }
    fn old_to_new(&self, o: u64) -> Option<u64> {
        let k = self.regions.partition_point(|r| r.0 <= o);
        if k == 0 {
            return None;
        }
        let mut r = self.regions[k - 1];
        if std::env::var("MAP").map_or(true, |m| m == "longest") {
            // among the last 64 regions starting at or before o, the longest containing o
            let mut best: Option<(u64, u64, u64)> = None;
            for c in self.regions[k.saturating_sub(64)..k].iter().rev() {
                if c.0 + c.1 > o && best.is_none_or(|b| c.1 > b.1) {
                    best = Some(*c);
                }
            }
            if let Some(b) = best {
                r = b;
            }
        }
        Some((r.2 as i64 + (o as i64 - r.0 as i64)) as u64)
    }
    /// New offset of old offset `o` through the longest region (of the last 64 starting at or
    /// before o) that contains it.
    fn containing(&self, o: u64) -> Option<u64> {
        let k = self.regions.partition_point(|r| r.0 <= o);
        let mut best: Option<(u64, u64, u64)> = None;
        for c in self.regions[k.saturating_sub(64)..k].iter().rev() {
            if c.0 + c.1 > o && best.is_none_or(|b| c.1 > b.1) {
                best = Some(*c);
            }
        }
        best.map(|r| r.2 + (o - r.0))
    }
    /// Coarsened: merge regions (in new order) with equal shift; serialized + zstd size.
    fn coarse(&self) -> (Map, usize) {
        let mut by_new = self.regions.clone();
        by_new.sort_by_key(|r| r.2);
        let mut out: Vec<(u64, u64, u64)> = Vec::new();
        for r in by_new {
            if let Some(l) = out.last_mut() {
                if l.2 as i64 - l.0 as i64 == r.2 as i64 - r.0 as i64 && r.0 >= l.0 {
                    l.1 = (r.0 + r.1).max(l.0 + l.1) - l.0;
                    continue;
                }
            }
            out.push(r);
        }
        let mut v = Vec::new();
        let (mut po, mut pn) = (0i64, 0i64);
        for r in &out {
            put(&mut v, zz(r.0 as i64 - po));
            put(&mut v, r.1);
            put(&mut v, zz(r.2 as i64 - r.0 as i64 - pn));
            po = r.0 as i64;
            pn = r.2 as i64 - r.0 as i64;
        }
        let size = z(&v, 19).len();
        (Map::new(out), size)
    }
}

struct Ctx<'a> {
    old: &'a [u8],
    old_elf: &'a Elf,
    new_elf: &'a Elf, // only its header_bytes() are used: carried by the frame
    refs: &'a [Ref],
    map: &'a Map,
    label: Option<Label>,
    votes: Option<std::cell::RefCell<std::collections::HashMap<u64, std::collections::HashMap<i64, u32>>>>,
}

/// The label map: for every distinct old target (va, enumerated from the old image), the shift
/// of its new counterpart. Carried per file as runs (count, zigzag shift delta).
struct Label {
    targets: Vec<u64>,
    shifts: Vec<i64>,
}
impl Label {
    fn targets_of(old: &[u8], elf: &Elf, refs: &[Ref]) -> Vec<u64> {
        let mut t: Vec<u64> = refs
            .iter()
            .filter_map(|r| Some(target_from(r.kind, base_va(elf, r.kind, r.pos)?, read_v(old, r.pos as usize, r.kind))))
            .collect();
        t.sort();
        t.dedup();
        t
    }
    fn build(targets: Vec<u64>, votes: &std::collections::HashMap<u64, std::collections::HashMap<i64, u32>>, base: &dyn Fn(u64) -> i64, fallback: &dyn Fn(u64) -> Option<i64>) -> (Label, usize, usize, usize) {
        let mut shifts = Vec::with_capacity(targets.len());
        let mut resid = Vec::with_capacity(targets.len());
        let mut prev = 0i64;
        let mut voted = 0;
        for t in &targets {
            let b = base(*t);
            if let Some(v) = votes.get(t) {
                prev = v.iter().max_by_key(|(s, c)| (**c, -(**s))).map(|(s, _)| *s).unwrap() - b;
                voted += 1;
            } else if let Some(f) = fallback(*t) {
                prev = f - b;
            }
            resid.push(prev);
            shifts.push(prev + b);
        }
        let shifts_abs = shifts;
        let shifts = resid;
        // implicit form: runs of equal shift over the old target list
        let mut ser = Vec::new();
        let mut explicit = Vec::new();
        let (mut i, mut ps, mut pt) = (0, 0i64, 0u64);
        while i < shifts.len() {
            let mut j = i;
            while j < shifts.len() && shifts[j] == shifts[i] {
                j += 1;
            }
            put(&mut ser, (j - i) as u64);
            put(&mut ser, zz(shifts[i] - ps));
            ps = shifts[i];
            i = j;
        }
        let mut ps2 = 0i64;
        for (t, s) in targets.iter().zip(&shifts) {
            put(&mut explicit, t - pt);
            put(&mut explicit, zz(s - ps2));
            pt = *t;
            ps2 = *s;
        }
        let (a, b) = (z(&ser, 19).len(), z(&explicit, 19).len());
        (Label { targets, shifts: shifts_abs }, a, b, voted)
    }
}

impl Ctx<'_> {
    fn predict(&self, t_old: u64) -> Option<u64> {
        if let Some(l) = &self.label {
            if let Ok(k) = l.targets.binary_search(&t_old) {
                return Some(t_old.wrapping_add(l.shifts[k] as u64));
            }
        }
        if let Some(o) = self.old_elf.va_to_off(t_old) {
            let n = self.map.old_to_new(o)?;
            return self.new_elf.off_to_va(n);
        }
        let s = self.old_elf.sec_of_va(t_old)?;
        let ns = self.new_elf.secs.iter().find(|x| x.name == s.name)?;
        Some(t_old - s.addr + ns.addr)
    }

    /// Applies (or with `inverse`, undoes) the reference projection on `buf` = new[buf_off..],
    /// whose bsdiff ops `ops` point into old[win_off..]. Returns (refs projected, refs matching).
    fn project(&self, buf: &mut [u8], buf_off: u64, ops: &[Op], win_off: u64, inverse: bool) -> (usize, usize) {
        let (mut n, mut same) = (0, 0);
        for (src, len, at) in add_regions(ops) {
            let (o0, o1) = (win_off + src, win_off + src + len);
            let k = self.refs.partition_point(|r| r.pos < o0);
            for r in &self.refs[k..] {
                if r.pos + r.width() > o1 {
                    if r.pos >= o1 {
                        break;
                    }
                    continue;
                }
                let q = r.pos as usize;
                let p = (at + (r.pos - o0)) as usize; // in buf
                let p_abs = buf_off + p as u64;
                let k = r.kind;
                let v_old = read_v(self.old, q, k);
                let Some(base_old) = base_va(self.old_elf, k, r.pos) else { continue };
                let t_old = target_from(k, base_old, v_old);
                let Some(pred) = self.predict(t_old) else { continue };
                let Some(base_new) = base_va(self.new_elf, k, p_abs) else { continue };
                let pred_v = value_for(k, base_new, pred);
                let cur = read_v(buf, p, k);
                if let Some(v) = &self.votes {
                    let t_new = target_from(k, base_new, cur);
                    *v.borrow_mut().entry(t_old).or_default().entry(t_new.wrapping_sub(t_old) as i64).or_default() += 1;
                }
                let v = if inverse {
                    cur.wrapping_add(pred_v).wrapping_sub(v_old)
                } else {
                    if cur == pred_v {
                        same += 1;
                    }
                    cur.wrapping_sub(pred_v).wrapping_add(v_old)
                };
                write_v(buf, p, k, v);
                n += 1;
            }
        }
        (n, same)
    }
}

thread_local!(static LABEL: std::cell::RefCell<Option<Vec<i64>>> = const { std::cell::RefCell::new(None) });
thread_local!(static STATS: std::cell::RefCell<[usize; 6]> = std::cell::RefCell::new([0; 6]));
// ---------------------------------------------------------------- BCJ (xz-style idea, own invertible scan)
/// E8/E9 (and with `jcc`, 0F 80..8F) rel32 whose top byte is 00/FF -> absolute (pos-based),
/// in the 25-bit sign-extended form, top byte kept 00/FF; skip the operand after a conversion.
fn bcj(b: &mut [u8], base: u64, encode: bool, jcc: bool) {
    let mut i = 0;
    let mut protect = 0;
    while i + 5 <= b.len() {
        let (q, ok) = if b[i] == 0xE8 || b[i] == 0xE9 {
            (i + 1, true)
        } else if jcc && b[i] == 0x0F && i + 6 <= b.len() && (0x80..=0x8F).contains(&b[i + 1]) {
            (i + 2, true)
        } else {
            (0, false)
        };
        if ok && q < protect {
            i += 1;
            continue;
        }
        if ok && !(b[q + 3] == 0 || b[q + 3] == 0xFF) {
            protect = q + 4;
        }
        if ok && (b[q + 3] == 0 || b[q + 3] == 0xFF) {
            let src = u32le(b, q);
            let pos = (base + q as u64 + 4) as u32;
            let d = if encode { src.wrapping_add(pos) } else { src.wrapping_sub(pos) };
            let d = if d & (1 << 24) != 0 { d | 0xFF00_0000 } else { d & 0x00FF_FFFF };
            b[q..q + 4].copy_from_slice(&d.to_le_bytes());
            i = q + 4;
        } else {
            i += 1;
        }
    }
}

// ---------------------------------------------------------------- driver
fn read(p: &str) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn opts(t: &str) -> RefOpts {
    RefOpts {
        rel32: t.contains("rel32") || t.starts_with("refs"),
        rip: t.contains("rip") || t.starts_with("refs"),
        abs64: t.contains("abs64") || t.starts_with("refs"),
        symtab: t.contains("sym"),
        eh: t.contains("eh"),
        strname: t.contains("symname"),
    }
}

fn resid_mode() -> bool {
    std::env::var("LABEL").is_ok_and(|m| m == "resid")
}
fn realign_mode() -> bool {
    std::env::var("REALIGN").is_ok_and(|m| m == "1")
}

/// Builds the label map from the votes of a dry-run projection over `pieces` (buf_off, ops, win_off).
fn make_label(ctx: &mut Ctx, new: &[u8], pieces: &[(u64, u64, Vec<Op>, u64)]) -> usize {
    ctx.label = None;
    ctx.votes = Some(Default::default());
    for (off, len, ops, win) in pieces {
        let mut data = new[*off as usize..(*off + *len) as usize].to_vec();
        ctx.project(&mut data, *off, ops, *win, false);
    }
    let votes = ctx.votes.take().unwrap().into_inner();
    let resid = resid_mode();
    let base = |t: u64| -> i64 {
        if !resid {
            return 0;
        }
        ctx.predict(t).map_or(0, |p| p.wrapping_sub(t) as i64)
    };
    let positional = std::env::var("POSVOTE").is_ok();
    let fallback = |t: u64| -> Option<i64> {
        if !positional {
            return None;
        }
        if t >= STR_SPACE {
            let so = ctx.old_elf.secs.iter().find(|s| s.name == ".strtab")?.off;
            let sn = ctx.new_elf.secs.iter().find(|s| s.name == ".strtab")?.off;
            let n = ctx.map.containing(so + (t - STR_SPACE))?;
            return Some((n as i64 - sn as i64) - (t - STR_SPACE) as i64 + 0);
        }
        let o = ctx.old_elf.va_to_off(t)?;
        let n = ctx.map.containing(o)?;
        Some(ctx.new_elf.off_to_va(n)?.wrapping_sub(t) as i64)
    };
    let (l, a, b, voted) = Label::build(Label::targets_of(ctx.old, ctx.old_elf, ctx.refs), &votes, &base, &fallback);
    eprintln!("label map: {} old targets, {voted} voted, implicit {a} B, explicit {b} B (resid {resid})", l.targets.len());
    ctx.label = Some(l);
    a
}

/// Copy of `b` with each reference operand replaced by f(its target): for matching only.
fn labelize(b: &[u8], elf: &Elf, refs: &[Ref], f: &dyn Fn(u64) -> u64) -> Vec<u8> {
    let mut out = b.to_vec();
    for r in refs {
        let q = r.pos as usize;
        let Some(base) = base_va(elf, r.kind, r.pos) else { continue };
        let t = target_from(r.kind, base, read_v(b, q, r.kind));
        // position-independent: the (mapped) absolute target, so shifted code matches
        write_v(&mut out, q, r.kind, f(t));
    }
    out
}

fn inverse_label(l: &Label) -> std::collections::HashMap<u64, u64> {
    let mut m = std::collections::HashMap::new();
    for (t, s) in l.targets.iter().zip(&l.shifts) {
        m.entry(t.wrapping_add(*s as u64)).or_insert(*t);
    }
    m
}

fn whole(old: &[u8], new: &[u8], t: &str) {
    let t0 = Instant::now();
    let old_elf = parse_elf(old);
    let new_elf = parse_elf(new);
    let (mut o2, mut n2) = (old.to_vec(), new.to_vec());
    if t.starts_with("bcj") {
        let jcc = t == "bcj+jcc";
        bcj(&mut o2, 0, true, jcc);
        bcj(&mut n2, 0, true, jcc);
    }
    let mut ops = bsdiff_ops(&o2, &n2);
    let mut t_diff = t0.elapsed().as_secs_f64();
    let mut header = 0;
    let mut refs = Vec::new();
    if t.starts_with("refs") || t.contains("rel32") || t.contains("rip") || t.contains("abs64") || t.contains("eh") {
        refs = find_refs(old, &old_elf, &opts(t));
        let use_label = std::env::var("MAP").map_or(true, |m| m == "label");
        if use_label && realign_mode() {
            let map = Map::new(add_regions(&ops));
            let mut ctx = Ctx { old, old_elf: &old_elf, new_elf: &new_elf, refs: &refs, map: &map, label: None, votes: None };
            make_label(&mut ctx, new, &[(0, new.len() as u64, ops.clone(), 0)]);
            let inv = inverse_label(ctx.label.as_ref().unwrap());
            let new_refs = find_refs(new, &new_elf, &opts(t));
            let o3 = labelize(old, &old_elf, &refs, &|t| t);
            let n3 = labelize(new, &new_elf, &new_refs, &|t| *inv.get(&t).unwrap_or(&t));
            let ops2 = bsdiff_ops(&o3, &n3);
            eprintln!("realign: ops {} -> {}", ops.len(), ops2.len());
            ops = ops2;
            t_diff = t0.elapsed().as_secs_f64();
        }
        let map = Map::new(add_regions(&ops));
        let mut ctx = Ctx { old, old_elf: &old_elf, new_elf: &new_elf, refs: &refs, map: &map, label: None, votes: None };
        let mut label_bytes = 0;
        if use_label {
            label_bytes = make_label(&mut ctx, new, &[(0, new.len() as u64, ops.clone(), 0)]);
            LABEL.with(|x| *x.borrow_mut() = Some(ctx.label.as_ref().unwrap().shifts.clone()));
        }
        let (n, same) = ctx.project(&mut n2, 0, &ops, 0, false);
        header = z(&new_elf.header_bytes(), 19).len() + label_bytes;
        eprintln!("old refs {} (rel32 {}), projected {n}, predicted exactly {same}", refs.len(),
            refs.iter().filter(|r| r.kind == Kind::Rel32).count());
    }
    MERGED.with(|m| eprintln!("merged ops: {}", m.borrow()));
    if std::env::var("BREAK").is_ok() {
        // per new section: add bytes, nonzero diff bytes, extra bytes, zstd size of its diff & extra
        let mut at = 0usize;
        let mut dbuf: Vec<(usize, u8, bool)> = Vec::new();
        for op in &ops {
            for i in 0..op.add as usize {
                dbuf.push((at + i, n2[at + i].wrapping_sub(o2[op.src as usize + i]), true));
            }
            at += op.add as usize;
            for i in 0..op.copy as usize {
                dbuf.push((at + i, n2[at + i], false));
            }
            at += op.copy as usize;
        }
        for sec in &new_elf.secs {
            let (a, b) = (sec.off as usize, (sec.off + sec.size) as usize);
            if sec.ty == 8 || b - a < 4096 { continue; }
            let d: Vec<u8> = dbuf[a..b].iter().filter(|x| x.2).map(|x| x.1).collect();
            let e: Vec<u8> = dbuf[a..b].iter().filter(|x| !x.2).map(|x| x.1).collect();
            let nz = d.iter().filter(|x| **x != 0).count();
            eprintln!("{:20} size {:>9} add {:>9} nz {:>8} extra {:>8} z(diff) {:>8} z(extra) {:>8}", sec.name, b - a, d.len(), nz, e.len(), z(&d, 19).len(), z(&e, 19).len());
        }
    }
    let ((frame, s), raw) = encode_frame_raw(&ops, &n2, &o2, 19);
    if let Ok(d) = std::env::var("DUMP") {
        for (n, r) in ["ctrl", "diff", "extra"].iter().zip(&raw) {
            std::fs::write(format!("{d}.{n}"), r).unwrap();
        }
    }
    let t_enc = t0.elapsed().as_secs_f64();
    // decode and check
    let t1 = Instant::now();
    let (mut dec, dops) = decode_frame(&frame, &o2, new.len());
    if t.starts_with("bcj") {
        bcj(&mut dec, 0, false, t == "bcj+jcc");
    } else if !refs.is_empty() {
        let map = Map::new(add_regions(&dops));
        let refs = find_refs(old, &old_elf, &opts(t));
        let label = LABEL.with(|x| x.borrow().clone()).map(|shifts| Label { targets: Label::targets_of(old, &old_elf, &refs), shifts });
        let ctx = Ctx { old, old_elf: &old_elf, new_elf: &new_elf, refs: &refs, map: &map, label, votes: None };
        ctx.project(&mut dec, 0, &dops, 0, true);
    }
    let ok = dec == new;
    println!(
        "whole\t{t}\ttotal {}\tctrl {} diff {} extra {} hdr {}\tops {}\tdiff_s {:.1}\tencode_s {:.1}\tdecode_s {:.2}\troundtrip {}",
        frame.len() + header, s[0], s[1], s[2], header, ops.len(), t_diff, t_enc, t1.elapsed().as_secs_f64(), ok
    );
    assert!(ok);
}

fn seg(old: &[u8], new: &[u8], t: &str, zdict: bool, seg_size: usize, win_size: usize, chunk: usize) {
    let t0 = Instant::now();
    let old_elf = parse_elf(old);
    let new_elf = parse_elf(new);
    let is_bcj = t.starts_with("bcj");
    let jcc = t == "bcj+jcc";
    let is_refs = !is_bcj && t != "none";
    // Alignment for windows: relsync uses CDC anchors; here a cheap stand-in: a whole-file
    // shift estimate per segment from unique 32-byte content anchors.
    let anchors = anchor_shifts(old, new);
    let mut bcj_old = old.to_vec();
    if is_bcj {
        bcj(&mut bcj_old, 0, true, jcc);
    }
    // pass 1: per-segment windows and ops
    let mut segs = Vec::new(); // (seg_start, seg_end, win_start, ops)
    let mut s = 0;
    while s < new.len() {
        let e = (s + seg_size).min(new.len());
        let shift = median_shift(&anchors, s as u64, e as u64);
        let centre = ((s + e) / 2) as i64 - shift;
        let ws = (centre - win_size as i64 / 2).clamp(0, old.len().saturating_sub(win_size) as i64) as usize;
        let we = (ws + win_size).min(old.len());
        let window = &bcj_old[ws..we];
        let ops = if is_bcj {
            // encoder transforms each chunk independently; match the transformed segment
            let mut segb = new[s..e].to_vec();
            for c in (0..segb.len()).step_by(chunk) {
                let ce = (c + chunk).min(segb.len());
                bcj(&mut segb[c..ce], (s + c) as u64, true, jcc);
            }
            bsdiff_ops(window, &segb)
        } else {
            bsdiff_ops(window, &new[s..e])
        };
        segs.push((s, e, ws, ops));
        s = e;
    }
    let union_map = |segs: &Vec<(usize, usize, usize, Vec<Op>)>| {
        // global map = union of every segment's add regions (absolute offsets), coarsened
        let mut regs = Vec::new();
        for (s, _, ws, ops) in segs {
            for (o, l, n) in add_regions(ops) {
                regs.push((*ws as u64 + o, l, *s as u64 + n));
            }
        }
        Map::new(regs).coarse()
    };
    let chunk_pieces = |segs: &Vec<(usize, usize, usize, Vec<Op>)>| {
        let mut pieces = Vec::new();
        for (s, e, ws, ops) in segs {
            for c in (0..e - s).step_by(chunk) {
                let ce = (c + chunk).min(e - s);
                pieces.push(((s + c) as u64, (ce - c) as u64, slice_ops(ops, c as u64, ce as u64), *ws as u64));
            }
        }
        pieces
    };
    let refs = if is_refs { find_refs(old, &old_elf, &opts(t)) } else { Vec::new() };
    if is_refs && realign_mode() {
        let (map1, _) = union_map(&segs);
        let mut ctx = Ctx { old, old_elf: &old_elf, new_elf: &new_elf, refs: &refs, map: &map1, label: None, votes: None };
        make_label(&mut ctx, new, &chunk_pieces(&segs));
        let inv = inverse_label(ctx.label.as_ref().unwrap());
        let new_refs = find_refs(new, &new_elf, &opts(t));
        let o3 = labelize(old, &old_elf, &refs, &|t| t);
        let n3 = labelize(new, &new_elf, &new_refs, &|t| *inv.get(&t).unwrap_or(&t));
        let before: usize = segs.iter().map(|x| x.3.len()).sum();
        for sg in segs.iter_mut() {
            let we = (sg.2 + win_size).min(old.len());
            sg.3 = bsdiff_ops(&o3[sg.2..we], &n3[sg.0..sg.1]);
        }
        eprintln!("realign: ops {before} -> {}", segs.iter().map(|x| x.3.len()).sum::<usize>());
    }
    let t_diff = t0.elapsed().as_secs_f64();
    let (map, map_bytes) = union_map(&segs);
    MERGED.with(|m| eprintln!("merged ops: {}", m.borrow()));
    let mut ctx = Ctx { old, old_elf: &old_elf, new_elf: &new_elf, refs: &refs, map: &map, label: None, votes: None };
    let mut label_bytes = 0;
    let use_label = std::env::var("MAP").map_or(true, |m| m == "label");
    if is_refs && use_label {
        label_bytes = make_label(&mut ctx, new, &chunk_pieces(&segs));
    }
    // with a label map the region map is not needed by the decoder (label covers every target)
    let header = if is_refs { (if use_label && !resid_mode() { label_bytes } else { map_bytes + label_bytes }) + z(&new_elf.header_bytes(), 19).len() } else { 0 };
    eprintln!("region map {map_bytes} B, label {label_bytes} B");
    let (mut total, mut n_bs, mut n_z, mut chunks, mut projected, mut same) = (0usize, 0, 0, 0, 0, 0);
    let mut total_bs_only = 0usize;
    let mut ok = true;
    for (s, e, ws, ops) in &segs {
        let we = (ws + win_size).min(old.len());
        let window = &bcj_old[*ws..we];
        let raw_window = &old[*ws..we];
        let cdict = zdict.then(|| zstd::dict::EncoderDictionary::copy(raw_window, 19));
        let ddict = zdict.then(|| zstd::dict::DecoderDictionary::copy(raw_window));
        for c in (0..e - s).step_by(chunk) {
            let ce = (c + chunk).min(e - s);
            let mut data = new[s + c..s + ce].to_vec();
            let cops = slice_ops(ops, c as u64, ce as u64);
            if is_bcj {
                bcj(&mut data, (s + c) as u64, true, jcc);
            } else if is_refs {
                let (n, m) = ctx.project(&mut data, (s + c) as u64, &cops, *ws as u64, false);
                projected += n;
                same += m;
            }
            let (frame, _) = encode_frame(&cops, &data, window, 19);
            // decode this chunk alone: window + frame (+ shared header for refs)
            let (mut dec, dops) = decode_frame(&frame, window, ce - c);
            if is_bcj {
                bcj(&mut dec, (s + c) as u64, false, jcc);
            } else if is_refs {
                ctx.project(&mut dec, (s + c) as u64, &dops, *ws as u64, true);
            }
            ok &= dec == new[s + c..s + ce];
            total_bs_only += frame.len();
            let mut best = frame.len();
            let mut is_z = false;
            if let (Some(cd), Some(dd)) = (&cdict, &ddict) {
                let mut enc = zstd::bulk::Compressor::with_prepared_dictionary(cd).unwrap();
                let zf = enc.compress(&new[s + c..s + ce]).unwrap();
                if zf.len() < best {
                    let mut d = zstd::bulk::Decompressor::with_prepared_dictionary(dd).unwrap();
                    ok &= d.decompress(&zf, ce - c).unwrap() == new[s + c..s + ce];
                    best = zf.len();
                    is_z = true;
                }
            }
            if is_z { n_z += 1 } else { n_bs += 1 }
            total += best;
            chunks += 1;
        }
    }
    println!(
        "seg\t{t}\tzdict {zdict}\ttotal {}\tbsdiff-frames-only {}\tshared hdr {header}\tchunks {chunks} (bsdiff {n_bs}, zstd {n_z})\tprojected {projected} exact {same}\tdiff_s {:.1}\tencode_s {:.1}\troundtrip {ok}",
        total + header, total_bs_only + header, t_diff, t0.elapsed().as_secs_f64()
    );
    assert!(ok);
}

/// (new_pos, shift = new_pos - old_pos) of 32-byte blocks (at new offsets multiple of 256) whose
/// content occurs exactly once in old (hash lookup) — a stand-in for relsync's CDC anchors.
fn anchor_shifts(old: &[u8], new: &[u8]) -> Vec<(u64, i64)> {
    use std::collections::HashMap;
    let h = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().unwrap()) ^ u64::from_le_bytes(b[8..16].try_into().unwrap()).rotate_left(17) ^ u64::from_le_bytes(b[16..24].try_into().unwrap()).rotate_left(31) ^ u64::from_le_bytes(b[24..32].try_into().unwrap()).rotate_left(47);
    // content-defined sampling (1 in 64 positions by hash) keeps the table small (~0.5 M entries)
    let mut m: HashMap<u64, i64> = HashMap::new();
    for i in 0..old.len().saturating_sub(32) {
        let x = h(&old[i..i + 32]);
        if x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58 != 0 {
            continue;
        }
        let e = m.entry(x).or_insert(i as i64);
        if *e != i as i64 {
            *e = -1;
        }
    }
    let mut out = Vec::new();
    for i in 0..new.len().saturating_sub(32) {
        let x = h(&new[i..i + 32]);
        if x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58 != 0 {
            continue;
        }
        if let Some(&o) = m.get(&x) {
            if o >= 0 {
                out.push((i as u64, i as i64 - o));
            }
        }
    }
    out
}
fn median_shift(a: &[(u64, i64)], s: u64, e: u64) -> i64 {
    let mut v: Vec<i64> = a.iter().filter(|x| x.0 >= s && x.0 < e).map(|x| x.1).collect();
    if v.is_empty() {
        return a.iter().min_by_key(|x| x.0.abs_diff((s + e) / 2)).map_or(0, |x| x.1);
    }
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (old, new) = (read(&a[2]), read(&a[3]));
    let t = a.get(4).map_or("none", |s| s.as_str());
    match a[1].as_str() {
        "whole" => whole(&old, &new, t),
        "seg" => {
            let zdict = a.get(5).is_some_and(|s| s == "zdict");
            seg(&old, &new, t, zdict, 2 << 20, 8 << 20, 64 << 10)
        }
        "refs" => {
            let e = parse_elf(&old);
            let r = find_refs(&old, &e, &opts(t));
            println!("{} refs, rel32 {}", r.len(), r.iter().filter(|x| x.kind == Kind::Rel32).count());
        }
        _ => panic!("usage: exp whole|seg OLD NEW [none|bcj|bcj+jcc|refs|refs+sym|rel32|rip|abs64...] [zdict]"),
    }
}
