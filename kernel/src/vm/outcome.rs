//! How a VM ended, in the words the hypervisor reports it with: one `vm NAME: stopped: ...`
//! line on COM1 for people, and one `vm-end NAME CLASS` record on the log channel for
//! harnesses (a guest can print the first, never the second). A run passes only when every VM
//! ended cleanly.

use virt::StopReason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered itself off.
    PoweredOff,
    /// The guest rebooted and its policy said stop rather than restart.
    Rebooted,
    /// The guest reported a crash (Xen SHUTDOWN_crash, Hyper-V crash MSRs).
    Crashed,
    TripleFault,
    /// The hypervisor could not go on with it (an exit it cannot emulate, a vCPU that cannot
    /// run, a request it does not offer).
    Error,
    /// It never started: its kernel could not be loaded, or its resources not found.
    BootFailed,
}

impl Outcome {
    pub fn of(reason: &StopReason) -> Self {
        match reason {
            StopReason::PowerOff => Outcome::PoweredOff,
            StopReason::Reset => Outcome::Rebooted,
            StopReason::Crash(_) => Outcome::Crashed,
            StopReason::TripleFault { .. } => Outcome::TripleFault,
            StopReason::Request(_)
            | StopReason::UnknownExit { .. }
            | StopReason::VcpuError { .. }
            | StopReason::Unsupported { .. } => Outcome::Error,
        }
    }

    /// The class on the log channel; xtask maps it to its exit code.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::PoweredOff => "poweroff",
            Outcome::Rebooted => "reboot",
            Outcome::Crashed => "crash",
            Outcome::TripleFault => "triple-fault",
            Outcome::Error => "error",
            Outcome::BootFailed => "boot-failure",
        }
    }

    /// An end the guest asked for in an orderly way.
    pub fn clean(self) -> bool {
        matches!(self, Outcome::PoweredOff | Outcome::Rebooted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_orderly_ends_are_clean() {
        assert!(Outcome::of(&StopReason::PowerOff).clean());
        assert!(Outcome::of(&StopReason::Reset).clean());
        for r in [
            StopReason::Crash([1, 2, 3, 4, 5]),
            StopReason::TripleFault { vcpu: 1 },
            StopReason::Request(2),
            StopReason::Unsupported {
                vcpu: 0,
                what: "x",
                detail: 0,
            },
        ] {
            assert!(!Outcome::of(&r).clean(), "{r:?}");
        }
        assert!(!Outcome::BootFailed.clean());
        assert_eq!(Outcome::of(&StopReason::Crash([0; 5])).as_str(), "crash");
    }
}
