//! Nested paging (EPT and NPT) behind one builder.
//!
//! Both formats are 4-level radix trees of 512 8-byte entries over 4 KiB tables; they differ only
//! in entry encoding, which is kept in pure functions ([`NestedFormat`]). The builder reaches table
//! memory through [`TableMemory`] so host tests run it over a fake.
//!
//! After changing a live mapping the kernel calls [`crate::Vcpu::flush_nested_tlb`] on every
//! vCPU of the VM (INVEPT on VMX, TLB_CONTROL on SVM); adding a mapping where there was none
//! needs no flush on either vendor, since neither caches not-present entries.

use crate::Error;

/// 4 KiB page-table memory for nested tables.
pub trait TableMemory {
    /// A zeroed 4 KiB frame, identity-mapped; `None` when out of memory.
    fn alloc_table(&mut self) -> Option<u64>;
    fn read_entry(&self, table: u64, index: usize) -> u64;
    fn write_entry(&mut self, table: u64, index: usize, value: u64);
}

/// Guest access rights of a nested mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Perm {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perm {
    pub const RWX: Perm = Perm {
        read: true,
        write: true,
        exec: true,
    };
    pub const RX: Perm = Perm {
        read: true,
        write: false,
        exec: true,
    };
    pub const RW: Perm = Perm {
        read: true,
        write: true,
        exec: false,
    };
    pub const R: Perm = Perm {
        read: true,
        write: false,
        exec: false,
    };
}

/// Which nested-table encoding: Intel EPT or AMD NPT (a long-mode page table walked as user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NestedFormat {
    Ept,
    Npt,
}

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PS: u64 = 1 << 7;
const EPT_WB: u64 = 6 << 3;
const NPT_P: u64 = 1;
const NPT_RW: u64 = 1 << 1;
const NPT_US: u64 = 1 << 2;
const NPT_NX: u64 = 1 << 63;
pub const SIZE_4K: u64 = 0x1000;
pub const SIZE_2M: u64 = 0x20_0000;

impl NestedFormat {
    /// A non-leaf entry pointing at `table`. EPT grants RWX, NPT P|RW|US: the leaf decides.
    pub const fn table_entry(self, table: u64) -> u64 {
        match self {
            NestedFormat::Ept => (table & ADDR_MASK) | 0x7,
            NestedFormat::Npt => (table & ADDR_MASK) | NPT_P | NPT_RW | NPT_US,
        }
    }

    /// A leaf mapping `hpa` with `perm`, as a 2 MiB page when `large`. EPT leaves are
    /// write-back (the guest PAT still applies); NPT leaves are user pages because nested walks
    /// are user accesses. A leaf with no permission at all is not present on either format.
    pub const fn leaf_entry(self, hpa: u64, perm: Perm, large: bool) -> u64 {
        let ps = if large { PS } else { 0 };
        match self {
            NestedFormat::Ept => {
                let rwx =
                    (perm.read as u64) | ((perm.write as u64) << 1) | ((perm.exec as u64) << 2);
                if rwx == 0 {
                    return 0;
                }
                (hpa & ADDR_MASK) | rwx | EPT_WB | ps
            }
            NestedFormat::Npt => {
                if !perm.read && !perm.write && !perm.exec {
                    return 0;
                }
                let w = if perm.write { NPT_RW } else { 0 };
                let nx = if perm.exec { 0 } else { NPT_NX };
                (hpa & ADDR_MASK) | NPT_P | NPT_US | w | nx | ps
            }
        }
    }

    /// Whether an entry maps or points at anything.
    pub const fn present(self, e: u64) -> bool {
        match self {
            NestedFormat::Ept => e & 0x7 != 0,
            NestedFormat::Npt => e & NPT_P != 0,
        }
    }

    pub const fn is_large(self, e: u64) -> bool {
        e & PS != 0
    }

    pub const fn addr(self, e: u64) -> u64 {
        e & ADDR_MASK
    }

    /// The permissions of a leaf.
    pub const fn perm(self, e: u64) -> Perm {
        match self {
            NestedFormat::Ept => Perm {
                read: e & 1 != 0,
                write: e & 2 != 0,
                exec: e & 4 != 0,
            },
            NestedFormat::Npt => Perm {
                read: e & NPT_P != 0,
                write: e & NPT_P != 0 && e & NPT_RW != 0,
                exec: e & NPT_P != 0 && e & NPT_NX == 0,
            },
        }
    }

