//! Seeded arbitrary access sequences against the device models (16550, PIT, CMOS RTC, ACPI
//! power ports, IOAPIC on the bus; the x2APIC through its MSRs): a panic, a read wider than
//! its access, or a write that answers anything but "done" or a stop of the VM is a bug.

use super::bus::Bus;
use super::devices::{Devices, IoApicDevice};
use super::lapic::VLapic;
use virt::Action;
use virt::bus::{DeviceContext, InterruptMessage};
use virt::testing::XorShift;

struct Cx {
    tsc: u64,
    irqs: usize,
    messages: Vec<InterruptMessage>,
    lines: usize,
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
        self.irqs += 1;
    }
    fn send_interrupt(&mut self, msg: InterruptMessage) {
        self.messages.push(msg);
    }
    fn console_line(&mut self, line: &[u8]) {
        assert!(line.len() <= super::uart::LINE_MAX);
        self.lines += 1;
    }
}

fn size(r: &mut XorShift) -> u8 {
    [1, 2, 4][(r.next_u64() % 3) as usize]
}

#[test]
fn the_bus_devices_take_any_access_sequence() {
    let (mut lines, mut irqs, mut stops) = (0, 0, 0);
    for seed in 1..=40u64 {
        let devices = Devices::new();
        devices.ioapic.call_once(IoApicDevice::new);
        let mut bus = Bus::new();
        devices.attach(&mut bus).unwrap();
        let mut r = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut cx = Cx {
            tsc: 1,
            irqs: 0,
            messages: Vec::new(),
            lines: 0,
        };
        // The claimed ports and a few around them.
        let ports: Vec<u16> = (0x20..0x80)
            .chain(0x3F0..0x400)
            .chain(0x600..0x610)
            .chain([0xCF9])
            .collect();
        for _ in 0..5_000 {
            cx.tsc += r.next_u64() % 5_000_000;
            let port = ports[(r.next_u64() % ports.len() as u64) as usize];
            let sz = size(&mut r);
            if r.next_u64().is_multiple_of(3) {
                // The index/data pairs and the PIT's control word, which reach the most state.
                let port = [0x43, 0x70, 0x3FB, 0x3F9][(r.next_u64() % 4) as usize];
                if let Some(d) = bus.port(port) {
                    let _ = d.write(port, 1, r.next_u64() as u32, &mut cx);
                }
            }
            if r.next_u64().is_multiple_of(100) {
                // Now and then what a guest writes to power off.
                let p = boot::guest::acpi::SLEEP_CONTROL_PORT;
                if let Some(d) = bus.port(p) {
                    let a = d.write(p, 1, (5 << 2) | (1 << 5), &mut cx);
                    stops += usize::from(matches!(a, Action::Stop(_)));
                }
            }
            let Some(d) = bus.port(port) else { continue };
            if r.next_u64().is_multiple_of(2) {
                let v = d.read(port, sz, &mut cx);
                assert!(
                    u64::from(v) < 1u64 << (8 * u32::from(sz)),
                    "port {port:#x} read {v:#x} as {sz} bytes"
                );
            } else {
                let a = d.write(port, sz, r.next_u64() as u32, &mut cx);
                assert!(
                    matches!(a, Action::Done | Action::Stop(_)),
                    "port {port:#x}: {a:?}"
                );
            }
            // The IOAPIC: its index and window, anywhere in its page.
            let gpa = 0xFEC0_0000 + [0, 0x10, r.next_u64() % 0x1000][(r.next_u64() % 3) as usize];
            if let Some((io, off)) = bus.mmio(gpa) {
                let sz = [1, 2, 4, 8][(r.next_u64() % 4) as usize];
                if r.next_u64().is_multiple_of(2) {
                    let _ = io.read(off, sz, &mut cx);
                } else {
                    io.write(off, sz, r.next_u64(), &mut cx);
                }
            }
        }
        lines += cx.lines;
        irqs += cx.irqs;
    }
    // The sequences reached the devices' state, not only their decoders.
    assert!(
        lines > 0 && irqs > 0 && stops > 0,
        "lines {lines} irqs {irqs} stops {stops}"
    );
}

#[test]
fn the_x2apic_takes_any_msr_sequence() {
    for seed in 1..=40u64 {
        let mut r = XorShift(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut apic = VLapic::new(0, true, 2_000_000_000, 1_000_000_000);
        let mut now = 1u64;
        for _ in 0..5_000 {
            now += r.next_u64() % 1_000_000;
            let msr = 0x800 + (r.next_u64() % 0x100) as u32;
            if r.next_u64().is_multiple_of(2) {
                let _ = apic.rdmsr(msr, now);
            } else {
                let value = match r.next_u64() % 3 {
                    0 => r.next_u64() & 0xFF,
                    1 => r.next_u64() & 0xFFFF_FFFF,
                    _ => r.next_u64(),
                };
                let _ = apic.wrmsr(msr, value, now);
            }
            let _ = apic.next_deadline();
        }
    }
}
