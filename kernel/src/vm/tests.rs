//! The exit path on the host: [`dispatch::handle`] driven by a mock vCPU over real guest RAM (a
//! host buffer) and a fake machine, with the VM's real devices, bus and personality.

use super::devices::IoApicDevice;
use super::lapic::{APIC_BASE_MSR, VLapic, X2APIC_MSR_FIRST};
use super::personality::Instance;
use super::state::{VcpuState, Vm, VmInfo};
use super::{Machine, dispatch, interrupts};
use crate::manifest::Personality;
use core::cell::{Cell, RefCell};
use vcpu::{GuestRam, PerCpu, Vcpu};
use virt::bits::*;
use virt::{
    Action, ControlRegs, Error, Event, Exit, GuestMemory, GuestRegs, IoExit, NestedFault,
    RamRegion, SegReg, Segment, StopReason, Transition,
};

const RAM: usize = 1 << 20;
const TSC_HZ: u64 = 1_000_000_000;

struct FakeMachine {
    tsc: Cell<u64>,
    kicks: RefCell<Vec<usize>>,
    wakes: RefCell<Vec<usize>>,
    lines: RefCell<Vec<String>>,
    stamps: RefCell<Vec<(String, u32)>>,
    host_interrupts: Cell<u32>,
}

impl FakeMachine {
    fn new() -> Self {
        Self {
            tsc: Cell::new(5 * TSC_HZ),
            kicks: RefCell::new(Vec::new()),
            wakes: RefCell::new(Vec::new()),
            lines: RefCell::new(Vec::new()),
            stamps: RefCell::new(Vec::new()),
            host_interrupts: Cell::new(0),
        }
    }
}

impl Machine for FakeMachine {
    fn tsc(&self) -> u64 {
        self.tsc.get()
    }
    fn tsc_hz(&self) -> u64 {
        TSC_HZ
    }
    fn now_ns(&self) -> u64 {
        self.tsc.get()
    }
    fn unix_secs(&self) -> u64 {
        1_700_000_000
    }
    fn host_cpuid(&self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        match leaf {
            // "GenuineIntel", highest leaf 0xD.
            0 => [0xD, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
            _ => [leaf, 0, 0, 0],
        }
    }
    fn take_host_interrupt(&self) {
        self.host_interrupts.set(self.host_interrupts.get() + 1);
    }
    fn kick_cpu(&self, cpu: usize) {
        self.kicks.borrow_mut().push(cpu);
    }
    fn wake_cpu(&self, cpu: usize) {
        self.wakes.borrow_mut().push(cpu);
    }
    fn print(&self, args: core::fmt::Arguments<'_>) {
        self.lines.borrow_mut().push(args.to_string());
    }
    fn nested_map(&self, _npt: &mut vcpu::NestedPageTable, _gpa: u64, _hpa: Option<u64>) -> bool {
        true
    }
    fn disk(&self, _vm: u8, _index: u32) -> Option<virt::block::DiskInfo> {
        None
    }
    fn disk_io(
        &self,
        _vm: u8,
        _index: u32,
        _io: &mut dyn FnMut(&mut dyn virt::block::Volume) -> Result<(), virt::block::VolumeError>,
    ) -> Result<(), virt::block::VolumeError> {
        Err(virt::block::VolumeError::Io)
    }
    fn guest_line(
        &self,
        vm: &str,
        seq: &core::sync::atomic::AtomicU32,
        text: core::fmt::Arguments<'_>,
        _ends_line: bool,
    ) {
        self.lines.borrow_mut().push(format!("[{vm}] {text}"));
        let n = seq.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        self.stamps.borrow_mut().push((vm.to_string(), n));
    }
}

/// A vCPU whose exits the test makes up. Every instruction it retires is `len` bytes long.
struct MockVcpu {
    regs: GuestRegs,
    ctl: ControlRegs,
    cs: Segment,
    ram: GuestRam,
    len: u64,
    injected: Option<Event>,
    window: bool,
    /// `advance_rip` fails, as for a guest that rewrote the instruction.
    rewritten: bool,
    /// An STI or MOV-SS shadow is in force; retiring an instruction ends it.
    shadow: bool,
}

impl MockVcpu {
    /// 32-bit protected mode, paging off, flat segments, interrupts on.
    fn flat32(ram: GuestRam) -> Self {
        Self {
            regs: GuestRegs {
                rip: 0x1000,
                rflags: RFLAGS_FIXED | RFLAGS_IF,
                ..Default::default()
            },
            ctl: ControlRegs {
                cr0: CR0_PE,
                ..Default::default()
            },
            cs: Segment::new(8, 0, 0xffff_ffff, Segment::CODE32),
            ram,
            len: 2,
            injected: None,
            window: false,
            rewritten: false,
            shadow: false,
        }
    }

