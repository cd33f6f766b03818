//! Physical frame allocator: one bit per 4 KiB frame below the top of RAM.
//!
//! Contiguous runs matter here: guest RAM is one host-contiguous block so that nested paging
//! can use 2 MiB pages and guest-physical to host-physical is an addition.

pub const FRAME_SIZE: u64 = 4096;

pub struct FrameAllocator<'a> {
    /// Bit set = frame in use (or not RAM).
    bits: &'a mut [u64],
    frames: u64,
    free: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    OutOfMemory { frames: u64 },
    NotAllocated { addr: u64 },
    Unaligned { addr: u64 },
}

impl<'a> FrameAllocator<'a> {
    /// Bytes of bitmap needed to track RAM up to `top`.
    pub fn bitmap_bytes(top: u64) -> u64 {
        top.div_ceil(FRAME_SIZE).div_ceil(64) * 8
    }

    /// An allocator with every frame taken; feed it with [`Self::add_free`].
    pub fn new(bits: &'a mut [u64], top: u64) -> Self {
        let frames = (top / FRAME_SIZE).min(bits.len() as u64 * 64);
        bits.fill(u64::MAX);
        Self {
            bits,
            frames,
            free: 0,
        }
    }

    /// Marks whole frames inside `[start, end)` free.
    pub fn add_free(&mut self, start: u64, end: u64) {
        let first = start.div_ceil(FRAME_SIZE);
        let last = (end / FRAME_SIZE).min(self.frames);
        for f in first..last {
            if self.is_used(f) {
                self.set(f, false);
                self.free += 1;
            }
        }
    }

    /// Marks every frame touching `[start, end)` used.
    pub fn reserve(&mut self, start: u64, end: u64) {
        let first = start / FRAME_SIZE;
        let last = end.div_ceil(FRAME_SIZE).min(self.frames);
        for f in first..last {
            if !self.is_used(f) {
                self.set(f, true);
                self.free -= 1;
            }
        }
    }

    pub fn free_bytes(&self) -> u64 {
        self.free * FRAME_SIZE
    }

    /// `count` contiguous frames whose first address is a multiple of `align` bytes.
    pub fn alloc(&mut self, count: u64, align: u64) -> Result<u64, FrameError> {
        let step = (align / FRAME_SIZE).max(1);
        let oom = FrameError::OutOfMemory { frames: count };
        if count == 0 || count > self.free || !align.is_power_of_two() {
            return Err(oom);
        }
        let mut f = 0;
        while f + count <= self.frames {
            match (f..f + count).rev().find(|&g| self.is_used(g)) {
                None => {
                    for g in f..f + count {
                        self.set(g, true);
                    }
                    self.free -= count;
                    return Ok(f * FRAME_SIZE);
                }
                // Skip past the used frame to the next aligned candidate.
                Some(used) => f = (used + 1).next_multiple_of(step),
            }
        }
        Err(oom)
    }

    pub fn free(&mut self, addr: u64, count: u64) -> Result<(), FrameError> {
        if !addr.is_multiple_of(FRAME_SIZE) {
            return Err(FrameError::Unaligned { addr });
        }
        let first = addr / FRAME_SIZE;
        let end = first.checked_add(count).filter(|&e| e <= self.frames);
        let Some(end) = end else {
            return Err(FrameError::NotAllocated { addr });
        };
        if let Some(f) = (first..end).find(|&f| !self.is_used(f)) {
            return Err(FrameError::NotAllocated {
                addr: f * FRAME_SIZE,
            });
        }
        for f in first..end {
            self.set(f, false);
        }
        self.free += count;
        Ok(())
    }

    fn is_used(&self, frame: u64) -> bool {
        self.bits[(frame / 64) as usize] & (1 << (frame % 64)) != 0
    }

    fn set(&mut self, frame: u64, used: bool) {
        let word = &mut self.bits[(frame / 64) as usize];
        if used {
            *word |= 1 << (frame % 64);
        } else {
            *word &= !(1 << (frame % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn with_ram(top: u64, f: impl FnOnce(&mut FrameAllocator<'_>)) {
        let mut bits = vec![0u64; (FrameAllocator::bitmap_bytes(top) / 8) as usize];
        let mut a = FrameAllocator::new(&mut bits, top);
        f(&mut a);
    }

    #[test]
    fn only_added_ram_is_handed_out() {
        with_ram(16 * MIB, |a| {
            assert_eq!(a.free_bytes(), 0);
            assert!(a.alloc(1, FRAME_SIZE).is_err());
            a.add_free(MIB + 1, 2 * MIB); // partial first frame is not RAM we may use
            assert_eq!(a.free_bytes(), MIB - FRAME_SIZE);
            assert_eq!(a.alloc(1, FRAME_SIZE), Ok(MIB + FRAME_SIZE));
        });
    }

    #[test]
    fn reserve_removes_touched_frames() {
        with_ram(16 * MIB, |a| {
            a.add_free(0, 16 * MIB);
            a.reserve(0, MIB + 1);
            assert_eq!(a.free_bytes(), 15 * MIB - FRAME_SIZE);
            assert_eq!(a.alloc(1, FRAME_SIZE), Ok(MIB + FRAME_SIZE));
        });
    }

    #[test]
    fn aligned_contiguous_runs_skip_holes() {
        with_ram(64 * MIB, |a| {
            a.add_free(0, 64 * MIB);
            a.reserve(8192, 12288);
            let run = a.alloc(512, 2 * MIB).unwrap();
            assert_eq!(
                run,
                2 * MIB,
                "the hole pushes the run to the next aligned start"
            );
            let next = a.alloc(1024, 2 * MIB).unwrap();
            assert_eq!(next, 4 * MIB);
            assert_eq!(
                a.alloc(1, FRAME_SIZE),
                Ok(0),
                "single frames still fill the gap"
            );
            assert!(a.alloc(64 * MIB / FRAME_SIZE, FRAME_SIZE).is_err());
        });
    }

    #[test]
    fn free_returns_frames_and_catches_double_free() {
        with_ram(8 * MIB, |a| {
            a.add_free(0, 8 * MIB);
            let before = a.free_bytes();
            let x = a.alloc(4, FRAME_SIZE).unwrap();
            assert_eq!(a.free_bytes(), before - 4 * FRAME_SIZE);
            a.free(x, 4).unwrap();
            assert_eq!(a.free_bytes(), before);
            assert_eq!(a.free(x, 1), Err(FrameError::NotAllocated { addr: x }));
            assert_eq!(a.free(x + 1, 1), Err(FrameError::Unaligned { addr: x + 1 }));
            assert!(a.free(8 * MIB, 1).is_err());
            assert!(a.free(0, u64::MAX).is_err());
        });
    }

    #[test]
    fn exhaustion_is_an_error_not_a_panic() {
        with_ram(MIB, |a| {
            a.add_free(0, MIB);
            for _ in 0..256 {
                a.alloc(1, FRAME_SIZE).unwrap();
            }
            assert_eq!(
                a.alloc(1, FRAME_SIZE),
                Err(FrameError::OutOfMemory { frames: 1 })
            );
            assert!(a.alloc(0, FRAME_SIZE).is_err());
        });
    }
}
