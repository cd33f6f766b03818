//! The probe's UART output and port helpers.
#![expect(unsafe_code)]
// UNSAFETY: port I/O is the probe's whole purpose.

use core::arch::asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

const COM1: u16 = 0x3F8;
static LOCK: AtomicBool = AtomicBool::new(false);

pub fn outb(port: u16, v: u8) {
    // SAFETY: port output; the probe owns the whole (virtual) machine.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) }
}

pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

pub fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: port input.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack)) };
    v
}

pub fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: port input.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack)) };
    v
}

pub fn outl(port: u16, v: u32) {
    // SAFETY: port output.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack)) }
}

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            while inb(COM1 + 5) & 0x20 == 0 {
                core::hint::spin_loop();
            }
            outb(COM1, b);
        }
        Ok(())
    }
}

/// One whole line at a time, whichever vCPU prints.
pub fn print(args: core::fmt::Arguments<'_>) {
    while LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let _ = Uart.write_fmt(args);
    LOCK.store(false, Ordering::Release);
}

#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::io::print(format_args!("probe: {}\n", format_args!($($arg)*))) };
}

pub fn cmos_read(index: u8) -> u8 {
    outb(0x70, index);
    inb(0x71)
}

pub fn cmos_write(index: u8, value: u8) {
    outb(0x70, index);
    outb(0x71, value);
}

/// A full reset through the reset control register the FADT names (0xCF9).
pub fn reset() -> ! {
    outb(0xCF9, 0x06);
    loop {
        // SAFETY: nothing left to do if the platform ignored the request.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// ACPI S5 through the hardware-reduced sleep control register Janus's FADT describes
/// (SLP_TYP 5 in bits 2-4, SLP_EN bit 5).
pub fn power_off() -> ! {
    outb(0x604, (5 << 2) | (1 << 5));
    loop {
        // SAFETY: nothing left to do if the platform ignored the request.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}
