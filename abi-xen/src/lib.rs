//! The Xen personality: a pure state machine over guest registers, guest memory and the
//! kernel's [`Host`] services, enough for an unmodified Linux 6.1 PVH domU (detection, both
//! hypercall transports, shared_info + pvclock, 2-level event channels with upcalls, VCPUOP
//! timers, SCHEDOP, the PV console) and nothing it does not really implement: every other
//! request answers `-ENOSYS` and is counted so the kernel can log it once.
//!
//! Driving it: `Xen::new(Config::new(insn))` per VM, then route CPUID 0x4000_00xx,
//! RDMSR/WRMSR, VMCALL/VMMCALL, unclaimed port I/O and host-timer expiries through
//! [`virt::personality::Personality`]; block a vCPU on [`Action::Block`] until
//! `has_pending_work` (or a kick); drain [`Xen::take_unimplemented`] after exits to log each
//! first-seen unimplemented call once. The kernel's [`Host`] should override the atomic
//! guest-word updates for SMP guests.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod blkback;
mod console;
mod cpuid;
mod errno;
mod evtchn;
mod gnttab;
mod guest;
mod hvm;
mod hypercall;
mod hypercall_page;
mod memory_op;
mod pvclock;
mod sched;
mod shared_info;
mod stats;
mod timer;
mod vcpu_op;
mod version;
pub mod xenstore;

pub use errno::{Errno, is_valid_return};
pub use evtchn::PortStatus;
pub use gnttab::{ENTRIES_PER_FRAME, GrantError, MAX_FRAMES as MAX_GRANT_FRAMES};
pub use hypercall::nr as hypercall_nr;
pub use pvclock::{TimeBase, scale_delta, scale_for};
pub use stats::{Unimplemented, UnimplementedCount};
pub use xenstore::{Store, StoreError};

use virt::personality::{Action, Host, Personality, VcpuView};
use virt::{GuestMemory, GuestRegs};

/// vCPUs this personality serves: the vcpu_info slots of shared_info. Linux registers its own
/// vcpu_info per CPU, but Xen guests above 32 vCPUs are out of scope.
pub const MAX_VCPUS: u32 = 32;
/// Event-channel ports (2-level ABI allows 4096; Linux allocates a handful per vCPU plus one
/// per device ring, so 1024 bounds the table at 8 KiB).
pub const MAX_PORTS: u32 = 1024;
/// The console's pre-bound port (`HVM_PARAM_CONSOLE_EVTCHN`): Linux never binds it itself.
pub const CONSOLE_PORT: u32 = 1;
/// The xenstore's pre-bound port (`HVM_PARAM_STORE_EVTCHN`) when a store page is configured.
pub const STORE_PORT: u32 = 2;
/// The domain id guests use to mean themselves.
pub const DOMID_SELF: u16 = 0x7FF0;
/// Ports one `SCHEDOP_poll` waits on precisely; longer lists return at once (a spurious
/// wake-up, which the ABI allows), so the bound never refuses a valid call.
pub const MAX_POLL: usize = 4;

/// Which instruction the hypercall page's stubs use: the one the host CPU executes natively.
pub use virt::HypercallInsn;

/// Per-VM settings, fixed at creation.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub insn: HypercallInsn,
    /// This domain's id (reported by `EVTCHNOP_status` and CPUID; backends are domain 0).
    pub domid: u16,
    /// Reported Xen version (CPUID leaf 1 and `XENVER_version`). Linux assumes at least 4.0.
    pub version: (u16, u16),
    /// Guest frame of the PV console ring page (`HVM_PARAM_CONSOLE_PFN`); it must lie inside
    /// guest memory (reserved in the guest's memory map). `None`: no hvc0.
    pub console_pfn: Option<u64>,
    /// Guest frame of the xenstore ring (`HVM_PARAM_STORE_PFN`), served by this personality;
    /// it must lie inside guest memory (reserved in the guest's memory map). `None` disables
    /// xenbus in the guest.
    pub store_pfn: Option<u64>,
    /// First of [`MAX_GRANT_FRAMES`] guest frames, reserved in the guest's memory maps, that
    /// back grant-table frames the guest places outside its RAM (Linux puts them above it);
    /// the kernel aliases each placement to its backing page. `None`: such placements are
    /// answered `-ENOSYS`.
    pub grant_frames_pfn: Option<u64>,
    /// UTC in nanoseconds at host time 0 (`Host::now_ns() == 0`): the shared_info wall clock.
    pub boot_utc_ns: u64,
    /// The host TSC is invariant and synchronised across pCPUs (`PVCLOCK_TSC_STABLE_BIT`).
    pub tsc_stable: bool,
    /// Advertise `XEN_HVM_CPUID_UPCALL_VECTOR`, steering Linux to per-vCPU LAPIC upcall
    /// vectors (EOI'd) instead of the global callback vector. The hypercall works either way.
    pub advertise_upcall_vector: bool,
    /// `XENVER_guest_handle`: the domain's UUID.
    pub handle: [u8; 16],
}

