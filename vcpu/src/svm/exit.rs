//! Decoding of #VMEXIT information (EXITCODE, EXITINFO1/2, EXITINTINFO) — pure functions.

use crate::insn_len::Insn;
use crate::{Exit, IoExit, NestedFault};

pub mod code {
    pub const EXCP_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const WBINVD: u64 = 0x89;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_ARMED: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
}

/// What the backend does with an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Hand to the kernel.
    Exit(Exit),
    /// SVM instructions, MONITOR/MWAIT: the guest sees #UD (they are not advertised).
    InjectUd,
    /// INVD, WBINVD: retire without doing anything (never discard or flush the host's caches).
    Skip(Insn),
    /// XSETBV with ECX (index) and EDX:EAX — validated by the backend.
    Xsetbv,
    /// The bad-state exit: VMRUN refused the VMCB.
    Invalid,
}

/// The instruction a decoded exit stands for, when its length has to be confirmed.
pub fn insn_of(exit_code: u64) -> Option<Insn> {
    Some(match exit_code {
        code::CPUID => Insn::Cpuid,
        code::HLT => Insn::Hlt,
        code::PAUSE => Insn::Pause,
        code::VMMCALL => Insn::Vmmcall,
        code::XSETBV => Insn::Xsetbv,
        code::INVD => Insn::Invd,
        code::WBINVD => Insn::Wbinvd,
        code::MONITOR => Insn::Monitor,
        code::MWAIT | code::MWAIT_ARMED => Insn::Mwait,
        _ => return None,
    })
}

/// IOIO EXITINFO1 → the I/O exit; `rax` supplies OUT data. Address-size bits (7..9) are not
/// relied on: QEMU leaves them clear where Bochs sets A64.
pub fn decode_io(info1: u64, rax: u64) -> IoExit {
    let size = if info1 & (1 << 4) != 0 {
        1
    } else if info1 & (1 << 5) != 0 {
        2
    } else {
        4
    };
    let write = info1 & 1 == 0;
    let string = info1 & (1 << 2) != 0;
    let mut io = IoExit {
        port: (info1 >> 16) as u16,
        size,
        write,
        value: 0,
        string,
        rep: info1 & (1 << 3) != 0,
    };
    if write && !string {
        io.value = rax as u32 & io.mask();
    }
    io
}

/// NPF EXITINFO1 (page-fault error code of the nested walk) and EXITINFO2 (GPA).
pub fn decode_npf(info1: u64, gpa: u64) -> NestedFault {
    let exec = info1 & (1 << 4) != 0;
    let write = info1 & (1 << 1) != 0;
    NestedFault {
        gpa,
        read: !write && !exec,
        write,
        exec,
        present: info1 & 1 != 0,
        during_walk: info1 & (1 << 33) != 0,
    }
}

/// Decodes an exit. `rax`/`rcx`/`rdx` are the guest's at the exit.
pub fn decode(exit_code: u64, info1: u64, info2: u64, rax: u64, rcx: u64, rdx: u64) -> Decoded {
    let e = match exit_code {
        code::CPUID => Exit::Cpuid {
            leaf: rax as u32,
            subleaf: rcx as u32,
        },
        code::MSR => {
            let msr = rcx as u32;
            if info1 & 1 == 0 {
                Exit::Rdmsr { msr }
            } else {
                Exit::Wrmsr {
                    msr,
                    value: (rdx << 32) | (rax & 0xffff_ffff),
                }
            }
        }
        code::IOIO => Exit::Io(decode_io(info1, rax)),
        code::VMMCALL => Exit::Hypercall,
        code::NPF => Exit::NestedPageFault(decode_npf(info1, info2)),
        code::HLT => Exit::Hlt,
        code::VINTR => Exit::InterruptWindow,
        code::INTR => Exit::ExternalInterrupt,
        code::NMI => Exit::Nmi,
        code::INIT => Exit::Init,
        code::SHUTDOWN => Exit::TripleFault,
        c if (code::EXCP_BASE..code::EXCP_BASE + 32).contains(&c) => {
            let vector = (c - code::EXCP_BASE) as u8;
            let error_code = crate::vector::has_error_code(vector).then_some(info1 as u32);
            Exit::Exception { vector, error_code }
        }
        code::VMRUN
        | code::VMLOAD
        | code::VMSAVE
        | code::STGI
        | code::CLGI
        | code::SKINIT
        | code::INVLPGA
        | code::MONITOR
        | code::MWAIT
        | code::MWAIT_ARMED => return Decoded::InjectUd,
        code::INVD => return Decoded::Skip(Insn::Invd),
        // Caches are the host's: writing them all back would stall the pCPU's other VMs.
        code::WBINVD => return Decoded::Skip(Insn::Wbinvd),
        code::XSETBV => return Decoded::Xsetbv,
        code::INVALID => return Decoded::Invalid,
        _ => Exit::Unknown {
            reason: exit_code,
            qualification: info1,
            info: info2,
        },
    };
    Decoded::Exit(e)
}

