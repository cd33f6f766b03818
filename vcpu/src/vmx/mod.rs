//! Intel VMX backend.
//!
//! Handled here, never seen by the kernel: MOV to CR0/CR4 through the guest/host masks and
//! read shadows (the guest never sees CR4.VMXE or the forced CR0.NE; a write that switches
//! paging on or off updates EFER.LMA, the IA-32e entry control and, for PAE, the PDPTEs),
//! MOV to/from CR3/CR8 if the CPU forces those exits, CLTS/LMSW; XSETBV checked against the
//! host's XCR0 bits with the guest XCR0 switched around entries; INVD/WBINVD retired; VMX
//! instructions, INVEPT/INVVPID/VMFUNC, MONITOR/MWAIT get #UD; PAT reads/writes use the VMCS
//! guest PAT; an event interrupted by an exit (IDT-vectoring info) is re-injected.

pub mod controls;
pub mod exit;
mod intercept;
mod run;
mod setup;
mod vcpu_impl;
mod vmcs;

use crate::{Error, FrameSource, GuestRam, GuestRegs, PerCpu, Transition, Vendor, VmxCaps, hw};
use controls::{Controls, CrFixed};

/// Per-CPU enable for VMX.
pub(crate) fn enable(
    c: &VmxCaps,
    cpu_id: u32,
    frames: &mut impl FrameSource,
) -> Result<PerCpu, Error> {
    if !c.ept() {
        return Err(Error::NoNestedPaging);
    }
    let region = frames.alloc_zeroed_frame().ok_or(Error::OutOfFrames)?;
    hw::enable_osxsave();
    run::vmxon(c, region)?;
    Ok(PerCpu {
        vendor: Vendor::Vmx(*c),
        cpu_id,
        region,
        host_save: 0,
    })
}

/// MSRs passed through: in the VMCS guest area, or in the MSR load/store area.
pub const PASSTHROUGH_MSRS: [u32; 11] = [
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE   (MSR area)
    0xc000_0081, // STAR             (MSR area)
    0xc000_0082, // LSTAR            (MSR area)
    0xc000_0083, // CSTAR            (MSR area)
    0xc000_0084, // SFMASK           (MSR area)
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0xc000_0080, // EFER (VMCS, saved/loaded on exit/entry)
];
/// Switched through the VM-exit store / VM-entry load area (the same page).
const MSR_PAT: u32 = 0x277;

/// Bit index of `msr`'s read bit in the MSR bitmap; the write bit is at +0x800*8.
pub fn msr_bitmap_bit(msr: u32) -> Option<usize> {
    match msr {
        0..=0x1fff => Some(msr as usize),
        0xc000_0000..=0xc000_1fff => Some(0x400 * 8 + (msr - 0xc000_0000) as usize),
        _ => None,
    }
}

/// One VMX vCPU.
pub struct VmxVcpu {
    vmcs: u64,
    io_bitmaps: [u64; 2],
    msr_bitmap: [u64; 1],
    regs: GuestRegs,
    ram: GuestRam,
    caps: VmxCaps,
    ctls: Controls,
    fixed: CrFixed,
    eptp: u64,
    vpid: u16,
    launched: bool,
    last_cpu: Option<u32>,
    flush_ept: bool,
    waiting_for_sipi: bool,
    guest_xcr0: u64,
    guest_cr2: u64,
    exit_insn_len: u64,
    pending_event: bool,
    last: Transition,
}

fn w(field: u32, v: u64) -> Result<(), Error> {
    vmcs::write(field, v)
}

impl VmxVcpu {
    /// Accessors between exits may follow another vCPU's run on this pCPU: make ours current.
    fn cur(&self) {
        let _ = vmcs::make_current(self.vmcs);
    }
}

#[cfg(test)]
mod tests {
    use super::msr_bitmap_bit;

    #[test]
    fn msr_bitmap_layout() {
        assert_eq!(msr_bitmap_bit(0x1b), Some(0x1b));
        assert_eq!(msr_bitmap_bit(0xc000_0080), Some(0x2000 + 0x80));
        assert_eq!(msr_bitmap_bit(0x4000_0000), None);
        assert_eq!(msr_bitmap_bit(0xc001_0000), None);
    }
}
