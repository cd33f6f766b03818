//! Privileged-instruction wrappers shared by both backends (MSRs, control registers, XCR0).
// UNSAFETY: these instructions fault when used wrongly (unknown MSR, XSETBV without
// CR4.OSXSAVE or with an invalid value); each wrapper is either `unsafe fn` with the rule in
// its doc, or checks the precondition itself before executing the instruction.
#![expect(unsafe_code)]

use crate::bits::CR4_OSXSAVE;

/// # Safety
/// `msr` must exist on this CPU and we must run at CPL 0.
pub(crate) unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: forwarded to the caller.
    unsafe { x86::msr::rdmsr(msr) }
}

/// # Safety
/// `msr` must exist, accept `value`, and changing it must not break the host.
pub(crate) unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { x86::msr::wrmsr(msr, value) }
}

pub(crate) fn cr0() -> u64 {
    // SAFETY: reading CR0 at CPL 0 has no side effect.
    unsafe { x86::controlregs::cr0().bits() as u64 }
}

pub(crate) fn cr2() -> u64 {
    // SAFETY: as for CR0.
    unsafe { x86::controlregs::cr2() as u64 }
}

/// Loads the guest's CR2 before entry (VMX does not switch it).
pub(crate) fn write_cr2(v: u64) {
    // SAFETY: CR2 only holds the last page-fault address; the host reads it only inside its
    // #PF handler, which runs after a new fault has overwritten it.
    unsafe { x86::controlregs::cr2_write(v) }
}

#[allow(dead_code)]
pub(crate) fn cr3() -> u64 {
    // SAFETY: as for CR0.
    unsafe { x86::controlregs::cr3() }
}

pub(crate) fn cr4() -> u64 {
    // SAFETY: as for CR0.
    unsafe { x86::controlregs::cr4().bits() as u64 }
}

/// # Safety
/// The new CR4 must keep the host running (only feature-enable bits may be added).
pub(crate) unsafe fn write_cr4(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { x86::controlregs::cr4_write(x86::controlregs::Cr4::from_bits_truncate(v as usize)) }
}

/// # Safety
/// As for [`write_cr4`].
pub(crate) unsafe fn write_cr0(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { x86::controlregs::cr0_write(x86::controlregs::Cr0::from_bits_truncate(v as usize)) }
}

/// XCR0 bits this CPU supports (CPUID 0xD.0 EDX:EAX); 0 without XSAVE.
pub(crate) fn xcr0_supported() -> u64 {
    use x86::cpuid::native_cpuid::cpuid_count;
    if cpuid_count(0, 0).eax < 0xd || cpuid_count(1, 0).ecx & (1 << 26) == 0 {
        return 0;
    }
    let r = cpuid_count(0xd, 0);
    (u64::from(r.edx) << 32) | u64::from(r.eax)
}

/// Sets CR4.OSXSAVE if the CPU has XSAVE, so XCR0 can be switched for guests.
pub(crate) fn enable_osxsave() {
    if xcr0_supported() != 0 && cr4() & CR4_OSXSAVE == 0 {
        // SAFETY: CPUID says XSAVE exists, so OSXSAVE is a valid CR4 bit; setting it only
        // enables XGETBV/XSETBV and does not change how the host runs.
        unsafe { write_cr4(cr4() | CR4_OSXSAVE) }
    }
}

