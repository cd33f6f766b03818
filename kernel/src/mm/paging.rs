//! The host page tables: all of physical memory identity mapped with 2 MiB pages, write-back
//! where the memory map says RAM and uncached everywhere else (APIC, IOAPIC, PCI holes).
#![expect(unsafe_code)]
// UNSAFETY: writing fresh page-table frames and loading CR3.

use super::phys;
use boot::mbinfo::{MachineInfo, RegionKind};
use x86::bits64::paging::{
    PAddr, PD, PDEntry, PDFlags, PDPT, PDPTEntry, PDPTFlags, PML4, PML4Entry, PML4Flags,
};

const GIB: u64 = 1 << 30;
const LARGE: u64 = 2 << 20;
const FRAME: u64 = 4096;

#[derive(Debug)]
pub struct PagingError;

/// Maps `[0, max(top of RAM, 4 GiB))` and switches to it; returns the mapped size.
pub fn init(info: &MachineInfo<'_>) -> Result<u64, PagingError> {
    let span = info.top_of_ram().max(4 * GIB).next_multiple_of(GIB);
    let pdpts = span.div_ceil(512 * GIB);
    let pml4_pa = phys::alloc_zeroed(1, FRAME).map_err(|_| PagingError)?;
    // SAFETY: a freshly allocated, zeroed, identity-mapped frame is a valid empty table.
    let pml4 = unsafe { &mut *(pml4_pa as *mut PML4) };
    for i in 0..pdpts {
        let pdpt_pa = phys::alloc_zeroed(1, FRAME).map_err(|_| PagingError)?;
        pml4[i as usize] = PML4Entry::new(PAddr(pdpt_pa), PML4Flags::P | PML4Flags::RW);
        // SAFETY: as above.
        let pdpt = unsafe { &mut *(pdpt_pa as *mut PDPT) };
        for j in 0..512u64 {
            let gib = i * 512 + j;
            if gib * GIB >= span {
                break;
            }
            let pd_pa = phys::alloc_zeroed(1, FRAME).map_err(|_| PagingError)?;
            pdpt[j as usize] = PDPTEntry::new(PAddr(pd_pa), PDPTFlags::P | PDPTFlags::RW);
            // SAFETY: as above.
            let pd = unsafe { &mut *(pd_pa as *mut PD) };
            for (k, entry) in pd.iter_mut().enumerate() {
                let pa = gib * GIB + k as u64 * LARGE;
                let mut flags = PDFlags::P | PDFlags::RW | PDFlags::PS;
                if !is_ram(info, pa, pa + LARGE) {
                    flags |= PDFlags::PCD | PDFlags::PWT;
                }
                *entry = PDEntry::new(PAddr(pa), flags);
            }
        }
    }
    // SAFETY: the new tables map everything the old ones did (the low 4 GiB, identity), so
    // every live pointer stays valid across the switch.
    unsafe { x86::controlregs::cr3_write(pml4_pa) };
    SPAN.store(span, core::sync::atomic::Ordering::Release);
    Ok(span)
}

static SPAN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The end of the identity map `init` built (0 before it): device BARs below it are
/// reachable, uncached, at their physical address.
pub fn mapped_span() -> u64 {
    SPAN.load(core::sync::atomic::Ordering::Acquire)
}

/// Walks the live host tables and compares them with the identity map `init` built, 2 MiB
/// page by page; nothing changes them afterwards, so any mismatch is damage.
pub fn damaged() -> super::mapcheck::Mismatches {
    let span = SPAN.load(core::sync::atomic::Ordering::Acquire);
    // SAFETY: reading CR3 has no side effects.
    let root = unsafe { x86::controlregs::cr3() } & !0xfff;
    // Every table the walk reaches was built by `init` in identity-mapped frames owned for
    // ever, and nothing writes them; they are only read here ("see above" below).
    // SAFETY: see above.
    let pml4 = unsafe { &*(root as *const PML4) };
    let walk = |va: u64| -> Option<u64> {
        let v = x86::bits64::paging::VAddr::from(va);
        let l4 = pml4[x86::bits64::paging::pml4_index(v)];
        if !l4.is_present() {
            return None;
        }
        // SAFETY: see above.
        let pdpt = unsafe { &*(l4.address().as_u64() as *const PDPT) };
        let l3 = pdpt[x86::bits64::paging::pdpt_index(v)];
        if !l3.is_present() {
            return None;
        }
        // SAFETY: see above.
        let pd = unsafe { &*(l3.address().as_u64() as *const PD) };
        let l2 = pd[x86::bits64::paging::pd_index(v)];
        (l2.is_present() && l2.is_page()).then(|| l2.address().as_u64())
    };
    super::mapcheck::compare(0..span, LARGE, Some, walk)
}

fn is_ram(info: &MachineInfo<'_>, start: u64, end: u64) -> bool {
    info.regions.iter().any(|r| {
        matches!(r.kind, RegionKind::Usable | RegionKind::AcpiReclaimable)
            && r.start <= start
            && end <= r.end
    })
}
