//! What the guest asked for that this personality does not offer, counted per key, with a
//! one-time notice per key so that the kernel logs each novelty once and never floods.

use heapless::{Deque, LinearMap};

/// Distinct keys remembered per kind; beyond that only a total is kept.
pub const TRACKED: usize = 16;
const NOTICES: usize = 8;

/// Something the kernel should log once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Notice {
    /// First use of a hypercall code answered `HV_STATUS_INVALID_HYPERCALL_CODE`.
    UnknownHypercall { code: u16 },
    /// First access to a synthetic MSR that is not implemented (answered #GP).
    UnknownMsr { msr: u32, write: bool },
    /// More distinct unknown keys than are tracked; later ones are only totalled.
    TrackingFull,
}

#[derive(Clone, Debug)]
pub struct Seen<K: Eq + Copy> {
    counts: LinearMap<K, u32, TRACKED>,
    untracked: u32,
}

impl<K: Eq + Copy> Default for Seen<K> {
    fn default() -> Self {
        Seen {
            counts: LinearMap::new(),
            untracked: 0,
        }
    }
}

/// How a key was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    First,
    Again,
    /// The table is full: the key was counted in the untracked total only. `true` the
    /// first time that happened.
    Untracked(bool),
}

impl<K: Eq + Copy> Seen<K> {
    pub fn record(&mut self, key: K) -> Record {
        if let Some(n) = self.counts.get_mut(&key) {
            *n = n.saturating_add(1);
            return Record::Again;
        }
        if self.counts.insert(key, 1).is_ok() {
            return Record::First;
        }
        self.untracked = self.untracked.saturating_add(1);
        Record::Untracked(self.untracked == 1)
    }

    pub fn count(&self, key: K) -> u32 {
        self.counts.get(&key).copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (K, u32)> + '_ {
        self.counts.iter().map(|(k, n)| (*k, *n))
    }

    pub fn untracked(&self) -> u32 {
        self.untracked
    }
}

#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub hypercalls: Seen<u16>,
    pub msrs: Seen<(u32, bool)>,
    notices: Deque<Notice, NOTICES>,
}

impl Counters {
    pub fn unknown_hypercall(&mut self, code: u16) {
        match self.hypercalls.record(code) {
            Record::First => self.notify(Notice::UnknownHypercall { code }),
            Record::Untracked(true) => self.notify(Notice::TrackingFull),
            _ => {}
        }
    }

    pub fn unknown_msr(&mut self, msr: u32, write: bool) {
        match self.msrs.record((msr, write)) {
            Record::First => self.notify(Notice::UnknownMsr { msr, write }),
            Record::Untracked(true) => self.notify(Notice::TrackingFull),
            _ => {}
        }
    }

    /// A full queue drops the notice; the counts still say what happened.
    fn notify(&mut self, n: Notice) {
        let _ = self.notices.push_back(n);
    }

    pub fn take_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }
}
