//! 2-level event channels: binding, loopback, masking, upcall delivery, status, errors.

mod common;
use common::*;
use virt::GuestMemory;

fn alloc_unbound(e: &mut Env, remote: u16) -> (i64, u32) {
    let mut a = [0u8; 8];
    a[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
    a[2..4].copy_from_slice(&remote.to_le_bytes());
    let r = e.evtchn(6, &a);
    (r, e.u32_at(ARG + 4))
}

fn bind_interdomain(e: &mut Env, remote_dom: u16, remote_port: u32) -> (i64, u32) {
    let mut a = [0u8; 12];
    a[0..2].copy_from_slice(&remote_dom.to_le_bytes());
    a[4..8].copy_from_slice(&remote_port.to_le_bytes());
    let r = e.evtchn(0, &a);
    (r, e.u32_at(ARG + 8))
}

/// (status, vcpu, union word 0, union word 1)
fn status(e: &mut Env, port: u32) -> (i64, [u32; 4]) {
    let mut a = [0u8; 24];
    a[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
    a[4..8].copy_from_slice(&port.to_le_bytes());
    let r = e.evtchn(5, &a);
    (
        r,
        [
            e.u32_at(ARG + 8),
            e.u32_at(ARG + 12),
            e.u32_at(ARG + 16),
            e.u32_at(ARG + 20),
        ],
    )
}

#[test]
fn console_port_is_prebound_and_ports_allocate_upwards() {
    let mut e = Env::new();
    e.boot();
    assert_eq!(status(&mut e, 1), (0, [2, 0, 0, 1]), "interdomain to dom0");
    let (r, p) = e.bind_virq(0, 0);
    assert_eq!((r, p), (0, 2));
    assert_eq!(status(&mut e, p), (0, [4, 0, 0, 0]));
    assert_eq!(e.bind_ipi(1), 3);
    assert_eq!(status(&mut e, 3), (0, [5, 1, 0, 0]));
    assert_eq!(status(&mut e, 50).1[0], 0, "closed");
    assert_eq!(status(&mut e, 5000).0, EINVAL);
}

#[test]
fn bind_virq_validation() {
    let mut e = Env::new();
    e.boot();
    assert_eq!(e.bind_virq(0, 0).0, 0);
    assert_eq!(e.bind_virq(0, 0).0, EEXIST);
    assert_eq!(e.bind_virq(0, 1).0, 0, "per-vCPU timer on vCPU 1");
    assert_eq!(e.bind_virq(24, 0).0, EINVAL);
    assert_eq!(e.bind_virq(u32::MAX, 0).0, EINVAL);
    assert_eq!(e.bind_virq(0, 2).0, ENOENT);
    assert_eq!(e.bind_virq(2, 1).0, EINVAL, "global VIRQ on vCPU 1");
    assert_eq!(e.bind_virq(2, 0).0, 0);
    assert_eq!(e.call(op::EVENT_CHANNEL_OP, 1, UNMAPPED, 0), EFAULT);
}

#[test]
fn ipi_send_sets_pending_selector_and_raises_the_callback_vector() {
    let mut e = Env::new();
    e.boot();
    let port = e.bind_ipi(1);
    e.host.raised.clear();
    assert_eq!(e.send(port), 0);
    assert!(e.pending(port));
    let vi1 = e.shared_info() + 64;
    assert_eq!(e.mem.read_u8(vi1).unwrap(), 1, "upcall_pending on vCPU 1");
    assert_eq!(e.u64_at(vi1 + 8), 1 << (port / 64));
    assert_eq!(
        e.host.raised,
        vec![(1, VECTOR, false)],
        "no EOI for the callback vector"
    );
    assert!(e.host.kicks.contains(&1));
    // Already pending: nothing more.
    assert_eq!(e.send(port), 0);
    assert_eq!(e.host.raised.len(), 1);
}

#[test]
fn masked_ports_wait_for_unmask() {
    let mut e = Env::new();
    e.boot();
    let port = e.bind_ipi(0);
    e.set_mask(port, true);
    e.host.raised.clear();
    assert_eq!(e.send(port), 0);
    assert!(e.pending(port));
    assert!(e.host.raised.is_empty());
    assert_eq!(e.mem.read_u8(e.shared_info()).unwrap(), 0);
    assert_eq!(e.evtchn(9, &port.to_le_bytes()), 0);
    assert_eq!(e.host.raised, vec![(0, VECTOR, false)]);
    let mask = e.u64_at(e.shared_info() + 2560);
    assert_eq!(mask & (1 << port), 0, "unmask cleared the mask bit");
    assert_eq!(e.evtchn(9, &5000u32.to_le_bytes()), EINVAL);
}

#[test]
fn interdomain_loopback_within_the_domain() {
    let mut e = Env::new();
    e.boot();
    let (r, a) = alloc_unbound(&mut e, 0x7ff0);
    assert_eq!(r, 0);
    assert_eq!(
        status(&mut e, a),
        (0, [1, 0, 1, 0]),
        "unbound, remote = own domid"
    );
    let (r, b) = bind_interdomain(&mut e, 0x7ff0, a);
    assert_eq!(r, 0);
    assert_ne!(a, b);
    assert_eq!(status(&mut e, a).1, [2, 0, 1, b]);
    assert_eq!(e.send(a), 0);
    assert!(e.pending(b) && !e.pending(a));
    assert_eq!(e.send(b), 0);
    assert!(e.pending(a));
    // Binding again to a connected port, to a free one, to dom0 or a missing domain fails.
    assert_eq!(bind_interdomain(&mut e, 0x7ff0, a).0, EINVAL);
    assert_eq!(bind_interdomain(&mut e, 0x7ff0, 900).0, EINVAL);
    assert_eq!(bind_interdomain(&mut e, 0x7ff0, 0).0, EINVAL);
    assert_eq!(bind_interdomain(&mut e, 0, a).0, EINVAL);
    assert_eq!(bind_interdomain(&mut e, 7, a).0, ESRCH);
    // Closing one end leaves the other unbound; sends to it are dropped.
    assert_eq!(e.evtchn(3, &b.to_le_bytes()), 0);
    assert_eq!(status(&mut e, a).1[0], 1);
    e.clear_pending(a);
    assert_eq!(e.send(a), 0);
    assert!(!e.pending(a));
    assert_eq!(e.evtchn(3, &b.to_le_bytes()), EINVAL, "already closed");
}

#[test]
fn send_and_close_errors() {
    let mut e = Env::new();
    e.boot();
    let (_, timer) = e.bind_virq(0, 0);
    assert_eq!(e.send(timer), EINVAL, "VIRQ ports cannot be sent to");
    assert_eq!(e.send(0), EINVAL);
    assert_eq!(e.send(900), EINVAL, "free port");
    assert_eq!(e.send(1 << 20), EINVAL);
    assert_eq!(e.call(op::EVENT_CHANNEL_OP, 4, UNMAPPED, 0), EFAULT);
    assert_eq!(e.evtchn(3, &0u32.to_le_bytes()), EINVAL);
    // Closing a VIRQ port frees the VIRQ for rebinding.
    assert_eq!(e.evtchn(3, &timer.to_le_bytes()), 0);
    assert_eq!(e.bind_virq(0, 0).0, 0);
    // FIFO ABI and unknown commands.
    assert_eq!(e.evtchn(11, &[0; 16]), ENOSYS);
    assert_eq!(e.evtchn(13, &[0; 16]), ENOSYS);
    assert_eq!(e.evtchn(1000, &[0; 16]), ENOSYS);
}

#[test]
fn bind_vcpu_moves_delivery() {
    let mut e = Env::new();
    e.boot();
    let (_, port) = alloc_unbound(&mut e, 0);
    let mut a = [0u8; 8];
    a[0..4].copy_from_slice(&port.to_le_bytes());
    a[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(e.evtchn(8, &a), 0);
    assert_eq!(status(&mut e, port).1[1], 1);
    e.xen.backend_bind(port).unwrap();
    e.host.raised.clear();
    e.xen.notify_guest(port, &e.mem, &mut e.host).unwrap();
    assert_eq!(e.host.raised, vec![(1, VECTOR, false)]);
    // IPI and per-vCPU VIRQ ports stay where they are; bad vCPUs and ports are refused.
    let ipi = e.bind_ipi(0);
    a[0..4].copy_from_slice(&ipi.to_le_bytes());
    assert_eq!(e.evtchn(8, &a), EINVAL);
    a[0..4].copy_from_slice(&port.to_le_bytes());
    a[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert_eq!(e.evtchn(8, &a), ENOENT);
}

#[test]
fn backend_ports_kick_the_backend() {
    let mut cfg = config();
    cfg.store_pfn = Some(STORE_PFN);
    let mut e = Env::with(cfg, 1);
    e.boot();
    assert_eq!(e.send(2), 0, "the store port is pre-bound");
    assert_eq!(e.xen.take_backend_kick(), None, "served by the personality");
    let (_, p) = alloc_unbound(&mut e, 0);
    assert_eq!(e.send(p), 0, "unbound: dropped");
    assert_eq!(e.xen.take_backend_kick(), None);
    assert!(e.xen.backend_bind(p).is_ok());
    assert!(e.xen.backend_bind(p).is_err(), "bound once");
    assert_eq!(e.send(p), 0);
    assert_eq!(e.xen.take_backend_kick(), Some(p));
    assert!(e.xen.notify_guest(p, &e.mem, &mut e.host).is_ok());
    assert!(e.pending(p));
    assert!(e.xen.notify_guest(0, &e.mem, &mut e.host).is_err());
    assert!(e.xen.notify_guest(700, &e.mem, &mut e.host).is_err());
}

#[test]
fn per_vcpu_upcall_vector_is_eoied_and_wins() {
    let mut e = Env::new();
    e.boot();
    let mut a = [0u8; 8];
    a[0..4].copy_from_slice(&1u32.to_le_bytes());
    a[4] = 0xE0;
    let p = e.arg(ARG, &a);
    assert_eq!(e.call(op::HVM_OP, 23, p, 0), 0);
    let port = e.bind_ipi(1);
    e.host.raised.clear();
    e.send(port);
    assert_eq!(e.host.raised, vec![(1, 0xE0, true)]);
    // vCPU 0 still uses the global callback vector.
    let port0 = e.bind_ipi(0);
    e.send(port0);
    assert_eq!(e.host.raised[1], (0, VECTOR, false));
    a[4] = 0x0F;
    let p = e.arg(ARG, &a);
    assert_eq!(e.call(op::HVM_OP, 23, p, 0), EINVAL);
    a[0..4].copy_from_slice(&2u32.to_le_bytes());
    a[4] = 0xE0;
    let p = e.arg(ARG, &a);
    assert_eq!(e.call(op::HVM_OP, 23, p, 0), ENOENT);
}

#[test]
fn events_before_shared_info_are_harmless() {
    let mut e = Env::new();
    let port = e.bind_ipi(0);
    assert_eq!(e.send(port), 0);
    assert!(e.host.raised.is_empty());
    assert_eq!(
        e.evtchn(9, &port.to_le_bytes()),
        0,
        "unmask without shared_info"
    );
}

#[test]
fn closing_a_moved_global_virq_frees_its_binding() {
    let mut e = Env::new();
    e.boot();
    // VIRQ_CONSOLE (2) is domain-wide: bound on vCPU 0, then moved to vCPU 1.
    let (r, port) = e.bind_virq(2, 0);
    assert_eq!(r, 0);
    let mut a = [0u8; 8];
    a[0..4].copy_from_slice(&port.to_le_bytes());
    a[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(e.evtchn(8, &a), 0);
    assert_eq!(e.evtchn(3, &port.to_le_bytes()), 0, "closed");
    // The binding went with the port: the VIRQ binds again.
    let (r, again) = e.bind_virq(2, 0);
    assert_eq!(r, 0, "VIRQ_CONSOLE binds again after its port was closed");
    assert_eq!(status(&mut e, again).1[0], 4, "bound to a VIRQ");
}
