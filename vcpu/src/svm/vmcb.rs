//! The VMCB (AMD APM vol. 2, appendix B) as a typed page, with its layout checked at compile time.

use core::mem::{offset_of, size_of};

/// A segment in the VMCB save area (attrib in the packed 12-bit form).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct VmcbSegment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// Control area (0x000..0x400).
#[derive(Debug)]
#[repr(C)]
pub struct VmcbControl {
    pub intercept_cr: u32,
    pub intercept_dr: u32,
    pub intercept_exceptions: u32,
    pub intercept_misc1: u32,
    pub intercept_misc2: u32,
    pub intercept_misc3: u32,
    _r0: [u8; 0x24],
    pub pause_filter_threshold: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub guest_asid: u32,
    pub tlb_control: u8,
    _r1: [u8; 3],
    pub int_control: u64,
    pub int_state: u64,
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    pub exit_int_info: u64,
    pub np_control: u64,
    pub avic_apic_bar: u64,
    pub ghcb_pa: u64,
    pub event_inj: u64,
    pub n_cr3: u64,
    pub lbr_virt: u64,
    pub clean_bits: u32,
    _r2: u32,
    pub next_rip: u64,
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    _r3: [u8; 0x320],
}

/// State save area (0x400..0x1000).
#[derive(Debug)]
#[repr(C)]
pub struct VmcbSave {
    pub es: VmcbSegment,
    pub cs: VmcbSegment,
    pub ss: VmcbSegment,
    pub ds: VmcbSegment,
    pub fs: VmcbSegment,
    pub gs: VmcbSegment,
    pub gdtr: VmcbSegment,
    pub ldtr: VmcbSegment,
    pub idtr: VmcbSegment,
    pub tr: VmcbSegment,
    _r0: [u8; 0x2b],
    pub cpl: u8,
    _r1: u32,
    pub efer: u64,
    _r2: [u8; 0x70],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    _r3: [u8; 0x58],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    _r4: [u8; 0x20],
    pub g_pat: u64,
    pub dbgctl: u64,
    _r5: [u8; 0x988],
}

/// One VMCB: a 4 KiB page.
#[derive(Debug)]
#[repr(C, align(4096))]
pub struct Vmcb {
    pub control: VmcbControl,
    pub save: VmcbSave,
}

macro_rules! at {
    ($t:ty, $f:ident, $off:expr) => {
        assert!(offset_of!($t, $f) == $off);
    };
}

