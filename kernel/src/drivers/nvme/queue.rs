//! Submission and completion ring bookkeeping, apart from the memory they live in.
//!
//! The submission ring is full when advancing the tail would reach the head; the controller
//! reports how far it has consumed in each completion (SQHD). The completion ring's new
//! entries are those whose phase tag equals the phase the host expects; that phase starts at
//! 1 and flips each time the head wraps, so no entry has to be cleared after use.

/// Bytes in one submission entry.
pub const SQ_ENTRY: usize = 64;
/// Bytes in one completion entry.
pub const CQ_ENTRY: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqRing {
    size: u16,
    tail: u16,
    head: u16,
}

impl SqRing {
    /// A ring of `size` entries (at least 2: one slot always stays empty).
    pub fn new(size: u16) -> Self {
        assert!(size >= 2);
        SqRing {
            size,
            tail: 0,
            head: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        (self.tail + 1) % self.size == self.head
    }

    /// Claims the slot at the tail; returns its index and the new tail, which is what the
    /// tail doorbell gets once the entry is written. `None` when full.
    pub fn push(&mut self) -> Option<(u16, u16)> {
        if self.is_full() {
            return None;
        }
        let slot = self.tail;
        self.tail = (self.tail + 1) % self.size;
        Some((slot, self.tail))
    }

    /// Takes the controller's SQ head pointer from a completion; out-of-range values are
    /// ignored rather than trusted.
    pub fn consumed_up_to(&mut self, sqhd: u16) {
        if sqhd < self.size {
            self.head = sqhd;
        }
    }

    pub fn tail(&self) -> u16 {
        self.tail
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CqRing {
    size: u16,
    head: u16,
    phase: bool,
}

impl CqRing {
    pub fn new(size: u16) -> Self {
        assert!(size >= 2);
        CqRing {
            size,
            head: 0,
            phase: true,
        }
    }

    /// The slot the next completion will appear in.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// Whether the entry at the head, with this phase tag, is new.
    pub fn is_new(&self, phase: bool) -> bool {
        phase == self.phase
    }

    /// Consumes the head entry; returns the new head for the head doorbell.
    pub fn advance(&mut self) -> u16 {
        self.head += 1;
        if self.head == self.size {
            self.head = 0;
            self.phase = !self.phase;
        }
        self.head
    }
}

/// Command identifiers for one submission queue; never 0xFFFF, which the spec reserves for
/// errors not tied to a command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandIds(u16);

impl CommandIds {
    pub fn next_id(&mut self) -> u16 {
        let id = self.0;
        self.0 = if id == 0xfffe { 0 } else { id + 1 };
        id
    }
}

/// The status field of a completion (DW3 bits 31:17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Status Code Type: 0 generic, 1 command specific, 2 media errors, ...
    pub sct: u8,
    pub sc: u8,
    /// More status information in the Error Information log.
    pub more: bool,
    /// Do Not Retry.
    pub dnr: bool,
}

impl Status {
    pub fn is_success(&self) -> bool {
        self.sct == 0 && self.sc == 0
    }
}

/// One completion queue entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Command-specific result (DW0).
    pub result: u32,
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    pub phase: bool,
    pub status: Status,
}

impl Completion {
    pub fn decode(dw: [u32; 4]) -> Self {
        let s = dw[3] >> 16;
        Completion {
            result: dw[0],
            sq_head: dw[2] as u16,
            sq_id: (dw[2] >> 16) as u16,
            cid: dw[3] as u16,
            phase: s & 1 == 1,
            status: Status {
                sc: (s >> 1) as u8,
                sct: ((s >> 9) & 0x7) as u8,
                more: (s >> 14) & 1 == 1,
                dnr: (s >> 15) & 1 == 1,
            },
        }
    }

    /// The phase tag alone, from DW3, to test an entry before reading the rest.
    pub fn phase_of(dw3: u32) -> bool {
        (dw3 >> 16) & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submission_tail_wraps_and_leaves_one_slot_empty() {
        let mut sq = SqRing::new(4);
        assert_eq!(sq.push(), Some((0, 1)));
        assert_eq!(sq.push(), Some((1, 2)));
        assert_eq!(sq.push(), Some((2, 3)));
        assert!(sq.is_full());
        assert_eq!(sq.push(), None);
        sq.consumed_up_to(2);
        assert_eq!(sq.push(), Some((3, 0)), "the doorbell value wraps to 0");
        assert_eq!(sq.push(), Some((0, 1)));
        assert!(sq.is_full());
        sq.consumed_up_to(9);
        assert!(sq.is_full(), "a head beyond the ring is not trusted");
        sq.consumed_up_to(1);
        assert!(!sq.is_full());
        assert_eq!(sq.tail(), 1);
    }

    #[test]
    fn completion_phase_flips_on_wrap() {
        let mut cq = CqRing::new(3);
        // Zeroed memory: phase 0 entries are old on the first pass.
        assert!(!cq.is_new(false));
        assert!(cq.is_new(true));
        assert_eq!(cq.advance(), 1);
        assert_eq!(cq.advance(), 2);
        assert_eq!(cq.advance(), 0);
        assert_eq!(cq.head(), 0);
        // Second pass: the controller now writes phase 0; last pass's 1s are stale.
        assert!(cq.is_new(false));
        assert!(!cq.is_new(true));
        for _ in 0..3 {
            cq.advance();
        }
        assert!(cq.is_new(true));
    }

    #[test]
    fn command_ids_skip_the_reserved_value() {
        let mut ids = CommandIds(0xfffd);
        assert_eq!(ids.next_id(), 0xfffd);
        assert_eq!(ids.next_id(), 0xfffe);
        assert_eq!(ids.next_id(), 0);
        assert_eq!(ids.next_id(), 1);
    }

    #[test]
    fn decodes_completions() {
        // Success for command 0x1234 from SQ 1, SQ head 5, phase 1.
        let c = Completion::decode([7, 0, 0x0001_0005, 0x0001_1234]);
        assert_eq!(c.result, 7);
        assert_eq!((c.sq_id, c.sq_head, c.cid), (1, 5, 0x1234));
        assert!(c.phase);
        assert!(c.status.is_success());
        assert!(Completion::phase_of(0x0001_1234));
        // Invalid Namespace or Format (SCT 0, SC 0x0b), DNR, phase 0.
        let s = (1u32 << 15) | (0x0b << 1);
        let c = Completion::decode([0, 0, 0, (s << 16) | 9]);
        assert!(!c.phase);
        assert_eq!(c.cid, 9);
        assert_eq!(
            c.status,
            Status {
                sct: 0,
                sc: 0x0b,
                more: false,
                dnr: true
            }
        );
        // Unrecovered Read Error: media error (SCT 2), SC 0x81, phase 1.
        let s = (2u32 << 9) | (0x81 << 1) | 1;
        let c = Completion::decode([0, 0, 0, s << 16]);
        assert_eq!((c.status.sct, c.status.sc), (2, 0x81));
        assert!(c.phase && !c.status.is_success());
    }
}
