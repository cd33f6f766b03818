//! Host tests: the personality over `VecMemory` and a fake `Host` whose clock the test moves.

mod cpuid;
mod hypercalls;
mod linux;
mod msrs;
mod stimers;
mod synic;
mod tsc;

use crate::{Config, HyperV, HypercallInsn};
use virt::personality::{Action, Host, Personality, VcpuView};
use virt::{ControlRegs, GuestMemory, GuestRegs, VecMemory, bits};

pub const RAM: usize = 1 << 20;
pub const TSC_HZ: u64 = 2_500_000_000;
pub const APIC_HZ: u64 = 1_000_000_000;
pub const LINUX_OS_ID: u64 = 0x8100_0006_01C0_0000;

pub use virt::testing::FakeHost;

/// A fake host whose clock is well away from zero: the reference counter must start at 0
/// whatever the host clock says.
pub fn fake_host(vcpus: u32) -> FakeHost {
    let mut h = FakeHost::new(vcpus);
    h.ns = 7_000_000_123;
    h.tsc_hz = TSC_HZ;
    h
}

pub fn config(insn: HypercallInsn) -> Config {
    Config {
        insn,
        apic_hz: Some(APIC_HZ),
        tsc_offset: 0,
    }
}

pub fn view(index: u32) -> VcpuView {
    VcpuView {
        index,
        cpl: 0,
        ctl: ControlRegs {
            cr0: bits::CR0_PE | bits::CR0_PG,
            cr4: bits::CR4_PAE,
            efer: bits::EFER_LME | bits::EFER_LMA,
            ..Default::default()
        },
        long_mode: true,
    }
}

pub struct Rig {
    pub hv: HyperV,
    pub mem: VecMemory,
    pub host: FakeHost,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with(config(HypercallInsn::Vmcall), 2)
    }

    pub fn with(cfg: Config, vcpus: u32) -> Rig {
        let host = fake_host(vcpus);
        let hv = HyperV::new(cfg, &host).expect("valid vcpu count");
        Rig {
            hv,
            mem: VecMemory::new(RAM),
            host,
        }
    }

    /// RDMSR through the seam, as `Ok(Some(value))`, `Ok(None)` (not claimed) or the fault.
    pub fn rd(&mut self, vp: u32, msr: u32) -> Result<Option<u64>, virt::Event> {
        let mut value = 0;
        match self
            .hv
            .rdmsr(&view(vp), msr, &mut value, &mut self.mem, &mut self.host)
        {
            Action::Done => Ok(Some(value)),
            Action::NotMine => Ok(None),
            Action::Fault(e) => Err(e),
            other => panic!("rdmsr {msr:#x} answered {other:?}"),
        }
    }

    pub fn rd_ok(&mut self, vp: u32, msr: u32) -> u64 {
        self.rd(vp, msr)
            .unwrap_or_else(|e| panic!("rdmsr {msr:#x}: {e:?}"))
            .unwrap_or_else(|| panic!("rdmsr {msr:#x} not claimed"))
    }

    pub fn wr_action(&mut self, vp: u32, msr: u32, value: u64) -> Action {
        self.hv
            .wrmsr(&view(vp), msr, value, &mut self.mem, &mut self.host)
    }

    /// WRMSR through the seam, as `Ok(true)` (handled), `Ok(false)` (not claimed) or the
    /// fault; a write that ends the VM is a test failure here (see `wr_action`).
    pub fn wr(&mut self, vp: u32, msr: u32, value: u64) -> Result<bool, virt::Event> {
        match self.wr_action(vp, msr, value) {
            Action::Done => Ok(true),
            Action::NotMine => Ok(false),
            Action::Fault(e) => Err(e),
            other => panic!("wrmsr {msr:#x} = {value:#x} answered {other:?}"),
        }
    }

    pub fn wr_ok(&mut self, vp: u32, msr: u32, value: u64) {
        assert_eq!(
            self.wr(vp, msr, value),
            Ok(true),
            "wrmsr {msr:#x} = {value:#x}"
        );
    }

    /// Guest OS id, then the hypercall page at `gpa`, as Linux does.
    pub fn enable_hypercalls(&mut self, gpa: u64) {
        self.wr_ok(0, crate::msr::GUEST_OS_ID, LINUX_OS_ID);
        self.wr_ok(0, crate::msr::HYPERCALL, gpa | 1);
    }

    /// A 64-bit hypercall from `vp`; returns the action and RAX.
    pub fn call(&mut self, vp: u32, control: u64, input: u64, output: u64) -> (Action, u64) {
        let mut regs = GuestRegs {
            rcx: control,
            rdx: input,
            r8: output,
            ..Default::default()
        };
        let a = self
            .hv
            .hypercall(&view(vp), &mut regs, &mut self.mem, &mut self.host);
        (a, regs.rax)
    }

    /// The host timer of `vp` fires (and so is no longer armed).
    pub fn timer_expired(&mut self, vp: u32) {
        self.host.timers.push((vp, None));
        self.hv.timer_expired(vp, &mut self.mem, &mut self.host);
    }

    pub fn page(&self, gpa: u64) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        self.mem.read(gpa, &mut b).expect("page in RAM");
        b
    }
}

#[test]
fn partition_state_stays_small() {
    // The kernel keeps one per VM; it must fit comfortably in a kernel stack frame or arena.
    let size = core::mem::size_of::<HyperV>();
    assert!(size < 32 * 1024, "{size} bytes");
}
