//! The guest-physical memory map every Janus VM gets.
//!
//! RAM is one block at GPA 0 (that is how the kernel maps it), so the map is the same for
//! every VM apart from where RAM ends:
//!
//! ```text
//! 0x0000_0000 ..0x0000_7000   RAM (real-mode IVT/BDA stay zero: no EBDA pointer, no BIOS)
//! 0x0000_7000 ..0x0000_8000   RAM  BOOT_INFO: hvm_start_info (PVH) or boot_params (Linux)
//! 0x0000_8000 ..0x0000_9000   RAM  MEMMAP: PVH hvm_memmap_table_entry array
//! 0x0000_9000 ..0x0000_A000   RAM  MODLIST: PVH hvm_modlist_entry array (the initrd)
//! 0x0000_A000 ..0x0000_B000   RAM  CMDLINE: NUL-terminated kernel command line
//! 0x0000_B000 ..0x0009_F000   RAM  free (the guest's SMP trampoline comes from here)
//! 0x0009_F000 ..0x000E_0000   reserved: EBDA / VGA / option-ROM hole
//! 0x000E_0000 ..0x0010_0000   ACPI: RSDP at 0xE0000 (found by a BIOS-area scan too), tables
//! 0x0010_0000 ..ram_end       RAM: kernel at its physical address, initrd at the top
//! ram_end     ..0xC000_0000   unmapped (RAM is capped at 3 GiB)
//! 0xC000_0000 ..4 GiB         MMIO hole: IOAPIC 0xFEC00000, LAPIC 0xFEE00000, Xen special
//!                             pages 0xFEFF8000 (reserved in the PVH map), never RAM
//! ```
//!
//! The boot data sits in ordinary RAM because both protocols copy it before they allocate
//! anything; the ACPI tables must survive, so their region is typed ACPI.

use virt::{GuestMemory, MemError};

use super::GuestLoadError;

pub const PAGE: u64 = 0x1000;
pub const MIB: u64 = 1 << 20;

/// `hvm_start_info` (PVH) or the `boot_params` zero page (Linux).
pub const BOOT_INFO: u64 = 0x7000;
/// PVH memory map (`hvm_memmap_table_entry` array).
pub const MEMMAP: u64 = 0x8000;
/// PVH module list (`hvm_modlist_entry` array).
pub const MODLIST: u64 = 0x9000;
/// The kernel command line.
pub const CMDLINE: u64 = 0xA000;
/// The end of the boot data; everything from here to [`LOW_RAM_END`] is free low RAM.
pub const BOOT_DATA_END: u64 = 0xB000;
/// Linux's x86 `COMMAND_LINE_SIZE` is 2048 with the NUL, and PVH Linux copies that much.
pub const CMDLINE_MAX: usize = 2047;

/// End of conventional low RAM; Linux reserves from here to 1 MiB anyway when the BDA holds no
/// EBDA pointer.
pub const LOW_RAM_END: u64 = 0x9_F000;
/// The ACPI tables' region: the top of the old BIOS area, where an RSDP scan also looks.
pub const ACPI_START: u64 = 0xE_0000;
pub const ACPI_END: u64 = 0x10_0000;
/// Kernels and initrds load at or above 1 MiB; below is the layout's own.
pub const HIGH_RAM_START: u64 = 0x10_0000;

/// Start of the MMIO hole below 4 GiB; RAM never reaches it.
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// The hardware-emulation face's PCI: BARs are placed in this window (the ACPI root bridge's
/// memory resource), and configuration space is memory-mapped (ECAM) for bus 0 above it.
pub const PCI_MMIO_START: u64 = MMIO_HOLE_START;
pub const PCI_MMIO_END: u64 = 0xE000_0000;
pub const PCI_ECAM_BASE: u64 = 0xE000_0000;
/// One bus: 32 devices × 8 functions × 4 KiB.
pub const PCI_ECAM_SIZE: u64 = MIB;
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
/// Pages at the top of RAM the hypervisor keeps for itself (Xen's console and xenstore
/// rings, the pages behind its grant frames): reserved in every memory map, never given to
/// the kernel or the initrd. Inside RAM so that the personality reaches them through ordinary
/// guest-memory access.
pub const HV_PAGES: u64 = 16;
/// Guest-physical pages that must stay unmapped in the nested page tables so that accesses
/// exit to the platform's device models.
pub const UNMAPPED_MMIO: [GuestRange; 2] = [
    GuestRange {
        start: IOAPIC_BASE,
        end: IOAPIC_BASE + PAGE,
    },
    GuestRange {
        start: LAPIC_BASE,
        end: LAPIC_BASE + PAGE,
    },
];

