//! A page the hypervisor writes into (hypercall page, shared_info, the TSC page, hypercall
//! input), read through atomics because another agent changes it under the probe.

use core::sync::atomic::{AtomicU64, Ordering};

#[repr(C, align(4096))]
pub struct Page(pub [AtomicU64; 512]);

impl Page {
    pub const fn new() -> Self {
        Page([const { AtomicU64::new(0) }; 512])
    }

    pub fn addr(&self) -> u64 {
        self as *const Page as u64
    }

    pub fn word(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Acquire)
    }

    pub fn byte(&self, off: usize) -> u8 {
        self.word(off / 8).to_le_bytes()[off % 8]
    }
}
