//! Guest register state shared by both backends.

/// General-purpose registers plus RIP and RFLAGS.
///
/// The field order is the hardware register numbering (RAX=0 ... R15=15), which the entry stubs
/// and the instruction decoder rely on; do not reorder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(C)]
pub struct GuestRegs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// Offsets the backends' asm entry stubs use; checked against the struct at compile time.
pub mod offsets {
    use super::GuestRegs;
    use core::mem::offset_of;
    pub const RAX: usize = 0;
    pub const RCX: usize = 8;
    pub const RDX: usize = 16;
    pub const RBX: usize = 24;
    pub const RSP: usize = 32;
    pub const RBP: usize = 40;
    pub const RSI: usize = 48;
    pub const RDI: usize = 56;
    pub const R8: usize = 64;
    pub const R15: usize = 120;
    const _: () = {
        assert!(offset_of!(GuestRegs, rax) == RAX);
        assert!(offset_of!(GuestRegs, rcx) == RCX);
        assert!(offset_of!(GuestRegs, rdx) == RDX);
        assert!(offset_of!(GuestRegs, rbx) == RBX);
        assert!(offset_of!(GuestRegs, rsp) == RSP);
        assert!(offset_of!(GuestRegs, rbp) == RBP);
        assert!(offset_of!(GuestRegs, rsi) == RSI);
        assert!(offset_of!(GuestRegs, rdi) == RDI);
        assert!(offset_of!(GuestRegs, r8) == R8);
        assert!(offset_of!(GuestRegs, r15) == R15);
    };
}

impl GuestRegs {
    /// Register by hardware number (0 = RAX ... 15 = R15); `None` beyond 15.
    pub fn gpr(&self, n: u8) -> Option<u64> {
        Some(match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => self.rsp,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => return None,
        })
    }

    /// Sets a register by hardware number; false beyond 15.
    pub fn set_gpr(&mut self, n: u8, v: u64) -> bool {
        let r = match n {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => &mut self.rsp,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return false,
        };
        *r = v;
        true
    }

    /// Writes the result of RDMSR/RDTSC-style instructions: EDX:EAX, upper halves cleared.
    pub fn set_edx_eax(&mut self, v: u64) {
        self.rax = v & 0xffff_ffff;
        self.rdx = v >> 32;
    }

    /// Writes a CPUID result; the upper halves are cleared as the instruction does.
    pub fn set_cpuid(&mut self, eax: u32, ebx: u32, ecx: u32, edx: u32) {
        self.rax = eax.into();
        self.rbx = ebx.into();
        self.rcx = ecx.into();
        self.rdx = edx.into();
    }
}

/// Guest control registers as the guest sees them (VMX read shadows already applied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ControlRegs {
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// Architectural bits the crate uses in several places.
pub mod bits {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NE: u64 = 1 << 5;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_VMXE: u64 = 1 << 13;
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    pub const CR4_SMEP: u64 = 1 << 20;
    pub const CR4_SMAP: u64 = 1 << 21;
    pub const CR4_PKE: u64 = 1 << 22;
    pub const CR4_LA57: u64 = 1 << 12;
    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
    pub const EFER_SVME: u64 = 1 << 12;
    pub const RFLAGS_FIXED: u64 = 1 << 1;
    pub const RFLAGS_TF: u64 = 1 << 8;
    pub const RFLAGS_IF: u64 = 1 << 9;
    pub const RFLAGS_AC: u64 = 1 << 18;
    pub const RFLAGS_VM: u64 = 1 << 17;
}

/// A segment register selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SegReg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
}

/// A segment register with its hidden part.
///
/// `attr` uses the packed 12-bit form of the VMCB: access byte (type, S, DPL, P) in bits 7:0,
/// then AVL, L, D/B, G in bits 11:8. `unusable` is VMX's bit 16 (an SVM segment with P=0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Segment {
    pub selector: u16,
    pub attr: u16,
    pub limit: u32,
    pub base: u64,
    pub unusable: bool,
}

impl Segment {
    /// Flat 64-bit code segment, DPL 0.
    pub const CODE64: u16 = 0x0A9B;
    /// Flat 32-bit code segment, DPL 0.
    pub const CODE32: u16 = 0x0C9B;
    /// Flat read/write data segment, DPL 0.
    pub const DATA: u16 = 0x0C93;
    /// 16-bit real-mode code (accessed, read/exec).
    pub const REAL_CODE: u16 = 0x009B;
    /// 16-bit real-mode data.
    pub const REAL_DATA: u16 = 0x0093;
    /// Busy 64-bit (or 32-bit) TSS.
    pub const TSS_BUSY: u16 = 0x008B;
    /// LDT.
    pub const LDT: u16 = 0x0082;

    pub const fn new(selector: u16, base: u64, limit: u32, attr: u16) -> Self {
        Segment {
            selector,
            attr,
            limit,
            base,
            unusable: false,
        }
    }

    /// A segment that no instruction may use (null data selector in 64-bit mode, no LDT).
    pub const fn unusable() -> Self {
        Segment {
            selector: 0,
            attr: 0,
            limit: 0,
            base: 0,
            unusable: true,
        }
    }

    pub const fn dpl(&self) -> u8 {
        ((self.attr >> 5) & 3) as u8
    }

    /// CS.L.
    pub const fn long(&self) -> bool {
        self.attr & (1 << 9) != 0
    }

    /// CS.D / SS.B.
    pub const fn default_big(&self) -> bool {
        self.attr & (1 << 10) != 0
    }

    /// VMX access-rights encoding (bits 11:8 moved to 15:12, unusable in bit 16).
    pub const fn vmx_access_rights(&self) -> u32 {
        if self.unusable {
            return 1 << 16;
        }
        (self.attr as u32 & 0xff) | ((self.attr as u32 & 0xf00) << 4)
    }

    /// Inverse of [`Segment::vmx_access_rights`].
    pub const fn attr_from_vmx(ar: u32) -> (u16, bool) {
        (
            ((ar & 0xff) | ((ar >> 4) & 0xf00)) as u16,
            ar & (1 << 16) != 0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_attr_round_trips_through_vmx_format() {
        let cs = Segment::new(8, 0, 0xffff_ffff, Segment::CODE64);
        assert_eq!(cs.vmx_access_rights(), 0xA09B);
        assert_eq!(
            Segment::new(0x10, 0, 0xffff_ffff, Segment::DATA).vmx_access_rights(),
            0xC093
        );
        assert_eq!(Segment::attr_from_vmx(0xA09B), (Segment::CODE64, false));
        assert_eq!(Segment::unusable().vmx_access_rights(), 0x10000);
        assert!(Segment::attr_from_vmx(0x10000).1);
        assert!(cs.long() && !cs.default_big());
    }

    #[test]
    fn gpr_numbering_matches_hardware() {
        let mut r = GuestRegs::default();
        for n in 0..16u8 {
            assert!(r.set_gpr(n, 100 + u64::from(n)));
        }
        assert_eq!(r.rax, 100);
        assert_eq!(r.rsp, 104);
        assert_eq!(r.rdi, 107);
        assert_eq!(r.r15, 115);
        assert_eq!(r.gpr(9), Some(109));
        assert_eq!(r.gpr(16), None);
        assert!(!r.set_gpr(16, 0));
    }

    #[test]
    fn edx_eax_split() {
        let mut r = GuestRegs {
            rax: u64::MAX,
            rdx: u64::MAX,
            ..Default::default()
        };
        r.set_edx_eax(0x1234_5678_9abc_def0);
        assert_eq!((r.rax, r.rdx), (0x9abc_def0, 0x1234_5678));
    }
}
