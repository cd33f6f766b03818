//! The CPUID a VM sees when its personality does not own the leaf: the host's, with what the
//! hypervisor does not give guests taken out ([`policy`]) and what it emulates put in.

use super::policy;

/// The hypervisor range; a personality answers its own leaves, the rest of the range says
/// "Janus" and nothing more.
pub const HV_BASE: u32 = 0x4000_0000;
pub const HV_LAST: u32 = 0x4000_01FF;
const SIGNATURE: [u8; 12] = *b"Janus\0\0\0\0\0\0\0";

pub struct CpuidCtx {
    pub vcpu: u32,
    pub vcpus: u32,
    /// The end of the highest XSAVE component the guest's XCR0 enables (offset + size, from
    /// the host's leaf 0xD sub-leaves): leaf 0xD's sizes must describe the guest's XCR0, not
    /// the host's, or the guest's save buffers are too small.
    pub xsave_end: u32,
    /// Guest CR4.OSXSAVE, which CPUID.1:ECX[27] mirrors.
    pub guest_osxsave: bool,
    /// Guest CR4.PKE, which CPUID.7.0:ECX[4] mirrors.
    pub guest_ospke: bool,
}

mod bits {
    pub const L1_ECX_X2APIC: u32 = 1 << 21;
    pub const L1_ECX_TSC_DEADLINE: u32 = 1 << 24;
    pub const L1_ECX_OSXSAVE: u32 = 1 << 27;
    pub const L1_ECX_HYPERVISOR: u32 = 1 << 31;
    pub const L1_EDX_APIC: u32 = 1 << 9;
    pub const L1_EDX_HTT: u32 = 1 << 28;
    pub const L7_ECX_OSPKE: u32 = 1 << 4;
}

/// Topology bits needed to number `n` logical processors.
fn width(n: u32) -> u32 {
    32 - n.saturating_sub(1).leading_zeros()
}

