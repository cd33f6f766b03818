//! The VMBus host and storvsc driven as Linux's `hv_vmbus` and `hv_storvsc` drive them:
//! through the hypercalls, the SynIC pages and the rings in guest memory, with disks in host
//! memory. The hostile cases check that a broken guest loses its channel and nothing else.

mod guest;

use super::wire::{self, msg};
use super::{STORVSC_TYPE, instance_guid};
use crate::HvStatus;
use crate::hypercall::Control;
use crate::msr::{SCONTROL, SIEFP, SIMP, SINT0};
use crate::storvsc::{self, VSTOR_PACKET, op, srb};
use crate::tests::view;
use guest::*;
use virt::GuestMemory;
use virt::personality::{Action, Personality};

#[test]
fn versions_are_negotiated_as_linux_tries_them() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    // Newer than any host Janus knows: refused, then Linux's first choice accepted.
    let r = g.connect(6 << 16);
    assert_eq!(u32_at(&r, 0), msg::VERSION_RESPONSE);
    assert_eq!(r[8], 0);
    let r = g.connect(wire::version::WIN10_V5_3);
    assert_eq!((r[8], u32_at(&r, 12)), (1, 4));
    // Before 5.0 the guest posts to connection 1; both stay open.
    let r = g.connect(wire::version::WIN8_1);
    assert_eq!(r[8], 1);
    assert_eq!(
        g.post_to(1, &wire::Out::new(msg::REQUESTOFFERS, 8).payload()[..8]),
        0
    );
    // The disk, the shutdown service, the end of offers.
    assert_eq!(g.recv_all().len(), 3);
    assert_eq!(g.post_to(7, &[0; 8]), HvStatus::InvalidConnectionId as u64);
}

#[test]
fn each_disk_is_offered_as_a_scsi_controller() {
    let mut g = Guest::new(&[disk(SECTORS), disk(SECTORS)]);
    g.connect(wire::version::WIN10_V5_3);
    g.post(&wire::Out::new(msg::REQUESTOFFERS, 8));
    let m = g.recv_all();
    assert_eq!(m.len(), 4);
    for (i, o) in m[..2].iter().enumerate() {
        assert_eq!(o.len(), wire::OFFER_LEN);
        assert_eq!(u32_at(o, 0), msg::OFFERCHANNEL);
        assert_eq!(&o[8..24], &STORVSC_TYPE);
        assert_eq!(&o[24..40], &instance_guid(i as u32));
        assert_eq!(u32_at(o, 184), i as u32 + 1, "relid");
        assert_eq!(o[189] & 1, 0, "no monitored notification");
        assert_eq!(o[190] & 1, 1, "dedicated interrupt");
    }
    assert_ne!(u32_at(&m[0], 192), u32_at(&m[1], 192));
    assert_eq!(&m[2][8..24], &super::ic::SHUTDOWN_TYPE);
    assert_eq!(u32_at(&m[2], 184), 3);
    assert_eq!(u32_at(&m[3], 0), msg::ALLOFFERS_DELIVERED);
}

#[test]
fn linux_writes_reads_and_flushes_through_storvsc() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    let (relid, conn) = g.open_first();
    g.init_storvsc(conn);

    // INQUIRY answers a disk at LUN 0.
    let c = g.srb(conn, &[0x12, 0, 0, 0, 36, 0], true, 36, 0);
    assert_eq!(status(&c), (srb::SUCCESS, 0, 36));
    assert_eq!(g.buffer(1, 0)[0], 0);

    // 24 KiB written from a buffer that starts mid-page, read back elsewhere in the disk.
    let data: Vec<u8> = (0..24 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    g.fill_buffer(&data, 512);
    let c = g.srb(conn, &rw10(0x2a, 100, 48), false, data.len() as u32, 512);
    assert_eq!(status(&c), (srb::SUCCESS, 0, data.len() as u32));
    let vol = &g.host.disks[0];
    assert_eq!(&vol.data[100 * 512..100 * 512 + data.len()], &data[..]);
    assert_ne!(&vol.durable[100 * 512..100 * 512 + data.len()], &data[..]);
    g.fill_buffer(&vec![0; data.len()], 0);
    let c = g.srb(conn, &rw10(0x28, 100, 48), true, data.len() as u32, 0);
    assert_eq!(status(&c), (srb::SUCCESS, 0, data.len() as u32));
    assert_eq!(g.buffer(data.len(), 0), data);

    // SYNCHRONIZE CACHE makes it durable.
    let c = g.srb(conn, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], false, 0, 0);
    assert_eq!(status(&c), (srb::SUCCESS, 0, 0));
    let vol = &g.host.disks[0];
    assert_eq!(vol.flushes, 1);
    assert_eq!(&vol.durable[100 * 512..100 * 512 + data.len()], &data[..]);

    // The channel's interrupt: relid's bit in SIEF slot 2, and the vector raised.
    let flags = g.mem.read_u64(SIEF + 2 * 256).unwrap();
    assert_ne!(flags & (1 << relid), 0);
    assert!(
        g.host
            .raised
            .iter()
            .any(|&(vp, v, _)| vp == 0 && u64::from(v) == VECTOR)
    );
}

