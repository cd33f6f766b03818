//! The Hyper-V face as a guest sees it (`probe.face=hyperv`): the TLFS CPUID leaves and the
//! feature bits Janus advertises, the guest OS ID / hypercall MSR handshake and the page it
//! fills, the reference TSC page against the reference counter MSR, a direct-mode synthetic
//! timer, PV IPIs, and the status codes for bad codes, rep counts and parameter GPAs; then
//! VMBus over SynIC (`vmbus`).
//!
//! Constants are the guest's own copy of the TLFS, independent of the hypervisor's crate.
#![expect(unsafe_code)]
// UNSAFETY: hypercalls are calls into the page the hypervisor wrote, and VMCALL/VMMCALL;
// VMBus reads and writes the pages it shares with the host.

mod vmbus;

use crate::arch;
use crate::checks::check;
use crate::page::Page;
use core::arch::asm;
use core::sync::atomic::{Ordering, fence};

const BASE: u32 = 0x4000_0000;

const GUEST_OS_ID: u32 = 0x4000_0000;
const HYPERCALL: u32 = 0x4000_0001;
const VP_INDEX: u32 = 0x4000_0002;
const TIME_REF_COUNT: u32 = 0x4000_0020;
const REFERENCE_TSC: u32 = 0x4000_0021;
const TSC_FREQUENCY: u32 = 0x4000_0022;
const APIC_FREQUENCY: u32 = 0x4000_0023;
const STIMER0_CONFIG: u32 = 0x4000_00B0;
const STIMER0_COUNT: u32 = 0x4000_00B1;

/// Leaf 3 EAX (partition privileges) and EDX (features) that Janus implements and says so.
const PRIV_TIME_REF_COUNT: u32 = 1 << 1;
const PRIV_SYNIC: u32 = 1 << 2;
const PRIV_SYNTIMER: u32 = 1 << 3;
const PRIV_HYPERCALL: u32 = 1 << 5;
const PRIV_VP_INDEX: u32 = 1 << 6;
const PRIV_RESET: u32 = 1 << 7;
const PRIV_REFERENCE_TSC: u32 = 1 << 9;
const PRIV_FREQUENCY_MSRS: u32 = 1 << 11;
const FEAT_FREQUENCY_MSRS: u32 = 1 << 8;
const FEAT_CRASH_MSRS: u32 = 1 << 10;
const FEAT_STIMER_DIRECT: u32 = 1 << 19;
/// Leaf 4 EAX: recommendations.
const HINT_RELAXED_TIMING: u32 = 1 << 5;
const HINT_CLUSTER_IPI: u32 = 1 << 10;
const HINT_EX_PROCESSOR_MASKS: u32 = 1 << 11;
/// Leaf 6 EAX: MSR bitmaps and second-level address translation in use.
const HW_MSR_BITMAPS: u32 = 1 << 1;
const HW_SLAT: u32 = 1 << 3;

/// Hypercall codes and input-value fields.
const NOTIFY_LONG_SPIN_WAIT: u64 = 0x0008;
const SEND_SYNTHETIC_CLUSTER_IPI: u64 = 0x000B;
const FAST: u64 = 1 << 16;
const REP_COUNT_1: u64 = 1 << 32;
const RESERVED_BIT_27: u64 = 1 << 27;
const VARHEAD_1: u64 = 1 << 17;

/// `HV_STATUS_*`.
const SUCCESS: u16 = 0;
const INVALID_HYPERCALL_CODE: u16 = 2;
const INVALID_HYPERCALL_INPUT: u16 = 3;
const INVALID_ALIGNMENT: u16 = 4;
const INVALID_PARAMETER: u16 = 5;

/// Synthetic timer config bits.
const ST_ENABLE: u64 = 1 << 0;
const ST_DIRECT: u64 = 1 << 12;

const STIMER_VECTOR: u8 = 0x51;
const IPI_VECTOR: u8 = 0x52;
/// Reference-counter ticks per second (100 ns).
const REF_HZ: u128 = 10_000_000;
/// The probe's VM has 32 MiB of RAM (manifests/probe-hyperv.toml): this is past it, below
/// the MMIO hole and inside the probe's identity map.
const PAST_RAM: u64 = 0x0800_0000;

static HYPERCALL_PAGE: Page = Page::new();
static TSC_PAGE: Page = Page::new();
/// Memory-form hypercall input blocks.
static INPUT: Page = Page::new();

