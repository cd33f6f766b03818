//! The configuration a vCPU is created with, and the registers its initial state fixes.

use virt::{InitialState, RamRegion};

/// The registers a runnable [`InitialState`] fixes, shared by both backends (which differ only
/// in where they store them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryState {
    pub regs: crate::GuestRegs,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: crate::Segment,
}

/// `None` for [`InitialState::WaitForSipi`], which has no registers yet.
pub(crate) fn entry_state(state: &InitialState) -> Option<EntryState> {
    use crate::Segment;
    use crate::bits::*;
    let flat = |sel, attr| Segment::new(sel, 0, 0xffff_ffff, attr);
    match *state {
        InitialState::WaitForSipi => None,
        InitialState::Flat32 { entry, ebx, esi } => Some(EntryState {
            regs: crate::GuestRegs {
                rip: entry.into(),
                rbx: ebx.into(),
                rsi: esi.into(),
                ..Default::default()
            },
            cr0: CR0_PE | CR0_ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs: flat(0x8, Segment::CODE32),
        }),
        InitialState::Long64 {
            entry,
            cr3,
            rsp,
            rdi,
            rsi,
        } => Some(EntryState {
            regs: crate::GuestRegs {
                rip: entry,
                rsp,
                rdi,
                rsi,
                ..Default::default()
            },
            cr0: CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
            cr3,
            // PAE, OSFXSR, OSXMMEXCPT.
            cr4: CR4_PAE | (1 << 9) | (1 << 10),
            efer: EFER_LME | EFER_LMA | EFER_NXE,
            cs: flat(0x8, Segment::CODE64),
        }),
    }
}

/// What the kernel gives a vCPU at creation.
#[derive(Clone, Copy, Debug)]
pub struct VcpuConfig {
    pub ram: RamRegion,
    /// Root of the VM's nested tables: [`crate::NestedPageTable::root`] (shared by the VM's vCPUs).
    pub nested_root: u64,
    /// Per-vCPU TLB tag: the ASID (SVM) or VPID (VMX). Non-zero and unique among the vCPUs of
    /// the whole machine; on SVM it must be below [`crate::Caps::asids`].
    pub tag: u16,
    pub initial: InitialState,
}
