//! What the hypervisor tells about a VM when it ends (how, its exits, each vCPU's last state,
//! and for a triple fault the page walk and flight recorder), and the `janus.watch` lines.

use super::console;
use super::create::{VM_COUNT, VcpuCell, VmSlot, vms};
use super::host::HostMachine;
use super::outcome::Outcome;
use super::state::{VcpuState, VmInfo};
use super::uart::LineBuf;
use crate::arch::tsc;
use crate::println;
use crate::sched::account::CpuTime;
use crate::sched::policy::VcpuRef;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use vcpu::{AnyVcpu, Vcpu};
use virt::StopReason;

/// Set by `janus.watch`: the BSP prints every vCPU's state every [`WATCH_NS`].
pub static WATCH: AtomicBool = AtomicBool::new(false);
const WATCH_NS: u64 = 5_000_000_000;

/// Prints everything the VM's consoles (COM1 and the personality's) still hold: the backlog,
/// then the unfinished lines, then the count of what was dropped; before its end is reported.
pub fn flush_consoles(vm: &VmSlot, info: &VmInfo) {
    let _ = info;
    let (m, c) = (&HostMachine, vm.console());
    each_console(vm, |buf| buf.flush(&mut |line| console::append(m, c, line)));
    console::drain(m, c, None);
    console::report_dropped(m, c);
}

/// Runs `take` on each of the VM's console buffers (COM1's, then the personality's), one
/// lock at a time.
pub fn each_console(vm: &VmSlot, mut take: impl FnMut(&mut LineBuf)) {
    take(vm.devices.uart.0.lock().line_buf());
    take(&mut vm.personality.lock().console);
}

/// Lets out what the VMs' consoles have waiting (called by pCPU 0 between exits): until host
/// time `until_ns`, starting with a different VM each time so that one VM's backlog cannot
/// keep the others' waiting.
/// Whether every backlog is empty afterwards.
pub fn drain_consoles(until_ns: u64) -> bool {
    static FIRST: AtomicUsize = AtomicUsize::new(0);
    let n = VM_COUNT.load(Ordering::Acquire).min(vms().len());
    if n == 0 {
        return true;
    }
    let first = FIRST.fetch_add(1, Ordering::Relaxed) % n;
    let mut empty = true;
    for i in (first..n).chain(0..first) {
        if let Some(vm) = vms().get(i).filter(|v| v.info.get().is_some()) {
            empty &= console::drain(&HostMachine, vm.console(), Some(until_ns));
        }
    }
    empty
}

/// VMs that did not end cleanly; the run fails unless it is 0.
pub static UNCLEAN: AtomicUsize = AtomicUsize::new(0);

/// The one line and the one log record of a VM's end.
pub fn announce(name: &str, outcome: Outcome, what: core::fmt::Arguments<'_>) {
    println!("vm {name}: stopped: {what}");
    defmt::info!("vm-end {=str} {=str}", name, outcome.as_str());
    if !outcome.clean() {
        UNCLEAN.fetch_add(1, Ordering::AcqRel);
    }
}

/// The report of a VM whose last vCPU left. `preserved`: its state stays as it was, and every
/// vCPU's is reported in full for inspection.
pub fn vm_ended(vm: &VmSlot, info: &VmInfo, preserved: bool) {
    let (reason, stats) = {
        let end = vm.end.lock();
        (end.stop.unwrap_or(StopReason::PowerOff), end.stats)
    };
    let kept = if preserved {
        " (preserved for inspection)"
    } else {
        ""
    };
    announce(
        info.name.as_str(),
        Outcome::of(&reason),
        format_args!("{reason}{kept}"),
    );
    report_nested(vm, info);
    let host = crate::mm::paging::damaged();
    if let Some((va, got)) = host.first {
        println!(
            "janus: host page tables CHANGED: {} 2 MiB pages wrong, first {:#x} -> {:?}",
            host.count, va, got
        );
    }
    crate::storage::host::report_reads(info.index, info.name.as_str());
    println!("vm {}: {} exits:", info.name, stats.total());
    for (kind, n) in stats.nonzero() {
        println!("  {:<14} {}", kind.name(), n);
    }
    report_cpu(vm, info);
    for v in 0..info.vcpus {
        if let Some(cell) = vm.cells.get(usize::from(v)).and_then(|c| c.try_lock())
            && let Some(c) = cell.as_ref()
        {
            report_vcpu(v, c, info, &reason, preserved);
        }
    }
    defmt::info!("vm stopped after {=u64} exits", stats.total());
}

