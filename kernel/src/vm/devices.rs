//! The devices every VM has on its bus — COM1, the PIT, the CMOS clock, the ACPI power and
//! reset ports, an IOAPIC except on the Xen personality, and on the hardware-emulation face a
//! PCI bus — each behind its own lock, so that
//! an access takes exactly one device lock and never holds two.

use super::bus::{Bus, ClaimError};
use super::{ioapic, pci, pit, platform, rtc, uart};
use spin::{Mutex, Once};
use virt::Action;
use virt::bus::{DeviceContext, InterruptMessage, MmioDevice, PortDevice};

/// COM1's ISA interrupt line, as the guest ACPI tables route it.
pub const COM1_IRQ: u8 = 4;

pub struct UartDevice(pub Mutex<uart::Uart>);

impl PortDevice for UartDevice {
    fn read(&self, port: u16, _size: u8, cx: &mut dyn DeviceContext) -> u32 {
        let (value, irq) = {
            let mut u = self.0.lock();
            let v = u.read(port - uart::COM1_BASE);
            (v, u.irq_pending())
        };
        cx.set_irq(COM1_IRQ, irq);
        u32::from(value)
    }

    fn write(&self, port: u16, _size: u8, value: u32, cx: &mut dyn DeviceContext) -> Action {
        let mut finished: Option<uart::Line> = None;
        let irq = {
            let mut u = self.0.lock();
            u.write(port - uart::COM1_BASE, value as u8, &mut |line| {
                let mut l = uart::Line::new();
                let _ = l.extend_from_slice(line);
                finished = Some(l);
            });
            u.irq_pending()
        };
        if let Some(line) = finished {
            cx.console_line(&line);
        }
        cx.set_irq(COM1_IRQ, irq);
        Action::Done
    }
}

pub struct PitDevice(pub Mutex<pit::Pit>);

impl PitDevice {
    fn ticks(cx: &dyn DeviceContext) -> u64 {
        let hz = cx.tsc_hz().max(1);
        (u128::from(cx.tsc()) * u128::from(pit::TICK_HZ) / u128::from(hz)) as u64
    }
}

impl PortDevice for PitDevice {
    fn read(&self, port: u16, _size: u8, cx: &mut dyn DeviceContext) -> u32 {
        let ticks = Self::ticks(cx);
        self.0.lock().read(port, ticks).map_or(0xFF, u32::from)
    }

    fn write(&self, port: u16, _size: u8, value: u32, cx: &mut dyn DeviceContext) -> Action {
        let ticks = Self::ticks(cx);
        self.0.lock().write(port, value as u8, ticks);
        Action::Done
    }
}

pub struct RtcDevice(pub Mutex<rtc::Rtc>);

impl PortDevice for RtcDevice {
    fn read(&self, port: u16, _size: u8, cx: &mut dyn DeviceContext) -> u32 {
        let now = cx.unix_secs();
        self.0.lock().read(port, now).map_or(0xFF, u32::from)
    }

    fn write(&self, port: u16, _size: u8, value: u32, _cx: &mut dyn DeviceContext) -> Action {
        self.0.lock().write(port, value as u8);
        Action::Done
    }
}

/// The hardware-reduced ACPI sleep registers and the reset register; stateless.
pub struct PowerDevice;

impl PortDevice for PowerDevice {
    fn read(&self, _port: u16, _size: u8, _cx: &mut dyn DeviceContext) -> u32 {
        0
    }

    fn write(&self, port: u16, _size: u8, value: u32, _cx: &mut dyn DeviceContext) -> Action {
        match platform::power_port(port, true, value) {
            Some(platform::PortEffect::PowerOff) => Action::Stop(virt::StopReason::PowerOff),
            Some(platform::PortEffect::Reset) => Action::Stop(virt::StopReason::Reset),
            _ => Action::Done,
        }
    }
}

/// The ACPI PM timer: the host TSC scaled to 3.579545 MHz, 24 bits wide; stateless.
pub struct PmTimerDevice;

impl PortDevice for PmTimerDevice {
    fn read(&self, port: u16, size: u8, cx: &mut dyn DeviceContext) -> u32 {
        use boot::guest::acpi::{PM_TIMER_HZ, PM_TIMER_PORT};
        let hz = cx.tsc_hz().max(1);
        let ticks = (u128::from(cx.tsc()) * u128::from(PM_TIMER_HZ) / u128::from(hz)) as u32;
        let v = (ticks & 0x00FF_FFFF) >> (8 * u32::from(port - PM_TIMER_PORT));
        match size {
            1 => v & 0xFF,
            2 => v & 0xFFFF,
            _ => v,
        }
    }

