//! The controller's register file (NVMe base specification, "Controller Registers"): offsets,
//! and decoding of CAP and CSTS; encoding of CC and AQA.

pub const CAP: usize = 0x00;
pub const VS: usize = 0x08;
pub const INTMS: usize = 0x0C;
pub const CC: usize = 0x14;
pub const CSTS: usize = 0x1C;
pub const AQA: usize = 0x24;
pub const ASQ: usize = 0x28;
pub const ACQ: usize = 0x30;
/// Where the doorbells begin; each is `4 << CAP.DSTRD` bytes apart.
pub const DOORBELLS: usize = 0x1000;

/// The only memory page size the driver uses (CC.MPS = 0).
pub const PAGE: u64 = 4096;

/// Controller Capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    /// Maximum queue entries supported, as a count (the register holds it 0-based).
    pub fn max_queue_entries(self) -> u32 {
        (self.0 & 0xffff) as u32 + 1
    }

    /// Doorbell stride: doorbells are `4 << dstrd` bytes apart.
    pub fn dstrd(self) -> u32 {
        ((self.0 >> 32) & 0xf) as u32
    }

    /// The worst-case time for CSTS.RDY to follow CC.EN, in microseconds (TO is in 500 ms
    /// units). A controller that says 0 still gets half a second.
    pub fn ready_timeout_us(self) -> u64 {
        ((self.0 >> 24) & 0xff).max(1) * 500_000
    }

    /// The NVM command set (CSS bit 0), the only one the driver speaks.
    pub fn supports_nvm(self) -> bool {
        (self.0 >> 37) & 1 == 1
    }

    /// Smallest and largest memory page size, in bytes.
    pub fn page_sizes(self) -> (u64, u64) {
        let min = (self.0 >> 48) & 0xf;
        let max = (self.0 >> 52) & 0xf;
        (1 << (12 + min), 1 << (12 + max))
    }

    /// Whether 4 KiB pages are allowed.
    pub fn supports_4k_pages(self) -> bool {
        let (min, max) = self.page_sizes();
        min <= PAGE && PAGE <= max
    }
}

/// Controller Status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Csts(pub u32);

impl Csts {
    pub fn ready(self) -> bool {
        self.0 & 1 == 1
    }

    /// Controller Fatal Status: the controller gave up; only a reset helps.
    pub fn fatal(self) -> bool {
        (self.0 >> 1) & 1 == 1
    }
}

/// Controller Configuration for an enabled controller: NVM command set, 4 KiB pages,
/// round-robin arbitration, 64-byte submission and 16-byte completion entries.
pub fn cc_enable() -> u32 {
    const IOSQES: u32 = 6; // 2^6 = 64 bytes
    const IOCQES: u32 = 4; // 2^4 = 16 bytes
    (IOCQES << 20) | (IOSQES << 16) | 1
}

/// Admin Queue Attributes for admin queues of `entries` entries each.
pub fn aqa(entries: u16) -> u32 {
    let n = u32::from(entries - 1) & 0xfff;
    (n << 16) | n
}

/// Byte offset of queue `qid`'s submission tail doorbell.
pub fn sq_tail_doorbell(qid: u16, dstrd: u32) -> usize {
    DOORBELLS + (2 * usize::from(qid)) * (4 << dstrd)
}

/// Byte offset of queue `qid`'s completion head doorbell.
pub fn cq_head_doorbell(qid: u16, dstrd: u32) -> usize {
    DOORBELLS + (2 * usize::from(qid) + 1) * (4 << dstrd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_cap() {
        // QEMU's nvme: MQES 2047, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM, MPSMIN 0, MPSMAX 4.
        let cap = Cap(0x0040_0020_0f01_07ff);
        assert_eq!(cap.max_queue_entries(), 2048);
        assert_eq!(cap.dstrd(), 0);
        assert_eq!(cap.ready_timeout_us(), 7_500_000);
        assert!(cap.supports_nvm());
        assert_eq!(cap.page_sizes(), (4096, 65536));
        assert!(cap.supports_4k_pages());

        let odd = Cap((3 << 32) | (1 << 48) | (1 << 52));
        assert_eq!(odd.dstrd(), 3);
        assert!(!odd.supports_nvm());
        assert!(!odd.supports_4k_pages());
        assert_eq!(odd.ready_timeout_us(), 500_000, "TO 0 still waits");
        assert_eq!(odd.max_queue_entries(), 1);
    }

    #[test]
    fn decodes_csts() {
        assert!(Csts(1).ready());
        assert!(!Csts(1).fatal());
        assert!(Csts(2).fatal());
        assert!(!Csts(2).ready());
        assert!(Csts(3).ready() && Csts(3).fatal());
    }

    #[test]
    fn encodes_cc_and_aqa() {
        assert_eq!(cc_enable(), 0x0046_0001);
        assert_eq!(aqa(32), 0x001f_001f);
        assert_eq!(aqa(1), 0);
    }

    #[test]
    fn doorbells_follow_the_stride() {
        assert_eq!(sq_tail_doorbell(0, 0), 0x1000);
        assert_eq!(cq_head_doorbell(0, 0), 0x1004);
        assert_eq!(sq_tail_doorbell(1, 0), 0x1008);
        assert_eq!(cq_head_doorbell(1, 0), 0x100c);
        assert_eq!(sq_tail_doorbell(1, 2), 0x1000 + 2 * 16);
        assert_eq!(cq_head_doorbell(1, 2), 0x1000 + 3 * 16);
    }
}
