//! Bring-up of the bootstrap CPU, the banner, and manifest intake.

use crate::arch::{apic, cpu, gdt, idt, pic, smp, tsc, verdict};
use crate::bootinfo::BootContext;
use crate::cmdline::{MitigationMode, Options, SelfTest};
use crate::manifest::{self, Manifest};
use crate::sched::run;
use crate::vm::{create as machine, report};
use crate::{console, mm, println};
use boot::mbinfo::{IdentityMap, MachineInfo};
use core::ops::Range;
use core::sync::atomic::Ordering;
use hermit_entry::boot_info::{BootInfo, RawBootInfo};
use multiboot::information::Multiboot;

/// The loader's identity map reaches this far; the kernel's own tables replace it.
const LOADER_IDENTITY_LIMIT: u64 = 4 << 30;
/// Timer interrupts the bring-up waits for to prove the host timer works.
const TIMER_PROOF_TICKS: u64 = 5;
/// The host tick: guest timers and time slices are checked at least this often.
const TIMER_PERIOD_MS: u32 = 1;

/// Entered from `_start` on the boot stack.
pub extern "C" fn kernel_main(raw: &'static RawBootInfo, _cpu_id: u32) -> ! {
    console::init();
    mm::heap::init();
    gdt::init(0);
    idt::init(true);
    println!(
        "janus {} — Xen and Hyper-V faces on one hypervisor",
        env!("CARGO_PKG_VERSION")
    );
    tsc::mark_banner();
    // A single-ABI image says so before anything else can go wrong, so a lab machine's
    // console shows which manifests it can take.
    let mut faces = heapless::String::<32>::new();
    for p in crate::PERSONALITIES {
        let _ = faces.push_str(" ");
        let _ = faces.push_str(p.as_str());
    }
    println!("personalities:{faces}");

    let ctx = match BootContext::from_boot_info(&BootInfo::from(*raw)) {
        Ok(ctx) => ctx,
        Err(e) => fatal(format_args!("boot hand-off: {e}")),
    };
    let opts = match Options::parse(ctx.cmdline) {
        Ok(o) => o,
        Err(e) => fatal(format_args!("unknown option '{}' on the command line", e.0)),
    };
    let mut mem = IdentityMap {
        limit: LOADER_IDENTITY_LIMIT,
    };
    // UNSAFETY: the multiboot block is raw physical memory handed over by the loader.
    #[expect(unsafe_code)]
    // SAFETY: the loader passed the address of the multiboot block it was given, and every
    // read the crate makes through it is bounded by IdentityMap.
    let mb = unsafe { Multiboot::from_ptr(ctx.multiboot_info, &mut mem) };
    let Some(mb) = mb else {
        fatal(format_args!("multiboot block is not readable"))
    };
    let info = match MachineInfo::from_multiboot(&mb) {
        Ok(i) => i,
        Err(e) => fatal(format_args!("multiboot information: {e}")),
    };

    let id = cpu::identity();
    let virt = vcpu::detect();
    println!(
        "cpu: {} {} (family {:#x} model {:#x} stepping {})",
        id.vendor, id.brand, id.family, id.model, id.stepping
    );
    match &virt {
        Some(v) => println!("virtualization: {v}"),
        None => println!("virtualization: none (no usable VMX or SVM on this CPU)"),
    }
    let facts = vcpu::cpu_facts();
    let (mitigations, why) = match opts.mitigations {
        MitigationMode::Needed => (vcpu::mitigate::Mitigations::choose(&facts, false), ""),
        MitigationMode::Off => (
            vcpu::mitigate::Mitigations::default(),
            " (janus.mitigations=off)",
        ),
        MitigationMode::All => (
            vcpu::mitigate::Mitigations::all(&facts),
            " (janus.mitigations=all)",
        ),
    };
    vcpu::mitigate::set(mitigations);
    crate::vm::console::UNMETERED.store(opts.console_unmetered, Ordering::Relaxed);
    println!("mitigations: {mitigations}{why}");

    let mut used: heapless::Vec<Range<u64>, 40> = heapless::Vec::new();
    let _ = used.push(0..ctx.kernel_image.end);
    let _ = used.push(ctx.multiboot_info..ctx.multiboot_info + 4096);
    for m in &info.modules {
        let _ = used.push(m.range());
    }
    let Some(summary) = mm::phys::init(&info, &used, LOADER_IDENTITY_LIMIT) else {
        fatal(format_args!("no room for the frame allocator's bitmap"))
    };
    let mapped = match mm::paging::init(&info) {
        Ok(m) => m,
        Err(_) => fatal(format_args!("out of memory building the host page tables")),
    };
    if crate::arch::stack::protect().is_err() {
        fatal(format_args!(
            "could not unmap the kernel stacks' guard pages"
        ));
    }
    println!(
        "memory: {} MiB usable in {} regions, top {:#x}, {} MiB free, {} GiB identity mapped",
        summary.usable >> 20,
        info.regions.len(),
        summary.top,
        mm::phys::free_bytes() >> 20,
        mapped >> 30
    );
    for r in &info.regions {
        println!("  {:#012x}-{:#012x} {:?}", r.start, r.end, r.kind);
    }

    match tsc::calibrate() {
        Some((hz, source)) => println!(
            "tsc: {}.{:03} MHz ({:?})",
            hz / 1_000_000,
            (hz / 1000) % 1000,
            source
        ),
        None => fatal(format_args!(
            "cannot calibrate the TSC (no PIT, no CPUID 0x15)"
        )),
    }
    match crate::arch::host_acpi::pm_timer_port() {
        Some(port) => {
            println!("acpi: PM timer at port {port:#x}, read directly by plain-hardware guests")
        }
        None => println!("acpi: no PM timer; plain-hardware guests get an emulated one"),
    }
    let wall = crate::arch::cmos::unix_time();
    if let Some(t) = wall {
        tsc::set_boot_unix(t);
    }
    println!(
        "rtc: {}",
        match wall {
            Some(t) => {
                let (y, m, d) = crate::vm::rtc::civil_from_days((t / 86_400) as i64);
                let s = t % 86_400;
                heapless::format!(40; "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", s / 3600, (s / 60) % 60, s % 60).unwrap_or_default()
            }
            None => heapless::String::try_from("unreadable; guests start at the epoch")
                .unwrap_or_default(),
        }
    );
    pic::remap_and_mask();
    apic::init(id.x2apic, idt::VECTOR_SPURIOUS);
    let per_ms = apic::calibrate_timer();
    apic::start_periodic(idt::VECTOR_TIMER, TIMER_PERIOD_MS);
    let waited = wait_for_ticks(TIMER_PROOF_TICKS);
    println!(
        "apic: {} id {}, timer {} ticks/ms, {} interrupts in {} us",
        if apic::is_x2apic() { "x2APIC" } else { "xAPIC" },
        apic::id(),
        per_ms,
        crate::trap::timer_ticks(),
        waited
    );
    defmt::info!(
        "janus {=str}: host timer running, {=u64} ticks",
        env!("CARGO_PKG_VERSION"),
        crate::trap::timer_ticks()
    );

    println!("modules: {}", info.modules.len());
    for m in &info.modules {
        println!(
            "  {:#010x}-{:#010x} {:>9} B  {}",
            m.start,
            m.end,
            m.len(),
            m.name()
        );
    }
    println!("cmdline: {}", ctx.cmdline);

    run_selftest(opts.selftest);
    let manifest = intake_manifest(&info);
    describe(&manifest, &info);
    defmt::info!("manifest: {=usize} VM(s) accepted", manifest.vms.len());
    crate::storage::host::attach(&manifest);
    match opts.selftest {
        SelfTest::Disk if !crate::storage::selftest::disk() => {
            fatal(format_args!("disk: selftest failed"))
        }
        SelfTest::DiskStress => {
            crate::storage::selftest::stress();
            fatal(format_args!("disk: stress test stopped on an error"))
        }
        SelfTest::DiskBench if !crate::storage::selftest::bench() => {
            fatal(format_args!("disk: benchmark failed"))
        }
        _ => {}
    }

    let Some(vendor) = virt else {
        fatal(format_args!(
            "this CPU offers neither VMX nor SVM with nested paging: no VM can run"
        ))
    };
    VENDOR.call_once(|| vendor);
    smp::set_apic_id(0, apic::id());
    if let Err(e) = machine::enable_cpu(0, &vendor) {
        fatal(format_args!("cannot enable hardware virtualization: {e:?}"))
    }
    let pcpus = match pick_trampoline_page(&info, &ctx) {
        _ if opts.nosmp => {
            println!("smp: janus.nosmp: running on the BSP only");
            1
        }
        Some(page) => smp::start_aps(page, ap_entry),
        None => {
            println!(
                "smp: no free page below 1 MiB for the AP trampoline; running on the BSP only"
            );
            1
        }
    };
    println!("smp: {pcpus} pCPU(s) online");

    let mut tag = 1u16;
    let mut global_vcpu = 0usize;
    let mut started = manifest.vms.len();
    for (i, spec) in manifest.vms.iter().enumerate() {
        // A VM that cannot be built stops alone; the others start.
        if let Err(e) = machine::create(i, spec, &info, &vendor, &mut tag, &mut global_vcpu) {
            started -= 1;
            report::announce(
                spec.name.as_str(),
                crate::vm::outcome::Outcome::BootFailed,
                format_args!("at boot: {e}"),
            );
        }
        machine::VM_COUNT.store(i + 1, Ordering::Release);
    }
    println!("janus: running {started} VM(s)");
    // The origin of guest timings (time to a login prompt) on the hypervisor's clock.
    defmt::info!("vms-start {=u64}", crate::arch::tsc::now_ns());
    // How long the hypervisor took to get its VMs going, on its own clock (`bench boot`).
    defmt::info!("vms-start-after-banner {=u64}", tsc::ns_since_banner());
    report::WATCH.store(opts.watch, Ordering::Relaxed);
    if let Some(secs) = opts.shutdown_after_s {
        crate::vm::shutdown::arm(secs);
    }
    smp::GO.store(true, Ordering::Release);
    run::cpu_loop(0);
    println!("janus: all VMs have stopped");
    let unclean = report::UNCLEAN.load(Ordering::Acquire);
    if unclean > 0 {
        println!("janus: {unclean} VM(s) did not end cleanly");
    }
    println!("janus: done");
    if unclean == 0 {
        verdict::success()
    } else {
        verdict::failure()
    }
}

