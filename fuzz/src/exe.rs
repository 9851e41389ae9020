//! A small synthetic x86-64 ELF executable in two versions, and the reference projection
//! between them, for the `refs` target and its seeds.
//!
//! Version 2 inserts code in the middle of `.text`, so calls across the insertion, the
//! RIP-relative operands into `.rodata` and the unwind tables all change their bytes: every
//! kind of reference the scanner finds (rel32 branches, RIP-relative operands, `.eh_frame`
//! CIE, PC and LSDA pointers, the `.eh_frame_hdr` table) is in it.
//!
//! [`Fixture`] holds what a client holds for one update of it: the scan of the old image,
//! the decoded side object, and projected bsdiff frames of chunks of the new image, each
//! against a window of the old one.

use std::sync::OnceLock;

use relsync_chunker::frame::refs::elf::Elf;
use relsync_chunker::frame::refs::x86_64::{self, RefKind};
use relsync_chunker::frame::refs::{OldRefs, Projection, Votes, encode_side};
use relsync_chunker::frame::{self, BsdiffOp, DiffStream, WindowEncoder};

const FUNCTIONS: usize = 256;
const FUNCTION_BYTES: usize = 48;
/// Bytes of code version 2 inserts after function [`FUNCTIONS`] / 2.
pub const INSERTED_BYTES: usize = 80;
const RODATA_BYTES: usize = 2048;
const BASE: u64 = 0x40_0000;
const TEXT_AT: usize = 0x200;
const SHDR_BYTES: usize = 64;
/// Functions per `.eh_frame` FDE.
const FDE_FUNCTIONS: usize = 16;

