use super::*;
use crate::cpuid::{call_privilege, feature, hint, leaf, privilege};

fn cpuid(rig: &mut Rig, l: u32) -> Option<[u32; 4]> {
    rig.hv.cpuid(&view(0), l, 0)
}

#[test]
fn vendor_and_interface_are_microsoft_hv1() {
    let mut rig = Rig::new();
    let [max, b, c, d] = cpuid(&mut rig, leaf::VENDOR).unwrap();
    assert!(
        (0x4000_0005..=0x4000_FFFF).contains(&max),
        "Linux's range check"
    );
    assert_eq!(max, 0x4000_000A);
    let mut vendor = Vec::new();
    for r in [b, c, d] {
        vendor.extend_from_slice(&r.to_le_bytes());
    }
    assert_eq!(vendor, b"Microsoft Hv");
    assert_eq!((b, c, d), (0x7263_694D, 0x666F_736F, 0x7648_2074));
    assert_eq!(
        cpuid(&mut rig, leaf::INTERFACE).unwrap(),
        [0x3123_7648, 0, 0, 0]
    );
}

#[test]
fn features_name_exactly_what_is_implemented() {
    let mut rig = Rig::new();
    let [eax, ebx, ecx, edx] = cpuid(&mut rig, leaf::FEATURES).unwrap();
    // Linux's detection needs both of these.
    assert_ne!(eax & (1 << 5), 0);
    assert_ne!(eax & (1 << 6), 0);
    let expected = privilege::TIME_REF_COUNT
        | privilege::SYNIC
        | privilege::SYNTIMER
        | privilege::HYPERCALL
        | privilege::VP_INDEX
        | privilege::RESET
        | privilege::APIC_ACCESS
        | privilege::REFERENCE_TSC
        | privilege::FREQUENCY_MSRS;
    assert_eq!(eax, expected);
    // No VP runtime, guest idle, re-enlightenment or invariant-TSC control; the APIC-access
    // MSRs are the kernel's local APIC (vm::lapic::synthetic_wrmsr).
    for bit in [0, 10, 13, 15] {
        assert_eq!(eax & (1 << bit), 0, "privilege bit {bit}");
    }
    // EBX: not root (12), no partition id (1), no extended hypercalls (20), no isolation
    // (22); VMBus messaging (4, 5).
    assert_eq!(
        ebx,
        call_privilege::POST_MESSAGES | call_privilege::SIGNAL_EVENTS
    );
    assert_eq!(ecx, 0);
    assert_eq!(
        edx,
        feature::FREQUENCY_MSRS | feature::CRASH_MSRS | feature::STIMER_DIRECT
    );
}

#[test]
fn hints_recommend_only_implemented_enlightenments() {
    let mut rig = Rig::new();
    let [eax, ebx, _, _] = cpuid(&mut rig, leaf::HINTS).unwrap();
    assert_ne!(eax & hint::CLUSTER_IPI, 0);
    assert_ne!(eax & hint::EX_PROCESSOR_MASKS, 0);
    assert_ne!(eax & hint::DEPRECATING_AEOI, 0);
    // The APIC-access MSRs, for the lazy EOI through the VP assist page (vm::lazy_eoi).
    assert_ne!(eax & hint::APIC_ACCESS_RECOMMENDED, 0);
    // No PV TLB flush (bits 1, 2), no reset recommendation (4), no nested / enlightened
    // VMCS (12, 14).
    for bit in [1, 2, 4, 12, 14] {
        assert_eq!(eax & (1 << bit), 0, "hint bit {bit}");
    }
    assert_eq!(ebx, u32::MAX, "never notify long spin waits");
    let [vps, lps, _, _] = cpuid(&mut rig, leaf::LIMITS).unwrap();
    assert_eq!((vps, lps), (64, 64));
    let [hw, ..] = cpuid(&mut rig, leaf::HW_FEATURES).unwrap();
    assert_eq!(hw, (1 << 1) | (1 << 3));
}

#[test]
fn no_other_signature_anywhere_in_the_hypervisor_range() {
    let mut rig = Rig::new();
    for l in (0x4000_0007..=0x4000_000A).chain((0x4000_0100..0x4001_0000).step_by(0x100)) {
        assert_eq!(cpuid(&mut rig, l), Some([0; 4]), "leaf {l:#x}");
    }
    assert_eq!(
        cpuid(&mut rig, 0x4000_0100).unwrap(),
        [0; 4],
        "no KVMKVMKVM"
    );
    assert_eq!(cpuid(&mut rig, 1), None);
    assert_eq!(cpuid(&mut rig, 0x3fff_ffff), None);
    assert_eq!(cpuid(&mut rig, 0x4001_0000), None);
}

#[test]
fn frequency_and_tsc_page_bits_follow_the_host() {
    let mut cfg = config(HypercallInsn::Vmcall);
    cfg.apic_hz = None;
    let mut rig = Rig::with(cfg, 1);
    let [eax, _, _, edx] = cpuid(&mut rig, leaf::FEATURES).unwrap();
    assert_eq!(eax & privilege::FREQUENCY_MSRS, 0);
    assert_eq!(edx & feature::FREQUENCY_MSRS, 0);

    // A TSC no faster than 10 MHz cannot be described by the page's 64-bit scale.
    let mut host = fake_host(1);
    host.tsc_hz = 10_000_000;
    let mut hv = HyperV::new(config(HypercallInsn::Vmcall), &host).unwrap();
    let [eax, ..] = hv.cpuid(&view(0), leaf::FEATURES, 0).unwrap();
    assert_eq!(eax & privilege::REFERENCE_TSC, 0);
    assert_ne!(eax & privilege::TIME_REF_COUNT, 0);
}

#[test]
fn vcpu_count_is_bounded() {
    let host = fake_host(0);
    assert!(HyperV::new(config(HypercallInsn::Vmcall), &host).is_err());
    let host = fake_host(65);
    assert!(HyperV::new(config(HypercallInsn::Vmcall), &host).is_err());
    let host = fake_host(64);
    assert!(HyperV::new(config(HypercallInsn::Vmcall), &host).is_ok());
}
