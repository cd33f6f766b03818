//! Grant-table frames: placed outside RAM (where Linux puts them) they become memory; placed
//! again they move; bad placements get Xen's error codes.

use super::{AddToPhysmap, DOMID_SELF, EINVAL, MEMORY_OP, XENMEM_ADD_TO_PHYSMAP, Xen, ptr};
use crate::arch;
use crate::checks::check;

const GRANT_TABLE_OP: u32 = 20;
const GNTTABOP_QUERY_SIZE: u64 = 6;
const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// Guest-physical pages with no RAM behind them (the probe's RAM is far smaller), below the
/// MMIO hole and inside the probe's identity map.
const FIRST: u64 = 0xB001_0000;
const SECOND: u64 = 0xB002_0000;

#[repr(C)]
#[derive(Default)]
struct QuerySize {
    dom: u16,
    pad: u16,
    nr_frames: u32,
    max_nr_frames: u32,
    status: i16,
}

fn place(x: Xen, idx: u64, gpa: u64) -> i64 {
    let mut a = AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_GRANT_TABLE,
        idx,
        gpfn: gpa >> 12,
    };
    x.call(MEMORY_OP, [XENMEM_ADD_TO_PHYSMAP, ptr(&mut a), 0, 0, 0])
}

pub(super) fn checks(x: Xen) {
    let mut q = QuerySize {
        dom: DOMID_SELF,
        ..QuerySize::default()
    };
    let r = x.call(GRANT_TABLE_OP, [GNTTABOP_QUERY_SIZE, ptr(&mut q), 1, 0, 0]);
    let max = q.max_nr_frames;
    check(
        "xen-gnttab-query-size",
        r == 0 && q.status == 0 && q.nr_frames >= 1 && max >= 4,
        format_args!("ret {r} status {} frames {}/{max}", q.status, q.nr_frames),
    );

    let before = arch::read_u32(FIRST);
    let r = place(x, 0, FIRST);
    arch::write_u32(FIRST + 8, 0x6772_616e);
    let got = arch::read_u32(FIRST + 8);
    check(
        "xen-gnttab-frame-outside-ram-is-memory",
        before == u32::MAX && r == 0 && got == 0x6772_616e,
        format_args!("unbacked read {before:#x}, ret {r}, wrote and read back {got:#x}"),
    );

    // Moving the frame carries its contents and unbacks the old place.
    let r = place(x, 0, SECOND);
    let moved = arch::read_u32(SECOND + 8);
    let old = arch::read_u32(FIRST + 8);
    check(
        "xen-gnttab-frame-moves",
        r == 0 && moved == 0x6772_616e && old == u32::MAX,
        format_args!("ret {r}, new place {moved:#x}, old place {old:#x}"),
    );

    let past = place(x, u64::from(max), FIRST);
    let status = place(x, 1 << 31, FIRST);
    let apic = place(x, 1, 0xFEE0_0000);
    let far = place(x, 1, 1 << 48);
    check(
        "xen-gnttab-bad-placement-einval",
        [past, status, apic, far] == [EINVAL; 4],
        format_args!(
            "index {max}: {past}, v2 status frame: {status}, on the APIC: {apic}, at 2^48: {far}"
        ),
    );
}
