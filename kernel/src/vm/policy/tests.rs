use super::super::cpuid::{self, CpuidCtx};
use super::super::lapic::VLapic;
use super::super::platform::{self, PlatformMsrs};
use super::*;

const TSC_HZ: u64 = 1_000_000_000;

fn ctx() -> CpuidCtx {
    CpuidCtx {
        vcpu: 0,
        vcpus: 2,
        xsave_end: 576,
        guest_osxsave: true,
        guest_ospke: true,
    }
}

/// Reads `msr` as the exit path would, then writes the value read back; `Err` says what
/// failed.
fn read_and_write_back(m: &Msr, msrs: &mut PlatformMsrs, lapic: &mut VLapic) -> Result<(), String> {
    match m.owner {
        Owner::Platform => {
            let v = platform::rdmsr(m.index, 1234, msrs).ok_or("read not answered")?;
            if m.writable {
                platform::wrmsr(m.index, v, msrs).ok_or("write of the value read refused")?;
                let again = platform::rdmsr(m.index, 1234, msrs);
                if again != Some(v) {
                    return Err(format!("reads {again:?} after writing {v:#x}"));
                }
            }
        }
        Owner::Lapic => {
            let v = lapic
                .rdmsr(m.index, 0)
                .map_err(|_| "the local APIC refused the read")?;
            if m.writable {
                lapic
                    .wrmsr(m.index, v, 0)
                    .map_err(|_| "the local APIC refused the write")?;
            }
        }
        Owner::Backend => {
            // EFER and PAT are handled inside each backend; the rest run without exits.
            if m.index != EFER && m.index != PAT {
                #[cfg(feature = "svm")]
                if !vcpu::svm::PASSTHROUGH_MSRS.contains(&m.index) {
                    return Err("not passed through by SVM".into());
                }
                #[cfg(feature = "vmx")]
                if !vcpu::vmx::PASSTHROUGH_MSRS.contains(&m.index) {
                    return Err("not passed through by VMX".into());
                }
            }
        }
    }
    Ok(())
}

#[test]
fn every_msr_an_exposed_feature_implies_is_answered() {
    let mut msrs = PlatformMsrs::new();
    let mut lapic = VLapic::new(0, true, TSC_HZ, TSC_HZ);
    let all = FEATURES
        .iter()
        .flat_map(|f| f.msrs.iter().map(move |m| (f.name, m)))
        .chain(ALWAYS.iter().map(|m| ("always", m)));
    let mut checked = 0;
    for (name, m) in all {
        if let Err(e) = read_and_write_back(m, &mut msrs, &mut lapic) {
            panic!("{name}: MSR {:#x}: {e}", m.index);
        }
        checked += 1;
    }
    assert!(checked > 20);
}

#[test]
fn hidden_features_leave_their_msrs_unanswered() {
    let msrs = PlatformMsrs::new();
    for &msr in NOT_OFFERED {
        assert_eq!(platform::rdmsr(msr, 0, &msrs), None, "{msr:#x}");
        assert!(!platform::is_lapic_msr(msr), "{msr:#x}");
        let listed = FEATURES
            .iter()
            .flat_map(|f| f.msrs)
            .chain(ALWAYS)
            .any(|m| m.index == msr);
        assert!(!listed, "{msr:#x} is both offered and not");
    }
}

#[test]
fn the_guest_sees_exactly_the_listed_bits() {
    for &(leaf, subleaf, reg) in GOVERNED {
        let seen = cpuid::filter(leaf, subleaf, [u32::MAX; 4], &ctx())[reg.index()];
        let listed = mask(leaf, subleaf, reg).unwrap();
        assert_eq!(
            seen & !listed,
            0,
            "{leaf:#x}.{subleaf} {reg:?}: unlisted bits"
        );
        // With no host bits, only what Janus provides itself appears.
        let forced = cpuid::filter(leaf, subleaf, [0; 4], &ctx())[reg.index()];
        assert_eq!(
            forced & !listed,
            0,
            "{leaf:#x}.{subleaf} {reg:?}: forced bits"
        );
    }
    for f in FEATURES {
        assert!(
            GOVERNED.contains(&(f.leaf, f.subleaf, f.reg)),
            "{}: its register is not governed",
            f.name
        );
        // 0x8000_0008 EBX and leaf 1 are rewritten around the table, but no listed bit is
        // lost when the host has it.
        let seen = cpuid::filter(f.leaf, f.subleaf, [u32::MAX; 4], &ctx())[f.reg.index()];
        assert_ne!(seen & (1 << f.bit), 0, "{} is listed but not shown", f.name);
    }
}

#[test]
fn the_issue_s_bits_are_hidden() {
    let all = [u32::MAX; 4];
    let [_, _, _, d1] = cpuid::filter(1, 0, all, &ctx());
    assert_eq!(d1 & ((1 << 7) | (1 << 14)), 0, "MCE and MCA");
    assert_eq!(d1 & ((1 << 21) | (1 << 22) | (1 << 29)), 0, "DS, ACPI, TM");
    let [_, b7, c7, d7] = cpuid::filter(7, 0, all, &ctx());
    assert_eq!(b7 & (1 << 1), 0, "TSC_ADJUST");
    assert_eq!(b7 & (1 << 14), 0, "MPX");
    assert_eq!(c7 & ((1 << 16) | (1 << 22)), 0, "LA57, RDPID");
    assert_eq!(
        d7 & 0xFC00_0000,
        0,
        "IBRS, STIBP, L1D_FLUSH, ARCH_CAP, CORE_CAP, SSBD"
    );
    let [_, b8, _, _] = cpuid::filter(0x8000_0008, 0, all, &ctx());
    assert_eq!(
        b8 & ((1 << 12) | (1 << 14) | (1 << 15) | (1 << 24) | (1 << 25)),
        0,
        "AMD IBPB, IBRS, STIBP, SSBD, VIRT_SSBD"
    );
    let [_, _, c81, d81] = cpuid::filter(0x8000_0001, 0, all, &ctx());
    assert_eq!(
        d81 & ((1 << 7) | (1 << 14) | (1 << 27)),
        0,
        "MCE, MCA, RDTSCP"
    );
    assert_eq!(c81 & (1 << 2), 0, "SVM");
    assert_eq!(
        cpuid::filter(0x8000_0007, 0, all, &ctx()),
        [0, 0, 0, 1 << 8]
    );
    assert_eq!(cpuid::filter(0x8000_0021, 0, all, &ctx()), [0; 4]);
}

#[test]
fn ospke_mirrors_the_guest() {
    let c = CpuidCtx {
        guest_ospke: false,
        ..ctx()
    };
    assert_eq!(cpuid::filter(7, 0, [0, 0, 1 << 4, 0], &c)[2], 0);
    assert_eq!(cpuid::filter(7, 0, [0, 0, 0, 0], &ctx())[2], 1 << 4);
}
