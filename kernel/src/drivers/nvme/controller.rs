//! Bringing the controller up and running commands on it, one at a time.

use super::command::{Command, cns};
use super::hw::{Dma, Mmio};
use super::identify::{self, NamespaceData};
use super::queue::{CQ_ENTRY, CommandIds, Completion, CqRing, SQ_ENTRY, SqRing};
use super::regs::{self, Cap, Csts, PAGE};
use super::{Namespace, NvmeError, blocks_for, prp, selftest_pattern};
use crate::arch::tsc;
use crate::drivers::pci::{self, Bar, config};
use crate::println;
use core::sync::atomic::{Ordering, fence};

/// Entries per queue (admin and I/O): one command is in flight at a time, so a few would
/// do; a small power of two keeps each queue inside one page.
const QUEUE_DEPTH: u16 = 32;
/// The bounce buffer: the largest piece one command moves.
const BOUNCE_BYTES: usize = 128 * 1024;
const BOUNCE_PAGES: usize = BOUNCE_BYTES / PAGE as usize;
/// Pages of one direct read: a 256 KiB SCSI command that starts inside a page, and more.
const DIRECT_PAGES: usize = virt::block::MAX_PIECES;
/// The most one direct command moves: a PRP list page's worth of pages after the first.
const DIRECT_BYTES: usize = (prp::LIST_ENTRIES + 1) * PAGE as usize;
/// Namespaces the driver keeps (the first ones listed).
const MAX_NAMESPACES: usize = 16;
/// How long one command may take. Generous: a flush may have a whole write cache to drain.
const COMMAND_TIMEOUT_US: u64 = 30_000_000;
/// The BAR must reach past the doorbells of queue 1 (for any stride the driver accepts).
const BAR_MIN: usize = 0x2000;
const IO_QID: u16 = 1;

struct Queue {
    qid: u16,
    sq: Dma,
    cq: Dma,
    sq_ring: SqRing,
    cq_ring: CqRing,
    ids: CommandIds,
}

impl Queue {
    fn new(qid: u16, entries: u16) -> Result<Queue, NvmeError> {
        Ok(Queue {
            qid,
            sq: Dma::alloc(usize::from(entries) * SQ_ENTRY)?,
            cq: Dma::alloc(usize::from(entries) * CQ_ENTRY)?,
            sq_ring: SqRing::new(entries),
            cq_ring: CqRing::new(entries),
            ids: CommandIds::default(),
        })
    }

    /// Submits `cmd` and polls for its completion.
    fn execute(
        &mut self,
        regs: &Mmio,
        dstrd: u32,
        cmd: Command,
        what: &'static str,
    ) -> Result<Completion, NvmeError> {
        let deadline = tsc::micros() + COMMAND_TIMEOUT_US;
        // Only a command that timed out earlier can still hold a slot.
        let Some((slot, tail)) = self.sq_ring.push() else {
            return Err(NvmeError::Timeout {
                what: "a free submission slot (earlier commands never completed)",
            });
        };
        let cid = self.ids.next_id();
        let cmd = cmd.with_cid(cid);
        let base = usize::from(slot) * SQ_ENTRY;
        for (i, dw) in cmd.0.iter().enumerate() {
            self.sq.write32(base + 4 * i, *dw);
        }
        // The entry (and any PRP list or data written before) must be in memory before
        // the doorbell tells the controller to fetch it.
        fence(Ordering::SeqCst);
        regs.write32(regs::sq_tail_doorbell(self.qid, dstrd), u32::from(tail));
        let mut spins = 0u32;
        loop {
            let at = usize::from(self.cq_ring.head()) * CQ_ENTRY;
            let dw3 = self.cq.read32(at + 12);
            if !self.cq_ring.is_new(Completion::phase_of(dw3)) {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) {
                    if Csts(regs.read32(regs::CSTS)).fatal() {
                        return Err(NvmeError::ControllerFatal);
                    }
                    if tsc::micros() > deadline {
                        return Err(NvmeError::Timeout { what });
                    }
                }
                core::hint::spin_loop();
                continue;
            }
            // The rest of the entry is read only after its phase said it is complete.
            fence(Ordering::SeqCst);
            let c = Completion::decode([
                self.cq.read32(at),
                self.cq.read32(at + 4),
                self.cq.read32(at + 8),
                dw3,
            ]);
            self.sq_ring.consumed_up_to(c.sq_head);
            let head = self.cq_ring.advance();
            regs.write32(regs::cq_head_doorbell(self.qid, dstrd), u32::from(head));
            if c.cid != cid {
                // The late completion of a command that timed out: nobody waits for it.
                continue;
            }
            return if c.status.is_success() {
                Ok(c)
            } else {
                Err(NvmeError::Status {
                    sct: c.status.sct,
                    sc: c.status.sc,
                })
            };
        }
    }
}

