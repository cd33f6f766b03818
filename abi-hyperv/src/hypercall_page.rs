//! The hypercall page the guest calls into (`call *page`).

pub use virt::HypercallInsn;
use virt::{GuestMemory, MemError};

/// ENDBR64 first: a kernel built with indirect-branch tracking checks for it and otherwise
/// turns IBT off for the whole system; on CPUs without CET it is a NOP.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];
const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
const RET: u8 = 0xc3;
/// The rest of the page is INT3 so that a stray jump into it traps in the guest instead of
/// running whatever the page held before.
const FILL: u8 = 0xcc;

pub const CODE_LEN: usize = 8;

pub fn code(insn: HypercallInsn) -> [u8; CODE_LEN] {
    let trap = match insn {
        HypercallInsn::Vmcall => VMCALL,
        HypercallInsn::Vmmcall => VMMCALL,
    };
    let mut c = [0u8; CODE_LEN];
    c[..4].copy_from_slice(&ENDBR64);
    c[4..7].copy_from_slice(&trap);
    c[7] = RET;
    c
}

/// Fills the page at `gpa` (page aligned). The bytes are the same on every enable, so a
/// guest that checks the page for changes (Windows PatchGuard) sees none.
pub fn write(mem: &dyn GuestMemory, gpa: u64, insn: HypercallInsn) -> Result<(), MemError> {
    virt::check_range(mem.size(), gpa, 4096)?;
    let fill = [FILL; 256];
    let mut off = 0u64;
    while off < 4096 {
        mem.write(gpa + off, &fill)?;
        off += fill.len() as u64;
    }
    mem.write(gpa, &code(insn))
}
