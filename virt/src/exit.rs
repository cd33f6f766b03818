//! The vendor-neutral VM exit, as the kernel's exit loop sees it.
//!
//! Each backend decodes its raw exit information (VMCB EXITCODE/EXITINFO, VMCS exit reason and
//! qualification) into [`Exit`] with pure functions, so the decoding is host-tested. Exits that
//! are the backend's own architectural business never reach the kernel (see `API.md`).

/// Why the guest stopped running. The instruction that caused an instruction exit has *not*
/// been retired: call the backend's `advance_rip` after emulating it, or inject a fault instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Exit {
    /// CPUID; the kernel writes RAX/RBX/RCX/RDX.
    Cpuid { leaf: u32, subleaf: u32 },
    /// RDMSR; the kernel writes EDX:EAX or injects #GP.
    Rdmsr { msr: u32 },
    /// WRMSR with EDX:EAX already combined.
    Wrmsr { msr: u32, value: u64 },
    /// Port I/O.
    Io(IoExit),
    /// VMCALL (Intel) or VMMCALL (AMD); the registers say which call.
    Hypercall,
    /// A guest-physical access the nested tables do not allow (EPT violation / NPF).
    NestedPageFault(NestedFault),
    /// HLT; the vCPU should block until an interrupt is pending for it.
    Hlt,
    /// The interrupt window requested with `request_interrupt_window` is open.
    InterruptWindow,
    /// A host interrupt arrived while the guest ran. It is still pending in the host: the
    /// kernel enables interrupts (sti) to take it, then resumes the guest.
    ExternalInterrupt,
    /// A host NMI arrived while the guest ran (VMX delivers it only as an exit).
    Nmi,
    /// An exception the kernel asked to intercept.
    Exception { vector: u8, error_code: Option<u32> },
    /// A physical INIT signal reached the pCPU while in guest mode.
    Init,
    /// A physical SIPI reached the pCPU (VMX, wait-for-SIPI activity state).
    Sipi { vector: u8 },
    /// Triple fault (VMX) or shutdown (SVM): the VM is dead or must be reset.
    TripleFault,
    /// Anything else. `reason` is the raw exit reason (VMX) or exit code (SVM);
    /// `qualification` is the exit qualification or EXITINFO1, `info` EXITINFO2 or the guest
    /// physical address. Never resume a guest after this without deciding what it means.
    Unknown {
        reason: u64,
        qualification: u64,
        info: u64,
    },
}

/// A port I/O exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IoExit {
    pub port: u16,
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    /// OUT/OUTS when true, IN/INS when false.
    pub write: bool,
    /// For OUT: the value from AL/AX/EAX, already masked to `size`. Zero for IN and strings.
    pub value: u32,
    /// INS/OUTS: the data is in guest memory at ES:RDI / DS:RSI, not in RAX.
    pub string: bool,
    /// REP prefix (count in RCX).
    pub rep: bool,
}

impl IoExit {
    /// Mask with the low `size` bytes set.
    pub const fn mask(&self) -> u32 {
        match self.size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        }
    }

    /// The new RAX after an IN of `data`: only the low `size` bytes change, except that a
    /// 32-bit IN zero-extends into RAX as every 32-bit register write does.
    pub const fn merge_in(&self, rax: u64, data: u32) -> u64 {
        let data = (data & self.mask()) as u64;
        match self.size {
            1 => (rax & !0xff) | data,
            2 => (rax & !0xffff) | data,
            _ => data,
        }
    }
}

/// A nested page fault: EPT violation or NPF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NestedFault {
    pub gpa: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// The GPA was mapped, but without the permission needed.
    pub present: bool,
    /// The fault hit the guest's own page-table walk rather than the final access.
    pub during_walk: bool,
}

/// An event to deliver to the guest at the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// A hardware exception (vector 0..=31, not 2), with an error code where the vector has one.
    Exception {
        vector: u8,
        error_code: Option<u32>,
    },
    /// A maskable interrupt; the caller has checked `interrupt_window_open`.
    ExternalInterrupt(u8),
    Nmi,
}

/// Exception vectors the kernel injects most.
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const UD: u8 = 6;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;

    /// Whether the CPU pushes an error code for this exception vector.
    pub const fn has_error_code(v: u8) -> bool {
        matches!(v, DF | TS | NP | SS | GP | PF | AC | 21 | 29 | 30)
    }
}

impl Event {
    /// #GP(0), the answer to most bad MSR accesses.
    pub const GP0: Event = Event::Exception {
        vector: vector::GP,
        error_code: Some(0),
    };
    /// #UD.
    pub const UD: Event = Event::Exception {
        vector: vector::UD,
        error_code: None,
    };
}
