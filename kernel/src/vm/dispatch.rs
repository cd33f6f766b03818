//! Exit dispatch: what the hypervisor does about each exit of a vCPU. The platform answers
//! what is the machine's (local APIC, platform MSRs, devices on the bus), then the VM's
//! personality what is the ABI's, then the architectural default (CPUID filtered from the
//! host, #GP for unknown MSRs, a floating bus for unclaimed ports, #UD for a hypercall with no
//! ABI). Every handler answers with one [`Action`]; [`handle`] carries out its part for the
//! exiting instruction and returns it for the scheduler loop.
//!
//! Generic over the vCPU and the machine, so host tests drive it with a mock of each.

use super::Machine;
use super::cpuid::{self, CpuidCtx};
use super::interrupts::{self, DeviceCx};
use super::personality::{self, view};
use super::platform;
use super::state::{REFLECTED_EXCEPTIONS, VcpuState, Vm};
use super::stats::ExitKind;
use vcpu::Vcpu;
use virt::{Action, Event, Exit, IoExit, StopReason};

/// Handles `exit` of vCPU `index`: emulates it, retires or faults the instruction, and says
/// what the vCPU does next.
pub fn handle<C, V: Vcpu>(
    vm: &Vm<C>,
    index: u8,
    st: &mut VcpuState<V>,
    m: &dyn Machine,
    exit: Exit,
) -> Action {
    st.stats.count(ExitKind::of(&exit));
    // Only these exits stand for an instruction the guest executed and the answer retires;
    // after the others (a triple fault, an event) RIP is where the report must show it.
    let instruction = matches!(
        exit,
        Exit::Cpuid { .. }
            | Exit::Rdmsr { .. }
            | Exit::Wrmsr { .. }
            | Exit::Io(_)
            | Exit::Hypercall
            | Exit::Hlt
    );
    let action = match exit {
        Exit::Cpuid { leaf, subleaf } => cpuid(vm, index, st, m, leaf, subleaf),
        Exit::Rdmsr { msr } => rdmsr(vm, index, st, m, msr),
        Exit::Wrmsr { msr, value } => wrmsr(vm, index, st, m, msr, value),
        Exit::Io(io) => port_io(vm, index, st, m, io),
        Exit::Hypercall => hypercall(vm, index, st, m),
        Exit::NestedPageFault(f) => super::mmio::emulate(vm, index, st, m, f),
        Exit::Hlt => hlt(vm, index, st, m),
        Exit::InterruptWindow => {
            st.vcpu.request_interrupt_window(false);
            Action::Retry
        }
        Exit::ExternalInterrupt => {
            m.take_host_interrupt();
            Action::Retry
        }
        Exit::Nmi | Exit::Init | Exit::Sipi { .. } => Action::Retry,
        // Each delivery now passes through an exit, so a guest looping on it still yields.
        Exit::Exception { vector, error_code }
            if REFLECTED_EXCEPTIONS & (1 << (vector & 31)) != 0 =>
        {
            Action::Fault(Event::Exception { vector, error_code })
        }
        Exit::Exception { vector, .. } => Action::Stop(StopReason::Unsupported {
            vcpu: index,
            what: "unexpected intercepted exception",
            detail: u64::from(vector),
        }),
        Exit::TripleFault => Action::Stop(StopReason::TripleFault { vcpu: index }),
        Exit::Unknown {
            reason,
            qualification,
            info,
        } => Action::Stop(StopReason::UnknownExit {
            vcpu: index,
            reason,
            qualification,
            info,
        }),
    };
    apply(&mut st.vcpu, action, instruction)
}

/// Carries out `action` on the exiting instruction: retired, left for a retry, or replaced by
/// a fault. A handler that found nobody to answer ends in #UD, as the bare instruction would.
fn apply<V: Vcpu>(vcpu: &mut V, action: Action, instruction: bool) -> Action {
    match action {
        Action::Done | Action::Block | Action::Halt | Action::Yield | Action::Stop(_)
            if !instruction =>
        {
            action
        }
        Action::Done | Action::Block | Action::Halt | Action::Yield | Action::Stop(_) => {
            // A guest that rewrote the instruction under us gets #UD.
            if vcpu.advance_rip().is_err() {
                let _ = vcpu.inject(Event::UD);
            }
            action
        }
        Action::Retry => action,
        Action::Fault(e) => {
            let _ = vcpu.inject(e);
            action
        }
        Action::NotMine => {
            let _ = vcpu.inject(Event::UD);
            Action::Fault(Event::UD)
        }
    }
}

