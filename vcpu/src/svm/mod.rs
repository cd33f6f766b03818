//! AMD SVM backend.
//!
//! Handled here, never seen by the kernel: guest SVM instructions (VMRUN, VMLOAD, VMSAVE,
//! STGI, CLGI, SKINIT, INVLPGA) and MONITOR/MWAIT get #UD; INVD is retired as a no-op; XSETBV is
//! checked against the host's XCR0 bits (#GP when invalid) and the guest XCR0 is switched in
//! and out around VMRUN; EFER reads hide SVME, EFER writes keep it (VMRUN demands it) and
//! #GP reserved bits; PAT reads/writes go to the VMCB's G_PAT; an event interrupted by an exit
//! (EXITINTINFO) is re-injected.

pub mod exit;
mod run;
pub mod vmcb;

use crate::bits::*;
use crate::insn_len::{self, Insn};
use crate::{
    ControlRegs, Error, Event, Exit, FrameSource, GuestRam, GuestRegs, InitialState, PerCpu,
    SegReg, Segment, SvmCaps, Transition, Vcpu, VcpuConfig, Vendor, hostmem, hw,
};
use exit::{Decoded, code};
use run::VmcbPage;
use vmcb::{VmcbSegment, int_ctl, misc1, misc2, tlb};

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
/// EFER bits a guest may set (SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE).
const EFER_WRITABLE: u64 =
    EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE | EFER_SVME | (1 << 13) | (1 << 14) | (1 << 15);

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

    fn set_initial(&mut self, st: InitialState) -> Result<(), Error> {
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

    fn sync_to_vmcb(&mut self) {
        let r = self.regs;
        let s = &mut self.vmcb.get_mut().save;
        s.rax = r.rax;
        s.rsp = r.rsp;
        s.rip = r.rip;
        s.rflags = r.rflags | RFLAGS_FIXED;
    }

    fn sync_from_vmcb(&mut self) {
        let s = &self.vmcb.get().save;
        self.regs.rax = s.rax;
        self.regs.rsp = s.rsp;
        self.regs.rip = s.rip;
        self.regs.rflags = s.rflags;
    }

    /// Queues `ev` for the next VMRUN, replacing nothing.
    fn queue(&mut self, ev: Event) -> Result<(), Error> {
        let raw = exit::encode_event(ev).ok_or(Error::BadEvent)?;
        let c = &mut self.vmcb.get_mut().control;
        if c.event_inj & exit::event::VALID != 0 {
            return Err(Error::EventPending);
        }
        c.event_inj = raw;
        Ok(())
    }

    /// Hands an external interrupt to the guest through V_IRQ, which the CPU delivers at the
    /// guest's first open interrupt window. EVENTINJ would work on hardware too, but QEMU
    /// (7.2 TCG) keeps an EVENTINJ interrupt's vector as its pending exception index and, if
    /// its vCPU thread is kicked before anything else replaces it, delivers the vector a
    /// second time, regardless of RFLAGS.IF, wherever the guest has got to.
    fn offer(&mut self, vector: u8) {
        let c = &mut self.vmcb.get_mut().control;
        c.int_control = (c.int_control & !(int_ctl::V_INTR_VECTOR | int_ctl::V_INTR_PRIO))
            | int_ctl::V_IRQ
            | int_ctl::V_INTR_PRIO
            | (u64::from(vector) << int_ctl::V_INTR_VECTOR_SHIFT);
        // The window exit is for the kernel's own waiting; an offered vector needs none.
        c.intercept_misc1 &= !misc1::VINTR;
        self.window_requested = false;
        self.offered = Some(vector);
    }

    /// Length of the instruction at CS:RIP, confirmed to be `insn`.
    fn decoded_len(&self, insn: Insn) -> Result<u64, Error> {
        let cs = self.segment(SegReg::Cs);
        insn_len::at_rip(
            &self.ram,
            &self.control_regs(),
            &cs,
            self.regs.rip,
            self.cpl(),
            insn,
        )
        .ok_or(Error::UndecodableInstruction)
    }

    fn skip(&mut self, len: u64) {
        let long = self.control_regs().efer & EFER_LMA != 0 && self.segment(SegReg::Cs).long();
        let rip = self.regs.rip.wrapping_add(len);
        self.regs.rip = if long { rip } else { rip & 0xffff_ffff };
        self.vmcb.get_mut().control.int_state &= !1;
    }

    /// Handles what is the backend's own business; `Some(exit)` for the kernel.
    fn handle(&mut self, d: Decoded) -> Result<Option<Exit>, Error> {
        match d {
            Decoded::Exit(Exit::Rdmsr { msr: MSR_EFER }) => {
                let e = self.vmcb.get().save.efer & !EFER_SVME;
                self.regs.set_edx_eax(e);
                self.advance_rip()?;
            }
            Decoded::Exit(Exit::Wrmsr {
                msr: MSR_EFER,
                value,
            }) => {
                let cur = self.vmcb.get().save.efer;
                // LMA is read-only: keep the current value whatever the guest writes.
                if value & !EFER_WRITABLE != 0 {
                    self.inject(Event::GP0)?;
                } else {
                    let v = (value & !EFER_LMA) | (cur & EFER_LMA) | EFER_SVME;
                    self.vmcb.get_mut().save.efer = v;
                    self.advance_rip()?;
                }
            }
            Decoded::Exit(Exit::Rdmsr { msr: MSR_PAT }) => {
                let p = self.vmcb.get().save.g_pat;
                self.regs.set_edx_eax(p);
                self.advance_rip()?;
            }
            Decoded::Exit(Exit::Wrmsr {
                msr: MSR_PAT,
                value,
            }) => {
                if value
                    .to_le_bytes()
                    .iter()
                    .all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
                {
                    self.vmcb.get_mut().save.g_pat = value;
                    self.advance_rip()?;
                } else {
                    self.inject(Event::GP0)?;
                }
            }
            Decoded::Exit(Exit::InterruptWindow) => {
                // The window is open: drop the fake V_IRQ so it never reaches the guest.
                self.vmcb.get_mut().control.int_control &= !int_ctl::V_IRQ;
                self.window_requested = false;
                return Ok(Some(Exit::InterruptWindow));
            }
            Decoded::Exit(e) => return Ok(Some(e)),
            Decoded::InjectUd => self.inject(Event::UD)?,
            Decoded::Skip(insn) => {
                let len = if self.caps.nrip_save() {
                    self.vmcb.get().control.next_rip.wrapping_sub(self.regs.rip)
                } else {
                    self.decoded_len(insn)?
                };
                self.skip(len);
            }
            Decoded::Xsetbv => {
                let value = (self.regs.rdx << 32) | (self.regs.rax & 0xffff_ffff);
                let cr4 = self.vmcb.get().save.cr4;
                if cr4 & CR4_OSXSAVE == 0 {
                    self.inject(Event::UD)?;
                } else if self.regs.rcx as u32 != 0
                    || self.cpl() != 0
                    || !hw::xcr0_valid(value, hw::xcr0_supported())
                {
                    self.inject(Event::GP0)?;
                } else {
                    self.guest_xcr0 = value;
                    self.advance_rip()?;
                }
            }
            Decoded::Invalid => {
                return Err(Error::EntryFailed {
                    reason: code::INVALID,
                    qualification: 0,
                });
            }
        }
        Ok(None)
    }
}

