//! What the multiboot1 information block tells us about the machine, in bounded types.
//!
//! Both the loader and the kernel read the same block; each keeps only what it needs from
//! [`MachineInfo`]. Module names follow one rule for every loader that Janus supports:
//! QEMU `-initrd` gives "path args", GRUB gives the `module` line's arguments (xtask passes
//! the path again), iPXE gives the full URI — the name is the basename of the first word.

use core::ops::Range;
use heapless::Vec;
use multiboot::information::{MemoryType, Multiboot};

pub const MAX_REGIONS: usize = 64;
pub const MAX_MODULES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Defective,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub kind: RegionKind,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleRef<'a> {
    pub start: u64,
    pub end: u64,
    /// The loader's string for the module, as given.
    pub string: &'a str,
}

impl<'a> ModuleRef<'a> {
    pub fn name(&self) -> &'a str {
        module_name(self.string)
    }

    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The module's bytes, read in place.
    ///
    /// # Safety
    /// `start..end` must be identity-mapped memory that nothing writes for as long as the
    /// slice lives: true of the modules the multiboot loader placed, once the loader or the
    /// kernel has reserved them (both keep them for ever).
    #[expect(unsafe_code)]
    pub unsafe fn bytes(&self) -> &'static [u8] {
        // SAFETY: the caller vouches for the range; `len` fits in memory that exists.
        unsafe { core::slice::from_raw_parts(self.start as *const u8, self.len() as usize) }
    }
}

/// The basename of the first word: "target/janus/x.bin args" -> "x.bin",
/// "tftp://10.0.2.2/x.bin" -> "x.bin", "/boot/x.bin" -> "x.bin".
pub fn module_name(string: &str) -> &str {
    let first = string.split_ascii_whitespace().next().unwrap_or("");
    first.rsplit('/').next().unwrap_or(first)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MbError {
    /// Neither a memory map nor the lower/upper memory bounds were given.
    NoMemoryInfo,
    TooManyRegions,
    TooManyModules,
    /// A module whose end lies before its start.
    BadModule {
        index: usize,
    },
}

impl core::fmt::Display for MbError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MbError::NoMemoryInfo => f.write_str("the boot loader passed no memory information"),
            MbError::TooManyRegions => write!(f, "more than {MAX_REGIONS} memory map entries"),
            MbError::TooManyModules => write!(f, "more than {MAX_MODULES} modules"),
            MbError::BadModule { index } => write!(f, "module {index} ends before it starts"),
        }
    }
}

#[derive(Debug)]
pub struct MachineInfo<'a> {
    pub regions: Vec<Region, MAX_REGIONS>,
    pub modules: Vec<ModuleRef<'a>, MAX_MODULES>,
    pub cmdline: Option<&'a str>,
}

impl<'a> MachineInfo<'a> {
    pub fn from_multiboot(mb: &'a Multiboot<'a, '_>) -> Result<Self, MbError> {
        let mut regions = Vec::new();
        if let Some(map) = mb.memory_regions() {
            for entry in map {
                let kind = match entry.memory_type() {
                    MemoryType::Available => RegionKind::Usable,
                    MemoryType::Reserved => RegionKind::Reserved,
                    MemoryType::ACPI => RegionKind::AcpiReclaimable,
                    MemoryType::NVS => RegionKind::AcpiNvs,
                    MemoryType::Defect => RegionKind::Defective,
                };
                let start = entry.base_address();
                let end = start.saturating_add(entry.length());
                regions
                    .push(Region { start, end, kind })
                    .map_err(|_| MbError::TooManyRegions)?;
            }
        } else if let (Some(lower), Some(upper)) =
            (mb.lower_memory_bound(), mb.upper_memory_bound())
        {
            let low = Region {
                start: 0,
                end: u64::from(lower) * 1024,
                kind: RegionKind::Usable,
            };
            let high = Region {
                start: 0x10_0000,
                end: 0x10_0000 + u64::from(upper) * 1024,
                kind: RegionKind::Usable,
            };
            regions.extend([low, high]);
        } else {
            return Err(MbError::NoMemoryInfo);
        }

        let mut modules = Vec::new();
        for (index, m) in mb.modules().into_iter().flatten().enumerate() {
            if m.end < m.start {
                return Err(MbError::BadModule { index });
            }
            let module = ModuleRef {
                start: m.start,
                end: m.end,
                string: m.string.unwrap_or(""),
            };
            modules.push(module).map_err(|_| MbError::TooManyModules)?;
        }

        Ok(Self {
            regions,
            modules,
            cmdline: mb.command_line(),
        })
    }

    pub fn module(&self, name: &str) -> Option<&ModuleRef<'a>> {
        self.modules.iter().find(|m| m.name() == name)
    }

    /// Usable RAM in bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.regions
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .map(Region::len)
            .sum()
    }

    /// One past the highest usable byte.
    pub fn top_of_ram(&self) -> u64 {
        self.regions
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .map(|r| r.end)
            .max()
            .unwrap_or(0)
    }
}

/// Multiboot's pointers read through an identity map of physical memory below `limit`.
pub struct IdentityMap {
    pub limit: u64,
}

#[expect(unsafe_code)]
// UNSAFETY: the multiboot crate reads the information block through raw physical addresses.
impl multiboot::information::MemoryManagement for IdentityMap {
    unsafe fn paddr_to_slice(
        &self,
        addr: multiboot::information::PAddr,
        length: usize,
    ) -> Option<&'static [u8]> {
        let end = addr.checked_add(length as u64)?;
        if addr == 0 || end > self.limit {
            return None;
        }
        // SAFETY: the caller maps [0, limit) one to one for the rest of the program, and the
        // boot loader's data there is never reused while it is referenced.
        Some(unsafe { core::slice::from_raw_parts(addr as *const u8, length) })
    }

    unsafe fn allocate(
        &mut self,
        _length: usize,
    ) -> Option<(multiboot::information::PAddr, &mut [u8])> {
        None
    }

    unsafe fn deallocate(&mut self, _addr: multiboot::information::PAddr) {}
}

