//! A synthetic x86-64 ELF executable in two versions, as a recompile changes one: version 2
//! inserts code in the middle of `.text` and edits a few functions, so every call that
//! crosses the insertion and every RIP-relative operand before it changes its bytes.

const FUNCTIONS: usize = 60_000;
const FUNCTION_BYTES: usize = 48;
const INSERTED_BYTES: usize = 80;
const RODATA_BYTES: usize = 64 * 1024;
const BASE: u64 = 0x40_0000;
const TEXT_AT: usize = 0x1000;
const SHDR_BYTES: usize = 64;

/// Version `version` (1 or 2) of the executable, about 3 MB.
pub fn executable(version: u32) -> Vec<u8> {
    let inserted = if version >= 2 { INSERTED_BYTES } else { 0 };
    let at = FUNCTIONS / 2;
    let text_len = FUNCTIONS * FUNCTION_BYTES + inserted;
    let rodata_at = TEXT_AT + text_len.next_multiple_of(16);
    let start = |f: usize| TEXT_AT + f * FUNCTION_BYTES + if f > at { inserted } else { 0 };
    let mut image = vec![0u8; rodata_at + RODATA_BYTES];
    for f in 0..FUNCTIONS {
        let mut body = vec![0x55u8, 0x48, 0x89, 0xE5];
        for callee in [mix(f as u64, 1) as usize, mix(f as u64, 2) as usize] {
            let callee = callee % FUNCTIONS;
            let field_end = start(f) + body.len() + 5;
            body.push(0xE8);
            body.extend(((start(callee) as i64 - field_end as i64) as i32).to_le_bytes());
        }
        // lea rax, [rip + disp32] into .rodata
        let data = rodata_at + (mix(f as u64, 3) as usize % RODATA_BYTES);
        let field_end = start(f) + body.len() + 7;
        body.extend([0x48, 0x8D, 0x05]);
        body.extend(((data as i64 - field_end as i64) as i32).to_le_bytes());
        // mov eax, imm32: a constant, edited in a few functions by version 2.
        let edited = version >= 2 && f % 997 == 0;
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
    let names = b"\0.text\0.rodata\0.shstrtab\0";
    let names_at = image.len();
    image.extend_from_slice(names);
    let shoff = image.len().next_multiple_of(8);
    image.resize(shoff + 4 * SHDR_BYTES, 0);
    header(&mut image, shoff);
    let mut section = |i: usize, name: u32, kind: u32, flags: u64, offset: usize, size: usize| {
        let at = shoff + i * SHDR_BYTES;
        let addr = if flags & 2 != 0 {
            BASE + offset as u64
        } else {
            0
        };
        image[at..at + 4].copy_from_slice(&name.to_le_bytes());
        image[at + 4..at + 8].copy_from_slice(&kind.to_le_bytes());
        image[at + 8..at + 16].copy_from_slice(&flags.to_le_bytes());
        image[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes());
        image[at + 24..at + 32].copy_from_slice(&(offset as u64).to_le_bytes());
        image[at + 32..at + 40].copy_from_slice(&(size as u64).to_le_bytes());
    };
    section(1, 1, 1, 2 | 4, TEXT_AT, text_len);
    section(2, 7, 1, 2, rodata_at, RODATA_BYTES);
    section(3, 15, 3, 0, names_at, names.len());
    image
}

/// The ELF header and one PT_LOAD mapping the whole file at `BASE`.
fn header(image: &mut [u8], shoff: usize) {
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
    image[0x3c..0x3e].copy_from_slice(&4u16.to_le_bytes());
    image[0x3e..0x40].copy_from_slice(&3u16.to_le_bytes());
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
