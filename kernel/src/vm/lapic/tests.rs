use super::*;

const TSC_HZ: u64 = 2_000_000_000;
const BUS_HZ: u64 = 1_000_000_000;

fn apic() -> VLapic {
    let mut a = VLapic::new(0, true, TSC_HZ, BUS_HZ);
    a.wrmsr(0x80F, 0x1FF, 0).unwrap();
    a
}

fn reg(r: u32) -> u32 {
    X2APIC_MSR_FIRST + r
}

#[test]
fn starts_in_x2apic_mode_and_reports_its_id() {
    let a = VLapic::new(3, false, TSC_HZ, BUS_HZ);
    assert_eq!(
        a.rdmsr(APIC_BASE_MSR, 0),
        Ok(APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD)
    );
    assert_eq!(a.rdmsr(reg(REG_ID), 0), Ok(3));
    assert_eq!(a.rdmsr(reg(REG_LDR), 0), Ok(1 << 3));
    assert!(logical_match(1 << 3, 3));
    assert!(!logical_match((1 << 16) | (1 << 3), 3));
}

#[test]
fn logical_destinations_name_clusters_of_sixteen() {
    assert!(logical_match(0b1001, 0));
    assert!(logical_match(0b1001, 3));
    assert!(!logical_match(0b1001, 1));
    assert!(logical_match((1 << 16) | 1, 16));
    assert!(!logical_match(1, 16), "cluster 0 does not reach APIC 16");
    assert!(logical_match((2 << 16) | (1 << 15), 47));
    // An 8-bit IOAPIC destination is cluster 0: APICs 0-7.
    assert!(logical_match(0xFF, 7));
    assert!(!logical_match(0xFF, 8));
}

#[test]
fn reserved_and_write_only_registers_fault() {
    let mut a = apic();
    assert_eq!(a.rdmsr(reg(REG_EOI), 0), Err(GpFault));
    assert_eq!(a.rdmsr(reg(0x01), 0), Err(GpFault));
    assert_eq!(a.wrmsr(reg(REG_ID), 5, 0), Err(GpFault));
    assert_eq!(a.wrmsr(reg(REG_TPR), 1 << 40, 0), Err(GpFault));
    assert_eq!(a.wrmsr(reg(REG_EOI), 1, 0), Err(GpFault));
    assert_eq!(a.rdmsr(0x900, 0), Err(GpFault));
    assert_eq!(
        a.wrmsr(APIC_BASE_MSR, APIC_DEFAULT_BASE | APIC_BASE_EN, 0),
        Err(GpFault)
    );
}

#[test]
fn one_shot_timer_fires_once_at_the_scaled_deadline() {
    let mut a = apic();
    a.wrmsr(reg(REG_TIMER_DIV), 0b1011, 0).unwrap(); // divide by 1
    a.wrmsr(reg(REG_LVT_TIMER), 0x40, 0).unwrap();
    a.wrmsr(reg(REG_TIMER_INIT), 1000, 100).unwrap(); // 1000 bus ticks = 2000 TSC ticks
    assert_eq!(a.next_deadline(), Some(2100));
    assert_eq!(a.rdmsr(reg(REG_TIMER_CUR), 1100), Ok(500));
    a.tick(2099);
    assert_eq!(a.deliverable(), None);
    a.tick(2100);
    assert_eq!(a.deliverable(), Some(0x40));
    assert_eq!(a.next_deadline(), None);
    assert_eq!(a.rdmsr(reg(REG_TIMER_CUR), 3000), Ok(0));
}

#[test]
fn periodic_timer_rearms_and_skips_missed_periods() {
    let mut a = apic();
    a.wrmsr(reg(REG_TIMER_DIV), 0b0000, 0).unwrap(); // divide by 2
    a.wrmsr(reg(REG_LVT_TIMER), u64::from(TIMER_PERIODIC) | 0x41, 0)
        .unwrap();
    a.wrmsr(reg(REG_TIMER_INIT), 100, 0).unwrap(); // period 400 TSC ticks
    a.tick(400);
    assert_eq!(a.next_deadline(), Some(800));
    a.tick(2050);
    assert_eq!(a.next_deadline(), Some(2400));
    assert_eq!(a.deliverable(), Some(0x41));
}