pub struct Nvme {
    regs: Mmio,
    dstrd: u32,
    /// Kept with its frames, which the controller still points at; no admin command is
    /// sent after bring-up yet.
    _admin: Queue,
    io: Queue,
    namespaces: heapless::Vec<Namespace, MAX_NAMESPACES>,
    bounce: Dma,
    prp_list: Dma,
    /// Bytes one command may move: the bounce buffer, or less if MDTS says so.
    max_transfer: usize,
    /// Bytes one direct command may move: what MDTS and one PRP list page allow. Fewer,
    /// larger commands: each costs the emulated controller a round trip through its host's
    /// I/O threads (about 130 µs for 128 KiB, measured, on this machine).
    max_direct: usize,
}

impl Nvme {
    /// Finds the first NVMe controller (PCI class 01:08:02) through the legacy configuration
    /// ports (CF8/CFC), enables memory space + bus mastering, maps BAR0 uncached, resets and
    /// brings up the controller: admin queue, Identify controller, the active namespace list
    /// and Identify namespace for each, one I/O queue pair.
    pub fn init() -> Result<Nvme, NvmeError> {
        let bdf = config::find_class(0x01, 0x08, 0x02).ok_or(NvmeError::NoController)?;
        let cmd = config::read32(bdf, pci::COMMAND);
        let enable = u32::from(pci::CMD_MEMORY | pci::CMD_BUS_MASTER | pci::CMD_INTX_DISABLE);
        // The upper half is the status register, whose bits clear when written as 1.
        config::write32(bdf, pci::COMMAND, (cmd & 0xffff) | enable);
        let bar = pci::decode_bar(
            config::read32(bdf, pci::BAR0),
            config::read32(bdf, pci::BAR0 + 4),
        );
        let addr = match bar {
            Bar::Memory { addr, .. } => addr,
            Bar::Io { port } => return Err(NvmeError::BarNotMapped { addr: port.into() }),
        };
        let regs = Mmio::new(addr, BAR_MIN).ok_or(NvmeError::BarNotMapped { addr })?;

        let cap = Cap(regs.read64(regs::CAP));
        if !cap.supports_nvm() {
            return Err(NvmeError::Unsupported {
                what: "the NVM command set",
            });
        }
        if !cap.supports_4k_pages() {
            return Err(NvmeError::Unsupported {
                what: "4 KiB memory pages",
            });
        }
        if cap.dstrd() > 8 {
            return Err(NvmeError::Unsupported {
                what: "a doorbell stride inside the first 8 KiB",
            });
        }
        let dstrd = cap.dstrd();
        let ready_us = cap.ready_timeout_us();

        // Reset: whatever firmware or a previous run set up is discarded.
        let cc = regs.read32(regs::CC);
        if cc & 1 == 1 {
            regs.write32(regs::CC, cc & !1);
        }
        wait_ready(&regs, false, ready_us)?;

        let entries = QUEUE_DEPTH.min(cap.max_queue_entries().min(4096) as u16);
        let mut admin = Queue::new(0, entries)?;
        regs.write32(regs::AQA, regs::aqa(entries));
        regs.write64(regs::ASQ, admin.sq.pa());
        regs.write64(regs::ACQ, admin.cq.pa());
        regs.write32(regs::CC, regs::cc_enable());
        wait_ready(&regs, true, ready_us)?;

        let mut page = Dma::alloc(PAGE as usize)?;
        admin.execute(
            &regs,
            dstrd,
            Command::identify(cns::CONTROLLER, 0, page.pa()),
            "Identify controller",
        )?;
        let ident = identify::Controller::parse(page4k(&page));
        admin.execute(
            &regs,
            dstrd,
            Command::set_queue_count(1, 1),
            "Set Features (number of queues)",
        )?;
        let io = Queue::new(IO_QID, entries)?;
        admin.execute(
            &regs,
            dstrd,
            Command::create_cq(IO_QID, entries, io.cq.pa()),
            "Create I/O completion queue",
        )?;
        admin.execute(
            &regs,
            dstrd,
            Command::create_sq(IO_QID, entries, io.sq.pa(), IO_QID),
            "Create I/O submission queue",
        )?;

        // The active list arrived in NVMe 1.1; before it, every ID up to NN is probed and
        // the inactive ones read as size 0.
        let mut ids: heapless::Vec<u32, MAX_NAMESPACES> = heapless::Vec::new();
        page.bytes_mut().fill(0);
        match admin.execute(
            &regs,
            dstrd,
            Command::identify(cns::ACTIVE_NAMESPACES, 0, page.pa()),
            "Identify active namespace list",
        ) {
            Ok(_) => ids.extend(identify::active_namespaces(page4k(&page)).take(MAX_NAMESPACES)),
            Err(NvmeError::Status { .. }) => {
                ids.extend((1..=ident.nn).take(MAX_NAMESPACES));
            }
            Err(e) => return Err(e),
        }
        let mut namespaces = heapless::Vec::new();
        for nsid in ids {
            admin.execute(
                &regs,
                dstrd,
                Command::identify(cns::NAMESPACE, nsid, page.pa()),
                "Identify namespace",
            )?;
            match NamespaceData::parse(page4k(&page)) {
                Ok(d) if d.nsze == 0 => {}
                Ok(d) if d.metadata != 0 => println!(
                    "nvme: ns {nsid}: skipped: its format carries {} metadata bytes per LBA",
                    d.metadata
                ),
                Ok(d) => {
                    let _ = namespaces.push(Namespace {
                        nsid,
                        lba_size: d.lba_size,
                        lba_count: d.nsze,
                    });
                }
                Err(e) => println!("nvme: ns {nsid}: skipped: unusable format ({e:?})"),
            }
        }

        let (min_page, _) = cap.page_sizes();
        let max_transfer = ident
            .max_transfer(min_page)
            .map_or(BOUNCE_BYTES, |m| BOUNCE_BYTES.min(m as usize));
        // Direct transfers need no bounce buffer: as much as MDTS and one PRP list allow.
        let max_direct = ident
            .max_transfer(min_page)
            .map_or(DIRECT_BYTES, |m| DIRECT_BYTES.min(m as usize));
        println!(
            "nvme: {bdf} BAR0 {addr:#x}, model \"{}\" serial \"{}\", NVMe {}.{}, {} namespace(s), queues of {entries}, {} KiB per command{}",
            ident.model,
            ident.serial,
            regs.read32(regs::VS) >> 16,
            (regs.read32(regs::VS) >> 8) & 0xff,
            namespaces.len(),
            max_transfer / 1024,
            if ident.vwc {
                ", volatile write cache"
            } else {
                ""
            },
        );
        Ok(Nvme {
            regs,
            dstrd,
            _admin: admin,
            io,
            namespaces,
            bounce: Dma::alloc(BOUNCE_BYTES)?,
            prp_list: Dma::alloc(PAGE as usize)?,
            max_transfer,
            max_direct,
        })
    }

    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    fn namespace(&self, nsid: u32) -> Result<Namespace, NvmeError> {
        self.namespaces
            .iter()
            .find(|n| n.nsid == nsid)
            .copied()
            .ok_or(NvmeError::UnknownNamespace { nsid })
    }

