//! An NVMe 1.4 controller behind BAR0, as Linux's `nvme` driver and Windows' stornvme drive
//! it: the controller registers, one admin queue pair and up to [`MAX_IO_QUEUES`] I/O queue
//! pairs, one namespace in front of a block-seam volume. The PCI side (configuration space,
//! MSI-X, INTx routing) is `crate::pci`'s; this model only names interrupt vectors.
//!
//! Commands run synchronously on the submission-queue tail doorbell write that exposes them,
//! so there is never a command in flight: Abort never aborts, and a completion is posted
//! before the doorbell write returns. Everything a guest controls (register values, queue
//! bases, doorbells, commands, PRPs) is checked before it is used; a bad value ends in an NVMe
//! status, an ignored doorbell or CSTS.CFS, never a panic or a loop longer than a queue.

extern crate alloc;

mod admin;
mod doorbell;
mod identify;
mod io;
mod prp;
mod queue;
mod regs;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use queue::{Cq, Sq};
use regs::{CC_EN, CC_SHN, CSTS_CFS, CSTS_RDY, CSTS_SHST, SHST_COMPLETE};
use virt::block::{Volume, VolumeError};

pub use queue::Status;

/// Size of BAR0: the registers, then doorbells with a stride of 4 bytes (CAP.DSTRD = 0).
pub const BAR0_SIZE: u64 = 0x4000;
/// The most I/O queue pairs a controller offers, whatever the vCPU count: each has an
/// interrupt vector, and the vectors must fit the PCI side's MSI-X table.
pub const MAX_IO_QUEUES: u16 = 64;
/// CAP.MQES (zero-based): I/O queues of up to 256 entries. Also the most commands one tail
/// doorbell write can run, since each command is consumed once.
pub const MQES: u16 = 255;
/// Identify Controller MDTS, in units of the 4 KiB minimum page: 128 KiB per command, the
/// size of the one transfer buffer.
pub const MDTS: u8 = 5;
/// Bytes one Read or Write may move.
pub const MAX_TRANSFER: usize = 4096 << MDTS;
/// Identify Controller AERL (zero-based): Asynchronous Event Requests held at once.
pub const AERL: u8 = 3;
/// Identify Controller ACL (zero-based).
pub const ACL: u8 = 3;
/// PCI vendor and subsystem vendor the Identify Controller data reports; the PCI function
/// should carry the same.
pub const VENDOR_ID: u16 = 0x1b36;
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x1af4;

/// The one disk a controller serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Namespace size in 512-byte logical blocks.
    pub sectors: u64,
    /// Advertised write-protected (NSATTR) and every write refused.
    pub read_only: bool,
    /// ASCII, space-padded, as Identify Controller SN and MN.
    pub serial: [u8; 20],
    pub model: [u8; 40],
    /// I/O queue pairs to offer (the VM's vCPU count); clamped to 1..=[`MAX_IO_QUEUES`].
    pub max_io_queues: u16,
}

/// What the controller reaches outside itself while a register write runs.
pub trait Env {
    fn memory(&self) -> &dyn virt::GuestMemory;
    /// Runs `io` on this controller's volume; the I/O (a flush: durably) completes before it
    /// returns.
    fn disk(
        &mut self,
        io: &mut dyn FnMut(&mut dyn Volume) -> Result<(), VolumeError>,
    ) -> Result<(), VolumeError>;
    /// A completion was posted to a CQ whose interrupts are enabled: deliver its interrupt
    /// vector `iv` (the PCI layer maps it through MSI-X, MSI or INTx).
    fn interrupt(&mut self, iv: u16);
}

/// Get/Set Features state: reset to these defaults by every controller reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Features {
    arbitration: u32,
    power: u32,
    temp_over: u16,
    temp_under: u16,
    write_cache: bool,
    coalescing: u32,
    /// Interrupt Vector Configuration CD bit per vector (vectors never exceed 128).
    coalescing_disabled: u128,
    write_atomicity: u32,
    async_events: u32,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            arbitration: 0,
            power: 0,
            temp_over: identify::WCTEMP,
            temp_under: 0,
            write_cache: true,
            coalescing: 0,
            coalescing_disabled: 0,
            write_atomicity: 0,
            async_events: 0,
        }
    }
}

/// SMART counters, kept across controller resets as a drive's are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    sectors_read: u64,
    sectors_written: u64,
    reads: u64,
    writes: u64,
}

pub struct Controller {
    cfg: Config,
    io_queues: u16,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    intms: u32,
    /// Index 0 is the admin queue; allocated once, at `new`.
    sqs: Vec<Option<Sq>>,
    cqs: Vec<Option<Cq>>,
    features: Features,
    /// Asynchronous Event Requests held: never completed (no event is ever reported).
    aers: u8,
    counters: Counters,
    /// Vectors with completions posted during this register write, signalled once at its end.
    irq: u128,
    /// [`MAX_TRANSFER`] bytes: every data transfer goes through it.
    buf: Vec<u8>,
}