/// A hypercall through the page: RCX control, RDX input, R8 output; RAX the result. Also
/// returns RCX, RDX and R8 afterwards, which the TLFS says are preserved.
fn call(control: u64, input: u64, output: u64) -> (u64, [u64; 3]) {
    let ret: u64;
    let (mut c, mut i, mut o) = (control, input, output);
    // SAFETY: only called once hv-hypercall-page found the page's code to be
    // `endbr64; vmcall|vmmcall; ret`; the call needs the stack for its return address.
    unsafe {
        asm!("call {page}", page = in(reg) HYPERCALL_PAGE.addr(), lateout("rax") ret,
            inout("rcx") c, inout("rdx") i, inout("r8") o);
    }
    (ret, [c, i, o])
}

fn status(r: u64) -> u16 {
    r as u16
}

/// The reference counter from the TSC page: `((tsc * scale) >> 64) + offset` (wrapping: the
/// offset is negative when the counter started after the TSC), read under
/// the page's sequence. `None` when the page says "use the MSR" (sequence 0).
fn page_time() -> Option<(u64, u64, u64, u64)> {
    loop {
        let seq = TSC_PAGE.word(0) as u32;
        if seq == 0 {
            return None;
        }
        fence(Ordering::Acquire);
        let scale = TSC_PAGE.word(1);
        let offset = TSC_PAGE.word(2);
        let tsc = arch::rdtsc();
        fence(Ordering::Acquire);
        if TSC_PAGE.word(0) as u32 == seq {
            return Some((ref_at(tsc, scale, offset), tsc, scale, offset));
        }
    }
}

fn ref_at(tsc: u64, scale: u64, offset: u64) -> u64 {
    (((u128::from(tsc) * u128::from(scale)) >> 64) as u64).wrapping_add(offset)
}

/// `disks`: how many disks the manifest gives the VM (`probe.disks=`), each a VMBus offer.
pub fn checks(disks: u32) {
    let [_, vb, vc, vd] = arch::cpuid(0, 0);
    let amd = [vb, vd, vc] == [0x6874_7541, 0x6974_6E65, 0x444D_4163];

    leaves();

    let vp = arch::rdmsr(VP_INDEX);
    let gp = arch::catching(2, || arch::wrmsr(VP_INDEX, 1));
    check(
        "hv-vp-index",
        vp == 0 && gp == Some(13),
        format_args!("read {vp}, write {gp:?}"),
    );

    // Hypercalls need a guest OS identity first: without one the enable bit does not stick,
    // and VMCALL stays undefined.
    let page = HYPERCALL_PAGE.addr();
    arch::wrmsr(HYPERCALL, page | 1);
    let early = arch::rdmsr(HYPERCALL);
    let ud = arch::catching(3, || arch::vmcall(amd));
    check(
        "hv-hypercall-needs-guest-os-id",
        early & 1 == 0 && ud == Some(6),
        format_args!("hypercall MSR {early:#x}, VMCALL {ud:?}"),
    );
    // An open-source OS id (bit 63), as Linux writes.
    let os_id = (1 << 63) | (0x100 << 48) | 0x0006_0100;
    arch::wrmsr(GUEST_OS_ID, os_id);
    // A page the hypervisor cannot fill (no RAM there) is refused, and changes nothing.
    let gp = arch::catching(2, || arch::wrmsr(HYPERCALL, PAST_RAM | 1));
    let after = arch::rdmsr(HYPERCALL);
    check(
        "hv-hypercall-msr-outside-ram-gp",
        gp == Some(13) && after == early,
        format_args!("{gp:?}, then {after:#x}"),
    );
    arch::wrmsr(HYPERCALL, page | 1);
    let (id, msr) = (arch::rdmsr(GUEST_OS_ID), arch::rdmsr(HYPERCALL));
    check(
        "hv-hypercall-msr",
        id == os_id && msr == page | 1,
        format_args!("guest OS id {id:#x}, hypercall {msr:#x}"),
    );
    let trap = if amd { 0xD9 } else { 0xC1 };
    let code = [0xF3, 0x0F, 0x1E, 0xFA, 0x0F, 0x01, trap, 0xC3];
    let bad = (0..4096).find(|&i| HYPERCALL_PAGE.byte(i) != code.get(i).copied().unwrap_or(0xCC));
    check(
        "hv-hypercall-page",
        msr & 1 == 1 && bad.is_none(),
        format_args!(
            "first difference at {bad:?}: {:#x}",
            bad.map_or(0, |i| HYPERCALL_PAGE.byte(i))
        ),
    );
    if msr & 1 == 0 || bad.is_some() {
        return;
    }

    clock();
    stimer();
    hypercalls();
    vmbus::checks(disks);
    if crate::bench::enabled() {
        vmbus::round_trip();
    }
}

