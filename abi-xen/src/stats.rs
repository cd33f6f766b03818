//! Counters the kernel reads: calls per hypercall number and every unimplemented
//! (hypercall, sub-op) pair, with a queue of first sightings to log once.

/// Hypercall numbers counted individually; the last slot takes every larger number.
pub const NR_COUNTED: usize = 64;
const DISTINCT_UNIMPLEMENTED: usize = 48;
const LOG_QUEUE: usize = 8;

/// An unimplemented call, as first seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Unimplemented {
    /// Hypercall number (`u32::MAX` for numbers that do not fit).
    pub op: u32,
    /// Sub-op (the command argument) for families that have one.
    pub sub: Option<u32>,
    /// The argument that identifies it further: the parameter index for `HVMOP_get_param`,
    /// the map space for `XENMEM_add_to_physmap`, otherwise the second argument.
    pub detail: u64,
    pub vcpu: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnimplementedCount {
    pub op: u32,
    pub sub: Option<u32>,
    pub count: u32,
}

pub(crate) struct Stats {
    pub calls: [u32; NR_COUNTED],
    pub unimpl: heapless::Vec<UnimplementedCount, DISTINCT_UNIMPLEMENTED>,
    /// Calls whose (op, sub) did not fit the table.
    pub unimpl_overflow: u32,
    pub first_seen: heapless::Deque<Unimplemented, LOG_QUEUE>,
    pub log_dropped: u32,
    /// Set by a handler that knows a better `detail` than the second argument.
    pub detail: Option<u64>,
}

impl Stats {
    pub const fn new() -> Self {
        Stats {
            calls: [0; NR_COUNTED],
            unimpl: heapless::Vec::new(),
            unimpl_overflow: 0,
            first_seen: heapless::Deque::new(),
            log_dropped: 0,
            detail: None,
        }
    }

    pub fn count(&mut self, op: u64) {
        let i = usize::try_from(op)
            .unwrap_or(usize::MAX)
            .min(NR_COUNTED - 1);
        if let Some(c) = self.calls.get_mut(i) {
            *c = c.saturating_add(1);
        }
    }

    pub fn unimplemented(&mut self, op: u32, sub: Option<u64>, detail: u64, vcpu: u32) {
        let sub = sub.map(|s| u32::try_from(s).unwrap_or(u32::MAX));
        if let Some(e) = self.unimpl.iter_mut().find(|e| e.op == op && e.sub == sub) {
            e.count = e.count.saturating_add(1);
            return;
        }
        if self
            .unimpl
            .push(UnimplementedCount { op, sub, count: 1 })
            .is_err()
        {
            // Past the table every call would look new; count it instead of flooding the log.
            self.unimpl_overflow = self.unimpl_overflow.saturating_add(1);
            return;
        }
        let seen = Unimplemented {
            op,
            sub,
            detail,
            vcpu,
        };
        if self.first_seen.push_back(seen).is_err() {
            self.log_dropped = self.log_dropped.saturating_add(1);
        }
    }
}