    /// Reads/writes whole LBAs; `buf.len()` must be a multiple of the namespace's LBA size
    /// (else BadArgument). Multi-page transfers use PRP lists. Blocks (polling) until the
    /// command completes or times out.
    pub fn read(&mut self, nsid: u32, lba: u64, buf: &mut [u8]) -> Result<(), NvmeError> {
        let ns = self.namespace(nsid)?;
        blocks_for(&ns, lba, buf.len())?;
        let piece = self.piece(&ns)?;
        let mut at = lba;
        for chunk in buf.chunks_mut(piece) {
            self.transfer(false, &ns, at, chunk.len())?;
            chunk.copy_from_slice(&self.bounce.bytes()[..chunk.len()]);
            at += (chunk.len() / ns.lba_size as usize) as u64;
        }
        Ok(())
    }

    pub fn write(&mut self, nsid: u32, lba: u64, buf: &[u8]) -> Result<(), NvmeError> {
        let ns = self.namespace(nsid)?;
        blocks_for(&ns, lba, buf.len())?;
        let piece = self.piece(&ns)?;
        let mut at = lba;
        for chunk in buf.chunks(piece) {
            self.bounce.bytes_mut()[..chunk.len()].copy_from_slice(chunk);
            self.transfer(true, &ns, at, chunk.len())?;
            at += (chunk.len() / ns.lba_size as usize) as u64;
        }
        Ok(())
    }