/// Version `version` (1 or 2) of the executable, about 17 KB.
pub fn executable(version: u32) -> Vec<u8> {
    let inserted = if version >= 2 { INSERTED_BYTES } else { 0 };
    let at = FUNCTIONS / 2;
    let text_len = FUNCTIONS * FUNCTION_BYTES + inserted;
    let rodata_at = TEXT_AT + text_len.next_multiple_of(16);
    let start = |f: usize| TEXT_AT + f * FUNCTION_BYTES + if f > at { inserted } else { 0 };
    let mut image = vec![0u8; rodata_at + RODATA_BYTES];
    for f in 0..FUNCTIONS {
        let mut body = vec![0x55u8, 0x48, 0x89, 0xE5];
        for salt in [1, 2] {
            let callee = mix(f as u64, salt) as usize % FUNCTIONS;
            let field_end = start(f) + body.len() + 5;
            body.push(0xE8);
            body.extend(((start(callee) as i64 - field_end as i64) as i32).to_le_bytes());
        }
        // lea rax, [rip + disp32] into .rodata
        let data = rodata_at + (mix(f as u64, 3) as usize % RODATA_BYTES);
        let field_end = start(f) + body.len() + 7;
        body.extend([0x48, 0x8D, 0x05]);
        body.extend(((data as i64 - field_end as i64) as i32).to_le_bytes());
        // mov eax, imm32: a constant that version 2 edits in a few functions.
        let edited = version >= 2 && f % 37 == 0;
        body.push(0xB8);
        body.extend((mix(f as u64, 4) as u32 ^ u32::from(edited)).to_le_bytes());
        body.resize(FUNCTION_BYTES - 1, 0x90);
        body.push(0xC3);
        image[start(f)..start(f) + FUNCTION_BYTES].copy_from_slice(&body);
        if f == at && inserted > 0 {
            let end = start(f) + FUNCTION_BYTES;
            image[end..end + inserted].fill(0xCC);
        }
    }
    for (i, b) in image[rodata_at..].iter_mut().enumerate() {
        *b = mix(i as u64 / 8, 5) as u8;
    }
    let va = |offset: usize| BASE + offset as u64;

    // .eh_frame: one CIE, then an FDE per FDE_FUNCTIONS functions; every fourth FDE has an
    // LSDA pointer into .rodata.
    let eh_frame_at = image.len();
    let cie = [
        16, 0, 0, 0, // length
        0, 0, 0, 0, // CIE id
        1, b'z', b'R', 0, // version, augmentation "zR"
        1, 0x78, 16, // code alignment 1, data alignment -8, return address register 16
        1, 0x1B, // augmentation data: FDE pointers pcrel sdata4
        0, 0, 0, // DW_CFA_nop
    ];
    image.extend_from_slice(&cie);
    let mut table = Vec::new();
    for (i, f) in (0..FUNCTIONS).step_by(FDE_FUNCTIONS).enumerate() {
        let fde = image.len();
        let lsda = i % 4 == 3;
        let len: u32 = if lsda { 24 } else { 16 };
        let cie_pointer = (fde + 4 - eh_frame_at) as u32;
        let pc = (start(f) as i64 - (fde + 8) as i64) as i32;
        let range = (start(f + FDE_FUNCTIONS) - start(f)) as u32;
        image.extend(len.to_le_bytes());
        image.extend(cie_pointer.to_le_bytes());
        image.extend(pc.to_le_bytes());
        image.extend(range.to_le_bytes());
        if lsda {
            let target = rodata_at + (mix(f as u64, 6) as usize % RODATA_BYTES);
            image.push(4);
            image.extend(((target as i64 - (fde + 17) as i64) as i32).to_le_bytes());
            image.extend([0; 3]);
        } else {
            image.extend([0; 4]);
        }
        table.push((start(f), fde));
    }
    image.extend([0; 4]); // terminator
    let eh_frame_len = image.len() - eh_frame_at;

    // .eh_frame_hdr: version 1, eh_frame_ptr pcrel sdata4, count udata4, table datarel sdata4.
    let hdr_at = image.len().next_multiple_of(4);
    image.resize(hdr_at, 0);
    image.extend([1, 0x1B, 0x03, 0x3B]);
    image.extend(((eh_frame_at as i64 - (hdr_at + 4) as i64) as i32).to_le_bytes());
    image.extend((table.len() as u32).to_le_bytes());
    for (pc, fde) in table {
        image.extend(((pc as i64 - hdr_at as i64) as i32).to_le_bytes());
        image.extend(((fde as i64 - hdr_at as i64) as i32).to_le_bytes());
    }
    let hdr_len = image.len() - hdr_at;

    let names = b"\0.text\0.rodata\0.eh_frame\0.eh_frame_hdr\0.shstrtab\0";
    let names_at = image.len();
    image.extend_from_slice(names);
    let shoff = image.len().next_multiple_of(8);
    image.resize(shoff + 6 * SHDR_BYTES, 0);
    header(&mut image, shoff, 6, 5);
    let mut section = |i: usize, name: u32, kind: u32, flags: u64, offset: usize, size: usize| {
        let at = shoff + i * SHDR_BYTES;
        let addr = if flags & 2 != 0 { va(offset) } else { 0 };
        image[at..at + 4].copy_from_slice(&name.to_le_bytes());
        image[at + 4..at + 8].copy_from_slice(&kind.to_le_bytes());
        image[at + 8..at + 16].copy_from_slice(&flags.to_le_bytes());
        image[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes());
        image[at + 24..at + 32].copy_from_slice(&(offset as u64).to_le_bytes());
        image[at + 32..at + 40].copy_from_slice(&(size as u64).to_le_bytes());
    };
    section(1, 1, 1, 2 | 4, TEXT_AT, text_len);
    section(2, 7, 1, 2, rodata_at, RODATA_BYTES);
    section(3, 15, 1, 2, eh_frame_at, eh_frame_len);
    section(4, 25, 1, 2, hdr_at, hdr_len);
    section(5, 39, 3, 0, names_at, names.len());
    image
}

