//! VMBus as a Hyper-V guest's bus driver sees it: SynIC messages in and out (HvPostMessage,
//! the SIM slot with its pending flag and EOM), version negotiation, the channel offers,
//! GPADLs built from a header and body messages, opening a channel on a ring pair, packets
//! both ways with the channel's SIEF flag, the synthetic SCSI controller's start-up and an
//! INQUIRY when the manifest gives the VM a disk (`probe.disks=N`), and the host's answers
//! to a hostile guest: bad hypercall input, pages outside RAM, unknown GPADLs and
//! connections, an SRB longer than its buffer, and ring indices no honest guest writes.
//!
//! The channel that needs no disk, the shutdown integration service, carries the ring checks
//! in every configuration (the suite's Bochs runs have no NVMe controller, so no disks).
//!
//! Every constant is the guest's own copy of the public ABI (Linux's `hyperv.h`, the VMBus
//! and storvsc drivers), not the hypervisor's.

use super::{INPUT, PAST_RAM, call, status};
use crate::arch;
use crate::checks::check;
use crate::page::Page;
use core::sync::atomic::{Ordering, fence};

/// SynIC MSRs.
const SCONTROL: u32 = 0x4000_0080;
const SIEFP: u32 = 0x4000_0082;
const SIMP: u32 = 0x4000_0083;
const EOM: u32 = 0x4000_0084;
const SINT0: u32 = 0x4000_0090;
const SINT_MASKED: u64 = 1 << 16;

/// `probe.bench`'s SynIC round trip: synthetic timer 1 in message mode, one-shot, enabled by
/// each count write (auto-enable), posting to SINT3 on its own vector.
const STIMER1_CONFIG: u32 = 0x4000_00B2;
const STIMER1_COUNT: u32 = 0x4000_00B3;
const ST_AUTO_ENABLE: u64 = 1 << 3;
const ST_SINTX_SHIFT: u32 = 16;
const TIMER_SINT: u64 = 3;
const TIMER_VECTOR: u8 = 0x54;
/// `HVMSG_TIMER_EXPIRED`.
const TIMER_EXPIRED: u32 = 0x8000_0010;

/// Hypercall codes and `HV_STATUS_*` values of the VMBus calls.
const POST_MESSAGE: u64 = 0x005C;
const SIGNAL_EVENT: u64 = 0x005D;
const FAST: u64 = 1 << 16;
const SUCCESS: u16 = 0;
const INVALID_PARAMETER: u16 = 5;
const INVALID_CONNECTION_ID: u16 = 0x12;

/// The SINT VMBus uses (Linux's VMBUS_MESSAGE_SINT), its vector here, and the slot layout.
const SINT: u64 = 2;
const VECTOR: u8 = 0x53;
const SLOT: u64 = SINT * 256;
const MSG_PENDING: u8 = 1;
const PAYLOAD_MAX: usize = 240;
/// The connection channel-management messages go to from protocol 5.0.
const MESSAGE_CONNECTION: u32 = 4;
/// The SynIC message type of VMBus messages.
const VMBUS_MESSAGE: u32 = 1;

/// `vmbus_channel_message_type`.
const OFFERCHANNEL: u32 = 1;
const REQUESTOFFERS: u32 = 3;
const ALLOFFERS_DELIVERED: u32 = 4;
const OPENCHANNEL: u32 = 5;
const OPENCHANNEL_RESULT: u32 = 6;
const GPADL_HEADER: u32 = 8;
const GPADL_BODY: u32 = 9;
const GPADL_CREATED: u32 = 10;
const INITIATE_CONTACT: u32 = 14;
const VERSION_RESPONSE: u32 = 15;
const UNLOAD: u32 = 16;
const UNLOAD_RESPONSE: u32 = 17;

/// Protocol versions: Windows 10 v5.3 (Linux 6.1's first choice) and one no host knows.
const VERSION_5_3: u32 = (5 << 16) | 3;
const VERSION_FUTURE: u32 = 6 << 16;

/// Message sizes (header included).
const OFFER_LEN: usize = 196;
const INITIATE_CONTACT_LEN: usize = 40;
const OPEN_LEN: usize = 148;
/// Page numbers a GPADL_HEADER (one range, list from byte 28) and a GPADL_BODY (list from
/// byte 16) carry at most in a 240-byte message.
const HEADER_PFNS: usize = 26;
const BODY_PFNS: usize = 28;

/// Interface types as the offer stores them (GUIDs in their little-endian byte order):
/// storvsc {ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}, shutdown {0e0b6031-5213-4934-818b-38d90ced39db}.
const STORVSC: [u8; 16] = [
    0xd9, 0x63, 0x61, 0xba, 0xa1, 0x04, 0x29, 0x4d, 0xb6, 0x05, 0x72, 0xe2, 0xff, 0xb1, 0xdc, 0x7f,
];
const SHUTDOWN: [u8; 16] = [
    0x31, 0x60, 0x0b, 0x0e, 0x13, 0x52, 0x34, 0x49, 0x81, 0x8b, 0x38, 0xd9, 0x0c, 0xed, 0x39, 0xdb,
];

/// VMBus packet types and the descriptor flag asking for a completion.
const DATA_INBAND: u16 = 6;
const DATA_GPA_DIRECT: u16 = 9;
const COMP: u16 = 11;
const COMPLETION_REQUESTED: u16 = 1;
const DESCRIPTOR: usize = 16;
const TRAILER: usize = 8;