static VENDOR: spin::Once<vcpu::Vendor> = spin::Once::new();

/// Where application processors arrive, in long mode on their own stacks.
extern "C" fn ap_entry(index: usize) -> ! {
    gdt::init(index);
    idt::init(false);
    apic::init_ap(idt::VECTOR_SPURIOUS);
    smp::set_apic_id(index, apic::id());
    apic::start_periodic(idt::VECTOR_TIMER, TIMER_PERIOD_MS);
    let Some(vendor) = VENDOR.get() else {
        verdict::halt_forever()
    };
    if let Err(e) = machine::enable_cpu(index, vendor) {
        println!("smp: pCPU {index}: cannot enable virtualization: {e:?}");
        verdict::halt_forever()
    }
    smp::ONLINE.fetch_add(1, Ordering::AcqRel);
    while !smp::GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    run::cpu_loop(index);
    verdict::halt_forever()
}

/// A page below 1 MiB that is RAM and holds nothing the boot loader gave us.
fn pick_trampoline_page(info: &MachineInfo<'_>, ctx: &BootContext) -> Option<u64> {
    let mut busy: heapless::Vec<Range<u64>, 80> = heapless::Vec::new();
    let _ = busy.push(ctx.multiboot_info..ctx.multiboot_info + 4096);
    for m in &info.modules {
        let _ = busy.push(m.range());
        let s = m.string.as_ptr() as u64;
        let _ = busy.push(s..s + m.string.len() as u64 + 1);
    }
    let c = ctx.cmdline.as_ptr() as u64;
    let _ = busy.push(c..c + ctx.cmdline.len() as u64 + 1);
    (1..0x9F).map(|p| p * 0x1000).find(|&page| {
        let end = page + 0x1000;
        info.regions
            .iter()
            .any(|r| r.kind == boot::mbinfo::RegionKind::Usable && r.start <= page && end <= r.end)
            && !busy.iter().any(|b| b.start < end && page < b.end)
    })
}

