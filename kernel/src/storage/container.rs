//! A byte stream over a device of fixed-size logical blocks (an NVMe namespace), as the VHD
//! library wants its storage: positioned reads and writes at any offset (partial blocks are
//! read, patched and written back), a length that is the image's own rather than the
//! device's (the image grows into the rest, see `vhd::container`), and a flush that reaches
//! the medium.

use embedded_io::{ErrorKind, ErrorType, Read, Seek, SeekFrom, Write};
use virt::block::HostPiece;

/// A device of `lba_count` blocks of `lba_size` bytes.
pub trait LbaDevice {
    fn lba_size(&self) -> u32;
    fn lba_count(&self) -> u64;
    /// Whole blocks from `lba`; `buf.len()` is a multiple of the block size.
    fn read_lbas(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError>;
    fn write_lbas(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError>;
    /// Every completed write is on the medium when this returns `Ok`.
    fn flush(&mut self) -> Result<(), DeviceError>;
    /// Reads whole blocks from `lba` straight into host memory (`to`, guest RAM as the device
    /// reaches it) by the device's own transfer. `Ok(false)`: not on this device, or not in
    /// this layout; `to` is then unspecified.
    fn read_lbas_direct(&mut self, lba: u64, to: &[HostPiece]) -> Result<bool, DeviceError> {
        let _ = (lba, to);
        Ok(false)
    }
    /// Writes whole blocks at `lba` straight from host memory `from`, as `read_lbas_direct`.
    fn write_lbas_direct(&mut self, lba: u64, from: &[HostPiece]) -> Result<bool, DeviceError> {
        let _ = (lba, from);
        Ok(false)
    }
    /// Zeroes host memory `to` (a hole in an image read straight into it); false where the
    /// device has no direct reads.
    fn zero_direct(to: &[HostPiece]) -> bool
    where
        Self: Sized,
    {
        let _ = to;
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The device failed the command or did not answer.
    Io,
    /// A write past the end of the device: the image has no room left to grow.
    NoSpace,
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DeviceError::Io => "the device failed the request",
            DeviceError::NoSpace => "the image has no room left to grow in its container",
        })
    }
}

impl core::error::Error for DeviceError {}

impl embedded_io::Error for DeviceError {
    fn kind(&self) -> ErrorKind {
        match self {
            DeviceError::Io => ErrorKind::Other,
            DeviceError::NoSpace => ErrorKind::OutOfMemory,
        }
    }
}

/// The largest block size supported (the scratch block for partial writes).
pub const MAX_LBA: usize = 4096;

pub struct ContainerIo<D> {
    dev: D,
    pos: u64,
    /// The image's length: its last footer's end, moved on by writes past it.
    len: u64,
    scratch: [u8; MAX_LBA],
}

impl<D: LbaDevice> ContainerIo<D> {
    /// `len` is the image's length inside the device (`vhd::container::image_len`), or the
    /// device's own for an image that fills it. `None` when the device's block size is not a
    /// power of two between 512 and [`MAX_LBA`].
    pub fn new(dev: D, len: u64) -> Option<Self> {
        let b = dev.lba_size() as usize;
        (b.is_power_of_two() && (512..=MAX_LBA).contains(&b)).then_some(Self {
            dev,
            pos: 0,
            len,
            scratch: [0; MAX_LBA],
        })
    }