/// EXITINTINFO / EVENTINJ: valid bit, type field values.
pub mod event {
    pub const VALID: u64 = 1 << 31;
    pub const ERROR_VALID: u64 = 1 << 11;
    pub const TYPE_INTR: u64 = 0 << 8;
    pub const TYPE_NMI: u64 = 2 << 8;
    pub const TYPE_EXCEPTION: u64 = 3 << 8;
}

/// Encodes an event for EVENTINJ; `None` for what the hardware would refuse (an exception with
/// vector 2 or >= 32, which QEMU checks).
pub fn encode_event(ev: crate::Event) -> Option<u64> {
    use event::*;
    Some(match ev {
        crate::Event::Exception { vector, error_code } => {
            if vector == 2 || vector >= 32 {
                return None;
            }
            let mut v = VALID | TYPE_EXCEPTION | u64::from(vector);
            if let Some(ec) = error_code {
                v |= ERROR_VALID | (u64::from(ec) << 32);
            }
            v
        }
        crate::Event::ExternalInterrupt(vec) => VALID | TYPE_INTR | u64::from(vec),
        crate::Event::Nmi => VALID | TYPE_NMI | 2,
    })
}

/// EVENTINJ for the event an exit interrupted (EXITINTINFO), 0 when there is none.
/// QEMU records an external interrupt it was delivering as an exception of its vector (which
/// hardware never reports, and which VMRUN refuses for vectors of 32 and up): that is put
/// back as the external interrupt it was, and an NMI recorded that way as an NMI.
pub fn reinjection(exit_int_info: u64) -> u64 {
    use event::*;
    if exit_int_info & VALID == 0 {
        return 0;
    }
    let vector = exit_int_info & 0xff;
    let kind = exit_int_info & (7 << 8);
    if kind == TYPE_EXCEPTION && vector >= 32 {
        return VALID | TYPE_INTR | vector;
    }
    if kind == TYPE_EXCEPTION && vector == 2 {
        return VALID | TYPE_NMI | 2;
    }
    exit_int_info
}

