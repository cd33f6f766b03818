//! HVM params, CONSOLEIO, the PV console ring behind hvc0, and port 0xE9.

mod common;
use common::*;
use virt::GuestMemory;
use virt::personality::{Action, Personality};

fn get_param(e: &mut Env, index: u32) -> (i64, u64) {
    let p = e.arg(ARG, &param(index, 0xdead));
    let r = e.call(op::HVM_OP, 1, p, 0);
    (r, e.u64_at(ARG + 8))
}

#[test]
fn hvm_params_for_console_store_and_callback() {
    let mut e = Env::new();
    assert_eq!(get_param(&mut e, 17), (0, CONSOLE_PFN));
    assert_eq!(get_param(&mut e, 18), (0, 1));
    assert_eq!(get_param(&mut e, 1), (0, 0), "no xenstore configured");
    assert_eq!(get_param(&mut e, 2), (0, 0));
    e.boot();
    assert_eq!(get_param(&mut e, 0), (0, (2 << 56) | 0xF3));
    assert_eq!(get_param(&mut e, 38).0, ENOSYS);
    assert_eq!(get_param(&mut e, 39).0, EINVAL);
    let u = std::iter::from_fn(|| e.xen.take_unimplemented())
        .last()
        .unwrap();
    assert_eq!((u.op, u.sub, u.detail), (34, Some(1), 38));
    for (index, value, want) in [
        (17u32, 5u64, EPERM),
        (2, 5, EPERM),
        (0, (2 << 56) | 0x05, EINVAL),
        (0, 3 << 56, EINVAL),
        (0, 7, ENOSYS), // a GSI: no IOAPIC to route it
        (0, 1 << 56, ENOSYS),
        (0, 0, 0),
        (30, 1, ENOSYS),
    ] {
        let p = e.arg(ARG, &param(index, value));
        assert_eq!(e.call(op::HVM_OP, 0, p, 0), want, "{index} {value:#x}");
    }
    let mut other = param(0, (2 << 56) | 0xF3);
    other[0] = 9;
    other[1] = 0;
    let p = e.arg(ARG, &other);
    assert_eq!(e.call(op::HVM_OP, 0, p, 0), ESRCH);
    assert_eq!(e.call(op::HVM_OP, 1, UNMAPPED, 0), EFAULT);

    let mut cfg = config();
    cfg.store_pfn = Some(STORE_PFN);
    let mut e = Env::with(cfg, 1);
    assert_eq!(get_param(&mut e, 1), (0, STORE_PFN));
    assert_eq!(get_param(&mut e, 2), (0, 2));
}

#[test]
fn gsi_after_per_vcpu_vectors_is_accepted() {
    let mut e = Env::new();
    e.boot();
    let mut a = [0u8; 8];
    a[4] = 0xF3;
    let p = e.arg(ARG, &a);
    assert_eq!(e.call(op::HVM_OP, 23, p, 0), 0);
    let p = e.arg(ARG, &param(0, 1));
    assert_eq!(e.call(op::HVM_OP, 0, p, 0), 0);
    let port = e.bind_ipi(0);
    e.host.raised.clear();
    e.send(port);
    assert_eq!(e.host.raised, vec![(0, 0xF3, true)]);
}

#[test]
fn callback_set_late_delivers_what_is_already_pending() {
    let mut e = Env::new();
    e.boot();
    let p = e.arg(ARG, &param(0, 0));
    e.call(op::HVM_OP, 0, p, 0);
    let port = e.bind_ipi(0);
    e.send(port);
    assert!(e.host.raised.is_empty());
    let p = e.arg(ARG, &param(0, (2 << 56) | 0xF3));
    e.call(op::HVM_OP, 0, p, 0);
    assert_eq!(e.host.raised, vec![(0, 0xF3, false)]);
}

#[test]
fn consoleio_write_and_continuation() {
    let mut e = Env::new();
    let msg = b"early hello\n";
    let p = e.arg(0x30000, msg);
    assert_eq!(e.call(op::CONSOLE_IO, 0, msg.len() as u64, p), 0);
    assert_eq!(e.host.console, msg);
    // A long write is split across re-executions with the arguments advanced.
    let big: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let p = e.arg(0x40000, &big);
    e.host.console.clear();
    let mut args = [0, big.len() as u64, p, 0, 0];
    let mut rounds = 0;
    loop {
        let mut r = virt::GuestRegs {
            rax: op::CONSOLE_IO,
            rdi: args[0],
            rsi: args[1],
            rdx: args[2],
            ..Default::default()
        };
        let v = e.view(0);
        let act = e.xen.hypercall(&v, &mut r, &mut e.mem, &mut e.host);
        rounds += 1;
        if act == Action::Retry {
            assert_eq!(r.rax, op::CONSOLE_IO, "op kept for re-execution");
            args = [r.rdi, r.rsi, r.rdx, 0, 0];
            continue;
        }
        assert_eq!((act, r.rax), (Action::Done, 0));
        break;
    }
    assert_eq!(rounds, 3);
    assert_eq!(e.host.console, big);
    assert_eq!(e.call(op::CONSOLE_IO, 0, 4, UNMAPPED), EFAULT);
    assert_eq!(e.call(op::CONSOLE_IO, 1, 16, p), 0, "no input");
    assert_eq!(e.call(op::CONSOLE_IO, 2, 0, 0), ENOSYS);
}

