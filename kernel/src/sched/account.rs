//! Where each vCPU's time on its pCPU went, measured by the scheduler with the host TSC around
//! each turn and each wait in the ready queue (Xen's runstate "running" and "runnable"): what
//! a VM cost the machine, and what share of a contended pCPU it got.

/// A vCPU's (or, summed, a VM's) time, in host nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// On a pCPU: in guest mode and handling its exits, from the start to the end of each turn.
    pub run_ns: u64,
    /// The part of `run_ns` in turns that began with another vCPU ready on the same pCPU.
    pub contended_ns: u64,
    /// Runnable, but waiting in the ready queue while another vCPU had the pCPU.
    pub waited_ns: u64,
}

impl CpuTime {
    /// A turn of `ns` on the pCPU; `contended`: another vCPU was ready when it began.
    pub fn ran(&mut self, ns: u64, contended: bool) {
        self.run_ns = self.run_ns.saturating_add(ns);
        if contended {
            self.contended_ns = self.contended_ns.saturating_add(ns);
        }
    }

    pub fn waited(&mut self, ns: u64) {
        self.waited_ns = self.waited_ns.saturating_add(ns);
    }

    pub fn add(&mut self, other: &CpuTime) {
        self.run_ns = self.run_ns.saturating_add(other.run_ns);
        self.contended_ns = self.contended_ns.saturating_add(other.contended_ns);
        self.waited_ns = self.waited_ns.saturating_add(other.waited_ns);
    }

    /// The share of its pCPU it got while it and another vCPU both wanted it, in per mille
    /// (round robin between two gives about 500); `None` if it never had to share.
    pub fn share_permille(&self) -> Option<u64> {
        let contended = self.contended_ns.saturating_add(self.waited_ns);
        (contended > 0).then(|| {
            let share = u128::from(self.contended_ns) * 1000 / u128::from(contended);
            share as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_counts_only_time_spent_contending() {
        let mut t = CpuTime::default();
        assert_eq!(t.share_permille(), None);
        t.ran(3_000, false);
        assert_eq!(t.share_permille(), None, "alone on its pCPU");
        t.ran(5_000, true);
        t.waited(5_000);
        assert_eq!(t.share_permille(), Some(500));
        t.waited(10_000);
        assert_eq!(t.share_permille(), Some(250));
        let mut sum = CpuTime::default();
        sum.add(&t);
        sum.add(&t);
        assert_eq!(sum.run_ns, 16_000);
        assert_eq!(sum.share_permille(), Some(250));
    }
}
