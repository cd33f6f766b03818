//! VMXON, INVEPT/INVVPID, host-state capture and the VM-entry stubs.
// UNSAFETY: VMXON changes the CPU's operating mode, INVEPT/INVVPID and VMLAUNCH/VMRESUME are
// VMX instructions with register-level contracts, and reading the host TSS base means reading
// the host GDT through its (identity-mapped) address. Nothing else in the VMX backend is unsafe.
#![expect(unsafe_code)]

use crate::{Error, GuestRegs, VmxCaps, hostmem, hw};
use virt::reg_offsets as o;
use x86::vmx::vmcs::host;

const FEATURE_CONTROL: u32 = 0x3a;
const FC_LOCK: u64 = 1;
const FC_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// VMXON on this pCPU with `region` (a zeroed frame).
pub(crate) fn vmxon(c: &VmxCaps, region: u64) -> Result<(), Error> {
    // SAFETY: IA32_FEATURE_CONTROL exists whenever CPUID reports VMX.
    let fc = unsafe { hw::rdmsr(FEATURE_CONTROL) };
    if fc & FC_LOCK != 0 && fc & FC_VMX_OUTSIDE_SMX == 0 {
        return Err(Error::DisabledByFirmware);
    }
    if fc & FC_LOCK == 0 {
        // SAFETY: the MSR is unlocked, so we may enable VMX outside SMX and lock it.
        unsafe { hw::wrmsr(FEATURE_CONTROL, fc | FC_LOCK | FC_VMX_OUTSIDE_SMX) };
    }
    let cr0 = (hw::cr0() | c.cr0_fixed0) & c.cr0_fixed1;
    let cr4 = (hw::cr4() | c.cr4_fixed0 | crate::bits::CR4_VMXE) & c.cr4_fixed1;
    // SAFETY: only bits the VMX fixed-bit MSRs require are added (NE, VMXE on a 64-bit host
    // with PE/PG already set); the host keeps running as before.
    unsafe {
        hw::write_cr0(cr0);
        hw::write_cr4(cr4);
    }
    hostmem::write_frame_u64(region, 0, c.revision().into());
    // SAFETY: CR0/CR4 satisfy the fixed bits, feature control allows VMX, and `region` is a
    // 4 KiB-aligned frame holding the revision id that stays ours for the kernel's lifetime.
    unsafe { x86::bits64::vmx::vmxon(region) }.map_err(|_| Error::VmFailInvalid)
}

/// INVEPT (type 1 single-context, 2 all-context) for `eptp`.
pub(crate) fn invept(kind: u64, eptp: u64) {
    let desc: [u64; 2] = [eptp, 0];
    // SAFETY: VMX is on; the descriptor is a valid 16-byte memory operand and the type is one
    // the caller checked the capability for. Failure only sets flags, which we ignore: an
    // unsupported type would have been filtered.
    unsafe { core::arch::asm!("invept {}, [{}]", in(reg) kind, in(reg) &desc, options(nostack)) };
}

/// INVVPID single-context for `vpid`.
pub(crate) fn invvpid_single(vpid: u16) {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    // SAFETY: as for INVEPT; VPID is non-zero (checked at vCPU creation).
    unsafe { core::arch::asm!("invvpid {}, [{}]", in(reg) 1u64, in(reg) &desc, options(nostack)) };
}

/// The host state the VMCS needs, read from the running CPU.
pub(crate) struct HostState {
    pub cs: u16,
    pub ss: u16,
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
    pub tr: u16,
    pub fs_base: u64,
    pub gs_base: u64,
    pub tr_base: u64,
    pub gdtr_base: u64,
    pub idtr_base: u64,
}

