//! The seam between the kernel's exit loop and a guest-facing ABI (Xen, Hyper-V).
//!
//! A personality is a pure state machine: it sees guest registers, guest memory and the
//! [`Host`] services, and answers each exit it recognises with an [`Action`]. It holds no
//! `unsafe`, allocates nothing per exit, and is driven the same way on the host in tests.
//! The kernel asks the platform (x2APIC, UART, PM ports) first, then the personality, then
//! falls back to architectural defaults (#GP for unknown MSRs, all-ones for unknown ports).

pub use crate::action::{Action, StopReason};
use crate::{ControlRegs, GuestMemory, GuestRegs, MemError};

/// The instruction a guest traps to the hypervisor with, which depends on the CPU vendor under
/// the guest; the hypercall pages of both ABIs are built around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HypercallInsn {
    /// Intel VMX.
    Vmcall,
    /// AMD SVM.
    Vmmcall,
}

/// What the vCPU looked like at the exit, for decoding guest-virtual pointers.
#[derive(Clone, Copy, Debug)]
pub struct VcpuView {
    /// Index of the vCPU in its VM (0-based).
    pub index: u32,
    pub cpl: u8,
    pub ctl: ControlRegs,
    /// 64-bit code segment (CS.L with EFER.LMA): decides the hypercall register convention.
    pub long_mode: bool,
}

/// Why the kernel would not make a guest page an alias (see [`Host::alias_page`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AliasError {
    /// This kernel (or test host) does not alias pages.
    Unsupported,
    /// The page is RAM, a device's, beyond what the nested tables map, or `backing` is not
    /// one of the VM's reserved pages.
    Refused,
    /// The VM has as many aliases as the kernel keeps.
    Full,
}

/// What the host asks of a guest when it wants it gone (Xen's `control/shutdown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ShutdownKind {
    PowerOff,
    Reboot,
}

/// Services the kernel offers a personality. All calls are cheap and never block.
pub trait Host {
    /// Host monotonic time in nanoseconds (TSC based).
    fn now_ns(&self) -> u64;
    /// Host TSC frequency in Hz.
    fn tsc_hz(&self) -> u64;
    /// Host TSC now (guests see host TSC + their offset, which is 0 unless stated).
    fn tsc(&self) -> u64;
    /// Number of vCPUs of this VM.
    fn vcpu_count(&self) -> u32;
    /// Arms (or with `None` cancels) this personality's one-shot timer for `vcpu` at host
    /// time `deadline_ns`; when it expires the kernel calls [`Personality::timer_expired`].
    fn set_timer(&mut self, vcpu: u32, deadline_ns: Option<u64>);
    /// Delivers `vector` to `vcpu` through its virtual local APIC (as a fixed interrupt,
    /// edge triggered). `needs_eoi = false` is for vectors the ABI defines as not EOI'd
    /// (e.g. Xen's per-vCPU upcall vector, Hyper-V auto-EOI SINTs).
    fn raise_vector(&mut self, vcpu: u32, vector: u8, needs_eoi: bool);
    /// `vcpu` may have become runnable (an event arrived while it was blocked).
    fn kick(&mut self, vcpu: u32);
    /// Bytes the guest wrote to the hypervisor console (prefixed with the VM name by the kernel).
    fn console_write(&mut self, bytes: &[u8]);

    /// Makes the guest-physical page `gpa`, which lies outside the VM's RAM, a second name for
    /// the RAM page `backing`, one the memory maps keep from the guest (Xen's grant-table
    /// frames, which the guest places where it likes, often above its RAM). An earlier alias
    /// at `gpa` is replaced. The personality reads the page at `backing`.
    fn alias_page(&mut self, gpa: u64, backing: u64) -> Result<(), AliasError> {
        let _ = (gpa, backing);
        Err(AliasError::Unsupported)
    }

    /// Removes the alias at `gpa`, if there is one; the page is unbacked again.
    fn unalias_page(&mut self, gpa: u64) {
        let _ = gpa;
    }

    /// The VM's disk `index` (manifest order): its size in sectors and whether it is
    /// read-only; `None` past the last disk (or for one that could not be opened).
    fn disk(&self, index: u32) -> Option<crate::block::DiskInfo> {
        let _ = index;
        None
    }

    /// Runs `io` on the VM's disk `index`, which no one else uses meanwhile. Backends call it
    /// once per request: the I/O completes (a flush is durable) before it returns.
    fn disk_io(
        &mut self,
        index: u32,
        io: &mut dyn FnMut(&mut dyn crate::block::Volume) -> Result<(), crate::block::VolumeError>,
    ) -> Result<(), crate::block::VolumeError> {
        let _ = (index, io);
        Err(crate::block::VolumeError::Io)
    }