#[test]
fn a_transfer_of_the_largest_size_crosses_chunks() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    let (_, conn) = g.open_first();
    g.init_storvsc(conn);
    let max = storvsc::MAX_TRANSFER_BYTES;
    let blocks = (max / 512) as u16;
    let c = g.srb(conn, &rw10(0x28, 7, blocks), true, max, 100);
    assert_eq!(status(&c), (srb::SUCCESS, 0, max));
    assert_eq!(
        g.buffer(max as usize, 100),
        g.host.disks[0].data[7 * 512..7 * 512 + max as usize].to_vec()
    );
    // One block more than the target takes is an invalid field, and moves nothing.
    let c = g.srb(conn, &rw10(0x28, 7, blocks + 1), true, max + 512, 100);
    assert_eq!(c[14] & 0x7f, srb::ERROR);
    assert_eq!(c[15], 2);
}

#[test]
fn errors_come_back_as_check_condition_with_sense() {
    let mut ro = disk(SECTORS);
    ro.read_only = true;
    let mut g = Guest::new(&[ro]);
    let (_, conn) = g.open_first();
    g.init_storvsc(conn);
    let before = g.host.disks[0].data.clone();
    let c = g.srb(conn, &rw10(0x2a, 0, 8), false, 4096, 0);
    assert_eq!(status(&c), (srb::ERROR | srb::AUTOSENSE_VALID, 2, 0));
    // Fixed sense over the CDB: DATA PROTECT / WRITE PROTECTED.
    assert_eq!(c[28] & 0x7f, 0x70);
    assert_eq!(c[28 + 2] & 0xf, 7);
    assert_eq!(c[28 + 12], 0x27);
    assert!(c[12 + 9] > 0 && c[12 + 9] <= 20);
    assert_eq!(g.host.disks[0].data, before);
    // Past the end of the disk.
    let c = g.srb(conn, &rw10(0x28, SECTORS as u32 - 1, 2), true, 1024, 0);
    assert_eq!(c[15], 2);
    assert_eq!(c[28 + 12], 0x21);
    // No LUN at another target: INQUIRY says so in its data.
    let mut v = [0u8; 6];
    v[0] = 0x12;
    v[4] = 36;
    let c = g.srb(conn, &v, true, 36, 0);
    assert_eq!(c[14], srb::SUCCESS);
}

