//! ELF kernels: `PT_LOAD` segments at their physical addresses, and the PVH entry from the
//! `XEN_ELFNOTE_PHYS32_ENTRY` note. Parsing is `object`'s (read-only, no allocation); this
//! module decides what is acceptable for a guest and where it may go.

use object::Endianness;
use object::elf::{
    ELFCLASS32, ELFCLASS64, EM_386, EM_X86_64, FileHeader32, FileHeader64, PT_LOAD, SHT_NOTE,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use virt::{GuestMemory, MemError};

use super::layout::{GuestRange, VmLayout};
use super::{GuestLoadError, write_zeros};

/// The note owner Xen's domain builder (and QEMU, and Janus) looks for.
pub const XEN_NOTE_NAME: &[u8] = b"Xen";
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical entry of a PVH kernel.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

const BAD_PHDRS: &str = "program headers outside the file or of the wrong size";
const BAD_SHDRS: &str = "section headers outside the file or of the wrong size";
const BAD_NOTES: &str = "note segment or section malformed";

/// What [`inspect`] learned from a kernel that is safe to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    pub class64: bool,
    /// The ELF header's entry (for Linux the 64-bit `startup_64`, not the PVH entry).
    pub elf_entry: u64,
    /// The PVH entry from the note, if there is one.
    pub pvh_entry: Option<u32>,
    /// From the lowest segment start to the highest segment end (memory size).
    pub span: GuestRange,
}

/// Validates a kernel ELF against the layout without writing anything.
pub fn inspect(data: &[u8], layout: &VmLayout) -> Result<ElfInfo, GuestLoadError> {
    match class(data)? {
        ELFCLASS64 => inspect_as::<FileHeader64<Endianness>>(data, layout, EM_X86_64),
        _ => inspect_as::<FileHeader32<Endianness>>(data, layout, EM_386),
    }
}

/// Copies the segments [`inspect`] accepted into guest memory and zeroes their bss.
pub fn load<M: GuestMemory + ?Sized>(
    mem: &M,
    data: &[u8],
    info: &ElfInfo,
) -> Result<(), GuestLoadError> {
    if info.class64 {
        load_as::<FileHeader64<Endianness>, M>(mem, data)
    } else {
        load_as::<FileHeader32<Endianness>, M>(mem, data)
    }
}

fn class(data: &[u8]) -> Result<u8, GuestLoadError> {
    const EI_CLASS: usize = 4;
    if data.len() < 16 || data[..4] != object::elf::ELFMAG {
        return Err(GuestLoadError::NotElf);
    }
    match data[EI_CLASS] {
        c @ (ELFCLASS32 | ELFCLASS64) => Ok(c),
        _ => Err(GuestLoadError::NotElf),
    }
}

fn header<F: FileHeader<Endian = Endianness>>(
    data: &[u8],
    machine: u16,
) -> Result<(&F, Endianness), GuestLoadError> {
    let hdr = F::parse(data).map_err(|_| match data.len() < core::mem::size_of::<F>() {
        true => GuestLoadError::MalformedElf("file shorter than the ELF header"),
        false => GuestLoadError::NotElf,
    })?;
    let endian = hdr.endian().map_err(|_| GuestLoadError::NotElf)?;
    let found = hdr.e_machine(endian);
    if !hdr.is_little_endian() || found != machine {
        return Err(GuestLoadError::UnsupportedElf { machine: found });
    }
    Ok((hdr, endian))
}

fn inspect_as<F: FileHeader<Endian = Endianness>>(
    data: &[u8],
    layout: &VmLayout,
    machine: u16,
) -> Result<ElfInfo, GuestLoadError> {
    let (hdr, endian) = header::<F>(data, machine)?;
    let phdrs = hdr
        .program_headers(endian, data)
        .map_err(|_| GuestLoadError::MalformedElf(BAD_PHDRS))?;
    let window = layout.kernel_window();
    let mut span: Option<GuestRange> = None;
    for (index, ph) in phdrs.iter().enumerate() {
        let Some(seg) = segment(ph, endian, data, index)? else {
            continue;
        };
        let range = seg.range;
        if !window.contains(&range) {
            let err = match range.start < window.start && range.end <= layout.ram_end() {
                true => GuestLoadError::SegmentOverlapsBootData {
                    paddr: range.start,
                    memsz: range.len(),
                },
                false => GuestLoadError::SegmentOutsideRam {
                    paddr: range.start,
                    memsz: range.len(),
                },
            };
            return Err(err);
        }
        span = Some(match span {
            None => range,
            Some(s) => GuestRange {
                start: s.start.min(range.start),
                end: s.end.max(range.end),
            },
        });
    }
    let span = span.ok_or(GuestLoadError::NoLoadableSegments)?;
    let pvh_entry = pvh_entry(hdr, endian, data, phdrs)?;
    if let Some(entry) = pvh_entry {
        let entry = u64::from(entry);
        let mut inside = false;
        for (index, ph) in phdrs.iter().enumerate() {
            if let Some(seg) = segment(ph, endian, data, index)? {
                inside |=
                    seg.range.start <= entry && entry < seg.range.start + seg.file.len() as u64;
            }
        }
        if !inside {
            return Err(GuestLoadError::PvhEntryOutsideKernel { entry });
        }
    }
    Ok(ElfInfo {
        class64: hdr.is_class_64(),
        elf_entry: hdr.e_entry(endian).into(),
        pvh_entry,
        span,
    })
}

