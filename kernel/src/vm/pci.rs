//! The hardware-emulation face's PCI bus: bus 0 with a host bridge at device 0 and one NVMe
//! controller per manifest disk from device 1, reached through configuration mechanism #1
//! (ports CF8/CFC) and ECAM, with the functions' BARs decoded wherever the guest moves them
//! inside the root bridge's window. The functions' logic is `hwemu`'s; this file routes
//! accesses to them and turns their interrupts into APIC messages.

use boot::guest::layout::{PCI_ECAM_BASE, PCI_ECAM_SIZE, PCI_MMIO_END, PCI_MMIO_START};
use hwemu::nvme::{self, Controller};
use hwemu::pci::{
    self, BarKind, BarSpec, ConfigAccess, Function, FunctionSpec, Message, MsixSpec, Signal,
};
use spin::Mutex;
use virt::Action;
use virt::bus::{DeviceContext, InterruptMessage, MmioDevice, PortDevice};

/// The ports of configuration mechanism #1. CF9 between them is the reset register.
pub const ADDRESS_PORT: u16 = 0xCF8;
pub const DATA_PORTS: core::ops::RangeInclusive<u16> = 0xCFC..=0xCFF;
/// One MMIO claim: the BAR window and, right above it, ECAM.
pub const MMIO: core::ops::Range<u64> = PCI_MMIO_START..PCI_ECAM_BASE + PCI_ECAM_SIZE;
const _: () = assert!(PCI_MMIO_END == PCI_ECAM_BASE);

pub const MAX_NVME: usize = crate::manifest::MAX_DISKS;
/// Where firmware places controller k's BARs: 1 MiB each from the window's start.
const SLOT_STRIDE: u64 = 0x10_0000;
const MSIX_BAR: usize = 4;

/// Identities: Red Hat's PCI ids for emulated devices (QEMU's generic PCIe host bridge and
/// NVMe controller), which guests bind by class code anyway.
const VENDOR: u16 = 0x1b36;
const HOST_BRIDGE: u16 = 0x0008;
const NVME_DEVICE: u16 = 0x0010;

fn nvme_spec(vectors: u16) -> FunctionSpec {
    let mut bars = [None; 6];
    bars[0] = Some(BarSpec {
        kind: BarKind::Mem64,
        size: nvme::BAR0_SIZE.next_power_of_two(),
    });
    bars[MSIX_BAR] = Some(BarSpec {
        kind: BarKind::Mem32,
        size: pci::MSIX_BAR_SIZE,
    });
    FunctionSpec {
        vendor: VENDOR,
        device: NVME_DEVICE,
        class: [0x01, 0x08, 0x02],
        revision: 2,
        subsystem_vendor: VENDOR,
        subsystem: NVME_DEVICE,
        bars,
        msix: Some(MsixSpec {
            vectors,
            bar: MSIX_BAR as u8,
        }),
        msi: true,
        interrupt_pin: 1,
    }
}

fn bar_addresses(slot: usize) -> [u64; 6] {
    let base = PCI_MMIO_START + slot as u64 * SLOT_STRIDE;
    let mut at = [0; 6];
    at[0] = base;
    at[MSIX_BAR] = base + SLOT_STRIDE / 2;
    at
}

struct NvmeState {
    function: Function,
    controller: Controller,
}

pub struct NvmeFunction {
    /// The manifest's disk index.
    disk: u32,
    gsi: u8,
    state: Mutex<NvmeState>,
}

pub struct PciBus {
    address: Mutex<u32>,
    bridge: Mutex<Function>,
    nvme: heapless::Vec<NvmeFunction, MAX_NVME>,
}