#[test]
fn srbs_whose_lengths_disagree_with_their_pages_are_invalid() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    let (_, conn) = g.open_first();
    g.init_storvsc(conn);
    // READ(10) of 8 blocks with a 2 KiB buffer: the transfer does not fit.
    let c = g.srb(conn, &rw10(0x28, 0, 8), true, 2048, 0);
    assert_eq!(c[14], srb::INVALID_REQUEST);
    // A direction that contradicts the command.
    let c = g.srb(conn, &rw10(0x28, 0, 8), false, 4096, 0);
    assert_eq!(c[14], srb::INVALID_REQUEST);
    // Data expected but no page list (in band).
    let mut v = vec![0u8; VSTOR_PACKET];
    v[0..4].copy_from_slice(&op::EXECUTE_SRB.to_le_bytes());
    v[12 + 8] = 10;
    v[12 + 10] = 1;
    v[24..28].copy_from_slice(&4096u32.to_le_bytes());
    v[28..38].copy_from_slice(&rw10(0x28, 0, 8));
    g.queue(super::ring::packet::DATA_INBAND, &[], &v);
    g.signal(conn);
    let c = g.completions();
    assert_eq!(c[0].1[14], srb::INVALID_REQUEST);
    // A page list that reaches outside RAM.
    let mut header = vec![];
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&4096u32.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&(RAM as u64 / 4096).to_le_bytes());
    v[4..8].copy_from_slice(&1u32.to_le_bytes());
    g.queue(super::ring::packet::DATA_USING_GPA_DIRECT, &header, &v);
    g.signal(conn);
    let c = g.completions();
    assert_eq!(c[0].1[14], srb::INVALID_REQUEST);
}

#[test]
fn srbs_before_initialization_are_refused() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    let (_, conn) = g.open_first();
    let c = g.vstor(conn, op::EXECUTE_SRB, |_| {});
    assert_ne!(u32_at(&c, 8), 0);
    let c = g.vstor(conn, op::QUERY_PROTOCOL_VERSION, |v| {
        v[12..14].copy_from_slice(&0x0402u16.to_le_bytes())
    });
    assert_ne!(u32_at(&c, 8), 0, "Windows 7's protocol is not served");
}

#[test]
fn a_corrupt_ring_index_costs_the_guest_its_channel_only() {
    let mut g = Guest::new(&[disk(SECTORS), disk(SECTORS)]);
    let (_, conn) = g.open_first();
    g.init_storvsc(conn);
    // A write index that is not 8-byte aligned.
    let out = g.out_ring();
    g.mem.write_u32(out.pages[0] << 12, 12).unwrap();
    assert_eq!(g.signal(conn), (Action::Done, 0));
    assert!(g.completions().is_empty());
    let ch = &g.hv.vmbus.channels[0];
    assert!(ch.open.as_ref().unwrap().broken);
    // The other controller still opens; the bus still answers.
    g.post(&wire::Out::new(msg::REQUESTOFFERS, 8));
    assert_eq!(g.recv_all().len(), 4);
    // A descriptor longer than what is queued breaks the ring too.
    let mut g = Guest::new(&[disk(SECTORS)]);
    let (_, conn) = g.open_first();
    let d = super::ring::Descriptor {
        kind: 6,
        offset: 16,
        len: 4096,
        flags: 1,
        trans_id: 1,
    };
    let out = g.out_ring();
    out.write(&g.mem, 0, &d.encode()).unwrap();
    out.publish(&g.mem, true, 24).unwrap();
    g.signal(conn);
    assert!(g.hv.vmbus.channels[0].open.as_ref().unwrap().broken);
}

