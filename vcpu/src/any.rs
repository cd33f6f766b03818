//! Run-time vendor dispatch: [`enable`], [`PerCpu`] and [`AnyVcpu`].

use crate::{
    ControlRegs, Error, Event, Exit, FrameSource, GuestRam, GuestRegs, SegReg, Segment, Vcpu,
    VcpuConfig, Vendor,
};

/// Per-pCPU virtualization state returned by [`enable`]; keep one per pCPU for its lifetime
/// and pass it to every [`Vcpu::run`] on that pCPU.
#[derive(Debug)]
pub struct PerCpu {
    pub(crate) vendor: Vendor,
    pub(crate) cpu_id: u32,
    /// VMXON region (VMX) or the host save area VM_HSAVE_PA points at (SVM).
    #[allow(dead_code)]
    pub(crate) region: u64,
    /// SVM: the page VMSAVE/VMLOAD keep the host's FS/GS/TR/LDTR/syscall MSRs in.
    #[allow(dead_code)]
    pub(crate) host_save: u64,
}

impl PerCpu {
    pub fn vendor(&self) -> &Vendor {
        &self.vendor
    }
    pub fn cpu_id(&self) -> u32 {
        self.cpu_id
    }
}

/// Turns virtualization on for the calling pCPU (VMXON, or EFER.SVME + VM_HSAVE_PA).
/// `cpu_id` is the kernel's number for this pCPU (used to notice vCPU migration). Also sets
/// CR4.OSXSAVE when the CPU has XSAVE, so guest XCR0 can be switched.
pub fn enable(
    vendor: &Vendor,
    cpu_id: u32,
    frames: &mut impl FrameSource,
) -> Result<PerCpu, Error> {
    match vendor {
        #[cfg(feature = "vmx")]
        Vendor::Vmx(c) => crate::vmx::enable(c, cpu_id, frames),
        #[cfg(feature = "svm")]
        Vendor::Svm(c) => crate::svm::enable(c, cpu_id, frames),
        #[allow(unreachable_patterns)]
        _ => {
            let _ = (cpu_id, frames);
            Err(Error::Unsupported)
        }
    }
}

/// A vCPU of whichever backend this machine has.
pub enum AnyVcpu {
    #[cfg(feature = "vmx")]
    Vmx(crate::vmx::VmxVcpu),
    #[cfg(feature = "svm")]
    Svm(crate::svm::SvmVcpu),
}

impl AnyVcpu {
    /// Creates a vCPU on the calling pCPU (which `cpu` belongs to). VMX leaves the VMCS loaded
    /// here; call [`Vcpu::unload`] before running it on another pCPU.
    pub fn new(
        cpu: &PerCpu,
        frames: &mut impl FrameSource,
        cfg: &VcpuConfig,
    ) -> Result<Self, Error> {
        if cfg.tag == 0 {
            return Err(Error::InvalidArgument);
        }
        match &cpu.vendor {
            #[cfg(feature = "vmx")]
            Vendor::Vmx(_) => Ok(AnyVcpu::Vmx(crate::vmx::VmxVcpu::new(cpu, frames, cfg)?)),
            #[cfg(feature = "svm")]
            Vendor::Svm(_) => Ok(AnyVcpu::Svm(crate::svm::SvmVcpu::new(cpu, frames, cfg)?)),
            #[allow(unreachable_patterns)]
            _ => Err(Error::Unsupported),
        }
    }
}

macro_rules! each {
    ($self:ident, $v:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "vmx")]
            AnyVcpu::Vmx($v) => $e,
            #[cfg(feature = "svm")]
            AnyVcpu::Svm($v) => $e,
        }
    };
}

impl Vcpu for AnyVcpu {
    fn run(&mut self, cpu: &PerCpu) -> Result<Exit, Error> {
        each!(self, v => v.run(cpu))
    }
    fn regs(&self) -> &GuestRegs {
        each!(self, v => v.regs())
    }
    fn regs_mut(&mut self) -> &mut GuestRegs {
        each!(self, v => v.regs_mut())
    }
    fn xcr0(&self) -> u64 {
        each!(self, v => v.xcr0())
    }
    fn control_regs(&self) -> ControlRegs {
        each!(self, v => v.control_regs())
    }
    fn segment(&self, seg: SegReg) -> Segment {
        each!(self, v => v.segment(seg))
    }
    fn cpl(&self) -> u8 {
        each!(self, v => v.cpl())
    }
    fn memory(&self) -> &GuestRam {
        each!(self, v => v.memory())
    }
    fn advance_rip(&mut self) -> Result<(), Error> {
        each!(self, v => v.advance_rip())
    }
    fn inject(&mut self, event: Event) -> Result<(), Error> {
        each!(self, v => v.inject(event))
    }
    fn event_pending(&self) -> bool {
        each!(self, v => v.event_pending())
    }
    fn interrupt_window_open(&self) -> bool {
        each!(self, v => v.interrupt_window_open())
    }
    fn request_interrupt_window(&mut self, on: bool) {
        each!(self, v => v.request_interrupt_window(on))
    }
    fn set_tsc_offset(&mut self, offset: u64) {
        each!(self, v => v.set_tsc_offset(offset))
    }
    fn flush_nested_tlb(&mut self) {
        each!(self, v => v.flush_nested_tlb())
    }
    fn set_io_intercept(&mut self, port: u16, on: bool) {
        each!(self, v => v.set_io_intercept(port, on))
    }
    fn set_msr_intercept(&mut self, msr: u32, read: bool, write: bool) -> bool {
        each!(self, v => v.set_msr_intercept(msr, read, write))
    }
    fn set_exception_intercepts(&mut self, mask: u32) {
        each!(self, v => v.set_exception_intercepts(mask))
    }
    fn init(&mut self) {
        each!(self, v => v.init())
    }
    fn skip_instruction(&mut self, len: u64) -> Result<(), Error> {
        each!(self, v => v.skip_instruction(len))
    }
    fn reset(&mut self, state: crate::InitialState) -> Result<(), Error> {
        each!(self, v => v.reset(state))
    }
    fn sipi(&mut self, vector: u8) -> Result<(), Error> {
        each!(self, v => v.sipi(vector))
    }
    fn waiting_for_sipi(&self) -> bool {
        each!(self, v => v.waiting_for_sipi())
    }
    fn unload(&mut self) {
        each!(self, v => v.unload())
    }
    fn last_transition(&self) -> crate::Transition {
        each!(self, v => v.last_transition())
    }
}
