//! The hypervisor's consoles: human-readable lines on COM1, defmt frames on COM2; and what is
//! typed on COM1, read by polling (see `vm::console_input`).

pub mod logger;

use boot::serial::{COM1, COM2, HostSerial};
use embedded_io::{Read, ReadReady, Write};
use spin::Mutex;

struct Com1 {
    serial: HostSerial,
    /// Whose guest line is printed but not finished (a prompt): 0 for none, else the address
    /// of that VM's line counter.
    open: usize,
}

impl Com1 {
    /// Ends a guest's open line before something else is printed.
    fn close(&mut self) {
        if self.open != 0 {
            let _ = self.serial.write_all(b"\n");
            self.open = 0;
        }
    }
}

static COM1_OUT: Mutex<Option<Com1>> = Mutex::new(None);

pub fn init() {
    *COM1_OUT.lock() = Some(Com1 {
        serial: HostSerial::new(COM1),
        open: 0,
    });
    logger::init(HostSerial::new(COM2));
}

pub fn _print(args: core::fmt::Arguments<'_>) {
    crate::arch::cpu::without_interrupts(|| {
        if let Some(out) = COM1_OUT.lock().as_mut() {
            out.close();
            let _ = out.serial.write_fmt(args);
        }
    });
}

/// Prints a piece of guest `vm`'s console (`owner` tells VMs apart): with its `[vm] ` prefix
/// unless it continues that VM's open line; `ends_line` ends the line, otherwise it stays
/// open. `then` (which stamps a new line on the log channel) runs after a piece that started
/// a line, before anything else can be printed.
pub fn guest_piece(
    owner: usize,
    vm: &str,
    text: core::fmt::Arguments<'_>,
    ends_line: bool,
    then: impl FnOnce(),
) {
    crate::arch::cpu::without_interrupts(|| {
        let mut out = COM1_OUT.lock();
        let Some(out) = out.as_mut() else { return };
        let starts_line = out.open != owner;
        if starts_line {
            out.close();
            let _ = write!(out.serial, "[{vm}] ");
        }
        let _ = out.serial.write_fmt(text);
        if ends_line {
            let _ = out.serial.write_all(b"\n");
            out.open = 0;
        } else {
            out.open = owner;
        }
        if starts_line {
            then();
        }
    });
}

/// Bytes typed on COM1 since the last call, up to `buf`'s length.
pub fn read_input(buf: &mut [u8]) -> usize {
    crate::arch::cpu::without_interrupts(|| {
        let mut out = COM1_OUT.lock();
        let Some(out) = out.as_mut() else { return 0 };
        let mut n = 0;
        while n < buf.len() && out.serial.read_ready().unwrap_or(false) {
            match out.serial.read(&mut buf[n..=n]) {
                Ok(1) => n += 1,
                _ => break,
            }
        }
        n
    })
}

/// For the panic and fault paths: writes even if another context holds the console lock.
pub fn emergency(args: core::fmt::Arguments<'_>) {
    let _ = HostSerial::attach(COM1).write_fmt(args);
}

#[macro_export]
macro_rules! println {
    () => { $crate::console::_print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
