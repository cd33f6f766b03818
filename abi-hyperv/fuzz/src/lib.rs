//! The fuzz body shared by the cargo-fuzz target and the stable, seeded test in
//! `abi-hyperv/tests/fuzz_stable.rs`: the input is a script of guest actions (MSR reads and
//! writes, hypercalls with arbitrary control words and GPAs, guest memory scribbles, time
//! passing, host timers firing) run against one partition. Any panic, a fault other than
//! #GP/#UD, a status the TLFS does not define, a register the call had no right to change, an
//! interrupt on an exception vector or a non-existent VP, or a reference counter running
//! backwards is a bug.

use abi_hyperv::hypercall::Control;
use abi_hyperv::status::split_output;
use abi_hyperv::{Config, HvStatus, HyperV, HypercallInsn};
use virt::personality::{Action, Personality, VcpuView};
use virt::testing::FakeHost;
use virt::{ControlRegs, Event, GuestMemory, GuestRegs, VecMemory, bits};

/// Small enough that random page numbers often land inside, with pages left over outside.
const RAM_PAGES: u64 = 16;
const MAX_OPS: usize = 256;

/// Synthetic MSRs (and neighbours) the script picks from most of the time.
const MSRS: &[u32] = &[
    0x4000_0000,
    0x4000_0001,
    0x4000_0002,
    0x4000_0003,
    0x4000_0010,
    0x4000_0020,
    0x4000_0021,
    0x4000_0022,
    0x4000_0023,
    0x4000_0070,
    0x4000_0073,
    0x4000_0080,
    0x4000_0081,
    0x4000_0082,
    0x4000_0083,
    0x4000_0084,
    0x4000_0090,
    0x4000_0092,
    0x4000_009F,
    0x4000_00A0,
    0x4000_00B0,
    0x4000_00B1,
    0x4000_00B2,
    0x4000_00B3,
    0x4000_00B6,
    0x4000_00B7,
    0x4000_00B8,
    0x4000_00F0,
    0x4000_0100,
    0x4000_0104,
    0x4000_0105,
    0x4000_0106,
    0x4000_0118,
    0x4000_01FF,
    0x4000_0200,
    0x3fff_ffff,
    0x1b,
    0xc000_0080,
];

const CODES: &[u16] = &[
    0x0008, 0x000B, 0x0015, 0x0002, 0x0003, 0x0046, 0x005C, 0x005D, 0x8001,
];

struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// Up to 8 bytes, little-endian; a short tail is zero-extended.
    fn u64(&mut self) -> Option<u64> {
        let n = self.data.len().min(8);
        if n == 0 {
            return None;
        }
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Some(u64::from_le_bytes(b))
    }

    fn msr(&mut self) -> Option<u32> {
        let b = self.u8()?;
        Some(if b < 0xc0 {
            MSRS[usize::from(b) % MSRS.len()]
        } else {
            0x4000_0000 | u32::from(self.u8()?) << 1 | u32::from(b & 1)
        })
    }

    /// Page-ish addresses with the low flag bits the page MSRs use, or anything at all.
    fn value(&mut self, now_ref: u64) -> Option<u64> {
        let sel = self.u8()?;
        Some(match sel % 6 {
            0 => self.u64()?,
            1 => (u64::from(self.u8()?) % (RAM_PAGES + 4)) << 12 | u64::from(sel >> 3 & 3),
            2 => u64::from(self.u8()?),
            // Timer configurations: flag bits, a vector, a SINT.
            3 => {
                u64::from(self.u8()? & 0x1f)
                    | u64::from(self.u8()?) << 4
                    | u64::from(sel >> 4) << 12
                    | u64::from(self.u8()? & 0xf) << 16
            }
            // Timer counts near the present.
            4 => now_ref.wrapping_add(u64::from(self.u8()?) * 100),
            _ => (u64::from(sel >> 3) << 4) | (0x10000 * u64::from(sel & 4 != 0)),
        })
    }

    fn gpa(&mut self) -> Option<u64> {
        let sel = self.u8()?;
        Some(match sel % 5 {
            0 => self.u64()?,
            // Fast-call register input: vectors, masks.
            4 => u64::from(self.u8()?),
            1 => (u64::from(self.u8()?) % (RAM_PAGES + 2)) << 12 | u64::from(self.u8()?) << 4,
            _ => (u64::from(self.u8()?) % (RAM_PAGES + 2)) << 12 | u64::from(self.u8()?) << 3,
        })
    }

    fn control(&mut self) -> Option<u64> {
        let sel = self.u8()?;
        if sel % 8 == 0 {
            return self.u64();
        }
        let code = match CODES.get(usize::from(sel >> 3) % (CODES.len() + 1)) {
            Some(&c) => c,
            None => self.u8()?.into(),
        };
        // Mostly well-formed shapes, so that calls get past decoding to their bodies.
        let shape = self.u8()?;
        let rare = |mask: u8, v: u16| if shape & mask == mask { v } else { 0 };
        Some(
            Control {
                code,
                fast: shape & 1 != 0,
                varhead: rare(0x06, u16::from(shape >> 7) + 1),
                rep_count: rare(0x18, u16::from(shape >> 6 & 1) + 1),
                rep_start: rare(0x60, 1),
            }
            .encode(),
        )
    }
}