    pub fn capacity(&self) -> u64 {
        self.dev.lba_count() * u64::from(self.dev.lba_size())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn into_inner(self) -> D {
        self.dev
    }

    fn block(&self) -> u64 {
        u64::from(self.dev.lba_size())
    }

    /// Reads `[at, at + len)` of the container, `len` being what the pieces hold, straight into
    /// them; `Ok(false)` where the device cannot or `at` does not start a block.
    pub fn read_direct(&mut self, at: u64, to: &[HostPiece]) -> Result<bool, DeviceError> {
        let b = self.block();
        if !at.is_multiple_of(b) {
            return Ok(false);
        }
        self.dev.read_lbas_direct(at / b, to)
    }

    /// Writes the pieces at `at` of the container, as `Write` does (the image grows past its
    /// length, not past the device); `Ok(false)` as `read_direct`.
    pub fn write_direct(&mut self, at: u64, from: &[HostPiece]) -> Result<bool, DeviceError> {
        let b = self.block();
        let len: u64 = from.iter().map(|p| p.len).sum();
        let end = at.checked_add(len).ok_or(DeviceError::NoSpace)?;
        if end > self.capacity() {
            return Err(DeviceError::NoSpace);
        }
        if !at.is_multiple_of(b) {
            return Ok(false);
        }
        let done = self.dev.write_lbas_direct(at / b, from)?;
        if done {
            self.len = self.len.max(end);
        }
        Ok(done)
    }

    fn read_from(&mut self, mut at: u64, mut buf: &mut [u8]) -> Result<(), DeviceError> {
        let b = self.block();
        while !buf.is_empty() {
            let off = (at % b) as usize;
            let whole = (buf.len() / b as usize) * b as usize;
            if off == 0 && whole > 0 {
                let (head, rest) = buf.split_at_mut(whole);
                self.dev.read_lbas(at / b, head)?;
                at += whole as u64;
                buf = rest;
                continue;
            }
            let n = buf.len().min(b as usize - off);
            let bs = b as usize;
            self.dev.read_lbas(at / b, &mut self.scratch[..bs])?;
            buf[..n].copy_from_slice(&self.scratch[off..off + n]);
            at += n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }

    fn write_to(&mut self, mut at: u64, mut buf: &[u8]) -> Result<(), DeviceError> {
        let b = self.block();
        if at
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.capacity())
        {
            return Err(DeviceError::NoSpace);
        }
        while !buf.is_empty() {
            let off = (at % b) as usize;
            let whole = (buf.len() / b as usize) * b as usize;
            if off == 0 && whole > 0 {
                self.dev.write_lbas(at / b, &buf[..whole])?;
                at += whole as u64;
                buf = &buf[whole..];
                continue;
            }
            let n = buf.len().min(b as usize - off);
            let bs = b as usize;
            self.dev.read_lbas(at / b, &mut self.scratch[..bs])?;
            self.scratch[off..off + n].copy_from_slice(&buf[..n]);
            let block = self.scratch;
            self.dev.write_lbas(at / b, &block[..bs])?;
            at += n as u64;
            buf = &buf[n..];
        }
        Ok(())
    }
}

impl<D> ErrorType for ContainerIo<D> {
    type Error = DeviceError;
}

impl<D: LbaDevice> Read for ContainerIo<D> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, DeviceError> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.read_from(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: LbaDevice> Write for ContainerIo<D> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, DeviceError> {
        self.write_to(self.pos, buf)?;
        self.pos += buf.len() as u64;
        self.len = self.len.max(self.pos);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.dev.flush()
    }
}

impl<D: LbaDevice> Seek for ContainerIo<D> {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, DeviceError> {
        let to = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = to.ok_or(DeviceError::Io)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
pub mod mem {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Op {
        Write(u64, usize),
        Flush,
    }

    /// A device in host memory that logs its writes and flushes and keeps what the last
    /// flush made durable.
    #[derive(Clone)]
    pub struct MemDevice {
        pub lba: u32,
        pub data: Rc<RefCell<Vec<u8>>>,
        pub durable: Rc<RefCell<Vec<u8>>>,
        pub log: Rc<RefCell<Vec<Op>>>,
    }

    impl MemDevice {
        pub fn new(lba: u32, bytes: Vec<u8>) -> Self {
            Self {
                lba,
                durable: Rc::new(RefCell::new(bytes.clone())),
                data: Rc::new(RefCell::new(bytes)),
                log: Rc::default(),
            }
        }
    }

