//! The host page tables: all of physical memory identity mapped with 2 MiB pages, write-back
//! where the memory map says RAM and uncached everywhere else (APIC, IOAPIC, PCI holes).
#![expect(unsafe_code)]
// UNSAFETY: writing fresh page-table frames and loading CR3.

use super::phys;
use boot::mbinfo::{MachineInfo, RegionKind};
use x86::bits64::paging::{
    PAddr, PD, PDEntry, PDFlags, PDPT, PDPTEntry, PDPTFlags, PML4, PML4Entry, PML4Flags, PT,
    PTEntry, PTFlags, VAddr, pd_index, pdpt_index, pml4_index, pt_index,
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

/// Unmaps the 4 KiB page at `page` (a stack's guard page), splitting its 2 MiB page into
/// 4 KiB ones with the same attributes. Only before the APs start: no other CPU may hold a
/// translation of the old large page.
pub fn guard(page: u64) -> Result<(), PagingError> {
    if !page.is_multiple_of(FRAME) || page >= SPAN.load(core::sync::atomic::Ordering::Acquire) {
        return Err(PagingError);
    }
    let v = VAddr::from(page);
    // SAFETY: reading CR3 has no side effects.
    let root = unsafe { x86::controlregs::cr3() } & !0xfff;
    // `init` built these tables in identity-mapped frames owned for ever, and only this
    // function (on the BSP, before the APs run) changes them.
    // SAFETY: see above.
    let pml4 = unsafe { &*(root as *const PML4) };
    // SAFETY: see above.
    let pdpt = unsafe { &*(pml4[pml4_index(v)].address().as_u64() as *const PDPT) };
    // SAFETY: see above.
    let pd = unsafe { &mut *(pdpt[pdpt_index(v)].address().as_u64() as *mut PD) };
    let entry = &mut pd[pd_index(v)];
    if !entry.is_present() {
        return Err(PagingError);
    }
    if entry.is_page() {
        let base = entry.address().as_u64();
        let mut flags = PTFlags::P | PTFlags::RW;
        if entry.flags().contains(PDFlags::PCD) {
            flags |= PTFlags::PCD | PTFlags::PWT;
        }
        let pt_pa = phys::alloc_zeroed(1, FRAME).map_err(|_| PagingError)?;
        // SAFETY: a freshly allocated, zeroed, identity-mapped frame.
        let pt = unsafe { &mut *(pt_pa as *mut PT) };
        for (i, e) in pt.iter_mut().enumerate() {
            *e = PTEntry::new(PAddr(base + i as u64 * FRAME), flags);
        }
        *entry = PDEntry::new(PAddr(pt_pa), PDFlags::P | PDFlags::RW);
    }
    // SAFETY: see above; the entry now points at a page table.
    let pt = unsafe { &mut *(entry.address().as_u64() as *mut PT) };
    pt[pt_index(v)] = PTEntry::new(PAddr(0), PTFlags::empty());
    // SAFETY: reloading CR3 only drops cached translations.
    unsafe { x86::tlb::flush_all() };
    Ok(())
}

/// Walks the live host tables and compares them with the identity map `init` built, 2 MiB
/// page by page; nothing changes them afterwards but the guard pages, so any other mismatch
/// is damage. A 2 MiB page split for a guard counts as intact when every 4 KiB page in it is
/// identity mapped except the guard pages, which are absent.
pub fn damaged() -> super::mapcheck::Mismatches {
    let span = SPAN.load(core::sync::atomic::Ordering::Acquire);
    // SAFETY: reading CR3 has no side effects.
    let root = unsafe { x86::controlregs::cr3() } & !0xfff;
    // Every table the walk reaches was built by `init` in identity-mapped frames owned for
    // ever, and nothing writes them; they are only read here ("see above" below).
    // SAFETY: see above.
    let pml4 = unsafe { &*(root as *const PML4) };
    let walk = |va: u64| -> Option<u64> {
        let v = VAddr::from(va);
        let l4 = pml4[pml4_index(v)];
        if !l4.is_present() {
            return None;
        }
        // SAFETY: see above.
        let pdpt = unsafe { &*(l4.address().as_u64() as *const PDPT) };
        let l3 = pdpt[pdpt_index(v)];
        if !l3.is_present() {
            return None;
        }
        // SAFETY: see above.
        let pd = unsafe { &*(l3.address().as_u64() as *const PD) };
        let l2 = pd[pd_index(v)];
        if !l2.is_present() {
            return None;
        }
        if l2.is_page() {
            return Some(l2.address().as_u64());
        }
        // SAFETY: see above.
        let pt = unsafe { &*(l2.address().as_u64() as *const PT) };
        let intact = pt.iter().enumerate().all(|(i, e)| {
            let page = va + i as u64 * FRAME;
            if crate::arch::stack::is_guard(page) {
                !e.is_present()
            } else {
                e.is_present() && e.address().as_u64() == page
            }
        });
        intact.then_some(va)
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