/// Where the last XSAVE component enabled in `xcr0` ends in the standard format.
fn xsave_end(m: &dyn Machine, xcr0: u64) -> u32 {
    (2..63u32)
        .filter(|i| xcr0 & (1 << i) != 0)
        .map(|i| {
            let [a, b, _, _] = m.host_cpuid(0xD, i);
            b.saturating_add(a)
        })
        .max()
        .unwrap_or(576)
}

fn cpuid<C, V: Vcpu>(
    vm: &Vm<C>,
    index: u8,
    st: &mut VcpuState<V>,
    m: &dyn Machine,
    leaf: u32,
    subleaf: u32,
) -> Action {
    let v = view(index, &st.vcpu);
    let owned = personality::with(vm, m, |p, _, _| p.cpuid(&v, leaf, subleaf)).flatten();
    let [a, b, c, d] = owned.unwrap_or_else(|| {
        let ctx = CpuidCtx {
            vcpu: u32::from(index),
            vcpus: u32::from(vm.info.get().map_or(1, |i| i.vcpus)),
            guest_osxsave: st.vcpu.control_regs().cr4 & virt::bits::CR4_OSXSAVE != 0,
            guest_ospke: st.vcpu.control_regs().cr4 & virt::bits::CR4_PKE != 0,
            xsave_end: xsave_end(m, st.vcpu.xcr0()),
        };
        cpuid::filter(leaf, subleaf, m.host_cpuid(leaf, subleaf), &ctx)
    });
    st.vcpu.regs_mut().set_cpuid(a, b, c, d);
    Action::Done
}

fn rdmsr<C, V: Vcpu>(
    vm: &Vm<C>,
    index: u8,
    st: &mut VcpuState<V>,
    m: &dyn Machine,
    msr: u32,
) -> Action {
    let value = if platform::is_lapic_msr(msr) {
        st.lapic.rdmsr(msr, m.tsc()).ok()
    } else if let Some(value) = platform::rdmsr(msr, m.tsc(), &st.msrs) {
        Some(value)
    } else if synthetic_apic(vm, msr) {
        st.lapic.synthetic_rdmsr(msr).ok()
    } else {
        let v = view(index, &st.vcpu);
        let mut value = 0;
        match personality::with(vm, m, |p, ram, host| {
            p.rdmsr(&v, msr, &mut value, ram, host)
        }) {
            Some(Action::Done) => Some(value),
            Some(a @ Action::Fault(_)) => return a,
            _ => None,
        }
    };
    match value {
        Some(v) => {
            st.vcpu.regs_mut().set_edx_eax(v);
            Action::Done
        }
        None => Action::Fault(Event::GP0),
    }
}

fn wrmsr<C, V: Vcpu>(
    vm: &Vm<C>,
    index: u8,
    st: &mut VcpuState<V>,
    m: &dyn Machine,
    msr: u32,
    value: u64,
) -> Action {
    if platform::is_lapic_msr(msr) {
        return match st.lapic.wrmsr(msr, value, m.tsc()) {
            Ok(effect) => {
                interrupts::apic_written(vm, m, index, &st.lapic, effect);
                Action::Done
            }
            Err(_) => Action::Fault(Event::GP0),
        };
    }
    if platform::wrmsr(msr, value, &mut st.msrs).is_some() {
        return Action::Done;
    }
    if synthetic_apic(vm, msr) {
        return match st.lapic.synthetic_wrmsr(msr, value, m.tsc()) {
            Ok(effect) => {
                interrupts::apic_written(vm, m, index, &st.lapic, effect);
                Action::Done
            }
            Err(_) => Action::Fault(Event::GP0),
        };
    }
    let v = view(index, &st.vcpu);
    let answer = personality::with(vm, m, |p, ram, host| {
        let a = p.wrmsr(&v, msr, value, ram, host);
        (a, p.eoi_assist(u32::from(index)))
    });
    match answer {
        Some((Action::NotMine, _)) | None => Action::Fault(Event::GP0),
        Some((a, assist)) => {
            st.lazy_eoi
                .set_assist(assist, &mut st.lapic, st.vcpu.memory());
            a
        }
    }
}

