//! Locked read-modify-write of guest words shared with running vCPUs (Xen's event-channel
//! bitmaps): a copy in and out would lose the guest's concurrent updates.
#![allow(unsafe_code)]
// UNSAFETY: the pointer is into guest RAM, which the host identity-maps for the VM's life.

use core::sync::atomic::{AtomicU64, Ordering};

/// `p` must be 8-byte aligned and inside a VM's RAM (checked by the caller).
pub fn fetch_or(p: *mut u64, bits: u64) -> u64 {
    // SAFETY: aligned, in guest RAM that lives as long as the kernel; every access to the
    // word from this side is atomic, and the guest's own are the CPU's.
    unsafe { AtomicU64::from_ptr(p) }.fetch_or(bits, Ordering::AcqRel)
}

pub fn fetch_and(p: *mut u64, bits: u64) -> u64 {
    // SAFETY: as in `fetch_or`.
    unsafe { AtomicU64::from_ptr(p) }.fetch_and(bits, Ordering::AcqRel)
}