    fn long64(ram: GuestRam) -> Self {
        let mut v = Self::flat32(ram);
        v.ctl = ControlRegs {
            cr0: CR0_PE | CR0_PG,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            ..Default::default()
        };
        v.cs = Segment::new(8, 0, 0xffff_ffff, Segment::CODE64);
        v
    }
}

impl Vcpu for MockVcpu {
    fn run(&mut self, _cpu: &PerCpu) -> Result<Exit, Error> {
        Err(Error::Unsupported)
    }
    fn regs(&self) -> &GuestRegs {
        &self.regs
    }
    fn regs_mut(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }
    fn control_regs(&self) -> ControlRegs {
        self.ctl
    }
    fn xcr0(&self) -> u64 {
        1
    }
    fn segment(&self, seg: SegReg) -> Segment {
        match seg {
            SegReg::Cs => self.cs,
            _ => Segment::new(0x10, 0, 0xffff_ffff, 0x0C93),
        }
    }
    fn cpl(&self) -> u8 {
        0
    }
    fn memory(&self) -> &GuestRam {
        &self.ram
    }
    fn advance_rip(&mut self) -> Result<(), Error> {
        if self.rewritten {
            return Err(Error::UndecodableInstruction);
        }
        self.regs.rip += self.len;
        self.shadow = false;
        Ok(())
    }
    fn inject(&mut self, event: Event) -> Result<(), Error> {
        if self.injected.is_some() {
            return Err(Error::EventPending);
        }
        self.injected = Some(event);
        Ok(())
    }
    fn event_pending(&self) -> bool {
        self.injected.is_some()
    }
    fn interrupt_window_open(&self) -> bool {
        self.regs.rflags & RFLAGS_IF != 0 && self.injected.is_none()
    }
    fn request_interrupt_window(&mut self, on: bool) {
        self.window = on;
    }
    fn set_tsc_offset(&mut self, _offset: u64) {}
    fn flush_nested_tlb(&mut self) {}
    fn set_io_intercept(&mut self, _port: u16, _on: bool) {}
    fn set_msr_intercept(&mut self, _msr: u32, _read: bool, _write: bool) -> bool {
        true
    }
    fn set_exception_intercepts(&mut self, _mask: u32) {}
    fn init(&mut self) {}
    fn skip_instruction(&mut self, len: u64) -> Result<(), Error> {
        self.regs.rip += len;
        self.shadow = false;
        Ok(())
    }
    fn reset(&mut self, _state: virt::InitialState) -> Result<(), Error> {
        Ok(())
    }
    fn sipi(&mut self, _vector: u8) -> Result<(), Error> {
        Ok(())
    }
    fn waiting_for_sipi(&self) -> bool {
        false
    }
    fn unload(&mut self) {}
    fn last_transition(&self) -> Transition {
        Transition::default()
    }
}

struct Rig {
    vm: &'static Vm<()>,
    m: FakeMachine,
    /// vCPU 0 of the VM.
    st: VcpuState<MockVcpu>,
}

/// A 2-vCPU VM named "t" with the given personality and its devices on the bus.
fn rig(personality: Personality, long_mode: bool) -> Rig {
    let ram: &'static mut [u8] = Box::leak(vec![0u8; RAM].into_boxed_slice());
    let region = RamRegion {
        hpa_base: ram.as_mut_ptr() as u64,
        size: RAM as u64,
    };
    let vm: &'static Vm<()> = Box::leak(Box::new(Vm::new()));
    vm.info.call_once(|| VmInfo {
        index: 0,
        name: heapless::String::try_from("t").unwrap(),
        personality,
        ram: region,
        vcpus: 2,
    });
    vm.personality.lock().instance = match personality {
        Personality::Xen => Instance::Xen(Box::new(abi_xen::Xen::new(abi_xen::Config::new(
            abi_xen::HypercallInsn::Vmcall,
        )))),
        Personality::HyperV => Instance::HyperV(Box::new(
            abi_hyperv::HyperV::new(
                abi_hyperv::Config {
                    insn: abi_hyperv::HypercallInsn::Vmcall,
                    apic_hz: Some(TSC_HZ),
                    tsc_offset: 0,
                },
                &virt::testing::FakeHost::new(2),
            )
            .unwrap(),
        )),
        Personality::None => Instance::None,
    };
    if personality == Personality::HyperV {
        vm.devices.ioapic.call_once(IoApicDevice::new);
    }
    let mut bus = super::bus::Bus::new();
    vm.devices.attach(&mut bus).unwrap();
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
    lapic.wrmsr(X2APIC_MSR_FIRST + 0xF, 0x1FF, 0).unwrap();
    Rig {
        vm,
        m: FakeMachine::new(),
        st: VcpuState::new(vcpu, lapic),
    }
}

impl Rig {
    fn exit(&mut self, exit: Exit) -> Action {
        dispatch::handle(self.vm, 0, &mut self.st, &self.m, exit)
    }

