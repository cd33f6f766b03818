//! The exit loop: each pCPU takes vCPUs from its run queue, enters them, and services their
//! exits — platform first (x2APIC, UART, power ports), then the personality, then the
//! architectural default — until the vCPU blocks, its slice ends or its VM stops.

use super::cpuid::{self, CpuidCtx};
use super::lapic::{Dest, Effect, Ipi};
use super::machine::{self, LIVE_VMS, QUEUES, StopReason, VMS, VcpuCell, VmSlot};
use super::platform::{self, PortEffect};
use super::stats::{ExitKind, ExitStats};
use super::{face, ioapic, trace, uart};

/// COM1's ISA interrupt line, as the guest ACPI tables route it.
const COM1_IRQ: usize = 4;
use crate::arch::{cpu, tsc};
use crate::println;
use crate::sched::policy::{VcpuRef, slice_over};
use core::sync::atomic::Ordering;
use vcpu::{Event, Exit, NestedFault, Vcpu};

/// What ended a vCPU's turn on the pCPU.
enum Turn {
    /// Back to the ready queue.
    Preempted,
    /// Parked until an event, or until the host time (ns) given.
    Blocked(Option<u64>),
    /// Its VM stopped.
    Gone,
}

/// Set by `janus.watch`: the BSP prints every vCPU's state every [`WATCH_NS`].
pub static WATCH: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
const WATCH_NS: u64 = 5_000_000_000;

/// The scheduler loop of pCPU `cpu`. Returns when no VM is left running.
pub fn cpu_loop(cpu: usize) {
    loop {
        if LIVE_VMS.load(Ordering::Acquire) == 0 {
            return;
        }
        if cpu == 0 && WATCH.load(Ordering::Relaxed) {
            watch_tick(None);
        }
        let now = tsc::now_ns();
        let next = {
            let mut q = QUEUES[cpu].lock();
            q.wake(now, wants_wake);
            q.pop_next()
        };
        let Some(r) = next else {
            // Nothing to run: sleep until the host tick (or a kick) and look again.
            cpu::wait_for_interrupt();
            cpu::disable_interrupts();
            continue;
        };
        match run_turn(cpu, r) {
            Turn::Preempted => {
                let _ = QUEUES[cpu].lock().push_ready(r);
            }
            Turn::Blocked(at) => {
                let _ = QUEUES[cpu].lock().block(r, at);
            }
            Turn::Gone => leave(r),
        }
    }
}

/// A parked vCPU must run again: something was posted to it, or its VM stopped.
fn wants_wake(r: VcpuRef) -> bool {
    let Some(vm) = machine::vm(r.vm) else {
        return true;
    };
    vm.stopped()
        || vm
            .vcpus
            .get(usize::from(r.vcpu))
            .is_none_or(|s| s.pending.any())
}

