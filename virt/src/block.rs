//! The block seam: what a disk backend (Xen blkback, Hyper-V storvsc, an emulated NVMe
//! device) sees of a guest's disk — sectors to read and write, a flush, a size, whether it may
//! write — and nothing of where the sectors live (a VHD on an NVMe namespace, in the
//! hypervisor). [`MemVolume`] (feature `test-util`) stands in for one in host tests.

/// A volume's sector size. VHD and every backend protocol Janus speaks count in 512 bytes.
pub const SECTOR: u64 = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum VolumeError {
    /// The request reaches past the last sector, or its buffer is not whole sectors.
    OutOfRange,
    /// A write to a read-only volume.
    ReadOnly,
    /// The medium failed; the volume is unusable (the guest gets an I/O error).
    Io,
    /// The volume is full: its container has no room left to grow the image.
    NoSpace,
}

/// What a backend advertises of a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    pub sectors: u64,
    pub read_only: bool,
}

/// A piece of guest RAM as the host's devices reach it: where a request's data lands when a
/// volume reads it straight into the guest (the host device's DMA), without the hypervisor
/// copying it. Backends get these from [`crate::GuestMemory::dma_range`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPiece {
    pub hpa: u64,
    pub len: u64,
}

/// Pieces one request may have: a 512 KiB transfer that starts inside a page, page by page.
pub const MAX_PIECES: usize = 136;

/// The guest ranges `(gpa, len)` as host pieces (adjacent ones joined) in `out`: how many,
/// or `None` when one of them offers no such address or `out` is too short.
pub fn host_pieces(
    mem: &dyn crate::GuestMemory,
    ranges: impl IntoIterator<Item = (u64, u64)>,
    out: &mut [HostPiece],
) -> Option<usize> {
    let mut n = 0usize;
    for (gpa, len) in ranges {
        let hpa = mem.dma_range(gpa, len)?;
        match n.checked_sub(1).and_then(|i| out.get_mut(i)) {
            Some(last) if last.hpa.checked_add(last.len) == Some(hpa) => last.len += len,
            _ => {
                *out.get_mut(n)? = HostPiece { hpa, len };
                n += 1;
            }
        }
    }
    Some(n)
}

/// The part of `pieces` that holds bytes `[from, from + len)` of their data, in `out`: how many
/// pieces, or `None` when the pieces are shorter or `out` is.
pub fn sub_pieces(
    pieces: &[HostPiece],
    from: u64,
    len: u64,
    out: &mut [HostPiece],
) -> Option<usize> {
    let end = from.checked_add(len)?;
    let (mut pos, mut n) = (0u64, 0usize);
    for p in pieces {
        let (start, stop) = (pos.max(from), (pos + p.len).min(end));
        if start < stop {
            *out.get_mut(n)? = HostPiece {
                hpa: p.hpa + (start - pos),
                len: stop - start,
            };
            n += 1;
        }
        pos += p.len;
        if pos >= end {
            return Some(n);
        }
    }
    (len == 0).then_some(n)
}

/// Moves `sector`.. straight between the VM's disk `index` and `pieces` (a write: from them),
/// as one volume request; `None` where the volume cannot, and the caller serves the request
/// through a buffer.
pub fn transfer_direct(
    host: &mut dyn crate::personality::Host,
    index: u32,
    write: bool,
    sector: u64,
    pieces: &[HostPiece],
) -> Option<Result<(), VolumeError>> {
    let mut done = false;
    let r = host.disk_io(index, &mut |v| {
        done = v.direct(write, sector, pieces)?;
        Ok(())
    });
    match r {
        Ok(()) if !done => None,
        r => Some(r),
    }
}

