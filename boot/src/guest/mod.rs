//! Guest-side boot protocols: what the kernel calls to put a guest into its RAM before the
//! guest's first vCPU runs.
//!
//! Two entry points, one per protocol, both ending in 32-bit flat protected mode with paging
//! off ([`virt::InitialState::Flat32`]):
//! - [`load_pvh`]: an ELF kernel with a Xen PVH note (`hvm_start_info` in EBX);
//! - [`load_linux`]: a bzImage through the Linux 32-bit boot protocol (`boot_params` in ESI).
//!
//! Both lay out guest memory the same way ([`layout`]), build the same ACPI tables ([`acpi`]),
//! validate every byte of the user's files before writing, and never allocate.

pub mod acpi;
mod aml;
pub mod elf;
pub mod layout;
pub mod linux;
pub mod pvh;

use virt::{GuestMemory, InitialState, MemError};

pub use acpi::AcpiOptions;
pub use layout::{GuestRange, MemoryMap, VmLayout};

/// What a VM boots: the user's files and the machine around them.
#[derive(Clone, Copy, Debug)]
pub struct GuestParams<'a> {
    /// vCPUs the firmware tables announce (APIC IDs `0..vcpus`, see [`layout::apic_id`]).
    pub vcpus: u32,
    /// The kernel command line, without a terminating NUL.
    pub cmdline: &'a [u8],
    /// The kernel file: an ELF vmlinux for PVH, a bzImage for the Linux protocol.
    pub kernel: &'a [u8],
    /// The initial ramdisk; `None` or an empty slice means none.
    pub initrd: Option<&'a [u8]>,
    pub acpi: AcpiOptions,
}

/// Where the boot vCPU starts and what was put where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub entry: u32,
    pub ebx: u32,
    pub esi: u32,
    /// Guest-physical span the kernel image occupies (including its bss / `init_size`).
    pub kernel: GuestRange,
    pub initrd: Option<GuestRange>,
    pub rsdp: u64,
}

impl BootEntry {
    /// The boot vCPU's [`InitialState`]; application processors start in `WaitForSipi`.
    pub fn initial_state(&self) -> InitialState {
        InitialState::Flat32 {
            entry: self.entry,
            ebx: self.ebx,
            esi: self.esi,
        }
    }
}

/// Why a guest could not be loaded. Every malformed input gets its own variant; none panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestLoadError {
    /// Guest RAM is smaller than the fixed layout needs.
    RamTooSmall { size: u64, min: u64 },
    /// Guest RAM would reach into the MMIO hole below 4 GiB (LAPIC, IOAPIC).
    RamTooLarge { size: u64, max: u64 },
    /// Guest RAM is not a whole number of 4 KiB pages.
    RamNotPageAligned { size: u64 },
    /// Zero vCPUs, or more than the tables can describe.
    VcpuCount { vcpus: u32, max: u32 },
    /// The command line is longer than the guest (or the layout) accepts.
    CmdlineTooLong { len: usize, max: usize },
    /// The command line contains a NUL byte, which would silently truncate it.
    CmdlineHasNul { at: usize },
    /// The initrd does not fit between the kernel and the highest address the guest accepts.
    InitrdTooBig { size: u64, max: u64 },
    /// The ACPI tables outgrew their fixed region.
    AcpiTooLarge { needed: u64, max: u64 },

    /// Not an ELF file at all (bad magic, class or version).
    NotElf,
    /// A structure of the ELF file lies beyond its end or is inconsistent (`object`'s reason).
    MalformedElf(&'static str),
    /// A big-endian ELF, or one for another machine than x86 (32-bit EM_386 / 64-bit EM_X86_64).
    UnsupportedElf { machine: u16 },
    /// A `PT_LOAD` segment's file bytes lie beyond the end of the file.
    SegmentTruncated { index: usize },
    /// A `PT_LOAD` segment has more file bytes than memory bytes.
    SegmentFileSizeTooLarge { index: usize },
    /// A `PT_LOAD` segment (at its physical address) is not inside guest RAM.
    SegmentOutsideRam { paddr: u64, memsz: u64 },
    /// A `PT_LOAD` segment would overwrite the low-memory boot data, firmware area or tables.
    SegmentOverlapsBootData { paddr: u64, memsz: u64 },
    /// No `PT_LOAD` segment with a size.
    NoLoadableSegments,
    /// No `XEN_ELFNOTE_PHYS32_ENTRY` note: the kernel cannot start in PVH mode.
    MissingPvhNote,
    /// The PVH note's descriptor is neither 4 nor 8 bytes, or holds an address above 4 GiB.
    BadPvhNote,
    /// The PVH entry point is not inside any loaded segment.
    PvhEntryOutsideKernel { entry: u64 },

    /// Too short to hold a Linux setup header, or shorter than the header says.
    BzImageTruncated { len: usize, needed: usize },
    /// No 0xAA55 boot flag or "HdrS" signature, or a zImage (not loaded high).
    NotBzImage,
    /// Boot protocol older than [`linux::MIN_PROTOCOL`].
    ProtocolTooOld { version: u16 },
    /// The kernel's load address plus `init_size` does not fit in guest RAM above 1 MiB.
    KernelOutsideRam { start: u64, size: u64 },

    /// A guest-memory write failed although the layout was validated (RAM smaller than
    /// `GuestMemory::size` claimed).
    Memory(MemError),
}

