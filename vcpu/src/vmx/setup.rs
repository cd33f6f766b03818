//! Creating a vCPU's VMCS and putting the guest in a known state: controls, host area,
//! the initial (or INIT/SIPI) register state, and the CR0/CR4/EFER writes the guest's own
//! mode switches share with it.

use super::run::{self, host_msr as read_msr};
use super::{MSR_PAT, PASSTHROUGH_MSRS, VmxVcpu, controls, vmcs, w};
use crate::bits::*;
use crate::{
    Error, FrameSource, GuestRam, GuestRegs, InitialState, NestedFormat, PerCpu, SegReg, Segment,
    Transition, Vcpu, VcpuConfig, Vendor, hostmem, hw,
};
use x86::vmx::vmcs::{control as ctl, guest as g, host as h};

const AREA_MSRS: [u32; 5] = [
    0xc000_0102,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
];

/// The VMCS fields of a segment register: selector, base, limit, access rights.
pub(super) fn seg_fields(r: SegReg) -> (u32, u32, u32, u32) {
    match r {
        SegReg::Es => (g::ES_SELECTOR, g::ES_BASE, g::ES_LIMIT, g::ES_ACCESS_RIGHTS),
        SegReg::Cs => (g::CS_SELECTOR, g::CS_BASE, g::CS_LIMIT, g::CS_ACCESS_RIGHTS),
        SegReg::Ss => (g::SS_SELECTOR, g::SS_BASE, g::SS_LIMIT, g::SS_ACCESS_RIGHTS),
        SegReg::Ds => (g::DS_SELECTOR, g::DS_BASE, g::DS_LIMIT, g::DS_ACCESS_RIGHTS),
        SegReg::Fs => (g::FS_SELECTOR, g::FS_BASE, g::FS_LIMIT, g::FS_ACCESS_RIGHTS),
        SegReg::Gs => (g::GS_SELECTOR, g::GS_BASE, g::GS_LIMIT, g::GS_ACCESS_RIGHTS),
        SegReg::Ldtr => (
            g::LDTR_SELECTOR,
            g::LDTR_BASE,
            g::LDTR_LIMIT,
            g::LDTR_ACCESS_RIGHTS,
        ),
        SegReg::Tr => (g::TR_SELECTOR, g::TR_BASE, g::TR_LIMIT, g::TR_ACCESS_RIGHTS),
    }
}

pub(super) fn write_seg(r: SegReg, s: &Segment) -> Result<(), Error> {
    let (sel, base, limit, ar) = seg_fields(r);
    w(sel, s.selector.into())?;
    w(base, s.base)?;
    w(limit, s.limit.into())?;
    w(ar, s.vmx_access_rights().into())
}

impl VmxVcpu {
    pub(crate) fn new(
        cpu: &PerCpu,
        frames: &mut impl FrameSource,
        cfg: &VcpuConfig,
    ) -> Result<Self, Error> {
        let Vendor::Vmx(caps) = cpu.vendor else {
            return Err(Error::Unsupported);
        };
        let ctls = controls::choose(&caps).ok_or(Error::NoNestedPaging)?;
        let ug =
            ctls.proc2 & x86::vmx::vmcs::control::SecondaryControls::UNRESTRICTED_GUEST.bits() != 0;
        if !ug && !matches!(cfg.initial, InitialState::Long64 { .. }) {
            return Err(Error::NoUnrestrictedGuest);
        }
        let mut alloc = || frames.alloc_zeroed_frame().ok_or(Error::OutOfFrames);
        let vmcs = alloc()?;
        let io_bitmaps = [alloc()?, alloc()?];
        let msr_bitmap = [alloc()?];
        let msr_area = alloc()?;
        for f in io_bitmaps.iter().chain(msr_bitmap.iter()) {
            hostmem::fill_frame(*f, 0xff);
        }
        for (i, m) in AREA_MSRS.iter().enumerate() {
            hostmem::write_frame_u64(msr_area, 2 * i, u64::from(*m));
            hostmem::write_frame_u64(msr_area, 2 * i + 1, 0);
        }
        hostmem::write_frame_u64(vmcs, 0, caps.revision().into());
        let mut v = VmxVcpu {
            vmcs,
            io_bitmaps,
            msr_bitmap,
            regs: GuestRegs::default(),
            ram: GuestRam::new(cfg.ram),
            caps,
            ctls,
            fixed: controls::cr_fixed(&caps, ug),
            eptp: NestedFormat::eptp(cfg.nested_root),
            vpid: cfg.tag,
            launched: false,
            last_cpu: Some(cpu.cpu_id),
            flush_ept: true,
            waiting_for_sipi: false,
            guest_xcr0: 1,
            guest_cr2: 0,
            exit_insn_len: 0,
            pending_event: false,
            last: Transition::default(),
        };
        for m in PASSTHROUGH_MSRS {
            v.set_msr_intercept(m, false, false);
        }
        vmcs::clear(vmcs)?;
        vmcs::make_current(vmcs)?;
        v.setup_controls(msr_area)?;
        v.setup_host()?;
        v.set_initial(cfg.initial)?;
        Ok(v)
    }

