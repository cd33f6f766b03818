//! The CPUID policy: every feature bit a VM may see, with the MSRs that bit implies and who
//! answers them. The registers [`GOVERNED`] names are allow-listed: a host bit that is not in
//! [`FEATURES`] never reaches the guest, so a new host CPU cannot advertise something Janus
//! does not implement. The personalities own only the hypervisor leaves; this table is the
//! same on both faces.
//!
//! Deliberately absent (the guest sees the bit clear, and the MSRs #GP as on a CPU without
//! the feature):
//! - **Machine check (MCE, MCA, the AMD RAS bits).** Janus never delivers a machine check to a
//!   guest: a host #MC is the hypervisor's. Xen's vMCE model would give the guest empty banks
//!   that never report anything, plus state to migrate and get right on both faces; hiding
//!   both bits is what a guest already handles (Linux skips its MCE code without them, Windows
//!   and Xen's own PVH guests run without it) and cannot go wrong.
//! - **Speculation control** (IBRS/IBPB, STIBP, SSBD, L1D_FLUSH, ARCH_CAPABILITIES,
//!   CORE_CAPABILITIES, AMD's IBPB/IBRS/STIBP/SSBD/VIRT_SSBD, and leaf 7.2). A guest SPEC_CTRL
//!   only means something if the backends switch it on every entry and exit (VMX MSR areas, the
//!   SVM save area only on some parts), and PRED_CMD/FLUSH_CMD would have to reach the host
//!   CPU. Without them the guest assumes the worst and uses its software mitigations.
//! - **TSC_ADJUST, TSC writes, RDTSCP**: the backends keep no TSC offset or TSC_AUX per vCPU.
//! - **Performance monitoring and power/thermal MSRs** (PDCM, DS, ACPI thermal, EST, the AMD
//!   PerfCtrExt/PerfTsc/IRPERF/hardware P-state bits, leaves 6 and 0xA): not virtualised.
//! - **Features whose state Janus does not switch**: MPX (BNDCFGS), Intel PT, SGX, CET,
//!   PKS, WAITPKG (UMWAIT_CONTROL), XFD and with it AMX, XSAVES supervisor states, TME, RDT
//!   (PQM/PQE), arch LBRs, ENQCMD (PASID), HRESET, LAM, FRED.
//! - **What would describe the host**: MONITOR/MWAIT, hybrid cores, the AMD topology
//!   extension (leaf 0x8000001E is not emulated), node id, SEV.

/// A CPUID output register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl Reg {
    pub const fn index(self) -> usize {
        match self {
            Reg::Eax => 0,
            Reg::Ebx => 1,
            Reg::Ecx => 2,
            Reg::Edx => 3,
        }
    }
}

/// Who answers an MSR a feature implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// `platform::rdmsr`/`wrmsr`, with the vCPU's [`super::platform::PlatformMsrs`].
    Platform,
    /// The vCPU's local APIC.
    Lapic,
    /// The vCPU backend: switched by the hardware (`PASSTHROUGH_MSRS`) or handled inside it
    /// (EFER, PAT); the kernel never sees these exits.
    Backend,
}

/// One MSR a feature implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msr {
    pub index: u32,
    pub owner: Owner,
    /// Writing back the value read is accepted (the reset value, for a guest that has not
    /// written it). `false`: architecturally read-only, or writes not offered (the TSC).
    pub writable: bool,
}

const fn rw(index: u32, owner: Owner) -> Msr {
    Msr {
        index,
        owner,
        writable: true,
    }
}

const fn ro(index: u32, owner: Owner) -> Msr {
    Msr {
        index,
        owner,
        writable: false,
    }
}

pub const TSC: u32 = 0x10;
pub const APIC_BASE: u32 = 0x1B;
pub const MTRR_CAP: u32 = 0xFE;
pub const MTRR_DEF_TYPE: u32 = 0x2FF;
pub const PAT: u32 = 0x277;
pub const EFER: u32 = 0xC000_0080;
pub const MISC_ENABLE: u32 = 0x1A0;

