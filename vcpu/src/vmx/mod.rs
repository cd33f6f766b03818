//! Intel VMX backend.

use crate::{
    ControlRegs, Error, Event, Exit, FrameSource, GuestRam, GuestRegs, PerCpu, SegReg, Segment,
    Vcpu, VcpuConfig, VmxCaps,
};

pub(crate) fn enable(_c: &VmxCaps, _cpu_id: u32, _frames: &mut impl FrameSource) -> Result<PerCpu, Error> {
    Err(Error::Unsupported)
}

/// One VMX vCPU.
pub struct VmxVcpu {
    regs: GuestRegs,
    ram: GuestRam,
}

impl VmxVcpu {
    pub(crate) fn new(_cpu: &PerCpu, _frames: &mut impl FrameSource, cfg: &VcpuConfig) -> Result<Self, Error> {
        let _ = GuestRam::new(cfg.ram);
        Err(Error::Unsupported)
    }
}

impl Vcpu for VmxVcpu {
    fn run(&mut self, _cpu: &PerCpu) -> Result<Exit, Error> {
        Err(Error::Unsupported)
    }
    fn regs(&self) -> &GuestRegs {
        &self.regs
    }
    fn regs_mut(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }
    fn control_regs(&self) -> ControlRegs {
        ControlRegs::default()
    }
    fn segment(&self, _seg: SegReg) -> Segment {
        Segment::default()
    }
    fn cpl(&self) -> u8 {
        0
    }
    fn memory(&self) -> &GuestRam {
        &self.ram
    }
    fn advance_rip(&mut self) -> Result<(), Error> {
        Err(Error::Unsupported)
    }
    fn inject(&mut self, _event: Event) -> Result<(), Error> {
        Err(Error::Unsupported)
    }
    fn event_pending(&self) -> bool {
        false
    }
    fn interrupt_window_open(&self) -> bool {
        false
    }
    fn request_interrupt_window(&mut self, _on: bool) {}
    fn set_tsc_offset(&mut self, _offset: u64) {}
    fn flush_nested_tlb(&mut self) {}
    fn set_io_intercept(&mut self, _port: u16, _on: bool) {}
    fn set_msr_intercept(&mut self, _msr: u32, _read: bool, _write: bool) -> bool {
        false
    }
    fn set_exception_intercepts(&mut self, _mask: u32) {}
    fn init(&mut self) {}
    fn sipi(&mut self, _vector: u8) -> Result<(), Error> {
        Err(Error::Unsupported)
    }
    fn waiting_for_sipi(&self) -> bool {
        false
    }
    fn unload(&mut self) {}
}
