//! A fake host and a paged guest address space for driving the personality like the kernel.
#![allow(dead_code)]

use abi_xen::{Config, HypercallInsn, Xen};
use virt::personality::{Action, Personality, VcpuView};
use virt::{ControlRegs, GuestMemory, GuestRegs, VecMemory, bits};

pub const RAM: usize = 8 << 20;
/// Linux's direct map: guest-virtual = KBASE + guest-physical for all of RAM.
pub const KBASE: u64 = 0xffff_8880_0000_0000;
/// A kernel address with no mapping.
pub const UNMAPPED: u64 = KBASE + (1 << 30);
pub const CONSOLE_PFN: u64 = 0x7ff;
pub const STORE_PFN: u64 = 0x7fe;
pub const SHARED_INFO_PFN: u64 = 0x20;
/// Scratch for hypercall argument structures.
pub const ARG: u64 = 0x10000;
pub const TSC_HZ: u64 = 2_400_000_000;
pub const VECTOR: u8 = 0xF3;

pub mod op {
    pub const MEMORY_OP: u64 = 12;
    pub const SET_TIMER_OP: u64 = 15;
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const GRANT_TABLE_OP: u64 = 20;
    pub const VCPU_OP: u64 = 24;
    pub const SCHED_OP: u64 = 29;
    pub const EVENT_CHANNEL_OP: u64 = 32;
    pub const HVM_OP: u64 = 34;
}

pub const EINVAL: i64 = -22;
pub const EFAULT: i64 = -14;
pub const ENOSYS: i64 = -38;
pub const ENOENT: i64 = -2;
pub const EEXIST: i64 = -17;
pub const EPERM: i64 = -1;
pub const ESRCH: i64 = -3;
pub const EBUSY: i64 = -16;

pub use virt::testing::FakeHost;

/// The fake host these tests run on: 1 s of uptime, a [`TSC_HZ`] TSC.
pub fn host(vcpus: u32) -> FakeHost {
    let mut h = FakeHost::new(vcpus);
    h.tsc_hz = TSC_HZ;
    h
}

pub fn long_mode_ctl() -> ControlRegs {
    ControlRegs {
        cr0: bits::CR0_PE | bits::CR0_PG | bits::CR0_WP,
        cr2: 0,
        cr3: 0x1000,
        cr4: bits::CR4_PAE,
        efer: bits::EFER_LME | bits::EFER_LMA | bits::EFER_NXE,
    }
}

/// 4-level tables at 0x1000.. mapping KBASE..KBASE+RAM with 2 MiB pages.
pub fn paged_memory() -> VecMemory {
    let m = VecMemory::new(RAM);
    let pml4_idx = (KBASE >> 39) & 0x1ff;
    m.write_u64(0x1000 + pml4_idx * 8, 0x2000 | 3).unwrap();
    m.write_u64(0x2000, 0x3000 | 3).unwrap();
    for i in 0..(RAM as u64 >> 21) {
        m.write_u64(0x3000 + i * 8, (i << 21) | 0x83).unwrap();
    }
    m
}

pub fn va(pa: u64) -> u64 {
    KBASE + pa
}

pub struct Env {
    pub xen: Xen,
    pub mem: VecMemory,
    pub host: FakeHost,
    pub long_mode: bool,
    pub cpl: u8,
}

pub fn config() -> Config {
    let mut c = Config::new(HypercallInsn::Vmcall);
    c.console_pfn = Some(CONSOLE_PFN);
    c.boot_utc_ns = 1_700_000_000_123_456_789;
    c
}

impl Env {
    pub fn new() -> Self {
        Env::with(config(), 2)
    }

    pub fn with(cfg: Config, vcpus: u32) -> Self {
        Env {
            xen: Xen::new(cfg),
            mem: paged_memory(),
            host: host(vcpus),
            long_mode: true,
            cpl: 0,
        }
    }

    pub fn view(&self, vcpu: u32) -> VcpuView {
        VcpuView {
            index: vcpu,
            cpl: self.cpl,
            ctl: long_mode_ctl(),
            long_mode: self.long_mode,
        }
    }

    /// A 64-bit hypercall from `vcpu`: RAX = op, RDI, RSI, RDX, R10, R8.
    pub fn call_on(&mut self, vcpu: u32, op: u64, a: [u64; 5]) -> (i64, Action) {
        let mut r = GuestRegs {
            rax: op,
            rdi: a[0],
            rsi: a[1],
            rdx: a[2],
            r10: a[3],
            r8: a[4],
            ..Default::default()
        };
        let view = self.view(vcpu);
        let act = self
            .xen
            .hypercall(&view, &mut r, &mut self.mem, &mut self.host);
        (r.rax as i64, act)
    }

