//! The `EVTCHNOP_*` hypercalls of the 2-level ABI.

use super::delivery::{is_set, mark_events_pending, set_pending};
use super::{Binding, FREE, NR_VIRQS, PortStatus, virq_is_per_vcpu};
use crate::errno::Errno;
use crate::guest::{u16_at, u32_at};
use crate::hypercall::{Cx, Outcome};
use crate::shared_info::{EVTCHN_MASK, EVTCHN_PENDING, port_word};
use crate::{CONSOLE_PORT, MAX_PORTS, STORE_PORT, Xen};

pub const BIND_INTERDOMAIN: u64 = 0;
pub const BIND_VIRQ: u64 = 1;
pub const CLOSE: u64 = 3;
pub const SEND: u64 = 4;
pub const STATUS: u64 = 5;
pub const ALLOC_UNBOUND: u64 = 6;
pub const BIND_IPI: u64 = 7;
pub const BIND_VCPU: u64 = 8;
pub const UNMASK: u64 = 9;
pub(crate) fn op(x: &mut Xen, cx: &mut Cx<'_>, cmd: u64, arg: u64) -> Outcome {
    let r = match cmd {
        BIND_INTERDOMAIN => bind_interdomain(x, cx, arg),
        BIND_VIRQ => bind_virq(x, cx, arg),
        CLOSE => close(x, cx, arg),
        SEND => send(x, cx, arg),
        STATUS => status(x, cx, arg),
        ALLOC_UNBOUND => alloc_unbound(x, cx, arg),
        BIND_IPI => bind_ipi(x, cx, arg),
        BIND_VCPU => bind_vcpu(x, cx, arg),
        UNMASK => unmask(x, cx, arg),
        // bind_pirq, reset and the FIFO ABI (init_control, expand_array, set_priority): Linux
        // falls back to the 2-level ABI when init_control is refused.
        _ => Err(Errno::ENOSYS),
    };
    r.into()
}

fn guest_port(raw: u32) -> Result<u32, Errno> {
    if raw == 0 || raw >= MAX_PORTS {
        Err(Errno::EINVAL)
    } else {
        Ok(raw)
    }
}

fn guest_vcpu(cx: &Cx<'_>, raw: u32) -> Result<u32, Errno> {
    if raw >= Xen::nr_vcpus(cx.host) {
        Err(Errno::ENOENT)
    } else {
        Ok(raw)
    }
}

fn bind_interdomain(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let a: [u8; 12] = cx.va.read_struct(arg)?;
    let remote_dom = u16_at(&a, 0);
    let remote_port = u32_at(&a, 4);
    if !x.ports.is_self(remote_dom) {
        // Backends live in domain 0 and connect from their side; no other domain exists.
        return Err(if remote_dom == 0 {
            Errno::EINVAL
        } else {
            Errno::ESRCH
        });
    }
    let rp = guest_port(remote_port)?;
    let own = x.ports.domid;
    match x.ports.get(rp).map(|p| p.binding) {
        Some(Binding::Unbound { remote_dom }) if remote_dom == own => {}
        _ => return Err(Errno::EINVAL),
    }
    let local = x.ports.alloc(
        Binding::Interdomain {
            remote_dom: own,
            remote_port: rp as u16,
        },
        cx.vcpu,
    )?;
    if let Some(p) = x.ports.get_mut(rp) {
        p.binding = Binding::Interdomain {
            remote_dom: own,
            remote_port: local as u16,
        };
    }
    if let Err(e) = cx.va.write(arg.wrapping_add(8), &local.to_le_bytes()) {
        undo_interdomain(x, local, rp);
        return Err(e);
    }
    Ok(0)
}

fn undo_interdomain(x: &mut Xen, local: u32, remote: u32) {
    let own = x.ports.domid;
    if let Some(p) = x.ports.get_mut(local) {
        *p = FREE;
    }
    if let Some(p) = x.ports.get_mut(remote) {
        p.binding = Binding::Unbound { remote_dom: own };
    }
}

