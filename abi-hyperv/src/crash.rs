//! Guest crash reporting: the guest fills P0..P4, then sets CRASH_CTL.NOTIFY.

/// CRASH_CTL bit 63: "the guest has crashed; P0..P4 hold its parameters". Reading CRASH_CTL
/// returns the notifications supported: only this one, not bit 62 (a message page), because
/// the guest's panic text already reaches the console and Linux would otherwise report the
/// page's address instead of the registers.
pub const NOTIFY: u64 = 1 << 63;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crash {
    pub params: [u64; 5],
}

impl Crash {
    pub fn read_param(&self, index: usize) -> Option<u64> {
        self.params.get(index).copied()
    }

    pub fn write_param(&mut self, index: usize, value: u64) -> bool {
        match self.params.get_mut(index) {
            Some(p) => {
                *p = value;
                true
            }
            None => false,
        }
    }

    /// CRASH_CTL write; the parameters to report when it is a crash notification.
    pub fn write_ctl(&self, value: u64) -> Option<[u64; 5]> {
        (value & NOTIFY != 0).then_some(self.params)
    }
}
