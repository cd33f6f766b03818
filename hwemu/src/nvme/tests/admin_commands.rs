//! Identify, queue management, features, log pages, AER and Abort.

use super::*;

#[test]
fn linux_bring_up_identify_and_queues() {
    let mut g = Guest::enabled(false);
    let (id, s) = g.identify(1, 0);
    assert_eq!(s, 0);
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), VENDOR_ID);
    assert_eq!(&id[4..10], b"JANUS1");
    assert_eq!(&id[24..35], b"Janus NVMe ");
    assert_eq!(id[77], MDTS);
    assert_eq!(u32::from_le_bytes(id[80..84].try_into().unwrap()), 0x10400);
    assert_eq!((id[258], id[259]), (ACL, AERL));
    assert_eq!((id[512], id[513]), (0x66, 0x44));
    assert_eq!(
        u32::from_le_bytes(id[516..520].try_into().unwrap()),
        1,
        "NN"
    );
    assert_eq!(id[525] & 1, 1, "VWC present: Linux sends Flush");
    assert_eq!(
        u16::from_le_bytes([id[520], id[521]]) & 8,
        8,
        "Write Zeroes"
    );
    assert_eq!(
        u32::from_le_bytes(id[536..540].try_into().unwrap()),
        0,
        "no SGLs"
    );

    let (ns, s) = g.identify(0, 1);
    assert_eq!(s, 0);
    assert_eq!(u64::from_le_bytes(ns[0..8].try_into().unwrap()), SECTORS);
    assert_eq!(u64::from_le_bytes(ns[8..16].try_into().unwrap()), SECTORS);
    assert_eq!(ns[26], 0);
    assert_eq!(ns[130], 9, "512-byte blocks");
    assert_eq!(ns[99], 0, "writable");
    let (list, s) = g.identify(2, 0);
    assert_eq!((s, &list[0..8]), (0, &[1, 0, 0, 0, 0, 0, 0, 0][..]));
    assert_eq!(
        g.identify(2, 1).0[0..4],
        [0; 4],
        "nothing above namespace 1"
    );
    let (desc, s) = g.identify(3, 1);
    assert_eq!((s, desc[0], desc[1]), (0, 2, 16));
    assert_eq!(&desc[4..20], &ns[104..120], "the NGUID, both ways");
    assert_eq!(g.identify(0, 0).1, st(Status::INVALID_NAMESPACE));
    assert_eq!(g.identify(0, 2).1, st(Status::INVALID_NAMESPACE));
    assert_eq!(g.identify(0, 0xFFFF_FFFF).1, st(Status::INVALID_NAMESPACE));
    assert_eq!(g.identify(2, 0xFFFF_FFFF).1, st(Status::INVALID_NAMESPACE));
    assert_eq!(g.identify(0x10, 0).1, st(Status::INVALID_FIELD));

    // Linux asks for as many queues as CPUs and takes what it is given.
    let mut nq = cmd(0x09, 0);
    nq[10] = 0x07;
    nq[11] = 63 | 63 << 16;
    assert_eq!(g.admin(nq), (3 | 3 << 16, 0));
    for q in 1..=4 {
        g.io_queue(q, 64);
    }
    assert_eq!(g.admin(nq).1, st(Status::COMMAND_SEQUENCE_ERROR));
    let mut get = cmd(0x0A, 0);
    get[10] = 0x07;
    assert_eq!(g.admin(get), (3 | 3 << 16, 0));

    let data = g.fill(DATA, 4096, 1);
    for q in 1..=4usize {
        assert_eq!(g.run(q, rw(0x01, 8 * q as u64, 8, DATA, 0)).1, 0);
        assert_eq!(g.disk(8 * q as u64, 4096), &data[..]);
    }
    for iv in 0..=4 {
        assert!(g.env.irqs.contains(&iv), "vector {iv}");
    }
}