    fn write(&self, _port: u16, _size: u8, _value: u32, _cx: &mut dyn DeviceContext) -> Action {
        Action::Done
    }
}

pub struct IoApicDevice(pub Mutex<ioapic::IoApic>);

impl Default for IoApicDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApicDevice {
    pub const fn new() -> Self {
        Self(Mutex::new(ioapic::IoApic::new()))
    }

    /// A change of an interrupt line; delivers what the pin's routing says.
    pub fn set_line(&self, line: u8, high: bool) -> Option<InterruptMessage> {
        let d = self.0.lock().set_line(usize::from(line), high)?;
        Some(message(d))
    }

    /// A local APIC's EOI broadcast: the level interrupts to deliver again.
    pub fn eoi(&self, vector: u8) -> impl Iterator<Item = InterruptMessage> {
        self.0.lock().eoi(vector).into_iter().map(message)
    }
}

fn message(d: ioapic::Delivery) -> InterruptMessage {
    InterruptMessage {
        vector: d.vector,
        dest: d.dest,
        logical: d.logical,
        level: d.level,
    }
}

impl MmioDevice for IoApicDevice {
    // Registers are 32 bits wide; wider reads see zeros above them.
    fn read(&self, offset: u64, _size: u8, _cx: &mut dyn DeviceContext) -> u64 {
        u64::from(self.0.lock().read(offset))
    }

    fn write(&self, offset: u64, _size: u8, value: u64, cx: &mut dyn DeviceContext) {
        let d = self.0.lock().write(offset, value as u32);
        if let Some(d) = d {
            cx.send_interrupt(message(d));
        }
    }
}

/// The devices of one VM.
pub struct Devices {
    pub uart: UartDevice,
    pub pit: PitDevice,
    pub rtc: RtcDevice,
    pub power: PowerDevice,
    pub pm_timer: PmTimerDevice,
    /// Set when the VM's ACPI tables announce one (the Hyper-V personality), before the bus
    /// is built.
    pub ioapic: Once<IoApicDevice>,
    /// The hardware-emulation face's PCI bus, with an NVMe controller per disk.
    pub pci: Once<pci::PciBus>,
}

impl Default for Devices {
    fn default() -> Self {
        Self::new()
    }
}

impl Devices {
    pub const fn new() -> Self {
        Self {
            uart: UartDevice(Mutex::new(uart::Uart::new())),
            pit: PitDevice(Mutex::new(pit::Pit::new())),
            rtc: RtcDevice(Mutex::new(rtc::Rtc::new())),
            power: PowerDevice,
            pm_timer: PmTimerDevice,
            ioapic: Once::new(),
            pci: Once::new(),
        }
    }

    /// Every device back to its power-on state (a VM that starts over), except CMOS RAM,
    /// which a reset leaves alone on a PC (it is battery-backed).
    pub fn reset(&self) {
        *self.uart.0.lock() = uart::Uart::new();
        *self.pit.0.lock() = pit::Pit::new();
        self.rtc.0.lock().reset();
        if let Some(io) = self.ioapic.get() {
            *io.0.lock() = ioapic::IoApic::new();
        }
        if let Some(p) = self.pci.get() {
            p.reset();
        }
    }

    /// Claims every device's ranges on `bus`.
    pub fn attach<'a>(&'a self, bus: &mut Bus<'a>) -> Result<(), ClaimError> {
        use boot::guest::acpi::{RESET_PORT, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT};
        bus.claim_ports(uart::PORTS, &self.uart)?;
        bus.claim_ports(pit::PORTS_COUNTERS, &self.pit)?;
        bus.claim_ports(pit::PORT_B..=pit::PORT_B, &self.pit)?;
        bus.claim_ports(rtc::INDEX_PORT..=rtc::DATA_PORT, &self.rtc)?;
        bus.claim_ports(SLEEP_CONTROL_PORT..=SLEEP_STATUS_PORT, &self.power)?;
        bus.claim_ports(RESET_PORT..=RESET_PORT, &self.power)?;
        // Answered on every face, announced (FADT) only where a guest needs it.
        let pm = boot::guest::acpi::PM_TIMER_PORT;
        bus.claim_ports(pm..=pm + 3, &self.pm_timer)?;
        if let Some(io) = self.ioapic.get() {
            bus.claim_mmio(ioapic::BASE..ioapic::BASE + 0x1000, io)?;
        }
        if let Some(p) = self.pci.get() {
            bus.claim_ports(pci::ADDRESS_PORT..=pci::ADDRESS_PORT, p)?;
            bus.claim_ports(pci::DATA_PORTS, p)?;
            bus.claim_mmio(pci::MMIO, p)?;
        }
        Ok(())
    }
}
