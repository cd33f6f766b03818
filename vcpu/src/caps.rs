//! Which backend this CPU supports and what it can do, from CPUID and the VMX capability MSRs.
//!
//! Parsing is pure (host-tested with the Bochs values in `platform.md`); only [`detect`] touches
//! the CPU, and it reads a capability MSR only when CPUID or another capability MSR says it
//! exists (Bochs' core2 model #GPs on 0x48C).

use core::fmt;

/// The backend to use and its capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Vendor {
    Vmx(VmxCaps),
    Svm(SvmCaps),
}

/// Raw VMX capability MSRs and what follows from them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct VmxCaps {
    pub basic: u64,
    /// Allowed-0 (low half) / allowed-1 (high half), from the TRUE MSRs when VMX_BASIC[55].
    pub pin: u64,
    pub proc: u64,
    /// Zero when the secondary controls do not exist.
    pub proc2: u64,
    pub exit: u64,
    pub entry: u64,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    /// Zero when neither EPT nor VPID can be enabled.
    pub ept_vpid: u64,
}

/// SVM features from CPUID 0x8000_000A.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SvmCaps {
    pub revision: u32,
    /// Number of ASIDs: valid guest ASIDs are 1..asids.
    pub asids: u32,
    /// CPUID 0x8000_000A EDX.
    pub features: u32,
}

const PROC2_EPT: u64 = 1 << (32 + 1);
const PROC2_VPID: u64 = 1 << (32 + 5);
const PROC2_UG: u64 = 1 << (32 + 7);

impl VmxCaps {
    pub fn revision(&self) -> u32 {
        (self.basic & 0x7fff_ffff) as u32
    }
    pub fn true_controls(&self) -> bool {
        self.basic & (1 << 55) != 0
    }
    pub fn ept(&self) -> bool {
        // Besides the control, the 4-level walk (bit 6) and write-back type (bit 14) we use.
        self.proc2 & PROC2_EPT != 0
            && self.ept_vpid & (1 << 6) != 0
            && self.ept_vpid & (1 << 14) != 0
    }
    pub fn unrestricted_guest(&self) -> bool {
        self.ept() && self.proc2 & PROC2_UG != 0
    }
    pub fn vpid(&self) -> bool {
        // INVVPID with single-context (41) is what migration needs.
        self.proc2 & PROC2_VPID != 0
            && self.ept_vpid & (1 << 32) != 0
            && self.ept_vpid & (1 << 41) != 0
    }
    /// INVEPT single-context (bit 25) or only all-context (bit 26).
    pub fn invept_single(&self) -> bool {
        self.ept_vpid & (1 << 20) != 0 && self.ept_vpid & (1 << 25) != 0
    }
    /// 2 MiB EPT pages.
    pub fn ept_2m(&self) -> bool {
        self.ept_vpid & (1 << 16) != 0
    }
}

impl SvmCaps {
    pub fn npt(&self) -> bool {
        self.features & 1 != 0
    }
    pub fn nrip_save(&self) -> bool {
        self.features & (1 << 3) != 0
    }
    pub fn flush_by_asid(&self) -> bool {
        self.features & (1 << 6) != 0
    }
    pub fn decode_assists(&self) -> bool {
        self.features & (1 << 7) != 0
    }
    pub fn vgif(&self) -> bool {
        self.features & (1 << 16) != 0
    }
    /// Whether external interrupts reach the guest through V_IRQ rather than EVENTINJ. Both
    /// are architectural; EVENTINJ is the default. An SVM without NRIP save is QEMU's TCG
    /// emulation (every AMD CPU since 2009 has it, and so does Bochs), whose EVENTINJ
    /// interrupt can be delivered a second time (see `svm::SvmVcpu::offer`).
    pub fn interrupts_via_v_irq(&self) -> bool {
        !self.nrip_save()
    }
}

impl Vendor {
    /// Nested table format of this backend.
    pub fn nested_format(&self) -> crate::NestedFormat {
        match self {
            Vendor::Vmx(_) => crate::NestedFormat::Ept,
            Vendor::Svm(_) => crate::NestedFormat::Npt,
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yn = |b: bool| if b { "yes" } else { "no" };
        match self {
            Vendor::Vmx(c) => write!(
                f,
                "Intel VMX rev {:#x}: EPT {} (2M {}), unrestricted guest {}, VPID {}",
                c.revision(),
                yn(c.ept()),
                yn(c.ept_2m()),
                yn(c.unrestricted_guest()),
                yn(c.vpid())
            ),
            Vendor::Svm(c) => write!(
                f,
                "AMD SVM rev {}: NPT {}, NRIP save {}, {} ASIDs, flush-by-ASID {}, decode assists {}, interrupts by {}",
                c.revision,
                yn(c.npt()),
                yn(c.nrip_save()),
                c.asids,
                yn(c.flush_by_asid()),
                yn(c.decode_assists()),
                if c.interrupts_via_v_irq() {
                    "V_IRQ"
                } else {
                    "EVENTINJ"
                }
            ),
        }
    }
}

/// Parses CPUID 0x8000_000A (EAX, EBX, EDX).
pub fn svm_caps_from_cpuid(eax: u32, ebx: u32, edx: u32) -> SvmCaps {
    SvmCaps {
        revision: eax & 0xff,
        asids: ebx,
        features: edx,
    }
}

/// The backend this CPU supports, preferring the CPU's own vendor's extension; `None` if
/// neither is present (or both are compiled out). Reads MSRs: call at CPL 0.
pub fn detect() -> Option<Vendor> {
    use x86::cpuid::native_cpuid::cpuid_count;
    let leaf1 = cpuid_count(1, 0);
    let max_ext = cpuid_count(0x8000_0000, 0).eax;
    let ext1 = if max_ext >= 0x8000_0001 {
        cpuid_count(0x8000_0001, 0).ecx
    } else {
        0
    };
    if cfg!(feature = "vmx") && leaf1.ecx & (1 << 5) != 0 {
        return Some(Vendor::Vmx(read::vmx_caps()));
    }
    if cfg!(feature = "svm") && ext1 & (1 << 2) != 0 && max_ext >= 0x8000_000A {
        let r = cpuid_count(0x8000_000A, 0);
        return Some(Vendor::Svm(svm_caps_from_cpuid(r.eax, r.ebx, r.edx)));
    }
    None
}

/// Whether the VMX capability MSRs say EPT or VPID can be turned on, so 0x48C exists.
pub fn vmx_has_ept_vpid_msr(proc: u64, proc2: u64) -> bool {
    proc & (1 << 63) != 0 && proc2 & (PROC2_EPT | PROC2_VPID) != 0
}

mod read {
    // UNSAFETY: reads the VMX capability MSRs, which exist whenever CPUID.1:ECX.VMX is set;
    // the optional ones are read only after the MSRs that announce them.
    #![expect(unsafe_code)]
    use super::VmxCaps;
    use x86::msr::*;