    impl LbaDevice for MemDevice {
        fn lba_size(&self) -> u32 {
            self.lba
        }
        fn lba_count(&self) -> u64 {
            self.data.borrow().len() as u64 / u64::from(self.lba)
        }
        fn read_lbas(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
            assert_eq!(buf.len() % self.lba as usize, 0, "whole blocks only");
            let at = (lba * u64::from(self.lba)) as usize;
            let d = self.data.borrow();
            buf.copy_from_slice(d.get(at..at + buf.len()).ok_or(DeviceError::Io)?);
            Ok(())
        }
        fn write_lbas(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
            assert_eq!(buf.len() % self.lba as usize, 0, "whole blocks only");
            let at = (lba * u64::from(self.lba)) as usize;
            let mut d = self.data.borrow_mut();
            d.get_mut(at..at + buf.len())
                .ok_or(DeviceError::NoSpace)?
                .copy_from_slice(buf);
            self.log.borrow_mut().push(Op::Write(lba, buf.len()));
            Ok(())
        }
        fn flush(&mut self) -> Result<(), DeviceError> {
            self.durable.borrow_mut().clone_from(&self.data.borrow());
            self.log.borrow_mut().push(Op::Flush);
            Ok(())
        }
        /// Into [`HOST`], whole blocks at block-aligned addresses (as the NVMe driver wants).
        fn read_lbas_direct(&mut self, lba: u64, to: &[HostPiece]) -> Result<bool, DeviceError> {
            let b = u64::from(self.lba);
            if to.iter().any(|p| p.hpa % b != 0 || p.len % b != 0) {
                return Ok(false);
            }
            let mut at = (lba * b) as usize;
            let d = self.data.borrow();
            HOST.with_borrow_mut(|host| {
                for p in to {
                    let src = d.get(at..at + p.len as usize).ok_or(DeviceError::Io)?;
                    host[p.hpa as usize..(p.hpa + p.len) as usize].copy_from_slice(src);
                    at += p.len as usize;
                }
                Ok(true)
            })
        }
        fn write_lbas_direct(&mut self, lba: u64, from: &[HostPiece]) -> Result<bool, DeviceError> {
            let b = u64::from(self.lba);
            if from.iter().any(|p| p.hpa % b != 0 || p.len % b != 0) {
                return Ok(false);
            }
            let mut buf = Vec::new();
            HOST.with_borrow(|host| {
                for p in from {
                    buf.extend_from_slice(&host[p.hpa as usize..(p.hpa + p.len) as usize]);
                }
            });
            self.write_lbas(lba, &buf)?;
            Ok(true)
        }
        fn zero_direct(to: &[HostPiece]) -> bool {
            HOST.with_borrow_mut(|host| {
                for p in to {
                    host[p.hpa as usize..(p.hpa + p.len) as usize].fill(0);
                }
            });
            true
        }
    }

    thread_local! {
        /// The host memory a test's direct reads land in, addressed from 0.
        pub static HOST: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
}

#[cfg(test)]
mod tests {
    use super::mem::MemDevice;
    use super::*;

    #[test]
    fn any_offset_reads_and_writes_through_whole_blocks() {
        for lba in [512u32, 4096] {
            let dev = MemDevice::new(lba, vec![0; 64 << 10]);
            let mut io = ContainerIo::new(dev.clone(), 0).unwrap();
            let pattern: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
            io.seek(SeekFrom::Start(1234)).unwrap();
            io.write_all(&pattern).unwrap();
            assert_eq!(io.len(), 1234 + 10_000);
            let mut back = vec![0; 10_000];
            io.seek(SeekFrom::Start(1234)).unwrap();
            io.read_exact(&mut back).unwrap();
            assert_eq!(back, pattern);
            assert_eq!(dev.data.borrow()[1233], 0, "neighbours untouched");
            assert_eq!(dev.data.borrow()[1234 + 10_000], 0);
            // Reads stop at the image's end, not the device's.
            io.seek(SeekFrom::End(-2)).unwrap();
            let mut tail = [9u8; 8];
            assert_eq!(io.read(&mut tail).unwrap(), 2);
        }
    }

    #[test]
    fn the_image_cannot_outgrow_its_container_and_odd_blocks_are_refused() {
        let dev = MemDevice::new(512, vec![0; 4096]);
        let mut io = ContainerIo::new(dev, 4096).unwrap();
        io.seek(SeekFrom::Start(4000)).unwrap();
        assert_eq!(io.write(&[1; 200]), Err(DeviceError::NoSpace));
        assert!(ContainerIo::new(MemDevice::new(520, vec![0; 5200]), 0).is_none());
        assert!(ContainerIo::new(MemDevice::new(8192, vec![0; 8192]), 0).is_none());
    }
}
