//! The Hyper-V personality (TLFS): a pure state machine over guest registers and guest memory.
//!
//! One [`HyperV`] per VM, created with [`HyperV::new`] and driven through
//! [`virt::personality::Personality`]. What it offers is exactly what [`cpuid`] advertises:
//! the hypercall page, VP index, the reference counter and TSC page, frequency MSRs, SynIC
//! MSRs, four synthetic timers per VP (direct and message mode), crash and reset MSRs, the
//! VP assist page register, and PV IPIs. Everything else answers #GP or
//! `HV_STATUS_INVALID_HYPERCALL_CODE`, counted and announced once through
//! [`HyperV::take_notice`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

mod clock;
pub mod counters;
pub mod cpuid;
mod crash;
pub mod hypercall;
mod hypercall_page;
pub mod msr;
pub mod scsi;
pub mod status;
mod stimer;
pub mod storvsc;
mod synic;
pub mod vmbus;

pub use clock::{REF_HZ, scale_for};
pub use counters::Notice;
pub use hypercall_page::{HypercallInsn, code as hypercall_page_code};
pub use status::HvStatus;

use stimer::{Fire, MSG_TIMER_EXPIRED, MSG_TIMER_PAYLOAD, STIMER_COUNT, Stimer};
use synic::{Post, Synic};
use virt::personality::{Action, Host, Personality, StopReason, VcpuView};
use virt::{GuestMemory, GuestRegs};

/// VPs per partition: PV IPI masks and the non-Ex hypercalls address 64.
pub const MAX_VCPUS: usize = 64;

/// Per-VM choices the kernel makes.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// VMCALL on Intel, VMMCALL on AMD.
    pub insn: HypercallInsn,
    /// Input clock of the virtual LAPIC timer. `None` hides both frequency MSRs (they are
    /// advertised together), and the guest calibrates instead.
    pub apic_hz: Option<u64>,
    /// Guest TSC = host TSC + this (wrapping), as given to `Vcpu::set_tsc_offset`.
    pub tsc_offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// `Host::vcpu_count` is 0 or above [`MAX_VCPUS`].
    VcpuCount(u32),
}

#[derive(Clone, Copy, Debug, Default)]
struct Vp {
    synic: Synic,
    stimers: [Stimer; STIMER_COUNT],
    vp_assist: u64,
    /// The reference time the host timer is armed for, to skip redundant re-arming.
    armed: Option<u64>,
}

pub struct HyperV {
    insn: HypercallInsn,
    apic_hz: u64,
    vcpus: u32,
    features: cpuid::Features,
    clock: clock::RefClock,
    guest_os_id: u64,
    hypercall_msr: u64,
    ref_tsc_msr: u64,
    tsc_sequence: u32,
    crash: crash::Crash,
    vps: [Vp; MAX_VCPUS],
    counters: counters::Counters,
    shutdown: Option<StopReason>,
    vmbus: vmbus::Vmbus,
}

impl HyperV {
    /// A partition at reset. The reference counter starts at 0 now.
    pub fn new(config: Config, host: &dyn Host) -> Result<HyperV, Error> {
        let vcpus = host.vcpu_count();
        if vcpus == 0 || vcpus as usize > MAX_VCPUS {
            return Err(Error::VcpuCount(vcpus));
        }
        let clock = clock::RefClock::new(host, config.tsc_offset);
        let apic_hz = config.apic_hz.unwrap_or(0);
        let frequencies = apic_hz != 0 && clock.tsc_hz() != 0;
        Ok(HyperV {
            insn: config.insn,
            apic_hz,
            vcpus,
            features: cpuid::Features::new(clock.page_usable(), frequencies, MAX_VCPUS as u32),
            clock,
            guest_os_id: 0,
            hypercall_msr: 0,
            ref_tsc_msr: 0,
            tsc_sequence: 0,
            crash: crash::Crash::default(),
            vps: [Vp::default(); MAX_VCPUS],
            counters: counters::Counters::default(),
            shutdown: None,
            vmbus: vmbus::Vmbus::new(host),
        })
    }

    pub fn features(&self) -> &cpuid::Features {
        &self.features
    }

