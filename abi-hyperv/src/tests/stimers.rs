use super::*;
use crate::msr::*;
use virt::Event;

const CONFIG0: u32 = 0x4000_00B0;
const COUNT0: u32 = 0x4000_00B1;
const ENABLE: u64 = 1;
const PERIODIC: u64 = 1 << 1;
const AUTO_ENABLE: u64 = 1 << 3;
const DIRECT: u64 = 1 << 12;
const SIMP_PAGE: u64 = 0x9000;

fn direct(vector: u64) -> u64 {
    DIRECT | (vector << 4)
}

/// Linux's clockevent: oneshot, direct mode, vector 0xED, auto-enable; each event is an
/// absolute count written to COUNT.
#[test]
fn direct_one_shot_fires_its_vector_at_the_expiry_time() {
    let mut rig = Rig::new();
    rig.wr_ok(1, CONFIG0, ENABLE | AUTO_ENABLE | direct(0xed));
    assert_eq!(rig.host.timer(1), None, "no count yet");
    let now = rig.rd_ok(1, TIME_REF_COUNT);
    let ns0 = rig.host.ns;
    rig.wr_ok(1, COUNT0, now + 10_000);
    assert_eq!(rig.host.timer(1), Some(ns0 + 1_000_000), "1 ms later");
    assert!(rig.host.raised.is_empty());

    rig.host.advance_ns(1_000_000);
    rig.timer_expired(1);
    assert_eq!(rig.host.raised, vec![(1, 0xed, true)]);
    assert_eq!(
        rig.rd_ok(1, CONFIG0) & ENABLE,
        0,
        "a one-shot disarms itself"
    );
    assert_eq!(rig.host.timer(1), None);

    // The next event re-enables through auto-enable.
    let now = rig.rd_ok(1, TIME_REF_COUNT);
    rig.wr_ok(1, COUNT0, now + 50);
    assert_eq!(rig.rd_ok(1, CONFIG0) & ENABLE, ENABLE);
    assert_eq!(rig.host.timer(1), Some(rig.host.ns + 5_000));
}

#[test]
fn expiry_in_the_past_fires_at_once() {
    let mut rig = Rig::new();
    rig.host.advance_ns(1_000_000);
    rig.wr_ok(0, CONFIG0, ENABLE | AUTO_ENABLE | direct(0xed));
    rig.wr_ok(0, COUNT0, 1);
    assert_eq!(rig.host.raised, vec![(0, 0xed, true)]);
}

#[test]
fn early_host_wakeup_rearms_without_firing() {
    let mut rig = Rig::new();
    rig.wr_ok(0, CONFIG0, AUTO_ENABLE | direct(0xed));
    rig.wr_ok(0, COUNT0, 1_000);
    rig.host.advance_ns(50_000);
    rig.timer_expired(0);
    assert!(rig.host.raised.is_empty());
    assert_eq!(rig.host.timer(0), Some(rig.host.ns + 50_000));
    rig.host.advance_ns(50_000);
    rig.timer_expired(0);
    assert_eq!(rig.host.raised, vec![(0, 0xed, true)]);
}

#[test]
fn shutdown_pattern_cancels_the_host_timer() {
    let mut rig = Rig::new();
    rig.wr_ok(0, CONFIG0, AUTO_ENABLE | direct(0xed));
    rig.wr_ok(0, COUNT0, 1_000_000);
    assert!(rig.host.timer(0).is_some());
    rig.wr_ok(0, COUNT0, 0);
    rig.wr_ok(0, CONFIG0, 0);
    assert_eq!(rig.host.timer(0), None);
    rig.host.advance_ns(1_000_000_000);
    rig.timer_expired(0);
    assert!(rig.host.raised.is_empty());
}

#[test]
fn periodic_direct_timer_repeats_and_skips_missed_periods() {
    let mut rig = Rig::new();
    rig.wr_ok(0, COUNT0 + 2, 1_000); // STIMER1_COUNT: 100 us period
    rig.wr_ok(0, CONFIG0 + 2, ENABLE | PERIODIC | direct(0x50));
    let start = rig.host.ns;
    assert_eq!(rig.host.timer(0), Some(start + 100_000));
    for i in 1..=3u64 {
        rig.host.ns = start + i * 100_000;
        rig.timer_expired(0);
        assert_eq!(rig.host.raised.len(), i as usize);
        assert_eq!(rig.host.timer(0), Some(start + (i + 1) * 100_000));
    }
    // Ten periods late: one interrupt, then back on a period from now.
    rig.host.ns = start + 13 * 100_000 + 10;
    rig.timer_expired(0);
    assert_eq!(rig.host.raised.len(), 4);
    assert!(rig.host.raised.iter().all(|r| *r == (0, 0x50, true)));
    assert_eq!(
        rig.rd_ok(0, CONFIG0 + 2) & ENABLE,
        ENABLE,
        "periodic stays on"
    );
}

