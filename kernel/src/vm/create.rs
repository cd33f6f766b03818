//! The VMs of this boot: their memory, nested tables and vCPUs, created once from the
//! manifest and kept in fixed slots (no allocator in the hypervisor).
#![expect(unsafe_code)]
// UNSAFETY: boot modules (guest kernels, initrds) are read in place from reserved, identity-
// mapped memory.

use super::devices::IoApicDevice;
use super::lapic::VLapic;
use super::personality::Instance;
use super::state::{
    APIC_BUS_HZ, NOT_RUNNING, REFLECTED_EXCEPTIONS, VcpuSlot, VcpuState, Vm, VmInfo,
};
use crate::manifest::{Personality, VmSpec};
use crate::mm::phys::{self, Frames};
use crate::sched::policy::{CpuQueue, VcpuRef, home_cpu};
#[cfg(any(feature = "xen", feature = "hyperv"))]
use alloc::boxed::Box;
use boot::mbinfo::MachineInfo;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::{Mutex, Once};
use vcpu::{AnyVcpu, HostTables, InitialState, NestedPageTable, RamRegion, Vcpu, VcpuConfig};

pub const MAX_VMS: usize = crate::manifest::MAX_VMS;
pub const MAX_CPUS: usize = crate::arch::gdt::MAX_CPUS;
/// Guest RAM must stay below the local APIC / IOAPIC / PCI hole.
pub const MAX_LOW_RAM: u64 = 3 << 30;
/// Xen's reserved pages at the top of RAM: 0 the console ring, 1 the xenstore ring, from 8 the
/// pages behind grant-table frames placed outside RAM.
#[cfg(feature = "xen")]
const GRANT_FRAMES_PAGE: u64 = 8;
#[cfg(feature = "xen")]
const _: () =
    assert!(GRANT_FRAMES_PAGE + abi_xen::MAX_GRANT_FRAMES as u64 <= boot::guest::layout::HV_PAGES);

/// What the pCPU running a vCPU keeps of it between turns.
pub struct VcpuCell {
    pub state: VcpuState<AnyVcpu>,
    /// FPU/SSE/AVX and DR0-3, which the vCPU layer leaves to the kernel.
    pub ext: crate::arch::fpu::ExtState,
    /// Set when the VM starts over; the vCPU's own pCPU applies it at its next turn (VMX
    /// state can only be changed where it is loaded).
    pub reset: Option<InitialState>,
    /// The VM's `nested_epoch` when this vCPU's nested TLB was last flushed.
    pub nested_epoch: u32,
}

pub type VmSlot = Vm<VcpuCell>;

// A personality's value passes through the stack of `make_personality` on its way to the heap
// (a restart runs on whichever pCPU the VM's last vCPU left); that copy must leave most of the
// stack to the rest of the call chain.
#[cfg(feature = "xen")]
const _: () = assert!(core::mem::size_of::<abi_xen::Xen>() < crate::arch::stack::STACK_BYTES / 2);
#[cfg(feature = "hyperv")]
const _: () =
    assert!(core::mem::size_of::<abi_hyperv::HyperV>() * 2 < crate::arch::stack::STACK_BYTES / 2);

/// What a VM is built from, kept to build it again when it restarts.
pub struct BootFiles {
    pub spec: VmSpec,
    pub kernel: &'static [u8],
    pub initrd: Option<&'static [u8]>,
    pub amd: bool,
}

/// Per VM slot, set once at creation.
pub static BOOT: [Once<BootFiles>; MAX_VMS] = [const { Once::new() }; MAX_VMS];
/// The VM slots, made on the boot heap at first use: as a static array their idle state (a
/// few hundred bytes that are not zero in 435 KiB) would be initialised data in the image,
/// nearly half of it.
static VMS: Once<&'static [VmSlot]> = Once::new();