impl Vcpu for SvmVcpu {
    fn run(&mut self, cpu: &PerCpu) -> Result<Exit, Error> {
        if self.waiting_for_sipi {
            return Err(Error::WaitingForSipi);
        }
        loop {
            if self.last_cpu != Some(cpu.cpu_id) {
                // Another pCPU may hold stale translations tagged with this ASID.
                self.vmcb.get_mut().control.tlb_control = tlb::FLUSH_ALL;
                self.last_cpu = Some(cpu.cpu_id);
            }
            self.sync_to_vmcb();
            // An interrupt offered through V_IRQ shows as the external-interrupt event it is.
            let injected = match self.offered {
                Some(v) => exit::encode_event(Event::ExternalInterrupt(v)).unwrap_or(0),
                None => self.vmcb.get().control.event_inj,
            };
            let host_xcr0 = hw::xcr0();
            hw::set_xcr0(self.guest_xcr0);
            run::vmrun(&mut self.vmcb, cpu.host_save, &mut self.regs);
            if let Some(x) = host_xcr0 {
                hw::set_xcr0(x);
            }
            self.sync_from_vmcb();
            let c = &mut self.vmcb.get_mut().control;
            c.tlb_control = tlb::NONE;
            let taken = c.int_control & int_ctl::V_IRQ == 0;
            // An exit in the middle of delivering an event: deliver it again.
            c.event_inj = exit::reinjection(c.exit_int_info);
            let again =
                exit::external_interrupt(c.event_inj).filter(|_| self.caps.interrupts_via_v_irq());
            if again.is_some() {
                c.event_inj = 0;
            }
            let (code, i1, i2) = (c.exit_code, c.exit_info1, c.exit_info2);
            let vectoring = c.exit_int_info;
            if taken {
                // If the exit cut its delivery short, EXITINTINFO has it (offered again below).
                self.offered = None;
            }
            if let Some(v) = again {
                self.offer(v);
            }
            let save = &self.vmcb.get().save;
            self.last = Transition {
                injected,
                reason: code,
                info1: i1,
                info2: i2,
                vectoring,
                cr3: save.cr3,
                cpl: save.cpl & 3,
            };
            self.last_exit = (code, i2);
            let d = exit::decode(code, i1, i2, self.regs.rax, self.regs.rcx, self.regs.rdx);
            if let Some(e) = self.handle(d)? {
                return Ok(e);
            }
            // Handled here, so go straight back in. This cannot spin forever: a host
            // interrupt always ends the loop through the INTR intercept.
        }
    }