/// Hyper-V's synthetic APIC MSRs, on that face the local APIC's; elsewhere the
/// personality's to refuse.
fn synthetic_apic<C>(vm: &Vm<C>, msr: u32) -> bool {
    let range = super::lapic::SYNTHETIC_EOI..=super::lapic::SYNTHETIC_TPR;
    range.contains(&msr)
        && vm
            .info
            .get()
            .is_some_and(|i| i.personality == crate::manifest::Personality::HyperV)
}

fn port_io<C, V: Vcpu>(
    vm: &Vm<C>,
    index: u8,
    st: &mut VcpuState<V>,
    m: &dyn Machine,
    io: IoExit,
) -> Action {
    if io.string {
        // REP INS/OUTS to devices is not emulated; real guests use it for disks only.
        return Action::Stop(StopReason::Unsupported {
            vcpu: index,
            what: "string port I/O",
            detail: u64::from(io.port),
        });
    }
    // Every unclaimed port is an empty bus: writes vanish, reads float high.
    let mut data = io.mask();
    let device = vm.bus.get().and_then(|b| b.port(io.port));
    let action = if let Some(dev) = device {
        let mut cx = DeviceCx::new(vm, m);
        if io.write {
            dev.write(io.port, io.size, io.value, &mut cx)
        } else {
            data = dev.read(io.port, io.size, &mut cx);
            Action::Done
        }
    } else {
        let v = view(index, &st.vcpu);
        let mut value = io.value;
        let answer = personality::with(vm, m, |p, _, host| {
            p.io(&v, io.port, io.size, io.write, &mut value, host)
        });
        match answer {
            None | Some(Action::NotMine) => Action::Done,
            Some(Action::Done) => {
                data = value;
                Action::Done
            }
            Some(other) => return other,
        }
    };
    if !io.write && action == Action::Done {
        let rax = st.vcpu.regs().rax;
        st.vcpu.regs_mut().rax = io.merge_in(rax, data);
    }
    action
}

fn hypercall<C, V: Vcpu>(vm: &Vm<C>, index: u8, st: &mut VcpuState<V>, m: &dyn Machine) -> Action {
    let v = view(index, &st.vcpu);
    let mut regs = *st.vcpu.regs();
    match personality::with(vm, m, |p, ram, host| p.hypercall(&v, &mut regs, ram, host)) {
        Some(a) => {
            *st.vcpu.regs_mut() = regs;
            a
        }
        // No personality: VMCALL/VMMCALL is an invalid opcode, as on bare metal.
        None => Action::NotMine,
    }
}

fn hlt<C, V: Vcpu>(vm: &Vm<C>, index: u8, st: &mut VcpuState<V>, m: &dyn Machine) -> Action {
    // What the personality does on idle may raise an interrupt for this vCPU: first, so the
    // check below sees it.
    let _ = personality::with(vm, m, |p, ram, host| p.idle(u32::from(index), ram, host));
    if let Some(s) = vm.vcpu(index) {
        st.lapic.sync(&s.pending);
    }
    st.lapic.tick(m.tsc());
    // With interrupts masked a halted CPU stays halted: park it rather than let it spin
    // through HLT on an interrupt it cannot take. An interrupt already handed to the vCPU
    // and not yet taken (offered through V_IRQ while `sti; hlt` held it off for one
    // instruction) wakes it as one still in the APIC would: parked, nothing would deliver it.
    let if_set = st.vcpu.regs().rflags & virt::bits::RFLAGS_IF != 0;
    let waiting = st.lapic.deliverable().is_some() || st.vcpu.event_pending();
    if !waiting || !if_set {
        Action::Halt
    } else {
        Action::Done
    }
}