// Writes of the TSC would need a per-vCPU offset in the backends; guests do not write it.
const M_TSC: Msr = ro(TSC, Owner::Platform);
const M_APIC_BASE: Msr = rw(APIC_BASE, Owner::Lapic);
const M_EFER: Msr = rw(EFER, Owner::Backend);
const M_PAT: Msr = rw(PAT, Owner::Backend);
const M_MTRR: [Msr; 2] = [
    ro(MTRR_CAP, Owner::Platform),
    rw(MTRR_DEF_TYPE, Owner::Platform),
];
const M_SYSENTER: [Msr; 3] = [
    rw(0x174, Owner::Backend),
    rw(0x175, Owner::Backend),
    rw(0x176, Owner::Backend),
];
const M_SYSCALL: [Msr; 5] = [
    rw(0xC000_0081, Owner::Backend),
    rw(0xC000_0082, Owner::Backend),
    rw(0xC000_0083, Owner::Backend),
    rw(0xC000_0084, Owner::Backend),
    M_EFER,
];
const M_LM: [Msr; 4] = [
    M_EFER,
    rw(0xC000_0100, Owner::Backend),
    rw(0xC000_0101, Owner::Backend),
    rw(0xC000_0102, Owner::Backend),
];
// A sample of the x2APIC range: ID and version read-only, TPR and SVR writable.
const M_X2APIC: [Msr; 5] = [
    M_APIC_BASE,
    ro(0x802, Owner::Lapic),
    ro(0x803, Owner::Lapic),
    rw(0x808, Owner::Lapic),
    rw(0x80F, Owner::Lapic),
];
const M_TSC_DEADLINE: Msr = rw(0x6E0, Owner::Lapic);

/// MSRs a guest may touch whatever CPUID says (Intel's architectural ones; on AMD hardware
/// some #GP, but answering them costs a guest nothing).
pub const ALWAYS: &[Msr] = &[
    ro(0x17, Owner::Platform), // PLATFORM_ID
    ro(0x3A, Owner::Platform), // FEATURE_CONTROL: locked, VMX off
    rw(0x8B, Owner::Platform), // BIOS_SIGN_ID: the microcode-revision protocol writes 0
    rw(MISC_ENABLE, Owner::Platform),
    // AMD's INT_PENDING_MSG: Linux reads it on family 0xF parts (QEMU's TCG CPU is one) to
    // look for C1E, which would stop the local APIC timer; as on Xen and KVM, there is none.
    ro(INT_PENDING_MSG, Owner::Platform),
];

pub const INT_PENDING_MSG: u32 = 0xC001_0055;

/// MSRs of features the policy hides, which must stay unanswered (#GP).
pub const NOT_OFFERED: &[u32] = &[
    0x3B,        // TSC_ADJUST
    0x48,        // SPEC_CTRL
    0x49,        // PRED_CMD
    0x10A,       // ARCH_CAPABILITIES
    0x10B,       // FLUSH_CMD
    0xCF,        // CORE_CAPABILITIES
    0xCE,        // PLATFORM_INFO: no CPUID faulting, no ratios to report
    0x179,       // MCG_CAP
    0x17A,       // MCG_STATUS
    0x17B,       // MCG_CTL
    0x400,       // MC0_CTL
    0x401,       // MC0_STATUS
    0x345,       // PERF_CAPABILITIES
    0xD90,       // BNDCFGS
    0xC001_011F, // VIRT_SPEC_CTRL
];

/// One exposed feature bit.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: Reg,
    pub bit: u8,
    pub name: &'static str,
    pub msrs: &'static [Msr],
}

const fn f(leaf: u32, subleaf: u32, reg: Reg, bit: u8, name: &'static str) -> Feature {
    Feature {
        leaf,
        subleaf,
        reg,
        bit,
        name,
        msrs: &[],
    }
}

const fn fm(
    leaf: u32,
    subleaf: u32,
    reg: Reg,
    bit: u8,
    name: &'static str,
    msrs: &'static [Msr],
) -> Feature {
    Feature {
        leaf,
        subleaf,
        reg,
        bit,
        name,
        msrs,
    }
}

use Reg::{Eax, Ebx, Ecx, Edx};
const E1: u32 = 0x8000_0001;