#[test]
fn a_full_reply_ring_waits_for_the_guest() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    let (_, conn) = g.open_first();
    g.init_storvsc(conn);
    let mut v = vec![0u8; VSTOR_PACKET];
    v[0..4].copy_from_slice(&op::EXECUTE_SRB.to_le_bytes());
    v[4..8].copy_from_slice(&1u32.to_le_bytes());
    v[12 + 8] = 6;
    // 150 TEST UNIT READYs (13 KiB of the 16 KiB request ring): served a budget at a time,
    // the call continued until none is left.
    let mut ids: Vec<u64> = (0..150)
        .map(|_| g.queue(super::ring::packet::DATA_INBAND, &[], &v))
        .collect();
    let signal_until_done = |g: &mut Guest| {
        let mut calls = 0;
        loop {
            calls += 1;
            match g.signal(conn) {
                (Action::Retry, _) => continue,
                (Action::Done, 0) => return calls,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(signal_until_done(&mut g), 3, "150 requests, 64 a pass");
    // Unread, the completions fill 13 of the reply ring's 16 KiB: 100 more do not fit, and
    // the host stops and asks to be told when there is room.
    ids.extend((0..100).map(|_| g.queue(super::ring::packet::DATA_INBAND, &[], &v)));
    signal_until_done(&mut g);
    let in_ring = g.in_ring();
    assert_ne!(in_ring.pending_send_sz(&g.mem).unwrap(), 0);
    let first = g.completions();
    assert!(first.len() < 250 && first.len() > 150, "{}", first.len());
    // The guest read them and signals (as Linux does when pending_send_sz is crossed).
    signal_until_done(&mut g);
    let rest = g.completions();
    let got: Vec<u64> = first.iter().chain(&rest).map(|c| c.0).collect();
    assert_eq!(got, ids, "every request completed once, in order");
    assert_eq!(g.in_ring().pending_send_sz(&g.mem).unwrap(), 0);
}

#[test]
fn gpadl_teardown_and_close_free_the_ring() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    let (relid, conn) = g.open_first();
    let mut m = wire::Out::new(msg::CLOSECHANNEL, wire::CLOSE_LEN);
    m.put_u32(8, relid);
    g.post(&m);
    let mut m = wire::Out::new(msg::GPADL_TEARDOWN, wire::GPADL_TEARDOWN_LEN);
    m.put_u32(8, relid);
    m.put_u32(12, 0x1000);
    g.post(&m);
    let r = g.recv().unwrap();
    assert_eq!(
        (u32_at(&r, 0), u32_at(&r, 8)),
        (msg::GPADL_TORNDOWN, 0x1000)
    );
    // Signalling a closed channel serves nothing.
    assert_eq!(g.signal(conn), (Action::Done, 0));
    // Opening on a GPADL that is gone fails with a status.
    g.post(&open_message(relid, 0x1000, OUT_PAGES));
    let r = g.recv().unwrap();
    assert_ne!(u32_at(&r, 16), 0);
    // UNLOAD answers and forgets the connection.
    g.post(&wire::Out::new(msg::UNLOAD, 8));
    assert_eq!(u32_at(&g.recv().unwrap(), 0), msg::UNLOAD_RESPONSE);
    assert_eq!(
        g.post_to(4, &wire::Out::new(msg::REQUESTOFFERS, 8).payload()[..8]),
        0
    );
    assert!(g.recv().is_none());
}

#[test]
fn bad_open_requests_fail_with_a_status() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    g.connect(wire::version::WIN10_V5_3);
    g.post(&wire::Out::new(msg::REQUESTOFFERS, 8));
    g.recv_all();
    g.post(&super::gpadl::header_message(
        1,
        5,
        4,
        &[0x100, 0x101, 0x102, 0x103],
    ));
    assert_eq!(u32_at(&g.recv().unwrap(), 16), 0);
    // A downstream offset that leaves no ring, a VP that does not exist, an unknown GPADL.
    for (gpadl, vp, offset) in [(5, 0, 1), (5, 0, 3), (5, 9, 2), (6, 0, 2)] {
        let mut m = open_message(1, gpadl, offset);
        m.put_u32(20, vp);
        g.post(&m);
        assert_ne!(u32_at(&g.recv().unwrap(), 16), 0, "{gpadl} {vp} {offset}");
    }
    let mut m = open_message(1, 5, 2);
    m.put_u32(20, 0);
    g.post(&m);
    assert_eq!(u32_at(&g.recv().unwrap(), 16), 0);
    // Opening it twice.
    g.post(&m);
    assert_ne!(u32_at(&g.recv().unwrap(), 16), 0);
}

#[test]
fn a_message_flood_is_answered_with_insufficient_buffers() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    g.connect(wire::version::WIN10_V5_3);
    // The guest never consumes: the first message sits in the slot, the rest queue.
    let m = wire::Out::new(msg::REQUESTOFFERS, 8);
    let mut refused = false;
    for _ in 0..64 {
        match g.post_to(4, m.payload()) {
            0 => {}
            s => {
                assert_eq!(s, HvStatus::InsufficientBuffers as u64);
                refused = true;
            }
        }
    }
    assert!(refused);
    // Consuming drains the queue in order, and posting works again.
    let all = g.recv_all();
    assert!(all.len() <= super::OUTBOX + 1);
    assert_eq!(g.post_to(4, m.payload()), 0);
}