#[test]
fn timers_of_one_vp_share_its_host_timer() {
    let mut rig = Rig::new();
    rig.wr_ok(0, CONFIG0, AUTO_ENABLE | direct(0x40));
    rig.wr_ok(0, CONFIG0 + 6, AUTO_ENABLE | direct(0x43));
    rig.wr_ok(0, COUNT0 + 6, 300);
    rig.wr_ok(0, COUNT0, 200);
    assert_eq!(rig.host.timer(0), Some(rig.host.ns + 20_000));
    rig.host.advance_ns(20_000);
    rig.timer_expired(0);
    assert_eq!(rig.host.raised, vec![(0, 0x40, true)]);
    assert_eq!(rig.host.timer(0), Some(rig.host.ns + 10_000));
    rig.host.advance_ns(10_000);
    rig.timer_expired(0);
    assert_eq!(rig.host.raised[1], (0, 0x43, true));
}

#[test]
fn stimer_config_validation() {
    let mut rig = Rig::new();
    assert_eq!(rig.wr(0, CONFIG0, ENABLE | direct(0x0e)), Err(Event::GP0));
    // Nor through auto-enable, which a COUNT write would turn on.
    assert_eq!(
        rig.wr(0, CONFIG0, AUTO_ENABLE | direct(0x06)),
        Err(Event::GP0)
    );
    rig.wr_ok(0, CONFIG0, direct(0x06));
    // Message mode to SINT 0 is not allowed: the timer stays disabled.
    rig.wr_ok(0, CONFIG0, ENABLE);
    assert_eq!(rig.rd_ok(0, CONFIG0) & ENABLE, 0);
    // Every timer register exists on every VP, and nowhere else.
    for msr in 0x4000_00B0..=0x4000_00B7 {
        rig.wr_ok(1, msr, 0);
    }
    assert_eq!(rig.rd(2, CONFIG0), Err(Event::GP0));
    assert_eq!(rig.rd(0, 0x4000_00B8), Err(Event::GP0));
}

fn synic_with_sint2(rig: &mut Rig, vp: u32) {
    rig.wr_ok(vp, SIMP, SIMP_PAGE | 1);
    rig.wr_ok(vp, SINT0 + 2, 0xf3);
    rig.wr_ok(vp, SCONTROL, 1);
}

fn slot(rig: &Rig, sint: u64) -> (u32, u8, u8, u32, u64, u64) {
    let base = SIMP_PAGE + sint * 256;
    (
        rig.mem.read_u32(base).unwrap(),
        rig.mem.read_u8(base + 4).unwrap(),
        rig.mem.read_u8(base + 5).unwrap(),
        rig.mem.read_u32(base + 16).unwrap(),
        rig.mem.read_u64(base + 24).unwrap(),
        rig.mem.read_u64(base + 32).unwrap(),
    )
}

#[test]
fn message_mode_posts_timer_expired_and_redelivers_after_eom() {
    let mut rig = Rig::new();
    synic_with_sint2(&mut rig, 0);
    // STIMER1, periodic, message to SINT2.
    rig.wr_ok(0, COUNT0 + 2, 1_000);
    rig.wr_ok(0, CONFIG0 + 2, ENABLE | PERIODIC | (2 << 16));
    rig.host.advance_ns(100_000);
    rig.timer_expired(0);
    let (ty, size, flags, index, expiration, delivery) = slot(&rig, 2);
    assert_eq!((ty, size, flags, index), (0x8000_0010, 24, 0, 1));
    assert_eq!(expiration, 1_000);
    assert_eq!(delivery, 1_000);
    assert_eq!(rig.host.raised, vec![(0, 0xf3, true)]);

    // The guest has not consumed it: the next expiry only flags the slot.
    rig.host.advance_ns(100_000);
    rig.timer_expired(0);
    let (ty, _, flags, ..) = slot(&rig, 2);
    assert_eq!((ty, flags), (0x8000_0010, 1), "msg_pending");
    assert_eq!(rig.host.raised.len(), 1);

    // The guest frees the slot and, seeing msg_pending, writes EOM.
    rig.mem.write_u32(SIMP_PAGE + 512, 0).unwrap();
    rig.wr_ok(0, EOM, 0);
    let (ty, _, flags, _, expiration, _) = slot(&rig, 2);
    assert_eq!((ty, flags, expiration), (0x8000_0010, 0, 2_000));
    assert_eq!(rig.host.raised.len(), 2);
}

#[test]
fn message_waits_for_synic_and_respects_mask_and_auto_eoi() {
    let mut rig = Rig::new();
    rig.wr_ok(1, COUNT0, 10);
    rig.wr_ok(1, CONFIG0, ENABLE | (2 << 16));
    rig.host.advance_ns(1_000);
    rig.timer_expired(1);
    assert!(rig.host.raised.is_empty(), "SynIC is off: kept pending");

    rig.wr_ok(1, SIMP, SIMP_PAGE | 1);
    rig.wr_ok(1, SINT0 + 2, (1 << 16) | 0xf3);
    rig.wr_ok(1, SCONTROL, 1);
    assert_eq!(slot(&rig, 2).0, 0x8000_0010, "delivered on enable");
    assert!(
        rig.host.raised.is_empty(),
        "masked SINT: message, no interrupt"
    );

    rig.mem.write_u32(SIMP_PAGE + 512, 0).unwrap();
    rig.wr_ok(1, SINT0 + 2, (1 << 17) | 0xf3);
    rig.wr_ok(1, COUNT0, 20);
    rig.wr_ok(1, CONFIG0, ENABLE | (2 << 16));
    rig.host.advance_ns(1_000);
    rig.timer_expired(1);
    assert_eq!(rig.host.raised, vec![(1, 0xf3, false)], "auto-EOI");
}