fn bind_virq(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let a: [u8; 12] = cx.va.read_struct(arg)?;
    let virq = u32_at(&a, 0);
    let vcpu = u32_at(&a, 4);
    if virq >= NR_VIRQS {
        return Err(Errno::EINVAL);
    }
    let vcpu = guest_vcpu(cx, vcpu)?;
    if !virq_is_per_vcpu(virq) && vcpu != 0 {
        return Err(Errno::EINVAL);
    }
    if x.ports.virq_port(vcpu, virq).is_some() {
        return Err(Errno::EEXIST);
    }
    let port = x.ports.alloc(Binding::Virq(virq as u8), vcpu)?;
    if let Err(e) = cx.va.write(arg.wrapping_add(8), &port.to_le_bytes()) {
        if let Some(p) = x.ports.get_mut(port) {
            *p = FREE;
        }
        return Err(e);
    }
    if let Some(slot) = x
        .ports
        .virq
        .get_mut(vcpu as usize)
        .and_then(|v| v.get_mut(virq as usize))
    {
        *slot = port as u16;
    }
    Ok(0)
}

fn bind_ipi(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let a: [u8; 8] = cx.va.read_struct(arg)?;
    let vcpu = guest_vcpu(cx, u32_at(&a, 0))?;
    let port = x.ports.alloc(Binding::Ipi, vcpu)?;
    if let Err(e) = cx.va.write(arg.wrapping_add(4), &port.to_le_bytes()) {
        if let Some(p) = x.ports.get_mut(port) {
            *p = FREE;
        }
        return Err(e);
    }
    Ok(0)
}

fn alloc_unbound(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let a: [u8; 8] = cx.va.read_struct(arg)?;
    let dom = u16_at(&a, 0);
    let remote = u16_at(&a, 2);
    if !x.ports.is_self(dom) {
        return Err(Errno::EPERM);
    }
    let remote_dom = if x.ports.is_self(remote) {
        x.ports.domid
    } else {
        remote
    };
    let port = x.ports.alloc(Binding::Unbound { remote_dom }, 0)?;
    if let Err(e) = cx.va.write(arg.wrapping_add(4), &port.to_le_bytes()) {
        if let Some(p) = x.ports.get_mut(port) {
            *p = FREE;
        }
        return Err(e);
    }
    Ok(0)
}

fn close(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let port = guest_port(cx.va.read_u32(arg)?)?;
    let p = *x.ports.get(port).ok_or(Errno::EINVAL)?;
    match p.binding {
        Binding::Free => return Err(Errno::EINVAL),
        Binding::Virq(v) => {
            // The table entry that names this port, wherever the port's notify vCPU is now:
            // `bind_vcpu` moves a domain-wide VIRQ's port without moving its entry.
            for per_vcpu in x.ports.virq.iter_mut() {
                if let Some(slot) = per_vcpu.get_mut(usize::from(v))
                    && u32::from(*slot) == port
                {
                    *slot = 0;
                }
            }
        }
        Binding::Interdomain {
            remote_dom,
            remote_port,
        } if x.ports.is_self(remote_dom) => {
            let own = x.ports.domid;
            if let Some(peer) = x.ports.get_mut(u32::from(remote_port)) {
                peer.binding = Binding::Unbound { remote_dom: own };
            }
        }
        _ => {}
    }
    if port == CONSOLE_PORT {
        x.ports.console_open = false;
    }
    if let Some(w) = x.ports.kicks.get_mut((port / 64) as usize) {
        *w &= !(1u64 << (port % 64));
    }
    if let Some(slot) = x.ports.get_mut(port) {
        *slot = FREE;
    }
    Ok(0)
}

fn send(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let port = guest_port(cx.va.read_u32(arg)?)?;
    let p = *x.ports.get(port).ok_or(Errno::EINVAL)?;
    match p.binding {
        Binding::Free | Binding::Virq(_) => Err(Errno::EINVAL),
        // Nobody listens yet: the notification is dropped, as on Xen.
        Binding::Unbound { .. } => Ok(0),
        Binding::Ipi => {
            set_pending(x, cx.mem, cx.host, port);
            Ok(0)
        }
        Binding::Interdomain {
            remote_dom,
            remote_port,
        } => {
            if x.ports.is_self(remote_dom) {
                set_pending(x, cx.mem, cx.host, u32::from(remote_port));
            } else if port == CONSOLE_PORT && x.ports.console_open {
                crate::console::drain_ring(x, cx.mem, cx.host);
            } else if port == STORE_PORT && x.cfg.store_pfn.is_some() {
                crate::xenstore_service(x, cx.mem, cx.host);
            } else if !crate::blkback::notified(x, port) {
                x.ports.kick(port);
            }
            Ok(0)
        }
    }
}