impl Config {
    pub const fn new(insn: HypercallInsn) -> Self {
        Config {
            insn,
            domid: 1,
            version: (4, 15),
            console_pfn: None,
            store_pfn: None,
            grant_frames_pfn: None,
            boot_utc_ns: 0,
            tsc_stable: true,
            advertise_upcall_vector: false,
            handle: [0; 16],
        }
    }
}

/// What a blocked vCPU waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    None,
    /// `SCHEDOP_block`: any event for this vCPU.
    Events,
    /// `SCHEDOP_poll`: one of these ports pending, or the timeout.
    Poll {
        ports: heapless::Vec<u16, MAX_POLL>,
        timed_out: bool,
    },
}

/// A guest area registered by virtual address, translated once: it may straddle a page, so
/// it is kept as two physical pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Area {
    pub first: u64,
    pub first_len: u64,
    pub rest: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct VcpuState {
    pub vcpu_info: Option<u64>,
    pub upcall_vector: Option<u8>,
    pub runstate: Option<Area>,
    pub time_area: Option<u64>,
    pub timers: timer::Timers,
    pub wait: Wait,
}

impl VcpuState {
    const fn new() -> Self {
        VcpuState {
            vcpu_info: None,
            upcall_vector: None,
            runstate: None,
            time_area: None,
            timers: timer::Timers::new(),
            wait: Wait::None,
        }
    }
}

/// The Xen personality of one VM.
pub struct Xen {
    pub(crate) cfg: Config,
    pub(crate) clock: Option<TimeBase>,
    pub(crate) shared_info: Option<u64>,
    /// `HVM_PARAM_CALLBACK_IRQ` as the guest set it, and the vector it selects (type 2).
    pub(crate) callback_raw: u64,
    pub(crate) callback_vector: Option<u8>,
    pub(crate) vcpus: [VcpuState; MAX_VCPUS as usize],
    pub(crate) ports: evtchn::Ports,
    pub(crate) hypercall_page: Option<u64>,
    pub(crate) e9: heapless::Vec<u8, 120>,
    pub(crate) stats: stats::Stats,
    pub(crate) gnttab: gnttab::GrantTable,
    pub(crate) store: xenstore::Store,
    /// The store's ring was handed to the guest (`HVM_PARAM_STORE_PFN` read).
    pub(crate) store_attached: bool,
    /// The VM's disks, as virtual block devices.
    pub(crate) vbds: heapless::Vec<blkback::Vbd, { blkback::MAX_VBDS }>,
    /// A shutdown the host asked for, written to `control/shutdown` once the store is up.
    pub(crate) shutdown: Option<virt::personality::ShutdownKind>,
}

impl Xen {
    /// A frame this personality keeps for itself: the console and store rings and the pages
    /// behind aliased grant frames.
    pub(crate) fn is_reserved_pfn(&self, pfn: u64) -> bool {
        let c = &self.cfg;
        c.console_pfn == Some(pfn)
            || c.store_pfn == Some(pfn)
            || c.grant_frames_pfn
                .is_some_and(|b| (b..b + u64::from(MAX_GRANT_FRAMES)).contains(&pfn))
    }