impl PciBus {
    /// A bus with one controller for each disk `(manifest index, sectors, read_only)`, with
    /// MSI-X vectors for `vcpus` I/O queues and the admin queue.
    pub fn new(disks: &[(u32, u64, bool)], vcpus: u8) -> Result<Self, nvme::OutOfMemory> {
        let mut nvme = heapless::Vec::new();
        for (k, &(disk, sectors, read_only)) in disks.iter().enumerate().take(MAX_NVME) {
            let mut serial = [b' '; 20];
            let id = alloc::format!("JANUS{disk:04}");
            serial[..id.len()].copy_from_slice(id.as_bytes());
            let mut model = [b' '; 40];
            let name = b"Janus NVMe disk";
            model[..name.len()].copy_from_slice(name);
            let controller = Controller::try_new(nvme::Config {
                sectors,
                read_only,
                serial,
                model,
                max_io_queues: u16::from(vcpus.max(1)),
            })?;
            let spec = nvme_spec(controller.vectors());
            let _ = nvme.push(NvmeFunction {
                disk,
                // Device k + 1; its INTA# as the DSDT's _PRT routes it.
                gsi: boot::guest::acpi::pci_intx_gsi(k as u8 + 1),
                state: Mutex::new(NvmeState {
                    function: Function::new(spec, bar_addresses(k)),
                    controller,
                }),
            });
        }
        Ok(PciBus {
            address: Mutex::new(0),
            bridge: Mutex::new(Function::new(
                FunctionSpec::host_bridge(VENDOR, HOST_BRIDGE),
                [0; 6],
            )),
            nvme,
        })
    }

    /// Power-on state: BARs where firmware put them, controllers disabled.
    pub fn reset(&self) {
        *self.address.lock() = 0;
        self.bridge.lock().reset([0; 6]);
        for (k, f) in self.nvme.iter().enumerate() {
            let mut s = f.state.lock();
            s.function.reset(bar_addresses(k));
            s.controller.reset();
        }
    }

    fn config_read(&self, a: ConfigAccess, size: u8) -> u32 {
        let all_ones = if size >= 4 {
            u32::MAX
        } else {
            (1 << (8 * size)) - 1
        };
        if a.bdf.bus != 0 || a.bdf.function != 0 {
            return all_ones;
        }
        match a.bdf.device {
            0 => self.bridge.lock().config_read(a.offset, size),
            d => match self.nvme.get(usize::from(d) - 1) {
                Some(f) => f.state.lock().function.config_read(a.offset, size),
                None => all_ones,
            },
        }
    }

    fn config_write(&self, a: ConfigAccess, size: u8, value: u32, cx: &mut dyn DeviceContext) {
        if a.bdf.bus != 0 || a.bdf.function != 0 {
            return;
        }
        let released = match a.bdf.device {
            0 => self.bridge.lock().config_write(a.offset, size, value),
            d => match self.nvme.get(usize::from(d) - 1) {
                Some(f) => f.state.lock().function.config_write(a.offset, size, value),
                None => return,
            },
        };
        for m in released.0 {
            send(cx, m);
        }
    }

    /// The controller whose BAR decodes `gpa`, with the BAR and the offset in it.
    /// Runs `access` on the controller whose BAR decodes `gpa`, with the BAR and the offset,
    /// under that controller's lock: the lookup and the access see the same BARs even while
    /// another vCPU moves them.
    fn decoding<R>(
        &self,
        gpa: u64,
        mut access: impl FnMut(&NvmeFunction, &mut NvmeState, usize, u64) -> R,
    ) -> Option<R> {
        self.nvme.iter().find_map(|f| {
            let mut s = f.state.lock();
            let (bar, off) = s.function.bar_at(gpa)?;
            Some(access(f, &mut s, bar, off))
        })
    }
}

fn send(cx: &mut dyn DeviceContext, m: Message) {
    if let Some(t) = m.target() {
        cx.send_interrupt(InterruptMessage {
            vector: t.vector,
            dest: t.dest,
            logical: t.logical,
            level: false,
        });
    }
}

/// What the controller sees of the VM during one register access.
struct Env<'a> {
    cx: &'a mut dyn DeviceContext,
    function: &'a mut Function,
    disk: u32,
}

impl nvme::Env for Env<'_> {
    fn memory(&self) -> &dyn virt::GuestMemory {
        // A function may only reach memory once its driver let it master the bus.
        if self.function.command() & pci::COMMAND_BUS_MASTER == 0 {
            return &virt::NoMemory;
        }
        self.cx.memory()
    }

    fn disk(
        &mut self,
        io: &mut dyn FnMut(&mut dyn virt::block::Volume) -> Result<(), virt::block::VolumeError>,
    ) -> Result<(), virt::block::VolumeError> {
        self.cx.disk_io(self.disk, io)
    }

    fn interrupt(&mut self, iv: u16) {
        if let Signal::Message(m) = self.function.signal(iv) {
            send(self.cx, m);
        }
    }
}

