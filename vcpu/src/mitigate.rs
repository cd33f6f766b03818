//! Speculative-execution mitigations around guest entry and exit, chosen once at boot from what
//! the host CPU says of itself (CPUID leaf 7 and `IA32_ARCH_CAPABILITIES`), the way Xen and KVM
//! choose them:
//! - **IBPB** when a pCPU switches from one VM's vCPU to another VM's, so that one guest's
//!   branch-predictor training does not steer the next (Spectre v2 across guests);
//! - **RSB refill** after every VM exit, so that return predictions the guest left do not
//!   steer the hypervisor (SpectreRSB);
//! - **L1D flush** before VMX entry on parts affected by L1TF, unless the CPU says entry needs
//!   none;
//! - **VERW** before entry on MDS-affected parts (when the L1D flush does not already clear the
//!   buffers).
//!
//! The choice is pure and host-tested; the instructions are in [`crate::hw`].

use core::sync::atomic::{AtomicU8, Ordering};

/// What the host CPU reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFacts {
    pub intel: bool,
    /// IBPB through `IA32_PRED_CMD` (CPUID.7.0:EDX[26] on Intel, 0x80000008:EBX[12] on AMD).
    pub ibpb: bool,
    /// `IA32_FLUSH_CMD` (CPUID.7.0:EDX[28]).
    pub flush_l1d: bool,
    /// VERW clears the CPU buffers (CPUID.7.0:EDX[10]).
    pub md_clear: bool,
    /// `IA32_ARCH_CAPABILITIES`, where CPUID.7.0:EDX[29] says it exists.
    pub arch_caps: Option<u64>,
}

const ARCH_CAP_RDCL_NO: u64 = 1 << 0;
const ARCH_CAP_SKIP_L1DFL_VMENTRY: u64 = 1 << 3;
const ARCH_CAP_MDS_NO: u64 = 1 << 5;

/// The mitigations in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mitigations {
    pub ibpb_on_switch: bool,
    pub rsb_fill_on_exit: bool,
    pub l1d_flush_on_entry: bool,
    pub verw_on_entry: bool,
}

impl Mitigations {
    /// What a CPU with `f` needs (all off with `off`, for benchmarks).
    pub fn choose(f: &CpuFacts, off: bool) -> Self {
        if off {
            return Mitigations::default();
        }
        Self::needed(f)
    }

    /// Everything this CPU can do, needed or not (`janus.mitigations=all`): VERW runs on any
    /// CPU, so the entry path is exercised where no emulator reports the bugs.
    pub fn all(f: &CpuFacts) -> Self {
        Mitigations {
            ibpb_on_switch: f.ibpb,
            rsb_fill_on_exit: true,
            l1d_flush_on_entry: f.flush_l1d,
            verw_on_entry: !f.flush_l1d,
        }
    }

    fn needed(f: &CpuFacts) -> Self {
        // Without ARCH_CAPABILITIES an Intel part is presumed affected, as Linux presumes.
        let caps = f.arch_caps.unwrap_or(0);
        let l1tf = f.intel && caps & ARCH_CAP_RDCL_NO == 0;
        let l1d_flush_on_entry = l1tf && f.flush_l1d && caps & ARCH_CAP_SKIP_L1DFL_VMENTRY == 0;
        let mds = f.intel && caps & ARCH_CAP_MDS_NO == 0;
        Mitigations {
            ibpb_on_switch: f.ibpb,
            rsb_fill_on_exit: true,
            l1d_flush_on_entry,
            // The L1D flush on a part with MD_CLEAR clears the buffers as well.
            verw_on_entry: mds && f.md_clear && !l1d_flush_on_entry,
        }
    }

    fn bits(self) -> u8 {
        u8::from(self.ibpb_on_switch)
            | u8::from(self.rsb_fill_on_exit) << 1
            | u8::from(self.l1d_flush_on_entry) << 2
            | u8::from(self.verw_on_entry) << 3
    }

    fn from_bits(b: u8) -> Self {
        Mitigations {
            ibpb_on_switch: b & 1 != 0,
            rsb_fill_on_exit: b & 2 != 0,
            l1d_flush_on_entry: b & 4 != 0,
            verw_on_entry: b & 8 != 0,
        }
    }
}

