//! CPUID leaves, the hypercall page, register conventions and error reporting.

mod common;
use abi_xen::{Config, HypercallInsn};
use common::*;
use virt::personality::{Action, Personality};
use virt::{Event, GuestMemory, GuestRegs};

#[test]
fn cpuid_signature_and_leaves() {
    let mut e = Env::new();
    let v1 = e.view(1);
    let l0 = e.xen.cpuid(&v1, 0x4000_0000, 0).unwrap();
    assert_eq!(l0[0], 0x4000_0004);
    let sig: Vec<u8> = l0[1..].iter().flat_map(|r| r.to_le_bytes()).collect();
    assert_eq!(&sig, b"XenVMMXenVMM");
    assert_eq!(e.xen.cpuid(&v1, 0x4000_0001, 0).unwrap()[0], 0x0004_000F);
    assert_eq!(
        e.xen.cpuid(&v1, 0x4000_0002, 0).unwrap(),
        [1, 0x4000_0000, 0, 0]
    );
    let hvm = e.xen.cpuid(&v1, 0x4000_0004, 0).unwrap();
    assert_eq!(
        hvm[0],
        (1 << 3) | (1 << 4),
        "vCPU id + domid, no upcall-vector bit"
    );
    assert_eq!(hvm[1], 1, "EBX is the calling vCPU's id");
    assert_eq!(hvm[2], 1, "ECX is the domid");
    // Nothing to find at the other hypervisor bases; nothing claimed outside the range.
    assert_eq!(e.xen.cpuid(&v1, 0x4000_0100, 0), Some([0; 4]));
    assert_eq!(e.xen.cpuid(&v1, 0x4000_0005, 0), Some([0; 4]));
    assert_eq!(e.xen.cpuid(&v1, 0x4000_0200, 0), None);
    assert_eq!(e.xen.cpuid(&v1, 1, 0), None);

    let mut cfg = config();
    cfg.advertise_upcall_vector = true;
    let mut e = Env::with(cfg, 1);
    let v0 = e.view(0);
    assert_ne!(e.xen.cpuid(&v0, 0x4000_0004, 0).unwrap()[0] & (1 << 6), 0);
}

fn page_for(insn: HypercallInsn) -> Vec<u8> {
    let mut e = Env::with(Config::new(insn), 1);
    let v = e.view(0);
    assert_eq!(
        e.xen
            .wrmsr(&v, 0x4000_0000, 0x5000, &mut e.mem, &mut e.host),
        Action::Done
    );
    let mut page = vec![0u8; 4096];
    e.mem.read(0x5000, &mut page).unwrap();
    page
}

#[test]
fn hypercall_page_contents_by_vendor() {
    for (insn, modrm) in [
        (HypercallInsn::Vmcall, 0xC1),
        (HypercallInsn::Vmmcall, 0xD9),
    ] {
        let page = page_for(insn);
        for n in 0..128u32 {
            let s = &page[n as usize * 32..][..32];
            if n == 23 {
                assert_eq!(&s[..2], &[0x0F, 0x0B], "iret slot is ud2");
                continue;
            }
            assert_eq!(s[0], 0xB8);
            assert_eq!(u32::from_le_bytes(s[1..5].try_into().unwrap()), n);
            assert_eq!(&s[5..9], &[0x0F, 0x01, modrm, 0xC3]);
            assert!(s[9..].iter().all(|&b| b == 0xCC));
        }
    }
}

#[test]
fn hypercall_msr_refuses_bad_values() {
    let mut e = Env::new();
    let v = e.view(0);
    // A page index other than 0, a page outside RAM, an overflowing address.
    for bad in [0x5001, RAM as u64, !0xfffu64] {
        assert_eq!(
            e.xen.wrmsr(&v, 0x4000_0000, bad, &mut e.mem, &mut e.host),
            Action::Fault(Event::GP0),
            "{bad:#x}"
        );
    }
    assert_eq!(
        e.xen.wrmsr(&v, 0x4000_0001, 0, &mut e.mem, &mut e.host),
        Action::NotMine
    );
    let mut value = u64::MAX;
    assert_eq!(
        e.xen
            .rdmsr(&v, 0x4000_0000, &mut value, &mut e.mem, &mut e.host),
        Action::Done
    );
    assert_eq!(value, 0);
    assert_eq!(
        e.xen
            .rdmsr(&v, 0x4000_0001, &mut value, &mut e.mem, &mut e.host),
        Action::NotMine
    );
}

#[test]
fn direct_call_64_and_32_bit_conventions() {
    let mut e = Env::new();
    assert_eq!(e.call(op::XEN_VERSION, 0, 0, 0), 0x4_000F);
    // 32-bit: EAX = op, EBX/ECX/EDX...; upper register halves are ignored.
    e.long_mode = false;
    let mut r = GuestRegs {
        rax: 0xdead_0000_0000_0000 | op::XEN_VERSION,
        rbx: 0xffff_ffff_0000_0007, // XENVER_pagesize
        ..Default::default()
    };
    let v = e.view(0);
    assert_eq!(
        e.xen.hypercall(&v, &mut r, &mut e.mem, &mut e.host),
        Action::Done
    );
    assert_eq!(r.rax, 4096);
    // Errors come back as a 32-bit negative number.
    r.rax = 99;
    e.xen.hypercall(&v, &mut r, &mut e.mem, &mut e.host);
    assert_eq!(r.rax, (-38i32) as u32 as u64);
}

#[test]
fn user_mode_calls_are_refused() {
    let mut e = Env::new();
    e.cpl = 3;
    assert_eq!(e.call(op::XEN_VERSION, 0, 0, 0), EPERM);
}

#[test]
fn unknown_calls_are_enosys_counted_and_logged_once() {
    let mut e = Env::new();
    assert_eq!(e.call(99, 0, 0, 0), ENOSYS);
    assert_eq!(e.call(99, 1, 0, 0), ENOSYS);
    assert_eq!(e.call(u64::MAX, 0, 0, 0), ENOSYS);
    assert_eq!(e.call(op::GRANT_TABLE_OP, 5, 0, 1), ENOSYS, "transfer");
    assert_eq!(e.call(op::HVM_OP, 9, 0, 0), ENOSYS, "pagetable_dying");
    assert_eq!(e.call(op::HVM_OP, 9, 0, 0), ENOSYS);
    let seen: Vec<_> = std::iter::from_fn(|| e.xen.take_unimplemented()).collect();
    assert_eq!(seen.len(), 4);
    assert_eq!((seen[0].op, seen[0].sub), (99, None));
    assert_eq!((seen[1].op, seen[1].sub), (u32::MAX, None));
    assert_eq!((seen[2].op, seen[2].sub), (20, Some(5)));
    assert_eq!((seen[3].op, seen[3].sub), (34, Some(9)));
    let counts = e.xen.unimplemented();
    assert_eq!(counts.iter().find(|c| c.op == 99).unwrap().count, 2);
    assert_eq!(counts.iter().find(|c| c.op == 34).unwrap().count, 2);
    assert_eq!(e.xen.hypercall_counts()[34], 2);
    assert_eq!(
        e.xen.hypercall_counts()[63],
        3,
        "99 twice and u64::MAX share the last slot"
    );
    assert!(e.xen.take_unimplemented().is_none());
}

#[test]
fn vcpu_index_beyond_the_vm_is_refused() {
    let mut e = Env::new();
    let (r, _) = e.call_on(5, op::XEN_VERSION, [0; 5]);
    assert_eq!(r, EINVAL);
}