#[test]
fn tsc_deadline_mode_uses_the_msr() {
    let mut a = apic();
    a.wrmsr(reg(REG_LVT_TIMER), u64::from(TIMER_TSC_DEADLINE) | 0x42, 0)
        .unwrap();
    a.wrmsr(TSC_DEADLINE_MSR, 5000, 10).unwrap();
    assert_eq!(a.rdmsr(TSC_DEADLINE_MSR, 10), Ok(5000));
    a.wrmsr(reg(REG_TIMER_INIT), 77, 10).unwrap(); // ignored in this mode
    assert_eq!(a.next_deadline(), Some(5000));
    a.tick(5000);
    assert_eq!(a.deliverable(), Some(0x42));
    assert_eq!(a.rdmsr(TSC_DEADLINE_MSR, 6000), Ok(0));
    // A deadline already in the past fires at once.
    a.delivered(0x42);
    a.wrmsr(reg(REG_EOI), 0, 0).unwrap();
    a.wrmsr(TSC_DEADLINE_MSR, 7, 6000).unwrap();
    assert_eq!(a.deliverable(), Some(0x42));
}

#[test]
fn an_eoi_with_nothing_in_service_is_counted() {
    let mut a = apic();
    a.wrmsr(reg(REG_EOI), 0, 0).unwrap();
    assert_eq!(a.unmatched_eois, 1);
    let p = Pending::new();
    p.post(0x40);
    a.sync(&p);
    let v = a.deliverable().unwrap();
    a.delivered(v);
    a.wrmsr(reg(REG_EOI), 0, 0).unwrap();
    assert_eq!(a.unmatched_eois, 1);
}

#[test]
fn priority_isr_and_eoi() {
    let mut a = apic();
    let p = Pending::new();
    p.post(0x50);
    p.post(0x31);
    a.sync(&p);
    assert_eq!(a.deliverable(), Some(0x50));
    a.delivered(0x50);
    assert_eq!(a.deliverable(), None, "0x31 is below the in-service class");
    assert_eq!(a.rdmsr(reg(REG_ISR0 + 2), 0), Ok(1 << 16));
    a.wrmsr(reg(REG_EOI), 0, 0).unwrap();
    assert_eq!(a.deliverable(), Some(0x31));
    a.wrmsr(reg(REG_TPR), 0x40, 0).unwrap();
    assert_eq!(a.deliverable(), None, "TPR masks class 3");
    p.post(3);
    a.sync(&p);
    assert_eq!(
        a.rdmsr(reg(REG_ESR), 0),
        Ok(1 << 6),
        "illegal vector reported, not queued"
    );
}

#[test]
fn no_eoi_vectors_skip_the_isr() {
    let mut a = apic();
    let p = Pending::new();
    p.post_no_eoi(0xF3);
    a.sync(&p);
    assert_eq!(a.deliverable(), Some(0xF3));
    a.delivered(0xF3);
    assert_eq!(a.rdmsr(reg(REG_ISR0 + 7), 0), Ok(0), "not in service");
    p.post(0x50);
    a.sync(&p);
    assert_eq!(a.deliverable(), Some(0x50), "nothing blocks lower vectors");
    p.kick();
    assert!(p.any());
    assert!(p.take_kick());
    assert!(!p.any());
}

#[test]
fn a_disabled_apic_delivers_nothing() {
    let mut a = VLapic::new(0, true, TSC_HZ, BUS_HZ);
    let p = Pending::new();
    p.post(0x80);
    a.sync(&p);
    assert_eq!(a.deliverable(), None);
    a.wrmsr(reg(REG_SVR), 0x1FF, 0).unwrap();
    assert_eq!(a.deliverable(), Some(0x80));
}

#[test]
fn icr_writes_decode_to_ipis() {
    let mut a = apic();
    let send = |a: &mut VLapic, v: u64| a.wrmsr(reg(REG_ICR), v, 0).unwrap();
    assert_eq!(
        send(&mut a, (2 << 32) | 0x4000 | 0xF3),
        Effect::SendIpi(Ipi::Fixed {
            dest: Dest::Physical(2),
            vector: 0xF3
        })
    );
    assert_eq!(
        send(&mut a, (1 << 32) | 0x4500),
        Effect::SendIpi(Ipi::Init {
            dest: Dest::Physical(1)
        })
    );
    assert_eq!(send(&mut a, 0x8500), Effect::None, "INIT de-assert");
    assert_eq!(
        send(&mut a, (1 << 32) | 0x4608),
        Effect::SendIpi(Ipi::Sipi {
            dest: Dest::Physical(1),
            vector: 8
        })
    );
    assert_eq!(
        send(&mut a, (3 << 18) | 0x20),
        Effect::SendIpi(Ipi::Fixed {
            dest: Dest::AllExcludingSelf,
            vector: 0x20
        })
    );
    assert_eq!(
        send(&mut a, (0x1_0004u64 << 32) | 0x800 | 0x30),
        Effect::SendIpi(Ipi::Fixed {
            dest: Dest::Logical(0x1_0004),
            vector: 0x30
        })
    );
    assert_eq!(
        a.wrmsr(reg(REG_ICR), 0x700, 0),
        Err(GpFault),
        "reserved delivery mode"
    );
    assert_eq!(a.rdmsr(reg(REG_ICR), 0), Ok(0x0001_0004_0000_0830));
}

