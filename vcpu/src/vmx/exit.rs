//! Decoding of VM-exit information (exit reason, qualification, interruption info) — pure.

use crate::{Exit, IoExit, NestedFault};

pub mod reason {
    pub const EXCEPTION_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const SIPI: u32 = 4;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const CPUID: u32 = 10;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMXON: u32 = 27;
    pub const CR_ACCESS: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const INVVPID: u32 = 53;
    pub const WBINVD: u32 = 54;
    pub const XSETBV: u32 = 55;
    pub const INVPCID_: u32 = 58;
    pub const VMFUNC: u32 = 59;
    /// Bit 31 of the exit reason: VM entry failed.
    pub const ENTRY_FAILURE: u32 = 1 << 31;
}

/// A MOV to/from a control register, CLTS or LMSW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    MovTo { cr: u8, gpr: u8 },
    MovFrom { cr: u8, gpr: u8 },
    Clts,
    Lmsw { value: u16 },
}

pub fn decode_cr(qual: u64) -> CrAccess {
    let cr = (qual & 0xf) as u8;
    let gpr = ((qual >> 8) & 0xf) as u8;
    match (qual >> 4) & 3 {
        0 => CrAccess::MovTo { cr, gpr },
        1 => CrAccess::MovFrom { cr, gpr },
        2 => CrAccess::Clts,
        _ => CrAccess::Lmsw {
            value: (qual >> 16) as u16,
        },
    }
}

/// What the backend does with an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    Exit(Exit),
    Cr(CrAccess),
    Xsetbv,
    /// INVD/WBINVD: retire.
    Skip,
    /// VMX instructions, MONITOR/MWAIT, INVEPT/INVVPID/VMFUNC: #UD.
    InjectUd,
    /// Entry failed (reason with bit 31): the guest state is bad.
    EntryFailed,
}

pub fn decode_io(qual: u64, rax: u64) -> IoExit {
    let size = ((qual & 7) + 1) as u8;
    let write = qual & (1 << 3) == 0;
    let string = qual & (1 << 4) != 0;
    let mut io = IoExit {
        port: (qual >> 16) as u16,
        size,
        write,
        value: 0,
        string,
        rep: qual & (1 << 5) != 0,
    };
    if write && !string {
        io.value = rax as u32 & io.mask();
    }
    io
}

pub fn decode_ept(qual: u64, gpa: u64) -> NestedFault {
    let gla_valid = qual & (1 << 7) != 0;
    NestedFault {
        gpa,
        read: qual & 1 != 0,
        write: qual & 2 != 0,
        exec: qual & 4 != 0,
        present: qual & 0x38 != 0,
        during_walk: gla_valid && qual & (1 << 8) == 0,
    }
}

/// Decodes an exit. `intr_info`/`intr_err` are the VM-exit interruption fields, `gpa` the
/// guest-physical address field; `rax`/`rcx`/`rdx` the guest's registers.
#[allow(clippy::too_many_arguments)]
pub fn decode(
    raw_reason: u32,
    qual: u64,
    intr_info: u32,
    intr_err: u32,
    gpa: u64,
    rax: u64,
    rcx: u64,
    rdx: u64,
) -> Decoded {
    if raw_reason & reason::ENTRY_FAILURE != 0 {
        return Decoded::EntryFailed;
    }
    let e = match raw_reason & 0xffff {
        reason::EXCEPTION_NMI => {
            let vector = intr_info as u8;
            if (intr_info >> 8) & 7 == 2 {
                Exit::Nmi
            } else {
                let error_code = (intr_info & (1 << 11) != 0).then_some(intr_err);
                Exit::Exception { vector, error_code }
            }
        }
        reason::EXTERNAL_INTERRUPT => Exit::ExternalInterrupt,
        reason::TRIPLE_FAULT => Exit::TripleFault,
        reason::INIT => Exit::Init,
        reason::SIPI => Exit::Sipi { vector: qual as u8 },
        reason::INTERRUPT_WINDOW => Exit::InterruptWindow,
        reason::CPUID => Exit::Cpuid {
            leaf: rax as u32,
            subleaf: rcx as u32,
        },
        reason::HLT => Exit::Hlt,
        reason::VMCALL => Exit::Hypercall,
        reason::IO => Exit::Io(decode_io(qual, rax)),
        reason::RDMSR => Exit::Rdmsr { msr: rcx as u32 },
        reason::WRMSR => Exit::Wrmsr {
            msr: rcx as u32,
            value: (rdx << 32) | (rax & 0xffff_ffff),
        },
        reason::EPT_VIOLATION => Exit::NestedPageFault(decode_ept(qual, gpa)),
        reason::CR_ACCESS => return Decoded::Cr(decode_cr(qual)),
        reason::XSETBV => return Decoded::Xsetbv,
        reason::INVD | reason::WBINVD => return Decoded::Skip,
        r if (reason::VMCLEAR..=reason::VMXON).contains(&r) => return Decoded::InjectUd,
        reason::MWAIT | reason::MONITOR | reason::INVEPT | reason::INVVPID | reason::VMFUNC => {
            return Decoded::InjectUd;
        }
        r => Exit::Unknown {
            reason: r.into(),
            qualification: qual,
            info: gpa,
        },
    };
    Decoded::Exit(e)
}

