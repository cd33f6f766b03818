//! A VM's guest-facing ABI and the kernel services it runs on.

use super::lapic::Pending;
use super::machine::{self, VmInfo, VmSlot};
use super::uart::LineBuf;
use crate::arch::tsc;
use crate::println;
use crate::sched::policy::VcpuRef;
use core::sync::atomic::Ordering;
use vcpu::personality::{Action, Host, Personality, VcpuView};
use vcpu::{Event, GuestMemory, GuestRegs, MemError};

/// The personality of one VM, chosen by the manifest. It lives in the VM's static slot and
/// never moves after creation, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Face {
    None,
    #[cfg(feature = "xen")]
    Xen(abi_xen::Xen),
    #[cfg(feature = "hyperv")]
    HyperV(abi_hyperv::HyperV),
}

impl Face {
    pub fn personality(&mut self) -> Option<&mut dyn Personality> {
        match self {
            Face::None => None,
            #[cfg(feature = "xen")]
            Face::Xen(x) => Some(x),
            #[cfg(feature = "hyperv")]
            Face::HyperV(h) => Some(h),
        }
    }

    /// Logs, once each, what the guest asked for that the ABI does not implement.
    pub fn drain_notices(&mut self, vm: &str) {
        match self {
            Face::None => {}
            #[cfg(feature = "xen")]
            Face::Xen(x) => {
                while let Some(u) = x.take_unimplemented() {
                    println!(
                        "vm {vm}: xen: unimplemented hypercall {} sub-op {:?} ({:#x}) from vCPU {}: -ENOSYS",
                        u.op, u.sub, u.detail, u.vcpu
                    );
                }
            }
            #[cfg(feature = "hyperv")]
            Face::HyperV(h) => {
                while let Some(n) = h.take_notice() {
                    println!("vm {vm}: hyperv: {n:?}");
                }
            }
        }
    }
}

/// The kernel as a personality sees it, for one exit of one VM.
pub struct KernelHost<'a> {
    pub vm_index: u8,
    pub vm: &'a VmSlot,
    pub info: &'a VmInfo,
    pub console: &'a mut LineBuf,
    /// Console lines finished during this call, printed after the VM's lock is released.
    pub outbox: super::uart::Outbox,
}

impl KernelHost<'_> {
    fn slot(&self, vcpu: u32) -> Option<&machine::VcpuSlot> {
        self.vm
            .vcpus
            .get(vcpu as usize)
            .filter(|_| vcpu < u32::from(self.info.vcpus))
    }
}

impl Host for KernelHost<'_> {
    fn now_ns(&self) -> u64 {
        tsc::now_ns()
    }

    fn tsc_hz(&self) -> u64 {
        tsc::hz()
    }

    fn tsc(&self) -> u64 {
        tsc::now()
    }

    fn vcpu_count(&self) -> u32 {
        u32::from(self.info.vcpus)
    }

    fn set_timer(&mut self, vcpu: u32, deadline_ns: Option<u64>) {
        if let Some(s) = self.slot(vcpu) {
            s.face_deadline
                .store(deadline_ns.map_or(0, |d| d.max(1)), Ordering::Release);
            s.pending.kick();
            super::run::kick(VcpuRef {
                vm: self.vm_index,
                vcpu: vcpu as u8,
            });
        }
    }

    fn raise_vector(&mut self, vcpu: u32, vector: u8, needs_eoi: bool) {
        if let Some(s) = self.slot(vcpu) {
            if needs_eoi {
                s.pending.post(vector);
            } else {
                s.pending.post_no_eoi(vector);
            }
            super::run::kick(VcpuRef {
                vm: self.vm_index,
                vcpu: vcpu as u8,
            });
        }
    }

    fn kick(&mut self, vcpu: u32) {
        if let Some(s) = self.slot(vcpu) {
            s.pending.kick();
            super::run::kick(VcpuRef {
                vm: self.vm_index,
                vcpu: vcpu as u8,
            });
        }
    }

    fn console_write(&mut self, bytes: &[u8]) {
        let name = self.info.name.as_str();
        let outbox = &mut self.outbox;
        for &b in bytes {
            self.console.push(b, &mut |line| outbox.keep(name, line));
        }
    }

    fn guest_fetch_or_u64(
        &mut self,
        _mem: &dyn GuestMemory,
        gpa: u64,
        bits: u64,
    ) -> Result<u64, MemError> {
        super::guest_atomic::fetch_or(self.info.ram, gpa, bits)
    }

    fn guest_fetch_and_u64(
        &mut self,
        _mem: &dyn GuestMemory,
        gpa: u64,
        bits: u64,
    ) -> Result<u64, MemError> {
        super::guest_atomic::fetch_and(self.info.ram, gpa, bits)
    }

    fn vcpu_is_up(&self, vcpu: u32) -> Option<bool> {
        Some(self.slot(vcpu)?.started.load(Ordering::Acquire))
    }
}