    fn regs(&self) -> &GuestRegs {
        &self.regs
    }
    fn regs_mut(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }

    fn xcr0(&self) -> u64 {
        self.guest_xcr0
    }

    fn control_regs(&self) -> ControlRegs {
        let s = &self.vmcb.get().save;
        ControlRegs {
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer & !EFER_SVME,
        }
    }

    fn segment(&self, r: SegReg) -> Segment {
        let s = &self.vmcb.get().save;
        unseg(match r {
            SegReg::Es => &s.es,
            SegReg::Cs => &s.cs,
            SegReg::Ss => &s.ss,
            SegReg::Ds => &s.ds,
            SegReg::Fs => &s.fs,
            SegReg::Gs => &s.gs,
            SegReg::Ldtr => &s.ldtr,
            SegReg::Tr => &s.tr,
        })
    }

    fn cpl(&self) -> u8 {
        self.vmcb.get().save.cpl & 3
    }

    fn memory(&self) -> &GuestRam {
        &self.ram
    }

    fn advance_rip(&mut self) -> Result<(), Error> {
        let (code, info2) = self.last_exit;
        let len = if code == code::IOIO {
            info2.wrapping_sub(self.regs.rip)
        } else if self.caps.nrip_save() {
            self.vmcb.get().control.next_rip.wrapping_sub(self.regs.rip)
        } else {
            let insn = match code {
                code::MSR => {
                    if self.vmcb.get().control.exit_info1 & 1 == 0 {
                        Insn::Rdmsr
                    } else {
                        Insn::Wrmsr
                    }
                }
                c => exit::insn_of(c).ok_or(Error::UndecodableInstruction)?,
            };
            self.decoded_len(insn)?
        };
        if len == 0 || len > insn_len::MAX_LEN as u64 {
            return Err(Error::UndecodableInstruction);
        }
        self.skip(len);
        Ok(())
    }

    fn inject(&mut self, event: Event) -> Result<(), Error> {
        match event {
            Event::ExternalInterrupt(v) if self.caps.interrupts_via_v_irq() => {
                if self.event_pending() {
                    return Err(Error::EventPending);
                }
                self.offer(v);
                Ok(())
            }
            _ => self.queue(event),
        }
    }

