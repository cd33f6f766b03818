//! The machine every VM sees, whatever its personality: MSRs and ports that belong to the
//! platform rather than to an ABI.

use super::{lapic, policy};

use boot::guest::acpi::{
    RESET_PORT, RESET_VALUE, S5_SLP_TYP, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT, sleep_request,
};

/// What a port access asks of the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortEffect {
    None,
    PowerOff,
    Reset,
}

/// The hardware-reduced ACPI sleep registers and the reset register the guest FADT names.
/// `None`: not a platform power port.
pub fn power_port(port: u16, write: bool, value: u32) -> Option<PortEffect> {
    match (port, write) {
        (SLEEP_CONTROL_PORT, true) => Some(match sleep_request(value as u8) {
            Some(S5_SLP_TYP) => PortEffect::PowerOff,
            _ => PortEffect::None,
        }),
        (RESET_PORT, true) if value as u8 == RESET_VALUE => Some(PortEffect::Reset),
        // Other reset-control bits (soft reset without bit 2) do nothing, as on the chipset.
        (RESET_PORT, true) => Some(if value & 0x4 != 0 {
            PortEffect::Reset
        } else {
            PortEffect::None
        }),
        // The sleep status register: wake status never set; writes clear nothing.
        (SLEEP_CONTROL_PORT | SLEEP_STATUS_PORT | RESET_PORT, _) => Some(PortEffect::None),
        _ => None,
    }
}

/// MISC_ENABLE as the guest sees it: fast strings; BTS and PEBS unavailable; nothing that
/// would need MONITOR, thermal control or EIST.
const MISC_ENABLE_VALUE: u64 = 1 | (1 << 11) | (1 << 12);
/// MTRRdefType as firmware leaves it: MTRRs enabled, write-back by default (with no
/// variable or fixed ranges, that is all memory).
const MTRR_DEF_TYPE_RESET: u64 = (1 << 11) | 6;

/// The platform MSRs a guest writes and reads back, per vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformMsrs {
    mtrr_def_type: u64,
}

impl PlatformMsrs {
    pub const fn new() -> Self {
        Self {
            mtrr_def_type: MTRR_DEF_TYPE_RESET,
        }
    }
}

impl Default for PlatformMsrs {
    fn default() -> Self {
        Self::new()
    }
}

/// Platform MSRs that are not the local APIC's, read at host TSC `tsc`. `None`: not the
/// platform's either. What each answers for is in [`super::policy`].
pub fn rdmsr(msr: u32, tsc: u64, state: &PlatformMsrs) -> Option<u64> {
    Some(match msr {
        // The TSC itself: guests see the host's (no offset).
        policy::TSC => tsc,
        // Locked, VMX off: the guest must not try to enable VMX.
        0x3A => 1,
        // Platform id / microcode revision: nothing to report.
        0x17 | 0x8B => 0,
        policy::MISC_ENABLE => MISC_ENABLE_VALUE,
        // MTRRcap: no variable ranges, no fixed ranges, no write-combining. The guest's
        // memory types come from nested paging (write-back) and its own PAT.
        policy::MTRR_CAP => 0,
        policy::MTRR_DEF_TYPE => state.mtrr_def_type,
        policy::INT_PENDING_MSG => 0,
        _ => return None,
    })
}

/// Writes the platform accepts. MTRRdefType is kept for reading back (it has no effect on
/// the memory types); MISC_ENABLE accepts only what it already holds, since none of its
/// switches is emulated.
pub fn wrmsr(msr: u32, value: u64, state: &mut PlatformMsrs) -> Option<()> {
    match msr {
        0x8B => Some(()),
        policy::MISC_ENABLE if value == MISC_ENABLE_VALUE => Some(()),
        // E and FE, and a memory type that exists (UC, WC, WT, WP, WB).
        policy::MTRR_DEF_TYPE
            if value & !0xCFF == 0 && matches!(value & 0xFF, 0 | 1 | 4 | 5 | 6) =>
        {
            state.mtrr_def_type = value;
            Some(())
        }
        _ => None,
    }
}

pub fn is_lapic_msr(msr: u32) -> bool {
    msr == lapic::APIC_BASE_MSR
        || msr == lapic::TSC_DEADLINE_MSR
        || (lapic::X2APIC_MSR_FIRST..=lapic::X2APIC_MSR_LAST).contains(&msr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poweroff_and_reset_ports() {
        // What Linux writes for S5 through a hardware-reduced FADT.
        assert_eq!(
            power_port(SLEEP_CONTROL_PORT, true, 0x34),
            Some(PortEffect::PowerOff)
        );
        assert_eq!(
            power_port(SLEEP_CONTROL_PORT, true, 0x14),
            Some(PortEffect::None),
            "no SLP_EN"
        );
        assert_eq!(
            power_port(SLEEP_CONTROL_PORT, true, 0x2C),
            Some(PortEffect::None),
            "S3 is not off"
        );
        assert_eq!(
            power_port(SLEEP_STATUS_PORT, false, 0),
            Some(PortEffect::None)
        );
        assert_eq!(power_port(RESET_PORT, true, 0x6), Some(PortEffect::Reset));
        assert_eq!(power_port(RESET_PORT, true, 0x2), Some(PortEffect::None));
        assert_eq!(power_port(0x3F8, true, 0), None);
    }

    #[test]
    fn platform_msrs() {
        let mut s = PlatformMsrs::new();
        assert_eq!(rdmsr(0x3A, 0, &s), Some(1));
        assert_eq!(rdmsr(0x10, 1234, &s), Some(1234));
        assert_eq!(rdmsr(0xC000_0080, 0, &s), None);
        assert_eq!(rdmsr(0x2FF, 0, &s), Some(0x806));
        assert_eq!(
            wrmsr(0x2FF, 0, &mut s),
            Some(()),
            "MTRRs off, as Linux does around updates"
        );
        assert_eq!(rdmsr(0x2FF, 0, &s), Some(0), "and reads it back");
        assert_eq!(wrmsr(0x2FF, 1 << 20, &mut s), None);
        assert_eq!(wrmsr(0x2FF, 0x802, &mut s), None, "type 2 is reserved");
        assert_eq!(wrmsr(0x1A0, MISC_ENABLE_VALUE, &mut s), Some(()));
        assert_eq!(wrmsr(0x1A0, MISC_ENABLE_VALUE | (1 << 18), &mut s), None);
        assert_eq!(wrmsr(0x10, 0, &mut s), None, "no TSC writes");
        assert!(is_lapic_msr(0x830));
        assert!(!is_lapic_msr(0x900));
    }
}