    /// EPTP for a PML4 at `root`: write-back, 4-level walk, no A/D.
    pub const fn eptp(root: u64) -> u64 {
        (root & ADDR_MASK) | (3 << 3) | 6
    }
}

/// A guest-physical → host-physical map for one VM.
pub struct NestedPageTable {
    format: NestedFormat,
    root: u64,
}

fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> (12 + 9 * level)) & 0x1ff) as usize
}

/// GPAs are limited to 48 bits (4-level nested tables).
const GPA_LIMIT: u64 = 1 << 48;

impl NestedPageTable {
    pub fn new(format: NestedFormat, mem: &mut (impl TableMemory + ?Sized)) -> Result<Self, Error> {
        let root = mem.alloc_table().ok_or(Error::OutOfFrames)?;
        Ok(NestedPageTable { format, root })
    }

    pub fn format(&self) -> NestedFormat {
        self.format
    }

    /// Physical address of the top table (PML4): what [`crate::VcpuConfig::nested_root`] wants.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps `[gpa, gpa+size)` to `[hpa, hpa+size)`: 2 MiB pages where both sides are aligned and
    /// the rest of the range covers one, 4 KiB pages elsewhere. All three must be 4 KiB aligned.
    /// Existing mappings in the range are replaced.
    pub fn map(
        &mut self,
        mem: &mut (impl TableMemory + ?Sized),
        gpa: u64,
        hpa: u64,
        size: u64,
        perm: Perm,
    ) -> Result<(), Error> {
        let aligned = (gpa | hpa | size) & (SIZE_4K - 1) == 0;
        let end = gpa.checked_add(size).ok_or(Error::InvalidArgument)?;
        if !aligned || end > GPA_LIMIT || hpa.checked_add(size).is_none() {
            return Err(Error::InvalidArgument);
        }
        let mut off = 0;
        while off < size {
            let (g, h) = (gpa + off, hpa + off);
            let large = (g | h) & (SIZE_2M - 1) == 0 && size - off >= SIZE_2M;
            if large {
                self.set_leaf(mem, g, self.format.leaf_entry(h, perm, true), 1)?;
                off += SIZE_2M;
            } else {
                self.set_leaf(mem, g, self.format.leaf_entry(h, perm, false), 0)?;
                off += SIZE_4K;
            }
        }
        Ok(())
    }

    /// Removes `[gpa, gpa+size)`: 2 MiB at a time where aligned (a table under such an entry
    /// is orphaned, as in `set_leaf`), 4 KiB pages elsewhere. The kernel then flushes the
    /// vCPUs' nested TLBs.
    pub fn unmap_range(
        &mut self,
        mem: &mut (impl TableMemory + ?Sized),
        gpa: u64,
        size: u64,
    ) -> Result<(), Error> {
        let end = gpa.checked_add(size).ok_or(Error::InvalidArgument)?;
        if (gpa | size) & (SIZE_4K - 1) != 0 || end > GPA_LIMIT {
            return Err(Error::InvalidArgument);
        }
        let mut g = gpa;
        while g < end {
            if g & (SIZE_2M - 1) == 0 && end - g >= SIZE_2M {
                self.set_leaf(mem, g, 0, 1)?;
                g += SIZE_2M;
            } else {
                self.set_leaf(mem, g, 0, 0)?;
                g += SIZE_4K;
            }
        }
        Ok(())
    }

    /// Host-physical address and permissions of `gpa`, if mapped.
    pub fn translate(&self, mem: &(impl TableMemory + ?Sized), gpa: u64) -> Option<(u64, Perm)> {
        if gpa >= GPA_LIMIT {
            return None;
        }
        let f = self.format;
        let mut table = self.root;
        for level in (0..4).rev() {
            let e = mem.read_entry(table, index(gpa, level));
            if !f.present(e) {
                return None;
            }
            if level == 0 || (level == 1 && f.is_large(e)) {
                let page = if level == 0 { SIZE_4K } else { SIZE_2M };
                return Some((f.addr(e) & !(page - 1) | (gpa & (page - 1)), f.perm(e)));
            }
            table = f.addr(e);
        }
        None
    }