    /// A VM's Xen personality. It is a few tens of KiB: place it in the VM object, not on a
    /// small stack.
    pub fn new(cfg: Config) -> Self {
        Xen {
            cfg,
            clock: None,
            shared_info: None,
            callback_raw: 0,
            callback_vector: None,
            vcpus: [const { VcpuState::new() }; MAX_VCPUS as usize],
            ports: evtchn::Ports::new(&cfg),
            hypercall_page: None,
            e9: heapless::Vec::new(),
            stats: stats::Stats::new(),
            gnttab: gnttab::GrantTable::new(),
            store: xenstore::Store::new(cfg.domid),
            vbds: heapless::Vec::new(),
            shutdown: None,
            store_attached: false,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// vCPUs of this VM that the ABI can address.
    pub(crate) fn nr_vcpus(host: &dyn Host) -> u32 {
        host.vcpu_count().min(MAX_VCPUS)
    }

    /// The pvclock tuple, taken from the host on first use.
    pub(crate) fn clock(&mut self, host: &dyn Host) -> TimeBase {
        if let Some(c) = self.clock {
            return c;
        }
        let c = TimeBase::new(
            host.tsc_hz(),
            host.tsc(),
            host.now_ns(),
            self.cfg.tsc_stable,
        );
        self.clock = Some(c);
        c
    }

    /// Xen system time now (the clock the guest reads and its timer deadlines use).
    pub fn system_time(&mut self, host: &dyn Host) -> u64 {
        self.clock(host).system_time_at(host.tsc())
    }

    /// Where `vcpu`'s vcpu_info lives now: where it registered one, else its legacy slot.
    pub(crate) fn vcpu_info_gpa(&self, vcpu: u32) -> Option<u64> {
        let st = self.vcpus.get(vcpu as usize)?;
        st.vcpu_info.or_else(|| {
            (vcpu < shared_info::LEGACY_VCPUS)
                .then_some(())
                .and(self.shared_info)
                .map(|si| si + u64::from(vcpu) * shared_info::VCPU_INFO_SIZE)
        })
    }

    /// Hypercall counts by number (index = hypercall number; the last slot collects numbers
    /// beyond the table).
    pub fn hypercall_counts(&self) -> &[u32; stats::NR_COUNTED] {
        &self.stats.calls
    }

    /// Every (hypercall, sub-op) answered `-ENOSYS` so far, with counts.
    pub fn unimplemented(&self) -> &[UnimplementedCount] {
        &self.stats.unimpl
    }

    /// Unimplemented calls seen for the first time since the last call, oldest first: log each
    /// once. A burst larger than the queue is counted in [`Xen::unimplemented_log_dropped`].
    pub fn take_unimplemented(&mut self) -> Option<Unimplemented> {
        self.stats.first_seen.pop_front()
    }

    pub fn unimplemented_log_dropped(&self) -> u32 {
        self.stats.log_dropped
    }

    /// A port the guest notified whose other end is an in-hypervisor backend (xenstore,
    /// blkback, netback); the console port is drained internally and never listed.
    pub fn take_backend_kick(&mut self) -> Option<u32> {
        self.ports.take_kick()
    }

    /// Binds an unbound port the guest allocated for `remote_dom` 0 (`EVTCHNOP_alloc_unbound`)
    /// to the in-hypervisor backend, as the backend reads its `event-channel` key.
    pub fn backend_bind(&mut self, port: u32) -> Result<(), Errno> {
        self.ports.backend_bind(port)
    }

    /// Backend → guest: marks `port` pending and delivers the upcall.
    pub fn notify_guest(
        &mut self,
        port: u32,
        mem: &dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Result<(), Errno> {
        if port == 0 || port >= MAX_PORTS || !self.ports.is_bound(port) {
            return Err(Errno::EINVAL);
        }
        evtchn::set_pending(self, mem, host, port);
        Ok(())
    }

    /// This domain's xenstore, for backends to publish and read nodes (absolute paths).
    /// After changing it, call [`Xen::store_kick`] so the guest sees the watch events.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves the store ring (queued watch events included) and notifies the guest if it got
    /// anything.
    pub fn store_kick(&mut self, mem: &dyn GuestMemory, host: &mut dyn Host) {
        xenstore_service(self, mem, host);
    }

    /// Writes out port-0xE9 bytes still waiting for a newline (call before the VM ends).
    pub fn flush_console(&mut self, host: &mut dyn Host) {
        console::flush_e9(self, host);
    }
}

/// The guest notified the store port, or a backend changed the store.
pub(crate) fn xenstore_service(x: &mut Xen, mem: &dyn GuestMemory, host: &mut dyn Host) {
    if !x.store_attached {
        return;
    }
    // A backend that reacts to the guest's change changes the store in turn; its watch
    // events go out in the next round. Each backend change is a state step, so few rounds do.
    for _ in 0..4 {
        if x.store.service(mem) {
            evtchn::set_pending(x, mem, host, STORE_PORT);
        }
        if !blkback::store_changed(x, mem) {
            break;
        }
    }
}

/// Hands the store ring to the guest: a fresh connection and the domain's initial nodes.
pub(crate) fn xenstore_attach(x: &mut Xen, mem: &dyn GuestMemory, host: &dyn Host) {
    let Some(page) = x.cfg.store_pfn.and_then(|p| p.checked_mul(4096)) else {
        return;
    };
    if x.store_attached {
        return;
    }
    x.store_attached = true;
    let vcpus = Xen::nr_vcpus(host);
    x.store.attach(mem, page, vcpus, mem.size() / 1024);
    blkback::publish(x, host);
    write_shutdown(x);
}

/// Puts the host's shutdown request in `control/shutdown`, where Linux's xenbus watches.
fn write_shutdown(x: &mut Xen) {
    let Some(kind) = x.shutdown else { return };
    let mut p: xenstore::tree::Path = heapless::Vec::new();
    let _ = p.extend_from_slice(x.store.home());
    let _ = p.extend_from_slice(b"/control/shutdown");
    let value: &[u8] = match kind {
        virt::personality::ShutdownKind::PowerOff => b"poweroff",
        virt::personality::ShutdownKind::Reboot => b"reboot",
    };
    let _ = x.store.write(&p, value);
}

impl Personality for Xen {
    fn cpuid(&mut self, vcpu: &VcpuView, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        cpuid::leaf(&self.cfg, vcpu.index, leaf, subleaf)
    }

    fn rdmsr(
        &mut self,
        _vcpu: &VcpuView,
        msr: u32,
        value: &mut u64,
        _mem: &mut dyn GuestMemory,
        _host: &mut dyn Host,
    ) -> Action {
        match hypercall_page::rdmsr(self, msr) {
            Some(v) => {
                *value = v;
                Action::Done
            }
            None => Action::NotMine,
        }
    }

    fn wrmsr(
        &mut self,
        _vcpu: &VcpuView,
        msr: u32,
        value: u64,
        mem: &mut dyn GuestMemory,
        _host: &mut dyn Host,
    ) -> Action {
        match hypercall_page::wrmsr(self, msr, value, mem) {
            Ok(true) => Action::Done,
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
        if self.vbds.iter().any(|v| v.has_pending()) {
            blkback::resume(self, mem, host);
        }
        hypercall::dispatch(self, vcpu, regs, mem, host)
    }

    fn io(
        &mut self,
        _vcpu: &VcpuView,
        port: u16,
        size: u8,
        write: bool,
        data: &mut u32,
        host: &mut dyn Host,
    ) -> Action {
        console::io(self, port, size, write, *data, host)
    }

    fn timer_expired(&mut self, vcpu: u32, mem: &mut dyn GuestMemory, host: &mut dyn Host) {
        if self.vbds.iter().any(|v| v.has_pending()) {
            blkback::resume(self, mem, host);
        }
        timer::expired(self, vcpu, mem, host);
    }

    fn idle(&mut self, _vcpu: u32, mem: &mut dyn GuestMemory, host: &mut dyn Host) {
        if self.vbds.iter().any(|v| v.has_pending()) {
            blkback::resume(self, mem, host);
        }
    }

    fn has_pending_work(&self, vcpu: u32, mem: &dyn GuestMemory) -> bool {
        evtchn::has_pending_work(self, vcpu, mem)
    }

    fn request_shutdown(
        &mut self,
        kind: virt::personality::ShutdownKind,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> bool {
        if self.cfg.store_pfn.is_none() {
            return false;
        }
        // A guest whose xenbus is not up yet finds the request when it connects.
        self.shutdown = Some(kind);
        if self.store_attached {
            write_shutdown(self);
            xenstore_service(self, mem, host);
        }
        true
    }

    fn console_input(
        &mut self,
        bytes: &[u8],
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Option<usize> {
        console::input(self, bytes, mem, host)
    }
}
