//! Xen PVH boot information: `hvm_start_info` v1 with its module list and memory map
//! (Xen's public `arch-x86/hvm/start_info.h`). A PVH kernel copies all of it before it
//! allocates memory, so it lives in ordinary low RAM ([`layout::BOOT_INFO`] and after).

use core::mem::{offset_of, size_of};

use virt::{GuestMemory, MemError};
use zerocopy::{Immutable, IntoBytes};

use super::layout::{self, GuestRange, MemRegion, VmLayout};

/// `XEN_HVM_START_MAGIC_VALUE`: Linux BUG()s on anything else.
pub const START_MAGIC: u32 = 0x336e_c578;
/// Version 1 adds the memory map; without it Linux asks `XENMEM_memory_map`.
pub const START_VERSION: u32 = 1;

/// `struct hvm_start_info`. Every address is guest-physical; 0 means absent.
#[derive(Clone, Copy, Debug, Default, IntoBytes, Immutable)]
#[repr(C)]
pub struct HvmStartInfo {
    pub magic: u32,
    pub version: u32,
    /// `SIF_*`; a domU has none.
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}

/// `struct hvm_modlist_entry`: Linux takes module 0 as the initrd.
#[derive(Clone, Copy, Debug, Default, IntoBytes, Immutable)]
#[repr(C)]
pub struct HvmModlistEntry {
    pub paddr: u64,
    pub size: u64,
    pub cmdline_paddr: u64,
    pub reserved: u64,
}

/// `struct hvm_memmap_table_entry`, typed like e820 ([`layout::MemType`]).
#[derive(Clone, Copy, Debug, Default, IntoBytes, Immutable)]
#[repr(C)]
pub struct HvmMemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub reserved: u32,
}

const _: () = {
    assert!(size_of::<HvmStartInfo>() == 56);
    assert!(offset_of!(HvmStartInfo, magic) == 0);
    assert!(offset_of!(HvmStartInfo, version) == 4);
    assert!(offset_of!(HvmStartInfo, flags) == 8);
    assert!(offset_of!(HvmStartInfo, nr_modules) == 12);
    assert!(offset_of!(HvmStartInfo, modlist_paddr) == 16);
    assert!(offset_of!(HvmStartInfo, cmdline_paddr) == 24);
    assert!(offset_of!(HvmStartInfo, rsdp_paddr) == 32);
    assert!(offset_of!(HvmStartInfo, memmap_paddr) == 40);
    assert!(offset_of!(HvmStartInfo, memmap_entries) == 48);
    assert!(offset_of!(HvmStartInfo, reserved) == 52);
    assert!(size_of::<HvmModlistEntry>() == 32);
    assert!(offset_of!(HvmModlistEntry, size) == 8);
    assert!(offset_of!(HvmModlistEntry, cmdline_paddr) == 16);
    assert!(size_of::<HvmMemmapEntry>() == 24);
    assert!(offset_of!(HvmMemmapEntry, size) == 8);
    assert!(offset_of!(HvmMemmapEntry, kind) == 16);
    // The fixed pages hold what is put in them.
    assert!(layout::BOOT_INFO + size_of::<HvmStartInfo>() as u64 <= layout::MEMMAP);
    assert!(
        layout::MEMMAP + (layout::MemoryMap::CAPACITY * size_of::<HvmMemmapEntry>()) as u64
            <= layout::MODLIST
    );
    assert!(layout::MODLIST + size_of::<HvmModlistEntry>() as u64 <= layout::CMDLINE);
};

impl From<&MemRegion> for HvmMemmapEntry {
    fn from(r: &MemRegion) -> Self {
        HvmMemmapEntry {
            addr: r.range.start,
            size: r.range.len(),
            kind: r.kind as u32,
            reserved: 0,
        }
    }
}

/// Writes the memory map, the module list and `hvm_start_info` at their fixed addresses.
/// The command line must already be at [`layout::CMDLINE`].
pub fn write_start_info<M: GuestMemory + ?Sized>(
    mem: &M,
    layout: &VmLayout,
    initrd: Option<GuestRange>,
    rsdp: u64,
) -> Result<(), MemError> {
    let map = layout.memory_map(true);
    let mut at = layout::MEMMAP;
    for region in map.as_slice() {
        mem.write(at, HvmMemmapEntry::from(region).as_bytes())?;
        at += size_of::<HvmMemmapEntry>() as u64;
    }
    let (nr_modules, modlist_paddr) = match initrd {
        Some(r) => {
            let module = HvmModlistEntry {
                paddr: r.start,
                size: r.len(),
                ..Default::default()
            };
            mem.write(layout::MODLIST, module.as_bytes())?;
            (1, layout::MODLIST)
        }
        None => (0, 0),
    };
    let info = HvmStartInfo {
        magic: START_MAGIC,
        version: START_VERSION,
        flags: 0,
        nr_modules,
        modlist_paddr,
        cmdline_paddr: layout::CMDLINE,
        rsdp_paddr: rsdp,
        memmap_paddr: layout::MEMMAP,
        memmap_entries: map.as_slice().len() as u32,
        reserved: 0,
    };
    mem.write(layout::BOOT_INFO, info.as_bytes())
}