/// The vector of an EVENTINJ value that is an external interrupt.
pub fn external_interrupt(event_inj: u64) -> Option<u8> {
    (event_inj & event::VALID != 0 && event_inj & (7 << 8) == event::TYPE_INTR)
        .then_some((event_inj & 0xff) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_instructions_are_retired_as_no_ops() {
        for (c, insn) in [(code::INVD, Insn::Invd), (code::WBINVD, Insn::Wbinvd)] {
            assert_eq!(decode(c, 0, 0, 0, 0, 0), Decoded::Skip(insn));
            assert_eq!(insn_of(c), Some(insn));
        }
    }

    #[test]
    fn reinjection_keeps_real_events_and_mends_qemus_interrupts() {
        assert_eq!(reinjection(0), 0);
        assert_eq!(reinjection(0x0000_0403), 0, "not valid");
        let pf = (0x2u64 << 32) | event::VALID | event::ERROR_VALID | event::TYPE_EXCEPTION | 14;
        assert_eq!(reinjection(pf), pf);
        let intr = event::VALID | event::TYPE_INTR | 0xec;
        assert_eq!(reinjection(intr), intr);
        let soft = event::VALID | (4 << 8) | 3;
        assert_eq!(reinjection(soft), soft);
        assert_eq!(
            reinjection(event::VALID | event::TYPE_EXCEPTION | 0xec),
            intr,
            "QEMU's record of an interrupt in delivery"
        );
        assert_eq!(external_interrupt(intr), Some(0xec));
        assert_eq!(external_interrupt(pf), None);
        assert_eq!(external_interrupt(0xec), None, "not valid");
        assert_eq!(
            reinjection(event::VALID | event::TYPE_EXCEPTION | 2),
            event::VALID | event::TYPE_NMI | 2
        );
    }

    #[test]
    fn ioio_qemu_and_bochs_agree() {
        let q = decode(code::IOIO, 0x80_0010, 0x10_1462, 0x1234_5642, 0, 0);
        let b = decode(code::IOIO, 0x80_0210, 0x10_1462, 0x1234_5642, 0, 0);
        let want = IoExit {
            port: 0x80,
            size: 1,
            write: true,
            value: 0x42,
            string: false,
            rep: false,
        };
        assert_eq!(q, Decoded::Exit(Exit::Io(want)));
        assert_eq!(b, q);
        let inw = decode_io(0x3f8_0000 | (1 << 5) | 1, u64::MAX);
        assert_eq!(
            (inw.port, inw.size, inw.write, inw.value),
            (0x3f8, 2, false, 0)
        );
        let rep_outsd = decode_io((0x60 << 16) | (1 << 6) | (1 << 3) | (1 << 2), 7);
        assert!(rep_outsd.string && rep_outsd.rep && rep_outsd.write && rep_outsd.value == 0);
        assert_eq!(rep_outsd.size, 4);
    }

    #[test]
    fn npf_from_platform_notes() {
        let d = decode(code::NPF, 0x1_0000_0004, 0x4000_0000, 0, 0, 0);
        let Decoded::Exit(Exit::NestedPageFault(f)) = d else {
            panic!("{d:?}")
        };
        assert_eq!(f.gpa, 0x4000_0000);
        assert!(f.read && !f.write && !f.exec && !f.present && !f.during_walk);
        let w = decode_npf(0x1_0000_0007, 0x1000);
        assert!(w.write && w.present && !w.read);
        let x = decode_npf(0x2_0000_0015, 0x1000);
        assert!(x.exec && x.during_walk);
    }

    #[test]
    fn msr_cpuid_and_simple_exits() {
        assert_eq!(
            decode(code::MSR, 0, 0, 0, 0x1b, 0),
            Decoded::Exit(Exit::Rdmsr { msr: 0x1b })
        );
        assert_eq!(
            decode(code::MSR, 1, 0, 0xffff_ffff_8765_4321, 0xc000_0080, 0x1234),
            Decoded::Exit(Exit::Wrmsr {
                msr: 0xc000_0080,
                value: 0x1234_8765_4321
            })
        );
        assert_eq!(
            decode(code::CPUID, 0, 0, 0x4000_0000, 0xffff_ffff_0000_0001, 0),
            Decoded::Exit(Exit::Cpuid {
                leaf: 0x4000_0000,
                subleaf: 1
            })
        );
        assert_eq!(
            decode(code::VMMCALL, 0, 0, 0x1234, 0, 0),
            Decoded::Exit(Exit::Hypercall)
        );
        assert_eq!(decode(code::HLT, 0, 0, 0, 0, 0), Decoded::Exit(Exit::Hlt));
        assert_eq!(
            decode(code::SHUTDOWN, 0, 0, 0, 0, 0),
            Decoded::Exit(Exit::TripleFault)
        );
        assert_eq!(
            decode(code::VINTR, 0, 0, 0, 0, 0),
            Decoded::Exit(Exit::InterruptWindow)
        );
        assert_eq!(
            decode(code::INTR, 0, 0, 0, 0, 0),
            Decoded::Exit(Exit::ExternalInterrupt)
        );
        assert_eq!(decode(code::VMRUN, 0, 0, 0, 0, 0), Decoded::InjectUd);
        assert_eq!(decode(code::INVALID, 0, 0, 0, 0, 0), Decoded::Invalid);
        assert_eq!(
            decode(code::EXCP_BASE + 14, 2, 0xdead, 0, 0, 0),
            Decoded::Exit(Exit::Exception {
                vector: 14,
                error_code: Some(2)
            })
        );
        assert_eq!(
            decode(code::EXCP_BASE + 6, 0, 0, 0, 0, 0),
            Decoded::Exit(Exit::Exception {
                vector: 6,
                error_code: None
            })
        );
        assert_eq!(
            decode(0x1234, 5, 6, 0, 0, 0),
            Decoded::Exit(Exit::Unknown {
                reason: 0x1234,
                qualification: 5,
                info: 6
            })
        );
    }

    #[test]
    fn event_encoding() {
        assert_eq!(encode_event(crate::Event::GP0), Some(0x8000_0b0d));
        assert_eq!(encode_event(crate::Event::UD), Some(0x8000_0306));
        assert_eq!(
            encode_event(crate::Event::ExternalInterrupt(0x30)),
            Some(0x8000_0030)
        );
        assert_eq!(encode_event(crate::Event::Nmi), Some(0x8000_0202));
        assert_eq!(
            encode_event(crate::Event::Exception {
                vector: 2,
                error_code: None
            }),
            None
        );
        assert_eq!(
            encode_event(crate::Event::Exception {
                vector: 32,
                error_code: None
            }),
            None
        );
    }
}
