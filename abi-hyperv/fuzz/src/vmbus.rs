//! The VMBus host and storvsc under a hostile guest: the script first (optionally) brings a
//! channel up as Linux would — contact, offers, a ring GPADL, open, the vstor handshake — and
//! then runs arbitrary actions: channel-management messages with fuzzed fields, packets with
//! fuzzed descriptors, page lists and SRBs queued on the ring, scribbles over the ring's control
//! and data pages, signals to any connection. Any panic, a status the TLFS does not define,
//! an interrupt on an exception vector, a disk that changes size or a write to a read-only
//! disk is a bug.

use abi_hyperv::hypercall::Control;
use abi_hyperv::status::split_output;
use abi_hyperv::{Config, HvStatus, HyperV, HypercallInsn};
use virt::block::MemVolume;
use virt::personality::{Action, Personality, VcpuView};
use virt::testing::FakeHost;
use virt::{ControlRegs, GuestMemory, GuestRegs, VecMemory, bits};

const RAM: usize = 64 * 4096;
const HYPERCALL_PAGE: u64 = 0x1000;
const SIM: u64 = 0x2000;
const SIEF: u64 = 0x3000;
const INPUT: u64 = 0x4000;
/// Ring: pages 16..=25 (5 out, 5 in); data buffers from page 32.
const RING: u64 = 16;
const RING_PAGES: u64 = 10;
const OUT_PAGES: u64 = 5;
const DATA: u64 = 32;
const MAX_OPS: usize = 128;
const SECTORS: u64 = 64;

struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let mut b = [0u8; 4];
        for x in &mut b {
            *x = self.u8()?;
        }
        Some(u32::from_le_bytes(b))
    }

    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        if self.data.len() < n {
            return None;
        }
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        Some(b)
    }

    /// Mostly small, sometimes anything.
    fn small(&mut self, limit: u32) -> Option<u32> {
        let b = self.u8()?;
        if b == 0xff {
            self.u32()
        } else {
            Some(u32::from(b) % limit.max(1))
        }
    }
}

struct Guest {
    hv: HyperV,
    mem: VecMemory,
    host: FakeHost,
    out_write: u32,
    conn: u32,
    ro_before: Vec<u8>,
}

fn view() -> VcpuView {
    VcpuView {
        index: 0,
        cpl: 0,
        ctl: ControlRegs {
            cr0: bits::CR0_PE | bits::CR0_PG,
            cr4: bits::CR4_PAE,
            efer: bits::EFER_LME | bits::EFER_LMA,
            ..Default::default()
        },
        long_mode: true,
    }
}

impl Guest {
    fn new() -> Guest {
        let mut host = FakeHost::new(2);
        host.tsc_hz = 2_000_000_000;
        let rw = MemVolume::new(SECTORS);
        let mut ro = MemVolume::new(SECTORS);
        ro.read_only = true;
        ro.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        ro.durable = ro.data.clone();
        let ro_before = ro.data.clone();
        host.disks = vec![rw, ro];
        let cfg = Config {
            insn: HypercallInsn::Vmcall,
            apic_hz: Some(1_000_000_000),
            tsc_offset: 0,
        };
        let hv = HyperV::new(cfg, &host).expect("two vCPUs");
        let mut g = Guest {
            hv,
            mem: VecMemory::new(RAM),
            host,
            out_write: 0,
            conn: 0x1_0001,
            ro_before,
        };
        for (msr, v) in [
            (0x4000_0000, 0x8100_0006_01C0_0000u64),
            (0x4000_0001, HYPERCALL_PAGE | 1),
            (0x4000_0083, SIM | 1),
            (0x4000_0082, SIEF | 1),
            (0x4000_0092, 0xf3),
            (0x4000_0080, 1),
        ] {
            g.hv.wrmsr(&view(), msr, v, &mut g.mem, &mut g.host);
        }
        g
    }

    fn call(&mut self, code: u16, fast: bool, input: u64) -> u64 {
        let c = Control {
            code,
            fast,
            varhead: 0,
            rep_count: 0,
            rep_start: 0,
        };
        let mut regs = GuestRegs {
            rcx: c.encode(),
            rdx: input,
            ..Default::default()
        };
        let before = regs;
        let a = self
            .hv
            .hypercall(&view(), &mut regs, &mut self.mem, &mut self.host);
        match a {
            Action::Retry => assert_eq!(regs, before, "a continued call changes nothing"),
            Action::Done => {
                let (status, _) = split_output(regs.rax);
                assert!(
                    HvStatus::ALL.iter().any(|s| *s as u16 == status),
                    "undefined status {status:#x}"
                );
            }
            other => panic!("VMBus call answered {other:?}"),
        }
        regs.rax
    }

