//! A VM's personality (the guest-facing ABI the manifest chose) and the kernel services it
//! runs on.

use super::Machine;
use super::alias::Aliases;
use super::state::{VcpuSlot, Vm, VmInfo};
use super::uart::LineBuf;
#[cfg(any(feature = "xen", feature = "hyperv"))]
use alloc::boxed::Box;
use core::sync::atomic::Ordering;
use vcpu::GuestRam;
use virt::personality::{AliasError, Host, Personality, VcpuView};
use virt::{GuestMemory, MemError};

/// The personality of one VM. On the heap: Xen's is tens of KiB (its xenstore), and an
/// inline value would be copied through the stack of every function that builds or replaces
/// it, which once overflowed the BSP's stack.
pub enum Instance {
    None,
    #[cfg(feature = "xen")]
    Xen(Box<abi_xen::Xen>),
    #[cfg(feature = "hyperv")]
    HyperV(Box<abi_hyperv::HyperV>),
}

impl Instance {
    pub fn abi(&mut self) -> Option<&mut dyn Personality> {
        match self {
            Instance::None => None,
            #[cfg(feature = "xen")]
            Instance::Xen(x) => Some(x.as_mut()),
            #[cfg(feature = "hyperv")]
            Instance::HyperV(h) => Some(h.as_mut()),
        }
    }

    /// Logs, once each, what the guest asked for that the ABI does not implement.
    pub fn drain_notices(&mut self, m: &dyn Machine, vm: &str) {
        let _ = (m, vm);
        match self {
            Instance::None => {}
            #[cfg(feature = "xen")]
            Instance::Xen(x) => {
                while let Some(u) = x.take_unimplemented() {
                    m.print(format_args!(
                        "vm {vm}: xen: unimplemented hypercall {} sub-op {:?} ({:#x}) from vCPU {}: -ENOSYS",
                        u.op, u.sub, u.detail, u.vcpu
                    ));
                }
            }
            #[cfg(feature = "hyperv")]
            Instance::HyperV(h) => {
                while let Some(n) = h.take_notice() {
                    m.print(format_args!("vm {vm}: hyperv: {n:?}"));
                }
            }
        }
    }
}

/// The personality and its console (Xen's hvc0), behind one lock.
pub struct PersonalityState {
    pub instance: Instance,
    /// Console output gathered into lines.
    pub console: LineBuf,
}

impl Default for PersonalityState {
    fn default() -> Self {
        Self::new()
    }
}

impl PersonalityState {
    pub const fn new() -> Self {
        Self {
            instance: Instance::None,
            console: LineBuf::new(),
        }
    }
}

/// The kernel as a personality sees it, for one exit of one VM.
pub struct KernelHost<'a, C> {
    pub vm: &'a Vm<C>,
    pub info: &'a VmInfo,
    pub machine: &'a dyn Machine,
    pub console: &'a mut LineBuf,
}

impl<C> KernelHost<'_, C> {
    fn slot(&self, vcpu: u32) -> Option<&VcpuSlot> {
        self.vm.vcpu(u8::try_from(vcpu).ok()?)
    }

    fn post(&self, vcpu: u32, f: impl FnOnce(&VcpuSlot)) {
        if let Some(s) = self.slot(vcpu) {
            f(s);
            s.notify(self.machine);
        }
    }
}

