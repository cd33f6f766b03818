//! The scheduler loop: each pCPU takes vCPUs from its run queue, enters them, and hands their
//! exits to `vm::dispatch` until the vCPU blocks, its slice ends or its VM stops.

use super::policy::{IDLE_NET_NS, RUNNING_NET_NS, VcpuRef, slice_end, slice_over, timer_due};
use crate::arch::{cpu, tsc};
use crate::manifest::{OnEnd, Policies};
use crate::println;
use crate::vm::create::{self, LIVE_VMS, PERCPU, QUEUES, VmSlot};
use crate::vm::host::HostMachine;
use crate::vm::outcome::Outcome;
use crate::vm::{Machine, dispatch, interrupts, personality, report, trace};
use core::sync::atomic::Ordering;
use vcpu::Vcpu;
use virt::{Action, StopReason};

/// What ended a vCPU's turn on the pCPU.
enum Turn {
    /// Back to the ready queue.
    Preempted,
    /// Parked until an event, or until the host time (ns) given.
    Blocked(Option<u64>),
    /// Its VM stopped.
    Gone,
}

/// The scheduler loop of pCPU `cpu`. Returns when no VM is left running.
pub fn cpu_loop(cpu: usize) {
    crate::arch::apic::start_oneshot(crate::arch::idt::VECTOR_TIMER);
    loop {
        if LIVE_VMS.load(Ordering::Acquire) == 0 {
            return;
        }
        if cpu == 0 {
            report::watch_tick(None);
            crate::vm::shutdown::tick();
            crate::vm::console_input::tick();
        }
        let now = tsc::now_ns();
        let next = {
            let mut q = QUEUES[cpu].lock();
            q.wake(now, wants_wake);
            q.pop_next_at(now)
                .map(|(r, waited)| (r, waited, q.has_ready()))
        };
        let Some((r, waited, contended)) = next else {
            // Nothing to run: sleep until the host tick (or a kick) and look again. Idle is
            // announced before the last look, so a vCPU posted to after it is seen by its
            // waker, who kicks (interrupts stay off until the halt).
            crate::arch::smp::set_idle(cpu, true);
            let now = tsc::now_ns();
            let (ready, parked) = {
                let mut q = QUEUES[cpu].lock();
                q.wake(now, wants_wake);
                (q.has_ready(), q.next_deadline())
            };
            if !ready {
                arm_timer(
                    cpu,
                    timer_due([None, None], None, parked, latest(cpu, now, IDLE_NET_NS)),
                    now,
                );
                cpu::wait_for_interrupt();
                cpu::disable_interrupts();
            }
            crate::arch::smp::set_idle(cpu, false);
            continue;
        };
        match run_turn(cpu, r, waited, contended) {
            Turn::Preempted => {
                let _ = QUEUES[cpu].lock().push_ready_at(r, tsc::now_ns());
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
    let Some(vm) = create::vm(r.vm) else {
        return true;
    };
    vm.stopped() || vm.vcpu(r.vcpu).is_none_or(|s| s.wants_wake())
}

/// The VM each pCPU last entered (u8::MAX: none), for the barrier between guests.
static LAST_VM: [core::sync::atomic::AtomicU8; create::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU8::new(u8::MAX) }; create::MAX_CPUS];

/// Runs `r` for a turn. `waited`: how long it was runnable before it (ns); `contended`:
/// another vCPU is ready on this pCPU as the turn begins (the time is charged to the vCPU's
/// [`CpuTime`](super::account::CpuTime) either way).
fn run_turn(cpu: usize, r: VcpuRef, waited: u64, contended: bool) -> Turn {
    let m = &HostMachine;
    // Another guest's branch predictions must not steer this one.
    if let Some(last) = LAST_VM.get(cpu)
        && last.swap(r.vm, Ordering::Relaxed) != r.vm
    {
        vcpu::mitigate::on_vm_switch();
    }
    let Some(vm) = create::vm(r.vm) else {
        return Turn::Gone;
    };
    let (Some(slot), Some(cell)) = (vm.vcpu(r.vcpu), vm.cells.get(usize::from(r.vcpu))) else {
        return Turn::Gone;
    };
    let Some(percpu) = PERCPU[cpu].get() else {
        return Turn::Gone;
    };
    let mut guard = cell.lock();
    let Some(cell) = guard.as_mut() else {
        return Turn::Gone;
    };
    if let Some(initial) = cell.reset.take()
        && let Err(error) = cell.state.vcpu.reset(initial)
    {
        stop(
            vm,
            StopReason::VcpuError {
                vcpu: r.vcpu,
                error,
            },
        );
        return Turn::Gone;
    }
    cell.ext.load();
    let st = &mut cell.state;
    st.cpu.waited(waited);
    let started = tsc::now_ns();
    let mut others_ready = contended;
    let mut parked = QUEUES[cpu].lock().next_deadline();
    let turn = loop {
        if vm.stopped() {
            break Turn::Gone;
        }
        if slot.pending.take_init() {
            st.vcpu.init();
        }
        if let Some(v) = slot.pending.take_sipi()
            && st.vcpu.waiting_for_sipi()
            && let Err(error) = st.vcpu.sipi(v)
        {
            stop(
                vm,
                StopReason::VcpuError {
                    vcpu: r.vcpu,
                    error,
                },
            );
            break Turn::Gone;
        }
        let waiting = st.vcpu.waiting_for_sipi();
        slot.sipi_wait.store(waiting, Ordering::Release);
        if waiting {
            break Turn::Blocked(None);
        }
        slot.started.store(true, Ordering::Release);
        slot.pending.take_kick();
        let due = slot.personality_deadline.load(Ordering::Acquire);
        if due != 0 && tsc::now_ns() >= due {
            slot.personality_deadline.store(0, Ordering::Release);
            personality::with(vm, m, |p, ram, host| {
                p.timer_expired(u32::from(r.vcpu), ram, host)
            });
        }
        interrupts::prepare(st, &slot.pending, tsc::now());

        let epoch = vm.nested_epoch.load(Ordering::Acquire);
        if epoch != cell.nested_epoch {
            st.vcpu.flush_nested_tlb();
            cell.nested_epoch = epoch;
        }
        slot.running_on.store(cpu as u8, Ordering::Release);
        let entered = tsc::now_ns();
        let own = [
            st.lapic.next_deadline().map(tsc::ns_at_tsc),
            match slot.personality_deadline.load(Ordering::Acquire) {
                0 => None,
                d => Some(d),
            },
        ];
        let due = timer_due(
            own,
            slice_end(started, others_ready),
            parked,
            latest(cpu, entered, RUNNING_NET_NS),
        );
        arm_timer(cpu, due, entered);
        let exit = st.vcpu.run(percpu);
        st.run_ns += tsc::now_ns().saturating_sub(entered);
        slot.running_on.store(u8::MAX, Ordering::Release);
        st.trace.record(trace::Record {
            entered_ns: entered,
            cpu: cpu as u8,
            rip: st.vcpu.regs().rip,
            rflags: st.vcpu.regs().rflags,
            raw: st.vcpu.last_transition(),
        });

        // An EOI the guest skipped on the hypervisor's word is owed before anything looks at
        // its APIC.
        st.lazy_eoi.settle(&mut st.lapic, st.vcpu.memory());
        let exit = match exit {
            Ok(e) => e,
            Err(error) => {
                stop(
                    vm,
                    StopReason::VcpuError {
                        vcpu: r.vcpu,
                        error,
                    },
                );
                break Turn::Gone;
            }
        };
        match dispatch::handle(vm, r.vcpu, st, m, exit) {
            action @ (Action::Block | Action::Halt) => {
                // HLT waits for an interrupt only; an ABI block (SCHEDOP_block) also ends
                // when the personality has an event for the vCPU.
                let abi_block = action == Action::Block;
                if slot.pending.any() || (abi_block && personality_has_work(vm, r, m)) {
                    continue;
                }
                let lapic = st.lapic.next_deadline().map(tsc::ns_at_tsc);
                let personality = match slot.personality_deadline.load(Ordering::Acquire) {
                    0 => None,
                    d => Some(d),
                };
                let deadline = match (lapic, personality) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                break Turn::Blocked(deadline);
            }
            Action::Yield => break Turn::Preempted,
            Action::Stop(reason) => {
                stop(vm, reason);
                break Turn::Gone;
            }
            Action::NotMine | Action::Done | Action::Retry | Action::Fault(_) => {}
        }
        if cpu == 0 {
            report::watch_tick(Some((r, &*st)));
            crate::vm::console_input::tick();
        }
        // Parked vCPUs of this pCPU may have been kicked or reached their deadline while this
        // one ran: they must be able to take the pCPU at the end of the slice.
        let now = tsc::now_ns();
        (others_ready, parked) = {
            let mut q = QUEUES[cpu].lock();
            q.wake(now, wants_wake);
            (q.has_ready(), q.next_deadline())
        };
        if slice_over(started, now, others_ready) {
            break Turn::Preempted;
        }
    };
    cell.ext.save();
    cell.state
        .cpu
        .ran(tsc::now_ns().saturating_sub(started), contended);
    if matches!(turn, Turn::Gone) {
        let st = &mut cell.state;
        vm.end.lock().stats.add(&st.stats);
        st.stats = crate::vm::stats::ExitStats::new();
    }
    turn
}

/// The latest pCPU `cpu` may next be interrupted, at host time `now`: pCPU 0 when its
/// housekeeping is due (COM1, the consoles, a host shutdown, `janus.watch`), any pCPU after
/// `net` (see [`RUNNING_NET_NS`]).
fn latest(cpu: usize, now: u64, net: u64) -> u64 {
    let net = now.saturating_add(net);
    if cpu != 0 {
        return net;
    }
    [
        Some(crate::vm::console_input::next_due_ns()),
        crate::vm::shutdown::next_due_ns(),
        report::watch_due_ns(),
    ]
    .into_iter()
    .flatten()
    .fold(net, u64::min)
}

/// The host time (ns) each pCPU's one-shot timer is set for.
static ARMED: [core::sync::atomic::AtomicU64; create::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; create::MAX_CPUS];

/// Sets pCPU `cpu`'s timer for host time `due` unless it is still counting towards it.
fn arm_timer(cpu: usize, due: u64, now: u64) {
    let Some(armed) = ARMED.get(cpu) else { return };
    if armed.load(Ordering::Relaxed) == due && crate::arch::apic::counting() {
        return;
    }
    armed.store(due, Ordering::Relaxed);
    crate::arch::apic::arm(due.saturating_sub(now));
}

/// Whether the personality has an event for a vCPU that asked to block.
fn personality_has_work(vm: &VmSlot, r: VcpuRef, m: &dyn Machine) -> bool {
    personality::with(vm, m, |p, ram, _| {
        p.has_pending_work(u32::from(r.vcpu), ram)
    })
    .unwrap_or(false)
}

/// Ends `vm` with `reason` (the first reason wins) and makes its vCPUs leave.
pub fn stop(vm: &VmSlot, reason: StopReason) {
    if !vm.record_stop(reason) {
        return;
    }
    let m = HostMachine;
    for v in 0..vm.info.get().map_or(0, |i| i.vcpus) {
        if let Some(s) = vm.vcpu(v) {
            s.notify(&m);
        }
    }
}

/// A vCPU of a stopped VM left the scheduler; the last one reports the VM's end.
fn leave(r: VcpuRef) {
    let Some(vm) = create::vm(r.vm) else { return };
    let Some(info) = vm.info.get() else { return };
    let last = {
        let mut end = vm.end.lock();
        if let Some(cell) = vm.cells.get(usize::from(r.vcpu)).and_then(|c| c.try_lock())
            && let Some(c) = cell.as_ref()
        {
            end.stats.add(&c.state.stats);
        }
        end.vcpus_left = end.vcpus_left.saturating_sub(1);
        end.vcpus_left == 0
    };
    report::flush_consoles(vm, info);
    if !last {
        return;
    }
    let reason = vm.end.lock().stop.unwrap_or(StopReason::PowerOff);
    let outcome = Outcome::of(&reason);
    let policy = create::BOOT
        .get(usize::from(r.vm))
        .and_then(|b| b.get())
        .map_or(OnEnd::Stop, |b| policy_for(&b.spec.policies, outcome));
    // The host is shutting down: nothing starts again.
    let policy = if crate::vm::shutdown::in_progress() && policy == OnEnd::Restart {
        OnEnd::Stop
    } else {
        policy
    };
    if policy == OnEnd::Restart {
        println!(
            "vm {}: {}: restarting (on_{} = \"restart\")",
            info.name,
            reason,
            policy_key(outcome)
        );
        defmt::info!(
            "vm-restart {=str} {=str}",
            info.name.as_str(),
            outcome.as_str()
        );
        match create::restart(r.vm) {
            Ok(()) => return,
            Err(e) => {
                report::announce(
                    info.name.as_str(),
                    Outcome::BootFailed,
                    format_args!("at restart: {e}"),
                );
                LIVE_VMS.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
    }
    report::vm_ended(vm, info, policy == OnEnd::Preserve);
    LIVE_VMS.fetch_sub(1, Ordering::AcqRel);
}

/// What the VM's manifest says to do after `outcome`; ends the hypervisor cannot continue
/// from are never restarted.
fn policy_for(p: &Policies, outcome: Outcome) -> OnEnd {
    match outcome {
        Outcome::PoweredOff => p.on_poweroff,
        Outcome::Rebooted => p.on_reboot,
        Outcome::Crashed | Outcome::TripleFault => p.on_crash,
        Outcome::Error | Outcome::BootFailed => OnEnd::Stop,
    }
}

fn policy_key(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::PoweredOff => "poweroff",
        Outcome::Rebooted => "reboot",
        _ => "crash",
    }
}