const _: () = {
    assert!(size_of::<Vmcb>() == 0x1000);
    assert!(size_of::<VmcbControl>() == 0x400);
    assert!(size_of::<VmcbSegment>() == 16);
    at!(Vmcb, save, 0x400);
    at!(VmcbControl, intercept_cr, 0x000);
    at!(VmcbControl, intercept_dr, 0x004);
    at!(VmcbControl, intercept_exceptions, 0x008);
    at!(VmcbControl, intercept_misc1, 0x00c);
    at!(VmcbControl, intercept_misc2, 0x010);
    at!(VmcbControl, intercept_misc3, 0x014);
    at!(VmcbControl, pause_filter_threshold, 0x03c);
    at!(VmcbControl, pause_filter_count, 0x03e);
    at!(VmcbControl, iopm_base_pa, 0x040);
    at!(VmcbControl, msrpm_base_pa, 0x048);
    at!(VmcbControl, tsc_offset, 0x050);
    at!(VmcbControl, guest_asid, 0x058);
    at!(VmcbControl, tlb_control, 0x05c);
    at!(VmcbControl, int_control, 0x060);
    at!(VmcbControl, int_state, 0x068);
    at!(VmcbControl, exit_code, 0x070);
    at!(VmcbControl, exit_info1, 0x078);
    at!(VmcbControl, exit_info2, 0x080);
    at!(VmcbControl, exit_int_info, 0x088);
    at!(VmcbControl, np_control, 0x090);
    at!(VmcbControl, event_inj, 0x0a8);
    at!(VmcbControl, n_cr3, 0x0b0);
    at!(VmcbControl, lbr_virt, 0x0b8);
    at!(VmcbControl, clean_bits, 0x0c0);
    at!(VmcbControl, next_rip, 0x0c8);
    at!(VmcbControl, insn_len, 0x0d0);
    at!(VmcbControl, insn_bytes, 0x0d1);
    // Save-area offsets relative to the VMCB start minus 0x400.
    at!(VmcbSave, es, 0x000);
    at!(VmcbSave, cs, 0x010);
    at!(VmcbSave, ss, 0x020);
    at!(VmcbSave, ds, 0x030);
    at!(VmcbSave, fs, 0x040);
    at!(VmcbSave, gs, 0x050);
    at!(VmcbSave, gdtr, 0x060);
    at!(VmcbSave, ldtr, 0x070);
    at!(VmcbSave, idtr, 0x080);
    at!(VmcbSave, tr, 0x090);
    at!(VmcbSave, cpl, 0x0cb);
    at!(VmcbSave, efer, 0x0d0);
    at!(VmcbSave, cr4, 0x148);
    at!(VmcbSave, cr3, 0x150);
    at!(VmcbSave, cr0, 0x158);
    at!(VmcbSave, dr7, 0x160);
    at!(VmcbSave, dr6, 0x168);
    at!(VmcbSave, rflags, 0x170);
    at!(VmcbSave, rip, 0x178);
    at!(VmcbSave, rsp, 0x1d8);
    at!(VmcbSave, rax, 0x1f8);
    at!(VmcbSave, star, 0x200);
    at!(VmcbSave, lstar, 0x208);
    at!(VmcbSave, cstar, 0x210);
    at!(VmcbSave, sfmask, 0x218);
    at!(VmcbSave, kernel_gs_base, 0x220);
    at!(VmcbSave, sysenter_cs, 0x228);
    at!(VmcbSave, sysenter_esp, 0x230);
    at!(VmcbSave, sysenter_eip, 0x238);
    at!(VmcbSave, cr2, 0x240);
    at!(VmcbSave, g_pat, 0x268);
    at!(VmcbSave, dbgctl, 0x270);
};

/// Number of layout assertions above (kept for the test report).
pub const LAYOUT_CHECKS: usize = 65;

/// Intercept bits of `intercept_misc1`.
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const INIT: u32 = 1 << 3;
    pub const VINTR: u32 = 1 << 4;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO: u32 = 1 << 27;
    pub const MSR: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of `intercept_misc2`.
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const WBINVD: u32 = 1 << 9;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_ARMED: u32 = 1 << 12;
    pub const XSETBV: u32 = 1 << 13;
}

/// `int_control` bits.
pub mod int_ctl {
    pub const V_IRQ: u64 = 1 << 8;
    /// V_INTR_PRIO, bits 19:16.
    pub const V_INTR_PRIO: u64 = 0xf << 16;
    /// V_INTR_VECTOR, the byte at 0x64.
    pub const V_INTR_VECTOR_SHIFT: u32 = 32;
    pub const V_INTR_VECTOR: u64 = 0xff << V_INTR_VECTOR_SHIFT;
    pub const V_IGN_TPR: u64 = 1 << 20;
    pub const V_INTR_MASKING: u64 = 1 << 24;
}

/// `tlb_control` values.
pub mod tlb {
    pub const NONE: u8 = 0;
    pub const FLUSH_ALL: u8 = 1;
    pub const FLUSH_ASID: u8 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmcb_is_a_page() {
        assert_eq!(core::mem::align_of::<Vmcb>(), 4096);
        assert_eq!(size_of::<Vmcb>(), 4096);
        assert_eq!(offset_of!(Vmcb, save) + offset_of!(VmcbSave, rax), 0x5f8);
        assert_eq!(offset_of!(Vmcb, save) + offset_of!(VmcbSave, g_pat), 0x668);
    }
}