fn run_turn(cpu: usize, r: VcpuRef) -> Turn {
    let Some(vm) = machine::vm(r.vm) else {
        return Turn::Gone;
    };
    let Some(info) = vm.info.get() else {
        return Turn::Gone;
    };
    let Some(slot) = vm.vcpus.get(usize::from(r.vcpu)) else {
        return Turn::Gone;
    };
    let Some(percpu) = machine::PERCPU[cpu].get() else {
        return Turn::Gone;
    };
    let mut guard = slot.cell.lock();
    let Some(cell) = guard.as_mut() else {
        return Turn::Gone;
    };
    cell.ext.load();
    let started = tsc::now_ns();
    let turn = loop {
        if vm.stopped() {
            break Turn::Gone;
        }
        if slot.pending.take_init() {
            cell.vcpu.init();
        }
        if let Some(v) = slot.pending.take_sipi()
            && cell.vcpu.waiting_for_sipi()
            && let Err(e) = cell.vcpu.sipi(v)
        {
            stop(
                vm,
                StopReason::VcpuError {
                    vcpu: r.vcpu,
                    error: e,
                },
            );
            break Turn::Gone;
        }
        if cell.vcpu.waiting_for_sipi() {
            break Turn::Blocked(None);
        }
        slot.started.store(true, Ordering::Release);
        slot.pending.take_kick();
        let due = slot.face_deadline.load(Ordering::Acquire);
        if due != 0 && tsc::now_ns() >= due {
            slot.face_deadline.store(0, Ordering::Release);
            face::with_face(vm, r.vm, info, |p, ram, host| {
                p.timer_expired(u32::from(r.vcpu), ram, host)
            });
        }
        prepare_interrupts(cell, &slot.pending);

        slot.running_on.store(cpu as u8, Ordering::Release);
        let entered = tsc::now_ns();
        let exit = cell.vcpu.run(percpu);
        cell.run_ns += tsc::now_ns().saturating_sub(entered);
        slot.running_on.store(u8::MAX, Ordering::Release);
        cell.trace.record(trace::Record {
            entered_ns: entered,
            cpu: cpu as u8,
            rip: cell.vcpu.regs().rip,
            rflags: cell.vcpu.regs().rflags,
            raw: cell.vcpu.last_transition(),
        });

        let exit = match exit {
            Ok(e) => e,
            Err(e) => {
                stop(
                    vm,
                    StopReason::VcpuError {
                        vcpu: r.vcpu,
                        error: e,
                    },
                );
                break Turn::Gone;
            }
        };
        cell.stats.count(kind_of(&exit));
        match handle(vm, info, r, cell, exit) {
            Step::Continue => {}
            step @ (Step::Block | Step::Halt) => {
                // HLT waits for an interrupt only; an ABI block (SCHEDOP_block) also ends
                // when the personality has an event for the vCPU.
                let abi_block = matches!(step, Step::Block);
                if slot.pending.any() || (abi_block && face_has_work(vm, r, info)) {
                    continue;
                }
                let lapic = cell.lapic.next_deadline().map(tsc::ns_at_tsc);
                let face = match slot.face_deadline.load(Ordering::Acquire) {
                    0 => None,
                    d => Some(d),
                };
                let deadline = match (lapic, face) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                break Turn::Blocked(deadline);
            }
            Step::Yield => break Turn::Preempted,
            Step::Stop(reason) => {
                stop(vm, reason);
                break Turn::Gone;
            }
        }
        if cpu == 0 && WATCH.load(Ordering::Relaxed) {
            watch_tick(Some((r, cell)));
        }
        // Parked vCPUs of this pCPU may have been kicked or reached their deadline while this
        // one ran: they must be able to take the pCPU at the end of the slice.
        let now = tsc::now_ns();
        let others_ready = {
            let mut q = QUEUES[cpu].lock();
            q.wake(now, wants_wake);
            q.has_ready()
        };
        if slice_over(started, now, others_ready) {
            break Turn::Preempted;
        }
    };
    cell.ext.save();
    if matches!(turn, Turn::Gone) {
        let mut shared = vm.shared.lock();
        shared.stats.add(&cell.stats);
        cell.stats = ExitStats::new();
    }
    turn
}

/// Folds posted interrupts and expired timers into the APIC and injects what is deliverable,
/// or asks for the window in which it can be.
fn prepare_interrupts(cell: &mut VcpuCell, pending: &super::lapic::Pending) {
    cell.lapic.sync(pending);
    cell.lapic.tick(tsc::now());
    if cell.vcpu.event_pending() {
        return;
    }
    // NMI IPIs are not delivered: without NMI-window exits the guest's NMI blocking (until
    // its IRET) cannot be honoured, and an NMI inside its NMI handler corrupts the guest.
    // They are counted and reported when the VM ends.
    if pending.take_nmi() {
        cell.nmis_dropped = cell.nmis_dropped.saturating_add(1);
    }
    match cell.lapic.deliverable() {
        Some(v) if cell.vcpu.interrupt_window_open() => {
            if cell.vcpu.inject(Event::ExternalInterrupt(v)).is_ok() {
                cell.lapic.delivered(v);
                cell.vcpu.request_interrupt_window(false);
            }
        }
        Some(_) => cell.vcpu.request_interrupt_window(true),
        None => cell.vcpu.request_interrupt_window(false),
    }
}

enum Step {
    Continue,
    /// HLT: park until an interrupt is pending.
    Halt,
    /// The personality blocked the vCPU until an event or interrupt.
    Block,
    Yield,
    Stop(StopReason),
}