    /// The guest has a hypercall page: Linux's test before it loads VMBus drivers.
    pub fn hypercalls_enabled(&self) -> bool {
        self.hypercall_msr & msr::hc::ENABLE != 0
    }

    pub fn guest_os_id(&self) -> u64 {
        self.guest_os_id
    }

    /// The reference counter now, in 100 ns ticks (what TIME_REF_COUNT returns).
    pub fn reference_time(&self, host: &dyn Host) -> u64 {
        self.clock.now(host)
    }

    /// Something to log once; call after exits until `None`.
    pub fn take_notice(&mut self) -> Option<Notice> {
        self.counters.take_notice()
    }

    /// Unknown hypercall codes and how often each was called.
    pub fn unknown_hypercalls(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.counters.hypercalls.iter()
    }

    pub fn unknown_hypercall_count(&self, code: u16) -> u32 {
        self.counters.hypercalls.count(code)
    }

    /// Unimplemented synthetic MSRs touched: `((msr, write), count)`.
    pub fn unknown_msrs(&self) -> impl Iterator<Item = ((u32, bool), u32)> + '_ {
        self.counters.msrs.iter()
    }

    /// Unknown hypercalls and MSRs beyond what is tracked individually.
    pub fn untracked_unknowns(&self) -> (u32, u32) {
        (
            self.counters.hypercalls.untracked(),
            self.counters.msrs.untracked(),
        )
    }

    fn vp(&mut self, index: u32) -> Option<&mut Vp> {
        if index >= self.vcpus {
            return None;
        }
        self.vps.get_mut(index as usize)
    }

    /// Fires what is due on `vp`'s timers and re-arms the host timer for the next expiry.
    fn service_timers(&mut self, vp: u32, mem: &dyn GuestMemory, host: &mut dyn Host) {
        let now = self.clock.now(host);
        let Some(state) = self.vp(vp) else {
            return;
        };
        let mut message = false;
        for t in state.stimers.iter_mut() {
            match t.expire(now) {
                Some(Fire::Vector(v)) => host.raise_vector(vp, v, true),
                Some(Fire::Message { .. }) => message = true,
                None => {}
            }
        }
        if message {
            self.retry_messages(vp, mem, host);
        }
        self.arm_host_timer(vp, now, host);
    }

    fn arm_host_timer(&mut self, vp: u32, now: u64, host: &mut dyn Host) {
        let Some(state) = self.vp(vp) else {
            return;
        };
        let next = state.stimers.iter().filter_map(|t| t.deadline).min();
        if next == state.armed {
            return;
        }
        state.armed = next;
        let at = next.map(|d| clock::RefClock::host_deadline(now, host.now_ns(), d));
        host.set_timer(vp, at);
    }

    /// Puts undelivered timer messages into free SIM slots (on EOM, and whenever SynIC or
    /// its message page is switched on).
    fn retry_messages(&mut self, vp: u32, mem: &dyn GuestMemory, host: &mut dyn Host) {
        let now = self.clock.now(host);
        let Some(state) = self.vp(vp) else {
            return;
        };
        for (index, t) in state.stimers.iter_mut().enumerate() {
            let Some(expiration) = t.pending else {
                continue;
            };
            let mut payload = [0u8; MSG_TIMER_PAYLOAD];
            payload[0..4].copy_from_slice(&(index as u32).to_le_bytes());
            payload[8..16].copy_from_slice(&expiration.to_le_bytes());
            payload[16..24].copy_from_slice(&now.to_le_bytes());
            let posted = state
                .synic
                .post(vp, t.sintx(), MSG_TIMER_EXPIRED, &payload, mem, host);
            if posted == Post::Delivered {
                t.pending = None;
            }
        }
        if self.vmbus.route.is_some_and(|r| r.vp == vp) {
            self.deliver_vmbus(mem, host);
        }
    }

    /// Puts queued VMBus messages into the connection's SIM slot, in order, until it is busy
    /// (the guest's EOM brings the rest).
    fn deliver_vmbus(&mut self, mem: &dyn GuestMemory, host: &mut dyn Host) {
        let Some(route) = self.vmbus.route else {
            return;
        };
        if route.vp >= self.vcpus {
            return;
        }
        let Some(synic) = self.vps.get(route.vp as usize).map(|v| v.synic) else {
            return;
        };
        while let Some(m) = self.vmbus.outbox.front() {
            let posted = synic.post(
                route.vp,
                usize::from(route.sint),
                vmbus::wire::SYNIC_MESSAGE_TYPE,
                m.payload(),
                mem,
                host,
            );
            if posted != Post::Delivered {
                break;
            }
            self.vmbus.outbox.pop_front();
        }
    }

    /// Interrupts the channels the VMBus host queued packets on by itself.
    fn signal_channels(&mut self, mem: &dyn GuestMemory, host: &mut dyn Host) {
        while let Some((vp, relid)) = self.vmbus.signals.pop() {
            self.signal_channel(vp, relid, mem, host);
        }
    }

    /// Interrupts `vp` for channel `relid`: its bit in the SIEF slot of the VMBus SINT, then
    /// the SINT.
    fn signal_channel(&mut self, vp: u32, relid: u32, mem: &dyn GuestMemory, host: &mut dyn Host) {
        let Some(route) = self.vmbus.route else {
            return;
        };
        let Some(synic) = self.vp(vp).map(|v| v.synic) else {
            return;
        };
        let Some(flags) = synic.event_flags(usize::from(route.sint)) else {
            return;
        };
        let word = flags + u64::from(relid / 64) * 8;
        if host
            .guest_fetch_or_u64(mem, word, 1 << (relid % 64))
            .is_ok()
        {
            synic.assert_sint(vp, usize::from(route.sint), host);
        }
    }
}

