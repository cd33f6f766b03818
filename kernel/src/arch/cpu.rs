//! Identity of the host CPU and interrupt-flag helpers.
#![expect(unsafe_code)]
// UNSAFETY: sti/cli/hlt and reading RFLAGS.

use core::arch::asm;
use x86::cpuid::CpuId;

pub struct CpuIdentity {
    pub vendor: heapless::String<12>,
    pub brand: heapless::String<48>,
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
    pub x2apic: bool,
    pub pdpe1gb: bool,
}

pub fn identity() -> CpuIdentity {
    let cpuid = CpuId::new();
    let mut vendor = heapless::String::new();
    if let Some(v) = cpuid.get_vendor_info() {
        let _ = vendor.push_str(v.as_str());
    }
    let mut brand = heapless::String::new();
    if let Some(b) = cpuid.get_processor_brand_string() {
        let _ = brand.push_str(b.as_str().trim());
    }
    let f = cpuid.get_feature_info();
    CpuIdentity {
        vendor,
        brand,
        family: f.as_ref().map_or(0, |f| f.family_id()),
        model: f.as_ref().map_or(0, |f| f.model_id()),
        stepping: f.as_ref().map_or(0, |f| f.stepping_id()),
        x2apic: f.as_ref().is_some_and(|f| f.has_x2apic()),
        pdpe1gb: cpuid
            .get_extended_processor_and_feature_identifiers()
            .is_some_and(|e| e.has_1gib_pages()),
    }
}

pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack; no other effects.
    unsafe { asm!("pushfq; pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

pub fn enable_interrupts() {
    // SAFETY: the IDT is loaded before anyone calls this.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

pub fn disable_interrupts() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Runs `f` with interrupts masked, restoring the previous state.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let was = interrupts_enabled();
    disable_interrupts();
    let r = f();
    if was {
        enable_interrupts();
    }
    r
}

/// Sleeps until the next interrupt, atomically enabling interrupts for it.
pub fn wait_for_interrupt() {
    // SAFETY: sti's one-instruction shadow makes the sti;hlt pair race-free.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

pub fn read_cr2() -> u64 {
    // SAFETY: reading CR2 has no side effects.
    unsafe { x86::controlregs::cr2() as u64 }
}