pub fn vms() -> &'static [VmSlot] {
    VMS.call_once(|| {
        let slots: alloc::vec::Vec<VmSlot> = (0..MAX_VMS).map(|_| Vm::new()).collect();
        alloc::boxed::Box::leak(slots.into_boxed_slice())
    })
}
pub static VM_COUNT: AtomicUsize = AtomicUsize::new(0);
pub static LIVE_VMS: AtomicUsize = AtomicUsize::new(0);
pub static QUEUES: [Mutex<CpuQueue>; MAX_CPUS] = [const { Mutex::new(CpuQueue::new()) }; MAX_CPUS];
pub static PERCPU: [Once<vcpu::PerCpu>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

pub fn vm(index: u8) -> Option<&'static VmSlot> {
    vms()
        .get(usize::from(index))
        .filter(|_| usize::from(index) < VM_COUNT.load(Ordering::Acquire))
}

pub fn slot(r: VcpuRef) -> Option<&'static VcpuSlot> {
    vm(r.vm)?.vcpu(r.vcpu)
}

pub fn mark_running(r: VcpuRef, cpu: Option<usize>) {
    if let Some(s) = slot(r) {
        s.running_on
            .store(cpu.map_or(NOT_RUNNING, |c| c as u8), Ordering::Release);
    }
}

pub fn running_on(r: VcpuRef) -> Option<usize> {
    let c = slot(r)?.running_on.load(Ordering::Acquire);
    (c != NOT_RUNNING).then_some(usize::from(c))
}

#[derive(Debug)]
pub enum CreateError {
    TooMuchMemory {
        mib: u32,
    },
    OutOfMemory {
        what: &'static str,
    },
    MissingModule {
        name: heapless::String<{ crate::manifest::MAX_FILE }>,
    },
    Guest(boot::guest::GuestLoadError),
    TooManyVcpus {
        asids: u32,
    },
    Vcpu(vcpu::Error),
    Personality(&'static str),
    Bus(super::bus::ClaimError),
    /// A VM without `kernel` whose first disk holds nothing bootable (the reason names the
    /// disk and what was missing).
    FromDisk(alloc::string::String),
}

impl core::fmt::Display for CreateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CreateError::TooMuchMemory { mib } => {
                write!(
                    f,
                    "{mib} MiB of RAM: guests may have at most {} MiB for now",
                    MAX_LOW_RAM >> 20
                )
            }
            CreateError::OutOfMemory { what } => write!(f, "out of host memory for {what}"),
            CreateError::MissingModule { name } => write!(f, "module '{name}' was not loaded"),
            CreateError::Guest(e) => write!(f, "{e}"),
            CreateError::TooManyVcpus { asids } => {
                write!(
                    f,
                    "more vCPUs than this CPU has address-space tags ({asids})"
                )
            }
            CreateError::Vcpu(e) => write!(f, "vCPU creation failed: {e:?}"),
            CreateError::Personality(why) => write!(f, "personality: {why}"),
            CreateError::Bus(e) => write!(f, "device ranges: {e:?}"),
            CreateError::FromDisk(why) => write!(f, "cannot boot from its disk: {why}"),
        }
    }
}

/// Enables VMX/SVM on this pCPU and records its state.
pub fn enable_cpu(cpu: usize, vendor: &vcpu::Vendor) -> Result<(), vcpu::Error> {
    let percpu = vcpu::enable(vendor, cpu as u32, &mut Frames)?;
    crate::arch::fpu::init_cpu();
    PERCPU[cpu].call_once(|| percpu);
    Ok(())
}

