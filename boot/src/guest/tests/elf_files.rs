//! Minimal ELF kernels built in the test, and every way the ELF loader refuses one.

use super::*;
use crate::guest::elf;

pub const TEXT_AT: u64 = 0x10_0000;
pub const TEXT: [u8; 0x40] = [0x90; 0x40];
pub const PVH_ENTRY: u32 = 0x10_0010;
pub const DATA_AT: u64 = 0x20_0000;
pub const DATA_FILESZ: u64 = 0x10;
pub const DATA_MEMSZ: u64 = 0x1000;
pub const BSS_AT: u64 = DATA_AT + DATA_FILESZ;
pub const SPAN: GuestRange = GuestRange {
    start: TEXT_AT,
    end: DATA_AT + DATA_MEMSZ,
};

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;

#[derive(Clone)]
pub struct Seg {
    pub kind: u32,
    pub paddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
    /// Overrides p_offset / p_filesz to describe bytes the file does not have.
    pub offset: Option<u64>,
    pub filesz: Option<u64>,
}

impl Seg {
    pub fn load(paddr: u64, data: &[u8], memsz: u64) -> Seg {
        Seg {
            kind: PT_LOAD,
            paddr,
            data: data.to_vec(),
            memsz,
            offset: None,
            filesz: None,
        }
    }
}

#[derive(Clone)]
pub struct Note {
    pub name: Vec<u8>,
    pub kind: u32,
    pub desc: Vec<u8>,
}

impl Note {
    pub fn pvh(entry: u64, size: usize) -> Note {
        Note {
            name: b"Xen".to_vec(),
            kind: 18,
            desc: entry.to_le_bytes()[..size].to_vec(),
        }
    }
}

