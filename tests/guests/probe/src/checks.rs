//! What the probe checks, in order, and the verdict.

use crate::arch::{self, TIMER_HITS, TIMER_VECTOR};
use crate::say;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const X2APIC_ID: u32 = 0x802;
const X2APIC_SVR: u32 = 0x80F;
const X2APIC_ICR: u32 = 0x830;
const X2APIC_LVT_TIMER: u32 = 0x832;
const X2APIC_TIMER_INIT: u32 = 0x838;
const X2APIC_TIMER_DIV: u32 = 0x83E;
const TSC_DEADLINE: u32 = 0x6E0;
/// A guest-physical address below the PCI hole with no RAM behind it (the VM has far less).
const UNBACKED: u64 = 0xB000_0000;

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
static APS_UP: AtomicU32 = AtomicU32::new(0);
static APS_DONE: AtomicU32 = AtomicU32::new(0);
static SPIN_MS: AtomicU64 = AtomicU64::new(0);
static SPIN_UNTIL: AtomicU64 = AtomicU64::new(0);
/// vCPUs whose XMM7/DR0 changed under them while they spun (preempted by other vCPUs/VMs).
static REGS_LOST: AtomicU32 = AtomicU32::new(0);
static COUNTERS: [AtomicU64; arch::MAX_VCPUS] = [const { AtomicU64::new(0) }; arch::MAX_VCPUS];

pub(crate) fn check(name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
    if ok {
        PASSED.fetch_add(1, Ordering::AcqRel);
        say!("check {} ... ok", name);
    } else {
        FAILED.fetch_add(1, Ordering::AcqRel);
        say!("check {} ... FAIL: {}", name, detail);
    }
}

/// Which hypervisor ABI the VM presents (`probe.face=`): its checks run after the platform's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Face {
    None,
    Xen,
    HyperV,
}

struct Cmdline {
    spin_ms: u64,
    triple_fault: bool,
    reboot_once: bool,
    face: Face,
    /// `probe.flood=N`: print N console lines as fast as it can before the checks.
    flood: u32,
    /// `probe.chaos=SEED,OPS`: a hostile guest instead of the checks (see `chaos`).
    chaos: Option<(u64, u64)>,
    /// `probe.disks=N`: the manifest gives the VM N disks (the Hyper-V face offers each).
    disks: u32,
}

fn cmdline(start_info: u32) -> Cmdline {
    let mut c = Cmdline {
        spin_ms: 0,
        triple_fault: false,
        reboot_once: false,
        face: Face::None,
        flood: 0,
        chaos: None,
        disks: 0,
    };
    if start_info == 0 {
        return c;
    }
    // hvm_start_info: magic at 0, cmdline_paddr at 24.
    let base = u64::from(start_info);
    if arch::read_u32(base) != 0x336E_C578 {
        return c;
    }
    let addr = u64::from(arch::read_u32(base + 24)) | (u64::from(arch::read_u32(base + 28)) << 32);
    if addr == 0 {
        return c;
    }
    let mut buf = [0u8; 256];
    let mut n = 0;
    while n < buf.len() {
        let b = arch::read_u8(addr + n as u64);
        if b == 0 {
            break;
        }
        buf[n] = b;
        n += 1;
    }
    let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
    for w in text.split_ascii_whitespace() {
        if let Some(ms) = w.strip_prefix("probe.spin=") {
            c.spin_ms = ms.parse().unwrap_or(0);
        } else if w == "probe.triple_fault" {
            c.triple_fault = true;
        } else if w == "probe.reboot_once" {
            c.reboot_once = true;
        } else if let Some(v) = w.strip_prefix("probe.chaos=") {
            let mut it = v.split(',').map(|n| n.parse::<u64>().ok());
            if let (Some(Some(seed)), Some(Some(ops))) = (it.next(), it.next()) {
                c.chaos = Some((seed, ops));
            }
        } else if let Some(n) = w.strip_prefix("probe.flood=") {
            c.flood = n.parse().unwrap_or(0);
        } else if let Some(n) = w.strip_prefix("probe.bench=") {
            crate::bench::enable(n.parse().unwrap_or(0));
        } else if let Some(n) = w.strip_prefix("probe.disks=") {
            c.disks = n.parse().unwrap_or(0);
        } else if w == "probe.face=xen" {
            c.face = Face::Xen;
        } else if w == "probe.face=hyperv" {
            c.face = Face::HyperV;
        }
    }
    c
}

