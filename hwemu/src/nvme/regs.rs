//! Controller register offsets and fields (NVMe 1.4 §3.1).

pub const CAP: u64 = 0x00;
pub const CAP_HI: u64 = 0x04;
pub const VS: u64 = 0x08;
pub const INTMS: u64 = 0x0C;
pub const INTMC: u64 = 0x10;
pub const CC: u64 = 0x14;
pub const CSTS: u64 = 0x1C;
pub const AQA: u64 = 0x24;
pub const ASQ: u64 = 0x28;
pub const ASQ_HI: u64 = 0x2C;
pub const ACQ: u64 = 0x30;
pub const ACQ_HI: u64 = 0x34;
pub const DOORBELLS: u64 = 0x1000;

/// CAP.TO in 500 ms units: readiness is immediate, so this only bounds a driver's patience.
const TIMEOUT: u64 = 4;
/// MQES, CQR (contiguous queues required), TO, DSTRD = 0, CSS = NVM command set,
/// MPSMIN = MPSMAX = 4 KiB; no subsystem reset, boot partitions or memory buffers.
pub const CAP_VALUE: u64 = super::MQES as u64 | 1 << 16 | TIMEOUT << 24 | 1 << 37;
pub const VS_VALUE: u32 = 0x0001_0400;

pub const CC_EN: u32 = 1;
pub const CC_SHN: u32 = 3 << 14;
pub const CSTS_RDY: u32 = 1;
pub const CSTS_CFS: u32 = 1 << 1;
pub const CSTS_SHST: u32 = 3 << 2;
pub const SHST_COMPLETE: u32 = 2 << 2;
/// AQA's writable bits: ASQS and ACQS, 12 bits each.
pub const AQA_MASK: u32 = 0x0fff_0fff;

/// Whether CC asks for what CAP offers: the NVM command set, 4 KiB pages, round-robin
/// arbitration, 64-byte submission and 16-byte completion entries.
pub fn cc_valid(cc: u32) -> bool {
    let css = cc >> 4 & 7;
    let mps = cc >> 7 & 0xf;
    let ams = cc >> 11 & 7;
    let iosqes = cc >> 16 & 0xf;
    let iocqes = cc >> 20 & 0xf;
    css == 0 && mps == 0 && ams == 0 && iosqes == 6 && iocqes == 4
}