fn ring_write(e: &Env, text: &[u8]) {
    let ring = CONSOLE_PFN << 12;
    let mut prod = e.u32_at(ring + 3084);
    for &b in text {
        e.mem
            .write(ring + 1024 + u64::from(prod % 2048), &[b])
            .unwrap();
        prod = prod.wrapping_add(1);
    }
    e.mem.write_u32(ring + 3084, prod).unwrap();
}

#[test]
fn console_ring_is_drained_on_send_and_yield() {
    let mut e = Env::new();
    e.boot();
    let ring = CONSOLE_PFN << 12;
    // Start near the u32 wrap and the ring end.
    e.mem.write_u32(ring + 3080, u32::MAX - 4).unwrap();
    e.mem.write_u32(ring + 3084, u32::MAX - 4).unwrap();
    ring_write(&e, b"hvc0: wrapped text\n");
    assert_eq!(e.send(1), 0);
    assert_eq!(e.host.console, b"hvc0: wrapped text\n");
    assert_eq!(e.u32_at(ring + 3080), e.u32_at(ring + 3084));
    assert!(e.pending(1), "the guest is told there is room");
    assert!(e.xen.take_backend_kick().is_none());
    e.host.console.clear();
    ring_write(&e, b"more");
    e.call_on(0, op::SCHED_OP, [0; 5]);
    assert_eq!(e.host.console, b"more");
    // Corrupt indices: skipped, not printed.
    e.host.console.clear();
    e.mem
        .write_u32(ring + 3084, e.u32_at(ring + 3080).wrapping_add(5000))
        .unwrap();
    e.send(1);
    assert!(e.host.console.is_empty());
    assert_eq!(e.u32_at(ring + 3080), e.u32_at(ring + 3084));
    // Input ring untouched.
    assert_eq!(e.u32_at(ring + 3076), 0);
}

/// Typed bytes go into the ring's `in` side up to its 1024 bytes, across the wrap, and the
/// guest is notified; a guest with no ring, or with indices no driver could leave, gets none.
#[test]
fn console_input_fills_the_in_ring() {
    let mut e = Env::new();
    e.boot();
    let ring = CONSOLE_PFN << 12;
    e.mem.write_u32(ring + 3072, 1020).unwrap();
    e.mem.write_u32(ring + 3076, 1020).unwrap();
    e.clear_pending(1);
    let got = e.xen.console_input(b"root\r", &mut e.mem, &mut e.host);
    assert_eq!(got, Some(5));
    assert_eq!(e.u32_at(ring + 3076), 1025, "producer moved past the bytes");
    let mut wrapped = [0u8; 5];
    e.mem.read(ring + 1020, &mut wrapped[..4]).unwrap();
    e.mem.read(ring, &mut wrapped[4..]).unwrap();
    assert_eq!(&wrapped, b"root\r");
    assert!(e.pending(1), "the guest is told there is input");
    // Full: only what fits is taken.
    let big = vec![b'x'; 2000];
    assert_eq!(
        e.xen.console_input(&big, &mut e.mem, &mut e.host),
        Some(1019)
    );
    assert_eq!(e.xen.console_input(b"y", &mut e.mem, &mut e.host), Some(0));
    // The guest consumed five: room for five.
    e.mem.write_u32(ring + 3072, 1025).unwrap();
    assert_eq!(
        e.xen.console_input(b"abcdefgh", &mut e.mem, &mut e.host),
        Some(5)
    );
    // Corrupt indices: nothing written, nothing lost on the host's side.
    e.mem.write_u32(ring + 3072, 0).unwrap();
    e.mem.write_u32(ring + 3076, 9000).unwrap();
    assert_eq!(e.xen.console_input(b"z", &mut e.mem, &mut e.host), Some(0));
    assert_eq!(e.u32_at(ring + 3076), 9000);
    let mut cfg = config();
    cfg.console_pfn = None;
    let mut bare = Env::with(cfg, 1);
    assert_eq!(
        bare.xen.console_input(b"a", &mut bare.mem, &mut bare.host),
        None
    );
}

#[test]
fn port_e9_is_line_buffered() {
    let mut e = Env::new();
    let v = e.view(0);
    for &b in b"abc\nde" {
        let mut d = u32::from(b);
        assert_eq!(
            e.xen.io(&v, 0xE9, 1, true, &mut d, &mut e.host),
            Action::Done
        );
    }
    assert_eq!(e.host.console, b"abc\n");
    assert_eq!(e.host.console_writes, 1);
    e.xen.flush_console(&mut e.host);
    assert_eq!(e.host.console, b"abc\nde");
    let mut d = 0;
    assert_eq!(
        e.xen.io(&v, 0xE9, 1, false, &mut d, &mut e.host),
        Action::NotMine
    );
    assert_eq!(
        e.xen.io(&v, 0x3F8, 1, true, &mut d, &mut e.host),
        Action::NotMine
    );
    // A line longer than the buffer comes out in pieces, nothing lost.
    e.host.console.clear();
    for _ in 0..300 {
        let mut d = u32::from(b'x');
        e.xen.io(&v, 0xE9, 1, true, &mut d, &mut e.host);
    }
    e.xen.flush_console(&mut e.host);
    assert_eq!(e.host.console.len(), 300);
}
