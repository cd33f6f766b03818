//! A fake machine and a mock vCPU: the exit path's two seams, for host tests and fuzzing.

use super::super::Machine;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use vcpu::{GuestRam, PerCpu, Vcpu};
use virt::bits::*;
use virt::{ControlRegs, Error, Event, Exit, GuestRegs, SegReg, Segment, Transition};

pub const TSC_HZ: u64 = 1_000_000_000;

/// The machine under the VM: a TSC the test sets, and records of what the exit path asked of
/// it (kicks, wake-ups, console lines with their numbers).
pub struct FakeMachine {
    pub tsc: Cell<u64>,
    pub kicks: RefCell<Vec<usize>>,
    pub wakes: RefCell<Vec<usize>>,
    pub lines: RefCell<Vec<String>>,
    pub stamps: RefCell<Vec<(String, u32)>>,
    /// The host time each stamp carries.
    pub stamped_at: RefCell<Vec<u64>>,
    pub host_interrupts: Cell<u32>,
}

impl FakeMachine {
    pub fn new() -> Self {
        Self {
            tsc: Cell::new(5 * TSC_HZ),
            kicks: RefCell::new(Vec::new()),
            wakes: RefCell::new(Vec::new()),
            lines: RefCell::new(Vec::new()),
            stamps: RefCell::new(Vec::new()),
            stamped_at: RefCell::new(Vec::new()),
            host_interrupts: Cell::new(0),
        }
    }
}

impl Default for FakeMachine {
    fn default() -> Self {
        Self::new()
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
    fn nested_map(
        &self,
        _npt: &mut vcpu::NestedPageTable,
        _gpa: u64,
        _hpa: Option<u64>,
        _size: u64,
    ) -> bool {
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
        at_ns: u64,
    ) {
        self.lines.borrow_mut().push(format!("[{vm}] {text}"));
        let n = seq.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        self.stamps.borrow_mut().push((vm.to_string(), n));
        self.stamped_at.borrow_mut().push(at_ns);
    }
}

/// A vCPU whose exits the test makes up. Every instruction it retires is `len` bytes long.
pub struct MockVcpu {
    pub regs: GuestRegs,
    pub ctl: ControlRegs,
    pub cs: Segment,
    pub cpl: u8,
    pub ram: GuestRam,
    pub len: u64,
    pub injected: Option<Event>,
    pub window: bool,
    /// `advance_rip` fails, as for a guest that rewrote the instruction.
    pub rewritten: bool,
    /// An STI or MOV-SS shadow is in force; retiring an instruction ends it.
    pub shadow: bool,
}

impl MockVcpu {
    /// 32-bit protected mode, paging off, flat segments, interrupts on.
    pub fn flat32(ram: GuestRam) -> Self {
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
            cpl: 0,
            ram,
            len: 2,
            injected: None,
            window: false,
            rewritten: false,
            shadow: false,
        }
    }

    pub fn long64(ram: GuestRam) -> Self {
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
        self.cpl
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
