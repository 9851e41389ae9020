//! The references of an x86-64 ELF image: 32-bit fields that name an address relative to
//! where they sit, in code (`call`, `jmp`, `jcc`, RIP-relative operands) and in the unwind
//! tables (`.eh_frame`, `.eh_frame_hdr`).
//!
//! The scan is a heuristic (it does not disassemble), but a deterministic one: it reads only
//! the image, so the publisher and every client find the same references in the same old
//! file. A wrong guess costs delta bytes, never correctness.

use super::elf::{Elf, Image, Layout, SHF_EXECINSTR, Section};

/// How a reference's 32-bit field encodes its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// Code: the target is the address just past the field plus the signed field.
    Rel32,
    /// `.eh_frame` PC-relative pointer: the field's own address plus the signed field.
    PcRel32,
    /// `.eh_frame_hdr` table entry: the start of `.eh_frame_hdr` plus the signed field.
    DataRel32,
    /// `.eh_frame` CIE pointer: the field's own address minus the field.
    NegRel32,
}

impl RefKind {
    /// Every kind, in the order of their codes.
    pub const ALL: [RefKind; 4] = [
        RefKind::Rel32,
        RefKind::PcRel32,
        RefKind::DataRel32,
        RefKind::NegRel32,
    ];

    /// The address a field of this kind at file offset `offset` is relative to, if `layout`
    /// maps it.
    pub fn base(self, offset: u64, layout: &Layout) -> Option<u64> {
        match self {
            RefKind::Rel32 => layout.address_of(offset.checked_add(4)?),
            RefKind::PcRel32 | RefKind::NegRel32 => layout.address_of(offset),
            RefKind::DataRel32 => layout.eh_frame_hdr,
        }
    }

    /// The target that `field` (the field's value) names, relative to `base`.
    pub fn target(self, base: u64, field: u32) -> u64 {
        let signed = i64::from(field as i32) as u64;
        match self {
            RefKind::NegRel32 => base.wrapping_sub(signed),
            _ => base.wrapping_add(signed),
        }
    }

    /// The field value that names `target` from `base` (the inverse of
    /// [`target`](Self::target) modulo 2³²).
    pub fn field_for(self, base: u64, target: u64) -> u32 {
        match self {
            RefKind::NegRel32 => base.wrapping_sub(target) as u32,
            _ => target.wrapping_sub(base) as u32,
        }
    }
}

/// A reference: a 4-byte little-endian field of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    /// File offset of the field.
    pub offset: u64,
    /// How it encodes its target.
    pub kind: RefKind,
    /// The address it names.
    pub target: u64,
}

/// One-byte opcodes with a ModRM operand and no immediate (`add`, `or`, `adc`, `sbb`, `and`,
/// `sub`, `xor`, `cmp` with a memory operand; `movsxd`, `test`, `xchg`, `mov`, `lea`).
const MODRM_NO_IMMEDIATE: [bool; 256] = byte_set(&[
    0x01, 0x03, 0x09, 0x0B, 0x11, 0x13, 0x19, 0x1B, 0x21, 0x23, 0x29, 0x2B, 0x31, 0x33, 0x39, 0x3B,
    0x63, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8D,
]);

/// Two-byte (`0F xx`) opcodes with a ModRM operand and no immediate: SSE moves and
/// arithmetic, `cmovcc`, `movzx`/`movsx`, `imul`.
const TWO_BYTE_MODRM: [bool; 256] = byte_set(&[
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x28, 0x29, 0x2A, 0x2C, 0x2D, 0x2E, 0x2F, 0x40,
    0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x4B, 0x4C, 0x4D, 0x4E, 0x4F, 0x51,
    0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F, 0x6E, 0x6F, 0x7E, 0x7F,
    0xAF, 0xB6, 0xB7, 0xBE, 0xBF, 0xD4, 0xD6, 0xDB, 0xE7, 0xEB, 0xEF, 0xFA, 0xFB, 0xFE,
]);

/// `bytes` as a table indexed by byte: the scan asks once per code byte (a slice search there
/// was a sixth of a client's CPU time on ruff).
const fn byte_set(bytes: &[u8]) -> [bool; 256] {
    let mut set = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        set[bytes[i] as usize] = true;
        i += 1;
    }
    set
}

