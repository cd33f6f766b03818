//! Host tests: the personality over `VecMemory` and a fake `Host` whose clock the test moves.

mod cpuid;
mod hypercalls;
mod linux;
mod msrs;
mod stimers;
mod synic;
mod tsc;

use crate::{Config, HyperV, HypercallInsn};
use vcpu::personality::{Action, Host, Personality, VcpuView};
use vcpu::{ControlRegs, GuestMemory, GuestRegs, VecMemory, bits};

pub const RAM: usize = 1 << 20;
pub const TSC_HZ: u64 = 2_500_000_000;
pub const APIC_HZ: u64 = 1_000_000_000;
pub const LINUX_OS_ID: u64 = 0x8100_0006_01C0_0000;

#[derive(Default)]
pub struct FakeHost {
    pub ns: u64,
    pub tsc_hz: u64,
    pub vcpus: u32,
    pub timers: Vec<(u32, Option<u64>)>,
    pub raised: Vec<(u32, u8, bool)>,
    pub kicks: Vec<u32>,
}

impl FakeHost {
    pub fn new(vcpus: u32) -> Self {
        FakeHost {
            // Not zero: the reference counter must start at 0 whatever the host clock says.
            ns: 7_000_000_123,
            tsc_hz: TSC_HZ,
            vcpus,
            ..Default::default()
        }
    }

    pub fn advance_ns(&mut self, ns: u64) {
        self.ns += ns;
    }

    /// The last deadline armed for `vcpu` (`None` = cancelled or never armed).
    pub fn timer(&self, vcpu: u32) -> Option<u64> {
        self.timers
            .iter()
            .rev()
            .find(|(v, _)| *v == vcpu)
            .and_then(|(_, d)| *d)
    }
}

impl Host for FakeHost {
    fn now_ns(&self) -> u64 {
        self.ns
    }
    fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }
    fn tsc(&self) -> u64 {
        (u128::from(self.ns) * u128::from(self.tsc_hz) / 1_000_000_000) as u64
    }
    fn vcpu_count(&self) -> u32 {
        self.vcpus
    }
    fn set_timer(&mut self, vcpu: u32, deadline_ns: Option<u64>) {
        self.timers.push((vcpu, deadline_ns));
    }
    fn raise_vector(&mut self, vcpu: u32, vector: u8, needs_eoi: bool) {
        self.raised.push((vcpu, vector, needs_eoi));
    }
    fn kick(&mut self, vcpu: u32) {
        self.kicks.push(vcpu);
    }
    fn console_write(&mut self, _bytes: &[u8]) {}
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
        let host = FakeHost::new(vcpus);
        let hv = HyperV::new(cfg, &host).expect("valid vcpu count");
        Rig {
            hv,
            mem: VecMemory::new(RAM),
            host,
        }
    }

    pub fn rd(&mut self, vp: u32, msr: u32) -> Result<Option<u64>, vcpu::Event> {
        self.hv.rdmsr(&view(vp), msr, &mut self.mem, &mut self.host)
    }

    pub fn rd_ok(&mut self, vp: u32, msr: u32) -> u64 {
        self.rd(vp, msr)
            .unwrap_or_else(|e| panic!("rdmsr {msr:#x}: {e:?}"))
            .unwrap_or_else(|| panic!("rdmsr {msr:#x} not claimed"))
    }

    pub fn wr(&mut self, vp: u32, msr: u32, value: u64) -> Result<bool, vcpu::Event> {
        self.hv
            .wrmsr(&view(vp), msr, value, &mut self.mem, &mut self.host)
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
