//! Hardware virtualization: one [`Vcpu`] interface over Intel VMX and AMD SVM, chosen at run time.
//!
//! The kernel calls [`detect`] once, [`enable`] on every pCPU, builds one
//! [`NestedPageTable`] per VM, creates [`AnyVcpu`]s and runs them; see `API.md` for the loop.
//! The vocabulary (exits, events, registers, guest memory, page walks, instruction lengths)
//! is the pure `virt` crate; this crate adds what touches the hardware, and keeps what can be
//! pure here (exit decoding, table encoding, VMCB layout) host-tested with `cargo test -p vcpu`.
#![cfg_attr(not(test), no_std)]

#[cfg(not(any(feature = "vmx", feature = "svm")))]
compile_error!("enable at least one of the features `vmx` and `svm`");

mod caps;
mod hostmem;
#[cfg_attr(not(feature = "vmx"), allow(dead_code))]
mod hw;
pub mod mitigate;
pub use hw::cpu_facts;
mod nested;
mod state;

#[cfg(feature = "svm")]
pub mod svm;
#[cfg(feature = "vmx")]
pub mod vmx;

mod any;

pub use any::{AnyVcpu, PerCpu, enable};
pub use caps::{SvmCaps, Vendor, VmxCaps, detect};
pub use hostmem::{GuestRam, HostTables, host_ptr, zero as zero_host};
pub use nested::{NestedFormat, NestedPageTable, Perm, SIZE_2M, SIZE_4K, TableMemory};
pub use state::VcpuConfig;
// The vocabulary the backends speak, re-exported so that the kernel names one crate for a vCPU.
pub use virt::{
    ControlRegs, Error, Event, Exit, GuestMemory, GuestRegs, InitialState, IoExit, MemError,
    NestedFault, RamRegion, SegReg, Segment, Transition, bits, check_range, insn_len, mmio,
    personality, vector, walk,
};

/// Where the crate gets its 4 KiB frames (VMXON region, VMCS/VMCB, bitmaps, nested tables).
pub trait FrameSource {
    /// A zeroed, 4 KiB-aligned, identity-mapped frame; `None` when memory is exhausted.
    fn alloc_zeroed_frame(&mut self) -> Option<u64>;

    /// `count` zeroed frames at consecutive addresses (SVM's I/O and MSR permission maps are
    /// 12 and 8 KiB). The default asks for single frames and succeeds only if they come out
    /// adjacent, in either order (bump allocators do); override it if yours does not.
    fn alloc_zeroed_contiguous(&mut self, count: usize) -> Option<u64> {
        let first = self.alloc_zeroed_frame()?;
        let (mut lo, mut hi) = (first, first);
        for _ in 1..count {
            let f = self.alloc_zeroed_frame()?;
            if f == hi + 0x1000 {
                hi = f;
            } else if f + 0x1000 == lo {
                lo = f;
            } else {
                return None;
            }
        }
        Some(lo)
    }
}

/// One virtual CPU. Implemented by both backends and by [`AnyVcpu`], which the kernel uses.
///
/// The instruction that caused an exit is retired only by [`Vcpu::advance_rip`]; registers
/// changed through [`Vcpu::regs_mut`] take effect at the next [`Vcpu::run`].
pub trait Vcpu {
    /// Enters the guest on this pCPU and returns at the next exit the kernel must see.
    /// Interrupts must be disabled by the caller (they stay disabled on return; after
    /// [`Exit::ExternalInterrupt`] the kernel enables them briefly to take the host interrupt).
    fn run(&mut self, cpu: &PerCpu) -> Result<Exit, Error>;

    /// GPRs, RIP and RFLAGS as of the last exit.
    fn regs(&self) -> &GuestRegs;
    fn regs_mut(&mut self) -> &mut GuestRegs;
    /// CR0/CR2/CR3/CR4/EFER as the guest sees them.
    fn control_regs(&self) -> ControlRegs;
    /// The guest's XCR0 (switched in for every entry; what CPUID leaf 0xD must describe).
    fn xcr0(&self) -> u64;
    fn segment(&self, seg: SegReg) -> Segment;
    /// Current privilege level (0..=3).
    fn cpl(&self) -> u8;
    /// Guest RAM of this vCPU (the same block for all vCPUs of a VM).
    fn memory(&self) -> &GuestRam;

    /// Retires the instruction of the last exit: VMX exit instruction length, SVM next_rip
    /// (NRIP save) or EXITINFO2 (I/O), and otherwise the crate's own decode of the bytes at
    /// RIP. `Err(UndecodableInstruction)`: the bytes are not the exiting instruction (the
    /// guest rewrote them) — inject #UD or stop the VM. Also clears the interrupt shadow.
    fn advance_rip(&mut self) -> Result<(), Error>;
    /// Retires an instruction of `len` bytes the kernel decoded itself (an emulated MMIO
    /// access, which exits without a length): RIP moves on and an STI/MOV-SS shadow ends, as
    /// executing it would.
    fn skip_instruction(&mut self, len: u64) -> Result<(), Error>;

    /// Queues an event for the next entry. `Err(EventPending)` if one is queued already
    /// (including an event the backend re-queued because an exit interrupted its delivery).
    fn inject(&mut self, event: Event) -> Result<(), Error>;
    /// Whether an event is queued for the next entry.
    fn event_pending(&self) -> bool;
    /// RFLAGS.IF set, no STI/MOV-SS shadow, no event queued: an external interrupt may be
    /// injected now.
    fn interrupt_window_open(&self) -> bool;
    /// Asks for [`Exit::InterruptWindow`] as soon as the guest can take an interrupt (or
    /// cancels the request).
    fn request_interrupt_window(&mut self, on: bool);

    /// Guest TSC = host TSC + `offset` (wrapping).
    fn set_tsc_offset(&mut self, offset: u64);
    /// After changing or removing a present nested mapping of this vCPU's VM.
    fn flush_nested_tlb(&mut self);

    /// Port `port` exits when `on`, runs on the host port when not (default: every port exits).
    fn set_io_intercept(&mut self, port: u16, on: bool);
    /// Reads/writes of `msr` exit when set. `false` when the MSR is outside the bitmap ranges
    /// (those always exit) or is one the backend must keep intercepted.
    fn set_msr_intercept(&mut self, msr: u32, read: bool, write: bool) -> bool;
    /// Exception vectors (bit n = vector n) that cause [`Exit::Exception`] (default: none).
    fn set_exception_intercepts(&mut self, mask: u32);

    /// Virtual INIT: the vCPU waits for SIPI (not runnable).
    fn init(&mut self);
    /// Back to `state` as at creation, for a VM that starts over: registers, segments,
    /// control registers, XCR0, queued events and the guest's TLB entries. Call it on the
    /// pCPU that runs the vCPU.
    fn reset(&mut self, state: InitialState) -> Result<(), Error>;
    /// Virtual SIPI: real mode at CS = vector << 8, IP = 0. Ignored unless waiting for SIPI.
    fn sipi(&mut self, vector: u8) -> Result<(), Error>;
    fn waiting_for_sipi(&self) -> bool;

    /// Before the vCPU next runs on another pCPU: flush what this pCPU holds of it (VMCLEAR on
    /// VMX; nothing on SVM). Call it on the pCPU the vCPU last ran on.
    fn unload(&mut self);

    /// What the last entry injected and the last exit reported, raw.
    fn last_transition(&self) -> Transition;
}