/// Every feature bit a guest may see (where the host has it, or Janus provides it).
pub const FEATURES: &[Feature] = &[
    // Leaf 1 EDX.
    f(1, 0, Edx, 0, "fpu"),
    f(1, 0, Edx, 1, "vme"),
    f(1, 0, Edx, 2, "de"),
    f(1, 0, Edx, 3, "pse"),
    fm(1, 0, Edx, 4, "tsc", &[M_TSC]),
    fm(1, 0, Edx, 5, "msr", &[M_TSC]),
    f(1, 0, Edx, 6, "pae"),
    f(1, 0, Edx, 8, "cx8"),
    fm(1, 0, Edx, 9, "apic", &[M_APIC_BASE]),
    fm(1, 0, Edx, 11, "sep", &M_SYSENTER),
    fm(1, 0, Edx, 12, "mtrr", &M_MTRR),
    f(1, 0, Edx, 13, "pge"),
    f(1, 0, Edx, 15, "cmov"),
    fm(1, 0, Edx, 16, "pat", &[M_PAT]),
    f(1, 0, Edx, 17, "pse36"),
    f(1, 0, Edx, 19, "clflush"),
    f(1, 0, Edx, 23, "mmx"),
    f(1, 0, Edx, 24, "fxsr"),
    f(1, 0, Edx, 25, "sse"),
    f(1, 0, Edx, 26, "sse2"),
    f(1, 0, Edx, 27, "ss"),
    f(1, 0, Edx, 28, "htt"),
    // Leaf 1 ECX.
    f(1, 0, Ecx, 0, "sse3"),
    f(1, 0, Ecx, 1, "pclmulqdq"),
    f(1, 0, Ecx, 9, "ssse3"),
    f(1, 0, Ecx, 12, "fma"),
    f(1, 0, Ecx, 13, "cx16"),
    f(1, 0, Ecx, 17, "pcid"),
    f(1, 0, Ecx, 19, "sse4_1"),
    f(1, 0, Ecx, 20, "sse4_2"),
    fm(1, 0, Ecx, 21, "x2apic", &M_X2APIC),
    f(1, 0, Ecx, 22, "movbe"),
    f(1, 0, Ecx, 23, "popcnt"),
    fm(1, 0, Ecx, 24, "tsc_deadline", &[M_TSC_DEADLINE]),
    f(1, 0, Ecx, 25, "aes"),
    f(1, 0, Ecx, 26, "xsave"),
    f(1, 0, Ecx, 27, "osxsave"),
    f(1, 0, Ecx, 28, "avx"),
    f(1, 0, Ecx, 29, "f16c"),
    f(1, 0, Ecx, 30, "rdrand"),
    f(1, 0, Ecx, 31, "hypervisor"),
    // Leaf 7.0 EBX.
    f(7, 0, Ebx, 0, "fsgsbase"),
    f(7, 0, Ebx, 3, "bmi1"),
    f(7, 0, Ebx, 4, "hle"),
    f(7, 0, Ebx, 5, "avx2"),
    f(7, 0, Ebx, 6, "fdp_excptn_only"),
    f(7, 0, Ebx, 7, "smep"),
    f(7, 0, Ebx, 8, "bmi2"),
    f(7, 0, Ebx, 9, "erms"),
    f(7, 0, Ebx, 10, "invpcid"),
    f(7, 0, Ebx, 11, "rtm"),
    f(7, 0, Ebx, 13, "zero_fcs_fds"),
    f(7, 0, Ebx, 16, "avx512f"),
    f(7, 0, Ebx, 17, "avx512dq"),
    f(7, 0, Ebx, 18, "rdseed"),
    f(7, 0, Ebx, 19, "adx"),
    f(7, 0, Ebx, 20, "smap"),
    f(7, 0, Ebx, 21, "avx512ifma"),
    f(7, 0, Ebx, 23, "clflushopt"),
    f(7, 0, Ebx, 24, "clwb"),
    f(7, 0, Ebx, 26, "avx512pf"),
    f(7, 0, Ebx, 27, "avx512er"),
    f(7, 0, Ebx, 28, "avx512cd"),
    f(7, 0, Ebx, 29, "sha_ni"),
    f(7, 0, Ebx, 30, "avx512bw"),
    f(7, 0, Ebx, 31, "avx512vl"),
    // Leaf 7.0 ECX.
    f(7, 0, Ecx, 0, "prefetchwt1"),
    f(7, 0, Ecx, 1, "avx512vbmi"),
    f(7, 0, Ecx, 2, "umip"),
    f(7, 0, Ecx, 3, "pku"),
    f(7, 0, Ecx, 4, "ospke"),
    f(7, 0, Ecx, 6, "avx512_vbmi2"),
    f(7, 0, Ecx, 8, "gfni"),
    f(7, 0, Ecx, 9, "vaes"),
    f(7, 0, Ecx, 10, "vpclmulqdq"),
    f(7, 0, Ecx, 11, "avx512_vnni"),
    f(7, 0, Ecx, 12, "avx512_bitalg"),
    f(7, 0, Ecx, 14, "avx512_vpopcntdq"),
    f(7, 0, Ecx, 25, "cldemote"),
    f(7, 0, Ecx, 27, "movdiri"),
    f(7, 0, Ecx, 28, "movdir64b"),
    // Leaf 7.0 EDX.
    f(7, 0, Edx, 2, "avx512_4vnniw"),
    f(7, 0, Edx, 3, "avx512_4fmaps"),
    f(7, 0, Edx, 4, "fsrm"),
    f(7, 0, Edx, 8, "avx512_vp2intersect"),
    f(7, 0, Edx, 10, "md_clear"),
    f(7, 0, Edx, 11, "rtm_always_abort"),
    f(7, 0, Edx, 14, "serialize"),
    f(7, 0, Edx, 16, "tsxldtrk"),
    f(7, 0, Edx, 23, "avx512_fp16"),
    // Leaf 7.1.
    f(7, 1, Eax, 4, "avx_vnni"),
    f(7, 1, Eax, 5, "avx512_bf16"),
    f(7, 1, Eax, 7, "cmpccxadd"),
    f(7, 1, Eax, 10, "fzrm"),
    f(7, 1, Eax, 11, "fsrs"),
    f(7, 1, Eax, 12, "fsrc"),
    f(7, 1, Eax, 23, "avx_ifma"),
    f(7, 1, Edx, 4, "avx_vnni_int8"),
    f(7, 1, Edx, 5, "avx_ne_convert"),
    // Leaf 0xD.1: the user-state XSAVE variants (XSAVES and XFD are out).
    f(0xD, 1, Eax, 0, "xsaveopt"),
    f(0xD, 1, Eax, 1, "xsavec"),
    f(0xD, 1, Eax, 2, "xgetbv1"),
    // 0x8000_0001 EDX: AMD mirrors leaf 1's low bits here.
    f(E1, 0, Edx, 0, "fpu"),
    f(E1, 0, Edx, 1, "vme"),
    f(E1, 0, Edx, 2, "de"),
    f(E1, 0, Edx, 3, "pse"),
    fm(E1, 0, Edx, 4, "tsc", &[M_TSC]),
    fm(E1, 0, Edx, 5, "msr", &[M_TSC]),
    f(E1, 0, Edx, 6, "pae"),
    f(E1, 0, Edx, 8, "cx8"),
    fm(E1, 0, Edx, 9, "apic", &[M_APIC_BASE]),
    fm(E1, 0, Edx, 11, "syscall", &M_SYSCALL),
    fm(E1, 0, Edx, 12, "mtrr", &M_MTRR),
    f(E1, 0, Edx, 13, "pge"),
    f(E1, 0, Edx, 15, "cmov"),
    fm(E1, 0, Edx, 16, "pat", &[M_PAT]),
    f(E1, 0, Edx, 17, "pse36"),
    fm(E1, 0, Edx, 20, "nx", &[M_EFER]),
    f(E1, 0, Edx, 22, "mmxext"),
    f(E1, 0, Edx, 23, "mmx"),
    f(E1, 0, Edx, 24, "fxsr"),
    fm(E1, 0, Edx, 25, "fxsr_opt", &[M_EFER]),
    f(E1, 0, Edx, 26, "pdpe1gb"),
    fm(E1, 0, Edx, 29, "lm", &M_LM),
    f(E1, 0, Edx, 30, "3dnowext"),
    f(E1, 0, Edx, 31, "3dnow"),
    // 0x8000_0001 ECX.
    f(E1, 0, Ecx, 0, "lahf_lm"),
    f(E1, 0, Ecx, 4, "cr8_legacy"),
    f(E1, 0, Ecx, 5, "abm"),
    f(E1, 0, Ecx, 6, "sse4a"),
    f(E1, 0, Ecx, 7, "misalignsse"),
    f(E1, 0, Ecx, 8, "3dnowprefetch"),
    f(E1, 0, Ecx, 11, "xop"),
    f(E1, 0, Ecx, 16, "fma4"),
    f(E1, 0, Ecx, 21, "tbm"),
    // 0x8000_0007 EDX: the TSC is the host's, unscaled, so it is invariant where the host's is.
    f(0x8000_0007, 0, Edx, 8, "invariant_tsc"),
    // 0x8000_0008 EBX: instructions and "not affected" statements only.
    f(0x8000_0008, 0, Ebx, 0, "clzero"),
    f(0x8000_0008, 0, Ebx, 2, "xsaveerptr"),
    f(0x8000_0008, 0, Ebx, 9, "wbnoinvd"),
    f(0x8000_0008, 0, Ebx, 20, "efer_lmsle_unsupported"),
    f(0x8000_0008, 0, Ebx, 26, "ssb_no"),
    f(0x8000_0008, 0, Ebx, 29, "btc_no"),
];