impl From<MemError> for GuestLoadError {
    fn from(e: MemError) -> Self {
        GuestLoadError::Memory(e)
    }
}

impl core::fmt::Display for GuestLoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use GuestLoadError::*;
        match *self {
            RamTooSmall { size, min } => write!(f, "guest RAM {size:#x} below minimum {min:#x}"),
            RamTooLarge { size, max } => write!(f, "guest RAM {size:#x} above maximum {max:#x}"),
            RamNotPageAligned { size } => write!(f, "guest RAM {size:#x} not page aligned"),
            VcpuCount { vcpus, max } => write!(f, "{vcpus} vCPUs (1..={max} allowed)"),
            CmdlineTooLong { len, max } => write!(f, "command line {len} bytes (max {max})"),
            CmdlineHasNul { at } => write!(f, "command line has a NUL at {at}"),
            InitrdTooBig { size, max } => write!(f, "initrd {size:#x} bytes, room for {max:#x}"),
            AcpiTooLarge { needed, max } => write!(f, "ACPI tables {needed:#x} > {max:#x}"),
            NotElf => write!(f, "kernel is not an ELF file"),
            MalformedElf(why) => write!(f, "malformed ELF: {why}"),
            UnsupportedElf { machine } => write!(f, "unsupported ELF (machine {machine})"),
            SegmentTruncated { index } => write!(f, "ELF segment {index} truncated"),
            SegmentFileSizeTooLarge { index } => write!(f, "ELF segment {index}: filesz > memsz"),
            SegmentOutsideRam { paddr, memsz } => {
                write!(f, "ELF segment {paddr:#x}+{memsz:#x} outside guest RAM")
            }
            SegmentOverlapsBootData { paddr, memsz } => {
                write!(
                    f,
                    "ELF segment {paddr:#x}+{memsz:#x} overlaps boot data below 1 MiB"
                )
            }
            NoLoadableSegments => write!(f, "ELF has no loadable segment"),
            MissingPvhNote => write!(f, "ELF has no Xen PHYS32_ENTRY note (not a PVH kernel)"),
            BadPvhNote => write!(f, "ELF PHYS32_ENTRY note malformed"),
            PvhEntryOutsideKernel { entry } => {
                write!(f, "PVH entry {entry:#x} outside the loaded segments")
            }
            BzImageTruncated { len, needed } => {
                write!(f, "bzImage truncated: {len} bytes, needs {needed}")
            }
            NotBzImage => write!(f, "kernel is not a bzImage"),
            ProtocolTooOld { version } => {
                write!(
                    f,
                    "boot protocol {}.{:02} too old",
                    version >> 8,
                    version & 0xff
                )
            }
            KernelOutsideRam { start, size } => {
                write!(f, "kernel {start:#x}+{size:#x} does not fit in guest RAM")
            }
            Memory(e) => write!(f, "guest memory write at {:#x}+{:#x} failed", e.gpa, e.len),
        }
    }
}