    fn post(&mut self, payload: &[u8]) {
        let n = payload.len().min(240);
        let _ = self.mem.write_u64(INPUT, 4);
        let _ = self.mem.write_u64(INPUT + 8, 1 | ((n as u64) << 32));
        let _ = self.mem.write(INPUT + 16, &payload[..n]);
        self.call(0x5C, false, INPUT);
        self.drain();
    }

    /// Consumes SIM slot 2 as Linux does; returns the messages' first words.
    fn drain(&mut self) -> Vec<[u8; 20]> {
        let mut seen = Vec::new();
        for _ in 0..64 {
            let slot = SIM + 2 * 256;
            if self.mem.read_u32(slot).unwrap_or(0) == 0 {
                break;
            }
            let mut head = [0u8; 20];
            let _ = self.mem.read(slot + 16, &mut head);
            seen.push(head);
            let flags = self.mem.read_u8(slot + 5).unwrap_or(0);
            let _ = self.mem.write_u32(slot, 0);
            if flags & 1 != 0 {
                self.hv
                    .wrmsr(&view(), 0x4000_0084, 0, &mut self.mem, &mut self.host);
            }
        }
        seen
    }

    fn signal(&mut self, conn: u32) {
        for _ in 0..64 {
            let c = Control {
                code: 0x5D,
                fast: true,
                varhead: 0,
                rep_count: 0,
                rep_start: 0,
            };
            let mut regs = GuestRegs {
                rcx: c.encode(),
                rdx: u64::from(conn),
                ..Default::default()
            };
            if self
                .hv
                .hypercall(&view(), &mut regs, &mut self.mem, &mut self.host)
                != Action::Retry
            {
                return;
            }
        }
        panic!("a signal that never finishes");
    }

    /// Contact, offers, a ring GPADL, open: the state Linux's storvsc probe reaches.
    fn bring_up(&mut self) {
        let mut m = [0u8; 40];
        m[0] = 14;
        m[8..12].copy_from_slice(&((5u32 << 16) | 3).to_le_bytes());
        m[16] = 2;
        self.post(&m);
        self.post(&[3, 0, 0, 0, 0, 0, 0, 0]);
        let mut h = [0u8; 28 + 8 * RING_PAGES as usize];
        h[0] = 8;
        h[8] = 1;
        h[12] = 0x77;
        h[16..18].copy_from_slice(&(8 + 8 * RING_PAGES as u16).to_le_bytes());
        h[18] = 1;
        h[20..24].copy_from_slice(&((RING_PAGES * 4096) as u32).to_le_bytes());
        for i in 0..RING_PAGES as usize {
            h[28 + 8 * i..36 + 8 * i].copy_from_slice(&(RING + i as u64).to_le_bytes());
        }
        self.post(&h);
        let mut o = [0u8; 148];
        o[0] = 5;
        o[8] = 1;
        o[16] = 0x77;
        o[24..28].copy_from_slice(&(OUT_PAGES as u32).to_le_bytes());
        self.post(&o);
    }

    /// Queues a packet at the guest's write index (as a writer that trusts itself).
    fn queue(&mut self, kind: u16, flags: u16, header: &[u8], body: &[u8]) {
        let size = (OUT_PAGES - 1) as u32 * 4096;
        let offset = 16 + header.len();
        let len = (offset + body.len()).div_ceil(8) * 8;
        let mut p = Vec::with_capacity(len + 8);
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(&((offset / 8) as u16).to_le_bytes());
        p.extend_from_slice(&((len / 8) as u16).to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&7u64.to_le_bytes());
        p.extend_from_slice(header);
        p.extend_from_slice(body);
        p.resize(len, 0);
        p.extend_from_slice(&(u64::from(self.out_write) << 32).to_le_bytes());
        if p.len() as u32 >= size {
            return;
        }
        for (i, b) in p.iter().enumerate() {
            let at = (self.out_write + i as u32) % size;
            let gpa = (RING + 1 + u64::from(at / 4096)) * 4096 + u64::from(at % 4096);
            let _ = self.mem.write(gpa, &[*b]);
        }
        self.out_write = (self.out_write + p.len() as u32) % size;
        let _ = self.mem.write_u32(RING * 4096, self.out_write);
    }

    fn vstor(&mut self, operation: u32, version: u16) {
        let mut v = [0u8; 64];
        v[0..4].copy_from_slice(&operation.to_le_bytes());
        v[12..14].copy_from_slice(&version.to_le_bytes());
        self.queue(6, 1, &[], &v);
        self.signal(self.conn);
    }

