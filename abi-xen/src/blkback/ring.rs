//! The blkif ring of one virtual disk: a page shared with the frontend that carries requests in
//! and responses out, and the serving of each request from the disk through granted pages.
//!
//! Every request is copied out of the ring once and checked on that copy (the guest may rewrite
//! the ring meanwhile). A bad request gets `BLKIF_RSP_ERROR` (or `EOPNOTSUPP` for an operation
//! not advertised); only indices that could not come from an honest frontend break the ring.

use crate::gnttab::GrantError;
use core::sync::atomic::{Ordering, fence};
use virt::GuestMemory;
use virt::block::{HostPiece, SECTOR, Volume, VolumeError, host_pieces, transfer_direct};
use virt::personality::Host;

const HEADER: u64 = 64;
const ENTRY: u64 = 112;
/// Slots in a one-page ring: (4096 - 64) / 112, rounded down to a power of two.
pub const RING_SIZE: u32 = 32;
pub const MAX_SEGMENTS: usize = 11;
/// Segments of an indirect request, as `feature-max-indirect-segments` advertises: Linux's
/// default (and its cap unless the module parameter raises it), 128 KiB per request instead
/// of 44 KiB. Their descriptors fill one indirect page (512 fit).
pub const MAX_INDIRECT_SEGMENTS: usize = 32;
const SEGMENTS_PER_INDIRECT_PAGE: usize = 512;
/// [`MAX_INDIRECT_SEGMENTS`] as its xenstore node says it.
pub const INDIRECT_SEGMENTS_NODE: &[u8] = b"32";
const SECTORS_PER_PAGE: u8 = 8;
const PAGE: u64 = 4096;

const REQ_PROD: u64 = 0;
const REQ_EVENT: u64 = 4;
const RSP_PROD: u64 = 8;
const RSP_EVENT: u64 = 12;

pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 1;
pub const OP_FLUSH_DISKCACHE: u8 = 3;
pub const OP_INDIRECT: u8 = 6;

pub const RSP_OKAY: i16 = 0;
pub const RSP_ERROR: i16 = -1;
pub const RSP_EOPNOTSUPP: i16 = -2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub gref: u32,
    pub first: u8,
    pub last: u8,
}

impl Segment {
    fn sectors(self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: u8,
    pub id: u64,
    pub sector: u64,
    pub segments: heapless::Vec<Segment, MAX_INDIRECT_SEGMENTS>,
}

/// A request entry as decoded: servable, or to be answered with `status` at once.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per request, on the stack; the hypervisor does not allocate per exit"
)]
pub enum Parsed {
    Request(Request),
    /// A READ or WRITE (`op`) whose `count` segment descriptors are in the granted page
    /// `page`; answered with `op`, as blkfront checks.
    Indirect {
        op: u8,
        id: u64,
        sector: u64,
        count: usize,
        page: u32,
    },
    Refused {
        op: u8,
        id: u64,
        status: i16,
    },
}

fn segment(s: &[u8]) -> Option<Segment> {
    let seg = Segment {
        gref: u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        first: s[4],
        last: s[5],
    };
    (seg.first <= seg.last && seg.last < SECTORS_PER_PAGE).then_some(seg)
}

/// Decodes the x86-64 `blkif_request` in `e`.
pub fn parse(e: &[u8; ENTRY as usize]) -> Parsed {
    let op = e[0];
    let n = usize::from(e[1]);
    let id = u64::from_le_bytes(e[8..16].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(e[16..24].try_into().unwrap_or_default());
    let refused = |status| Parsed::Refused { op, id, status };
    let mut segments = heapless::Vec::new();
    match op {
        OP_READ | OP_WRITE => {
            if n == 0 || n > MAX_SEGMENTS {
                return refused(RSP_ERROR);
            }
            for s in e[24..24 + 8 * n].chunks_exact(8) {
                let Some(seg) = segment(s) else {
                    return refused(RSP_ERROR);
                };
                let _ = segments.push(seg);
            }
        }
        // `{ op, indirect_op, u16 nr_segments, id @8, sector @16, handle @24, grefs @28 }`.
        OP_INDIRECT => {
            let op = e[1];
            let count = usize::from(u16::from_le_bytes([e[2], e[3]]));
            let refused = |status| Parsed::Refused { op, id, status };
            if op != OP_READ && op != OP_WRITE {
                return refused(RSP_EOPNOTSUPP);
            }
            if count == 0 || count > MAX_INDIRECT_SEGMENTS {
                return refused(RSP_ERROR);
            }
            return Parsed::Indirect {
                op,
                id,
                sector,
                count,
                page: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
            };
        }
        // Carries no data; Linux sends it with no segments.
        OP_FLUSH_DISKCACHE => {}
        // Barriers and discard are not advertised.
        _ => return refused(RSP_EOPNOTSUPP),
    }
    Parsed::Request(Request {
        op,
        id,
        sector,
        segments,
    })
}

/// The backend's side of a connected ring.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    /// Grant reference of the ring page.
    pub gref: u32,
    /// The frontend's event channel (bound to the backend).
    pub port: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
}

