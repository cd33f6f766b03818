//! Exits the backend handles itself (see the module documentation of `svm`), and how
//! events reach the guest: EVENTINJ, or V_IRQ for external interrupts.

use super::exit::{self, Decoded, code};
use super::vmcb::{int_ctl, misc1};
use super::{MSR_EFER, MSR_PAT, SvmVcpu};
use crate::bits::*;
use crate::insn_len::{self, Insn};
use crate::{Error, Event, Exit, SegReg, Vcpu, hw};

impl SvmVcpu {
    /// Queues `ev` for the next VMRUN, replacing nothing.
    pub(super) fn queue(&mut self, ev: Event) -> Result<(), Error> {
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
    pub(super) fn offer(&mut self, vector: u8) {
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
    pub(super) fn decoded_len(&self, insn: Insn) -> Result<u64, Error> {
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

    pub(super) fn skip(&mut self, len: u64) {
        let long = self.control_regs().efer & EFER_LMA != 0 && self.segment(SegReg::Cs).long();
        let rip = self.regs.rip.wrapping_add(len);
        self.regs.rip = if long { rip } else { rip & 0xffff_ffff };
        self.vmcb.get_mut().control.int_state &= !1;
    }

    /// Handles what is the backend's own business; `Some(exit)` for the kernel.
    pub(super) fn handle(&mut self, d: Decoded) -> Result<Option<Exit>, Error> {
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
                let save = &self.vmcb.get().save;
                let paging = save.cr0 & CR0_PG != 0;
                match super::efer_write(save.efer, value, paging) {
                    None => self.inject(Event::GP0)?,
                    Some(v) => {
                        self.vmcb.get_mut().save.efer = v;
                        self.advance_rip()?;
                    }
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
