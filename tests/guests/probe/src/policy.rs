//! The CPUID policy seen from inside: for every feature bit the VM advertises, the MSRs that
//! bit implies on real hardware read without #GP, and writing back what was read succeeds.
//! The list is the architecture's, not Janus's table, so a feature the hypervisor advertises
//! without its MSRs (from the host CPU, say) fails here.

use crate::arch;
use crate::checks::check;
use crate::say;

#[derive(Clone, Copy)]
enum Access {
    /// Read-only (or writes not expected of a guest).
    R,
    /// Read, then write back the value read.
    Rw,
    /// Write-only command register: write 0, which commands nothing.
    W0,
}
use Access::{R, Rw, W0};

/// A feature bit: leaf, sub-leaf, register (0 = EAX .. 3 = EDX), bit, name, MSRs.
type Implied = (u32, u32, usize, u8, &'static str, &'static [(u32, Access)]);

const SPEC_CTRL: (u32, Access) = (0x48, Rw);
const PRED_CMD: (u32, Access) = (0x49, W0);
const TSC_AUX: (u32, Access) = (0xC000_0103, Rw);
const CET: [(u32, Access); 2] = [(0x6A0, Rw), (0x6A2, Rw)];

const IMPLIED: &[Implied] = &[
    (1, 0, 3, 4, "tsc", &[(0x10, R)]),
    (1, 0, 3, 5, "msr", &[(0x10, R)]),
    (1, 0, 3, 7, "mce", &[(0x0, R), (0x1, R)]),
    (1, 0, 3, 9, "apic", &[(0x1B, Rw)]),
    (1, 0, 3, 11, "sep", &[(0x174, Rw), (0x175, Rw), (0x176, Rw)]),
    (1, 0, 3, 12, "mtrr", &[(0xFE, R), (0x2FF, Rw)]),
    (1, 0, 3, 16, "pat", &[(0x277, Rw)]),
    (1, 0, 3, 21, "ds", &[(0x600, Rw)]),
    (1, 0, 3, 22, "acpi", &[(0x19A, Rw), (0x19B, Rw), (0x19C, R)]),
    (1, 0, 2, 7, "est", &[(0x198, R), (0x199, Rw)]),
    (1, 0, 2, 11, "sdbg", &[(0xC80, Rw)]),
    (1, 0, 2, 15, "pdcm", &[(0x345, R)]),
    (1, 0, 2, 18, "dca", &[(0x1F8, R)]),
    (
        1,
        0,
        2,
        21,
        "x2apic",
        &[(0x802, R), (0x803, R), (0x808, Rw)],
    ),
    (1, 0, 2, 24, "tsc_deadline", &[(0x6E0, R)]),
    (6, 0, 0, 0, "dts", &[(0x19C, R)]),
    (6, 0, 2, 0, "aperfmperf", &[(0xE7, R), (0xE8, R)]),
    (7, 0, 1, 1, "tsc_adjust", &[(0x3B, Rw)]),
    (7, 0, 1, 14, "mpx", &[(0xD90, Rw)]),
    (7, 0, 1, 25, "intel_pt", &[(0x570, Rw), (0x571, Rw)]),
    (7, 0, 2, 5, "waitpkg", &[(0xE1, Rw)]),
    (7, 0, 2, 7, "cet_ss", &CET),
    (7, 0, 2, 22, "rdpid", &[TSC_AUX]),
    (7, 0, 2, 31, "pks", &[(0x6E1, Rw)]),
    (7, 0, 3, 9, "srbds_ctrl", &[(0x123, Rw)]),
    (7, 0, 3, 13, "tsx_force_abort", &[(0x10F, Rw)]),
    (7, 0, 3, 20, "cet_ibt", &CET),
    (7, 0, 3, 26, "ibrs_ibpb", &[SPEC_CTRL, PRED_CMD]),
    (7, 0, 3, 27, "stibp", &[SPEC_CTRL]),
    (7, 0, 3, 28, "l1d_flush", &[(0x10B, W0)]),
    (7, 0, 3, 29, "arch_capabilities", &[(0x10A, R)]),
    (7, 0, 3, 30, "core_capabilities", &[(0xCF, R)]),
    (7, 0, 3, 31, "ssbd", &[SPEC_CTRL]),
    (0xD, 1, 0, 3, "xsaves", &[(0xDA0, Rw)]),
    (0xD, 1, 0, 4, "xfd", &[(0x1C4, Rw), (0x1C5, Rw)]),
    (
        0x8000_0001,
        0,
        3,
        11,
        "syscall",
        &[
            (0xC000_0081, Rw),
            (0xC000_0082, Rw),
            (0xC000_0083, Rw),
            (0xC000_0084, Rw),
        ],
    ),
    (0x8000_0001, 0, 3, 20, "nx", &[(0xC000_0080, Rw)]),
    (0x8000_0001, 0, 3, 27, "rdtscp", &[TSC_AUX]),
    (
        0x8000_0001,
        0,
        3,
        29,
        "lm",
        &[
            (0xC000_0080, Rw),
            (0xC000_0100, Rw),
            (0xC000_0101, Rw),
            (0xC000_0102, Rw),
        ],
    ),
    (
        0x8000_0001,
        0,
        2,
        9,
        "osvw",
        &[(0xC001_0140, Rw), (0xC001_0141, Rw)],
    ),
    (0x8000_0001, 0, 2, 10, "ibs", &[(0xC001_1030, Rw)]),
    (0x8000_0001, 0, 2, 13, "wdt", &[(0xC001_0074, Rw)]),
    (0x8000_0001, 0, 2, 15, "lwp", &[(0xC000_0105, Rw)]),
    (0x8000_0001, 0, 2, 19, "nodeid", &[(0xC001_100C, R)]),
    (
        0x8000_0001,
        0,
        2,
        23,
        "perfctr_core",
        &[(0xC001_0200, Rw), (0xC001_0201, Rw)],
    ),
    (0x8000_0001, 0, 2, 26, "bpext", &[(0xC001_1027, Rw)]),
    (0x8000_0001, 0, 2, 27, "perf_tsc", &[(0xC001_0280, R)]),
    (0x8000_0007, 0, 1, 3, "smca", &[(0xC000_2000, Rw)]),
    (
        0x8000_0007,
        0,
        3,
        7,
        "hw_pstate",
        &[(0xC001_0061, R), (0xC001_0062, Rw)],
    ),
    (0x8000_0008, 0, 1, 1, "irperf", &[(0xC000_00E9, R)]),
    (0x8000_0008, 0, 1, 12, "amd_ibpb", &[PRED_CMD]),
    (0x8000_0008, 0, 1, 14, "amd_ibrs", &[SPEC_CTRL]),
    (0x8000_0008, 0, 1, 15, "amd_stibp", &[SPEC_CTRL]),
    (0x8000_0008, 0, 1, 24, "amd_ssbd", &[SPEC_CTRL]),
    (0x8000_0008, 0, 1, 25, "virt_ssbd", &[(0xC001_011F, Rw)]),
    (0x8000_0008, 0, 1, 27, "cppc", &[(0xC001_02B0, R)]),
];