fn kind_of(exit: &Exit) -> ExitKind {
    match exit {
        Exit::Cpuid { .. } => ExitKind::Cpuid,
        Exit::Rdmsr { .. } => ExitKind::Rdmsr,
        Exit::Wrmsr { .. } => ExitKind::Wrmsr,
        Exit::Io(_) => ExitKind::Io,
        Exit::Hypercall => ExitKind::Hypercall,
        Exit::NestedPageFault(_) => ExitKind::NestedPageFault,
        Exit::Hlt => ExitKind::Hlt,
        Exit::InterruptWindow => ExitKind::InterruptWindow,
        Exit::ExternalInterrupt => ExitKind::ExternalInterrupt,
        Exit::Nmi => ExitKind::Nmi,
        Exit::Exception { .. } => ExitKind::Exception,
        Exit::Init => ExitKind::Init,
        Exit::Sipi { .. } => ExitKind::Sipi,
        Exit::TripleFault => ExitKind::TripleFault,
        Exit::Unknown { .. } => ExitKind::Unknown,
    }
}

/// Where the last XSAVE component enabled in `xcr0` ends in the standard format.
fn xsave_end(xcr0: u64) -> u32 {
    (2..63u32)
        .filter(|i| xcr0 & (1 << i) != 0)
        .map(|i| {
            let r = x86::cpuid::cpuid!(0xD, i);
            r.ebx.saturating_add(r.eax)
        })
        .max()
        .unwrap_or(576)
}

/// Retires the exiting instruction; a guest that rewrote it under us gets #UD.
fn retire(cell: &mut VcpuCell) {
    if cell.vcpu.advance_rip().is_err() {
        let _ = cell.vcpu.inject(Event::UD);
    }
}

/// Applies a personality's answer to the exiting instruction.
fn after_face(cell: &mut VcpuCell, outcome: face::Outcome) -> Step {
    match outcome {
        // A hypercall nobody implements is an invalid opcode, as on bare metal.
        face::Outcome::NotMine => {
            let _ = cell.vcpu.inject(Event::UD);
            Step::Continue
        }
        face::Outcome::Done => {
            retire(cell);
            Step::Continue
        }
        face::Outcome::Retry => Step::Continue,
        face::Outcome::Fault(e) => {
            let _ = cell.vcpu.inject(e);
            Step::Continue
        }
        face::Outcome::Block => {
            retire(cell);
            Step::Block
        }
        face::Outcome::Yield => {
            retire(cell);
            Step::Yield
        }
        face::Outcome::Stop(reason) => {
            retire(cell);
            Step::Stop(reason)
        }
    }
}