    /// Atomically ORs `bits` into the 8-byte-aligned guest word at `gpa`; returns the old value.
    ///
    /// Guest-shared bitmaps (Xen event-channel pending/mask words, vcpu_info flags) are
    /// updated by the guest's other vCPUs while the hypervisor sets bits, so a plain
    /// read-modify-write loses their updates. The kernel overrides this with a locked RMW on
    /// its mapping of guest RAM. The default goes through `mem` non-atomically: right for host
    /// tests and for a guest whose vCPUs are all stopped while the personality runs.
    fn guest_fetch_or_u64(
        &mut self,
        mem: &dyn GuestMemory,
        gpa: u64,
        bits: u64,
    ) -> Result<u64, MemError> {
        let old = mem.read_u64(gpa)?;
        mem.write_u64(gpa, old | bits)?;
        Ok(old)
    }

    /// Atomically ANDs `bits` into the 8-byte-aligned guest word at `gpa`; returns the old
    /// value. Same contract as [`Host::guest_fetch_or_u64`].
    fn guest_fetch_and_u64(
        &mut self,
        mem: &dyn GuestMemory,
        gpa: u64,
        bits: u64,
    ) -> Result<u64, MemError> {
        let old = mem.read_u64(gpa)?;
        mem.write_u64(gpa, old & bits)?;
        Ok(old)
    }

    /// Whether `vcpu` has been started (INIT/SIPI or boot) and not taken down; `None` when
    /// the kernel does not track it (ABIs then report the query as unimplemented).
    fn vcpu_is_up(&self, vcpu: u32) -> Option<bool> {
        let _ = vcpu;
        None
    }
}

/// A guest-facing ABI.
pub trait Personality {
    /// CPUID leaves the ABI owns (the hypervisor range 0x4000_0000..=0x4000_01FF);
    /// `None` leaves the leaf to the platform.
    fn cpuid(&mut self, vcpu: &VcpuView, leaf: u32, subleaf: u32) -> Option<[u32; 4]>;
    /// RDMSR: [`Action::Done`] with the value in `value`, [`Action::Fault`], or
    /// [`Action::NotMine`] for an MSR that is not this ABI's.
    fn rdmsr(
        &mut self,
        vcpu: &VcpuView,
        msr: u32,
        value: &mut u64,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Action;
    /// WRMSR: [`Action::Done`], [`Action::Fault`], [`Action::Stop`] for a write to a crash
    /// or reset register, or [`Action::NotMine`].
    fn wrmsr(
        &mut self,
        vcpu: &VcpuView,
        msr: u32,
        value: u64,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Action;
    /// VMCALL/VMMCALL: registers in and out per the ABI's convention.
    fn hypercall(
        &mut self,
        vcpu: &VcpuView,
        regs: &mut GuestRegs,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Action;
    /// Port I/O the platform did not claim (e.g. Xen's 0xE9 early console).
    /// `data` holds the written value or receives the read value.
    fn io(
        &mut self,
        vcpu: &VcpuView,
        port: u16,
        size: u8,
        write: bool,
        data: &mut u32,
        host: &mut dyn Host,
    ) -> Action;
    /// The one-shot timer armed with [`Host::set_timer`] for `vcpu` expired.
    fn timer_expired(&mut self, vcpu: u32, mem: &mut dyn GuestMemory, host: &mut dyn Host);
    /// `vcpu` executed HLT: work deferred until the guest has nothing else to do (a backend's
    /// queued requests) is done now, before the vCPU waits for an interrupt.
    fn idle(&mut self, vcpu: u32, mem: &mut dyn GuestMemory, host: &mut dyn Host) {
        let _ = (vcpu, mem, host);
    }
    /// Whether a vCPU blocked by [`Action::Block`] has something to wake for.
    fn has_pending_work(&self, vcpu: u32, mem: &dyn GuestMemory) -> bool;
    /// Where `vcpu` takes "no EOI required" hints: the guest-physical address of a 32-bit
    /// word whose bit 0 the hypervisor may set as it injects an interrupt, and which the guest
    /// clears instead of writing its EOI (Hyper-V's VP assist page). `None`: not offered.
    fn eoi_assist(&self, _vcpu: u32) -> Option<u64> {
        None
    }
    /// The host asks the guest to shut down (or reboot) by itself, the way this ABI does it.
    /// False when the ABI (or this guest's configuration) has no way to ask; the kernel then
    /// decides alone.
    fn request_shutdown(
        &mut self,
        kind: ShutdownKind,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> bool {
        let _ = (kind, mem, host);
        false
    }
    /// Bytes typed on the host's console for this guest, delivered the way this ABI's console
    /// takes input (Xen: the PV console ring's `in` side). Returns how many were taken (the
    /// rest waits for room), or `None` when the ABI has no console of its own for this guest
    /// and the kernel's emulated UART takes them instead.
    fn console_input(
        &mut self,
        bytes: &[u8],
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Option<usize> {
        let _ = (bytes, mem, host);
        None
    }
}