    /// Reads (or writes) whole LBAs at `lba` straight into (from) `pieces`: guest RAM, which
    /// the controller writes (reads) itself: no bounce buffer, no copy; a command per
    /// `max_direct` bytes. `Ok(false)` when PRPs cannot describe the pieces, before any
    /// command. Unlike a caller's buffer, guest RAM stays the VM's for its life, so a command
    /// that timed out can only land late in memory the guest was told had failed.
    pub fn direct(
        &mut self,
        write: bool,
        nsid: u32,
        lba: u64,
        pieces: &[virt::block::HostPiece],
    ) -> Result<bool, NvmeError> {
        let ns = self.namespace(nsid)?;
        let mut entries = [(0u64, 0u64); DIRECT_PAGES];
        let Some(n) = prp::page_entries(pieces, u64::from(ns.lba_size), &mut entries) else {
            return Ok(false);
        };
        let total: u64 = pieces.iter().map(|p| p.len).sum();
        blocks_for(&ns, lba, total as usize)?;
        let mut at = lba;
        let mut rest = &entries[..n];
        let mut list = [0u64; DIRECT_PAGES];
        while let Some((prps, k, bytes)) =
            prp::next_command(rest, self.max_direct as u64, &mut list, self.prp_list.pa())
        {
            for (i, e) in list[..prps.list_len].iter().enumerate() {
                self.prp_list.write64(8 * i, *e);
            }
            rest = &rest[k..];
            let blocks = (bytes / u64::from(ns.lba_size)) as u32;
            let cmd = Command::rw(write, ns.nsid, at, blocks, prps);
            let what = if write { "a write" } else { "a read" };
            self.io.execute(&self.regs, self.dstrd, cmd, what)?;
            at += u64::from(blocks);
        }
        Ok(true)
    }

    /// NVMe Flush: every completed write is durable when this returns Ok.
    pub fn flush(&mut self, nsid: u32) -> Result<(), NvmeError> {
        self.namespace(nsid)?;
        self.io
            .execute(&self.regs, self.dstrd, Command::flush(nsid), "flush")
            .map(|_| ())
    }

    /// Bytes per command for this namespace: whole LBAs that fit one transfer.
    fn piece(&self, ns: &Namespace) -> Result<usize, NvmeError> {
        let size = ns.lba_size as usize;
        let blocks = (self.max_transfer / size).min(0x1_0000);
        if blocks == 0 {
            return Err(NvmeError::Unsupported {
                what: "transfers of a whole LBA of this size",
            });
        }
        Ok(blocks * size)
    }

    /// Moves `bytes` between the bounce buffer and the namespace at `lba`.
    fn transfer(
        &mut self,
        write: bool,
        ns: &Namespace,
        lba: u64,
        bytes: usize,
    ) -> Result<(), NvmeError> {
        let mut list = [0u64; BOUNCE_PAGES];
        let prps = prp::build(self.bounce.pa(), bytes, &mut list, self.prp_list.pa())
            .map_err(|_| NvmeError::BadArgument)?;
        for (i, e) in list[..prps.list_len].iter().enumerate() {
            self.prp_list.write64(8 * i, *e);
        }
        let blocks = (bytes / ns.lba_size as usize) as u32;
        let cmd = Command::rw(write, ns.nsid, lba, blocks, prps);
        let what = if write { "a write" } else { "a read" };
        self.io.execute(&self.regs, self.dstrd, cmd, what)?;
        // The data the controller wrote is read only after its completion was seen.
        fence(Ordering::SeqCst);
        Ok(())
    }
}

