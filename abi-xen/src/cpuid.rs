//! CPUID leaves 0x4000_0000.. as Xen presents them to HVM/PVH guests.
//!
//! Only what is implemented is claimed: the signature, the version, the hypercall-page MSR,
//! and in the HVM leaf the vCPU id (Linux takes its `xen_vcpu_id` from it) and the domain id.
//! The per-vCPU upcall-vector bit is opt-in (see [`Config::advertise_upcall_vector`]).

use crate::Config;

pub const BASE: u32 = 0x4000_0000;
/// Highest leaf offered: Linux reads base+4 (the HVM leaf).
const MAX_LEAF: u32 = BASE + 4;
/// The range the personality owns; leaves past `MAX_LEAF` read as zero so a guest scanning
/// for other hypervisor signatures (Linux looks at every 0x100 step) finds none.
const OWNED_END: u32 = 0x4000_01FF;

pub const HYPERCALL_MSR: u32 = 0x4000_0000;

const SIG_EBX: u32 = u32::from_le_bytes(*b"XenV");
const SIG_ECX: u32 = u32::from_le_bytes(*b"MMXe");
const SIG_EDX: u32 = u32::from_le_bytes(*b"nVMM");

/// `XEN_HVM_CPUID_*` bits in base+4 EAX.
pub const HVM_VCPU_ID_PRESENT: u32 = 1 << 3;
pub const HVM_DOMID_PRESENT: u32 = 1 << 4;
pub const HVM_UPCALL_VECTOR: u32 = 1 << 6;

pub(crate) fn leaf(cfg: &Config, vcpu: u32, leaf: u32, _subleaf: u32) -> Option<[u32; 4]> {
    if !(BASE..=OWNED_END).contains(&leaf) {
        return None;
    }
    Some(match leaf {
        BASE => [MAX_LEAF, SIG_EBX, SIG_ECX, SIG_EDX],
        0x4000_0001 => [
            (u32::from(cfg.version.0) << 16) | u32::from(cfg.version.1),
            0,
            0,
            0,
        ],
        // One hypercall page, written through this MSR; no PV-only feature bits.
        0x4000_0002 => [1, HYPERCALL_MSR, 0, 0],
        // TSC leaf: no emulation, no scaling information offered (Linux HVM/PVH ignores it).
        0x4000_0003 => [0; 4],
        0x4000_0004 => {
            let mut eax = HVM_VCPU_ID_PRESENT | HVM_DOMID_PRESENT;
            if cfg.advertise_upcall_vector {
                eax |= HVM_UPCALL_VECTOR;
            }
            [eax, vcpu, u32::from(cfg.domid), 0]
        }
        _ => [0; 4],
    })
}
