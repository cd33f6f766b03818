//! The machine every VM sees, whatever its personality: MSRs and ports that belong to the
//! platform rather than to an ABI.

use super::lapic;

/// ACPI fixed-hardware PM1a control block and reset register, matching the guest FADT.
pub const PM1A_CNT_PORT: u16 = 0x604;
pub const RESET_PORT: u16 = 0xCF9;
/// The sleep type the guest's DSDT gives S5 (soft off).
pub const SLP_TYP_S5: u16 = 5;
const SLP_EN: u16 = 1 << 13;
/// POST diagnostics and Linux's I/O delay port: writes vanish, reads float.
pub const POST_PORT: u16 = 0x80;

/// What a port access asks of the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortEffect {
    None,
    PowerOff,
    Reset,
}

/// PM1a control and the reset control register. `None`: not a platform power port.
pub fn power_port(port: u16, write: bool, value: u32) -> Option<PortEffect> {
    match (port, write) {
        (PM1A_CNT_PORT, true) => {
            let v = value as u16;
            let typ = (v >> 10) & 7;
            Some(if v & SLP_EN != 0 && typ == SLP_TYP_S5 {
                PortEffect::PowerOff
            } else {
                PortEffect::None
            })
        }
        // Bit 2 starts the reset; bits 1 and 3 pick its kind, all of which end the VM.
        (RESET_PORT, true) => Some(if value & 0x4 != 0 {
            PortEffect::Reset
        } else {
            PortEffect::None
        }),
        (PM1A_CNT_PORT | RESET_PORT, false) => Some(PortEffect::None),
        _ => None,
    }
}

/// Platform MSRs that are not the local APIC's. `Ok(None)`: not the platform's either.
pub fn rdmsr(msr: u32) -> Option<u64> {
    Some(match msr {
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
        assert_eq!(
            power_port(PM1A_CNT_PORT, true, u32::from(SLP_EN | (SLP_TYP_S5 << 10))),
            Some(PortEffect::PowerOff)
        );
        assert_eq!(
            power_port(PM1A_CNT_PORT, true, u32::from(SLP_EN)),
            Some(PortEffect::None),
            "S0 is not off"
        );
        assert_eq!(power_port(RESET_PORT, true, 0x6), Some(PortEffect::Reset));
        assert_eq!(power_port(RESET_PORT, true, 0x2), Some(PortEffect::None));
        assert_eq!(power_port(0x3F8, true, 0), None);
    }

    #[test]
    fn platform_msrs() {
        assert_eq!(rdmsr(0x3A), Some(1));
        assert_eq!(rdmsr(0xC000_0080), None);
        assert_eq!(wrmsr(0x2FF, 0x806), Some(()));
        assert_eq!(wrmsr(0x2FF, 1 << 20), None);
        assert!(is_lapic_msr(0x830));
        assert!(!is_lapic_msr(0x900));
    }
}
