//! Hypercall status codes (`HV_STATUS`) and the output value that carries them.

/// A TLFS `HV_STATUS`. Only the codes this personality can produce are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u16)]
pub enum HvStatus {
    Success = 0x0000,
    InvalidHypercallCode = 0x0002,
    InvalidHypercallInput = 0x0003,
    InvalidAlignment = 0x0004,
    InvalidParameter = 0x0005,
    AccessDenied = 0x0006,
    InvalidPartitionState = 0x0007,
    OperationDenied = 0x0008,
    InsufficientMemory = 0x000B,
    InvalidVpIndex = 0x000E,
    InvalidPortId = 0x0011,
    InvalidConnectionId = 0x0012,
    InsufficientBuffers = 0x0013,
    InvalidVpState = 0x0015,
    InvalidSynicState = 0x0018,
}

impl HvStatus {
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// Every code this crate may put in RAX, for checks that a result is well formed.
    pub const ALL: [HvStatus; 15] = [
        HvStatus::Success,
        HvStatus::InvalidHypercallCode,
        HvStatus::InvalidHypercallInput,
        HvStatus::InvalidAlignment,
        HvStatus::InvalidParameter,
        HvStatus::AccessDenied,
        HvStatus::InvalidPartitionState,
        HvStatus::OperationDenied,
        HvStatus::InsufficientMemory,
        HvStatus::InvalidVpIndex,
        HvStatus::InvalidPortId,
        HvStatus::InvalidConnectionId,
        HvStatus::InsufficientBuffers,
        HvStatus::InvalidVpState,
        HvStatus::InvalidSynicState,
    ];

    pub fn from_code(code: u16) -> Option<HvStatus> {
        HvStatus::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// The 64-bit hypercall output value: status in 15:0, reps completed in 43:32. The reps
/// field is absolute (counts from 0, not from the rep start index) so that a guest loop that
/// restarts with `start = completed` needs no arithmetic.
pub const fn output(status: HvStatus, reps_completed: u16) -> u64 {
    (status as u64) | (((reps_completed as u64) & 0xfff) << 32)
}

/// Splits an output value back into (status code, reps completed); used by tests and the
/// fuzz body to check what the guest would see.
pub const fn split_output(value: u64) -> (u16, u16) {
    ((value & 0xffff) as u16, ((value >> 32) & 0xfff) as u16)
}