pub const MIN_RAM: u64 = 2 * MIB;
pub const MAX_RAM: u64 = MMIO_HOLE_START;
/// The MADT and its region are sized for this many vCPUs.
pub const MAX_VCPUS: u32 = 256;
pub const INITRD_ALIGN: u64 = PAGE;

const _: () = {
    assert!(CMDLINE + (CMDLINE_MAX as u64) < BOOT_DATA_END);
    assert!(BOOT_DATA_END <= LOW_RAM_END);
    assert!(LOW_RAM_END <= ACPI_START && ACPI_END == HIGH_RAM_START);
    assert!(MAX_RAM <= IOAPIC_BASE && IOAPIC_BASE < LAPIC_BASE);
    assert!(MAX_RAM <= PCI_MMIO_START && PCI_MMIO_END <= PCI_ECAM_BASE);
    assert!(PCI_ECAM_BASE + PCI_ECAM_SIZE <= IOAPIC_BASE);
    assert!(MIN_RAM > HIGH_RAM_START + HV_PAGES * PAGE);
};

/// The APIC ID (and ACPI processor UID) of vCPU `index`. The kernel's virtual x2APIC, CPUID
/// leaves 1/0xB and the MADT must agree; Xen and Hyper-V guests both want UID == vCPU index.
pub const fn apic_id(index: u32) -> u32 {
    index
}

/// A half-open guest-physical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GuestRange {
    pub start: u64,
    pub end: u64,
}

impl GuestRange {
    pub const fn new(start: u64, len: u64) -> Self {
        GuestRange {
            start,
            end: start + len,
        }
    }
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }
    pub const fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub const fn overlaps(&self, other: &GuestRange) -> bool {
        self.start < other.end && other.start < self.end
    }
    pub const fn contains(&self, other: &GuestRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Memory types, numbered as both e820 and `hvm_memmap_table_entry` number them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MemType {
    Ram = 1,
    Reserved = 2,
    Acpi = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    pub range: GuestRange,
    pub kind: MemType,
}

/// The firmware memory map: a fixed handful of sorted, non-overlapping regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    regions: [MemRegion; MemoryMap::CAPACITY],
    len: usize,
}

impl MemoryMap {
    pub const CAPACITY: usize = 6;

    pub fn as_slice(&self) -> &[MemRegion] {
        &self.regions[..self.len]
    }
}

/// The map of one VM: what is where for its RAM size and vCPU count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmLayout {
    ram_size: u64,
    vcpus: u32,
    /// The PCI configuration window is reserved in the memory map (Linux trusts an ECAM
    /// region only if firmware reserved it).
    pci: bool,
}

