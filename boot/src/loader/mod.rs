mod entry;
mod heap;
mod load;

use boot::serial::{COM1, HostSerial};
use embedded_io::Write;

/// What real hardware and emulators accept as "the multiboot1 loader called us".
const MULTIBOOT_MAGIC: u32 = 0x2BAD_B002;

// UNSAFETY: an exported symbol is how the entry assembly reaches Rust.
// SAFETY: the entry assembly calls this by name; nothing else defines it.
#[expect(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn loader_main(magic: u32, mbi: u32) -> ! {
    let mut out = HostSerial::new(COM1);
    let _ = writeln!(out, "janus-boot {}", env!("CARGO_PKG_VERSION"));
    if magic != MULTIBOOT_MAGIC {
        fail(format_args!(
            "not started by a multiboot1 loader (eax={magic:#x})"
        ));
    }
    heap::init();
    match load::load_kernel(u64::from(mbi)) {
        Ok(jump) => jump.enter(),
        Err(e) => fail(format_args!("{e}")),
    }
}

/// Report on COM1 and stop; the QEMU/Bochs exit devices turn it into a failed run.
fn fail(args: core::fmt::Arguments<'_>) -> ! {
    let mut out = HostSerial::attach(COM1);
    let _ = writeln!(out, "janus-boot: error: {args}");
    entry::exit_failure()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("panic: {info}"))
}
