//! VCPUOP registration and timers, timer expiry into VIRQ_TIMER, SCHEDOP.

mod common;
use common::*;
use virt::GuestMemory;
use virt::personality::{Action, Personality, StopReason};

fn vcpu_op(e: &mut Env, caller: u32, cmd: u64, vcpu: u64, data: &[u8]) -> i64 {
    let p = e.arg(ARG, data);
    e.call_on(caller, op::VCPU_OP, [cmd, vcpu, p, 0, 0]).0
}

fn register_vcpu_info(e: &mut Env, vcpu: u64, gfn: u64, offset: u32) -> i64 {
    let mut a = [0u8; 16];
    a[0..8].copy_from_slice(&gfn.to_le_bytes());
    a[8..12].copy_from_slice(&offset.to_le_bytes());
    vcpu_op(e, 0, 10, vcpu, &a)
}

fn singleshot(e: &mut Env, caller: u32, deadline: u64, flags: u32) -> i64 {
    let mut a = [0u8; 16];
    a[0..8].copy_from_slice(&deadline.to_le_bytes());
    a[8..12].copy_from_slice(&flags.to_le_bytes());
    vcpu_op(e, caller, 8, u64::from(caller), &a)
}

#[test]
fn register_vcpu_info_moves_state_and_clock() {
    let mut e = Env::new();
    e.boot();
    let port = e.bind_ipi(1);
    e.set_mask(port, true);
    e.send(port);
    // Pending selector state in the legacy slot travels with the registration.
    let legacy = e.shared_info() + 64;
    e.mem.write_u64(legacy + 8, 0xABC).unwrap();
    assert_eq!(register_vcpu_info(&mut e, 1, 0x40, 0x80), 0);
    let vi = (0x40 << 12) + 0x80;
    assert_eq!(e.u64_at(vi + 8), 0xABC);
    let tsc = virt::personality::Host::tsc(&e.host);
    assert!(read_pvclock(&e.mem, vi + 32, tsc).abs_diff(e.host.ns) <= 2);
    assert_eq!(register_vcpu_info(&mut e, 1, 0x41, 0), EBUSY);
    // Delivery goes to the new location.
    e.host.raised.clear();
    e.evtchn(9, &port.to_le_bytes());
    assert_eq!(e.mem.read_u8(vi).unwrap(), 1);
    // Offsets that cross the page or break alignment; frames outside RAM; bad vCPUs.
    assert_eq!(register_vcpu_info(&mut e, 0, 0x41, 4096 - 32), EINVAL);
    assert_eq!(register_vcpu_info(&mut e, 0, 0x41, 4), EINVAL);
    assert_eq!(register_vcpu_info(&mut e, 0, RAM as u64 >> 12, 0), EINVAL);
    assert_eq!(register_vcpu_info(&mut e, 0, u64::MAX, 0), EINVAL);
    assert_eq!(register_vcpu_info(&mut e, 7, 0x41, 0), ENOENT);
    assert_eq!(register_vcpu_info(&mut e, 1 << 40, 0x41, 0), ENOENT);
    // A running other vCPU cannot be re-pointed.
    e.host.up = Some(vec![true, true]);
    let mut e2 = Env::new();
    e2.host.up = Some(vec![true, true]);
    assert_eq!(register_vcpu_info(&mut e2, 1, 0x41, 0), EINVAL);
    assert_eq!(register_vcpu_info(&mut e2, 0, 0x41, 0), 0);
    assert_eq!(vcpu_op(&mut e2, 0, 3, 1, &[]), 1, "is_up from the host");
    assert_eq!(vcpu_op(&mut e, 0, 3, 1, &[]), 1);
    let mut e3 = Env::new();
    assert_eq!(
        vcpu_op(&mut e3, 0, 3, 1, &[]),
        ENOSYS,
        "host does not track it"
    );
}

#[test]
fn runstate_area_by_virtual_address_may_straddle_pages() {
    let mut e = Env::new();
    e.boot();
    let area = 0x50000 - 16; // 16 bytes in one page, 32 in the next
    e.mem.write(area, &[0xFF; 48]).unwrap();
    let p = e.arg(ARG, &va(area).to_le_bytes());
    assert_eq!(e.call(op::VCPU_OP, 5, 0, p), 0);
    assert_eq!(e.u32_at(area), 0, "running");
    assert!(e.u64_at(area + 8).abs_diff(e.host.ns) <= 2, "entry time");
    assert_eq!(e.u64_at(area + 16), 0);
    assert_eq!(e.u64_at(area + 40), 0);
    let p = e.arg(ARG, &UNMAPPED.to_le_bytes());
    assert_eq!(e.call(op::VCPU_OP, 5, 0, p), EFAULT);
    assert_eq!(e.call(op::VCPU_OP, 5, 0, UNMAPPED), EFAULT);
    let p = e.arg(ARG, &0u64.to_le_bytes());
    assert_eq!(e.call(op::VCPU_OP, 5, 0, p), 0, "NULL unregisters");
    // Secondary time area (vDSO): one page only.
    let p = e.arg(ARG, &va(0x60000).to_le_bytes());
    assert_eq!(e.call(op::VCPU_OP, 13, 0, p), 0);
    assert!(
        read_pvclock(&e.mem, 0x60000, virt::personality::Host::tsc(&e.host)).abs_diff(e.host.ns)
            <= 2
    );
    let p = e.arg(ARG, &va(0x61000 - 8).to_le_bytes());
    assert_eq!(e.call(op::VCPU_OP, 13, 0, p), EINVAL);
}

