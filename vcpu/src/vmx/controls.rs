//! VM-execution/exit/entry control values from the capability MSRs — pure.

use crate::VmxCaps;
use x86::vmx::vmcs::control::{
    EntryControls, ExitControls, PinbasedControls, PrimaryControls, SecondaryControls,
};

/// `want` adjusted to a capability MSR (allowed-0 in the low half must be 1, allowed-1 in the
/// high half may be 1). `None` if a bit of `need` cannot be set.
pub fn adjust(cap: u64, want: u32, need: u32) -> Option<u32> {
    let must = cap as u32;
    let may = (cap >> 32) as u32;
    if need & !may != 0 {
        return None;
    }
    Some((want | must) & may)
}

/// The control values the backend runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

/// Chooses controls: external-interrupt and NMI exiting (no ack on exit), HLT, I/O and MSR
/// bitmaps, TSC offsetting, MONITOR/MWAIT and CR8 exiting; EPT, VPID and unrestricted guest where
/// present; 64-bit host with EFER (and PAT where possible) switched by the CPU.
pub fn choose(c: &VmxCaps) -> Option<Controls> {
    let pin_need =
        (PinbasedControls::EXTERNAL_INTERRUPT_EXITING | PinbasedControls::NMI_EXITING).bits();
    let pin = adjust(c.pin, pin_need, pin_need)?;

    let proc_need = (PrimaryControls::HLT_EXITING
        | PrimaryControls::USE_IO_BITMAPS
        | PrimaryControls::USE_MSR_BITMAPS
        | PrimaryControls::SECONDARY_CONTROLS
        | PrimaryControls::USE_TSC_OFFSETTING
        | PrimaryControls::MWAIT_EXITING
        | PrimaryControls::MONITOR_EXITING
        // Without these a guest's MOV to CR8 writes the physical APIC's TPR, masking the
        // host's timer and kicks (the guest would then never exit).
        | PrimaryControls::CR8_LOAD_EXITING
        | PrimaryControls::CR8_STORE_EXITING)
        .bits();
    let mut proc = adjust(c.proc, proc_need, proc_need)?;
    // CR3 load/store exiting is default-1 without the TRUE MSRs; EPT makes it unnecessary,
    // and dropping it is only possible where allowed-0 says so.
    let cr3_exits = (1u32 << 15) | (1 << 16);
    proc &= !(cr3_exits & !(c.proc as u32));

    let mut want2 = SecondaryControls::ENABLE_EPT.bits();
    if c.unrestricted_guest() {
        want2 |= SecondaryControls::UNRESTRICTED_GUEST.bits();
    }
    if c.vpid() {
        want2 |= SecondaryControls::ENABLE_VPID.bits();
    }
    // RDTSCP stays disabled (it #UDs in the guest): TSC_AUX is the host's and is not
    // switched, and the platform CPUID hides RDTSCP accordingly.
    want2 |= SecondaryControls::ENABLE_INVPCID.bits() & (c.proc2 >> 32) as u32;
    // A guest's WBINVD would write back and flush every cache of the pCPU, stalling the VMs
    // that share it; it exits and is retired as a no-op (Xen does the same without
    // passthrough devices).
    want2 |= SecondaryControls::WBINVD_EXITING.bits() & (c.proc2 >> 32) as u32;
    let proc2 = adjust(c.proc2, want2, SecondaryControls::ENABLE_EPT.bits())?;

    let exit_need = (ExitControls::HOST_ADDRESS_SPACE_SIZE
        | ExitControls::SAVE_IA32_EFER
        | ExitControls::LOAD_IA32_EFER)
        .bits();
    let exit_want = exit_need | (ExitControls::SAVE_IA32_PAT | ExitControls::LOAD_IA32_PAT).bits();
    let mut exit = adjust(c.exit, exit_want, exit_need)?;
    exit &= !ExitControls::ACK_INTERRUPT_ON_EXIT.bits() | c.exit as u32;

    let entry_need = EntryControls::LOAD_IA32_EFER.bits();
    let entry = adjust(
        c.entry,
        entry_need | EntryControls::LOAD_IA32_PAT.bits(),
        entry_need,
    )?;
    let entry = entry & !EntryControls::IA32E_MODE_GUEST.bits();
    Some(Controls {
        pin,
        proc,
        proc2,
        exit,
        entry,
    })
}

