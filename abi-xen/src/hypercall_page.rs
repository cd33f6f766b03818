//! The hypercall page: older guests write its address to the MSR named in CPUID base+2 and
//! then `call page + 32 * nr`, so each 32-byte slot loads its number and traps.

use crate::cpuid::HYPERCALL_MSR;
use crate::hypercall::nr;
use crate::{HypercallInsn, Xen};
use virt::{Event, GuestMemory};

const STUB: usize = 32;
const STUBS: usize = 4096 / STUB;
const INT3: u8 = 0xCC;

/// Slot `n`: `mov $n, %eax; vmcall|vmmcall; ret`, padded with int3 so a stray jump traps.
pub fn stub(insn: HypercallInsn, n: u32) -> [u8; STUB] {
    let mut s = [INT3; STUB];
    if n == nr::IRET {
        // HVM guests have no PV iret; the slot faults rather than make a meaningless call.
        s[0] = 0x0F;
        s[1] = 0x0B;
        return s;
    }
    s[0] = 0xB8;
    s[1..5].copy_from_slice(&n.to_le_bytes());
    s[5] = 0x0F;
    s[6] = 0x01;
    s[7] = match insn {
        HypercallInsn::Vmcall => 0xC1,
        HypercallInsn::Vmmcall => 0xD9,
    };
    s[8] = 0xC3;
    s
}

/// `None`: not the hypercall MSR.
pub(crate) fn rdmsr(x: &Xen, msr: u32) -> Option<u64> {
    // Write-only on Xen; reading back the last address is harmless and aids debugging.
    (msr == HYPERCALL_MSR).then(|| x.hypercall_page.unwrap_or(0))
}

pub(crate) fn wrmsr(
    x: &mut Xen,
    msr: u32,
    value: u64,
    mem: &dyn GuestMemory,
) -> Result<bool, Event> {
    if msr != HYPERCALL_MSR {
        return Ok(false);
    }
    // Low 12 bits select the page; there is only page 0.
    if value & 0xfff != 0 {
        return Err(Event::GP0);
    }
    let gpa = value;
    let end = gpa.checked_add(4096).ok_or(Event::GP0)?;
    if end > mem.size() {
        return Err(Event::GP0);
    }
    for n in 0..STUBS {
        let at = gpa + (n * STUB) as u64;
        mem.write(at, &stub(x.cfg.insn, n as u32))
            .map_err(|_| Event::GP0)?;
    }
    x.hypercall_page = Some(gpa);
    Ok(true)
}
