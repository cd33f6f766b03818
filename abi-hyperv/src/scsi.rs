//! A SCSI direct-access disk (SPC-4/SBC-3, as Hyper-V's virtual disk answers): the CDB is
//! decoded and checked here, and the caller (storvsc) moves the data and does the I/O.
//!
//! Linux's probe reads INQUIRY (standard, then the VPD pages listed in page 0), REPORT LUNS,
//! READ CAPACITY(16) (the version byte says SPC-3), MODE SENSE for the caching page (WCE = 1,
//! so it sends SYNCHRONIZE CACHE, which the caller turns into a volume flush) and the write
//! protect bit. Anything else is CHECK CONDITION with sense, never a silent success.

use virt::block::DiskInfo;

pub const BLOCK: u32 = 512;
/// The largest READ/WRITE this target takes (512 KiB), as VPD page 0xB0 says: what one NVMe
/// command moves on QEMU's controller (its MDTS), so that a guest's large transfer costs one
/// command rather than two.
pub const MAX_TRANSFER_BLOCKS: u32 = 1024;
/// Bytes a command's reply may have (the largest, a VPD page, is 64).
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
    /// FAILED WRITE PROTECT, what a thin-provisioned disk reports when its pool runs out.
    /// Linux's midlayer turns exactly this one into ENOSPC without retrying; a MEDIUM ERROR
    /// (3/0x0C/xx) would read as a failing disk and be retried.
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
    /// GOOD, and these bytes (never empty) go to the initiator, already cut to the CDB's
    /// allocation length; the caller cuts them further to the request's transfer length.
    DataIn(Reply),
    /// Read `blocks` (1 to [`MAX_TRANSFER_BLOCKS`], all on the disk) from `lba` into the
    /// initiator's buffer.
    Read { lba: u64, blocks: u32 },
    /// Write `blocks` (as for `Read`) at `lba` from the initiator's buffer.
    Write { lba: u64, blocks: u32 },
    /// SYNCHRONIZE CACHE: every completed write is made durable before GOOD.
    Flush,
    /// CHECK CONDITION with this sense; nothing moves.
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

