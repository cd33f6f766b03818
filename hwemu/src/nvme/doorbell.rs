//! The doorbells and what they set off: running the commands a tail exposes, posting their
//! completions, resuming submission queues stalled on a full completion queue, and signalling
//! each vector once per register write.

use super::queue::{self, Command, Completion, Cq};
use super::regs::CSTS_CFS;
use super::{Controller, Env, Outcome, bit, masked};

impl Controller {
    /// A tail past the queue's end is an invalid doorbell write and is ignored (no
    /// asynchronous event reports it: none is ever reported).
    pub(super) fn sq_doorbell(&mut self, qid: u16, value: u32, env: &mut dyn Env) {
        if !self.running() {
            return;
        }
        let Some(Some(sq)) = self.sqs.get_mut(usize::from(qid)) else {
            return;
        };
        let Ok(tail) = u16::try_from(value) else {
            return;
        };
        if tail >= sq.size {
            return;
        }
        sq.tail = tail;
        self.drain(qid, env);
    }

    /// The guest consumed completions up to `value`; SQs that stopped on this full CQ resume.
    pub(super) fn cq_doorbell(&mut self, qid: u16, value: u32, env: &mut dyn Env) {
        if !self.running() {
            return;
        }
        let Some(Some(cq)) = self.cqs.get_mut(usize::from(qid)) else {
            return;
        };
        let Ok(head) = u16::try_from(value) else {
            return;
        };
        // The head may only move over entries that were posted.
        if head >= cq.size || queue::ring_distance(cq.head, head, cq.size) > cq.used() {
            return;
        }
        cq.head = head;
        for sqid in 0..=self.io_queues {
            if self
                .sq(sqid)
                .is_some_and(|s| s.cqid == qid && s.head != s.tail)
            {
                self.drain(sqid, env);
            }
        }
    }

    /// Runs the commands between the SQ's head and tail, stopping early if its CQ is full.
    /// At most a queue's worth: each iteration consumes one entry and the tail cannot move.
    fn drain(&mut self, qid: u16, env: &mut dyn Env) {
        for _ in 0..=u32::from(queue::MAX_ENTRIES) {
            if !self.running() {
                return;
            }
            let Some(sq) = self.sq(qid).copied() else {
                return;
            };
            if sq.head == sq.tail || self.cq(sq.cqid).is_none_or(Cq::full) {
                return;
            }
            let Ok(cmd) = Command::read(env.memory(), sq.slot(sq.head)) else {
                // Checked inside RAM at creation: only a shrinking RAM gets here.
                self.csts |= CSTS_CFS;
                return;
            };
            let head = (sq.head + 1) % sq.size;
            if let Some(Some(s)) = self.sqs.get_mut(usize::from(qid)) {
                s.head = head;
            }
            let outcome = if qid == 0 {
                self.admin(&cmd, env)
            } else {
                self.io(&cmd, env)
            };
            if let Outcome::Done { dw0, status } = outcome {
                let entry = Completion {
                    dw0,
                    sq_head: head,
                    sq_id: qid,
                    cid: cmd.cid(),
                    status,
                };
                self.post(sq.cqid, &entry, env);
            }
        }
    }

    fn post(&mut self, cqid: u16, entry: &Completion, env: &mut dyn Env) {
        let Some(Some(cq)) = self.cqs.get_mut(usize::from(cqid)) else {
            return;
        };
        if cq.post(env.memory(), entry).is_err() {
            self.csts |= CSTS_CFS;
            return;
        }
        if cq.ien {
            self.irq |= bit(cq.iv);
        }
    }

    pub(super) fn signal(&mut self, env: &mut dyn Env) {
        let pending = core::mem::take(&mut self.irq);
        for iv in 0..128u16 {
            if pending & bit(iv) != 0 && !masked(self.intms, iv) {
                env.interrupt(iv);
            }
        }
    }
}
