//! The block allocation table: the in-memory copy, its dirty sectors, and the checks that no
//! entry points anywhere a block cannot be.

use crate::Error;
use crate::bitmap::BitSet;
use alloc::vec::Vec;

pub const UNALLOCATED: u32 = u32::MAX;
const ENTRIES_PER_SECTOR: usize = 128;

#[derive(Debug, Clone)]
pub(crate) struct Bat {
    entries: Vec<u32>,
    /// BAT sectors changed in memory and not yet written.
    dirty: BitSet,
}

impl Bat {
    pub(crate) fn from_raw(raw: &[u8]) -> Bat {
        let entries: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let sectors = entries.len().div_ceil(ENTRIES_PER_SECTOR);
        Bat {
            entries,
            dirty: BitSet::new(sectors),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, block: usize) -> u32 {
        self.entries[block]
    }

    pub(crate) fn entries(&self) -> &[u32] {
        &self.entries
    }

    pub(crate) fn set(&mut self, block: usize, sector: u32) {
        self.entries[block] = sector;
        self.dirty.set(block / ENTRIES_PER_SECTOR);
    }

    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty.any()
    }

    /// Takes one dirty BAT sector: its index and its 512 on-disk bytes (padded with 0xFF).
    pub(crate) fn pop_dirty(&mut self, out: &mut [u8; 512]) -> Option<usize> {
        let s = self.dirty.pop()?;
        out.fill(0xff);
        let first = s * ENTRIES_PER_SECTOR;
        let last = (first + ENTRIES_PER_SECTOR).min(self.entries.len());
        for (chunk, e) in out.chunks_exact_mut(4).zip(&self.entries[first..last]) {
            chunk.copy_from_slice(&e.to_be_bytes());
        }
        Some(s)
    }

    /// Puts a sector back on the dirty list after its write failed.
    pub(crate) fn redirty(&mut self, sector: usize) {
        self.dirty.set(sector);
    }
}

/// A byte range `[start, end)` of the file that holds metadata.
pub(crate) type Region = (u64, u64);

fn overlaps(a: Region, b: Region) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Checks every allocated entry: inside the data area, clear of metadata, clear of each other.
/// `span` is bitmap plus block bytes. Sorting keeps the overlap test O(n log n).
pub(crate) fn validate<E>(
    entries: &[u32],
    span: u64,
    data_end: u64,
    metadata: &[Region],
) -> Result<(), Error<E>> {
    let mut placed: Vec<u64> = Vec::new();
    for (block, &sector) in entries.iter().enumerate() {
        if sector == UNALLOCATED {
            continue;
        }
        let block = block as u32;
        let start = u64::from(sector) * 512;
        let end = start + span;
        if end > data_end {
            return Err(Error::BatEntryPastEof { block, sector });
        }
        if metadata.iter().any(|&m| overlaps(m, (start, end))) {
            return Err(Error::BatEntryInMetadata { block, sector });
        }
        placed.push((u64::from(sector) << 32) | u64::from(block));
    }
    placed.sort_unstable();
    for pair in placed.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if (b >> 32) * 512 < (a >> 32) * 512 + span {
            return Err(Error::BlocksOverlap {
                block_a: a as u32,
                block_b: b as u32,
            });
        }
    }
    Ok(())
}