    pub fn call(&mut self, op: u64, a0: u64, a1: u64, a2: u64) -> i64 {
        let (rax, act) = self.call_on(0, op, [a0, a1, a2, 0, 0]);
        assert!(
            abi_xen::is_valid_return(rax as u64),
            "op {op} returned {rax}"
        );
        assert_eq!(act, Action::Done, "op {op}");
        rax
    }

    /// Writes `data` at scratch physical `pa` and returns its guest-virtual address.
    pub fn arg(&self, pa: u64, data: &[u8]) -> u64 {
        self.mem.write(pa, data).unwrap();
        va(pa)
    }

    pub fn evtchn(&mut self, cmd: u64, data: &[u8]) -> i64 {
        let p = self.arg(ARG, data);
        self.call(op::EVENT_CHANNEL_OP, cmd, p, 0)
    }

    pub fn evtchn_on(&mut self, vcpu: u32, cmd: u64, data: &[u8]) -> i64 {
        let p = self.arg(ARG, data);
        self.call_on(vcpu, op::EVENT_CHANNEL_OP, [cmd, p, 0, 0, 0])
            .0
    }

    pub fn u32_at(&self, pa: u64) -> u32 {
        self.mem.read_u32(pa).unwrap()
    }

    pub fn u64_at(&self, pa: u64) -> u64 {
        self.mem.read_u64(pa).unwrap()
    }

    pub fn shared_info(&self) -> u64 {
        SHARED_INFO_PFN << 12
    }

    /// What Linux does first: shared_info at SHARED_INFO_PFN and the callback vector.
    pub fn boot(&mut self) {
        let mut a = [0u8; 24];
        a[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
        a[16..24].copy_from_slice(&SHARED_INFO_PFN.to_le_bytes());
        let p = self.arg(ARG, &a);
        assert_eq!(self.call(op::MEMORY_OP, 7, p, 0), 0);
        let p = self.arg(ARG, &param(0, (2u64 << 56) | u64::from(VECTOR)));
        assert_eq!(self.call(op::HVM_OP, 0, p, 0), 0);
    }

    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> (i64, u32) {
        let mut a = [0u8; 12];
        a[0..4].copy_from_slice(&virq.to_le_bytes());
        a[4..8].copy_from_slice(&vcpu.to_le_bytes());
        let r = self.evtchn(1, &a);
        (r, self.u32_at(ARG + 8))
    }

    pub fn bind_ipi(&mut self, vcpu: u32) -> u32 {
        let mut a = [0u8; 8];
        a[0..4].copy_from_slice(&vcpu.to_le_bytes());
        assert_eq!(self.evtchn(7, &a), 0);
        self.u32_at(ARG + 4)
    }

    /// vCPU 0 executes HLT.
    pub fn idle(&mut self) {
        self.xen.idle(0, &mut self.mem, &mut self.host);
    }

    pub fn send(&mut self, port: u32) -> i64 {
        self.evtchn(4, &port.to_le_bytes())
    }

    pub fn pending(&self, port: u32) -> bool {
        let w = self.u64_at(self.shared_info() + 2048 + u64::from(port / 64) * 8);
        w & (1 << (port % 64)) != 0
    }

    pub fn set_mask(&self, port: u32, masked: bool) {
        let a = self.shared_info() + 2560 + u64::from(port / 64) * 8;
        let w = self.u64_at(a);
        let b = 1u64 << (port % 64);
        self.mem
            .write_u64(a, if masked { w | b } else { w & !b })
            .unwrap();
    }

    pub fn clear_pending(&self, port: u32) {
        let a = self.shared_info() + 2048 + u64::from(port / 64) * 8;
        let w = self.u64_at(a);
        self.mem.write_u64(a, w & !(1u64 << (port % 64))).unwrap();
    }
}

/// `xen_hvm_param` for DOMID_SELF.
pub fn param(index: u32, value: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
    a[4..8].copy_from_slice(&index.to_le_bytes());
    a[8..16].copy_from_slice(&value.to_le_bytes());
    a
}

/// Linux's pvclock reader over guest memory at `gpa` for guest TSC `tsc`.
pub fn read_pvclock(mem: &VecMemory, gpa: u64, tsc: u64) -> u64 {
    let version = mem.read_u32(gpa).unwrap();
    assert_eq!(version % 2, 0, "pvclock read mid-update");
    let ts = mem.read_u64(gpa + 8).unwrap();
    let sys = mem.read_u64(gpa + 16).unwrap();
    let mul = mem.read_u32(gpa + 24).unwrap();
    let shift = mem.read_u8(gpa + 28).unwrap() as i8;
    let mut d = tsc - ts;
    if shift >= 0 {
        d <<= shift;
    } else {
        d >>= -shift;
    }
    sys + ((u128::from(d) * u128::from(mul)) >> 32) as u64
}