fn wait_for_ticks(n: u64) -> u64 {
    let start = tsc::micros();
    let deadline = start + 2_000_000;
    cpu::enable_interrupts();
    while crate::trap::timer_ticks() < n {
        if tsc::micros() > deadline {
            fatal(format_args!("the host APIC timer never interrupted"));
        }
        cpu::wait_for_interrupt();
    }
    cpu::disable_interrupts();
    tsc::micros() - start
}

fn run_selftest(test: SelfTest) {
    match test {
        // The disk tests need the manifest's disks open; they run after the intake.
        SelfTest::None | SelfTest::Disk | SelfTest::DiskStress | SelfTest::DiskBench => {}
        SelfTest::Nvme => {
            if let Err(e) = crate::drivers::nvme::selftest() {
                fatal(format_args!("nvme: selftest failed: {e}"))
            }
        }
        SelfTest::Panic => panic!("deliberate panic requested by janus.selftest=panic"),
        SelfTest::Fault => {
            // UNSAFETY: a deliberate invalid opcode can only be written in assembly.
            #[expect(unsafe_code)]
            // SAFETY: raises #UD on purpose; the trap handler ends the run.
            unsafe {
                core::arch::asm!("ud2")
            };
        }
        SelfTest::StackOverflow => {
            let guard_end = crate::arch::stack::bottom(0);
            // UNSAFETY: running out of stack can only be arranged in assembly.
            #[expect(unsafe_code)]
            // SAFETY: moves RSP to the bottom of this CPU's stack and pushes once more, as a
            // runaway recursion would; the guard page faults and the run ends there.
            unsafe {
                core::arch::asm!("mov rsp, {0}", "push rax", "ud2", in(reg) guard_end, options(noreturn))
            };
        }
    }
}

