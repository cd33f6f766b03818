//! The decoders and the page walker on arbitrary input, from a seeded generator: whatever a
//! guest puts at RIP or in its page tables, they answer (or refuse) without panicking, and
//! what they answer stays inside what they were given.

use virt::insn_len::{self, Insn};
use virt::mmio::{self, CodeSize};
use virt::testing::XorShift;
use virt::walk::{self, Access};
use virt::{ControlRegs, GuestMemory, VecMemory, bits};

const ROUNDS: usize = 20_000;

fn bytes(rng: &mut XorShift, out: &mut [u8]) -> usize {
    let n = (rng.next_u64() % (out.len() as u64 + 1)) as usize;
    for b in out[..n].iter_mut() {
        // Biased towards prefixes and the opcodes the decoders know, so that they get past
        // the first byte often.
        *b = match rng.next_u64() % 8 {
            0 => [0x66, 0x67, 0xf2, 0xf3, 0x2e, 0x3e][(rng.next_u64() % 6) as usize],
            1 => 0x0f,
            2 => 0x40 | (rng.next_u64() & 0xf) as u8,
            3 => [0x88, 0x89, 0x8a, 0x8b, 0xc6, 0xc7, 0xa1, 0xa3][(rng.next_u64() % 8) as usize],
            _ => rng.next_u64() as u8,
        };
    }
    n
}

#[test]
fn instruction_decoders_take_any_bytes() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut buf = [0u8; 24];
    let insns = [
        Insn::Cpuid,
        Insn::Rdmsr,
        Insn::Wrmsr,
        Insn::Vmcall,
        Insn::Vmmcall,
        Insn::Hlt,
        Insn::Xsetbv,
        Insn::Wbinvd,
    ];
    for _ in 0..ROUNDS {
        let n = bytes(&mut rng, &mut buf);
        let b = &buf[..n];
        for mode in [CodeSize::Bits16, CodeSize::Bits32, CodeSize::Bits64] {
            if let Some(i) = mmio::decode(b, mode) {
                assert!(usize::from(i.len) <= n, "length past the bytes given");
                assert!(matches!(i.size, 1 | 2 | 4 | 8), "size {}", i.size);
            }
        }
        let insn = insns[(rng.next_u64() % insns.len() as u64) as usize];
        for long in [false, true] {
            if let Some(l) = insn_len::length(b, insn, long) {
                assert!(l <= n && l <= insn_len::MAX_LEN);
            }
        }
    }
}

#[test]
fn the_page_walker_takes_any_tables() {
    let mut rng = XorShift(0x0bad_cafe_dead_beef);
    let ram = 64 * 4096;
    let mem = VecMemory::new(ram);
    for round in 0..ROUNDS / 10 {
        // A few table entries that are mostly plausible, sometimes not.
        for _ in 0..64 {
            let at = (rng.next_u64() % (ram as u64 / 8)) * 8;
            let frame = (rng.next_u64() % 80) << 12;
            let flags = rng.next_u64() & 0x8000_0000_0000_0fff;
            let _ = mem.write_u64(at, frame | flags);
        }
        let ctl = ControlRegs {
            cr0: bits::CR0_PE | if round % 5 == 0 { 0 } else { bits::CR0_PG },
            cr3: (rng.next_u64() % 80) << 12,
            cr4: if round % 2 == 0 { bits::CR4_PAE } else { 0 },
            efer: if round % 3 == 0 {
                bits::EFER_LME | bits::EFER_LMA | bits::EFER_NXE
            } else {
                0
            },
            cr2: 0,
        };
        for _ in 0..16 {
            let va = rng.next_u64();
            let access = Access {
                write: rng.next_u64() & 1 != 0,
                user: rng.next_u64() & 1 != 0,
                exec: rng.next_u64() & 1 != 0,
            };
            let _ = walk::translate(&mem, &ctl, va, access);
            let mut out = [0u8; 16];
            let _ = walk::read_virt(&mem, &ctl, va, access, &mut out);
        }
    }
}
