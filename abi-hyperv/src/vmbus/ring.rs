//! One direction of a channel's ring buffer, in the pages of its GPADL: a control page
//! (`write_index`, `read_index`, `interrupt_mask`, `pending_send_sz`, `feature_bits`) and a
//! data area the indices point into as byte offsets. Packets are a 16-byte descriptor
//! `{ type, offset8, len8, flags, trans_id }`, the payload padded to 8 bytes, and an 8-byte
//! trailer. One byte is always left free, so equal indices mean empty.
//!
//! The host keeps its own copy of the index it owns (the read index of the guest's outgoing
//! ring, the write index of its incoming one) and only publishes it: whatever the guest writes
//! there is never read back. The guest's index is read once per pass and checked; an index no
//! honest guest could write breaks the channel.

use virt::GuestMemory;

const PAGE: u64 = 4096;
const WRITE_INDEX: u64 = 0;
const READ_INDEX: u64 = 4;
const INTERRUPT_MASK: u64 = 8;
const PENDING_SEND_SZ: u64 = 12;

pub const DESCRIPTOR: usize = 16;
pub const TRAILER: usize = 8;

/// Packet types.
pub mod packet {
    pub const DATA_INBAND: u16 = 6;
    pub const DATA_USING_GPA_DIRECT: u16 = 9;
    pub const COMP: u16 = 11;
    /// Descriptor flag: the sender wants a completion with the same transaction id.
    pub const COMPLETION_REQUESTED: u16 = 1;
}

/// The guest wrote something no ring can hold; the channel stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken;

/// A ring as a window on the GPADL's page list: `pages[0]` is the control page.
#[derive(Clone, Copy)]
pub struct Ring<'a> {
    pub pages: &'a [u64],
}

impl Ring<'_> {
    fn control(&self) -> Result<u64, Broken> {
        self.pages.first().map(|p| p << 12).ok_or(Broken)
    }

    pub fn size(&self) -> u32 {
        (self.pages.len().saturating_sub(1) as u64 * PAGE) as u32
    }

    fn field(&self, mem: &dyn GuestMemory, at: u64) -> Result<u32, Broken> {
        mem.read_u32(self.control()? + at).map_err(|_| Broken)
    }

    fn set(&self, mem: &dyn GuestMemory, at: u64, v: u32) -> Result<(), Broken> {
        mem.write_u32(self.control()? + at, v).map_err(|_| Broken)
    }

    /// The guest's index (its write index of its outgoing ring, its read index of its
    /// incoming one): inside the data area and 8-byte aligned, or the ring is broken.
    pub fn guest_index(&self, mem: &dyn GuestMemory, write: bool) -> Result<u32, Broken> {
        let v = self.field(mem, if write { WRITE_INDEX } else { READ_INDEX })?;
        if v >= self.size() || v % 8 != 0 {
            return Err(Broken);
        }
        Ok(v)
    }

    pub fn publish(&self, mem: &dyn GuestMemory, write: bool, v: u32) -> Result<(), Broken> {
        self.set(mem, if write { WRITE_INDEX } else { READ_INDEX }, v)
    }

    pub fn interrupt_mask(&self, mem: &dyn GuestMemory) -> Result<bool, Broken> {
        Ok(self.field(mem, INTERRUPT_MASK)? != 0)
    }

    pub fn pending_send_sz(&self, mem: &dyn GuestMemory) -> Result<u32, Broken> {
        self.field(mem, PENDING_SEND_SZ)
    }

    pub fn set_pending_send_sz(&self, mem: &dyn GuestMemory, v: u32) -> Result<(), Broken> {
        self.set(mem, PENDING_SEND_SZ, v)
    }

    /// Bytes from `from` to `to` going forward round the ring.
    pub fn distance(&self, from: u32, to: u32) -> u32 {
        let size = self.size();
        if size == 0 {
            return 0;
        }
        (to + size - from) % size
    }

    /// Copies between `buf` and the data area at `offset`, wrapping and crossing pages.
    fn access(
        &self,
        offset: u32,
        len: usize,
        mut f: impl FnMut(u64, core::ops::Range<usize>) -> Result<(), virt::MemError>,
    ) -> Result<(), Broken> {
        let size = u64::from(self.size());
        if size == 0 || len as u64 > size {
            return Err(Broken);
        }
        let mut pos = u64::from(offset) % size;
        let mut done = 0;
        while done < len {
            let page = (pos / PAGE) as usize + 1;
            let within = pos % PAGE;
            let n = ((PAGE - within) as usize).min(len - done);
            let gpa = self.pages.get(page).ok_or(Broken)? << 12;
            f(gpa + within, done..done + n).map_err(|_| Broken)?;
            done += n;
            pos = (pos + n as u64) % size;
        }
        Ok(())
    }

    pub fn read(&self, mem: &dyn GuestMemory, offset: u32, buf: &mut [u8]) -> Result<(), Broken> {
        let len = buf.len();
        self.access(offset, len, |gpa, r| mem.read(gpa, &mut buf[r]))
    }

    pub fn write(&self, mem: &dyn GuestMemory, offset: u32, data: &[u8]) -> Result<(), Broken> {
        self.access(offset, data.len(), |gpa, r| mem.write(gpa, &data[r]))
    }

    /// Offset `n` bytes past `offset`.
    pub fn advance(&self, offset: u32, n: usize) -> u32 {
        let size = u64::from(self.size()).max(1);
        ((u64::from(offset) + n as u64) % size) as u32
    }
}

