//! Delivery: pending bits in shared_info, the selector and upcall flag in the target vCPU's
//! vcpu_info, the upcall vector, and waking vCPUs blocked on events.

use crate::shared_info::{
    EVTCHN_MASK, EVTCHN_PENDING, VI_PENDING_SEL, VI_UPCALL_PENDING, port_word,
};
use crate::{Wait, Xen};
use virt::GuestMemory;
use virt::personality::Host;

pub(super) fn is_set(mem: &dyn GuestMemory, si: u64, bitmap: u64, port: u32) -> bool {
    let (w, b) = port_word(si, bitmap, port);
    mem.read_u64(w).is_ok_and(|v| v & b != 0)
}

/// Marks `port` pending and, if it is unmasked, flags its vCPU and delivers the upcall;
/// wakes any vCPU polling the port either way (`SCHEDOP_poll` ignores masks).
pub(crate) fn set_pending(x: &Xen, mem: &dyn GuestMemory, host: &mut dyn Host, port: u32) {
    let Some(si) = x.shared_info else {
        return;
    };
    let (w, b) = port_word(si, EVTCHN_PENDING, port);
    match host.guest_fetch_or_u64(mem, w, b) {
        Ok(old) if old & b == 0 => {}
        _ => return,
    }
    wake_pollers(x, host, port);
    if is_set(mem, si, EVTCHN_MASK, port) {
        return;
    }
    let v = x.ports.notify_vcpu(port);
    mark_events_pending(x, mem, host, v, port);
}

fn wake_pollers(x: &Xen, host: &mut dyn Host, port: u32) {
    for (i, st) in x.vcpus.iter().enumerate() {
        if let Wait::Poll { ports, .. } = &st.wait
            && ports.iter().any(|&p| u32::from(p) == port)
        {
            host.kick(i as u32);
        }
    }
}

/// Sets the selector bit and `evtchn_upcall_pending`, then raises the upcall. The vector is
/// raised for every newly pending port rather than only on the 0→1 edge of
/// `evtchn_upcall_pending`: an edge lost in the vLAPIC (an INIT clears IRR) would otherwise
/// leave the flag set with no interrupt ever coming, and the guest's handler copes with a
/// spurious upcall by finding nothing to do.
pub(crate) fn mark_events_pending(
    x: &Xen,
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
    vcpu: u32,
    port: u32,
) {
    let Some(vi) = x.vcpu_info_gpa(vcpu) else {
        return;
    };
    let sel = 1u64 << (port / 64);
    if host
        .guest_fetch_or_u64(mem, vi + VI_PENDING_SEL, sel)
        .is_err()
        || host
            .guest_fetch_or_u64(mem, vi + VI_UPCALL_PENDING, 1)
            .is_err()
    {
        return;
    }
    deliver_upcall(x, host, vcpu);
}

pub(crate) fn deliver_upcall(x: &Xen, host: &mut dyn Host, vcpu: u32) {
    let per_vcpu = x.vcpus.get(vcpu as usize).and_then(|s| s.upcall_vector);
    if let Some(v) = per_vcpu {
        // HVMOP_set_evtchn_upcall_vector: an ordinary LAPIC interrupt the guest EOIs.
        host.raise_vector(vcpu, v, true);
    } else if let Some(v) = x.callback_vector {
        // HVM_PARAM_CALLBACK_IRQ type 2 bypasses the LAPIC on Xen: no EOI follows.
        host.raise_vector(vcpu, v, false);
    }
    host.kick(vcpu);
}

/// Re-raises the upcall on every vCPU whose `evtchn_upcall_pending` is already set (after
/// the delivery method changes, so nothing set earlier is stranded).
pub(crate) fn redeliver_pending(x: &Xen, mem: &dyn GuestMemory, host: &mut dyn Host) {
    for v in 0..Xen::nr_vcpus(host) {
        if upcall_pending(x, v, mem) {
            deliver_upcall(x, host, v);
        }
    }
}

pub(crate) fn upcall_pending(x: &Xen, vcpu: u32, mem: &dyn GuestMemory) -> bool {
    x.vcpu_info_gpa(vcpu)
        .is_some_and(|vi| mem.read_u8(vi + VI_UPCALL_PENDING).is_ok_and(|b| b != 0))
}

pub(crate) fn has_pending_work(x: &Xen, vcpu: u32, mem: &dyn GuestMemory) -> bool {
    let Some(st) = x.vcpus.get(vcpu as usize) else {
        return true;
    };
    match &st.wait {
        Wait::None => true,
        // Without a vcpu_info no event can ever arrive: let it run rather than hang.
        Wait::Events => x.vcpu_info_gpa(vcpu).is_none() || upcall_pending(x, vcpu, mem),
        Wait::Poll { ports, timed_out } => {
            *timed_out
                || x.shared_info.is_none_or(|si| {
                    ports
                        .iter()
                        .any(|&p| is_set(mem, si, EVTCHN_PENDING, u32::from(p)))
                })
        }
    }
}

/// Whether any of `ports` is pending (for `SCHEDOP_poll`'s early return).
pub(crate) fn any_pending(x: &Xen, mem: &dyn GuestMemory, ports: &[u16]) -> bool {
    x.shared_info.is_some_and(|si| {
        ports
            .iter()
            .any(|&p| is_set(mem, si, EVTCHN_PENDING, u32::from(p)))
    })
}
