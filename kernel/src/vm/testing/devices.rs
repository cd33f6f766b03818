//! The device models on arbitrary access sequences: the 16550, PIT, CMOS RTC, ACPI power
//! ports and IOAPIC through the bus, the x2APIC through its MSRs, with time passing between
//! accesses as the script says. A panic, a read wider than its access, a port write that
//! answers anything but "done" or a stop of the VM, an interrupt line the IOAPIC lacks, or a
//! console line longer than the UART's is a bug.

use super::Script;
use crate::vm::bus::Bus;
use crate::vm::devices::{Devices, IoApicDevice};
use crate::vm::lapic::VLapic;
use crate::vm::uart::LINE_MAX;
use alloc::vec::Vec;
use boot::guest::acpi::SLEEP_CONTROL_PORT;
use virt::Action;
use virt::bus::{DeviceContext, InterruptMessage};

const MAX_OPS: usize = 2048;
/// The ports the devices claim, and a few around them.
const PORT_RANGES: &[(u16, u16)] = &[(0x20, 0x80), (0x3F0, 0x400), (0x600, 0x610), (0xCF9, 0xCFA)];
/// The index/data pairs and the PIT's control word, which reach the most state.
const INDEX_PORTS: &[u16] = &[0x43, 0x70, 0x3FB, 0x3F9];
const IOAPIC: u64 = 0xFEC0_0000;

/// How far a script got into the devices' state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reached {
    pub lines: usize,
    pub irqs: usize,
    pub stops: usize,
}

struct Cx {
    tsc: u64,
    reached: Reached,
    messages: Vec<InterruptMessage>,
}

impl DeviceContext for Cx {
    fn tsc(&self) -> u64 {
        self.tsc
    }
    fn tsc_hz(&self) -> u64 {
        2_000_000_000
    }
    fn unix_secs(&self) -> u64 {
        1_700_000_000
    }
    fn set_irq(&mut self, line: u8, _high: bool) {
        assert!(line < 24, "irq line {line}");
        self.reached.irqs += 1;
    }
    fn send_interrupt(&mut self, msg: InterruptMessage) {
        // What the IOAPIC sends is bounded by its pins; keep the last few only.
        if self.messages.len() >= 64 {
            self.messages.clear();
        }
        self.messages.push(msg);
    }
    fn console_line(&mut self, line: &[u8]) {
        assert!(
            line.len() <= LINE_MAX,
            "console line of {} bytes",
            line.len()
        );
        self.reached.lines += 1;
    }
}

fn port(s: &mut Script<'_>) -> Option<u16> {
    let (lo, hi) = s.pick(PORT_RANGES)?;
    Some(lo + s.u8()? as u16 % (hi - lo))
}

pub fn run(data: &[u8]) -> Reached {
    let mut s = Script(data);
    let devices = Devices::new();
    devices.ioapic.call_once(IoApicDevice::new);
    let mut bus = Bus::new();
    // The devices claim disjoint ranges of an empty bus.
    let _ = devices.attach(&mut bus);
    let mut apic = VLapic::new(0, true, 2_000_000_000, 1_000_000_000);
    let mut cx = Cx {
        tsc: 1,
        reached: Reached::default(),
        messages: Vec::new(),
    };
    for _ in 0..MAX_OPS {
        if step(&mut s, &bus, &mut apic, &mut cx).is_none() {
            break;
        }
    }
    cx.reached
}

/// One access of the script; `None` when the script ran out.
fn step(s: &mut Script<'_>, bus: &Bus<'_>, apic: &mut VLapic, cx: &mut Cx) -> Option<()> {
    let op = s.u8()?;
    match op % 8 {
        0 => cx.tsc = cx.tsc.wrapping_add(u64::from(s.u16()?) * 1000),
        1 => {
            let port = s.pick(INDEX_PORTS)?;
            let value = u32::from(s.u8()?);
            if let Some(d) = bus.port(port) {
                let _ = d.write(port, 1, value, cx);
            }
        }
        2 | 3 => {
            // Now and then what a guest writes to power off.
            let power_off = op & 0xF1 == 0xF1;
            let (port, size) = if power_off {
                (SLEEP_CONTROL_PORT, 1)
            } else {
                (port(s)?, s.pick(&[1u8, 2, 4])?)
            };
            let Some(d) = bus.port(port) else {
                return Some(());
            };
            if op % 8 == 2 {
                let v = d.read(port, size, cx);
                assert!(
                    u64::from(v) < 1u64 << (8 * u32::from(size)),
                    "port {port:#x} read {v:#x} as {size} bytes"
                );
            } else {
                let value = if power_off {
                    (5 << 2) | (1 << 5)
                } else {
                    s.u32()?
                };
                let a = d.write(port, size, value, cx);
                assert!(
                    matches!(a, Action::Done | Action::Stop(_)),
                    "port {port:#x}: {a:?}"
                );
                cx.reached.stops += usize::from(matches!(a, Action::Stop(_)));
            }
        }
        4 | 5 => {
            // The IOAPIC: its index and window, anywhere in its page.
            let off = match s.u8()? % 3 {
                0 => 0,
                1 => 0x10,
                _ => u64::from(s.u16()? % 0x1000),
            };
            let size = s.pick(&[1u8, 2, 4, 8])?;
            let Some((io, off)) = bus.mmio(IOAPIC + off) else {
                return Some(());
            };
            if op % 8 == 4 {
                let _ = io.read(off, size, cx);
            } else {
                io.write(off, size, s.u64()?, cx);
            }
        }
        _ => {
            let msr = 0x800 + u32::from(s.u8()?);
            if op % 8 == 6 {
                let _ = apic.rdmsr(msr, cx.tsc);
            } else {
                let value = match s.u8()? % 3 {
                    0 => u64::from(s.u8()?),
                    1 => u64::from(s.u32()?),
                    _ => s.u64()?,
                };
                let _ = apic.wrmsr(msr, value, cx.tsc);
            }
            let _ = apic.next_deadline();
        }
    }
    Some(())
}
