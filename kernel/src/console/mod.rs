//! The hypervisor's consoles: human-readable lines on COM1, defmt frames on COM2.

pub mod logger;

use boot::serial::{COM1, COM2, HostSerial};
use embedded_io::Write;
use spin::Mutex;

static COM1_OUT: Mutex<Option<HostSerial>> = Mutex::new(None);

pub fn init() {
    *COM1_OUT.lock() = Some(HostSerial::new(COM1));
    logger::init(HostSerial::new(COM2));
}

pub fn _print(args: core::fmt::Arguments<'_>) {
    crate::arch::cpu::without_interrupts(|| {
        if let Some(serial) = COM1_OUT.lock().as_mut() {
            let _ = serial.write_fmt(args);
        }
    });
}

/// Prints `args` and runs `then` before another line can follow, so that what `then` logs
/// (on COM2) is in the same order as the lines on COM1.
pub fn print_then<R>(args: core::fmt::Arguments<'_>, then: impl FnOnce() -> R) -> R {
    crate::arch::cpu::without_interrupts(|| {
        let mut out = COM1_OUT.lock();
        if let Some(serial) = out.as_mut() {
            let _ = serial.write_fmt(args);
        }
        then()
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
