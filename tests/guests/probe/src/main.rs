//! The probe guest: a tiny PVH kernel that exercises the machine Janus presents to a VM and
//! reports each check by name on its UART, then a final verdict.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    #![allow(unsafe_code)]
    // UNSAFETY: a bare-metal guest: its entry, port I/O and the final halt.

    core::arch::global_asm!(
        r#"
        .section .note.Xen, "a"
        .balign 4
        .long 4
        .long 4
        .long 18
        .asciz "Xen"
        .long probe_start32

        .section .text.start32, "ax"
        .code32
        .global probe_start32
probe_start32:
        mov dx, 0x3F8
        mov esi, offset probe_msg
1:      mov al, [esi]
        test al, al
        jz 2f
        out dx, al
        inc esi
        jmp 1b
2:      cli
        hlt
        jmp 2b
        .code64

        .section .rodata
probe_msg:
        .asciz "probe: started in 32-bit protected mode\n"
        "#
    );

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("probe is a guest kernel for x86_64-unknown-none: build it with `cargo xtask build`");
    std::process::exit(2);
}
