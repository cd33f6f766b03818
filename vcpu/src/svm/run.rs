//! SVM enable, VMCB page access and the VMRUN stub.
// UNSAFETY: turning on EFER.SVME, pointing VM_HSAVE_PA at our frame, borrowing the VMCB page
// this vCPU owns, and the VMRUN/VMLOAD/VMSAVE/CLGI/STGI sequence all need unsafe; nothing else
// in the SVM backend does.
#![expect(unsafe_code)]

use super::vmcb::Vmcb;
use crate::{Error, GuestRegs, hw};
use core::ptr::NonNull;
use virt::reg_offsets as o;

const VM_CR: u32 = 0xc001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;
const VM_HSAVE_PA: u32 = 0xc001_0117;
const EFER: u32 = 0xc000_0080;

/// Sets EFER.SVME and VM_HSAVE_PA on this pCPU. The caller has checked CPUID SVM.
pub(crate) fn enable_svm(hsave: u64) -> Result<(), Error> {
    // SAFETY: VM_CR and EFER exist on every CPU with CPUID SVM (checked by detect()).
    let vm_cr = unsafe { hw::rdmsr(VM_CR) };
    if vm_cr & VM_CR_SVMDIS != 0 {
        return Err(Error::DisabledByFirmware);
    }
    // SAFETY: SVMDIS is clear, so setting EFER.SVME is allowed; it changes nothing else for the
    // host. VM_HSAVE_PA takes a 4 KiB-aligned frame we own for the life of the kernel.
    unsafe {
        hw::wrmsr(EFER, hw::rdmsr(EFER) | crate::bits::EFER_SVME);
        hw::wrmsr(VM_HSAVE_PA, hsave);
    }
    Ok(())
}

/// The VMCB page of one vCPU; only this vCPU touches it outside VMRUN.
pub(crate) struct VmcbPage(NonNull<Vmcb>);

// SAFETY: the page is owned by exactly one vCPU, which the kernel moves between pCPUs only
// as a whole (behind its lock); nothing else holds the pointer, and SVM keeps no per-pCPU
// state for a VMCB between VMRUNs.
unsafe impl Send for VmcbPage {}

impl VmcbPage {
    /// `pa` is a zeroed frame from the frame source, owned by the new vCPU from now on.
    pub(crate) fn new(pa: u64) -> Option<Self> {
        NonNull::new(crate::host_ptr(pa).cast::<Vmcb>()).map(VmcbPage)
    }
    pub(crate) fn pa(&self) -> u64 {
        self.0.as_ptr() as u64
    }
    pub(crate) fn get(&self) -> &Vmcb {
        // SAFETY: the frame is 4 KiB aligned, identity-mapped and owned by this vCPU; the CPU
        // writes it only inside VMRUN, while `&mut self` is held by `run` and no borrow exists.
        unsafe { self.0.as_ref() }
    }
    pub(crate) fn get_mut(&mut self) -> &mut Vmcb {
        // SAFETY: as in `get`; `&mut self` makes the borrow unique.
        unsafe { self.0.as_mut() }
    }
}

/// Enters the guest whose VMCB is `vmcb_pa` and returns after #VMEXIT, with the guest GPRs
/// (except RAX/RSP, which live in the VMCB) saved to `regs`. Host FS/GS/TR/LDTR and the
/// syscall MSRs are saved to and restored from `host_save` with VMSAVE/VMLOAD; the guest's come
/// from and go back to its VMCB. Interrupts must be off: GIF is cleared around the switch and set
/// again before returning, so a pending host interrupt is taken at the caller's next `sti`.
pub(crate) fn vmrun(vmcb: &mut VmcbPage, host_save: u64, regs: &mut GuestRegs) {
    let vmcb_pa = vmcb.pa();
    // SAFETY: `vmcb_pa` is this vCPU's valid VMCB (uniquely borrowed), `host_save` a page owned
    // by this pCPU's PerCpu, and `regs` a valid GuestRegs; the stub preserves every callee-saved
    // register and the stack.
    unsafe { svm_vmrun(regs, vmcb_pa, host_save) }
}

#[unsafe(naked)]
unsafe extern "sysv64" fn svm_vmrun(_regs: *mut GuestRegs, _vmcb: u64, _host_save: u64) {
    core::arch::naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "push rdi",
        "push rdx",
        "clgi",
        // With V_INTR_MASKING the host's IF decides whether a physical interrupt exits the
        // guest; GIF=0 keeps it from being taken here before VMRUN.
        "sti",
        "mov rax, rdx",
        "vmsave rax",
        "mov rax, rsi",
        "mov rcx, [rdi + {rcx}]",
        "mov rdx, [rdi + {rdx}]",
        "mov rbx, [rdi + {rbx}]",
        "mov rbp, [rdi + {rbp}]",
        "mov rsi, [rdi + {rsi}]",
        "mov r8,  [rdi + {r8} + 0]",
        "mov r9,  [rdi + {r8} + 8]",
        "mov r10, [rdi + {r8} + 16]",
        "mov r11, [rdi + {r8} + 24]",
        "mov r12, [rdi + {r8} + 32]",
        "mov r13, [rdi + {r8} + 40]",
        "mov r14, [rdi + {r8} + 48]",
        "mov r15, [rdi + {r8} + 56]",
        "mov rdi, [rdi + {rdi}]",
        "vmload rax",
        "vmrun rax",
        "vmsave rax",
        "push rdi",
        "mov rdi, [rsp + 16]",
        "mov [rdi + {rcx}], rcx",
        "mov [rdi + {rdx}], rdx",
        "mov [rdi + {rbx}], rbx",
        "mov [rdi + {rbp}], rbp",
        "mov [rdi + {rsi}], rsi",
        "mov [rdi + {r8} + 0], r8",
        "mov [rdi + {r8} + 8], r9",
        "mov [rdi + {r8} + 16], r10",
        "mov [rdi + {r8} + 24], r11",
        "mov [rdi + {r8} + 32], r12",
        "mov [rdi + {r8} + 40], r13",
        "mov [rdi + {r8} + 48], r14",
        "mov [rdi + {r8} + 56], r15",
        "pop qword ptr [rdi + {rdi}]",
        "pop rax",
        "vmload rax",
        // The pending host interrupt is taken at the kernel's next `sti`, not here.
        "cli",
        "stgi",
        "add rsp, 8",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        rcx = const o::RCX,
        rdx = const o::RDX,
        rbx = const o::RBX,
        rbp = const o::RBP,
        rsi = const o::RSI,
        rdi = const o::RDI,
        r8 = const o::R8,
    );
}