/// `vstor_packet_operation`, its size, and the SRB (`vmscsi_request`) inside it at 12.
const COMPLETE_IO: u32 = 1;
const EXECUTE_SRB: u32 = 3;
const BEGIN_INITIALIZATION: u32 = 7;
const END_INITIALIZATION: u32 = 8;
const QUERY_PROTOCOL_VERSION: u32 = 9;
const QUERY_PROPERTIES: u32 = 10;
const REQUEST_COMPLETION_FLAG: u32 = 1;
const VSTOR_PACKET: usize = 64;
const VSTOR_WIN10: u16 = 0x0602;
const SRB: usize = 12;
const SRB_LEN: u16 = 52;
const SENSE_BUFFER: u8 = 20;
const SRB_STATUS_SUCCESS: u8 = 1;
const SRB_STATUS_INVALID_REQUEST: u8 = 6;
const READ_TYPE: u8 = 1;

/// Integration-component messages (`icmsg_hdr` after the 8-byte pipe header).
const IC_HEADER: usize = 8;
const IC_BODY: usize = IC_HEADER + 20;
const IC_NEGOTIATE: u16 = 0;
const IC_TRANSACTION: u8 = 1;
const IC_REQUEST: u8 = 2;
const IC_RESPONSE: u8 = 4;

/// Each channel's GPADL: two rings of a control page and 16 data pages (34 pages: more than
/// one GPADL_HEADER holds, so a body message follows).
const RING_PAGES: usize = 34;
const OUT_PAGES: usize = 17;
const RING_DATA: u32 = (OUT_PAGES as u32 - 1) * 4096;
/// Ring control page fields.
const WRITE_INDEX: u64 = 0;
const READ_INDEX: u64 = 4;

/// GPADL ids the probe picks (the guest names them).
const IC_GPADL: u32 = 0x100;
const SCSI_GPADL: u32 = 0x200;
const BAD_GPADL: u32 = 0x300;
const NO_GPADL: u32 = 0x999;

/// How long (TSC cycles) to wait for something the host does synchronously: everything the
/// host sends is in place when the hypercall or EOM returns; this only bounds a wait for
/// something that never comes.
const WAIT: u64 = 20_000_000;

static SIM: Page = Page::new();
static SIEF: Page = Page::new();
static MONITOR: [Page; 2] = [const { Page::new() }; 2];
static IC_RING: [Page; RING_PAGES] = [const { Page::new() }; RING_PAGES];
static SCSI_RING: [Page; RING_PAGES] = [const { Page::new() }; RING_PAGES];
/// The SRBs' data buffer.
static DATA: Page = Page::new();

// ---- guest memory the host writes (SIM slot, rings, data buffer) ----

fn rd8(addr: u64) -> u8 {
    // SAFETY: `addr` lies in one of the probe's own identity-mapped pages above; their
    // contents live in atomics (UnsafeCell), so writes behind shared references are allowed.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn wr8(addr: u64, v: u8) {
    // SAFETY: as for rd8.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn rd32(addr: u64) -> u32 {
    // SAFETY: as for rd8; every caller passes a 4-byte aligned address.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn wr32(addr: u64, v: u32) {
    // SAFETY: as for rd32.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// A channel-management message: built for HvPostMessage, or as read from the SIM slot.
#[derive(Clone, Copy)]
struct Msg {
    len: usize,
    b: [u8; PAYLOAD_MAX],
}

impl Msg {
    fn new(kind: u32, len: usize) -> Msg {
        let mut m = Msg {
            len,
            b: [0; PAYLOAD_MAX],
        };
        m.put32(0, kind);
        m
    }

    fn kind(&self) -> u32 {
        le32(&self.b, 0)
    }

    fn u32(&self, at: usize) -> u32 {
        le32(&self.b, at)
    }

    fn put32(&mut self, at: usize, v: u32) -> &mut Msg {
        put(&mut self.b, at, &v.to_le_bytes());
        self
    }

    fn put64(&mut self, at: usize, v: u64) -> &mut Msg {
        put(&mut self.b, at, &v.to_le_bytes());
        self
    }
}

/// HvPostMessage: `{ connection_id, reserved, message_type, payload_size, payload }`.
fn post_raw(connection: u32, kind: u32, size: u32, payload: &[u8]) -> u16 {
    INPUT.0[0].store(u64::from(connection), Ordering::Release);
    INPUT.0[1].store(u64::from(kind) | (u64::from(size) << 32), Ordering::Release);
    for (i, chunk) in payload.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        INPUT.0[2 + i].store(u64::from_le_bytes(w), Ordering::Release);
    }
    status(call(POST_MESSAGE, INPUT.addr(), 0).0)
}

fn post(m: &Msg) -> u16 {
    post_raw(
        MESSAGE_CONNECTION,
        VMBUS_MESSAGE,
        m.len as u32,
        &m.b[..m.len],
    )
}

/// The next message in SIM slot 2, taken as Linux's `vmbus_on_msg_dpc` takes it: copied,
/// the type cleared, and EOM written when the host flagged more as pending.
fn recv_within(cycles: u64) -> Option<Msg> {
    let slot = SIM.addr() + SLOT;
    let t0 = arch::rdtsc();
    while rd32(slot) == 0 {
        if arch::rdtsc() - t0 > cycles {
            return None;
        }
        core::hint::spin_loop();
    }
    fence(Ordering::Acquire);
    let len = usize::from(rd8(slot + 4)).min(PAYLOAD_MAX);
    let mut m = Msg {
        len,
        b: [0; PAYLOAD_MAX],
    };
    for (i, b) in m.b[..len].iter_mut().enumerate() {
        *b = rd8(slot + 16 + i as u64);
    }
    wr32(slot, 0);
    fence(Ordering::SeqCst);
    if rd8(slot + 5) & MSG_PENDING != 0 {
        arch::wrmsr(EOM, 0);
    }
    Some(m)
}

fn recv() -> Option<Msg> {
    recv_within(WAIT)
}

/// Empties the slot (and the host's queue behind it).
fn drain() -> u32 {
    let mut n = 0;
    while recv_within(WAIT / 10).is_some() {
        n += 1;
    }
    n
}