/// The registers under the allow-list; every other register passes as its leaf's code in
/// `cpuid::filter` decides.
pub const GOVERNED: &[(u32, u32, Reg)] = &[
    (1, 0, Ecx),
    (1, 0, Edx),
    (7, 0, Ebx),
    (7, 0, Ecx),
    (7, 0, Edx),
    (7, 1, Eax),
    (7, 1, Ebx),
    (7, 1, Ecx),
    (7, 1, Edx),
    (0xD, 1, Eax),
    (E1, 0, Ecx),
    (E1, 0, Edx),
    (0x8000_0007, 0, Eax),
    (0x8000_0007, 0, Ebx),
    (0x8000_0007, 0, Ecx),
    (0x8000_0007, 0, Edx),
    (0x8000_0008, 0, Ebx),
];

/// Leaves that describe only hidden features or the host itself: all zero.
pub const fn hidden_leaf(leaf: u32, subleaf: u32) -> bool {
    matches!(
        leaf,
        // MONITOR/MWAIT, thermal/power, RDT monitoring and allocation, SGX, PT, Key Locker,
        // hybrid, PCONFIG, arch LBR, AMX tiles, arch perfmon extensions.
        5 | 6 | 0xA | 0xF | 0x10 | 0x12 | 0x14 | 0x19 | 0x1A | 0x1B | 0x1C | 0x1D | 0x1E | 0x20
            | 0x23
            // SVM, IBS, LWP, AMD topology, SEV, AMD PQoS, extended features 2 (AutoIBRS
            // and speculation bits), PerfMonV2, memory encryption, extended topology.
            | 0x8000_000A
            | 0x8000_001B
            | 0x8000_001C
            | 0x8000_001E
            | 0x8000_001F
            | 0x8000_0020
            | 0x8000_0021
            | 0x8000_0022
            | 0x8000_0023
            | 0x8000_0026
    ) || (leaf == 7 && subleaf >= 2)
}

