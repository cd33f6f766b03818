//! AMD SVM backend.
//!
//! Handled here, never seen by the kernel: guest SVM instructions (VMRUN, VMLOAD, VMSAVE,
//! STGI, CLGI, SKINIT, INVLPGA) and MONITOR/MWAIT get #UD; INVD is retired as a no-op; XSETBV is
//! checked against the host's XCR0 bits (#GP when invalid) and the guest XCR0 is switched in
//! and out around VMRUN; EFER reads hide SVME, EFER writes keep it (VMRUN demands it) and
//! #GP reserved bits; PAT reads/writes go to the VMCB's G_PAT; an event interrupted by an exit
//! (EXITINTINFO) is re-injected.

pub mod exit;
mod intercept;
mod run;
mod setup;
mod vcpu_impl;
pub mod vmcb;

use crate::bits::*;
use crate::{
    Error, FrameSource, GuestRam, GuestRegs, PerCpu, Segment, SvmCaps, Transition, Vendor, hw,
};
use run::VmcbPage;
use vmcb::VmcbSegment;

/// Per-CPU enable for SVM: EFER.SVME, VM_HSAVE_PA and the host VMSAVE page.
pub(crate) fn enable(
    c: &SvmCaps,
    cpu_id: u32,
    frames: &mut impl FrameSource,
) -> Result<PerCpu, Error> {
    if !c.npt() {
        return Err(Error::NoNestedPaging);
    }
    let hsave = frames.alloc_zeroed_frame().ok_or(Error::OutOfFrames)?;
    let host_save = frames.alloc_zeroed_frame().ok_or(Error::OutOfFrames)?;
    run::enable_svm(hsave)?;
    hw::enable_osxsave();
    Ok(PerCpu {
        vendor: Vendor::Svm(*c),
        cpu_id,
        region: hsave,
        host_save,
    })
}

const MSR_EFER: u32 = 0xc000_0080;
const MSR_PAT: u32 = 0x277;
/// Power-on PAT.
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// EFER bits a guest may write: SCE, LME, LMA (ignored), NXE and SVME (kept set for VMRUN).
/// LMSLE, FFXSR and TCE are refused like reserved bits: guests are not offered them (the
/// CPUID policy hides FFXSR and TCE, and says LMSLE is unsupported), and a host without them
/// would fail the next VMRUN.
const EFER_WRITABLE: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE | EFER_SVME;

/// The EFER a guest's WRMSR leaves, or `None` for the #GP the CPU raises: bits it may not set,
/// or LME changed while paging is on (it would leave long mode, or enter it, behind the
/// back of CR0.PG). LMA is the CPU's to set, so it keeps its current value.
pub(crate) fn efer_write(cur: u64, value: u64, paging: bool) -> Option<u64> {
    if value & !EFER_WRITABLE != 0 || (paging && (value ^ cur) & EFER_LME != 0) {
        return None;
    }
    Some((value & !EFER_LMA) | (cur & EFER_LMA) | EFER_SVME)
}

/// MSRs that run without exits: the VMCB holds them and VMLOAD/VMSAVE switch them.
pub const PASSTHROUGH_MSRS: [u32; 10] = [
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
];

/// Bit index of `msr`'s read-intercept bit in the MSRPM (the write bit follows it).
pub fn msrpm_bit(msr: u32) -> Option<usize> {
    let (base, off) = match msr {
        0..=0x1fff => (0usize, msr),
        0xc000_0000..=0xc000_1fff => (0x800 * 8, msr - 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000 * 8, msr - 0xc001_0000),
        _ => return None,
    };
    Some(base + off as usize * 2)
}

/// One SVM vCPU.
pub struct SvmVcpu {
    vmcb: VmcbPage,
    iopm: [u64; 3],
    msrpm: [u64; 2],
    regs: GuestRegs,
    ram: GuestRam,
    caps: SvmCaps,
    waiting_for_sipi: bool,
    last_cpu: Option<u32>,
    guest_xcr0: u64,
    /// Exit code, EXITINFO2 of the last exit, for `advance_rip`.
    last_exit: (u64, u64),
    window_requested: bool,
    exception_mask: u32,
    last: Transition,
    /// An external interrupt offered through V_IRQ that the guest has not taken yet.
    offered: Option<u8>,
}

fn seg(s: &Segment) -> VmcbSegment {
    // P=0 is how SVM marks a segment unusable.
    let attrib = if s.unusable { 0 } else { s.attr };
    VmcbSegment {
        selector: s.selector,
        attrib,
        limit: s.limit,
        base: s.base,
    }
}

fn unseg(v: &VmcbSegment) -> Segment {
    Segment {
        selector: v.selector,
        attr: v.attrib,
        limit: v.limit,
        base: v.base,
        unusable: v.attrib & 0x80 == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efer_writes_the_cpu_would_refuse_fault() {
        let long = EFER_LME | EFER_LMA | EFER_NXE | EFER_SCE | EFER_SVME;
        // LMSLE, FFXSR, TCE and reserved bits.
        for bit in [13, 14, 15, 16, 63] {
            assert_eq!(
                efer_write(long, (long & !EFER_SVME) | 1 << bit, true),
                None,
                "bit {bit}"
            );
        }
        // Leaving long mode (LME cleared) while paging is on, or entering it that way.
        assert_eq!(efer_write(long, EFER_NXE | EFER_SCE, true), None);
        assert_eq!(efer_write(0, EFER_LME, true), None);
        // What Linux does: LME before paging, NXE and SCE any time; LMA and SVME kept.
        assert_eq!(
            efer_write(EFER_SVME, EFER_LME, false),
            Some(EFER_LME | EFER_SVME)
        );
        assert_eq!(
            efer_write(long, EFER_LME | EFER_NXE | EFER_SCE, true),
            Some(long)
        );
    }

    #[test]
    fn msrpm_bits() {
        assert_eq!(msrpm_bit(0), Some(0));
        assert_eq!(msrpm_bit(0x1b), Some(0x36));
        assert_eq!(msrpm_bit(0xc000_0080), Some(0x800 * 8 + 0x100));
        assert_eq!(msrpm_bit(0xc001_0000), Some(0x1000 * 8));
        assert_eq!(msrpm_bit(0x2000), None);
        assert_eq!(msrpm_bit(0x4000_0000), None);
    }
}