/// HvSignalEvent, fast: the connection id in RDX, event flag 0.
fn signal(connection: u32) -> u16 {
    status(call(SIGNAL_EVENT | FAST, u64::from(connection), 0).0)
}

/// Takes channel `relid`'s flag from SIEF slot 2: whether the host had set it.
fn sief_take(relid: u32) -> bool {
    let word = (SLOT / 8) as usize + (relid / 64) as usize;
    let bit = 1u64 << (relid % 64);
    SIEF.0
        .get(word)
        .is_some_and(|w| w.fetch_and(!bit, Ordering::AcqRel) & bit != 0)
}

fn kind_of(m: &Option<Msg>) -> u32 {
    m.as_ref().map_or(0, Msg::kind)
}

/// An offer the host made.
#[derive(Clone, Copy)]
struct Offer {
    kind: [u8; 16],
    instance: [u8; 16],
    relid: u32,
    connection: u32,
    len: usize,
    monitored: bool,
    dedicated: bool,
}

/// A packet read from a channel's incoming ring: its descriptor and the first bytes after it.
struct Packet {
    kind: u16,
    offset: usize,
    len: usize,
    trans_id: u64,
    body: [u8; 128],
}

/// One open (or about to be opened) channel: its ring pair in `ring`, the guest's own
/// indices, and the next transaction id.
struct Channel {
    relid: u32,
    connection: u32,
    ring: u64,
    out_write: u32,
    in_read: u32,
    next_id: u64,
}

impl Channel {
    fn new(o: &Offer, ring: &'static [Page; RING_PAGES]) -> Channel {
        Channel {
            relid: o.relid,
            connection: o.connection,
            ring: ring.as_ptr() as u64,
            out_write: 0,
            in_read: 0,
            next_id: 1,
        }
    }

    fn out_control(&self) -> u64 {
        self.ring
    }

    fn in_control(&self) -> u64 {
        self.ring + OUT_PAGES as u64 * 4096
    }

    /// Writes `bytes` at `offset` of the outgoing ring's data area, wrapping.
    fn write_out(&self, offset: u32, bytes: &[u8]) -> u32 {
        let mut at = offset;
        for &b in bytes {
            wr8(self.ring + 4096 + u64::from(at), b);
            at = (at + 1) % RING_DATA;
        }
        at
    }

    fn read_in(&self, offset: u32, buf: &mut [u8]) {
        let mut at = offset;
        for b in buf.iter_mut() {
            *b = rd8(self.in_control() + 4096 + u64::from(at));
            at = (at + 1) % RING_DATA;
        }
    }

    /// Writes a packet (descriptor, `header`, `body` padded to 8, trailer) at the guest's
    /// write index without publishing it; returns its transaction id.
    fn queue(&mut self, kind: u16, flags: u16, header: &[u8], body: &[u8], id: Option<u64>) -> u64 {
        let trans_id = id.unwrap_or_else(|| {
            self.next_id += 1;
            self.next_id
        });
        let offset = DESCRIPTOR + header.len();
        let len = (offset + body.len()).div_ceil(8) * 8;
        let mut d = [0u8; DESCRIPTOR];
        put(&mut d, 0, &kind.to_le_bytes());
        put(&mut d, 2, &((offset / 8) as u16).to_le_bytes());
        put(&mut d, 4, &((len / 8) as u16).to_le_bytes());
        put(&mut d, 6, &flags.to_le_bytes());
        put(&mut d, 8, &trans_id.to_le_bytes());
        let start = self.out_write;
        let mut at = self.write_out(start, &d);
        at = self.write_out(at, header);
        at = self.write_out(at, body);
        at = self.write_out(at, &[0u8; 8][..len - offset - body.len()]);
        self.out_write = self.write_out(at, &(u64::from(start) << 32).to_le_bytes());
        trans_id
    }

    /// Publishes a write index of the outgoing ring.
    fn publish(&self, write: u32) {
        fence(Ordering::SeqCst);
        wr32(self.out_control() + WRITE_INDEX, write);
        fence(Ordering::SeqCst);
    }

    /// Queues and publishes a packet, then signals the host.
    fn send(
        &mut self,
        kind: u16,
        flags: u16,
        header: &[u8],
        body: &[u8],
        id: Option<u64>,
    ) -> (u64, u16) {
        let id = self.queue(kind, flags, header, body, id);
        self.publish(self.out_write);
        (id, signal(self.connection))
    }

    /// The host's read index of the outgoing ring.
    fn host_read(&self) -> u32 {
        rd32(self.out_control() + READ_INDEX)
    }

    /// The host's write index of the incoming ring.
    fn host_write(&self) -> u32 {
        rd32(self.in_control() + WRITE_INDEX)
    }

    /// The next packet of the incoming ring, consumed (the read index published).
    fn next(&mut self) -> Option<Packet> {
        let w = self.host_write();
        if w == self.in_read {
            return None;
        }
        fence(Ordering::Acquire);
        let mut d = [0u8; DESCRIPTOR];
        self.read_in(self.in_read, &mut d);
        let offset = usize::from(le16(&d, 2)) * 8;
        let len = usize::from(le16(&d, 4)) * 8;
        let mut p = Packet {
            kind: le16(&d, 0),
            offset,
            len,
            trans_id: le64(&d, 8),
            body: [0; 128],
        };
        if len < DESCRIPTOR || offset > len || len + TRAILER >= RING_DATA as usize {
            // Nothing sensible to skip to: stop reading this ring.
            self.in_read = w;
        } else {
            let n = (len - offset).min(p.body.len());
            let at = (self.in_read + offset as u32) % RING_DATA;
            self.read_in(at, &mut p.body[..n]);
            self.in_read = (self.in_read + (len + TRAILER) as u32) % RING_DATA;
        }
        fence(Ordering::SeqCst);
        wr32(self.in_control() + READ_INDEX, self.in_read);
        Some(p)
    }
}