    fn check(&self) {
        for d in &self.host.disks {
            assert_eq!(d.data.len() as u64, SECTORS * 512, "a disk changed size");
        }
        assert_eq!(
            self.host.disks[1].data, self.ro_before,
            "a read-only disk was written"
        );
        for &(vp, vector, _) in &self.host.raised {
            assert!(vp < 2 && vector >= 0x10, "interrupt {vector} to VP {vp}");
        }
    }
}

pub fn run(data: &[u8]) {
    let mut s = Script { data };
    let mut g = Guest::new();
    let Some(mode) = s.u8() else {
        return;
    };
    if mode & 1 != 0 {
        g.bring_up();
        if mode & 2 != 0 {
            g.vstor(7, 0);
            g.vstor(9, 0x0602);
            g.vstor(10, 0);
            g.vstor(8, 0);
        }
    }
    for _ in 0..MAX_OPS {
        let Some(op) = s.u8() else {
            break;
        };
        match op % 6 {
            // A channel-management message: a known type with fuzzed fields.
            0 => {
                let Some(len) = s.small(241) else { break };
                let Some(kind) = s.small(26) else { break };
                let Some(body) = s.bytes(len as usize) else {
                    break;
                };
                let mut m = body.to_vec();
                if m.len() >= 4 {
                    m[..4].copy_from_slice(&kind.to_le_bytes());
                }
                g.post(&m);
            }
            // An SRB with a fuzzed CDB and page list, on either disk's channel.
            1 => {
                let Some(raw) = s.bytes(17) else { break };
                let mut cdb = [0u8; 16];
                cdb.copy_from_slice(&raw[1..]);
                let cdb_len = raw[0];
                let Some(len) = s.small(70_000) else { break };
                let Some(offset) = s.small(5000) else { break };
                let Some(pages) = s.small(80) else { break };
                let Some(dir) = s.u8() else { break };
                let mut v = [0u8; 64];
                v[0] = 3;
                v[12 + 8] = cdb_len;
                v[12 + 9] = dir >> 4;
                v[12 + 10] = dir & 3;
                v[24..28].copy_from_slice(&len.to_le_bytes());
                v[28..44].copy_from_slice(&cdb);
                v[12 + 5] = u8::from(dir & 0x80 != 0);
                let mut header = Vec::new();
                header.extend_from_slice(&0u32.to_le_bytes());
                header.extend_from_slice(&u32::from(dir & 0x40 == 0).to_le_bytes());
                header.extend_from_slice(&len.to_le_bytes());
                header.extend_from_slice(&offset.to_le_bytes());
                for i in 0..pages.min(100) {
                    let pfn = if dir & 0x20 != 0 && i == 0 {
                        u64::from(s.u32().unwrap_or(0))
                    } else {
                        DATA + u64::from(i)
                    };
                    header.extend_from_slice(&pfn.to_le_bytes());
                }
                let kind = if dir & 0x08 != 0 { 6 } else { 9 };
                g.queue(kind, u16::from(dir & 0x10 == 0), &header, &v);
                let conn = g.conn + u32::from(op & 0x80 != 0);
                g.signal(conn);
            }
            // Scribble over a ring page (control fields included).
            2 => {
                let Some(page) = s.small(RING_PAGES as u32) else {
                    break;
                };
                let Some(at) = s.small(4096) else { break };
                let Some(v) = s.u32() else { break };
                let _ = g
                    .mem
                    .write_u32((RING + u64::from(page)) * 4096 + u64::from(at & !3), v);
                if page == 0 && at < 8 {
                    g.out_write = g.mem.read_u32(RING * 4096).unwrap_or(0) % 0x4000;
                }
            }
            // A raw packet: fuzzed descriptor type, flags and body.
            3 => {
                let Some(kind) = s.u8() else { break };
                let Some(len) = s.small(200) else { break };
                let Some(body) = s.bytes(len as usize) else {
                    break;
                };
                let body = body.to_vec();
                g.queue(u16::from(kind), u16::from(kind & 1), &[], &body);
                g.signal(g.conn);
            }
            // A signal to a fuzzed connection, or a vstor operation.
            4 => {
                let Some(conn) = s.u32() else { break };
                g.signal(conn & 0x1_ffff);
            }
            _ => {
                let Some(operation) = s.small(16) else { break };
                let Some(version) = s.u32() else { break };
                g.vstor(operation, version as u16);
            }
        }
        g.drain();
        g.check();
    }
    g.check();
}