fn handle(
    vm: &VmSlot,
    info: &machine::VmInfo,
    r: VcpuRef,
    cell: &mut VcpuCell,
    exit: Exit,
) -> Step {
    match exit {
        Exit::Cpuid { leaf, subleaf } => {
            let v = face::view(r.vcpu, &cell.vcpu);
            let owned =
                face::with_face(vm, r.vm, info, |p, _, _| p.cpuid(&v, leaf, subleaf)).flatten();
            if let Some([a, b, c, d]) = owned {
                cell.vcpu.regs_mut().set_cpuid(a, b, c, d);
                retire(cell);
                return Step::Continue;
            }
            let host = x86::cpuid::cpuid!(leaf, subleaf);
            let ctx = CpuidCtx {
                vcpu: u32::from(r.vcpu),
                vcpus: u32::from(info.vcpus),
                guest_osxsave: cell.vcpu.control_regs().cr4 & (1 << 18) != 0,
                xsave_end: xsave_end(cell.vcpu.xcr0()),
            };
            let [a, b, c, d] = cpuid::filter(
                leaf,
                subleaf,
                [host.eax, host.ebx, host.ecx, host.edx],
                &ctx,
            );
            cell.vcpu.regs_mut().set_cpuid(a, b, c, d);
            retire(cell);
        }
        Exit::Rdmsr { msr } => {
            let v = face::view(r.vcpu, &cell.vcpu);
            let value = if platform::is_lapic_msr(msr) {
                cell.lapic.rdmsr(msr, tsc::now()).ok()
            } else if msr == 0x10 {
                Some(tsc::now())
            } else {
                match face::with_face(vm, r.vm, info, |p, ram, host| p.rdmsr(&v, msr, ram, host)) {
                    Some(Ok(Some(value))) => Some(value),
                    Some(Err(event)) => {
                        let _ = cell.vcpu.inject(event);
                        return Step::Continue;
                    }
                    _ => platform::rdmsr(msr),
                }
            };
            match value {
                Some(v) => {
                    cell.vcpu.regs_mut().set_edx_eax(v);
                    retire(cell);
                }
                None => {
                    let _ = cell.vcpu.inject(Event::GP0);
                }
            }
        }
        Exit::Wrmsr { msr, value } => {
            let ok = if platform::is_lapic_msr(msr) {
                match cell.lapic.wrmsr(msr, value, tsc::now()) {
                    Ok(Effect::None) => true,
                    Ok(Effect::SendIpi(ipi)) => {
                        send_ipi(vm, info, r, ipi);
                        true
                    }
                    Err(_) => false,
                }
            } else {
                let v = face::view(r.vcpu, &cell.vcpu);
                let answer = face::with_face(vm, r.vm, info, |p, ram, host| {
                    p.wrmsr(&v, msr, value, ram, host)
                        .map(|mine| (mine, p.take_shutdown()))
                });
                match answer {
                    Some(Ok((true, shutdown))) => {
                        retire(cell);
                        if let Some(reason) = shutdown
                            && let face::Outcome::Stop(stop) =
                                face::map_action(vcpu::personality::Action::Shutdown(reason))
                        {
                            return Step::Stop(stop);
                        }
                        return Step::Continue;
                    }
                    Some(Err(event)) => {
                        let _ = cell.vcpu.inject(event);
                        return Step::Continue;
                    }
                    _ => platform::wrmsr(msr, value).is_some(),
                }
            };
            if ok {
                retire(cell);
            } else {
                let _ = cell.vcpu.inject(Event::GP0);
            }
        }
        Exit::Io(io) => {
            if io.string {
                // REP INS/OUTS to devices is not emulated; real guests use it for disks only.
                return Step::Stop(StopReason::Unsupported {
                    vcpu: r.vcpu,
                    what: "string port I/O",
                    detail: u64::from(io.port),
                });
            }
            let mut data = io.mask();
            if uart::PORTS.contains(&io.port) {
                let offset = io.port - uart::COM1_BASE;
                let mut shared = vm.shared.lock();
                let mut finished: Option<uart::Line> = None;
                if io.write {
                    shared.uart.write(offset, io.value as u8, &mut |line| {
                        let mut l = uart::Line::new();
                        let _ = l.extend_from_slice(line);
                        finished = Some(l);
                    });
                } else {
                    data = u32::from(shared.uart.read(offset));
                }
                drop(shared);
                if let Some(line) = finished {
                    uart::print_line(info.name.as_str(), &line);
                }
                uart_irq(vm, info, r.vm);
            } else if let Some(claimed) = pit_access(vm, io.port, io.write, io.value) {
                data = claimed;
            } else if let Some(claimed) = rtc_access(vm, io.port, io.write, io.value) {
                data = claimed;
            } else if let Some(effect) = platform::power_port(io.port, io.write, io.value) {
                match effect {
                    PortEffect::PowerOff => {
                        retire(cell);
                        return Step::Stop(StopReason::PowerOff);
                    }
                    PortEffect::Reset => return Step::Stop(StopReason::Reset),
                    PortEffect::None => data = 0,
                }
            } else {
                let v = face::view(r.vcpu, &cell.vcpu);
                let mut value = io.value;
                let answer = face::with_face(vm, r.vm, info, |p, _, host| {
                    p.io(&v, io.port, io.size, io.write, &mut value, host)
                });
                if let Some(a) = answer {
                    match face::map_action(a) {
                        face::Outcome::NotMine => {}
                        face::Outcome::Done => data = value,
                        other => return after_face(cell, other),
                    }
                }
            }
            // Every other port is an empty bus: writes vanish, reads float high.
            if !io.write {
                let rax = cell.vcpu.regs().rax;
                cell.vcpu.regs_mut().rax = io.merge_in(rax, data);
            }
            retire(cell);
        }
        Exit::Hypercall => {
            let v = face::view(r.vcpu, &cell.vcpu);
            let mut regs = *cell.vcpu.regs();
            match face::hypercall(vm, r.vm, info, &v, &mut regs) {
                Some(a) => {
                    *cell.vcpu.regs_mut() = regs;
                    return after_face(cell, face::map_action(a));
                }
                // No personality: VMCALL/VMMCALL is an invalid opcode, as on bare metal.
                None => {
                    let _ = cell.vcpu.inject(Event::UD);
                }
            }
        }
        Exit::NestedPageFault(f) => return mmio(vm, info, r, cell, f),
        Exit::Hlt => {
            retire(cell);
            if let Some(s) = machine::slot(r) {
                cell.lapic.sync(&s.pending);
            }
            cell.lapic.tick(tsc::now());
            // With interrupts masked a halted CPU stays halted: park it rather than let it
            // spin through HLT on an interrupt it cannot take.
            let if_set = cell.vcpu.regs().rflags & (1 << 9) != 0;
            if cell.lapic.deliverable().is_none() || !if_set {
                return Step::Halt;
            }
        }
        Exit::InterruptWindow => cell.vcpu.request_interrupt_window(false),
        Exit::ExternalInterrupt => {
            // The host interrupt is pending: `sti; hlt` takes it (the handler returns past
            // the hlt). A shorter window is not enough for emulators that only look for
            // interrupts between translated blocks; the cost is at most one host tick if the
            // interrupt was withdrawn meanwhile.
            cpu::wait_for_interrupt();
            cpu::disable_interrupts();
        }
        Exit::Nmi => {}
        Exit::Exception { vector, error_code }
            if machine::REFLECTED_EXCEPTIONS & (1 << (vector & 31)) != 0 =>
        {
            // Each delivery now passes through an exit, so a guest looping on it still yields.
            let _ = cell.vcpu.inject(Event::Exception { vector, error_code });
        }
        Exit::Exception { vector, .. } => {
            return Step::Stop(StopReason::Unsupported {
                vcpu: r.vcpu,
                what: "unexpected intercepted exception",
                detail: u64::from(vector),
            });
        }
        Exit::Init | Exit::Sipi { .. } => {}
        Exit::TripleFault => return Step::Stop(StopReason::TripleFault { vcpu: r.vcpu }),
        Exit::Unknown {
            reason,
            qualification,
            info: i,
        } => {
            return Step::Stop(StopReason::UnknownExit {
                vcpu: r.vcpu,
                reason,
                qualification,
                info: i,
            });
        }
    }
    Step::Continue
}

