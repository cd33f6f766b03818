//! The machine every VM sees, whatever its personality: MSRs and ports that belong to the
//! platform rather than to an ABI.

use super::lapic;

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

/// Platform MSRs that are not the local APIC's, read at host TSC `tsc`. `None`: not the
/// platform's either.
pub fn rdmsr(msr: u32, tsc: u64) -> Option<u64> {
    Some(match msr {
        // The TSC itself: guests see the host's (no offset).
        0x10 => tsc,
        // Locked, VMX off: the guest must not try to enable VMX.
        0x3A => 1,
        // Platform id / microcode revision: nothing to report.
        0x17 | 0x8B => 0,
        // MISC_ENABLE: fast strings; BTS and PEBS unavailable.
        0x1A0 => 1 | (1 << 11) | (1 << 12),
        // MTRRcap: no variable ranges, no fixed ranges, no write-combining; all memory is WB.
        0xFE => 0,
        0x2FF => 0x806,
        _ => return None,
    })
}

/// Writes the platform accepts (and ignores: the values have no effect in a VM).
pub fn wrmsr(msr: u32, value: u64) -> Option<()> {
    match msr {
        0x8B => Some(()),
        0x2FF if value & !0xCFF == 0 => Some(()),
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
        assert_eq!(rdmsr(0x3A, 0), Some(1));
        assert_eq!(rdmsr(0x10, 1234), Some(1234));
        assert_eq!(rdmsr(0xC000_0080, 0), None);
        assert_eq!(wrmsr(0x2FF, 0x806), Some(()));
        assert_eq!(wrmsr(0x2FF, 1 << 20), None);
        assert!(is_lapic_msr(0x830));
        assert!(!is_lapic_msr(0x900));
    }
}
