//! Physical Region Page entries for one physically contiguous data buffer, with 4 KiB
//! memory pages (CC.MPS = 0).
//!
//! PRP1 points at the first byte and may carry an offset into its page (dword aligned);
//! every later entry is page aligned. One page of data needs only PRP1, two pages PRP1 and
//! PRP2, more pages put the second and later pages in a PRP list that PRP2 points at.
//! The driver keeps one list page, so a transfer spans at most 1 + 512 pages; longer ones
//! would need chained lists and are refused (the driver splits transfers well below that).

use super::regs::PAGE;

/// Entries in one PRP list page.
pub const LIST_ENTRIES: usize = (PAGE / 8) as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prps {
    pub prp1: u64,
    pub prp2: u64,
    /// How many entries of the list were filled (0 when PRP2 is not a list pointer).
    pub list_len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrpError {
    /// A zero-length transfer has nothing to describe.
    Empty,
    /// PRP1's offset must be dword aligned; a list page must be page aligned.
    Unaligned,
    /// More pages than one list page can describe.
    TooLong,
}

/// Describes `len` bytes at physical address `addr`. When a list is needed its entries go to
/// `list`, which the controller will read at physical address `list_pa`.
pub fn build(addr: u64, len: usize, list: &mut [u64], list_pa: u64) -> Result<Prps, PrpError> {
    if len == 0 {
        return Err(PrpError::Empty);
    }
    if !addr.is_multiple_of(4) {
        return Err(PrpError::Unaligned);
    }
    let first = addr & !(PAGE - 1);
    let end = addr.checked_add(len as u64).ok_or(PrpError::TooLong)?;
    let pages = (end - first).div_ceil(PAGE);
    let (prp2, list_len) = match pages {
        1 => (0, 0),
        2 => (first + PAGE, 0),
        _ => {
            let n = (pages - 1) as usize;
            if n > LIST_ENTRIES.min(list.len()) {
                return Err(PrpError::TooLong);
            }
            if !list_pa.is_multiple_of(PAGE) {
                return Err(PrpError::Unaligned);
            }
            for (i, e) in list[..n].iter_mut().enumerate() {
                *e = first + (i as u64 + 1) * PAGE;
            }
            (list_pa, n)
        }
    };
    Ok(Prps {
        prp1: addr,
        prp2,
        list_len,
    })
}

/// The pages of a transfer straight to or from `pieces` (guest RAM, not one buffer), as PRP
/// entries in `out`: `(address, bytes)`, each inside one page, only the first starting inside
/// its page and all but the last ending at a page's end — so any run of them that ends at a
/// page's end is one command's PRPs. How many, or `None` when PRPs cannot describe the pieces
/// (a piece ends inside a page and another follows it) or a piece is not whole `block`s at a
/// `block`-aligned address (`block` a power of two up to a page).
pub fn page_entries(
    pieces: &[virt::block::HostPiece],
    block: u64,
    out: &mut [(u64, u64)],
) -> Option<usize> {
    let mut n = 0usize;
    for p in pieces {
        if !p.hpa.is_multiple_of(block) || !p.len.is_multiple_of(block) || p.len == 0 {
            return None;
        }
        let end = p.hpa.checked_add(p.len)?;
        let mut at = p.hpa;
        while at < end {
            let stop = ((at | (PAGE - 1)) + 1).min(end);
            if n > 0 {
                let (last_at, last_len) = out[n - 1];
                if !(last_at + last_len).is_multiple_of(PAGE) || !at.is_multiple_of(PAGE) {
                    return None;
                }
            }
            *out.get_mut(n)? = (at, stop - at);
            n += 1;
            at = stop;
        }
    }
    Some(n)
}

/// The next command of a direct transfer, from its page entries ([`page_entries`]): as many
/// entries (at least one) as fit in `max` bytes and in PRP1 plus a list of `list.len()` (at
/// most one list page), as PRPs whose list entries go to `list` (which the controller will
/// read at `list_pa`). The PRPs, how many entries they take, and their bytes.
pub fn next_command(
    entries: &[(u64, u64)],
    max: u64,
    list: &mut [u64],
    list_pa: u64,
) -> Option<(Prps, usize, u64)> {
    let most = 1 + list.len().min(LIST_ENTRIES);
    let (mut k, mut bytes) = (0usize, 0u64);
    while k < entries.len().min(most) && (k == 0 || bytes + entries[k].1 <= max) {
        bytes += entries[k].1;
        k += 1;
    }
    let prps = match &entries[..k] {
        [] => return None,
        [one] => Prps {
            prp1: one.0,
            prp2: 0,
            list_len: 0,
        },
        [one, two] => Prps {
            prp1: one.0,
            prp2: two.0,
            list_len: 0,
        },
        [one, more @ ..] => {
            for (slot, e) in list.iter_mut().zip(more) {
                *slot = e.0;
            }
            Prps {
                prp1: one.0,
                prp2: list_pa,
                list_len: more.len(),
            }
        }
    };
    Some((prps, k, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use virt::block::HostPiece;

    #[test]
    fn a_direct_transfer_is_cut_into_commands_by_bytes_and_by_list_room() {
        let entries: Vec<(u64, u64)> = (0..10u64)
            .map(|i| {
                if i == 0 {
                    (0x10800, 0x800)
                } else {
                    (0x20000 + i * 0x3000, 0x1000)
                }
            })
            .collect();
        let mut list = [0u64; 8];
        // 0x800 + 3 pages fit 0x3800 bytes: PRP1 and a list of three.
        let (p, k, bytes) = next_command(&entries, 0x3800, &mut list, LIST).unwrap();
        assert_eq!(
            (p.prp1, p.prp2, p.list_len, k, bytes),
            (0x10800, LIST, 3, 4, 0x3800)
        );
        assert_eq!(list[..3], [0x23000, 0x26000, 0x29000]);
        // Two entries: PRP2 is the second page itself; one entry: no PRP2.
        let (p, k, _) = next_command(&entries[4..], 0x2000, &mut list, LIST).unwrap();
        assert_eq!((p.prp1, p.prp2, p.list_len, k), (0x2c000, 0x2f000, 0, 2));
        let (p, k, _) = next_command(&entries[9..], 0x10000, &mut list, LIST).unwrap();
        assert_eq!((p.prp2, k), (0, 1));
        // The list's room bounds a command as much as its bytes do; a page always goes.
        let (p, k, _) = next_command(&entries, u64::MAX, &mut list[..2], LIST).unwrap();
        assert_eq!((p.list_len, k), (2, 3));
        let (_, k, _) = next_command(&entries[1..], 0x100, &mut list, LIST).unwrap();
        assert_eq!(k, 1);
        assert!(next_command(&[], 0x1000, &mut list, LIST).is_none());
    }

    #[test]
    fn guest_pages_become_prp_entries_where_prps_can_describe_them() {
        let p = |hpa, len| HostPiece { hpa, len };
        let mut out = [(0, 0); 8];
        // A first piece from inside its page, then whole pages anywhere; a joined run that
        // crosses pages is cut at each.
        let pieces = [p(0x5a00, 0x600), p(0x9000, 0x1000), p(0x2000, 0x1200)];
        assert_eq!(page_entries(&pieces, 512, &mut out), Some(4));
        assert_eq!(
            out[..4],
            [
                (0x5a00, 0x600),
                (0x9000, 0x1000),
                (0x2000, 0x1000),
                (0x3000, 0x200)
            ]
        );
        // A page cut short with more after it, a piece starting inside a page after the first,
        // blocks the device cannot move, too many pages: not describable.
        assert_eq!(
            page_entries(&[p(0x1000, 0x800), p(0x3000, 0x1000)], 512, &mut out),
            None
        );
        assert_eq!(
            page_entries(&[p(0x1000, 0x1000), p(0x3200, 0x200)], 512, &mut out),
            None
        );
        assert_eq!(page_entries(&[p(0x1200, 0x200)], 4096, &mut out), None);
        assert_eq!(page_entries(&[p(0x1000, 0x100)], 512, &mut out), None);
        assert_eq!(page_entries(&[p(0x1000, 0x9000)], 512, &mut out), None);
        assert_eq!(page_entries(&[p(0x1000, 0)], 512, &mut out), None);
        assert_eq!(
            page_entries(&[p(u64::MAX - 0x1ff, 0x200)], 512, &mut out),
            None
        );
    }

    const LIST: u64 = 0x7000;

    fn build_(addr: u64, len: usize) -> (Result<Prps, PrpError>, [u64; LIST_ENTRIES]) {
        let mut list = [0u64; LIST_ENTRIES];
        let r = build(addr, len, &mut list, LIST);
        (r, list)
    }

    #[test]
    fn one_page_needs_only_prp1() {
        let (r, _) = build_(0x10000, 4096);
        assert_eq!(
            r,
            Ok(Prps {
                prp1: 0x10000,
                prp2: 0,
                list_len: 0
            })
        );
        let (r, _) = build_(0x10200, 512);
        assert_eq!(r.unwrap().prp2, 0);
        // Ends exactly at the page boundary.
        let (r, _) = build_(0x10e00, 512);
        assert_eq!(r.unwrap().prp2, 0);
    }

    #[test]
    fn two_pages_use_prp2_directly() {
        let (r, _) = build_(0x10000, 8192);
        assert_eq!(r.unwrap().prp2, 0x11000);
        // A single sector straddling a page boundary.
        let (r, _) = build_(0x10f00, 512);
        let p = r.unwrap();
        assert_eq!((p.prp1, p.prp2, p.list_len), (0x10f00, 0x11000, 0));
    }

    #[test]
    fn more_pages_use_a_list() {
        let (r, list) = build_(0x10000, 64 * 1024);
        let p = r.unwrap();
        assert_eq!((p.prp1, p.prp2, p.list_len), (0x10000, LIST, 15));
        assert_eq!(list[0], 0x11000);
        assert_eq!(list[14], 0x1f000);
        assert_eq!(list[15], 0, "nothing past the transfer");
    }

    #[test]
    fn a_buffer_starting_mid_page_needs_one_page_more() {
        // 8 KiB from 0x10800 touches 0x10000, 0x11000 and 0x12000.
        let (r, list) = build_(0x10800, 8192);
        let p = r.unwrap();
        assert_eq!((p.prp1, p.prp2, p.list_len), (0x10800, LIST, 2));
        assert_eq!(&list[..2], &[0x11000, 0x12000]);
    }

    #[test]
    fn refuses_what_it_cannot_describe() {
        assert_eq!(build_(0x10000, 0).0, Err(PrpError::Empty));
        assert_eq!(build_(0x10001, 512).0, Err(PrpError::Unaligned));
        assert_eq!(build_(0x10002, 512).0, Err(PrpError::Unaligned));
        // 513 pages exactly fit: PRP1 plus a full list.
        let (r, list) = build_(0x100000, 513 * 4096);
        assert_eq!(r.unwrap().list_len, 512);
        assert_eq!(list[511], 0x100000 + 512 * 4096);
        assert_eq!(build_(0x100000, 513 * 4096 + 4).0, Err(PrpError::TooLong));
        assert_eq!(build_(u64::MAX - 3, 8).0, Err(PrpError::TooLong));
        let mut list = [0u64; 4];
        assert_eq!(
            build(0, 6 * 4096, &mut list, LIST),
            Err(PrpError::TooLong),
            "a short list slice bounds the transfer too"
        );
        assert_eq!(
            build(0, 3 * 4096, &mut list, LIST + 8),
            Err(PrpError::Unaligned)
        );
    }
}
