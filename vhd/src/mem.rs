//! An in-memory backing store: for tests, fuzzing, and building images before writing them out.

use alloc::vec::Vec;
use core::convert::Infallible;
use embedded_io::{ErrorType, Read, Seek, SeekFrom, Write};

/// A growable byte vector with a cursor. Writing past the end zero-fills the gap, as a sparse
/// file would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemDisk {
    pub data: Vec<u8>,
    pos: u64,
}

impl MemDisk {
    pub fn new(data: Vec<u8>) -> Self {
        MemDisk { data, pos: 0 }
    }
}

impl ErrorType for MemDisk {
    type Error = Infallible;
}

impl Read for MemDisk {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let len = self.data.len() as u64;
        if self.pos >= len {
            return Ok(0);
        }
        let start = self.pos as usize;
        let n = buf.len().min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for MemDisk {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let start = self.pos as usize;
        let end = start + buf.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(buf);
        self.pos = end as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl Seek for MemDisk {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, Infallible> {
        self.pos = match pos {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => (self.data.len() as u64).saturating_add_signed(d),
            SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}
