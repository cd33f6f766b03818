//! Submission entries: the 16 dwords of the admin and I/O commands the driver sends.
//!
//! DW0 holds the opcode and the command identifier, DW1 the namespace, DW6–9 the data
//! pointer (PRP1, PRP2: the driver never uses SGLs), DW10–15 are per command.

use super::prp::Prps;

pub mod admin {
    pub const DELETE_SQ: u8 = 0x00;
    pub const CREATE_SQ: u8 = 0x01;
    pub const DELETE_CQ: u8 = 0x04;
    pub const CREATE_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const SET_FEATURES: u8 = 0x09;
}

pub mod io {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
}

/// Identify's CNS values the driver uses.
pub mod cns {
    pub const NAMESPACE: u8 = 0x00;
    pub const CONTROLLER: u8 = 0x01;
    pub const ACTIVE_NAMESPACES: u8 = 0x02;
}

const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command(pub [u32; 16]);

impl Command {
    fn new(opcode: u8, nsid: u32) -> Self {
        let mut dw = [0u32; 16];
        dw[0] = u32::from(opcode);
        dw[1] = nsid;
        Command(dw)
    }

    pub fn opcode(&self) -> u8 {
        self.0[0] as u8
    }

    /// Sets the command identifier (DW0 bits 31:16), chosen at submission.
    pub fn with_cid(mut self, cid: u16) -> Self {
        self.0[0] = (self.0[0] & 0xffff) | (u32::from(cid) << 16);
        self
    }

    pub fn cid(&self) -> u16 {
        (self.0[0] >> 16) as u16
    }

    fn with_prps(mut self, p: Prps) -> Self {
        self.0[6] = p.prp1 as u32;
        self.0[7] = (p.prp1 >> 32) as u32;
        self.0[8] = p.prp2 as u32;
        self.0[9] = (p.prp2 >> 32) as u32;
        self
    }

    /// Identify into one page at `page` (a 4 KiB, page-aligned buffer).
    pub fn identify(cns: u8, nsid: u32, page: u64) -> Self {
        let mut c = Command::new(admin::IDENTIFY, nsid).with_prps(Prps {
            prp1: page,
            prp2: 0,
            list_len: 0,
        });
        c.0[10] = u32::from(cns);
        c
    }

    /// Asks for `sq` submission and `cq` completion I/O queues (counts, not 0-based).
    pub fn set_queue_count(sq: u16, cq: u16) -> Self {
        let mut c = Command::new(admin::SET_FEATURES, 0);
        c.0[10] = FEATURE_NUMBER_OF_QUEUES;
        c.0[11] = (u32::from(cq - 1) << 16) | u32::from(sq - 1);
        c
    }

    /// A physically contiguous completion queue without interrupts (the driver polls).
    pub fn create_cq(qid: u16, entries: u16, base: u64) -> Self {
        let mut c = Command::new(admin::CREATE_CQ, 0).with_prps(Prps {
            prp1: base,
            prp2: 0,
            list_len: 0,
        });
        c.0[10] = (u32::from(entries - 1) << 16) | u32::from(qid);
        c.0[11] = 1; // PC; IEN clear
        c
    }

    /// A physically contiguous submission queue feeding completion queue `cqid`.
    pub fn create_sq(qid: u16, entries: u16, base: u64, cqid: u16) -> Self {
        let mut c = Command::new(admin::CREATE_SQ, 0).with_prps(Prps {
            prp1: base,
            prp2: 0,
            list_len: 0,
        });
        c.0[10] = (u32::from(entries - 1) << 16) | u32::from(qid);
        c.0[11] = (u32::from(cqid) << 16) | 1; // PC, priority ignored under round robin
        c
    }

    pub fn delete_sq(qid: u16) -> Self {
        let mut c = Command::new(admin::DELETE_SQ, 0);
        c.0[10] = u32::from(qid);
        c
    }

    pub fn delete_cq(qid: u16) -> Self {
        let mut c = Command::new(admin::DELETE_CQ, 0);
        c.0[10] = u32::from(qid);
        c
    }

    /// Read or write `blocks` (≥ 1, ≤ 65536) LBAs from `lba`.
    pub fn rw(write: bool, nsid: u32, lba: u64, blocks: u32, prps: Prps) -> Self {
        debug_assert!((1..=0x1_0000).contains(&blocks));
        let op = if write { io::WRITE } else { io::READ };
        let mut c = Command::new(op, nsid).with_prps(prps);
        c.0[10] = lba as u32;
        c.0[11] = (lba >> 32) as u32;
        c.0[12] = (blocks - 1) & 0xffff;
        c
    }

    pub fn flush(nsid: u32) -> Self {
        Command::new(io::FLUSH, nsid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_controller() {
        let c = Command::identify(cns::CONTROLLER, 0, 0x5000).with_cid(0x42);
        assert_eq!(c.0[0], 0x0042_0006);
        assert_eq!(c.cid(), 0x42);
        assert_eq!(c.opcode(), admin::IDENTIFY);
        assert_eq!((c.0[6], c.0[7], c.0[8], c.0[9]), (0x5000, 0, 0, 0));
        assert_eq!(c.0[10], 1);
        let ns = Command::identify(cns::NAMESPACE, 3, 0x1_0000_6000);
        assert_eq!((ns.0[1], ns.0[6], ns.0[7], ns.0[10]), (3, 0x6000, 1, 0));
    }

    #[test]
    fn queue_management() {
        let cq = Command::create_cq(1, 32, 0x8000);
        assert_eq!(cq.0[0], 0x05);
        assert_eq!(cq.0[6], 0x8000);
        assert_eq!(cq.0[10], (31 << 16) | 1);
        assert_eq!(cq.0[11], 1, "physically contiguous, no interrupts");
        let sq = Command::create_sq(1, 32, 0x9000, 1);
        assert_eq!(sq.0[0], 0x01);
        assert_eq!(sq.0[10], (31 << 16) | 1);
        assert_eq!(sq.0[11], (1 << 16) | 1);
        let n = Command::set_queue_count(1, 1);
        assert_eq!((n.0[0], n.0[10], n.0[11]), (0x09, 7, 0));
        assert_eq!(Command::delete_sq(1).0[..1], [0]);
        assert_eq!(Command::delete_cq(1).0[10], 1);
    }

    #[test]
    fn read_write_flush() {
        let p = Prps {
            prp1: 0x1_2345_6000,
            prp2: 0x7000,
            list_len: 3,
        };
        let r = Command::rw(false, 1, 0x1_0000_0008, 128, p).with_cid(7);
        assert_eq!(r.0[0], 0x0007_0002);
        assert_eq!(r.0[1], 1);
        assert_eq!(
            (r.0[6], r.0[7], r.0[8], r.0[9]),
            (0x2345_6000, 1, 0x7000, 0)
        );
        assert_eq!((r.0[10], r.0[11], r.0[12]), (8, 1, 127));
        let w = Command::rw(true, 2, 3, 1, p);
        assert_eq!((w.opcode(), w.0[1], w.0[10], w.0[12]), (io::WRITE, 2, 3, 0));
        assert_eq!(Command::rw(true, 1, 0, 0x1_0000, p).0[12], 0xffff);
        let f = Command::flush(5).with_cid(0xfffe);
        assert_eq!(f.0, {
            let mut d = [0u32; 16];
            d[0] = 0xfffe_0000;
            d[1] = 5;
            d
        });
    }
}