/// `host` is what the real CPU returns for `(leaf, subleaf)`. What a guest may see of the
/// feature registers is [`policy`]'s table; the code below adds what Janus provides itself
/// and rewrites the leaves that describe the machine.
pub fn filter(leaf: u32, subleaf: u32, host: [u32; 4], ctx: &CpuidCtx) -> [u32; 4] {
    if policy::hidden_leaf(leaf, subleaf) {
        return [0; 4];
    }
    let [mut a, mut b, mut c, mut d] = policy::apply(leaf, subleaf, host);
    match leaf {
        1 => {
            b = (b & 0x0000_FFFF) | (ctx.vcpu << 24) | ((ctx.vcpus.min(255)) << 16);
            // OSXSAVE mirrors the guest's CR4, not the host's.
            c &= !bits::L1_ECX_OSXSAVE;
            c |= bits::L1_ECX_X2APIC | bits::L1_ECX_TSC_DEADLINE | bits::L1_ECX_HYPERVISOR;
            if ctx.guest_osxsave {
                c |= bits::L1_ECX_OSXSAVE;
            }
            d |= bits::L1_EDX_APIC | bits::L1_EDX_HTT;
        }
        // OSPKE mirrors the guest's CR4.PKE, where the host has PKU at all.
        7 if subleaf == 0 => {
            c &= !bits::L7_ECX_OSPKE;
            if ctx.guest_ospke {
                c |= bits::L7_ECX_OSPKE;
            }
        }
        0xD if subleaf == 0 => b = ctx.xsave_end.max(576),
        0xD if subleaf == 1 => {
            b = ctx.xsave_end.max(576);
            c = 0;
            d = 0;
        }
        4 => {
            // Cache topology: one core per vCPU sharing nothing beyond what the host says.
            a = (a & 0x3FFF) | ((ctx.vcpus.saturating_sub(1).min(63)) << 26);
        }
        0xB | 0x1F => {
            let (shift, count, kind) = match subleaf {
                0 => (0, 1, 1),
                1 => (width(ctx.vcpus), ctx.vcpus, 2),
                _ => (0, 0, 0),
            };
            return [shift, count, (kind << 8) | (subleaf & 0xFF), ctx.vcpu];
        }
        HV_BASE => {
            let w = |i: usize| {
                u32::from_le_bytes([
                    SIGNATURE[i],
                    SIGNATURE[i + 1],
                    SIGNATURE[i + 2],
                    SIGNATURE[i + 3],
                ])
            };
            return [HV_BASE, w(0), w(4), w(8)];
        }
        l if (HV_BASE..=HV_LAST).contains(&l) => return [0; 4],
        0x8000_0008 => {
            // NC (cores - 1) in ECX[7:0], the APIC-id size in ECX[15:12].
            c = (c & !0xF0FF) | (width(ctx.vcpus) << 12) | ctx.vcpus.saturating_sub(1).min(255);
        }
        _ => {}
    }
    [a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    mod bits {
        pub use super::super::bits::*;
        pub const L1_ECX_MONITOR: u32 = 1 << 3;
        pub const L1_ECX_VMX: u32 = 1 << 5;
        pub const E1_ECX_SVM: u32 = 1 << 2;
        pub const L7_ECX_RDPID: u32 = 1 << 22;
        pub const L7_ECX_LA57: u32 = 1 << 16;
    }

    fn ctx(vcpu: u32, vcpus: u32) -> CpuidCtx {
        CpuidCtx {
            vcpu,
            vcpus,
            guest_osxsave: false,
            guest_ospke: false,
            xsave_end: 576,
        }
    }

    #[test]
    fn leaf_1_hides_virtualization_and_shows_the_hypervisor() {
        let host = [0x000a_0f10, 0x0102_0800, u32::MAX, 0];
        let [_, b, c, d] = filter(1, 0, host, &ctx(1, 2));
        assert_eq!(b >> 24, 1, "initial APIC id is the vCPU index");
        assert_eq!((b >> 16) & 0xFF, 2);
        assert_eq!(c & bits::L1_ECX_VMX, 0);
        assert_eq!(c & bits::L1_ECX_MONITOR, 0);
        assert_ne!(c & bits::L1_ECX_HYPERVISOR, 0);
        assert_ne!(c & bits::L1_ECX_X2APIC, 0);
        assert_eq!(c & bits::L1_ECX_OSXSAVE, 0);
        assert_ne!(d & bits::L1_EDX_APIC, 0);
        let c2 = filter(
            1,
            0,
            host,
            &CpuidCtx {
                guest_osxsave: true,
                ..ctx(0, 1)
            },
        )[2];
        assert_ne!(c2 & bits::L1_ECX_OSXSAVE, 0);
    }

    #[test]
    fn svm_is_hidden_and_the_range_says_janus() {
        assert_eq!(
            filter(0x8000_0001, 0, [0, 0, 0x5, 0], &ctx(0, 1))[2] & bits::E1_ECX_SVM,
            0
        );
        assert_eq!(
            filter(0x8000_000A, 0, [1, 16, 0, 0x1_0001], &ctx(0, 1)),
            [0; 4]
        );
        let [max, b, c, d] = filter(HV_BASE, 0, [0; 4], &ctx(0, 1));
        assert_eq!(max, HV_BASE);
        let mut sig = Vec::new();
        for w in [b, c, d] {
            sig.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(&sig[..5], b"Janus");
        assert_eq!(filter(HV_BASE + 1, 0, [7; 4], &ctx(0, 1)), [0; 4]);
    }

    #[test]
    fn leaf_7_hides_rdpid_and_five_level_paging() {
        let c = filter(7, 0, [0, u32::MAX, u32::MAX, u32::MAX], &ctx(0, 1))[2];
        assert_eq!(c & (bits::L7_ECX_RDPID | bits::L7_ECX_LA57), 0);
        assert_eq!(
            filter(7, 1, [(1 << 4) | 1, 2, 3, (1 << 4) | 8], &ctx(0, 1)),
            [1 << 4, 0, 0, 1 << 4],
            "sub-leaf 1 passes what the policy lists"
        );
        assert_eq!(filter(7, 2, [0, 0, 0, u32::MAX], &ctx(0, 1)), [0; 4]);
    }

    #[test]
    fn xsave_sizes_follow_the_guest_xcr0() {
        let c = CpuidCtx {
            xsave_end: 832,
            ..ctx(0, 1)
        };
        assert_eq!(filter(0xD, 0, [7, 2696, 2696, 0], &c)[1], 832);
        assert_eq!(filter(0xD, 0, [7, 2696, 2696, 0], &ctx(0, 1))[1], 576);
        let [a, b, cx, d] = filter(0xD, 1, [0xF, 2700, 0x100, 0], &c);
        assert_eq!((a & 8, b, cx, d), (0, 832, 0, 0), "no XSAVES");
    }

    #[test]
    fn x2apic_topology_numbers_vcpus() {
        assert_eq!(filter(0xB, 0, [9; 4], &ctx(3, 4)), [0, 1, 0x100, 3]);
        assert_eq!(filter(0xB, 1, [9; 4], &ctx(3, 4)), [2, 4, 0x201, 3]);
        assert_eq!(filter(0xB, 2, [9; 4], &ctx(3, 4)), [0, 0, 2, 3]);
        assert_eq!(width(1), 0);
        assert_eq!(width(2), 1);
        assert_eq!(width(3), 2);
        assert_eq!(width(8), 3);
    }
}
