//! Host doubles of what the exit path runs on — a fake [`Machine`](super::Machine), a mock
//! vCPU over guest RAM in a host buffer, a VM rig with its real devices, bus and personality —
//! and the fuzz bodies built on them: the exit dispatcher ([`exits`]) and the device models
//! ([`devices`]) driven by arbitrary bytes. The unit tests and the cargo-fuzz targets in
//! `kernel/fuzz` share them (feature `test-util`).

pub mod devices;
pub mod exits;
mod mock;
mod rig;

pub use mock::{FakeMachine, MockVcpu, TSC_HZ};
pub use rig::Rig;

/// A fuzz input read front to back; every read is `None` once it runs out.
pub struct Script<'a>(pub &'a [u8]);

impl Script<'_> {
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }

    /// Up to 8 bytes, little-endian; a short tail is zero-extended.
    pub fn u64(&mut self) -> Option<u64> {
        let n = self.0.len().min(8);
        if n == 0 {
            return None;
        }
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Some(u64::from_le_bytes(b))
    }

    /// One of `choices`, by the next byte.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> Option<T> {
        let i = usize::from(self.u8()?) % choices.len().max(1);
        choices.get(i).copied()
    }
}