impl core::fmt::Display for Mitigations {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let names = [
            (self.ibpb_on_switch, "IBPB on VM switch"),
            (self.rsb_fill_on_exit, "RSB refill on exit"),
            (self.l1d_flush_on_entry, "L1D flush on entry"),
            (self.verw_on_entry, "VERW on entry"),
        ];
        let mut any = false;
        for (on, name) in names {
            if on {
                f.write_str(if any { ", " } else { "" })?;
                f.write_str(name)?;
                any = true;
            }
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// Sets the mitigations every pCPU applies (once, at boot, before any vCPU runs).
pub fn set(m: Mitigations) {
    ACTIVE.store(m.bits(), Ordering::Release);
}

pub fn active() -> Mitigations {
    Mitigations::from_bits(ACTIVE.load(Ordering::Acquire))
}

/// Right before a VM entry.
pub(crate) fn before_entry() {
    let m = active();
    if m.l1d_flush_on_entry {
        // SAFETY: chosen only where the CPU has the flush command.
        #[expect(unsafe_code)]
        unsafe {
            crate::hw::flush_l1d()
        }
    } else if m.verw_on_entry {
        crate::hw::verw();
    }
}

/// Right after a VM exit.
pub(crate) fn after_exit() {
    if active().rsb_fill_on_exit {
        crate::hw::fill_rsb();
    }
}

/// The pCPU is about to run a vCPU of another VM than the last one it ran.
pub fn on_vm_switch() {
    if active().ibpb_on_switch {
        // SAFETY: chosen only where the CPU has IBPB.
        #[expect(unsafe_code)]
        unsafe {
            crate::hw::ibpb()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_intel_part_gets_everything_a_new_one_little() {
        let old = CpuFacts {
            intel: true,
            ibpb: true,
            flush_l1d: true,
            md_clear: true,
            arch_caps: None,
        };
        let m = Mitigations::choose(&old, false);
        assert!(m.ibpb_on_switch && m.rsb_fill_on_exit && m.l1d_flush_on_entry);
        assert!(!m.verw_on_entry, "the L1D flush clears the buffers too");
        let new = CpuFacts {
            arch_caps: Some(ARCH_CAP_RDCL_NO | ARCH_CAP_MDS_NO),
            ..old
        };
        let m = Mitigations::choose(&new, false);
        assert!(!m.l1d_flush_on_entry && !m.verw_on_entry && m.ibpb_on_switch);
        // MDS without L1TF: VERW.
        let mds = CpuFacts {
            arch_caps: Some(ARCH_CAP_RDCL_NO),
            ..old
        };
        assert!(Mitigations::choose(&mds, false).verw_on_entry);
        // The CPU says entry needs no flush.
        let skip = CpuFacts {
            arch_caps: Some(ARCH_CAP_SKIP_L1DFL_VMENTRY),
            ..old
        };
        let m = Mitigations::choose(&skip, false);
        assert!(!m.l1d_flush_on_entry && m.verw_on_entry);
    }

    #[test]
    fn amd_needs_no_l1d_flush_or_verw_and_off_means_off() {
        let amd = CpuFacts {
            intel: false,
            ibpb: true,
            flush_l1d: false,
            md_clear: false,
            arch_caps: None,
        };
        let m = Mitigations::choose(&amd, false);
        assert_eq!(
            (
                m.ibpb_on_switch,
                m.rsb_fill_on_exit,
                m.l1d_flush_on_entry,
                m.verw_on_entry
            ),
            (true, true, false, false)
        );
        assert_eq!(Mitigations::choose(&amd, true), Mitigations::default());
        assert_eq!(Mitigations::default().to_string(), "none");
        assert_eq!(m.to_string(), "IBPB on VM switch, RSB refill on exit");
        assert_eq!(Mitigations::from_bits(m.bits()), m);
        let all = Mitigations::all(&amd);
        assert!(all.ibpb_on_switch && all.verw_on_entry && !all.l1d_flush_on_entry);
    }
}
