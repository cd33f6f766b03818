//! A guest model for the VMBus tests: Linux's `hv_vmbus` and `hv_storvsc` as far as the host
//! sees them — the hypercalls, the SynIC pages, a ring GPADL, packets written and read as
//! Linux's ring code does — over guest memory and disks in host memory.

use super::super::wire::{self, msg};
use crate::hypercall::{Control, code};
use crate::msr::{EOM, GUEST_OS_ID, HYPERCALL, SCONTROL, SIEFP, SIMP, SINT0};
use crate::storvsc::{self, VSTOR_PACKET, op};
use crate::tests::{LINUX_OS_ID, config, fake_host, view};
use crate::{HyperV, HypercallInsn};
use virt::block::MemVolume;
use virt::personality::{Action, Personality};
use virt::{GuestMemory, GuestRegs, VecMemory};

pub(super) const RAM: usize = 4 << 20;
pub(super) const HYPERCALL_PAGE: u64 = 0x1000;
pub(super) const SIM: u64 = 0x2000;
pub(super) const SIEF: u64 = 0x3000;
pub(super) const INPUT: u64 = 0x4000;
/// Ring pages: 1 + 4 out, 1 + 4 in, deliberately not contiguous (every other page).
pub(super) const RING_BASE: u64 = 0x10_0000;
pub(super) const RING_PAGES: u64 = 10;
pub(super) const OUT_PAGES: u32 = 5;
pub(super) const DATA: u64 = 0x20_0000;
pub(super) const VECTOR: u64 = 0xf3;
pub(super) const SECTORS: u64 = 4096;

pub(super) struct Guest {
    pub(super) hv: HyperV,
    pub(super) mem: VecMemory,
    pub(super) host: virt::testing::FakeHost,
    pub(super) out_write: u32,
    pub(super) in_read: u32,
    pub(super) next_id: u64,
}

pub(super) fn ring_pfns() -> Vec<u64> {
    (0..RING_PAGES).map(|i| (RING_BASE >> 12) + 2 * i).collect()
}

impl Guest {
    pub(super) fn new(disks: &[MemVolume]) -> Guest {
        let mut host = fake_host(2);
        host.disks = disks.to_vec();
        let hv = HyperV::new(config(HypercallInsn::Vmcall), &host).unwrap();
        let mut g = Guest {
            hv,
            mem: VecMemory::new(RAM),
            host,
            out_write: 0,
            in_read: 0,
            next_id: 1,
        };
        g.wr(GUEST_OS_ID, LINUX_OS_ID);
        g.wr(HYPERCALL, HYPERCALL_PAGE | 1);
        g.wr(SIMP, SIM | 1);
        g.wr(SIEFP, SIEF | 1);
        g.wr(SINT0 + 2, VECTOR);
        g.wr(SCONTROL, 1);
        g
    }

    pub(super) fn wr(&mut self, msr: u32, value: u64) {
        let a = self
            .hv
            .wrmsr(&view(0), msr, value, &mut self.mem, &mut self.host);
        assert_eq!(a, Action::Done, "wrmsr {msr:#x}");
    }

    pub(super) fn call(&mut self, control: u64, input: u64) -> (Action, u64) {
        let mut regs = GuestRegs {
            rcx: control,
            rdx: input,
            ..Default::default()
        };
        let a = self
            .hv
            .hypercall(&view(0), &mut regs, &mut self.mem, &mut self.host);
        (a, regs.rax & 0xffff)
    }

    pub(super) fn post_to(&mut self, connection: u32, m: &[u8]) -> u64 {
        self.mem.write_u64(INPUT, u64::from(connection)).unwrap();
        self.mem
            .write_u64(INPUT + 8, 1 | ((m.len() as u64) << 32))
            .unwrap();
        self.mem.write(INPUT + 16, m).unwrap();
        self.call(post_message().encode(), INPUT).1
    }

    pub(super) fn post(&mut self, m: &wire::Out) {
        assert_eq!(self.post_to(4, m.payload()), 0, "post {}", m.kind());
    }

    /// The message in SIM slot 2, consumed as Linux consumes it (type cleared, EOM if pending).
    pub(super) fn recv(&mut self) -> Option<Vec<u8>> {
        let slot = SIM + 2 * 256;
        let kind = self.mem.read_u32(slot).unwrap();
        if kind == 0 {
            return None;
        }
        assert_eq!(kind, wire::SYNIC_MESSAGE_TYPE);
        let size = self.mem.read_u8(slot + 4).unwrap() as usize;
        let flags = self.mem.read_u8(slot + 5).unwrap();
        let mut b = vec![0u8; size];
        self.mem.read(slot + 16, &mut b).unwrap();
        self.mem.write_u32(slot, 0).unwrap();
        if flags & 1 != 0 {
            self.wr(EOM, 0);
        }
        Some(b)
    }