/// What the exit loop does after a personality answered.
pub enum Outcome {
    /// Not the personality's: apply the platform or architectural default.
    NotMine,
    Done,
    Retry,
    Fault(Event),
    Block,
    Yield,
    Stop(super::machine::StopReason),
}

pub fn map_action(a: Action) -> Outcome {
    use super::machine::StopReason;
    use vcpu::personality::ShutdownReason;
    match a {
        Action::NotMine => Outcome::NotMine,
        Action::Done => Outcome::Done,
        Action::Retry => Outcome::Retry,
        Action::Fault(e) => Outcome::Fault(e),
        Action::Block => Outcome::Block,
        Action::Yield => Outcome::Yield,
        Action::Shutdown(ShutdownReason::PowerOff) => Outcome::Stop(StopReason::PowerOff),
        Action::Shutdown(ShutdownReason::Reboot) => Outcome::Stop(StopReason::Reset),
        Action::Shutdown(ShutdownReason::Crash(p)) => Outcome::Stop(StopReason::Crash(p)),
        Action::Shutdown(ShutdownReason::Other(code)) => Outcome::Stop(StopReason::Unsupported {
            vcpu: 0,
            what: "guest shutdown request",
            detail: u64::from(code),
        }),
    }
}

/// The vCPU as the ABI needs to see it.
pub fn view(index: u8, v: &impl vcpu::Vcpu) -> VcpuView {
    let ctl = v.control_regs();
    let cs = v.segment(vcpu::SegReg::Cs);
    VcpuView {
        index: u32::from(index),
        cpl: v.cpl(),
        ctl,
        long_mode: ctl.efer & vcpu::bits::EFER_LMA != 0 && cs.long(),
    }
}

/// Runs `f` with the VM's personality and a host for it; `None` when the VM has no ABI.
pub fn with_face<R>(
    vm: &VmSlot,
    vm_index: u8,
    info: &VmInfo,
    f: impl FnOnce(&mut dyn Personality, &mut vcpu::GuestRam, &mut KernelHost<'_>) -> R,
) -> Option<R> {
    let mut shared = vm.shared.lock();
    let super::machine::VmShared { face, console, .. } = &mut *shared;
    let personality = face.personality()?;
    let mut ram = vcpu::GuestRam::new(info.ram);
    let mut host = KernelHost {
        vm_index,
        vm,
        info,
        console,
        outbox: super::uart::Outbox::new(),
    };
    let r = f(personality, &mut ram, &mut host);
    let mut outbox = core::mem::take(&mut host.outbox);
    face.drain_notices(info.name.as_str());
    drop(shared);
    outbox.print(info.name.as_str());
    Some(r)
}

/// Registers for a hypercall, as a helper for the exit loop.
pub fn hypercall(
    vm: &VmSlot,
    vm_index: u8,
    info: &VmInfo,
    view: &VcpuView,
    regs: &mut GuestRegs,
) -> Option<Action> {
    with_face(vm, vm_index, info, |p, ram, host| {
        p.hypercall(view, regs, ram, host)
    })
}

pub fn pending_of(vm: &VmSlot, vcpu: u8) -> Option<&Pending> {
    vm.vcpus.get(usize::from(vcpu)).map(|s| &s.pending)
}
