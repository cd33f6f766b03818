//! A 2-vCPU VM named "t" with its real devices, bus and personality, vCPU 0 of it on a mock,
//! and the fake machine under it: what one exit is dispatched against.

use super::mock::{FakeMachine, MockVcpu, TSC_HZ};
use crate::manifest::Personality;
use crate::vm::devices::IoApicDevice;
use crate::vm::lapic::{VLapic, X2APIC_MSR_FIRST};
use crate::vm::personality::Instance;
use crate::vm::state::{VcpuState, Vm, VmInfo};
use crate::vm::{bus::Bus, dispatch};
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::NonNull;
use vcpu::GuestRam;
use virt::{Action, Exit, IoExit, RamRegion};

/// Bytes of guest RAM.
pub const RAM: usize = 1 << 20;

pub struct Rig {
    /// The VM, which its own bus borrows as `'static` (a VM lives as long as the hypervisor);
    /// the rig owns it and frees it when dropped.
    vm: &'static Vm<()>,
    owned: NonNull<Vm<()>>,
    /// The guest RAM the mock vCPU's `GuestRam` points into.
    _ram: Vec<u8>,
    pub m: FakeMachine,
    /// vCPU 0 of the VM.
    pub st: VcpuState<MockVcpu>,
}

impl Rig {
    /// The VM with `personality`, vCPU 0 in 64-bit mode (paging on, tables at GPA 0) or in
    /// 32-bit protected mode (paging off).
    pub fn new(personality: Personality, long_mode: bool) -> Self {
        let mut ram = vec![0u8; RAM];
        let region = RamRegion {
            hpa_base: ram.as_mut_ptr() as u64,
            size: RAM as u64,
            chunks: None,
        };
        let owned = NonNull::from(Box::leak(Box::new(Vm::new())));
        #[expect(unsafe_code)]
        // SAFETY: `owned` is a live allocation only this rig frees (in `drop`), after which
        // nothing uses this reference: the only copies are the VM's own bus, freed with it,
        // and the rig's accessor, whose borrows cannot outlive the rig.
        let vm: &'static Vm<()> = unsafe { owned.as_ref() };
        vm.info.call_once(|| VmInfo {
            index: 0,
            name: heapless::String::try_from("t").unwrap_or_default(),
            personality,
            ram: region,
            vcpus: 2,
        });
        vm.personality.lock().instance = instance(personality);
        if personality == Personality::HyperV {
            vm.devices.ioapic.call_once(IoApicDevice::new);
        }
        let mut bus = Bus::new();
        // The devices of a fresh VM claim disjoint ranges of an empty bus.
        let _ = vm.devices.attach(&mut bus);
        vm.bus.call_once(|| bus);
        for (i, s) in vm.vcpus.iter().enumerate() {
            s.home.store(i as u8, core::sync::atomic::Ordering::Release);
        }
        let mem = GuestRam::new(region);
        let vcpu = if long_mode {
            MockVcpu::long64(mem)
        } else {
            MockVcpu::flat32(mem)
        };
        let mut lapic = VLapic::new(0, true, TSC_HZ, TSC_HZ);
        // Software-enable the APIC (SVR), as every guest does first.
        let _ = lapic.wrmsr(X2APIC_MSR_FIRST + 0xF, 0x1FF, 0);
        Rig {
            vm,
            owned,
            _ram: ram,
            m: FakeMachine::new(),
            st: VcpuState::new(vcpu, lapic),
        }
    }

    pub fn vm(&self) -> &Vm<()> {
        self.vm
    }

    /// Dispatches `exit` of vCPU 0.
    pub fn exit(&mut self, exit: Exit) -> Action {
        dispatch::handle(self.vm, 0, &mut self.st, &self.m, exit)
    }

    /// What the scheduler does before entering vCPU 0: offers it the interrupt due next.
    pub fn prepare(&mut self) {
        let now = self.m.tsc.get();
        crate::vm::interrupts::prepare(&mut self.st, &self.vm.vcpus[0].pending, now);
    }

    pub fn rip(&self) -> u64 {
        self.st.vcpu.regs.rip
    }

    pub fn io(&mut self, port: u16, size: u8, write: bool, value: u32) -> Action {
        self.exit(Exit::Io(IoExit {
            port,
            size,
            write,
            value,
            string: false,
            rep: false,
        }))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        #[expect(unsafe_code)]
        // SAFETY: `owned` came from `Box::leak` in `new` and is freed only here; `&mut self`
        // means no borrow from `vm()` is alive, and the VM's bus (the other holder of `vm`)
        // goes with it.
        drop(unsafe { Box::from_raw(self.owned.as_ptr()) });
    }
}

fn instance(personality: Personality) -> Instance {
    match personality {
        Personality::Xen => Instance::Xen(Box::new(abi_xen::Xen::new(abi_xen::Config::new(
            abi_xen::HypercallInsn::Vmcall,
        )))),
        Personality::HyperV => abi_hyperv::HyperV::new(
            abi_hyperv::Config {
                insn: abi_hyperv::HypercallInsn::Vmcall,
                apic_hz: Some(TSC_HZ),
                tsc_offset: 0,
            },
            &virt::testing::FakeHost::new(2),
        )
        .map_or(Instance::None, |h| Instance::HyperV(Box::new(h))),
        Personality::None => Instance::None,
    }
}