pub trait Volume {
    /// Size in [`SECTOR`]s.
    fn sectors(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Reads `buf.len() / SECTOR` sectors from `sector`.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), VolumeError>;
    /// Writes whole sectors at `sector`. Not durable until [`Volume::flush`] returns.
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), VolumeError>;
    /// Every write that completed before the call is durable when it returns `Ok`.
    fn flush(&mut self) -> Result<(), VolumeError>;
    /// Reads whole sectors from `sector` straight into `to` (as many bytes as the pieces hold)
    /// without the hypervisor copying them. `Ok(false)`: this volume cannot, for this request
    /// or at all; what `to` holds is then unspecified and the caller reads through a buffer.
    fn read_direct(&mut self, sector: u64, to: &[HostPiece]) -> Result<bool, VolumeError> {
        let _ = (sector, to);
        Ok(false)
    }
    /// Writes whole sectors at `sector` straight from `from` (as [`Volume::write`]: durable
    /// at the next flush). `Ok(false)`: this volume cannot; the caller writes through a buffer,
    /// all of the request again.
    fn write_direct(&mut self, sector: u64, from: &[HostPiece]) -> Result<bool, VolumeError> {
        let _ = (sector, from);
        Ok(false)
    }
    /// [`Volume::write_direct`] if `write`, else [`Volume::read_direct`].
    fn direct(
        &mut self,
        write: bool,
        sector: u64,
        pieces: &[HostPiece],
    ) -> Result<bool, VolumeError> {
        if write {
            self.write_direct(sector, pieces)
        } else {
            self.read_direct(sector, pieces)
        }
    }
}

/// The bytes the hypervisor's disk self-tests write: a function of the round, the sector and
/// the byte's place in it, so that the host can tell from the image which round's write each
/// sector holds.
pub fn test_pattern(round: u32, sector: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let s = sector + (i as u64 / SECTOR);
        *b = (s.wrapping_mul(31) as u32)
            .wrapping_add(round.wrapping_mul(131))
            .wrapping_add((i as u32 % 512).wrapping_mul(7))
            .wrapping_add(0x5A) as u8;
    }
}

/// Sectors round `round` (from 1) of the hypervisor's disk stress test writes on a disk of
/// `sectors`, one sector each: 16 spread over the disk's first half, rewritten every round,
/// and one in its second half that lands in a new 2 MiB block each round (until they wrap).
pub fn stress_sectors(round: u32, sectors: u64) -> impl Iterator<Item = u64> {
    let half = (sectors / 2).max(1);
    (0..16u64)
        .map(move |k| (k * 977 + 1) % half)
        .chain(core::iter::once(half + u64::from(round) * 4096 % half))
}

/// Whether `buf` is whole sectors that start at `sector` and end inside `sectors`.
pub fn in_range(sectors: u64, sector: u64, len: usize) -> bool {
    (len as u64).is_multiple_of(SECTOR)
        && sector
            .checked_add(len as u64 / SECTOR)
            .is_some_and(|end| end <= sectors)
}

/// A volume in host memory that counts its flushes and keeps what was durable at the last one.
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone, Debug)]
pub struct MemVolume {
    pub data: alloc::vec::Vec<u8>,
    /// The contents as of the last flush: what a power cut would leave.
    pub durable: alloc::vec::Vec<u8>,
    pub read_only: bool,
    pub flushes: usize,
    /// The direct requests it was asked for, `(write, sector, bytes)`; it does none (a
    /// memory volume reaches no device addresses), so callers fall back to `read`/`write`.
    pub direct_asked: alloc::vec::Vec<(bool, u64, u64)>,
}