/// SynIC on (message and event-flag pages, SINT2 on its vector), then the checks.
pub(super) fn checks(disks: u32) {
    arch::wrmsr(SIMP, SIM.addr() | 1);
    arch::wrmsr(SIEFP, SIEF.addr() | 1);
    arch::expect_vector(VECTOR, true);
    arch::wrmsr(SINT0 + SINT as u32, u64::from(VECTOR));
    arch::wrmsr(SCONTROL, 1);
    let stale = drain();
    if stale != 0 {
        crate::say!("hyperv vmbus: {stale} message(s) before the guest asked for any");
    }

    if !negotiate() {
        return;
    }
    let Some((ic, scsi, max_connection)) = offers(disks) else {
        return;
    };
    bad_messages(max_connection);
    let mut ic = Channel::new(&ic, &IC_RING);
    if !open_ic(&mut ic) {
        return;
    }
    let mut scsi = scsi.map(|o| Channel::new(&o, &SCSI_RING));
    if let Some(s) = scsi.as_mut()
        && !storvsc(s)
    {
        scsi = None;
    }
    ic_dies(&mut ic);
    if let Some(s) = scsi.as_mut() {
        storvsc_dies(s);
    }
    let s = post(&Msg::new(UNLOAD, 8));
    let r = recv();
    check(
        "hv-vmbus-unload",
        s == SUCCESS && kind_of(&r) == UNLOAD_RESPONSE,
        format_args!("post {s}, answer type {}", kind_of(&r)),
    );
    masked();
}

/// With SINT2 masked the host still puts its messages in the slot; only the interrupt is
/// left out. (A new connection, given up again at once.)
fn masked() {
    // Takes the interrupt the last unmasked messages left pending, if any.
    let (pending, _) = arch::vector_hits(VECTOR);
    arch::wait_vector(VECTOR, pending, WAIT);
    arch::wrmsr(SINT0 + SINT as u32, SINT_MASKED | u64::from(VECTOR));
    let (before, _) = arch::vector_hits(VECTOR);
    let (s, r) = contact(VERSION_5_3);
    let supported = r.map_or(0, |r| r.b[8]);
    let (hits, _) = arch::wait_vector(VECTOR, before, WAIT);
    let u = post(&Msg::new(UNLOAD, 8));
    let unloaded = recv();
    check(
        "hv-vmbus-masked-sint-still-delivers",
        s == SUCCESS
            && kind_of(&r) == VERSION_RESPONSE
            && supported == 1
            && hits == before
            && u == SUCCESS
            && kind_of(&unloaded) == UNLOAD_RESPONSE,
        format_args!(
            "post {s}, answer type {} supported {supported}, interrupts {}; UNLOAD post {u} \
             answer type {}",
            kind_of(&r),
            hits - before,
            kind_of(&unloaded)
        ),
    );
}

fn contact(version: u32) -> (u16, Option<Msg>) {
    let mut m = Msg::new(INITIATE_CONTACT, INITIATE_CONTACT_LEN);
    m.put32(8, version)
        .put32(12, 0)
        .put64(16, SINT)
        .put64(24, MONITOR[0].addr())
        .put64(32, MONITOR[1].addr());
    (post(&m), recv())
}

fn negotiate() -> bool {
    let (before, _) = arch::vector_hits(VECTOR);
    let (s, r) = contact(VERSION_FUTURE);
    let refused = r
        .as_ref()
        .is_some_and(|r| r.kind() == VERSION_RESPONSE && r.len >= 16 && r.b[8] == 0);
    check(
        "hv-vmbus-version-unsupported-refused",
        s == SUCCESS && refused,
        format_args!(
            "post {s}, answer type {} supported {:?}",
            kind_of(&r),
            r.map(|r| r.b[8])
        ),
    );
    let (s, r) = contact(VERSION_5_3);
    let (supported, connection) = r.map_or((0, 0), |r| (r.b[8], r.u32(12)));
    let ok = s == SUCCESS && kind_of(&r) == VERSION_RESPONSE && supported == 1;
    check(
        "hv-vmbus-version-negotiated",
        ok && connection == MESSAGE_CONNECTION,
        format_args!(
            "post {s}, answer type {} supported {supported} msg_conn_id {connection}",
            kind_of(&r)
        ),
    );
    // Messages raised SINT2's vector (pending until the probe takes interrupts here).
    let (hits, _) = arch::wait_vector(VECTOR, before, arch::WATCHDOG);
    check(
        "hv-vmbus-sint-interrupt",
        hits > before,
        format_args!("vector {VECTOR:#x} arrived {} time(s)", hits - before),
    );
    ok
}

