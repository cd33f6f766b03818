//! Guest RAM enters the nested tables a 2 MiB chunk at a time, zeroed, on its first use
//! (`virt::ram_chunks` says why): what the VM's loader wrote is mapped before the first
//! instruction, the rest when the guest first touches it (a nested page fault inside RAM) or
//! when the hypervisor first reads or writes it for the guest (`vcpu::GuestRam::ready`).

use super::Machine;
use super::state::Vm;
use core::sync::atomic::Ordering;
use virt::ram_chunks::{CHUNK, RamChunks};
use virt::{GuestMemory, RamRegion};

/// The guest-physical range of chunk `i` of `ram`, cut at the end of RAM.
fn chunk_range(ram: RamRegion, i: usize) -> Option<(u64, u64)> {
    let start = (i as u64).checked_mul(CHUNK)?;
    (start < ram.size).then(|| (start, CHUNK.min(ram.size - start)))
}

/// What a nested page fault at `gpa` inside RAM means.
#[derive(Debug, PartialEq, Eq)]
pub enum Populate {
    /// The chunk is mapped now (by this call or another vCPU's): enter the guest again.
    Mapped,
    /// The chunk was mapped already: the fault is not about a missing chunk.
    AlreadyMapped,
    /// No nested tables (the VM is going) or no memory for their frames.
    Failed,
}

/// Zeroes the chunk holding `gpa` if it is dirty and maps it into the VM's nested tables.
pub fn populate<C>(vm: &Vm<C>, m: &dyn Machine, gpa: u64) -> Populate {
    let Some(ram) = vm.info.get().map(|i| i.ram) else {
        return Populate::Failed;
    };
    let Some(chunks) = ram.chunks else {
        return Populate::AlreadyMapped;
    };
    let i = RamChunks::index(gpa);
    let Some((start, size)) = chunk_range(ram, i) else {
        return Populate::Failed;
    };
    if chunks.is_mapped(i) {
        return Populate::AlreadyMapped;
    }
    vcpu::GuestRam::new(ram).ready(start, size);
    let mut npt = vm.npt.lock();
    let Some(npt) = npt.as_mut() else {
        return Populate::Failed;
    };
    // Under the tables' lock: a vCPU that faulted on the same chunk meanwhile finds it
    // mapped and only enters again.
    if chunks.is_mapped(i) {
        return Populate::Mapped;
    }
    if !m.nested_map(npt, start, Some(ram.hpa_base + start), size) {
        return Populate::Failed;
    }
    chunks.set_mapped(i);
    Populate::Mapped
}

/// Maps every chunk the loader made clean, so that the guest does not fault on its own
/// kernel; false when out of memory for the tables.
pub fn map_loaded(npt: &mut vcpu::NestedPageTable, ram: RamRegion, m: &dyn Machine) -> bool {
    let Some(chunks) = ram.chunks else {
        return m.nested_map(npt, 0, Some(ram.hpa_base), ram.size);
    };
    let mut i = 0;
    while let Some((start, size)) = chunk_range(ram, i) {
        if chunks.is_clean_unmapped(i) {
            if !m.nested_map(npt, start, Some(ram.hpa_base + start), size) {
                return false;
            }
            chunks.set_mapped(i);
        }
        i += 1;
    }
    true
}

/// Takes all RAM out of the nested tables and marks it dirty, for a VM that starts over: its
/// next life sees zeroes wherever it looks. Only while none of its vCPUs runs.
pub fn forget<C>(vm: &Vm<C>, m: &dyn Machine) -> bool {
    let Some(ram) = vm.info.get().map(|i| i.ram) else {
        return false;
    };
    let mut npt = vm.npt.lock();
    let Some(npt) = npt.as_mut() else {
        return false;
    };
    let unmapped = m.nested_map(npt, 0, None, ram.size);
    match ram.chunks {
        Some(chunks) => chunks.reset(),
        // Memory without a tracker is zeroed here and now.
        None => {
            let zeroes = [0u8; 4096];
            let mem = vcpu::GuestRam::new(ram);
            let mut at = 0;
            while at < ram.size {
                let n = (ram.size - at).min(4096);
                let _ = mem.write(at, &zeroes[..n as usize]);
                at += n;
            }
        }
    }
    vm.nested_epoch.fetch_add(1, Ordering::AcqRel);
    unmapped
}

