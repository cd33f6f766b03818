//! janus-kernel: the hypervisor image that janus-boot loads.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod entry {
    #![expect(unsafe_code)]
    // UNSAFETY: the naked entry point sets up the stack before any Rust code runs.

    use hermit_entry::boot_info::RawBootInfo;

    hermit_entry::define_entry_version!();

    // The loader's signature check: this must be exactly hermit-entry's `Entry`.
    const _ENTRY: hermit_entry::Entry = _start;

    /// # Safety
    /// Only janus-boot calls this, once, with a valid `RawBootInfo`.
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    unsafe extern "C" fn _start(_raw: &'static RawBootInfo, _cpu_id: u32) -> ! {
        core::arch::naked_asm!(
            "lea rsp, [rip + {stack} + {size}]",
            "xor ebp, ebp",
            "call {main}",
            "ud2",
            stack = sym kernel::arch::stack::BOOT_STACK,
            size = const kernel::arch::stack::STRIDE,
            main = sym kernel::start::kernel_main,
        )
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        kernel::start::panic(info)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("janus-kernel runs only on x86_64-unknown-none: build it with `cargo xtask build`");
    std::process::exit(2);
}
