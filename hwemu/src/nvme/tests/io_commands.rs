//! Read, Write, Flush and Write Zeroes through every PRP shape, and their failures.

use super::*;

#[test]
fn data_moves_through_prp1_prp2_and_chained_lists() {
    let mut g = Guest::enabled(false);
    g.io_queue(1, 16);
    // One page at an offset, spilling into PRP2.
    let data = g.fill(DATA + 0x200, 4096, 2);
    g.env.mem.write(DATA + 0x5000, &data[0xe00..]).unwrap();
    assert_eq!(g.run(1, rw(0x01, 0, 8, DATA + 0x200, DATA + 0x5000)).1, 0);
    assert_eq!(&g.disk(0, 0xe00), &&data[..0xe00]);
    assert_eq!(g.disk(7, 512), &data[0xe00..]);

    // 128 KiB, out of order pages, through a list at an offset whose page ends early and
    // chains to a second list page.
    let pages: Vec<u64> = (0..32)
        .map(|i| DATA + 0x10000 + (31 - i) * 0x1000)
        .collect();
    let want: Vec<u8> = (0..MAX_TRANSFER)
        .map(|i| (i / 4096) as u8 ^ (i as u8))
        .collect();
    for (i, p) in pages.iter().enumerate() {
        g.env
            .mem
            .write(*p, &want[i * 4096..(i + 1) * 4096])
            .unwrap();
    }
    let list = LISTS + 0x1000 - 8 * 4;
    for (i, p) in pages[1..4].iter().enumerate() {
        g.env.mem.write_u64(list + 8 * i as u64, *p).unwrap();
    }
    g.env.mem.write_u64(list + 24, LISTS + 0x4000).unwrap();
    for (i, p) in pages[4..].iter().enumerate() {
        g.env
            .mem
            .write_u64(LISTS + 0x4000 + 8 * i as u64, *p)
            .unwrap();
    }
    let before = g.env.vol.writes.len();
    assert_eq!(g.run(1, rw(0x01, 100, 256, pages[0], list)).1, 0);
    assert_eq!(g.disk(100, MAX_TRANSFER), &want[..]);
    assert_eq!(
        g.env.vol.writes.len(),
        before + 1,
        "one volume call per command"
    );

    // Read it back somewhere else through the same list layout.
    for p in &pages {
        g.env.mem.write(*p, &[0; 4096]).unwrap();
    }
    assert_eq!(g.run(1, rw(0x02, 100, 256, pages[0], list)).1, 0);
    let mut back = vec![0u8; 4096];
    for (i, p) in pages.iter().enumerate() {
        g.env.mem.read(*p, &mut back).unwrap();
        assert_eq!(back, want[i * 4096..(i + 1) * 4096], "page {i}");
    }
    assert_eq!(g.env.vol.reads.last(), Some(&(100, MAX_TRANSFER)));

    // Flush reaches the volume; Write Zeroes zeroes.
    assert_eq!(g.run(1, cmd(0x00, 1)).1, 0);
    assert_eq!(g.env.vol.v.flushes, 1);
    assert_eq!(g.env.vol.v.durable, g.env.vol.v.data);
    assert_eq!(g.run(1, cmd(0x00, 0xFFFF_FFFF)).1, 0);
    assert_eq!(g.run(1, rw(0x08, 100, 300, 0, 0)).1, 0);
    assert!(g.disk(100, 300 * 512).iter().all(|&b| b == 0));
    // FUA writes are durable when they complete.
    let mut fua = rw(0x01, 0, 1, DATA, 0);
    fua[12] |= 1 << 30;
    assert_eq!(g.run(1, fua).1, 0);
    assert_eq!(g.env.vol.v.flushes, 3);
}

#[test]
fn phase_tag_flips_on_every_wrap() {
    let mut g = Guest::enabled(false);
    g.io_queue(1, 4);
    g.fill(DATA, 512, 3);
    for i in 0..13 {
        let (_, s) = g.run(1, rw(0x02, i, 1, DATA, 0));
        assert_eq!(s, 0);
    }
    assert_eq!(g.rings[1].head, 13 % 4);
    assert!(!g.rings[1].phase, "wrapped three times");
}

#[test]
fn a_full_cq_holds_the_sq_until_the_head_moves() {
    let mut g = Guest::enabled(false);
    g.io_queue(1, 8);
    for i in 0..7 {
        g.queue(1, rw(0x02, i, 1, DATA, 0));
    }
    g.ring(1);
    // Seven entries, but a CQ of eight holds seven at most: all fit. Then seven more.
    for _ in 0..7 {
        assert!(g.reap(1).is_some());
    }
    assert!(g.reap(1).is_none());
    for i in 0..7 {
        g.queue(1, rw(0x02, i, 1, DATA, 0));
    }
    g.ring(1);
    assert!(
        g.reap(1).is_none(),
        "the guest has not consumed the first seven"
    );
    assert!(g.c.intx_asserted());
    g.consume(1);
    let mut n = 0;
    while let Some((_, s, head, _, _)) = g.reap(1) {
        assert_eq!(s, 0);
        n += 1;
        assert_eq!(head, (7 + n) % 8);
    }
    assert_eq!(n, 7, "the CQ head doorbell resumed the stalled SQ");
    g.consume(1);
    assert!(!g.c.intx_asserted());
}

