//! Per-vCPU timers in Xen system time: the VCPUOP single-shot (Linux's clockevent), the
//! periodic timer, and `SCHEDOP_poll` timeouts. The host offers one timer per vCPU, armed at
//! the earliest of them.

use crate::errno::Errno;
use crate::evtchn::{self, VIRQ_TIMER};
use crate::hypercall::Cx;
use crate::{Wait, Xen};
use virt::GuestMemory;
use virt::personality::Host;

/// A host timer that fires this close before a deadline counts as on time: the host clock and
/// the pvclock extrapolation round differently, and re-arming for a few nanoseconds would
/// only cost another exit.
const SLACK_NS: u64 = 1_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Periodic {
    pub next: u64,
    pub period: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Timers {
    pub singleshot: Option<u64>,
    pub periodic: Option<Periodic>,
    pub poll: Option<u64>,
}

impl Timers {
    pub const fn new() -> Self {
        Timers {
            singleshot: None,
            periodic: None,
            poll: None,
        }
    }

    fn earliest(&self) -> Option<u64> {
        [self.singleshot, self.periodic.map(|p| p.next), self.poll]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Arms the host timer for `vcpu`'s earliest deadline, or cancels it.
pub(crate) fn rearm(x: &mut Xen, vcpu: u32, host: &mut dyn Host) {
    let Some(earliest) = x.vcpus.get(vcpu as usize).and_then(|s| s.timers.earliest()) else {
        host.set_timer(vcpu, None);
        return;
    };
    let now = x.system_time(host);
    let host_deadline = host.now_ns().saturating_add(earliest.saturating_sub(now));
    host.set_timer(vcpu, Some(host_deadline));
}

/// Arms the single-shot timer; a deadline already reached fires now (Linux programs deadlines
/// that may have passed by the time the call arrives).
pub(crate) fn set_singleshot(
    x: &mut Xen,
    vcpu: u32,
    deadline: u64,
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
) {
    let now = x.system_time(host);
    let Some(st) = x.vcpus.get_mut(vcpu as usize) else {
        return;
    };
    if deadline <= now.saturating_add(SLACK_NS) {
        st.timers.singleshot = None;
        fire_timer_virq(x, vcpu, mem, host);
    } else {
        st.timers.singleshot = Some(deadline);
    }
    rearm(x, vcpu, host);
}

pub(crate) fn stop_singleshot(x: &mut Xen, vcpu: u32, host: &mut dyn Host) {
    if let Some(st) = x.vcpus.get_mut(vcpu as usize) {
        st.timers.singleshot = None;
    }
    rearm(x, vcpu, host);
}

/// The legacy timer hypercall: an absolute deadline for the caller, 0 to cancel.
pub(crate) fn set_timer_op(x: &mut Xen, cx: &mut Cx<'_>, timeout: u64) -> Result<u64, Errno> {
    if timeout == 0 {
        stop_singleshot(x, cx.vcpu, cx.host);
    } else {
        set_singleshot(x, cx.vcpu, timeout, cx.mem, cx.host);
    }
    Ok(0)
}

fn fire_timer_virq(x: &Xen, vcpu: u32, mem: &dyn GuestMemory, host: &mut dyn Host) {
    if let Some(port) = x.ports.virq_port(vcpu, VIRQ_TIMER) {
        evtchn::set_pending(x, mem, host, port);
    }
}

pub(crate) fn expired(x: &mut Xen, vcpu: u32, mem: &dyn GuestMemory, host: &mut dyn Host) {
    let now = x.system_time(host);
    let due = now.saturating_add(SLACK_NS);
    let Some(st) = x.vcpus.get_mut(vcpu as usize) else {
        return;
    };
    let mut fire = false;
    if st.timers.singleshot.is_some_and(|d| d <= due) {
        st.timers.singleshot = None;
        fire = true;
    }
    if let Some(p) = st.timers.periodic.as_mut()
        && p.next <= due
    {
        fire = true;
        // Ticks missed while the vCPU was descheduled collapse into one, as on Xen.
        p.next = p.next.saturating_add(p.period);
        if p.next <= now {
            p.next = now.saturating_add(p.period);
        }
    }
    let mut wake = false;
    if st.timers.poll.is_some_and(|d| d <= due) {
        st.timers.poll = None;
        if let Wait::Poll { timed_out, .. } = &mut st.wait {
            *timed_out = true;
            wake = true;
        }
    }
    if fire {
        fire_timer_virq(x, vcpu, mem, host);
    }
    if wake {
        host.kick(vcpu);
    }
    rearm(x, vcpu, host);
}
