//! Hypercall arguments live at guest-virtual addresses (PVH Linux passes kernel pointers), so
//! every copy walks the guest page tables one 4 KiB page at a time: contiguous in the guest's
//! view need not mean contiguous in guest-physical memory.

use crate::errno::Errno;
use virt::walk::{Access, translate};
use virt::{ControlRegs, GuestMemory};

const PAGE: u64 = 0x1000;

/// The guest's address space as seen by the vCPU that made the hypercall.
#[derive(Clone, Copy)]
pub(crate) struct GuestVa<'a> {
    pub mem: &'a dyn GuestMemory,
    pub ctl: ControlRegs,
}

impl GuestVa<'_> {
    /// The guest-physical address of `va` for a `len`-byte access that must not cross a page
    /// (the ABI's in-place areas are registered once and then used by GPA).
    pub fn gpa_in_page(&self, va: u64, len: u64, write: bool) -> Result<u64, Errno> {
        if len == 0
            || (va & (PAGE - 1))
                .checked_add(len)
                .is_none_or(|end| end > PAGE)
        {
            return Err(Errno::EINVAL);
        }
        let t = translate(self.mem, &self.ctl, va, access(write)).map_err(|_| Errno::EFAULT)?;
        let end = t.gpa.checked_add(len).ok_or(Errno::EFAULT)?;
        if end > self.mem.size() {
            return Err(Errno::EFAULT);
        }
        Ok(t.gpa)
    }

    pub fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < buf.len() {
            let (gpa, n) = self.step(va, done, buf.len(), false)?;
            let chunk = buf.get_mut(done..done + n).ok_or(Errno::EFAULT)?;
            self.mem.read(gpa, chunk).map_err(|_| Errno::EFAULT)?;
            done += n;
        }
        Ok(())
    }

    pub fn write(&self, va: u64, data: &[u8]) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < data.len() {
            let (gpa, n) = self.step(va, done, data.len(), true)?;
            let chunk = data.get(done..done + n).ok_or(Errno::EFAULT)?;
            self.mem.write(gpa, chunk).map_err(|_| Errno::EFAULT)?;
            done += n;
        }
        Ok(())
    }

    /// Translates the page holding byte `done` of the access; returns its GPA and how many
    /// bytes of the access that page holds.
    fn step(&self, va: u64, done: usize, total: usize, write: bool) -> Result<(u64, usize), Errno> {
        let addr = va.wrapping_add(done as u64);
        let t = translate(self.mem, &self.ctl, addr, access(write)).map_err(|_| Errno::EFAULT)?;
        let in_page = (PAGE - (addr & (PAGE - 1))) as usize;
        Ok((t.gpa, in_page.min(total - done)))
    }

    pub fn read_u32(&self, va: u64) -> Result<u32, Errno> {
        let mut b = [0; 4];
        self.read(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn read_u64(&self, va: u64) -> Result<u64, Errno> {
        let mut b = [0; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a fixed-size argument structure.
    pub fn read_struct<const N: usize>(&self, va: u64) -> Result<[u8; N], Errno> {
        let mut b = [0; N];
        self.read(va, &mut b)?;
        Ok(b)
    }
}

fn access(write: bool) -> Access {
    Access {
        write,
        user: false,
        exec: false,
    }
}

/// Little-endian field readers for argument structures copied in with
/// [`GuestVa::read_struct`]; the offsets are compile-time constants inside the array.
pub(crate) fn u16_at<const N: usize>(b: &[u8; N], off: usize) -> u16 {
    let mut v = [0; 2];
    if let Some(s) = b.get(off..off + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

pub(crate) fn u32_at<const N: usize>(b: &[u8; N], off: usize) -> u32 {
    let mut v = [0; 4];
    if let Some(s) = b.get(off..off + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

pub(crate) fn u64_at<const N: usize>(b: &[u8; N], off: usize) -> u64 {
    let mut v = [0; 8];
    if let Some(s) = b.get(off..off + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}
