//! `vcpu_op`: per-vCPU registration (vcpu_info, runstate and secondary time areas) and timers.

use crate::errno::Errno;
use crate::guest::{u32_at, u64_at};
use crate::hypercall::Cx;
use crate::shared_info::{self, PAGE_SIZE, VCPU_INFO_SIZE, VI_UPCALL_PENDING};
use crate::timer::{self, Periodic};
use crate::{Area, Xen, evtchn, pvclock};

const IS_UP: u64 = 3;
const REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
const SET_PERIODIC_TIMER: u64 = 6;
const STOP_PERIODIC_TIMER: u64 = 7;
const SET_SINGLESHOT_TIMER: u64 = 8;
const STOP_SINGLESHOT_TIMER: u64 = 9;
const REGISTER_VCPU_INFO: u64 = 10;
const REGISTER_VCPU_TIME_MEMORY_AREA: u64 = 13;

/// `VCPU_SSHOTTMR_future`: refuse a deadline already in the past.
const SSHOTTMR_FUTURE: u32 = 1;
/// Xen's bounds on a periodic timer.
const MIN_PERIOD_NS: u64 = 1_000_000;
const MAX_PERIOD_NS: u64 = 1 << 62;

/// `vcpu_runstate_info`: 64-bit layout, and the 32-bit one where the u64s are 4-aligned.
const RUNSTATE_SIZE: u64 = 48;
const RUNSTATE_SIZE_COMPAT: u64 = 44;
const RUNSTATE_RUNNING: u32 = 0;

pub(crate) fn vcpu_op(
    x: &mut Xen,
    cx: &mut Cx<'_>,
    cmd: u64,
    vcpuid: u64,
    arg: u64,
) -> Result<u64, Errno> {
    let vcpu = u32::try_from(vcpuid)
        .ok()
        .filter(|&v| v < Xen::nr_vcpus(cx.host))
        .ok_or(Errno::ENOENT)?;
    match cmd {
        IS_UP => match cx.host.vcpu_is_up(vcpu) {
            Some(up) => Ok(u64::from(up)),
            None => Err(Errno::ENOSYS),
        },
        REGISTER_VCPU_INFO => register_vcpu_info(x, cx, vcpu, arg),
        REGISTER_RUNSTATE_MEMORY_AREA => register_runstate(x, cx, vcpu, arg),
        REGISTER_VCPU_TIME_MEMORY_AREA => register_time_area(x, cx, vcpu, arg),
        SET_PERIODIC_TIMER => {
            let period = cx.va.read_u64(arg)?;
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&period) {
                return Err(Errno::EINVAL);
            }
            let now = x.system_time(cx.host);
            if let Some(st) = x.vcpus.get_mut(vcpu as usize) {
                st.timers.periodic = Some(Periodic {
                    next: now.saturating_add(period),
                    period,
                });
            }
            timer::rearm(x, vcpu, cx.host);
            Ok(0)
        }
        STOP_PERIODIC_TIMER => {
            if let Some(st) = x.vcpus.get_mut(vcpu as usize) {
                st.timers.periodic = None;
            }
            timer::rearm(x, vcpu, cx.host);
            Ok(0)
        }
        SET_SINGLESHOT_TIMER => {
            // Another vCPU's clockevent is not this one's to program.
            if vcpu != cx.vcpu {
                return Err(Errno::EINVAL);
            }
            let a: [u8; 12] = cx.va.read_struct(arg)?;
            let deadline = u64_at(&a, 0);
            let flags = u32_at(&a, 8);
            if flags & SSHOTTMR_FUTURE != 0 && deadline < x.system_time(cx.host) {
                return Err(Errno::ETIME);
            }
            timer::set_singleshot(x, vcpu, deadline, cx.mem, cx.host);
            Ok(0)
        }
        STOP_SINGLESHOT_TIMER => {
            if vcpu != cx.vcpu {
                return Err(Errno::EINVAL);
            }
            timer::stop_singleshot(x, vcpu, cx.host);
            Ok(0)
        }
        // initialise/up/down need the kernel to load and stop vCPU contexts; Linux 6.1 starts
        // its CPUs with INIT/SIPI instead. get_runstate_info, send_nmi and the rest: not here.
        _ => Err(Errno::ENOSYS),
    }
}