/// ModRM with mod = 00 and r/m = 101: a RIP-relative disp32 operand.
fn rip_relative(modrm: u8) -> bool {
    modrm & 0xC7 == 0x05
}

/// Where a rel32 field starts for an instruction at `at`, and whether it is a branch (whose
/// target must be code), or `None`. Looks at most 8 bytes ahead, all inside `code`.
fn rel32_field(code: &[u8], at: usize) -> Option<(usize, bool)> {
    let b = code.get(at..at.checked_add(8)?)?;
    match b {
        [0xE8 | 0xE9, ..] => return Some((at + 1, true)),
        [0x0F, 0x80..=0x8F, ..] => return Some((at + 2, true)),
        _ => {}
    }
    let mut i = usize::from(matches!(b[0], 0x66 | 0xF2 | 0xF3));
    if (0x40..=0x4F).contains(&b[i]) {
        i += 1; // REX
    }
    let (op, next, after) = (b[i], b[i + 1], b[i + 2]);
    let field = match op {
        0x0F if TWO_BYTE_MODRM[usize::from(next)] && rip_relative(after) => i + 3,
        0xFF if matches!(next, 0x15 | 0x25 | 0x35) => i + 2, // call/jmp/push [rip+disp32]
        _ if MODRM_NO_IMMEDIATE[usize::from(op)] && rip_relative(next) => i + 2,
        _ => return None,
    };
    Some((at + field, false))
}

fn u32_at(image: &[u8], at: usize) -> Option<u32> {
    let bytes = image.get(at..at.checked_add(4)?)?;
    bytes.try_into().ok().map(u32::from_le_bytes)
}

/// Code is scanned in blocks of this many bytes, so a client never holds a whole section.
const BLOCK: usize = 1 << 20;
/// Bytes past a block's end that deciding on an instruction near it may look at.
const LOOKAHEAD: usize = 16;
/// Largest `.eh_frame` or `.eh_frame_hdr` read whole; larger ones are not scanned.
const MAX_UNWIND_SECTION: u64 = 64 << 20;

/// What the scan reads of a section.
enum Scanned {
    Code,
    EhFrameHdr,
    EhFrame,
}

/// How `section` is scanned and the file bytes it covers, if it is scanned at all.
fn scanned(section: &Section) -> Option<(Scanned, std::ops::Range<usize>)> {
    let range = section.file_range()?;
    let kind = if section.flags & SHF_EXECINSTR != 0 {
        Scanned::Code
    } else if section.name == ".eh_frame_hdr" {
        Scanned::EhFrameHdr
    } else if section.name == ".eh_frame" {
        Scanned::EhFrame
    } else {
        return None;
    };
    if !matches!(kind, Scanned::Code) && range.len() as u64 > MAX_UNWIND_SECTION {
        return None;
    }
    Some((kind, range))
}

/// The references of `image` (laid out as `elf`), by offset, not overlapping; `None` if
/// there are more than `max` of them, or if the sections to scan add up to more bytes than
/// the image has (they overlap, which no linker does: reading the same bytes once per
/// section header would make the work grow with the square of the image).
///
/// The scan stops as soon as it has found more than `max`, so it never holds more than
/// `max + 1` references however many the image has. (It counts before dropping the
/// overlapping references that overlapping sections find; a linked image has none.)
pub fn scan(image: &(impl Image + ?Sized), elf: &Elf, max: usize) -> Option<Vec<Reference>> {
    let mut scanned_bytes = 0u64;
    for (_, range) in elf.sections.iter().filter_map(scanned) {
        scanned_bytes = scanned_bytes.saturating_add(range.len() as u64);
    }
    if scanned_bytes > image.len() {
        return None;
    }
    let layout = elf.layout();
    let mut refs = Vec::new();
    for (section, (kind, range)) in elf.sections.iter().filter_map(|s| Some((s, scanned(s)?))) {
        let start = range.start;
        match kind {
            Scanned::Code => scan_code(image, range, elf, &layout, max, &mut refs),
            Scanned::EhFrameHdr | Scanned::EhFrame => {
                let Some(bytes) = read_section(image, &range) else {
                    continue;
                };
                if matches!(kind, Scanned::EhFrameHdr) {
                    scan_eh_frame_hdr(&bytes, start, section.addr, max, &mut refs);
                } else {
                    scan_eh_frame(&bytes, start, elf, &layout, max, &mut refs);
                }
            }
        }
        if refs.len() > max {
            return None;
        }
    }
    refs.sort_by_key(|r| r.offset);
    refs.dedup_by(|later, earlier| later.offset < earlier.offset + 4);
    Some(refs)
}

