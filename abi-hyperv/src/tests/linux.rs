//! The MSR and CPUID sequence Debian's 6.1 kernel issues on a Hyper-V host, in its order,
//! on two CPUs: every step must succeed (an "unchecked MSR access" would be a failure).

use super::*;
use crate::msr::*;

#[test]
fn linux_6_1_bring_up_sequence() {
    let mut rig = Rig::new();
    let [max, ..] = rig.hv.cpuid(&view(0), 0x4000_0000, 0).unwrap();
    let [features, _, _, misc] = rig.hv.cpuid(&view(0), 0x4000_0003, 0).unwrap();
    assert!(max >= 0x4000_0005 && features & 0x60 == 0x60);
    // Frequencies, then the TSC page, all before any guest OS id.
    assert_ne!(misc & (1 << 8), 0);
    assert_eq!(rig.rd_ok(0, APIC_FREQUENCY), APIC_HZ);
    let tsc_msr = rig.rd_ok(0, REFERENCE_TSC);
    rig.wr_ok(0, REFERENCE_TSC, tsc_msr | 0x20_000 | 1);
    assert_ne!(rig.mem.read_u32(0x20_000).unwrap(), 0, "page valid at once");
    assert_eq!(rig.rd_ok(0, TSC_FREQUENCY), TSC_HZ);
    // hyperv_init: crash MSRs, per-CPU init, guest id, hypercall page.
    assert_eq!(rig.rd_ok(0, CRASH_CTL) >> 63, 1);
    assert_eq!(rig.rd_ok(0, VP_INDEX), 0);
    rig.wr_ok(0, VP_ASSIST_PAGE, 0x21_000 | 1);
    rig.wr_ok(0, GUEST_OS_ID, LINUX_OS_ID);
    let hc = rig.rd_ok(0, HYPERCALL);
    rig.wr_ok(0, HYPERCALL, hc | 0x22_000 | 1);
    assert!(rig.hv.hypercalls_enabled());
    // Per-CPU clockevent, on the BSP then on the AP after INIT/SIPI.
    for cpu in 0..2 {
        if cpu == 1 {
            assert_eq!(rig.rd_ok(1, VP_INDEX), 1);
            rig.wr_ok(1, VP_ASSIST_PAGE, 0x23_000 | 1);
        }
        rig.wr_ok(cpu, 0x4000_00B0, 1 | (1 << 3) | (1 << 12) | (0xed << 4));
        let now = rig.rd_ok(cpu, TIME_REF_COUNT);
        rig.wr_ok(cpu, 0x4000_00B1, now + 40_000);
    }
    rig.host.advance_ns(4_000_000);
    rig.timer_expired(0);
    rig.timer_expired(1);
    assert_eq!(rig.host.raised, vec![(0, 0xed, true), (1, 0xed, true)]);
    assert_eq!(
        rig.hv.take_notice(),
        None,
        "nothing unimplemented was touched"
    );
}