fn register_vcpu_info(x: &mut Xen, cx: &mut Cx<'_>, vcpu: u32, arg: u64) -> Result<u64, Errno> {
    let a: [u8; 16] = cx.va.read_struct(arg)?;
    let gfn = u64_at(&a, 0);
    let offset = u64::from(u32_at(&a, 8));
    // Only the caller itself, or a vCPU not yet running (Linux's BSP registers each AP's
    // before starting it), may move a vcpu_info.
    if vcpu != cx.vcpu && cx.host.vcpu_is_up(vcpu) == Some(true) {
        return Err(Errno::EINVAL);
    }
    if x.vcpus
        .get(vcpu as usize)
        .is_some_and(|s| s.vcpu_info.is_some())
    {
        return Err(Errno::EBUSY);
    }
    // Whole inside one page, and aligned for the hypervisor's atomic word updates.
    if offset > PAGE_SIZE - VCPU_INFO_SIZE || offset % 8 != 0 {
        return Err(Errno::EINVAL);
    }
    let gpa = gfn
        .checked_mul(PAGE_SIZE)
        .and_then(|g| g.checked_add(offset))
        .filter(|g| {
            g.checked_add(VCPU_INFO_SIZE)
                .is_some_and(|e| e <= cx.mem.size())
        })
        .ok_or(Errno::EINVAL)?;
    let old = x.vcpu_info_gpa(vcpu);
    let moved = match old {
        Some(o) => shared_info::copy(cx.mem, o, gpa, VCPU_INFO_SIZE),
        None => cx.mem.write(gpa, &[0u8; VCPU_INFO_SIZE as usize]),
    };
    moved.map_err(|_| Errno::EFAULT)?;
    if let Some(st) = x.vcpus.get_mut(vcpu as usize) {
        st.vcpu_info = Some(gpa);
    }
    let tb = x.clock(cx.host);
    shared_info::write_time(cx.mem, gpa, &tb).map_err(|_| Errno::EFAULT)?;
    if cx
        .mem
        .read_u8(gpa + VI_UPCALL_PENDING)
        .is_ok_and(|b| b != 0)
    {
        evtchn::deliver_upcall(x, cx.host, vcpu);
    }
    Ok(0)
}

/// The registration argument of both VA-registered areas: a guest handle (pointer) in a
/// 64-bit slot; 32-bit callers fill only the low half.
fn area_va(cx: &Cx<'_>, arg: u64) -> Result<u64, Errno> {
    if cx.compat {
        Ok(u64::from(cx.va.read_u32(arg)?))
    } else {
        cx.va.read_u64(arg)
    }
}

fn register_runstate(x: &mut Xen, cx: &mut Cx<'_>, vcpu: u32, arg: u64) -> Result<u64, Errno> {
    let va = area_va(cx, arg)?;
    if va == 0 {
        if let Some(st) = x.vcpus.get_mut(vcpu as usize) {
            st.runstate = None;
        }
        return Ok(0);
    }
    let size = if cx.compat {
        RUNSTATE_SIZE_COMPAT
    } else {
        RUNSTATE_SIZE
    };
    // Translated once, like Xen's HVM path: Linux registers a per-CPU kernel address whose
    // mapping never changes. It may straddle two pages.
    let first_len = (PAGE_SIZE - (va & (PAGE_SIZE - 1))).min(size);
    let first = cx.va.gpa_in_page(va, first_len, true)?;
    let rest = if first_len < size {
        cx.va
            .gpa_in_page(va.wrapping_add(first_len), size - first_len, true)?
    } else {
        0
    };
    let area = Area {
        first,
        first_len,
        rest,
    };
    // Always running: steal time reads as zero until the scheduler reports states.
    let now = x.system_time(cx.host);
    let mut buf = [0u8; RUNSTATE_SIZE as usize];
    buf[0..4].copy_from_slice(&RUNSTATE_RUNNING.to_le_bytes());
    let t = if cx.compat { 4 } else { 8 };
    buf[t..t + 8].copy_from_slice(&now.to_le_bytes());
    write_area(cx, &area, &buf[..size as usize])?;
    if let Some(st) = x.vcpus.get_mut(vcpu as usize) {
        st.runstate = Some(area);
    }
    Ok(0)
}

fn write_area(cx: &Cx<'_>, area: &Area, data: &[u8]) -> Result<(), Errno> {
    let split = (area.first_len as usize).min(data.len());
    let (a, b) = data.split_at(split);
    cx.mem.write(area.first, a).map_err(|_| Errno::EFAULT)?;
    if !b.is_empty() {
        cx.mem.write(area.rest, b).map_err(|_| Errno::EFAULT)?;
    }
    Ok(())
}

fn register_time_area(x: &mut Xen, cx: &mut Cx<'_>, vcpu: u32, arg: u64) -> Result<u64, Errno> {
    let va = area_va(cx, arg)?;
    if va == 0 {
        if let Some(st) = x.vcpus.get_mut(vcpu as usize) {
            st.time_area = None;
        }
        return Ok(0);
    }
    let gpa = cx
        .va
        .gpa_in_page(va, pvclock::TIME_INFO_SIZE as u64, true)?;
    let tb = x.clock(cx.host);
    tb.publish(cx.mem, gpa).map_err(|_| Errno::EFAULT)?;
    if let Some(st) = x.vcpus.get_mut(vcpu as usize) {
        st.time_area = Some(gpa);
    }
    Ok(0)
}
