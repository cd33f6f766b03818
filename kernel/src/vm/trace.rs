//! A per-vCPU flight recorder: the last few guest entries and exits, raw, printed when a VM
//! dies of a triple fault. What the hypervisor injected just before, and which event an exit
//! interrupted, is what tells a guest bug from a hypervisor bug.

use core::fmt;
use heapless::HistoryBuf;
use vcpu::Transition;

/// Entries kept per vCPU.
pub const DEPTH: usize = 16;

/// One round trip through the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Host time of the entry (ns).
    pub entered_ns: u64,
    /// The pCPU that ran it.
    pub cpu: u8,
    /// Guest state at the exit (CR3 and CPL are in `raw`).
    pub rip: u64,
    pub rflags: u64,
    pub raw: Transition,
}

#[derive(Default)]
pub struct Trace(HistoryBuf<Record, DEPTH>);

impl Trace {
    pub fn new() -> Self {
        Self(HistoryBuf::new())
    }

    pub fn record(&mut self, r: Record) {
        self.0.write(r);
    }

    /// Oldest first, each with its entry time relative to `now_ns` (so the last is "-0 us" or
    /// close to it).
    pub fn lines(&self, now_ns: u64) -> impl Iterator<Item = Line> + '_ {
        self.0.oldest_ordered().map(move |r| Line { r: *r, now_ns })
    }
}

/// One record as a report line.
pub struct Line {
    r: Record,
    now_ns: u64,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.r;
        let t = &r.raw;
        write!(
            f,
            "-{} us cpu{} inject {:#x} exit {:#x} info1 {:#x} info2 {:#x} vectoring {:#x} -> rip {:#x} cr3 {:#x} cpl {} if {}",
            self.now_ns.saturating_sub(r.entered_ns) / 1000,
            r.cpu,
            t.injected,
            t.reason,
            t.info1,
            t.info2,
            t.vectoring,
            r.rip,
            t.cr3,
            t.cpl,
            (r.rflags >> 9) & 1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    fn rec(i: u64) -> Record {
        Record {
            entered_ns: i * 1000,
            cpu: (i % 2) as u8,
            rip: 0x1000 + i,
            rflags: 0x202,
            raw: Transition {
                injected: 0x8000_00ec,
                reason: 0x60,
                info1: 0,
                info2: 0,
                vectoring: 0,
                cr3: 0x5000,
                cpl: 3,
            },
        }
    }

    #[test]
    fn keeps_the_newest_oldest_first() {
        let mut t = Trace::new();
        for i in 0..(DEPTH as u64 + 5) {
            t.record(rec(i));
        }
        let lines: Vec<_> = t.lines(30_000).map(|l| l.to_string()).collect();
        assert_eq!(lines.len(), DEPTH);
        assert!(
            lines[0].starts_with("-25 us cpu1 inject 0x800000ec exit 0x60"),
            "{}",
            lines[0]
        );
        assert!(
            lines[DEPTH - 1].starts_with("-10 us cpu0 "),
            "{}",
            lines[DEPTH - 1]
        );
        assert!(lines[DEPTH - 1].ends_with("rip 0x1014 cr3 0x5000 cpl 3 if 1"));
    }

    #[test]
    fn empty_trace_has_no_lines() {
        assert_eq!(Trace::new().lines(0).count(), 0);
    }
}