#[test]
fn init_and_sipi_travel_through_pending() {
    let p = Pending::new();
    assert!(!p.any());
    p.post_init();
    p.post_sipi(0x9a);
    assert!(p.any());
    assert!(p.take_init());
    assert!(!p.take_init());
    assert_eq!(p.take_sipi(), Some(0x9a));
    assert_eq!(p.take_sipi(), None);
}

#[test]
fn a_vcpu_waiting_for_sipi_wakes_only_for_init_or_sipi() {
    let p = Pending::new();
    p.post(0x40);
    p.kick();
    p.post_nmi();
    assert!(p.wakes(false));
    assert!(!p.wakes(true), "interrupts and kicks do not start a CPU");
    p.post_sipi(0x9);
    assert!(p.wakes(true));
    let q = Pending::new();
    q.post_init();
    assert!(q.wakes(true));
}

#[test]
fn a_vector_posted_for_eoi_again_is_no_longer_no_eoi() {
    let mut a = VLapic::new(0, true, TSC_HZ, BUS_HZ);
    a.wrmsr(X2APIC_MSR_FIRST + REG_SVR, 0x1FF, 0).unwrap();
    let p = Pending::new();
    // Xen's callback vector: delivered without an EOI to follow.
    p.post_no_eoi(0xF3);
    a.sync(&p);
    assert_eq!(a.deliverable(), Some(0xF3));
    a.delivered(0xF3);
    assert_eq!(
        a.rdmsr(X2APIC_MSR_FIRST + REG_ISR0 + 7, 0),
        Ok(0),
        "not in service"
    );
    // The guest moved to per-vCPU upcall vectors on the same vector: EOI'd from now on.
    p.post(0xF3);
    a.sync(&p);
    a.delivered(0xF3);
    assert_ne!(
        a.rdmsr(X2APIC_MSR_FIRST + REG_ISR0 + 7, 0),
        Ok(0),
        "in service until EOI"
    );
    assert_eq!(a.wrmsr(X2APIC_MSR_FIRST + REG_EOI, 0, 0), Ok(Effect::None));
    assert_eq!(a.unmatched_eois, 0);
}

fn xapic() -> VLapic {
    VLapic::new_xapic(2, false, TSC_HZ, BUS_HZ)
}

#[test]
fn xapic_registers_live_in_the_mmio_page() {
    let mut a = xapic();
    assert_eq!(a.mmio_page(), Some(APIC_DEFAULT_BASE));
    assert_eq!(a.mmio_read(0x20, 4, 0), 2 << 24);
    assert_eq!(a.mmio_read(0x30, 4, 0), u64::from(VERSION));
    assert_eq!(a.mmio_read(0xE0, 4, 0), 0xFFFF_FFFF);
    // The x2APIC MSRs fault in xAPIC mode.
    assert_eq!(a.rdmsr(0x802, 0), Err(GpFault));
    assert_eq!(a.wrmsr(0x808, 0, 0), Err(GpFault));
    // SVR, LDR, DFR, TPR as Linux programs them.
    assert_eq!(a.mmio_write(0xF0, 4, 0x1FF, 0), Effect::None);
    assert!(a.software_enabled());
    a.mmio_write(0xD0, 4, 0x0400_00FF, 0);
    assert_eq!(a.mmio_read(0xD0, 4, 0), 0x0400_0000);
    a.mmio_write(0x80, 4, 0x20, 0);
    assert_eq!(a.mmio_read(0x80, 4, 0), 0x20);
    assert_eq!(a.addressing(), Addressing::Flat { id: 2, ldr: 4 });
    a.mmio_write(0xE0, 4, 0, 0);
    assert_eq!(a.addressing(), Addressing::Cluster { id: 2, ldr: 4 });
    // Byte reads, unused bytes between registers, and reserved registers read as zero.
    assert_eq!(a.mmio_read(0x23, 1, 0), 2);
    assert_eq!(a.mmio_read(0x24, 4, 0), 0);
    assert_eq!(a.mmio_read(0x3F0, 4, 0), 0);
    // A reserved register write is flagged in the ESR, not faulted.
    a.mmio_write(0x3F0, 4, 0x40, 0);
    assert_eq!(a.mmio_read(0x280, 4, 0) & (1 << 7), 1 << 7);
}