fn leaves() {
    let [max, b, c, d] = arch::cpuid(BASE, 0);
    let words = [b.to_le_bytes(), c.to_le_bytes(), d.to_le_bytes()];
    let vendor = words.as_flattened();
    check(
        "hv-cpuid-vendor",
        vendor == b"Microsoft Hv" && max == BASE + 0xA,
        format_args!("max {max:#x} {:?}", core::str::from_utf8(vendor)),
    );
    let [iface, ..] = arch::cpuid(BASE + 1, 0);
    check(
        "hv-cpuid-interface",
        iface.to_le_bytes() == *b"Hv#1",
        format_args!("{iface:#x}"),
    );
    let [build, version, ..] = arch::cpuid(BASE + 2, 0);
    check(
        "hv-cpuid-version",
        build != 0 && version >> 16 != 0,
        format_args!("build {build} version {version:#x}"),
    );
    let [privs, _, _, feats] = arch::cpuid(BASE + 3, 0);
    let want_privs = PRIV_TIME_REF_COUNT
        | PRIV_SYNIC
        | PRIV_SYNTIMER
        | PRIV_HYPERCALL
        | PRIV_VP_INDEX
        | PRIV_RESET
        | PRIV_REFERENCE_TSC
        | PRIV_FREQUENCY_MSRS;
    let want_feats = FEAT_FREQUENCY_MSRS | FEAT_CRASH_MSRS | FEAT_STIMER_DIRECT;
    check(
        "hv-cpuid-features",
        privs & want_privs == want_privs && feats & want_feats == want_feats,
        format_args!(
            "privileges {privs:#x} (missing {:#x}), features {feats:#x} (missing {:#x})",
            want_privs & !privs,
            want_feats & !feats
        ),
    );
    let [hints, spins, ..] = arch::cpuid(BASE + 4, 0);
    let want_hints = HINT_RELAXED_TIMING | HINT_CLUSTER_IPI | HINT_EX_PROCESSOR_MASKS;
    check(
        "hv-cpuid-hints",
        hints & want_hints == want_hints && spins == u32::MAX,
        format_args!("hints {hints:#x} spin retries {spins:#x}"),
    );
    let [vps, lps, ..] = arch::cpuid(BASE + 5, 0);
    let [hw, ..] = arch::cpuid(BASE + 6, 0);
    check(
        "hv-cpuid-limits-and-hardware",
        vps >= 2 && lps >= 2 && hw & (HW_MSR_BITMAPS | HW_SLAT) == HW_MSR_BITMAPS | HW_SLAT,
        format_args!("max VPs {vps} LPs {lps}, hardware {hw:#x}"),
    );
    // 7..=0xA are zero (no nesting, no CPU management) and no other vendor's signature
    // follows in the range: Linux would pick KVM's or Janus's over Hyper-V's.
    let zero = (7..=0xA).all(|l| arch::cpuid(BASE + l, 0) == [0; 4]);
    let other = arch::cpuid(BASE + 0x100, 0);
    check(
        "hv-cpuid-no-other-leaves",
        zero && other == [0; 4],
        format_args!("7..=0xA zero: {zero}, 0x40000100: {other:x?}"),
    );
}

