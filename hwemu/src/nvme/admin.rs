//! Admin commands (NVMe 1.4 §5).

use super::identify::{self, IDENTIFY_LEN};
use super::prp::Prps;
use super::queue::{self, CQ_ENTRY, Command, Cq, SQ_ENTRY, Sq, Status};
use super::{AERL, Controller, Env, MAX_TRANSFER, MQES, Outcome};

const DELETE_SQ: u8 = 0x00;
const CREATE_SQ: u8 = 0x01;
const GET_LOG_PAGE: u8 = 0x02;
const DELETE_CQ: u8 = 0x04;
const CREATE_CQ: u8 = 0x05;
const IDENTIFY: u8 = 0x06;
const ABORT: u8 = 0x08;
const SET_FEATURES: u8 = 0x09;
const GET_FEATURES: u8 = 0x0A;
const ASYNC_EVENT: u8 = 0x0C;

const FEAT_ARBITRATION: u8 = 0x01;
const FEAT_POWER: u8 = 0x02;
const FEAT_TEMPERATURE: u8 = 0x04;
const FEAT_WRITE_CACHE: u8 = 0x06;
const FEAT_QUEUES: u8 = 0x07;
const FEAT_COALESCING: u8 = 0x08;
const FEAT_VECTOR: u8 = 0x09;
const FEAT_ATOMICITY: u8 = 0x0A;
const FEAT_ASYNC_EVENTS: u8 = 0x0B;

/// The controller's ID in its subsystem (Identify Controller CNTLID).
const CNTLID: u16 = 1;

impl Controller {
    pub(super) fn admin(&mut self, cmd: &Command, env: &mut dyn Env) -> Outcome {
        if cmd.fuse_or_sgl() {
            return Outcome::from(Err(Status::INVALID_FIELD));
        }
        let r = match cmd.opcode() {
            DELETE_SQ => self.delete_sq(cmd),
            CREATE_SQ => self.create_sq(cmd, env),
            GET_LOG_PAGE => self.get_log_page(cmd, env),
            DELETE_CQ => self.delete_cq(cmd),
            CREATE_CQ => self.create_cq(cmd, env),
            IDENTIFY => self.identify(cmd, env),
            // Every command completed before its doorbell write returned: nothing to abort.
            // DW0 bit 0 set says the command was not aborted.
            ABORT => Ok(1),
            SET_FEATURES => self.set_features(cmd),
            GET_FEATURES => self.get_features(cmd),
            ASYNC_EVENT => {
                if self.aers > AERL {
                    Err(Status::AER_LIMIT_EXCEEDED)
                } else {
                    self.aers += 1;
                    return Outcome::Held;
                }
            }
            _ => Err(Status::INVALID_OPCODE),
        };
        Outcome::from(r)
    }

    /// QID and zero-based size of a Create command, checked against what this controller
    /// offers and what already exists in `table`.
    fn new_queue_id<T>(&self, cmd: &Command, table: &[Option<T>]) -> Result<(u16, u16), Status> {
        // CAP.CQR: queues must be physically contiguous.
        if cmd.cdw11() & 1 == 0 {
            return Err(Status::INVALID_FIELD);
        }
        let qid = cmd.cdw10() as u16;
        if qid == 0
            || qid > self.io_queues
            || table.get(usize::from(qid)).is_none_or(Option::is_some)
        {
            return Err(Status::INVALID_QUEUE_ID);
        }
        let qsize = (cmd.cdw10() >> 16) as u16;
        if qsize == 0 || qsize > MQES {
            return Err(Status::INVALID_QUEUE_SIZE);
        }
        Ok((qid, qsize + 1))
    }

    fn queue_base(
        cmd: &Command,
        entries: u16,
        entry: u64,
        env: &mut dyn Env,
    ) -> Result<u64, Status> {
        let base = cmd.prp1();
        if !base.is_multiple_of(4096) {
            return Err(Status::INVALID_PRP_OFFSET);
        }
        if !queue::fits(env.memory().size(), base, entries, entry) {
            return Err(Status::INVALID_FIELD);
        }
        Ok(base)
    }

    fn create_cq(&mut self, cmd: &Command, env: &mut dyn Env) -> Result<u32, Status> {
        let (qid, entries) = self.new_queue_id(cmd, &self.cqs)?;
        let ien = cmd.cdw11() & 2 != 0;
        let iv = (cmd.cdw11() >> 16) as u16;
        if ien && iv >= self.vectors() {
            return Err(Status::INVALID_VECTOR);
        }
        let base = Self::queue_base(cmd, entries, CQ_ENTRY, env)?;
        if let Some(slot) = self.cqs.get_mut(usize::from(qid)) {
            *slot = Some(Cq::new(base, entries, ien, if ien { iv } else { 0 }));
        }
        Ok(0)
    }