#[test]
fn post_message_checks_its_input() {
    let mut g = Guest::new(&[]);
    let c = post_message();
    // Payload larger than a message.
    g.mem.write_u64(INPUT, 4).unwrap();
    g.mem.write_u64(INPUT + 8, 1 | (241u64 << 32)).unwrap();
    assert_eq!(
        g.call(c.encode(), INPUT).1,
        HvStatus::InvalidParameter as u64
    );
    // Message type 0 and the hypervisor's own types.
    for kind in [0u64, 0x8000_0001] {
        g.mem.write_u64(INPUT + 8, kind | (8u64 << 32)).unwrap();
        assert_eq!(
            g.call(c.encode(), INPUT).1,
            HvStatus::InvalidParameter as u64
        );
    }
    // Input outside RAM or across a page.
    assert_eq!(
        g.call(c.encode(), RAM as u64).1,
        HvStatus::InvalidAlignment as u64
    );
    // Fast form is not offered for this call.
    let fast = Control { fast: true, ..c };
    assert_eq!(
        g.call(fast.encode(), 0).1,
        HvStatus::InvalidHypercallInput as u64
    );
    // Signal to a connection no channel has.
    assert_eq!(g.signal(0x1_0099).1, HvStatus::InvalidConnectionId as u64);
}

#[test]
fn arbitrary_messages_and_ring_bytes_do_not_hurt_the_host() {
    let mut rng = virt::testing::XorShift(0x5eed_1234);
    for round in 0..200 {
        let mut g = Guest::new(&[disk(256), disk(256)]);
        let (_, conn) = g.open_first();
        if round % 2 == 0 {
            g.init_storvsc(conn);
        }
        for _ in 0..50 {
            match rng.next_u64() % 4 {
                0 => {
                    let len = (rng.next_u64() % 241) as usize;
                    let mut m: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                    if len >= 4 {
                        let kind = (rng.next_u64() % 26) as u32;
                        m[..4].copy_from_slice(&kind.to_le_bytes());
                    }
                    g.post_to(4, &m);
                    g.recv_all();
                }
                1 => {
                    // Random bytes over the rings' pages, indices included.
                    let pfns = ring_pfns();
                    let page = pfns[(rng.next_u64() % pfns.len() as u64) as usize];
                    let off = rng.next_u64() % 4096;
                    let v = rng.next_u64();
                    let _ = g.mem.write_u32((page << 12) + (off & !3), v as u32);
                }
                2 => {
                    let body: Vec<u8> = (0..64).map(|_| rng.next_u64() as u8).collect();
                    let kind = [6u16, 9, 11, rng.next_u64() as u16][(rng.next_u64() % 4) as usize];
                    if g.out_ring().guest_index(&g.mem, true).is_ok() {
                        g.out_write = g.out_ring().guest_index(&g.mem, true).unwrap();
                        g.queue(kind, &[], &body);
                    }
                }
                _ => {
                    let conn = if rng.next_u64().is_multiple_of(4) {
                        rng.next_u64() as u32
                    } else {
                        conn
                    };
                    for _ in 0..1000 {
                        if g.signal(conn).0 != Action::Retry {
                            break;
                        }
                    }
                }
            }
        }
        // Nothing was written outside guest RAM's rings and buffers but the disks, which
        // stay their size.
        assert!(g.host.disks.iter().all(|d| d.data.len() == 256 * 512));
    }
}

