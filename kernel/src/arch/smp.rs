//! Host multiprocessing: starting the other pCPUs (INIT-SIPI-SIPI through a real-mode
//! trampoline that goes straight to long mode), knowing which pCPU is which, and forcing
//! another pCPU out of guest mode.
#![expect(unsafe_code)]
// UNSAFETY: the trampoline is copied into a low page and patched through raw pointers; the
// application processors' stacks are handed out by index from a static.

use super::{apic, gdt::MAX_CPUS, idt, tsc};
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

const NO_APIC: u32 = u32::MAX;
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(NO_APIC) }; MAX_CPUS];
/// pCPUs running the kernel, the BSP included.
pub static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// Released by the BSP once the VMs exist: APs then enter their scheduler loops.
pub static GO: AtomicBool = AtomicBool::new(false);

// Offsets inside the trampoline page; the 16-bit code addresses them relative to DS = CS.
const OFF_GDT_PTR: usize = 32;
const OFF_CR3: usize = 40;

global_asm!(
    r#"
    .section .rodata.janus_trampoline, "a"
    .balign 16
    .code16
    .global janus_tramp_start
janus_tramp_start:
    jmp 2f
    .balign 8
    /* 8: GDT (null, 64-bit code, data); 32: GDT pointer; 40: CR3 - all patched at run time. */
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .word 23
    .long 0
    .balign 8
    .long 0
2:
    cli
    mov ax, cs
    mov ds, ax
    lgdt [32]
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, [40]
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x900
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    .byte 0x66, 0xEA
    .global janus_tramp_far
janus_tramp_far:
    .long 0
    .word 0x08
    .code64
    .global janus_tramp_64
janus_tramp_64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, 1
    lock xadd [rip + janus_tramp_next], eax
    cmp eax, {max}
    jae 3f
    mov edi, eax
    mov rsp, [rip + janus_tramp_stacks]
    mov rcx, rdi
    inc rcx
    imul rcx, rcx, {stack}
    add rsp, rcx
    mov rax, [rip + janus_tramp_entry]
    call rax
3:  cli
    hlt
    jmp 3b
    .balign 8
    .global janus_tramp_next
janus_tramp_next:   .long 0
    .balign 8
    .global janus_tramp_stacks
janus_tramp_stacks: .quad 0
    .global janus_tramp_entry
janus_tramp_entry:  .quad 0
    .global janus_tramp_end
janus_tramp_end:
    .text
"#,
    max = const MAX_CPUS,
    stack = const super::stack::STRIDE,
);

unsafe extern "C" {
    static janus_tramp_start: u8;
    static janus_tramp_far: u8;
    static janus_tramp_64: u8;
    static janus_tramp_next: u8;
    static janus_tramp_stacks: u8;
    static janus_tramp_entry: u8;
    static janus_tramp_end: u8;
}

fn offset(sym: *const u8) -> usize {
    sym as usize - (&raw const janus_tramp_start) as usize
}

pub fn set_apic_id(cpu: usize, id: u32) {
    if let Some(slot) = APIC_IDS.get(cpu) {
        slot.store(id, Ordering::Release);
    }
}

/// This pCPU's index, from its APIC id.
pub fn current() -> usize {
    let id = apic::id();
    APIC_IDS
        .iter()
        .position(|a| a.load(Ordering::Acquire) == id)
        .unwrap_or(0)
}

/// A kick is on its way to the pCPU: further ones would only make it exit again.
static KICKED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The pCPU is halted with nothing to run (see `sched::run::cpu_loop`).
static IDLE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Interrupts pCPU `cpu` so it leaves guest mode (or wakes from idle) and looks at its queue.
/// Kicks coalesce: while one is in flight, another costs nothing.
pub fn kick_cpu(cpu: usize) {
    let Some(id) = APIC_IDS.get(cpu).map(|a| a.load(Ordering::Acquire)) else {
        return;
    };
    if id == NO_APIC || cpu == current() {
        return;
    }
    if KICKED[cpu].swap(true, Ordering::AcqRel) {
        return;
    }
    apic::send_fixed_ipi(id, idt::VECTOR_KICK);
    // A hint to the hardware; to an emulator that runs the host's CPUs in turn on one thread
    // (QEMU's TCG does), "let another CPU run". Without it the kicked pCPU waited for the
    // kicker's next timer interrupt there: an IPI round trip between two vCPUs took a timer
    // period.
    core::hint::spin_loop();
}