/// The bytes of an unwind section (at most [`MAX_UNWIND_SECTION`], which [`scanned`]
/// checked), read whole.
fn read_section(image: &(impl Image + ?Sized), range: &std::ops::Range<usize>) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; range.len()];
    image.read_at(range.start as u64, &mut bytes).ok()?;
    Some(bytes)
}

/// References in the code section at `range`, read a block at a time. The greedy scan
/// carries its position across blocks, so the result equals a scan of the whole section.
fn scan_code(
    image: &(impl Image + ?Sized),
    range: std::ops::Range<usize>,
    elf: &Elf,
    layout: &Layout,
    max: usize,
    refs: &mut Vec<Reference>,
) {
    let mut block = Vec::new();
    let mut at = 0; // relative to the section
    let section_len = range.len();
    while at < section_len && refs.len() <= max {
        let block_start = at;
        let block_end = (block_start + BLOCK).min(section_len);
        let read_end = (block_end + LOOKAHEAD).min(section_len);
        block.resize(read_end - block_start, 0);
        if image
            .read_at((range.start + block_start) as u64, &mut block)
            .is_err()
        {
            return;
        }
        // The last block of the section is the section's end; others look a little past.
        let code = &block[..];
        while at < block_end {
            let local = at - block_start;
            if let Some((field, branch)) = rel32_field(code, local)
                && field + 4 <= code.len()
                && let Some(value) = u32_at(code, field)
            {
                let offset = (range.start + block_start + field) as u64;
                if let Some(base) = RefKind::Rel32.base(offset, layout) {
                    let target = RefKind::Rel32.target(base, value);
                    let reference = Reference {
                        offset,
                        kind: RefKind::Rel32,
                        target,
                    };
                    let plausible = if branch {
                        elf.in_code(target)
                    } else {
                        elf.in_image(target)
                    };
                    if plausible {
                        refs.push(reference);
                        at = block_start + field + 4;
                        continue;
                    }
                }
            }
            at += 1;
        }
    }
}

/// The binary-search table of `.eh_frame_hdr` (version 1, table encoding datarel sdata4).
fn scan_eh_frame_hdr(hdr: &[u8], start: usize, addr: u64, max: usize, refs: &mut Vec<Reference>) {
    const DATAREL_SDATA4: u8 = 0x3B;
    const UDATA4: u8 = 0x03;
    if hdr.len() < 12 || hdr[0] != 1 || hdr[2] != UDATA4 || hdr[3] != DATAREL_SDATA4 {
        return;
    }
    let Some(count) = u32_at(hdr, 8) else {
        return;
    };
    let fits = (hdr.len() - 12) / 8;
    for i in 0..(count as usize).min(fits) {
        if refs.len() > max {
            return;
        }
        for field in [12 + 8 * i, 16 + 8 * i] {
            let Some(value) = u32_at(hdr, field) else {
                continue;
            };
            refs.push(Reference {
                offset: (start + field) as u64,
                kind: RefKind::DataRel32,
                target: RefKind::DataRel32.target(addr, value),
            });
        }
    }
}