pub(crate) fn host_state() -> HostState {
    let (cs, ss, ds, es, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
    let mut gdtr = [0u8; 10];
    let mut idtr = [0u8; 10];
    // SAFETY: reading segment selectors and descriptor-table registers has no side effects;
    // the 10-byte buffers fit SGDT/SIDT's 64-bit operand.
    unsafe {
        core::arch::asm!(
            "mov {0:x}, cs", "mov {1:x}, ss", "mov {2:x}, ds", "mov {3:x}, es",
            "mov {4:x}, fs", "mov {5:x}, gs", "str {6:x}",
            out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, out(reg) tr,
            options(nomem, nostack, preserves_flags)
        );
        core::arch::asm!("sgdt [{}]", "sidt [{}]", in(reg) gdtr.as_mut_ptr(), in(reg) idtr.as_mut_ptr(), options(nostack, preserves_flags));
    }
    let base = |b: &[u8; 10]| u64::from_le_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]);
    let gdtr_base = base(&gdtr);
    let tr_base = if tr & !7 == 0 {
        0
    } else {
        let d = gdtr_base + u64::from(tr & !7);
        // SAFETY: the GDT is host memory identity-mapped by the kernel and the descriptor at
        // TR's index is a 16-byte TSS descriptor (the CPU loaded TR from it).
        let (lo, hi) = unsafe {
            (
                core::ptr::read_volatile(hostmem::host_ptr(d).cast::<u64>()),
                core::ptr::read_volatile(hostmem::host_ptr(d + 8).cast::<u64>()),
            )
        };
        ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | ((hi & 0xffff_ffff) << 32)
    };
    // SAFETY: FS_BASE/GS_BASE exist on every 64-bit CPU.
    let (fs_base, gs_base) = unsafe { (hw::rdmsr(0xc000_0100), hw::rdmsr(0xc000_0101)) };
    HostState {
        cs,
        ss,
        ds,
        es,
        fs,
        gs,
        tr,
        fs_base,
        gs_base,
        tr_base,
        gdtr_base,
        idtr_base: base(&idtr),
    }
}

/// An architectural MSR of every 64-bit VMX CPU (EFER, PAT, SYSENTER_*), for host state.
pub(crate) fn host_msr(msr: u32) -> u64 {
    debug_assert!(matches!(msr, 0xc000_0080 | 0x277 | 0x174..=0x176));
    // SAFETY: the MSRs above exist on every CPU with VMX and long mode; CPL 0.
    unsafe { hw::rdmsr(msr) }
}

/// Address the CPU jumps to on VM exit (HOST_RIP).
pub(crate) fn exit_stub_addr() -> u64 {
    vmx_exit_stub as *const () as u64
}

/// Enters the guest (VMLAUNCH if `!launched`, else VMRESUME) with GPRs from `regs`; on VM
/// exit the GPRs are stored back. Returns false when the instruction itself failed (VMfail:
/// the guest never ran).
pub(crate) fn enter(regs: &mut GuestRegs, launched: bool) -> bool {
    // SAFETY: the current VMCS has HOST_RIP = vmx_exit_stub, host state captured from this
    // pCPU and HOST_RSP written by the stub itself; the stubs preserve callee-saved registers.
    unsafe { vmx_enter(regs, launched as u64) == 0 }
}

#[unsafe(naked)]
unsafe extern "sysv64" fn vmx_enter(_regs: *mut GuestRegs, _launched: u64) -> u64 {
    core::arch::naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "push rdi",
        "mov rax, {host_rsp}",
        "vmwrite rax, rsp",
        "cmp rsi, 0",
        "mov rax, [rdi + {rax}]",
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
        "jne 2f",
        "vmlaunch",
        "jmp 3f",
        "2:",
        "vmresume",
        "3:",
        // Only reached when VMLAUNCH/VMRESUME failed.
        "add rsp, 8",
        "mov eax, 1",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        host_rsp = const host::RSP,
        rax = const o::RAX,
        rcx = const o::RCX,
        rdx = const o::RDX,
        rbx = const o::RBX,
        rbp = const o::RBP,
        rsi = const o::RSI,
        rdi = const o::RDI,
        r8 = const o::R8,
    );
}

#[unsafe(naked)]
unsafe extern "sysv64" fn vmx_exit_stub() {
    core::arch::naked_asm!(
        // RSP is HOST_RSP: the `regs` pointer pushed by vmx_enter is on top.
        "push rdi",
        "mov rdi, [rsp + 8]",
        "mov [rdi + {rax}], rax",
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
        "add rsp, 8",
        "xor eax, eax",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        rax = const o::RAX,
        rcx = const o::RCX,
        rdx = const o::RDX,
        rbx = const o::RBX,
        rbp = const o::RBP,
        rsi = const o::RSI,
        rdi = const o::RDI,
        r8 = const o::R8,
    );
}
