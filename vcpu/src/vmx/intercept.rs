//! Exits the backend handles itself (see the module documentation of `vmx`): MOV to/from
//! control registers, XSETBV, the guest PAT, and the faults they inject instead.

use super::exit::{self, CrAccess, Decoded};
use super::{MSR_PAT, VmxVcpu, vmcs, w};
use crate::bits::*;
use crate::{Error, Event, Exit, GuestMemory, Vcpu, hw};
use x86::vmx::vmcs::{control as ctl, guest as g, ro};

impl VmxVcpu {
    fn gpr(&self, n: u8) -> u64 {
        self.regs.gpr(n).unwrap_or(0)
    }

    /// Emulates a MOV to CR0; `Some(ev)` when the guest must get a fault instead.
    fn write_cr0(&mut self, v: u64) -> Result<Option<Event>, Error> {
        let cur = self.control_regs();
        let efer = cur.efer;
        let bad = v >> 32 != 0
            || (v & CR0_NW != 0 && v & CR0_CD == 0)
            || (v & CR0_PG != 0 && v & CR0_PE == 0)
            || (v & CR0_PG != 0 && efer & EFER_LME != 0 && cur.cr4 & CR4_PAE == 0)
            || (v & !self.fixed.cr0_allowed & 0xffff_ffff) != 0;
        if bad {
            return Ok(Some(Event::GP0));
        }
        let was_pg = cur.cr0 & CR0_PG != 0;
        let now_pg = v & CR0_PG != 0;
        self.set_cr0(v | CR0_ET)?;
        if now_pg && !was_pg && efer & EFER_LME != 0 {
            self.set_long_mode(true)?;
        } else if !now_pg && was_pg && efer & EFER_LMA != 0 {
            self.set_long_mode(false)?;
        } else if now_pg && efer & EFER_LME == 0 && cur.cr4 & CR4_PAE != 0 {
            self.load_pdptes(cur.cr3)?;
        }
        Ok(None)
    }

    fn write_cr4(&mut self, v: u64) -> Result<Option<Event>, Error> {
        let cur = self.control_regs();
        let bad = v & CR4_VMXE != 0
            || (v & !(self.fixed.cr4_allowed | CR4_VMXE)) != 0
            || (cur.efer & EFER_LMA != 0 && v & CR4_PAE == 0);
        if bad {
            return Ok(Some(Event::GP0));
        }
        self.set_cr4(v)?;
        if cur.cr0 & CR0_PG != 0 && cur.efer & EFER_LMA == 0 && v & CR4_PAE != 0 {
            self.load_pdptes(cur.cr3)?;
        }
        Ok(None)
    }

    /// PAE paging with EPT takes the PDPTEs from the VMCS, so a paging switch done here must
    /// load them as the CPU would.
    fn load_pdptes(&mut self, cr3: u64) -> Result<(), Error> {
        let base = cr3 & 0xffff_ffe0;
        let fields = [
            g::PDPTE0_FULL,
            g::PDPTE1_FULL,
            g::PDPTE2_FULL,
            g::PDPTE3_FULL,
        ];
        for (i, f) in fields.iter().enumerate() {
            let e = self.ram.read_u64(base + 8 * i as u64).unwrap_or(0);
            w(*f, e)?;
        }
        Ok(())
    }

    fn handle_cr(&mut self, a: CrAccess) -> Result<Option<Event>, Error> {
        match a {
            CrAccess::MovTo { cr: 0, gpr } => self.write_cr0(self.gpr(gpr)),
            CrAccess::MovTo { cr: 4, gpr } => self.write_cr4(self.gpr(gpr)),
            CrAccess::MovTo { cr: 3, gpr } => {
                w(g::CR3, self.gpr(gpr))?;
                Ok(None)
            }
            CrAccess::MovTo { cr: 8, .. } => Ok(None),
            CrAccess::MovFrom { cr: 3, gpr } => {
                let v = vmcs::read(g::CR3)?;
                self.regs.set_gpr(gpr, v);
                Ok(None)
            }
            CrAccess::MovFrom { cr: 8, gpr } => {
                self.regs.set_gpr(gpr, 0);
                Ok(None)
            }
            CrAccess::Clts => {
                let cr0 = self.control_regs().cr0 & !(1 << 3);
                self.write_cr0(cr0)
            }
            CrAccess::Lmsw { value } => {
                let cur = self.control_regs().cr0;
                // LMSW sets PE but never clears it, and touches only bits 3:0.
                let v = (cur & !0xe) | (u64::from(value) & 0xf) | (cur & CR0_PE);
                self.write_cr0(v)
            }
            _ => Ok(Some(Event::UD)),
        }
    }

    pub(super) fn queue(&mut self, ev: Event) -> Result<(), Error> {
        let (info, err) = exit::encode_event(ev).ok_or(Error::BadEvent)?;
        if self.pending_event {
            return Err(Error::EventPending);
        }
        vmcs::make_current(self.vmcs)?;
        if let Some(e) = err {
            w(ctl::VMENTRY_EXCEPTION_ERR_CODE, e.into())?;
        }
        w(ctl::VMENTRY_INTERRUPTION_INFO_FIELD, info.into())?;
        self.pending_event = true;
        Ok(())
    }

    fn retire(&mut self) -> Result<(), Error> {
        self.advance_rip()
    }

    /// Handles what is the backend's own; `Some(exit)` for the kernel.
    pub(super) fn handle(&mut self, d: Decoded) -> Result<Option<Exit>, Error> {
        match d {
            Decoded::Exit(Exit::Rdmsr { msr: MSR_PAT }) if self.ctls.pat_switched() => {
                let p = vmcs::read(g::IA32_PAT_FULL)?;
                self.regs.set_edx_eax(p);
                self.retire()?;
            }
            Decoded::Exit(Exit::Wrmsr {
                msr: MSR_PAT,
                value,
            }) if self.ctls.pat_switched() => {
                if value
                    .to_le_bytes()
                    .iter()
                    .all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
                {
                    w(g::IA32_PAT_FULL, value)?;
                    self.retire()?;
                } else {
                    self.queue(Event::GP0)?;
                }
            }
            Decoded::Exit(e) => return Ok(Some(e)),
            Decoded::Cr(a) => match self.handle_cr(a)? {
                Some(ev) => self.queue(ev)?,
                None => self.retire()?,
            },
            Decoded::Xsetbv => {
                let value = (self.regs.rdx << 32) | (self.regs.rax & 0xffff_ffff);
                if self.control_regs().cr4 & CR4_OSXSAVE == 0 {
                    self.queue(Event::UD)?;
                } else if self.regs.rcx as u32 != 0
                    || self.cpl() != 0
                    || !hw::xcr0_valid(value, hw::xcr0_supported())
                {
                    self.queue(Event::GP0)?;
                } else {
                    self.guest_xcr0 = value;
                    self.retire()?;
                }
            }
            Decoded::Skip => self.retire()?,
            Decoded::InjectUd => self.queue(Event::UD)?,
            Decoded::EntryFailed => {
                return Err(Error::EntryFailed {
                    reason: vmcs::read_or0(ro::EXIT_REASON),
                    qualification: vmcs::read_or0(ro::EXIT_QUALIFICATION),
                });
            }
        }
        Ok(None)
    }
}