/// REQUESTOFFERS: a storvsc offer per disk and the shutdown service, then the end marker.
/// Returns the shutdown offer, the first storvsc offer, and the largest connection id.
fn offers(disks: u32) -> Option<(Offer, Option<Offer>, u32)> {
    let s = post(&Msg::new(REQUESTOFFERS, 8));
    let mut list: [Option<Offer>; 8] = [None; 8];
    let mut count = 0;
    let mut ended = false;
    let mut other = 0;
    while let Some(m) = recv() {
        match m.kind() {
            OFFERCHANNEL if count < list.len() => {
                let mut kind = [0u8; 16];
                let mut instance = [0u8; 16];
                kind.copy_from_slice(&m.b[8..24]);
                instance.copy_from_slice(&m.b[24..40]);
                list[count] = Some(Offer {
                    kind,
                    instance,
                    relid: m.u32(184),
                    connection: m.u32(192),
                    len: m.len,
                    monitored: m.b[189] & 1 != 0,
                    dedicated: m.b[190] & 1 != 0,
                });
                count += 1;
            }
            ALLOFFERS_DELIVERED => {
                ended = true;
                break;
            }
            k => other = k,
        }
    }
    let offers = || list.iter().flatten();
    let scsi = offers().filter(|o| o.kind == STORVSC).count() as u32;
    let ic = offers().filter(|o| o.kind == SHUTDOWN).count();
    let unknown = offers()
        .filter(|o| o.kind != STORVSC && o.kind != SHUTDOWN)
        .count();
    let well_formed = offers().all(|o| {
        o.len == OFFER_LEN && o.relid != 0 && o.connection != 0 && o.dedicated && !o.monitored
    });
    let distinct = offers().enumerate().all(|(i, a)| {
        offers().skip(i + 1).all(|b| {
            a.relid != b.relid
                && a.connection != b.connection
                && (a.kind != b.kind || a.instance != b.instance)
        })
    });
    check(
        "hv-vmbus-offers",
        s == SUCCESS
            && ended
            && other == 0
            && scsi == disks
            && ic == 1
            && unknown == 0
            && well_formed
            && distinct,
        format_args!(
            "post {s}; {count} offers ({scsi} storvsc for {disks} disk(s), {ic} shutdown, \
             {unknown} unknown), well formed {well_formed}, distinct {distinct}, \
             end marker {ended}, other message {other}"
        ),
    );
    let ic = offers().find(|o| o.kind == SHUTDOWN).copied()?;
    let scsi = offers().find(|o| o.kind == STORVSC).copied();
    let max = offers().map(|o| o.connection).max().unwrap_or(0);
    Some((ic, scsi, max))
}

/// HvPostMessage and HvSignalEvent input the hypervisor must refuse, with nothing sent back.
fn bad_messages(max_connection: u32) {
    let offers = Msg::new(REQUESTOFFERS, 8);
    let oversize = post_raw(MESSAGE_CONNECTION, VMBUS_MESSAGE, 241, &offers.b[..8]);
    let type0 = post_raw(MESSAGE_CONNECTION, 0, 8, &offers.b[..8]);
    let r = recv_within(WAIT / 4);
    check(
        "hv-vmbus-post-message-invalid-parameter",
        oversize == INVALID_PARAMETER && type0 == INVALID_PARAMETER && r.is_none(),
        format_args!(
            "size 241: {oversize}, message type 0: {type0}, answer type {}",
            kind_of(&r)
        ),
    );
    let posted = post_raw(0x55, VMBUS_MESSAGE, 8, &offers.b[..8]);
    let signalled = signal(max_connection + 1);
    let r = recv_within(WAIT / 4);
    check(
        "hv-vmbus-unknown-connection-id",
        posted == INVALID_CONNECTION_ID && signalled == INVALID_CONNECTION_ID && r.is_none(),
        format_args!(
            "post to 0x55: {posted}, signal {:#x}: {signalled}, answer type {}",
            max_connection + 1,
            kind_of(&r)
        ),
    );
}

/// Creates GPADL `id` for channel `relid` over `pages` pages from `base` (page `bad`, if
/// given, replaced by one outside RAM): a header and as many bodies as the list needs.
/// Returns the posts' worst status and GPADL_CREATED's `(relid, id, status)`.
fn gpadl(
    relid: u32,
    id: u32,
    base: u64,
    pages: usize,
    bad: Option<usize>,
) -> (u16, Option<[u32; 3]>) {
    let pfn = |i: usize| {
        if Some(i) == bad {
            PAST_RAM >> 12
        } else {
            (base >> 12) + i as u64
        }
    };
    let first = pages.min(HEADER_PFNS);
    let mut h = Msg::new(GPADL_HEADER, 28 + 8 * first);
    h.put32(8, relid).put32(12, id);
    put(&mut h.b, 16, &((8 + 8 * pages) as u16).to_le_bytes());
    put(&mut h.b, 18, &1u16.to_le_bytes());
    h.put32(20, (pages * 4096) as u32).put32(24, 0);
    for i in 0..first {
        h.put64(28 + 8 * i, pfn(i));
    }
    let mut worst = post(&h);
    let mut next = first;
    let mut number = 1;
    while next < pages {
        let n = (pages - next).min(BODY_PFNS);
        let mut b = Msg::new(GPADL_BODY, 16 + 8 * n);
        b.put32(8, number).put32(12, id);
        for i in 0..n {
            b.put64(16 + 8 * i, pfn(next + i));
        }
        worst = worst.max(post(&b));
        next += n;
        number += 1;
    }
    let r = recv().filter(|r| r.kind() == GPADL_CREATED);
    (worst, r.map(|r| [r.u32(8), r.u32(12), r.u32(16)]))
}

/// OPENCHANNEL on `gpadl`, the incoming ring from page `OUT_PAGES`: OPENCHANNEL_RESULT's
/// `(relid, openid, status)`.
fn open(relid: u32, gpadl: u32) -> (u16, Option<[u32; 3]>) {
    let mut m = Msg::new(OPENCHANNEL, OPEN_LEN);
    m.put32(8, relid)
        .put32(12, relid)
        .put32(16, gpadl)
        .put32(20, 0)
        .put32(24, OUT_PAGES as u32);
    let s = post(&m);
    let r = recv().filter(|r| r.kind() == OPENCHANNEL_RESULT);
    (s, r.map(|r| [r.u32(8), r.u32(12), r.u32(16)]))
}