/// The frontend's indices are beyond anything the protocol allows; the disk stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken;

/// Requests served per call: a frontend whose other vCPUs keep producing must not hold the
/// calling vCPU (and its pCPU) in the hypervisor for ever. What is left is served later.
pub const BUDGET: u32 = 2 * RING_SIZE;

/// What a service pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// The frontend asked to be notified of the responses.
    pub notify: bool,
    /// The budget ran out with requests still queued.
    pub more: bool,
}

/// Resolves a grant reference for an access by the backend (write: into the guest's page):
/// the page's guest-physical address, if the guest's grant entry allows it now.
pub type Grants<'a> = &'a dyn Fn(&dyn GuestMemory, u32, bool) -> Result<u64, GrantError>;

/// The disk a ring serves, and where its data goes.
pub struct Disk<'a> {
    /// The VM's disk, for [`Host::disk_io`].
    pub index: u32,
    pub sectors: u64,
    pub read_only: bool,
    pub grants: Grants<'a>,
}

impl Ring {
    /// A ring the frontend just initialised (all indices zero).
    pub fn new(gref: u32, port: u32) -> Self {
        Ring {
            gref,
            port,
            req_cons: 0,
            rsp_prod_pvt: 0,
        }
    }

    /// Serves the requests the frontend queued, up to [`BUDGET`], answering each.
    pub fn service(
        &mut self,
        mem: &dyn GuestMemory,
        host: &mut dyn Host,
        disk: &Disk<'_>,
    ) -> Result<Served, Broken> {
        let page = (disk.grants)(mem, self.gref, true).map_err(|_| Broken)?;
        let rd = |off| mem.read_u32(page + off).map_err(|_| Broken);
        let wr = |off, v: u32| mem.write_u32(page + off, v).map_err(|_| Broken);
        let mut notify = false;
        let mut budget = BUDGET;
        let mut batch = Batch::default();
        loop {
            let prod = rd(REQ_PROD)?;
            // Acquire: the requests were written before `req_prod`.
            fence(Ordering::Acquire);
            if prod.wrapping_sub(self.req_cons) > RING_SIZE {
                return Err(Broken);
            }
            while self.req_cons != prod && budget > 0 {
                budget -= 1;
                if self.req_cons.wrapping_sub(self.rsp_prod_pvt) >= RING_SIZE {
                    return Err(Broken);
                }
                let slot = page + HEADER + u64::from(self.req_cons % RING_SIZE) * ENTRY;
                let mut e = [0u8; ENTRY as usize];
                mem.read(slot, &mut e).map_err(|_| Broken)?;
                self.req_cons = self.req_cons.wrapping_add(1);
                let request = match parse(&e) {
                    Parsed::Refused { op, id, status } => Err((op, id, status)),
                    Parsed::Request(r) => Ok(r),
                    Parsed::Indirect {
                        op,
                        id,
                        sector,
                        count,
                        page,
                    } => match indirect_segments(mem, disk, page, count) {
                        Some(segments) => Ok(Request {
                            op,
                            id,
                            sector,
                            segments,
                        }),
                        None => Err((op, id, RSP_ERROR)),
                    },
                };
                // A read or write that continues the batch on the disk joins it; anything
                // else is answered after the batch, in ring order.
                if let Ok(r) = &request
                    && batch.add(r, mem, disk)
                {
                    continue;
                }
                batch.finish(mem, host, disk, &mut |op, id, st| {
                    self.respond(mem, page, op, id, st)
                })?;
                match request {
                    Ok(r) if batch.add(&r, mem, disk) => {}
                    Ok(r) => {
                        let st = serve(&r, mem, host, disk);
                        self.respond(mem, page, r.op, r.id, st)?;
                    }
                    Err((op, id, st)) => self.respond(mem, page, op, id, st)?,
                }
            }
            batch.finish(mem, host, disk, &mut |op, id, st| {
                self.respond(mem, page, op, id, st)
            })?;
            // Release: the responses before `rsp_prod`.
            let old = rd(RSP_PROD)?;
            fence(Ordering::Release);
            let new = self.rsp_prod_pvt;
            wr(RSP_PROD, new)?;
            fence(Ordering::SeqCst);
            let event = rd(RSP_EVENT)?;
            notify |= new.wrapping_sub(event) < new.wrapping_sub(old);
            if self.req_cons != prod {
                // Out of budget: the rest waits for the next pass, which the caller arranges
                // (the frontend will not notify for requests it already queued).
                return Ok(Served { notify, more: true });
            }
            // Ask for a notification with the next request, then look once more for one that
            // arrived before the frontend could see that.
            wr(REQ_EVENT, self.req_cons.wrapping_add(1))?;
            fence(Ordering::SeqCst);
            if rd(REQ_PROD)? == self.req_cons {
                return Ok(Served {
                    notify,
                    more: false,
                });
            }
        }
    }
}

