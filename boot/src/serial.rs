//! A polled 16550 UART as an `embedded_io::Write` byte sink.
//!
//! The loader and the kernel's consoles print through this. It is polled, so it works before
//! interrupts exist and from panic paths, and it never waits forever on a missing UART (real
//! machines without COM ports must still boot).
#![expect(unsafe_code)]
// UNSAFETY: port I/O to the UART's own registers; no memory is touched.

use core::convert::Infallible;
use x86::io::{inb, outb};

/// The I/O base of the first legacy serial port.
pub const COM1: u16 = 0x3F8;
/// The I/O base of the second legacy serial port (defmt frames go here).
pub const COM2: u16 = 0x2F8;

const DATA: u16 = 0;
const INT_ENABLE: u16 = 1;
const FIFO_CTRL: u16 = 2;
const LINE_CTRL: u16 = 3;
const MODEM_CTRL: u16 = 4;
const LINE_STATUS: u16 = 5;
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_TX_IDLE: u8 = 1 << 6;
/// Bounded wait for a slow transmitter (an emulator's UART under load can take a while):
/// long enough not to drop bytes, short enough that a wedged UART cannot hang the machine.
const SPIN_LIMIT: u32 = 20_000_000;
/// What the line status register of a port with no UART behind it reads.
const NO_UART: u8 = 0xFF;

/// The hypervisor's own serial port (the loader's and the kernel's consoles), not the UART
/// model guests see.
pub struct HostSerial {
    base: u16,
}

impl HostSerial {
    /// A UART at `base`, programmed for 115200 8N1 with FIFOs and no interrupts.
    pub fn new(base: u16) -> Self {
        let uart = Self { base };
        uart.out(INT_ENABLE, 0);
        uart.out(LINE_CTRL, 0x80); // DLAB: the next two registers are the divisor
        uart.out(DATA, 1); // 115200 baud
        uart.out(INT_ENABLE, 0);
        uart.out(LINE_CTRL, 0x03); // 8N1
        uart.out(FIFO_CTRL, 0xC7);
        uart.out(MODEM_CTRL, 0x03);
        uart
    }

    /// A handle to an already programmed UART (used from panic and logger paths).
    pub const fn attach(base: u16) -> Self {
        Self { base }
    }

    fn out(&self, reg: u16, value: u8) {
        // SAFETY: writes a register of the UART at `base`; port I/O has no memory effects.
        unsafe { outb(self.base + reg, value) }
    }

    fn status(&self) -> u8 {
        // SAFETY: reads the UART line status register; no memory effects.
        unsafe { inb(self.base + LINE_STATUS) }
    }

    /// Waits (bounded) until the transmitter is idle.
    pub fn drain(&self) {
        if self.status() == NO_UART {
            return;
        }
        let mut spins = 0;
        while self.status() & LSR_TX_IDLE == 0 && spins < SPIN_LIMIT {
            core::hint::spin_loop();
            spins += 1;
        }
    }

    pub fn write_byte(&self, byte: u8) {
        if self.status() == NO_UART {
            return;
        }
        let mut spins = 0;
        while self.status() & LSR_THR_EMPTY == 0 && spins < SPIN_LIMIT {
            core::hint::spin_loop();
            spins += 1;
        }
        self.out(DATA, byte);
    }
}

impl embedded_io::ErrorType for HostSerial {
    type Error = Infallible;
}

impl embedded_io::ReadReady for HostSerial {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        let s = self.status();
        Ok(s != NO_UART && s & LSR_DATA_READY != 0)
    }
}

impl embedded_io::Read for HostSerial {
    /// Waits for a byte when none has arrived: call it after `read_ready` says one has.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some(first) = buf.first_mut() else {
            return Ok(0);
        };
        while !embedded_io::ReadReady::read_ready(self)? {
            core::hint::spin_loop();
        }
        // SAFETY: reads the UART's receive buffer register; no memory effects.
        *first = unsafe { inb(self.base + DATA) };
        Ok(1)
    }
}

impl embedded_io::Write for HostSerial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            self.write_byte(b);
        }
        Ok(buf.len())
    }

    /// Waits until the last byte has left the shift register: an emulator that ends the run
    /// right after would otherwise drop what is still in its FIFO.
    fn flush(&mut self) -> Result<(), Infallible> {
        self.drain();
        Ok(())
    }
}
