//! Errors the backends return to the kernel.

/// Something the kernel must act on: refuse to start, stop the VM, or fix its call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Neither VMX nor SVM is usable on this CPU (or the backend was compiled out).
    Unsupported,
    /// VMX is locked off in IA32_FEATURE_CONTROL, or SVM disabled in VM_CR (firmware setting).
    DisabledByFirmware,
    /// The nested paging this crate requires (EPT/NPT) is missing.
    NoNestedPaging,
    /// A paging-off / real-mode initial state without VMX unrestricted guest.
    NoUnrestrictedGuest,
    /// The frame source ran dry.
    OutOfFrames,
    /// A VMX instruction failed (VMfailValid carries the VM-instruction error number).
    VmFail { instruction_error: u32 },
    /// VMfailInvalid: no current VMCS or a bad VMXON/VMCS pointer.
    VmFailInvalid,
    /// VM entry refused the guest state (VMX exit reason with bit 31, SVM VMEXIT_INVALID).
    /// The VM cannot run.
    EntryFailed { reason: u64, qualification: u64 },
    /// `run` on a vCPU that waits for SIPI.
    WaitingForSipi,
    /// VMX: `run` on a pCPU other than the last one without `unload` first.
    NotUnloaded,
    /// An event is already pending injection.
    EventPending,
    /// The event cannot be injected (e.g. vector 2 as an exception, >= 32 exception).
    BadEvent,
    /// `advance_rip` could not confirm the length of the exiting instruction: the bytes at RIP
    /// do not match the exit, or are unreadable. The kernel injects #UD or stops the VM.
    UndecodableInstruction,
    /// A bad argument to a builder (misaligned or overflowing range, tag 0, ...).
    InvalidArgument,
    /// A guest memory access failed.
    Memory,
}

impl From<crate::MemError> for Error {
    fn from(_: crate::MemError) -> Self {
        Error::Memory
    }
}