/// The TSC page and the reference counter MSR are one clock.
fn clock() {
    let hz = arch::rdmsr(TSC_FREQUENCY);
    let apic = arch::rdmsr(APIC_FREQUENCY);
    check(
        "hv-frequency-msrs",
        hz > 10_000_000 && apic != 0,
        format_args!("TSC {hz} Hz, APIC {apic} Hz"),
    );
    let gp = arch::catching(2, || arch::wrmsr(REFERENCE_TSC, PAST_RAM | 1));
    check(
        "hv-tsc-page-outside-ram-gp",
        gp == Some(13) && arch::rdmsr(REFERENCE_TSC) & 1 == 0,
        format_args!("{gp:?}, then {:#x}", arch::rdmsr(REFERENCE_TSC)),
    );
    arch::wrmsr(REFERENCE_TSC, TSC_PAGE.addr() | 1);
    let msr = arch::rdmsr(REFERENCE_TSC);
    let Some((t0, _, scale, offset)) = page_time() else {
        check(
            "hv-tsc-page",
            false,
            format_args!("sequence 0 after enabling, MSR {msr:#x}"),
        );
        return;
    };
    // scale = 2^64 * REF_HZ / TSC Hz, so that (tsc * scale) >> 64 counts 100 ns ticks.
    let want = ((REF_HZ << 64) / u128::from(hz.max(1))) as u64;
    check(
        "hv-tsc-page",
        msr == TSC_PAGE.addr() | 1 && scale.abs_diff(want) <= 1,
        format_args!(
            "MSR {msr:#x}, scale {scale:#x} for {hz} Hz wants {want:#x}, offset {offset:#x}"
        ),
    );
    // Page, MSR, page: the MSR must fall between two page readings taken around it.
    let mut worst = None;
    for _ in 0..20 {
        let a = page_time().map_or(0, |p| p.0);
        let r = arch::rdmsr(TIME_REF_COUNT);
        let b = page_time().map_or(0, |p| p.0);
        if !(a <= r && r <= b) {
            worst = Some((a, r, b));
        }
    }
    check(
        "hv-tsc-page-matches-ref-counter",
        worst.is_none(),
        format_args!("page, MSR, page out of order: {worst:?}"),
    );
    // The counter starts at 0 when the partition is created, a few seconds ago at most.
    check(
        "hv-ref-counter-offset",
        t0 > 0 && t0 < 600 * REF_HZ as u64,
        format_args!("{t0} ticks since creation"),
    );
    let mut last = t0;
    let mut back = None;
    for _ in 0..2000 {
        let t = page_time().map_or(0, |p| p.0);
        if t < last {
            back = Some((last, t));
        }
        last = t;
    }
    let m1 = arch::rdmsr(TIME_REF_COUNT);
    let s = arch::rdtsc();
    while arch::rdtsc() - s < 10_000_000 {
        core::hint::spin_loop();
    }
    let m2 = arch::rdmsr(TIME_REF_COUNT);
    check(
        "hv-ref-counter-monotonic",
        back.is_none() && last > t0 && m2 > m1 && m1 >= last,
        format_args!("page went back {back:?}; page {t0} -> {last}, MSR {m1} -> {m2}"),
    );
}

/// Synthetic timer 0 in direct mode: one-shot at an absolute reference time, delivered as
/// its vector, never before that time, and disabled afterwards.
fn stimer() {
    let gp = arch::catching(2, || {
        arch::wrmsr(STIMER0_CONFIG, ST_ENABLE | ST_DIRECT | (5 << 4))
    });
    check(
        "hv-stimer-exception-vector-gp",
        gp == Some(13),
        format_args!("{gp:?}"),
    );
    let Some((now, ..)) = page_time() else {
        return;
    };
    arch::expect_vector(STIMER_VECTOR, true);
    let (before, _) = arch::vector_hits(STIMER_VECTOR);
    arch::wrmsr(STIMER0_COUNT, 0);
    arch::wrmsr(
        STIMER0_CONFIG,
        ST_ENABLE | ST_DIRECT | (u64::from(STIMER_VECTOR) << 4),
    );
    // 2 ms out, in 100 ns units.
    let deadline = now + 20_000;
    arch::wrmsr(STIMER0_COUNT, deadline);
    let (hits, at_tsc) = arch::wait_vector(STIMER_VECTOR, before, arch::WATCHDOG);
    let (_, _, scale, offset) = page_time().unwrap_or_default();
    let arrived = ref_at(at_tsc, scale, offset);
    check(
        "hv-stimer-direct-fires",
        hits == before + 1,
        format_args!("interrupts {before} -> {hits}"),
    );
    check(
        "hv-stimer-not-early",
        hits > before && arrived >= deadline,
        format_args!("arrived {arrived} deadline {deadline}"),
    );
    if hits > before {
        crate::say!(
            "hyperv stimer: interrupt {} us after the deadline",
            arrived.saturating_sub(deadline) / 10
        );
    }
    let config = arch::rdmsr(STIMER0_CONFIG);
    check(
        "hv-stimer-oneshot-disables",
        config & ST_ENABLE == 0,
        format_args!("config after expiry {config:#x}"),
    );
}