fn view(index: u32, cpl: u8, long_mode: bool) -> VcpuView {
    VcpuView {
        index,
        cpl,
        ctl: ControlRegs {
            cr0: bits::CR0_PE | bits::CR0_PG,
            efer: if long_mode {
                bits::EFER_LME | bits::EFER_LMA
            } else {
                0
            },
            ..Default::default()
        },
        long_mode,
    }
}

pub fn run(data: &[u8]) {
    let mut s = Script { data };
    let Some(setup) = s.u8() else {
        return;
    };
    let vcpus = u32::from(setup & 3) + 1;
    let insn = if setup & 4 != 0 {
        HypercallInsn::Vmmcall
    } else {
        HypercallInsn::Vmcall
    };
    let mut host = FakeHost::new(vcpus);
    host.ns = 1_000_000;
    // Includes rates the TSC page cannot express, and an unknown (0) rate.
    host.tsc_hz = [2_000_000_000, 10_000_000, 0, 3_000_000_001][usize::from(setup >> 3 & 3)];
    let cfg = Config {
        insn,
        apic_hz: (setup & 0x20 != 0).then_some(1_000_000_000),
        tsc_offset: if setup & 0x40 != 0 {
            u64::MAX - 1_000
        } else {
            0
        },
    };
    let Ok(mut hv) = HyperV::new(cfg, &host) else {
        panic!("{vcpus} vCPUs refused");
    };
    let mut mem = VecMemory::new((RAM_PAGES * 4096) as usize);
    // Well-formed hypercall inputs for scripts to point at: IPI, IPI-Ex (sparse, then all).
    for (i, q) in [0x31u64, 0b11, 0x42, 0, 1, 0b1, 0x43, 1, 0]
        .iter()
        .enumerate()
    {
        let _ = mem.write_u64(0x2000 + 16 * i as u64, *q);
    }
    if setup & 0x80 != 0 {
        let v = view(0, 0, true);
        let _ = hv.wrmsr(&v, 0x4000_0000, 0x8100_0006_01C0_0000, &mut mem, &mut host);
        let _ = hv.wrmsr(&v, 0x4000_0001, 0x1001, &mut mem, &mut host);
    }
    let mut last_ref = 0;

    for _ in 0..MAX_OPS {
        let Some(op) = s.u8() else {
            break;
        };
        // Mostly real VPs, sometimes one the kernel should never pass.
        let vp = if op & 0x80 != 0 && op & 0x40 != 0 {
            vcpus + u32::from(op & 1)
        } else {
            u32::from(op >> 4 & 3) % vcpus
        };
        let v = view(vp, 0, true);
        let now_ref = hv.reference_time(&host);
        match op % 8 {
            0 => {
                let Some(msr) = s.msr() else { break };
                let mut value = 0;
                match hv.rdmsr(&v, msr, &mut value, &mut mem, &mut host) {
                    Action::Done | Action::NotMine | Action::Fault(Event::GP0) => {}
                    other => panic!("rdmsr {msr:#x}: {other:?}"),
                }
            }
            1 => {
                let (Some(msr), Some(value)) = (s.msr(), s.value(now_ref)) else {
                    break;
                };
                match hv.wrmsr(&v, msr, value, &mut mem, &mut host) {
                    Action::Done
                    | Action::NotMine
                    | Action::Fault(Event::GP0)
                    | Action::Stop(_) => {}
                    other => panic!("wrmsr {msr:#x}={value:#x}: {other:?}"),
                }
            }
            2 => {
                // A whole timer programming (as Linux and Windows do it), or a whole SynIC
                // setup, so that expiries and message delivery are reached often.
                let (Some(a), Some(b)) = (s.u8(), s.u8()) else {
                    break;
                };
                let writes: [(u32, u64); 3] = if a & 0x80 != 0 {
                    [
                        (0x4000_0083, u64::from(b % 20) << 12 | 1),
                        (
                            0x4000_0090 + u32::from(a & 0xf),
                            u64::from(b) | u64::from(a & 0x70) << 12,
                        ),
                        (0x4000_0080, 1),
                    ]
                } else {
                    let n = u32::from(a & 3) * 2;
                    let config = u64::from(a >> 2 & 0xf)
                        | u64::from(b) << 4
                        | u64::from(a >> 6 & 1) << 12
                        | u64::from(b & 0xf) << 16;
                    [
                        (0x4000_00B0 + n, config),
                        (0x4000_00B1 + n, now_ref.wrapping_add(u64::from(b) * 10)),
                        (0x4000_0084, 0),
                    ]
                };
                for (msr, value) in writes {
                    match hv.wrmsr(&v, msr, value, &mut mem, &mut host) {
                        Action::Done | Action::NotMine | Action::Fault(Event::GP0) => {}
                        other => panic!("wrmsr {msr:#x}={value:#x}: {other:?}"),
                    }
                }
            }
            3 | 4 => {
                let (Some(control), Some(input), Some(output), Some(mode)) =
                    (s.control(), s.gpa(), s.gpa(), s.u8())
                else {
                    break;
                };
                hypercall(
                    &mut hv, vp, control, input, output, mode, &mut mem, &mut host,
                );
            }
            5 => {
                let Some(delta) = s.u64() else { break };
                host.ns = host.ns.saturating_add(delta % 10_000_000_000);
            }
            6 => {
                host.ns = host.ns.saturating_add(u64::from(op) * 1_000);
                hv.timer_expired(vp, &mut mem, &mut host);
            }
            _ => {
                // The guest scribbles on its own memory (including the pages it shares).
                let (Some(gpa), Some(value)) = (s.gpa(), s.u64()) else {
                    break;
                };
                let _ = mem.write_u64(gpa, value);
            }
        }
        while hv.take_notice().is_some() {}
        let r = hv.reference_time(&host);
        assert!(r >= last_ref, "reference time went back: {last_ref} -> {r}");
        last_ref = r;
    }
    for leaf in (0x4000_0000..=0x4000_000B).chain([0x4000_0100, 0x4000_FFFF]) {
        let regs = hv.cpuid(&view(0, 0, true), leaf, 0);
        assert!(regs.is_some(), "leaf {leaf:#x} left to the platform");
    }
}