/// A guest-physical access the nested tables refused: device memory (the IOAPIC of VMs that
/// have one) is emulated; anything else outside RAM behaves as on a real board with nothing at
/// that address — reads return all ones, writes are dropped. Both come from the decoded
/// instruction, so no mapping is created per address the guest probes.
fn mmio(
    vm: &VmSlot,
    info: &machine::VmInfo,
    r: VcpuRef,
    cell: &mut VcpuCell,
    f: NestedFault,
) -> Step {
    if f.gpa < info.ram.size {
        // Inside RAM every page is mapped RWX; a fault here is a nested-table bug.
        return Step::Stop(StopReason::Unsupported {
            vcpu: r.vcpu,
            what: "nested fault inside guest RAM",
            detail: f.gpa,
        });
    }
    // Only a data access by the instruction at RIP can be emulated from its decoding: a
    // fault in the guest's own page walk, an instruction fetch, or the delivery of an event
    // would make us emulate the wrong thing.
    if f.during_walk || f.exec || cell.vcpu.event_pending() {
        let what = if f.exec {
            "instruction fetch from unbacked memory"
        } else if f.during_walk {
            "guest page tables in unbacked memory"
        } else {
            "event delivery through unbacked memory"
        };
        return Step::Stop(StopReason::Unsupported {
            vcpu: r.vcpu,
            what,
            detail: f.gpa,
        });
    }
    let ctl = cell.vcpu.control_regs();
    let cs = cell.vcpu.segment(vcpu::SegReg::Cs);
    let rip = cell.vcpu.regs().rip;
    let cpl = cell.vcpu.cpl();
    let (bytes, n, long) = vcpu::insn_len::fetch(cell.vcpu.memory(), &ctl, &cs, rip, cpl);
    let mode = if long {
        vcpu::mmio::CodeSize::Bits64
    } else if cs.default_big() {
        vcpu::mmio::CodeSize::Bits32
    } else {
        vcpu::mmio::CodeSize::Bits16
    };
    let Some(insn) = vcpu::mmio::decode(&bytes[..n], mode) else {
        return Step::Stop(StopReason::Unsupported {
            vcpu: r.vcpu,
            what: "unemulated instruction touching device or unbacked memory",
            detail: f.gpa,
        });
    };
    let ioapic_offset = f.gpa.wrapping_sub(ioapic::BASE);
    let is_ioapic = ioapic_offset < 0x1000 && vm.shared.lock().ioapic.is_some();
    let regs = cell.vcpu.regs_mut();
    match insn.access {
        vcpu::mmio::Access::Load {
            reg,
            high_byte,
            dest_size,
        } => {
            let ones = if insn.size >= 8 {
                u64::MAX
            } else {
                (1u64 << (8 * u32::from(insn.size))) - 1
            };
            let value = if is_ioapic {
                vm.shared
                    .lock()
                    .ioapic
                    .as_ref()
                    .map_or(ones, |io| u64::from(io.read(ioapic_offset)))
            } else {
                ones
            };
            let old = regs.gpr(reg).unwrap_or(0);
            regs.set_gpr(
                reg,
                vcpu::mmio::merge_load(old, value, dest_size, high_byte),
            );
        }
        vcpu::mmio::Access::StoreReg { reg, high_byte } => {
            let value = vcpu::mmio::store_value(regs.gpr(reg).unwrap_or(0), insn.size, high_byte);
            if is_ioapic {
                ioapic_write(vm, info, r.vm, ioapic_offset, value as u32);
            }
        }
        vcpu::mmio::Access::StoreImm(value) => {
            if is_ioapic {
                ioapic_write(vm, info, r.vm, ioapic_offset, value as u32);
            }
        }
    }
    let regs = cell.vcpu.regs_mut();
    regs.rip = regs.rip.wrapping_add(u64::from(insn.len));
    Step::Continue
}

