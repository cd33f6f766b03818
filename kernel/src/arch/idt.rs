//! The IDT, the 256 entry stubs and the Rust-side dispatch.
//!
//! Stable Rust has no interrupt ABI, so every vector enters through a 16-byte assembly stub
//! that pushes a uniform frame; the table is built at run time from the stub base because
//! the kernel is position independent.
#![expect(unsafe_code)]
// UNSAFETY: the IDT load, the stubs, and the frame handed to Rust by assembly.

use super::gdt::{IST_CRITICAL, KERNEL_CS};
use core::arch::global_asm;
use core::cell::UnsafeCell;
use x86::bits64::segmentation::Descriptor64;
use x86::dtables::{DescriptorTablePointer, lidt};
use x86::segmentation::{BuildDescriptor, DescriptorBuilder, GateDescriptorBuilder};

pub const VECTOR_TIMER: u8 = 0x20;
pub const VECTOR_SPURIOUS: u8 = 0xFF;
/// Sent by one pCPU to make another leave guest mode and look at its run queue.
pub const VECTOR_KICK: u8 = 0xF0;

/// Registers as the stubs leave them on the stack, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// Vectors 8, 10-14, 17, 21, 29 and 30 push an error code; the others get a zero so the frame
// is the same shape for all.
global_asm!(
    r#"
    .text
    .p2align 4
    .global janus_isr_stubs
janus_isr_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp janus_isr_common
    .set vec, vec + 1
    .endr

janus_isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    call janus_trap_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static janus_isr_stubs: u8;
}

const STUB_SIZE: u64 = 16;

struct Idt(UnsafeCell<[Descriptor64; 256]>);
// SAFETY: written once by the BSP in `init` before any AP loads it; read-only afterwards.
unsafe impl Sync for Idt {}
static IDT: Idt = Idt(UnsafeCell::new([Descriptor64::NULL; 256]));

/// Fills the shared IDT (BSP, once) and loads it on this CPU.
pub fn init(fill: bool) {
    if fill {
        let base = (&raw const janus_isr_stubs) as u64;
        // SAFETY: only the BSP fills the table, before interrupts are enabled anywhere.
        let idt = unsafe { &mut *IDT.0.get() };
        for (vector, gate) in idt.iter_mut().enumerate() {
            let mut b = <DescriptorBuilder as GateDescriptorBuilder<u64>>::interrupt_descriptor(
                KERNEL_CS,
                base + vector as u64 * STUB_SIZE,
            )
            .present();
            // Double fault and NMI must not run on a possibly broken stack.
            if vector == 8 || vector == 2 {
                b = b.ist(IST_CRITICAL);
            }
            *gate = b.finish();
        }
    }
    // SAFETY: the table is static and fully initialised.
    unsafe { lidt(&DescriptorTablePointer::new_from_slice(&*IDT.0.get())) };
}

#[unsafe(no_mangle)]
extern "C" fn janus_trap_dispatch(frame: &mut TrapFrame) {
    crate::trap::dispatch(frame);
}
