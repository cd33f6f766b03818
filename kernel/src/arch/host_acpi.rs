//! What the host's own ACPI tables say: how many CPUs it has (so that bring-up need not wait
//! for stragglers that will not come), and the PM timer's port, which guests can use. The
//! hardware-emulation face gives an unenlightened guest the host's timer, read without an
//! exit, as the reference its TSC calibration needs (Linux allows 50,000 TSC cycles for a
//! reference read, which an emulated port exceeds when Janus itself runs under emulation).
#![expect(unsafe_code)]
// UNSAFETY: the `acpi` crate reads the tables through raw pointers the handler gives it; the
// low 4 GiB are identity mapped, where firmware keeps them.

use core::ptr::NonNull;
use spin::Once;

#[derive(Clone, Copy)]
struct Identity;

impl acpi::AcpiHandler for Identity {
    unsafe fn map_physical_region<T>(
        &self,
        phys: usize,
        size: usize,
    ) -> acpi::PhysicalMapping<Self, T> {
        let ptr = NonNull::new(phys as *mut T).unwrap_or(NonNull::dangling());
        // SAFETY: physical memory below 4 GiB is identity mapped for the kernel's lifetime;
        // the crate validates signatures, lengths and checksums before it trusts a table.
        unsafe { acpi::PhysicalMapping::new(phys, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &acpi::PhysicalMapping<Self, T>) {}
}

static PM_TIMER: Once<Option<u16>> = Once::new();

/// The host's ACPI PM timer port, if its FADT names one in I/O space (found once, at boot).
pub fn pm_timer_port() -> Option<u16> {
    *PM_TIMER.call_once(|| {
        // SAFETY: the BIOS area and the tables it points to are identity mapped (see above).
        let tables = unsafe { acpi::AcpiTables::search_for_rsdp_bios(Identity) }.ok()?;
        let fadt = tables.find_table::<acpi::fadt::Fadt>().ok()?;
        let timer = fadt.get().pm_timer_block().ok()??;
        if timer.address_space != acpi::address::AddressSpace::SystemIo {
            return None;
        }
        u16::try_from(timer.address).ok().filter(|&p| p != 0)
    })
}

static CPUS: Once<Option<usize>> = Once::new();

/// How many processors the host's MADT marks enabled (found once, at boot).
pub fn enabled_cpus() -> Option<usize> {
    *CPUS.call_once(|| {
        // SAFETY: as in `pm_timer_port`.
        let tables = unsafe { acpi::AcpiTables::search_for_rsdp_bios(Identity) }.ok()?;
        let madt = tables.find_table::<acpi::madt::Madt>().ok()?;
        let enabled = |flags: u32| flags & 1 != 0;
        let n = madt
            .get()
            .entries()
            .filter(|e| match e {
                acpi::madt::MadtEntry::LocalApic(a) => enabled(a.flags),
                acpi::madt::MadtEntry::LocalX2Apic(a) => enabled(a.flags),
                _ => false,
            })
            .count();
        (n > 0).then_some(n)
    })
}