    /// Writes `leaf` for `gpa` at `level` (0 = 4 KiB PTE, 1 = 2 MiB PDE), creating tables on
    /// the way and splitting a 2 MiB leaf that is in the way of a 4 KiB one.
    fn set_leaf(
        &mut self,
        mem: &mut (impl TableMemory + ?Sized),
        gpa: u64,
        leaf: u64,
        level: u32,
    ) -> Result<(), Error> {
        let f = self.format;
        let mut table = self.root;
        for l in ((level + 1)..4).rev() {
            let i = index(gpa, l);
            let e = mem.read_entry(table, i);
            let next = if !f.present(e) {
                let t = mem.alloc_table().ok_or(Error::OutOfFrames)?;
                mem.write_entry(table, i, f.table_entry(t));
                t
            } else if l == 1 && f.is_large(e) {
                // Keep the rest of the 2 MiB page mapped as it was, as 512 small pages.
                let t = mem.alloc_table().ok_or(Error::OutOfFrames)?;
                let base = f.addr(e) & !(SIZE_2M - 1);
                let small = f.leaf_entry(base, f.perm(e), false);
                for k in 0..512 {
                    mem.write_entry(t, k, small + (k as u64) * SIZE_4K);
                }
                mem.write_entry(table, i, f.table_entry(t));
                t
            } else {
                f.addr(e)
            };
            table = next;
        }
        // A large leaf replacing a table orphans that table; frames are not returned (the
        // frame source has no free), which only costs memory on remapping at 2 MiB granularity.
        mem.write_entry(table, index(gpa, level), leaf);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::TableMemory;
    use std::collections::HashMap;

    /// Table memory in a hash map of 4 KiB frames, handing out fake addresses.
    #[derive(Default)]
    pub struct FakeTables {
        pub frames: HashMap<u64, [u64; 512]>,
        pub next: u64,
        pub limit: Option<usize>,
    }

    impl TableMemory for FakeTables {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.limit.is_some_and(|l| self.frames.len() >= l) {
                return None;
            }
            self.next += 0x1000;
            let pa = 0x1000_0000 + self.next;
            self.frames.insert(pa, [0; 512]);
            Some(pa)
        }
        fn read_entry(&self, table: u64, index: usize) -> u64 {
            self.frames[&table][index]
        }
        fn write_entry(&mut self, table: u64, index: usize, value: u64) {
            self.frames.get_mut(&table).expect("table exists")[index] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTables;
    use super::*;

    #[test]
    fn entry_encoding_matches_platform_notes() {
        assert_eq!(
            NestedFormat::Ept.leaf_entry(0x80_0000, Perm::RWX, true),
            0x80_0000 | 0xB7
        );
        assert_eq!(
            NestedFormat::Npt.leaf_entry(0x80_0000, Perm::RWX, true),
            0x80_0000 | 0x87
        );
        assert_eq!(NestedFormat::Npt.table_entry(0x5000), 0x5007);
        assert_eq!(NestedFormat::Ept.table_entry(0x5000), 0x5007);
        assert_eq!(NestedFormat::Ept.leaf_entry(0x3000, Perm::R, false), 0x3031);
        assert_eq!(
            NestedFormat::Npt.leaf_entry(0x3000, Perm::RX, false),
            0x3005
        );
        assert_eq!(
            NestedFormat::Npt.leaf_entry(0x3000, Perm::RW, false),
            0x8000_0000_0000_3007
        );
        let none = Perm {
            read: false,
            write: false,
            exec: false,
        };
        assert_eq!(NestedFormat::Ept.leaf_entry(0x3000, none, false), 0);
        assert_eq!(NestedFormat::Npt.leaf_entry(0x3000, none, false), 0);
        assert_eq!(NestedFormat::eptp(0x12_3000), 0x12_301e);
    }

    #[test]
    fn builder_uses_large_pages_where_aligned() {
        for f in [NestedFormat::Ept, NestedFormat::Npt] {
            let mut m = FakeTables::default();
            let mut t = NestedPageTable::new(f, &mut m).unwrap();
            // 4 KiB head, two 2 MiB pages, 4 KiB tail.
            t.map(&mut m, 0x1f_f000, 0x401f_f000, 0x40_2000, Perm::RWX)
                .unwrap();
            assert_eq!(t.translate(&m, 0x1f_f123), Some((0x401f_f123, Perm::RWX)));
            assert_eq!(
                t.translate(&m, 0x20_0000 + 0x12345),
                Some((0x4020_0000 + 0x12345, Perm::RWX))
            );
            assert_eq!(t.translate(&m, 0x60_0fff), Some((0x4060_0fff, Perm::RWX)));
            assert_eq!(t.translate(&m, 0x60_1000), None);
            assert_eq!(t.translate(&m, 0x1f_e000), None);
            // root, PDPT, PD, and one PT (head and tail share the 0..1 GiB PD but need one PT
            // each: 0x1ff000 lies in PT 0, 0x600000 in PT 3).
            assert_eq!(m.frames.len(), 5, "{f:?}");
            let pd = f.addr(m.read_entry(f.addr(m.read_entry(t.root(), 0)), 0));
            assert!(f.is_large(m.read_entry(pd, 1)));
            assert!(f.is_large(m.read_entry(pd, 2)));
            assert!(!f.is_large(m.read_entry(pd, 0)));
        }
    }

    #[test]
    fn unmap_range_removes_large_and_small_pages_and_nothing_else() {
        for f in [NestedFormat::Ept, NestedFormat::Npt] {
            let mut m = FakeTables::default();
            let mut t = NestedPageTable::new(f, &mut m).unwrap();
            t.map(&mut m, 0, 0x4000_0000, 6 * SIZE_2M + 0x3000, Perm::RWX)
                .unwrap();
            t.unmap_range(&mut m, 2 * SIZE_2M, 2 * SIZE_2M).unwrap();
            t.unmap_range(&mut m, 6 * SIZE_2M, 0x2000).unwrap();
            let mapped = |g| t.translate(&m, g).map(|(h, _)| h);
            assert_eq!(mapped(2 * SIZE_2M - 8), Some(0x4000_0000 + 2 * SIZE_2M - 8));
            assert_eq!(mapped(2 * SIZE_2M), None);
            assert_eq!(mapped(4 * SIZE_2M - 1), None);
            assert_eq!(mapped(4 * SIZE_2M), Some(0x4000_0000 + 4 * SIZE_2M));
            assert_eq!(mapped(6 * SIZE_2M + 0x1fff), None);
            assert_eq!(
                mapped(6 * SIZE_2M + 0x2000),
                Some(0x4000_0000 + 6 * SIZE_2M + 0x2000)
            );
            assert!(t.unmap_range(&mut m, 0x800, 0x1000).is_err());
        }
    }

    #[test]
    fn unmap_splits_large_page_and_keeps_neighbours() {
        for f in [NestedFormat::Ept, NestedFormat::Npt] {
            let mut m = FakeTables::default();
            let mut t = NestedPageTable::new(f, &mut m).unwrap();
            t.map(&mut m, 0, 0x800_0000, 0x40_0000, Perm::RWX).unwrap();
            t.unmap_range(&mut m, 0x20_5000, 0x1000).unwrap();
            assert_eq!(t.translate(&m, 0x20_5000), None);
            assert_eq!(t.translate(&m, 0x20_4fff), Some((0x820_4fff, Perm::RWX)));
            assert_eq!(t.translate(&m, 0x20_6000), Some((0x820_6000, Perm::RWX)));
            assert_eq!(t.translate(&m, 0x3f_ffff), Some((0x83f_ffff, Perm::RWX)));
            t.map(&mut m, 0x20_5000, 0x9000, 0x1000, Perm::R).unwrap();
            assert_eq!(t.translate(&m, 0x20_5010), Some((0x9010, Perm::R)));
        }
    }

    #[test]
    fn builder_rejects_bad_ranges_and_reports_exhaustion() {
        let mut m = FakeTables::default();
        let mut t = NestedPageTable::new(NestedFormat::Npt, &mut m).unwrap();
        assert_eq!(
            t.map(&mut m, 0x800, 0, 0x1000, Perm::RWX),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            t.map(&mut m, !0xfff, 0, 0x2000, Perm::RWX),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            t.map(&mut m, 1 << 48, 0, 0x1000, Perm::RWX),
            Err(Error::InvalidArgument)
        );
        m.limit = Some(2);
        assert_eq!(
            t.map(&mut m, 0, 0, 0x1000, Perm::RWX),
            Err(Error::OutOfFrames)
        );
    }
}
