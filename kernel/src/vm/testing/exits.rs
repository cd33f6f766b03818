//! The exit dispatcher on arbitrary exits: the first byte picks the personality and the CPU
//! mode, then each exit comes with the bytes at RIP, the registers and the exit's own fields
//! from the script — CPUID leaves, MSRs and ports near what the platform and the faces claim
//! or anywhere, hypercalls with arbitrary registers, accesses to device and unbacked memory
//! decoded from the bytes at RIP, scribbles over guest RAM and its page tables, HLT,
//! exceptions and the exits that carry no instruction. A panic, an exit left uncounted, a
//! handler's `NotMine` escaping dispatch, or an exception injected on a vector that is not one
//! is a bug.

use super::Script;
use super::rig::{RAM, Rig};
use crate::manifest::Personality;
use virt::bits::RFLAGS_IF;
use virt::{Action, Event, Exit, GuestMemory, IoExit, NestedFault};

const MAX_EXITS: usize = 512;
/// 64-bit mode's tables: PML4, PDPT and a PD whose first 2 MiB page maps guest RAM 1:1.
const PT: u64 = 0xF_0000;

const MSRS: &[u32] = &[
    0x10,
    0x1B,
    0x3A,
    0x48,
    0x49,
    0x8B,
    0xFE,
    0x179,
    0x1A0,
    0x277,
    0x2FF,
    0x6E0,
    0xC000_0080,
    0xC000_0100,
    0xC000_0102,
    0xC000_0103,
    0x4000_0000,
    0x4000_0001,
    0x4000_0002,
    0x4000_0003,
    0x4000_0020,
    0x4000_0070,
    0x4000_0080,
    0x4000_0083,
    0x4000_0090,
    0x4000_00B0,
    0x4000_0118,
    0x4000_0200,
];
const PORTS: &[u16] = &[
    0x20, 0x21, 0x40, 0x41, 0x42, 0x43, 0x61, 0x70, 0x71, 0x80, 0xA0, 0xA1, 0xB2, 0xE9, 0x3F8,
    0x3F9, 0x3FA, 0x3FB, 0x3FC, 0x3FD, 0x3FE, 0x3FF, 0x600, 0x601, 0x602, 0x603, 0x604, 0x605,
    0x608, 0x609, 0x60A, 0x60B, 0xCF8, 0xCF9, 0xCFC,
];
/// Device memory: the IOAPIC, the xAPIC page, the HPET's place, and beyond RAM.
const MMIO: &[u64] = &[
    0xFEC0_0000,
    0xFEE0_0000,
    0xFED0_0000,
    RAM as u64,
    0xE000_0000,
];
/// Instructions guests touch device memory with: stores, loads, MOVZX, immediates.
const MMIO_INSNS: &[&[u8]] = &[
    &[0x89, 0x07],
    &[0x8B, 0x07],
    &[0x88, 0x27],
    &[0x8A, 0x07],
    &[0x66, 0x89, 0x07],
    &[0x48, 0x89, 0x07],
    &[0x48, 0x8B, 0x47, 0x10],
    &[0x0F, 0xB6, 0x07],
    &[0x0F, 0xB7, 0x07],
    &[0xC7, 0x07, 0x78, 0x56, 0x34, 0x12],
    &[0xC6, 0x07, 0x41],
    &[0xA1, 0x00, 0x00, 0xC0, 0xFE],
];

/// Runs the script; returns the exits dispatched.
pub fn run(data: &[u8]) -> u64 {
    let mut s = Script(data);
    let Some(h) = s.u8() else { return 0 };
    let personality =
        [Personality::None, Personality::Xen, Personality::HyperV][usize::from(h % 3)];
    let long = h & 4 != 0;
    let mut r = Rig::new(personality, long);
    if long {
        map_ram(&r);
        r.st.vcpu.ctl.cr3 = PT;
    }
    let mut dispatched = 0u64;
    for _ in 0..MAX_EXITS {
        let Some(exit) = next(&mut s, &mut r) else {
            break;
        };
        let action = r.exit(exit);
        dispatched += 1;
        assert_ne!(action, Action::NotMine, "NotMine left dispatch");
        if let Some(Event::Exception { vector, .. }) = r.st.vcpu.injected {
            assert!(vector < 32 && vector != 2, "exception on vector {vector}");
        }
        // The guest takes whatever was injected; the APIC offers the next.
        r.st.vcpu.injected = None;
        r.prepare();
        if let Some(Event::Exception { vector, .. }) = r.st.vcpu.injected {
            assert!(vector < 32 && vector != 2, "exception on vector {vector}");
        }
        let Some(dt) = s.u16() else { break };
        r.m.tsc.set(r.m.tsc.get().wrapping_add(u64::from(dt) << 8));
    }
    assert_eq!(r.st.stats.total(), dispatched, "every exit was counted");
    dispatched
}

fn map_ram(r: &Rig) {
    let ram = &r.st.vcpu.ram;
    let _ = ram.write_u64(PT, (PT + 0x1000) | 7);
    let _ = ram.write_u64(PT + 0x1000, (PT + 0x2000) | 7);
    let _ = ram.write_u64(PT + 0x2000, 0x87);
}

