//! The probe's CPU plumbing: PVH entry to long mode, the IDT, fault-tolerant MSR access, and
//! the real-mode trampoline its other vCPUs start in after INIT/SIPI.
#![expect(unsafe_code)]
// UNSAFETY: mode switches, descriptor tables and the instructions under test.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// Where the BSP copies the AP trampoline (free low RAM in Janus's guest memory map).
pub const TRAMPOLINE: u64 = 0x10000;
pub const MAX_VCPUS: usize = 8;
const STACK: usize = 16 * 1024;

global_asm!(
    r#"
    .section .note.Xen, "a"
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long probe_start32

    .section .bss
    .balign 4096
probe_pml4: .skip 4096
probe_pdpt: .skip 4096
probe_pd:   .skip 4 * 4096
    .balign 16
probe_stacks: .skip {stack} * {max}
probe_stacks_end:

    .section .rodata
    .balign 16
probe_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
probe_gdt_end:
probe_gdt_ptr:
    .word probe_gdt_end - probe_gdt - 1
    .quad probe_gdt

    .section .text.start32, "ax"
    .code32
    .global probe_start32
probe_start32:
    cli
    mov edi, ebx
    /* PVH gives no stack. */
    mov esp, offset probe_stacks + {stack}
    /* Identity map 0..4 GiB with 2 MiB pages. */
    mov eax, offset probe_pdpt
    or eax, 3
    mov [probe_pml4], eax
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 12
    add eax, offset probe_pd
    or eax, 3
    mov [probe_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 1b
    xor ecx, ecx
2:  mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov [probe_pd + ecx * 8], eax
    mov eax, ecx
    shr eax, 11
    mov [probe_pd + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jb 2b
    mov eax, offset probe_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x220
    mov cr4, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    lgdt [probe_gdt_ptr]
    mov eax, offset probe_long
    push 0x08
    push eax
    retf

    .code64
probe_long:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov rsp, offset probe_stacks + {stack}
    mov edi, edi
    call probe_bsp_main
3:  cli
    hlt
    jmp 3b

    /* APs: the trampoline below jumps here in long mode with the BSP's tables. */
    .global probe_ap_long
probe_ap_long:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    /* An AP starts in xAPIC mode on plain hardware: x2APIC, which the probe speaks. */
    mov ecx, 0x1b
    rdmsr
    or eax, 0xC00
    wrmsr
    /* Software-enabled, spurious vector 0xFF, as an OS leaves it: a disabled APIC holds
       fixed IPIs back, and `bench`'s IPI round trip has this vCPU answer one. */
    mov ecx, 0x80f
    mov eax, 0x1ff
    xor edx, edx
    wrmsr
    mov ecx, 0x802
    rdmsr
    mov edi, eax
    and eax, 7
    inc eax
    imul eax, eax, {stack}
    mov rsp, offset probe_stacks
    add rsp, rax
    call probe_ap_main
4:  cli
    hlt
    jmp 4b

    /* Copied to TRAMPOLINE and entered by SIPI in real mode at CS = TRAMPOLINE >> 4, IP = 0.
       It goes straight from real mode to long mode. Absolute addresses are those of the copy. */
    .balign 8
    .code16
    .global probe_tramp_start
probe_tramp_start:
    jmp 5f
    .balign 8
    /* offset 8: the GDT; offset 32: its pointer (fixed offsets: real mode addresses them
       relative to DS = CS). */
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .word 23
    .long {tramp} + 8
5:
    cli
    mov ax, cs
    mov ds, ax
    lgdt [32]
    mov eax, cr4
    or eax, 0x220
    mov cr4, eax
    mov eax, offset probe_pml4
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    .byte 0x66, 0xEA
    .long {tramp} + (probe_tramp_64 - probe_tramp_start)
    .word 0x08
    .code64
probe_tramp_64:
    mov rax, offset probe_ap_long
    jmp rax
    .global probe_tramp_end
probe_tramp_end:
    .text
"#,
    stack = const STACK,
    max = const MAX_VCPUS,
    tramp = const TRAMPOLINE,
);

/// Copies the AP trampoline to [`TRAMPOLINE`]; returns the SIPI vector that starts it.
pub fn install_trampoline() -> u8 {
    unsafe extern "C" {
        static probe_tramp_start: u8;
        static probe_tramp_end: u8;
    }
    let start = &raw const probe_tramp_start;
    let end = &raw const probe_tramp_end;
    let len = end as usize - start as usize;
    // SAFETY: TRAMPOLINE is free RAM in the guest memory map, identity mapped, and no other
    // code uses it; the source is our own image.
    unsafe { core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len) };
    (TRAMPOLINE >> 12) as u8
}

// ---- interrupts and expected faults ----

/// The vector of the last fault taken while one was expected (0xFF: none).
static FAULTED: AtomicU8 = AtomicU8::new(0xFF);
/// Bytes to skip over the faulting instruction when a fault is expected (0: none expected).
static SKIP: AtomicU64 = AtomicU64::new(0);
pub static TIMER_HITS: AtomicU64 = AtomicU64::new(0);
pub const TIMER_VECTOR: u8 = 0x40;
/// Vectors an ABI check announced (bit per vector), and those of them whose source expects
/// an EOI (a Xen callback vector bypasses the LAPIC and gets none). Any other vector is fatal.
static EXPECTED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static WANTS_EOI: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
/// Per vector: how often it arrived, and the TSC at its latest arrival.
static HITS: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
static HIT_TSC: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// The vector a vCPU answers with an IPI from its handler (0: none), and the ICR value of
/// the answer: the far half of `bench`'s IPI round trip, answered in the handler so that the
/// answering vCPU needs no code of its own beyond its idle loop.
static ANSWER_VECTOR: AtomicU8 = AtomicU8::new(0);
static ANSWER_ICR: AtomicU64 = AtomicU64::new(0);
const X2APIC_ICR: u32 = 0x830;

/// Every vCPU that takes `vector` (expected with [`expect_vector`]) sends the IPI `icr`
/// after its EOI; vector 0 stops it.
pub fn answer_vector(vector: u8, icr: u64) {
    ANSWER_ICR.store(icr, Ordering::Release);
    ANSWER_VECTOR.store(vector, Ordering::Release);
}

/// Lets `vector` arrive from now on; `eoi` says whether the handler must EOI it.
pub fn expect_vector(vector: u8, eoi: bool) {
    let (w, b) = (usize::from(vector / 64), 1u64 << (vector % 64));
    if eoi {
        WANTS_EOI[w].fetch_or(b, Ordering::AcqRel);
    } else {
        WANTS_EOI[w].fetch_and(!b, Ordering::AcqRel);
    }
    EXPECTED[w].fetch_or(b, Ordering::AcqRel);
}

/// How often `vector` arrived, and the TSC when it last did.
pub fn vector_hits(vector: u8) -> (u32, u64) {
    let v = usize::from(vector);
    (
        HITS[v].load(Ordering::Acquire),
        HIT_TSC[v].load(Ordering::Acquire),
    )
}

#[repr(C)]
struct Frame {
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

global_asm!(
    r#"
    .text
    .p2align 4
probe_isr_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp probe_isr_common
    .set vec, vec + 1
    .endr
probe_isr_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    leaq 72(%rsp), %rdi
    cld
    call probe_trap
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq
    .global probe_isr_base
    .set probe_isr_base, probe_isr_stubs
"#,
    options(att_syntax)
);

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static mut IDT: Idt = Idt([[0; 2]; 256]);

pub fn load_idt(fill: bool) {
    unsafe extern "C" {
        static probe_isr_base: u8;
    }
    let base = &raw const probe_isr_base as u64;
    let idt = &raw mut IDT;
    if fill {
        for v in 0..256u64 {
            let h = base + v * 16;
            let lo = (h & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | ((h >> 16) & 0xFFFF) << 48;
            // SAFETY: the BSP fills the table once before any AP loads it.
            unsafe { (*idt).0[v as usize] = [lo, h >> 32] };
        }
    }
    #[repr(C, packed)]
    struct Ptr {
        limit: u16,
        base: u64,
    }
    let p = Ptr {
        limit: 256 * 16 - 1,
        base: idt as u64,
    };
    // SAFETY: the table is static and complete.
    unsafe { asm!("lidt [{}]", in(reg) &p, options(readonly, nostack)) };
}

#[unsafe(no_mangle)]
extern "C" fn probe_trap(f: &mut Frame) {
    let v = f.vector as u8;
    if v == TIMER_VECTOR {
        TIMER_HITS.fetch_add(1, Ordering::AcqRel);
        wrmsr(0x80B, 0); // EOI
        return;
    }
    let (w, b) = (usize::from(v / 64), 1u64 << (v % 64));
    if v >= 32 && EXPECTED[w].load(Ordering::Acquire) & b != 0 {
        HIT_TSC[usize::from(v)].store(rdtsc(), Ordering::Release);
        HITS[usize::from(v)].fetch_add(1, Ordering::AcqRel);
        if WANTS_EOI[w].load(Ordering::Acquire) & b != 0 {
            wrmsr(0x80B, 0);
        }
        if v == ANSWER_VECTOR.load(Ordering::Acquire) {
            wrmsr(X2APIC_ICR, ANSWER_ICR.load(Ordering::Acquire));
        }
        return;
    }
    let skip = SKIP.swap(0, Ordering::AcqRel);
    if v < 32 && skip != 0 {
        FAULTED.store(v, Ordering::Release);
        f.rip += skip;
        return;
    }
    crate::say!(
        "FATAL unexpected vector {} error {:#x} at {:#x}",
        v,
        f.error,
        f.rip
    );
    crate::say!("verdict: FAIL");
    crate::io::power_off();
}

/// Runs `f`, which must execute one faulting-or-not instruction of `len` bytes as its only
/// possibly faulting instruction; returns the vector it raised, if any.
pub fn catching(len: u64, f: impl FnOnce()) -> Option<u8> {
    FAULTED.store(0xFF, Ordering::Release);
    SKIP.store(len, Ordering::Release);
    f();
    SKIP.store(0, Ordering::Release);
    let v = FAULTED.load(Ordering::Acquire);
    (v != 0xFF).then_some(v)
}

/// TSC cycles to wait for an expected interrupt: well under a second at QEMU's GHz TSC,
/// 10 s at Bochs's 100 MHz; only a missing interrupt ever waits that long.
pub const WATCHDOG: u64 = 1_000_000_000;

/// Halts until `vector` has arrived more than `before` times, or until a TSC-deadline
/// watchdog `cycles` away fires (a halted vCPU with nothing coming would sleep for ever).
/// Returns the hit count and the TSC at the latest arrival.
pub fn wait_vector(vector: u8, before: u32, cycles: u64) -> (u32, u64) {
    const LVT_TIMER: u32 = 0x832;
    const TSC_DEADLINE: u32 = 0x6E0;
    wrmsr(LVT_TIMER, u64::from(TIMER_VECTOR) | (2 << 17));
    let dog = TIMER_HITS.load(Ordering::Acquire);
    wrmsr(TSC_DEADLINE, rdtsc() + cycles);
    while vector_hits(vector).0 == before && TIMER_HITS.load(Ordering::Acquire) == dog {
        sti_hlt();
    }
    wrmsr(TSC_DEADLINE, 0);
    vector_hits(vector)
}

pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the probe reads MSRs to test the hypervisor; a #GP is caught by `catching`.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Sets CR4.OSXSAVE, so that XGETBV/XSETBV work.
pub fn enable_osxsave() {
    // SAFETY: the probe runs at CPL 0 and only checked XSAVE support; OSXSAVE changes nothing
    // else it relies on.
    unsafe {
        asm!("mov {t}, cr4", "or {t}, {bit}", "mov cr4, {t}", t = out(reg) _, bit = const 1u64 << 18, options(nomem, nostack))
    };
}

pub fn xgetbv() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only after enable_osxsave.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

pub fn xsetbv(v: u64) {
    // SAFETY: only after enable_osxsave, with values the caller derived from CPUID leaf 0xD;
    // a #GP is caught by `catching` where the caller expects one.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack))
    }
}

pub fn wrmsr(msr: u32, v: u64) {
    // SAFETY: as for rdmsr.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack))
    };
}

pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Puts `v` in XMM7 and DR0: registers the hypervisor must keep per vCPU.
pub fn set_private_regs(v: u64) {
    // SAFETY: CR4.OSFXSR is set at entry, so SSE moves are defined; DR0 at CPL 0 with DR7 left
    // clear arms no breakpoint. The compiler (soft-float) never uses XMM7 itself.
    unsafe {
        asm!("movq xmm7, {v}", "mov dr0, {v}", v = in(reg) v, options(nomem, nostack));
    }
}

/// XMM7 and DR0 as `set_private_regs` left them, unless something else changed them.
pub fn private_regs() -> (u64, u64) {
    let (x, d): (u64, u64);
    // SAFETY: as in `set_private_regs`; both reads have no side effects.
    unsafe {
        asm!("movq {x}, xmm7", "mov {d}, dr0", x = out(reg) x, d = out(reg) d, options(nomem, nostack));
    }
    (x, d)
}

/// Opens interrupts for one instruction: a pending one is taken here.
pub fn sti_nop() {
    // SAFETY: enables interrupts for the NOP only; the handlers are installed.
    unsafe { asm!("sti; nop; cli", options(nomem, nostack)) };
}

pub fn sti_hlt() {
    // SAFETY: waits for the next interrupt with interrupts enabled for it.
    unsafe { asm!("sti; hlt; cli", options(nomem, nostack)) };
}

pub fn vmcall(amd: bool) {
    // SAFETY: with no hypervisor ABI this raises #UD, which `catching` absorbs.
    unsafe {
        if amd {
            asm!("vmmcall", options(nomem, nostack));
        } else {
            asm!("vmcall", options(nomem, nostack));
        }
    }
}

pub fn read_u32(addr: u64) -> u32 {
    // SAFETY: the probe reads unbacked guest-physical memory on purpose (identity mapped).
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

pub fn read_u8(addr: u64) -> u8 {
    // SAFETY: identity-mapped guest RAM (the PVH command line).
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

pub fn write_u32(addr: u64, v: u32) {
    // SAFETY: as for read_u32.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

pub fn triple_fault() -> ! {
    #[repr(C, packed)]
    struct Ptr {
        limit: u16,
        base: u64,
    }
    let p = Ptr { limit: 0, base: 0 };
    // SAFETY: deliberately leaves no way to handle the next exception.
    unsafe { asm!("lidt [{}]", "int3", in(reg) &p, options(noreturn)) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::say!("panic: {}", info);
    crate::say!("verdict: FAIL");
    crate::io::power_off()
}
