//! Guest RAM is zeroed when it is first used, 2 MiB at a time, not when the VM is built.
//!
//! Zeroing a VM's whole RAM up front was most of the time between the hypervisor's banner and
//! a VM's first instruction (256 MiB: 0.3-0.6 s under QEMU, where every host page is also
//! faulted in on first touch), and a guest seldom touches all of its RAM. A chunk is zeroed by
//! whoever reaches it first: the guest's nested page fault on it, or the hypervisor reading or
//! writing guest memory on the guest's behalf (a loader, a device's DMA, a personality's page);
//! and it enters the nested tables only once it is clean, so no guest ever sees what the memory
//! held before.
//!
//! The same holds for what a VM's loader puts in RAM from images the host keeps for ever
//! (the guest's kernel and initrd modules): such a write is recorded as a *fill* and done when
//! its chunk is first used, after the zeroing, instead of before the VM's first instruction.
//! Copying a 50 MiB kernel into memory the host had not touched yet was most of the time a VM
//! took to start; now each chunk is copied when the guest first touches it, and a chunk it
//! never touches never is.
//!
//! This is the bookkeeping; the zeroing, the copying and the nested tables are the caller's.

use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// The granule: one large nested page.
pub const CHUNK: u64 = 2 << 20;
/// RAM a tracker covers: 4 GiB.
pub const MAX_CHUNKS: usize = 2048;

/// Not zeroed since the memory was handed to the VM: it may hold anything.
const DIRTY: u8 = 0;
/// Being zeroed by one pCPU; the others wait.
const ZEROING: u8 = 1;
/// Zero or written by the VM's own loader or devices, and not in the nested tables.
const CLEAN: u8 = 2;
/// Clean and mapped in the nested tables.
const MAPPED: u8 = 3;

/// Fills a tracker records: a kernel's loadable segments and an initrd, with room to spare.
pub const MAX_FILLS: usize = 16;

/// One recorded fill: `len` bytes from host address `src` (a `&'static [u8]`) go to RAM offset
/// `at` when their chunk is first used.
struct Fill {
    at: AtomicU64,
    src: AtomicUsize,
    len: AtomicUsize,
}

/// A recorded fill as its users see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillRange {
    /// Where in RAM the bytes go.
    pub at: u64,
    /// The host address of the bytes: the start of a `&'static [u8]` of `len` bytes.
    pub src: usize,
    pub len: usize,
}

impl FillRange {
    /// The part of this fill that lands in `[start, end)` of RAM: `(RAM offset, offset into
    /// the bytes, length)`.
    pub fn within(&self, start: u64, end: u64) -> Option<(u64, usize, usize)> {
        let from = self.at.max(start);
        let to = self.at.saturating_add(self.len as u64).min(end);
        (from < to).then(|| (from, (from - self.at) as usize, (to - from) as usize))
    }
}

/// The state of each 2 MiB chunk of one VM's RAM.
pub struct RamChunks {
    state: [AtomicU8; MAX_CHUNKS],
    fills: [Fill; MAX_FILLS],
    fill_count: AtomicUsize,
}

impl Default for RamChunks {
    fn default() -> Self {
        Self::new()
    }
}

impl RamChunks {
    /// Every chunk dirty.
    pub const fn new() -> Self {
        RamChunks {
            state: [const { AtomicU8::new(DIRTY) }; MAX_CHUNKS],
            fills: [const {
                Fill {
                    at: AtomicU64::new(0),
                    src: AtomicUsize::new(0),
                    len: AtomicUsize::new(0),
                }
            }; MAX_FILLS],
            fill_count: AtomicUsize::new(0),
        }
    }

    /// Records that `data` goes to RAM offset `at` when its chunks are first used, if every
    /// chunk it touches is still dirty (else it must be written now: a clean chunk is not
    /// readied again) and there is room; whether it was recorded. Only while nothing else
    /// uses the RAM (the VM's loader, before its vCPUs run).
    pub fn add_fill(&self, at: u64, data: &'static [u8]) -> bool {
        let Some(end) = at.checked_add(data.len() as u64) else {
            return false;
        };
        if data.is_empty() || !self.all_dirty(at, end) {
            return false;
        }
        let n = self.fill_count.load(Ordering::Acquire);
        let Some(f) = self.fills.get(n) else {
            return false;
        };
        f.at.store(at, Ordering::Relaxed);
        f.src.store(data.as_ptr() as usize, Ordering::Relaxed);
        f.len.store(data.len(), Ordering::Relaxed);
        self.fill_count.store(n + 1, Ordering::Release);
        true
    }

