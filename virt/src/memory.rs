//! Bounds-checked access to guest-physical memory.
//!
//! Guest RAM is shared with a running guest (other vCPUs write it concurrently), so the real
//! implementation (`vcpu::GuestRam`) never forms Rust references to it: every access is a
//! volatile copy. Personality crates are written against [`GuestMemory`] and test with
//! [`VecMemory`] (feature `test-util`).

/// A guest-physical access outside guest RAM, or one whose `gpa + len` overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemError {
    pub gpa: u64,
    pub len: usize,
}

/// Guest-physical memory. Implementations check every access against their size.
pub trait GuestMemory {
    /// Bytes of guest RAM, mapped at GPA 0.
    fn size(&self) -> u64;
    /// Copies `buf.len()` bytes from `gpa`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copies `data` to `gpa`.
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError>;
    /// The host-physical address where the host's devices reach `[gpa, gpa + len)` of guest
    /// RAM directly (one run), readied for them as for [`GuestMemory::write`]; `None` where
    /// the range is not RAM or this memory offers no such address.
    fn dma_range(&self, gpa: u64, len: u64) -> Option<u64> {
        let _ = (gpa, len);
        None
    }

    fn read_u8(&self, gpa: u64) -> Result<u8, MemError> {
        let mut b = [0; 1];
        self.read(gpa, &mut b)?;
        Ok(b[0])
    }
    fn read_u16(&self, gpa: u64) -> Result<u16, MemError> {
        let mut b = [0; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn read_u32(&self, gpa: u64) -> Result<u32, MemError> {
        let mut b = [0; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_u64(&self, gpa: u64) -> Result<u64, MemError> {
        let mut b = [0; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write_u32(&self, gpa: u64, v: u32) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
    fn write_u64(&self, gpa: u64, v: u64) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
}

/// Checks `[gpa, gpa+len)` against `[0, size)`; returns the start offset as usize.
pub fn check_range(size: u64, gpa: u64, len: usize) -> Result<usize, MemError> {
    let err = MemError { gpa, len };
    let end = gpa.checked_add(len as u64).ok_or(err)?;
    if end > size {
        return Err(err);
    }
    usize::try_from(gpa).map_err(|_| err)
}

/// No memory at all: every access fails. What a device sees of guest RAM where the VM offers
/// it none (a device model driven without a VM).
pub struct NoMemory;

impl GuestMemory for NoMemory {
    fn size(&self) -> u64 {
        0
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(0, gpa, buf.len()).map(|_| ())
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        check_range(0, gpa, data.len()).map(|_| ())
    }
}

/// Guest RAM backed by a host buffer, for host tests. Interior mutability lets it implement the
/// `&self` trait just as shared guest memory does.
#[cfg(any(test, feature = "test-util"))]
pub struct VecMemory {
    bytes: core::cell::RefCell<alloc::vec::Vec<u8>>,
    /// Whether it offers devices addresses ([`GuestMemory::dma_range`]): its own offsets.
    pub dma: bool,
}

#[cfg(any(test, feature = "test-util"))]
impl VecMemory {
    /// `size` zeroed bytes of guest RAM.
    pub fn new(size: usize) -> Self {
        VecMemory {
            bytes: core::cell::RefCell::new(alloc::vec![0; size]),
            dma: false,
        }
    }
}

#[cfg(any(test, feature = "test-util"))]
impl GuestMemory for VecMemory {
    fn size(&self) -> u64 {
        self.bytes.borrow().len() as u64
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = check_range(self.size(), gpa, buf.len())?;
        buf.copy_from_slice(&self.bytes.borrow()[off..off + buf.len()]);
        Ok(())
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let off = check_range(self.size(), gpa, data.len())?;
        self.bytes.borrow_mut()[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn dma_range(&self, gpa: u64, len: u64) -> Option<u64> {
        let n = usize::try_from(len).ok()?;
        (self.dma && check_range(self.size(), gpa, n).is_ok()).then_some(gpa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let m = VecMemory::new(0x1000);
        assert!(m.write_u64(0xff8, 0x1122_3344_5566_7788).is_ok());
        assert_eq!(m.read_u64(0xff8), Ok(0x1122_3344_5566_7788));
        assert_eq!(m.read_u32(0xffc), Ok(0x1122_3344));
        assert_eq!(m.read_u64(0xff9), Err(MemError { gpa: 0xff9, len: 8 }));
        assert!(m.read_u8(0x1000).is_err());
        assert!(
            m.write(0x1000, &[]).is_ok(),
            "an empty access at the end is in bounds"
        );
        assert!(m.write(0x1001, &[]).is_err());
    }

    #[test]
    fn overflowing_range_is_refused() {
        assert!(check_range(u64::MAX, u64::MAX - 3, 8).is_err());
        assert!(check_range(u64::MAX, u64::MAX, 1).is_err());
        let m = VecMemory::new(16);
        let mut b = [0u8; 4];
        assert!(m.read(u64::MAX - 1, &mut b).is_err());
    }
}
