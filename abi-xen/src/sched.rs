//! `sched_op`: yield, block, poll and shutdown.

use crate::errno::Errno;
use crate::guest::{u32_at, u64_at};
use crate::hypercall::{Cx, Outcome};
use crate::{MAX_POLL, MAX_PORTS, Wait, Xen, console, evtchn, timer};
use virt::personality::{Action, StopReason};

const YIELD: u64 = 0;
const BLOCK: u64 = 1;
const SHUTDOWN: u64 = 2;
const POLL: u64 = 3;

const SHUTDOWN_POWEROFF: u32 = 0;
const SHUTDOWN_REBOOT: u32 = 1;
const SHUTDOWN_CRASH: u32 = 3;
const SHUTDOWN_MAX: u32 = 5;

/// Xen's limit on one poll's port list.
const POLL_MAX_PORTS: u32 = 128;

fn done(action: Action) -> Outcome {
    Outcome {
        ret: Ok(0),
        action,
        cont: None,
    }
}

pub(crate) fn sched_op(x: &mut Xen, cx: &mut Cx<'_>, cmd: u64, arg: u64) -> Outcome {
    match cmd {
        YIELD => {
            // Linux's hvc driver yields while the console ring is full: empty it now.
            console::drain_ring(x, cx.mem, cx.host);
            done(Action::Yield)
        }
        BLOCK => {
            if let Some(st) = x.vcpus.get_mut(cx.vcpu as usize) {
                st.wait = Wait::Events;
            }
            done(Action::Block)
        }
        SHUTDOWN => match cx.va.read_u32(arg) {
            Err(e) => Err(e).into(),
            Ok(reason) if reason > SHUTDOWN_MAX => Err(Errno::EINVAL).into(),
            Ok(reason) => {
                console::drain_ring(x, cx.mem, cx.host);
                console::flush_e9(x, cx.host);
                done(Action::Stop(match reason {
                    SHUTDOWN_POWEROFF => StopReason::PowerOff,
                    SHUTDOWN_REBOOT => StopReason::Reset,
                    SHUTDOWN_CRASH => StopReason::Crash([0; 5]),
                    // suspend, watchdog, soft_reset: nothing here resumes or resets a domain.
                    other => StopReason::Request(other),
                }))
            }
        },
        POLL => match poll(x, cx, arg) {
            Ok(a) => done(a),
            Err(e) => Err(e).into(),
        },
        // remote_shutdown, shutdown_code, watchdog, pin_override: privileged or not offered.
        _ => Err(Errno::ENOSYS).into(),
    }
}

fn poll(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<Action, Errno> {
    // 64-bit: ports@0 (handle), nr_ports@8, timeout@16; 32-bit: ports@0, nr_ports@4, timeout@8.
    let (ports_va, nr, timeout) = if cx.compat {
        let a: [u8; 16] = cx.va.read_struct(arg)?;
        (u64::from(u32_at(&a, 0)), u32_at(&a, 4), u64_at(&a, 8))
    } else {
        let a: [u8; 24] = cx.va.read_struct(arg)?;
        (u64_at(&a, 0), u32_at(&a, 8), u64_at(&a, 16))
    };
    if nr > POLL_MAX_PORTS {
        return Err(Errno::EINVAL);
    }
    let mut ports = heapless::Vec::<u16, MAX_POLL>::new();
    let mut overflow = false;
    for i in 0..u64::from(nr) {
        let p = cx.va.read_u32(ports_va.wrapping_add(i * 4))?;
        if p >= MAX_PORTS {
            return Err(Errno::EINVAL);
        }
        overflow |= ports.push(p as u16).is_err();
    }
    // Returning at once is a permitted spurious wake-up: taken when an event is already
    // there, the timeout has passed, or the list is longer than this vCPU can watch.
    if overflow || evtchn::any_pending(x, cx.mem, &ports) {
        return Ok(Action::Done);
    }
    if timeout != 0 && timeout <= x.system_time(cx.host) {
        return Ok(Action::Done);
    }
    let Some(st) = x.vcpus.get_mut(cx.vcpu as usize) else {
        return Ok(Action::Done);
    };
    st.wait = Wait::Poll {
        ports,
        timed_out: false,
    };
    st.timers.poll = (timeout != 0).then_some(timeout);
    timer::rearm(x, cx.vcpu, cx.host);
    Ok(Action::Block)
}