impl VmLayout {
    /// Validates the VM's shape. `ram_size` is the guest RAM mapped at GPA 0.
    pub fn new(ram_size: u64, vcpus: u32) -> Result<Self, GuestLoadError> {
        if ram_size < MIN_RAM {
            return Err(GuestLoadError::RamTooSmall {
                size: ram_size,
                min: MIN_RAM,
            });
        }
        if ram_size > MAX_RAM {
            return Err(GuestLoadError::RamTooLarge {
                size: ram_size,
                max: MAX_RAM,
            });
        }
        if !ram_size.is_multiple_of(PAGE) {
            return Err(GuestLoadError::RamNotPageAligned { size: ram_size });
        }
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(GuestLoadError::VcpuCount {
                vcpus,
                max: MAX_VCPUS,
            });
        }
        Ok(VmLayout {
            ram_size,
            vcpus,
            pci: false,
        })
    }

    /// The layout of a VM with a PCI bus (the hardware-emulation face).
    pub const fn with_pci(mut self, pci: bool) -> Self {
        self.pci = pci;
        self
    }

    /// End of the RAM the guest may use: the hypervisor pages are above it.
    pub const fn ram_end(&self) -> u64 {
        self.ram_size - HV_PAGES * PAGE
    }

    /// The hypervisor's pages at the top of RAM (see [`HV_PAGES`]).
    pub const fn hv_pages(&self) -> GuestRange {
        GuestRange {
            start: self.ram_end(),
            end: self.ram_size,
        }
    }

    pub const fn vcpus(&self) -> u32 {
        self.vcpus
    }

    /// Where a kernel may load: RAM from 1 MiB to the end.
    pub const fn kernel_window(&self) -> GuestRange {
        GuestRange {
            start: HIGH_RAM_START,
            end: self.ram_end(),
        }
    }

    /// The e820 / PVH memory map; the hypervisor pages are reserved in both (`_xen` is kept
    /// for callers that distinguish the two maps).
    pub fn memory_map(&self, _xen: bool) -> MemoryMap {
        let r = |start, end, kind| MemRegion {
            range: GuestRange { start, end },
            kind,
        };
        let ecam = r(
            PCI_ECAM_BASE,
            PCI_ECAM_BASE + PCI_ECAM_SIZE,
            MemType::Reserved,
        );
        MemoryMap {
            regions: [
                r(0, LOW_RAM_END, MemType::Ram),
                r(LOW_RAM_END, ACPI_START, MemType::Reserved),
                r(ACPI_START, ACPI_END, MemType::Acpi),
                r(HIGH_RAM_START, self.ram_end(), MemType::Ram),
                r(self.ram_end(), self.ram_size, MemType::Reserved),
                ecam,
            ],
            len: if self.pci { 6 } else { 5 },
        }
    }

    /// Highest `INITRD_ALIGN`-aligned start for `size` bytes with the end at or below
    /// `limit_end` (and RAM's end) and the start at or above `lowest` (the kernel's end).
    /// `Ok(None)` for no initrd.
    pub fn place_initrd(
        &self,
        size: u64,
        lowest: u64,
        limit_end: u64,
    ) -> Result<Option<u64>, GuestLoadError> {
        if size == 0 {
            return Ok(None);
        }
        let top = limit_end.min(self.ram_end());
        let lowest = align_up(lowest.max(HIGH_RAM_START), INITRD_ALIGN);
        let room = top.saturating_sub(lowest);
        if size > room {
            return Err(GuestLoadError::InitrdTooBig {
                size,
                max: align_down(room, INITRD_ALIGN),
            });
        }
        Ok(Some(align_down(top - size, INITRD_ALIGN)))
    }

    /// Checks that `size` bytes of ACPI tables fit in their region.
    pub fn check_acpi(&self, size: u64) -> Result<(), GuestLoadError> {
        let max = ACPI_END - ACPI_START;
        if size > max {
            return Err(GuestLoadError::AcpiTooLarge { needed: size, max });
        }
        Ok(())
    }
}

/// Validates a command line against `max` bytes (without the NUL the layout appends).
pub fn check_cmdline(cmdline: &[u8], max: usize) -> Result<&[u8], GuestLoadError> {
    let max = max.min(CMDLINE_MAX);
    if cmdline.len() > max {
        return Err(GuestLoadError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if let Some(at) = cmdline.iter().position(|&b| b == 0) {
        return Err(GuestLoadError::CmdlineHasNul { at });
    }
    Ok(cmdline)
}

/// Writes a checked command line and its NUL at [`CMDLINE`].
pub(crate) fn write_cmdline<M: GuestMemory + ?Sized>(
    mem: &M,
    cmdline: &[u8],
) -> Result<(), MemError> {
    mem.write(CMDLINE, cmdline)?;
    mem.write(CMDLINE + cmdline.len() as u64, &[0])
}

pub const fn align_up(v: u64, a: u64) -> u64 {
    match v.checked_add(a - 1) {
        Some(x) => x & !(a - 1),
        None => !(a - 1),
    }
}

pub const fn align_down(v: u64, a: u64) -> u64 {
    v & !(a - 1)
}
