use super::*;
use crate::Notice;
use crate::msr::*;
use virt::Event;
use virt::personality::StopReason;

const HC_PAGE: u64 = 0x3000;

#[test]
fn hypercall_page_needs_a_guest_os_id_first() {
    let mut rig = Rig::new();
    assert_eq!(rig.rd_ok(0, HYPERCALL), 0);
    rig.wr_ok(0, HYPERCALL, HC_PAGE | 1);
    assert_eq!(rig.rd_ok(0, HYPERCALL), HC_PAGE, "enable reads back 0");
    assert!(!rig.hv.hypercalls_enabled());
    assert_eq!(rig.page(HC_PAGE), vec![0; 4096], "nothing written");

    rig.wr_ok(0, GUEST_OS_ID, LINUX_OS_ID);
    assert_eq!(rig.rd_ok(1, GUEST_OS_ID), LINUX_OS_ID, "partition wide");
    rig.wr_ok(0, HYPERCALL, HC_PAGE | 1);
    assert_eq!(rig.rd_ok(1, HYPERCALL), HC_PAGE | 1);
    assert!(rig.hv.hypercalls_enabled());

    // Clearing the OS id turns the interface off again.
    rig.wr_ok(0, GUEST_OS_ID, 0);
    assert_eq!(rig.rd_ok(0, HYPERCALL), HC_PAGE);
}

#[test]
fn hypercall_page_bytes_per_vendor() {
    for (insn, trap) in [
        (HypercallInsn::Vmcall, [0x0f, 0x01, 0xc1]),
        (HypercallInsn::Vmmcall, [0x0f, 0x01, 0xd9]),
    ] {
        let mut rig = Rig::with(config(insn), 1);
        rig.enable_hypercalls(HC_PAGE);
        let page = rig.page(HC_PAGE);
        assert_eq!(&page[..4], &[0xf3, 0x0f, 0x1e, 0xfa], "ENDBR64");
        assert_eq!(&page[4..7], &trap);
        assert_eq!(page[7], 0xc3, "ret");
        assert!(page[8..].iter().all(|&b| b == 0xcc));
        assert_eq!(&crate::hypercall_page_code(insn)[..], &page[..8]);
        // Neighbouring pages are untouched.
        assert_eq!(rig.mem.read_u8(HC_PAGE - 1).unwrap(), 0);
        assert_eq!(rig.mem.read_u8(HC_PAGE + 4096).unwrap(), 0);
    }
}

#[test]
fn hypercall_msr_lock_and_bad_pages() {
    let mut rig = Rig::new();
    rig.wr_ok(0, GUEST_OS_ID, LINUX_OS_ID);
    assert_eq!(rig.wr(0, HYPERCALL, (RAM as u64) | 1), Err(Event::GP0));
    assert_eq!(
        rig.rd_ok(0, HYPERCALL),
        0,
        "a failed enable changes nothing"
    );
    rig.wr_ok(0, HYPERCALL, HC_PAGE | 0b11);
    rig.wr_ok(0, HYPERCALL, 0x8000 | 1);
    assert_eq!(rig.rd_ok(0, HYPERCALL), HC_PAGE | 0b11, "locked");
}

#[test]
fn vp_index_per_vp_and_read_only() {
    let mut rig = Rig::with(config(HypercallInsn::Vmcall), 3);
    for vp in 0..3 {
        assert_eq!(rig.rd_ok(vp, VP_INDEX), u64::from(vp));
    }
    assert_eq!(rig.wr(0, VP_INDEX, 1), Err(Event::GP0));
    assert_eq!(rig.rd(3, VP_INDEX), Err(Event::GP0), "no such VP");
    assert_eq!(rig.rd(u32::MAX, SCONTROL), Err(Event::GP0));
}

#[test]
fn frequency_msrs() {
    let mut rig = Rig::new();
    assert_eq!(rig.rd_ok(0, TSC_FREQUENCY), TSC_HZ);
    assert_eq!(rig.rd_ok(0, APIC_FREQUENCY), APIC_HZ);
    assert_eq!(rig.wr(0, TSC_FREQUENCY, 1), Err(Event::GP0));
    let mut cfg = config(HypercallInsn::Vmcall);
    cfg.apic_hz = None;
    let mut rig = Rig::with(cfg, 1);
    assert_eq!(rig.rd(0, TSC_FREQUENCY), Err(Event::GP0));
    assert_eq!(rig.rd(0, APIC_FREQUENCY), Err(Event::GP0));
}