/// Wakes pCPU `cpu` only if it is idle.
pub fn wake_cpu(cpu: usize) {
    if IDLE.get(cpu).is_some_and(|i| i.load(Ordering::Acquire)) {
        kick_cpu(cpu);
    }
}

/// The kick arrived on this pCPU: the next one must be sent again.
pub fn kick_taken() {
    if let Some(k) = KICKED.get(current()) {
        k.store(false, Ordering::Release);
    }
}

/// Marks this pCPU idle (before it halts) or busy again.
pub fn set_idle(cpu: usize, idle: bool) {
    if let Some(i) = IDLE.get(cpu) {
        i.store(idle, Ordering::Release);
    }
}

/// Starts every other pCPU at `entry(index)`, through a trampoline at `page` (below 1 MiB,
/// free, identity mapped); returns how many pCPUs are online afterwards.
pub fn start_aps(page: u64, entry: extern "C" fn(usize) -> !) -> usize {
    let start = &raw const janus_tramp_start;
    let len = offset(&raw const janus_tramp_end);
    let dst = page as *mut u8;
    let page32 = page as u32;
    // SAFETY: `page` is a free low page chosen by the caller; the trampoline is our own
    // image, and the patched fields lie inside the copy.
    unsafe {
        core::ptr::copy_nonoverlapping(start, dst, len);
        let gdt_base = page32 + 8;
        core::ptr::write_unaligned(dst.add(OFF_GDT_PTR + 2).cast::<u32>(), gdt_base);
        let cr3 = x86::controlregs::cr3() as u32;
        core::ptr::write_unaligned(dst.add(OFF_CR3).cast::<u32>(), cr3);
        let far = page32 + offset(&raw const janus_tramp_64) as u32;
        core::ptr::write_unaligned(
            dst.add(offset(&raw const janus_tramp_far)).cast::<u32>(),
            far,
        );
        core::ptr::write_unaligned(
            dst.add(offset(&raw const janus_tramp_next)).cast::<u32>(),
            1,
        );
        let stacks = super::stack::ap_stacks_base();
        core::ptr::write_unaligned(
            dst.add(offset(&raw const janus_tramp_stacks)).cast::<u64>(),
            stacks,
        );
        core::ptr::write_unaligned(
            dst.add(offset(&raw const janus_tramp_entry)).cast::<u64>(),
            entry as usize as u64,
        );
    }
    let vector = (page >> 12) as u32;
    // INIT, then SIPI twice, to every other APIC ("all excluding self").
    apic::send_icr(0, 0x000C_4500);
    tsc::spin_micros(10_000);
    apic::send_icr(0, 0x000C_4600 | vector);
    tsc::spin_micros(200);
    apic::send_icr(0, 0x000C_4600 | vector);
    // Emulators can take a while to start a CPU thread; wait until the count stops growing,
    // or until every CPU the MADT lists has come (50 ms sooner).
    let expected = super::host_acpi::enabled_cpus();
    let all_here = || expected.is_some_and(|n| ONLINE.load(Ordering::Acquire) >= n);
    let mut last = ONLINE.load(Ordering::Acquire);
    let mut quiet = 0;
    while quiet < 5 && !all_here() {
        for _ in 0..10 {
            if all_here() {
                break;
            }
            tsc::spin_micros(1_000);
        }
        let now = ONLINE.load(Ordering::Acquire);
        if now == last {
            quiet += 1;
        } else {
            last = now;
            quiet = 0;
        }
    }
    ONLINE.load(Ordering::Acquire)
}