#[test]
fn singleshot_timer_expiry_delivers_virq_timer() {
    let mut e = Env::new();
    e.boot();
    let (_, port) = e.bind_virq(0, 0);
    assert_eq!(
        vcpu_op(&mut e, 0, 7, 0, &[]),
        0,
        "stop_periodic selects the vcpuop clockevent"
    );
    let now = e.xen.system_time(&e.host);
    assert_eq!(singleshot(&mut e, 0, now + 5_000_000, 0), 0);
    let deadline = e.host.timer(0).unwrap();
    assert!(deadline.abs_diff(e.host.ns + 5_000_000) <= 2);
    assert!(!e.pending(port));
    e.host.ns = deadline;
    e.host.raised.clear();
    e.xen.timer_expired(0, &mut e.mem, &mut e.host);
    assert!(e.pending(port));
    assert_eq!(e.host.raised, vec![(0, VECTOR, false)]);
    assert_eq!(e.host.timer(0), None, "nothing left armed");
    // An early host expiry does not fire; it re-arms.
    e.clear_pending(port);
    let now = e.xen.system_time(&e.host);
    singleshot(&mut e, 0, now + 1_000_000, 0);
    e.host.ns += 500_000;
    e.xen.timer_expired(0, &mut e.mem, &mut e.host);
    assert!(!e.pending(port));
    assert!(e.host.timer(0).is_some());
    // Stop cancels.
    assert_eq!(vcpu_op(&mut e, 0, 9, 0, &[]), 0);
    assert_eq!(e.host.timer(0), None);
}

#[test]
fn singleshot_in_the_past_fires_at_once_and_future_flag_refuses() {
    let mut e = Env::new();
    e.boot();
    let (_, port) = e.bind_virq(0, 0);
    assert_eq!(
        singleshot(&mut e, 0, 1, 1),
        -62,
        "VCPU_SSHOTTMR_future: -ETIME"
    );
    assert!(!e.pending(port));
    assert_eq!(singleshot(&mut e, 0, 1, 0), 0);
    assert!(e.pending(port));
    // Only the caller's own timer.
    assert_eq!(vcpu_op(&mut e, 0, 8, 1, &[0; 16]), EINVAL);
    assert_eq!(vcpu_op(&mut e, 0, 9, 1, &[]), EINVAL);
    assert_eq!(e.call(op::VCPU_OP, 8, 0, UNMAPPED), EFAULT);
    // Legacy set_timer_op: absolute deadline, 0 cancels.
    e.clear_pending(port);
    let now = e.xen.system_time(&e.host);
    assert_eq!(e.call(op::SET_TIMER_OP, now + 1_000_000, 0, 0), 0);
    assert!(e.host.timer(0).is_some());
    assert_eq!(e.call(op::SET_TIMER_OP, 0, 0, 0), 0);
    assert_eq!(e.host.timer(0), None);
}

#[test]
fn periodic_timer() {
    let mut e = Env::new();
    e.boot();
    let (_, port) = e.bind_virq(0, 1);
    assert_eq!(vcpu_op(&mut e, 0, 6, 1, &999_999u64.to_le_bytes()), EINVAL);
    assert_eq!(vcpu_op(&mut e, 0, 6, 1, &u64::MAX.to_le_bytes()), EINVAL);
    assert_eq!(vcpu_op(&mut e, 0, 6, 1, &10_000_000u64.to_le_bytes()), 0);
    for _ in 0..3 {
        let d = e.host.timer(1).unwrap();
        e.host.ns = d;
        e.xen.timer_expired(1, &mut e.mem, &mut e.host);
        assert!(e.pending(port));
        e.clear_pending(port);
        assert!(e.host.timer(1).unwrap() >= d + 9_999_990);
    }
    assert_eq!(vcpu_op(&mut e, 0, 7, 1, &[]), 0);
    assert_eq!(e.host.timer(1), None);
    assert_eq!(vcpu_op(&mut e, 0, 0, 1, &[]), ENOSYS, "initialise");
    assert_eq!(vcpu_op(&mut e, 0, 1, 1, &[]), ENOSYS, "up");
}

