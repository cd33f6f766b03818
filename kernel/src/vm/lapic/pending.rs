//! What other pCPUs post to a vCPU (IPIs, device messages, ABI events, INIT/SIPI): a
//! lock-free set its owner folds into the APIC's IRR before entry.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

/// Interrupt requests posted to a vCPU from anywhere; drained into IRR by its owner.
pub struct Pending {
    bits: [AtomicU64; 4],
    /// Vectors whose ABI says the guest does not EOI them (they skip ISR); sticky.
    no_eoi: [AtomicU64; 4],
    /// Vectors posted level-triggered since the last drain (they go to TMR).
    level: [AtomicU64; 4],
    /// Something other than an interrupt wants the vCPU to look again (an ABI event).
    kicked: AtomicBool,
    init: AtomicBool,
    nmi: AtomicBool,
    sipi: AtomicU8,
    sipi_valid: AtomicBool,
}

impl Pending {
    pub const fn new() -> Self {
        Self {
            bits: [const { AtomicU64::new(0) }; 4],
            no_eoi: [const { AtomicU64::new(0) }; 4],
            level: [const { AtomicU64::new(0) }; 4],
            kicked: AtomicBool::new(false),
            init: AtomicBool::new(false),
            nmi: AtomicBool::new(false),
            sipi: AtomicU8::new(0),
            sipi_valid: AtomicBool::new(false),
        }
    }

    /// An interrupt the guest EOIs. It also ends a no-EOI marking of the vector: an ABI that
    /// stopped delivering it without EOI (Xen's callback vector given up for per-vCPU upcall
    /// vectors, or moved to another vector) must not leave it stranded outside ISR for ever.
    pub fn post(&self, vector: u8) {
        let (w, b) = (usize::from(vector / 64), 1u64 << (vector % 64));
        if self.no_eoi[w].load(Ordering::Acquire) & b != 0 {
            self.no_eoi[w].fetch_and(!b, Ordering::AcqRel);
        }
        self.bits[w].fetch_or(b, Ordering::AcqRel);
    }

    /// A level-triggered interrupt (an IOAPIC pin): its EOI is broadcast back.
    pub fn post_level(&self, vector: u8) {
        let (w, b) = (usize::from(vector / 64), 1u64 << (vector % 64));
        self.level[w].fetch_or(b, Ordering::AcqRel);
        self.post(vector);
    }

    pub fn post_no_eoi(&self, vector: u8) {
        let (w, b) = (usize::from(vector / 64), 1u64 << (vector % 64));
        self.no_eoi[w].fetch_or(b, Ordering::AcqRel);
        self.bits[w].fetch_or(b, Ordering::AcqRel);
    }

    pub fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
    }

    pub fn take_kick(&self) -> bool {
        self.kicked.swap(false, Ordering::AcqRel)
    }

    pub fn post_nmi(&self) {
        self.nmi.store(true, Ordering::Release);
    }

    pub fn take_nmi(&self) -> bool {
        self.nmi.swap(false, Ordering::AcqRel)
    }

    pub fn post_init(&self) {
        self.init.store(true, Ordering::Release);
    }

    pub fn post_sipi(&self, vector: u8) {
        self.sipi.store(vector, Ordering::Relaxed);
        self.sipi_valid.store(true, Ordering::Release);
    }

    pub fn take_init(&self) -> bool {
        self.init.swap(false, Ordering::AcqRel)
    }

    pub fn take_sipi(&self) -> Option<u8> {
        self.sipi_valid
            .swap(false, Ordering::AcqRel)
            .then(|| self.sipi.load(Ordering::Relaxed))
    }

    /// Forgets everything posted (a VM that starts over); `no_eoi` vectors included.
    pub fn clear(&self) {
        for w in self.bits.iter().chain(&self.no_eoi).chain(&self.level) {
            w.store(0, Ordering::Release);
        }
        for f in [&self.kicked, &self.init, &self.nmi, &self.sipi_valid] {
            f.store(false, Ordering::Release);
        }
    }

    /// Whether what was posted wakes a vCPU: anything, except that a vCPU waiting for SIPI
    /// heeds only INIT and SIPI (a CPU in that state takes no interrupts; waking it for one
    /// would only put it back to sleep, over and over).
    pub fn wakes(&self, waiting_for_sipi: bool) -> bool {
        if waiting_for_sipi {
            self.init.load(Ordering::Acquire) || self.sipi_valid.load(Ordering::Acquire)
        } else {
            self.any()
        }
    }

    pub fn any(&self) -> bool {
        self.bits.iter().any(|w| w.load(Ordering::Acquire) != 0)
            || self.kicked.load(Ordering::Acquire)
            || self.nmi.load(Ordering::Acquire)
            || self.init.load(Ordering::Acquire)
            || self.sipi_valid.load(Ordering::Acquire)
    }

    pub(super) fn drain_into(
        &self,
        irr: &mut [u64; 4],
        no_eoi: &mut [u64; 4],
        level: &mut [u64; 4],
    ) {
        // The vector's property as of the latest posting (see `post`).
        for (w, dst) in self.no_eoi.iter().zip(no_eoi.iter_mut()) {
            *dst = w.load(Ordering::Acquire);
        }
        // Taken before the vectors, so a level posting is never seen without its mark.
        for (w, dst) in self.level.iter().zip(level.iter_mut()) {
            *dst = w.swap(0, Ordering::AcqRel);
        }
        for (w, dst) in self.bits.iter().zip(irr.iter_mut()) {
            *dst |= w.swap(0, Ordering::AcqRel);
        }
    }
}

impl Default for Pending {
    fn default() -> Self {
        Self::new()
    }
}