fn ioapic_write(vm: &VmSlot, info: &machine::VmInfo, vm_index: u8, offset: u64, value: u32) {
    let delivery = vm
        .shared
        .lock()
        .ioapic
        .as_mut()
        .and_then(|io| io.write(offset, value));
    if let Some(d) = delivery {
        deliver_irq(vm, info, vm_index, d);
    }
}

/// Hands an IOAPIC interrupt to the vCPUs its destination names.
pub fn deliver_irq(vm: &VmSlot, info: &machine::VmInfo, vm_index: u8, d: ioapic::Delivery) {
    for v in 0..info.vcpus {
        let hit = if d.logical {
            // x2APIC logical cluster 0: one bit per APIC id 0-15.
            (d.dest >> 16) == 0 && d.dest & (1 << (v & 0xF)) != 0
        } else {
            d.dest == u32::from(v) || d.dest == 0xFF
        };
        if !hit {
            continue;
        }
        if let Some(s) = vm.vcpus.get(usize::from(v)) {
            s.pending.post(d.vector);
            kick(VcpuRef {
                vm: vm_index,
                vcpu: v,
            });
        }
        // Fixed/lowest-priority to a set: one recipient is enough for an edge.
        return;
    }
}

/// The legacy PIT (ports 0x40-0x43, 0x61), on the host TSC. `None`: not a PIT port.
fn pit_access(vm: &VmSlot, port: u16, write: bool, value: u32) -> Option<u32> {
    let hz = tsc::hz().max(1);
    let ticks = (u128::from(tsc::now()) * u128::from(super::pit::TICK_HZ) / u128::from(hz)) as u64;
    let mut shared = vm.shared.lock();
    if write {
        shared.pit.write(port, value as u8, ticks).then_some(0)
    } else {
        shared.pit.read(port, ticks).map(u32::from)
    }
}

/// The CMOS clock (ports 0x70/0x71). `None`: not an RTC port.
fn rtc_access(vm: &VmSlot, port: u16, write: bool, value: u32) -> Option<u32> {
    let mut shared = vm.shared.lock();
    if write {
        shared.rtc.write(port, value as u8).then_some(0)
    } else {
        shared.rtc.read(port, tsc::unix_secs()).map(u32::from)
    }
}

/// After a UART access: its interrupt line drives IOAPIC pin 4 (COM1's ISA IRQ).
fn uart_irq(vm: &VmSlot, info: &machine::VmInfo, vm_index: u8) {
    let delivery = {
        let mut shared = vm.shared.lock();
        let level = shared.uart.irq_pending();
        shared
            .ioapic
            .as_mut()
            .and_then(|io| io.set_line(COM1_IRQ, level))
    };
    if let Some(d) = delivery {
        deliver_irq(vm, info, vm_index, d);
    }
}

