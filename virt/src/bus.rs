//! The device seam: device models claim port and MMIO ranges on a VM's bus, and answer the
//! accesses the exit path routes to them. Each device guards its own state (so one device's
//! access never waits on another's) and reaches the rest of the VM — clocks, interrupt lines,
//! the console — only through the [`DeviceContext`] of the access.

use crate::Action;

/// An interrupt message for the VM's local APICs, as an IOAPIC redirection entry or an MSI
/// would send it (fixed delivery, edge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InterruptMessage {
    pub vector: u8,
    /// APIC id, or in logical mode an x2APIC logical destination (cluster << 16 | bits).
    pub dest: u32,
    pub logical: bool,
    /// Level-triggered (an IOAPIC pin programmed so): the APIC marks it in TMR and its EOI
    /// is broadcast back to the IOAPIC, which re-delivers while the line stays high.
    pub level: bool,
}

/// What the VM offers a device during one access.
pub trait DeviceContext {
    /// Host TSC now; device clocks derive from it.
    fn tsc(&self) -> u64;
    fn tsc_hz(&self) -> u64;
    /// Wall-clock seconds since the epoch (the CMOS clock).
    fn unix_secs(&self) -> u64;
    /// Drives an interrupt line of the VM's interrupt controller (ISA numbering: COM1 is 4).
    /// A VM without one ignores it.
    fn set_irq(&mut self, line: u8, high: bool);
    /// Delivers an interrupt message to the vCPUs it names.
    fn send_interrupt(&mut self, msg: InterruptMessage);
    /// One finished line of the guest's console output.
    fn console_line(&mut self, line: &[u8]);
    /// The VM's RAM, for a device that reads and writes it itself (an emulated controller's
    /// queues and data buffers). Every access is checked against it.
    fn memory(&self) -> &dyn crate::GuestMemory {
        &crate::NoMemory
    }
    /// Runs `io` on the VM's disk `index`; it completes (a flush: durably) before returning.
    fn disk_io(
        &mut self,
        index: u32,
        io: &mut dyn FnMut(&mut dyn crate::block::Volume) -> Result<(), crate::block::VolumeError>,
    ) -> Result<(), crate::block::VolumeError> {
        let _ = (index, io);
        Err(crate::block::VolumeError::Io)
    }
}

/// A device on the port I/O bus. `port` is the absolute port; `size` is 1, 2 or 4.
pub trait PortDevice: Sync {
    fn read(&self, port: u16, size: u8, cx: &mut dyn DeviceContext) -> u32;
    /// [`Action::Done`], or [`Action::Stop`] for a write that ends the VM (power-off, reset).
    fn write(&self, port: u16, size: u8, value: u32, cx: &mut dyn DeviceContext) -> Action;
}

/// A device on the MMIO bus. `offset` is from the start of the device's claimed range; `size`
/// is 1, 2, 4 or 8.
pub trait MmioDevice: Sync {
    fn read(&self, offset: u64, size: u8, cx: &mut dyn DeviceContext) -> u64;
    fn write(&self, offset: u64, size: u8, value: u64, cx: &mut dyn DeviceContext);
}
