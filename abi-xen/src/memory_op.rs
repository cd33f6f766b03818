//! `memory_op`: placing shared_info and grant-table frames in the guest's physical map.

use crate::errno::Errno;
use crate::guest::{u16_at, u32_at, u64_at};
use crate::hypercall::Cx;
use crate::shared_info::{self, LEGACY_VCPUS, PAGE_SIZE};
use crate::{DOMID_SELF, Xen};

/// The low bits of the command; the rest carry a continuation's progress.
const CMD_MASK: u64 = 0x3f;
const ADD_TO_PHYSMAP: u64 = 7;

const SPACE_SHARED_INFO: u32 = 0;
const SPACE_GRANT_TABLE: u32 = 1;
const SPACE_GMFN_FOREIGN: u32 = 4;

pub(crate) fn memory_op(x: &mut Xen, cx: &mut Cx<'_>, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match cmd & CMD_MASK {
        ADD_TO_PHYSMAP => add_to_physmap(x, cx, arg),
        // memory_map (the loader passes the memory map in start_info), balloon operations,
        // and the rest.
        _ => Err(Errno::ENOSYS),
    }
}

fn add_to_physmap(x: &mut Xen, cx: &mut Cx<'_>, arg: u64) -> Result<u64, Errno> {
    // 64-bit: domid@0 size@2 space@4 idx@8 gpfn@16; 32-bit: idx@8 and gpfn@12 are 4 bytes.
    let a: [u8; 24] = if cx.compat {
        let c: [u8; 16] = cx.va.read_struct(arg)?;
        let mut a = [0u8; 24];
        a[..12].copy_from_slice(&c[..12]);
        a[16..20].copy_from_slice(&c[12..16]);
        a
    } else {
        cx.va.read_struct(arg)?
    };
    let domid = u16_at(&a, 0);
    let space = u32_at(&a, 4);
    let idx = u64_at(&a, 8);
    let gpfn = u64_at(&a, 16);
    if domid != DOMID_SELF && domid != x.cfg.domid {
        return Err(Errno::ESRCH);
    }
    match space {
        SPACE_SHARED_INFO => {}
        SPACE_GRANT_TABLE => return crate::gnttab::add_to_physmap(x, cx, idx, gpfn),
        2..=SPACE_GMFN_FOREIGN => {
            x.stats.detail = Some(u64::from(space));
            return Err(Errno::ENOSYS);
        }
        _ => return Err(Errno::EINVAL),
    }
    if idx != 0 {
        return Err(Errno::EINVAL);
    }
    let gpa = gpfn
        .checked_mul(PAGE_SIZE)
        .filter(|g| {
            g.checked_add(PAGE_SIZE)
                .is_some_and(|end| end <= cx.mem.size())
        })
        .ok_or(Errno::EINVAL)?;
    map_shared_info(x, cx, gpa).map_err(|_| Errno::EFAULT)?;
    Ok(0)
}

/// Adopts the guest page at `gpa` as shared_info. A move keeps the contents (pending bits,
/// masks, legacy vcpu_infos), as Xen's page would; a first mapping starts from zero. The
/// clock and wall clock are valid before the call returns, because Linux reads them at once.
fn map_shared_info(x: &mut Xen, cx: &mut Cx<'_>, gpa: u64) -> Result<(), virt::MemError> {
    match x.shared_info {
        Some(old) if old == gpa => {}
        Some(old) => shared_info::copy(cx.mem, old, gpa, PAGE_SIZE)?,
        None => shared_info::zero_page(cx.mem, gpa)?,
    }
    x.shared_info = Some(gpa);
    let tb = x.clock(cx.host);
    shared_info::write_wallclock(cx.mem, gpa, x.cfg.boot_utc_ns)?;
    for v in 0..Xen::nr_vcpus(cx.host).min(LEGACY_VCPUS) {
        if let Some(vi) = x.vcpu_info_gpa(v) {
            shared_info::write_time(cx.mem, vi, &tb)?;
        }
    }
    Ok(())
}