#[test]
fn vp_assist_page_is_accepted_per_vp() {
    let mut rig = Rig::new();
    rig.wr_ok(0, VP_ASSIST_PAGE, 0x7000 | 1);
    rig.wr_ok(1, VP_ASSIST_PAGE, 0x8000 | 1);
    assert_eq!(rig.rd_ok(0, VP_ASSIST_PAGE), 0x7001);
    assert_eq!(rig.rd_ok(1, VP_ASSIST_PAGE), 0x8001);
    assert_eq!(rig.wr(0, VP_ASSIST_PAGE, (RAM as u64) | 1), Err(Event::GP0));
    rig.wr_ok(0, VP_ASSIST_PAGE, 0);
    assert_eq!(rig.rd_ok(0, VP_ASSIST_PAGE), 0);
}

#[test]
fn crash_msrs_report_the_parameters() {
    let mut rig = Rig::new();
    assert_eq!(
        rig.rd_ok(0, CRASH_CTL),
        1 << 63,
        "notify only, no message page"
    );
    let params = [
        0xdead,
        LINUX_OS_ID,
        0xffff_ffff_8100_0000,
        42,
        0xffff_c900_0000_1000,
    ];
    for (i, p) in params.iter().enumerate() {
        rig.wr_ok(0, CRASH_P0 + i as u32, *p);
        assert_eq!(rig.rd_ok(1, CRASH_P0 + i as u32), *p);
    }
    rig.wr_ok(0, CRASH_CTL, 0);
    assert_eq!(
        rig.wr_action(0, CRASH_CTL, 1 << 63),
        Action::Stop(StopReason::Crash(params))
    );
}

#[test]
fn reset_msr_reboots() {
    let mut rig = Rig::new();
    assert_eq!(rig.rd_ok(0, RESET), 0);
    rig.wr_ok(0, RESET, 0);
    assert_eq!(rig.wr_action(0, RESET, 1), Action::Stop(StopReason::Reset));
}

#[test]
fn unknown_synthetic_msrs_fault_and_are_announced_once() {
    let mut rig = Rig::new();
    // VP runtime, APIC-access MSRs, guest idle, re-enlightenment, invariant TSC control.
    for msr in [
        0x4000_0010,
        0x4000_0070,
        0x4000_00F0,
        0x4000_0106,
        0x4000_0118,
    ] {
        assert_eq!(rig.rd(0, msr), Err(Event::GP0), "{msr:#x}");
        assert_eq!(rig.rd(0, msr), Err(Event::GP0));
        assert_eq!(rig.wr(0, msr, 1), Err(Event::GP0));
    }
    assert_eq!(
        rig.hv.take_notice(),
        Some(Notice::UnknownMsr {
            msr: 0x4000_0010,
            write: false
        })
    );
    assert_eq!(
        rig.hv.take_notice(),
        Some(Notice::UnknownMsr {
            msr: 0x4000_0010,
            write: true
        })
    );
    let counts: Vec<_> = rig.hv.unknown_msrs().collect();
    assert!(counts.contains(&((0x4000_0010, false), 2)));
    // Not ours: the kernel applies its default.
    assert_eq!(rig.rd(0, 0x1b), Ok(None));
    assert_eq!(rig.wr(0, 0xc000_0080, 0), Ok(false));
    assert_eq!(rig.rd(0, 0x4000_0200), Ok(None));
}

#[test]
fn notice_queue_and_tracking_are_bounded() {
    let mut rig = Rig::new();
    for i in 0..100u32 {
        let _ = rig.rd(0, 0x4000_0140 + i);
    }
    let mut n = 0;
    while rig.hv.take_notice().is_some() {
        n += 1;
    }
    assert!(n <= 8);
    assert!(rig.hv.untracked_unknowns().1 > 0);
}