#[test]
fn the_shutdown_service_asks_linux_to_power_off() {
    use virt::personality::ShutdownKind;
    let mut g = Guest::new(&[disk(SECTORS)]);
    g.connect(wire::version::WIN10_V5_3);
    g.post(&wire::Out::new(msg::REQUESTOFFERS, 8));
    let offers = g.recv_all();
    let relid = u32_at(&offers[1], 184);
    let conn = u32_at(&offers[1], 192);
    // Not open yet: there is no way to ask.
    assert!(
        !g.hv
            .request_shutdown(ShutdownKind::PowerOff, &mut g.mem, &mut g.host)
    );
    g.post(&super::gpadl::header_message(
        relid,
        0x2000,
        RING_PAGES as u32,
        &ring_pfns(),
    ));
    assert_eq!(u32_at(&g.recv().unwrap(), 16), 0);
    g.host.raised.clear();
    g.post(&open_message(relid, 0x2000, OUT_PAGES));
    assert_eq!(u32_at(&g.recv().unwrap(), 16), 0);
    // The host speaks first: a negotiation request, and the channel's interrupt.
    let n = g.host_packets();
    assert_eq!(n.len(), 1);
    assert_eq!(
        u16::from_le_bytes([n[0][12], n[0][13]]),
        0,
        "ICMSGTYPE_NEGOTIATE"
    );
    assert_ne!(g.mem.read_u64(SIEF + 2 * 256).unwrap() & (1 << relid), 0);
    assert!(!g.host.raised.is_empty());
    // Asked before the guest answered: pending, and the channel interrupted again.
    assert!(g.hv.request_shutdown(ShutdownKind::PowerOff, &mut g.mem, &mut g.host));
    assert!(g.host_packets().is_empty());
    // Linux answers the negotiation (same buffer, response flag, its versions kept)...
    let mut answer = n[0].clone();
    answer[8 + 17] = 1 | 4;
    g.queue(super::ring::packet::DATA_INBAND, &[], &answer);
    assert_eq!(g.signal(conn), (Action::Done, 0));
    // ...and the shutdown request follows: power off (flags 0), the whole message.
    let r = g.host_packets();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].len(), 2088);
    assert_eq!(
        u16::from_le_bytes([r[0][12], r[0][13]]),
        3,
        "ICMSGTYPE_SHUTDOWN"
    );
    assert_eq!(u32_at(&r[0], 28 + 8), 0);
    let mut confirm = r[0].clone();
    confirm[8 + 17] = 1 | 4;
    g.queue(super::ring::packet::DATA_INBAND, &[], &confirm);
    g.signal(conn);
    let ch =
        g.hv.vmbus
            .channels
            .iter()
            .find(|c| c.relid == relid)
            .unwrap();
    assert!(ch.open.as_ref().unwrap().ic.confirmed);
    // Later requests go straight out.
    assert!(g.hv.request_shutdown(ShutdownKind::Reboot, &mut g.mem, &mut g.host));
    let r = g.host_packets();
    assert_eq!(u32_at(&r[0], 28 + 8), 2);
}

#[test]
fn modifychannel_moves_the_interrupt_and_answers_from_5_3() {
    let mut g = Guest::new(&[disk(SECTORS)]);
    let (relid, conn) = g.open_first();
    let mut m = wire::Out::new(msg::MODIFYCHANNEL, wire::MODIFY_LEN);
    m.put_u32(8, relid);
    m.put_u32(12, 1);
    g.post(&m);
    let r = g.recv().expect("MODIFYCHANNEL_RESPONSE from protocol 5.3");
    assert_eq!(
        (u32_at(&r, 0), u32_at(&r, 8), u32_at(&r, 12)),
        (msg::MODIFYCHANNEL_RESPONSE, relid, 0)
    );
    // The next completion interrupts VP 1, once its SynIC is on (its own pages).
    for (msr, v) in [
        (SIMP, 0x5000 | 1),
        (SIEFP, 0x6000 | 1),
        (SINT0 + 2, VECTOR),
        (SCONTROL, 1),
    ] {
        let a = g.hv.wrmsr(&view(1), msr, v, &mut g.mem, &mut g.host);
        assert_eq!(a, Action::Done);
    }
    g.host.raised.clear();
    g.vstor(conn, op::BEGIN_INITIALIZATION, |_| {});
    assert!(g.host.raised.iter().all(|&(vp, _, _)| vp == 1));
    assert!(!g.host.raised.is_empty());
    assert_ne!(g.mem.read_u64(0x6000 + 2 * 256).unwrap() & (1 << relid), 0);
    // A VP the partition does not have is refused with a status.
    m.put_u32(12, 7);
    g.post(&m);
    assert_ne!(u32_at(&g.recv().unwrap(), 12), 0);
    // Before 5.3 there is no answer.
    g.connect(wire::version::WIN10_V5_2);
    g.post(&m);
    assert!(g.recv().is_none());
}
