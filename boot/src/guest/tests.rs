//! Host tests for the guest loaders. Every input file is built here, byte by byte.

use virt::{GuestMemory, MemError, VecMemory};

use super::layout::{self, GuestRange, MemType, VmLayout};
use super::*;

mod acpi_tables;
mod bzimage;
mod elf_files;
mod real_kernel;

const MIB: u64 = 1 << 20;

fn mem(mib: u64) -> VecMemory {
    VecMemory::new((mib * MIB) as usize)
}

fn read(mem: &impl GuestMemory, gpa: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    mem.read(gpa, &mut v).unwrap();
    v
}

fn read_u16(mem: &impl GuestMemory, gpa: u64) -> u16 {
    mem.read_u16(gpa).unwrap()
}

fn read_u32(mem: &impl GuestMemory, gpa: u64) -> u32 {
    mem.read_u32(gpa).unwrap()
}

fn read_u64(mem: &impl GuestMemory, gpa: u64) -> u64 {
    mem.read_u64(gpa).unwrap()
}

fn params<'a>(kernel: &'a [u8], initrd: Option<&'a [u8]>) -> GuestParams<'a> {
    GuestParams {
        vcpus: 2,
        cmdline: b"console=hvc0 rdinit=/init",
        kernel,
        initrd,
        acpi: AcpiOptions::default(),
    }
}

/// Memory that claims more RAM than it has, so writes past the real end fail.
struct LyingMemory {
    inner: VecMemory,
    claimed: u64,
}

impl GuestMemory for LyingMemory {
    fn size(&self) -> u64 {
        self.claimed
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.inner.write(gpa, data)
    }
}

/// A size-only memory for shapes too large to back.
struct HugeMemory(u64);

impl GuestMemory for HugeMemory {
    fn size(&self) -> u64 {
        self.0
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        Err(MemError {
            gpa,
            len: buf.len(),
        })
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        Err(MemError {
            gpa,
            len: data.len(),
        })
    }
}

#[test]
fn layout_rejects_bad_shapes() {
    use GuestLoadError::*;
    assert_eq!(
        VmLayout::new(MIB, 1),
        Err(RamTooSmall {
            size: MIB,
            min: layout::MIN_RAM
        })
    );
    assert_eq!(
        VmLayout::new(4 << 30, 1),
        Err(RamTooLarge {
            size: 4 << 30,
            max: layout::MAX_RAM
        })
    );
    assert_eq!(
        VmLayout::new(8 * MIB + 100, 1),
        Err(RamNotPageAligned {
            size: 8 * MIB + 100
        })
    );
    let max = layout::MAX_VCPUS;
    assert_eq!(VmLayout::new(8 * MIB, 0), Err(VcpuCount { vcpus: 0, max }));
    assert_eq!(
        VmLayout::new(8 * MIB, max + 1),
        Err(VcpuCount {
            vcpus: max + 1,
            max
        })
    );
    assert!(VmLayout::new(layout::MAX_RAM, max).is_ok());
    // The entry points see the same checks through GuestMemory::size.
    let elf = elf_files::pvh_elf64();
    let p = params(&elf, None);
    assert!(matches!(
        load_pvh(&HugeMemory(4 << 30), &p),
        Err(RamTooLarge { .. })
    ));
    assert!(matches!(
        load_linux(&HugeMemory(4 << 30), &p),
        Err(RamTooLarge { .. })
    ));
    assert!(matches!(load_pvh(&mem(1), &p), Err(RamTooSmall { .. })));
}

#[test]
fn memory_map_is_sorted_disjoint_and_typed() {
    let l = VmLayout::new(256 * MIB, 1).unwrap();
    for xen in [false, true] {
        let map = l.memory_map(xen);
        let regions = map.as_slice();
        assert_eq!(regions.len(), 5);
        for w in regions.windows(2) {
            assert!(w[0].range.end <= w[1].range.start, "{w:?}");
        }
        assert_eq!(
            regions[0].range,
            GuestRange {
                start: 0,
                end: 0x9F000
            }
        );
        assert_eq!(regions[0].kind, MemType::Ram);
        assert_eq!(regions[1].kind, MemType::Reserved);
        assert_eq!(
            regions[2].range,
            GuestRange {
                start: layout::ACPI_START,
                end: layout::ACPI_END
            }
        );
        assert_eq!(regions[2].kind, MemType::Acpi);
        assert_eq!(
            regions[3].range,
            GuestRange {
                start: MIB,
                end: 256 * MIB - layout::HV_PAGES * layout::PAGE
            }
        );
        assert_eq!(regions[3].kind, MemType::Ram);
        assert_eq!(regions[4].range, l.hv_pages());
        assert_eq!(regions[4].kind, MemType::Reserved);
        // Nothing the map calls RAM may cover the MMIO pages that must stay unmapped.
        for r in regions.iter().filter(|r| r.kind == MemType::Ram) {
            for mmio in layout::UNMAPPED_MMIO {
                assert!(!r.range.overlaps(&mmio));
            }
            // The boot data is in low RAM, the tables are not.
            assert!(!r.range.overlaps(&GuestRange {
                start: layout::ACPI_START,
                end: layout::ACPI_END
            }));
        }
        assert!(regions[0].range.contains(&GuestRange {
            start: layout::BOOT_INFO,
            end: layout::BOOT_DATA_END
        }));
    }
    assert_eq!(l.hv_pages().end, 256 * MIB);
}