fn send_ipi(vm: &VmSlot, info: &machine::VmInfo, from: VcpuRef, ipi: Ipi) {
    let (dest, what) = match ipi {
        Ipi::Fixed { dest, vector } => (dest, Some(vector)),
        Ipi::Init { dest } => (dest, None),
        Ipi::Sipi { dest, .. } => (dest, None),
        Ipi::Nmi { dest } => (dest, None),
    };
    for v in 0..info.vcpus {
        let hit = match dest {
            // 0xFFFFFFFF is the x2APIC physical broadcast.
            Dest::Physical(id) => id == u32::from(v) || id == u32::MAX,
            Dest::Logical(mask) => {
                (mask >> 16) == u32::from(v >> 4) && mask & (1 << (v & 0xF)) != 0
            }
            Dest::SelfOnly => v == from.vcpu,
            Dest::AllIncludingSelf => true,
            Dest::AllExcludingSelf => v != from.vcpu,
        };
        if !hit {
            continue;
        }
        let Some(target) = vm.vcpus.get(usize::from(v)) else {
            continue;
        };
        match (ipi, what) {
            (Ipi::Fixed { .. }, Some(vector)) => target.pending.post(vector),
            (Ipi::Init { .. }, _) => target.pending.post_init(),
            (Ipi::Sipi { vector, .. }, _) => target.pending.post_sipi(vector),
            (Ipi::Nmi { .. }, _) => target.pending.post_nmi(),
            _ => {}
        }
        kick(VcpuRef {
            vm: from.vm,
            vcpu: v,
        });
    }
}

/// Makes a vCPU notice what was posted to it: a vCPU in guest mode on another pCPU is forced
/// out by a host IPI; a parked one is found by its pCPU's next look at the queue.
pub fn kick(r: VcpuRef) {
    if let Some(cpu) = machine::running_on(r) {
        crate::arch::smp::kick_cpu(cpu);
    } else if let Some(home) = machine::slot(r).map(|s| usize::from(s.home.load(Ordering::Acquire)))
    {
        crate::arch::smp::kick_cpu(home);
    }
}

/// Ends `vm` with `reason` (the first reason wins) and makes its vCPUs leave.
pub fn stop(vm: &VmSlot, reason: StopReason) {
    let first = {
        let mut shared = vm.shared.lock();
        let first = shared.stop.is_none();
        if first {
            shared.stop = Some(reason);
        }
        first
    };
    if !first {
        return;
    }
    vm.live.store(false, Ordering::Release);
    let index = VMS.iter().position(|s| core::ptr::eq(s, vm)).unwrap_or(0) as u8;
    if let Some(info) = vm.info.get() {
        for v in 0..info.vcpus {
            kick(VcpuRef { vm: index, vcpu: v });
        }
    }
}

/// A vCPU of a stopped VM left the scheduler; the last one reports the VM's end.
fn leave(r: VcpuRef) {
    let Some(vm) = machine::vm(r.vm) else { return };
    let Some(info) = vm.info.get() else { return };
    let (last, reason, stats) = {
        let mut shared = vm.shared.lock();
        if let Some(cell) = vm
            .vcpus
            .get(usize::from(r.vcpu))
            .and_then(|s| s.cell.try_lock())
            && let Some(c) = cell.as_ref()
        {
            shared.stats.add(&c.stats);
        }
        shared.vcpus_left = shared.vcpus_left.saturating_sub(1);
        let name = info.name.as_str();
        let mut outbox = uart::Outbox::new();
        let super::machine::VmShared { uart, console, .. } = &mut *shared;
        uart.flush(&mut |line| outbox.keep(name, line));
        console.flush(&mut |line| outbox.keep(name, line));
        let result = (shared.vcpus_left == 0, shared.stop, shared.stats);
        drop(shared);
        outbox.print(name);
        result
    };
    if !last {
        return;
    }
    let reason = reason.unwrap_or(StopReason::PowerOff);
    println!("vm {}: stopped: {}", info.name, reason);
    report_nested(vm, info);
    let host = crate::mm::paging::damaged();
    if let Some((va, got)) = host.first {
        println!(
            "janus: host page tables CHANGED: {} 2 MiB pages wrong, first {:#x} -> {:?}",
            host.count, va, got
        );
    }
    println!("vm {}: {} exits:", info.name, stats.total());
    for (kind, n) in stats.nonzero() {
        println!("  {:<14} {}", kind.name(), n);
    }
    for v in 0..info.vcpus {
        if let Some(cell) = vm.vcpus.get(usize::from(v)).and_then(|s| s.cell.try_lock())
            && let Some(c) = cell.as_ref()
        {
            let regs = c.vcpu.regs();
            let ctl = c.vcpu.control_regs();
            println!(
                "  vcpu {}: ran {} us; rip {:#x} rsp {:#x} cr0 {:#x} cr3 {:#x} efer {:#x}",
                v,
                c.run_ns / 1000,
                regs.rip,
                regs.rsp,
                ctl.cr0,
                ctl.cr3,
                ctl.efer
            );
            if matches!(reason, StopReason::TripleFault { .. }) {
                // What a triple fault usually comes down to: the stack, the TSS, the IDT path.
                let seg = |s: vcpu::SegReg| c.vcpu.segment(s);
                let (cs, ss, tr) = (
                    seg(vcpu::SegReg::Cs),
                    seg(vcpu::SegReg::Ss),
                    seg(vcpu::SegReg::Tr),
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
                    c.vcpu.cpl()
                );
                report_walk(v, &vcpu::GuestRam::new(info.ram), &ctl, ctl.cr2);
                let now = tsc::now_ns();
                for line in c.trace.lines(now) {
                    println!("  vcpu {v}: trace {line}");
                }
            }
            if c.lapic.unmatched_eois > 0 {
                println!(
                    "  vcpu {}: {} EOIs with no interrupt in service",
                    v, c.lapic.unmatched_eois
                );
            }
            if c.nmis_dropped > 0 {
                println!(
                    "  vcpu {}: {} NMI IPIs not delivered (NMIs are not modelled)",
                    v, c.nmis_dropped
                );
            }
        }
    }
    defmt::info!("vm stopped after {=u64} exits", stats.total());
    LIVE_VMS.fetch_sub(1, Ordering::AcqRel);
}

