//! Registers, enable/disable/shutdown, interrupts and doorbells.

use super::*;

#[test]
fn registers_read_as_the_spec_lays_them_out() {
    let mut g = Guest::new(config(false));
    let cap = g.c.read(0, 8);
    assert_eq!(cap & 0xffff, u64::from(MQES));
    assert_eq!(cap >> 16 & 1, 1, "CQR");
    assert_eq!(cap >> 32 & 0xf, 0, "DSTRD");
    assert_eq!(cap >> 37 & 0xff, 1, "CSS: NVM");
    assert_eq!(cap >> 48 & 0xff, 0, "MPSMIN = MPSMAX = 4 KiB");
    assert_eq!(g.c.read(0, 4) | g.c.read(4, 4) << 32, cap);
    assert_eq!(
        g.c.read(1, 2),
        cap >> 8 & 0xffff,
        "unaligned reads are bytes of the dwords"
    );
    assert_eq!(g.r32(regs::VS), 0x0001_0400);
    assert_eq!(g.r32(regs::CSTS), 0);
    assert_eq!(g.c.read(0x40, 8), 0);
    assert_eq!(g.c.read(BAR0_SIZE - 1, 8), 0);
    assert_eq!(g.c.read(u64::MAX, 8), 0);
    assert_eq!(g.c.read(0, 0), 0);
    g.c.write(u64::MAX - 2, 8, u64::MAX, &mut g.env);
    g.c.write(regs::AQA + 2, 1, 0x1f, &mut g.env);
    assert_eq!(
        g.r32(regs::AQA),
        0x1f << 16,
        "a byte write changes one byte"
    );
    g.c.write(regs::ASQ, 8, 0x1234_5678_9abc_def0, &mut g.env);
    assert_eq!(
        g.c.read(regs::ASQ, 8),
        0x1234_5678_9abc_d000,
        "ASQ's low 12 bits are 0"
    );
    g.w32(regs::INTMS, 0b101);
    g.w32(regs::INTMC, 0b001);
    assert_eq!(g.r32(regs::INTMS), 0b100);
    assert_eq!(g.r32(regs::INTMC), 0b100);
}

#[test]
fn enable_checks_the_configuration_and_disable_resets() {
    let mut g = Guest::new(config(false));
    // No admin queue set up: fatal status, never ready.
    g.w32(regs::CC, CC_ON);
    assert_eq!(g.r32(regs::CSTS), CSTS_CFS);
    g.w32(regs::CC, 0);
    assert_eq!(g.r32(regs::CSTS), 0);
    for bad in [
        CC_ON | 1 << 7,
        CC_ON | 1 << 4,
        CC_ON | 1 << 11,
        1 | 4 << 20,
        1 | 6 << 16,
        CC_ON | 1 << 16,
    ] {
        let mut g = Guest::new(config(false));
        g.w32(regs::AQA, 31 | 31 << 16);
        g.c.write(regs::ASQ, 8, ASQ, &mut g.env);
        g.c.write(regs::ACQ, 8, ACQ, &mut g.env);
        g.w32(regs::CC, bad);
        assert_eq!(g.r32(regs::CSTS), CSTS_CFS, "CC {bad:#x}");
        g.w32(0x1000, 1);
    }
    let mut g = Guest::new(config(false));
    g.w32(regs::AQA, 127 | 31 << 16);
    g.c.write(regs::ASQ, 8, RAM as u64 - 0x1000, &mut g.env);
    g.c.write(regs::ACQ, 8, ACQ, &mut g.env);
    g.w32(regs::CC, CC_ON);
    assert_eq!(g.r32(regs::CSTS), CSTS_CFS, "admin SQ past the end of RAM");

    let mut g = Guest::enabled(false);
    g.io_queue(1, 8);
    g.queue(0, cmd(0x0C, 0));
    g.ring(0);
    assert!(g.reap(0).is_none(), "an AER is held");
    g.w32(regs::CC, CC_ON & !1);
    assert_eq!(g.r32(regs::CSTS), 0);
    assert_eq!(
        g.c.read(regs::ASQ, 8),
        ASQ,
        "admin queue registers survive a reset"
    );
    g.enable();
    // Queue 1 is gone with the reset; the admin queue starts over from slot 0.
    assert_eq!(g.run(0, create_cq(1, 8, 0x30000, 1)).1, 0);
    assert_eq!(g.run(0, create_sq(1, 8, 0x20000, 1)).1, 0);
    g.rings[1] = Ring {
        sq: 0x20000,
        cq: 0x30000,
        entries: 8,
        phase: true,
        ..Ring::default()
    };
    g.env.mem.write(0x30000, &[0; 128]).unwrap();
    assert_eq!(g.run(1, rw(0x02, 0, 1, DATA, 0)).1, 0);
    // A function reset clears everything.
    g.c.reset();
    assert_eq!(g.c.read(regs::ASQ, 8), 0);
    assert_eq!(g.r32(regs::CC), 0);
    assert_eq!(g.r32(regs::CSTS), 0);
    g.w32(0x1008, 1);
}