/// An argument register: a pointer into RAM, a small number, or anything.
fn arg(s: &mut Script<'_>) -> Option<u64> {
    Some(match s.u8()? % 4 {
        0 => s.u64()?,
        1 => u64::from(s.u16()?) << 4,
        2 => u64::from(s.u8()? % 64),
        _ => (RAM as u64 - 16) + u64::from(s.u8()? % 32),
    })
}

/// The guest's state before the exit, then the exit itself.
fn next(s: &mut Script<'_>, r: &mut Rig) -> Option<Exit> {
    let op = s.u8()?;
    let v = &mut r.st.vcpu;
    v.regs.rip = 0x1000 + u64::from(s.u8()?);
    let mut insn = [0u8; 15];
    if op & 0x80 != 0 {
        let known = s.pick(MMIO_INSNS)?;
        insn[..known.len()].copy_from_slice(known);
    } else {
        for b in insn.iter_mut() {
            *b = s.u8()?;
        }
    }
    let _ = v.ram.write(v.regs.rip, &insn);
    v.len = u64::from(s.u8()? % 15) + 1;
    v.rewritten = op & 0x40 != 0 && op & 0x20 != 0;
    v.shadow = op & 0x10 != 0;
    v.regs.rflags = if op & 0x08 != 0 {
        v.regs.rflags & !RFLAGS_IF
    } else {
        v.regs.rflags | RFLAGS_IF
    };
    v.regs.rax = arg(s)?;
    v.regs.rbx = arg(s)?;
    v.regs.rcx = arg(s)?;
    v.regs.rdx = arg(s)?;
    v.regs.rdi = arg(s)?;
    v.regs.rsi = arg(s)?;
    v.regs.r8 = arg(s)?;
    Some(match s.u8()? % 14 {
        0 => Exit::Cpuid {
            leaf: match s.u8()? % 3 {
                0 => u32::from(s.u8()? % 0x20),
                1 => 0x4000_0000 | u32::from(s.u8()?),
                _ => 0x8000_0000 | u32::from(s.u8()? % 0x20),
            },
            subleaf: u32::from(s.u8()?),
        },
        1 => Exit::Rdmsr { msr: msr(s)? },
        2 | 3 => Exit::Wrmsr {
            msr: msr(s)?,
            value: arg(s)?,
        },
        4 | 5 => {
            let port = if s.u8()? & 1 == 0 {
                s.pick(PORTS)?
            } else {
                s.u16()?
            };
            let size = s.pick(&[1u8, 2, 4])?;
            let write = s.u8()? & 1 != 0;
            Exit::Io(IoExit {
                port,
                size,
                write,
                value: s.u32()? & (u32::MAX >> (32 - 8 * u32::from(size))),
                string: false,
                rep: false,
            })
        }
        6 | 7 => {
            // Xen and Hyper-V hypercall numbers are small; the rest of the register is noise.
            let call = u64::from(s.u8()? % 80);
            r.st.vcpu.regs.rax = if s.u8()? & 1 == 0 {
                call
            } else {
                r.st.vcpu.regs.rax
            };
            r.st.vcpu.cpl = if s.u8()? % 8 == 0 { 3 } else { 0 };
            Exit::Hypercall
        }
        8 | 9 => {
            let gpa = match s.u8()? % 3 {
                0 => s.pick(MMIO)? + u64::from(s.u16()? % 0x1000),
                1 => u64::from(s.u32()?) % RAM as u64,
                _ => s.u64()?,
            };
            let f = s.u8()?;
            Exit::NestedPageFault(NestedFault {
                gpa,
                read: f & 1 != 0,
                write: f & 2 != 0,
                exec: f & 4 != 0,
                present: f & 8 != 0,
                during_walk: f & 16 != 0,
            })
        }
        10 => Exit::Hlt,
        // Scribbles over RAM (the page tables included), then the window opens.
        11 => {
            let at = u64::from(s.u32()?) % RAM as u64;
            let value = s.u64()?;
            let _ = r.st.vcpu.ram.write_u64(at & !7, value);
            Exit::InterruptWindow
        }
        12 => Exit::Exception {
            vector: s.u8()? % 32,
            error_code: Some(s.u32()?),
        },
        _ => match s.u8()? % 6 {
            0 => Exit::ExternalInterrupt,
            1 => Exit::Nmi,
            2 => Exit::Init,
            3 => Exit::Sipi { vector: s.u8()? },
            4 => Exit::TripleFault,
            _ => Exit::Unknown {
                reason: s.u64()?,
                qualification: 0,
                info: 0,
            },
        },
    })
}

fn msr(s: &mut Script<'_>) -> Option<u32> {
    Some(match s.u8()? % 4 {
        0 => s.pick(MSRS)?,
        1 => 0x800 + u32::from(s.u8()?),
        2 => 0x4000_0000 + u32::from(s.u8()?),
        _ => s.u32()?,
    })
}