#[test]
fn initrd_goes_to_the_top_aligned() {
    let l = VmLayout::new(64 * MIB, 1).unwrap();
    assert_eq!(l.place_initrd(0, 2 * MIB, u64::MAX), Ok(None));
    assert_eq!(
        l.place_initrd(0x1234, 2 * MIB, u64::MAX),
        Ok(Some(l.ram_end() - 0x2000))
    );
    assert_eq!(l.place_initrd(MIB, 2 * MIB, 32 * MIB), Ok(Some(31 * MIB)));
    // Exactly the room between the kernel's end and the top.
    let room = l.ram_end() - 2 * MIB;
    assert_eq!(l.place_initrd(room, 2 * MIB, u64::MAX), Ok(Some(2 * MIB)));
    assert_eq!(
        l.place_initrd(room + 1, 2 * MIB, u64::MAX),
        Err(GuestLoadError::InitrdTooBig {
            size: room + 1,
            max: room
        })
    );
    // A kernel ending in the middle of a page pushes the floor up to the next page.
    assert_eq!(
        l.place_initrd(room - 0x1000, 2 * MIB + 1, u64::MAX),
        Ok(Some(2 * MIB + 0x1000))
    );
}

#[test]
fn acpi_region_overflow_is_an_error() {
    let l = VmLayout::new(64 * MIB, 1).unwrap();
    let max = layout::ACPI_END - layout::ACPI_START;
    assert_eq!(l.check_acpi(max), Ok(()));
    assert_eq!(
        l.check_acpi(max + 1),
        Err(GuestLoadError::AcpiTooLarge {
            needed: max + 1,
            max
        })
    );
    // The largest real configuration fits with room to spare.
    let opts = AcpiOptions {
        ioapic: true,
        com1: true,
        vmbus: true,
        ..AcpiOptions::default()
    };
    assert!(acpi::size(layout::MAX_VCPUS, &opts) < max / 2);
}

#[test]
fn cmdline_checks() {
    use GuestLoadError::*;
    let long = [b'a'; layout::CMDLINE_MAX + 1];
    assert_eq!(
        layout::check_cmdline(&long, usize::MAX),
        Err(CmdlineTooLong {
            len: long.len(),
            max: layout::CMDLINE_MAX
        })
    );
    assert!(layout::check_cmdline(&long[1..], usize::MAX).is_ok());
    assert_eq!(
        layout::check_cmdline(b"abc", 2),
        Err(CmdlineTooLong { len: 3, max: 2 })
    );
    assert_eq!(
        layout::check_cmdline(b"ro\0quiet", 100),
        Err(CmdlineHasNul { at: 2 })
    );

    let elf = elf_files::pvh_elf64();
    let mut p = params(&elf, None);
    p.cmdline = &long;
    assert!(matches!(load_pvh(&mem(8), &p), Err(CmdlineTooLong { .. })));
    p.cmdline = b"a\0b";
    assert_eq!(load_pvh(&mem(8), &p), Err(CmdlineHasNul { at: 1 }));
}

#[test]
fn pvh_boot_end_to_end() {
    let m = mem(64);
    let elf = elf_files::pvh_elf64();
    let initrd: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    // Garbage where the bss goes proves the loader zeroes it.
    m.write(elf_files::BSS_AT, &[0xAA; 0x100]).unwrap();
    let p = params(&elf, Some(&initrd));
    let e = load_pvh(&m, &p).unwrap();

    assert_eq!(e.entry, elf_files::PVH_ENTRY);
    assert_eq!(e.ebx, layout::BOOT_INFO as u32);
    assert_eq!(e.esi, 0);
    assert_eq!(
        e.initial_state(),
        virt::InitialState::Flat32 {
            entry: elf_files::PVH_ENTRY,
            ebx: layout::BOOT_INFO as u32,
            esi: 0
        }
    );
    assert_eq!(e.kernel, elf_files::SPAN);
    assert_eq!(e.rsdp, layout::ACPI_START);

    // Segments at their physical addresses, bss zeroed.
    assert_eq!(read(&m, elf_files::TEXT_AT, 4), elf_files::TEXT[..4]);
    assert_eq!(read(&m, elf_files::DATA_AT, 3), b"DAT");
    assert!(read(&m, elf_files::BSS_AT, 0x100).iter().all(|&b| b == 0));

    // The initrd is at the top of RAM, page aligned, intact.
    let ird = e.initrd.unwrap();
    assert_eq!(ird.start % layout::PAGE, 0);
    assert_eq!(ird.len(), initrd.len() as u64);
    let top = 64 * MIB - layout::HV_PAGES * layout::PAGE;
    assert!(ird.end <= top && top - ird.end < layout::PAGE);
    assert_eq!(read(&m, ird.start, initrd.len()), initrd);

    // hvm_start_info.
    let si = layout::BOOT_INFO;
    assert_eq!(read_u32(&m, si), 0x336e_c578);
    assert_eq!(read_u32(&m, si + 4), 1);
    assert_eq!(read_u32(&m, si + 8), 0);
    assert_eq!(read_u32(&m, si + 12), 1);
    let modlist = read_u64(&m, si + 16);
    let cmdline = read_u64(&m, si + 24);
    assert_eq!(read_u64(&m, si + 32), layout::ACPI_START);
    let memmap = read_u64(&m, si + 40);
    let entries = read_u32(&m, si + 48);
    assert_eq!(read_u32(&m, si + 52), 0);

    assert_eq!(read_u64(&m, modlist), ird.start);
    assert_eq!(read_u64(&m, modlist + 8), initrd.len() as u64);
    assert_eq!(read_u64(&m, modlist + 16), 0);

    let mut c = read(&m, cmdline, p.cmdline.len() + 1);
    assert_eq!(c.pop(), Some(0));
    assert_eq!(c, p.cmdline);

    let want = VmLayout::new(64 * MIB, 2).unwrap().memory_map(true);
    assert_eq!(entries as usize, want.as_slice().len());
    for (i, r) in want.as_slice().iter().enumerate() {
        let at = memmap + 24 * i as u64;
        assert_eq!(read_u64(&m, at), r.range.start);
        assert_eq!(read_u64(&m, at + 8), r.range.len());
        assert_eq!(read_u32(&m, at + 16), r.kind as u32);
        assert_eq!(read_u32(&m, at + 20), 0);
    }
}