impl Controls {
    pub fn pat_switched(&self) -> bool {
        self.entry & EntryControls::LOAD_IA32_PAT.bits() != 0
            && self.exit & ExitControls::SAVE_IA32_PAT.bits() != 0
    }
}

/// CR0/CR4 guest/host masks and the forced-on bits, from the fixed-bit MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrFixed {
    pub cr0_mask: u64,
    pub cr0_on: u64,
    pub cr0_allowed: u64,
    pub cr4_mask: u64,
    pub cr4_on: u64,
    pub cr4_allowed: u64,
}

pub fn cr_fixed(c: &VmxCaps, unrestricted: bool) -> CrFixed {
    use crate::bits::*;
    let mut cr0_on = c.cr0_fixed0 & 0xffff_ffff;
    if unrestricted {
        cr0_on &= !(CR0_PE | CR0_PG);
    }
    let cr0_allowed = c.cr0_fixed1 & 0xffff_ffff;
    let cr4_on = c.cr4_fixed0 & 0xffff_ffff;
    let cr4_allowed = c.cr4_fixed1 & 0xffff_ffff;
    CrFixed {
        // Any bit the guest cannot freely own: forced on, or not allowed on.
        cr0_mask: cr0_on | (!cr0_allowed & 0xffff_ffff),
        cr0_on,
        cr0_allowed,
        cr4_mask: cr4_on | (!cr4_allowed & 0xffff_ffff),
        cr4_on,
        cr4_allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::tests::skylake;

    #[test]
    fn adjust_respects_both_halves() {
        assert_eq!(adjust(0x7f_0000_0016, 0x9, 0x9), Some(0x1f));
        assert_eq!(adjust(0x7f_0000_0016, 0x80, 0x80), None);
        assert_eq!(adjust(0x7f_0000_0016, 0x80, 0), Some(0x16));
    }

    #[test]
    fn skylake_controls() {
        let c = choose(&skylake()).unwrap();
        assert_eq!(c.pin, 0x1f);
        assert_eq!(c.proc & (1 << 7), 1 << 7, "HLT exiting");
        assert_eq!(
            c.proc & ((1 << 15) | (1 << 16)),
            0,
            "no CR3 exits with TRUE controls"
        );
        assert_eq!(c.proc2 & 0xa2, 0xa2, "EPT, VPID, unrestricted guest");
        assert_eq!(c.proc2 & (1 << 6), 1 << 6, "WBINVD exits");
        assert_eq!(c.exit & (1 << 15), 0, "no ack on exit");
        assert_eq!(c.exit & (1 << 9), 1 << 9);
        assert_eq!(c.entry & (1 << 15), 1 << 15);
        assert!(c.pat_switched());
    }

    #[test]
    fn no_ept_means_no_controls() {
        let c = VmxCaps {
            proc2: 0,
            ept_vpid: 0,
            ..skylake()
        };
        assert_eq!(choose(&c), None);
    }

    #[test]
    fn cr_masks_hide_vmxe_and_ne() {
        let f = cr_fixed(&skylake(), true);
        assert_eq!(f.cr0_on, 0x20);
        assert_eq!(f.cr0_mask, 0x20);
        assert_eq!(f.cr4_on, 0x2000);
        assert_eq!(f.cr4_mask & 0x2000, 0x2000);
        assert_eq!(f.cr4_mask & 0x20, 0, "PAE is the guest's");
        let r = cr_fixed(&skylake(), false);
        assert_eq!(r.cr0_on, 0x8000_0021);
    }
}