impl Personality for HyperV {
    fn cpuid(&mut self, _vcpu: &VcpuView, leaf: u32, _subleaf: u32) -> Option<[u32; 4]> {
        self.features.leaf(leaf)
    }

    fn rdmsr(
        &mut self,
        vcpu: &VcpuView,
        msr: u32,
        value: &mut u64,
        _mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Action {
        match self.read_msr(vcpu.index, msr, host) {
            Ok(Some(v)) => {
                *value = v;
                Action::Done
            }
            Ok(None) => Action::NotMine,
            Err(e) => Action::Fault(e),
        }
    }

    fn wrmsr(
        &mut self,
        vcpu: &VcpuView,
        msr: u32,
        value: u64,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Action {
        match self.write_msr(vcpu.index, msr, value, mem, host) {
            // A write to the crash or reset register ends the VM once it is retired.
            Ok(true) => self.shutdown.take().map_or(Action::Done, Action::Stop),
            Ok(false) => Action::NotMine,
            Err(e) => Action::Fault(e),
        }
    }

    fn hypercall(
        &mut self,
        vcpu: &VcpuView,
        regs: &mut GuestRegs,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Action {
        self.hypercall_exit(vcpu, regs, mem, host)
    }

    fn io(
        &mut self,
        _vcpu: &VcpuView,
        _port: u16,
        _size: u8,
        _write: bool,
        _data: &mut u32,
        _host: &mut dyn Host,
    ) -> Action {
        Action::NotMine
    }

    fn timer_expired(&mut self, vcpu: u32, mem: &mut dyn GuestMemory, host: &mut dyn Host) {
        if let Some(state) = self.vp(vcpu) {
            // The host timer is spent; whatever comes next must be armed again.
            state.armed = None;
        }
        self.service_timers(vcpu, mem, host);
    }

    fn has_pending_work(&self, _vcpu: u32, _mem: &dyn GuestMemory) -> bool {
        // Nothing here blocks a vCPU: interrupts reach it through `Host::raise_vector`.
        false
    }

    fn eoi_assist(&self, vcpu: u32) -> Option<u64> {
        // The page's first word is `apic_assist`; the MSR write checked the page is RAM.
        let page = self.vps.get(vcpu as usize)?.vp_assist;
        (vcpu < self.vcpus && page & msr::VP_ASSIST_ENABLE != 0).then_some(page & !0xFFF)
    }

    /// Through the shutdown integration service, when the guest has opened it.
    fn request_shutdown(
        &mut self,
        kind: virt::personality::ShutdownKind,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> bool {
        let asked = self.vmbus.request_shutdown(kind, mem);
        self.signal_channels(mem, host);
        asked
    }
}

#[cfg(test)]
mod tests;
