//! blkback: the vbd nodes each disk gets, the handshake with a frontend, and requests on the
//! blkif ring served from the disk, good and hostile.

mod common;

use common::*;
use virt::GuestMemory;
use virt::block::{MemVolume, SECTOR};

const FRAME_PFN: u64 = 0x40;
const RING_PFN: u64 = 0x50;
const RING2_PFN: u64 = 0x51;
const DATA_PFN: u64 = 0x60;
const RING_REF: u32 = 8;
const RING2_REF: u32 = 11;
const DATA_RW: u32 = 9;
const DATA_RO: u32 = 10;
const FE: &str = "/local/domain/1/device/vbd/51712";
const BE: &str = "/local/domain/0/backend/vbd/1/51712";
const FE2: &str = "/local/domain/1/device/vbd/51728";
const BE2: &str = "/local/domain/0/backend/vbd/1/51728";

fn grant(e: &Env, gref: u32, flags: u16, pfn: u64) {
    let v = u64::from(flags) | (pfn << 32);
    e.mem
        .write_u64(FRAME_PFN * 4096 + u64::from(gref) * 8, v)
        .unwrap();
}

fn node(e: &Env, path: &str) -> Option<String> {
    e.xen
        .store()
        .read(path.as_bytes())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn write(e: &mut Env, path: &str, value: &str) {
    e.xen
        .store_mut()
        .write(path.as_bytes(), value.as_bytes())
        .unwrap();
    e.xen.store_kick(&e.mem, &mut e.host);
}

fn alloc_unbound(e: &mut Env) -> u32 {
    let mut a = [0u8; 8];
    a[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
    assert_eq!(e.evtchn(6, &a), 0);
    e.u32_at(ARG + 4)
}

/// A guest with two disks (the second read-only), its grant table at FRAME_PFN, the ring
/// page and a data page granted to domain 0 (the data page both read-write and read-only).
fn guest() -> Env {
    let mut cfg = config();
    cfg.store_pfn = Some(STORE_PFN);
    let mut e = Env::with(cfg, 1);
    let mut disk = MemVolume::new(4096);
    for (i, b) in disk.data.iter_mut().enumerate() {
        *b = (i / SECTOR as usize) as u8;
    }
    let mut ro = MemVolume::new(1024);
    ro.read_only = true;
    e.host.disks = vec![disk, ro];
    e.boot();
    // The store (and with it the vbds) appears when the guest asks where it is.
    let p = e.arg(ARG, &param(1, 0));
    assert_eq!(e.call(op::HVM_OP, 1, p, 0), 0);
    let mut a = [0u8; 24];
    a[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
    a[4..8].copy_from_slice(&1u32.to_le_bytes());
    a[16..24].copy_from_slice(&FRAME_PFN.to_le_bytes());
    let p = e.arg(ARG, &a);
    assert_eq!(e.call(op::MEMORY_OP, 7, p, 0), 0);
    grant(&e, RING_REF, 1, RING_PFN);
    grant(&e, RING2_REF, 1, RING2_PFN);
    grant(&e, DATA_RW, 1, DATA_PFN);
    grant(&e, DATA_RO, 1 | 4, DATA_PFN);
    e
}

/// Connects the frontend of `fe` through ring page `ring` (ref `gref`); the port.
fn connect(e: &mut Env, fe: &str, gref: u32, ring: u64) -> u32 {
    let port = alloc_unbound(e);
    // SHARED_RING_INIT: all indices 0, both event indices 1.
    e.mem.write(ring * 4096, &[0; 4096]).unwrap();
    e.mem.write_u32(ring * 4096 + 4, 1).unwrap();
    e.mem.write_u32(ring * 4096 + 12, 1).unwrap();
    write(e, &format!("{fe}/ring-ref"), &gref.to_string());
    write(e, &format!("{fe}/event-channel"), &port.to_string());
    write(e, &format!("{fe}/protocol"), "x86_64-abi");
    write(e, &format!("{fe}/state"), "3");
    port
}

struct Req {
    op: u8,
    id: u64,
    sector: u64,
    segs: Vec<(u32, u8, u8)>,
    nr: Option<u8>,
}

fn req(op: u8, id: u64, sector: u64, segs: &[(u32, u8, u8)]) -> Req {
    Req {
        op,
        id,
        sector,
        segs: segs.to_vec(),
        nr: None,
    }
}

/// Queues `reqs` on the ring at `ring`, notifies `port`, and returns the responses
/// (id, op, status) that came back.
fn submit(e: &mut Env, ring: u64, port: u32, reqs: &[Req]) -> Vec<(u64, u8, i16)> {
    let entries: Vec<[u8; 112]> = reqs
        .iter()
        .map(|r| {
            let mut b = [0u8; 112];
            b[0] = r.op;
            b[1] = r.nr.unwrap_or(r.segs.len() as u8);
            b[8..16].copy_from_slice(&r.id.to_le_bytes());
            b[16..24].copy_from_slice(&r.sector.to_le_bytes());
            for (i, &(gref, first, last)) in r.segs.iter().enumerate() {
                let o = 24 + 8 * i;
                b[o..o + 4].copy_from_slice(&gref.to_le_bytes());
                b[o + 4] = first;
                b[o + 5] = last;
            }
            b
        })
        .collect();
    submit_raw(e, ring, port, &entries)
}

/// An indirect request (`blkif_request_indirect`): `op` on `count` segments whose
/// descriptors are in the page granted as `page`.
fn indirect(op: u8, id: u64, sector: u64, count: u16, page: u32) -> [u8; 112] {
    let mut b = [0u8; 112];
    b[0] = 6;
    b[1] = op;
    b[2..4].copy_from_slice(&count.to_le_bytes());
    b[8..16].copy_from_slice(&id.to_le_bytes());
    b[16..24].copy_from_slice(&sector.to_le_bytes());
    b[28..32].copy_from_slice(&page.to_le_bytes());
    b
}

fn submit_raw(e: &mut Env, ring: u64, port: u32, entries: &[[u8; 112]]) -> Vec<(u64, u8, i16)> {
    let base = ring * 4096;
    let prod = e.mem.read_u32(base).unwrap();
    let rsp_before = e.mem.read_u32(base + 8).unwrap();
    for (k, b) in entries.iter().enumerate() {
        let slot = (prod + k as u32) % 32;
        e.mem.write(base + 64 + u64::from(slot) * 112, b).unwrap();
    }
    e.mem.write_u32(base, prod + entries.len() as u32).unwrap();
    assert_eq!(e.send(port), 0);
    // The backend serves the ring when the vCPU next halts.
    e.idle();
    let rsp_after = e.mem.read_u32(base + 8).unwrap();
    (rsp_before..rsp_after)
        .map(|i| {
            let mut r = [0u8; 16];
            e.mem
                .read(base + 64 + u64::from(i % 32) * 112, &mut r)
                .unwrap();
            (
                u64::from_le_bytes(r[0..8].try_into().unwrap()),
                r[8],
                i16::from_le_bytes([r[10], r[11]]),
            )
        })
        .collect()
}

#[test]
fn each_disk_is_a_vbd_with_the_nodes_blkfront_reads() {
    let e = guest();
    for (k, v) in [
        ("state", "1"),
        ("backend", BE),
        ("backend-id", "0"),
        ("virtual-device", "51712"),
        ("device-type", "disk"),
    ] {
        assert_eq!(node(&e, &format!("{FE}/{k}")).as_deref(), Some(v), "{k}");
    }
    for (k, v) in [
        ("state", "2"),
        ("frontend", FE),
        ("frontend-id", "1"),
        ("sectors", "4096"),
        ("info", "0"),
        ("sector-size", "512"),
        ("feature-flush-cache", "1"),
        ("feature-max-indirect-segments", "32"),
    ] {
        assert_eq!(node(&e, &format!("{BE}/{k}")).as_deref(), Some(v), "{k}");
    }
    assert_eq!(node(&e, &format!("{BE2}/info")).as_deref(), Some("4"));
    assert_eq!(node(&e, &format!("{BE2}/sectors")).as_deref(), Some("1024"));
    assert_eq!(
        node(&e, &format!("{FE2}/virtual-device")).as_deref(),
        Some("51728")
    );
    assert_eq!(node(&e, "/local/domain/1/device/vbd/51744/state"), None);
}

#[test]
fn handshake_reads_write_flush_and_a_read_only_disk() {
    let mut e = guest();
    let port = connect(&mut e, FE, RING_REF, RING_PFN);
    assert_eq!(node(&e, &format!("{BE}/state")).as_deref(), Some("4"));

    // A write from a read-only grant (the backend only reads the guest's page).
    e.mem.write(DATA_PFN * 4096, &[0xAB; 4096]).unwrap();
    e.host.raised.clear();
    let got = submit(
        &mut e,
        RING_PFN,
        port,
        &[req(1, 77, 16, &[(DATA_RO, 0, 7)])],
    );
    assert_eq!(got, [(77, 1, 0)]);
    assert!(
        !e.host.raised.is_empty(),
        "the frontend asked to be notified"
    );
    let d = &e.host.disks[0].data;
    assert!(d[16 * 512..24 * 512].iter().all(|&b| b == 0xAB));
    assert_eq!(d[24 * 512], 24, "the next sector untouched");

    // Two segments: sectors 100-101 land at 1 KiB into the page, 102 at 3.5 KiB.
    let got = submit(
        &mut e,
        RING_PFN,
        port,
        &[req(0, 78, 100, &[(DATA_RW, 2, 3), (DATA_RW, 7, 7)])],
    );
    assert_eq!(got, [(78, 0, 0)]);
    let page = |e: &Env, off: u64| {
        let mut b = [0u8; 1];
        e.mem.read(DATA_PFN * 4096 + off, &mut b).unwrap();
        b[0]
    };
    assert_eq!(
        (page(&e, 1024), page(&e, 1535), page(&e, 1536)),
        (100, 100, 101)
    );
    assert_eq!(page(&e, 3584), 102);
    assert_eq!(page(&e, 0), 0xAB, "sectors outside the segments untouched");

    let flushes = e.host.disks[0].flushes;
    let got = submit(&mut e, RING_PFN, port, &[req(3, 79, 0, &[])]);
    assert_eq!(got, [(79, 3, 0)]);
    assert_eq!(e.host.disks[0].flushes, flushes + 1);
    assert_eq!(e.host.disks[0].durable, e.host.disks[0].data);

    // The read-only disk serves reads and refuses writes.
    let port2 = connect(&mut e, FE2, RING2_REF, RING2_PFN);
    assert_eq!(node(&e, &format!("{BE2}/state")).as_deref(), Some("4"));
    let got = submit(
        &mut e,
        RING2_PFN,
        port2,
        &[
            req(0, 1, 5, &[(DATA_RW, 0, 0)]),
            req(1, 2, 5, &[(DATA_RO, 0, 0)]),
        ],
    );
    assert_eq!(got, [(1, 0, 0), (2, 1, -1)]);
}

#[test]
fn hostile_requests_get_errors_and_the_disk_carries_on() {
    let mut e = guest();
    let port = connect(&mut e, FE, RING_REF, RING_PFN);
    let before = e.host.disks[0].data.clone();
    let mut twelve = req(0, 6, 0, &[(DATA_RW, 0, 0)]);
    twelve.nr = Some(12);
    let mut none = req(1, 7, 0, &[]);
    none.nr = Some(0);
    let got = submit(
        &mut e,
        RING_PFN,
        port,
        &[
            req(0, 1, 0, &[(DATA_RW, 3, 2)]),        // first > last
            req(0, 2, 0, &[(DATA_RW, 0, 8)]),        // past the page
            req(0, 3, 4095, &[(DATA_RW, 0, 1)]),     // past the disk's end
            req(0, 4, u64::MAX, &[(DATA_RW, 0, 0)]), // sector overflow
            req(0, 5, 0, &[(DATA_RO, 0, 0)]),        // a read into a read-only grant
            twelve,
            none,
            req(0, 8, 0, &[(4095, 0, 0)]), // a reference past the table
            req(0, 9, 0, &[(3, 0, 0)]),    // a free entry
            req(6, 10, 0, &[]),            // indirect without segments (answered as a read)
            req(2, 11, 0, &[]),            // barrier: not advertised
        ],
    );
    let want: Vec<(u64, u8, i16)> = vec![
        (1, 0, -1),
        (2, 0, -1),
        (3, 0, -1),
        (4, 0, -1),
        (5, 0, -1),
        (6, 0, -1),
        (7, 1, -1),
        (8, 0, -1),
        (9, 0, -1),
        (10, 0, -1),
        (11, 2, -2),
    ];
    assert_eq!(got, want);
    assert_eq!(e.host.disks[0].data, before, "nothing was written");

    // A grant revoked before the request is served fails that request only.
    grant(&e, DATA_RW, 0, DATA_PFN);
    assert_eq!(
        submit(&mut e, RING_PFN, port, &[req(0, 12, 0, &[(DATA_RW, 0, 0)])]),
        [(12, 0, -1)]
    );
    grant(&e, DATA_RW, 1, DATA_PFN);
    assert_eq!(
        submit(&mut e, RING_PFN, port, &[req(0, 13, 0, &[(DATA_RW, 0, 0)])]),
        [(13, 0, 0)]
    );

    // Indices no frontend could produce stop the disk, and only it.
    let base = RING_PFN * 4096;
    let prod = e.mem.read_u32(base).unwrap();
    e.mem.write_u32(base, prod + 33).unwrap();
    assert_eq!(e.send(port), 0);
    e.idle();
    assert_eq!(node(&e, &format!("{BE}/state")).as_deref(), Some("6"));
    assert!(node(&e, &format!("{BE}/error")).is_some());
    let rsp = e.mem.read_u32(base + 8).unwrap();
    assert_eq!(e.send(port), 0);
    e.idle();
    assert_eq!(
        e.mem.read_u32(base + 8).unwrap(),
        rsp,
        "a stopped disk serves nothing"
    );
    let port2 = connect(&mut e, FE2, RING2_REF, RING2_PFN);
    assert_eq!(
        submit(
            &mut e,
            RING2_PFN,
            port2,
            &[req(0, 1, 0, &[(DATA_RW, 0, 0)])]
        ),
        [(1, 0, 0)]
    );
}

#[test]
fn bad_handshakes_and_a_frontend_that_starts_over() {
    let mut e = guest();
    // A ring reference that grants nothing.
    let port = alloc_unbound(&mut e);
    write(&mut e, &format!("{FE}/ring-ref"), "3");
    write(&mut e, &format!("{FE}/event-channel"), &port.to_string());
    write(&mut e, &format!("{FE}/state"), "3");
    assert_eq!(node(&e, &format!("{BE}/state")).as_deref(), Some("6"));
    assert!(node(&e, &format!("{BE}/error")).is_some());
    // The frontend starts over: InitWait again, then a good connection.
    write(&mut e, &format!("{FE}/state"), "1");
    assert_eq!(node(&e, &format!("{BE}/state")).as_deref(), Some("2"));
    connect(&mut e, FE, RING_REF, RING_PFN);
    assert_eq!(node(&e, &format!("{BE}/state")).as_deref(), Some("4"));
    // Closing is answered with Closing (what Linux waits for at shutdown), Closed with
    // Closed, and a frontend that starts again finds InitWait.
    write(&mut e, &format!("{FE}/state"), "5");
    assert_eq!(node(&e, &format!("{BE}/state")).as_deref(), Some("5"));
    write(&mut e, &format!("{FE}/state"), "6");
    assert_eq!(node(&e, &format!("{BE}/state")).as_deref(), Some("6"));
    write(&mut e, &format!("{FE}/state"), "1");
    assert_eq!(node(&e, &format!("{BE}/state")).as_deref(), Some("2"));
    // A 32-bit frontend's layout is refused; so is a port not bound for domain 0.
    let mut e = guest();
    let port32 = alloc_unbound(&mut e);
    write(&mut e, &format!("{FE}/protocol"), "x86_32-abi");
    write(&mut e, &format!("{FE}/ring-ref"), &RING_REF.to_string());
    write(&mut e, &format!("{FE}/event-channel"), &port32.to_string());
    write(&mut e, &format!("{FE}/state"), "3");
    assert_eq!(node(&e, &format!("{BE}/state")).as_deref(), Some("6"));
    let mut e = guest();
    write(&mut e, &format!("{FE}/ring-ref"), &RING_REF.to_string());
    write(&mut e, &format!("{FE}/event-channel"), "2");
    write(&mut e, &format!("{FE}/state"), "3");
    assert_eq!(
        node(&e, &format!("{BE}/state")).as_deref(),
        Some("6"),
        "the store's port"
    );
}

/// Guest memory whose frontend keeps producing: every time the backend reads `req_prod`, one
/// more read request has appeared (as another vCPU of a busy or hostile guest would make).
struct Racing {
    mem: virt::VecMemory,
    ring: u64,
}

impl GuestMemory for Racing {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), virt::MemError> {
        if gpa == self.ring && buf.len() == 4 {
            let prod = self.mem.read_u32(self.ring)?;
            let mut b = [0u8; 112];
            b[1] = 1;
            b[8..16].copy_from_slice(&u64::from(prod).to_le_bytes());
            b[24..28].copy_from_slice(&DATA_RW.to_le_bytes());
            b[29] = 7;
            self.mem
                .write(self.ring + 64 + u64::from(prod % 32) * 112, &b)?;
            self.mem.write_u32(self.ring, prod + 1)?;
        }
        self.mem.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), virt::MemError> {
        self.mem.write(gpa, data)
    }
}

#[test]
fn a_frontend_that_never_stops_gets_a_budget_per_pass() {
    use abi_xen::blkback::ring::{BUDGET, Disk, Ring};
    let Env { mem, mut host, .. } = guest();
    let racing = Racing {
        mem,
        ring: RING_PFN * 4096,
    };
    let grants = |_: &dyn GuestMemory, r: u32, _: bool| {
        Ok(if r == RING_REF {
            RING_PFN * 4096
        } else {
            DATA_PFN * 4096
        })
    };
    let disk = Disk {
        index: 0,
        sectors: 4096,
        read_only: false,
        grants: &grants,
    };
    let mut ring = Ring::new(RING_REF, 5);
    let served = ring.service(&racing, &mut host, &disk).unwrap();
    assert!(
        served.more,
        "the pass ended on its budget, not on an empty ring"
    );
    assert_eq!(racing.mem.read_u32(RING_PFN * 4096 + 8).unwrap(), BUDGET);
    let again = ring.service(&racing, &mut host, &disk).unwrap();
    assert!(again.more);
    assert_eq!(
        racing.mem.read_u32(RING_PFN * 4096 + 8).unwrap(),
        2 * BUDGET
    );
}

#[test]
fn what_a_pass_leaves_is_served_on_the_next_hypercall() {
    use abi_xen::blkback::ring::BUDGET;
    use virt::personality::Personality;
    let mut e = guest();
    let port = connect(&mut e, FE, RING_REF, RING_PFN);
    let arg = e.arg(ARG, &port.to_le_bytes());
    let mut racing = Racing {
        mem: std::mem::replace(&mut e.mem, virt::VecMemory::new(0)),
        ring: RING_PFN * 4096,
    };
    let mut regs = virt::GuestRegs {
        rax: op::EVENT_CHANNEL_OP,
        rdi: 4,
        rsi: arg,
        ..Default::default()
    };
    let view = e.view(0);
    e.xen.hypercall(&view, &mut regs, &mut racing, &mut e.host);
    let base = RING_PFN * 4096;
    assert_eq!(
        racing.mem.read_u32(base + 8).unwrap(),
        0,
        "the notification only marks the ring"
    );
    // The vCPU halts: the ring is served, one budget of it.
    e.xen.idle(0, &mut racing, &mut e.host);
    e.mem = racing.mem;
    assert_eq!(
        e.mem.read_u32(base + 8).unwrap(),
        BUDGET,
        "one budget served"
    );
    assert!(
        e.mem.read_u32(base).unwrap() > BUDGET,
        "the frontend queued more"
    );
    // Any hypercall: the rest is served before it.
    assert_eq!(e.call(op::XEN_VERSION, 0, 0, 0), 4 << 16 | 15);
    assert_eq!(
        e.mem.read_u32(base + 8).unwrap(),
        e.mem.read_u32(base).unwrap(),
        "every queued request answered"
    );
}

#[test]
fn indirect_requests_carry_32_segments() {
    const INDIRECT_PFN: u64 = 0x70;
    const INDIRECT_REF: u32 = 20;
    const PAGES_PFN: u64 = 0x80;
    const PAGES_REF: u32 = 30;
    let mut e = guest();
    let port = connect(&mut e, FE, RING_REF, RING_PFN);
    // The descriptor page is only read by the backend; the data pages are scattered.
    grant(&e, INDIRECT_REF, 1 | 4, INDIRECT_PFN);
    let pfn = |i: u32| PAGES_PFN + 2 * u64::from(i);
    for i in 0..32u32 {
        grant(&e, PAGES_REF + i, 1, pfn(i));
        e.mem.write(pfn(i) * 4096, &[0x40 + i as u8; 4096]).unwrap();
    }
    let describe = |e: &Env, segs: &[(u32, u8, u8)]| {
        let mut page = vec![0u8; 4096];
        for (i, &(gref, first, last)) in segs.iter().enumerate() {
            page[8 * i..8 * i + 4].copy_from_slice(&gref.to_le_bytes());
            page[8 * i + 4] = first;
            page[8 * i + 5] = last;
        }
        e.mem.write(INDIRECT_PFN * 4096, &page).unwrap();
    };
    let whole: Vec<(u32, u8, u8)> = (0..32).map(|i| (PAGES_REF + i, 0, 7)).collect();
    describe(&e, &whole);
    // 128 KiB written in one request, answered with the request's own operation.
    let got = submit_raw(
        &mut e,
        RING_PFN,
        port,
        &[indirect(1, 5, 800, 32, INDIRECT_REF)],
    );
    assert_eq!(got, [(5, 1, 0)]);
    let d = &e.host.disks[0].data;
    for i in 0..32usize {
        let at = (800 + 8 * i) * 512;
        assert!(
            d[at..at + 4096].iter().all(|&b| b == 0x40 + i as u8),
            "page {i}"
        );
    }
    assert_eq!(
        d[(800 + 256) * 512],
        (800 + 256) as u8,
        "the next sector untouched"
    );
    // Read back into zeroed pages.
    for i in 0..32u32 {
        e.mem.write(pfn(i) * 4096, &[0; 4096]).unwrap();
    }
    let got = submit_raw(
        &mut e,
        RING_PFN,
        port,
        &[indirect(0, 6, 800, 32, INDIRECT_REF)],
    );
    assert_eq!(got, [(6, 0, 0)]);
    for i in 0..32u32 {
        let mut b = [0u8; 4096];
        e.mem.read(pfn(i) * 4096, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0x40 + i as u8), "page {i}");
    }
    // Partial pages: sectors 2-3 of the first page, then whole pages.
    let mut segs = whole[..12].to_vec();
    segs[0] = (PAGES_REF, 2, 3);
    describe(&e, &segs);
    let got = submit_raw(
        &mut e,
        RING_PFN,
        port,
        &[indirect(0, 7, 10, 12, INDIRECT_REF)],
    );
    assert_eq!(got, [(7, 0, 0)]);
    let mut b = [0u8; 1];
    e.mem.read(pfn(0) * 4096 + 1024, &mut b).unwrap();
    assert_eq!(b[0], 10);
    e.mem.read(pfn(1) * 4096, &mut b).unwrap();
    assert_eq!(
        b[0], 12,
        "the second segment starts after the first's two sectors"
    );

    // Hostile: too many or no segments, an unknown inner operation, a descriptor page that
    // is not granted, a bad descriptor, a write through read-only... each an error, answered
    // with the inner operation; the ring carries on.
    let before = e.host.disks[0].data.clone();
    describe(&e, &whole);
    let got = submit_raw(
        &mut e,
        RING_PFN,
        port,
        &[
            indirect(1, 8, 0, 33, INDIRECT_REF),
            indirect(1, 9, 0, 0, INDIRECT_REF),
            indirect(3, 10, 0, 1, INDIRECT_REF),
            indirect(1, 11, 0, 4, 999),
            indirect(1, 12, 4096 - 8, 2, INDIRECT_REF),
        ],
    );
    assert_eq!(
        got,
        [
            (8, 1, -1),
            (9, 1, -1),
            (10, 3, -2),
            (11, 1, -1),
            (12, 1, -1)
        ]
    );
    let mut bad = whole.clone();
    bad[3] = (PAGES_REF + 3, 5, 2);
    describe(&e, &bad);
    let got = submit_raw(
        &mut e,
        RING_PFN,
        port,
        &[indirect(1, 13, 0, 32, INDIRECT_REF)],
    );
    assert_eq!(got, [(13, 1, -1)]);
    assert_eq!(e.host.disks[0].data, before, "nothing was written");
    let got = submit(&mut e, RING_PFN, port, &[req(0, 14, 0, &[(DATA_RW, 0, 7)])]);
    assert_eq!(got, [(14, 0, 0)]);
}

/// Reads queued together that follow one another on the disk are asked of the volume as one
/// direct request; one elsewhere on the disk or of the other kind starts a new batch. Where
/// the volume cannot go direct (a memory volume never can) each request is served alone,
/// answered in ring order with its own data.
#[test]
fn adjacent_requests_are_asked_as_one() {
    let mut e = guest();
    e.mem.dma = true;
    let port = connect(&mut e, FE, RING_REF, RING_PFN);
    let page = [(DATA_RW, 0u8, 7u8)];
    let rsp = submit(
        &mut e,
        RING_PFN,
        port,
        &[
            req(0, 1, 0, &page),
            req(0, 2, 8, &page),
            req(0, 3, 16, &page),
            req(0, 4, 100, &page),
            req(1, 5, 24, &page),
        ],
    );
    assert_eq!(
        rsp,
        [(1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0), (5, 1, 0)],
        "each answered, in order"
    );
    assert_eq!(
        e.host.disks[0].direct_asked,
        [
            (false, 0, 3 * 4096),
            (false, 0, 4096),
            (false, 8, 4096),
            (false, 16, 4096),
            (false, 100, 4096),
            (true, 24, 4096),
        ]
    );
    // The page last held sectors 100-107 (each sector's bytes are its number), and the write
    // took them to sectors 24-31.
    let data = &e.host.disks[0].data;
    for k in 0..8 {
        let s = &data[(24 + k) * 512..(25 + k) * 512];
        assert!(s.iter().all(|&b| b == 100 + k as u8), "sector {}", 24 + k);
    }
}
