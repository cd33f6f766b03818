//! NVMe host driver: reads, writes and flushes the namespaces of the machine's first NVMe
//! controller, for the storage layer under the guests' disks.
//!
//! One I/O queue pair, completions polled. The hypervisor routes no device interrupts to
//! itself yet, and every caller waits for its data anyway (a guest's flush must reach the
//! media before its completion), so a queue per CPU and interrupts would add machinery
//! without shortening any wait. The one pair is shared behind the caller's lock: `read`,
//! `write` and `flush` take `&mut self`.
//!
//! Data goes through a driver-owned bounce buffer rather than PRPs over the caller's
//! buffer. Caller buffers may start at any byte (PRP1 needs dword alignment) and may live
//! in memory the caller frees while a timed-out command could still be running; copying
//! costs little next to a device round trip. Transfers larger than the bounce buffer (or
//! the controller's MDTS) are split; each piece over two pages uses a PRP list. The exception
//! is a guest's disk read (`read_direct`): its destination is guest RAM, which stays the VM's
//! for its life, so the controller writes the guest's pages itself — under emulation the
//! two copies by the hypervisor were most of a sequential read's cost.
//!
//! The pure parts (register decoding, rings, PRPs, commands, Identify data) are tested on
//! the host; `controller` and `hw` hold the port, MMIO and DMA accesses.

pub mod command;
pub mod identify;
pub mod prp;
pub mod queue;
pub mod regs;

#[cfg(target_os = "none")]
mod controller;
#[cfg(target_os = "none")]
mod hw;

#[cfg(target_os = "none")]
pub use controller::{Nvme, SelftestError, selftest};
#[cfg(target_os = "none")]
pub use hw::zero_direct;

/// An active namespace with a format the driver can use (no metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub nsid: u32,
    /// Bytes per logical block.
    pub lba_size: u32,
    /// Logical blocks in the namespace (NSZE).
    pub lba_count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NvmeError {
    /// No PCI function with class 01:08:02.
    NoController,
    /// BAR0 is not a memory BAR inside the host's identity map.
    BarNotMapped { addr: u64 },
    /// The controller lacks something the driver needs.
    Unsupported { what: &'static str },
    /// A wait outlived its deadline.
    Timeout { what: &'static str },
    /// CSTS.CFS: the controller hit a fatal error.
    ControllerFatal,
    /// A command completed with an error status.
    Status { sct: u8, sc: u8 },
    /// A length that is not whole LBAs, or blocks beyond the namespace.
    BadArgument,
    /// No such active namespace.
    UnknownNamespace { nsid: u32 },
    /// No frames left for queues or buffers.
    OutOfMemory,
}

impl core::fmt::Display for NvmeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            NvmeError::NoController => write!(f, "no NVMe controller (PCI class 01:08:02)"),
            NvmeError::BarNotMapped { addr } => write!(
                f,
                "the controller's BAR0 ({addr:#x}) is not a memory BAR inside the host's identity map"
            ),
            NvmeError::Unsupported { what } => write!(f, "the controller does not support {what}"),
            NvmeError::Timeout { what } => write!(f, "timed out waiting for {what}"),
            NvmeError::ControllerFatal => {
                write!(f, "the controller reports a fatal error (CSTS.CFS)")
            }
            NvmeError::Status { sct, sc } => {
                write!(f, "command failed: status type {sct:#x} code {sc:#04x}")?;
                if let Some(what) = status_name(sct, sc) {
                    write!(f, " ({what})")?;
                }
                Ok(())
            }
            NvmeError::BadArgument => write!(
                f,
                "bad transfer: not a whole number of LBAs, or beyond the namespace"
            ),
            NvmeError::UnknownNamespace { nsid } => write!(f, "no active namespace {nsid}"),
            NvmeError::OutOfMemory => write!(f, "out of memory for NVMe queues or buffers"),
        }
    }
}

/// Names of the statuses a misbehaving request most likely gets.
fn status_name(sct: u8, sc: u8) -> Option<&'static str> {
    Some(match (sct, sc) {
        (0, 0x01) => "invalid command opcode",
        (0, 0x02) => "invalid field in command",
        (0, 0x04) => "data transfer error",
        (0, 0x06) => "internal error",
        (0, 0x0b) => "invalid namespace or format",
        (0, 0x80) => "LBA out of range",
        (0, 0x81) => "capacity exceeded",
        (0, 0x82) => "namespace not ready",
        (2, 0x80) => "write fault",
        (2, 0x81) => "unrecovered read error",
        _ => return None,
    })
}

/// Checks a transfer of `len` bytes at `lba` against the namespace; returns its blocks.
pub fn blocks_for(ns: &Namespace, lba: u64, len: usize) -> Result<u64, NvmeError> {
    let size = u64::from(ns.lba_size);
    let len = len as u64;
    if size == 0 || !len.is_multiple_of(size) {
        return Err(NvmeError::BadArgument);
    }
    let blocks = len / size;
    match lba.checked_add(blocks) {
        Some(end) if end <= ns.lba_count => Ok(blocks),
        _ => Err(NvmeError::BadArgument),
    }
}

/// The byte written at byte `offset` of the namespace by the boot self-test's multi-page
/// write; its single-block write uses the complement. xtask checks the disk file with the
/// same function.
pub fn selftest_pattern(offset: u64) -> u8 {
    ((offset >> 9) as u8).wrapping_mul(31) ^ (offset as u8) ^ 0xa5
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: Namespace = Namespace {
        nsid: 1,
        lba_size: 512,
        lba_count: 100,
    };

    #[test]
    fn transfers_are_whole_blocks_inside_the_namespace() {
        assert_eq!(blocks_for(&NS, 0, 512), Ok(1));
        assert_eq!(blocks_for(&NS, 90, 5120), Ok(10));
        assert_eq!(blocks_for(&NS, 0, 0), Ok(0));
        assert_eq!(blocks_for(&NS, 0, 511), Err(NvmeError::BadArgument));
        assert_eq!(blocks_for(&NS, 91, 5120), Err(NvmeError::BadArgument));
        assert_eq!(blocks_for(&NS, u64::MAX, 512), Err(NvmeError::BadArgument));
    }

    #[test]
    fn errors_read_clearly() {
        assert_eq!(
            NvmeError::Status { sct: 0, sc: 0x80 }.to_string(),
            "command failed: status type 0x0 code 0x80 (LBA out of range)"
        );
        assert_eq!(
            NvmeError::Timeout { what: "flush" }.to_string(),
            "timed out waiting for flush"
        );
        assert_eq!(
            NvmeError::Status { sct: 1, sc: 0x99 }.to_string(),
            "command failed: status type 0x1 code 0x99"
        );
    }

    #[test]
    fn the_pattern_differs_between_sectors() {
        assert_ne!(selftest_pattern(4096), selftest_pattern(4096 + 512));
        assert_ne!(selftest_pattern(4096), selftest_pattern(4097));
    }
}