const EVTCHNSTAT_CLOSED: u32 = 0;
const EVTCHNSTAT_UNBOUND: u32 = 1;
const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
const EVTCHNSTAT_VIRQ: u32 = 4;
const EVTCHNSTAT_IPI: u32 = 5;

fn status(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let a: [u8; 8] = cx.va.read_struct(arg)?;
    if !x.ports.is_self(u16_at(&a, 0)) {
        return Err(Errno::ESRCH);
    }
    let raw = u32_at(&a, 4);
    if raw >= MAX_PORTS {
        return Err(Errno::EINVAL);
    }
    let vcpu = x.ports.notify_vcpu(raw);
    let mut out = [0u8; 16];
    let (st, u): (u32, [u8; 8]) = match x.ports.status(raw).ok_or(Errno::EINVAL)? {
        PortStatus::Closed => (EVTCHNSTAT_CLOSED, [0; 8]),
        PortStatus::Unbound { remote_dom } => {
            let mut u = [0; 8];
            u[0..2].copy_from_slice(&remote_dom.to_le_bytes());
            (EVTCHNSTAT_UNBOUND, u)
        }
        PortStatus::Interdomain {
            remote_dom,
            remote_port,
        } => {
            let mut u = [0; 8];
            u[0..2].copy_from_slice(&remote_dom.to_le_bytes());
            u[4..8].copy_from_slice(&remote_port.to_le_bytes());
            (EVTCHNSTAT_INTERDOMAIN, u)
        }
        PortStatus::Virq { virq, .. } => {
            let mut u = [0; 8];
            u[0..4].copy_from_slice(&virq.to_le_bytes());
            (EVTCHNSTAT_VIRQ, u)
        }
        PortStatus::Ipi { .. } => (EVTCHNSTAT_IPI, [0; 8]),
    };
    out[0..4].copy_from_slice(&st.to_le_bytes());
    out[4..8].copy_from_slice(&vcpu.to_le_bytes());
    out[8..16].copy_from_slice(&u);
    cx.va.write(arg.wrapping_add(8), &out)?;
    Ok(0)
}

fn bind_vcpu(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let a: [u8; 8] = cx.va.read_struct(arg)?;
    let port = guest_port(u32_at(&a, 0))?;
    let vcpu = guest_vcpu(cx, u32_at(&a, 4))?;
    let p = x.ports.get_mut(port).ok_or(Errno::EINVAL)?;
    match p.binding {
        Binding::Unbound { .. } | Binding::Interdomain { .. } => {}
        Binding::Virq(v) if !virq_is_per_vcpu(u32::from(v)) => {}
        _ => return Err(Errno::EINVAL),
    }
    p.vcpu = vcpu as u8;
    // Something already pending and unmasked must now reach the new vCPU.
    if let Some(si) = x.shared_info
        && is_set(cx.mem, si, EVTCHN_PENDING, port)
        && !is_set(cx.mem, si, EVTCHN_MASK, port)
    {
        mark_events_pending(x, cx.mem, cx.host, vcpu, port);
    }
    Ok(0)
}

fn unmask(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let raw = cx.va.read_u32(arg)?;
    if raw >= MAX_PORTS {
        return Err(Errno::EINVAL);
    }
    let Some(si) = x.shared_info else {
        return Ok(0);
    };
    let (w, b) = port_word(si, EVTCHN_MASK, raw);
    let old = cx
        .host
        .guest_fetch_and_u64(cx.mem, w, !b)
        .map_err(|_| Errno::EFAULT)?;
    if old & b != 0 && is_set(cx.mem, si, EVTCHN_PENDING, raw) {
        let v = x.ports.notify_vcpu(raw);
        mark_events_pending(x, cx.mem, cx.host, v, raw);
    }
    Ok(0)
}
