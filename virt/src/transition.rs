//! The raw facts of a vCPU's last guest entry and exit, kept for post-mortem reports (a triple
//! fault is explained by what was injected and what was being delivered, not by the exit kind).

/// One entry/exit pair as the hardware described it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transition {
    /// Event injected at entry: SVM EVENTINJ (an interrupt offered through V_IRQ shows as
    /// the EVENTINJ form of an external interrupt), VMX VM-entry interruption information
    /// (bit 31 valid, then type and vector); 0 when none.
    pub injected: u64,
    /// SVM exit code, VMX basic exit reason.
    pub reason: u64,
    /// SVM EXITINFO1, VMX exit qualification.
    pub info1: u64,
    /// SVM EXITINFO2, VMX guest-physical address.
    pub info2: u64,
    /// The event whose delivery the exit interrupted: SVM EXITINTINFO, VMX IDT-vectoring
    /// information (bit 31 valid); the backend injects it again.
    pub vectoring: u64,
    /// Guest CR3 and CPL at the exit, read where the backend has them at hand.
    pub cr3: u64,
    pub cpl: u8,
}
