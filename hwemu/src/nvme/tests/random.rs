use super::*;

/// Random register writes, doorbells and commands (random fields over a plausible skeleton):
/// nothing panics, CSTS stays consistent, and the volume only sees writes from Write and Write
/// Zeroes commands in range on a writable disk.
#[test]
fn seeded_random_guest_never_breaks_the_controller() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut writes, mut reads) = (0, 0);
    for round in 0..300 {
        let ro = round % 3 == 0;
        let mut g = Guest::new(Config {
            max_io_queues: (round % 6) as u16,
            ..config(ro)
        });
        g.env.mem.write(DATA, &vec![0xff; 0x200000]).unwrap();
        if round % 4 != 0 {
            g.enable();
        }
        let mut allowed: Vec<(u64, u64)> = Vec::new();
        for _ in 0..60 {
            let r = rng.next_u64();
            match r % 8 {
                0 => {
                    let off =
                        [0x0C, 0x10, 0x14, 0x1C, 0x24, 0x28, 0x30, 0x20][(r >> 8) as usize % 8];
                    let v = rng.next_u64();
                    let v = if r >> 12 & 1 != 0 {
                        v & 0x00ff_fff1 | CC_ON as u64
                    } else {
                        v
                    };
                    g.c.write(off, [1, 2, 4, 8][(r >> 16) as usize % 4], v, &mut g.env);
                }
                1 => {
                    let off = 0x1000 + (r >> 8) % 48 * 4;
                    g.c.write(off, 4, rng.next_u64() % 40, &mut g.env);
                }
                2 | 3 => {
                    // An admin command with random fields, often a queue creation.
                    let mut c = [0u32; 16];
                    for d in &mut c {
                        *d = rng.next_u64() as u32;
                    }
                    let ops = [0x00, 0x01, 0x04, 0x05, 0x06, 0x02, 0x09, 0x0A, 0x0C, 0x08];
                    c[0] = c[0] & 0xc300 | ops[(r >> 8) as usize % ops.len()];
                    if r >> 20 & 3 != 0 {
                        c[0] &= 0xff;
                        c[10] = (c[10] % 6) | ((c[10] >> 16) % 300) << 16;
                        c[11] = c[11] & 0x3 | ((c[11] >> 16) % 7) << 16;
                        // Mostly where the I/O submissions below go.
                        let base = 0x20000 + (rng.next_u64() % 8) * 0x1000;
                        c[6] = base as u32;
                        c[7] = 0;
                        c[1] %= 3;
                    }
                    if g.rings[0].entries != 0 {
                        g.queue(0, c);
                        g.ring(0);
                        while g.reap(0).is_some() {}
                        g.consume(0);
                    }
                }
                4 | 5 => {
                    let qid = 1 + (r >> 8) as usize % 4;
                    let mut c = rw(
                        [0x00, 0x01, 0x02, 0x08, 0x01, 0x7e][(r >> 12) as usize % 6],
                        rng.next_u64() % (SECTORS + 20),
                        1 + (rng.next_u64() % if r >> 44 & 3 == 0 { 300 } else { 8 }) as u32,
                        DATA + (rng.next_u64() % 0x1000) * 8,
                        DATA + (rng.next_u64() % 0x40) * 0x1000 + (r >> 40) % 2 * 8,
                    );
                    c[1] = [1, 1, 1, 1, 1, 0, 2, 0xffff_ffff][(r >> 20) as usize % 8];
                    c[0] |= (r >> 24) as u32 & 0xc300 & if r >> 30 & 7 == 0 { !0 } else { 0 };
                    if c[0] & 0xc300 == 0 && c[1] == 1 && matches!(c[0] as u8, 0x01 | 0x08) {
                        allowed.push((u64::from(c[10]), u64::from(c[12]) + 1));
                    }
                    if g.rings[qid].entries == 0 || r >> 36 & 7 == 0 {
                        let entries = 4;
                        g.rings[qid] = Ring {
                            sq: 0x20000 + (qid as u64 % 64) * 0x1000,
                            entries,
                            tail: (r >> 32) as u16 % entries,
                            ..Ring::default()
                        };
                    }
                    g.queue(qid, c);
                    g.ring(qid);
                }
                6 => {
                    let qid = (r >> 8) % 5;
                    g.c.write(0x1004 + 8 * qid, 4, rng.next_u64() % 300, &mut g.env);
                }
                _ => {
                    if r >> 8 & 0xf == 0 {
                        g.c.reset();
                    } else if r >> 8 & 1 == 1 && g.rings[0].entries != 0 {
                        // A queue pair as Linux creates it (refused if it exists).
                        let qid = 1 + (r >> 12) as u16 % 4;
                        let entries = 2 + (r >> 16) as u16 % 20;
                        let sq = 0x20000 + u64::from(qid) * 0x10000;
                        g.queue(0, create_cq(qid, entries, sq + 0x8000, qid));
                        g.queue(0, create_sq(qid, entries, sq, qid));
                        g.ring(0);
                        while g.reap(0).is_some() {}
                        g.consume(0);
                        g.rings[usize::from(qid)] = Ring {
                            sq,
                            cq: sq + 0x8000,
                            entries,
                            phase: true,
                            ..Ring::default()
                        };
                    } else {
                        let at = 0x20000 + rng.next_u64() % 0x50000;
                        let _ = g.env.mem.write_u64(at, rng.next_u64());
                    }
                }
            }
            let csts = g.r32(regs::CSTS);
            let cc = g.r32(regs::CC);
            assert!(
                csts & CSTS_RDY == 0 || cc & CC_EN != 0,
                "ready while disabled"
            );
            assert!(
                csts & CSTS_RDY == 0 || csts & CSTS_CFS == 0,
                "ready and fatal"
            );
            assert!(csts & CSTS_SHST != 3 << 2);
            assert_eq!(csts >> 4, 0);
            for &(lba, len) in &g.env.vol.writes {
                assert!(!ro, "a write reached a read-only disk");
                let end = lba + len as u64 / SECTOR;
                assert!(len <= MAX_TRANSFER && end <= SECTORS);
                assert!(
                    allowed.iter().any(|&(s, n)| lba >= s && end <= s + n),
                    "write {lba}+{len} from no Write command"
                );
            }
        }
        assert_eq!(g.env.vol.v.data.len() as u64, SECTORS * SECTOR);
        writes += g.env.vol.writes.len();
        reads += g.env.vol.reads.len();
    }
    eprintln!("random: {writes} writes, {reads} reads");
    assert!(writes > 0 && reads > 0, "the random guest reached the disk");
}