/// Guest RAM as a VM's loader sees it: bytes taken from the images the host keeps for ever
/// (the kernel and initrd modules, or what was read from the VM's disk) are copied when their
/// chunks are first used rather than before the VM starts, and zeroes over RAM not used yet
/// (a kernel's bss) are not written at all: first use zeroes it (`virt::ram_chunks`).
pub struct LoadingRam {
    ram: vcpu::GuestRam,
    kept: [&'static [u8]; 2],
}

impl LoadingRam {
    pub fn new(ram: RamRegion, kernel: &'static [u8], initrd: Option<&'static [u8]>) -> Self {
        LoadingRam {
            ram: vcpu::GuestRam::new(ram),
            kept: [kernel, initrd.unwrap_or(&[])],
        }
    }

    /// `data` as the part of a kept image it is, if it is one (the loader writes the image's
    /// segments as slices of it).
    fn kept_part(&self, data: &[u8]) -> Option<&'static [u8]> {
        let p = data.as_ptr() as usize;
        self.kept.iter().find_map(|img| {
            let off = p.checked_sub(img.as_ptr() as usize)?;
            img.get(off..off.checked_add(data.len())?)
        })
    }
}

impl GuestMemory for LoadingRam {
    fn size(&self) -> u64 {
        self.ram.size()
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), virt::MemError> {
        self.ram.read(gpa, buf)
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), virt::MemError> {
        if let Some(kept) = self.kept_part(data) {
            return self.ram.write_kept(gpa, kept);
        }
        let len = data.len() as u64;
        if self.ram.zeroes_pending(gpa, len) && data.iter().all(|&b| b == 0) {
            return virt::check_range(self.ram.size(), gpa, data.len()).map(|_| ());
        }
        self.ram.write(gpa, data)
    }

    fn dma_range(&self, gpa: u64, len: u64) -> Option<u64> {
        self.ram.dma_range(gpa, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loader's writes from a kept image are deferred to first use, its zeroes over unused
    /// RAM dropped, anything else written now; what the guest then reads is the same.
    #[test]
    fn a_loader_defers_what_the_images_hold() {
        static KERNEL: [u8; 8192] = [0x11; 8192];
        let size = 4 * CHUNK as usize;
        let backing: &'static mut [u8] = Box::leak(vec![0xA5u8; size].into_boxed_slice());
        let base = backing.as_mut_ptr() as u64;
        let chunks: &'static RamChunks = Box::leak(Box::new(RamChunks::new()));
        let region = RamRegion {
            hpa_base: base,
            size: size as u64,
            chunks: Some(chunks),
        };
        let mem = LoadingRam::new(region, &KERNEL, None);
        let copy = KERNEL.to_vec();
        // A segment (a slice of the image), its bss, a table the loader builds.
        mem.write(CHUNK + 4096, &KERNEL[4096..]).unwrap();
        mem.write(CHUNK + 8192, &[0; 4096]).unwrap();
        mem.write(3 * CHUNK, &copy[..16]).unwrap();
        assert_eq!(chunks.fills().count(), 1);
        assert!(chunks.is_clean_unmapped(3), "an ordinary write is done now");
        assert!(
            !chunks.is_clean_unmapped(1),
            "the segment's chunk waits for first use"
        );
        let ram = vcpu::GuestRam::new(region);
        let mut b = [0u8; 8];
        ram.read(CHUNK + 4096 * 2 - 4, &mut b).unwrap();
        assert_eq!(b, [0x11, 0x11, 0x11, 0x11, 0, 0, 0, 0]);
        ram.read(3 * CHUNK, &mut b).unwrap();
        assert_eq!(b, [0x11; 8]);
        assert!(mem.write(size as u64 - 4, &KERNEL[..8]).is_err());
        assert!(mem.write(size as u64 - 4, &[0; 8]).is_err());
    }
}