/// The hostile GPADL and opens, then the shutdown service's ring: its GPADL, its open, the
/// host's first packet on it and the guest's answer.
fn open_ic(ic: &mut Channel) -> bool {
    let base = IC_RING.as_ptr() as u64;
    // A list whose last page (in the body message) is not RAM.
    let (s, r) = gpadl(ic.relid, BAD_GPADL, base, 30, Some(29));
    check(
        "hv-vmbus-gpadl-outside-ram-refused",
        s == SUCCESS
            && r.is_some_and(|[relid, id, st]| relid == ic.relid && id == BAD_GPADL && st != 0),
        format_args!("posts {s}, GPADL_CREATED (relid, id, status) {r:x?}"),
    );
    let (s, r) = gpadl(ic.relid, IC_GPADL, base, RING_PAGES, None);
    check(
        "hv-vmbus-gpadl-multi-message",
        s == SUCCESS && r == Some([ic.relid, IC_GPADL, 0]),
        format_args!("{RING_PAGES} pages: posts {s}, GPADL_CREATED (relid, id, status) {r:x?}"),
    );
    let (s1, failed) = open(ic.relid, BAD_GPADL);
    let (s2, never) = open(ic.relid, NO_GPADL);
    let refused =
        |r: Option<[u32; 3]>| r.is_some_and(|[relid, _, st]| relid == ic.relid && st != 0);
    check(
        "hv-vmbus-open-unknown-gpadl-refused",
        s1 == SUCCESS && s2 == SUCCESS && refused(failed) && refused(never),
        format_args!(
            "refused GPADL: post {s1} result {failed:x?}; never created: post {s2} result {never:x?}"
        ),
    );
    let _ = sief_take(ic.relid);
    let (s, r) = open(ic.relid, IC_GPADL);
    let opened = s == SUCCESS && r == Some([ic.relid, ic.relid, 0]);
    check(
        "hv-vmbus-open",
        opened,
        format_args!("post {s}, OPENCHANNEL_RESULT (relid, openid, status) {r:x?}"),
    );
    if !opened {
        return false;
    }
    // The service speaks first: its version negotiation, in band, flagged in the SIEF.
    let flagged = sief_take(ic.relid);
    let p = ic.next();
    let (kind, ic_type, ic_flags, counts) = p.as_ref().map_or((0, 0, 0, (0, 0)), |p| {
        (
            p.kind,
            le16(&p.body, IC_HEADER + 4),
            p.body[IC_HEADER + 17],
            (le16(&p.body, IC_BODY), le16(&p.body, IC_BODY + 2)),
        )
    });
    let request = ic_flags & (IC_TRANSACTION | IC_REQUEST) == IC_TRANSACTION | IC_REQUEST;
    check(
        "hv-vmbus-ring-host-packet",
        flagged
            && kind == DATA_INBAND
            && ic_type == IC_NEGOTIATE
            && request
            && counts.0 > 0
            && counts.1 > 0,
        format_args!(
            "SIEF flag {flagged}, packet type {kind} icmsg type {ic_type} flags {ic_flags:#x} \
             version counts {counts:?}"
        ),
    );
    let Some(p) = p else {
        return false;
    };
    // The answer Linux's hv_utils gives: the same message, a response, one version of each.
    let n = (p.len - p.offset).min(IC_BODY + 16);
    let mut a = [0u8; IC_BODY + 16];
    a[..n].copy_from_slice(&p.body[..n]);
    a[IC_HEADER + 17] = IC_TRANSACTION | IC_RESPONSE;
    put(&mut a, IC_HEADER + 12, &0u32.to_le_bytes());
    put(&mut a, IC_BODY, &1u16.to_le_bytes());
    put(&mut a, IC_BODY + 2, &1u16.to_le_bytes());
    put(&mut a, IC_BODY + 8, &[3, 0, 0, 0]);
    put(&mut a, IC_BODY + 12, &[3, 0, 0, 0]);
    let (_, s) = ic.send(DATA_INBAND, 0, &[], &a[..n], Some(p.trans_id));
    let read = ic.host_read();
    check(
        "hv-vmbus-ring-guest-packet",
        s == SUCCESS && read == ic.out_write,
        format_args!("signal {s}, host read index {read} of {}", ic.out_write),
    );
    true
}

/// A vstor packet: operation, the completion flag, and what `fill` adds.
fn vstor(operation: u32, fill: impl FnOnce(&mut [u8; VSTOR_PACKET])) -> [u8; VSTOR_PACKET] {
    let mut v = [0u8; VSTOR_PACKET];
    put(&mut v, 0, &operation.to_le_bytes());
    put(&mut v, 4, &REQUEST_COMPLETION_FLAG.to_le_bytes());
    fill(&mut v);
    v
}

/// Sends a vstor packet and takes its completion: `(signal status, completion)`; the
/// completion must be a COMP packet of the request's transaction id.
fn request(
    ch: &mut Channel,
    kind: u16,
    header: &[u8],
    v: &[u8; VSTOR_PACKET],
) -> (u16, Option<Packet>) {
    let (id, s) = ch.send(kind, COMPLETION_REQUESTED, header, v, None);
    let c = ch.next().filter(|c| c.kind == COMP && c.trans_id == id);
    (s, c)
}

/// What an SRB's completion says: vstor status, `srb_status`, `scsi_status` and the bytes
/// moved (`data_transfer_length`); `None` without a completion.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SrbResult(Option<(u32, u8, u8, u32)>);

impl SrbResult {
    fn of(c: &Option<Packet>) -> SrbResult {
        SrbResult(c.as_ref().map(|c| {
            let b = &c.body;
            (le32(b, 8), b[SRB + 2], b[SRB + 3], le32(b, SRB + 12))
        }))
    }

    /// vstor status 0 and this `srb_status`.
    fn is(&self, srb_status: u8) -> bool {
        self.0.is_some_and(|r| r.0 == 0 && r.1 == srb_status)
    }
}