#[test]
fn pvh_without_initrd_has_no_modules() {
    let m = mem(16);
    let elf = elf_files::pvh_elf32();
    for initrd in [None, Some(&[][..])] {
        let e = load_pvh(&m, &params(&elf, initrd)).unwrap();
        assert_eq!(e.initrd, None);
        assert_eq!(e.entry, elf_files::PVH_ENTRY);
        assert_eq!(read_u32(&m, layout::BOOT_INFO + 12), 0);
        assert_eq!(read_u64(&m, layout::BOOT_INFO + 16), 0);
    }
}

#[test]
fn pvh_initrd_that_does_not_fit() {
    let elf = elf_files::pvh_elf64();
    let initrd = vec![1u8; (15 * MIB) as usize];
    assert!(matches!(
        load_pvh(&mem(16), &params(&elf, Some(&initrd))),
        Err(GuestLoadError::InitrdTooBig { .. })
    ));
}

#[test]
fn memory_that_lies_about_its_size_is_reported() {
    let m = LyingMemory {
        inner: mem(4),
        claimed: 64 * MIB,
    };
    let elf = elf_files::pvh_elf64();
    let initrd = [5u8; 4096];
    assert!(matches!(
        load_pvh(&m, &params(&elf, Some(&initrd))),
        Err(GuestLoadError::Memory(MemError { .. }))
    ));
}

#[test]
fn errors_display() {
    use core::fmt::Write;
    let all = [
        GuestLoadError::RamTooSmall { size: 1, min: 2 },
        GuestLoadError::ProtocolTooOld { version: 0x020B },
        GuestLoadError::MalformedElf("x"),
        GuestLoadError::Memory(MemError { gpa: 1, len: 2 }),
    ];
    for e in all {
        let mut s = String::new();
        write!(s, "{e}").unwrap();
        assert!(!s.is_empty());
    }
    assert_eq!(
        GuestLoadError::ProtocolTooOld { version: 0x020B }.to_string(),
        "boot protocol 2.11 too old"
    );
}

/// xorshift64*: deterministic, so a failure names the seed that found it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random corruption of valid files (bytes in the headers, truncation at any length) must
/// give an error or a successful load, never a panic or a write outside guest RAM.
#[test]
fn corrupted_files_never_panic() {
    let m = mem(32);
    let initrd = [0x11u8; 0x3000];
    let files = [
        (elf_files::pvh_elf64(), true),
        (elf_files::pvh_elf32(), true),
        (bzimage::bzimage(0x020F, &bzimage::pm_kernel()), false),
    ];
    for (file, pvh) in &files {
        let load = |f: &[u8]| {
            let p = params(f, Some(&initrd));
            let r = if *pvh {
                load_pvh(&m, &p)
            } else {
                load_linux(&m, &p)
            };
            // Validation happens before the first write, so memory never refuses one.
            assert!(!matches!(r, Err(GuestLoadError::Memory(_))), "{r:?}");
        };
        for len in 0..file.len().min(0x1000) {
            load(&file[..len]);
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ file.len() as u64);
        let hot = file.len().min(0x300);
        for _ in 0..20_000 {
            let mut f = file.clone();
            for _ in 0..1 + rng.below(4) {
                let at = if rng.below(4) == 0 {
                    rng.below(f.len())
                } else {
                    rng.below(hot)
                };
                f[at] = rng.next() as u8;
            }
            load(&f);
        }
    }
}