impl Ring {
    /// Writes the response to request `id` at the next response slot (published later).
    fn respond(
        &mut self,
        mem: &dyn GuestMemory,
        page: u64,
        op: u8,
        id: u64,
        status: i16,
    ) -> Result<(), Broken> {
        let mut rsp = [0u8; 16];
        rsp[0..8].copy_from_slice(&id.to_le_bytes());
        rsp[8] = op;
        rsp[10..12].copy_from_slice(&status.to_le_bytes());
        let at = page + HEADER + u64::from(self.rsp_prod_pvt % RING_SIZE) * ENTRY;
        mem.write(at, &rsp).map_err(|_| Broken)?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }
}

/// Requests a batch joins: a 1 MiB write or read that Linux cut into 128 KiB requests.
const BATCH_REQUESTS: usize = 8;
/// Bytes a batch moves at most: what one direct command of QEMU's controller moves.
const BATCH_BYTES: u64 = 512 * 1024;

/// Reads (or writes) queued together that follow one another on the disk, served as one
/// volume request straight between the disk and their granted pages: a frontend cuts a large
/// transfer into requests of at most 128 KiB, and each volume request costs the controller a
/// round trip whatever its size.
#[derive(Default)]
struct Batch {
    reqs: heapless::Vec<Request, BATCH_REQUESTS>,
    /// The sector after the batch's last.
    end: u64,
    pieces: heapless::Vec<HostPiece, BATCH_PIECES>,
}

const BATCH_PIECES: usize = virt::block::MAX_PIECES;

impl Batch {
    /// Adds `r` if it continues the batch (or starts one) and could go direct: a read or write
    /// within the disk whose grants allow it and whose pages devices reach. Whether it did.
    fn add(&mut self, r: &Request, mem: &dyn GuestMemory, disk: &Disk<'_>) -> bool {
        let write = r.op == OP_WRITE;
        let sectors: u64 = r.segments.iter().map(|s| s.sectors()).sum();
        let fits = match self.reqs.first() {
            None => true,
            Some(first) => {
                let bytes: u64 = self.pieces.iter().map(|p| p.len).sum();
                first.op == r.op
                    && r.sector == self.end
                    && bytes + sectors * SECTOR <= BATCH_BYTES
                    && !self.reqs.is_full()
            }
        };
        if !fits
            || !(r.op == OP_READ || write)
            || (write && disk.read_only)
            || r.sector
                .checked_add(sectors)
                .is_none_or(|end| end > disk.sectors)
        {
            return false;
        }
        let mut to = [HostPiece::default(); MAX_INDIRECT_SEGMENTS];
        let mut n = 0;
        for s in &r.segments {
            let Ok(gpa) = (disk.grants)(mem, s.gref, !write) else {
                return false;
            };
            let range = (gpa + u64::from(s.first) * SECTOR, s.sectors() * SECTOR);
            let Some(k) = host_pieces(mem, [range], &mut to[n..]) else {
                return false;
            };
            n += k;
        }
        if self.pieces.len() + n > self.pieces.capacity() {
            return false;
        }
        for p in &to[..n] {
            match self.pieces.last_mut() {
                Some(last) if last.hpa + last.len == p.hpa => last.len += p.len,
                _ => {
                    let _ = self.pieces.push(*p);
                }
            }
        }
        self.end = r.sector + sectors;
        self.reqs.push(r.clone()).is_ok()
    }

    /// Serves the batch and answers each of its requests in order: all at once where the
    /// volume can, else one by one (a failure is then each request's own).
    fn finish(
        &mut self,
        mem: &dyn GuestMemory,
        host: &mut dyn Host,
        disk: &Disk<'_>,
        respond: &mut dyn FnMut(u8, u64, i16) -> Result<(), Broken>,
    ) -> Result<(), Broken> {
        let Some(first) = self.reqs.first() else {
            return Ok(());
        };
        let (write, sector) = (first.op == OP_WRITE, first.sector);
        let whole = self.reqs.len() > 1
            && transfer_direct(host, disk.index, write, sector, &self.pieces)
                .is_some_and(|r| r.is_ok());
        for r in &self.reqs {
            let st = if whole {
                RSP_OKAY
            } else {
                serve(r, mem, host, disk)
            };
            respond(r.op, r.id, st)?;
        }
        self.reqs.clear();
        self.pieces.clear();
        Ok(())
    }
}

