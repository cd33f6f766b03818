//! Physical Region Page lists (NVMe 1.4 §4.3): the guest pages a command's data occupies,
//! collected and checked against guest RAM before any data moves.

use super::MAX_TRANSFER;
use super::queue::Status;
use virt::GuestMemory;

const PAGE: u64 = 4096;
/// A transfer of [`MAX_TRANSFER`] bytes that starts inside a page spans one page more.
const MAX_SEGMENTS: usize = MAX_TRANSFER / PAGE as usize + 1;

/// The (guest address, length) pieces of one transfer, in order.
pub struct Prps {
    segments: heapless::Vec<(u64, usize), MAX_SEGMENTS>,
}

impl Prps {
    /// Walks PRP1, PRP2 and any PRP list pages for `len` bytes (at most [`MAX_TRANSFER`]).
    pub fn map(mem: &dyn GuestMemory, prp1: u64, prp2: u64, len: usize) -> Result<Self, Status> {
        let mut p = Prps {
            segments: heapless::Vec::new(),
        };
        if len == 0 {
            return Ok(p);
        }
        if len > MAX_TRANSFER {
            return Err(Status::INVALID_FIELD);
        }
        // PRP1 may start inside a page, on a dword boundary.
        if !prp1.is_multiple_of(4) {
            return Err(Status::INVALID_PRP_OFFSET);
        }
        let first = len.min((PAGE - prp1 % PAGE) as usize);
        p.push(mem, prp1, first)?;
        let mut rest = len - first;
        if rest == 0 {
            return Ok(p);
        }
        if rest <= PAGE as usize {
            if !prp2.is_multiple_of(PAGE) {
                return Err(Status::INVALID_PRP_OFFSET);
            }
            p.push(mem, prp2, rest)?;
            return Ok(p);
        }
        // PRP2 points into a list, on a qword boundary; a list's last slot chains to the next
        // list page when more than one data page remains. Each step either consumes a data
        // page or follows a chain to a page-aligned list (whose last slot is 511 slots away),
        // so this ends within twice the pages a transfer can span.
        if !prp2.is_multiple_of(8) {
            return Err(Status::INVALID_PRP_OFFSET);
        }
        let mut slot = prp2;
        for _ in 0..2 * MAX_SEGMENTS + 2 {
            let entry = mem
                .read_u64(slot)
                .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
            if !entry.is_multiple_of(PAGE) {
                return Err(Status::INVALID_PRP_OFFSET);
            }
            if slot % PAGE == PAGE - 8 && rest > PAGE as usize {
                slot = entry;
                continue;
            }
            let n = rest.min(PAGE as usize);
            p.push(mem, entry, n)?;
            rest -= n;
            if rest == 0 {
                return Ok(p);
            }
            slot = slot.checked_add(8).ok_or(Status::DATA_TRANSFER_ERROR)?;
        }
        Err(Status::INVALID_FIELD)
    }

    fn push(&mut self, mem: &dyn GuestMemory, gpa: u64, len: usize) -> Result<(), Status> {
        virt::check_range(mem.size(), gpa, len).map_err(|_| Status::DATA_TRANSFER_ERROR)?;
        self.segments
            .push((gpa, len))
            .map_err(|_| Status::INVALID_FIELD)
    }

    /// The guest pages as the host's devices reach them, for a volume that reads straight into
    /// them; `None` where guest memory offers no such address.
    pub fn host_pieces(
        &self,
        mem: &dyn GuestMemory,
        out: &mut [virt::block::HostPiece],
    ) -> Option<usize> {
        let ranges = self.segments.iter().map(|&(gpa, len)| (gpa, len as u64));
        virt::block::host_pieces(mem, ranges, out)
    }

    /// Scatters `data` (as long as the mapping) into the guest pages.
    pub fn scatter(&self, mem: &dyn GuestMemory, data: &[u8]) -> Result<(), Status> {
        let mut off = 0;
        for &(gpa, len) in &self.segments {
            let part = data.get(off..off + len).ok_or(Status::INTERNAL_ERROR)?;
            mem.write(gpa, part)
                .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
            off += len;
        }
        Ok(())
    }

    /// Gathers the guest pages into `data` (as long as the mapping).
    pub fn gather(&self, mem: &dyn GuestMemory, data: &mut [u8]) -> Result<(), Status> {
        let mut off = 0;
        for &(gpa, len) in &self.segments {
            let part = data.get_mut(off..off + len).ok_or(Status::INTERNAL_ERROR)?;
            mem.read(gpa, part)
                .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
            off += len;
        }
        Ok(())
    }
}
