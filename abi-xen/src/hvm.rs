//! `hvm_op`: HVM parameters (upcall routing, console and xenstore location) and the
//! per-vCPU upcall vector.

use crate::errno::Errno;
use crate::guest::{u16_at, u32_at, u64_at};
use crate::hypercall::Cx;
use crate::{CONSOLE_PORT, DOMID_SELF, STORE_PORT, Xen, evtchn};

const SET_PARAM: u64 = 0;
const GET_PARAM: u64 = 1;
const SET_EVTCHN_UPCALL_VECTOR: u64 = 23;

pub const PARAM_CALLBACK_IRQ: u32 = 0;
pub const PARAM_STORE_PFN: u32 = 1;
pub const PARAM_STORE_EVTCHN: u32 = 2;
pub const PARAM_CONSOLE_PFN: u32 = 17;
pub const PARAM_CONSOLE_EVTCHN: u32 = 18;
/// `HVM_NR_PARAMS`.
const NR_PARAMS: u32 = 39;

/// `HVM_PARAM_CALLBACK_IRQ` value: delivery type in bits 63:56.
const CALLBACK_TYPE_GSI: u64 = 0;
const CALLBACK_TYPE_PCI_INTX: u64 = 1;
const CALLBACK_TYPE_VECTOR: u64 = 2;

/// Vectors below 0x10 are exceptions' and cannot be raised as interrupts.
const MIN_VECTOR: u64 = 0x10;

pub(crate) fn hvm_op(x: &mut Xen, cx: &mut Cx<'_>, op: u64, arg: u64) -> Result<u64, Errno> {
    match op {
        SET_PARAM => set_param(x, cx, arg),
        GET_PARAM => get_param(x, cx, arg),
        SET_EVTCHN_UPCALL_VECTOR => set_upcall_vector(x, cx, arg),
        // pagetable_dying (Linux probes it and turns the feature off), and the rest.
        _ => Err(Errno::ENOSYS),
    }
}

/// `{u16 domid; u32 index; u64 value}`: the same layout for 32- and 64-bit callers.
fn read_param(x: &Xen, cx: &Cx<'_>, arg: u64) -> Result<(u32, u64), Errno> {
    let a: [u8; 16] = cx.va.read_struct(arg)?;
    let domid = u16_at(&a, 0);
    if domid != DOMID_SELF && domid != x.cfg.domid {
        return Err(Errno::ESRCH);
    }
    let index = u32_at(&a, 4);
    if index >= NR_PARAMS {
        return Err(Errno::EINVAL);
    }
    Ok((index, u64_at(&a, 8)))
}

fn set_param(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let (index, value) = read_param(x, cx, arg)?;
    match index {
        PARAM_CALLBACK_IRQ => set_callback(x, cx, value),
        // Set by the toolstack, read-only to the guest.
        PARAM_STORE_PFN | PARAM_STORE_EVTCHN | PARAM_CONSOLE_PFN | PARAM_CONSOLE_EVTCHN => {
            Err(Errno::EPERM)
        }
        _ => {
            x.stats.detail = Some(u64::from(index));
            Err(Errno::ENOSYS)
        }
    }
}

fn set_callback(x: &mut Xen, cx: &mut Cx<'_>, value: u64) -> Result<u64, Errno> {
    let kind = value >> 56;
    match kind {
        CALLBACK_TYPE_VECTOR => {
            let vector = value & 0xff;
            if vector < MIN_VECTOR {
                return Err(Errno::EINVAL);
            }
            x.callback_vector = Some(vector as u8);
        }
        // 0 switches the callback off.
        CALLBACK_TYPE_GSI if value == 0 => x.callback_vector = None,
        // Linux sets GSI 1 after per-vCPU upcall vectors succeed, only so a toolstack sees
        // "a callback is configured"; delivery stays on the per-vCPU vectors.
        CALLBACK_TYPE_GSI if x.vcpus.iter().any(|v| v.upcall_vector.is_some()) => {
            x.callback_vector = None;
        }
        // No IOAPIC and no platform PCI device to route through.
        CALLBACK_TYPE_GSI | CALLBACK_TYPE_PCI_INTX => {
            x.stats.detail = Some(value);
            return Err(Errno::ENOSYS);
        }
        _ => return Err(Errno::EINVAL),
    }
    x.callback_raw = value;
    evtchn::redeliver_pending(x, cx.mem, cx.host);
    Ok(0)
}

fn get_param(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let (index, _) = read_param(x, cx, arg)?;
    let value = match index {
        PARAM_CALLBACK_IRQ => x.callback_raw,
        // 0 tells Linux "none": no xenbus / no hvc0.
        PARAM_STORE_PFN => {
            crate::xenstore_attach(x, cx.mem, cx.host);
            x.cfg.store_pfn.unwrap_or(0)
        }
        PARAM_STORE_EVTCHN => x.cfg.store_pfn.map_or(0, |_| u64::from(STORE_PORT)),
        PARAM_CONSOLE_PFN => x.cfg.console_pfn.unwrap_or(0),
        PARAM_CONSOLE_EVTCHN => x.cfg.console_pfn.map_or(0, |_| u64::from(CONSOLE_PORT)),
        _ => {
            x.stats.detail = Some(u64::from(index));
            return Err(Errno::ENOSYS);
        }
    };
    cx.va.write(arg.wrapping_add(8), &value.to_le_bytes())?;
    Ok(0)
}

fn set_upcall_vector(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    let a: [u8; 8] = cx.va.read_struct(arg)?;
    let vcpu = u32_at(&a, 0);
    let vector = a[4];
    if vcpu >= Xen::nr_vcpus(cx.host) {
        return Err(Errno::ENOENT);
    }
    if u64::from(vector) < MIN_VECTOR {
        return Err(Errno::EINVAL);
    }
    let st = x.vcpus.get_mut(vcpu as usize).ok_or(Errno::ENOENT)?;
    st.upcall_vector = Some(vector);
    if evtchn::upcall_pending(x, vcpu, cx.mem) {
        evtchn::deliver_upcall(x, cx.host, vcpu);
    }
    Ok(0)
}
