//! The hypervisor CPUID leaves (TLFS "Feature Discovery").
//!
//! Every bit set here names something this crate implements; Linux and Windows take each
//! one as a promise and take a different, often fatal, path when a promised service fails.

/// Leaf numbers.
pub mod leaf {
    pub const VENDOR: u32 = 0x4000_0000;
    pub const INTERFACE: u32 = 0x4000_0001;
    pub const VERSION: u32 = 0x4000_0002;
    pub const FEATURES: u32 = 0x4000_0003;
    pub const HINTS: u32 = 0x4000_0004;
    pub const LIMITS: u32 = 0x4000_0005;
    pub const HW_FEATURES: u32 = 0x4000_0006;
    /// Leaves up to here are answered; 7..=0xA are zero (no CPU management, no nesting).
    pub const MAX: u32 = 0x4000_000A;
}

/// "Microsoft Hv" in EBX, ECX, EDX.
pub const VENDOR_EBX: u32 = u32::from_le_bytes(*b"Micr");
pub const VENDOR_ECX: u32 = u32::from_le_bytes(*b"osof");
pub const VENDOR_EDX: u32 = u32::from_le_bytes(*b"t Hv");
/// "Hv#1": the Microsoft hypervisor interface.
pub const INTERFACE_HV1: u32 = u32::from_le_bytes(*b"Hv#1");

/// Partition privileges, low half (leaf 3 EAX).
pub mod privilege {
    pub const TIME_REF_COUNT: u32 = 1 << 1;
    pub const SYNIC: u32 = 1 << 2;
    pub const SYNTIMER: u32 = 1 << 3;
    pub const HYPERCALL: u32 = 1 << 5;
    pub const VP_INDEX: u32 = 1 << 6;
    pub const RESET: u32 = 1 << 7;
    pub const REFERENCE_TSC: u32 = 1 << 9;
    /// HV_X64_MSR_EOI/ICR/TPR and the VP assist page.
    pub const APIC_ACCESS: u32 = 1 << 4;
    pub const FREQUENCY_MSRS: u32 = 1 << 11;
}

/// Partition privileges, high half (leaf 3 EBX): the VMBus hypercalls.
pub mod call_privilege {
    pub const POST_MESSAGES: u32 = 1 << 4;
    pub const SIGNAL_EVENTS: u32 = 1 << 5;
}

/// Misc features (leaf 3 EDX).
pub mod feature {
    pub const FREQUENCY_MSRS: u32 = 1 << 8;
    pub const CRASH_MSRS: u32 = 1 << 10;
    pub const STIMER_DIRECT: u32 = 1 << 19;
}

/// Implementation recommendations (leaf 4 EAX).
pub mod hint {
    /// The synthetic EOI/ICR/TPR MSRs, and with them the VP assist page's lazy EOI.
    pub const APIC_ACCESS_RECOMMENDED: u32 = 1 << 3;
    /// Windows then skips its clock and DPC watchdogs, which misfire under emulators.
    pub const RELAXED_TIMING: u32 = 1 << 5;
    /// Lets the guest avoid auto-EOI SINTs, which APIC virtualisation cannot express.
    pub const DEPRECATING_AEOI: u32 = 1 << 9;
    pub const CLUSTER_IPI: u32 = 1 << 10;
    pub const EX_PROCESSOR_MASKS: u32 = 1 << 11;
}

/// Leaf 6: what the implementation uses of the hardware (reporting only).
pub mod hw {
    pub const MSR_BITMAPS: u32 = 1 << 1;
    pub const SLAT: u32 = 1 << 3;
}

/// "Never notify" for HvCallNotifyLongSpinWait.
pub const SPIN_NEVER: u32 = u32::MAX;

/// Version leaf: Windows Server 2016 numbers, which guests only print.
const BUILD: u32 = 14393;
const MAJOR_MINOR: u32 = 10 << 16;

/// What the partition offers, decided once at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub privileges: u32,
    pub call_privileges: u32,
    pub misc: u32,
    pub hints: u32,
    pub max_vps: u32,
}

impl Features {
    pub fn new(tsc_page: bool, frequencies: bool, max_vps: u32) -> Self {
        let mut privileges = privilege::TIME_REF_COUNT
            | privilege::SYNIC
            | privilege::SYNTIMER
            | privilege::HYPERCALL
            | privilege::VP_INDEX
            | privilege::RESET
            | privilege::APIC_ACCESS;
        let mut misc = feature::CRASH_MSRS | feature::STIMER_DIRECT;
        if tsc_page {
            privileges |= privilege::REFERENCE_TSC;
        }
        if frequencies {
            privileges |= privilege::FREQUENCY_MSRS;
            misc |= feature::FREQUENCY_MSRS;
        }
        Features {
            privileges,
            call_privileges: call_privilege::POST_MESSAGES | call_privilege::SIGNAL_EVENTS,
            misc,
            hints: hint::APIC_ACCESS_RECOMMENDED
                | hint::RELAXED_TIMING
                | hint::DEPRECATING_AEOI
                | hint::CLUSTER_IPI
                | hint::EX_PROCESSOR_MASKS,
            max_vps,
        }
    }

    pub fn has(&self, privilege: u32) -> bool {
        self.privileges & privilege == privilege
    }

    /// The whole hypervisor range is answered, zeros outside the leaves above: another
    /// vendor's signature at 0x4000_0100 (as some hosts add) would make Linux pick it.
    pub fn leaf(&self, leaf: u32) -> Option<[u32; 4]> {
        if !(0x4000_0000..=0x4000_FFFF).contains(&leaf) {
            return None;
        }
        Some(match leaf {
            leaf::VENDOR => [leaf::MAX, VENDOR_EBX, VENDOR_ECX, VENDOR_EDX],
            leaf::INTERFACE => [INTERFACE_HV1, 0, 0, 0],
            leaf::VERSION => [BUILD, MAJOR_MINOR, 0, 0],
            leaf::FEATURES => [self.privileges, self.call_privileges, 0, self.misc],
            leaf::HINTS => [self.hints, SPIN_NEVER, 0, 0],
            leaf::LIMITS => [self.max_vps, self.max_vps, 0, 0],
            leaf::HW_FEATURES => [hw::MSR_BITMAPS | hw::SLAT, 0, 0, 0],
            _ => [0; 4],
        })
    }
}