impl PortDevice for PciBus {
    fn read(&self, port: u16, size: u8, _cx: &mut dyn DeviceContext) -> u32 {
        let address = *self.address.lock();
        if port == ADDRESS_PORT {
            return if size == 4 { address } else { u32::MAX };
        }
        match pci::type1(address, (port - ADDRESS_PORT) as u8) {
            Some(a) => self.config_read(a, size),
            None => u32::MAX,
        }
    }

    fn write(&self, port: u16, size: u8, value: u32, cx: &mut dyn DeviceContext) -> Action {
        if port == ADDRESS_PORT {
            // Only a dword at CF8 is the address register (a byte at CF9 is the reset port).
            if size == 4 {
                *self.address.lock() = value & 0x80FF_FFFC;
            }
            return Action::Done;
        }
        let address = *self.address.lock();
        if let Some(a) = pci::type1(address, (port - ADDRESS_PORT) as u8) {
            self.config_write(a, size, value, cx);
        }
        Action::Done
    }
}

impl MmioDevice for PciBus {
    fn read(&self, offset: u64, size: u8, cx: &mut dyn DeviceContext) -> u64 {
        let _ = cx;
        let gpa = MMIO.start + offset;
        if gpa >= PCI_ECAM_BASE {
            return u64::from(self.config_read(pci::ecam(gpa - PCI_ECAM_BASE), size.min(4)));
        }
        let ones = if size >= 8 {
            u64::MAX
        } else {
            (1 << (8 * size)) - 1
        };
        self.decoding(gpa, |_, s, bar, off| match bar {
            0 => s.controller.read(off, size),
            MSIX_BAR => s.function.msix_read(off, size),
            _ => ones,
        })
        .unwrap_or(ones)
    }