    pub(super) fn recv_all(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.recv()).collect()
    }

    pub(super) fn connect(&mut self, version: u32) -> Vec<u8> {
        let mut m = wire::Out::new(msg::INITIATE_CONTACT, wire::INITIATE_CONTACT_LEN);
        m.put_u32(8, version);
        m.put_u32(12, 0);
        m.put_u8(16, 2);
        assert_eq!(self.post_to(4, m.payload()), 0);
        self.recv().expect("version response")
    }

    /// Connect, take the offers, create the ring GPADL and open the first channel.
    pub(super) fn open_first(&mut self) -> (u32, u32) {
        let r = self.connect(wire::version::WIN10_V5_3);
        assert_eq!(r[8], 1);
        self.post(&wire::Out::new(msg::REQUESTOFFERS, 8));
        let offers = self.recv_all();
        let relid = u32::from_le_bytes(offers[0][184..188].try_into().unwrap());
        let conn = u32::from_le_bytes(offers[0][192..196].try_into().unwrap());
        let pfns = ring_pfns();
        self.post(&super::super::gpadl::header_message(
            relid,
            0x1000,
            RING_PAGES as u32,
            &pfns,
        ));
        let created = self.recv().unwrap();
        assert_eq!(u32_at(&created, 0), msg::GPADL_CREATED);
        assert_eq!(u32_at(&created, 16), 0);
        self.post(&open_message(relid, 0x1000, OUT_PAGES));
        let result = self.recv().unwrap();
        assert_eq!(u32_at(&result, 0), msg::OPENCHANNEL_RESULT);
        assert_eq!(u32_at(&result, 16), 0, "open status");
        (relid, conn)
    }

    pub(super) fn out_ring(&self) -> super::super::ring::Ring<'static> {
        let pfns: &'static [u64] = Box::leak(ring_pfns().into_boxed_slice());
        super::super::ring::Ring {
            pages: &pfns[..OUT_PAGES as usize],
        }
    }

    pub(super) fn in_ring(&self) -> super::super::ring::Ring<'static> {
        let pfns: &'static [u64] = Box::leak(ring_pfns().into_boxed_slice());
        super::super::ring::Ring {
            pages: &pfns[OUT_PAGES as usize..],
        }
    }

    /// Queues a packet as Linux's ring writer does (descriptor, payload, trailer).
    pub(super) fn queue(&mut self, kind: u16, header: &[u8], body: &[u8]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let offset = 16 + header.len();
        let len = (offset + body.len()).div_ceil(8) * 8;
        let d = super::super::ring::Descriptor {
            kind,
            offset,
            len,
            flags: 1,
            trans_id: id,
        };
        let mut p = d.encode().to_vec();
        p.extend_from_slice(header);
        p.extend_from_slice(body);
        p.resize(len, 0);
        p.extend_from_slice(&(u64::from(self.out_write) << 32).to_le_bytes());
        let r = self.out_ring();
        r.write(&self.mem, self.out_write, &p).unwrap();
        self.out_write = r.advance(self.out_write, p.len());
        r.publish(&self.mem, true, self.out_write).unwrap();
        id
    }

    /// The packets of type `kind` the host wrote since the last call, read as Linux reads
    /// them (and consumed): each descriptor with its payload.
    pub(super) fn packets(&mut self, kind: u16) -> Vec<(super::super::ring::Descriptor, Vec<u8>)> {
        let r = self.in_ring();
        let w = self.mem.read_u32(r.pages[0] << 12).unwrap();
        let mut out = vec![];
        while self.in_read != w {
            let mut d = [0u8; 16];
            r.read(&self.mem, self.in_read, &mut d).unwrap();
            let d = super::super::ring::Descriptor::parse(&d);
            assert_eq!(d.kind, kind);
            let mut body = vec![0u8; d.len - d.offset];
            r.read(&self.mem, r.advance(self.in_read, d.offset), &mut body)
                .unwrap();
            out.push((d, body));
            self.in_read = r.advance(self.in_read, d.len + 8);
        }
        r.publish(&self.mem, false, self.in_read).unwrap();
        out
    }

    /// Completions the host wrote since the last call: (trans_id, vstor_packet).
    pub(super) fn completions(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.packets(super::super::ring::packet::COMP)
            .into_iter()
            .map(|(d, body)| {
                assert!(
                    d.len <= 80,
                    "Linux copies at most 80 bytes of a storvsc packet"
                );
                (d.trans_id, body)
            })
            .collect()
    }

    /// Packets the host sent on its own (in band): their payloads.
    pub(super) fn host_packets(&mut self) -> Vec<Vec<u8>> {
        self.packets(super::super::ring::packet::DATA_INBAND)
            .into_iter()
            .map(|(_, body)| body)
            .collect()
    }

    pub(super) fn signal(&mut self, conn: u32) -> (Action, u64) {
        let c = Control {
            code: code::SIGNAL_EVENT,
            fast: true,
            varhead: 0,
            rep_count: 0,
            rep_start: 0,
        };
        self.call(c.encode(), u64::from(conn))
    }

    /// One vstor operation, in band; its completion.
    pub(super) fn vstor(
        &mut self,
        conn: u32,
        operation: u32,
        fill: impl FnOnce(&mut [u8]),
    ) -> Vec<u8> {
        let mut v = vec![0u8; VSTOR_PACKET];
        v[0..4].copy_from_slice(&operation.to_le_bytes());
        v[4..8].copy_from_slice(&1u32.to_le_bytes());
        fill(&mut v);
        let id = self.queue(super::super::ring::packet::DATA_INBAND, &[], &v);
        assert_eq!(self.signal(conn), (Action::Done, 0));
        let c = self.completions();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, id, "the transaction id is echoed");
        c[0].1.clone()
    }

    pub(super) fn init_storvsc(&mut self, conn: u32) {
        for (operation, fill) in [
            (op::BEGIN_INITIALIZATION, 0u16),
            (op::QUERY_PROTOCOL_VERSION, 0x0602),
            (op::QUERY_PROPERTIES, 0),
            (op::END_INITIALIZATION, 0),
        ] {
            let c = self.vstor(conn, operation, |v| {
                v[12..14].copy_from_slice(&fill.to_le_bytes())
            });
            assert_eq!(u32_at(&c, 0), op::COMPLETE_IO);
            assert_eq!(u32_at(&c, 8), 0, "vstor op {operation}");
            if operation == op::QUERY_PROPERTIES {
                assert_eq!(u32_at(&c, 12 + 12), storvsc::MAX_TRANSFER_BYTES);
            }
        }
    }

    /// An SRB for `cdb` with a data buffer of `len` bytes at `DATA + offset`.
    pub(super) fn srb(
        &mut self,
        conn: u32,
        cdb: &[u8],
        data_in: bool,
        len: u32,
        offset: u32,
    ) -> Vec<u8> {
        let mut v = vec![0u8; VSTOR_PACKET];
        v[0..4].copy_from_slice(&op::EXECUTE_SRB.to_le_bytes());
        v[4..8].copy_from_slice(&1u32.to_le_bytes());
        v[12..14].copy_from_slice(&52u16.to_le_bytes());
        v[12 + 8] = cdb.len() as u8;
        v[12 + 9] = 20;
        v[12 + 10] = u8::from(data_in);
        v[24..28].copy_from_slice(&len.to_le_bytes());
        v[28..28 + cdb.len()].copy_from_slice(cdb);
        let kind = if len == 0 {
            super::super::ring::packet::DATA_INBAND
        } else {
            super::super::ring::packet::DATA_USING_GPA_DIRECT
        };
        let mut header = vec![];
        if len != 0 {
            let pages = (u64::from(offset) + u64::from(len)).div_ceil(4096);
            header.extend_from_slice(&0u32.to_le_bytes());
            header.extend_from_slice(&1u32.to_le_bytes());
            header.extend_from_slice(&len.to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            for i in 0..pages {
                // Every other page, so that a copy that assumed contiguity would be caught.
                header.extend_from_slice(&((DATA >> 12) + 2 * i).to_le_bytes());
            }
        }
        let id = self.queue(kind, &header, &v);
        assert_eq!(self.signal(conn), (Action::Done, 0));
        let c = self.completions();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, id);
        c[0].1.clone()
    }

    /// The guest's data buffer as the scattered pages hold it.
    pub(super) fn buffer(&self, len: usize, offset: usize) -> Vec<u8> {
        let mut out = vec![];
        let mut pos = offset;
        while out.len() < len {
            let page = pos / 4096;
            let within = pos % 4096;
            let n = (4096 - within).min(len - out.len());
            let mut b = vec![0u8; n];
            self.mem
                .read(DATA + 2 * 4096 * page as u64 + within as u64, &mut b)
                .unwrap();
            out.extend_from_slice(&b);
            pos += n;
        }
        out
    }

    pub(super) fn fill_buffer(&self, data: &[u8], offset: usize) {
        let mut pos = offset;
        let mut done = 0;
        while done < data.len() {
            let page = pos / 4096;
            let within = pos % 4096;
            let n = (4096 - within).min(data.len() - done);
            self.mem
                .write(
                    DATA + 2 * 4096 * page as u64 + within as u64,
                    &data[done..done + n],
                )
                .unwrap();
            done += n;
            pos += n;
        }
    }
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub(super) fn open_message(relid: u32, gpadl: u32, out_pages: u32) -> wire::Out {
    let mut m = wire::Out::new(msg::OPENCHANNEL, wire::OPEN_LEN);
    m.put_u32(8, relid);
    m.put_u32(12, 77);
    m.put_u32(16, gpadl);
    m.put_u32(20, 0);
    m.put_u32(24, out_pages);
    m
}

pub(super) fn disk(sectors: u64) -> MemVolume {
    let mut v = MemVolume::new(sectors);
    for (i, b) in v.data.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).rotate_left(5) as u8;
    }
    v.durable = v.data.clone();
    v
}

pub(super) fn rw10(opcode: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = opcode;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

pub(super) fn status(c: &[u8]) -> (u8, u8, u32) {
    (c[14], c[15], u32_at(c, 24))
}

/// The control of a memory-form `HvPostMessage`.
pub(super) fn post_message() -> Control {
    Control {
        code: code::POST_MESSAGE,
        fast: false,
        varhead: 0,
        rep_count: 0,
        rep_start: 0,
    }
}