/// Builds VM `index` from its manifest entry: RAM, nested tables, the guest image, vCPUs.
/// Runs on the BSP before any pCPU schedules.
pub fn create(
    index: usize,
    spec: &VmSpec,
    info: &MachineInfo<'_>,
    vendor: &vcpu::Vendor,
    next_tag: &mut u16,
    global_vcpu: &mut usize,
) -> Result<(), CreateError> {
    let size = u64::from(spec.memory_mib) << 20;
    if size > MAX_LOW_RAM {
        return Err(CreateError::TooMuchMemory {
            mib: spec.memory_mib,
        });
    }
    let slot = vms()
        .get(index)
        .ok_or(CreateError::Personality("no such VM slot"))?;
    // Not zeroed here: each 2 MiB is zeroed on its first use (`vm::ram`).
    let hpa = phys::alloc_unzeroed(size / 4096, 2 << 20)
        .map_err(|_| CreateError::OutOfMemory { what: "guest RAM" })?;
    slot.ram_chunks.reset();
    let ram = RamRegion {
        hpa_base: hpa,
        size,
        chunks: Some(&slot.ram_chunks),
    };
    let mut npt = NestedPageTable::new(vendor.nested_format(), &mut HostTables(&mut Frames))
        .map_err(CreateError::Vcpu)?;

    let (image, initrd, spec) = if spec.kernel.is_empty() {
        let b = super::from_disk::boot_files(index, spec).map_err(CreateError::FromDisk)?;
        crate::println!("vm {}: boots {}", spec.name, b.described);
        let mut booted = spec.clone();
        booted.cmdline = b.cmdline.as_str().try_into().map_err(|_| {
            CreateError::FromDisk(alloc::format!(
                "the boot entry's command line is longer than {} bytes",
                crate::manifest::MAX_CMDLINE
            ))
        })?;
        (b.kernel, b.initrd, booted)
    } else {
        let kernel = info
            .module(&spec.kernel)
            .ok_or_else(|| CreateError::MissingModule {
                name: spec.kernel.clone(),
            })?;
        // SAFETY: module memory is reserved for ever and identity mapped.
        let image = unsafe { kernel.bytes() };
        let initrd = match &spec.initrd {
            Some(name) => {
                let m = info
                    .module(name)
                    .ok_or_else(|| CreateError::MissingModule { name: name.clone() })?;
                // SAFETY: as for the kernel module.
                Some(unsafe { m.bytes() })
            }
            None => None,
        };
        (image, initrd, spec.clone())
    };
    let spec = &spec;
    let boot_entry = load_guest(spec, ram, image, initrd)?;
    if !super::ram::map_loaded(&mut npt, ram, &super::host::HostMachine) {
        return Err(CreateError::OutOfMemory {
            what: "its nested page tables",
        });
    }
    crate::println!(
        "vm {}: PVH entry {:#x}, start_info {:#x}, RSDP {:#x}, RAM at host {:#x}",
        spec.name,
        boot_entry.entry,
        boot_entry.ebx,
        boot_entry.rsdp,
        hpa
    );
    // Xen PVH guests have none (as Xen builds them); Hyper-V guests and plain PC hardware do.
    let has_ioapic = spec.personality != Personality::Xen;
    BOOT[index].call_once(|| BootFiles {
        spec: spec.clone(),
        kernel: image,
        initrd,
        amd: matches!(vendor, vcpu::Vendor::Svm(_)),
    });

    let info = slot.info.call_once(|| VmInfo {
        index: index as u8,
        name: spec.name.clone(),
        personality: spec.personality,
        ram,
        vcpus: spec.vcpus,
    });
    slot.personality.lock().instance = make_personality(
        index as u8,
        slot,
        info,
        matches!(vendor, vcpu::Vendor::Svm(_)),
    )?;
    let devices = &slot.devices;
    if has_ioapic {
        devices.ioapic.call_once(IoApicDevice::new);
    }
    if spec.personality == Personality::None {
        // One NVMe controller per disk the storage layer opened (a damaged one was left out
        // and is not offered).
        let m = super::host::HostMachine;
        let disks: heapless::Vec<(u32, u64, bool), { super::pci::MAX_NVME }> = (0
            ..spec.disks.len() as u32)
            .filter_map(|d| {
                let info = super::Machine::disk(&m, index as u8, d)?;
                Some((d, info.sectors, info.read_only))
            })
            .collect();
        let bus =
            super::pci::PciBus::new(&disks, spec.vcpus).map_err(|_| CreateError::OutOfMemory {
                what: "its NVMe controllers' buffers",
            })?;
        devices.pci.call_once(|| bus);
    }
    let mut bus = super::bus::Bus::new();
    devices.attach(&mut bus).map_err(CreateError::Bus)?;
    slot.bus.call_once(|| bus);
    let nested_root = npt.root();
    *slot.npt.lock() = Some(npt);
    slot.end.lock().vcpus_left = spec.vcpus;
    let asids = match vendor {
        vcpu::Vendor::Svm(c) => c.asids,
        vcpu::Vendor::Vmx(_) => u32::from(u16::MAX),
    };
    let pcpus = crate::arch::smp::ONLINE.load(Ordering::Acquire);
    let percpu = PERCPU[0]
        .get()
        .ok_or(CreateError::Vcpu(vcpu::Error::Unsupported))?;
    for v in 0..spec.vcpus {
        if u32::from(*next_tag) >= asids {
            return Err(CreateError::TooManyVcpus { asids });
        }
        let initial = if v == 0 {
            boot_entry.initial_state()
        } else {
            InitialState::WaitForSipi
        };
        let cfg = VcpuConfig {
            ram,
            nested_root,
            tag: *next_tag,
            initial,
        };
        *next_tag += 1;
        let mut vcpu = AnyVcpu::new(percpu, &mut Frames, &cfg).map_err(CreateError::Vcpu)?;
        // Guests see the hypervisor's ports and MSRs only where the platform emulates them;
        // everything exits by default, which is what we want. #DB and #AC exit too: a guest
        // whose IDT makes either re-fault would otherwise lock the pCPU inside the CPU's
        // event delivery, with no exit ever taken; the exit loop reflects them.
        vcpu.set_exception_intercepts(REFLECTED_EXCEPTIONS);
        if spec.personality == Personality::None
            && let Some(port) = crate::arch::host_acpi::pm_timer_port()
        {
            for p in port..=port.saturating_add(3) {
                vcpu.set_io_intercept(p, false);
            }
        }
        vcpu.unload();
        let lapic = new_lapic(spec.personality, v, crate::arch::tsc::hz());
        let vs = &slot.vcpus[usize::from(v)];
        vs.publish_apic(lapic.addressing());
        vs.started.store(v == 0, Ordering::Release);
        let area_frames = crate::arch::fpu::area_bytes().div_ceil(4096);
        let area = phys::alloc_zeroed(area_frames, 4096).map_err(|_| CreateError::OutOfMemory {
            what: "a vCPU's register save area",
        })?;
        *slot.cells[usize::from(v)].lock() = Some(VcpuCell {
            state: VcpuState::new(vcpu, lapic),
            ext: crate::arch::fpu::ExtState::new(area),
            reset: None,
            nested_epoch: slot.nested_epoch.load(Ordering::Acquire),
        });
        let home = home_cpu(*global_vcpu, pcpus);
        *global_vcpu += 1;
        vs.home.store(home as u8, Ordering::Release);
        let r = VcpuRef {
            vm: index as u8,
            vcpu: v,
        };
        let mut q = QUEUES[home].lock();
        let queued = if v == 0 {
            q.push_ready(r)
        } else {
            q.block(r, None)
        };
        queued.map_err(|_| CreateError::TooManyVcpus { asids })?;
    }
    slot.live.store(true, Ordering::Release);
    LIVE_VMS.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// vCPU `v`'s APIC at power-on: the enlightened faces hand it over in x2APIC mode, as their
/// firmware may; plain PC hardware starts in xAPIC mode, as a board's firmware leaves it.
fn new_lapic(personality: Personality, v: u8, tsc_hz: u64) -> VLapic {
    let (id, bsp) = (u32::from(v), v == 0);
    match personality {
        Personality::None => VLapic::new_xapic(id, bsp, tsc_hz, APIC_BUS_HZ),
        _ => VLapic::new(id, bsp, tsc_hz, APIC_BUS_HZ),
    }
}

/// The VM's personality, configured for this host and this VM's memory.
fn make_personality(
    index: u8,
    slot: &'static VmSlot,
    info: &'static VmInfo,
    amd: bool,
) -> Result<Instance, CreateError> {
    let _ = (index, slot, amd);
    match info.personality {
        Personality::None => Ok(Instance::None),
        #[cfg(feature = "xen")]
        Personality::Xen => {
            let insn = if amd {
                abi_xen::HypercallInsn::Vmmcall
            } else {
                abi_xen::HypercallInsn::Vmcall
            };
            let mut cfg = abi_xen::Config::new(insn);
            let layout = boot::guest::VmLayout::new(info.ram.size, u32::from(info.vcpus))
                .map_err(|_| CreateError::Personality("guest memory layout"))?;
            // The console and xenstore rings live in the hypervisor pages at the top of guest
            // RAM.
            cfg.console_pfn = Some(layout.hv_pages().start >> 12);
            cfg.store_pfn = Some((layout.hv_pages().start >> 12) + 1);
            cfg.grant_frames_pfn = Some((layout.hv_pages().start >> 12) + GRANT_FRAMES_PAGE);
            cfg.domid = u16::from(index) + 1;
            cfg.boot_utc_ns = crate::arch::tsc::boot_unix_ns();
            Ok(Instance::Xen(Box::new(abi_xen::Xen::new(cfg))))
        }
        #[cfg(feature = "hyperv")]
        Personality::HyperV => {
            let insn = if amd {
                abi_hyperv::HypercallInsn::Vmmcall
            } else {
                abi_hyperv::HypercallInsn::Vmcall
            };
            let cfg = abi_hyperv::Config {
                insn,
                apic_hz: Some(APIC_BUS_HZ),
                tsc_offset: 0,
            };
            let mut console = super::uart::LineBuf::new();
            let host = super::personality::KernelHost {
                vm: slot,
                info,
                machine: &super::host::HostMachine,
                console: &mut console,
            };
            abi_hyperv::HyperV::new(cfg, &host)
                .map(|h| Instance::HyperV(Box::new(h)))
                .map_err(|_| CreateError::Personality("Hyper-V: unsupported vCPU count"))
        }
        #[allow(unreachable_patterns)]
        _ => Err(CreateError::Personality(
            "this image was built without that personality",
        )),
    }
}

/// Loads the kernel (and initrd) into `ram`, which must be zeroed, with the
/// ACPI tables of the VM's personality. An ELF boots through PVH, a bzImage through the Linux
/// protocol (xtask checked it is one of them).
fn load_guest(
    spec: &VmSpec,
    ram: RamRegion,
    image: &'static [u8],
    initrd: Option<&'static [u8]>,
) -> Result<boot::guest::BootEntry, CreateError> {
    let mem = super::ram::LoadingRam::new(ram, image, initrd);
    let acpi = match spec.personality {
        Personality::Xen => boot::guest::AcpiOptions::xen(),
        Personality::HyperV => boot::guest::AcpiOptions::hyperv(),
        Personality::None => boot::guest::AcpiOptions {
            pm_timer: Some(pm_timer_port()),
            ..boot::guest::AcpiOptions::hardware()
        },
    };
    let params = boot::guest::GuestParams {
        vcpus: u32::from(spec.vcpus),
        cmdline: spec.cmdline.as_bytes(),
        kernel: image,
        initrd,
        acpi,
    };
    if image.starts_with(b"\x7fELF") {
        boot::guest::load_pvh(&mem, &params)
    } else {
        boot::guest::load_linux(&mem, &params)
    }
    .map_err(CreateError::Guest)
}

/// The PM timer an unenlightened guest is told about: the host's, which it reads without an
/// exit (a read-only, free-running clock, like the TSC it already reads), or else the emulated
/// one.
fn pm_timer_port() -> u16 {
    crate::arch::host_acpi::pm_timer_port().unwrap_or(boot::guest::acpi::PM_TIMER_PORT)
}

/// Builds VM `index` again from its boot files, after all its vCPUs left the scheduler: RAM
/// zeroed and loaded, a new personality, devices at reset, each vCPU back to its initial
/// state (applied on its own pCPU), and the vCPUs queued again.
pub fn restart(index: u8) -> Result<(), CreateError> {
    let i = usize::from(index);
    let (Some(slot), Some(files)) = (vm(index), BOOT.get(i).and_then(Once::get)) else {
        return Err(CreateError::Personality("no such VM"));
    };
    let Some(info) = slot.info.get() else {
        return Err(CreateError::Personality("no such VM"));
    };
    let machine = super::host::HostMachine;
    // None of its vCPUs runs (all left the scheduler): its RAM leaves the nested tables and
    // will be zeroed again as it is used.
    if !super::ram::forget(slot, &machine) {
        return Err(CreateError::OutOfMemory {
            what: "its nested page tables",
        });
    }
    let entry = load_guest(&files.spec, info.ram, files.kernel, files.initrd)?;
    // The old personality's aliases go with it.
    if let Some(npt) = slot.npt.lock().as_mut() {
        slot.aliases
            .lock()
            .drain(|gpa| _ = super::Machine::nested_map(&machine, npt, gpa, None, 4096));
        if !super::ram::map_loaded(npt, info.ram, &machine) {
            return Err(CreateError::OutOfMemory {
                what: "its nested page tables",
            });
        }
        slot.nested_epoch.fetch_add(1, Ordering::AcqRel);
    }
    let instance = make_personality(index, slot, info, files.amd)?;
    {
        let mut p = slot.personality.lock();
        p.instance = instance;
        p.console = super::uart::LineBuf::new();
    }
    slot.devices.reset();
    let hz = crate::arch::tsc::hz();
    for v in 0..info.vcpus {
        let initial = if v == 0 {
            entry.initial_state()
        } else {
            InitialState::WaitForSipi
        };
        if let Some(s) = slot.vcpu(v) {
            s.pending.clear();
            s.personality_deadline.store(0, Ordering::Release);
            s.started.store(v == 0, Ordering::Release);
        }
        if let Some(cell) = slot.cells[usize::from(v)].lock().as_mut() {
            cell.state.lapic = new_lapic(info.personality, v, hz);
            cell.state.lazy_eoi.reset();
            if let Some(s) = slot.vcpu(v) {
                s.publish_apic(cell.state.lapic.addressing());
            }
            cell.state.nmis_dropped = 0;
            cell.state.ram_race = None;
            cell.state.ram_races = 0;
            cell.state.trace = super::trace::Trace::new();
            cell.ext.reset();
            cell.reset = Some(initial);
        }
    }
    {
        let mut end = slot.end.lock();
        end.stop = None;
        end.vcpus_left = info.vcpus;
        end.stats = super::stats::ExitStats::new();
    }
    slot.live.store(true, Ordering::Release);
    for v in 0..info.vcpus {
        let Some(s) = slot.vcpu(v) else { continue };
        let home = usize::from(s.home.load(Ordering::Acquire));
        let r = VcpuRef { vm: index, vcpu: v };
        let mut q = QUEUES[home].lock();
        let queued = if v == 0 {
            q.push_ready(r)
        } else {
            q.block(r, None)
        };
        queued.map_err(|_| CreateError::OutOfMemory {
            what: "a run-queue entry",
        })?;
        drop(q);
        crate::arch::smp::kick_cpu(home);
    }
    Ok(())
}