/// An ELF file description; `build` lays it out as a linker would (headers, then data).
#[derive(Clone)]
pub struct ElfSpec {
    pub class64: bool,
    pub big_endian: bool,
    pub machine: Option<u16>,
    pub segs: Vec<Seg>,
    pub notes: Vec<Note>,
    /// Put the notes in an SHT_NOTE section instead of a PT_NOTE segment.
    pub notes_in_section: bool,
    pub phentsize: Option<u16>,
    pub phoff: Option<u64>,
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn note_bytes(notes: &[Note]) -> Vec<u8> {
    let mut v = Vec::new();
    for n in notes {
        let namesz = if n.name.is_empty() {
            0
        } else {
            n.name.len() + 1
        };
        v.extend((namesz as u32).to_le_bytes());
        v.extend((n.desc.len() as u32).to_le_bytes());
        v.extend(n.kind.to_le_bytes());
        v.extend(&n.name);
        if namesz > 0 {
            v.push(0);
        }
        pad4(&mut v);
        v.extend(&n.desc);
        pad4(&mut v);
    }
    v
}

impl ElfSpec {
    pub fn new(class64: bool) -> ElfSpec {
        ElfSpec {
            class64,
            big_endian: false,
            machine: None,
            segs: vec![
                Seg::load(TEXT_AT, &TEXT, TEXT.len() as u64),
                Seg::load(DATA_AT, &b"DATA-0123456789!"[..], DATA_MEMSZ),
            ],
            notes: vec![
                Note {
                    name: b"Xen".to_vec(),
                    kind: 6,
                    desc: b"linux\0".to_vec(),
                },
                Note::pvh(PVH_ENTRY.into(), if class64 { 8 } else { 4 }),
            ],
            notes_in_section: false,
            phentsize: None,
            phoff: None,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let (ehsize, phentsize, shentsize) = if self.class64 {
            (64usize, 56usize, 64usize)
        } else {
            (52, 32, 40)
        };
        let mut segs = self.segs.clone();
        let notes = note_bytes(&self.notes);
        if !self.notes.is_empty() && !self.notes_in_section {
            segs.push(Seg {
                kind: PT_NOTE,
                paddr: 0,
                data: notes.clone(),
                memsz: notes.len() as u64,
                offset: None,
                filesz: None,
            });
        }
        let phnum = segs.len();
        let mut data_at = ehsize + phnum * phentsize;
        let mut offsets = Vec::new();
        for s in &segs {
            offsets.push(data_at);
            data_at += s.data.len();
        }
        let note_sec_at = data_at;
        if self.notes_in_section {
            data_at += notes.len();
        }
        let shoff = if self.notes_in_section { data_at } else { 0 };

        let mut f = Vec::new();
        let w16 = |f: &mut Vec<u8>, v: u16| {
            f.extend(if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            })
        };
        let w32 = |f: &mut Vec<u8>, v: u32| f.extend(v.to_le_bytes());
        let wword = |f: &mut Vec<u8>, v: u64| {
            if self.class64 {
                f.extend(v.to_le_bytes())
            } else {
                f.extend((v as u32).to_le_bytes())
            }
        };
        f.extend(b"\x7fELF");
        f.push(if self.class64 { 2 } else { 1 });
        f.push(if self.big_endian { 2 } else { 1 });
        f.push(1);
        f.extend([0u8; 9]);
        w16(&mut f, 2); // ET_EXEC
        let machine = self.machine.unwrap_or(if self.class64 { 62 } else { 3 });
        w16(&mut f, machine);
        w32(&mut f, 1);
        wword(&mut f, 0x0100_0000); // e_entry: like Linux, not the PVH entry
        wword(&mut f, self.phoff.unwrap_or(ehsize as u64));
        wword(&mut f, shoff as u64);
        w32(&mut f, 0);
        w16(&mut f, ehsize as u16);
        w16(&mut f, self.phentsize.unwrap_or(phentsize as u16));
        w16(&mut f, phnum as u16);
        w16(&mut f, shentsize as u16);
        w16(&mut f, if self.notes_in_section { 2 } else { 0 });
        w16(&mut f, 0);
        assert_eq!(f.len(), ehsize);
        for (s, off) in segs.iter().zip(&offsets) {
            let off = s.offset.unwrap_or(*off as u64);
            let filesz = s.filesz.unwrap_or(s.data.len() as u64);
            w32(&mut f, s.kind);
            if self.class64 {
                w32(&mut f, 7);
                wword(&mut f, off);
                wword(&mut f, 0xffff_ffff_8000_0000u64.wrapping_add(s.paddr));
                wword(&mut f, s.paddr);
                wword(&mut f, filesz);
                wword(&mut f, s.memsz);
                wword(&mut f, 4);
            } else {
                wword(&mut f, off);
                wword(&mut f, 0xc000_0000u64.wrapping_add(s.paddr));
                wword(&mut f, s.paddr);
                wword(&mut f, filesz);
                wword(&mut f, s.memsz);
                w32(&mut f, 7);
                wword(&mut f, 4);
            }
        }
        for s in &segs {
            f.extend(&s.data);
        }
        if self.notes_in_section {
            f.extend(&notes);
            // Section 0 is the null section; section 1 holds the notes.
            for (kind, off, size) in [(0, 0, 0), (SHT_NOTE, note_sec_at, notes.len())] {
                w32(&mut f, 0);
                w32(&mut f, kind);
                wword(&mut f, 0);
                wword(&mut f, 0);
                wword(&mut f, off as u64);
                wword(&mut f, size as u64);
                w32(&mut f, 0);
                w32(&mut f, 0);
                wword(&mut f, 4);
                wword(&mut f, 0);
            }
        }
        f
    }
}

pub fn pvh_elf64() -> Vec<u8> {
    ElfSpec::new(true).build()
}

pub fn pvh_elf32() -> Vec<u8> {
    ElfSpec::new(false).build()
}

fn inspect(file: &[u8]) -> Result<elf::ElfInfo, GuestLoadError> {
    elf::inspect(file, &VmLayout::new(64 * MIB, 1).unwrap())
}

#[test]
fn both_classes_and_both_note_places_are_found() {
    for class64 in [true, false] {
        for notes_in_section in [false, true] {
            for desc in [4, 8] {
                let mut spec = ElfSpec::new(class64);
                spec.notes_in_section = notes_in_section;
                spec.notes[1] = Note::pvh(PVH_ENTRY.into(), desc);
                let info = inspect(&spec.build()).unwrap();
                assert_eq!(info.class64, class64);
                assert_eq!(info.pvh_entry, Some(PVH_ENTRY));
                assert_eq!(info.elf_entry, 0x0100_0000);
                assert_eq!(info.span, SPAN);
            }
        }
    }
}

#[test]
fn elf32_loads_into_memory() {
    let m = mem(8);
    let file = pvh_elf32();
    let info = inspect(&file).unwrap();
    elf::load(&m, &file, &info).unwrap();
    assert_eq!(read(&m, TEXT_AT, TEXT.len()), TEXT);
    assert_eq!(read(&m, DATA_AT, 16), b"DATA-0123456789!");
}

#[test]
fn not_elf() {
    use GuestLoadError::NotElf;
    assert_eq!(inspect(b""), Err(NotElf));
    assert_eq!(inspect(&[0u8; 64]), Err(NotElf));
    assert_eq!(
        inspect(b"MZ\x90\x00 a PE file, not an ELF one...."),
        Err(NotElf)
    );
    let mut f = pvh_elf64();
    f[4] = 3; // no such class
    assert_eq!(inspect(&f), Err(NotElf));
    let mut f = pvh_elf64();
    f[6] = 9; // EI_VERSION
    assert_eq!(inspect(&f), Err(NotElf));
}

#[test]
fn malformed_elf() {
    // Header cut short.
    let f = pvh_elf64();
    assert!(matches!(
        inspect(&f[..40]),
        Err(GuestLoadError::MalformedElf(_))
    ));
    // Program headers beyond the end.
    let mut spec = ElfSpec::new(true);
    spec.phoff = Some(1 << 40);
    assert!(matches!(
        inspect(&spec.build()),
        Err(GuestLoadError::MalformedElf(_))
    ));
    // Program header size that is not the class's.
    let mut spec = ElfSpec::new(true);
    spec.phentsize = Some(32);
    assert!(matches!(
        inspect(&spec.build()),
        Err(GuestLoadError::MalformedElf(_))
    ));
    // A note whose name runs past its segment.
    let mut f = pvh_elf64();
    let notes_at = f.len() - note_bytes(&ElfSpec::new(true).notes).len();
    f[notes_at..notes_at + 4].copy_from_slice(&0x1000u32.to_le_bytes());
    assert!(matches!(inspect(&f), Err(GuestLoadError::MalformedElf(_))));
}

#[test]
fn unsupported_elf() {
    let mut spec = ElfSpec::new(true);
    spec.machine = Some(183); // aarch64
    assert_eq!(
        inspect(&spec.build()),
        Err(GuestLoadError::UnsupportedElf { machine: 183 })
    );
    // A 32-bit file must be i386, a 64-bit one x86-64.
    let mut spec = ElfSpec::new(false);
    spec.machine = Some(62);
    assert_eq!(
        inspect(&spec.build()),
        Err(GuestLoadError::UnsupportedElf { machine: 62 })
    );
    let mut spec = ElfSpec::new(true);
    spec.big_endian = true;
    spec.machine = Some(62u16.swap_bytes());
    assert!(matches!(
        inspect(&spec.build()),
        Err(GuestLoadError::UnsupportedElf { .. })
    ));
}

#[test]
fn segment_errors() {
    use GuestLoadError::*;
    let with = |f: &dyn Fn(&mut ElfSpec)| {
        let mut spec = ElfSpec::new(true);
        f(&mut spec);
        inspect(&spec.build())
    };
    assert_eq!(
        with(&|s| s.segs[1].filesz = Some(1 << 30)),
        Err(SegmentTruncated { index: 1 })
    );
    assert_eq!(
        with(&|s| s.segs[0].offset = Some(u64::MAX - 4)),
        Err(SegmentTruncated { index: 0 })
    );
    assert_eq!(
        with(&|s| s.segs[1].memsz = 4),
        Err(SegmentFileSizeTooLarge { index: 1 })
    );
    assert_eq!(
        with(&|s| s.segs[1].paddr = 64 * MIB - 0x800),
        Err(SegmentOutsideRam {
            paddr: 64 * MIB - 0x800,
            memsz: DATA_MEMSZ
        })
    );
    assert_eq!(
        with(&|s| {
            s.segs[1].paddr = u64::MAX - 0x10;
        }),
        Err(SegmentOutsideRam {
            paddr: u64::MAX - 0x10,
            memsz: DATA_MEMSZ
        })
    );
    for low in [0, layout::BOOT_INFO, layout::ACPI_START, MIB - 0x20] {
        assert_eq!(
            with(&|s| s.segs[0].paddr = low),
            Err(SegmentOverlapsBootData {
                paddr: low,
                memsz: TEXT.len() as u64
            })
        );
    }
    assert_eq!(with(&|s| s.segs.clear()), Err(NoLoadableSegments));
    // Empty PT_LOADs do not count.
    assert_eq!(
        with(&|s| s.segs = vec![Seg::load(0, &[], 0)]),
        Err(NoLoadableSegments)
    );
}

#[test]
fn pvh_note_errors() {
    use GuestLoadError::*;
    let with = |f: &dyn Fn(&mut ElfSpec)| {
        let mut spec = ElfSpec::new(true);
        f(&mut spec);
        let file = spec.build();
        load_pvh(&mem(8), &params(&file, None))
    };
    assert_eq!(with(&|s| s.notes.clear()), Err(MissingPvhNote));
    assert_eq!(with(&|s| s.notes.truncate(1)), Err(MissingPvhNote));
    assert_eq!(
        with(&|s| s.notes[1].name = b"Linux".to_vec()),
        Err(MissingPvhNote)
    );
    assert_eq!(with(&|s| s.notes[1].kind = 1), Err(MissingPvhNote));
    assert_eq!(with(&|s| s.notes[1].desc.truncate(2)), Err(BadPvhNote));
    assert_eq!(
        with(&|s| s.notes[1] = Note::pvh(1 << 32, 8)),
        Err(BadPvhNote)
    );
    assert_eq!(
        with(&|s| s.notes[1] = Note::pvh(DATA_AT + DATA_FILESZ, 8)),
        Err(PvhEntryOutsideKernel {
            entry: DATA_AT + DATA_FILESZ
        })
    );
    // The ELF entry is irrelevant; the note alone decides.
    assert!(with(&|_| {}).is_ok());
}
