//! What the reference scanner needs of an ELF64 little-endian image: the loadable segments
//! (file offset ↔ virtual address) and the sections (name, kind, flags, address, file range).
//!
//! The parser trusts nothing: every header and name must lie inside the image, and counts
//! are bounded, so a hostile or truncated file yields `None` (no projection), never a panic.

/// The section holds no file bytes (`SHT_NOBITS`, e.g. `.bss`).
pub const SHT_NOBITS: u32 = 8;
/// The section occupies memory at run time.
pub const SHF_ALLOC: u64 = 2;
/// The section holds machine code.
pub const SHF_EXECINSTR: u64 = 4;

const PT_LOAD: u32 = 1;
const EM_X86_64: u16 = 62;
const PHDR_BYTES: usize = 56;
const SHDR_BYTES: usize = 64;
/// Longest section name read; longer names are cut (they never match the names we look for).
const MAX_NAME: usize = 64;

/// A loadable segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Virtual address of its first byte.
    pub vaddr: u64,
    /// File offset of its first byte.
    pub offset: u64,
    /// Bytes present in the file.
    pub file_size: u64,
    /// Bytes in memory (at least `file_size`; the rest is zero-filled).
    pub mem_size: u64,
}

/// A section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its name, from the section-name string table (lossy UTF-8, at most 64 bytes).
    pub name: String,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_flags`.
    pub flags: u64,
    /// Virtual address.
    pub addr: u64,
    /// File offset.
    pub offset: u64,
    /// Size in bytes (in the file unless `kind` is [`SHT_NOBITS`]).
    pub size: u64,
}

impl Section {
    /// The section's file bytes as a range of the image, if it has any.
    pub fn file_range(&self) -> Option<std::ops::Range<usize>> {
        if self.kind == SHT_NOBITS {
            return None;
        }
        let start = usize::try_from(self.offset).ok()?;
        let end = start.checked_add(usize::try_from(self.size).ok()?)?;
        Some(start..end)
    }

    fn holds_address(&self, va: u64) -> bool {
        va >= self.addr && va - self.addr < self.size
    }
}

/// An x86-64 ELF64 image's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    /// Loadable segments, in header order.
    pub loads: Vec<Load>,
    /// Sections, in header order, each with its file bytes inside the image.
    pub sections: Vec<Section>,
}

/// Random access to an image's bytes: bytes in memory, or a file the caller reads in pieces
/// (a client scans its installed release without holding it in memory).
pub trait Image {
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; fails unless all of it lies inside the image.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Image for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|at| self.get(at..at.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

impl Image for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

/// `len` bytes of `image` at `offset`, if they lie inside it (and `len` is at most
/// [`MAX_TABLE`]).
fn read(image: &(impl Image + ?Sized), offset: u64, len: usize) -> Option<Vec<u8>> {
    if len > MAX_TABLE || offset.checked_add(len as u64)? > image.len() {
        return None;
    }
    let mut buf = vec![0u8; len];
    image.read_at(offset, &mut buf).ok()?;
    Some(buf)
}

/// Largest header table or name table read (65,535 section headers are 4 MiB).
const MAX_TABLE: usize = 4 << 20;

fn bytes<const N: usize>(image: &[u8], at: usize) -> Option<[u8; N]> {
    image.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u16_at(image: &[u8], at: usize) -> Option<u16> {
    bytes(image, at).map(u16::from_le_bytes)
}

fn u32_at(image: &[u8], at: usize) -> Option<u32> {
    bytes(image, at).map(u32::from_le_bytes)
}

fn u64_at(image: &[u8], at: usize) -> Option<u64> {
    bytes(image, at).map(u64::from_le_bytes)
}

/// The `count` fixed-size headers at `offset`, if they all lie inside the image.
fn table(image: &(impl Image + ?Sized), offset: u64, count: u16, entry: usize) -> Option<Vec<u8>> {
    read(image, offset, usize::from(count).checked_mul(entry)?)
}

impl Elf {
    /// Parses `image`, or `None` if it is not a well-formed little-endian x86-64 ELF64 image.
    pub fn parse(image: &(impl Image + ?Sized)) -> Option<Self> {
        let header = read(image, 0, 0x40)?;
        // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT.
        if header.get(..7)? != b"\x7fELF\x02\x01\x01" || u16_at(&header, 0x12)? != EM_X86_64 {
            return None;
        }
        let (phoff, shoff) = (u64_at(&header, 0x20)?, u64_at(&header, 0x28)?);
        let (phentsize, phnum) = (u16_at(&header, 0x36)?, u16_at(&header, 0x38)?);
        let (shentsize, shnum, shstrndx) = (
            u16_at(&header, 0x3a)?,
            u16_at(&header, 0x3c)?,
            u16_at(&header, 0x3e)?,
        );
        if (phnum > 0 && usize::from(phentsize) != PHDR_BYTES)
            || (shnum > 0 && usize::from(shentsize) != SHDR_BYTES)
        {
            return None;
        }
        let mut loads = Vec::new();
        let phdrs = table(image, phoff, phnum, PHDR_BYTES)?;
        for ph in phdrs.chunks_exact(PHDR_BYTES) {
            if u32_at(ph, 0)? != PT_LOAD {
                continue;
            }
            let load = Load {
                offset: u64_at(ph, 8)?,
                vaddr: u64_at(ph, 16)?,
                file_size: u64_at(ph, 32)?,
                mem_size: u64_at(ph, 40)?,
            };
            load.offset.checked_add(load.file_size)?;
            load.vaddr.checked_add(load.mem_size)?;
            if load.mem_size < load.file_size {
                return None;
            }
            loads.push(load);
        }
        let shdrs = table(image, shoff, shnum, SHDR_BYTES)?;
        let headers: Vec<&[u8]> = shdrs.chunks_exact(SHDR_BYTES).collect();
        let names = match headers.get(usize::from(shstrndx)) {
            Some(sh) => {
                let (at, size) = (u64_at(sh, 24)?, u64_at(sh, 32)?);
                let size = usize::try_from(size).ok()?.min(MAX_TABLE);
                read(
                    image,
                    at,
                    size.min(usize::try_from(image.len().checked_sub(at)?).ok()?),
                )?
            }
            None => Vec::new(),
        };
        let mut sections = Vec::with_capacity(headers.len());
        for sh in headers {
            let name_at = usize::try_from(u32_at(sh, 0)?).ok()?;
            let name = names.get(name_at..).unwrap_or_default();
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            let section = Section {
                name: String::from_utf8_lossy(&name[..name.len().min(MAX_NAME)]).into_owned(),
                kind: u32_at(sh, 4)?,
                flags: u64_at(sh, 8)?,
                addr: u64_at(sh, 16)?,
                offset: u64_at(sh, 24)?,
                size: u64_at(sh, 32)?,
            };
            section.addr.checked_add(section.size)?;
            if section.kind != SHT_NOBITS && section.offset.checked_add(section.size)? > image.len()
            {
                return None;
            }
            sections.push(section);
        }
        Some(Self { loads, sections })
    }

    /// The virtual address of the file byte at `offset`, if a loadable segment maps it.
    pub fn address_of(&self, offset: u64) -> Option<u64> {
        address_of(&self.loads, offset)
    }

    /// What a decoder needs to place references in this image: see [`Layout`].
    pub fn layout(&self) -> Layout {
        Layout {
            loads: self.loads.clone(),
            // A side object cannot carry 2^64 - 1 (it sends the address plus one, 0 for
            // none); no image loads anything there.
            eh_frame_hdr: self
                .section(".eh_frame_hdr")
                .map(|s| s.addr)
                .filter(|&a| a != u64::MAX),
        }
    }

    /// Whether `va` lies in a loaded segment (file bytes or zero fill), above the first page.
    pub fn in_image(&self, va: u64) -> bool {
        va >= 0x1000
            && self
                .loads
                .iter()
                .any(|l| va >= l.vaddr && va - l.vaddr < l.mem_size)
    }

    /// Whether `va` lies in a section of machine code.
    pub fn in_code(&self, va: u64) -> bool {
        self.sections
            .iter()
            .any(|s| s.flags & SHF_EXECINSTR != 0 && s.holds_address(va))
    }

    /// The first section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

fn address_of(loads: &[Load], offset: u64) -> Option<u64> {
    loads
        .iter()
        .find(|l| offset >= l.offset && offset - l.offset < l.file_size)
        .map(|l| l.vaddr + (offset - l.offset))
}

/// Where an image's bytes sit in memory: its loadable segments and the address of
/// `.eh_frame_hdr`, which is all it takes to compute a reference's target from its field. A
/// delta carries the new image's layout, since the client has only the old image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// Loadable segments, in header order.
    pub loads: Vec<Load>,
    /// Virtual address of `.eh_frame_hdr`, if the image has one.
    pub eh_frame_hdr: Option<u64>,
}

impl Layout {
    /// Most loadable segments a layout may list.
    pub const MAX_LOADS: usize = 64;

    /// The virtual address of the file byte at `offset`, if a loadable segment maps it.
    pub fn address_of(&self, offset: u64) -> Option<u64> {
        address_of(&self.loads, offset)
    }

    /// The file offset holding virtual address `va`, if a segment maps it to file bytes.
    pub fn offset_of(&self, va: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| va >= l.vaddr && va - l.vaddr < l.file_size)
            .map(|l| l.offset + (va - l.vaddr))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A section [`image_with`] adds after the others: (name, `sh_type`, `sh_flags`, file
    /// offset, size); its address is 0x400000 plus its offset.
    pub(crate) type Extra<'a> = (&'a str, u32, u64, u64, u64);

    /// A minimal image: one PT_LOAD mapping the whole file at 0x400000, sections
    /// [null, .text (exec), .bss (nobits), .shstrtab].
    pub(crate) fn image(text: &[u8]) -> Vec<u8> {
        image_with(text, &[])
    }

    /// [`image`] with the `extra` sections after the others (their bytes are not added).
    pub(crate) fn image_with(text: &[u8], extra: &[Extra<'_>]) -> Vec<u8> {
        let mut names = b"\0.text\0.bss\0.shstrtab\0".to_vec();
        let mut extra_names = Vec::new();
        for (name, ..) in extra {
            extra_names.push(names.len() as u32);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let count = 4 + extra.len();
        let text_at = 0x40 + PHDR_BYTES;
        let names_at = text_at + text.len();
        let shoff = names_at + names.len();
        let mut b = vec![0u8; shoff + count * SHDR_BYTES];
        b[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        b[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x36..0x38].copy_from_slice(&(PHDR_BYTES as u16).to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&(SHDR_BYTES as u16).to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&(count as u16).to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&3u16.to_le_bytes());
        let len = b.len() as u64;
        let ph = 0x40;
        b[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[ph + 16..ph + 24].copy_from_slice(&0x40_0000u64.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&len.to_le_bytes());
        b[ph + 40..ph + 48].copy_from_slice(&(len + 0x1000).to_le_bytes());
        b[text_at..names_at].copy_from_slice(text);
        b[names_at..shoff].copy_from_slice(&names);
        let mut section = |i: usize, name: u32, kind: u32, flags: u64, offset: usize, size: u64| {
            let at = shoff + i * SHDR_BYTES;
            b[at..at + 4].copy_from_slice(&name.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&kind.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&flags.to_le_bytes());
            let addr = 0x40_0000 + offset as u64;
            b[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes());
            b[at + 24..at + 32].copy_from_slice(&(offset as u64).to_le_bytes());
            b[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        };
        section(
            1,
            1,
            1,
            SHF_ALLOC | SHF_EXECINSTR,
            text_at,
            text.len() as u64,
        );
        section(
            2,
            7,
            SHT_NOBITS,
            SHF_ALLOC,
            shoff + count * SHDR_BYTES,
            0x800,
        );
        section(3, 12, 3, 0, names_at, names.len() as u64);
        for (i, (&(_, kind, flags, offset, size), &name)) in
            extra.iter().zip(&extra_names).enumerate()
        {
            section(4 + i, name, kind, flags, offset as usize, size);
        }
        b
    }

    #[test]
    fn a_small_image_parses_with_its_segments_and_sections() {
        let text = [0x90u8; 32];
        let b = image(&text);
        let elf = Elf::parse(&b).unwrap();
        assert_eq!(elf.loads.len(), 1);
        let names: Vec<&str> = elf.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["", ".text", ".bss", ".shstrtab"]);
        let text_section = elf.section(".text").unwrap();
        let range = text_section.file_range().unwrap();
        assert_eq!(&b[range.clone()], &text);
        let va = elf.address_of(range.start as u64).unwrap();
        assert_eq!(va, text_section.addr);
        assert!(elf.in_code(va) && elf.in_image(va));
        assert!(!elf.in_code(va + text.len() as u64));
        // .bss: in the image (zero fill), not in the file, not code.
        let bss = elf.section(".bss").unwrap();
        assert!(bss.file_range().is_none());
        assert!(elf.in_image(bss.addr) && !elf.in_code(bss.addr));
        assert_eq!(elf.address_of(b.len() as u64), None);
    }

    #[test]
    fn hostile_or_truncated_headers_are_refused_without_panicking() {
        let good = image(&[0xC3; 16]);
        // Every truncation of the image.
        for len in 0..good.len() {
            let _ = Elf::parse(&good[..len]);
        }
        assert_eq!(Elf::parse(&good[..good.len() - 1]), None);
        // Other machines and classes are not ours.
        let mut b = good.clone();
        b[0x12] = 183; // EM_AARCH64
        assert_eq!(Elf::parse(&b), None);
        let mut b = good.clone();
        b[4] = 1; // ELFCLASS32
        assert_eq!(Elf::parse(&b), None);
        // Header tables and sections pointing outside the image, or wrapping.
        for (at, value) in [
            (0x20, u64::MAX - 8),          // e_phoff
            (0x28, u64::MAX),              // e_shoff
            (0x28, good.len() as u64 - 8), // section table runs past the end
        ] {
            let mut b = good.clone();
            b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            assert_eq!(Elf::parse(&b), None, "offset {at:#x} = {value:#x}");
        }
        let shoff = u64::from_le_bytes(good[0x28..0x30].try_into().unwrap()) as usize;
        let text_header = shoff + SHDR_BYTES;
        for (field, value) in [(24, good.len() as u64), (32, u64::MAX), (16, u64::MAX)] {
            let mut b = good.clone();
            let at = text_header + field;
            b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            assert_eq!(Elf::parse(&b), None, "section field {field} = {value:#x}");
        }
        // A name offset past the string table reads as an empty name, not a panic.
        let mut b = good.clone();
        b[text_header..text_header + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Elf::parse(&b).unwrap().sections[1].name, "");
        // Every single-byte corruption of the headers: never a panic.
        for at in 0..0x40 + PHDR_BYTES {
            for value in [0x00, 0x7f, 0xff] {
                let mut b = good.clone();
                b[at] = value;
                let _ = Elf::parse(&b);
            }
        }
    }

    /// A side object cannot carry 2^64 - 1 as the address of `.eh_frame_hdr`, so a layout
    /// never holds it: the encoder and the client see the same layout.
    #[test]
    fn an_eh_frame_hdr_at_the_last_address_is_left_out_of_the_layout() {
        let last = u64::MAX - 0x40_0000;
        let b = image_with(
            &[0x90; 16],
            &[(".eh_frame_hdr", SHT_NOBITS, SHF_ALLOC, last, 0)],
        );
        let elf = Elf::parse(&b).unwrap();
        assert_eq!(elf.section(".eh_frame_hdr").unwrap().addr, u64::MAX);
        assert_eq!(elf.layout().eh_frame_hdr, None);
        let b = image_with(
            &[0x90; 16],
            &[(".eh_frame_hdr", SHT_NOBITS, SHF_ALLOC, last - 1, 0)],
        );
        assert_eq!(
            Elf::parse(&b).unwrap().layout().eh_frame_hdr,
            Some(u64::MAX - 1)
        );
    }

    /// This test binary is a real x86-64 ELF image when built for Linux on x86-64.
    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn the_running_test_binary_parses() {
        let b = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = Elf::parse(&b).unwrap();
        let text = elf.section(".text").unwrap();
        assert!(text.flags & SHF_EXECINSTR != 0 && text.size > 0);
        let range = text.file_range().unwrap();
        assert_eq!(elf.address_of(range.start as u64), Some(text.addr));
        assert!(elf.in_code(text.addr) && elf.in_image(text.addr));
        assert!(elf.loads.iter().any(|l| l.file_size > 0));
    }
}
