//! Creating a vCPU's VMCB (intercepts, permission maps, nested paging, ASID) and its
//! initial register state.

use super::run::VmcbPage;
use super::vmcb::{VmcbSegment, int_ctl, misc1, misc2, tlb};
use super::{PASSTHROUGH_MSRS, PAT_DEFAULT, SvmVcpu, seg};
use crate::bits::*;
use crate::{
    Error, FrameSource, GuestRam, GuestRegs, InitialState, PerCpu, Segment, Transition, Vcpu,
    VcpuConfig, Vendor, hostmem,
};

/// `N` physically consecutive frames.
fn alloc_contiguous<const N: usize>(frames: &mut impl FrameSource) -> Result<[u64; N], Error> {
    let base = frames
        .alloc_zeroed_contiguous(N)
        .ok_or(Error::OutOfFrames)?;
    let mut out = [0; N];
    for (i, f) in out.iter_mut().enumerate() {
        *f = base + (i as u64) * 0x1000;
    }
    Ok(out)
}

impl SvmVcpu {
    pub(crate) fn new(
        cpu: &PerCpu,
        frames: &mut impl FrameSource,
        cfg: &VcpuConfig,
    ) -> Result<Self, Error> {
        let Vendor::Svm(caps) = cpu.vendor else {
            return Err(Error::Unsupported);
        };
        if u32::from(cfg.tag) >= caps.asids {
            return Err(Error::InvalidArgument);
        }
        let vmcb_pa = frames.alloc_zeroed_frame().ok_or(Error::OutOfFrames)?;
        let vmcb = VmcbPage::new(vmcb_pa).ok_or(Error::OutOfFrames)?;
        let iopm = alloc_contiguous::<3>(frames)?;
        let msrpm = alloc_contiguous::<2>(frames)?;
        for f in iopm.iter().chain(msrpm.iter()) {
            hostmem::fill_frame(*f, 0xff);
        }
        let mut v = SvmVcpu {
            vmcb,
            iopm,
            msrpm,
            regs: GuestRegs::default(),
            ram: GuestRam::new(cfg.ram),
            caps,
            waiting_for_sipi: false,
            last_cpu: None,
            guest_xcr0: 1,
            last_exit: (0, 0),
            window_requested: false,
            exception_mask: 0,
            last: Transition::default(),
            offered: None,
        };
        for m in PASSTHROUGH_MSRS {
            v.set_msr_intercept(m, false, false);
        }
        let c = &mut v.vmcb.get_mut().control;
        c.intercept_misc1 = misc1::INTR
            | misc1::NMI
            | misc1::INIT
            | misc1::CPUID
            | misc1::INVD
            | misc1::HLT
            | misc1::INVLPGA
            | misc1::IOIO
            | misc1::MSR
            | misc1::SHUTDOWN;
        c.intercept_misc2 = misc2::VMRUN
            | misc2::VMMCALL
            | misc2::VMLOAD
            | misc2::VMSAVE
            | misc2::STGI
            | misc2::CLGI
            | misc2::SKINIT
            | misc2::WBINVD
            | misc2::MONITOR
            | misc2::MWAIT
            | misc2::MWAIT_ARMED
            | misc2::XSETBV;
        c.iopm_base_pa = iopm[0];
        c.msrpm_base_pa = msrpm[0];
        c.guest_asid = u32::from(cfg.tag);
        c.tlb_control = tlb::FLUSH_ALL;
        c.int_control = int_ctl::V_INTR_MASKING | int_ctl::V_IGN_TPR;
        c.np_control = 1;
        c.n_cr3 = cfg.nested_root;
        v.set_initial(cfg.initial)?;
        Ok(v)
    }

    pub(super) fn set_initial(&mut self, st: InitialState) -> Result<(), Error> {
        let flat = |sel, attr| Segment::new(sel, 0, 0xffff_ffff, attr);
        let Some(e) = crate::state::entry_state(&st) else {
            self.waiting_for_sipi = true;
            return Ok(());
        };
        self.regs = e.regs;
        self.vmcb.get_mut().save.cr3 = e.cr3;
        let (cr0, cr4, efer, cs) = (e.cr0, e.cr4, e.efer, e.cs);
        self.regs.rflags = RFLAGS_FIXED;
        self.waiting_for_sipi = false;
        let data = flat(0x10, Segment::DATA);
        let s = &mut self.vmcb.get_mut().save;
        s.cs = seg(&cs);
        for d in [&mut s.ds, &mut s.es, &mut s.ss, &mut s.fs, &mut s.gs] {
            *d = seg(&data);
        }
        s.tr = seg(&Segment::new(0, 0, 0x67, Segment::TSS_BUSY));
        s.ldtr = seg(&Segment::new(0, 0, 0, Segment::LDT));
        s.gdtr = VmcbSegment::default();
        s.idtr = VmcbSegment::default();
        s.cpl = 0;
        s.cr0 = cr0;
        s.cr4 = cr4;
        s.efer = efer | EFER_SVME;
        s.dr6 = 0xffff_0ff0;
        s.dr7 = 0x400;
        s.g_pat = PAT_DEFAULT;
        Ok(())
    }
}
