//! Interrupts between the parts of a VM: IPIs from one vCPU's APIC to others, messages from
//! devices (the IOAPIC), and, before each entry, what the vCPU's own APIC can deliver.

use super::Machine;
use super::lapic::{Dest, Effect, Ipi, Pending, VLapic};
use super::state::{VcpuState, Vm};
use vcpu::Vcpu;
use virt::Event;
use virt::bus::{DeviceContext, InterruptMessage};

/// Whether a destination names vCPU `v`, for an IPI from `from`: by its APIC's own mode and
/// logical id, as it published them.
fn names<C>(vm: &Vm<C>, dest: Dest, v: u8, from: u8) -> bool {
    let apic = || vm.vcpu(v).map(|s| s.apic_addressing(v));
    match dest {
        Dest::Physical(d) => apic().is_some_and(|a| a.physical(d)),
        Dest::Logical(d) => apic().is_some_and(|a| a.logical(d)),
        Dest::SelfOnly => v == from,
        Dest::AllIncludingSelf => true,
        Dest::AllExcludingSelf => v != from,
    }
}

/// Posts an ICR's interprocessor interrupt to every vCPU it names, and kicks them.
pub fn send_ipi<C>(vm: &Vm<C>, m: &dyn Machine, from: u8, ipi: Ipi) {
    let dest = match ipi {
        Ipi::Fixed { dest, .. }
        | Ipi::Init { dest }
        | Ipi::Sipi { dest, .. }
        | Ipi::Nmi { dest } => dest,
    };
    let n = vm.info.get().map_or(0, |i| i.vcpus);
    for v in (0..n).filter(|&v| names(vm, dest, v, from)) {
        let Some(target) = vm.vcpu(v) else { continue };
        match ipi {
            Ipi::Fixed { vector, .. } => target.pending.post(vector),
            Ipi::Init { .. } => target.pending.post_init(),
            Ipi::Sipi { vector, .. } => target.pending.post_sipi(vector),
            Ipi::Nmi { .. } => target.pending.post_nmi(),
        }
        target.notify(m);
    }
}

/// After a write to vCPU `index`'s APIC (MSR or MMIO): publishes how it now matches
/// destinations, and sends the IPI or the EOI broadcast the write asked for.
pub fn apic_written<C>(vm: &Vm<C>, m: &dyn Machine, index: u8, apic: &VLapic, effect: Effect) {
    if let Some(s) = vm.vcpu(index) {
        s.publish_apic(apic.addressing());
    }
    match effect {
        Effect::SendIpi(ipi) => send_ipi(vm, m, index, ipi),
        Effect::Eoi(vector) => {
            if let Some(io) = vm.devices.ioapic.get() {
                for msg in io.eoi(vector) {
                    deliver(vm, m, msg);
                }
            }
        }
        Effect::None => {}
    }
}

/// Hands a device's interrupt message to the first vCPU it names: fixed or lowest-priority
/// delivery of an edge needs one recipient.
pub fn deliver<C>(vm: &Vm<C>, m: &dyn Machine, msg: InterruptMessage) {
    let n = vm.info.get().map_or(0, |i| i.vcpus);
    let hit = (0..n).find(|&v| {
        let Some(a) = vm.vcpu(v).map(|s| s.apic_addressing(v)) else {
            return false;
        };
        if msg.logical {
            a.logical(msg.dest)
        } else {
            // Device messages carry 8-bit ids: 0xFF is their broadcast in either mode.
            a.physical(msg.dest) || msg.dest == 0xFF
        }
    });
    if let Some(target) = hit.and_then(|v| vm.vcpu(v)) {
        if msg.level {
            target.pending.post_level(msg.vector);
        } else {
            target.pending.post(msg.vector);
        }
        target.notify(m);
    }
}

/// Folds posted interrupts and expired timers into the APIC and injects what is deliverable,
/// or asks for the window in which it can be.
pub fn prepare<V: Vcpu>(st: &mut VcpuState<V>, pending: &Pending, now_tsc: u64) {
    st.lapic.sync(pending);
    st.lapic.tick(now_tsc);
    if st.vcpu.event_pending() {
        return;
    }
    // NMI IPIs are not delivered: without NMI-window exits the guest's NMI blocking (until
    // its IRET) cannot be honoured, and an NMI inside its NMI handler corrupts the guest.
    // They are counted and reported when the VM ends.
    if pending.take_nmi() {
        st.nmis_dropped = st.nmis_dropped.saturating_add(1);
    }
    match st.lapic.deliverable() {
        Some(v) if st.vcpu.interrupt_window_open() => {
            st.lazy_eoi.withdraw(&mut st.lapic, st.vcpu.memory());
            // Withdrawing may have EOId the vector in service: look again.
            let v = st.lapic.deliverable().unwrap_or(v);
            if st.vcpu.inject(Event::ExternalInterrupt(v)).is_ok() {
                st.lapic.delivered(v);
                st.lazy_eoi.offer(v, &st.lapic, st.vcpu.memory());
                st.vcpu.request_interrupt_window(false);
            }
        }
        Some(_) => st.vcpu.request_interrupt_window(true),
        None => st.vcpu.request_interrupt_window(false),
    }
}

/// The VM as a device sees it during one access. Console lines go to the VM's backlog, which
/// pCPU 0 prints, never from the exit path.
pub struct DeviceCx<'a, C> {
    pub vm: &'a Vm<C>,
    pub m: &'a dyn Machine,
    ram: Option<vcpu::GuestRam>,
}

impl<'a, C> DeviceCx<'a, C> {
    pub fn new(vm: &'a Vm<C>, m: &'a dyn Machine) -> Self {
        Self {
            vm,
            m,
            ram: vm.info.get().map(|i| vcpu::GuestRam::new(i.ram)),
        }
    }
}

impl<C> DeviceContext for DeviceCx<'_, C> {
    fn tsc(&self) -> u64 {
        self.m.tsc()
    }

    fn tsc_hz(&self) -> u64 {
        self.m.tsc_hz()
    }

    fn unix_secs(&self) -> u64 {
        self.m.unix_secs()
    }

    fn set_irq(&mut self, line: u8, high: bool) {
        let msg = self
            .vm
            .devices
            .ioapic
            .get()
            .and_then(|io| io.set_line(line, high));
        if let Some(msg) = msg {
            deliver(self.vm, self.m, msg);
        }
    }

    fn send_interrupt(&mut self, msg: InterruptMessage) {
        deliver(self.vm, self.m, msg);
    }

    fn console_line(&mut self, line: &[u8]) {
        super::console::append(self.m, self.vm.console(), line);
    }

    fn memory(&self) -> &dyn virt::GuestMemory {
        match &self.ram {
            Some(r) => r,
            None => &virt::NoMemory,
        }
    }

    fn disk_io(
        &mut self,
        index: u32,
        io: &mut dyn FnMut(&mut dyn virt::block::Volume) -> Result<(), virt::block::VolumeError>,
    ) -> Result<(), virt::block::VolumeError> {
        let vm = self.vm.info.get().map_or(u8::MAX, |i| i.index);
        self.m.disk_io(vm, index, io)
    }
}
