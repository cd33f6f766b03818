//! NVM command set I/O commands (NVMe 1.4 §6): Flush, Write, Read, Write Zeroes.

use super::prp::Prps;
use super::queue::{Command, Status};
use super::{Controller, Env, MAX_TRANSFER, Outcome};
use virt::block::{HostPiece, MAX_PIECES, SECTOR, VolumeError, in_range};

const FLUSH: u8 = 0x00;
const WRITE: u8 = 0x01;
const READ: u8 = 0x02;
const WRITE_ZEROES: u8 = 0x08;

const NSID: u32 = 1;
const ALL_NAMESPACES: u32 = 0xFFFF_FFFF;
/// CDW12 Force Unit Access.
const FUA: u32 = 1 << 30;

impl Controller {
    pub(super) fn io(&mut self, cmd: &Command, env: &mut dyn Env) -> Outcome {
        if cmd.fuse_or_sgl() {
            return Outcome::from(Err(Status::INVALID_FIELD));
        }
        let r = match cmd.opcode() {
            // VWC advertises that a flush of every namespace is understood.
            FLUSH if matches!(cmd.nsid(), NSID | ALL_NAMESPACES) => flush(env),
            WRITE | READ | WRITE_ZEROES | FLUSH if cmd.nsid() != NSID => {
                Err(Status::INVALID_NAMESPACE)
            }
            WRITE | READ => self.read_write(cmd, env),
            WRITE_ZEROES => self.write_zeroes(cmd, env),
            _ => Err(Status::INVALID_OPCODE),
        };
        Outcome::from(r.map(|()| 0))
    }

    /// SLBA and the number of blocks, checked against the namespace.
    fn range(&self, cmd: &Command, write: bool) -> Result<(u64, u64), Status> {
        let slba = u64::from(cmd.cdw10()) | u64::from(cmd.cdw11()) << 32;
        let blocks = u64::from(cmd.cdw12() & 0xffff) + 1;
        if slba
            .checked_add(blocks)
            .is_none_or(|end| end > self.cfg.sectors)
        {
            return Err(Status::LBA_OUT_OF_RANGE);
        }
        if write && self.cfg.read_only {
            return Err(Status::WRITE_PROTECTED);
        }
        Ok((slba, blocks))
    }

    /// One volume call for the whole transfer, straight between the disk and the guest's
    /// pages where the volume can, else through the buffer (MDTS keeps it inside).
    fn read_write(&mut self, cmd: &Command, env: &mut dyn Env) -> Result<(), Status> {
        let write = cmd.opcode() == WRITE;
        let (slba, blocks) = self.range(cmd, write)?;
        let len = (blocks * SECTOR) as usize;
        if len > MAX_TRANSFER {
            return Err(Status::INVALID_FIELD);
        }
        let prps = Prps::map(env.memory(), cmd.prp1(), cmd.prp2(), len)?;
        let buf = self.buf.get_mut(..len).ok_or(Status::INTERNAL_ERROR)?;
        let mut to = [HostPiece::default(); MAX_PIECES];
        let mut direct = false;
        if let Some(n) = prps.host_pieces(env.memory(), &mut to) {
            disk(env, write, &mut |v| {
                direct = v.direct(write, slba, &to[..n])?;
                Ok(())
            })?;
        }
        if write {
            if !direct {
                prps.gather(env.memory(), buf)?;
                disk(env, true, &mut |v| v.write(slba, buf))?;
            }
            self.counters.sectors_written += blocks;
            self.counters.writes += 1;
            let through = cmd.cdw12() & FUA != 0 || !self.features.write_cache;
            if through {
                flush(env)?;
            }
        } else {
            if !direct {
                disk(env, false, &mut |v| v.read(slba, buf))?;
                prps.scatter(env.memory(), buf)?;
            }
            self.counters.sectors_read += blocks;
            self.counters.reads += 1;
        }
        Ok(())
    }

    /// Zeroes in buffer-sized pieces: up to 65536 blocks, so at most 256 volume writes.
    fn write_zeroes(&mut self, cmd: &Command, env: &mut dyn Env) -> Result<(), Status> {
        let (mut lba, blocks) = self.range(cmd, true)?;
        let end = lba + blocks;
        let chunk = MAX_TRANSFER as u64 / SECTOR;
        self.buf.fill(0);
        while lba < end {
            let n = chunk.min(end - lba);
            let buf = self
                .buf
                .get(..(n * SECTOR) as usize)
                .ok_or(Status::INTERNAL_ERROR)?;
            if !in_range(self.cfg.sectors, lba, buf.len()) {
                return Err(Status::LBA_OUT_OF_RANGE);
            }
            disk(env, true, &mut |v| v.write(lba, buf))?;
            lba += n;
        }
        if cmd.cdw12() & FUA != 0 || !self.features.write_cache {
            flush(env)?;
        }
        Ok(())
    }
}

fn flush(env: &mut dyn Env) -> Result<(), Status> {
    disk(env, true, &mut |v| v.flush())
}

fn disk(
    env: &mut dyn Env,
    write: bool,
    io: &mut dyn FnMut(&mut dyn virt::block::Volume) -> Result<(), VolumeError>,
) -> Result<(), Status> {
    env.disk(io).map_err(|e| match e {
        VolumeError::OutOfRange => Status::LBA_OUT_OF_RANGE,
        VolumeError::ReadOnly => Status::WRITE_PROTECTED,
        VolumeError::NoSpace => Status::CAPACITY_EXCEEDED,
        VolumeError::Io if write => Status::WRITE_FAULT,
        VolumeError::Io => Status::UNRECOVERED_READ,
    })
}