    fn setup_controls(&mut self, msr_area: u64) -> Result<(), Error> {
        let c = self.ctls;
        w(ctl::PINBASED_EXEC_CONTROLS, c.pin.into())?;
        w(ctl::PRIMARY_PROCBASED_EXEC_CONTROLS, c.proc.into())?;
        w(ctl::SECONDARY_PROCBASED_EXEC_CONTROLS, c.proc2.into())?;
        w(ctl::VMEXIT_CONTROLS, c.exit.into())?;
        w(ctl::VMENTRY_CONTROLS, c.entry.into())?;
        w(ctl::EXCEPTION_BITMAP, 0)?;
        w(ctl::IO_BITMAP_A_ADDR_FULL, self.io_bitmaps[0])?;
        w(ctl::IO_BITMAP_B_ADDR_FULL, self.io_bitmaps[1])?;
        w(ctl::MSR_BITMAPS_ADDR_FULL, self.msr_bitmap[0])?;
        w(ctl::EPTP_FULL, self.eptp)?;
        if c.proc2 & x86::vmx::vmcs::control::SecondaryControls::ENABLE_VPID.bits() != 0 {
            w(ctl::VPID, self.vpid.into())?;
        }
        w(ctl::CR0_GUEST_HOST_MASK, self.fixed.cr0_mask)?;
        w(ctl::CR4_GUEST_HOST_MASK, self.fixed.cr4_mask)?;
        w(ctl::CR3_TARGET_COUNT, 0)?;
        w(ctl::VMEXIT_MSR_STORE_ADDR_FULL, msr_area)?;
        w(ctl::VMEXIT_MSR_STORE_COUNT, AREA_MSRS.len() as u64)?;
        w(ctl::VMENTRY_MSR_LOAD_ADDR_FULL, msr_area)?;
        w(ctl::VMENTRY_MSR_LOAD_COUNT, AREA_MSRS.len() as u64)?;
        w(ctl::VMEXIT_MSR_LOAD_COUNT, 0)?;
        w(ctl::TSC_OFFSET_FULL, 0)?;
        w(g::LINK_PTR_FULL, u64::MAX)
    }

    /// Host state from the CPU we are on (differs per pCPU: TR, GDT, GS base...).
    pub(super) fn setup_host(&mut self) -> Result<(), Error> {
        let hs = run::host_state();
        w(h::CR0, hw::cr0())?;
        w(h::CR3, hw::cr3())?;
        w(h::CR4, hw::cr4())?;
        w(h::CS_SELECTOR, (hs.cs & !7).into())?;
        w(h::SS_SELECTOR, (hs.ss & !7).into())?;
        w(h::DS_SELECTOR, (hs.ds & !7).into())?;
        w(h::ES_SELECTOR, (hs.es & !7).into())?;
        w(h::FS_SELECTOR, (hs.fs & !7).into())?;
        w(h::GS_SELECTOR, (hs.gs & !7).into())?;
        w(h::TR_SELECTOR, (hs.tr & !7).into())?;
        w(h::FS_BASE, hs.fs_base)?;
        w(h::GS_BASE, hs.gs_base)?;
        w(h::TR_BASE, hs.tr_base)?;
        w(h::GDTR_BASE, hs.gdtr_base)?;
        w(h::IDTR_BASE, hs.idtr_base)?;
        w(h::IA32_EFER_FULL, read_msr(0xc000_0080))?;
        if self.ctls.pat_switched() {
            w(h::IA32_PAT_FULL, read_msr(MSR_PAT))?;
        }
        w(h::IA32_SYSENTER_CS, read_msr(0x174))?;
        w(h::IA32_SYSENTER_ESP, read_msr(0x175))?;
        w(h::IA32_SYSENTER_EIP, read_msr(0x176))?;
        w(h::RIP, run::exit_stub_addr())
    }

