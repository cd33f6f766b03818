//! Hypercall decoding and dispatch: register conventions, privilege check, result encoding,
//! continuations, and the `-ENOSYS` bookkeeping.

use crate::errno::Errno;
use crate::guest::GuestVa;
use crate::{Xen, console, evtchn, gnttab, hvm, memory_op, sched, timer, vcpu_op, version};
use virt::personality::{Action, Host, VcpuView};
use virt::{GuestMemory, GuestRegs};

/// Hypercall numbers (`__HYPERVISOR_*`).
pub mod nr {
    pub const MEMORY_OP: u32 = 12;
    pub const SET_TIMER_OP: u32 = 15;
    pub const XEN_VERSION: u32 = 17;
    pub const CONSOLE_IO: u32 = 18;
    pub const GRANT_TABLE_OP: u32 = 20;
    pub const VM_ASSIST: u32 = 21;
    pub const IRET: u32 = 23;
    pub const VCPU_OP: u32 = 24;
    pub const SCHED_OP: u32 = 29;
    pub const EVENT_CHANNEL_OP: u32 = 32;
    pub const PHYSDEV_OP: u32 = 33;
    pub const HVM_OP: u32 = 34;
}

/// Everything a handler may touch for one call.
pub(crate) struct Cx<'a> {
    /// The calling vCPU (already checked against the VM's vCPU count).
    pub vcpu: u32,
    /// A 32-bit caller: structures holding `xen_ulong_t` or guest handles use the compat
    /// (4-byte) layout.
    pub compat: bool,
    pub va: GuestVa<'a>,
    pub mem: &'a dyn GuestMemory,
    pub host: &'a mut dyn Host,
}

/// A handler's answer.
pub(crate) struct Outcome {
    pub ret: Result<u64, Errno>,
    pub action: Action,
    /// Preempted: these are the argument registers to resume with; RIP is not advanced.
    pub cont: Option<[u64; 5]>,
}

impl From<Result<u64, Errno>> for Outcome {
    fn from(ret: Result<u64, Errno>) -> Self {
        Outcome {
            ret,
            action: Action::Done,
            cont: None,
        }
    }
}

pub(crate) fn dispatch(
    x: &mut Xen,
    view: &VcpuView,
    regs: &mut GuestRegs,
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
) -> Action {
    let long = view.long_mode;
    let lo = |v: u64| v & 0xffff_ffff;
    let (op, args) = if long {
        (regs.rax, [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8])
    } else {
        (
            lo(regs.rax),
            [
                lo(regs.rbx),
                lo(regs.rcx),
                lo(regs.rdx),
                lo(regs.rsi),
                lo(regs.rdi),
            ],
        )
    };
    x.stats.count(op);
    let set_ret = |regs: &mut GuestRegs, v: u64| {
        regs.rax = if long { v } else { lo(v) };
    };
    // Xen serves only the guest kernel; a user-mode VMCALL must not reach it.
    if view.cpl != 0 {
        set_ret(regs, Errno::EPERM.ret());
        return Action::Done;
    }
    if view.index >= Xen::nr_vcpus(host) {
        set_ret(regs, Errno::EINVAL.ret());
        return Action::Done;
    }
    // A vCPU making a call is running: whatever it last blocked on is over.
    if let Some(st) = x.vcpus.get_mut(view.index as usize) {
        st.wait = crate::Wait::None;
        st.timers.poll = None;
    }
    let mut cx = Cx {
        vcpu: view.index,
        compat: !long,
        va: GuestVa { mem, ctl: view.ctl },
        mem,
        host,
    };
    x.stats.detail = None;
    let op32 = u32::try_from(op).unwrap_or(u32::MAX);
    let out: Outcome = match op32 {
        nr::SET_TIMER_OP => timer::set_timer_op(x, &mut cx, args[0]).into(),
        nr::XEN_VERSION => version::xen_version(x, &mut cx, args[0], args[1]).into(),
        nr::CONSOLE_IO => console::console_io(x, &mut cx, args),
        nr::MEMORY_OP => memory_op::memory_op(x, &mut cx, args[0], args[1]).into(),
        nr::VCPU_OP => vcpu_op::vcpu_op(x, &mut cx, args[0], args[1], args[2]).into(),
        nr::SCHED_OP => sched::sched_op(x, &mut cx, args[0], args[1]),
        nr::EVENT_CHANNEL_OP => evtchn::op(x, &mut cx, args[0], args[1]),
        nr::HVM_OP => hvm::hvm_op(x, &mut cx, args[0], args[1]).into(),
        nr::GRANT_TABLE_OP => gnttab::op(x, &mut cx, args[0], args[1], args[2]).into(),
        _ => Err(Errno::ENOSYS).into(),
    };
    if let Some(next) = out.cont {
        let slots: [&mut u64; 5] = if long {
            [
                &mut regs.rdi,
                &mut regs.rsi,
                &mut regs.rdx,
                &mut regs.r10,
                &mut regs.r8,
            ]
        } else {
            [
                &mut regs.rbx,
                &mut regs.rcx,
                &mut regs.rdx,
                &mut regs.rsi,
                &mut regs.rdi,
            ]
        };
        for (slot, v) in slots.into_iter().zip(next) {
            *slot = v;
        }
        return Action::Retry;
    }
    if out.ret == Err(Errno::ENOSYS) {
        let sub = match op32 {
            nr::MEMORY_OP => Some(args[0] & 0x3f),
            nr::XEN_VERSION
            | nr::CONSOLE_IO
            | nr::GRANT_TABLE_OP
            | nr::VM_ASSIST
            | nr::VCPU_OP
            | nr::SCHED_OP
            | nr::EVENT_CHANNEL_OP
            | nr::PHYSDEV_OP
            | nr::HVM_OP => Some(args[0]),
            _ => None,
        };
        let detail = x.stats.detail.unwrap_or(args[1]);
        x.stats.unimplemented(op32, sub, detail, view.index);
    }
    set_ret(
        regs,
        match out.ret {
            Ok(v) => v,
            Err(e) => e.ret(),
        },
    );
    out.action
}