// UNSAFETY: an exported symbol is how the entry assembly reaches Rust.
// SAFETY: the entry assembly calls this by name; nothing else defines it.
#[expect(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn probe_bsp_main(start_info: u32) -> ! {
    arch::load_idt(true);
    let apic_at_reset = crate::xapic::take_over();
    say!("started on vCPU {}", arch::rdmsr(X2APIC_ID));
    let opts = cmdline(start_info);
    if let Some((seed, ops)) = opts.chaos {
        let [_, vb, vc, vd] = arch::cpuid(0, 0);
        let amd = [vb, vd, vc] == [0x6874_7541, 0x6974_6E65, 0x444D_4163];
        let face = match opts.face {
            Face::None => 0,
            Face::Xen => 1,
            Face::HyperV => 2,
        };
        let done = crate::chaos::run(seed, ops, face, amd);
        say!("chaos: {done} ops survived");
        crate::io::power_off();
    }
    for i in 0..opts.flood {
        say!("flood {i} ................................................");
    }

    let [_, _, ecx1, _] = arch::cpuid(1, 0);
    check(
        "cpuid-hypervisor-bit",
        ecx1 & (1 << 31) != 0,
        format_args!("leaf 1 ecx {ecx1:#x}"),
    );
    check(
        "cpuid-no-vmx",
        ecx1 & (1 << 5) == 0,
        format_args!("leaf 1 ecx {ecx1:#x}"),
    );
    let [_, _, ecx81, _] = arch::cpuid(0x8000_0001, 0);
    check(
        "cpuid-no-svm",
        ecx81 & (1 << 2) == 0,
        format_args!("leaf 0x80000001 ecx {ecx81:#x}"),
    );
    let [max, b, c, d] = arch::cpuid(0x4000_0000, 0);
    let sig = [b.to_le_bytes(), c.to_le_bytes(), d.to_le_bytes()];
    // A face owns the hypervisor leaves; its own checks read its signature.
    if opts.face == Face::None {
        check(
            "cpuid-signature",
            max >= 0x4000_0000 && sig[0] == *b"Janu" && sig[1][0] == b's',
            format_args!("max {max:#x}"),
        );
    }
    let [_, vb, vc, vd] = arch::cpuid(0, 0);
    let amd = [vb, vd, vc] == [0x6874_7541, 0x6974_6E65, 0x444D_4163];

    crate::xapic::report(
        &apic_at_reset,
        opts.face == Face::None,
        &mut |name, ok, v| check(name, ok, format_args!("{v:#x}")),
    );
    check(
        "msr-x2apic-id",
        arch::rdmsr(X2APIC_ID) == 0,
        format_args!("{}", arch::rdmsr(X2APIC_ID)),
    );
    let gp = arch::catching(2, || {
        let _ = arch::rdmsr(0x0001_2345);
    });
    check(
        "msr-unknown-read-gp",
        gp == Some(13),
        format_args!("{gp:?}"),
    );
    let gp = arch::catching(2, || arch::wrmsr(0x0001_2345, 1));
    check(
        "msr-unknown-write-gp",
        gp == Some(13),
        format_args!("{gp:?}"),
    );
    arch::wrmsr(0xC000_0100, 0x1234_5678_9000);
    let fs = arch::rdmsr(0xC000_0100);
    check(
        "msr-passthrough-fs-base",
        fs == 0x1234_5678_9000,
        format_args!("{fs:#x}"),
    );
    crate::policy::checks(!amd);
    crate::policy::xsave_checks();

    let (b8, b16, b32) = (
        crate::io::inb(0x1234),
        crate::io::inw(0x1234),
        crate::io::inl(0x1234),
    );
    check(
        "port-unknown-floats",
        b8 == 0xFF && b16 == 0xFFFF && b32 == u32::MAX,
        format_args!("{b8:#x} {b16:#x} {b32:#x}"),
    );
    let lsr = crate::io::inb(0x3FD);
    check(
        "uart-lsr-ready",
        lsr & 0x60 == 0x60,
        format_args!("{lsr:#x}"),
    );

    // The virtual APIC timer wakes a halted vCPU: one-shot, then TSC-deadline.
    arch::wrmsr(X2APIC_SVR, 0x1FF);
    arch::wrmsr(X2APIC_TIMER_DIV, 0xB);
    arch::wrmsr(X2APIC_LVT_TIMER, u64::from(TIMER_VECTOR));
    let before = TIMER_HITS.load(Ordering::Acquire);
    let t0 = arch::rdtsc();
    arch::wrmsr(X2APIC_TIMER_INIT, 2_000_000); // 2 ms at the 1 GHz APIC clock
    let mut halts = 0;
    while TIMER_HITS.load(Ordering::Acquire) == before && halts < 1000 {
        arch::sti_hlt();
        halts += 1;
    }
    let slept = arch::rdtsc() - t0;
    check(
        "hlt-woken-by-apic-timer",
        TIMER_HITS.load(Ordering::Acquire) == before + 1,
        format_args!("{halts} halts, {slept} cycles"),
    );
    arch::wrmsr(X2APIC_LVT_TIMER, u64::from(TIMER_VECTOR) | (2 << 17));
    let before = TIMER_HITS.load(Ordering::Acquire);
    arch::wrmsr(TSC_DEADLINE, arch::rdtsc() + slept);
    let mut halts = 0;
    while TIMER_HITS.load(Ordering::Acquire) == before && halts < 1000 {
        arch::sti_hlt();
        halts += 1;
    }
    check(
        "hlt-woken-by-tsc-deadline",
        TIMER_HITS.load(Ordering::Acquire) == before + 1,
        format_args!("{halts} halts"),
    );

    let r1 = arch::read_u32(UNBACKED);
    arch::write_u32(UNBACKED, 0x1234_5678);
    let r2 = arch::read_u32(UNBACKED);
    check(
        "unbacked-memory-reads-ones",
        r1 == u32::MAX && r2 == u32::MAX,
        format_args!("{r1:#x} then {r2:#x}"),
    );

    if opts.face == Face::None {
        let ud = arch::catching(3, || arch::vmcall(amd));
        check(
            "hypercall-without-abi-is-ud",
            ud == Some(6),
            format_args!("{ud:?}"),
        );
    }

    let [_, ebx1, _, _] = arch::cpuid(1, 0);
    let vcpus = ((ebx1 >> 16) & 0xFF).max(1);
    SPIN_MS.store(opts.spin_ms, Ordering::Release);
    if vcpus > 1 {
        let vector = arch::install_trampoline();
        for ap in 1..vcpus {
            arch::wrmsr(X2APIC_ICR, (u64::from(ap) << 32) | 0x4500);
            arch::wrmsr(
                X2APIC_ICR,
                (u64::from(ap) << 32) | 0x4600 | u64::from(vector),
            );
        }
        let t0 = arch::rdtsc();
        while APS_UP.load(Ordering::Acquire) < vcpus - 1 && arch::rdtsc() - t0 < 50_000_000_000 {
            core::hint::spin_loop();
        }
        let up = APS_UP.load(Ordering::Acquire);
        check(
            "smp-aps-started",
            up == vcpus - 1,
            format_args!("{up} of {} APs", vcpus - 1),
        );
    }
    if opts.spin_ms > 0 {
        spin(0);
        let t0 = arch::rdtsc();
        while APS_DONE.load(Ordering::Acquire) < vcpus - 1 && arch::rdtsc() - t0 < 50_000_000_000 {
            core::hint::spin_loop();
        }
        let counts: [u64; arch::MAX_VCPUS] =
            core::array::from_fn(|i| COUNTERS[i].load(Ordering::Acquire));
        let all = counts.iter().take(vcpus as usize).all(|&n| n > 0);
        say!("progress {:?}", &counts[..vcpus as usize]);
        check(
            "every-vcpu-made-progress",
            all,
            format_args!("{:?}", &counts[..vcpus as usize]),
        );
        let lost = REGS_LOST.load(Ordering::Acquire);
        check(
            "xmm-and-dr-kept-across-preemption",
            lost == 0,
            format_args!("{lost} vCPU(s) saw XMM7/DR0 change"),
        );
    }

    match opts.face {
        Face::None => crate::pci::checks(opts.disks),
        Face::Xen => crate::xen::checks(),
        Face::HyperV => crate::hyperv::checks(opts.disks),
    }
    crate::bench::platform();

    let (p, f) = (
        PASSED.load(Ordering::Acquire),
        FAILED.load(Ordering::Acquire),
    );
    say!("{} passed, {} failed", p, f);
    say!("verdict: {}", if f == 0 { "PASS" } else { "FAIL" });
    if opts.triple_fault {
        say!("triple faulting on purpose");
        arch::triple_fault();
    }
    if opts.reboot_once {
        // CMOS RAM outlives a reset, as on a PC: it tells the second boot from the first.
        if crate::io::cmos_read(REBOOT_MARK_AT) != REBOOT_MARK {
            crate::io::cmos_write(REBOOT_MARK_AT, REBOOT_MARK);
            // RAM does not outlive the reset: the next life must find zeroes here.
            arch::write_u32(RAM_MARK_AT, RAM_MARK);
            arch::write_u32(RAM_MARK_AT + (1 << 20), RAM_MARK);
            say!("rebooting on purpose");
            crate::io::reset();
        }
        say!("booted again after a reboot");
        let left = [
            arch::read_u32(RAM_MARK_AT),
            arch::read_u32(RAM_MARK_AT + (1 << 20)),
        ];
        say!(
            "ram after the reboot: {}",
            if left == [0, 0] {
                "zeroed"
            } else {
                "NOT ZEROED"
            }
        );
    }
    crate::io::power_off()
}