fn intake_manifest(info: &MachineInfo<'_>) -> Manifest {
    let Some(module) = info.module(manifest::MODULE_NAME) else {
        fatal(format_args!(
            "no '{}' module: boot Janus through `cargo xtask run`",
            manifest::MODULE_NAME
        ))
    };
    #[expect(unsafe_code)]
    // SAFETY: module memory is reserved in the frame allocator and identity mapped.
    let bytes = unsafe { module.bytes() };
    match Manifest::decode(bytes) {
        Ok(m) => m,
        Err(e) => fatal(format_args!("module '{}': {e}", manifest::MODULE_NAME)),
    }
}

fn describe(manifest: &Manifest, info: &MachineInfo<'_>) {
    for vm in &manifest.vms {
        if !crate::PERSONALITIES.contains(&vm.personality) {
            fatal(format_args!(
                "VM '{}' wants the {} personality, which this image was built without",
                vm.name,
                vm.personality.as_str()
            ));
        }
        // No kernel: the VM boots what its first disk holds (found when it is built).
        if vm.kernel.is_empty() {
            println!(
                "vm {}: personality {}, {} MiB, {} vCPU(s), kernel from its disk",
                vm.name,
                vm.personality.as_str(),
                vm.memory_mib,
                vm.vcpus
            );
        } else {
            let kernel = info.module(&vm.kernel);
            let Some(kernel) = kernel else {
                fatal(format_args!(
                    "VM '{}': kernel module '{}' was not loaded",
                    vm.name, vm.kernel
                ))
            };
            println!(
                "vm {}: personality {}, {} MiB, {} vCPU(s), kernel {} ({} B)",
                vm.name,
                vm.personality.as_str(),
                vm.memory_mib,
                vm.vcpus,
                vm.kernel,
                kernel.len()
            );
        }
        if let Some(initrd) = &vm.initrd {
            match info.module(initrd) {
                Some(m) => println!("  initrd {} ({} B)", initrd, m.len()),
                None => fatal(format_args!(
                    "VM '{}': initrd module '{}' was not loaded",
                    vm.name, initrd
                )),
            }
        }
        if !vm.cmdline.is_empty() {
            println!("  cmdline {}", vm.cmdline);
        }
    }
}

fn fatal(args: core::fmt::Arguments<'_>) -> ! {
    console::emergency(format_args!("janus: FATAL: {args}\n"));
    defmt::error!("fatal error during bring-up");
    verdict::failure()
}

pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cpu::disable_interrupts();
    console::emergency(format_args!("\njanus: PANIC: {info}\n"));
    verdict::failure()
}