struct Tally {
    features: u32,
    msrs: u32,
    failures: u32,
    first: Option<(&'static str, u32, &'static str)>,
}

impl Tally {
    fn access(&mut self, feature: &'static str, msr: u32, access: Access) {
        self.msrs += 1;
        let mut value = 0;
        let read = match access {
            W0 => None,
            R | Rw => arch::catching(2, || value = arch::rdmsr(msr)),
        };
        let write = match access {
            R => None,
            Rw if read.is_some() => None,
            Rw => arch::catching(2, || arch::wrmsr(msr, value)),
            W0 => arch::catching(2, || arch::wrmsr(msr, 0)),
        };
        let failed = match (read, write) {
            (Some(v), _) => Some(("read", v)),
            (None, Some(v)) => Some(("write", v)),
            (None, None) => None,
        };
        if let Some((what, vector)) = failed {
            say!("policy: {feature}: MSR {msr:#x} {what} raised vector {vector}");
            self.failures += 1;
            self.first.get_or_insert((feature, msr, what));
        }
    }
}

/// The machine-check bank MSRs MCG_CAP announces; the variable MTRRs MTRRcap announces.
fn counted(t: &mut Tally, leaf1_edx: u32) {
    if leaf1_edx & (1 << 14) != 0 {
        let mut cap = 0;
        if arch::catching(2, || cap = arch::rdmsr(0x179)).is_none() {
            t.access("mca", 0x17A, Rw);
            if cap & (1 << 8) != 0 {
                t.access("mca", 0x17B, Rw);
            }
            for bank in 0..(cap & 0xFF) as u32 {
                t.access("mca", 0x400 + 4 * bank, Rw);
                t.access("mca", 0x401 + 4 * bank, R);
                t.access("mca", 0x401 + 4 * bank, W0);
            }
        }
        t.access("mca", 0x179, R);
    }
    if leaf1_edx & (1 << 12) != 0 {
        let mut cap = 0;
        if arch::catching(2, || cap = arch::rdmsr(0xFE)).is_none() {
            for n in 0..(cap & 0xFF) as u32 {
                t.access("mtrr", 0x200 + 2 * n, Rw);
                t.access("mtrr", 0x201 + 2 * n, Rw);
            }
            if cap & (1 << 8) != 0 {
                for msr in [0x250, 0x258, 0x259, 0x268, 0x26F] {
                    t.access("mtrr", msr, Rw);
                }
            }
        }
    }
}

