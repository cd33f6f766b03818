//! xen_version and memory_op (shared_info placement, pvclock and wall clock).

mod common;
use common::*;
use virt::GuestMemory;

#[test]
fn features_are_exactly_the_notes_bits() {
    let mut e = Env::new();
    let p = e.arg(ARG, &[0u8; 8]);
    assert_eq!(e.call(op::XEN_VERSION, 6, p, 0), 0);
    assert_eq!(e.u32_at(ARG + 4), (1 << 0) | (1 << 2) | (1 << 8) | (1 << 9));
    let p = e.arg(ARG, &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(e.call(op::XEN_VERSION, 6, p, 0), EINVAL);
    assert_eq!(e.call(op::XEN_VERSION, 6, UNMAPPED, 0), EFAULT);
    assert_eq!(e.call(op::XEN_VERSION, 6, va(RAM as u64 - 4), 0), EFAULT);
}

#[test]
fn version_strings() {
    let mut e = Env::new();
    let p = e.arg(ARG, &[0xAA; 16]);
    assert_eq!(e.call(op::XEN_VERSION, 1, p, 0), 0);
    let mut s = [0u8; 16];
    e.mem.read(ARG, &mut s).unwrap();
    assert_eq!(&s[..7], b"-janus\0");
    assert!(s[7..].iter().all(|&b| b == 0), "NUL-padded");
    let p = e.arg(ARG, &[0xAA; 1024]);
    assert_eq!(e.call(op::XEN_VERSION, 3, p, 0), 0);
    let mut caps = [0u8; 1024];
    e.mem.read(ARG, &mut caps).unwrap();
    assert!(caps.starts_with(b"hvm-3.0-x86_64 "));
    assert_eq!(caps[1023], 0);
    assert_eq!(e.call(op::XEN_VERSION, 7, 0, 0), 4096);
    assert_eq!(e.call(op::XEN_VERSION, 9, p, 0), EPERM);
    assert_eq!(e.call(op::XEN_VERSION, 1, UNMAPPED, 0), EFAULT);
    assert_eq!(e.call(op::XEN_VERSION, 10, p, 0), ENOSYS);
}

fn add_to_physmap(e: &mut Env, domid: u16, space: u32, idx: u64, gpfn: u64) -> i64 {
    let mut a = [0u8; 24];
    a[0..2].copy_from_slice(&domid.to_le_bytes());
    a[4..8].copy_from_slice(&space.to_le_bytes());
    a[8..16].copy_from_slice(&idx.to_le_bytes());
    a[16..24].copy_from_slice(&gpfn.to_le_bytes());
    let p = e.arg(ARG, &a);
    e.call(op::MEMORY_OP, 7, p, 0)
}

#[test]
fn shared_info_gets_a_clock_and_wallclock_before_returning() {
    let mut e = Env::new();
    let si = SHARED_INFO_PFN << 12;
    e.mem.write(si + 3200, &[0x55; 8]).unwrap();
    assert_eq!(add_to_physmap(&mut e, 0x7ff0, 0, 0, SHARED_INFO_PFN), 0);
    assert_eq!(e.u64_at(si + 3200), 0, "page adopted zeroed");
    for vcpu in 0..2u64 {
        let t = si + vcpu * 64 + 32;
        assert_eq!(e.u32_at(t) % 2, 0);
        assert_ne!(e.u32_at(t), 0);
        assert_eq!(e.mem.read_u8(t + 29).unwrap() & 1, 1, "TSC stable");
    }
    // wc_sec/wc_nsec/wc_sec_hi from the configured boot UTC.
    let utc = config().boot_utc_ns;
    assert_eq!(e.u32_at(si + 3072) % 2, 0);
    let secs = u64::from(e.u32_at(si + 3076)) | (u64::from(e.u32_at(si + 3084)) << 32);
    assert_eq!(secs, utc / 1_000_000_000);
    assert_eq!(u64::from(e.u32_at(si + 3080)), utc % 1_000_000_000);
}

#[test]
fn pvclock_tracks_host_time_and_is_monotonic() {
    let mut e = Env::new();
    e.boot();
    let t = (SHARED_INFO_PFN << 12) + 32;
    let mut last = 0;
    for step in 0..2000u64 {
        e.host.ns += 1_234_567 + step;
        let tsc = virt::personality::Host::tsc(&e.host);
        let guest = read_pvclock(&e.mem, t, tsc);
        assert!(guest >= last);
        last = guest;
        // The host's own clock and the guest's view agree to within rounding.
        assert!(guest.abs_diff(e.host.ns) <= 2, "{guest} vs {}", e.host.ns);
        assert!(guest.abs_diff(e.xen.system_time(&e.host)) <= 1);
    }
}

#[test]
fn shared_info_move_keeps_contents() {
    let mut e = Env::new();
    e.boot();
    let old = SHARED_INFO_PFN << 12;
    e.mem.write_u64(old + 2560, 0xF0F0).unwrap();
    assert_eq!(add_to_physmap(&mut e, 0x7ff0, 0, 0, 0x30), 0);
    assert_eq!(e.u64_at((0x30 << 12) + 2560), 0xF0F0);
}

#[test]
fn add_to_physmap_errors() {
    let mut e = Env::new();
    assert_eq!(add_to_physmap(&mut e, 5, 0, 0, SHARED_INFO_PFN), ESRCH);
    assert_eq!(
        add_to_physmap(&mut e, 0x7ff0, 0, 1, SHARED_INFO_PFN),
        EINVAL
    );
    assert_eq!(
        add_to_physmap(&mut e, 0x7ff0, 0, 0, RAM as u64 >> 12),
        EINVAL
    );
    assert_eq!(add_to_physmap(&mut e, 0x7ff0, 0, 0, u64::MAX), EINVAL);
    assert_eq!(add_to_physmap(&mut e, 0x7ff0, 99, 0, 1), EINVAL);
    while e.xen.take_unimplemented().is_some() {}
    assert_eq!(add_to_physmap(&mut e, 0x7ff0, 2, 0, 0x100), ENOSYS);
    let u = e.xen.take_unimplemented().unwrap();
    assert_eq!((u.op, u.sub, u.detail), (12, Some(7), 2), "gmfn space");
    assert_eq!(e.call(op::MEMORY_OP, 7, UNMAPPED, 0), EFAULT);
    assert_eq!(e.call(op::MEMORY_OP, 9, 0, 0), ENOSYS, "memory_map");
    // The domid is our own id too.
    assert_eq!(add_to_physmap(&mut e, 1, 0, 0, SHARED_INFO_PFN), 0);
}