/// What a command came to.
enum Outcome {
    Done {
        dw0: u32,
        status: Status,
    },
    /// Held without a completion (an Asynchronous Event Request).
    Held,
}

impl Outcome {
    fn ok(dw0: u32) -> Self {
        Outcome::Done {
            dw0,
            status: Status::SUCCESS,
        }
    }
    fn from(r: Result<u32, Status>) -> Self {
        match r {
            Ok(dw0) => Outcome::ok(dw0),
            Err(status) => Outcome::Done { dw0: 0, status },
        }
    }
}

/// The host had no memory left for a controller's queues and transfer buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

impl Controller {
    /// A controller at reset. For tests and tools: it panics if memory runs out; the
    /// hypervisor uses [`Self::try_new`].
    pub fn new(cfg: Config) -> Self {
        match Self::try_new(cfg) {
            Ok(c) => c,
            Err(OutOfMemory) => panic!("no memory for an NVMe controller"),
        }
    }

    /// A controller at reset, or `OutOfMemory` (its 128 KiB buffer and queue tables are
    /// allocated here, once).
    pub fn try_new(cfg: Config) -> Result<Self, OutOfMemory> {
        let io_queues = cfg.max_io_queues.clamp(1, MAX_IO_QUEUES);
        let n = usize::from(io_queues) + 1;
        let mut buf = Vec::new();
        buf.try_reserve_exact(MAX_TRANSFER)
            .map_err(|_| OutOfMemory)?;
        buf.resize(MAX_TRANSFER, 0);
        let mut sqs = Vec::new();
        sqs.try_reserve_exact(n).map_err(|_| OutOfMemory)?;
        sqs.resize(n, None);
        let mut cqs = Vec::new();
        cqs.try_reserve_exact(n).map_err(|_| OutOfMemory)?;
        cqs.resize(n, None);
        Ok(Controller {
            cfg,
            io_queues,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            intms: 0,
            sqs,
            cqs,
            features: Features::default(),
            aers: 0,
            counters: Counters::default(),
            irq: 0,
            buf,
        })
    }

    /// Interrupt vectors the controller may name: one for the admin queue (shared with I/O
    /// queue 1 where the driver wants) and one per I/O queue. The MSI-X table needs as many.
    pub fn vectors(&self) -> u16 {
        self.io_queues + 1
    }

    /// I/O queue pairs offered (Number of Queues).
    pub fn io_queues(&self) -> u16 {
        self.io_queues
    }

