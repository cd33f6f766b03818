//! A SCSI direct-access disk (SPC-4/SBC-3, as Hyper-V's virtual disk answers): the CDB is
//! decoded and checked here, and the caller (storvsc) moves the data and does the I/O.
//!
//! Linux's probe reads INQUIRY (standard, then the VPD pages listed in page 0), REPORT LUNS,
//! READ CAPACITY(16) (the version byte says SPC-3), MODE SENSE for the caching page (WCE = 1,
//! so it sends SYNCHRONIZE CACHE, which the caller turns into a volume flush) and the write
//! protect bit. Anything else is CHECK CONDITION with sense, never a silent success.

use virt::block::DiskInfo;

pub const BLOCK: u32 = 512;
/// The largest READ/WRITE this target takes (256 KiB), as VPD page 0xB0 says.
pub const MAX_TRANSFER_BLOCKS: u32 = 512;
/// Bytes a command's reply may have.
pub const REPLY_MAX: usize = 256;

/// Fixed-format sense data: key, additional sense code and qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl Sense {
    pub const NO_SENSE: Sense = Sense::new(0, 0, 0);
    pub const ILLEGAL_REQUEST_OPCODE: Sense = Sense::new(5, 0x20, 0);
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(5, 0x21, 0);
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::new(5, 0x24, 0);
    pub const LUN_NOT_SUPPORTED: Sense = Sense::new(5, 0x25, 0);
    pub const SAVING_NOT_SUPPORTED: Sense = Sense::new(5, 0x39, 0);
    pub const WRITE_PROTECTED: Sense = Sense::new(7, 0x27, 0);
    /// The image could not grow (its container is full): DATA PROTECT, SPACE ALLOCATION
    /// FAILED WRITE PROTECT, what thin-provisioned disks report when their pool runs out.
    pub const NO_SPACE: Sense = Sense::new(7, 0x27, 0x07);
    pub const MEDIUM_ERROR: Sense = Sense::new(3, 0x11, 0);
    pub const WRITE_ERROR: Sense = Sense::new(3, 0x0c, 0);

    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense { key, asc, ascq }
    }

    /// Response code 0x70 (current error), additional length 10.
    pub fn fixed(&self) -> [u8; 18] {
        let mut b = [0u8; 18];
        b[0] = 0x70;
        b[2] = self.key & 0xf;
        b[7] = 10;
        b[12] = self.asc;
        b[13] = self.ascq;
        b
    }
}

pub type Reply = heapless::Vec<u8, REPLY_MAX>;

/// What one command asks of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a reply of at most 256 bytes, returned once per command on the stack; no heap here"
)]
pub enum Command {
    /// GOOD, no data.
    Good,
    /// GOOD, and these bytes go to the initiator (already cut to the allocation length).
    DataIn(Reply),
    Read {
        lba: u64,
        blocks: u32,
    },
    Write {
        lba: u64,
        blocks: u32,
    },
    /// SYNCHRONIZE CACHE: every completed write is made durable before GOOD.
    Flush,
    Check(Sense),
}

/// Bytes the command moves (for READ/WRITE), or what its reply holds.
pub fn transfer_bytes(cmd: &Command) -> u64 {
    match cmd {
        Command::Read { blocks, .. } | Command::Write { blocks, .. } => {
            u64::from(*blocks) * u64::from(BLOCK)
        }
        Command::DataIn(d) => d.len() as u64,
        _ => 0,
    }
}

mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const VERIFY_10: u8 = 0x2f;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_16: u8 = 0x88;
    pub const WRITE_16: u8 = 0x8a;
    pub const VERIFY_16: u8 = 0x8f;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
}
const READ_CAPACITY_16: u8 = 0x10;

/// CDB length by the opcode's group (SPC-4 4.2.5.1); vendor-specific groups have none.
fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_be_bytes(x)
}

/// `bytes` cut to `alloc`.
fn reply(bytes: &[u8], alloc: usize) -> Command {
    let mut r = Reply::new();
    let _ = r.extend_from_slice(&bytes[..bytes.len().min(alloc).min(REPLY_MAX)]);
    Command::DataIn(r)
}

const VENDOR: &[u8; 8] = b"Janus   ";
const PRODUCT: &[u8; 16] = b"Virtual Disk    ";
const REVISION: &[u8; 4] = b"1.0 ";