/// A packet's descriptor as read from the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub kind: u16,
    /// Where the payload starts, in bytes from the descriptor.
    pub offset: usize,
    /// The packet's length without the trailer, in bytes.
    pub len: usize,
    pub flags: u16,
    pub trans_id: u64,
}

impl Descriptor {
    pub fn parse(b: &[u8; DESCRIPTOR]) -> Descriptor {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Descriptor {
            kind: u16_at(0),
            offset: usize::from(u16_at(2)) * 8,
            len: usize::from(u16_at(4)) * 8,
            flags: u16_at(6),
            trans_id: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
        }
    }

    pub fn encode(&self) -> [u8; DESCRIPTOR] {
        let mut b = [0u8; DESCRIPTOR];
        b[0..2].copy_from_slice(&self.kind.to_le_bytes());
        b[2..4].copy_from_slice(&((self.offset / 8) as u16).to_le_bytes());
        b[4..6].copy_from_slice(&((self.len / 8) as u16).to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.trans_id.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virt::VecMemory;

    fn ring(pages: &[u64]) -> Ring<'_> {
        Ring { pages }
    }

    #[test]
    fn data_wraps_across_scattered_pages() {
        let mem = VecMemory::new(64 * 4096);
        // Control page 40, data pages 7 then 3: not contiguous, not in order.
        let pages = [40, 7, 3];
        let r = ring(&pages);
        assert_eq!(r.size(), 8192);
        let data: Vec<u8> = (0..100u8).collect();
        r.write(&mem, 8192 - 40, &data).unwrap();
        let mut tail = [0u8; 40];
        mem.read(3 * 4096 + 4096 - 40, &mut tail).unwrap();
        assert_eq!(&tail[..], &data[..40]);
        let mut head = [0u8; 60];
        mem.read(7 * 4096, &mut head).unwrap();
        assert_eq!(&head[..], &data[40..]);
        let mut back = [0u8; 100];
        r.read(&mem, 8192 - 40, &mut back).unwrap();
        assert_eq!(&back[..], &data[..]);
        // Crossing from the first data page into the second.
        r.write(&mem, 4090, &data[..20]).unwrap();
        let mut x = [0u8; 20];
        r.read(&mem, 4090, &mut x).unwrap();
        assert_eq!(&x[..], &data[..20]);
    }

    #[test]
    fn guest_indices_are_checked() {
        let mem = VecMemory::new(64 * 4096);
        let pages = [1, 2, 3];
        let r = ring(&pages);
        for (v, ok) in [
            (0, true),
            (8, true),
            (8184, true),
            (8192, false),
            (4, false),
        ] {
            mem.write_u32(4096, v).unwrap();
            assert_eq!(r.guest_index(&mem, true).is_ok(), ok, "{v}");
        }
        assert_eq!(r.distance(8000, 16), 208);
        assert_eq!(r.advance(8184, 16), 8);
    }

    #[test]
    fn a_ring_outside_ram_or_without_data_is_broken() {
        let mem = VecMemory::new(4 * 4096);
        assert_eq!(ring(&[1]).write(&mem, 0, &[1]), Err(Broken));
        assert_eq!(ring(&[1, 9]).write(&mem, 0, &[1]), Err(Broken));
        assert_eq!(ring(&[9, 1]).guest_index(&mem, true), Err(Broken));
        assert_eq!(ring(&[1, 2]).read(&mem, 0, &mut [0; 4097]), Err(Broken));
    }

    #[test]
    fn descriptors_round_trip() {
        let d = Descriptor {
            kind: packet::COMP,
            offset: 16,
            len: 80,
            flags: 0,
            trans_id: 0x1234_5678_9abc,
        };
        assert_eq!(Descriptor::parse(&d.encode()), d);
    }
}