impl core::fmt::Display for SrbResult {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some((status, srb, scsi, len)) => write!(
                f,
                "status {status:#x} srb_status {srb:#x} scsi_status {scsi:#x} {len} bytes"
            ),
            None => write!(f, "no completion"),
        }
    }
}

/// An SRB for `cdb` reading `transfer` bytes, the data buffer described by a GPA-direct
/// range of `range` bytes in DATA's page (in band when `range` is 0).
fn srb(ch: &mut Channel, cdb: &[u8], transfer: u32, range: u32) -> (u16, Option<Packet>) {
    let v = vstor(EXECUTE_SRB, |v| {
        put(v, SRB, &SRB_LEN.to_le_bytes());
        v[SRB + 8] = cdb.len() as u8;
        v[SRB + 9] = SENSE_BUFFER;
        v[SRB + 10] = READ_TYPE;
        put(v, SRB + 12, &transfer.to_le_bytes());
        put(v, SRB + 16, cdb);
    });
    if range == 0 {
        return request(ch, DATA_INBAND, &[], &v);
    }
    // `{ reserved, rangecount = 1, { len, offset, pfn } }`.
    let mut h = [0u8; 24];
    put(&mut h, 4, &1u32.to_le_bytes());
    put(&mut h, 8, &range.to_le_bytes());
    put(&mut h, 16, &(DATA.addr() >> 12).to_le_bytes());
    request(ch, DATA_GPA_DIRECT, &h, &v)
}

fn fill_data(byte: u8) {
    for w in DATA.0.iter() {
        w.store(u64::from_ne_bytes([byte; 8]), Ordering::Release);
    }
}

/// The synthetic SCSI controller of the first disk: its ring, the vstor start-up, an
/// INQUIRY through a GPA-direct buffer, and an SRB its buffer cannot hold.
fn storvsc(ch: &mut Channel) -> bool {
    let (gs, created) = gpadl(ch.relid, SCSI_GPADL, ch.ring, RING_PAGES, None);
    let (os, opened) = open(ch.relid, SCSI_GPADL);
    let ok = gs == SUCCESS
        && created == Some([ch.relid, SCSI_GPADL, 0])
        && os == SUCCESS
        && opened == Some([ch.relid, ch.relid, 0]);
    check(
        "hv-vmbus-storvsc-open",
        ok,
        format_args!("GPADL: posts {gs} created {created:x?}; open: post {os} result {opened:x?}"),
    );
    if !ok {
        return false;
    }

    let _ = sief_take(ch.relid);
    let (s, c) = request(ch, DATA_INBAND, &[], &vstor(BEGIN_INITIALIZATION, |_| {}));
    let flagged = sief_take(ch.relid);
    let (operation, st) = c
        .as_ref()
        .map_or((0, u32::MAX), |c| (le32(&c.body, 0), le32(&c.body, 8)));
    check(
        "hv-vmbus-storvsc-completion",
        s == SUCCESS && c.is_some() && operation == COMPLETE_IO && st == 0 && flagged,
        format_args!(
            "signal {s}, completion of the same transaction {}, operation {operation} status \
             {st:#x}, SIEF flag {flagged}",
            c.is_some()
        ),
    );

    let (s1, version) = request(
        ch,
        DATA_INBAND,
        &[],
        &vstor(QUERY_PROTOCOL_VERSION, |v| {
            put(v, SRB, &VSTOR_WIN10.to_le_bytes());
        }),
    );
    let (s2, props) = request(ch, DATA_INBAND, &[], &vstor(QUERY_PROPERTIES, |_| {}));
    let (s3, end) = request(ch, DATA_INBAND, &[], &vstor(END_INITIALIZATION, |_| {}));
    let status_of = |c: &Option<Packet>| c.as_ref().map(|c| le32(&c.body, 8));
    let max_transfer = props.as_ref().map_or(0, |c| le32(&c.body, SRB + 12));
    check(
        "hv-vmbus-storvsc-init",
        [s1, s2, s3] == [SUCCESS; 3]
            && status_of(&version) == Some(0)
            && status_of(&props) == Some(0)
            && status_of(&end) == Some(0)
            && max_transfer >= 4096,
        format_args!(
            "signals {:?}; version {:x?}, properties {:x?} (max transfer {max_transfer}), \
             end {:x?}",
            [s1, s2, s3],
            status_of(&version),
            status_of(&props),
            status_of(&end)
        ),
    );

    // INQUIRY, 36 bytes, into a page the probe filled with 0xEE.
    fill_data(0xEE);
    let (s, c) = srb(ch, &[0x12, 0, 0, 0, 36, 0], 36, 36);
    let r = SrbResult::of(&c);
    let data = |i: usize| DATA.byte(i);
    let vendor_ok =
        (8..16).all(|i| (0x20..0x7f).contains(&data(i))) && (8..16).any(|i| data(i) != b' ');
    let mut vendor = [0u8; 8];
    for (i, b) in vendor.iter_mut().enumerate() {
        *b = data(8 + i);
    }
    check(
        "hv-vmbus-storvsc-inquiry",
        s == SUCCESS
            && r == SrbResult(Some((0, SRB_STATUS_SUCCESS, 0, 36)))
            && data(0) == 0
            && vendor_ok,
        format_args!(
            "signal {s}, {r}, device type {:#x}, vendor bytes {vendor:x?}",
            data(0)
        ),
    );

    // READ(10) of 16 blocks (8 KiB) whose buffer is one 4 KiB range: refused, nothing moved.
    fill_data(0x5A);
    let (s, c) = srb(ch, &[0x28, 0, 0, 0, 0, 0, 0, 0, 16, 0], 8192, 4096);
    let r = SrbResult::of(&c);
    let untouched = (0..4096).all(|i| data(i) == 0x5A);
    check(
        "hv-vmbus-storvsc-srb-longer-than-buffer",
        s == SUCCESS && r.0.is_some_and(|r| r.1 == SRB_STATUS_INVALID_REQUEST) && untouched,
        format_args!("signal {s}, {r}, buffer untouched {untouched}"),
    );
    true
}