#[cfg(test)]
#[expect(unsafe_code)]
mod tests {
    // UNSAFETY: the multiboot crate's memory trait is unsafe to implement; the fake is a leaked buffer.
    use super::*;
    use multiboot::information::{MemoryEntry, MemoryManagement, Module, MultibootInfo, PAddr};

    /// Guest-less stand-in for physical memory: one leaked buffer at a fixed fake address.
    struct FakeMem {
        base: u64,
        buf: &'static mut [u8],
        next: usize,
    }

    impl FakeMem {
        fn new() -> Self {
            Self {
                base: 0x10_0000,
                buf: Box::leak(vec![0u8; 64 * 1024].into_boxed_slice()),
                next: 0,
            }
        }
    }

    impl MemoryManagement for FakeMem {
        unsafe fn paddr_to_slice(&self, addr: PAddr, length: usize) -> Option<&'static [u8]> {
            let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
            let slice = self.buf.get(off..off.checked_add(length)?)?;
            // SAFETY: the buffer is leaked, so a 'static view of it stays valid.
            Some(unsafe { core::slice::from_raw_parts(slice.as_ptr(), slice.len()) })
        }

        unsafe fn allocate(&mut self, length: usize) -> Option<(PAddr, &mut [u8])> {
            let off = self.next;
            self.next += length.next_multiple_of(16);
            Some((self.base + off as u64, &mut self.buf[off..off + length]))
        }

        unsafe fn deallocate(&mut self, _addr: PAddr) {}
    }

    impl FakeMem {
        /// Copies `bytes` into the fake memory before the info block borrows it.
        fn place(&mut self, bytes: &[u8]) -> PAddr {
            let off = self.next;
            self.buf[off..off + bytes.len()].copy_from_slice(bytes);
            self.next += bytes.len().next_multiple_of(16);
            self.base + off as u64
        }
    }

    #[test]
    fn module_names_follow_every_loader() {
        assert_eq!(module_name("target/janus/run/manifest.bin"), "manifest.bin");
        assert_eq!(module_name("target/janus/run/k.elf some args"), "k.elf");
        assert_eq!(module_name("tftp://10.0.2.2/janus-kernel"), "janus-kernel");
        assert_eq!(module_name("/boot/janus-kernel"), "janus-kernel");
        assert_eq!(module_name("plain"), "plain");
        assert_eq!(module_name(""), "");
    }

    #[test]
    fn reads_regions_modules_and_cmdline() {
        let map = [
            MemoryEntry::new(0, 0x9_fc00, MemoryType::Available),
            MemoryEntry::new(0x10_0000, 0x7ef_0000, MemoryType::Available),
            MemoryEntry::new(0xfffc_0000, 0x4_0000, MemoryType::Reserved),
        ];
        // SAFETY: MemoryEntry is a plain repr(C, packed) record; viewing it as bytes is sound.
        let bytes = unsafe {
            core::slice::from_raw_parts(map.as_ptr().cast::<u8>(), core::mem::size_of_val(&map))
        };
        let mut mem = FakeMem::new();
        let addr = mem.place(bytes);
        let mut info = MultibootInfo::default();
        let mut mb = Multiboot::from_ref(&mut info, &mut mem);
        mb.set_memory_regions(Some((addr, map.len())));
        mb.set_command_line(Some("janus.selftest=none"));
        mb.set_modules(Some(&[
            Module::new(0x20_0000, 0x28_0000, Some("target/janus/janus-kernel")),
            Module::new(0x28_0000, 0x28_0100, Some("target/janus/run/manifest.bin")),
        ]));

        let info = MachineInfo::from_multiboot(&mb).expect("valid info");
        assert_eq!(info.regions.len(), 3);
        assert_eq!(info.regions[1].start, 0x10_0000);
        assert_eq!(info.regions[2].kind, RegionKind::Reserved);
        assert_eq!(info.usable_bytes(), 0x9_fc00 + 0x7ef_0000);
        assert_eq!(info.top_of_ram(), 0x7ff_0000);
        assert_eq!(info.cmdline, Some("janus.selftest=none"));
        assert_eq!(info.modules[0].name(), "janus-kernel");
        assert_eq!(info.module("manifest.bin").map(|m| m.len()), Some(0x100));
        assert!(info.module("absent").is_none());
    }

    #[test]
    fn missing_memory_information_is_an_error() {
        let mut mem = FakeMem::new();
        let mut info = MultibootInfo::default();
        let mb = Multiboot::from_ref(&mut info, &mut mem);
        assert_eq!(
            MachineInfo::from_multiboot(&mb).unwrap_err(),
            MbError::NoMemoryInfo
        );
    }

    #[test]
    fn lower_upper_bounds_stand_in_for_a_map() {
        let mut mem = FakeMem::new();
        let mut info = MultibootInfo::default();
        let mut mb = Multiboot::from_ref(&mut info, &mut mem);
        mb.set_memory_bounds(Some((639, 130_048)));
        let info = MachineInfo::from_multiboot(&mb).expect("bounds are enough");
        assert_eq!(info.regions.len(), 2);
        assert_eq!(info.top_of_ram(), 0x10_0000 + 130_048 * 1024);
    }
}