    fn rip(&self) -> u64 {
        self.st.vcpu.regs.rip
    }

    fn io(&mut self, port: u16, size: u8, write: bool, value: u32) -> Action {
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

#[test]
fn cpuid_comes_from_the_personality_then_the_filtered_host() {
    let mut r = rig(Personality::Xen, true);
    assert_eq!(
        r.exit(Exit::Cpuid {
            leaf: 0x4000_0000,
            subleaf: 0
        }),
        Action::Done
    );
    let regs = r.st.vcpu.regs;
    let sig: Vec<u8> = [regs.rbx, regs.rcx, regs.rdx]
        .iter()
        .flat_map(|w| (*w as u32).to_le_bytes())
        .collect();
    assert_eq!(sig, b"XenVMMXenVMM");
    assert_eq!(r.rip(), 0x1002, "retired");

    r.exit(Exit::Cpuid {
        leaf: 0,
        subleaf: 0,
    });
    assert_eq!(
        r.st.vcpu.regs.rbx, 0x756e_6547,
        "host vendor passed through"
    );
    assert_eq!(r.rip(), 0x1004);
    assert_eq!(r.st.stats.total(), 2);
}

#[test]
fn msrs_go_to_the_apic_the_platform_then_fault() {
    let mut r = rig(Personality::None, false);
    r.m.tsc.set(0x1234_5678_9abc);
    assert_eq!(r.exit(Exit::Rdmsr { msr: 0x10 }), Action::Done);
    assert_eq!(
        (r.st.vcpu.regs.rdx << 32) | r.st.vcpu.regs.rax,
        0x1234_5678_9abc
    );
    assert_eq!(r.exit(Exit::Rdmsr { msr: APIC_BASE_MSR }), Action::Done);
    assert_ne!(r.st.vcpu.regs.rax & (1 << 10), 0, "x2APIC mode");
    let rip = r.rip();
    assert_eq!(
        r.exit(Exit::Rdmsr { msr: 0xC001_1234 }),
        Action::Fault(Event::GP0)
    );
    assert_eq!(r.st.vcpu.injected, Some(Event::GP0));
    assert_eq!(r.rip(), rip, "a faulting RDMSR is not retired");
}

#[test]
fn an_icr_write_posts_the_ipi_and_kicks_the_target() {
    let mut r = rig(Personality::None, false);
    // Fixed vector 0x40 to APIC 1, physical.
    let icr = (1u64 << 32) | 0x40;
    assert_eq!(
        r.exit(Exit::Wrmsr {
            msr: X2APIC_MSR_FIRST + 0x30,
            value: icr
        }),
        Action::Done
    );
    assert!(r.vm.vcpus[1].pending.any());
    assert!(!r.vm.vcpus[0].pending.any());
    // Parked: its home pCPU is asked to look (woken only if idle), not interrupted.
    assert_eq!(*r.m.wakes.borrow(), [1], "vCPU 1's home pCPU");
    assert!(r.m.kicks.borrow().is_empty());
    // In guest mode on pCPU 0: forced out.
    r.vm.vcpus[1]
        .running_on
        .store(0, core::sync::atomic::Ordering::Release);
    r.exit(Exit::Wrmsr {
        msr: X2APIC_MSR_FIRST + 0x30,
        value: icr,
    });
    assert_eq!(*r.m.kicks.borrow(), [0]);
}

#[test]
fn ports_reach_their_device_or_float() {
    let mut r = rig(Personality::None, false);
    for b in b"hi\n" {
        assert_eq!(r.io(0x3F8, 1, true, u32::from(*b)), Action::Done);
    }
    assert_eq!(*r.m.lines.borrow(), ["[t] hi"]);
    assert_eq!(*r.m.stamps.borrow(), [("t".to_string(), 0)]);
    for b in b"\x1b[2Jvm t: stopped: powered off\n" {
        r.io(0x3F8, 1, true, u32::from(*b));
    }
    assert_eq!(
        r.m.lines.borrow()[1],
        "[t] \\x1b[2Jvm t: stopped: powered off",
        "escaped, and prefixed as the guest's"
    );
    assert_eq!(r.m.stamps.borrow()[1].1, 1);
    r.st.vcpu.regs.rax = 0xAAAA_AAAA_0000_0000;
    r.io(0x3FD, 1, false, 0);
    assert_eq!(r.st.vcpu.regs.rax, 0xAAAA_AAAA_0000_0060, "LSR: THR empty");
    r.io(0x1234, 2, false, 0);
    assert_eq!(r.st.vcpu.regs.rax & 0xFFFF, 0xFFFF, "nothing there");
    // S5 through the FADT's sleep control register.
    assert_eq!(
        r.io(0x604, 1, true, 0x34),
        Action::Stop(StopReason::PowerOff)
    );
    assert_eq!(
        r.exit(Exit::Io(IoExit {
            port: 0x3F8,
            size: 1,
            write: true,
            value: 0,
            string: true,
            rep: true,
        })),
        Action::Stop(StopReason::Unsupported {
            vcpu: 0,
            what: "string port I/O",
            detail: 0x3F8
        })
    );
}

#[test]
fn mmio_reaches_the_ioapic_and_unbacked_memory_reads_ones() {
    let mut r = rig(Personality::HyperV, false);
    let store = |r: &mut Rig, gpa| {
        // mov [edi], eax
        r.st.vcpu.ram.write(0x1000, &[0x89, 0x07]).unwrap();
        r.st.vcpu.regs.rip = 0x1000;
        r.exit(Exit::NestedPageFault(NestedFault {
            gpa,
            read: false,
            write: true,
            exec: false,
            present: false,
            during_walk: false,
        }))
    };
    let load = |r: &mut Rig, gpa| {
        // mov eax, [edi]
        r.st.vcpu.ram.write(0x1000, &[0x8b, 0x07]).unwrap();
        r.st.vcpu.regs.rip = 0x1000;
        r.exit(Exit::NestedPageFault(NestedFault {
            gpa,
            read: true,
            write: false,
            exec: false,
            present: false,
            during_walk: false,
        }))
    };
    // Select the version register, read it through the window.
    r.st.vcpu.regs.rax = 1;
    r.st.vcpu.shadow = true;
    assert_eq!(store(&mut r, 0xFEC0_0000), Action::Retry);
    assert_eq!(r.rip(), 0x1002, "retired by the emulation");
    assert!(!r.st.vcpu.shadow, "retiring ends an interrupt shadow");
    assert_eq!(load(&mut r, 0xFEC0_0010), Action::Retry);
    assert_eq!(r.st.vcpu.regs.rax, 0x0017_0011);
    assert_eq!(load(&mut r, 0xFED0_0000), Action::Retry);
    assert_eq!(r.st.vcpu.regs.rax, 0xFFFF_FFFF);
    assert!(matches!(
        load(&mut r, 0x2000),
        Action::Stop(StopReason::Unsupported { .. })
    ));
}

#[test]
fn hypercalls_reach_the_personality_or_fault_ud() {
    let mut r = rig(Personality::Xen, true);
    // xen_version(XENVER_version)
    r.st.vcpu.regs.rax = 17;
    r.st.vcpu.regs.rdi = 0;
    r.st.vcpu.len = 3;
    assert_eq!(r.exit(Exit::Hypercall), Action::Done);
    assert_eq!(r.st.vcpu.regs.rax, (4 << 16) | 15);
    assert_eq!(r.rip(), 0x1003);

    let mut r = rig(Personality::None, true);
    assert_eq!(r.exit(Exit::Hypercall), Action::Fault(Event::UD));
    assert_eq!(r.st.vcpu.injected, Some(Event::UD));
    assert_eq!(r.rip(), 0x1000);
}

#[test]
fn hlt_parks_until_an_interrupt_is_posted() {
    let mut r = rig(Personality::None, false);
    assert_eq!(r.exit(Exit::Hlt), Action::Halt);
    assert_eq!(r.rip(), 0x1002, "HLT is retired before parking");
    // vCPU 1 sends vector 0x50 to vCPU 0: the next HLT does not park.
    interrupts::send_ipi(
        r.vm,
        &r.m,
        1,
        super::lapic::Ipi::Fixed {
            dest: super::lapic::Dest::Physical(0),
            vector: 0x50,
        },
    );
    assert!(
        r.vm.vcpus[0].pending.any(),
        "the wake-up the scheduler sees"
    );
    assert_eq!(r.exit(Exit::Hlt), Action::Done);
    interrupts::prepare(&mut r.st, &r.vm.vcpus[0].pending, r.m.tsc());
    assert_eq!(r.st.vcpu.injected, Some(Event::ExternalInterrupt(0x50)));
    // With IF clear the interrupt cannot be taken: park.
    r.st.vcpu.injected = None;
    r.st.vcpu.regs.rflags &= !RFLAGS_IF;
    r.vm.vcpus[0].pending.post(0x51);
    assert_eq!(r.exit(Exit::Hlt), Action::Halt);
}

/// `sti; hlt` with an interrupt already handed to the vCPU (out of the APIC, not yet taken:
/// the STI shadow held it off): HLT must not park, or nothing would ever deliver it.
#[test]
fn hlt_does_not_park_on_an_interrupt_handed_over_but_not_taken() {
    let mut r = rig(Personality::None, false);
    r.st.vcpu.regs.rflags |= RFLAGS_IF;
    r.st.vcpu.injected = Some(Event::ExternalInterrupt(0x50));
    assert!(r.st.lapic.deliverable().is_none());
    assert_eq!(r.exit(Exit::Hlt), Action::Done);
    r.st.vcpu.regs.rflags &= !RFLAGS_IF;
    assert_eq!(
        r.exit(Exit::Hlt),
        Action::Halt,
        "IF clear: it cannot be taken"
    );
}

#[test]
fn a_triple_fault_stops_the_vm_and_the_first_stop_wins() {
    let mut r = rig(Personality::None, false);
    let a = r.exit(Exit::TripleFault);
    assert_eq!(a, Action::Stop(StopReason::TripleFault { vcpu: 0 }));
    assert_eq!(r.rip(), 0x1000, "the report shows where it happened");
    let Action::Stop(reason) = a else {
        unreachable!()
    };
    assert!(r.vm.record_stop(reason));
    assert!(!r.vm.record_stop(StopReason::PowerOff));
    assert!(r.vm.stopped());
    assert_eq!(
        r.vm.end.lock().stop,
        Some(StopReason::TripleFault { vcpu: 0 })
    );
}

#[test]
fn a_rewritten_instruction_gets_ud_and_host_interrupts_are_taken() {
    let mut r = rig(Personality::None, false);
    r.st.vcpu.rewritten = true;
    assert_eq!(
        r.exit(Exit::Cpuid {
            leaf: 1,
            subleaf: 0
        }),
        Action::Done
    );
    assert_eq!(r.st.vcpu.injected, Some(Event::UD));
    assert_eq!(r.exit(Exit::ExternalInterrupt), Action::Retry);
    assert_eq!(r.m.host_interrupts.get(), 1);
    assert!(matches!(
        r.exit(Exit::Exception {
            vector: 14,
            error_code: Some(0)
        }),
        Action::Stop(StopReason::Unsupported { .. })
    ));
}

/// Seeded arbitrary exits on every personality: CPUID leaves, MSRs and ports anywhere,
/// hypercalls with arbitrary registers, device and unbacked accesses decoded from arbitrary
/// bytes at RIP. The hypervisor answers each without panicking, and the VM survives unless it
/// was told to stop.
#[test]
fn arbitrary_exits_never_panic() {
    let mut rng = virt::testing::XorShift(0x5eed_1234_abcd_0001);
    for personality in [Personality::None, Personality::Xen, Personality::HyperV] {
        for long in [false, true] {
            let mut r = rig(personality, long);
            for _ in 0..3000 {
                let x = rng.next_u64();
                let y = rng.next_u64();
                let z = rng.next_u64();
                r.st.vcpu.injected = None;
                r.st.vcpu.regs.rip = 0x1000 + (x & 0xff);
                let mut insn = [0u8; 16];
                insn.iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = (z >> (i % 8 * 8)) as u8);
                r.st.vcpu.ram.write(r.st.vcpu.regs.rip, &insn).unwrap();
                r.st.vcpu.regs.rax = y;
                r.st.vcpu.regs.rbx = z;
                r.st.vcpu.regs.rcx = x >> 32;
                r.st.vcpu.regs.rdx = y.rotate_left(17);
                r.st.vcpu.regs.rdi = z.rotate_left(9) & 0x1f_ffff;
                r.st.vcpu.regs.rsi = y & 0x1f_ffff;
                let exit = match x % 9 {
                    0 => Exit::Cpuid {
                        leaf: (y as u32) & 0x8000_00ff | (y >> 32) as u32 & 0x4000_0000,
                        subleaf: z as u32,
                    },
                    1 => Exit::Rdmsr { msr: y as u32 },
                    2 => Exit::Wrmsr {
                        msr: y as u32,
                        value: z,
                    },
                    3 => Exit::Io(IoExit {
                        port: y as u16,
                        size: [1, 2, 4][(z % 3) as usize],
                        write: z & 8 != 0,
                        value: (z >> 8) as u32,
                        string: false,
                        rep: false,
                    }),
                    4 => Exit::Hypercall,
                    5 => Exit::NestedPageFault(NestedFault {
                        gpa: if y & 1 == 0 {
                            0xFEC0_0000 + (z & 0xfff)
                        } else {
                            y
                        },
                        read: z & 1 != 0,
                        write: z & 2 != 0,
                        exec: z & 4 != 0,
                        present: false,
                        during_walk: z & 8 != 0,
                    }),
                    6 => Exit::Hlt,
                    7 => Exit::Exception {
                        vector: (y % 32) as u8,
                        error_code: Some(z as u32),
                    },
                    _ => Exit::InterruptWindow,
                };
                let _ = r.exit(exit);
                interrupts::prepare(&mut r.st, &r.vm.vcpus[0].pending, r.m.tsc());
                r.m.tsc.set(r.m.tsc.get() + (x & 0xffff));
            }
            assert_eq!(r.st.stats.total(), 3000, "every exit was handled");
        }
    }
}