/// The ELF header and one PT_LOAD mapping the whole file at `BASE`.
fn header(image: &mut [u8], shoff: usize, shnum: u16, shstrndx: u16) {
    let len = image.len() as u64;
    image[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    image[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    image[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    image[0x18..0x20].copy_from_slice(&(BASE + TEXT_AT as u64).to_le_bytes());
    image[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
    image[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    image[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    image[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    image[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    image[0x3a..0x3c].copy_from_slice(&(SHDR_BYTES as u16).to_le_bytes());
    image[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
    image[0x3e..0x40].copy_from_slice(&shstrndx.to_le_bytes());
    let ph = 0x40;
    image[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    image[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    image[ph + 16..ph + 24].copy_from_slice(&BASE.to_le_bytes());
    image[ph + 24..ph + 32].copy_from_slice(&BASE.to_le_bytes());
    image[ph + 32..ph + 40].copy_from_slice(&len.to_le_bytes());
    image[ph + 40..ph + 48].copy_from_slice(&len.to_le_bytes());
}

fn mix(x: u64, salt: u64) -> u64 {
    let mut z = x
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z ^= z >> 31;
    z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 29)
}

/// The instructions a good matcher finds for version 2 against version 1: the code before
/// the insertion, the inserted bytes as literals, everything after.
pub fn ops(old: &[u8], new: &[u8]) -> Vec<BsdiffOp> {
    let split = (TEXT_AT + (FUNCTIONS / 2 + 1) * FUNCTION_BYTES) as u64;
    let inserted = (new.len() - old.len()) as u64;
    vec![
        BsdiffOp {
            src: 0,
            add: split,
            copy: inserted,
        },
        BsdiffOp {
            src: split,
            add: old.len() as u64 - split,
            copy: 0,
        },
    ]
}

/// One projected chunk of the new image.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Its offset in the new image.
    pub at: u64,
    /// Its bytes.
    pub data: Vec<u8>,
    /// Where its window starts in the old image.
    pub window_at: u64,
    /// The window's length.
    pub window_len: u64,
    /// Its bsdiff instructions, `src` relative to the window.
    pub ops: Vec<BsdiffOp>,
    /// Its projected bsdiff frame.
    pub frame: Vec<u8>,
}

/// An update of the executable from version 1 to 2, as a client holds it.
#[derive(Debug)]
pub struct Fixture {
    /// Version 1: the installed base file.
    pub old: Vec<u8>,
    /// Version 2.
    pub new: Vec<u8>,
    /// The client's scan of `old`.
    pub old_refs: OldRefs,
    /// The side object (reference map frame) the publisher made.
    pub side: Vec<u8>,
    /// The side object decoded (uncompressed).
    pub side_raw: Vec<u8>,
    /// The side object decoded against `old_refs`.
    pub projection: Projection,
    /// The new image in chunks of 2 KiB, each with its frame.
    pub chunks: Vec<Chunk>,
}

/// Chunk size of the fixture's frames.
const CHUNK: u64 = 2048;
/// Old bytes around a chunk's matched source that its window holds.
const MARGIN: u64 = 512;

impl Fixture {
    fn build() -> Self {
        let old = executable(1);
        let new = executable(2);
        let ops = ops(&old, &new);
        let old_refs = OldRefs::scan(&old).expect("the old image scans");
        let elf = Elf::parse(&old).expect("the old image parses");
        let kinds: Vec<RefKind> = x86_64::scan(&old, &elf, usize::MAX)
            .expect("the old image scans")
            .iter()
            .map(|r| r.kind)
            .collect();
        for kind in RefKind::ALL {
            assert!(kinds.contains(&kind), "no {kind:?} reference in the image");
        }
        let layout = Elf::parse(&new).expect("the new image parses").layout();
        let mut votes = Votes::new(&old_refs, &layout);
        votes.add(&old, 0, &ops, &new, 0);
        let side = encode_side(&layout, &votes.labels(), 3).expect("encoding the side object");
        let side_raw = frame::decompress_declared(&side, 1 << 20).expect("decoding it");
        let projection =
            Projection::decode(old_refs.clone(), &side).expect("the side object decodes");
        let mut chunks = Vec::new();
        let mut at = 0u64;
        while at < new.len() as u64 {
            let end = (at + CHUNK).min(new.len() as u64);
            let sliced = frame::slice_ops(&ops, at, end);
            let adds = sliced.iter().filter(|op| op.add > 0);
            let low = adds.clone().map(|op| op.src).min().unwrap_or(0);
            let high = adds.map(|op| op.src + op.add).max().unwrap_or(0);
            let window_at = low.saturating_sub(MARGIN);
            let window_end = (high + MARGIN).min(old.len() as u64).max(window_at + 1);
            let window = &old[window_at as usize..window_end as usize];
            let ops: Vec<BsdiffOp> = sliced
                .iter()
                .map(|op| BsdiffOp {
                    // An instruction that adds nothing reads nothing.
                    src: if op.add > 0 { op.src - window_at } else { 0 },
                    ..*op
                })
                .collect();
            let data = new[at as usize..end as usize].to_vec();
            let mut projected = data.clone();
            projection.project(window, window_at, &ops, &mut projected, at);
            let frame = WindowEncoder::new(window, 3)
                .expect("a window")
                .compress_bsdiff_as(&projected, &ops, DiffStream::Sparse)
                .expect("encoding a projected frame")
                .expect("instructions within the control limit");
            chunks.push(Chunk {
                at,
                data,
                window_at,
                window_len: window_end - window_at,
                ops,
                frame,
            });
            at = end;
        }
        Self {
            old,
            new,
            old_refs,
            side,
            side_raw,
            projection,
            chunks,
        }
    }

    /// The old image's bytes in `window_at..window_at + window_len`.
    pub fn window(&self, chunk: &Chunk) -> &[u8] {
        &self.old[chunk.window_at as usize..(chunk.window_at + chunk.window_len) as usize]
    }
}

/// The fixture, built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::build)
}
