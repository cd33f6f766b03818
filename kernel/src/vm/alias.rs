//! Guest pages outside RAM that a personality made second names for some of the VM's reserved
//! RAM pages (Xen's grant-table frames, placed wherever the guest likes): which placements
//! are allowed, and the bookkeeping that the nested tables, the restart path and the end-of-VM
//! check follow.

use core::ops::Range;
use virt::personality::AliasError;

/// Aliases one VM may hold (Xen's grant frames are 8).
pub const MAX_ALIASES: usize = 16;
/// Aliases stay below 1 TiB: inside every guest's physical address width.
const ALIAS_LIMIT: u64 = 1 << 40;
const PAGE: u64 = 4096;

/// The VM's aliases, as (alias GPA, backing GPA).
#[derive(Default)]
pub struct Aliases {
    map: heapless::Vec<(u64, u64), MAX_ALIASES>,
}

impl Aliases {
    pub const fn new() -> Self {
        Self {
            map: heapless::Vec::new(),
        }
    }

    /// Whether `gpa` may become a name for `backing`: `gpa` a page outside RAM, below the
    /// alias limit and clear of the MMIO hole below 4 GiB (devices, APICs); `backing` one of
    /// the reserved pages.
    pub fn check(
        ram_size: u64,
        reserved: Range<u64>,
        gpa: u64,
        backing: u64,
    ) -> Result<(), AliasError> {
        let aligned = (gpa | backing).is_multiple_of(PAGE);
        let in_hole = (boot::guest::layout::MMIO_HOLE_START..1 << 32).contains(&gpa);
        let ok = aligned
            && gpa >= ram_size
            && gpa < ALIAS_LIMIT
            && !in_hole
            && reserved.start <= backing
            && backing + PAGE <= reserved.end;
        if ok { Ok(()) } else { Err(AliasError::Refused) }
    }

    /// Records `gpa → backing`; `Ok(true)` when it replaced an alias at `gpa` (whose
    /// translation vCPUs may still cache).
    pub fn insert(&mut self, gpa: u64, backing: u64) -> Result<bool, AliasError> {
        if let Some(e) = self.map.iter_mut().find(|(g, _)| *g == gpa) {
            e.1 = backing;
            return Ok(true);
        }
        self.map
            .push((gpa, backing))
            .map(|()| false)
            .map_err(|_| AliasError::Full)
    }

    /// Forgets the alias at `gpa`; whether there was one.
    pub fn remove(&mut self, gpa: u64) -> bool {
        let before = self.map.len();
        self.map.retain(|(g, _)| *g != gpa);
        self.map.len() != before
    }

    /// What `gpa` is an alias of.
    pub fn backing(&self, gpa: u64) -> Option<u64> {
        let page = gpa & !(PAGE - 1);
        self.map.iter().find(|(g, _)| *g == page).map(|&(_, b)| b)
    }

    /// Each alias GPA.
    pub fn for_each(&self, f: impl FnMut(u64)) {
        self.map.iter().map(|&(g, _)| g).for_each(f);
    }

    /// Empties the map, handing each alias GPA to `unmap`.
    pub fn drain(&mut self, mut unmap: impl FnMut(u64)) {
        for &(g, _) in &self.map {
            unmap(g);
        }
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 64 << 20;
    const RESERVED: Range<u64> = RAM - 16 * PAGE..RAM;

    #[test]
    fn only_pages_outside_ram_and_the_hole_alias_reserved_pages() {
        let ok = |gpa, backing| Aliases::check(RAM, RESERVED, gpa, backing);
        assert_eq!(ok(0x1_07ff_f000, RAM - 8 * PAGE), Ok(()));
        assert_eq!(ok(RAM, RAM - PAGE), Ok(()), "the first page past RAM");
        for (gpa, backing) in [
            (RAM - PAGE, RAM - PAGE),         // RAM
            (0, RAM - PAGE),                  // RAM
            (0xFEE0_0000, RAM - PAGE),        // the local APIC
            (0xC000_0000, RAM - PAGE),        // the MMIO hole
            (ALIAS_LIMIT, RAM - PAGE),        // too high
            (!0xfff, RAM - PAGE),             // too high
            (0x1_0000_0800, RAM - PAGE),      // unaligned
            (0x1_0000_0000, RAM - 17 * PAGE), // backing outside the reserved pages
            (0x1_0000_0000, RAM),             // backing past RAM
            (0x1_0000_0000, 0x10_0000),       // backing in guest RAM
        ] {
            assert_eq!(
                ok(gpa, backing),
                Err(AliasError::Refused),
                "{gpa:#x} -> {backing:#x}"
            );
        }
    }

    #[test]
    fn insert_replace_remove_and_the_limit() {
        let mut a = Aliases::new();
        assert_eq!(a.insert(0x1_0000_0000, RAM - PAGE), Ok(false));
        assert_eq!(a.insert(0x1_0000_0000, RAM - 2 * PAGE), Ok(true));
        assert_eq!(a.backing(0x1_0000_0123), Some(RAM - 2 * PAGE));
        for i in 1..MAX_ALIASES as u64 {
            assert_eq!(a.insert(0x1_0000_0000 + i * PAGE, RAM - PAGE), Ok(false));
        }
        assert_eq!(a.insert(0x2_0000_0000, RAM - PAGE), Err(AliasError::Full));
        assert!(a.remove(0x1_0000_0000));
        assert!(!a.remove(0x1_0000_0000));
        assert_eq!(a.backing(0x1_0000_0000), None);
        let mut gone = Vec::new();
        a.drain(|g| gone.push(g));
        assert_eq!(gone.len(), MAX_ALIASES - 1);
        assert_eq!(a.backing(0x1_0000_1000), None);
    }
}
