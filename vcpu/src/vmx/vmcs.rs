//! VMCS field access over the `x86` crate's encodings, with VMfail mapped to [`Error`].
// UNSAFETY: VMREAD/VMWRITE/VMPTRLD/VMCLEAR/VMPTRST are VMX instructions; they are only
// reached after `enable` has executed VMXON on this pCPU (a `PerCpu` exists), and every
// failure they can report is turned into an `Error`.
#![expect(unsafe_code)]

use crate::Error;
use x86::bits64::vmx;
use x86::vmx::VmFail;
use x86::vmx::vmcs::ro;

fn map(e: VmFail) -> Error {
    match e {
        VmFail::VmFailValid => {
            // SAFETY: after VMfailValid a current VMCS exists, so this read is defined.
            let n = unsafe { vmx::vmread(ro::VM_INSTRUCTION_ERROR) }.unwrap_or(0);
            Error::VmFail {
                instruction_error: n as u32,
            }
        }
        VmFail::VmFailInvalid => Error::VmFailInvalid,
    }
}

/// Reads a field of the current VMCS.
pub(crate) fn read(field: u32) -> Result<u64, Error> {
    // SAFETY: VMX is on (module note); VMREAD reports a bad field or missing VMCS as VMfail.
    unsafe { vmx::vmread(field) }.map_err(map)
}

/// Reads a field, 0 on failure (for accessors whose caller cannot act on an error).
pub(crate) fn read_or0(field: u32) -> u64 {
    read(field).unwrap_or(0)
}

/// Writes a field of the current VMCS.
pub(crate) fn write(field: u32, value: u64) -> Result<(), Error> {
    // SAFETY: as for `read`; VMWRITE cannot corrupt host state, only the VMCS.
    unsafe { vmx::vmwrite(field, value) }.map_err(map)
}

/// Makes `pa` the current VMCS unless it already is.
pub(crate) fn make_current(pa: u64) -> Result<(), Error> {
    // SAFETY: VMPTRST only stores the current-VMCS pointer.
    let cur = unsafe { vmx::vmptrst() }.map_err(map)?;
    if cur != pa {
        // SAFETY: `pa` is a VMCS region this crate initialised with the revision id and
        // VMCLEARed; it is not active on another pCPU (the `unload` contract).
        unsafe { vmx::vmptrld(pa) }.map_err(map)?;
    }
    Ok(())
}

/// VMCLEAR: flushes the VMCS to memory and makes it inactive on this pCPU.
pub(crate) fn clear(pa: u64) -> Result<(), Error> {
    // SAFETY: `pa` is a VMCS region owned by the caller.
    unsafe { vmx::vmclear(pa) }.map_err(map)
}
