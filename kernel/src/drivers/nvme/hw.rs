//! The controller's registers and the DMA memory the driver shares with it.
#![expect(unsafe_code)]
// UNSAFETY: volatile accesses to the controller's BAR and to frames the controller reads
// and writes by DMA.

use super::NvmeError;
use super::regs::PAGE;
use crate::mm::{paging, phys};
use core::ptr::NonNull;
use volatile::VolatilePtr;

/// The controller's register BAR, identity mapped uncached by the host tables.
pub struct Mmio {
    base: u64,
    len: usize,
}

impl Mmio {
    /// `None` unless `[base, base + len)` lies inside the identity map, which maps every
    /// non-RAM address uncached.
    pub fn new(base: u64, len: usize) -> Option<Mmio> {
        let end = base.checked_add(len as u64)?;
        (base != 0 && base.is_multiple_of(4) && end <= paging::mapped_span())
            .then_some(Mmio { base, len })
    }

    fn reg(&self, offset: usize) -> VolatilePtr<'_, u32> {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len);
        // SAFETY: inside the BAR (checked above and in `new`), dword aligned, identity
        // mapped uncached; the controller's registers tolerate dword accesses.
        unsafe {
            VolatilePtr::new(NonNull::new_unchecked(
                (self.base + offset as u64) as *mut u32,
            ))
        }
    }

    pub fn read32(&self, offset: usize) -> u32 {
        self.reg(offset).read()
    }

    pub fn write32(&self, offset: usize, value: u32) {
        self.reg(offset).write(value)
    }

    /// 64-bit registers as two dwords, low first: some controllers take no qword accesses.
    pub fn read64(&self, offset: usize) -> u64 {
        u64::from(self.read32(offset)) | (u64::from(self.read32(offset + 4)) << 32)
    }

    pub fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// Zeroed, page-aligned, physically contiguous frames (identity mapped: physical address
/// == virtual address), owned by the driver for ever: a controller that was reset or timed
/// out may still write to them, so they are never handed back.
pub struct Dma {
    pa: u64,
    len: usize,
}

impl Dma {
    pub fn alloc(bytes: usize) -> Result<Dma, NvmeError> {
        let pages = (bytes as u64).div_ceil(PAGE).max(1);
        let pa = phys::alloc_zeroed(pages, PAGE).map_err(|_| NvmeError::OutOfMemory)?;
        Ok(Dma {
            pa,
            len: (pages * PAGE) as usize,
        })
    }

    pub fn pa(&self) -> u64 {
        self.pa
    }

    fn ptr<T>(&self, offset: usize) -> *mut T {
        assert!(offset.is_multiple_of(core::mem::align_of::<T>()));
        assert!(offset + core::mem::size_of::<T>() <= self.len);
        (self.pa + offset as u64) as *mut T
    }

    pub fn read32(&self, offset: usize) -> u32 {
        // SAFETY: inside our frames (checked by `ptr`), aligned; volatile because the
        // controller writes this memory behind the compiler's back.
        unsafe { core::ptr::read_volatile(self.ptr::<u32>(offset)) }
    }

    pub fn write32(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile(self.ptr::<u32>(offset), value) }
    }

    pub fn write64(&mut self, offset: usize, value: u64) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile(self.ptr::<u64>(offset), value) }
    }

    /// The frames as bytes, for data the controller is not using right now (the bounce
    /// buffer between commands, an Identify page after its command completed).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: our frames, identity mapped and initialised (zeroed at allocation); the
        // driver only looks at them while no command that targets them is outstanding.
        unsafe { core::slice::from_raw_parts(self.pa as *const u8, self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.pa as *mut u8, self.len) }
    }
}

/// Zeroes memory a direct read was given to fill (`Nvme::read_direct`'s pieces) where the
/// image has no data to read: the CPU writes what the controller would have.
pub fn zero_direct(to: &[virt::block::HostPiece]) {
    for p in to {
        // SAFETY: a direct read's pieces are memory its caller hands over for the controller
        // to write (guest RAM from `GuestMemory::dma_range`, identity mapped, the VM's for its
        // life); writing them from the CPU instead is the same grant.
        unsafe { vcpu::zero_host(vcpu::host_ptr(p.hpa), p.len) };
    }
}