    fn create_sq(&mut self, cmd: &Command, env: &mut dyn Env) -> Result<u32, Status> {
        let (qid, entries) = self.new_queue_id(cmd, &self.sqs)?;
        let cqid = (cmd.cdw11() >> 16) as u16;
        if cqid == 0 || self.cq(cqid).is_none() {
            return Err(Status::CQ_INVALID);
        }
        let base = Self::queue_base(cmd, entries, SQ_ENTRY, env)?;
        if let Some(slot) = self.sqs.get_mut(usize::from(qid)) {
            *slot = Some(Sq::new(base, entries, cqid));
        }
        Ok(0)
    }

    /// Commands still queued in the SQ go with it: none is in flight.
    fn delete_sq(&mut self, cmd: &Command) -> Result<u32, Status> {
        let qid = cmd.cdw10() as u16;
        match self.sqs.get_mut(usize::from(qid)) {
            Some(slot @ Some(_)) if qid != 0 => {
                *slot = None;
                Ok(0)
            }
            _ => Err(Status::INVALID_QUEUE_ID),
        }
    }

    fn delete_cq(&mut self, cmd: &Command) -> Result<u32, Status> {
        let qid = cmd.cdw10() as u16;
        if qid == 0 || self.cq(qid).is_none() {
            return Err(Status::INVALID_QUEUE_ID);
        }
        if self.sqs.iter().flatten().any(|s| s.cqid == qid) {
            return Err(Status::INVALID_QUEUE_DELETION);
        }
        if let Some(slot) = self.cqs.get_mut(usize::from(qid)) {
            *slot = None;
        }
        Ok(0)
    }

    fn identify(&mut self, cmd: &Command, env: &mut dyn Env) -> Result<u32, Status> {
        let cns = cmd.cdw10() as u8;
        let nsid = cmd.nsid();
        let buf = self
            .buf
            .get_mut(..IDENTIFY_LEN)
            .ok_or(Status::INTERNAL_ERROR)?;
        buf.fill(0);
        match cns {
            0x00 | 0x03 if nsid != 1 => return Err(Status::INVALID_NAMESPACE),
            0x00 => identify::namespace(buf, &self.cfg),
            0x01 => identify::controller(buf, &self.cfg, CNTLID),
            0x02 if nsid >= 0xFFFF_FFFE => return Err(Status::INVALID_NAMESPACE),
            0x02 => identify::active_list(buf, nsid),
            0x03 => identify::descriptors(buf, &self.cfg),
            _ => return Err(Status::INVALID_FIELD),
        }
        let mem = env.memory();
        Prps::map(mem, cmd.prp1(), cmd.prp2(), IDENTIFY_LEN)?.scatter(mem, buf)?;
        Ok(0)
    }