/// `bytes` cut to `alloc`; an allocation length of 0 is not an error, just GOOD with no data.
fn reply(bytes: &[u8], alloc: usize) -> Command {
    let mut r = Reply::new();
    let _ = r.extend_from_slice(&bytes[..bytes.len().min(alloc).min(REPLY_MAX)]);
    if r.is_empty() {
        Command::Good
    } else {
        Command::DataIn(r)
    }
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
        op::MODE_SENSE_6 => mode_sense(cdb, usize::from(cdb[4]), false, disk),
        op::MODE_SENSE_10 => mode_sense(cdb, usize::from(be16(&cdb[7..9])), true, disk),
        op::READ_6 | op::WRITE_6 => {
            let lba = u64::from(be32(&cdb[0..4]) & 0x1f_ffff);
            // A length of 0 means 256 blocks in the 6-byte commands.
            let blocks = match cdb[4] {
                0 => 256,
                n => u32::from(n),
            };
            rw(opcode == op::WRITE_6, 0, lba, blocks, disk)
        }
        op::READ_10 | op::WRITE_10 | op::READ_12 | op::WRITE_12 | op::READ_16 | op::WRITE_16 => {
            let (lba, blocks) = extent(cdb);
            let write = matches!(opcode, op::WRITE_10 | op::WRITE_12 | op::WRITE_16);
            rw(write, cdb[1], lba, blocks, disk)
        }
        // Plain VERIFY asks that the blocks be readable, and a volume has no medium to scrub,
        // so the range check is all of it. Comparing them with the initiator's data (BYTCHK)
        // is not implemented, and is refused rather than answered GOOD unchecked.
        op::VERIFY_10 | op::VERIFY_16 if cdb[1] & 0x06 != 0 => {
            Command::Check(Sense::INVALID_FIELD_IN_CDB)
        }
        op::VERIFY_10 | op::VERIFY_16 => {
            let (lba, blocks) = extent(cdb);
            in_range(lba, u64::from(blocks), disk)
        }
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

/// LBA and transfer length of the 10, 12 and 16-byte READ, WRITE and VERIFY, which all place
/// them alike for their size.
fn extent(cdb: &[u8]) -> (u64, u32) {
    match cdb.len() {
        10 => (u64::from(be32(&cdb[2..6])), u32::from(be16(&cdb[7..9]))),
        12 => (u64::from(be32(&cdb[2..6])), be32(&cdb[6..10])),
        _ => (be64(&cdb[2..10]), be32(&cdb[10..14])),
    }
}

fn in_range(lba: u64, blocks: u64, disk: &DiskInfo) -> Command {
    match lba.checked_add(blocks) {
        Some(end) if end <= disk.sectors => Command::Good,
        _ => Command::Check(Sense::LBA_OUT_OF_RANGE),
    }
}

/// `flags`: byte 1 of the 10/12/16-byte forms (0 for the 6-byte ones, which have no flags).
fn rw(write: bool, flags: u8, lba: u64, blocks: u32, disk: &DiskInfo) -> Command {
    if write && disk.read_only {
        return Command::Check(Sense::WRITE_PROTECTED);
    }
    // RDPROTECT/WRPROTECT ask for protection information, which this disk does not have
    // (READ CAPACITY(16) says PROT_EN 0): SBC has that refused rather than ignored. DPO is a
    // cache hint. FUA is accepted but gives no per-command durability: MODE SENSE says DPOFUA
    // 0, so Linux never sets it and orders durability with SYNCHRONIZE CACHE instead.
    if flags >> 5 != 0 || blocks > MAX_TRANSFER_BLOCKS {
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
fn mode_sense(cdb: &[u8], alloc: usize, ten: bool, disk: &DiskInfo) -> Command {
    let control = cdb[2] >> 6;
    let page = cdb[2] & 0x3f;
    if control == 3 {
        return Command::Check(Sense::SAVING_NOT_SUPPORTED);
    }
    // Neither page has subpages: subpage 0 is the page itself, 0xFF "all subpages" is the
    // same answer, and any other subpage does not exist.
    if !matches!(cdb[3], 0x00 | 0xff) {
        return Command::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    // The caching page, then the control page (all defaults, which is a valid one). Asked
    // what is changeable, every bit is 0: nothing is.
    let mut all = [0u8; 32];
    all[..2].copy_from_slice(&[0x08, 18]);
    all[2] = if control == 1 { 0 } else { 0x04 };
    all[20..22].copy_from_slice(&[0x0a, 10]);
    let pages = match page {
        0x08 => &all[..20],
        0x0a => &all[20..],
        0x3f => &all[..],
        _ => return Command::Check(Sense::INVALID_FIELD_IN_CDB),
    };
    let wp = if disk.read_only { 0x80 } else { 0 };
    let mut b = [0u8; 8 + 32];
    let header = if ten {
        b[..2].copy_from_slice(&((6 + pages.len()) as u16).to_be_bytes());
        b[3] = wp;
        8
    } else {
        b[0] = (3 + pages.len()) as u8;
        b[2] = wp;
        4
    };
    b[header..header + pages.len()].copy_from_slice(pages);
    reply(&b[..header + pages.len()], alloc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn info(sectors: u64, read_only: bool) -> DiskInfo {
        DiskInfo { sectors, read_only }
    }
    const DISK: DiskInfo = info(1 << 20, false);
    const RO: DiskInfo = info(1 << 20, true);
    const BAD: Command = Command::Check(Sense::INVALID_FIELD_IN_CDB);
    const RANGE: Command = Command::Check(Sense::LBA_OUT_OF_RANGE);
    const WP: Command = Command::Check(Sense::WRITE_PROTECTED);
    const NO_LUN: Command = Command::Check(Sense::LUN_NOT_SUPPORTED);
    const NO_OP: Command = Command::Check(Sense::ILLEGAL_REQUEST_OPCODE);

    /// A CDB of its group's length: the opcode, then `(index, value)` pairs, the rest zero.
    fn cdb(op: u8, set: &[(usize, u8)]) -> Vec<u8> {
        let mut c = vec![0u8; cdb_len(op).unwrap_or(16)];
        c[0] = op;
        set.iter().for_each(|&(i, v)| c[i] = v);
        c
    }

    fn at(disk: Option<&DiskInfo>, op: u8, set: &[(usize, u8)]) -> Command {
        decode(&cdb(op, set), disk)
    }

    fn go(op: u8, set: &[(usize, u8)]) -> Command {
        at(Some(&DISK), op, set)
    }

    fn data(c: Command) -> Vec<u8> {
        match c {
            Command::DataIn(d) => d.to_vec(),
            other => panic!("{other:?}"),
        }
    }

    fn get_at(disk: Option<&DiskInfo>, op: u8, set: &[(usize, u8)]) -> Vec<u8> {
        data(at(disk, op, set))
    }

    fn get(op: u8, set: &[(usize, u8)]) -> Vec<u8> {
        get_at(Some(&DISK), op, set)
    }

    fn vpd(page: u8, serial: &[u8]) -> Vec<u8> {
        let c = cdb(0x12, &[(1, 1), (2, page), (4, 255)]);
        data(decode_with(&c, Some(&DISK), serial))
    }

    #[test]
    fn standard_inquiry_names_a_queueing_spc3_disk() {
        let d = get(0x12, &[(4, 96)]);
        assert_eq!(d[..8], [0, 0, 5, 0x12, 31, 0, 0, 2]);
        assert_eq!(&d[8..], b"Janus   Virtual Disk    1.0 ");
        assert_eq!(get(0x12, &[(4, 5)]).len(), 5);
        assert_eq!(go(0x12, &[]), Command::Good, "allocation length 0");
        // A page code without EVPD; CmdDt.
        assert_eq!(go(0x12, &[(2, 0x80), (4, 36)]), BAD);
        assert_eq!(go(0x12, &[(1, 2), (4, 36)]), BAD);
    }

    #[test]
    fn vpd_pages_are_the_ones_page_zero_lists() {
        assert_eq!(vpd(0, b""), [0, 0, 0, 5, 0x00, 0x80, 0x83, 0xb0, 0xb1]);
        for p in VPD_PAGES {
            let d = vpd(p, b"S");
            assert_eq!((d[1], usize::from(be16(&d[2..4]))), (p, d.len() - 4));
        }
        let b0 = vpd(0xb0, b"");
        assert_eq!(be32(&b0[8..12]), MAX_TRANSFER_BLOCKS);
        assert_eq!(be32(&b0[20..24]), 0, "no UNMAP");
        assert_eq!(be16(&vpd(0xb1, b"")[4..6]), 1, "non-rotating");
        assert_eq!(&vpd(0x80, b"S42")[4..], b"S42");
        let c = cdb(0x12, &[(1, 1), (2, 0x80), (4, 255)]);
        assert_eq!(&data(decode(&c, Some(&DISK)))[4..], b"JANUS-DISK");
        // One T10 vendor id designator: ASCII, LUN association.
        assert_eq!(vpd(0x83, b"S42")[4..8], [2, 1, 0, 11]);
        assert_eq!(&vpd(0x83, b"S42")[8..], b"Janus   S42");
        // Long serials are cut to the page, never past it.
        assert_eq!(vpd(0x80, &[b'x'; 300]).len(), 64);
        assert_eq!(vpd(0x83, &[b'x'; 300]).len(), 64);
        assert_eq!(get(0x12, &[(1, 1), (2, 0xb0), (4, 6)]).len(), 6);
        // No logical block provisioning page.
        assert_eq!(go(0x12, &[(1, 1), (2, 0xb2), (4, 255)]), BAD);
    }

    #[test]
    fn capacity_in_both_sizes() {
        let d = get(0x25, &[]);
        assert_eq!((be32(&d[0..4]), be32(&d[4..8])), ((1 << 20) - 1, 512));
        let big = Some(&info(1 << 40, false));
        // Too large for READ CAPACITY(10), which says so with all ones.
        assert_eq!(get_at(big, 0x25, &[])[..4], [0xff; 4]);
        let d = get_at(big, 0x9e, &[(1, 0x10), (13, 32)]);
        assert_eq!((d.len(), be64(&d[0..8])), (32, (1 << 40) - 1));
        assert_eq!(be32(&d[8..12]), 512);
        assert_eq!((d[12], d[14]), (0, 0), "no protection, no provisioning");
        assert_eq!(get_at(big, 0x9e, &[(1, 0x10), (13, 12)]).len(), 12);
        assert_eq!(at(big, 0x9e, &[(1, 0x11), (13, 32)]), BAD);
    }

    #[test]
    fn mode_sense_says_write_cache_and_write_protect() {
        let d = get(0x1a, &[(2, 0x08), (4, 255)]);
        // No WP, no DPOFUA, no block descriptors; the caching page with WCE and not RCD.
        assert_eq!(d[..7], [23, 0, 0, 0, 0x08, 18, 0x04]);
        assert_eq!(d.len(), 24);
        let ro = Some(&RO);
        let d = get_at(ro, 0x1a, &[(1, 0x08), (2, 0x3f), (4, 255)]);
        assert_eq!(d[..5], [35, 0, 0x80, 0, 0x08]);
        assert_eq!((d[24], d.len()), (0x0a, 36));
        let d = get_at(ro, 0x5a, &[(2, 0x0a), (8, 255)]);
        assert_eq!(d[..10], [0, 18, 0, 0x80, 0, 0, 0, 0, 0x0a, 10]);
        assert_eq!(d.len(), 20);
        // Subpage 0xFF: the page and its subpages, of which there are none.
        let d = get(0x5a, &[(2, 0x08), (3, 0xff), (8, 255)]);
        assert_eq!((d[8], d[10]), (0x08, 0x04));
        // Nothing changeable; the defaults are the current values.
        assert_eq!(get(0x1a, &[(2, 0x48), (4, 255)])[6], 0);
        assert_eq!(get(0x1a, &[(2, 0x88), (4, 255)])[6], 4);
        let saved = Command::Check(Sense::SAVING_NOT_SUPPORTED);
        assert_eq!(go(0x1a, &[(2, 0xc8), (4, 255)]), saved);
        for (page, sub) in [(0x1c, 0), (0x00, 0), (0x08, 1), (0x3f, 1)] {
            assert_eq!(go(0x1a, &[(2, page), (3, sub), (4, 255)]), BAD);
        }
        assert_eq!(get(0x1a, &[(2, 0x3f), (4, 4)]), [35, 0, 0, 0]);
        assert_eq!(get(0x5a, &[(2, 0x3f), (8, 8)]).len(), 8);
    }

    #[test]
    fn reads_and_writes_in_every_size() {
        let rd = |lba, blocks| Command::Read { lba, blocks };
        let wr = |lba, blocks| Command::Write { lba, blocks };
        assert_eq!(go(0x08, &[(3, 7)]), rd(7, 256), "6-byte length 0 is 256");
        let top = [(1, 0xef), (2, 0xff), (3, 0xff), (4, 1)];
        assert_eq!(go(0x0a, &top), wr(0xf_ffff, 1), "21-bit LBA");
        assert_eq!(go(0x28, &[(4, 1), (8, 8)]), rd(256, 8));
        assert_eq!(go(0x2a, &[(1, 0x18), (5, 1), (8, 8)]), wr(1, 8), "DPO, FUA");
        assert_eq!(go(0xa8, &[(5, 2), (9, 16)]), rd(2, 16));
        assert_eq!(go(0xaa, &[(5, 2), (9, 16)]), wr(2, 16));
        assert_eq!(go(0x88, &[(9, 9), (13, 3)]), rd(9, 3));
        assert_eq!(go(0x8a, &[(9, 1), (12, 2)]), wr(1, 512));
        assert_eq!(transfer_bytes(&rd(0, 3)), 1536);
        // Zero blocks in the longer forms is no transfer.
        for op in [0x28, 0x2a, 0xa8, 0xaa, 0x88, 0x8a] {
            assert_eq!(go(op, &[(1, 0x08)]), Command::Good, "{op:#x}");
        }
        // The last block, one past it, an LBA past 2^32 and one that wraps with its length.
        let last = [(3, 0x0f), (4, 0xff), (5, 0xff), (8, 1)];
        assert_eq!(go(0x28, &last), rd(0xf_ffff, 1));
        assert_eq!(go(0x28, &[(3, 0x0f), (4, 0xff), (5, 0xff), (8, 2)]), RANGE);
        assert_eq!(go(0x08, &[(1, 0x10)]), RANGE);
        assert_eq!(go(0x8a, &[(5, 1), (13, 3)]), RANGE);
        let mut c = cdb(0x88, &[(13, 2)]);
        c[2..10].fill(0xff);
        assert_eq!(decode(&c, Some(&DISK)), RANGE);
        // More than the target takes; protection information it does not have.
        let [.., hi, lo] = (MAX_TRANSFER_BLOCKS + 1).to_be_bytes();
        assert_eq!(go(0x28, &[(7, hi), (8, lo)]), BAD);
        assert_eq!(go(0xa8, &[(8, hi), (9, lo)]), BAD);
        let [.., hi, lo] = MAX_TRANSFER_BLOCKS.to_be_bytes();
        assert_eq!(go(0x28, &[(7, hi), (8, lo)]), rd(0, MAX_TRANSFER_BLOCKS));
        assert_eq!(go(0x88, &[(1, 0x20), (13, 1)]), BAD);
        // A read-only disk refuses writes before anything else, and still reads.
        let ro = Some(&RO);
        assert_eq!(at(ro, 0x2a, &[(2, 0xff), (7, 0xff), (8, 0xff)]), WP);
        assert_eq!(at(ro, 0x0a, &[]), WP);
        assert_eq!(at(ro, 0x8a, &[(1, 0xe0)]), WP);
        assert_eq!(at(ro, 0x28, &[(8, 1)]), rd(0, 1));
    }

    #[test]
    fn the_rest_of_what_linux_sends() {
        for op in [0x00, 0x1b, 0x1e] {
            assert_eq!(go(op, &[(4, 1)]), Command::Good, "{op:#x}");
        }
        assert_eq!(go(0x2f, &[(5, 1), (8, 1)]), Command::Good);
        assert_eq!(go(0x2f, &[(2, 1), (8, 1)]), RANGE);
        assert_eq!(go(0x8f, &[(9, 1), (13, 1)]), Command::Good);
        assert_eq!(go(0x8f, &[(5, 1), (13, 1)]), RANGE);
        assert_eq!(go(0x2f, &[(1, 0x02), (8, 1)]), BAD, "BYTCHK");
        assert_eq!(at(Some(&RO), 0x35, &[(1, 2)]), Command::Flush, "IMMED");
        assert_eq!(go(0x91, &[]), Command::Flush);
        let d = get(0xa0, &[(9, 32)]);
        assert_eq!(d, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(get(0xa0, &[(9, 16)]).len(), 16);
        assert_eq!(go(0xa0, &[(9, 15)]), BAD, "allocation length under 16");
        assert_eq!(get(0x03, &[(4, 18)]), Sense::NO_SENSE.fixed());
        assert_eq!(get(0x03, &[(4, 8)]).len(), 8);
        assert_eq!(go(0x03, &[]), Command::Good);
        // WRITE SAME(10/16), UNMAP, ATA PASS-THROUGH(12/16), REPORT SUPPORTED OPERATION
        // CODES, VERIFY(12), and the vendor-specific and reserved groups.
        let unsupported = [0x41, 0x93, 0x42, 0xa1, 0x85, 0xa3, 0xaf, 0xc0, 0xff, 0x60];
        for op in unsupported {
            assert_eq!(decode(&[op; 16], Some(&DISK)), NO_OP, "{op:#x}");
        }
        // One byte short of the group's length.
        for op in [0x00, 0x12, 0x28, 0x25, 0x5a, 0x88, 0x9e, 0xa0, 0xa8] {
            let c = cdb(op, &[]);
            assert_eq!(decode(&c[..c.len() - 1], Some(&DISK)), BAD, "{op:#x}");
            assert_eq!(decode(&c[..c.len() - 1], None), BAD, "{op:#x}");
        }
        assert_eq!(decode(&[], Some(&DISK)), BAD);
    }

    #[test]
    fn no_lun_is_reported_as_such() {
        let d = get_at(None, 0x12, &[(4, 96)]);
        assert_eq!((d[0], d.len()), (0x7f, 36));
        assert_eq!(get_at(None, 0xa0, &[(9, 16)]), [0; 8], "an empty list");
        assert_eq!(at(None, 0xa0, &[(9, 8)]), BAD);
        let sense = get_at(None, 0x03, &[(4, 18)]);
        assert_eq!(sense, Sense::LUN_NOT_SUPPORTED.fixed());
        assert_eq!(at(None, 0x00, &[]), NO_LUN);
        assert_eq!(at(None, 0x28, &[(8, 1)]), NO_LUN);
        assert_eq!(at(None, 0x12, &[(1, 1), (4, 96)]), NO_LUN);
        assert_eq!(at(None, 0x35, &[]), NO_LUN);
    }

    #[test]
    fn sense_is_fixed_format() {
        let s = Sense::WRITE_PROTECTED.fixed();
        assert_eq!((s[0], s[2], s[7], s[12], s[13]), (0x70, 7, 10, 0x27, 0));
        assert_eq!(Sense::NO_SPACE.fixed()[12..14], [0x27, 0x07]);
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
        // Mostly commands Linux uses, so that their bodies are reached.
        let common = [
            3, 8, 10, 0x12, 0x1a, 0x25, 0x28, 0x2a, 0x2f, 0x5a, 0x88, 0x9e,
        ];
        for _ in 0..100_000 {
            let len = (next() % 17) as usize;
            let mut cdb = [0u8; 16];
            cdb.iter_mut().for_each(|b| *b = next() as u8);
            if next() % 2 == 0 {
                cdb[0] = common[next() as usize % common.len()];
            }
            // Small disks too, so that the range checks bite.
            let disk = info(next() >> (next() % 64), next() % 2 == 0);
            let lun = (next() % 8 != 0).then_some(&disk);
            match decode(&cdb[..len], lun) {
                Command::Read { lba, blocks } | Command::Write { lba, blocks } => {
                    assert!(lun.is_some() && blocks > 0 && blocks <= MAX_TRANSFER_BLOCKS);
                    let end = lba.checked_add(u64::from(blocks));
                    assert!(end.is_some_and(|e| e <= disk.sectors));
                }
                Command::DataIn(d) => assert!(!d.is_empty() && d.len() <= REPLY_MAX),
                _ => {}
            }
        }
    }
}
