//! Bit sets: the on-disk sector bitmaps (MSB of byte 0 is the first sector) and the in-memory
//! per-block and per-BAT-sector flags.

use alloc::vec;
use alloc::vec::Vec;

/// Whether sector `i` is marked in an on-disk bitmap.
pub(crate) fn test(bm: &[u8], i: u64) -> bool {
    bm[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
}

pub(crate) fn set(bm: &mut [u8], i: u64) {
    bm[(i / 8) as usize] |= 0x80 >> (i % 8);
}

/// Length of the run of equal bits starting at sector `i`, at most `max`.
pub(crate) fn run(bm: &[u8], i: u64, max: u64) -> (bool, u64) {
    let v = test(bm, i);
    let mut n = 1;
    while n < max && test(bm, i + n) == v {
        n += 1;
    }
    (v, n)
}

/// A fixed-size set of flags, allocated once at open.
#[derive(Debug, Clone)]
pub(crate) struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    pub(crate) fn new(bits: usize) -> BitSet {
        BitSet {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    pub(crate) fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub(crate) fn any(&self) -> bool {
        self.words.iter().any(|&w| w != 0)
    }

    /// Takes the lowest set flag, clearing it.
    pub(crate) fn pop(&mut self) -> Option<usize> {
        let (wi, w) = self.words.iter_mut().enumerate().find(|(_, w)| **w != 0)?;
        let bit = w.trailing_zeros() as usize;
        *w &= *w - 1;
        Some(wi * 64 + bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msb_first() {
        let mut bm = [0u8; 2];
        set(&mut bm, 0);
        set(&mut bm, 9);
        assert_eq!(bm, [0x80, 0x40]);
        assert_eq!(run(&bm, 1, 20), (false, 8));
        let mut s = BitSet::new(130);
        s.set(129);
        s.set(3);
        assert_eq!((s.pop(), s.pop(), s.pop()), (Some(3), Some(129), None));
    }
}
