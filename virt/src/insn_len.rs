//! Length of the intercepted instruction at guest RIP, for SVM without NRIP save.
//!
//! QEMU TCG fills no `next_rip`, so the backend reads the bytes at CS:RIP and confirms they
//! are the instruction the exit reports before skipping them. Anything else — bytes the guest
//! rewrote between the exit and now, an unexpected opcode, too many prefixes — is refused, and
//! the kernel injects #UD or stops the VM.

/// An intercepted instruction whose length can be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Insn {
    Cpuid,
    Rdmsr,
    Wrmsr,
    Vmmcall,
    Vmcall,
    Hlt,
    Pause,
    Xsetbv,
    Invd,
    Wbinvd,
    Monitor,
    Mwait,
    Rdtsc,
    Rdtscp,
    Vmrun,
    Vmload,
    Vmsave,
    Stgi,
    Clgi,
    Skinit,
}

impl Insn {
    /// Opcode bytes after the prefixes.
    const fn opcode(self) -> &'static [u8] {
        match self {
            Insn::Cpuid => &[0x0f, 0xa2],
            Insn::Rdmsr => &[0x0f, 0x32],
            Insn::Wrmsr => &[0x0f, 0x30],
            Insn::Vmmcall => &[0x0f, 0x01, 0xd9],
            Insn::Vmcall => &[0x0f, 0x01, 0xc1],
            Insn::Hlt => &[0xf4],
            Insn::Pause => &[0x90],
            Insn::Xsetbv => &[0x0f, 0x01, 0xd1],
            Insn::Invd => &[0x0f, 0x08],
            Insn::Wbinvd => &[0x0f, 0x09],
            Insn::Monitor => &[0x0f, 0x01, 0xc8],
            Insn::Mwait => &[0x0f, 0x01, 0xc9],
            Insn::Rdtsc => &[0x0f, 0x31],
            Insn::Rdtscp => &[0x0f, 0x01, 0xf9],
            Insn::Vmrun => &[0x0f, 0x01, 0xd8],
            Insn::Vmload => &[0x0f, 0x01, 0xda],
            Insn::Vmsave => &[0x0f, 0x01, 0xdb],
            Insn::Stgi => &[0x0f, 0x01, 0xdc],
            Insn::Clgi => &[0x0f, 0x01, 0xdd],
            Insn::Skinit => &[0x0f, 0x01, 0xde],
        }
    }
}

/// Maximum length of an x86 instruction.
pub const MAX_LEN: usize = 15;

fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65
    )
}

/// The length of `insn` at the start of `bytes` (the bytes readable at CS:RIP, possibly fewer
/// than 15 near an unmapped page), or `None` if the bytes are not that instruction.
/// `long_mode` is CS.L: REX prefixes exist only there.
pub fn length(bytes: &[u8], insn: Insn, long_mode: bool) -> Option<usize> {
    let bytes = &bytes[..bytes.len().min(MAX_LEN)];
    let mut i = 0;
    let mut rep = false;
    while i < bytes.len() && is_legacy_prefix(bytes[i]) {
        rep |= bytes[i] == 0xf3;
        i += 1;
    }
    // A REX prefix counts only directly before the opcode.
    if long_mode && i < bytes.len() && (0x40..=0x4f).contains(&bytes[i]) {
        i += 1;
    }
    if insn == Insn::Pause && !rep {
        return None;
    }
    let op = insn.opcode();
    let end = i + op.len();
    if end > bytes.len() || &bytes[i..end] != op {
        return None;
    }
    Some(end)
}

/// The bytes at CS:RIP, read through the guest page tables as far as they are mapped (at
/// most [`MAX_LEN`]), and whether CS is a 64-bit code segment.
pub fn fetch(
    mem: &(impl crate::GuestMemory + ?Sized),
    ctl: &crate::ControlRegs,
    cs: &crate::Segment,
    rip: u64,
    cpl: u8,
) -> ([u8; MAX_LEN], usize, bool) {
    use crate::walk::{self, Access};
    let long = ctl.efer & crate::bits::EFER_LMA != 0 && cs.long();
    let la = if long {
        rip
    } else {
        cs.base.wrapping_add(rip) & 0xffff_ffff
    };
    let access = Access {
        exec: true,
        user: cpl == 3,
        write: false,
    };
    let mut bytes = [0u8; MAX_LEN];
    let mut n = 0;
    while n < bytes.len() {
        if walk::read_virt(
            mem,
            ctl,
            la.wrapping_add(n as u64),
            access,
            &mut bytes[n..n + 1],
        )
        .is_err()
        {
            break;
        }
        n += 1;
    }
    (bytes, n, long)
}

