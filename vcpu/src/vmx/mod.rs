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
mod run;
mod vmcs;

use crate::bits::*;
use crate::{
    ControlRegs, Error, Event, Exit, FrameSource, GuestMemory, GuestRam, GuestRegs, InitialState,
    NestedFormat, PerCpu, SegReg, Segment, Transition, Vcpu, VcpuConfig, Vendor, VmxCaps, hostmem,
    hw,
};
use controls::{Controls, CrFixed};
use exit::{CrAccess, Decoded};
use x86::vmx::vmcs::{control as ctl, guest as g, host as h, ro};

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
const AREA_MSRS: [u32; 5] = [
    0xc000_0102,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
];
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

fn write_seg(r: SegReg, s: &Segment) -> Result<(), Error> {
    let (sel, base, limit, ar) = match r {
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
    };
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
    fn setup_host(&mut self) -> Result<(), Error> {
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

    fn set_cr0(&mut self, v: u64) -> Result<(), Error> {
        w(g::CR0, (v | self.fixed.cr0_on) & self.fixed.cr0_allowed)?;
        w(ctl::CR0_READ_SHADOW, v)
    }

    fn set_cr4(&mut self, v: u64) -> Result<(), Error> {
        w(g::CR4, (v | self.fixed.cr4_on) & self.fixed.cr4_allowed)?;
        w(ctl::CR4_READ_SHADOW, v)
    }

    fn set_long_mode(&mut self, on: bool) -> Result<(), Error> {
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

    fn set_initial(&mut self, st: InitialState) -> Result<(), Error> {
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

    fn set_common(&mut self, cr0: u64, cr4: u64, efer: u64) -> Result<(), Error> {
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

    fn queue(&mut self, ev: Event) -> Result<(), Error> {
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
    fn handle(&mut self, d: Decoded) -> Result<Option<Exit>, Error> {
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

use run::host_msr as read_msr;

impl VmxVcpu {
    /// Accessors between exits may follow another vCPU's run on this pCPU: make ours current.
    fn cur(&self) {
        let _ = vmcs::make_current(self.vmcs);
    }
}

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
            let entered = run::enter(&mut self.regs, self.launched);
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
        let (sel, base, limit, ar) = match r {
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
        };
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
        self.cur();
        let len = self.exit_insn_len;
        if len == 0 || len > 15 {
            return Err(Error::UndecodableInstruction);
        }
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
