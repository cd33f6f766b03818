//! The partition reference counter (100 ns ticks since the partition was created) and the
//! reference TSC page that lets the guest compute it without exiting.
//!
//! Both are one function of the guest TSC, `((tsc * scale) >> 64) + offset`, so that the
//! MSR and the page can never disagree: a guest that falls back from one to the other (Linux
//! does whenever the page's sequence reads 0) sees no step.

use virt::personality::Host;
use virt::{GuestMemory, MemError};

/// Reference-counter ticks per second (100 ns units).
pub const REF_HZ: u64 = 10_000_000;

/// Offsets inside the reference TSC page.
pub mod page {
    pub const SEQUENCE: u64 = 0x00;
    pub const SCALE: u64 = 0x08;
    pub const OFFSET: u64 = 0x10;
}

const fn mul_hi(a: u64, b: u64) -> u64 {
    ((a as u128 * b as u128) >> 64) as u64
}

/// `floor(2^64 * REF_HZ / tsc_hz)`, or `None` when the quotient does not fit 64 bits (a TSC
/// no faster than the reference counter) or the rate is unknown.
pub const fn scale_for(tsc_hz: u64) -> Option<u64> {
    if tsc_hz <= REF_HZ {
        return None;
    }
    Some((((REF_HZ as u128) << 64) / tsc_hz as u128) as u64)
}

#[derive(Clone, Copy, Debug)]
pub struct RefClock {
    /// What the kernel programs with `Vcpu::set_tsc_offset`: guest TSC = host TSC + this.
    tsc_offset: u64,
    tsc_hz: u64,
    scale: Option<u64>,
    /// Two's complement of the tick count at creation, so the counter starts at 0.
    offset: u64,
    /// Fallback epoch when the TSC cannot be scaled: host nanoseconds at creation.
    ns_base: u64,
}

impl RefClock {
    pub fn new(host: &dyn Host, tsc_offset: u64) -> Self {
        let tsc_hz = host.tsc_hz();
        let scale = scale_for(tsc_hz);
        let tsc0 = host.tsc().wrapping_add(tsc_offset);
        let offset = match scale {
            Some(s) => 0u64.wrapping_sub(mul_hi(tsc0, s)),
            None => 0,
        };
        RefClock {
            tsc_offset,
            tsc_hz,
            scale,
            offset,
            ns_base: host.now_ns(),
        }
    }

    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Whether the TSC page can describe this clock (and so may be advertised).
    pub fn page_usable(&self) -> bool {
        self.scale.is_some()
    }

    /// `(scale, offset)` as the page publishes them.
    pub fn page_params(&self) -> Option<(u64, u64)> {
        self.scale.map(|s| (s, self.offset))
    }

    /// The counter for a given guest TSC value (what the guest computes from the page).
    pub fn at_guest_tsc(&self, tsc: u64) -> Option<u64> {
        self.scale.map(|s| mul_hi(tsc, s).wrapping_add(self.offset))
    }

    /// The counter now, in 100 ns ticks.
    pub fn now(&self, host: &dyn Host) -> u64 {
        let tsc = host.tsc().wrapping_add(self.tsc_offset);
        match self.at_guest_tsc(tsc) {
            Some(t) => t,
            None => host.now_ns().saturating_sub(self.ns_base) / 100,
        }
    }

    /// Host time at which the counter reaches `deadline`, given the counter and host time
    /// sampled together now. Ticks are converted through nanoseconds rather than the TSC
    /// because that is the unit of `Host::set_timer`; an early wake-up is re-armed by the
    /// caller, so rounding never loses an expiry.
    pub fn host_deadline(now_ref: u64, now_ns: u64, deadline: u64) -> u64 {
        let ticks = deadline.saturating_sub(now_ref);
        now_ns.saturating_add(ticks.saturating_mul(100))
    }

    /// Publishes the page at `gpa`. The sequence is zeroed first so that a reader racing
    /// with the update retries (or falls back to the MSR) instead of mixing old and new
    /// values; a clock that cannot be scaled leaves the sequence at 0 for good.
    pub fn write_page(
        &self,
        mem: &dyn GuestMemory,
        gpa: u64,
        sequence: u32,
    ) -> Result<(), MemError> {
        mem.write_u32(gpa + page::SEQUENCE, 0)?;
        let Some((scale, offset)) = self.page_params() else {
            return Ok(());
        };
        mem.write_u64(gpa + page::SCALE, scale)?;
        mem.write_u64(gpa + page::OFFSET, offset)?;
        mem.write_u32(gpa + page::SEQUENCE, sequence)
    }
}

/// The next page sequence: never 0 (invalid) and never all-ones (invalid in older TLFS
/// revisions, which some guests still follow).
pub fn next_sequence(seq: u32) -> u32 {
    match seq.wrapping_add(1) {
        0 | u32::MAX => 1,
        s => s,
    }
}