#[test]
fn xapic_icr_takes_its_destination_from_icr_high() {
    let mut a = xapic();
    a.mmio_write(0xF0, 4, 0x1FF, 0);
    a.mmio_write(0x310, 4, 0x0300_0000, 0);
    assert_eq!(a.mmio_read(0x310, 4, 0), 0x0300_0000);
    let e = a.mmio_write(0x300, 4, 0x0000_4041, 0);
    assert_eq!(
        e,
        Effect::SendIpi(Ipi::Fixed {
            dest: Dest::Physical(3),
            vector: 0x41
        })
    );
    let e = a.mmio_write(0x300, 4, 0x0000_0841, 0);
    assert_eq!(
        e,
        Effect::SendIpi(Ipi::Fixed {
            dest: Dest::Logical(3),
            vector: 0x41
        })
    );
    // Delivery status never reads busy.
    assert_eq!(a.mmio_read(0x300, 4, 0) & (1 << 12), 0);
    // INIT de-assert does nothing; INIT and SIPI decode.
    assert_eq!(a.mmio_write(0x300, 4, 0x0000_8500, 0), Effect::None);
    assert_eq!(
        a.mmio_write(0x300, 4, 0x0000_4500, 0),
        Effect::SendIpi(Ipi::Init {
            dest: Dest::Physical(3)
        })
    );
    // An EOI ends the highest in-service vector whatever value is written.
    a.sync(&{
        let p = Pending::new();
        p.post(0x50);
        p
    });
    let v = a.deliverable().unwrap();
    a.delivered(v);
    a.mmio_write(0xB0, 4, 0x1234, 0);
    assert_eq!(a.mmio_read(0x100 + 0x50, 4, 0), 0);
    assert_eq!(a.unmatched_eois, 0);
}

#[test]
fn apic_base_transitions_follow_the_sdm() {
    let en = 1 << 11;
    let extd = 1 << 10;
    let mut a = xapic();
    // Relocation in xAPIC mode moves the page.
    a.wrmsr(APIC_BASE_MSR, 0xFED0_0000 | en, 0).unwrap();
    assert_eq!(a.mmio_page(), Some(0xFED0_0000));
    // xAPIC -> x2APIC: the MSRs work, the page is gone, the logical id is derived.
    a.wrmsr(APIC_BASE_MSR, APIC_DEFAULT_BASE | en | extd, 0)
        .unwrap();
    assert_eq!(a.mmio_page(), None);
    assert_eq!(a.rdmsr(0x802, 0), Ok(2));
    assert_eq!(a.rdmsr(0x80D, 0), Ok(u64::from(logical_id(2))));
    // x2APIC -> xAPIC directly is refused.
    assert_eq!(
        a.wrmsr(APIC_BASE_MSR, APIC_DEFAULT_BASE | en, 0),
        Err(GpFault)
    );
    // EXTD without EN, and reserved bits, are refused.
    assert_eq!(
        a.wrmsr(APIC_BASE_MSR, APIC_DEFAULT_BASE | extd, 0),
        Err(GpFault)
    );
    assert_eq!(
        a.wrmsr(APIC_BASE_MSR, APIC_DEFAULT_BASE | en | extd | 1, 0),
        Err(GpFault)
    );
    // Disable (resets), then disabled -> x2APIC is refused, disabled -> xAPIC works.
    a.wrmsr(0x808, 0x30, 0).unwrap();
    a.wrmsr(APIC_BASE_MSR, APIC_DEFAULT_BASE, 0).unwrap();
    assert_eq!(a.addressing(), Addressing::Off);
    assert!(!a.software_enabled());
    assert_eq!(
        a.wrmsr(APIC_BASE_MSR, APIC_DEFAULT_BASE | en | extd, 0),
        Err(GpFault)
    );
    a.wrmsr(APIC_BASE_MSR, APIC_DEFAULT_BASE | en, 0).unwrap();
    assert_eq!(a.mmio_read(0x80, 4, 0), 0);
    assert_eq!(a.mmio_read(0x20, 4, 0), 2 << 24);
}