    /// BAR0 register read. Bytes outside any register (and doorbells) read as zero.
    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        let mut v = 0u64;
        for i in 0..u64::from(size.min(8)) {
            let Some(at) = offset.checked_add(i).filter(|&a| a < BAR0_SIZE) else {
                break;
            };
            let byte = (self.dword(at & !3) >> ((at & 3) * 8)) & 0xff;
            v |= u64::from(byte) << (8 * i);
        }
        v
    }

    /// BAR0 register or doorbell write. Any width or alignment: each dword touched is updated
    /// in the bytes written, as a byte-enable write on the bus would.
    pub fn write(&mut self, offset: u64, size: u8, value: u64, env: &mut dyn Env) {
        let size = u64::from(size.min(8));
        let mut i = 0;
        while i < size {
            let Some(at) = offset.checked_add(i).filter(|&a| a < BAR0_SIZE) else {
                break;
            };
            let lane = at & 3;
            let n = (size - i).min(4 - lane);
            let bytes_mask = if n == 4 {
                u32::MAX
            } else {
                (1u32 << (8 * n)) - 1
            };
            let mask = bytes_mask << (8 * lane);
            let v = ((value >> (8 * i)) as u32 & bytes_mask) << (8 * lane);
            self.write_dword(at & !3, v, mask, env);
            i += n;
        }
        self.signal(env);
    }

    /// Level INTx: some CQ with interrupts enabled holds entries the guest has not consumed,
    /// and its vector is not masked in INTMS.
    pub fn intx_asserted(&self) -> bool {
        self.cqs
            .iter()
            .flatten()
            .any(|cq| cq.ien && cq.tail != cq.head && !masked(self.intms, cq.iv))
    }

    /// Function-level or VM reset: every register to its power-on value.
    pub fn reset(&mut self) {
        self.controller_reset();
        self.cc = 0;
        self.csts = 0;
        self.aqa = 0;
        self.asq = 0;
        self.acq = 0;
    }

    /// CC.EN 1 -> 0 (and the start of a function reset): queues deleted, held commands
    /// dropped, features to defaults. AQA/ASQ/ACQ keep their values, as the spec has it.
    fn controller_reset(&mut self) {
        self.sqs.iter_mut().for_each(|q| *q = None);
        self.cqs.iter_mut().for_each(|q| *q = None);
        self.features = Features::default();
        self.aers = 0;
        self.intms = 0;
        self.irq = 0;
        self.csts &= !(CSTS_RDY | CSTS_CFS);
    }

    fn write_dword(&mut self, off: u64, v: u32, mask: u32, env: &mut dyn Env) {
        let merge = |old: u32| (old & !mask) | v;
        match off {
            regs::INTMS => self.intms |= v,
            regs::INTMC => {
                self.intms &= !v;
                // What the mask held back is due now (MSI is edge-triggered).
                for cq in self.cqs.iter().flatten() {
                    if cq.ien && cq.tail != cq.head && !masked(self.intms, cq.iv) {
                        self.irq |= bit(cq.iv);
                    }
                }
            }
            regs::CC => self.write_cc(merge(self.cc), env),
            regs::AQA => self.aqa = merge(self.aqa) & regs::AQA_MASK,
            regs::ASQ | regs::ACQ | regs::ASQ_HI | regs::ACQ_HI => {
                let reg = if off & !4 == regs::ASQ {
                    &mut self.asq
                } else {
                    &mut self.acq
                };
                let shift = (off & 4) * 8;
                let old = (*reg >> shift) as u32;
                let new = u64::from((old & !mask) | v);
                *reg = (*reg & !(0xffff_ffff << shift) | new << shift) & !0xfff;
            }
            regs::DOORBELLS..BAR0_SIZE => {
                let index = (off - regs::DOORBELLS) / 4;
                let Ok(qid) = u16::try_from(index / 2) else {
                    return;
                };
                if index.is_multiple_of(2) {
                    let old = self.sq(qid).map_or(0, |q| u32::from(q.tail));
                    self.sq_doorbell(qid, merge(old), env);
                } else {
                    let old = self.cq(qid).map_or(0, |q| u32::from(q.head));
                    self.cq_doorbell(qid, merge(old), env);
                }
            }
            _ => {}
        }
    }

    fn write_cc(&mut self, new: u32, env: &mut dyn Env) {
        let old = self.cc;
        // While enabled only EN and SHN change: the rest was latched when it was enabled.
        self.cc = if old & new & CC_EN != 0 {
            (old & !CC_SHN) | (new & CC_SHN)
        } else {
            new
        };
        match (old & CC_EN != 0, self.cc & CC_EN != 0) {
            (false, true) => self.enable(env),
            (true, false) => self.controller_reset(),
            _ => {}
        }
        let (was, now) = (old & CC_SHN, self.cc & CC_SHN);
        if now != 0 && was == 0 {
            // The volatile write cache goes to the medium before shutdown reports complete.
            let _ = env.disk(&mut |v| v.flush());
            self.csts = (self.csts & !CSTS_SHST) | SHST_COMPLETE;
        } else if now == 0 && was != 0 {
            self.csts &= !CSTS_SHST;
        }
    }

    /// CC.EN 0 -> 1: the admin queue from AQA/ASQ/ACQ, or CSTS.CFS if anything the driver
    /// set up is not what CAP allows.
    fn enable(&mut self, env: &mut dyn Env) {
        let ram = env.memory().size();
        let sq_entries = (self.aqa & 0xfff) as u16 + 1;
        let cq_entries = (self.aqa >> 16 & 0xfff) as u16 + 1;
        let valid = regs::cc_valid(self.cc)
            && sq_entries >= 2
            && cq_entries >= 2
            && queue::fits(ram, self.asq, sq_entries, queue::SQ_ENTRY)
            && queue::fits(ram, self.acq, cq_entries, queue::CQ_ENTRY);
        if !valid {
            self.csts |= CSTS_CFS;
            return;
        }
        if let (Some(sq), Some(cq)) = (self.sqs.get_mut(0), self.cqs.get_mut(0)) {
            *sq = Some(Sq::new(self.asq, sq_entries, 0));
            *cq = Some(Cq::new(self.acq, cq_entries, true, 0));
            self.csts |= CSTS_RDY;
        }
    }

    fn running(&self) -> bool {
        self.csts & (CSTS_RDY | CSTS_CFS) == CSTS_RDY
    }

    fn sq(&self, qid: u16) -> Option<&Sq> {
        self.sqs.get(usize::from(qid))?.as_ref()
    }

    fn cq(&self, qid: u16) -> Option<&Cq> {
        self.cqs.get(usize::from(qid))?.as_ref()
    }

    fn dword(&self, off: u64) -> u32 {
        match off {
            regs::CAP => regs::CAP_VALUE as u32,
            regs::CAP_HI => (regs::CAP_VALUE >> 32) as u32,
            regs::VS => regs::VS_VALUE,
            regs::INTMS | regs::INTMC => self.intms,
            regs::CC => self.cc,
            regs::CSTS => self.csts,
            regs::AQA => self.aqa,
            regs::ASQ => self.asq as u32,
            regs::ASQ_HI => (self.asq >> 32) as u32,
            regs::ACQ => self.acq as u32,
            regs::ACQ_HI => (self.acq >> 32) as u32,
            _ => 0,
        }
    }
}

fn bit(iv: u16) -> u128 {
    1u128.checked_shl(u32::from(iv)).unwrap_or(0)
}

/// INTMS masks the first 32 vectors (MSI multi-message and INTx); MSI-X masks in its table.
fn masked(intms: u32, iv: u16) -> bool {
    1u32.checked_shl(u32::from(iv))
        .is_some_and(|b| intms & b != 0)
}
