//! A VM's state as the exit path and the scheduler share it: what never changes after
//! creation, what each vCPU is posted from other pCPUs, the personality, the devices and how
//! the VM ended. Generic over the vCPU cell so the exit path runs on the host with a mock.
//!
//! Lock order (a lock may be taken while holding only those left of it):
//! vCPU cell (held for a whole turn) → personality → one device lock | `end` | `npt` →
//! `aliases` | one disk (a backend's request) → the NVMe controller.
//! Device locks never nest: a device releases its own before it raises a line on the IOAPIC.

use super::bus::Bus;
use super::devices::Devices;
use super::lapic::Pending;
use super::personality::PersonalityState;
use super::stats::ExitStats;
use crate::manifest::Personality;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use spin::{Mutex, Once};
use vcpu::{NestedPageTable, RamRegion};
use virt::StopReason;

pub const MAX_VCPUS: usize = crate::manifest::MAX_VCPUS as usize;
pub const NOT_RUNNING: u8 = u8::MAX;
/// The APIC timer input clock the guest sees (CPUID 0x15 tells it on Intel, Hyper-V's APIC
/// frequency MSR on that personality); 1 GHz makes counts readable.
pub const APIC_BUS_HZ: u64 = 1_000_000_000;
/// Exceptions intercepted only to be handed back to the guest (#DB, #AC).
pub const REFLECTED_EXCEPTIONS: u32 = (1 << 1) | (1 << 17);

/// What never changes after creation.
pub struct VmInfo {
    /// The VM's place in the manifest (and in every per-VM table).
    pub index: u8,
    pub name: heapless::String<{ crate::manifest::MAX_NAME }>,
    pub personality: Personality,
    pub ram: RamRegion,
    pub vcpus: u8,
}

/// What other pCPUs post to a vCPU, lock-free.
pub struct VcpuSlot {
    pub pending: Pending,
    pub home: AtomicU8,
    /// The pCPU currently in guest mode for this vCPU, for kicks.
    pub running_on: AtomicU8,
    /// The personality's one-shot timer for this vCPU: host ns, 0 = none.
    pub personality_deadline: AtomicU64,
    /// Started (boot vCPU, or SIPI'd) and not stopped.
    pub started: AtomicBool,
    /// Parked in wait-for-SIPI: only INIT or SIPI wakes it.
    pub sipi_wait: AtomicBool,
    /// How its APIC matches destinations ([`super::lapic::Addressing`], packed), for
    /// interrupts sent from other pCPUs; its own pCPU publishes it after each APIC write.
    pub apic: AtomicU64,
}

impl VcpuSlot {
    pub const fn new() -> Self {
        Self {
            pending: Pending::new(),
            home: AtomicU8::new(0),
            running_on: AtomicU8::new(NOT_RUNNING),
            personality_deadline: AtomicU64::new(0),
            started: AtomicBool::new(false),
            sipi_wait: AtomicBool::new(false),
            apic: AtomicU64::new(0),
        }
    }

    pub fn publish_apic(&self, a: super::lapic::Addressing) {
        self.apic.store(a.pack(), Ordering::Release);
    }

    pub fn apic_addressing(&self, index: u8) -> super::lapic::Addressing {
        super::lapic::Addressing::unpack(self.apic.load(Ordering::Acquire), u32::from(index))
    }

    /// Whether what was posted to the vCPU should make its pCPU run it again.
    pub fn wants_wake(&self) -> bool {
        self.pending.wakes(self.sipi_wait.load(Ordering::Acquire))
    }

    /// Makes the vCPU notice what was just posted to it: a vCPU in guest mode is forced out
    /// by a kick of the pCPU running it; a parked one only needs its home pCPU to look at its
    /// queue, which a busy pCPU does at its next exit anyway, so only an idle one is woken.
    pub fn notify(&self, m: &dyn super::Machine) {
        match self.running_on.load(Ordering::Acquire) {
            NOT_RUNNING => m.wake_cpu(usize::from(self.home.load(Ordering::Acquire))),
            cpu => m.kick_cpu(usize::from(cpu)),
        }
    }
}

impl Default for VcpuSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// How the VM ends: the first stop reason wins; the last vCPU to leave reports.
pub struct VmEnd {
    pub stop: Option<StopReason>,
    pub stats: ExitStats,
    /// vCPUs that have not yet left the scheduler after the stop.
    pub vcpus_left: u8,
}