/// The VM's time on pCPUs, summed over its vCPUs: a line, and a record (microseconds on
/// pCPUs, of them while contending for one, waiting runnable) for the test suite.
fn report_cpu(vm: &VmSlot, info: &VmInfo) {
    let mut t = CpuTime::default();
    for cell in vm.cells.iter().take(usize::from(info.vcpus)) {
        if let Some(cell) = cell.try_lock()
            && let Some(c) = cell.as_ref()
        {
            t.add(&c.state.cpu);
        }
    }
    let ms = |ns: u64| ns / 1_000_000;
    match t.share_permille() {
        Some(share) => println!(
            "vm {}: cpu {} ms on pCPUs; {} ms of it contending for one, waited {} ms: {}.{}% share",
            info.name,
            ms(t.run_ns),
            ms(t.contended_ns),
            ms(t.waited_ns),
            share / 10,
            share % 10
        ),
        None => println!(
            "vm {}: cpu {} ms on pCPUs, never contending for one",
            info.name,
            ms(t.run_ns)
        ),
    }
    defmt::info!(
        "vm-cpu {=str} {=u64} {=u64} {=u64}",
        info.name.as_str(),
        t.run_ns / 1000,
        t.contended_ns / 1000,
        t.waited_ns / 1000
    );
}

fn report_vcpu(v: u8, c: &VcpuCell, info: &VmInfo, reason: &StopReason, full: bool) {
    let st = &c.state;
    let regs = st.vcpu.regs();
    let ctl = st.vcpu.control_regs();
    println!(
        "  vcpu {}: ran {} us; rip {:#x} rsp {:#x} cr0 {:#x} cr3 {:#x} efer {:#x}",
        v,
        st.run_ns / 1000,
        regs.rip,
        regs.rsp,
        ctl.cr0,
        ctl.cr3,
        ctl.efer
    );
    if full || matches!(reason, StopReason::TripleFault { .. }) {
        // What a triple fault usually comes down to: the stack, the TSS, the IDT path.
        let seg = |s: virt::SegReg| st.vcpu.segment(s);
        let (cs, ss, tr) = (
            seg(virt::SegReg::Cs),
            seg(virt::SegReg::Ss),
            seg(virt::SegReg::Tr),
        );
        println!(
            "  vcpu {}: rflags {:#x} cr2 {:#x} cr4 {:#x} cs {:#x}/{:#x} ss {:#x}/{:#x} tr {:#x} base {:#x} limit {:#x} cpl {}",
            v,
            regs.rflags,
            ctl.cr2,
            ctl.cr4,
            cs.selector,
            cs.attr,
            ss.selector,
            ss.attr,
            tr.selector,
            tr.base,
            tr.limit,
            st.vcpu.cpl()
        );
        report_walk(v, &vcpu::GuestRam::new(info.ram), &ctl, ctl.cr2);
        let now = tsc::now_ns();
        for line in st.trace.lines(now) {
            println!("  vcpu {v}: trace {line}");
        }
    }
    if st.lapic.unmatched_eois > 0 {
        println!(
            "  vcpu {}: {} EOIs with no interrupt in service",
            v, st.lapic.unmatched_eois
        );
    }
    if st.ram_races > 0 {
        println!(
            "  vcpu {}: {} nested faults on RAM another vCPU had just mapped",
            v, st.ram_races
        );
    }
    if st.lazy_eoi.taken > 0 {
        println!(
            "  vcpu {}: {} EOIs skipped by the guest and done for it (lazy EOI)",
            v, st.lazy_eoi.taken
        );
    }
    if st.nmis_dropped > 0 {
        println!(
            "  vcpu {}: {} NMI IPIs not delivered (NMIs are not modelled)",
            v, st.nmis_dropped
        );
    }
}

/// Checks, when a VM ends, that its nested tables map every page of RAM the VM has used to
/// its own frame, nothing where it has not, and each alias to its backing: anything else means
/// something wrote over them.
fn report_nested(vm: &VmSlot, info: &VmInfo) {
    let npt = vm.npt.lock();
    let Some(npt) = npt.as_ref() else {
        return;
    };
    let mut frames = crate::mm::phys::Frames;
    let tables = vcpu::HostTables(&mut frames);
    let ram = info.ram;
    let aliases = vm.aliases.lock();
    let used = |gpa| {
        ram.chunks
            .is_none_or(|c| c.is_mapped(virt::RamChunks::index(gpa)))
    };
    let want = |gpa| {
        (gpa < ram.size && used(gpa))
            .then_some(gpa)
            .or_else(|| aliases.backing(gpa))
            .map(|g| ram.hpa_base + g)
    };
    let got = |gpa| npt.translate(&tables, gpa).map(|(hpa, _)| hpa);
    // RAM, plus 2 MiB beyond it that must stay unmapped (but for aliases there), plus every
    // alias.
    let mut m = crate::mm::mapcheck::compare(0..ram.size + (2 << 20), 4096, want, got);
    aliases.for_each(|gpa| {
        if gpa >= ram.size + (2 << 20) && got(gpa) != want(gpa) {
            m.count += 1;
            m.first.get_or_insert((gpa, got(gpa)));
        }
    });
    match m.first {
        None => {
            let mut mapped = 0;
            let mut at = 0;
            while at < ram.size {
                let chunk = virt::ram_chunks::CHUNK.min(ram.size - at);
                if used(at) {
                    mapped += chunk;
                }
                at += chunk;
            }
            println!(
                "vm {}: nested tables intact ({} of {} MiB mapped 1:1 onto its RAM, the rest \
                 never used)",
                info.name,
                mapped >> 20,
                ram.size >> 20
            )
        }
        Some((gpa, got)) => println!(
            "vm {}: nested tables CHANGED: {} pages wrong, first gpa {:#x} -> {:?}",
            info.name, m.count, gpa, got
        ),
    }
}

