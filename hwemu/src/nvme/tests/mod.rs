//! A guest-side driver for the controller, written the way Linux's nvme driver talks to it,
//! over a logged in-memory volume.

mod admin_commands;
mod controller;
mod io_commands;
mod random;

use super::*;
use virt::block::{MemVolume, SECTOR};
use virt::testing::XorShift;
use virt::{GuestMemory, VecMemory};

const RAM: usize = 4 << 20;
const ASQ: u64 = 0x10000;
const ACQ: u64 = 0x11000;
const ADMIN_ENTRIES: u16 = 32;
const DATA: u64 = 0x100000;
const LISTS: u64 = 0x300000;
const SECTORS: u64 = 2048;
const CC_ON: u32 = 1 | 6 << 16 | 4 << 20;

/// A volume that logs what reaches it.
struct Logged {
    v: MemVolume,
    writes: Vec<(u64, usize)>,
    reads: Vec<(u64, usize)>,
}

impl Volume for Logged {
    fn sectors(&self) -> u64 {
        self.v.sectors()
    }
    fn read_only(&self) -> bool {
        self.v.read_only
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        self.reads.push((sector, buf.len()));
        self.v.read(sector, buf)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), VolumeError> {
        self.writes.push((sector, buf.len()));
        self.v.write(sector, buf)
    }
    fn flush(&mut self) -> Result<(), VolumeError> {
        self.v.flush()
    }
}

struct TestEnv {
    mem: VecMemory,
    vol: Logged,
    irqs: Vec<u16>,
}

impl Env for TestEnv {
    fn memory(&self) -> &dyn GuestMemory {
        &self.mem
    }
    fn disk(
        &mut self,
        io: &mut dyn FnMut(&mut dyn Volume) -> Result<(), VolumeError>,
    ) -> Result<(), VolumeError> {
        io(&mut self.vol)
    }
    fn interrupt(&mut self, iv: u16) {
        self.irqs.push(iv);
    }
}

#[derive(Clone, Copy, Default)]
struct Ring {
    sq: u64,
    cq: u64,
    entries: u16,
    tail: u16,
    head: u16,
    phase: bool,
}

/// The guest side, written the way Linux's nvme driver talks to the controller.
struct Guest {
    c: Controller,
    env: TestEnv,
    rings: Vec<Ring>,
    cid: u16,
}

fn config(read_only: bool) -> Config {
    let mut serial = [b' '; 20];
    serial[..6].copy_from_slice(b"JANUS1");
    let mut model = [b' '; 40];
    model[..11].copy_from_slice(b"Janus NVMe ");
    Config {
        sectors: SECTORS,
        read_only,
        serial,
        model,
        max_io_queues: 4,
    }
}

fn cmd(opcode: u8, nsid: u32) -> [u32; 16] {
    let mut c = [0u32; 16];
    c[0] = u32::from(opcode);
    c[1] = nsid;
    c
}

fn rw(opcode: u8, lba: u64, blocks: u32, prp1: u64, prp2: u64) -> [u32; 16] {
    let mut c = cmd(opcode, 1);
    c[6] = prp1 as u32;
    c[7] = (prp1 >> 32) as u32;
    c[8] = prp2 as u32;
    c[9] = (prp2 >> 32) as u32;
    c[10] = lba as u32;
    c[11] = (lba >> 32) as u32;
    c[12] = blocks - 1;
    c
}

fn with_prp(mut c: [u32; 16], prp1: u64) -> [u32; 16] {
    c[6] = prp1 as u32;
    c[7] = (prp1 >> 32) as u32;
    c
}

fn create_cq(qid: u16, entries: u16, base: u64, iv: u16) -> [u32; 16] {
    let mut c = with_prp(cmd(0x05, 0), base);
    c[10] = u32::from(qid) | u32::from(entries - 1) << 16;
    c[11] = 0b11 | u32::from(iv) << 16;
    c
}

fn create_sq(qid: u16, entries: u16, base: u64, cqid: u16) -> [u32; 16] {
    let mut c = with_prp(cmd(0x01, 0), base);
    c[10] = u32::from(qid) | u32::from(entries - 1) << 16;
    c[11] = 1 | u32::from(cqid) << 16;
    c
}

fn st(s: Status) -> u16 {
    s.0
}

impl Guest {
    fn new(cfg: Config) -> Self {
        let mut v = MemVolume::new(cfg.sectors);
        v.read_only = cfg.read_only;
        Guest {
            c: Controller::new(cfg),
            env: TestEnv {
                mem: VecMemory::new(RAM),
                vol: Logged {
                    v,
                    writes: Vec::new(),
                    reads: Vec::new(),
                },
                irqs: Vec::new(),
            },
            rings: vec![Ring::default(); 5],
            cid: 0,
        }
    }