/// One VM. `C` is what a vCPU's owner keeps of it between turns (the kernel's cell with the
/// hardware vCPU; a mock in host tests).
pub struct Vm<C> {
    pub info: Once<VmInfo>,
    pub personality: Mutex<PersonalityState>,
    pub devices: Devices,
    /// Built once, when the devices are in place; empty until then.
    pub bus: Once<Bus<'static>>,
    pub end: Mutex<VmEnd>,
    pub npt: Mutex<Option<NestedPageTable>>,
    /// Which 2 MiB chunks of RAM are zeroed and which are in `npt` (see `vm::ram`).
    pub ram_chunks: virt::RamChunks,
    /// Pages the personality aliased in `npt` (see `alias`).
    pub aliases: Mutex<super::alias::Aliases>,
    /// Bumped when a nested translation changes or goes: each vCPU flushes its nested TLB
    /// before it next enters the guest with an older value.
    pub nested_epoch: AtomicU32,
    pub live: AtomicBool,
    /// Console lines printed so far, numbering the stamps (see `console`).
    pub console_seq: AtomicU32,
    /// What the VM may still print, and its lines waiting for COM1 (see `console`).
    pub console_out: Mutex<super::console::ConsoleOut>,
    /// Held while the VM's waiting lines are printed (see `console::drain`).
    pub console_drainer: Mutex<()>,
    pub vcpus: [VcpuSlot; MAX_VCPUS],
    pub cells: [Mutex<Option<C>>; MAX_VCPUS],
}

impl<C> Vm<C> {
    pub const fn new() -> Self {
        Self {
            info: Once::new(),
            personality: Mutex::new(PersonalityState::new()),
            devices: Devices::new(),
            bus: Once::new(),
            end: Mutex::new(VmEnd {
                stop: None,
                stats: ExitStats::new(),
                vcpus_left: 0,
            }),
            npt: Mutex::new(None),
            ram_chunks: virt::RamChunks::new(),
            aliases: Mutex::new(super::alias::Aliases::new()),
            nested_epoch: AtomicU32::new(0),
            live: AtomicBool::new(false),
            console_seq: AtomicU32::new(0),
            console_out: Mutex::new(super::console::ConsoleOut::new()),
            console_drainer: Mutex::new(()),
            vcpus: [const { VcpuSlot::new() }; MAX_VCPUS],
            cells: [const { Mutex::new(None) }; MAX_VCPUS],
        }
    }

    /// The VM's console, for printing its lines.
    pub fn console(&self) -> super::console::Console<'_> {
        super::console::Console {
            vm: self.info.get().map_or("?", |i| i.name.as_str()),
            seq: &self.console_seq,
            out: &self.console_out,
            drainer: &self.console_drainer,
        }
    }

    pub fn stopped(&self) -> bool {
        !self.live.load(Ordering::Acquire)
    }

    /// The slot of vCPU `v`, if the VM has it.
    pub fn vcpu(&self, v: u8) -> Option<&VcpuSlot> {
        let n = self.info.get().map_or(0, |i| i.vcpus);
        (v < n).then(|| self.vcpus.get(usize::from(v))).flatten()
    }

    /// Records `reason` if it is the first; `true` when it was.
    pub fn record_stop(&self, reason: StopReason) -> bool {
        let mut end = self.end.lock();
        if end.stop.is_some() {
            return false;
        }
        end.stop = Some(reason);
        drop(end);
        self.live.store(false, Ordering::Release);
        true
    }
}

impl<C> Default for Vm<C> {
    fn default() -> Self {
        Self::new()
    }
}

/// What the owner of a vCPU keeps of it: the hardware vCPU (or a mock), its local APIC and
/// its counters. Only the pCPU running the vCPU touches it.
pub struct VcpuState<V> {
    pub vcpu: V,
    pub lapic: super::lapic::VLapic,
    /// The platform MSRs it writes and reads back.
    pub msrs: super::platform::PlatformMsrs,
    pub stats: ExitStats,
    /// Time in guest mode.
    pub run_ns: u64,
    /// Time on its pCPU and waiting for it (see `sched::account`).
    pub cpu: crate::sched::account::CpuTime,
    /// NMI IPIs sent to this vCPU and not delivered (see `interrupts::prepare`).
    pub nmis_dropped: u32,
    /// The last entries and exits, for the triple-fault report.
    pub trace: super::trace::Trace,
    /// Hyper-V's EOI avoidance (see `lazy_eoi`).
    pub lazy_eoi: super::lazy_eoi::LazyEoi,
    /// The RAM chunk this vCPU last faulted on after another vCPU had mapped it (see
    /// `mmio::emulate`): a second fault on it is a nested-table bug, not a race.
    pub ram_race: Option<usize>,
    /// How many times that happened.
    pub ram_races: u32,
}

impl<V> VcpuState<V> {
    pub fn new(vcpu: V, lapic: super::lapic::VLapic) -> Self {
        Self {
            vcpu,
            lapic,
            msrs: super::platform::PlatformMsrs::new(),
            stats: ExitStats::new(),
            run_ns: 0,
            cpu: Default::default(),
            nmis_dropped: 0,
            trace: super::trace::Trace::new(),
            lazy_eoi: super::lazy_eoi::LazyEoi::default(),
            ram_race: None,
            ram_races: 0,
        }
    }
}