/// How the vCPU's own page tables map `la` (usually CR2 after a triple fault): each level's
/// entry as read from guest RAM, so a zeroed or overwritten table shows up in the report.
fn report_walk(v: u8, mem: &vcpu::GuestRam, ctl: &virt::ControlRegs, la: u64) {
    use virt::GuestMemory;
    if virt::walk::mode(ctl) != virt::walk::Mode::Level4 {
        return;
    }
    let mut table = ctl.cr3 & 0x000f_ffff_ffff_f000;
    for (level, shift) in [(4, 39u32), (3, 30), (2, 21), (1, 12)] {
        let gpa = table + ((la >> shift) & 0x1ff) * 8;
        let Ok(entry) = mem.read_u64(gpa) else {
            println!("  vcpu {v}: walk {la:#x}: L{level} table at {table:#x} outside RAM");
            return;
        };
        println!("  vcpu {v}: walk {la:#x}: L{level} entry at {gpa:#x} = {entry:#x}");
        if entry & 1 == 0 {
            // A wholly zeroed table points at memory reuse rather than one bad entry.
            let live = (0..512u64)
                .filter(|i| mem.read_u64(table + i * 8).is_ok_and(|e| e != 0))
                .count();
            println!("  vcpu {v}: walk {la:#x}: not present; {live} of 512 entries there non-zero");
            return;
        }
        if level > 1 && entry & 0x80 != 0 {
            return;
        }
        table = entry & 0x000f_ffff_ffff_f000;
    }
}

static LAST_WATCH: AtomicU64 = AtomicU64::new(0);

/// With `janus.watch`, prints the watch lines when they are due; `current` is the vCPU this
/// pCPU holds.
/// When [`watch_tick`] next prints (host ns), if `janus.watch` asked for it.
pub fn watch_due_ns() -> Option<u64> {
    WATCH
        .load(Ordering::Relaxed)
        .then(|| LAST_WATCH.load(Ordering::Relaxed).saturating_add(WATCH_NS))
}

pub fn watch_tick(current: Option<(VcpuRef, &VcpuState<AnyVcpu>)>) {
    if !WATCH.load(Ordering::Relaxed) {
        return;
    }
    let now = tsc::now_ns();
    if now.saturating_sub(LAST_WATCH.load(Ordering::Relaxed)) < WATCH_NS {
        return;
    }
    LAST_WATCH.store(now, Ordering::Relaxed);
    if let Some((r, c)) = current {
        print_vcpu(r, c);
    }
    watch();
}

fn print_vcpu(r: VcpuRef, c: &VcpuState<AnyVcpu>) {
    let regs = c.vcpu.regs();
    let ctl = c.vcpu.control_regs();
    println!(
        "watch: vm {} vcpu {}: rip {:#x} rsp {:#x} rflags {:#x} cr0 {:#x} sipi-wait {} exits {} irr {} deliverable {:?}",
        r.vm,
        r.vcpu,
        regs.rip,
        regs.rsp,
        regs.rflags,
        ctl.cr0,
        c.vcpu.waiting_for_sipi(),
        c.stats.total(),
        c.lapic.has_irr(),
        c.lapic.deliverable()
    );
    for (kind, n) in c.stats.nonzero().iter().take(6) {
        println!("watch:   {} {}", kind.name(), n);
    }
}

/// One line per vCPU: where it is and what it last did (vCPUs in guest mode are skipped).
fn watch() {
    for (i, vm) in vms()
        .iter()
        .enumerate()
        .take(VM_COUNT.load(Ordering::Acquire))
    {
        let Some(info) = vm.info.get() else { continue };
        for v in 0..info.vcpus {
            let (Some(slot), Some(cell)) = (vm.vcpu(v), vm.cells.get(usize::from(v))) else {
                continue;
            };
            let Some(guard) = cell.try_lock() else {
                println!(
                    "watch: vm {} vcpu {}: running (pending {})",
                    i,
                    v,
                    slot.pending.any()
                );
                continue;
            };
            if let Some(c) = guard.as_ref() {
                print_vcpu(
                    VcpuRef {
                        vm: i as u8,
                        vcpu: v,
                    },
                    &c.state,
                );
            }
        }
    }
}