    fn w32(&mut self, off: u64, v: u32) {
        self.c.write(off, 4, u64::from(v), &mut self.env);
    }

    fn r32(&mut self, off: u64) -> u32 {
        self.c.read(off, 4) as u32
    }

    fn enabled(read_only: bool) -> Self {
        let mut g = Guest::new(config(read_only));
        g.enable();
        g
    }

    fn enable(&mut self) {
        let n = u32::from(ADMIN_ENTRIES - 1);
        self.w32(regs::AQA, n | n << 16);
        self.c.write(regs::ASQ, 8, ASQ, &mut self.env);
        self.c.write(regs::ACQ, 8, ACQ, &mut self.env);
        self.w32(regs::CC, CC_ON);
        assert_eq!(self.r32(regs::CSTS), CSTS_RDY);
        self.rings[0] = Ring {
            sq: ASQ,
            cq: ACQ,
            entries: ADMIN_ENTRIES,
            phase: true,
            ..Ring::default()
        };
    }

    /// Queues a command without ringing the doorbell.
    fn queue(&mut self, qid: usize, mut c: [u32; 16]) -> u16 {
        self.cid = self.cid.wrapping_add(1);
        c[0] = c[0] & 0xffff | u32::from(self.cid) << 16;
        let r = &mut self.rings[qid];
        let bytes: Vec<u8> = c.iter().flat_map(|d| d.to_le_bytes()).collect();
        self.env
            .mem
            .write(r.sq + u64::from(r.tail) * 64, &bytes)
            .unwrap();
        r.tail = (r.tail + 1) % r.entries;
        self.cid
    }

    fn ring(&mut self, qid: usize) {
        let tail = self.rings[qid].tail;
        self.w32(0x1000 + 8 * qid as u64, u32::from(tail));
    }

    /// The next completion, if posted: (dw0, status, sq head, sq id, cid).
    fn reap(&mut self, qid: usize) -> Option<(u32, u16, u16, u16, u16)> {
        let r = self.rings[qid];
        let at = r.cq + u64::from(r.head) * 16;
        let dw3 = self.env.mem.read_u32(at + 12).unwrap();
        if (dw3 >> 16 & 1 != 0) != r.phase {
            return None;
        }
        let dw0 = self.env.mem.read_u32(at).unwrap();
        let dw2 = self.env.mem.read_u32(at + 8).unwrap();
        let status = (dw3 >> 17 & 0x7ff) as u16;
        assert_eq!(dw3 >> 31 != 0, status != 0, "DNR on every error");
        let r = &mut self.rings[qid];
        r.head = (r.head + 1) % r.entries;
        if r.head == 0 {
            r.phase = !r.phase;
        }
        Some((dw0, status, dw2 as u16, (dw2 >> 16) as u16, dw3 as u16))
    }

    fn consume(&mut self, qid: usize) {
        let head = self.rings[qid].head;
        self.w32(0x1004 + 8 * qid as u64, u32::from(head));
    }

    /// Submits one command and returns its (dw0, status).
    fn run(&mut self, qid: usize, c: [u32; 16]) -> (u32, u16) {
        let cid = self.queue(qid, c);
        self.ring(qid);
        let (dw0, status, _, sqid, got) = self.reap(qid).expect("a completion");
        assert_eq!((sqid, got), (qid as u16, cid));
        self.consume(qid);
        (dw0, status)
    }

    fn admin(&mut self, c: [u32; 16]) -> (u32, u16) {
        self.run(0, c)
    }

    fn io_queue(&mut self, qid: u16, entries: u16) {
        let sq = 0x20000 + u64::from(qid) * 0x10000;
        let cq = sq + 0x8000;
        assert_eq!(self.admin(create_cq(qid, entries, cq, qid)).1, 0);
        assert_eq!(self.admin(create_sq(qid, entries, sq, qid)).1, 0);
        self.rings[usize::from(qid)] = Ring {
            sq,
            cq,
            entries,
            phase: true,
            ..Ring::default()
        };
    }

    fn identify(&mut self, cns: u32, nsid: u32) -> (Vec<u8>, u16) {
        let page = DATA + 0x8000;
        self.env.mem.write(page, &[0xee; 4096]).unwrap();
        let mut c = with_prp(cmd(0x06, nsid), page);
        c[10] = cns;
        let (_, s) = self.admin(c);
        let mut out = vec![0; 4096];
        self.env.mem.read(page, &mut out).unwrap();
        (out, s)
    }

    fn fill(&self, gpa: u64, len: usize, seed: u8) -> Vec<u8> {
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        self.env.mem.write(gpa, &data).unwrap();
        data
    }

    fn disk(&self, lba: u64, len: usize) -> &[u8] {
        let at = (lba * SECTOR) as usize;
        &self.env.vol.v.data[at..at + len]
    }
}