/// Checks, when a VM ends, that its nested tables still map every guest page to its own
/// frame and nothing else: the tables never change after the VM is built, so a difference
/// means something wrote over them.
fn report_nested(vm: &VmSlot, info: &machine::VmInfo) {
    let shared = vm.shared.lock();
    let Some(npt) = shared.npt.as_ref() else {
        return;
    };
    let mut frames = crate::mm::phys::Frames;
    let tables = vcpu::HostTables(&mut frames);
    let ram = info.ram;
    // RAM, plus 2 MiB beyond it that must stay unmapped.
    let m = crate::mm::mapcheck::compare(
        0..ram.size + (2 << 20),
        4096,
        |gpa| (gpa < ram.size).then(|| ram.hpa_base + gpa),
        |gpa| npt.translate(&tables, gpa).map(|(hpa, _)| hpa),
    );
    match m.first {
        None => println!(
            "vm {}: nested tables intact ({} MiB mapped 1:1 onto its RAM)",
            info.name,
            ram.size >> 20
        ),
        Some((gpa, got)) => println!(
            "vm {}: nested tables CHANGED: {} pages wrong, first gpa {:#x} -> {:?}",
            info.name, m.count, gpa, got
        ),
    }
}

/// How the vCPU's own page tables map `la` (usually CR2 after a triple fault): each level's
/// entry as read from guest RAM, so a zeroed or overwritten table shows up in the report.
fn report_walk(v: u8, mem: &vcpu::GuestRam, ctl: &vcpu::ControlRegs, la: u64) {
    use vcpu::GuestMemory;
    if vcpu::walk::mode(ctl) != vcpu::walk::Mode::Level4 {
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

/// Whether the personality has an event for a vCPU that asked to block.
fn face_has_work(vm: &VmSlot, r: VcpuRef, info: &machine::VmInfo) -> bool {
    face::with_face(vm, r.vm, info, |p, ram, _| {
        p.has_pending_work(u32::from(r.vcpu), ram)
    })
    .unwrap_or(false)
}

static LAST_WATCH: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Prints the watch lines when they are due; `current` is the vCPU this pCPU holds.
fn watch_tick(current: Option<(VcpuRef, &VcpuCell)>) {
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

fn print_vcpu(r: VcpuRef, c: &VcpuCell) {
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
    for (i, vm) in VMS
        .iter()
        .enumerate()
        .take(machine::VM_COUNT.load(Ordering::Acquire))
    {
        let Some(info) = vm.info.get() else { continue };
        for v in 0..info.vcpus {
            let Some(slot) = vm.vcpus.get(usize::from(v)) else {
                continue;
            };
            let Some(guard) = slot.cell.try_lock() else {
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
                    c,
                );
            }
        }
    }
}