    fn get_log_page(&mut self, cmd: &Command, env: &mut dyn Env) -> Result<u32, Status> {
        let lid = cmd.cdw10() as u8;
        let numd = u64::from(cmd.cdw10() >> 16) | u64::from(cmd.cdw11() & 0xffff) << 16;
        let len = (numd + 1) * 4;
        let offset = u64::from(cmd.cdw12()) | u64::from(cmd.cdw13()) << 32;
        // No per-namespace logs (LPA bit 0 clear): only the controller-wide ones.
        if !matches!(cmd.nsid(), 0 | 1 | 0xFFFF_FFFF) {
            return Err(Status::INVALID_NAMESPACE);
        }
        if len > MAX_TRANSFER as u64 || !offset.is_multiple_of(4) {
            return Err(Status::INVALID_FIELD);
        }
        let len = len as usize;
        let mut page = [0u8; identify::SMART_LOG_LEN];
        let size = identify::log(&mut page, lid, &self.cfg, &self.counters)
            .ok_or(Status::INVALID_LOG_PAGE)?;
        let start = usize::try_from(offset)
            .ok()
            .filter(|&o| o < size)
            .ok_or(Status::INVALID_FIELD)?;
        let buf = self.buf.get_mut(..len).ok_or(Status::INTERNAL_ERROR)?;
        buf.fill(0);
        // Past the log's end reads as zeroes.
        let n = (size - start).min(len);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), page.get(start..start + n)) {
            dst.copy_from_slice(src);
        }
        let mem = env.memory();
        Prps::map(mem, cmd.prp1(), cmd.prp2(), len)?.scatter(mem, buf)?;
        Ok(0)
    }

    fn set_features(&mut self, cmd: &Command) -> Result<u32, Status> {
        if cmd.cdw10() >> 31 != 0 {
            return Err(Status::NOT_SAVEABLE);
        }
        let v = cmd.cdw11();
        let f = &mut self.features;
        match cmd.cdw10() as u8 {
            FEAT_ARBITRATION => f.arbitration = v,
            // Power state 0 is the only one (NPSS = 0).
            FEAT_POWER if v & 0x1f != 0 => return Err(Status::INVALID_FIELD),
            FEAT_POWER => f.power = v & 0xff,
            FEAT_TEMPERATURE => {
                let threshold = v as u16;
                match (v >> 16 & 0xf, v >> 20 & 3) {
                    (0, 0) => f.temp_over = threshold,
                    (0, 1) => f.temp_under = threshold,
                    _ => return Err(Status::INVALID_FIELD),
                }
            }
            FEAT_WRITE_CACHE => f.write_cache = v & 1 != 0,
            FEAT_QUEUES => {
                if v & 0xffff == 0xffff || v >> 16 == 0xffff {
                    return Err(Status::INVALID_FIELD);
                }
                if self.sqs.iter().skip(1).any(Option::is_some)
                    || self.cqs.iter().skip(1).any(Option::is_some)
                {
                    return Err(Status::COMMAND_SEQUENCE_ERROR);
                }
                return Ok(self.queues_value());
            }
            FEAT_COALESCING => f.coalescing = v & 0xffff,
            FEAT_VECTOR => {
                let iv = v as u16;
                if iv > self.io_queues {
                    return Err(Status::INVALID_FIELD);
                }
                let b = 1u128 << iv;
                if v & 1 << 16 != 0 {
                    f.coalescing_disabled |= b;
                } else {
                    f.coalescing_disabled &= !b;
                }
            }
            FEAT_ATOMICITY => f.write_atomicity = v & 1,
            FEAT_ASYNC_EVENTS => f.async_events = v,
            _ => return Err(Status::INVALID_FIELD),
        }
        Ok(0)
    }

    fn get_features(&mut self, cmd: &Command) -> Result<u32, Status> {
        let fid = cmd.cdw10() as u8;
        let select = cmd.cdw10() >> 8 & 7;
        let defaults = super::Features::default();
        let f = match select {
            0 => &self.features,
            // Nothing is saveable: the saved value is the default.
            1 | 2 => &defaults,
            // Supported capabilities: changeable, neither saveable nor per namespace.
            3 if self.feature(fid, &defaults, cmd.cdw11()).is_ok() => return Ok(0b100),
            _ => return Err(Status::INVALID_FIELD),
        };
        self.feature(fid, f, cmd.cdw11())
    }

    fn feature(&self, fid: u8, f: &super::Features, cdw11: u32) -> Result<u32, Status> {
        Ok(match fid {
            FEAT_ARBITRATION => f.arbitration,
            FEAT_POWER => f.power,
            FEAT_TEMPERATURE => match (cdw11 >> 16 & 0xf, cdw11 >> 20 & 3) {
                (0, 0) => u32::from(f.temp_over),
                (0, 1) => u32::from(f.temp_under),
                _ => return Err(Status::INVALID_FIELD),
            },
            FEAT_WRITE_CACHE => u32::from(f.write_cache),
            FEAT_QUEUES => self.queues_value(),
            FEAT_COALESCING => f.coalescing,
            FEAT_VECTOR => {
                let iv = cdw11 as u16;
                if iv > self.io_queues {
                    return Err(Status::INVALID_FIELD);
                }
                u32::from(iv) | u32::from(f.coalescing_disabled >> iv & 1 != 0) << 16
            }
            FEAT_ATOMICITY => f.write_atomicity,
            FEAT_ASYNC_EVENTS => f.async_events,
            _ => return Err(Status::INVALID_FIELD),
        })
    }

    /// Number of Queues: every queue pair the controller offers, whatever was asked (the
    /// driver uses the smaller). Zero-based, SQs low, CQs high.
    fn queues_value(&self) -> u32 {
        let n = u32::from(self.io_queues - 1);
        n | n << 16
    }
}
