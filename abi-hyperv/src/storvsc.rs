//! The storage service behind a storvsc channel (Hyper-V's "storvsp"): the vstor
//! initialization sequence, and SCSI requests (SRBs) executed on the channel's disk.
//!
//! A request is a 64-byte `vstor_packet`, in-band or behind a GPA-direct page list that
//! describes the data buffer. Each request is answered by one completion packet of the same
//! transaction id carrying the updated `vstor_packet` (Linux copies at most 80 bytes of a
//! packet, so nothing longer may be sent). The data buffer's pages are checked against guest
//! RAM before anything moves; a transfer length the page list cannot hold is an invalid
//! request, not a partial one.

use crate::scsi::{self, Command, Sense};
use crate::vmbus::ring::{DESCRIPTOR, Descriptor, packet};
use virt::GuestMemory;
use virt::block::{DiskInfo, HostPiece, SECTOR, Volume, VolumeError, host_pieces, transfer_direct};
use virt::personality::Host;

/// `vstor_packet`: `{ operation, flags, status, payload[52] }`.
pub const VSTOR_PACKET: usize = 64;
/// A completion: descriptor and `vstor_packet`.
pub const COMPLETION_LEN: usize = DESCRIPTOR + VSTOR_PACKET;
/// What QUERY_PROPERTIES announces, and the largest transfer the SCSI target takes.
pub const MAX_TRANSFER_BYTES: u32 = scsi::MAX_TRANSFER_BLOCKS * scsi::BLOCK;
/// Page numbers a data buffer may have: the largest transfer, not page aligned.
pub const MAX_PFNS: usize = (MAX_TRANSFER_BYTES as usize).div_ceil(4096) + 1;
/// The largest request packet: descriptor, the GPA-direct range header and its page numbers,
/// and the `vstor_packet`.
pub const MAX_REQUEST: usize = DESCRIPTOR + 16 + 8 * MAX_PFNS + VSTOR_PACKET;
/// Bytes moved between the guest and the disk per volume request.
const CHUNK: usize = 64 * 1024;

pub mod op {
    pub const COMPLETE_IO: u32 = 1;
    pub const EXECUTE_SRB: u32 = 3;
    pub const RESET_LUN: u32 = 4;
    pub const RESET_ADAPTER: u32 = 5;
    pub const RESET_BUS: u32 = 6;
    pub const BEGIN_INITIALIZATION: u32 = 7;
    pub const END_INITIALIZATION: u32 = 8;
    pub const QUERY_PROTOCOL_VERSION: u32 = 9;
    pub const QUERY_PROPERTIES: u32 = 10;
}

/// Protocol versions served: Windows 10, 8.1 and 8 hosts'. All three carry the full 52-byte
/// SRB, the only layout this host reads.
pub const VERSIONS: [u16; 3] = [0x0602, 0x0600, 0x0501];

const STATUS_SUCCESS: u32 = 0;
const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;
const STATUS_REVISION_MISMATCH: u32 = 0xC000_0059;
const STATUS_INVALID_DEVICE_STATE: u32 = 0xC000_0184;

/// `srb_status` values.
pub mod srb {
    pub const SUCCESS: u8 = 0x01;
    pub const ERROR: u8 = 0x04;
    pub const INVALID_REQUEST: u8 = 0x06;
    pub const AUTOSENSE_VALID: u8 = 0x80;
}
const SCSI_GOOD: u8 = 0;
const SCSI_CHECK_CONDITION: u8 = 2;
/// `data_in` of an SRB that reads (device to guest).
const READ_TYPE: u8 = 1;
const WRITE_TYPE: u8 = 0;

/// Offsets in the `vstor_packet`, of its SRB (`vmscsi_request`, at 12) and of the SRB's
/// fields.
mod at {
    pub const OPERATION: usize = 0;
    pub const STATUS: usize = 8;
    pub const PAYLOAD: usize = 12;
    pub const SRB_STATUS: usize = PAYLOAD + 2;
    pub const SCSI_STATUS: usize = PAYLOAD + 3;
    pub const PATH_ID: usize = PAYLOAD + 5;
    pub const TARGET_ID: usize = PAYLOAD + 6;
    pub const LUN: usize = PAYLOAD + 7;
    pub const CDB_LENGTH: usize = PAYLOAD + 8;
    pub const SENSE_INFO_LENGTH: usize = PAYLOAD + 9;
    pub const DATA_IN: usize = PAYLOAD + 10;
    pub const TRANSFER_LENGTH: usize = PAYLOAD + 12;
    /// The CDB on the way in, the sense data on the way out.
    pub const CDB: usize = PAYLOAD + 16;
    pub const CDB_MAX: usize = 16;
    pub const SENSE_MAX: usize = 20;
}