/// VPD pages served, in page 0's order.
const VPD_PAGES: [u8; 5] = [0x00, 0x80, 0x83, 0xb0, 0xb1];

/// Decodes `cdb` for the disk at the addressed LUN (`None`: no LUN there).
pub fn decode(cdb: &[u8], lun: Option<&DiskInfo>) -> Command {
    decode_with(cdb, lun, b"JANUS-DISK")
}

/// As [`decode`], with the unit serial number VPD page 0x80 reports.
pub fn decode_with(cdb: &[u8], lun: Option<&DiskInfo>, serial: &[u8]) -> Command {
    let Some(&opcode) = cdb.first() else {
        return Command::Check(Sense::INVALID_FIELD_IN_CDB);
    };
    let Some(len) = cdb_len(opcode) else {
        return Command::Check(Sense::ILLEGAL_REQUEST_OPCODE);
    };
    if cdb.len() < len {
        return Command::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    let cdb = &cdb[..len];
    let Some(disk) = lun else {
        return absent(cdb);
    };
    match opcode {
        op::TEST_UNIT_READY | op::START_STOP_UNIT | op::PREVENT_ALLOW => Command::Good,
        op::REQUEST_SENSE => reply(&Sense::NO_SENSE.fixed(), usize::from(cdb[4])),
        op::INQUIRY => inquiry(cdb, serial),
        op::REPORT_LUNS => report_luns(cdb, true),
        op::READ_CAPACITY_10 => {
            let last = disk.sectors.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&last.to_be_bytes());
            b[4..].copy_from_slice(&BLOCK.to_be_bytes());
            reply(&b, 8)
        }
        op::SERVICE_ACTION_IN_16 if cdb[1] & 0x1f == READ_CAPACITY_16 => {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&disk.sectors.saturating_sub(1).to_be_bytes());
            b[8..12].copy_from_slice(&BLOCK.to_be_bytes());
            reply(&b, be32(&cdb[10..14]) as usize)
        }
        op::SERVICE_ACTION_IN_16 => Command::Check(Sense::INVALID_FIELD_IN_CDB),
        op::MODE_SENSE_6 => mode_sense(cdb[2], usize::from(cdb[4]), false, disk),
        op::MODE_SENSE_10 => mode_sense(cdb[2], usize::from(be16(&cdb[7..9])), true, disk),
        op::READ_6 | op::WRITE_6 => {
            let lba = u64::from(be32(&cdb[0..4]) & 0x1f_ffff);
            // A length of 0 means 256 blocks in the 6-byte commands.
            let blocks = match cdb[4] {
                0 => 256,
                n => u32::from(n),
            };
            rw(opcode == op::WRITE_6, lba, blocks, disk)
        }
        op::READ_10 | op::WRITE_10 => rw(
            opcode == op::WRITE_10,
            u64::from(be32(&cdb[2..6])),
            u32::from(be16(&cdb[7..9])),
            disk,
        ),
        op::READ_12 | op::WRITE_12 => rw(
            opcode == op::WRITE_12,
            u64::from(be32(&cdb[2..6])),
            be32(&cdb[6..10]),
            disk,
        ),
        op::READ_16 | op::WRITE_16 => rw(
            opcode == op::WRITE_16,
            be64(&cdb[2..10]),
            be32(&cdb[10..14]),
            disk,
        ),
        op::VERIFY_10 => in_range(
            u64::from(be32(&cdb[2..6])),
            u64::from(be16(&cdb[7..9])),
            disk,
        ),
        op::VERIFY_16 => in_range(be64(&cdb[2..10]), u64::from(be32(&cdb[10..14])), disk),
        op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => Command::Flush,
        _ => Command::Check(Sense::ILLEGAL_REQUEST_OPCODE),
    }
}

/// No LUN at this address: INQUIRY says so in its data (peripheral qualifier 3), which is how
/// a scan learns it; REPORT LUNS lists none.
fn absent(cdb: &[u8]) -> Command {
    match cdb[0] {
        op::INQUIRY if cdb[1] & 1 == 0 => {
            let mut b = [0u8; 36];
            b[0] = 0x7f;
            b[2] = 5;
            b[3] = 2;
            b[4] = 31;
            reply(&b, usize::from(be16(&cdb[3..5])))
        }
        op::REPORT_LUNS => report_luns(cdb, false),
        op::REQUEST_SENSE => reply(&Sense::LUN_NOT_SUPPORTED.fixed(), usize::from(cdb[4])),
        _ => Command::Check(Sense::LUN_NOT_SUPPORTED),
    }
}