pub fn checks(intel: bool) {
    let max = arch::cpuid(0, 0)[0];
    let max_ext = arch::cpuid(0x8000_0000, 0)[0];
    let mut t = Tally {
        features: 0,
        msrs: 0,
        failures: 0,
        first: None,
    };
    for &(leaf, sub, reg, bit, name, msrs) in IMPLIED {
        let present = if leaf >= 0x8000_0000 {
            leaf <= max_ext
        } else {
            leaf <= max
        };
        if !present || arch::cpuid(leaf, sub)[reg] & (1 << bit) == 0 {
            continue;
        }
        t.features += 1;
        for &(msr, access) in msrs {
            t.access(name, msr, access);
        }
    }
    counted(&mut t, arch::cpuid(1, 0)[3]);
    // Intel's architectural MISC_ENABLE exists whatever CPUID says.
    if intel {
        t.access("misc_enable", 0x1A0, Rw);
    }
    say!(
        "policy: {} advertised features with MSRs, {} MSR accesses",
        t.features,
        t.msrs
    );
    let (name, msr, what) = t.first.unwrap_or(("", 0, ""));
    check(
        "cpuid-features-imply-working-msrs",
        t.failures == 0 && t.features > 0,
        format_args!("{} failures, first {name} MSR {msr:#x} {what}", t.failures),
    );
}

/// XCR0 is the guest's: a value it sets survives the exits that follow, and CPUID leaf 0xD
/// describes the state it enables (the size of an XSAVE area for exactly those components).
pub fn xsave_checks() {
    if arch::cpuid(1, 0)[2] & (1 << 26) == 0 || arch::cpuid(0, 0)[0] < 0xD {
        check("xsave-follows-xcr0", true, format_args!("no XSAVE"));
        return;
    }
    arch::enable_osxsave();
    let supported = u64::from(arch::cpuid(0xD, 0)[0]);
    let avx = supported & 4;
    // The end of the last enabled component: legacy area and header, or AVX's.
    let want = |xcr0: u64| {
        if xcr0 & 4 != 0 {
            let [size, offset, ..] = arch::cpuid(0xD, 2);
            (offset + size).max(576)
        } else {
            576
        }
    };
    arch::xsetbv(3);
    let small = arch::cpuid(0xD, 0)[1];
    let kept_small = arch::xgetbv();
    arch::xsetbv(3 | avx);
    // CPUID exits to the hypervisor; XCR0 must come back as the guest left it.
    let large = arch::cpuid(0xD, 0)[1];
    let kept_large = arch::xgetbv();
    check(
        "xsave-follows-xcr0",
        small == 576 && kept_small == 3 && large == want(3 | avx) && kept_large == 3 | avx,
        format_args!(
            "xcr0 3: size {small}, read back {kept_small:#x}; xcr0 {:#x}: size {large} (want {}), read back {kept_large:#x}",
            3 | avx,
            want(3 | avx)
        ),
    );
}
