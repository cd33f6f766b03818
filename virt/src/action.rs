//! The one answer to an exit, from whichever part of the hypervisor handled it — a device, the
//! platform, a personality or the architectural default — up to the scheduler loop.

use crate::{Error, Event};

/// What happens to the vCPU after an exit was handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Action {
    /// Not this handler's: the next one in line (platform, personality, architectural default)
    /// answers.
    NotMine,
    /// Handled: retire the instruction and resume.
    Done,
    /// Handled without retiring it (a hypercall preempted to be continued, an interrupt
    /// window, an MMIO access already retired by its emulation).
    Retry,
    /// Inject this fault instead of retiring the instruction.
    Fault(Event),
    /// Retire the instruction, then block the vCPU until an event is pending for it (Xen
    /// SCHEDOP_block/poll: the personality's `has_pending_work` says when) or an interrupt.
    Block,
    /// Retire the instruction (HLT), then park the vCPU until an interrupt is pending.
    Halt,
    /// Retire the instruction and give up the rest of the time slice.
    Yield,
    /// Retire the instruction and end the VM.
    Stop(StopReason),
}

/// Why a VM ended, whether the guest asked for it or the hypervisor could not go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StopReason {
    PowerOff,
    /// A reset or reboot request (a reset ends the VM).
    Reset,
    /// The guest reported a crash; the words are the ABI's crash parameters.
    Crash([u64; 5]),
    /// The guest asked to be suspended, or something else the hypervisor does not offer; the
    /// ABI's code.
    Request(u32),
    TripleFault {
        vcpu: u8,
    },
    /// An exit the hypervisor does not know how to continue from.
    UnknownExit {
        vcpu: u8,
        reason: u64,
        qualification: u64,
        info: u64,
    },
    /// VM entry refused the guest state, or the vCPU layer failed.
    VcpuError {
        vcpu: u8,
        error: Error,
    },
    /// The guest did something the platform cannot continue from (named).
    Unsupported {
        vcpu: u8,
        what: &'static str,
        detail: u64,
    },
}

impl core::fmt::Display for StopReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StopReason::PowerOff => f.write_str("powered off"),
            StopReason::Reset => f.write_str("reset"),
            StopReason::Crash(p) => write!(
                f,
                "guest crash {:#x} {:#x} {:#x} {:#x} {:#x}",
                p[0], p[1], p[2], p[3], p[4]
            ),
            StopReason::Request(code) => write!(f, "vCPU 0: guest shutdown request ({code:#x})"),
            StopReason::TripleFault { vcpu } => write!(f, "triple fault on vCPU {vcpu}"),
            StopReason::UnknownExit {
                vcpu,
                reason,
                qualification,
                info,
            } => write!(
                f,
                "unhandled exit on vCPU {vcpu}: reason {reason:#x} qualification {qualification:#x} info {info:#x}"
            ),
            StopReason::VcpuError { vcpu, error } => write!(f, "vCPU {vcpu} cannot run: {error:?}"),
            StopReason::Unsupported { vcpu, what, detail } => {
                write!(f, "vCPU {vcpu}: {what} ({detail:#x})")
            }
        }
    }
}