/// The CIE pointer, the initial location and (for a 4-byte augmentation) the LSDA pointer of
/// each FDE in `.eh_frame`.
fn scan_eh_frame(
    frames: &[u8],
    start: usize,
    elf: &Elf,
    layout: &Layout,
    max: usize,
    refs: &mut Vec<Reference>,
) {
    let field = |at: usize, kind: RefKind| {
        let offset = (start + at) as u64;
        let target = kind.target(kind.base(offset, layout)?, u32_at(frames, at)?);
        Some((
            Reference {
                offset,
                kind,
                target,
            },
            target,
        ))
    };
    let mut at = 0;
    while let Some(len) = u32_at(frames, at)
        && refs.len() <= max
    {
        let len = len as usize;
        let Some(end) = (at + 4).checked_add(len) else {
            break;
        };
        if len == 0 || len == 0xFFFF_FFFF || end > frames.len() {
            break;
        }
        let is_fde = u32_at(frames, at + 4).is_some_and(|cie| cie != 0);
        if is_fde && len >= 12 {
            if let Some((cie, _)) = field(at + 4, RefKind::NegRel32) {
                refs.push(cie);
            }
            if let Some((pc, target)) = field(at + 8, RefKind::PcRel32)
                && elf.in_code(target)
            {
                refs.push(pc);
            }
            if len >= 21
                && frames[at + 16] == 4
                && let Some((lsda, target)) = field(at + 17, RefKind::PcRel32)
                && elf.in_image(target)
            {
                refs.push(lsda);
            }
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::super::elf::tests::{image, image_with};
    use super::super::elf::{SHF_ALLOC, SHT_NOBITS};
    use super::*;

    /// `data`, then zeros up to `len` bytes; remembers the largest read and the bytes read.
    struct Sparse<'a> {
        data: &'a [u8],
        len: u64,
        largest: Cell<usize>,
        total: Cell<u64>,
    }

    impl<'a> Sparse<'a> {
        fn new(data: &'a [u8], len: u64) -> Self {
            Self {
                data,
                len,
                largest: Cell::new(0),
                total: Cell::new(0),
            }
        }
    }

    impl Image for Sparse<'_> {
        fn len(&self) -> u64 {
            self.len
        }

        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            if offset + buf.len() as u64 > self.len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.largest.set(self.largest.get().max(buf.len()));
            self.total.set(self.total.get() + buf.len() as u64);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = usize::try_from(offset)
                    .ok()
                    .and_then(|at| self.data.get(at + i))
                    .copied()
                    .unwrap_or(0);
            }
            Ok(())
        }
    }

    /// `n` calls, each to the next instruction, then a `ret` and padding (the scan looks 8
    /// bytes ahead).
    fn calls(n: usize) -> Vec<u8> {
        let mut text: Vec<u8> = std::iter::repeat_n([0xE8, 0, 0, 0, 0], n)
            .flatten()
            .collect();
        text.push(0xC3);
        text.extend([0xCC; 7]);
        text
    }

    #[test]
    fn a_scan_past_its_limit_is_refused_and_stops_reading() {
        let b = image(&calls(100));
        let elf = Elf::parse(&b).unwrap();
        assert_eq!(scan(&b, &elf, 100).unwrap().len(), 100);
        assert_eq!(scan(&b, &elf, 99), None);
        // 3 MiB of calls: a limit of 10 stops the scan in its first block.
        let big = image(&calls((3 << 20) / 5));
        let image = Sparse::new(&big, big.len() as u64);
        let elf = Elf::parse(&image).unwrap();
        let before = image.total.get();
        assert_eq!(scan(&image, &elf, 10), None);
        assert!(
            image.total.get() - before <= (BLOCK + LOOKAHEAD) as u64,
            "read {} bytes",
            image.total.get() - before
        );
    }

    #[test]
    fn unwind_sections_over_64_mib_are_never_read() {
        // .eh_frame and .eh_frame_hdr of 64 MiB + 1 past the real bytes (zeros to 1 GiB).
        let over = MAX_UNWIND_SECTION + 1;
        let text = calls(4);
        let b = image_with(
            &text,
            &[
                (".eh_frame", 1, SHF_ALLOC, 64 << 20, over),
                (".eh_frame_hdr", 1, SHF_ALLOC, 256 << 20, over),
            ],
        );
        let image = Sparse::new(&b, 1 << 30);
        let elf = Elf::parse(&image).unwrap();
        assert_eq!(elf.sections.len(), 6);
        let refs = scan(&image, &elf, usize::MAX).unwrap();
        assert_eq!(refs.len(), 4, "the code is still scanned");
        assert!(
            image.largest.get() <= 4 << 20,
            "a read of {} bytes",
            image.largest.get()
        );
    }

    #[test]
    fn overlapping_sections_are_refused_before_they_are_read() {
        // 64 headers naming the same code: scanning each would read it 64 times.
        let text = calls(1000);
        let at = (0x40 + 56) as u64;
        let copies: Vec<_> = (0..64)
            .map(|_| (".text", 1, SHF_ALLOC | SHF_EXECINSTR, at, text.len() as u64))
            .collect();
        let b = image_with(&text, &copies);
        let image = Sparse::new(&b, b.len() as u64);
        let elf = Elf::parse(&image).unwrap();
        let before = image.total.get();
        assert_eq!(scan(&image, &elf, usize::MAX), None);
        assert_eq!(image.total.get(), before, "nothing read");
        // Sections without file bytes, and ones not scanned, do not count.
        let bss: Vec<_> = (0..64)
            .map(|_| (".bss", SHT_NOBITS, SHF_ALLOC | SHF_EXECINSTR, 0, 1 << 40))
            .chain((0..64).map(|_| (".rodata", 1, SHF_ALLOC, 0, text.len() as u64)))
            .collect();
        let b = image_with(&text, &bss);
        let elf = Elf::parse(&b).unwrap();
        assert_eq!(scan(&b, &elf, usize::MAX).unwrap().len(), 1000);
    }

    /// `.text` of the test image starts at this file offset (see `elf::tests::image`).
    const TEXT_AT: usize = 0x40 + 56;

    #[test]
    fn calls_jumps_and_rip_relative_operands_inside_the_image_are_found() {
        // call +0 (to the next instruction), jne -6, lea rax,[rip+0], then nops, then a call
        // whose target lies far outside the image (not a reference), then nops.
        let mut text = vec![0xE8, 0, 0, 0, 0];
        text.extend([0x0F, 0x85, 0xFA, 0xFF, 0xFF, 0xFF]);
        text.extend([0x48, 0x8D, 0x05, 0, 0, 0, 0]);
        text.extend([0x90; 8]);
        text.extend([0xE8, 0, 0, 0, 0x40]);
        text.extend([0x90; 16]);
        let b = image(&text);
        let elf = Elf::parse(&b).unwrap();
        let refs = scan(&b, &elf, usize::MAX).unwrap();
        let offsets: Vec<u64> = refs.iter().map(|r| r.offset - TEXT_AT as u64).collect();
        assert_eq!(offsets, [1, 7, 14]);
        let text_va = elf.section(".text").unwrap().addr;
        let layout = elf.layout();
        let base = |r: &Reference| r.kind.base(r.offset, &layout).unwrap();
        for r in &refs {
            let at = r.offset as usize;
            let field = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let target = r.kind.target(base(r), field);
            assert!(elf.in_image(target));
            assert_eq!(r.kind.field_for(base(r), target), field);
        }
        assert_eq!(RefKind::Rel32.target(base(&refs[0]), 0), text_va + 5);
        assert_eq!(
            RefKind::Rel32.target(base(&refs[1]), 0xFFFF_FFFA),
            text_va + 5
        );
    }

    #[test]
    fn scanning_never_reads_outside_a_section_or_overlaps() {
        // A section ending inside an instruction, and every byte value as an opcode.
        let mut text: Vec<u8> = (0..=255u8)
            .flat_map(|op| [op, 0x05, 0, 0, 0, 0, 0xE8])
            .collect();
        text.extend([0xE8, 0, 0]);
        let b = image(&text);
        let elf = Elf::parse(&b).unwrap();
        let refs = scan(&b, &elf, usize::MAX).unwrap();
        let text_range = elf.section(".text").unwrap().file_range().unwrap();
        for pair in refs.windows(2) {
            assert!(pair[0].offset + 4 <= pair[1].offset);
        }
        for r in &refs {
            assert!(text_range.contains(&(r.offset as usize)));
            assert!(r.offset as usize + 4 <= text_range.end);
        }
    }
}
