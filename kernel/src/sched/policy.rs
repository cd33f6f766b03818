//! Per-pCPU run queues and the decisions made on them: round robin among runnable vCPUs with
//! a fixed slice, blocked vCPUs parked with an optional wake-up deadline, and static placement
//! of vCPUs on pCPUs (a vCPU never migrates, so VMX state stays on one pCPU).

use heapless::{Deque, Vec};

/// A vCPU, machine-wide: (VM slot, vCPU index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuRef {
    pub vm: u8,
    pub vcpu: u8,
}

pub const QUEUE_CAP: usize = 64;

#[derive(Debug)]
pub struct CpuQueue {
    /// Runnable vCPUs and the host time (ns) each became so, where it was timed.
    ready: Deque<(VcpuRef, Option<u64>), QUEUE_CAP>,
    /// Blocked vCPUs and the host time (ns) at which they must be woken, if any.
    blocked: Vec<(VcpuRef, Option<u64>), QUEUE_CAP>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

impl Default for CpuQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuQueue {
    pub const fn new() -> Self {
        Self {
            ready: Deque::new(),
            blocked: Vec::new(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.ready.is_empty()
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ready.len() + self.blocked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a runnable vCPU at the back, its wait untimed (a VM being built).
    pub fn push_ready(&mut self, r: VcpuRef) -> Result<(), QueueFull> {
        self.ready.push_back((r, None)).map_err(|_| QueueFull)
    }

    /// Adds a vCPU that became runnable at host time `now` (ns) at the back.
    pub fn push_ready_at(&mut self, r: VcpuRef, now: u64) -> Result<(), QueueFull> {
        self.ready.push_back((r, Some(now))).map_err(|_| QueueFull)
    }

    /// The next vCPU to run (round robin: it goes back with `push_ready_at` after its slice).
    pub fn pop_next(&mut self) -> Option<VcpuRef> {
        self.ready.pop_front().map(|(r, _)| r)
    }

    /// The next vCPU to run at host time `now`, and how long it waited runnable (0 where
    /// untimed): the time another vCPU of this pCPU had it.
    pub fn pop_next_at(&mut self, now: u64) -> Option<(VcpuRef, u64)> {
        let (r, since) = self.ready.pop_front()?;
        Some((r, since.map_or(0, |t| now.saturating_sub(t))))
    }

    pub fn block(&mut self, r: VcpuRef, wake_at: Option<u64>) -> Result<(), QueueFull> {
        self.blocked.push((r, wake_at)).map_err(|_| QueueFull)
    }

    /// Moves every blocked vCPU for which `should_wake` says so, or whose deadline has passed
    /// at `now`, to the ready queue.
    pub fn wake(&mut self, now: u64, mut should_wake: impl FnMut(VcpuRef) -> bool) {
        let mut i = 0;
        while i < self.blocked.len() {
            let (r, at) = self.blocked[i];
            if at.is_some_and(|t| t <= now) || should_wake(r) {
                self.blocked.swap_remove(i);
                // Capacity is shared: a vCPU leaving `blocked` always fits in `ready`.
                let _ = self.ready.push_back((r, Some(now)));
            } else {
                i += 1;
            }
        }
    }

    /// Drops a vCPU from both lists (its VM stopped).
    pub fn remove(&mut self, pred: impl Fn(VcpuRef) -> bool) {
        self.blocked.retain(|(r, _)| !pred(*r));
        let n = self.ready.len();
        for _ in 0..n {
            if let Some(e) = self.ready.pop_front()
                && !pred(e.0)
            {
                let _ = self.ready.push_back(e);
            }
        }
    }

    /// The earliest wake-up deadline among blocked vCPUs.
    pub fn next_deadline(&self) -> Option<u64> {
        self.blocked.iter().filter_map(|(_, t)| *t).min()
    }
}

/// Time slice of a vCPU when others wait on the same pCPU.
pub const SLICE_NS: u64 = 5_000_000;

/// Whether the running vCPU, which started its slice at `started`, must give way.
pub fn slice_over(started: u64, now: u64, others_ready: bool) -> bool {
    others_ready && now.saturating_sub(started) >= SLICE_NS
}

/// The longest a pCPU goes without a timer interrupt while a vCPU runs on it, whatever is
/// due. Nothing in Janus needs it (what is due is in [`timer_due`]'s other inputs, and other
/// pCPUs kick), but a pCPU that is itself emulated does: QEMU's single-threaded TCG runs the
/// host's CPUs in turn and moves on when one halts, pauses or takes an interrupt, so a vCPU
/// spinning on another without `pause` starves it until then. Measured under it (`bench
/// boot`, Linux on the Xen face from its start to its marker, medians of 5): 1.764 s with
/// 2 ms, 1.661 s with 4 ms, 1.867 s with 10 ms (2.4-2.9 s with 50 ms before kicks paused).
pub const RUNNING_NET_NS: u64 = 4_000_000;
/// The same for an idle pCPU, which an emulator skips while it halts: only a lost kick could
/// need it.
pub const IDLE_NET_NS: u64 = 50_000_000;

/// When a pCPU's one-shot timer must fire next (host ns): the earliest of the running vCPU's
/// own deadlines (its local APIC timer, its personality's timer), the end of its slice if
/// others wait for the pCPU, the first wake-up among the vCPUs parked on it, and `latest`
/// (pCPU 0's housekeeping, or a net under every wait). A tickless host: no interrupt while
/// a vCPU runs with nothing due.
pub fn timer_due(
    vcpu_deadlines: [Option<u64>; 2],
    slice_end: Option<u64>,
    parked: Option<u64>,
    latest: u64,
) -> u64 {
    vcpu_deadlines
        .into_iter()
        .chain([slice_end, parked])
        .flatten()
        .fold(latest, u64::min)
}

/// The end of the slice of a vCPU that started at `started`, if others are waiting.
pub fn slice_end(started: u64, others_ready: bool) -> Option<u64> {
    others_ready.then(|| started.saturating_add(SLICE_NS))
}

/// Static placement: spread the vCPUs of all VMs over the pCPUs, consecutive vCPUs of one VM
/// on different pCPUs so a VM's vCPUs run in parallel.
pub fn home_cpu(global_index: usize, pcpus: usize) -> usize {
    global_index % pcpus.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(vm: u8, vcpu: u8) -> VcpuRef {
        VcpuRef { vm, vcpu }
    }

    #[test]
    fn round_robin_gives_everyone_a_turn() {
        let mut q = CpuQueue::new();
        for i in 0..3 {
            q.push_ready(r(i, 0)).unwrap();
        }
        let mut order = std::vec::Vec::new();
        for _ in 0..6 {
            let x = q.pop_next().unwrap();
            order.push(x.vm);
            q.push_ready(x).unwrap();
        }
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_vcpu_waits_from_when_it_became_runnable() {
        let mut q = CpuQueue::new();
        q.push_ready(r(0, 0)).unwrap();
        q.push_ready_at(r(1, 0), 100).unwrap();
        q.block(r(2, 0), Some(150)).unwrap();
        q.wake(200, |_| false);
        assert_eq!(q.pop_next_at(1000), Some((r(0, 0), 0)), "untimed");
        assert_eq!(q.pop_next_at(1000), Some((r(1, 0), 900)));
        assert_eq!(
            q.pop_next_at(1000),
            Some((r(2, 0), 800)),
            "from its wake-up, not its deadline"
        );
        assert_eq!(q.pop_next_at(1000), None);
    }

    #[test]
    fn blocked_vcpus_wake_on_deadline_or_event() {
        let mut q = CpuQueue::new();
        q.block(r(0, 0), Some(100)).unwrap();
        q.block(r(0, 1), None).unwrap();
        q.block(r(1, 0), Some(50)).unwrap();
        assert_eq!(q.next_deadline(), Some(50));
        q.wake(60, |_| false);
        assert_eq!(q.pop_next(), Some(r(1, 0)));
        assert_eq!(q.pop_next(), None);
        q.wake(60, |x| x == r(0, 1));
        assert_eq!(q.pop_next(), Some(r(0, 1)));
        q.wake(100, |_| false);
        assert_eq!(q.pop_next(), Some(r(0, 0)));
        assert!(q.is_empty());
    }

    #[test]
    fn removal_and_capacity() {
        let mut q = CpuQueue::new();
        for i in 0..QUEUE_CAP as u8 {
            q.push_ready(r(i % 4, i)).unwrap();
        }
        assert_eq!(q.push_ready(r(9, 9)), Err(QueueFull));
        q.remove(|x| x.vm == 1);
        assert_eq!(q.len(), QUEUE_CAP - QUEUE_CAP / 4);
        while let Some(x) = q.pop_next() {
            assert_ne!(x.vm, 1);
        }
    }

    #[test]
    fn the_timer_is_set_for_the_first_thing_due_and_no_sooner() {
        // Alone with nothing due: only the latest wake-up.
        assert_eq!(
            timer_due([None, None], slice_end(0, false), None, 9_000),
            9_000
        );
        // The vCPU's own timers, the slice when others wait, a parked vCPU's wake-up.
        assert_eq!(timer_due([Some(700), Some(500)], None, None, 9_000), 500);
        assert_eq!(
            timer_due(
                [Some(7_000_000), None],
                slice_end(1_000, true),
                None,
                u64::MAX
            ),
            1_000 + SLICE_NS
        );
        assert_eq!(timer_due([None, Some(800)], None, Some(300), 9_000), 300);
        // Nothing is later than `latest`.
        assert_eq!(
            timer_due([Some(10_000), None], None, Some(20_000), 9_000),
            9_000
        );
        assert_eq!(slice_end(u64::MAX - 1, true), Some(u64::MAX));
    }

    #[test]
    fn slices_and_placement() {
        assert!(
            !slice_over(0, SLICE_NS * 10, false),
            "alone, a vCPU keeps the pCPU"
        );
        assert!(!slice_over(0, SLICE_NS - 1, true));
        assert!(slice_over(0, SLICE_NS, true));
        let homes: std::vec::Vec<_> = (0..6).map(|g| home_cpu(g, 2)).collect();
        assert_eq!(homes, [0, 1, 0, 1, 0, 1]);
        assert_eq!(home_cpu(5, 0), 0);
    }
}
