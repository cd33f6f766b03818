//! Guest Physical Address Descriptor Lists: the page lists a guest hands the host, in a header
//! message and as many body messages as the list needs, before it names them in OPENCHANNEL.
//!
//! Every page number is checked against guest RAM as it arrives, so a ring built on a GPADL
//! only ever reaches the guest's own memory. Lists are bounded; a guest that asks for more
//! than the host keeps gets a failed GPADL_CREATED, never an allocation.

use super::wire::{self, u16_at, u32_at};

/// Pages in one GPADL: a storvsc channel's two rings are 2 × (4 KiB + 128 KiB) by default in
/// Linux, 66 pages; 128 leaves room for a guest that asks for rings almost twice as large.
pub const MAX_PAGES: usize = 128;
/// GPADLs a partition may hold at once: one ring per channel (Linux tears a ring's GPADL down
/// before it makes another).
pub const MAX_GPADLS: usize = super::MAX_CHANNELS;
const PAGE: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpadl {
    pub id: u32,
    pub relid: u32,
    /// Pages the header announced; the list is complete when it holds this many.
    pub expected: usize,
    pub pages: heapless::Vec<u64, MAX_PAGES>,
    /// Its creation failed (too large, not guest RAM); the answer is sent once complete.
    pub failed: bool,
}

impl Gpadl {
    pub fn complete(&self) -> bool {
        self.pages.len() == self.expected
    }

    /// The GPA of page `index` of the list.
    pub fn page(&self, index: usize) -> Option<u64> {
        self.pages.get(index).map(|p| p << 12)
    }

    /// Appends page numbers from a message body; each must be guest RAM.
    fn take(&mut self, list: &[u8], ram_bytes: u64) {
        for chunk in list.chunks_exact(8) {
            if self.complete() {
                break;
            }
            let pfn = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            let in_ram = pfn
                .checked_mul(PAGE)
                .and_then(|gpa| gpa.checked_add(PAGE))
                .is_some_and(|end| end <= ram_bytes);
            if !in_ram || self.pages.push(pfn).is_err() {
                self.failed = true;
                // The count still advances so that completion is seen at the right message.
                self.expected = self.expected.saturating_sub(1);
            }
        }
    }
}

/// What a GPADL message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// More body messages are due.
    Incomplete,
    /// The list is whole: answer GPADL_CREATED with this status.
    Created { id: u32, relid: u32, status: u32 },
    /// The message could not belong to any GPADL; ignored as Hyper-V ignores it.
    Ignored,
}

#[derive(Default)]
pub struct Table {
    pub list: heapless::Vec<Gpadl, MAX_GPADLS>,
}

impl Table {
    pub fn get(&self, id: u32) -> Option<&Gpadl> {
        self.list.iter().find(|g| g.id == id)
    }

    /// GPADL_HEADER `{ hdr, relid, gpadl, range_buflen u16, rangecount u16, { byte_count,
    /// byte_offset, pfn[] } }` (packed: the list starts at byte 28): one range, starting at a
    /// page boundary.
    pub fn header(&mut self, m: &[u8], relid_known: bool, ram_bytes: u64) -> Step {
        let (Some(relid), Some(id), Some(buflen), Some(ranges), Some(count), Some(offset)) = (
            u32_at(m, 8),
            u32_at(m, 12),
            u16_at(m, 16),
            u16_at(m, 18),
            u32_at(m, 20),
            u32_at(m, 24),
        ) else {
            return Step::Ignored;
        };
        if self.get(id).is_some() || id == 0 {
            // A duplicate id would make later messages ambiguous.
            return Step::Created {
                id,
                relid,
                status: wire::STATUS_INVALID_PARAMETER,
            };
        }
        let pages = (u64::from(buflen).saturating_sub(8) / 8) as usize;
        let whole = u64::from(count).div_ceil(PAGE) as usize;
        let ok_shape = relid_known
            && ranges == 1
            && offset == 0
            && count != 0
            && pages == whole
            && u64::from(count) <= MAX_PAGES as u64 * PAGE;
        let mut g = Gpadl {
            id,
            relid,
            expected: pages,
            pages: heapless::Vec::new(),
            failed: !ok_shape,
        };
        if !ok_shape {
            return Step::Created {
                id,
                relid,
                status: wire::STATUS_INVALID_PARAMETER,
            };
        }
        g.take(
            m.get(wire::GPADL_HEADER_FIXED + 8..).unwrap_or(&[]),
            ram_bytes,
        );
        self.finish_or_keep(g)
    }

    /// GPADL_BODY `{ hdr, msgnumber, gpadl, pfn[] }`.
    pub fn body(&mut self, m: &[u8], ram_bytes: u64) -> Step {
        let Some(id) = u32_at(m, 12) else {
            return Step::Ignored;
        };
        let Some(at) = self.list.iter().position(|g| g.id == id && !g.complete()) else {
            return Step::Ignored;
        };
        let mut g = self.list.swap_remove(at);
        g.take(m.get(wire::GPADL_BODY_FIXED..).unwrap_or(&[]), ram_bytes);
        self.finish_or_keep(g)
    }