#[test]
fn queue_creation_and_deletion_check_every_field() {
    let mut g = Guest::enabled(false);
    let base = 0x80000;
    let qid = st(Status::INVALID_QUEUE_ID);
    let size = st(Status::INVALID_QUEUE_SIZE);
    assert_eq!(g.admin(create_cq(0, 16, base, 0)).1, qid);
    assert_eq!(
        g.admin(create_cq(5, 16, base, 0)).1,
        qid,
        "four queue pairs"
    );
    assert_eq!(g.admin(create_cq(0xffff, 16, base, 0)).1, qid);
    assert_eq!(g.admin(create_cq(1, 1, base, 0)).1, size);
    assert_eq!(g.admin(create_cq(1, MQES + 2, base, 0)).1, size);
    assert_eq!(
        g.admin(create_cq(1, 16, base, 5)).1,
        st(Status::INVALID_VECTOR)
    );
    assert_eq!(
        g.admin(create_cq(1, 16, base + 0x10, 0)).1,
        st(Status::INVALID_PRP_OFFSET)
    );
    assert_eq!(
        g.admin(create_cq(1, 16, RAM as u64 - 128, 0)).1,
        st(Status::INVALID_PRP_OFFSET)
    );
    assert_eq!(
        g.admin(create_cq(1, 16, RAM as u64, 0)).1,
        st(Status::INVALID_FIELD)
    );
    assert_eq!(
        g.admin(create_cq(1, 256, RAM as u64 - 0x800 - 0x800, 0)).1,
        0,
        "ends at the end of RAM"
    );
    let mut del = cmd(0x04, 0);
    del[10] = 1;
    assert_eq!(g.admin(del).1, 0);
    let mut noncontig = create_cq(1, 16, base, 0);
    noncontig[11] &= !1;
    assert_eq!(g.admin(noncontig).1, st(Status::INVALID_FIELD));
    let mut polled = create_cq(1, 16, base, 0);
    polled[11] = 1 | 0x40 << 16;
    assert_eq!(g.admin(polled).1, 0, "no vector is checked without IEN");
    assert_eq!(g.admin(create_cq(1, 16, base, 0)).1, qid, "exists");

    assert_eq!(
        g.admin(create_sq(1, 16, base + 0x1000, 0)).1,
        st(Status::CQ_INVALID)
    );
    assert_eq!(
        g.admin(create_sq(1, 16, base + 0x1000, 2)).1,
        st(Status::CQ_INVALID)
    );
    assert_eq!(
        g.admin(create_sq(1, 16, base + 0x1000, 9)).1,
        st(Status::CQ_INVALID)
    );
    assert_eq!(g.admin(create_sq(0, 16, base + 0x1000, 1)).1, qid);
    assert_eq!(g.admin(create_sq(1, 0x1000, base + 0x1000, 1)).1, size);
    assert_eq!(
        g.admin(create_sq(1, 16, base + 0x1008, 1)).1,
        st(Status::INVALID_PRP_OFFSET)
    );
    assert_eq!(
        g.admin(create_sq(1, 16, RAM as u64, 1)).1,
        st(Status::INVALID_FIELD)
    );
    assert_eq!(g.admin(create_sq(1, 16, base + 0x1000, 1)).1, 0);
    assert_eq!(
        g.admin(create_sq(2, 16, base + 0x2000, 1)).1,
        0,
        "two SQs on one CQ"
    );
    assert_eq!(g.admin(create_sq(2, 16, base + 0x2000, 1)).1, qid);

    let del = |op: u8, q: u32| {
        let mut c = cmd(op, 0);
        c[10] = q;
        c
    };
    assert_eq!(g.admin(del(0x04, 1)).1, st(Status::INVALID_QUEUE_DELETION));
    assert_eq!(g.admin(del(0x00, 0)).1, qid);
    assert_eq!(g.admin(del(0x04, 0)).1, qid);
    assert_eq!(g.admin(del(0x00, 3)).1, qid);
    assert_eq!(g.admin(del(0x00, 1)).1, 0);
    assert_eq!(g.admin(del(0x00, 1)).1, qid);
    assert_eq!(g.admin(del(0x04, 1)).1, st(Status::INVALID_QUEUE_DELETION));
    assert_eq!(g.admin(del(0x00, 2)).1, 0);
    assert_eq!(g.admin(del(0x04, 1)).1, 0);
    assert_eq!(g.admin(del(0x04, 1)).1, qid);
    // A deleted queue's doorbells go nowhere.
    g.w32(0x1008, 3);
    g.w32(0x100c, 3);
    assert_eq!(g.r32(regs::CSTS), CSTS_RDY);
}

