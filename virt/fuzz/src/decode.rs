//! The instruction decoders on arbitrary bytes: `mmio::decode` in each code size and
//! `insn_len::length` for each intercepted instruction, both modes. The first byte picks the
//! instruction whose length is asked; the rest is what a guest left at RIP. A panic, an answer
//! that reaches past the bytes given, an access size other than 1, 2, 4 or 8, or an answer that
//! changes when the bytes after the instruction are cut off is a bug: the decoders may only
//! look at the instruction itself.

use virt::insn_len::{self, Insn, MAX_LEN};
use virt::mmio::{self, CodeSize};

const INSNS: [Insn; 20] = [
    Insn::Cpuid,
    Insn::Rdmsr,
    Insn::Wrmsr,
    Insn::Vmmcall,
    Insn::Vmcall,
    Insn::Hlt,
    Insn::Pause,
    Insn::Xsetbv,
    Insn::Invd,
    Insn::Wbinvd,
    Insn::Monitor,
    Insn::Mwait,
    Insn::Rdtsc,
    Insn::Rdtscp,
    Insn::Vmrun,
    Insn::Vmload,
    Insn::Vmsave,
    Insn::Stgi,
    Insn::Clgi,
    Insn::Skinit,
];

pub fn run(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    for mode in [CodeSize::Bits16, CodeSize::Bits32, CodeSize::Bits64] {
        let Some(i) = mmio::decode(bytes, mode) else {
            continue;
        };
        let len = usize::from(i.len);
        assert!(
            len <= bytes.len() && len <= MAX_LEN,
            "length {len} past the bytes"
        );
        assert!(matches!(i.size, 1 | 2 | 4 | 8), "size {}", i.size);
        assert_eq!(
            mmio::decode(bytes.get(..len).unwrap_or(bytes), mode),
            Some(i),
            "the bytes after the instruction changed it"
        );
    }
    let insn = INSNS[usize::from(pick) % INSNS.len()];
    for long in [false, true] {
        let Some(len) = insn_len::length(bytes, insn, long) else {
            continue;
        };
        assert!(
            len <= bytes.len() && len <= MAX_LEN,
            "length {len} past the bytes"
        );
        assert_eq!(
            insn_len::length(bytes.get(..len).unwrap_or(bytes), insn, long),
            Some(len),
            "the bytes after the instruction changed it"
        );
    }
}