struct Segment<'a> {
    range: GuestRange,
    file: &'a [u8],
}

/// A validated `PT_LOAD` with a non-zero memory size, or `None` for any other header.
fn segment<'a, P: ProgramHeader<Endian = Endianness>>(
    ph: &P,
    endian: Endianness,
    data: &'a [u8],
    index: usize,
) -> Result<Option<Segment<'a>>, GuestLoadError> {
    if ph.p_type(endian) != PT_LOAD {
        return Ok(None);
    }
    let memsz: u64 = ph.p_memsz(endian).into();
    if memsz == 0 {
        return Ok(None);
    }
    let file = ph
        .data(endian, data)
        .map_err(|()| GuestLoadError::SegmentTruncated { index })?;
    if file.len() as u64 > memsz {
        return Err(GuestLoadError::SegmentFileSizeTooLarge { index });
    }
    let paddr: u64 = ph.p_paddr(endian).into();
    let end = paddr
        .checked_add(memsz)
        .ok_or(GuestLoadError::SegmentOutsideRam { paddr, memsz })?;
    Ok(Some(Segment {
        range: GuestRange { start: paddr, end },
        file,
    }))
}

/// Finds the PVH entry note in `PT_NOTE` segments, then (for files whose notes are only in
/// sections) in `SHT_NOTE` sections.
fn pvh_entry<F: FileHeader<Endian = Endianness>>(
    hdr: &F,
    endian: Endianness,
    data: &[u8],
    phdrs: &[F::ProgramHeader],
) -> Result<Option<u32>, GuestLoadError> {
    let malformed = |why| move |_| GuestLoadError::MalformedElf(why);
    for ph in phdrs {
        if let Some(mut notes) = ph.notes(endian, data).map_err(malformed(BAD_NOTES))?
            && let Some(entry) = find_entry::<F>(&mut notes, endian)?
        {
            return Ok(Some(entry));
        }
    }
    let sections = hdr
        .section_headers(endian, data)
        .map_err(malformed(BAD_SHDRS))?;
    for sh in sections {
        if sh.sh_type(endian) != SHT_NOTE {
            continue;
        }
        if let Some(mut notes) = sh.notes(endian, data).map_err(malformed(BAD_NOTES))?
            && let Some(entry) = find_entry::<F>(&mut notes, endian)?
        {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

fn find_entry<F: FileHeader<Endian = Endianness>>(
    notes: &mut object::read::elf::NoteIterator<'_, F>,
    endian: Endianness,
) -> Result<Option<u32>, GuestLoadError> {
    while let Some(note) = notes
        .next()
        .map_err(|_| GuestLoadError::MalformedElf(BAD_NOTES))?
    {
        if note.name() != XEN_NOTE_NAME || note.n_type(endian) != XEN_ELFNOTE_PHYS32_ENTRY {
            continue;
        }
        // Linux emits the descriptor with _ASM_PTR, so 64-bit kernels carry 8 bytes.
        let desc = note.desc();
        let entry = if let Ok(b) = <[u8; 4]>::try_from(desc) {
            u64::from(u32::from_le_bytes(b))
        } else if let Ok(b) = <[u8; 8]>::try_from(desc) {
            u64::from_le_bytes(b)
        } else {
            return Err(GuestLoadError::BadPvhNote);
        };
        return u32::try_from(entry)
            .map(Some)
            .map_err(|_| GuestLoadError::BadPvhNote);
    }
    Ok(None)
}

fn load_as<F: FileHeader<Endian = Endianness>, M: GuestMemory + ?Sized>(
    mem: &M,
    data: &[u8],
) -> Result<(), GuestLoadError> {
    let machine = match F::is_type_64_sized() {
        true => EM_X86_64,
        false => EM_386,
    };
    let (hdr, endian) = header::<F>(data, machine)?;
    let phdrs = hdr
        .program_headers(endian, data)
        .map_err(|_| GuestLoadError::MalformedElf(BAD_PHDRS))?;
    for (index, ph) in phdrs.iter().enumerate() {
        if let Some(seg) = segment(ph, endian, data, index)? {
            write_segment(mem, &seg)?;
        }
    }
    Ok(())
}

fn write_segment<M: GuestMemory + ?Sized>(mem: &M, seg: &Segment<'_>) -> Result<(), MemError> {
    mem.write(seg.range.start, seg.file)?;
    let filesz = seg.file.len() as u64;
    write_zeros(mem, seg.range.start + filesz, seg.range.len() - filesz)
}