    fn finish_or_keep(&mut self, g: Gpadl) -> Step {
        let (id, relid) = (g.id, g.relid);
        if g.complete() && g.failed {
            return Step::Created {
                id,
                relid,
                status: wire::STATUS_UNSUCCESSFUL,
            };
        }
        let complete = g.complete();
        if self.list.push(g).is_err() {
            return Step::Created {
                id,
                relid,
                status: wire::STATUS_UNSUCCESSFUL,
            };
        }
        if complete {
            Step::Created {
                id,
                relid,
                status: wire::STATUS_SUCCESS,
            }
        } else {
            Step::Incomplete
        }
    }

    pub fn remove(&mut self, id: u32) -> bool {
        match self.list.iter().position(|g| g.id == id) {
            Some(at) => {
                self.list.swap_remove(at);
                true
            }
            None => false,
        }
    }
}

/// A GPADL_HEADER for tests and the probe's host model: `pfns` as one range.
#[cfg(test)]
pub fn header_message(relid: u32, id: u32, total_pages: u32, pfns: &[u64]) -> wire::Out {
    let mut o = wire::Out::new(
        wire::msg::GPADL_HEADER,
        wire::GPADL_HEADER_FIXED + 8 + 8 * pfns.len(),
    );
    o.put_u32(8, relid);
    o.put_u32(12, id);
    o.put_u16(16, (8 + 8 * total_pages) as u16);
    o.put_u16(18, 1);
    o.put_u32(20, total_pages * PAGE as u32);
    o.put_u32(24, 0);
    for (i, p) in pfns.iter().enumerate() {
        o.put(wire::GPADL_HEADER_FIXED + 8 + 8 * i, &p.to_le_bytes());
    }
    o
}

#[cfg(test)]
pub fn body_message(id: u32, pfns: &[u64]) -> wire::Out {
    let mut o = wire::Out::new(
        wire::msg::GPADL_BODY,
        wire::GPADL_BODY_FIXED + 8 * pfns.len(),
    );
    o.put_u32(12, id);
    for (i, p) in pfns.iter().enumerate() {
        o.put(16 + 8 * i, &p.to_le_bytes());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 1 << 30;

    #[test]
    fn a_list_in_one_header_is_created() {
        let mut t = Table::default();
        let m = header_message(1, 7, 3, &[10, 11, 12]);
        assert_eq!(
            t.header(m.payload(), true, RAM),
            Step::Created {
                id: 7,
                relid: 1,
                status: 0
            }
        );
        assert_eq!(t.get(7).unwrap().page(2), Some(12 << 12));
    }

    #[test]
    fn bodies_complete_a_long_list() {
        let mut t = Table::default();
        let first: Vec<u64> = (100..126).collect();
        let m = header_message(1, 9, 66, &first);
        assert_eq!(t.header(m.payload(), true, RAM), Step::Incomplete);
        let second: Vec<u64> = (126..154).collect();
        assert_eq!(
            t.body(body_message(9, &second).payload(), RAM),
            Step::Incomplete
        );
        let third: Vec<u64> = (154..166).collect();
        assert_eq!(
            t.body(body_message(9, &third).payload(), RAM),
            Step::Created {
                id: 9,
                relid: 1,
                status: 0
            }
        );
        let g = t.get(9).unwrap();
        assert_eq!(g.pages.len(), 66);
        assert_eq!(g.pages[65], 165);
    }

    #[test]
    fn a_page_outside_ram_fails_the_gpadl() {
        let mut t = Table::default();
        let m = header_message(1, 3, 2, &[1, RAM / PAGE]);
        match t.header(m.payload(), true, RAM) {
            Step::Created { status, .. } => assert_ne!(status, 0),
            s => panic!("{s:?}"),
        }
        assert!(t.get(3).is_none());
        // A page number whose address overflows is refused the same way.
        let m = header_message(1, 4, 1, &[u64::MAX]);
        assert!(matches!(
            t.header(m.payload(), true, RAM),
            Step::Created { status, .. } if status != 0
        ));
    }

    #[test]
    fn oversize_duplicate_and_unknown_channels_are_refused() {
        let mut t = Table::default();
        let m = header_message(1, 5, MAX_PAGES as u32 + 1, &[1]);
        assert!(
            matches!(t.header(m.payload(), true, RAM), Step::Created { status, .. } if status != 0)
        );
        let m = header_message(9, 6, 1, &[1]);
        assert!(
            matches!(t.header(m.payload(), false, RAM), Step::Created { status, .. } if status != 0)
        );
        let m = header_message(1, 7, 1, &[1]);
        assert!(matches!(
            t.header(m.payload(), true, RAM),
            Step::Created { status: 0, .. }
        ));
        assert!(
            matches!(t.header(m.payload(), true, RAM), Step::Created { status, .. } if status != 0)
        );
        assert_eq!(t.body(body_message(42, &[1]).payload(), RAM), Step::Ignored);
        assert_eq!(t.header(&[0; 10], true, RAM), Step::Ignored);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = Table::default();
        for id in 1..=MAX_GPADLS as u32 {
            let m = header_message(1, id, 1, &[1]);
            assert!(matches!(
                t.header(m.payload(), true, RAM),
                Step::Created { status: 0, .. }
            ));
        }
        let m = header_message(1, 99, 1, &[1]);
        assert!(
            matches!(t.header(m.payload(), true, RAM), Step::Created { status, .. } if status != 0)
        );
        assert!(t.remove(1));
        assert!(!t.remove(1));
        assert!(matches!(
            t.header(m.payload(), true, RAM),
            Step::Created { status: 0, .. }
        ));
    }
}