/// VM-entry interruption-information encoding of an event.
pub fn encode_event(ev: crate::Event) -> Option<(u32, Option<u32>)> {
    const VALID: u32 = 1 << 31;
    Some(match ev {
        crate::Event::Exception { vector, error_code } => {
            if vector == 2 || vector >= 32 {
                return None;
            }
            let ev_bit = if error_code.is_some() { 1 << 11 } else { 0 };
            (VALID | (3 << 8) | ev_bit | u32::from(vector), error_code)
        }
        crate::Event::ExternalInterrupt(v) => (VALID | u32::from(v), None),
        crate::Event::Nmi => (VALID | (2 << 8) | 2, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(r: u32, q: u64) -> Decoded {
        decode(r, q, 0, 0, 0, 0x1234_5642, 0x1b, 0)
    }

    #[test]
    fn io_from_bochs_trace() {
        let want = IoExit {
            port: 0x80,
            size: 1,
            write: true,
            value: 0x42,
            string: false,
            rep: false,
        };
        assert_eq!(d(reason::IO, 0x80_0040), Decoded::Exit(Exit::Io(want)));
        let io = decode_io(0x3f8_0000 | (1 << 3) | 3, 0);
        assert_eq!((io.port, io.size, io.write), (0x3f8, 4, false));
        let s = decode_io((0x1f0 << 16) | (1 << 5) | (1 << 4) | (1 << 3) | 1, 0);
        assert!(s.string && s.rep && !s.write && s.size == 2);
    }

    #[test]
    fn ept_violation_from_bochs_trace() {
        let Decoded::Exit(Exit::NestedPageFault(f)) =
            decode(reason::EPT_VIOLATION, 0x181, 0, 0, 0x4000_0000, 0, 0, 0)
        else {
            panic!()
        };
        assert_eq!(f.gpa, 0x4000_0000);
        assert!(f.read && !f.write && !f.exec && !f.present && !f.during_walk);
        let w = decode_ept(0x8a, 0x1000);
        assert!(w.write && w.present && w.during_walk);
    }

    #[test]
    fn simple_exits() {
        assert_eq!(d(reason::VMCALL, 0), Decoded::Exit(Exit::Hypercall));
        assert_eq!(
            d(reason::CPUID, 0),
            Decoded::Exit(Exit::Cpuid {
                leaf: 0x1234_5642,
                subleaf: 0x1b
            })
        );
        assert_eq!(
            d(reason::RDMSR, 0),
            Decoded::Exit(Exit::Rdmsr { msr: 0x1b })
        );
        assert_eq!(d(reason::HLT, 0), Decoded::Exit(Exit::Hlt));
        assert_eq!(d(reason::TRIPLE_FAULT, 0), Decoded::Exit(Exit::TripleFault));
        assert_eq!(
            d(reason::SIPI, 0x9a),
            Decoded::Exit(Exit::Sipi { vector: 0x9a })
        );
        assert_eq!(
            d(reason::EXTERNAL_INTERRUPT, 0),
            Decoded::Exit(Exit::ExternalInterrupt)
        );
        assert_eq!(
            d(reason::INTERRUPT_WINDOW, 0),
            Decoded::Exit(Exit::InterruptWindow)
        );
        assert_eq!(d(reason::XSETBV, 0), Decoded::Xsetbv);
        assert_eq!(d(reason::WBINVD, 0), Decoded::Skip);
        assert_eq!(d(reason::VMXON, 0), Decoded::InjectUd);
        assert_eq!(d(reason::ENTRY_FAILURE | 33, 0), Decoded::EntryFailed);
        assert_eq!(
            d(77, 5),
            Decoded::Exit(Exit::Unknown {
                reason: 77,
                qualification: 5,
                info: 0
            })
        );
        assert_eq!(
            decode(
                reason::WRMSR,
                0,
                0,
                0,
                0,
                0xffff_ffff_0000_0001,
                0x277,
                0x0007_0406
            ),
            Decoded::Exit(Exit::Wrmsr {
                msr: 0x277,
                value: 0x0007_0406_0000_0001
            })
        );
    }

    #[test]
    fn exceptions_and_nmi() {
        assert_eq!(
            decode(0, 0, 0x8000_0b0e, 2, 0, 0, 0, 0),
            Decoded::Exit(Exit::Exception {
                vector: 14,
                error_code: Some(2)
            })
        );
        assert_eq!(
            decode(0, 0, 0x8000_0202, 0, 0, 0, 0, 0),
            Decoded::Exit(Exit::Nmi)
        );
        assert_eq!(
            decode(0, 0, 0x8000_0306, 0, 0, 0, 0, 0),
            Decoded::Exit(Exit::Exception {
                vector: 6,
                error_code: None
            })
        );
    }

    #[test]
    fn cr_access_qualification() {
        assert_eq!(decode_cr(0x0000_0300), CrAccess::MovTo { cr: 0, gpr: 3 });
        assert_eq!(decode_cr(0x0000_0414), CrAccess::MovFrom { cr: 4, gpr: 4 });
        assert_eq!(decode_cr(0x20), CrAccess::Clts);
        assert_eq!(decode_cr(0x0011_0030), CrAccess::Lmsw { value: 0x11 });
    }

    #[test]
    fn event_encoding() {
        assert_eq!(
            encode_event(crate::Event::GP0),
            Some((0x8000_0b0d, Some(0)))
        );
        assert_eq!(
            encode_event(crate::Event::ExternalInterrupt(0x20)),
            Some((0x8000_0020, None))
        );
        assert_eq!(encode_event(crate::Event::Nmi), Some((0x8000_0202, None)));
        assert_eq!(
            encode_event(crate::Event::Exception {
                vector: 40,
                error_code: None
            }),
            None
        );
    }
}
