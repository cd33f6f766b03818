//! Event channels on a loopback pair (a port of ours bound to another port of ours): sends,
//! upcalls, masking, closing; and, for `probe.bench`, the round trip of one event.

use super::{
    DOMID_SELF, EINVAL, EVENT_CHANNEL_OP, EVTCHNOP_SEND, SHARED_INFO, UPCALL_VECTOR, Xen,
    ack_upcall, clear_pending, pending, ptr, set_mask,
};
use crate::arch;
use crate::checks::check;

const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
const EVTCHNOP_CLOSE: u64 = 3;
const EVTCHNOP_STATUS: u64 = 5;
const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
const EVTCHNOP_UNMASK: u64 = 9;
const EVTCHNSTAT_UNBOUND: u32 = 1;
const EVTCHNSTAT_INTERDOMAIN: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct AllocUnbound {
    dom: u16,
    remote_dom: u16,
    port: u32,
}

#[repr(C)]
#[derive(Default)]
struct BindInterdomain {
    remote_dom: u16,
    pad: u16,
    remote_port: u32,
    local_port: u32,
}

#[repr(C)]
#[derive(Default)]
struct Status {
    dom: u16,
    pad: u16,
    port: u32,
    status: u32,
    vcpu: u32,
    u0: u32,
    u1: u32,
}

fn status(x: Xen, port: u32) -> (i64, Status) {
    let mut s = Status {
        dom: DOMID_SELF,
        port,
        ..Status::default()
    };
    let r = x.call(EVENT_CHANNEL_OP, [EVTCHNOP_STATUS, ptr(&mut s), 0, 0, 0]);
    (r, s)
}

fn port_op(x: Xen, cmd: u64, port: u32) -> i64 {
    let mut p = port;
    x.call(EVENT_CHANNEL_OP, [cmd, ptr(&mut p), 0, 0, 0])
}

/// An unbound port for ourselves and a second one bound to it: the results of the two calls
/// and the two ports.
fn pair(x: Xen) -> (i64, i64, u32, u32) {
    let mut a = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: DOMID_SELF,
        port: 0,
    };
    let ra = x.call(
        EVENT_CHANNEL_OP,
        [EVTCHNOP_ALLOC_UNBOUND, ptr(&mut a), 0, 0, 0],
    );
    let mut b = BindInterdomain {
        remote_dom: DOMID_SELF,
        remote_port: a.port,
        ..BindInterdomain::default()
    };
    let rb = x.call(
        EVENT_CHANNEL_OP,
        [EVTCHNOP_BIND_INTERDOMAIN, ptr(&mut b), 0, 0, 0],
    );
    (ra, rb, a.port, b.local_port)
}

/// An interdomain pair connected to ourselves: each send marks the other end pending and
/// raises the upcall; a masked port stays quiet until it is unmasked.
pub(super) fn loopback(x: Xen) {
    let (ra, rb, pa, pb) = pair(x);
    let (rs, s) = status(x, pb);
    check(
        "xen-evtchn-loopback-bind",
        ra == 0
            && rb == 0
            && pa != 0
            && pb != 0
            && pa != pb
            && rs == 0
            && s.status == EVTCHNSTAT_INTERDOMAIN
            && s.u1 == pa,
        format_args!(
            "alloc {ra} port {pa}, bind {rb} port {pb}, status {rs}: {} remote port {}",
            s.status, s.u1
        ),
    );
    if ra != 0 || rb != 0 || pa == 0 || pb == 0 {
        return;
    }
    clear_pending(pa);
    clear_pending(pb);
    ack_upcall();

    let (before, _) = arch::vector_hits(UPCALL_VECTOR);
    let r = port_op(x, EVTCHNOP_SEND, pb);
    let (hits, _) = arch::wait_vector(UPCALL_VECTOR, before, arch::WATCHDOG);
    check(
        "xen-evtchn-loopback-send",
        r == 0 && pending(pa) && !pending(pb) && hits > before,
        format_args!(
            "ret {r}, pending {pa}: {} {pb}: {}, upcalls {before} -> {hits}",
            pending(pa),
            pending(pb)
        ),
    );
    clear_pending(pa);
    ack_upcall();
    let (before, _) = arch::vector_hits(UPCALL_VECTOR);
    let r = port_op(x, EVTCHNOP_SEND, pa);
    // Taken here, so that it cannot pass for an upcall of the masked port below.
    let (hits, _) = arch::wait_vector(UPCALL_VECTOR, before, arch::WATCHDOG);
    check(
        "xen-evtchn-loopback-reverse",
        r == 0 && pending(pb) && !pending(pa) && hits > before,
        format_args!(
            "ret {r}, pending {pb}: {}, upcalls {before} -> {hits}",
            pending(pb)
        ),
    );
    clear_pending(pb);
    ack_upcall();

    // Masked: pending is set but no upcall; unmasking delivers it. An upcall would be
    // posted before the send returns, so a short wait is enough to see it is absent.
    set_mask(pa, true);
    let (before, _) = arch::vector_hits(UPCALL_VECTOR);
    let r = port_op(x, EVTCHNOP_SEND, pb);
    let (quiet, _) = arch::wait_vector(UPCALL_VECTOR, before, arch::WATCHDOG / 50);
    let masked_ok = r == 0 && pending(pa) && quiet == before;
    let ru = port_op(x, EVTCHNOP_UNMASK, pa);
    let (hits, _) = arch::wait_vector(UPCALL_VECTOR, quiet, arch::WATCHDOG);
    check(
        "xen-evtchn-mask-unmask",
        masked_ok && ru == 0 && hits > quiet && SHARED_INFO.byte(0) == 1,
        format_args!(
            "send {r}, pending {}, upcalls while masked {}, unmask {ru}, after {}",
            pending(pa),
            quiet - before,
            hits - quiet
        ),
    );
    clear_pending(pa);
    ack_upcall();

    let rc = port_op(x, EVTCHNOP_CLOSE, pb);
    let rs = port_op(x, EVTCHNOP_SEND, pb);
    let (rst, s) = status(x, pa);
    let r0 = port_op(x, EVTCHNOP_SEND, 0);
    let rbig = port_op(x, EVTCHNOP_SEND, 1 << 20);
    check(
        "xen-evtchn-closed-port-einval",
        rc == 0
            && rs == EINVAL
            && rst == 0
            && s.status == EVTCHNSTAT_UNBOUND
            && r0 == EINVAL
            && rbig == EINVAL,
        format_args!(
            "close {rc}, send to closed {rs}, peer status {rst}: {}, port 0 {r0}, port 2^20 {rbig}",
            s.status
        ),
    );
    let _ = port_op(x, EVTCHNOP_CLOSE, pa);
}

/// `probe.bench`: an event-channel send to a loopback port until its upcall has run.
pub(super) fn round_trip(x: Xen) {
    let (ra, rb, pa, pb) = pair(x);
    if ra != 0 || rb != 0 {
        return;
    }
    let mut lost = 0u32;
    crate::bench::time("event", || {
        clear_pending(pa);
        ack_upcall();
        let (before, _) = arch::vector_hits(UPCALL_VECTOR);
        port_op(x, EVTCHNOP_SEND, pb);
        // The upcall is pending before the send returns: it is taken as soon as interrupts
        // are open. A bounded wait, so that one that never comes is counted, not waited for.
        if !crate::bench::wait_open(UPCALL_VECTOR, before) {
            lost += 1;
        }
    });
    crate::bench::report_lost("event", lost);
    clear_pending(pa);
    ack_upcall();
}