impl<C> Host for KernelHost<'_, C> {
    fn now_ns(&self) -> u64 {
        self.machine.now_ns()
    }

    fn tsc_hz(&self) -> u64 {
        self.machine.tsc_hz()
    }

    fn tsc(&self) -> u64 {
        self.machine.tsc()
    }

    fn vcpu_count(&self) -> u32 {
        u32::from(self.info.vcpus)
    }

    fn set_timer(&mut self, vcpu: u32, deadline_ns: Option<u64>) {
        self.post(vcpu, |s| {
            s.personality_deadline
                .store(deadline_ns.map_or(0, |d| d.max(1)), Ordering::Release);
            s.pending.kick();
        });
    }

    fn raise_vector(&mut self, vcpu: u32, vector: u8, needs_eoi: bool) {
        self.post(vcpu, |s| {
            if needs_eoi {
                s.pending.post(vector);
            } else {
                s.pending.post_no_eoi(vector);
            }
        });
    }

    fn kick(&mut self, vcpu: u32) {
        self.post(vcpu, |s| s.pending.kick());
    }

    fn alias_page(&mut self, gpa: u64, backing: u64) -> Result<(), AliasError> {
        let ram = self.info.ram;
        let layout = boot::guest::VmLayout::new(ram.size, u32::from(self.info.vcpus))
            .map_err(|_| AliasError::Refused)?;
        let reserved = layout.hv_pages();
        Aliases::check(ram.size, reserved.start..reserved.end, gpa, backing)?;
        // The guest reaches the backing page through the alias without a fault on its chunk.
        vcpu::GuestRam::new(ram).ready(backing, 4096);
        let mut npt = self.vm.npt.lock();
        let npt = npt.as_mut().ok_or(AliasError::Unsupported)?;
        let mut aliases = self.vm.aliases.lock();
        let replaced = aliases.insert(gpa, backing)?;
        if !self
            .machine
            .nested_map(npt, gpa, Some(ram.hpa_base + backing), 4096)
        {
            aliases.remove(gpa);
            self.machine.nested_map(npt, gpa, None, 4096);
            self.vm.nested_epoch.fetch_add(1, Ordering::AcqRel);
            return Err(AliasError::Full);
        }
        if replaced {
            self.vm.nested_epoch.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    fn disk(&self, index: u32) -> Option<virt::block::DiskInfo> {
        self.machine.disk(self.info.index, index)
    }

    fn disk_io(
        &mut self,
        index: u32,
        io: &mut dyn FnMut(&mut dyn virt::block::Volume) -> Result<(), virt::block::VolumeError>,
    ) -> Result<(), virt::block::VolumeError> {
        self.machine.disk_io(self.info.index, index, io)
    }

    fn unalias_page(&mut self, gpa: u64) {
        let mut npt = self.vm.npt.lock();
        let Some(npt) = npt.as_mut() else { return };
        if self.vm.aliases.lock().remove(gpa) {
            self.machine.nested_map(npt, gpa, None, 4096);
            self.vm.nested_epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn console_write(&mut self, bytes: &[u8]) {
        let (c, m) = (self.vm.console(), self.machine);
        for &b in bytes {
            self.console
                .push(b, &mut |line| super::console::append(m, c, line));
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

/// The vCPU as the ABI needs to see it.
pub fn view(index: u8, v: &impl vcpu::Vcpu) -> VcpuView {
    let ctl = v.control_regs();
    let cs = v.segment(virt::SegReg::Cs);
    VcpuView {
        index: u32::from(index),
        cpl: v.cpl(),
        ctl,
        long_mode: ctl.efer & virt::bits::EFER_LMA != 0 && cs.long(),
    }
}

/// Runs `f` with the VM's personality, its RAM and a host for it; `None` when the VM has no
/// ABI. Console lines it produced wait in the VM's backlog (see `console`).
pub fn with<C, R>(
    vm: &Vm<C>,
    m: &dyn Machine,
    f: impl FnOnce(&mut dyn Personality, &mut GuestRam, &mut KernelHost<'_, C>) -> R,
) -> Option<R> {
    let info = vm.info.get()?;
    let mut state = vm.personality.lock();
    let PersonalityState { instance, console } = &mut *state;
    let abi = instance.abi()?;
    let mut ram = GuestRam::new(info.ram);
    let mut host = KernelHost {
        vm,
        info,
        machine: m,
        console,
    };
    let r = f(abi, &mut ram, &mut host);
    instance.drain_notices(m, info.name.as_str());
    drop(state);
    Some(r)
}