/// Waits for CSTS.RDY to become `ready`. While enabling, a fatal status ends the wait; while
/// disabling it is expected (a reset is how CFS is cleared).
fn wait_ready(regs: &Mmio, ready: bool, timeout_us: u64) -> Result<(), NvmeError> {
    let deadline = tsc::micros() + timeout_us;
    loop {
        let csts = Csts(regs.read32(regs::CSTS));
        if ready && csts.fatal() {
            return Err(NvmeError::ControllerFatal);
        }
        if csts.ready() == ready {
            return Ok(());
        }
        if tsc::micros() > deadline {
            return Err(NvmeError::Timeout {
                what: if ready {
                    "the controller to become ready (CSTS.RDY = 1)"
                } else {
                    "the controller to reset (CSTS.RDY = 0)"
                },
            });
        }
        tsc::spin_micros(10);
    }
}

fn page4k(page: &Dma) -> &[u8; 4096] {
    page.bytes()[..4096]
        .try_into()
        .expect("a DMA page is 4 KiB")
}

/// Why the boot self-test failed.
pub enum SelftestError {
    Driver { step: &'static str, err: NvmeError },
    NoNamespace,
    TooSmall,
    Mismatch { offset: u64, want: u8, got: u8 },
}

impl core::fmt::Display for SelftestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SelftestError::Driver { step, err } => write!(f, "{step}: {err}"),
            SelftestError::NoNamespace => write!(f, "the controller has no usable namespace"),
            SelftestError::TooSmall => write!(f, "namespace 1 is smaller than the test's 192 KiB"),
            SelftestError::Mismatch { offset, want, got } => write!(
                f,
                "read back {got:#04x} at byte {offset:#x} of the namespace, wrote {want:#04x}"
            ),
        }
    }
}

/// `janus.selftest=nvme`: brings up the controller (twice), writes a pattern to the first
/// namespace (destroying what was there: the test's scratch disk), flushes, reads it back.
/// The multi-page write and the large read (which the driver splits) go through PRP lists;
/// the single-LBA write and the read come from buffers at odd offsets in a page.
pub fn selftest() -> Result<(), SelftestError> {
    let step = |step| move |err| SelftestError::Driver { step, err };
    // Twice: the second bring-up has to reset the controller the first left running, as
    // when the storage layer takes over after this test (firmware leaves it disabled).
    Nvme::init().map_err(step("init"))?;
    let mut nvme = Nvme::init().map_err(step("init of a running controller"))?;
    for ns in nvme.namespaces() {
        println!(
            "nvme: ns {}: {} LBAs of {} bytes",
            ns.nsid, ns.lba_count, ns.lba_size
        );
    }
    let ns = *nvme
        .namespaces()
        .first()
        .ok_or(SelftestError::NoNamespace)?;
    let size = u64::from(ns.lba_size);
    const MULTI: usize = 64 * 1024;
    const SPAN: usize = 192 * 1024;
    let multi_lba = 8;
    let single_lba = 3;
    if ns.lba_count.saturating_mul(size) < SPAN as u64 {
        return Err(SelftestError::TooSmall);
    }
    let mut scratch =
        Dma::alloc(SPAN + 2 * PAGE as usize).map_err(step("memory for the test's buffers"))?;
    let buf = scratch.bytes_mut();

    let base = multi_lba * size;
    for (i, b) in buf[..MULTI].iter_mut().enumerate() {
        *b = selftest_pattern(base + i as u64);
    }
    nvme.write(ns.nsid, multi_lba, &buf[..MULTI])
        .map_err(step("64 KiB write"))?;
    let odd = 0x123;
    let one = &mut buf[odd..odd + size as usize];
    for (i, b) in one.iter_mut().enumerate() {
        *b = !selftest_pattern(single_lba * size + i as u64);
    }
    nvme.write(ns.nsid, single_lba, one)
        .map_err(step("single-LBA write"))?;
    nvme.flush(ns.nsid).map_err(step("flush"))?;

    let back = &mut buf[0x35..0x35 + SPAN];
    back.fill(0xee);
    nvme.read(ns.nsid, 0, back).map_err(step("192 KiB read"))?;
    let check = |range: core::ops::Range<u64>, complement: bool| {
        for off in range {
            let want = selftest_pattern(off) ^ if complement { 0xff } else { 0 };
            let got = back[off as usize];
            if got != want {
                return Err(SelftestError::Mismatch {
                    offset: off,
                    want,
                    got,
                });
            }
        }
        Ok(())
    };
    check(base..base + MULTI as u64, false)?;
    check(single_lba * size..(single_lba + 1) * size, true)?;
    println!("nvme: selftest passed");
    Ok(())
}