/// The bits of `(leaf, subleaf, reg)` a guest may see; `None` when the register is not
/// governed by the allow-list.
pub const fn mask(leaf: u32, subleaf: u32, reg: Reg) -> Option<u32> {
    let mut governed = false;
    let mut i = 0;
    while i < GOVERNED.len() {
        let (l, s, r) = GOVERNED[i];
        if l == leaf && s == subleaf && r.index() == reg.index() {
            governed = true;
        }
        i += 1;
    }
    if !governed {
        return None;
    }
    let mut m = 0u32;
    let mut i = 0;
    while i < FEATURES.len() {
        let f = &FEATURES[i];
        if f.leaf == leaf && f.subleaf == subleaf && f.reg.index() == reg.index() {
            m |= 1 << f.bit;
        }
        i += 1;
    }
    Some(m)
}

/// `host` with every governed register cut down to the allow-list.
pub fn apply(leaf: u32, subleaf: u32, host: [u32; 4]) -> [u32; 4] {
    let mut out = host;
    for reg in [Eax, Ebx, Ecx, Edx] {
        if let Some(m) = mask(leaf, subleaf, reg) {
            out[reg.index()] &= m;
        }
    }
    out
}

#[cfg(test)]
#[path = "policy/tests.rs"]
mod tests;