/// XCR0, or `None` when CR4.OSXSAVE is off.
pub(crate) fn xcr0() -> Option<u64> {
    if cr4() & CR4_OSXSAVE == 0 {
        return None;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: CR4.OSXSAVE is set, so XGETBV with ECX=0 is defined; it only reads XCR0.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Loads XCR0 when it differs; refuses values [`xcr0_valid`] rejects.
pub(crate) fn set_xcr0(v: u64) {
    let Some(cur) = xcr0() else { return };
    if cur == v || !xcr0_valid(v, xcr0_supported()) {
        return;
    }
    // SAFETY: OSXSAVE is on (xcr0() returned Some) and the value passed the architectural
    // checks against the supported mask, so XSETBV cannot fault.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack))
    }
}

/// Whether XSETBV(0, v) is architecturally valid on a CPU supporting `supported`.
pub fn xcr0_valid(v: u64, supported: u64) -> bool {
    let has = |b: u32| v & (1 << b) != 0;
    v & !supported == 0
        && has(0)
        && (!has(2) || has(1))
        && has(3) == has(4)
        && (v & 0xe0 == 0 || (v & 0xe0 == 0xe0 && has(2)))
        && has(17) == has(18)
}

/// What the host CPU reports about its speculation bugs and controls.
pub fn cpu_facts() -> crate::mitigate::CpuFacts {
    use x86::cpuid::native_cpuid::cpuid_count;
    let v = cpuid_count(0, 0);
    let intel = (v.ebx, v.edx, v.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
    let edx7 = if v.eax >= 7 { cpuid_count(7, 0).edx } else { 0 };
    let ext = cpuid_count(0x8000_0000, 0).eax;
    let amd_ibpb = ext >= 0x8000_0008 && cpuid_count(0x8000_0008, 0).ebx & (1 << 12) != 0;
    let arch_caps = (edx7 & (1 << 29) != 0).then(|| {
        // SAFETY: CPUID.7.0:EDX[29] says IA32_ARCH_CAPABILITIES exists; reading it has no
        // side effect.
        unsafe { rdmsr(0x10A) }
    });
    crate::mitigate::CpuFacts {
        intel,
        ibpb: edx7 & (1 << 26) != 0 || amd_ibpb,
        flush_l1d: edx7 & (1 << 28) != 0,
        md_clear: edx7 & (1 << 10) != 0,
        arch_caps,
    }
}

/// Indirect-branch prediction barrier (`IA32_PRED_CMD`).
/// # Safety
/// The CPU must have IBPB ([`cpu_facts`]).
pub(crate) unsafe fn ibpb() {
    // SAFETY: forwarded to the caller.
    unsafe { wrmsr(0x49, 1) }
}

/// Flushes the L1 data cache (`IA32_FLUSH_CMD`).
/// # Safety
/// The CPU must have the flush command ([`cpu_facts`]).
pub(crate) unsafe fn flush_l1d() {
    // SAFETY: forwarded to the caller.
    unsafe { wrmsr(0x10B, 1) }
}

/// The kernel's data selector, which VERW is given (any valid one would do).
static VERW_SELECTOR: u16 = 0x10;

/// Clears the CPU's buffers on MD_CLEAR parts (VERW's side effect).
pub(crate) fn verw() {
    // SAFETY: VERW only reads the selector in memory and sets ZF; it cannot fault on a valid
    // pointer at CPL 0.
    unsafe {
        core::arch::asm!("verw word ptr [{}]", in(reg) &VERW_SELECTOR, options(nostack, readonly))
    }
}

/// Overwrites the return stack buffer with 32 harmless entries, so that no return the guest
/// trained predicts into the hypervisor.
pub(crate) fn fill_rsb() {
    // SAFETY: each call pushes a return address that the final `add` drops; the speculation
    // traps after the calls are never reached architecturally. RSP is back where it was.
    unsafe {
        core::arch::asm!(
            "mov {n:e}, 16",
            "2:",
            "call 4f",
            "3:",
            "pause",
            "lfence",
            "jmp 3b",
            "4:",
            "call 6f",
            "5:",
            "pause",
            "lfence",
            "jmp 5b",
            "6:",
            "dec {n:e}",
            "jnz 2b",
            "add rsp, 256",
            n = out(reg) _,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::xcr0_valid;

    #[test]
    fn xcr0_rules() {
        let sup = 0x2ff;
        assert!(xcr0_valid(0x1, sup));
        assert!(xcr0_valid(0x7, sup));
        assert!(xcr0_valid(0xe7, sup));
        assert!(!xcr0_valid(0x0, sup), "x87 must stay on");
        assert!(!xcr0_valid(0x5, sup), "AVX needs SSE");
        assert!(!xcr0_valid(0x67, sup), "AVX-512 is all or nothing");
        assert!(!xcr0_valid(0xb, sup), "BNDREG without BNDCSR");
        assert!(!xcr0_valid(0x1_0000_0001, sup), "unsupported bit");
        assert!(!xcr0_valid(0x7, 0x3), "AVX not supported by host");
    }
}
