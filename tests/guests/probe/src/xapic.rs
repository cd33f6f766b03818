//! The hardware-emulation face hands over its APICs in xAPIC mode, as a PC's firmware does.
//! The boot vCPU reads and writes its registers through the MMIO page before anything else
//! uses the APIC, then switches to x2APIC mode, which the rest of the probe speaks (the APs
//! switch in `arch` before their first APIC access). What it saw is reported as checks once
//! the console is set up.

use crate::arch;

const APIC_BASE_MSR: u32 = 0x1B;
const PAGE: u64 = 0xFEE0_0000;
const EN: u64 = 1 << 11;
const EXTD: u64 = 1 << 10;

/// What the boot vCPU found at power-on.
pub struct AtReset {
    pub base: u64,
    /// ID, version, TPR after writing 0x20, LDR after writing 0x01000000, DFR, and IA32_APIC_BASE
    /// after the switch to x2APIC; `None` when the APIC was not in xAPIC mode.
    pub mmio: Option<[u64; 6]>,
}

/// Runs on the boot vCPU first thing.
pub fn take_over() -> AtReset {
    let base = arch::rdmsr(APIC_BASE_MSR);
    if base & (EN | EXTD) != EN {
        return AtReset { base, mmio: None };
    }
    let page = base & !0xFFF;
    let id = arch::read_u32(page + 0x20);
    let version = arch::read_u32(page + 0x30);
    arch::write_u32(page + 0x80, 0x20);
    let tpr = arch::read_u32(page + 0x80);
    arch::write_u32(page + 0x80, 0);
    arch::write_u32(page + 0xD0, 0x0100_0000);
    let ldr = arch::read_u32(page + 0xD0);
    let dfr = arch::read_u32(page + 0xE0);
    arch::wrmsr(APIC_BASE_MSR, base | EXTD);
    let after = arch::rdmsr(APIC_BASE_MSR);
    AtReset {
        base,
        mmio: Some([
            id.into(),
            version.into(),
            tpr.into(),
            ldr.into(),
            dfr.into(),
            after,
        ]),
    }
}

/// The checks: the enlightened faces hand over x2APIC mode; plain hardware xAPIC mode at the
/// default base, with registers that answer through the page and a switch that works.
pub fn report(at: &AtReset, plain_hardware: bool, check: &mut dyn FnMut(&str, bool, u64)) {
    if !plain_hardware {
        check(
            "msr-apic-base-x2apic",
            at.base & (EN | EXTD) == EN | EXTD && at.base & !0xFFF == PAGE,
            at.base,
        );
        return;
    }
    check(
        "xapic-at-reset",
        at.base & (EN | EXTD) == EN && at.base & !0xFFF == PAGE,
        at.base,
    );
    let Some([id, version, tpr, ldr, dfr, after]) = at.mmio else {
        return;
    };
    check("xapic-mmio-id", id == 0, id);
    check("xapic-mmio-version", version & 0xFF == 0x14, version);
    check("xapic-mmio-tpr", tpr == 0x20, tpr);
    check(
        "xapic-mmio-ldr-dfr",
        ldr == 0x0100_0000 && dfr == 0xFFFF_FFFF,
        dfr,
    );
    check("xapic-to-x2apic", after & (EN | EXTD) == EN | EXTD, after);
}