#[cfg(any(test, feature = "test-util"))]
impl MemVolume {
    pub fn new(sectors: u64) -> Self {
        let data = alloc::vec![0; (sectors * SECTOR) as usize];
        Self {
            durable: data.clone(),
            data,
            read_only: false,
            flushes: 0,
            direct_asked: alloc::vec::Vec::new(),
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Volume for MemVolume {
    fn sectors(&self) -> u64 {
        self.data.len() as u64 / SECTOR
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        if !in_range(self.sectors(), sector, buf.len()) {
            return Err(VolumeError::OutOfRange);
        }
        let at = (sector * SECTOR) as usize;
        buf.copy_from_slice(&self.data[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), VolumeError> {
        if self.read_only {
            return Err(VolumeError::ReadOnly);
        }
        if !in_range(self.sectors(), sector, buf.len()) {
            return Err(VolumeError::OutOfRange);
        }
        let at = (sector * SECTOR) as usize;
        self.data[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), VolumeError> {
        self.durable.clone_from(&self.data);
        self.flushes += 1;
        Ok(())
    }
    fn read_direct(&mut self, sector: u64, to: &[HostPiece]) -> Result<bool, VolumeError> {
        let bytes = to.iter().map(|p| p.len).sum();
        self.direct_asked.push((false, sector, bytes));
        Ok(false)
    }
    fn write_direct(&mut self, sector: u64, from: &[HostPiece]) -> Result<bool, VolumeError> {
        let bytes = from.iter().map(|p| p.len).sum();
        self.direct_asked.push((true, sector, bytes));
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_whole_sectors_inside_the_volume() {
        assert!(in_range(8, 0, 4096));
        assert!(in_range(8, 7, 512));
        assert!(!in_range(8, 7, 1024));
        assert!(!in_range(8, 0, 100));
        assert!(!in_range(8, u64::MAX, 512));
        let mut v = MemVolume::new(8);
        v.write(1, &[1; 512]).unwrap();
        assert_eq!(v.durable[512], 0, "not durable before a flush");
        v.flush().unwrap();
        assert_eq!(v.durable[512], 1);
        v.read_only = true;
        assert_eq!(v.write(0, &[0; 512]), Err(VolumeError::ReadOnly));
    }

    /// Guest RAM that devices reach at 1 MiB above its guest addresses, except its last page.
    struct Dma(crate::VecMemory);

    impl crate::GuestMemory for Dma {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), crate::MemError> {
            self.0.read(gpa, buf)
        }
        fn write(&self, gpa: u64, data: &[u8]) -> Result<(), crate::MemError> {
            self.0.write(gpa, data)
        }
        fn dma_range(&self, gpa: u64, len: u64) -> Option<u64> {
            (gpa.checked_add(len)? <= self.size() - 4096).then_some(gpa + (1 << 20))
        }
    }

    fn piece(hpa: u64, len: u64) -> HostPiece {
        HostPiece { hpa, len }
    }

    #[test]
    fn guest_ranges_become_host_pieces_adjacent_ones_joined() {
        let mem = Dma(crate::VecMemory::new(0x10000));
        let mut out = [HostPiece::default(); 4];
        let ranges = [(0x1000, 0x1000), (0x2000, 0x200), (0x5200, 0xe00)];
        assert_eq!(host_pieces(&mem, ranges, &mut out), Some(2));
        assert_eq!(out[..2], [piece(0x101000, 0x1200), piece(0x105200, 0xe00)]);
        // A range devices cannot reach, or more pieces than room: no pieces at all.
        assert_eq!(host_pieces(&mem, [(0xf000, 0x1000)], &mut out), None);
        let apart = (0..5).map(|i| (i * 0x2000, 0x1000));
        assert_eq!(host_pieces(&mem, apart, &mut out), None);
    }

    #[test]
    fn sub_pieces_cut_exactly_the_bytes_asked_for() {
        let pieces = [
            piece(0x1000, 0x800),
            piece(0x8000, 0x1000),
            piece(0x3000, 0x200),
        ];
        let mut out = [HostPiece::default(); 3];
        assert_eq!(sub_pieces(&pieces, 0x600, 0x400, &mut out), Some(2));
        assert_eq!(out[..2], [piece(0x1600, 0x200), piece(0x8000, 0x200)]);
        assert_eq!(sub_pieces(&pieces, 0x1800, 0x200, &mut out), Some(1));
        assert_eq!(out[0], piece(0x3000, 0x200));
        assert_eq!(sub_pieces(&pieces, 0, 0x1a00, &mut out), Some(3));
        assert_eq!(out, pieces);
        assert_eq!(
            sub_pieces(&pieces, 0x1800, 0x201, &mut out),
            None,
            "past the end"
        );
        assert_eq!(
            sub_pieces(&pieces, 0, 0x1a00, &mut out[..2]),
            None,
            "no room"
        );
    }
}