fn hypercalls() {
    // A fast call with nothing to do: the null hypercall of this face.
    crate::bench::time("hypercall", || {
        call(NOTIFY_LONG_SPIN_WAIT | FAST, 0, 0);
    });
    // The IOAPIC's index register: an MMIO read the hypervisor decodes and emulates.
    crate::bench::time("mmio", || {
        arch::read_u32(0xFEC0_0000);
    });
    let ctl = NOTIFY_LONG_SPIN_WAIT | FAST;
    let (r, regs) = call(ctl, 7, 0x1234);
    check(
        "hv-hypercall-ok-preserves-registers",
        status(r) == SUCCESS && regs == [ctl, 7, 0x1234],
        format_args!("result {r:#x}, rcx rdx r8 {regs:x?}"),
    );

    let unknown = [0x7FFF | FAST, 0x0001, 0x00AF | FAST];
    let got = unknown.map(|c| status(call(c, 0, 0).0));
    check(
        "hv-status-unknown-code",
        got.iter().all(|&s| s == INVALID_HYPERCALL_CODE),
        format_args!("codes 0x7fff, 0x1, 0xaf: {got:?}"),
    );

    let bad_input = [
        NOTIFY_LONG_SPIN_WAIT | FAST | REP_COUNT_1,
        SEND_SYNTHETIC_CLUSTER_IPI | FAST | REP_COUNT_1,
        NOTIFY_LONG_SPIN_WAIT | FAST | RESERVED_BIT_27,
        NOTIFY_LONG_SPIN_WAIT | FAST | VARHEAD_1,
    ];
    let got = bad_input.map(|c| status(call(c, 0, 0).0));
    check(
        "hv-status-rep-count-on-simple-call",
        got[0] == INVALID_HYPERCALL_INPUT && got[1] == INVALID_HYPERCALL_INPUT,
        format_args!("spin wait, cluster IPI with 1 rep: {:?}", &got[..2]),
    );
    check(
        "hv-status-reserved-input-bits",
        got[2] == INVALID_HYPERCALL_INPUT && got[3] == INVALID_HYPERCALL_INPUT,
        format_args!("bit 27, variable header: {:?}", &got[2..]),
    );

    // Memory-form input: past RAM, beyond 4 GiB, misaligned, or straddling a page.
    let base = INPUT.addr();
    let gpas = [PAST_RAM, 1 << 40, base + 4];
    let got = gpas.map(|g| status(call(NOTIFY_LONG_SPIN_WAIT, g, 0).0));
    let cross = status(call(SEND_SYNTHETIC_CLUSTER_IPI, base + 4088, 0).0);
    check(
        "hv-status-bad-input-gpa",
        got.iter().all(|&s| s == INVALID_ALIGNMENT) && cross == INVALID_ALIGNMENT,
        format_args!("past RAM, 2^40, misaligned: {got:?}, straddling: {cross}"),
    );
    let ok = status(call(NOTIFY_LONG_SPIN_WAIT, base, 0).0);
    check("hv-memory-input-ok", ok == SUCCESS, format_args!("{ok}"));

    // PV IPIs to ourselves (VP 0), fast and from memory; an exception vector is refused.
    arch::expect_vector(IPI_VECTOR, true);
    let (before, _) = arch::vector_hits(IPI_VECTOR);
    let fast = status(call(SEND_SYNTHETIC_CLUSTER_IPI | FAST, u64::from(IPI_VECTOR), 1).0);
    let (hits, _) = arch::wait_vector(IPI_VECTOR, before, arch::WATCHDOG);
    INPUT.0[0].store(u64::from(IPI_VECTOR), Ordering::Release);
    INPUT.0[1].store(1, Ordering::Release);
    let mem = status(call(SEND_SYNTHETIC_CLUSTER_IPI, base, 0).0);
    let (hits2, _) = arch::wait_vector(IPI_VECTOR, hits, arch::WATCHDOG);
    check(
        "hv-pv-ipi-self",
        fast == SUCCESS && mem == SUCCESS && hits == before + 1 && hits2 == hits + 1,
        format_args!("fast {fast} memory {mem}, interrupts {before} -> {hits} -> {hits2}"),
    );
    let bad = status(call(SEND_SYNTHETIC_CLUSTER_IPI | FAST, 5, 1).0);
    check(
        "hv-status-bad-ipi-vector",
        bad == INVALID_PARAMETER,
        format_args!("{bad}"),
    );
}
