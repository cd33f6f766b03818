//! Grant tables v1: sizing and version hypercalls, frames placed by add_to_physmap, and the
//! checks a backend's access goes through.

mod common;

use abi_xen::GrantError;
use common::*;
use virt::GuestMemory;

const FRAME0_PFN: u64 = 0x40;
const FRAME1_PFN: u64 = 0x41;
const DATA_PFN: u64 = 0x50;

fn map_frame(e: &mut Env, idx: u64, gpfn: u64) -> i64 {
    let mut a = [0u8; 24];
    a[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
    a[4..8].copy_from_slice(&1u32.to_le_bytes());
    a[8..16].copy_from_slice(&idx.to_le_bytes());
    a[16..24].copy_from_slice(&gpfn.to_le_bytes());
    let p = e.arg(ARG, &a);
    e.call(op::MEMORY_OP, 7, p, 0)
}

fn entry(e: &Env, frame_pfn: u64, slot: u64, flags: u16, domid: u16, frame: u32) {
    let v = u64::from(flags) | u64::from(domid) << 16 | u64::from(frame) << 32;
    e.mem.write_u64(frame_pfn * 4096 + slot * 8, v).unwrap();
}

#[test]
fn query_size_and_versions() {
    let mut e = Env::new();
    let mut q = [0u8; 16];
    q[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
    let p = e.arg(ARG, &q);
    assert_eq!(e.call(op::GRANT_TABLE_OP, 6, p, 1), 0);
    let mut out = [0u8; 16];
    e.mem.read(ARG, &mut out).unwrap();
    assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 1);
    assert_eq!(
        u32::from_le_bytes(out[8..12].try_into().unwrap()),
        abi_xen::MAX_GRANT_FRAMES
    );
    assert_eq!(i16::from_le_bytes([out[12], out[13]]), 0);
    assert_eq!(
        e.call(op::GRANT_TABLE_OP, 6, p, 2),
        EINVAL,
        "count must be 1"
    );

    // Another domain: per-op status, not a hypercall error.
    q[0..2].copy_from_slice(&7u16.to_le_bytes());
    let p = e.arg(ARG, &q);
    assert_eq!(e.call(op::GRANT_TABLE_OP, 6, p, 1), 0);
    e.mem.read(ARG, &mut out).unwrap();
    assert_eq!(i16::from_le_bytes([out[12], out[13]]), -2);

    let v = e.arg(ARG, &2u32.to_le_bytes());
    assert_eq!(e.call(op::GRANT_TABLE_OP, 8, v, 1), EINVAL, "v2 refused");
    assert_eq!(
        e.mem.read_u32(ARG).unwrap(),
        1,
        "current version written back"
    );
    let v = e.arg(ARG, &1u32.to_le_bytes());
    assert_eq!(e.call(op::GRANT_TABLE_OP, 8, v, 1), 0);
    let g = e.arg(ARG, &[0xf0, 0x7f, 0, 0, 9, 9, 9, 9]);
    assert_eq!(e.call(op::GRANT_TABLE_OP, 10, g, 1), 0);
    assert_eq!(e.mem.read_u32(ARG + 4).unwrap(), 1);
    assert_eq!(e.call(op::GRANT_TABLE_OP, 6, UNMAPPED, 1), EFAULT);
    assert_eq!(e.call(op::GRANT_TABLE_OP, 0, 0, 1), ENOSYS, "map_grant_ref");
    assert_eq!(e.call(op::GRANT_TABLE_OP, 2, 0, 1), ENOSYS, "setup_table");
}

#[test]
fn frames_grow_and_query_size_follows() {
    let mut e = Env::new();
    assert_eq!(
        map_frame(&mut e, 1, FRAME1_PFN),
        0,
        "Linux maps highest first"
    );
    assert_eq!(map_frame(&mut e, 0, FRAME0_PFN), 0);
    assert_eq!(
        map_frame(&mut e, abi_xen::MAX_GRANT_FRAMES as u64, 0x42),
        EINVAL
    );
    assert_eq!(map_frame(&mut e, 1 << 31, 0x42), EINVAL, "v2 status frame");
    let q = e.arg(ARG, &[0xf0, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(e.call(op::GRANT_TABLE_OP, 6, q, 1), 0);
    assert_eq!(e.mem.read_u32(ARG + 4).unwrap(), 2);
    // A frame outside RAM cannot be backed by guest memory: refused and logged with the GPFN.
    while e.xen.take_unimplemented().is_some() {}
    let beyond = RAM as u64 >> 12;
    assert_eq!(map_frame(&mut e, 2, beyond), ENOSYS);
    let u = e.xen.take_unimplemented().unwrap();
    assert_eq!((u.op, u.sub, u.detail), (12, Some(7), beyond));
}

#[test]
fn backend_access_obeys_the_entry() {
    let mut e = Env::new();
    assert_eq!(
        e.xen.grant_frame(&e.mem, 8, false),
        Err(GrantError::BadRef),
        "no table yet"
    );
    assert_eq!(map_frame(&mut e, 0, FRAME0_PFN), 0);
    let data = DATA_PFN as u32;
    entry(&e, FRAME0_PFN, 8, 1, 0, data); // read-write to dom 0
    entry(&e, FRAME0_PFN, 9, 1 | 4, 0, data); // read-only
    entry(&e, FRAME0_PFN, 10, 1, 3, data); // another domain
    entry(&e, FRAME0_PFN, 11, 0, 0, data); // free
    entry(&e, FRAME0_PFN, 12, 2, 0, data); // accept_transfer
    entry(&e, FRAME0_PFN, 13, 1 | 1 << 8, 0, data); // sub-page
    entry(&e, FRAME0_PFN, 14, 1, 0, u32::MAX); // frame beyond RAM
    let g = |e: &Env, r, w| e.xen.grant_frame(&e.mem, r, w);
    assert_eq!(g(&e, 8, true), Ok(DATA_PFN * 4096));
    assert_eq!(g(&e, 9, false), Ok(DATA_PFN * 4096));
    assert_eq!(g(&e, 9, true), Err(GrantError::ReadOnly));
    assert_eq!(g(&e, 10, false), Err(GrantError::WrongDomain));
    assert_eq!(g(&e, 11, false), Err(GrantError::NotPermitted));
    assert_eq!(g(&e, 12, false), Err(GrantError::NotPermitted));
    assert_eq!(g(&e, 13, false), Err(GrantError::NotPermitted));
    assert_eq!(g(&e, 14, false), Err(GrantError::BadFrame));
    assert_eq!(
        g(&e, 512, false),
        Err(GrantError::BadRef),
        "frame 1 unmapped"
    );
    assert_eq!(g(&e, u32::MAX, false), Err(GrantError::BadRef));
    // Revocation is seen on the next access.
    entry(&e, FRAME0_PFN, 8, 0, 0, data);
    assert_eq!(g(&e, 8, false), Err(GrantError::NotPermitted));
}

#[test]
fn frames_outside_ram_are_aliases_of_reserved_pages() {
    const BACKING_PFN: u64 = 0x60;
    let mut cfg = config();
    cfg.grant_frames_pfn = Some(BACKING_PFN);
    let mut e = Env::with(cfg, 2);
    let above = (RAM as u64 >> 12) + 0x1000;
    assert_eq!(map_frame(&mut e, 1, above + 1), 0);
    assert_eq!(map_frame(&mut e, 0, above), 0);
    assert_eq!(
        e.host.aliases,
        [
            (above * 4096 + 4096, (BACKING_PFN + 1) * 4096),
            (above * 4096, BACKING_PFN * 4096)
        ]
    );
    // The backend reads what the guest wrote through the alias: the backing page.
    entry(&e, BACKING_PFN + 1, 3, 1, 0, DATA_PFN as u32);
    assert_eq!(
        e.xen.grant_frame(&e.mem, 512 + 3, true),
        Ok(DATA_PFN * 4096)
    );
    // A frame placed again moves: its old place is unbacked.
    assert_eq!(map_frame(&mut e, 1, above + 7), 0);
    assert_eq!(
        e.host.aliases,
        [
            (above * 4096, BACKING_PFN * 4096),
            (above * 4096 + 7 * 4096, (BACKING_PFN + 1) * 4096)
        ]
    );
    // Back into RAM: the guest's own page, and the alias goes.
    assert_eq!(map_frame(&mut e, 0, FRAME0_PFN), 0);
    assert_eq!(
        e.host.aliases,
        [(above * 4096 + 7 * 4096, (BACKING_PFN + 1) * 4096)]
    );
    // The reserved pages themselves, the console ring, and a GPFN that overflows are refused.
    assert_eq!(map_frame(&mut e, 2, BACKING_PFN + 3), EINVAL);
    assert_eq!(map_frame(&mut e, 2, CONSOLE_PFN), EINVAL);
    assert_eq!(map_frame(&mut e, 2, u64::MAX >> 4), EINVAL);
    // What the kernel refuses is refused to the guest.
    e.host.alias_refusal = Some(virt::personality::AliasError::Refused);
    assert_eq!(map_frame(&mut e, 2, above + 9), EINVAL);
    e.host.alias_refusal = Some(virt::personality::AliasError::Full);
    assert_eq!(map_frame(&mut e, 2, above + 9), -12);
    assert_eq!(
        e.xen.grant_frame(&e.mem, 2 * 512, false),
        Err(GrantError::BadRef),
        "a refused frame is not in the table"
    );
}