#[test]
fn admin_extras_aer_abort_features_logs() {
    let mut g = Guest::enabled(false);
    // AERs are held: no completion, and one past AERL + 1 is refused.
    for _ in 0..=AERL {
        g.queue(0, cmd(0x0C, 0));
        g.ring(0);
        assert!(g.reap(0).is_none());
    }
    assert_eq!(g.admin(cmd(0x0C, 0)).1, st(Status::AER_LIMIT_EXCEEDED));
    assert_eq!(g.admin(cmd(0x08, 0)), (1, 0), "Abort: not aborted");

    let feat = |op: u8, fid: u32, v: u32| {
        let mut c = cmd(op, 0);
        c[10] = fid;
        c[11] = v;
        c
    };
    assert_eq!(g.admin(feat(0x0A, 0x06, 0)), (1, 0), "write cache enabled");
    assert_eq!(g.admin(feat(0x09, 0x06, 0)).1, 0);
    assert_eq!(g.admin(feat(0x0A, 0x06, 0)), (0, 0));
    assert_eq!(g.admin(feat(0x0A, 0x106, 0)), (1, 0), "default");
    assert_eq!(g.admin(feat(0x0A, 0x306, 0)), (0b100, 0), "changeable");
    g.io_queue(1, 8);
    let flushes = g.env.vol.v.flushes;
    assert_eq!(g.run(1, rw(0x01, 0, 1, DATA, 0)).1, 0);
    assert_eq!(
        g.env.vol.v.flushes,
        flushes + 1,
        "write-through with the cache off"
    );
    assert_eq!(g.admin(feat(0x09, 0x0B, 0x100)).1, 0);
    assert_eq!(g.admin(feat(0x0A, 0x0B, 0)), (0x100, 0));
    assert_eq!(g.admin(feat(0x09, 0x08, 0x0a05)).1, 0);
    assert_eq!(g.admin(feat(0x0A, 0x08, 0)), (0x0a05, 0));
    assert_eq!(g.admin(feat(0x09, 0x09, 4 | 1 << 16)).1, 0);
    assert_eq!(g.admin(feat(0x0A, 0x09, 4)), (4 | 1 << 16, 0));
    assert_eq!(g.admin(feat(0x09, 0x09, 5)).1, st(Status::INVALID_FIELD));
    assert_eq!(g.admin(feat(0x09, 0x02, 1)).1, st(Status::INVALID_FIELD));
    assert_eq!(g.admin(feat(0x09, 0x02, 0)).1, 0);
    assert_eq!(
        g.admin(feat(0x0A, 0x04, 0)),
        (u32::from(identify::WCTEMP), 0)
    );
    assert_eq!(g.admin(feat(0x09, 0x04, 350 | 1 << 20)).1, 0);
    assert_eq!(g.admin(feat(0x0A, 0x04, 1 << 20)), (350, 0));
    assert_eq!(
        g.admin(feat(0x09, 0x04, 1 << 16)).1,
        st(Status::INVALID_FIELD)
    );
    assert_eq!(g.admin(feat(0x09, 0x01, 3)).1, 0);
    assert_eq!(g.admin(feat(0x09, 0x0A, 1)).1, 0);
    assert_eq!(
        g.admin(feat(0x09, 0x01 | 1 << 31, 3)).1,
        st(Status::NOT_SAVEABLE)
    );
    for fid in [0x00, 0x03, 0x05, 0x0C, 0x0F, 0x80] {
        assert_eq!(g.admin(feat(0x09, fid, 0)).1, st(Status::INVALID_FIELD));
        assert_eq!(g.admin(feat(0x0A, fid, 0)).1, st(Status::INVALID_FIELD));
    }

    let log = |lid: u32, dwords: u32, offset: u32| {
        let mut c = with_prp(cmd(0x02, 0xFFFF_FFFF), DATA);
        c[10] = lid | (dwords - 1) << 16;
        c[12] = offset;
        c
    };
    g.env.mem.write(DATA, &[0xee; 4096]).unwrap();
    assert_eq!(g.admin(log(2, 128, 0)).1, 0);
    let mut smart = [0u8; 512];
    g.env.mem.read(DATA, &mut smart).unwrap();
    assert_eq!(u16::from_le_bytes([smart[1], smart[2]]), 313);
    assert_eq!(smart[3], 100);
    assert_eq!(smart[48], 1, "one data unit written");
    assert_eq!(smart[80], 1, "one write command");
    assert_eq!(
        g.env.mem.read_u8(DATA + 512).unwrap(),
        0xee,
        "no more than asked"
    );
    assert_eq!(g.admin(log(3, 128, 0)).1, 0);
    assert_eq!(g.env.mem.read_u8(DATA).unwrap(), 1);
    assert_eq!(g.admin(log(3, 2, 8)).1, 0);
    assert_eq!(g.env.mem.read_u8(DATA).unwrap(), b'j');
    assert_eq!(g.admin(log(1, 16, 0)).1, 0);
    assert_eq!(g.admin(log(1, 1024, 0)).1, 0, "past the end reads zeroes");
    assert_eq!(g.env.mem.read_u64(DATA + 2048).unwrap(), 0);
    assert_eq!(g.admin(log(2, 128, 512)).1, st(Status::INVALID_FIELD));
    assert_eq!(g.admin(log(2, 128, 2)).1, st(Status::INVALID_FIELD));
    assert_eq!(
        g.admin(log(2, 0x10000, 0)).1,
        st(Status::INVALID_FIELD),
        "past MDTS"
    );
    assert_eq!(g.admin(log(0x05, 1, 0)).1, st(Status::INVALID_LOG_PAGE));
    assert_eq!(g.admin(log(0xC0, 1, 0)).1, st(Status::INVALID_LOG_PAGE));
    let mut ns2 = log(2, 128, 0);
    ns2[1] = 2;
    assert_eq!(g.admin(ns2).1, st(Status::INVALID_NAMESPACE));

    // The held AERs go with a reset: a fresh controller takes AERL + 1 again.
    g.w32(regs::CC, 0);
    g.enable();
    for _ in 0..=AERL {
        g.queue(0, cmd(0x0C, 0));
        g.ring(0);
        assert!(g.reap(0).is_none());
    }
}