#[test]
fn yield_block_and_shutdown() {
    let mut e = Env::new();
    e.boot();
    assert_eq!(e.call_on(0, op::SCHED_OP, [0; 5]), (0, Action::Yield));
    assert_eq!(
        e.call_on(0, op::SCHED_OP, [1, 0, 0, 0, 0]),
        (0, Action::Block)
    );
    assert!(!e.xen.has_pending_work(0, &e.mem));
    let port = e.bind_ipi(1);
    // (bind_ipi ran on vCPU 0 and ended its block: block again, then deliver.)
    e.call_on(0, op::SCHED_OP, [1, 0, 0, 0, 0]);
    let ipi0 = {
        let mut a = [0u8; 8];
        a[0..4].copy_from_slice(&0u32.to_le_bytes());
        let p = e.arg(ARG, &a);
        e.call_on(1, op::EVENT_CHANNEL_OP, [7, p, 0, 0, 0]);
        e.u32_at(ARG + 4)
    };
    assert!(!e.xen.has_pending_work(0, &e.mem));
    let _ = port;
    let p = e.arg(ARG, &ipi0.to_le_bytes());
    e.call_on(1, op::EVENT_CHANNEL_OP, [4, p, 0, 0, 0]);
    assert!(e.xen.has_pending_work(0, &e.mem));

    for (reason, want) in [
        (0u32, Some(StopReason::PowerOff)),
        (1, Some(StopReason::Reset)),
        (3, Some(StopReason::Crash([0; 5]))),
        (2, Some(StopReason::Request(2))),
        (6, None),
    ] {
        let p = e.arg(ARG, &reason.to_le_bytes());
        let (r, act) = e.call_on(0, op::SCHED_OP, [2, p, 0, 0, 0]);
        match want {
            Some(w) => assert_eq!((r, act), (0, Action::Stop(w))),
            None => assert_eq!((r, act), (EINVAL, Action::Done)),
        }
    }
    assert_eq!(e.call_on(0, op::SCHED_OP, [2, UNMAPPED, 0, 0, 0]).0, EFAULT);
    assert_eq!(e.call_on(0, op::SCHED_OP, [7, 0, 0, 0, 0]).0, ENOSYS);
}

fn poll_args(e: &Env, ports: &[u32], timeout: u64) -> u64 {
    let list: Vec<u8> = ports.iter().flat_map(|p| p.to_le_bytes()).collect();
    e.mem.write(ARG + 0x100, &list).unwrap();
    let mut a = [0u8; 24];
    a[0..8].copy_from_slice(&va(ARG + 0x100).to_le_bytes());
    a[8..12].copy_from_slice(&(ports.len() as u32).to_le_bytes());
    a[16..24].copy_from_slice(&timeout.to_le_bytes());
    e.arg(ARG, &a)
}

#[test]
fn poll_blocks_until_a_port_or_the_timeout() {
    let mut e = Env::new();
    e.boot();
    let kicker = e.bind_ipi(1);
    e.set_mask(kicker, true); // poll ignores masks
    // Already pending: returns at once.
    e.send(kicker);
    let p = poll_args(&e, &[kicker], 0);
    assert_eq!(
        e.call_on(1, op::SCHED_OP, [3, p, 0, 0, 0]),
        (0, Action::Done)
    );
    e.clear_pending(kicker);
    // Blocks; a send wakes it (kick + pending work).
    let p = poll_args(&e, &[kicker], 0);
    assert_eq!(
        e.call_on(1, op::SCHED_OP, [3, p, 0, 0, 0]),
        (0, Action::Block)
    );
    assert!(!e.xen.has_pending_work(1, &e.mem));
    e.host.kicks.clear();
    let p = e.arg(ARG, &kicker.to_le_bytes());
    e.call_on(0, op::EVENT_CHANNEL_OP, [4, p, 0, 0, 0]);
    assert!(e.host.kicks.contains(&1));
    assert!(e.xen.has_pending_work(1, &e.mem));
    e.clear_pending(kicker);
    // Timeout.
    let now = e.xen.system_time(&e.host);
    let p = poll_args(&e, &[kicker], now + 2_000_000);
    assert_eq!(
        e.call_on(1, op::SCHED_OP, [3, p, 0, 0, 0]),
        (0, Action::Block)
    );
    e.host.ns = e.host.timer(1).unwrap();
    e.xen.timer_expired(1, &mut e.mem, &mut e.host);
    assert!(e.xen.has_pending_work(1, &e.mem));
    // A timeout already past, too many ports to watch: spurious immediate return.
    let p = poll_args(&e, &[kicker], 1);
    assert_eq!(
        e.call_on(1, op::SCHED_OP, [3, p, 0, 0, 0]),
        (0, Action::Done)
    );
    let p = poll_args(&e, &[kicker; 9], 0);
    assert_eq!(
        e.call_on(1, op::SCHED_OP, [3, p, 0, 0, 0]),
        (0, Action::Done)
    );
    // Errors.
    let p = poll_args(&e, &[5000], 0);
    assert_eq!(e.call_on(1, op::SCHED_OP, [3, p, 0, 0, 0]).0, EINVAL);
    let p = poll_args(&e, &[kicker; 129], 0);
    assert_eq!(e.call_on(1, op::SCHED_OP, [3, p, 0, 0, 0]).0, EINVAL);
    let mut a = [0u8; 24];
    a[0..8].copy_from_slice(&UNMAPPED.to_le_bytes());
    a[8] = 1;
    let p = e.arg(ARG, &a);
    assert_eq!(e.call_on(1, op::SCHED_OP, [3, p, 0, 0, 0]).0, EFAULT);
}
