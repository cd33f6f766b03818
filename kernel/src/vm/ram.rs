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
