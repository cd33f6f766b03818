//! What the kernel does with each interrupt vector.

use crate::arch::idt::{TrapFrame, VECTOR_KICK, VECTOR_SPURIOUS, VECTOR_TIMER};
use crate::arch::{apic, pic, verdict};
use core::sync::atomic::{AtomicU64, Ordering};

static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 floating point",
    "alignment check",
    "machine check",
    "SIMD floating point",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

pub fn timer_ticks() -> u64 {
    TIMER_TICKS.load(Ordering::Relaxed)
}

pub fn dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        v if v < 32 => host_exception(frame),
        v if v == u64::from(VECTOR_TIMER) => {
            TIMER_TICKS.fetch_add(1, Ordering::Relaxed);
            apic::eoi();
        }
        v if v == u64::from(VECTOR_SPURIOUS) => {}
        // The kick's only job is the exit (or wake-up) it caused.
        v if v == u64::from(VECTOR_KICK) => {
            crate::arch::smp::kick_taken();
            apic::eoi()
        }
        // A masked 8259 still raises these; they need no EOI.
        v if v == u64::from(pic::SPURIOUS_MASTER) || v == u64::from(pic::SPURIOUS_SLAVE) => {}
        v => {
            defmt::warn!("unexpected interrupt vector {=u64}", v);
            apic::eoi();
        }
    }
}

/// A CPU exception in the hypervisor itself is a hypervisor bug: report it and end the run.
fn host_exception(frame: &TrapFrame) -> ! {
    let name = EXCEPTION_NAMES[(frame.vector & 31) as usize];
    // A double fault keeps CR2 from the page fault that could not be delivered.
    let cr2 = if frame.vector == 14 || frame.vector == 8 {
        crate::arch::cpu::read_cr2()
    } else {
        0
    };
    if let Some(cpu) = crate::arch::stack::overflowed(cr2) {
        crate::console::emergency(format_args!(
            "\njanus: FATAL kernel stack overflow on pCPU {cpu} (guard page {cr2:#x} touched)\n"
        ));
    }
    crate::console::emergency(format_args!(
        "\njanus: FATAL host exception #{} ({}) at RIP={:#x} error={:#x} CR2={:#x} RSP={:#x}\n",
        frame.vector, name, frame.rip, frame.error_code, cr2, frame.rsp
    ));
    verdict::failure()
}
