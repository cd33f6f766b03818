//! Locked read-modify-write of guest words shared with running vCPUs (Xen's event-channel
//! bitmaps): a copy in and out would lose the guest's concurrent updates.
#![expect(unsafe_code)]
// UNSAFETY: the word is in guest RAM, which the host identity-maps for the VM's life.

use core::sync::atomic::{AtomicU64, Ordering};
use vcpu::{MemError, RamRegion};

/// The host address of the aligned 8-byte guest word at `gpa`, if it lies inside `ram`.
fn word(ram: RamRegion, gpa: u64) -> Result<*mut u64, MemError> {
    let err = MemError { gpa, len: 8 };
    if !gpa.is_multiple_of(8) || gpa.checked_add(8).is_none_or(|e| e > ram.size) {
        return Err(err);
    }
    // Its chunk zeroed first, like any access the hypervisor makes for the guest.
    vcpu::GuestRam::new(ram).ready(gpa, 8);
    Ok(vcpu::host_ptr(ram.hpa_base + gpa).cast::<u64>())
}

pub fn fetch_or(ram: RamRegion, gpa: u64, bits: u64) -> Result<u64, MemError> {
    let p = word(ram, gpa)?;
    // SAFETY: aligned and inside guest RAM, which lives as long as the kernel. The guest's
    // vCPUs update the word with their own locked instructions; the personality's plain
    // copies of the same page (reads of the bitmaps) may see a stale value but cannot lose
    // an update made here, which is what the lock prefix is for.
    Ok(unsafe { AtomicU64::from_ptr(p) }.fetch_or(bits, Ordering::AcqRel))
}

pub fn fetch_and(ram: RamRegion, gpa: u64, bits: u64) -> Result<u64, MemError> {
    let p = word(ram, gpa)?;
    // SAFETY: as in `fetch_or`.
    Ok(unsafe { AtomicU64::from_ptr(p) }.fetch_and(bits, Ordering::AcqRel))
}
