//! The machine the hypervisor runs on, as the exit path sees it.

use super::Machine;
use crate::arch::{cpu, smp, tsc};

pub struct HostMachine;

impl Machine for HostMachine {
    fn tsc(&self) -> u64 {
        tsc::now()
    }

    fn tsc_hz(&self) -> u64 {
        tsc::hz()
    }

    fn now_ns(&self) -> u64 {
        tsc::now_ns()
    }

    fn unix_secs(&self) -> u64 {
        tsc::unix_secs()
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = x86::cpuid::cpuid!(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn take_host_interrupt(&self) {
        // `sti; hlt` takes it (the handler returns past the hlt). A shorter window is not
        // enough for emulators that only look for interrupts between translated blocks; the
        // cost is at most one host tick if the interrupt was withdrawn meanwhile.
        cpu::wait_for_interrupt();
        cpu::disable_interrupts();
    }

    fn kick_cpu(&self, cpu: usize) {
        smp::kick_cpu(cpu);
    }

    fn wake_cpu(&self, cpu: usize) {
        smp::wake_cpu(cpu);
    }

    fn print(&self, args: core::fmt::Arguments<'_>) {
        crate::println!("{}", args);
    }

    fn disk(&self, vm: u8, index: u32) -> Option<virt::block::DiskInfo> {
        use virt::block::Volume;
        let d = crate::storage::host::DISKS
            .get(usize::from(vm))?
            .get(index as usize)?
            .get()?
            .lock();
        Some(virt::block::DiskInfo {
            sectors: d.sectors(),
            read_only: d.read_only(),
        })
    }

    fn disk_io(
        &self,
        vm: u8,
        index: u32,
        io: &mut dyn FnMut(&mut dyn virt::block::Volume) -> Result<(), virt::block::VolumeError>,
    ) -> Result<(), virt::block::VolumeError> {
        let disk = crate::storage::host::DISKS
            .get(usize::from(vm))
            .and_then(|d| d.get(index as usize))
            .and_then(|d| d.get())
            .ok_or(virt::block::VolumeError::Io)?;
        io(&mut *disk.lock())
    }

    fn nested_map(
        &self,
        npt: &mut vcpu::NestedPageTable,
        gpa: u64,
        hpa: Option<u64>,
        size: u64,
    ) -> bool {
        let mut frames = crate::mm::phys::Frames;
        let mut tables = vcpu::HostTables(&mut frames);
        // Executable like the rest of guest RAM: a no-execute nested entry is a reserved-bit
        // fault, not a permission fault, on an SVM host that runs without EFER.NXE.
        match hpa {
            Some(hpa) => npt.map(&mut tables, gpa, hpa, size, vcpu::Perm::RWX),
            None => npt.unmap_range(&mut tables, gpa, size),
        }
        .is_ok()
    }

    fn guest_line(
        &self,
        vm: &str,
        seq: &core::sync::atomic::AtomicU32,
        text: core::fmt::Arguments<'_>,
        ends_line: bool,
        at_ns: u64,
    ) {
        let owner = core::ptr::from_ref(seq) as usize;
        crate::console::guest_piece(owner, vm, text, ends_line, || {
            let n = seq.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            defmt::info!("con {=str} {=u32} {=u64}", vm, n, at_ns);
        });
    }
}
