//! The legacy 8259 PICs. Firmware leaves them delivering IRQ0 as vector 8, which would alias
//! the double-fault exception, so they are moved to [`BASE`] and fully masked: the kernel
//! uses the local APIC only. A masked PIC can still raise its spurious IRQ 7/15. PIT channel 0,
//! which firmware leaves ticking at 18.2 Hz into IRQ0, is stopped too.
#![expect(unsafe_code)]
// UNSAFETY: the PICs' I/O ports.

use x86::io::outb;

pub const BASE: u8 = 0x30;
pub const SPURIOUS_MASTER: u8 = BASE + 7;
pub const SPURIOUS_SLAVE: u8 = BASE + 15;

pub fn remap_and_mask() {
    // SAFETY: the ICW1-4 initialisation sequence and the mask registers of both PICs.
    unsafe {
        outb(0x20, 0x11);
        outb(0xA0, 0x11);
        outb(0x21, BASE);
        outb(0xA1, BASE + 8);
        outb(0x21, 4);
        outb(0xA1, 2);
        outb(0x21, 0x01);
        outb(0xA1, 0x01);
        outb(0x21, 0xFF);
        outb(0xA1, 0xFF);
    }
    // SAFETY: PIT channel 0 only (channel 2 is the TSC calibration's): mode 0 with the longest
    // count raises its output once, ~55 ms from now, into the masked IRQ0, then stays quiet.
    unsafe {
        outb(0x43, 0x30);
        outb(0x40, 0xFF);
        outb(0x40, 0xFF);
    }
}