#[test]
fn addressing_matches_destinations_per_mode() {
    for a in [
        Addressing::X2apic { id: 17 },
        Addressing::Flat { id: 1, ldr: 2 },
        Addressing::Cluster { id: 1, ldr: 0x12 },
        Addressing::Off,
    ] {
        assert_eq!(Addressing::unpack(a.pack(), 9), a);
    }
    assert_eq!(Addressing::unpack(0, 9), Addressing::X2apic { id: 9 });
    let x2 = Addressing::X2apic { id: 17 };
    assert!(x2.physical(17) && x2.physical(u32::MAX) && !x2.physical(0xFF));
    assert!(x2.logical(logical_id(17)) && !x2.logical(logical_id(1)));
    let flat = Addressing::Flat { id: 1, ldr: 2 };
    assert!(flat.physical(1) && flat.physical(0xFF) && !flat.physical(2));
    assert!(flat.logical(0x03) && !flat.logical(0x01));
    let cluster = Addressing::Cluster { id: 1, ldr: 0x12 };
    assert!(cluster.logical(0x13) && !cluster.logical(0x22) && !cluster.logical(0x11));
    assert!(!Addressing::Off.physical(0) && !Addressing::Off.logical(0xFF));
}

#[test]
fn a_level_vector_is_in_tmr_and_its_eoi_is_broadcast() {
    let mut a = xapic();
    a.mmio_write(0xF0, 4, 0x1FF, 0);
    let p = Pending::new();
    p.post_level(0x61);
    p.post(0x51);
    a.sync(&p);
    assert_eq!(
        a.mmio_read(0x180 + 0x30, 4, 0),
        1 << 1,
        "TMR word 3 holds 0x61"
    );
    let v = a.deliverable().unwrap();
    assert_eq!(v, 0x61);
    a.delivered(v);
    assert_eq!(a.mmio_write(0xB0, 4, 0, 0), Effect::Eoi(0x61));
    assert_eq!(a.mmio_read(0x180 + 0x30, 4, 0), 0);
    let v = a.deliverable().unwrap();
    a.delivered(v);
    assert_eq!(
        a.mmio_write(0xB0, 4, 0, 0),
        Effect::None,
        "edge: no broadcast"
    );
}

#[test]
fn hyperv_synthetic_apic_msrs_reach_the_same_registers_in_either_mode() {
    for mut a in [apic(), {
        let mut x = xapic();
        x.mmio_write(0xF0, 4, 0x1FF, 0);
        x
    }] {
        let p = Pending::new();
        p.post(0x50);
        a.sync(&p);
        a.delivered(0x50);
        // EOI: write-only, ends what is in service.
        assert_eq!(a.synthetic_rdmsr(SYNTHETIC_EOI), Err(GpFault));
        assert_eq!(a.synthetic_wrmsr(SYNTHETIC_EOI, 0, 0), Ok(Effect::None));
        assert_eq!(a.unmatched_eois, 0);
        assert_eq!(a.ppr(), 0);
        // TPR: eight bits, read back.
        assert_eq!(a.synthetic_wrmsr(SYNTHETIC_TPR, 0x40, 0), Ok(Effect::None));
        assert_eq!(a.synthetic_rdmsr(SYNTHETIC_TPR), Ok(0x40));
        assert_eq!(a.synthetic_wrmsr(SYNTHETIC_TPR, 0x100, 0), Err(GpFault));
        // ICR in the xAPIC layout: the destination in bits 56-63.
        assert_eq!(
            a.synthetic_wrmsr(SYNTHETIC_ICR, (3 << 56) | 0x4041, 0),
            Ok(Effect::SendIpi(Ipi::Fixed {
                dest: Dest::Physical(3),
                vector: 0x41
            }))
        );
        assert_eq!(a.synthetic_rdmsr(SYNTHETIC_ICR).map(|v| v >> 56), Ok(3));
        assert_eq!(a.synthetic_wrmsr(0x4000_0073, 0, 0), Err(GpFault));
    }
}

#[test]
fn only_an_edge_vector_alone_in_service_may_skip_its_eoi() {
    let mut a = apic();
    let p = Pending::new();
    p.post(0x50);
    a.sync(&p);
    a.delivered(0x50);
    assert!(a.sole_edge_in_service(0x50));
    assert!(!a.sole_edge_in_service(0x51));
    p.post(0x30);
    a.sync(&p);
    assert!(!a.sole_edge_in_service(0x50), "0x30 waits in IRR");
    assert_eq!(a.eoi_for_guest(), Effect::None);
    a.delivered(0x30);
    assert!(a.sole_edge_in_service(0x30));
    a.eoi_for_guest();
    p.post_level(0x60);
    a.sync(&p);
    a.delivered(0x60);
    assert!(
        !a.sole_edge_in_service(0x60),
        "a level vector's EOI goes to the IOAPIC"
    );
    assert_eq!(a.eoi_for_guest(), Effect::Eoi(0x60));
}