/// The vstor state of one open channel.
#[derive(Clone, Copy, Debug, Default)]
pub struct Session {
    pub version: Option<u16>,
    /// END_INITIALIZATION seen: SRBs are served.
    pub ready: bool,
}

/// The disk a channel serves: target 0, LUN 0 of its controller.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub disk: u32,
    pub info: DiskInfo,
}

/// The completion of a packet the host will not read (too long for it), if one was asked for.
pub fn refuse(desc: &Descriptor) -> Option<[u8; COMPLETION_LEN]> {
    let mut v = [0u8; VSTOR_PACKET];
    put_u32(&mut v, at::OPERATION, op::COMPLETE_IO);
    put_u32(&mut v, at::STATUS, STATUS_INVALID_PARAMETER);
    completion(desc, &v)
}

fn completion(desc: &Descriptor, v: &[u8; VSTOR_PACKET]) -> Option<[u8; COMPLETION_LEN]> {
    if desc.flags & packet::COMPLETION_REQUESTED == 0 {
        return None;
    }
    let mut out = [0u8; COMPLETION_LEN];
    let d = Descriptor {
        kind: packet::COMP,
        offset: DESCRIPTOR,
        len: COMPLETION_LEN,
        flags: 0,
        trans_id: desc.trans_id,
    };
    out[..DESCRIPTOR].copy_from_slice(&d.encode());
    out[DESCRIPTOR..].copy_from_slice(v);
    Some(out)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(d) = b.get_mut(at..at + 4) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// Handles one packet from the guest (`p` is the host's copy, descriptor included) and
/// returns the completion to queue, if the guest asked for one.
pub fn handle(
    s: &mut Session,
    desc: &Descriptor,
    p: &[u8],
    t: &Target,
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
) -> Option<[u8; COMPLETION_LEN]> {
    // Completions of host packets: this host sends none that ask for one.
    if desc.kind == packet::COMP {
        return None;
    }
    let mut v = [0u8; VSTOR_PACKET];
    let body = p.get(desc.offset..).unwrap_or(&[]);
    let n = body.len().min(VSTOR_PACKET);
    v[..n].copy_from_slice(&body[..n]);
    if !matches!(
        desc.kind,
        packet::DATA_INBAND | packet::DATA_USING_GPA_DIRECT
    ) || body.len() < VSTOR_PACKET
    {
        return refuse(desc);
    }
    let operation = u32_at(&v, at::OPERATION);
    let status = match operation {
        op::BEGIN_INITIALIZATION => {
            *s = Session::default();
            STATUS_SUCCESS
        }
        op::QUERY_PROTOCOL_VERSION => {
            let asked = u16::from_le_bytes([v[at::PAYLOAD], v[at::PAYLOAD + 1]]);
            if VERSIONS.contains(&asked) {
                s.version = Some(asked);
                STATUS_SUCCESS
            } else {
                STATUS_REVISION_MISMATCH
            }
        }
        op::QUERY_PROPERTIES => {
            // No sub-channels (max_channel_cnt 0, flags 0); the largest transfer.
            v[at::PAYLOAD..].fill(0);
            put_u32(&mut v, at::PAYLOAD + 12, MAX_TRANSFER_BYTES);
            STATUS_SUCCESS
        }
        op::END_INITIALIZATION if s.version.is_some() => {
            s.ready = true;
            STATUS_SUCCESS
        }
        // Nothing is ever in flight: every request completes before the next is read.
        op::RESET_LUN | op::RESET_ADAPTER | op::RESET_BUS => STATUS_SUCCESS,
        op::EXECUTE_SRB if s.ready => {
            execute(&mut v, desc, p, t, mem, host);
            STATUS_SUCCESS
        }
        op::END_INITIALIZATION | op::EXECUTE_SRB => STATUS_INVALID_DEVICE_STATE,
        _ => STATUS_INVALID_PARAMETER,
    };
    put_u32(&mut v, at::OPERATION, op::COMPLETE_IO);
    put_u32(&mut v, at::STATUS, status);
    completion(desc, &v)
}

/// The guest's data buffer: `len` bytes from `offset` in the first of `pfns`.
struct Buffer {
    offset: u64,
    len: u64,
    pfns: heapless::Vec<u64, MAX_PFNS>,
}

impl Buffer {
    /// The GPA-direct range after the descriptor: `{ u32 reserved, u32 rangecount, { u32 len,
    /// u32 offset, u64 pfn[] } }`. One range, its pages all within the packet's header and
    /// guest RAM, and enough of them for its length.
    fn parse(desc: &Descriptor, p: &[u8], ram: u64) -> Option<Buffer> {
        let header = p.get(DESCRIPTOR..desc.offset)?;
        if u32_at(header, 4) != 1 {
            return None;
        }
        let len = u64::from(u32_at(header, 8));
        let offset = u64::from(u32_at(header, 12));
        let listed = header.get(16..)?.len() / 8;
        let needed = (offset + len).div_ceil(4096) as usize;
        if offset >= 4096 || needed > listed || needed > MAX_PFNS {
            return None;
        }
        let mut pfns = heapless::Vec::new();
        for c in header[16..16 + 8 * needed].chunks_exact(8) {
            let pfn = u64::from_le_bytes(c.try_into().ok()?);
            let end = pfn.checked_mul(4096)?.checked_add(4096)?;
            if end > ram {
                return None;
            }
            pfns.push(pfn).ok()?;
        }
        Some(Buffer { offset, len, pfns })
    }

    /// Copies between `data` and the buffer from byte `at` on.
    fn copy(&self, mem: &dyn GuestMemory, at: u64, data: &mut [u8], to_guest: bool) -> bool {
        let mut done = 0usize;
        while done < data.len() {
            let pos = self.offset + at + done as u64;
            let Some(&pfn) = self.pfns.get((pos / 4096) as usize) else {
                return false;
            };
            let within = pos % 4096;
            let n = ((4096 - within) as usize).min(data.len() - done);
            let gpa = pfn * 4096 + within;
            let part = &mut data[done..done + n];
            let ok = if to_guest {
                mem.write(gpa, part)
            } else {
                mem.read(gpa, part)
            };
            if ok.is_err() {
                return false;
            }
            done += n;
        }
        true
    }
}

/// Runs the SRB in `v` and writes its outcome back into `v`.
fn execute(
    v: &mut [u8; VSTOR_PACKET],
    desc: &Descriptor,
    p: &[u8],
    t: &Target,
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
) {
    let cdb_len = usize::from(v[at::CDB_LENGTH]).min(at::CDB_MAX);
    let mut cdb = [0u8; at::CDB_MAX];
    cdb[..cdb_len].copy_from_slice(&v[at::CDB..at::CDB + cdb_len]);
    let transfer = u64::from(u32_at(v, at::TRANSFER_LENGTH));
    let addressed = v[at::PATH_ID] == 0 && v[at::TARGET_ID] == 0 && v[at::LUN] == 0;
    let lun = addressed.then_some(&t.info);
    let sense_room = usize::from(v[at::SENSE_INFO_LENGTH]).min(at::SENSE_MAX);
    let data_in = v[at::DATA_IN];

    let buffer = match desc.kind {
        packet::DATA_USING_GPA_DIRECT => match Buffer::parse(desc, p, mem.size()) {
            Some(b) if b.len >= transfer => Some(b),
            _ => return finish(v, srb::INVALID_REQUEST, SCSI_GOOD, 0, None, sense_room),
        },
        _ if transfer != 0 => {
            return finish(v, srb::INVALID_REQUEST, SCSI_GOOD, 0, None, sense_room);
        }
        _ => None,
    };
    let cmd = scsi::decode(&cdb[..cdb_len], lun);
    let moved = |bytes: u64| bytes <= transfer && buffer.is_some();
    let outcome: Result<u64, Sense> = match cmd {
        Command::Good => Ok(0),
        Command::DataIn(data) => {
            let n = (data.len() as u64).min(transfer) as usize;
            if n == 0 {
                Ok(0)
            } else if data_in != READ_TYPE {
                return finish(v, srb::INVALID_REQUEST, SCSI_GOOD, 0, None, sense_room);
            } else {
                let mut bytes = [0u8; 512];
                bytes[..n].copy_from_slice(&data[..n]);
                match &buffer {
                    Some(b) if b.copy(mem, 0, &mut bytes[..n], true) => Ok(n as u64),
                    _ => return finish(v, srb::INVALID_REQUEST, SCSI_GOOD, 0, None, sense_room),
                }
            }
        }
        Command::Read { lba, blocks } | Command::Write { lba, blocks } => {
            let write = matches!(cmd, Command::Write { .. });
            let bytes = u64::from(blocks) * SECTOR;
            let direction = if write { WRITE_TYPE } else { READ_TYPE };
            match &buffer {
                Some(b) if moved(bytes) && data_in == direction => {
                    transfer_blocks(b, lba, bytes, write, t.disk, mem, host)
                }
                _ if bytes == 0 => Ok(0),
                _ => return finish(v, srb::INVALID_REQUEST, SCSI_GOOD, 0, None, sense_room),
            }
        }
        Command::Flush => match host.disk_io(t.disk, &mut |vol| vol.flush()) {
            Ok(()) => Ok(0),
            Err(e) => Err(sense_for(e, true)),
        },
        Command::Check(sense) => Err(sense),
    };
    match outcome {
        Ok(n) => finish(v, srb::SUCCESS, SCSI_GOOD, n, None, sense_room),
        Err(sense) => finish(
            v,
            srb::ERROR | srb::AUTOSENSE_VALID,
            SCSI_CHECK_CONDITION,
            0,
            Some(sense),
            sense_room,
        ),
    }
}

/// Moves the whole command straight between the disk and the guest's buffer, where the volume
/// can (one volume request, no copy by the hypervisor); `None` where it cannot, and the
/// command is served again a chunk at a time.
fn direct(
    write: bool,
    b: &Buffer,
    lba: u64,
    bytes: u64,
    disk: u32,
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
) -> Option<Result<(), VolumeError>> {
    let ranges = b.pfns.iter().enumerate().map_while(|(i, &pfn)| {
        let start = (i as u64 * 4096).max(b.offset);
        let end = ((i as u64 + 1) * 4096).min(b.offset + bytes);
        (start < end).then(|| (pfn * 4096 + start % 4096, end - start))
    });
    let mut to = [HostPiece::default(); MAX_PFNS];
    let n = host_pieces(mem, ranges, &mut to)?;
    transfer_direct(host, disk, write, lba, &to[..n])
}

/// Moves `bytes` between the disk at `lba` and the guest's buffer, a chunk per volume request.
fn transfer_blocks(
    b: &Buffer,
    lba: u64,
    bytes: u64,
    write: bool,
    disk: u32,
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
) -> Result<u64, Sense> {
    if let Some(r) = direct(write, b, lba, bytes, disk, mem, host) {
        return r.map(|()| bytes).map_err(|e| sense_for(e, write));
    }
    let mut chunk = [0u8; CHUNK];
    let mut done = 0u64;
    while done < bytes {
        let n = ((bytes - done) as usize).min(CHUNK);
        let data = &mut chunk[..n];
        let sector = lba + done / SECTOR;
        let r = if write {
            if !b.copy(mem, done, data, false) {
                return Err(scsi::Sense::INVALID_FIELD_IN_CDB);
            }
            host.disk_io(disk, &mut |vol: &mut dyn Volume| vol.write(sector, data))
        } else {
            host.disk_io(disk, &mut |vol: &mut dyn Volume| vol.read(sector, data))
                .and_then(|()| {
                    if b.copy(mem, done, data, true) {
                        Ok(())
                    } else {
                        Err(VolumeError::OutOfRange)
                    }
                })
        };
        r.map_err(|e| sense_for(e, write))?;
        done += n as u64;
    }
    Ok(done)
}

fn sense_for(e: VolumeError, write: bool) -> Sense {
    match e {
        VolumeError::ReadOnly => Sense::WRITE_PROTECTED,
        VolumeError::OutOfRange => Sense::LBA_OUT_OF_RANGE,
        VolumeError::NoSpace => Sense::NO_SPACE,
        VolumeError::Io if write => Sense::WRITE_ERROR,
        VolumeError::Io => Sense::MEDIUM_ERROR,
    }
}

/// Writes an SRB's outcome: statuses, bytes moved, and the sense data over the CDB.
fn finish(
    v: &mut [u8; VSTOR_PACKET],
    srb_status: u8,
    scsi_status: u8,
    moved: u64,
    sense: Option<Sense>,
    sense_room: usize,
) {
    v[at::SRB_STATUS] = srb_status;
    v[at::SCSI_STATUS] = scsi_status;
    put_u32(v, at::TRANSFER_LENGTH, moved as u32);
    v[at::CDB..at::CDB + at::SENSE_MAX].fill(0);
    match sense {
        Some(s) => {
            let fixed = s.fixed();
            let n = fixed.len().min(sense_room);
            v[at::CDB..at::CDB + n].copy_from_slice(&fixed[..n]);
            v[at::SENSE_INFO_LENGTH] = n as u8;
        }
        None => v[at::SENSE_INFO_LENGTH] = 0,
    }
}