/// The segment descriptors of an indirect request, read once from its granted page (the
/// backend only reads it), each checked as a direct request's.
fn indirect_segments(
    mem: &dyn GuestMemory,
    disk: &Disk<'_>,
    page: u32,
    count: usize,
) -> Option<heapless::Vec<Segment, MAX_INDIRECT_SEGMENTS>> {
    const _: () = assert!(MAX_INDIRECT_SEGMENTS <= SEGMENTS_PER_INDIRECT_PAGE);
    let gpa = (disk.grants)(mem, page, false).ok()?;
    let mut raw = [0u8; 8 * MAX_INDIRECT_SEGMENTS];
    let raw = raw.get_mut(..8 * count)?;
    mem.read(gpa, raw).ok()?;
    let mut out = heapless::Vec::new();
    for s in raw.chunks_exact(8) {
        out.push(segment(s)?).ok()?;
    }
    Some(out)
}

/// Performs one request; its response status.
fn serve(r: &Request, mem: &dyn GuestMemory, host: &mut dyn Host, disk: &Disk<'_>) -> i16 {
    let write = r.op == OP_WRITE;
    if r.op == OP_FLUSH_DISKCACHE {
        return status(host.disk_io(disk.index, &mut |v| v.flush()));
    }
    if write && disk.read_only {
        return RSP_ERROR;
    }
    let total: u64 = r.segments.iter().map(|s| s.sectors()).sum();
    if r.sector
        .checked_add(total)
        .is_none_or(|end| end > disk.sectors)
    {
        return RSP_ERROR;
    }
    // Every grant is checked before any data moves: a read into the guest needs write access
    // to its page, a write from it read access.
    let mut pages: heapless::Vec<(u64, Segment), MAX_INDIRECT_SEGMENTS> = heapless::Vec::new();
    for &s in &r.segments {
        let Ok(gpa) = (disk.grants)(mem, s.gref, !write) else {
            return RSP_ERROR;
        };
        let _ = pages.push((gpa, s));
    }
    if let Some(done) = direct(write, r.sector, &pages, mem, host, disk) {
        return status(done);
    }
    // One volume request per group of up to 11 segments (a direct request is one group): the
    // segments are consecutive on the disk, only the guest pages differ, and the emulated (or
    // real) controller pays per command.
    let mut buf = [0u8; MAX_SEGMENTS * PAGE as usize];
    let mut sector = r.sector;
    for group in pages.chunks(MAX_SEGMENTS) {
        let sectors: u64 = group.iter().map(|(_, s)| s.sectors()).sum();
        let Some(data) = buf.get_mut(..(sectors * SECTOR) as usize) else {
            return RSP_ERROR;
        };
        let status = serve_group(group, sector, write, data, mem, host, disk);
        if status != RSP_OKAY {
            return status;
        }
        sector += sectors;
    }
    RSP_OKAY
}

/// Moves the whole request straight between the disk and the granted pages, where the volume
/// can (one volume request, no copy by the hypervisor); `None` where it cannot, and the
/// request is served again through a buffer.
fn direct(
    write: bool,
    sector: u64,
    pages: &[(u64, Segment)],
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
    disk: &Disk<'_>,
) -> Option<Result<(), VolumeError>> {
    let mut to = [HostPiece::default(); MAX_INDIRECT_SEGMENTS];
    let ranges = pages
        .iter()
        .map(|&(gpa, s)| (gpa + u64::from(s.first) * SECTOR, s.sectors() * SECTOR));
    let n = host_pieces(mem, ranges, &mut to)?;
    transfer_direct(host, disk.index, write, sector, &to[..n])
}

/// Moves one group of segments between `data` and the disk at `sector`.
fn serve_group(
    pages: &[(u64, Segment)],
    sector: u64,
    write: bool,
    data: &mut [u8],
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
    disk: &Disk<'_>,
) -> i16 {
    let copy = |to_guest: bool, data: &mut [u8]| -> Result<(), VolumeError> {
        let mut off = 0;
        for &(gpa, s) in pages {
            let at = gpa + u64::from(s.first) * SECTOR;
            let part = &mut data[off..off + (s.sectors() * SECTOR) as usize];
            if to_guest {
                mem.write(at, part)
            } else {
                mem.read(at, part)
            }
            .map_err(|_| VolumeError::Io)?;
            off += part.len();
        }
        Ok(())
    };
    if write {
        if copy(false, data).is_err() {
            return RSP_ERROR;
        }
        status(host.disk_io(disk.index, &mut |v: &mut dyn Volume| v.write(sector, data)))
    } else {
        let read = host.disk_io(disk.index, &mut |v: &mut dyn Volume| v.read(sector, data));
        status(read.and_then(|()| copy(true, data)))
    }
}

fn status(r: Result<(), VolumeError>) -> i16 {
    if r.is_ok() { RSP_OKAY } else { RSP_ERROR }
}