/// Fetches the bytes at CS:RIP through the guest page tables and returns the length of
/// `insn` there. Reads only as far as is mapped: the instruction may end before an unmapped
/// page. `None`: the bytes there are not `insn` (the guest rewrote them) or are unreadable.
pub fn at_rip(
    mem: &(impl crate::GuestMemory + ?Sized),
    ctl: &crate::ControlRegs,
    cs: &crate::Segment,
    rip: u64,
    cpl: u8,
    insn: Insn,
) -> Option<u64> {
    let (bytes, n, long) = fetch(mem, ctl, cs, rip, cpl);
    length(&bytes[..n], insn, long).map(|l| l as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits::*;
    use crate::{ControlRegs, GuestMemory, Segment, VecMemory};

    #[test]
    fn fetch_through_page_tables_up_to_an_unmapped_page() {
        let m = VecMemory::new(0x10_0000);
        // 4-level: 0x40_0000_0000 + page 0 -> GPA 0x8000, page 1 unmapped.
        m.write_u64(0x1000, 0x2000 | 3).unwrap();
        m.write_u64(0x2000 + 8, 0x3000 | 3).unwrap(); // PDPT[1]
        m.write_u64(0x3000, 0x4000 | 3).unwrap();
        m.write_u64(0x4000, 0x8000 | 3).unwrap();
        m.write(0x8ffd, &[0x0f, 0x01, 0xd9]).unwrap();
        let ctl = ControlRegs {
            cr0: CR0_PG | CR0_PE,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            cr2: 0,
        };
        let cs = Segment::new(8, 0, 0xffff_ffff, Segment::CODE64);
        let rip = 0x4000_0ffd;
        assert_eq!(at_rip(&m, &ctl, &cs, rip, 0, Insn::Vmmcall), Some(3));
        assert_eq!(at_rip(&m, &ctl, &cs, rip, 0, Insn::Cpuid), None);
        // Paging off, 32-bit CS with a base.
        let flat = ControlRegs {
            cr0: CR0_PE,
            ..Default::default()
        };
        let cs32 = Segment::new(8, 0x8000, 0xffff_ffff, Segment::CODE32);
        assert_eq!(at_rip(&m, &flat, &cs32, 0xffd, 0, Insn::Vmmcall), Some(3));
        // Nothing readable at all.
        assert!(at_rip(&m, &flat, &cs32, 0x1000_0000, 0, Insn::Hlt).is_none());
    }

    #[test]
    fn plain_lengths_match_qemu_trace() {
        assert_eq!(
            length(&[0x0f, 0x01, 0xd9, 0xcc], Insn::Vmmcall, true),
            Some(3)
        );
        assert_eq!(length(&[0x0f, 0xa2], Insn::Cpuid, true), Some(2));
        assert_eq!(length(&[0x0f, 0x32, 0x90], Insn::Rdmsr, true), Some(2));
        assert_eq!(length(&[0x0f, 0x30], Insn::Wrmsr, false), Some(2));
        assert_eq!(length(&[0xf4], Insn::Hlt, false), Some(1));
        assert_eq!(length(&[0x0f, 0x01, 0xc1], Insn::Vmcall, true), Some(3));
        assert_eq!(length(&[0xf3, 0x90], Insn::Pause, true), Some(2));
        assert_eq!(length(&[0x0f, 0x01, 0xd1], Insn::Xsetbv, true), Some(3));
    }

    #[test]
    fn prefixes_count() {
        assert_eq!(
            length(&[0x66, 0x2e, 0x0f, 0xa2], Insn::Cpuid, false),
            Some(4)
        );
        assert_eq!(length(&[0x48, 0x0f, 0x30], Insn::Wrmsr, true), Some(3));
        assert_eq!(
            length(&[0x66, 0x48, 0x0f, 0x01, 0xd9], Insn::Vmmcall, true),
            Some(5)
        );
    }

    #[test]
    fn mismatches_are_refused() {
        assert_eq!(length(&[0x0f, 0xa2], Insn::Rdmsr, true), None);
        assert_eq!(length(&[0x90], Insn::Pause, true), None, "NOP is not PAUSE");
        assert_eq!(
            length(&[0x48, 0x0f, 0x30], Insn::Wrmsr, false),
            None,
            "no REX outside long mode"
        );
        assert_eq!(
            length(&[0x0f, 0x01], Insn::Vmmcall, true),
            None,
            "truncated"
        );
        assert_eq!(length(&[], Insn::Hlt, true), None);
        // REX before a legacy prefix is not a prefix of the opcode.
        assert_eq!(length(&[0x48, 0x66, 0x0f, 0xa2], Insn::Cpuid, true), None);
        // More than 15 bytes of prefixes.
        let mut long = [0x66u8; 16];
        long[14] = 0xf4;
        assert_eq!(length(&long, Insn::Hlt, true), Some(15));
        long[14] = 0x66;
        long[15] = 0xf4;
        assert_eq!(length(&long, Insn::Hlt, true), None);
    }
}
