//! Virtual machines: the platform every VM sees, its devices and its bus, exit dispatch, and
//! (on the target) the VM objects of this boot. Everything above the hardware is generic over
//! the vCPU ([`vcpu::Vcpu`]) and the machine ([`Machine`]), so it is tested on the host with
//! mocks of both; see `state` for the lock order.

pub mod alias;
pub mod bus;
pub mod console;
pub mod console_keys;
pub mod cpuid;
pub mod devices;
pub mod dispatch;
pub mod guest_atomic;
pub mod interrupts;
pub mod ioapic;
pub mod lapic;
pub mod lazy_eoi;
pub mod mmio;
pub mod outcome;
pub mod pci;
pub mod personality;
pub mod pit;
pub mod platform;
pub mod policy;
pub mod ram;
pub mod rtc;
pub mod state;
pub mod stats;
pub mod trace;
pub mod uart;

#[cfg(target_os = "none")]
pub mod console_input;
#[cfg(target_os = "none")]
pub mod create;
#[cfg(target_os = "none")]
mod from_disk;
#[cfg(target_os = "none")]
pub mod host;
#[cfg(target_os = "none")]
pub mod report;
#[cfg(target_os = "none")]
pub mod shutdown;

#[cfg(test)]
mod device_fuzz;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
#[cfg(test)]
mod tests;

/// What the exit path needs of the physical machine under the VMs.
pub trait Machine {
    /// Host TSC now.
    fn tsc(&self) -> u64;
    fn tsc_hz(&self) -> u64;
    /// Host monotonic time in nanoseconds.
    fn now_ns(&self) -> u64;
    /// Wall-clock seconds since the epoch.
    fn unix_secs(&self) -> u64;
    /// The host CPU's CPUID leaf, which guests see filtered.
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Takes the host interrupt that made the guest exit (it is still pending in the host).
    fn take_host_interrupt(&self);
    /// Interrupts pCPU `cpu` so that the vCPU it runs leaves guest mode (one interrupt in
    /// flight per pCPU is enough; more are coalesced).
    fn kick_cpu(&self, cpu: usize);
    /// Wakes pCPU `cpu` if it is idle, so that it looks at its queue.
    fn wake_cpu(&self, cpu: usize);
    /// A line on the hypervisor's console.
    fn print(&self, args: core::fmt::Arguments<'_>);
    /// Maps `[gpa, gpa + size)` to `[hpa, hpa + size)` in `npt`, RWX, with large pages where
    /// aligned, splitting a large page around a smaller range (`None`: unmaps the range),
    /// taking table frames from the host's allocator; false when out of memory or misaligned.
    fn nested_map(
        &self,
        npt: &mut vcpu::NestedPageTable,
        gpa: u64,
        hpa: Option<u64>,
        size: u64,
    ) -> bool;
    /// VM `vm`'s disk `index` (manifest order), if it was opened.
    fn disk(&self, vm: u8, index: u32) -> Option<virt::block::DiskInfo>;
    /// Runs `io` on VM `vm`'s disk `index` under its lock.
    fn disk_io(
        &self,
        vm: u8,
        index: u32,
        io: &mut dyn FnMut(&mut dyn virt::block::Volume) -> Result<(), virt::block::VolumeError>,
    ) -> Result<(), virt::block::VolumeError>;
    /// Prints a line of `vm`'s console (`[vm] text`) and records on the log channel, in the
    /// same order, the next number from `seq` and `at_ns`, the host time the guest wrote it.
    /// Without `ends_line` the text is the start of a line that stays open: the next text of
    /// the same VM continues it (no new number), anything else printed first ends it.
    fn guest_line(
        &self,
        vm: &str,
        seq: &core::sync::atomic::AtomicU32,
        text: core::fmt::Arguments<'_>,
        ends_line: bool,
        at_ns: u64,
    );
}