/// A CMOS RAM byte no firmware of ours uses, and what `probe.reboot_once` leaves there.
const REBOOT_MARK_AT: u8 = 0x40;
const REBOOT_MARK: u8 = 0xA5;
/// RAM no part of the probe uses (its image ends below 2 MiB, its VMs have 16 MiB or more),
/// in two different 2 MiB chunks, and what the first boot leaves there.
const RAM_MARK_AT: u64 = 10 << 20;
const RAM_MARK: u32 = 0x5EC2_E7ED;

/// Counts for the configured time on this vCPU; the counters show which vCPUs got CPU time.
fn spin(vcpu: usize) {
    let ms = SPIN_MS.load(Ordering::Acquire);
    if ms == 0 {
        return;
    }
    // 1 ms is taken as 1e6 cycles: only relative progress matters.
    let until = arch::rdtsc() + ms * 1_000_000;
    SPIN_UNTIL.store(until, Ordering::Release);
    // A value no other vCPU of any VM picks: the TSC differs per start, the low bits per vCPU.
    let mine = (arch::rdtsc() << 8) | vcpu as u64;
    arch::set_private_regs(mine);
    while arch::rdtsc() < until {
        COUNTERS[vcpu].fetch_add(1, Ordering::Relaxed);
    }
    if arch::private_regs() != (mine, mine) {
        REGS_LOST.fetch_add(1, Ordering::AcqRel);
    }
}

// UNSAFETY: as for probe_bsp_main.
// SAFETY: as for probe_bsp_main.
#[expect(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn probe_ap_main(id: u32) -> ! {
    arch::load_idt(false);
    say!("vCPU {} up", id);
    APS_UP.fetch_add(1, Ordering::AcqRel);
    spin((id as usize).min(arch::MAX_VCPUS - 1));
    APS_DONE.fetch_add(1, Ordering::AcqRel);
    loop {
        arch::sti_hlt();
    }
}