    fn write(&self, offset: u64, size: u8, value: u64, cx: &mut dyn DeviceContext) {
        let gpa = MMIO.start + offset;
        if gpa >= PCI_ECAM_BASE {
            let a = pci::ecam(gpa - PCI_ECAM_BASE);
            self.config_write(a, size.min(4), value as u32, cx);
            return;
        }
        let pin = self.decoding(gpa, |f, s, bar, off| {
            let NvmeState {
                function,
                controller,
            } = s;
            match bar {
                0 => {
                    let mut env = Env {
                        cx: &mut *cx,
                        function,
                        disk: f.disk,
                    };
                    controller.write(off, size, value, &mut env);
                    let level = controller.intx_asserted();
                    Some((f.gsi, function.set_intx(level)))
                }
                MSIX_BAR => {
                    for m in function.msix_write(off, size, value).0 {
                        send(cx, m);
                    }
                    None
                }
                _ => None,
            }
        });
        // The IOAPIC's lock is taken only once the controller's is released.
        if let Some((gsi, level)) = pin.flatten() {
            cx.set_irq(gsi, level);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Cx {
        sent: Vec<InterruptMessage>,
        lines: Vec<(u8, bool)>,
    }

    impl DeviceContext for Cx {
        fn tsc(&self) -> u64 {
            0
        }
        fn tsc_hz(&self) -> u64 {
            1
        }
        fn unix_secs(&self) -> u64 {
            0
        }
        fn set_irq(&mut self, line: u8, high: bool) {
            self.lines.push((line, high));
        }
        fn send_interrupt(&mut self, msg: InterruptMessage) {
            self.sent.push(msg);
        }
        fn console_line(&mut self, _line: &[u8]) {}
    }

    fn cfg(bus: &PciBus, cx: &mut Cx, dev: u8, reg: u32) -> u32 {
        PortDevice::write(
            bus,
            ADDRESS_PORT,
            4,
            0x8000_0000 | u32::from(dev) << 11 | reg,
            cx,
        );
        PortDevice::read(bus, 0xCFC, 4, cx)
    }

    fn cfg_write(bus: &PciBus, cx: &mut Cx, dev: u8, reg: u32, value: u32) {
        PortDevice::write(
            bus,
            ADDRESS_PORT,
            4,
            0x8000_0000 | u32::from(dev) << 11 | reg,
            cx,
        );
        PortDevice::write(bus, 0xCFC, 4, value, cx);
    }

    #[test]
    fn both_mechanisms_reach_the_same_functions() {
        let bus = PciBus::new(&[(0, 2048, false), (3, 4096, true)], 2).unwrap();
        let mut cx = Cx::default();
        assert_eq!(cfg(&bus, &mut cx, 0, 0), 0x0008_1b36);
        assert_eq!(cfg(&bus, &mut cx, 1, 0), 0x0010_1b36);
        assert_eq!(cfg(&bus, &mut cx, 2, 8) >> 8, 0x01_0802);
        // Empty slots, other buses and other functions float high.
        assert_eq!(cfg(&bus, &mut cx, 3, 0), u32::MAX);
        PortDevice::write(&bus, ADDRESS_PORT, 4, 0x8001_0000, &mut cx);
        assert_eq!(PortDevice::read(&bus, 0xCFC, 4, &mut cx), u32::MAX);
        PortDevice::write(&bus, ADDRESS_PORT, 4, 0x8000_0900, &mut cx);
        assert_eq!(PortDevice::read(&bus, 0xCFE, 2, &mut cx), 0xFFFF);
        // The address register reads back; a byte access is not it.
        PortDevice::write(&bus, ADDRESS_PORT, 4, 0x8000_0810, &mut cx);
        assert_eq!(
            PortDevice::read(&bus, ADDRESS_PORT, 4, &mut cx),
            0x8000_0810
        );
        PortDevice::write(&bus, ADDRESS_PORT, 1, 0, &mut cx);
        assert_eq!(
            PortDevice::read(&bus, ADDRESS_PORT, 4, &mut cx),
            0x8000_0810
        );
        // ECAM sees the same space.
        let ecam = |dev: u64, reg: u64| PCI_ECAM_BASE - MMIO.start + (dev << 15) + reg;
        assert_eq!(MmioDevice::read(&bus, ecam(1, 0), 4, &mut cx), 0x0010_1b36);
        assert_eq!(
            MmioDevice::read(&bus, ecam(0, 8), 4, &mut cx) >> 8,
            0x06_0000
        );
        assert_eq!(MmioDevice::read(&bus, ecam(5, 0), 4, &mut cx), 0xFFFF_FFFF);
    }

    #[test]
    fn bars_decode_once_enabled_and_msix_messages_reach_the_apics() {
        let bus = PciBus::new(&[(0, 2048, false)], 1).unwrap();
        let mut cx = Cx::default();
        let bar0 = u64::from(cfg(&bus, &mut cx, 1, 0x10) & !0xF) - MMIO.start;
        let bar4 = u64::from(cfg(&bus, &mut cx, 1, 0x20) & !0xF) - MMIO.start;
        // Memory decoding off: nothing answers.
        assert_eq!(MmioDevice::read(&bus, bar0, 4, &mut cx), 0xFFFF_FFFF);
        cfg_write(&bus, &mut cx, 1, 4, 0x6);
        // NVMe VS at 0x08: 1.4.
        assert_eq!(MmioDevice::read(&bus, bar0 + 8, 4, &mut cx), 0x0001_0400);
        // MSI-X: entry 0 to APIC 1, vector 0x45; enabling and unmasking sends nothing yet.
        MmioDevice::write(&bus, bar4, 4, 0xFEE0_1000, &mut cx);
        MmioDevice::write(&bus, bar4 + 8, 4, 0x45, &mut cx);
        MmioDevice::write(&bus, bar4 + 12, 4, 0, &mut cx);
        let cap = cfg(&bus, &mut cx, 1, 0x34) & 0xFF;
        cfg_write(&bus, &mut cx, 1, cap, 0x8000_0000);
        assert!(cx.sent.is_empty());
        // Held while masked, sent at unmask.
        MmioDevice::write(&bus, bar4 + 12, 4, 1, &mut cx);
        {
            let f = &bus.nvme[0];
            let mut s = f.state.lock();
            assert_eq!(s.function.signal(0), Signal::Held);
        }
        MmioDevice::write(&bus, bar4 + 12, 4, 0, &mut cx);
        assert_eq!(
            cx.sent,
            [InterruptMessage {
                vector: 0x45,
                dest: 1,
                logical: false,
                level: false
            }]
        );
        // Reset puts the BARs back and disables decoding.
        bus.reset();
        assert_eq!(MmioDevice::read(&bus, bar0 + 8, 4, &mut cx), 0xFFFF_FFFF);
    }
}