#[test]
fn read_only_disks_refuse_writes() {
    let mut g = Guest::enabled(true);
    assert_eq!(g.identify(0, 1).0[99], 1, "NSATTR write protected");
    g.io_queue(1, 8);
    assert_eq!(
        g.run(1, rw(0x01, 0, 1, DATA, 0)).1,
        st(Status::WRITE_PROTECTED)
    );
    assert_eq!(
        g.run(1, rw(0x08, 0, 1, 0, 0)).1,
        st(Status::WRITE_PROTECTED)
    );
    assert_eq!(g.run(1, rw(0x02, 0, 1, DATA, 0)).1, 0);
    assert_eq!(g.run(1, cmd(0x00, 1)).1, 0);
    assert!(g.env.vol.writes.is_empty());
    let mut log = with_prp(cmd(0x02, 0xFFFF_FFFF), DATA);
    log[10] = 0x02 | 127 << 16;
    assert_eq!(g.admin(log).1, 0);
    assert_eq!(
        g.env.mem.read_u8(DATA).unwrap(),
        8,
        "SMART: media read-only"
    );
}

#[test]
fn ranges_namespaces_and_opcodes_are_checked() {
    let mut g = Guest::enabled(false);
    g.io_queue(1, 16);
    let oor = st(Status::LBA_OUT_OF_RANGE);
    assert_eq!(g.run(1, rw(0x02, SECTORS - 1, 1, DATA, 0)).1, 0);
    assert_eq!(g.run(1, rw(0x02, SECTORS - 1, 2, DATA, 0)).1, oor);
    assert_eq!(g.run(1, rw(0x01, SECTORS, 1, DATA, 0)).1, oor);
    assert_eq!(g.run(1, rw(0x01, u64::MAX, 1, DATA, 0)).1, oor);
    assert_eq!(g.run(1, rw(0x08, SECTORS - 10, 11, 0, 0)).1, oor);
    assert_eq!(
        g.run(1, rw(0x02, 0, 257, DATA, 0)).1,
        st(Status::INVALID_FIELD),
        "MDTS"
    );
    for nsid in [0, 2, 0xFFFF_FFFF] {
        let mut c = rw(0x02, 0, 1, DATA, 0);
        c[1] = nsid;
        assert_eq!(g.run(1, c).1, st(Status::INVALID_NAMESPACE));
    }
    assert_eq!(g.run(1, cmd(0x00, 0)).1, st(Status::INVALID_NAMESPACE));
    for op in [0x04, 0x05, 0x09, 0x7f, 0xff] {
        assert_eq!(g.run(1, cmd(op, 1)).1, st(Status::INVALID_OPCODE));
    }
    assert_eq!(g.admin(cmd(0x7f, 0)).1, st(Status::INVALID_OPCODE));
    assert_eq!(g.admin(cmd(0x80, 1)).1, st(Status::INVALID_OPCODE));
    assert!(g.env.vol.writes.is_empty());
}

#[test]
fn bad_prps_and_sgls_fail_the_command() {
    let mut g = Guest::enabled(false);
    g.io_queue(1, 32);
    let ram = RAM as u64;
    let off = st(Status::INVALID_PRP_OFFSET);
    let dte = st(Status::DATA_TRANSFER_ERROR);
    assert_eq!(g.run(1, rw(0x01, 0, 8, DATA + 2, DATA + 0x1000)).1, off);
    assert_eq!(g.run(1, rw(0x01, 0, 8, DATA + 0x200, DATA + 0x1008)).1, off);
    assert_eq!(g.run(1, rw(0x01, 0, 1, ram, 0)).1, dte);
    assert_eq!(g.run(1, rw(0x01, 0, 2, ram - 512, ram)).1, dte);
    assert_eq!(g.run(1, rw(0x02, 0, 8, DATA + 0x800, ram)).1, dte);
    assert_eq!(g.run(1, rw(0x02, 0, 24, DATA, u64::MAX - 7)).1, dte);
    assert_eq!(g.run(1, rw(0x02, 0, 24, DATA, LISTS + 4)).1, off);
    // List entries carry no offset; the chain pointer neither.
    g.env.mem.write_u64(LISTS, DATA + 0x1100).unwrap();
    assert_eq!(g.run(1, rw(0x02, 0, 24, DATA, LISTS)).1, off);
    g.env.mem.write_u64(LISTS, DATA + 0x1000).unwrap();
    g.env.mem.write_u64(LISTS + 8, ram).unwrap();
    assert_eq!(g.run(1, rw(0x02, 0, 24, DATA, LISTS)).1, dte);
    g.env.mem.write_u64(LISTS + 0xff8, LISTS + 0x10).unwrap();
    assert_eq!(g.run(1, rw(0x02, 0, 24, DATA, LISTS + 0xff8)).1, off);
    // A chain that loops onto itself still ends: the transfer's pages run out.
    g.env.mem.write_u64(LISTS + 0xff8, LISTS).unwrap();
    for i in 0..511 {
        g.env.mem.write_u64(LISTS + 8 * i, DATA).unwrap();
    }
    assert_eq!(g.run(1, rw(0x02, 0, 256, DATA, LISTS + 0xff8)).1, 0);
    for dw0 in [1 << 14, 1 << 15, 1 << 8, 1 << 9] {
        let mut c = rw(0x02, 0, 1, DATA, 0);
        c[0] |= dw0;
        assert_eq!(g.run(1, c).1, st(Status::INVALID_FIELD));
        let mut a = with_prp(cmd(0x06, 0), DATA);
        a[0] |= dw0;
        a[10] = 1;
        assert_eq!(g.admin(a).1, st(Status::INVALID_FIELD));
    }
    assert!(g.env.vol.writes.is_empty());
}