    /// Whether every chunk `[start, end)` touches is dirty (inside the tracker).
    fn all_dirty(&self, start: u64, end: u64) -> bool {
        if end <= start {
            return true;
        }
        (Self::index(start)..=Self::index(end - 1)).all(|i| {
            self.state
                .get(i)
                .is_some_and(|s| s.load(Ordering::Acquire) == DIRTY)
        })
    }

    /// Whether writing zeroes to `[at, at + len)` now would change nothing the guest can
    /// see: every chunk it touches will be zeroed on first use and no fill lands in it.
    pub fn zeroes_pending(&self, at: u64, len: u64) -> bool {
        let Some(end) = at.checked_add(len) else {
            return false;
        };
        self.all_dirty(at, end) && self.fills().all(|f| f.within(at, end).is_none())
    }

    /// The recorded fills, in the order they were recorded (later ones win where they meet).
    pub fn fills(&self) -> impl Iterator<Item = FillRange> + '_ {
        let n = self.fill_count.load(Ordering::Acquire).min(MAX_FILLS);
        self.fills[..n].iter().map(|f| FillRange {
            at: f.at.load(Ordering::Relaxed),
            src: f.src.load(Ordering::Relaxed),
            len: f.len.load(Ordering::Relaxed),
        })
    }

    /// The chunk that holds byte `offset` of RAM.
    pub fn index(offset: u64) -> usize {
        usize::try_from(offset / CHUNK).unwrap_or(usize::MAX)
    }

    /// Makes every chunk that `[offset, offset + len)` touches clean, calling `zero(i)` for
    /// each chunk `i` this call has to zero (exactly one caller zeroes a chunk; others that
    /// need it meanwhile wait for it). Chunks beyond the tracker are left to the caller's
    /// bounds check.
    pub fn ready(&self, offset: u64, len: u64, mut zero: impl FnMut(usize)) {
        if len == 0 {
            return;
        }
        let first = Self::index(offset);
        let last = Self::index(offset.saturating_add(len - 1));
        for i in first..=last.min(MAX_CHUNKS - 1) {
            self.ready_chunk(i, &mut zero);
        }
    }

    fn ready_chunk(&self, i: usize, zero: &mut impl FnMut(usize)) {
        let Some(s) = self.state.get(i) else { return };
        loop {
            match s.load(Ordering::Acquire) {
                CLEAN | MAPPED => return,
                DIRTY => {
                    if s.compare_exchange(DIRTY, ZEROING, Ordering::Acquire, Ordering::Acquire)
                        .is_ok()
                    {
                        zero(i);
                        s.store(CLEAN, Ordering::Release);
                        return;
                    }
                }
                // Another pCPU is zeroing it: 2 MiB of stores, no locks held.
                _ => core::hint::spin_loop(),
            }
        }
    }

    /// Whether chunk `i` is in the nested tables.
    pub fn is_mapped(&self, i: usize) -> bool {
        self.state
            .get(i)
            .is_some_and(|s| s.load(Ordering::Acquire) == MAPPED)
    }

    /// Whether chunk `i` is clean and not yet in the nested tables.
    pub fn is_clean_unmapped(&self, i: usize) -> bool {
        self.state
            .get(i)
            .is_some_and(|s| s.load(Ordering::Acquire) == CLEAN)
    }

    /// Records that clean chunk `i` is now in the nested tables. The caller holds the lock
    /// of those tables, so two pCPUs faulting on the same chunk map it once; false (and no
    /// change) when the chunk is not clean.
    pub fn set_mapped(&self, i: usize) -> bool {
        self.state.get(i).is_some_and(|s| {
            s.compare_exchange(CLEAN, MAPPED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Every chunk dirty again, for a VM that starts over. Only while nothing uses the RAM:
    /// its vCPUs are out of the guest and its chunks out of the nested tables.
    pub fn reset(&self) {
        for s in &self.state {
            s.store(DIRTY, Ordering::Release);
        }
        self.fill_count.store(0, Ordering::Release);
    }
}

impl core::fmt::Debug for RamChunks {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mapped = self
            .state
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) == MAPPED);
        write!(f, "RamChunks {{ mapped: {} }}", mapped.count())
    }
}

/// Trackers are compared by identity: two VMs never share one.
impl PartialEq for RamChunks {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self, other)
    }
}