/// Loads a PVH kernel (ELF with `XEN_ELFNOTE_PHYS32_ENTRY`), its initrd, command line, memory
/// map and ACPI tables; the boot vCPU starts at the note's entry with EBX = `hvm_start_info`.
pub fn load_pvh<M: GuestMemory + ?Sized>(
    mem: &M,
    p: &GuestParams<'_>,
) -> Result<BootEntry, GuestLoadError> {
    let layout = VmLayout::new(mem.size(), p.vcpus)?.with_pci(p.acpi.pci);
    let cmdline = layout::check_cmdline(p.cmdline, layout::CMDLINE_MAX)?;
    let info = elf::inspect(p.kernel, &layout)?;
    let entry = info.pvh_entry.ok_or(GuestLoadError::MissingPvhNote)?;
    let initrd = layout.place_initrd(initrd_len(p), info.span.end, layout.ram_end())?;
    let acpi_size = acpi::size(p.vcpus, &p.acpi);
    layout.check_acpi(acpi_size)?;

    // Everything is validated: from here on only guest-memory writes can fail.
    elf::load(mem, p.kernel, &info)?;
    let initrd = write_initrd(mem, p, initrd)?;
    let rsdp = acpi::write(mem, p.vcpus, &p.acpi)?;
    layout::write_cmdline(mem, cmdline)?;
    pvh::write_start_info(mem, &layout, initrd, rsdp)?;
    Ok(BootEntry {
        entry,
        ebx: layout::BOOT_INFO as u32,
        esi: 0,
        kernel: info.span,
        initrd,
        rsdp,
    })
}

/// Loads a bzImage through the Linux 32-bit boot protocol: protected-mode kernel at its
/// preferred address, initrd near the top of RAM, `boot_params` with the e820 map and the RSDP;
/// the boot vCPU starts at the 32-bit entry with ESI = `boot_params`.
pub fn load_linux<M: GuestMemory + ?Sized>(
    mem: &M,
    p: &GuestParams<'_>,
) -> Result<BootEntry, GuestLoadError> {
    let layout = VmLayout::new(mem.size(), p.vcpus)?.with_pci(p.acpi.pci);
    let image = linux::BzImage::parse(p.kernel)?;
    let cmdline = layout::check_cmdline(p.cmdline, image.cmdline_max())?;
    let kernel = image.placement(&layout)?;
    let initrd = layout.place_initrd(initrd_len(p), kernel.end, image.initrd_limit())?;
    layout.check_acpi(acpi::size(p.vcpus, &p.acpi))?;

    image.load(mem, kernel.start)?;
    let initrd = write_initrd(mem, p, initrd)?;
    let rsdp = acpi::write(mem, p.vcpus, &p.acpi)?;
    layout::write_cmdline(mem, cmdline)?;
    image.write_boot_params(mem, &layout, kernel.start, initrd, rsdp)?;
    Ok(BootEntry {
        entry: kernel.start as u32,
        ebx: 0,
        esi: layout::BOOT_INFO as u32,
        kernel,
        initrd,
        rsdp,
    })
}

fn initrd_len(p: &GuestParams<'_>) -> u64 {
    p.initrd.map_or(0, |i| i.len() as u64)
}

fn write_initrd<M: GuestMemory + ?Sized>(
    mem: &M,
    p: &GuestParams<'_>,
    at: Option<u64>,
) -> Result<Option<GuestRange>, MemError> {
    match (p.initrd, at) {
        (Some(data), Some(start)) => {
            mem.write(start, data)?;
            Ok(Some(GuestRange::new(start, data.len() as u64)))
        }
        _ => Ok(None),
    }
}

/// Zeroes `[gpa, gpa+len)` without a buffer of that size: guest RAM handed to a new VM is
/// normally zero already, but a bss must be zero whatever the frames held before.
pub(crate) fn write_zeros<M: GuestMemory + ?Sized>(
    mem: &M,
    gpa: u64,
    len: u64,
) -> Result<(), MemError> {
    static ZEROS: [u8; 4096] = [0; 4096];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64);
        mem.write(gpa + done, &ZEROS[..n as usize])?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