#[test]
fn shutdown_flushes_and_reports_complete() {
    let mut g = Guest::enabled(false);
    g.io_queue(1, 8);
    g.fill(DATA, 512, 5);
    assert_eq!(g.run(1, rw(0x01, 3, 1, DATA, 0)).1, 0);
    assert_ne!(g.env.vol.v.durable, g.env.vol.v.data);
    g.w32(regs::CC, CC_ON | 1 << 14);
    assert_eq!(g.r32(regs::CSTS), CSTS_RDY | SHST_COMPLETE);
    assert_eq!(g.env.vol.v.durable, g.env.vol.v.data);
    // Fields other than EN and SHN do not change while enabled.
    g.w32(regs::CC, 1 | 1 << 14);
    assert_eq!(g.r32(regs::CC), CC_ON | 1 << 14);
    g.w32(regs::CC, 0);
    assert_eq!(g.r32(regs::CSTS), 0);
}

#[test]
fn interrupts_follow_ien_vectors_and_intms() {
    let mut g = Guest::enabled(false);
    g.io_queue(2, 8);
    g.env.irqs.clear();
    g.queue(2, rw(0x02, 0, 1, DATA, 0));
    g.queue(2, rw(0x02, 0, 1, DATA, 0));
    g.ring(2);
    assert_eq!(
        g.env.irqs,
        [2],
        "one interrupt per doorbell write and vector"
    );
    assert!(g.c.intx_asserted());
    g.w32(regs::INTMS, 1 << 2);
    assert!(!g.c.intx_asserted(), "masked");
    g.env.irqs.clear();
    g.queue(2, rw(0x02, 0, 1, DATA, 0));
    g.ring(2);
    assert!(g.env.irqs.is_empty());
    g.w32(regs::INTMC, 1 << 2);
    assert_eq!(g.env.irqs, [2], "unmasking delivers what is pending");
    assert!(g.c.intx_asserted());
    while g.reap(2).is_some() {}
    g.consume(2);
    assert!(!g.c.intx_asserted());
    // A CQ without IEN never interrupts.
    let mut polled = create_cq(3, 8, 0x70000, 0);
    polled[11] = 1;
    assert_eq!(g.admin(polled).1, 0);
    assert_eq!(g.admin(create_sq(3, 8, 0x60000, 3)).1, 0);
    g.rings[3] = Ring {
        sq: 0x60000,
        cq: 0x70000,
        entries: 8,
        phase: true,
        ..Ring::default()
    };
    g.env.irqs.clear();
    g.queue(3, rw(0x02, 0, 1, DATA, 0));
    g.ring(3);
    assert!(g.reap(3).is_some());
    assert!(g.env.irqs.is_empty());
    assert!(!g.c.intx_asserted());
}

#[test]
fn invalid_doorbell_values_are_ignored() {
    let mut g = Guest::enabled(false);
    g.io_queue(1, 8);
    g.w32(0x1008, 8);
    g.w32(0x1008, 0xffff_ffff);
    assert!(g.reap(1).is_none(), "a tail past the queue runs nothing");
    g.queue(1, rw(0x02, 0, 1, DATA, 0));
    g.ring(1);
    assert!(g.reap(1).is_some());
    // The head may not pass entries that were never posted.
    g.w32(0x100c, 5);
    assert_eq!(g.c.cq(1).unwrap().head, 0);
    g.w32(0x100c, 1);
    assert_eq!(g.c.cq(1).unwrap().head, 1);
    g.w32(0x100c, 0);
    assert_eq!(g.c.cq(1).unwrap().head, 1, "no going back");
    // Doorbells of queues that never existed, past the last queue, and in the BAR's tail.
    for off in [0x1010u64, 0x1014, 0x1100, 0x2000, BAR0_SIZE - 4] {
        g.w32(off, 1);
    }
    g.c.write(0x1008, 1, 0x02, &mut g.env);
    assert_eq!(
        g.c.sq(1).unwrap().tail,
        2,
        "a byte write moves the low byte"
    );
    assert_eq!(g.r32(regs::CSTS), CSTS_RDY);
}
