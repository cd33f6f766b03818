//! The [`Vcpu`] interface: the VMRUN loop, register and segment access, event injection and
//! the interrupt window, intercept bitmaps and INIT/SIPI.

use super::vmcb::{VmcbSegment, int_ctl, misc1, tlb};
use super::{MSR_EFER, MSR_PAT, PAT_DEFAULT, SvmVcpu, exit, msrpm_bit, run, seg, unseg};
use crate::bits::*;
use crate::insn_len::{self, Insn};
use crate::{
    ControlRegs, Error, Event, Exit, GuestRam, GuestRegs, PerCpu, SegReg, Segment, Transition,
    Vcpu, hostmem, hw,
};
use exit::code;

impl SvmVcpu {
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
            crate::mitigate::before_entry();
            run::vmrun(&mut self.vmcb, cpu.host_save, &mut self.regs);
            crate::mitigate::after_exit();
            // VMRUN does not switch XCR0, so what it holds now is the guest's. The XSETBV
            // intercept normally keeps `guest_xcr0` current, but an SVM that does not honour
            // it (QEMU's TCG) lets the guest write XCR0 itself; reading it back keeps the
            // value the guest set, instead of undoing it at the next entry and describing the
            // wrong state in CPUID leaf 0xD.
            if let (Some(_), Some(now)) = (host_xcr0, hw::xcr0()) {
                self.guest_xcr0 = now;
            }
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

    fn skip_instruction(&mut self, len: u64) -> Result<(), Error> {
        self.skip(len);
        Ok(())
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

    fn reset(&mut self, state: crate::InitialState) -> Result<(), Error> {
        self.init();
        self.guest_xcr0 = 1;
        self.flush_nested_tlb();
        self.set_initial(state)
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
