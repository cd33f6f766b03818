//! Submission and completion queues in guest memory, the command and completion layouts, and
//! status codes.

use core::sync::atomic::{Ordering, fence};
use virt::{GuestMemory, MemError};

pub const SQ_ENTRY: u64 = 64;
pub const CQ_ENTRY: u64 = 16;
/// The largest queue of any kind: AQA allows admin queues of 4096 entries.
pub const MAX_ENTRIES: u16 = 4096;

/// Status Code Type and Status Code, as the completion's status field carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    const fn generic(sc: u8) -> Self {
        Status(sc as u16)
    }
    const fn specific(sc: u8) -> Self {
        Status(0x100 | sc as u16)
    }
    const fn media(sc: u8) -> Self {
        Status(0x200 | sc as u16)
    }
    pub const SUCCESS: Self = Self::generic(0x00);
    pub const INVALID_OPCODE: Self = Self::generic(0x01);
    pub const INVALID_FIELD: Self = Self::generic(0x02);
    pub const DATA_TRANSFER_ERROR: Self = Self::generic(0x04);
    pub const INTERNAL_ERROR: Self = Self::generic(0x06);
    pub const INVALID_NAMESPACE: Self = Self::generic(0x0B);
    pub const COMMAND_SEQUENCE_ERROR: Self = Self::generic(0x0C);
    pub const INVALID_PRP_OFFSET: Self = Self::generic(0x13);
    pub const WRITE_PROTECTED: Self = Self::generic(0x20);
    pub const LBA_OUT_OF_RANGE: Self = Self::generic(0x80);
    pub const CAPACITY_EXCEEDED: Self = Self::generic(0x81);
    pub const CQ_INVALID: Self = Self::specific(0x00);
    pub const INVALID_QUEUE_ID: Self = Self::specific(0x01);
    pub const INVALID_QUEUE_SIZE: Self = Self::specific(0x02);
    pub const AER_LIMIT_EXCEEDED: Self = Self::specific(0x05);
    pub const INVALID_VECTOR: Self = Self::specific(0x08);
    pub const INVALID_LOG_PAGE: Self = Self::specific(0x09);
    pub const INVALID_QUEUE_DELETION: Self = Self::specific(0x0C);
    pub const NOT_SAVEABLE: Self = Self::specific(0x0D);
    pub const WRITE_FAULT: Self = Self::media(0x80);
    pub const UNRECOVERED_READ: Self = Self::media(0x81);
}

/// A submission queue entry, as read once from guest memory.
pub struct Command {
    pub dw: [u32; 16],
}

impl Command {
    pub fn read(mem: &dyn GuestMemory, gpa: u64) -> Result<Self, MemError> {
        let mut raw = [0u8; SQ_ENTRY as usize];
        mem.read(gpa, &mut raw)?;
        let mut dw = [0u32; 16];
        for (d, b) in dw.iter_mut().zip(raw.chunks_exact(4)) {
            *d = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(Command { dw })
    }
    pub fn opcode(&self) -> u8 {
        self.dw[0] as u8
    }
    /// FUSE and PSDT: fused operations and SGLs, neither supported.
    pub fn fuse_or_sgl(&self) -> bool {
        self.dw[0] >> 8 & 3 != 0 || self.dw[0] >> 14 & 3 != 0
    }
    pub fn cid(&self) -> u16 {
        (self.dw[0] >> 16) as u16
    }
    pub fn nsid(&self) -> u32 {
        self.dw[1]
    }
    pub fn prp1(&self) -> u64 {
        u64::from(self.dw[6]) | u64::from(self.dw[7]) << 32
    }
    pub fn prp2(&self) -> u64 {
        u64::from(self.dw[8]) | u64::from(self.dw[9]) << 32
    }
    pub fn cdw10(&self) -> u32 {
        self.dw[10]
    }
    pub fn cdw11(&self) -> u32 {
        self.dw[11]
    }
    pub fn cdw12(&self) -> u32 {
        self.dw[12]
    }
    pub fn cdw13(&self) -> u32 {
        self.dw[13]
    }
}

pub struct Completion {
    pub dw0: u32,
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    pub status: Status,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sq {
    pub base: u64,
    pub size: u16,
    pub head: u16,
    pub tail: u16,
    pub cqid: u16,
}

impl Sq {
    pub fn new(base: u64, size: u16, cqid: u16) -> Self {
        Sq {
            base,
            size,
            head: 0,
            tail: 0,
            cqid,
        }
    }
    pub fn slot(&self, index: u16) -> u64 {
        self.base + u64::from(index) * SQ_ENTRY
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cq {
    pub base: u64,
    pub size: u16,
    /// The guest's head doorbell.
    pub head: u16,
    /// Where the next completion goes.
    pub tail: u16,
    pub phase: bool,
    pub ien: bool,
    pub iv: u16,
}

impl Cq {
    pub fn new(base: u64, size: u16, ien: bool, iv: u16) -> Self {
        Cq {
            base,
            size,
            head: 0,
            tail: 0,
            phase: true,
            ien,
            iv,
        }
    }

    /// Entries posted and not yet consumed.
    pub fn used(&self) -> u16 {
        ring_distance(self.head, self.tail, self.size)
    }

    /// One slot always stays empty, so that a full queue differs from an empty one.
    pub fn full(&self) -> bool {
        self.used() + 1 >= self.size
    }

    pub fn post(&mut self, mem: &dyn GuestMemory, c: &Completion) -> Result<(), MemError> {
        let at = self.base + u64::from(self.tail) * CQ_ENTRY;
        let status = u32::from(c.status.0) << 17
            | if c.status == Status::SUCCESS {
                0
            } else {
                1 << 31
            };
        let dw3 = u32::from(c.cid) | u32::from(self.phase) << 16 | status;
        let mut head = [0u8; 12];
        head[0..4].copy_from_slice(&c.dw0.to_le_bytes());
        head[8..10].copy_from_slice(&c.sq_head.to_le_bytes());
        head[10..12].copy_from_slice(&c.sq_id.to_le_bytes());
        mem.write(at, &head)?;
        // The phase tag publishes the entry: the rest must be visible first.
        fence(Ordering::Release);
        mem.write_u32(at + 12, dw3)?;
        self.tail += 1;
        if self.tail >= self.size {
            self.tail = 0;
            self.phase = !self.phase;
        }
        Ok(())
    }
}

/// Steps from `from` forward to `to` on a ring of `size` slots.
pub fn ring_distance(from: u16, to: u16, size: u16) -> u16 {
    if to >= from {
        to - from
    } else {
        (size - from).saturating_add(to)
    }
}

/// Whether a queue of `entries` entries of `entry` bytes at `base` is page aligned and lies
/// wholly inside guest RAM.
pub fn fits(ram: u64, base: u64, entries: u16, entry: u64) -> bool {
    base.is_multiple_of(4096)
        && virt::check_range(ram, base, usize::from(entries) * entry as usize).is_ok()
}
