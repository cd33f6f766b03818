//! How a run reports its verdict and ends. QEMU's isa-debug-exit (port 0xF4) turns 0x10/0x11 into exit status 33/35;
//! Bochs leaves through its debugger on a magic breakpoint (status 0) or its shutdown port
//! (status 1). Each write is harmless where the other emulator runs, and on real hardware the
//! CPU simply halts.
#![expect(unsafe_code)]
// UNSAFETY: port writes to the emulators' exit devices and a halt loop.

use core::arch::asm;

const QEMU_EXIT_PORT: u16 = 0xF4;
const QEMU_PASS: u32 = 0x10;
const QEMU_FAIL: u32 = 0x11;
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

pub fn success() -> ! {
    drain_consoles();
    // SAFETY: the exit device port is unclaimed by anything else; `xchg bx, bx` is a no-op
    // outside Bochs.
    unsafe {
        x86::io::outl(QEMU_EXIT_PORT, QEMU_PASS);
        asm!("xchg bx, bx", options(nomem, nostack, preserves_flags));
    }
    halt_forever()
}

pub fn failure() -> ! {
    drain_consoles();
    // SAFETY: as in `success`; the shutdown port is Bochs' own unmapped-device hook.
    unsafe {
        x86::io::outl(QEMU_EXIT_PORT, QEMU_FAIL);
        for b in b"Shutdown" {
            x86::io::outb(BOCHS_SHUTDOWN_PORT, *b);
        }
    }
    halt_forever()
}

/// Lets the last lines leave both UARTs before the emulator is told to stop.
fn drain_consoles() {
    boot::serial::HostSerial::attach(boot::serial::COM1).drain();
    boot::serial::HostSerial::attach(boot::serial::COM2).drain();
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: masking interrupts and halting has no memory effects.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}
