//! Finds the kernel module, places and relocates it, and builds the hand-off.
#![expect(unsafe_code)]
// UNSAFETY: the multiboot block, the modules and the chosen load area are raw physical memory,
// reachable because the entry code identity-maps the low 4 GiB.

extern crate alloc;

use alloc::boxed::Box;
use boot::mbinfo::{IdentityMap, MachineInfo, MbError};
use boot::placement::place_above;
use core::fmt;
use core::mem::MaybeUninit;
use core::num::{NonZeroU16, NonZeroU64};
use core::ops::Range;
use hermit_entry::Entry;
use hermit_entry::boot_info::{BootInfo, HardwareInfo, PlatformInfo, RawBootInfo};
use hermit_entry::elf::KernelObject;
use multiboot::information::Multiboot;

/// The entry code maps exactly this much.
const IDENTITY_LIMIT: u64 = 4 << 30;
const KERNEL_ALIGN: u64 = 2 << 20;
/// The multiboot block itself is small; a page covers it and its fixed-size tables.
const MBI_SPAN: u64 = 4096;

pub enum LoadError {
    Multiboot(MbError),
    NoInfo,
    NoKernelModule,
    KernelNotElf(heapless::String<64>, hermit_entry::elf::ParseKernelError),
    NoRoomForKernel { size: u64 },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Multiboot(e) => write!(f, "bad multiboot information: {e}"),
            LoadError::NoInfo => f.write_str("the multiboot information block is not mapped"),
            LoadError::NoKernelModule => f.write_str(
                "no modules: pass the Janus kernel ELF as the first module \
                 (QEMU -initrd, GRUB/iPXE `module`)",
            ),
            LoadError::KernelNotElf(name, e) => {
                write!(f, "first module '{name}' is not a Janus kernel: {e}")
            }
            LoadError::NoRoomForKernel { size } => {
                write!(
                    f,
                    "no free RAM below 4 GiB for the {size}-byte kernel image"
                )
            }
        }
    }
}

pub struct Jump {
    entry: Entry,
    raw: &'static RawBootInfo,
}

impl Jump {
    pub fn enter(self) -> ! {
        // SAFETY: `entry` is the relocated entry point of a kernel that hermit-entry parsed
        // (it carries the matching entry-version note) and `raw` is leaked, so lives forever.
        unsafe { (self.entry)(self.raw, 0) }
    }
}

pub fn load_kernel(mbi: u64) -> Result<Jump, LoadError> {
    let mut mem = IdentityMap {
        limit: IDENTITY_LIMIT,
    };
    // SAFETY: `mbi` is what the multiboot loader passed in ebx (checked by the magic).
    let mb = unsafe { Multiboot::from_ptr(mbi, &mut mem) }.ok_or(LoadError::NoInfo)?;
    let info = MachineInfo::from_multiboot(&mb).map_err(LoadError::Multiboot)?;
    let kernel_mod = info.modules.first().ok_or(LoadError::NoKernelModule)?;
    // SAFETY: module memory was placed by the boot loader and is identity mapped.
    let elf: &'static [u8] = unsafe { kernel_mod.bytes() };
    let object = KernelObject::parse(elf).map_err(|e| {
        let mut name = heapless::String::new();
        let _ = name.push_str(kernel_mod.name().get(..64).unwrap_or(kernel_mod.name()));
        LoadError::KernelNotElf(name, e)
    })?;
    let size = object.mem_size() as u64;

    let mut used: heapless::Vec<Range<u64>, 80> = heapless::Vec::new();
    let _ = used.push(super::entry::image_range());
    let _ = used.push(mbi..mbi + MBI_SPAN);
    for m in &info.modules {
        let _ = used.push(m.range());
        let s = m.string.as_ptr() as u64;
        let _ = used.push(s..s + m.string.len() as u64 + 1);
    }
    if let Some(c) = info.cmdline {
        let s = c.as_ptr() as u64;
        let _ = used.push(s..s + c.len() as u64 + 1);
    }
    for e in mb.memory_regions().into_iter().flatten() {
        let s = core::ptr::from_ref(e) as u64;
        let _ = used.push(s..s + 24);
    }
    let base = match object.start_addr() {
        Some(fixed) => fixed,
        None => place_above(&info.regions, &used, size, KERNEL_ALIGN, IDENTITY_LIMIT)
            .ok_or(LoadError::NoRoomForKernel { size })?,
    };
    // SAFETY: [base, base+size) is usable RAM above everything in use, inside the identity map.
    let memory =
        unsafe { core::slice::from_raw_parts_mut(base as *mut MaybeUninit<u8>, size as usize) };
    let loaded = object.load_kernel(memory, base);

    let command_line = info.cmdline.map(|c| {
        // SAFETY: the boot loader's command line stays where it is for the kernel's lifetime.
        unsafe { &*core::ptr::from_ref::<str>(c) }
    });
    let boot_info = BootInfo {
        hardware_info: HardwareInfo {
            phys_addr_range: 0..info.top_of_ram(),
            serial_port_base: NonZeroU16::new(boot::serial::COM1),
            device_tree: None,
        },
        load_info: loaded.load_info,
        platform_info: PlatformInfo::Multiboot {
            command_line,
            multiboot_info_addr: NonZeroU64::new(mbi).ok_or(LoadError::NoInfo)?,
        },
    };
    let raw: &'static RawBootInfo = Box::leak(Box::new(RawBootInfo::from(boot_info)));
    // SAFETY: hermit-entry computed the entry point of the image it just relocated.
    let entry: Entry = unsafe { core::mem::transmute::<u64, Entry>(loaded.entry_point) };
    Ok(Jump { entry, raw })
}