impl Eq for RamChunks {}

#[cfg(feature = "defmt")]
impl defmt::Format for RamChunks {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "RamChunks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_range_zeroes_each_chunk_it_touches_once() {
        let c = RamChunks::new();
        let mut zeroed = Vec::new();
        c.ready(CHUNK - 8, 16, |i| zeroed.push(i));
        assert_eq!(zeroed, [0, 1]);
        c.ready(0, 3 * CHUNK, |i| zeroed.push(i));
        assert_eq!(zeroed, [0, 1, 2]);
        c.ready(5 * CHUNK, 0, |i| zeroed.push(i));
        assert_eq!(zeroed, [0, 1, 2]);
    }

    #[test]
    fn only_clean_chunks_are_mapped_and_a_reset_makes_all_dirty() {
        let c = RamChunks::new();
        assert!(!c.set_mapped(4), "a dirty chunk must not enter the tables");
        c.ready(4 * CHUNK, 1, |_| {});
        assert!(c.is_clean_unmapped(4));
        assert!(c.set_mapped(4));
        assert!(!c.set_mapped(4), "mapped once");
        assert!(c.is_mapped(4));
        let mut zeroed = 0;
        c.ready(4 * CHUNK, 1, |_| zeroed += 1);
        assert_eq!(zeroed, 0);
        c.reset();
        assert!(!c.is_mapped(4));
        c.ready(4 * CHUNK, 1, |_| zeroed += 1);
        assert_eq!(zeroed, 1);
    }

    #[test]
    fn fills_are_recorded_only_over_dirty_chunks_and_a_reset_forgets_them() {
        static KERNEL: [u8; 64] = [7; 64];
        let c = RamChunks::new();
        c.ready(CHUNK, 1, |_| {});
        assert!(
            !c.add_fill(CHUNK - 32, &KERNEL),
            "reaches a clean chunk: write it now"
        );
        assert!(!c.add_fill(0, &KERNEL[..0]));
        assert!(!c.add_fill(u64::MAX - 8, &KERNEL));
        assert!(c.add_fill(3 * CHUNK - 16, &KERNEL));
        let f: Vec<FillRange> = c.fills().collect();
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].at, f[0].src, f[0].len),
            (3 * CHUNK - 16, KERNEL.as_ptr() as usize, 64)
        );
        // The part in chunk 3: from its start, 16 bytes into the data, 48 long.
        assert_eq!(f[0].within(3 * CHUNK, 4 * CHUNK), Some((3 * CHUNK, 16, 48)));
        assert_eq!(f[0].within(0, CHUNK), None);
        // Zeroes over a fill must be written; beside it they are already pending.
        assert!(!c.zeroes_pending(3 * CHUNK, 8));
        assert!(c.zeroes_pending(3 * CHUNK + 48, 8));
        assert!(
            !c.zeroes_pending(CHUNK, 8),
            "a clean chunk holds what was written"
        );
        for _ in 1..MAX_FILLS {
            assert!(c.add_fill(5 * CHUNK, &KERNEL));
        }
        assert!(!c.add_fill(5 * CHUNK, &KERNEL), "no room: write it now");
        c.reset();
        assert_eq!(c.fills().count(), 0);
    }

    #[test]
    fn offsets_beyond_the_tracker_are_not_zeroed_here() {
        let c = RamChunks::new();
        let mut zeroed = Vec::new();
        c.ready(u64::MAX - 4, 4, |i| zeroed.push(i));
        c.ready((MAX_CHUNKS as u64 - 1) * CHUNK, 4 * CHUNK, |i| {
            zeroed.push(i)
        });
        assert_eq!(zeroed, [MAX_CHUNKS - 1]);
        assert!(!c.is_mapped(usize::MAX));
        assert!(!c.set_mapped(MAX_CHUNKS));
    }

    #[test]
    fn racing_pcpus_zero_a_chunk_once_and_none_returns_before_it_is_clean() {
        let c = RamChunks::new();
        let zeroings = AtomicUsize::new(0);
        let done = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    c.ready(0, 4 * CHUNK, |_| {
                        zeroings.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    });
                    // Whatever returned saw every chunk clean.
                    let all = (0..4).all(|i| c.is_clean_unmapped(i));
                    done.lock().unwrap().push(all);
                });
            }
        });
        assert_eq!(zeroings.load(Ordering::SeqCst), 4);
        assert!(done.lock().unwrap().iter().all(|&a| a));
    }
}
