//! The [`Vcpu`] interface: the entry/exit loop, register and segment access, event
//! injection and the interrupt window, intercept bitmaps and INIT/SIPI.

use super::setup::write_seg;
use super::{MSR_PAT, VmxVcpu, exit, msr_bitmap_bit, run, vmcs, w};
use crate::bits::*;
use crate::{
    ControlRegs, Error, Event, Exit, GuestRam, GuestRegs, PerCpu, SegReg, Segment, Transition,
    Vcpu, hostmem, hw,
};
use x86::vmx::vmcs::{control as ctl, guest as g, host as h, ro};

impl Vcpu for VmxVcpu {
    fn run(&mut self, cpu: &PerCpu) -> Result<Exit, Error> {
        if self.waiting_for_sipi {
            return Err(Error::WaitingForSipi);
        }
        if self.last_cpu.is_some_and(|c| c != cpu.cpu_id) {
            return Err(Error::NotUnloaded);
        }
        vmcs::make_current(self.vmcs)?;
        if self.last_cpu.is_none() {
            // First run here after `unload`: this pCPU's host state and TLBs.
            self.setup_host()?;
            self.flush_ept = true;
            if self.caps.vpid() {
                run::invvpid_single(self.vpid);
            }
            self.last_cpu = Some(cpu.cpu_id);
        }
        loop {
            if self.flush_ept {
                let kind = if self.caps.invept_single() { 1 } else { 2 };
                run::invept(kind, self.eptp);
                self.flush_ept = false;
            }
            w(g::RIP, self.regs.rip)?;
            w(g::RSP, self.regs.rsp)?;
            w(g::RFLAGS, self.regs.rflags | RFLAGS_FIXED)?;
            w(h::CR3, hw::cr3())?;
            let host_xcr0 = hw::xcr0();
            hw::set_xcr0(self.guest_xcr0);
            if hw::cr2() != self.guest_cr2 {
                hw::write_cr2(self.guest_cr2);
            }
            let injected = if self.pending_event {
                vmcs::read_or0(ctl::VMENTRY_INTERRUPTION_INFO_FIELD)
            } else {
                0
            };
            crate::mitigate::before_entry();
            let entered = run::enter(&mut self.regs, self.launched);
            crate::mitigate::after_exit();
            self.guest_cr2 = hw::cr2();
            if let Some(x) = host_xcr0 {
                hw::set_xcr0(x);
            }
            if !entered {
                let n = vmcs::read_or0(ro::VM_INSTRUCTION_ERROR);
                return Err(Error::VmFail {
                    instruction_error: n as u32,
                });
            }
            self.launched = true;
            self.pending_event = false;
            self.regs.rip = vmcs::read(g::RIP)?;
            self.regs.rsp = vmcs::read(g::RSP)?;
            self.regs.rflags = vmcs::read(g::RFLAGS)?;
            self.exit_insn_len = vmcs::read_or0(ro::VMEXIT_INSTRUCTION_LEN);
            let raw = vmcs::read(ro::EXIT_REASON)? as u32;
            // An exit in the middle of delivering an event: deliver it again.
            let idt = vmcs::read_or0(ro::IDT_VECTORING_INFO) as u32;
            if idt & (1 << 31) != 0 && raw & exit::reason::ENTRY_FAILURE == 0 {
                if idt & (1 << 11) != 0 {
                    w(
                        ctl::VMENTRY_EXCEPTION_ERR_CODE,
                        vmcs::read_or0(ro::IDT_VECTORING_ERR_CODE),
                    )?;
                }
                w(ctl::VMENTRY_INSTRUCTION_LEN, self.exit_insn_len)?;
                w(
                    ctl::VMENTRY_INTERRUPTION_INFO_FIELD,
                    u64::from(idt & 0x8000_0fff),
                )?;
                self.pending_event = true;
            }
            let qual = vmcs::read_or0(ro::EXIT_QUALIFICATION);
            let info = vmcs::read_or0(ro::VMEXIT_INTERRUPTION_INFO) as u32;
            let err = vmcs::read_or0(ro::VMEXIT_INTERRUPTION_ERR_CODE) as u32;
            let gpa = vmcs::read_or0(ro::GUEST_PHYSICAL_ADDR_FULL);
            self.last = Transition {
                injected,
                reason: u64::from(raw),
                info1: qual,
                info2: gpa,
                vectoring: u64::from(idt),
                cr3: vmcs::read_or0(g::CR3),
                // SS.DPL is the CPL.
                cpl: ((vmcs::read_or0(g::SS_ACCESS_RIGHTS) >> 5) & 3) as u8,
            };
            let d = exit::decode(
                raw,
                qual,
                info,
                err,
                gpa,
                self.regs.rax,
                self.regs.rcx,
                self.regs.rdx,
            );
            if let Some(e) = self.handle(d)? {
                return Ok(e);
            }
            // Handled here; a host interrupt always ends this loop (external-interrupt exiting).
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
        self.cur();
        let f = &self.fixed;
        let cr0 = (vmcs::read_or0(g::CR0) & !f.cr0_mask)
            | (vmcs::read_or0(ctl::CR0_READ_SHADOW) & f.cr0_mask);
        let cr4 = (vmcs::read_or0(g::CR4) & !f.cr4_mask)
            | (vmcs::read_or0(ctl::CR4_READ_SHADOW) & f.cr4_mask);
        ControlRegs {
            cr0,
            cr2: self.guest_cr2,
            cr3: vmcs::read_or0(g::CR3),
            cr4,
            efer: vmcs::read_or0(g::IA32_EFER_FULL),
        }
    }

    fn segment(&self, r: SegReg) -> Segment {
        self.cur();
        let (sel, base, limit, ar) = super::setup::seg_fields(r);
        let (attr, unusable) = Segment::attr_from_vmx(vmcs::read_or0(ar) as u32);
        Segment {
            selector: vmcs::read_or0(sel) as u16,
            attr,
            limit: vmcs::read_or0(limit) as u32,
            base: vmcs::read_or0(base),
            unusable,
        }
    }

    fn cpl(&self) -> u8 {
        self.cur();
        // SS.DPL is the CPL (also in real mode, where it is 0).
        ((vmcs::read_or0(g::SS_ACCESS_RIGHTS) >> 5) & 3) as u8
    }

    fn memory(&self) -> &GuestRam {
        &self.ram
    }

    fn advance_rip(&mut self) -> Result<(), Error> {
        let len = self.exit_insn_len;
        if len == 0 || len > 15 {
            return Err(Error::UndecodableInstruction);
        }
        self.skip_instruction(len)
    }

    fn skip_instruction(&mut self, len: u64) -> Result<(), Error> {
        self.cur();
        let long =
            vmcs::read_or0(g::IA32_EFER_FULL) & EFER_LMA != 0 && self.segment(SegReg::Cs).long();
        let rip = self.regs.rip.wrapping_add(len);
        self.regs.rip = if long { rip } else { rip & 0xffff_ffff };
        let st = vmcs::read_or0(g::INTERRUPTIBILITY_STATE);
        if st & 3 != 0 {
            w(g::INTERRUPTIBILITY_STATE, st & !3)?;
        }
        Ok(())
    }

    fn inject(&mut self, event: Event) -> Result<(), Error> {
        self.queue(event)
    }

    fn event_pending(&self) -> bool {
        self.pending_event
    }

    fn interrupt_window_open(&self) -> bool {
        self.cur();
        self.regs.rflags & RFLAGS_IF != 0
            && vmcs::read_or0(g::INTERRUPTIBILITY_STATE) & 3 == 0
            && !self.pending_event
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.cur();
        let bit = x86::vmx::vmcs::control::PrimaryControls::INTERRUPT_WINDOW_EXITING.bits();
        if on {
            self.ctls.proc |= bit;
        } else {
            self.ctls.proc &= !bit;
        }
        let _ = w(ctl::PRIMARY_PROCBASED_EXEC_CONTROLS, self.ctls.proc.into());
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.cur();
        let _ = w(ctl::TSC_OFFSET_FULL, offset);
    }

    fn flush_nested_tlb(&mut self) {
        self.flush_ept = true;
    }

    fn set_io_intercept(&mut self, port: u16, on: bool) {
        hostmem::set_bitmap_bit(&self.io_bitmaps, usize::from(port), on);
    }

    fn set_msr_intercept(&mut self, msr: u32, read: bool, write: bool) -> bool {
        if msr == MSR_PAT {
            return false;
        }
        let Some(bit) = msr_bitmap_bit(msr) else {
            return false;
        };
        hostmem::set_bitmap_bit(&self.msr_bitmap, bit, read);
        hostmem::set_bitmap_bit(&self.msr_bitmap, bit + 0x800 * 8, write);
        true
    }

    fn set_exception_intercepts(&mut self, mask: u32) {
        self.cur();
        let _ = w(ctl::EXCEPTION_BITMAP, mask.into());
    }

    fn reset(&mut self, state: crate::InitialState) -> Result<(), Error> {
        vmcs::make_current(self.vmcs)?;
        self.init();
        self.waiting_for_sipi = false;
        self.guest_xcr0 = 1;
        self.flush_ept = true;
        self.set_initial(state)
    }

    fn init(&mut self) {
        self.cur();
        self.waiting_for_sipi = true;
        self.pending_event = false;
        let _ = w(ctl::VMENTRY_INTERRUPTION_INFO_FIELD, 0);
    }

    fn sipi(&mut self, vector: u8) -> Result<(), Error> {
        if !self.waiting_for_sipi {
            return Ok(());
        }
        vmcs::make_current(self.vmcs)?;
        let real = |sel, base, attr| Segment::new(sel, base, 0xffff, attr);
        write_seg(
            SegReg::Cs,
            &real(
                u16::from(vector) << 8,
                u64::from(vector) << 12,
                Segment::REAL_CODE,
            ),
        )?;
        for r in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
            write_seg(r, &real(0, 0, Segment::REAL_DATA))?;
        }
        write_seg(SegReg::Tr, &real(0, 0, Segment::TSS_BUSY))?;
        write_seg(SegReg::Ldtr, &Segment::unusable())?;
        self.set_common(CR0_ET, 0, 0)?;
        w(g::CR3, 0)?;
        self.set_long_mode(false)?;
        self.regs = GuestRegs {
            rflags: RFLAGS_FIXED,
            rdx: 0x600,
            ..Default::default()
        };
        self.guest_xcr0 = 1;
        self.waiting_for_sipi = false;
        Ok(())
    }

    fn waiting_for_sipi(&self) -> bool {
        self.waiting_for_sipi
    }

    fn unload(&mut self) {
        let _ = vmcs::clear(self.vmcs);
        self.launched = false;
        self.last_cpu = None;
    }

    fn last_transition(&self) -> Transition {
        self.last
    }
}