#[allow(clippy::too_many_arguments)]
fn hypercall(
    hv: &mut HyperV,
    vp: u32,
    control: u64,
    input: u64,
    output: u64,
    mode: u8,
    mem: &mut VecMemory,
    host: &mut FakeHost,
) {
    let long_mode = mode & 1 == 0;
    let cpl = if mode & 0x0e == 0x0e { 3 } else { 0 };
    let v = view(vp, cpl, long_mode);
    let mut regs = if long_mode {
        GuestRegs {
            rcx: control,
            rdx: input,
            r8: output,
            rbx: 0x1111,
            rsi: 0x2222,
            rdi: 0x3333,
            r9: 0x4444,
            ..Default::default()
        }
    } else {
        GuestRegs {
            rax: control & 0xffff_ffff,
            rdx: control >> 32,
            rbx: input >> 32,
            rcx: input & 0xffff_ffff,
            rdi: output >> 32,
            rsi: output & 0xffff_ffff,
            r8: 0x5555,
            ..Default::default()
        }
    };
    let before = regs;
    let action = hv.hypercall(&v, &mut regs, mem, host);
    let value = match action {
        Action::Fault(Event::UD) => {
            assert_eq!(regs, before, "a faulting hypercall changed registers");
            return;
        }
        Action::Done | Action::Yield => {
            if long_mode {
                assert_eq!(
                    GuestRegs {
                        rax: before.rax,
                        ..regs
                    },
                    before
                );
                regs.rax
            } else {
                assert_eq!(
                    GuestRegs {
                        rax: before.rax,
                        rdx: before.rdx,
                        ..regs
                    },
                    before
                );
                assert!(regs.rax <= u64::from(u32::MAX) && regs.rdx <= u64::from(u32::MAX));
                regs.rdx << 32 | regs.rax
            }
        }
        other => panic!("hypercall {control:#x} answered {other:?}"),
    };
    let (status, reps) = split_output(value);
    assert!(
        HvStatus::from_code(status).is_some(),
        "status {status:#x} for {control:#x}"
    );
    assert_eq!(reps, 0, "no rep call is implemented");
    assert_eq!(value >> 16 & 0xffff, 0);
    assert_eq!(value >> 44, 0);
    if control & abi_hyperv::hypercall::input::RESERVED != 0 {
        assert_eq!(status, HvStatus::InvalidHypercallInput.code());
    }
}