    pub(super) fn set_cr0(&mut self, v: u64) -> Result<(), Error> {
        w(g::CR0, (v | self.fixed.cr0_on) & self.fixed.cr0_allowed)?;
        w(ctl::CR0_READ_SHADOW, v)
    }

    pub(super) fn set_cr4(&mut self, v: u64) -> Result<(), Error> {
        w(g::CR4, (v | self.fixed.cr4_on) & self.fixed.cr4_allowed)?;
        w(ctl::CR4_READ_SHADOW, v)
    }

    pub(super) fn set_long_mode(&mut self, on: bool) -> Result<(), Error> {
        let ia32e = x86::vmx::vmcs::control::EntryControls::IA32E_MODE_GUEST.bits() as u64;
        let entry = vmcs::read(ctl::VMENTRY_CONTROLS)?;
        let efer = vmcs::read(g::IA32_EFER_FULL)?;
        if on {
            w(ctl::VMENTRY_CONTROLS, entry | ia32e)?;
            w(g::IA32_EFER_FULL, efer | EFER_LMA)
        } else {
            w(ctl::VMENTRY_CONTROLS, entry & !ia32e)?;
            w(g::IA32_EFER_FULL, efer & !EFER_LMA)
        }
    }

    pub(super) fn set_initial(&mut self, st: InitialState) -> Result<(), Error> {
        let flat = |sel, attr| Segment::new(sel, 0, 0xffff_ffff, attr);
        let (cr0, cr4, efer, cs) = match crate::state::entry_state(&st) {
            // Still a valid state so the VMCS passes checks once SIPI'd.
            None => {
                self.waiting_for_sipi = true;
                (CR0_ET, 0, 0, flat(0x8, Segment::CODE32))
            }
            Some(e) => {
                self.regs = e.regs;
                if matches!(st, InitialState::Long64 { .. }) {
                    w(g::CR3, e.cr3)?;
                }
                (e.cr0, e.cr4, e.efer, e.cs)
            }
        };
        self.regs.rflags = RFLAGS_FIXED;
        let data = flat(0x10, Segment::DATA);
        write_seg(SegReg::Cs, &cs)?;
        for r in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
            write_seg(r, &data)?;
        }
        write_seg(SegReg::Tr, &Segment::new(0, 0, 0x67, Segment::TSS_BUSY))?;
        write_seg(SegReg::Ldtr, &Segment::unusable())?;
        self.set_common(cr0, cr4, efer)?;
        self.set_long_mode(efer & EFER_LMA != 0)
    }

    pub(super) fn set_common(&mut self, cr0: u64, cr4: u64, efer: u64) -> Result<(), Error> {
        w(g::GDTR_BASE, 0)?;
        w(g::GDTR_LIMIT, 0xffff)?;
        w(g::IDTR_BASE, 0)?;
        w(g::IDTR_LIMIT, 0xffff)?;
        self.set_cr0(cr0)?;
        self.set_cr4(cr4)?;
        w(g::IA32_EFER_FULL, efer)?;
        if self.ctls.pat_switched() {
            w(g::IA32_PAT_FULL, 0x0007_0406_0007_0406)?;
        }
        w(g::DR7, 0x400)?;
        w(g::IA32_DEBUGCTL_FULL, 0)?;
        w(g::ACTIVITY_STATE, 0)?;
        w(g::INTERRUPTIBILITY_STATE, 0)?;
        w(g::PENDING_DBG_EXCEPTIONS, 0)?;
        w(g::IA32_SYSENTER_CS, 0)?;
        w(g::IA32_SYSENTER_ESP, 0)?;
        w(g::IA32_SYSENTER_EIP, 0)?;
        w(ctl::VMENTRY_INTERRUPTION_INFO_FIELD, 0)?;
        self.pending_event = false;
        self.guest_cr2 = 0;
        Ok(())
    }
}
