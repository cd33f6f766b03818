//! A VM's bus: which device answers which ports and which guest-physical ranges. Devices
//! claim their ranges once, when the VM is built; the exit path looks the claim up and calls
//! the device, which guards its own state (see `devices`). Overlapping claims are refused, so
//! a port or address has at most one owner.

use core::ops::{Range, RangeInclusive};
use virt::bus::{MmioDevice, PortDevice};

pub const MAX_PORT_CLAIMS: usize = 16;
pub const MAX_MMIO_CLAIMS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// The range is empty, or overlaps one already claimed.
    Overlap,
    Full,
}

pub struct Bus<'a> {
    ports: heapless::Vec<(RangeInclusive<u16>, &'a dyn PortDevice), MAX_PORT_CLAIMS>,
    mmio: heapless::Vec<(Range<u64>, &'a dyn MmioDevice), MAX_MMIO_CLAIMS>,
}

impl Default for Bus<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Bus<'a> {
    pub const fn new() -> Self {
        Self {
            ports: heapless::Vec::new(),
            mmio: heapless::Vec::new(),
        }
    }

    pub fn claim_ports(
        &mut self,
        range: RangeInclusive<u16>,
        device: &'a dyn PortDevice,
    ) -> Result<(), ClaimError> {
        let clash = self
            .ports
            .iter()
            .any(|(r, _)| r.start() <= range.end() && range.start() <= r.end());
        if range.is_empty() || clash {
            return Err(ClaimError::Overlap);
        }
        self.ports
            .push((range, device))
            .map_err(|_| ClaimError::Full)
    }

    pub fn claim_mmio(
        &mut self,
        range: Range<u64>,
        device: &'a dyn MmioDevice,
    ) -> Result<(), ClaimError> {
        let clash = self
            .mmio
            .iter()
            .any(|(r, _)| r.start < range.end && range.start < r.end);
        if range.is_empty() || clash {
            return Err(ClaimError::Overlap);
        }
        self.mmio
            .push((range, device))
            .map_err(|_| ClaimError::Full)
    }

    /// The device that owns `port`.
    pub fn port(&self, port: u16) -> Option<&'a dyn PortDevice> {
        self.ports
            .iter()
            .find(|(r, _)| r.contains(&port))
            .map(|(_, d)| *d)
    }

    /// The device that owns `gpa`, and the offset of `gpa` inside its range.
    pub fn mmio(&self, gpa: u64) -> Option<(&'a dyn MmioDevice, u64)> {
        self.mmio
            .iter()
            .find(|(r, _)| r.contains(&gpa))
            .map(|(r, d)| (*d, gpa - r.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virt::Action;
    use virt::bus::DeviceContext;

    struct Tag(u32);

    impl PortDevice for Tag {
        fn read(&self, _: u16, _: u8, _: &mut dyn DeviceContext) -> u32 {
            self.0
        }
        fn write(&self, _: u16, _: u8, _: u32, _: &mut dyn DeviceContext) -> Action {
            Action::Done
        }
    }

    impl MmioDevice for Tag {
        fn read(&self, offset: u64, _: u8, _: &mut dyn DeviceContext) -> u64 {
            u64::from(self.0) + offset
        }
        fn write(&self, _: u64, _: u8, _: u64, _: &mut dyn DeviceContext) {}
    }

    fn id(d: &dyn PortDevice) -> *const () {
        d as *const dyn PortDevice as *const ()
    }

    #[test]
    fn ports_find_their_owner_and_overlaps_are_refused() {
        let (a, b) = (Tag(1), Tag(2));
        let mut bus = Bus::new();
        bus.claim_ports(0x40..=0x43, &a).unwrap();
        bus.claim_ports(0x3f8..=0x3ff, &b).unwrap();
        assert_eq!(bus.claim_ports(0x43..=0x44, &b), Err(ClaimError::Overlap));
        assert_eq!(bus.claim_ports(0x3f0..=0x3f8, &a), Err(ClaimError::Overlap));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 5..=4;
        assert_eq!(bus.claim_ports(empty, &a), Err(ClaimError::Overlap));
        assert_eq!(bus.port(0x43).map(id), Some(id(&a)));
        assert_eq!(bus.port(0x3ff).map(id), Some(id(&b)));
        assert!(bus.port(0x44).is_none());
        assert!(bus.port(0x3f7).is_none());
    }

    #[test]
    fn mmio_lookups_give_the_offset_and_the_table_is_bounded() {
        let a = Tag(0x100);
        let mut bus = Bus::new();
        bus.claim_mmio(0xFEC0_0000..0xFEC0_1000, &a).unwrap();
        assert_eq!(
            bus.claim_mmio(0xFEC0_0FFF..0xFEC0_2000, &a),
            Err(ClaimError::Overlap)
        );
        let (_, off) = bus.mmio(0xFEC0_0010).unwrap();
        assert_eq!(off, 0x10);
        assert!(bus.mmio(0xFEC0_1000).is_none());
        for i in 1..MAX_MMIO_CLAIMS as u64 {
            bus.claim_mmio(i << 32..(i << 32) + 1, &a).unwrap();
        }
        assert_eq!(bus.claim_mmio(0..1, &a), Err(ClaimError::Full));
    }
}
