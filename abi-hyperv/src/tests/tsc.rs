use super::*;
use crate::msr::{REFERENCE_TSC, TIME_REF_COUNT};

const TSC_PAGE: u64 = 0x5000;

/// What Linux's `hv_read_tsc_page` computes from the page for a given guest TSC.
fn page_time(rig: &Rig, tsc: u64) -> Option<u64> {
    let seq = rig.mem.read_u32(TSC_PAGE).unwrap();
    if seq == 0 {
        return None;
    }
    let scale = rig.mem.read_u64(TSC_PAGE + 8).unwrap();
    let offset = rig.mem.read_u64(TSC_PAGE + 16).unwrap();
    Some((((u128::from(tsc) * u128::from(scale)) >> 64) as u64).wrapping_add(offset))
}

#[test]
fn reference_counter_starts_at_zero_and_counts_100ns() {
    let mut rig = Rig::new();
    assert_eq!(rig.rd_ok(0, TIME_REF_COUNT), 0);
    rig.host.advance_ns(1_000_000_000);
    let t = rig.rd_ok(1, TIME_REF_COUNT);
    assert!((9_999_999..=10_000_000).contains(&t), "{t}");
    assert!(rig.wr(0, TIME_REF_COUNT, 5).is_err(), "read-only");
}

#[test]
fn tsc_page_is_filled_in_the_enabling_exit_without_a_guest_os_id() {
    let mut rig = Rig::new();
    rig.host.advance_ns(123_456_789);
    assert_eq!(rig.rd_ok(0, REFERENCE_TSC), 0);
    rig.wr_ok(0, REFERENCE_TSC, TSC_PAGE | 1);
    assert_eq!(rig.rd_ok(0, REFERENCE_TSC), TSC_PAGE | 1);
    let seq = rig.mem.read_u32(TSC_PAGE).unwrap();
    assert_ne!(seq, 0);
    assert_eq!(
        rig.mem.read_u64(TSC_PAGE + 8).unwrap(),
        crate::scale_for(TSC_HZ).unwrap()
    );

    // The page and the MSR agree now and later, to the tick.
    for step in [0u64, 1, 999, 1_000_000, 3_600_000_000_000] {
        rig.host.advance_ns(step);
        let msr = rig.rd_ok(0, TIME_REF_COUNT);
        let page = page_time(&rig, rig.host.tsc()).unwrap();
        assert_eq!(page, msr, "after +{step} ns");
    }

    // Re-enabling republishes with a new, still non-zero sequence.
    rig.wr_ok(0, REFERENCE_TSC, TSC_PAGE | 1);
    let seq2 = rig.mem.read_u32(TSC_PAGE).unwrap();
    assert!(seq2 != seq && seq2 != 0);
}

#[test]
fn tsc_page_honours_the_guest_tsc_offset() {
    let mut cfg = config(HypercallInsn::Vmcall);
    cfg.tsc_offset = 0u64.wrapping_sub(12_345_678_901);
    let mut rig = Rig::with(cfg, 1);
    rig.wr_ok(0, REFERENCE_TSC, TSC_PAGE | 1);
    rig.host.advance_ns(5_000_000_000);
    let guest_tsc = rig.host.tsc().wrapping_add(cfg.tsc_offset);
    assert_eq!(
        page_time(&rig, guest_tsc).unwrap(),
        rig.rd_ok(0, TIME_REF_COUNT)
    );
}

#[test]
fn tsc_page_outside_ram_is_refused_and_disabled_page_untouched() {
    let mut rig = Rig::new();
    assert!(rig.wr(0, REFERENCE_TSC, (RAM as u64) | 1).is_err());
    rig.wr_ok(0, REFERENCE_TSC, TSC_PAGE);
    assert_eq!(rig.mem.read_u32(TSC_PAGE).unwrap(), 0);
}

#[test]
fn scale_matches_the_tlfs_formula() {
    assert_eq!(crate::scale_for(0), None);
    assert_eq!(crate::scale_for(10_000_000), None);
    let s = crate::scale_for(1_000_000_000).unwrap();
    // 10 MHz / 1 GHz = 1/100 of 2^64.
    assert_eq!(s, ((1u128 << 64) / 100) as u64);
}

#[test]
fn slow_tsc_falls_back_to_host_nanoseconds() {
    let mut host = fake_host(1);
    host.tsc_hz = 1_000_000;
    let mut rig = Rig {
        hv: HyperV::new(config(HypercallInsn::Vmcall), &host).unwrap(),
        mem: VecMemory::new(RAM),
        host,
    };
    rig.host.advance_ns(2_000);
    assert_eq!(rig.rd_ok(0, TIME_REF_COUNT), 20);
    assert!(rig.rd(0, REFERENCE_TSC).is_err(), "page not offered");
}
