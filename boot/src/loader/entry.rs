//! The multiboot1 header, the 32-bit entry that switches to long mode, and the jump into the
//! kernel.
#![expect(unsafe_code)]
// UNSAFETY: mode switching, page tables and the kernel jump can only be written in assembly.

use core::arch::{asm, global_asm};

// Flags: modules page aligned (bit 0), memory information (bit 1).
global_asm!(
    r#"
    .section .multiboot, "a"
    .balign 4
    .long 0x1BADB002
    .long 0x00000003
    .long -(0x1BADB002 + 0x00000003)

    .section .bss
    .balign 4096
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4 * 4096
boot_stack: .skip 64 * 1024
boot_stack_top:

    .section .rodata
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot32, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov edi, eax
    mov esi, ebx
    mov esp, offset boot_stack_top

    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 3f
    mov eax, 0x80000001
    cpuid
    test edx, 0x20000000
    jz 3f

    /* Identity map 0..4 GiB with 2 MiB pages: enough for the loader, modules and kernel. */
    mov eax, offset boot_pdpt
    or eax, 3
    mov [boot_pml4], eax
    mov ecx, 0
1:
    mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 3
    mov [boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 1b
    mov ecx, 0
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov [boot_pd + ecx * 8], eax
    mov eax, ecx
    shr eax, 11
    mov [boot_pd + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jb 2b

    mov eax, offset boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    mov eax, offset boot_long_mode
    push 0x08
    push eax
    retf

3:  /* No long mode: say so on COM1 and fail the run. */
    mov edx, 0x3F8
    mov ecx, offset boot_no_lm_msg
4:  mov al, [ecx]
    test al, al
    jz 5f
    out dx, al
    inc ecx
    jmp 4b
5:  mov dx, 0xF4
    mov eax, 0x11
    out dx, eax
6:  hlt
    jmp 6b

    .code64
boot_long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov edi, edi
    mov esi, esi
    mov rsp, offset boot_stack_top
    call loader_main
7:  hlt
    jmp 7b

    .section .rodata
boot_no_lm_msg:
    .asciz "janus-boot: error: this CPU has no long mode\r\n"
    .text
"#
);

/// Ends the run as failed: QEMU's isa-debug-exit (status 35), then Bochs' shutdown port.
pub fn exit_failure() -> ! {
    boot::serial::HostSerial::attach(boot::serial::COM1).drain();
    // SAFETY: writes to debug/exit ports that no device we use claims; then halt forever.
    unsafe {
        x86::io::outl(0xF4, 0x11);
        for b in b"Shutdown" {
            x86::io::outb(0x8900, *b);
        }
        loop {
            asm!("cli; hlt", options(nomem, nostack));
        }
    }
}

/// The loader image's bounds, from the linker script.
pub fn image_range() -> core::ops::Range<u64> {
    unsafe extern "C" {
        static __loader_start: u8;
        static __loader_end: u8;
    }
    // Only the symbols' addresses are taken, never their contents.
    (&raw const __loader_start) as u64..(&raw const __loader_end) as u64
}