    fn event_pending(&self) -> bool {
        self.vmcb.get().control.event_inj & exit::event::VALID != 0 || self.offered.is_some()
    }

    fn interrupt_window_open(&self) -> bool {
        self.regs.rflags & RFLAGS_IF != 0
            && self.vmcb.get().control.int_state & 1 == 0
            && !self.event_pending()
    }

    fn request_interrupt_window(&mut self, on: bool) {
        if self.offered.is_some() {
            // V_IRQ carries the offered vector; the CPU takes it when the window opens.
            return;
        }
        self.window_requested = on;
        let c = &mut self.vmcb.get_mut().control;
        if on {
            c.int_control |= int_ctl::V_IRQ;
            c.intercept_misc1 |= misc1::VINTR;
        } else {
            c.int_control &= !int_ctl::V_IRQ;
            c.intercept_misc1 &= !misc1::VINTR;
        }
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.vmcb.get_mut().control.tsc_offset = offset;
    }

    fn flush_nested_tlb(&mut self) {
        let flush = if self.caps.flush_by_asid() {
            tlb::FLUSH_ASID
        } else {
            tlb::FLUSH_ALL
        };
        self.vmcb.get_mut().control.tlb_control = flush;
    }

    fn set_io_intercept(&mut self, port: u16, on: bool) {
        hostmem::set_bitmap_bit(&self.iopm, usize::from(port), on);
    }

    fn set_msr_intercept(&mut self, msr: u32, read: bool, write: bool) -> bool {
        if matches!(msr, MSR_EFER | MSR_PAT) {
            return false;
        }
        let Some(bit) = msrpm_bit(msr) else {
            return false;
        };
        hostmem::set_bitmap_bit(&self.msrpm, bit, read);
        hostmem::set_bitmap_bit(&self.msrpm, bit + 1, write);
        true
    }

    fn set_exception_intercepts(&mut self, mask: u32) {
        self.exception_mask = mask;
        self.vmcb.get_mut().control.intercept_exceptions = mask;
    }

    fn init(&mut self) {
        self.waiting_for_sipi = true;
        self.offered = None;
        self.window_requested = false;
        let c = &mut self.vmcb.get_mut().control;
        c.event_inj = 0;
        c.int_state = 0;
        c.int_control &= !int_ctl::V_IRQ;
        c.intercept_misc1 &= !misc1::VINTR;
    }

    fn sipi(&mut self, vector: u8) -> Result<(), Error> {
        if !self.waiting_for_sipi {
            return Ok(());
        }
        let base = u64::from(vector) << 12;
        self.regs = GuestRegs {
            rflags: RFLAGS_FIXED,
            rdx: 0x600,
            ..Default::default()
        };
        self.guest_xcr0 = 1;
        let real = |sel, base, attr| Segment::new(sel, base, 0xffff, attr);
        let s = &mut self.vmcb.get_mut().save;
        s.cs = seg(&real(u16::from(vector) << 8, base, Segment::REAL_CODE));
        for d in [&mut s.ds, &mut s.es, &mut s.ss, &mut s.fs, &mut s.gs] {
            *d = seg(&real(0, 0, Segment::REAL_DATA));
        }
        s.tr = seg(&real(0, 0, Segment::TSS_BUSY));
        s.ldtr = seg(&real(0, 0, Segment::LDT));
        s.gdtr = VmcbSegment {
            limit: 0xffff,
            ..Default::default()
        };
        s.idtr = VmcbSegment {
            limit: 0xffff,
            ..Default::default()
        };
        s.cpl = 0;
        s.cr0 = CR0_ET | CR0_CD | CR0_NW;
        s.cr2 = 0;
        s.cr3 = 0;
        s.cr4 = 0;
        s.efer = EFER_SVME;
        s.dr6 = 0xffff_0ff0;
        s.dr7 = 0x400;
        s.g_pat = PAT_DEFAULT;
        self.waiting_for_sipi = false;
        Ok(())
    }

    fn waiting_for_sipi(&self) -> bool {
        self.waiting_for_sipi
    }

    fn unload(&mut self) {}

    fn last_transition(&self) -> Transition {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