fn in_range(lba: u64, blocks: u64, disk: &DiskInfo) -> Command {
    match lba.checked_add(blocks) {
        Some(end) if end <= disk.sectors => Command::Good,
        _ => Command::Check(Sense::LBA_OUT_OF_RANGE),
    }
}

fn rw(write: bool, lba: u64, blocks: u32, disk: &DiskInfo) -> Command {
    if write && disk.read_only {
        return Command::Check(Sense::WRITE_PROTECTED);
    }
    if blocks > MAX_TRANSFER_BLOCKS {
        return Command::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    match in_range(lba, u64::from(blocks), disk) {
        Command::Good if blocks == 0 => Command::Good,
        Command::Good if write => Command::Write { lba, blocks },
        Command::Good => Command::Read { lba, blocks },
        other => other,
    }
}

fn report_luns(cdb: &[u8], present: bool) -> Command {
    let alloc = be32(&cdb[6..10]) as usize;
    if alloc < 16 {
        return Command::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    // LUN 0, when there is a disk: an 8-byte header with the list's length, then the list.
    let mut b = [0u8; 16];
    if present {
        b[3] = 8;
        reply(&b, alloc)
    } else {
        reply(&b[..8], alloc)
    }
}

fn inquiry(cdb: &[u8], serial: &[u8]) -> Command {
    let alloc = usize::from(be16(&cdb[3..5]));
    let evpd = cdb[1] & 1 != 0;
    // CmdDt is obsolete; a page code without EVPD is invalid.
    if cdb[1] & 2 != 0 || (!evpd && cdb[2] != 0) {
        return Command::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    if !evpd {
        let mut b = [0u8; 36];
        // Direct access, not removable, SPC-3, response data format 2, HiSup.
        b[2] = 5;
        b[3] = 0x12;
        b[4] = 31;
        // CmdQue: the target queues commands (storvsc issues several at once).
        b[7] = 0x02;
        b[8..16].copy_from_slice(VENDOR);
        b[16..32].copy_from_slice(PRODUCT);
        b[32..36].copy_from_slice(REVISION);
        return reply(&b, alloc);
    }
    let mut p = [0u8; 64];
    p[1] = cdb[2];
    let body = &mut p[4..];
    let n = match cdb[2] {
        0x00 => {
            body[..VPD_PAGES.len()].copy_from_slice(&VPD_PAGES);
            VPD_PAGES.len()
        }
        0x80 => {
            let n = serial.len().min(body.len());
            body[..n].copy_from_slice(&serial[..n]);
            n
        }
        0x83 => {
            // One designator: T10 vendor id (code set ASCII, association LUN), vendor + serial.
            body[0] = 0x02;
            body[1] = 0x01;
            let id = &mut body[4..];
            id[..8].copy_from_slice(VENDOR);
            let n = serial.len().min(id.len() - 8);
            id[8..8 + n].copy_from_slice(&serial[..n]);
            body[3] = (8 + n) as u8;
            4 + 8 + n
        }
        0xb0 => {
            // Block limits: no transfer-length granularity, the largest and the optimal
            // transfer, no UNMAP.
            body[4..8].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
            body[8..12].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
            0x3c
        }
        0xb1 => {
            // Block device characteristics: non-rotating medium.
            body[1] = 1;
            0x3c
        }
        _ => return Command::Check(Sense::INVALID_FIELD_IN_CDB),
    };
    p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
    reply(&p[..4 + n], alloc)
}

/// MODE SENSE: the caching page (write cache enabled: a write is durable only after
/// SYNCHRONIZE CACHE, which is the truth of a VHD with its own metadata) and the control
/// page, with no block descriptors; the write-protect bit for a read-only disk.
fn mode_sense(page_byte: u8, alloc: usize, ten: bool, disk: &DiskInfo) -> Command {
    let control = page_byte >> 6;
    let page = page_byte & 0x3f;
    if control == 3 {
        return Command::Check(Sense::SAVING_NOT_SUPPORTED);
    }
    let changeable = control == 1;
    let caching: [u8; 20] = {
        let mut c = [0u8; 20];
        c[0] = 0x08;
        c[1] = 18;
        if !changeable {
            c[2] = 0x04;
        }
        c
    };
    let ctrl: [u8; 12] = {
        let mut c = [0u8; 12];
        c[0] = 0x0a;
        c[1] = 10;
        c
    };
    let mut pages: heapless::Vec<u8, 64> = heapless::Vec::new();
    let ok = match page {
        0x08 => pages.extend_from_slice(&caching).is_ok(),
        0x0a => pages.extend_from_slice(&ctrl).is_ok(),
        0x3f => pages.extend_from_slice(&caching).is_ok() && pages.extend_from_slice(&ctrl).is_ok(),
        _ => false,
    };
    if !ok {
        return Command::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    let wp = if disk.read_only { 0x80 } else { 0 };
    let mut b: heapless::Vec<u8, 72> = heapless::Vec::new();
    if ten {
        let len = (6 + pages.len()) as u16;
        let _ = b.extend_from_slice(&len.to_be_bytes());
        let _ = b.extend_from_slice(&[0, wp, 0, 0, 0, 0]);
    } else {
        let _ = b.extend_from_slice(&[(3 + pages.len()) as u8, 0, wp, 0]);
    }
    let _ = b.extend_from_slice(&pages);
    reply(&b, alloc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISK: DiskInfo = DiskInfo {
        sectors: 1 << 20,
        read_only: false,
    };
    const RO: DiskInfo = DiskInfo {
        sectors: 1 << 20,
        read_only: true,
    };

    fn data(c: Command) -> Vec<u8> {
        match c {
            Command::DataIn(d) => d.to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn standard_inquiry_names_a_queueing_spc3_disk() {
        let d = data(decode(&[0x12, 0, 0, 0, 96, 0], Some(&DISK)));
        assert_eq!(d.len(), 36);
        assert_eq!((d[0], d[2], d[3] & 0xf, d[7] & 2), (0, 5, 2, 2));
        assert_eq!(&d[8..16], b"Janus   ");
        assert_ne!(&d[8..12], b"Msft");
        assert_eq!(data(decode(&[0x12, 0, 0, 0, 5, 0], Some(&DISK))).len(), 5);
        assert_eq!(
            decode(&[0x12, 0, 0, 0, 0, 0], Some(&DISK)),
            Command::DataIn(Reply::new())
        );
        // A page code without EVPD, and CmdDt.
        assert_eq!(
            decode(&[0x12, 0, 0x80, 0, 36, 0], Some(&DISK)),
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            decode(&[0x12, 2, 0, 0, 36, 0], Some(&DISK)),
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn vpd_pages_are_the_ones_page_zero_lists() {
        let list = data(decode(&[0x12, 1, 0, 0, 255, 0], Some(&DISK)));
        assert_eq!(&list[4..], &VPD_PAGES);
        for &p in &VPD_PAGES {
            let d = data(decode(&[0x12, 1, p, 0, 255, 0], Some(&DISK)));
            assert_eq!(d[1], p);
            assert_eq!(usize::from(be16(&d[2..4])), d.len() - 4, "page {p:#x}");
        }
        let b0 = data(decode(&[0x12, 1, 0xb0, 0, 255, 0], Some(&DISK)));
        assert_eq!(be32(&b0[8..12]), MAX_TRANSFER_BLOCKS);
        let b1 = data(decode(&[0x12, 1, 0xb1, 0, 255, 0], Some(&DISK)));
        assert_eq!(be16(&b1[4..6]), 1, "non-rotating");
        let serial = data(decode_with(
            &[0x12, 1, 0x80, 0, 255, 0],
            Some(&DISK),
            b"S42",
        ));
        assert_eq!(&serial[4..], b"S42");
        assert_eq!(
            decode(&[0x12, 1, 0xb2, 0, 255, 0], Some(&DISK)),
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn capacity_in_both_sizes() {
        let d = data(decode(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], Some(&DISK)));
        assert_eq!((be32(&d[0..4]), be32(&d[4..8])), ((1 << 20) - 1, 512));
        let big = DiskInfo {
            sectors: 1 << 40,
            read_only: false,
        };
        let d = data(decode(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], Some(&big)));
        assert_eq!(be32(&d[0..4]), u32::MAX, "too large for READ CAPACITY(10)");
        let mut c16 = [0u8; 16];
        c16[0] = 0x9e;
        c16[1] = 0x10;
        c16[13] = 32;
        let d = data(decode(&c16, Some(&big)));
        assert_eq!(
            (d.len(), be64(&d[0..8]), be32(&d[8..12])),
            (32, (1 << 40) - 1, 512)
        );
        c16[13] = 12;
        assert_eq!(data(decode(&c16, Some(&big))).len(), 12);
        c16[1] = 0x11;
        assert_eq!(
            decode(&c16, Some(&big)),
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn mode_sense_says_write_cache_and_write_protect() {
        let d = data(decode(&[0x1a, 0, 0x08, 0, 255, 0], Some(&DISK)));
        assert_eq!(usize::from(d[0]) + 1, d.len());
        assert_eq!(
            (d[2] & 0x80, d[3]),
            (0, 0),
            "writable, no block descriptors"
        );
        assert_eq!((d[4], d[6] & 0x04), (0x08, 0x04), "WCE");
        let d = data(decode(&[0x1a, 0, 0x3f, 0, 255, 0], Some(&RO)));
        assert_eq!(d[2] & 0x80, 0x80);
        assert_eq!((d[4], d[24]), (0x08, 0x0a));
        let d = data(decode(&[0x5a, 0, 0x08, 0, 0, 0, 0, 0, 255, 0], Some(&DISK)));
        assert_eq!(usize::from(be16(&d[0..2])) + 2, d.len());
        assert_eq!((d[8], d[10] & 0x04), (0x08, 0x04));
        let d = data(decode(&[0x1a, 0, 0x48, 0, 255, 0], Some(&DISK)));
        assert_eq!(d[6] & 0x04, 0, "nothing is changeable");
        assert_eq!(
            decode(&[0x1a, 0, 0xc8, 0, 255, 0], Some(&DISK)),
            Command::Check(Sense::SAVING_NOT_SUPPORTED)
        );
        assert_eq!(
            decode(&[0x1a, 0, 0x1c, 0, 255, 0], Some(&DISK)),
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            data(decode(&[0x1a, 0, 0x3f, 0, 4, 0], Some(&DISK))).len(),
            4
        );
    }

    #[test]
    fn reads_and_writes_in_every_size() {
        assert_eq!(
            decode(&[0x08, 0, 0, 7, 0, 0], Some(&DISK)),
            Command::Read {
                lba: 7,
                blocks: 256
            }
        );
        assert_eq!(
            decode(&[0x0a, 0x0f, 0xff, 0xff, 1, 0], Some(&DISK)),
            Command::Write {
                lba: 0xf_ffff,
                blocks: 1
            }
        );
        assert_eq!(
            decode(&[0x28, 0, 0, 0, 1, 0, 0, 0, 8, 0], Some(&DISK)),
            Command::Read {
                lba: 256,
                blocks: 8
            }
        );
        assert_eq!(
            decode(&[0xaa, 0, 0, 0, 0, 2, 0, 0, 0, 16, 0, 0], Some(&DISK)),
            Command::Write { lba: 2, blocks: 16 }
        );
        let mut c = [0u8; 16];
        c[0] = 0x88;
        c[9] = 9;
        c[13] = 3;
        assert_eq!(decode(&c, Some(&DISK)), Command::Read { lba: 9, blocks: 3 });
        // Zero blocks in the longer forms is no transfer.
        assert_eq!(
            decode(&[0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0], Some(&DISK)),
            Command::Good
        );
        // The last block, and one past it.
        let last = (1u32 << 20) - 1;
        let mut c = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        c[2..6].copy_from_slice(&last.to_be_bytes());
        assert_eq!(
            decode(&c, Some(&DISK)),
            Command::Read {
                lba: u64::from(last),
                blocks: 1
            }
        );
        c[8] = 2;
        assert_eq!(
            decode(&c, Some(&DISK)),
            Command::Check(Sense::LBA_OUT_OF_RANGE)
        );
        // An LBA that overflows with its length.
        let mut c = [0u8; 16];
        c[0] = 0x88;
        c[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        c[13] = 2;
        assert_eq!(
            decode(&c, Some(&DISK)),
            Command::Check(Sense::LBA_OUT_OF_RANGE)
        );
        // More than the target takes.
        let c = [0x28, 0, 0, 0, 0, 0, 0, 0x02, 0x01, 0];
        assert_eq!(
            decode(&c, Some(&DISK)),
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        // A read-only disk refuses writes before anything else.
        assert_eq!(
            decode(&[0x2a, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0], Some(&RO)),
            Command::Check(Sense::WRITE_PROTECTED)
        );
        assert_eq!(
            decode(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], Some(&RO)),
            Command::Read { lba: 0, blocks: 1 }
        );
    }

    #[test]
    fn the_rest_of_what_linux_sends() {
        assert_eq!(decode(&[0; 6], Some(&DISK)), Command::Good);
        assert_eq!(
            decode(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], Some(&DISK)),
            Command::Flush
        );
        let mut c = [0u8; 16];
        c[0] = 0x91;
        assert_eq!(decode(&c, Some(&DISK)), Command::Flush);
        let mut rl = [0u8; 12];
        rl[0] = 0xa0;
        rl[9] = 32;
        let d = data(decode(&rl, Some(&DISK)));
        assert_eq!((be32(&d[0..4]), d.len()), (8, 16));
        rl[9] = 8;
        assert_eq!(
            decode(&rl, Some(&DISK)),
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        let d = data(decode(&[0x03, 0, 0, 0, 18, 0], Some(&DISK)));
        assert_eq!((d[0], d[2]), (0x70, 0));
        // WRITE SAME, UNMAP, ATA PASS-THROUGH.
        for opcode in [0x41u8, 0x42, 0x85, 0xa1, 0x93] {
            let mut c = [0u8; 16];
            c[0] = opcode;
            assert_eq!(
                decode(&c, Some(&DISK)),
                Command::Check(Sense::ILLEGAL_REQUEST_OPCODE),
                "{opcode:#x}"
            );
        }
        assert_eq!(
            decode(&[0x28, 0, 0], Some(&DISK)),
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            decode(&[], Some(&DISK)),
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            decode(&[0xc0; 16], Some(&DISK)),
            Command::Check(Sense::ILLEGAL_REQUEST_OPCODE)
        );
    }

    #[test]
    fn no_lun_is_reported_as_such() {
        let d = data(decode(&[0x12, 0, 0, 0, 36, 0], None));
        assert_eq!(d[0], 0x7f);
        let mut rl = [0u8; 12];
        rl[0] = 0xa0;
        rl[9] = 16;
        assert_eq!(be32(&data(decode(&rl, None))[0..4]), 0);
        assert_eq!(
            decode(&[0; 6], None),
            Command::Check(Sense::LUN_NOT_SUPPORTED)
        );
        assert_eq!(
            decode(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], None),
            Command::Check(Sense::LUN_NOT_SUPPORTED)
        );
        assert_eq!(data(decode(&[0x03, 0, 0, 0, 18, 0], None))[12], 0x25);
    }

    #[test]
    fn sense_is_fixed_format() {
        let s = Sense::WRITE_PROTECTED.fixed();
        assert_eq!((s[0], s[2], s[7], s[12], s[13]), (0x70, 7, 10, 0x27, 0));
    }

    #[test]
    fn arbitrary_cdbs_never_panic_and_stay_in_bounds() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..100_000 {
            let len = (next() % 17) as usize;
            let mut cdb = [0u8; 16];
            for b in cdb.iter_mut() {
                *b = next() as u8;
            }
            // Mostly commands Linux uses, so that the bodies are reached.
            if next() % 2 == 0 {
                cdb[0] = [
                    0x08, 0x0a, 0x12, 0x1a, 0x25, 0x28, 0x2a, 0x5a, 0x88, 0x8a, 0x9e, 0xa0, 0xa8,
                    0xaa,
                ][(next() % 14) as usize];
            }
            let disk = DiskInfo {
                sectors: next() % (1 << 24),
                read_only: next() % 2 == 0,
            };
            let lun = (next() % 8 != 0).then_some(&disk);
            match decode(&cdb[..len], lun) {
                Command::Read { lba, blocks } | Command::Write { lba, blocks } => {
                    assert!(blocks <= MAX_TRANSFER_BLOCKS && blocks > 0);
                    assert!(lba + u64::from(blocks) <= disk.sectors);
                    assert!(lun.is_some());
                }
                Command::DataIn(d) => assert!(d.len() <= REPLY_MAX),
                _ => {}
            }
        }
    }
}