/// Waits (briefly) for the host's write index of `ch`'s incoming ring to move from `from`.
fn in_ring_moves(ch: &Channel, from: u32) -> bool {
    let t0 = arch::rdtsc();
    while arch::rdtsc() - t0 < WAIT {
        if ch.host_write() != from {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// A write index that is not 8-byte aligned: the host stops reading the shutdown service's
/// ring, and a correct index published afterwards does not bring it back.
fn ic_dies(ic: &mut Channel) {
    let a = [0u8; IC_BODY + 8];
    let read = ic.host_read();
    let end = {
        ic.queue(DATA_INBAND, 0, &[], &a, None);
        ic.out_write
    };
    ic.publish(end + 4);
    let s1 = signal(ic.connection);
    let after_bad = ic.host_read();
    ic.publish(end);
    let s2 = signal(ic.connection);
    let after_fix = ic.host_read();
    check(
        "hv-vmbus-ring-bad-index-kills-channel",
        s1 == SUCCESS && s2 == SUCCESS && after_bad == read && after_fix == read,
        format_args!(
            "signals {s1} {s2}; host read index {read} -> {after_bad} (misaligned {}) -> \
             {after_fix} (fixed {end})",
            end + 4
        ),
    );
}

/// The SCSI channel still serves after the shutdown service's died; then its own ring gets
/// the misaligned index, and no completion ever comes for the request queued.
fn storvsc_dies(ch: &mut Channel) {
    let (s, c) = srb(ch, &[0; 6], 0, 0);
    let alive = SrbResult::of(&c);
    let before = ch.host_write();
    let v = vstor(EXECUTE_SRB, |v| {
        put(v, SRB, &SRB_LEN.to_le_bytes());
        v[SRB + 8] = 6;
        v[SRB + 9] = SENSE_BUFFER;
    });
    ch.queue(DATA_INBAND, COMPLETION_REQUESTED, &[], &v, None);
    let end = ch.out_write;
    ch.publish(end + 4);
    let s1 = signal(ch.connection);
    let moved_bad = in_ring_moves(ch, before);
    ch.publish(end);
    let s2 = signal(ch.connection);
    let moved_fixed = in_ring_moves(ch, before);
    check(
        "hv-vmbus-storvsc-bad-index-kills-channel",
        s == SUCCESS
            && alive.is(SRB_STATUS_SUCCESS)
            && s1 == SUCCESS
            && s2 == SUCCESS
            && !moved_bad
            && !moved_fixed,
        format_args!(
            "TEST UNIT READY first: signal {s}, {alive}; then \
             signals {s1} {s2}, completion after the misaligned index {moved_bad}, after the \
             fixed one {moved_fixed}"
        ),
    );
}

/// `probe.bench`: a SynIC message round trip on the guest's own VP. A count write arms
/// synthetic timer 1 for a reference time long past, so the hypervisor fires it within that
/// WRMSR exit: it posts `HVMSG_TIMER_EXPIRED` into SINT3's SIM slot and asserts SINT3. Timed
/// until the probe has taken the SINT's vector (an EOI) and emptied the slot as a guest's
/// message handler does (type cleared, EOM only if the host flagged more pending). Nothing
/// else delivers into the SynIC without a disk: HvSignalEvent's event flags answer only a
/// VMBus channel's served requests, and the bench VM has no disk to serve.
pub(super) fn round_trip() {
    let slot = SIM.addr() + TIMER_SINT * 256;
    // The pages and SCONTROL as `checks` left them, unless it stopped before; a rewrite with
    // the same page clears nothing.
    arch::wrmsr(SIMP, SIM.addr() | 1);
    arch::wrmsr(SCONTROL, 1);
    arch::expect_vector(TIMER_VECTOR, true);
    arch::wrmsr(SINT0 + TIMER_SINT as u32, u64::from(TIMER_VECTOR));
    arch::wrmsr(STIMER1_COUNT, 0);
    arch::wrmsr(
        STIMER1_CONFIG,
        ST_AUTO_ENABLE | (TIMER_SINT << ST_SINTX_SHIFT),
    );
    wr32(slot, 0);
    // (the vector arrived, the slot held the timer message)
    let once = || {
        let (before, _) = arch::vector_hits(TIMER_VECTOR);
        // Reference time 1 (100 ns after the partition was made): due at once.
        arch::wrmsr(STIMER1_COUNT, 1);
        let arrived = crate::bench::wait_open(TIMER_VECTOR, before);
        let message = rd32(slot) == TIMER_EXPIRED;
        wr32(slot, 0);
        fence(Ordering::SeqCst);
        if rd8(slot + 5) & MSG_PENDING != 0 {
            arch::wrmsr(EOM, 0);
        }
        (arrived, message)
    };
    // One that never comes would cost PATIENCE per round trip, thousands of times.
    let (arrived, message) = once();
    if arrived && message {
        let (mut lost, mut wrong) = (0u32, 0u32);
        crate::bench::time("synic", || {
            let (arrived, message) = once();
            lost += u32::from(!arrived);
            wrong += u32::from(!message);
        });
        crate::bench::report_lost("synic", lost);
        if wrong > 0 {
            crate::say!("bench synic: {wrong} slot(s) without the timer message");
        }
    } else {
        crate::say!("bench synic: vector {arrived}, message {message}; not timed");
    }
    arch::wrmsr(STIMER1_CONFIG, 0);
    arch::wrmsr(
        SINT0 + TIMER_SINT as u32,
        SINT_MASKED | u64::from(TIMER_VECTOR),
    );
}