    fn rdmsr(msr: u32) -> u64 {
        // SAFETY: only called with MSRs whose existence the caller checked (see module note);
        // we run at CPL 0.
        unsafe { x86::msr::rdmsr(msr) }
    }

    pub(super) fn vmx_caps() -> VmxCaps {
        let basic = rdmsr(IA32_VMX_BASIC);
        let tru = basic & (1 << 55) != 0;
        let pick = |t: u32, n: u32| rdmsr(if tru { t } else { n });
        let proc = pick(IA32_VMX_TRUE_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS);
        let proc2 = if proc & (1 << 63) != 0 {
            rdmsr(IA32_VMX_PROCBASED_CTLS2)
        } else {
            0
        };
        let ept_vpid = if super::vmx_has_ept_vpid_msr(proc, proc2) {
            rdmsr(IA32_VMX_EPT_VPID_CAP)
        } else {
            0
        };
        VmxCaps {
            basic,
            pin: pick(IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_PINBASED_CTLS),
            proc,
            proc2,
            exit: pick(IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_EXIT_CTLS),
            entry: pick(IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_ENTRY_CTLS),
            misc: rdmsr(IA32_VMX_MISC),
            cr0_fixed0: rdmsr(IA32_VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(IA32_VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(IA32_VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(IA32_VMX_CR4_FIXED1),
            ept_vpid,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Bochs corei7_skylake_x (platform.md).
    pub(crate) fn skylake() -> VmxCaps {
        VmxCaps {
            basic: 0x00d8_1000_0000_002b,
            pin: 0x7f_0000_0016,
            proc: 0xf7f9_fffe_0400_6172,
            proc2: 0x0217_7fff_0000_0000,
            exit: 0x7f_ffff_0003_6dfb,
            entry: 0xffff_0000_11fb,
            misc: 0x6004_01e0,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x37_27ff,
            ept_vpid: 0xf01_0633_4141,
        }
    }

    #[test]
    fn skylake_caps() {
        let c = skylake();
        assert_eq!(c.revision(), 0x2b);
        assert!(c.true_controls() && c.ept() && c.unrestricted_guest() && c.vpid());
        assert!(c.invept_single() && c.ept_2m());
        assert!(vmx_has_ept_vpid_msr(c.proc, c.proc2));
        let s = format!("{}", Vendor::Vmx(c));
        assert!(
            s.contains("EPT yes") && s.contains("unrestricted guest yes"),
            "{s}"
        );
    }

    #[test]
    fn core2_without_secondary_controls_never_reads_ept_msr() {
        // Penryn: no secondary-controls bit in the allowed-1 half of the primary controls.
        assert!(!vmx_has_ept_vpid_msr(0x7ff9_fffe_0401_e172, 0));
        assert!(!vmx_has_ept_vpid_msr(
            0xf7f9_fffe_0401_e172,
            0x0000_0000_0000_0000
        ));
        let c = VmxCaps {
            basic: 0x2b,
            proc2: 0,
            ept_vpid: 0,
            ..skylake()
        };
        assert!(!c.ept() && !c.unrestricted_guest() && !c.vpid());
    }

    #[test]
    fn svm_caps_qemu_and_bochs() {
        let q = svm_caps_from_cpuid(1, 0x10, 0x1001_0001);
        assert!(q.npt() && !q.nrip_save() && q.vgif());
        assert_eq!(q.asids, 16);
        let b = svm_caps_from_cpuid(1, 0x8000, 0x44f);
        assert!(b.npt() && b.nrip_save() && b.flush_by_asid() && !b.decode_assists());
        let s = format!("{}", Vendor::Svm(q));
        assert!(s.contains("NRIP save no") && s.contains("16 ASIDs"), "{s}");
        assert!(
            q.interrupts_via_v_irq() && s.ends_with("interrupts by V_IRQ"),
            "{s}"
        );
        assert!(!b.interrupts_via_v_irq());
        assert!(format!("{}", Vendor::Svm(b)).ends_with("interrupts by EVENTINJ"));
    }
}
