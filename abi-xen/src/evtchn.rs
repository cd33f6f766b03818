//! 2-level event channels: the port table, the `EVTCHNOP_*` operations and delivery into
//! shared_info's pending/mask bitmaps and the target vCPU's vcpu_info.
//!
//! The guest owns the mask bits and clears pending bits; the hypervisor only sets pending
//! (and clears a mask on `EVTCHNOP_unmask`). Those words are shared with running vCPUs, so
//! every update goes through the host's atomic fetch-or/fetch-and.

use crate::errno::Errno;
use crate::guest::{u16_at, u32_at};
use crate::hypercall::{Cx, Outcome};
use crate::shared_info::{
    EVTCHN_MASK, EVTCHN_PENDING, VI_PENDING_SEL, VI_UPCALL_PENDING, port_word,
};
use crate::{CONSOLE_PORT, Config, DOMID_SELF, MAX_PORTS, MAX_VCPUS, STORE_PORT, Wait, Xen};
use virt::GuestMemory;
use virt::personality::Host;

pub const BIND_INTERDOMAIN: u64 = 0;
pub const BIND_VIRQ: u64 = 1;
pub const CLOSE: u64 = 3;
pub const SEND: u64 = 4;
pub const STATUS: u64 = 5;
pub const ALLOC_UNBOUND: u64 = 6;
pub const BIND_IPI: u64 = 7;
pub const BIND_VCPU: u64 = 8;
pub const UNMASK: u64 = 9;

/// `NR_VIRQS`.
pub const NR_VIRQS: u32 = 24;
pub const VIRQ_TIMER: u32 = 0;

/// VIRQs bound per vCPU (timer, debug, xenoprof, xenpmu); the rest are domain-wide and bind
/// on vCPU 0 only.
fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, 0 | 1 | 7 | 13)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binding {
    Free,
    /// Allocated, waiting for `remote_dom` to connect.
    Unbound {
        remote_dom: u16,
    },
    /// Connected: to this same domain (a loopback pair) or to a backend in domain 0.
    Interdomain {
        remote_dom: u16,
        remote_port: u16,
    },
    Virq(u8),
    Ipi,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Port {
    binding: Binding,
    /// The vCPU notified when the port becomes pending.
    vcpu: u8,
}

const FREE: Port = Port {
    binding: Binding::Free,
    vcpu: 0,
};

/// What `EVTCHNOP_status` reports for a port (also for the kernel's diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PortStatus {
    Closed,
    Unbound { remote_dom: u16 },
    Interdomain { remote_dom: u16, remote_port: u32 },
    Virq { virq: u32, vcpu: u32 },
    Ipi { vcpu: u32 },
}

pub(crate) struct Ports {
    table: [Port; MAX_PORTS as usize],
    virq: [[u16; NR_VIRQS as usize]; MAX_VCPUS as usize],
    kicks: [u64; (MAX_PORTS / 64) as usize],
    domid: u16,
    console_open: bool,
}

impl Ports {
    pub fn new(cfg: &Config) -> Self {
        let mut p = Ports {
            table: [FREE; MAX_PORTS as usize],
            virq: [[0; NR_VIRQS as usize]; MAX_VCPUS as usize],
            kicks: [0; (MAX_PORTS / 64) as usize],
            domid: cfg.domid,
            console_open: cfg.console_pfn.is_some(),
        };
        // Linux treats these as already connected to their backends and never binds them.
        if cfg.console_pfn.is_some() {
            p.table[CONSOLE_PORT as usize].binding = Binding::Interdomain {
                remote_dom: 0,
                remote_port: CONSOLE_PORT as u16,
            };
        }
        if cfg.store_pfn.is_some() {
            p.table[STORE_PORT as usize].binding = Binding::Interdomain {
                remote_dom: 0,
                remote_port: STORE_PORT as u16,
            };
        }
        p
    }

    fn get(&self, port: u32) -> Option<&Port> {
        self.table.get(port as usize)
    }

    fn get_mut(&mut self, port: u32) -> Option<&mut Port> {
        self.table.get_mut(port as usize)
    }

    pub fn is_bound(&self, port: u32) -> bool {
        port != 0 && self.get(port).is_some_and(|p| p.binding != Binding::Free)
    }

    pub fn notify_vcpu(&self, port: u32) -> u32 {
        self.get(port).map_or(0, |p| u32::from(p.vcpu))
    }

    /// The port bound to `virq` on `vcpu`, if any.
    pub fn virq_port(&self, vcpu: u32, virq: u32) -> Option<u32> {
        let p = *self.virq.get(vcpu as usize)?.get(virq as usize)?;
        (p != 0).then_some(u32::from(p))
    }

    fn is_self(&self, dom: u16) -> bool {
        dom == DOMID_SELF || dom == self.domid
    }

    fn alloc(&mut self, binding: Binding, vcpu: u32) -> Result<u32, Errno> {
        let idx = (1..MAX_PORTS)
            .find(|&p| self.table[p as usize].binding == Binding::Free)
            .ok_or(Errno::ENOSPC)?;
        let slot = self.get_mut(idx).ok_or(Errno::ENOSPC)?;
        slot.binding = binding;
        slot.vcpu = vcpu as u8;
        Ok(idx)
    }

    pub fn take_kick(&mut self) -> Option<u32> {
        for (w, word) in self.kicks.iter_mut().enumerate() {
            if *word != 0 {
                let bit = word.trailing_zeros();
                *word &= !(1u64 << bit);
                return Some(w as u32 * 64 + bit);
            }
        }
        None
    }

    fn kick(&mut self, port: u32) {
        if let Some(w) = self.kicks.get_mut((port / 64) as usize) {
            *w |= 1 << (port % 64);
        }
    }

    pub fn backend_bind(&mut self, port: u32) -> Result<(), Errno> {
        let p = self
            .get_mut(port)
            .filter(|_| port != 0)
            .ok_or(Errno::EINVAL)?;
        match p.binding {
            Binding::Unbound { remote_dom: 0 } => {
                p.binding = Binding::Interdomain {
                    remote_dom: 0,
                    remote_port: port as u16,
                };
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    pub fn status(&self, port: u32) -> Option<PortStatus> {
        let p = self.get(port)?;
        Some(match p.binding {
            Binding::Free => PortStatus::Closed,
            Binding::Unbound { remote_dom } => PortStatus::Unbound { remote_dom },
            Binding::Interdomain {
                remote_dom,
                remote_port,
            } => PortStatus::Interdomain {
                remote_dom,
                remote_port: u32::from(remote_port),
            },
            Binding::Virq(v) => PortStatus::Virq {
                virq: u32::from(v),
                vcpu: u32::from(p.vcpu),
            },
            Binding::Ipi => PortStatus::Ipi {
                vcpu: u32::from(p.vcpu),
            },
        })
    }
}

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
            if let Some(slot) = x
                .ports
                .virq
                .get_mut(usize::from(p.vcpu))
                .and_then(|s| s.get_mut(usize::from(v)))
            {
                *slot = 0;
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
            } else {
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

fn is_set(mem: &dyn GuestMemory, si: u64, bitmap: u64, port: u32) -> bool {
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
