use super::*;
use crate::Notice;
use crate::hypercall::Control;
use crate::status::split_output;
use virt::Event;

const HC_PAGE: u64 = 0x3000;
const IN: u64 = 0x6000;
const OUT: u64 = 0x7000;
const IPI: u16 = 0x000B;
const IPI_EX: u16 = 0x0015;
const SPIN: u16 = 0x0008;

fn ctl(code: u16) -> Control {
    Control {
        code,
        fast: false,
        varhead: 0,
        rep_count: 0,
        rep_start: 0,
    }
}

fn fast(code: u16) -> u64 {
    Control {
        fast: true,
        ..ctl(code)
    }
    .encode()
}

fn ready() -> Rig {
    let mut rig = Rig::with(config(HypercallInsn::Vmcall), 4);
    rig.enable_hypercalls(HC_PAGE);
    rig
}

fn status(rax: u64) -> u16 {
    split_output(rax).0
}

#[test]
fn hypercalls_need_the_interface_kernel_mode_and_protected_mode() {
    let mut rig = Rig::new();
    assert_eq!(rig.call(0, fast(SPIN), 0, 0).0, Action::Fault(Event::UD));
    rig.enable_hypercalls(HC_PAGE);
    let mut regs = GuestRegs {
        rcx: fast(SPIN),
        ..Default::default()
    };
    let mut user = view(0);
    user.cpl = 3;
    assert_eq!(
        rig.hv
            .hypercall(&user, &mut regs, &mut rig.mem, &mut rig.host),
        Action::Fault(Event::UD)
    );
    let mut real = view(0);
    real.ctl.cr0 = 0;
    real.long_mode = false;
    assert_eq!(
        rig.hv
            .hypercall(&real, &mut regs, &mut rig.mem, &mut rig.host),
        Action::Fault(Event::UD)
    );
    assert_eq!(regs.rax, 0, "no result written with a fault");
}

#[test]
fn unknown_codes_are_counted_and_announced_once() {
    let mut rig = ready();
    for code in [0x0046u16, 0x0002, 0x0046, 0x8001, 0x005e, 0xffff] {
        let (a, rax) = rig.call(0, ctl(code).encode(), IN, OUT);
        assert_eq!(a, Action::Done);
        assert_eq!(rax, 2, "HV_STATUS_INVALID_HYPERCALL_CODE, 0 reps");
    }
    assert_eq!(rig.hv.unknown_hypercall_count(0x0046), 2);
    assert_eq!(rig.hv.unknown_hypercall_count(0x0002), 1);
    assert_eq!(rig.hv.unknown_hypercall_count(0x0008), 0);
    let notices: Vec<_> = core::iter::from_fn(|| rig.hv.take_notice()).collect();
    assert_eq!(
        notices,
        [0x0046, 0x0002, 0x8001, 0x005e, 0xffff].map(|code| Notice::UnknownHypercall { code })
    );
}

#[test]
fn malformed_control_words_are_invalid_input() {
    let mut rig = ready();
    let base = fast(IPI);
    // Reserved bits 27..31, 44..47, 60..63.
    for bit in [27, 31, 44, 47, 60, 63] {
        let (_, rax) = rig.call(0, base | (1 << bit), 0x20, 1);
        assert_eq!(status(rax), 3, "reserved bit {bit}");
    }
    // A rep count or start on a simple call.
    let rep = Control {
        rep_count: 1,
        ..ctl(IPI)
    };
    assert_eq!(status(rig.call(0, rep.encode(), IN, 0).1), 3);
    let start = Control {
        rep_start: 1,
        ..ctl(IPI)
    };
    assert_eq!(status(rig.call(0, start.encode(), IN, 0).1), 3);
    // A variable header on a call without one, and fast input past two registers.
    let var = Control {
        varhead: 1,
        ..ctl(IPI)
    };
    assert_eq!(status(rig.call(0, var.encode(), IN, 0).1), 3);
    assert_eq!(status(rig.call(0, fast(IPI_EX), 0x20, 0).1), 3);
    assert!(rig.host.raised.is_empty());
}

#[test]
fn fast_cluster_ipi_raises_the_vector_on_each_target() {
    let mut rig = ready();
    let (a, rax) = rig.call(0, fast(IPI), 0xf0, 0b1011 | (1 << 40));
    assert_eq!((a, rax), (Action::Done, 0));
    assert_eq!(
        rig.host.raised,
        vec![(0, 0xf0, true), (1, 0xf0, true), (3, 0xf0, true)],
        "VPs past the partition's count are ignored"
    );
}

#[test]
fn cluster_ipi_rejects_exception_vectors_and_other_vtls() {
    let mut rig = ready();
    for head in [0x0f, 0x100, 0x1_0000_0030] {
        let (_, rax) = rig.call(0, fast(IPI), head, 1);
        assert_eq!(status(rax), 5, "HV_STATUS_INVALID_PARAMETER for {head:#x}");
    }
    assert!(rig.host.raised.is_empty());
}

#[test]
fn memory_cluster_ipi_validates_its_input_block() {
    let mut rig = ready();
    rig.mem.write_u64(IN, 0x31).unwrap();
    rig.mem.write_u64(IN + 8, 0b100).unwrap();
    assert_eq!(rig.call(0, ctl(IPI).encode(), IN, 0).1, 0);
    assert_eq!(rig.host.raised, vec![(2, 0x31, true)]);

    // Misaligned, crossing a page, beyond RAM, past the top of the address space.
    for gpa in [IN + 4, IN + 4088, RAM as u64, RAM as u64 - 8, u64::MAX - 7] {
        let (a, rax) = rig.call(0, ctl(IPI).encode(), gpa, 0);
        assert_eq!(
            (a, rax),
            (Action::Done, 4),
            "HV_STATUS_INVALID_ALIGNMENT at {gpa:#x}"
        );
    }
    assert_eq!(rig.host.raised.len(), 1);
}

#[test]
fn ex_cluster_ipi_sparse_and_all() {
    let mut rig = ready();
    // vector 0x42, sparse set, bank 0 present: VPs 1 and 2.
    for (i, q) in [0x42u64, 0, 1, 0b110].iter().enumerate() {
        rig.mem.write_u64(IN + 8 * i as u64, *q).unwrap();
    }
    let c = Control {
        varhead: 1,
        ..ctl(IPI_EX)
    };
    assert_eq!(rig.call(0, c.encode(), IN, 0).1, 0);
    assert_eq!(rig.host.raised, vec![(1, 0x42, true), (2, 0x42, true)]);

    // The variable header must hold exactly one qword per valid bank.
    let none = Control {
        varhead: 0,
        ..ctl(IPI_EX)
    };
    assert_eq!(status(rig.call(0, none.encode(), IN, 0).1), 3);

    // A bank above 0 names VPs that do not exist.
    rig.mem.write_u64(IN + 16, 0b10).unwrap();
    assert_eq!(rig.call(0, c.encode(), IN, 0).1, 0);
    assert_eq!(rig.host.raised.len(), 2);

    // All VPs.
    rig.mem.write_u64(IN + 8, 1).unwrap();
    rig.mem.write_u64(IN + 16, 0).unwrap();
    assert_eq!(rig.call(0, ctl(IPI_EX).encode(), IN, 0).1, 0);
    assert_eq!(rig.host.raised.len(), 6);

    // Unknown set format.
    rig.mem.write_u64(IN + 8, 7).unwrap();
    assert_eq!(status(rig.call(0, ctl(IPI_EX).encode(), IN, 0).1), 5);
    // A header that would run off the page.
    assert_eq!(status(rig.call(0, c.encode(), IN + 4072, 0).1), 4);
}

#[test]
fn long_spin_wait_yields() {
    let mut rig = ready();
    assert_eq!(rig.call(1, fast(SPIN), 1000, 0), (Action::Yield, 0));
    rig.mem.write_u64(IN, 5).unwrap();
    assert_eq!(rig.call(1, ctl(SPIN).encode(), IN, 0), (Action::Yield, 0));
    assert_eq!(
        rig.call(1, ctl(SPIN).encode(), IN + 1, 0),
        (Action::Done, 4)
    );
}

#[test]
fn only_rax_changes_in_64_bit_mode() {
    let mut rig = ready();
    let mut regs = GuestRegs {
        rax: 1,
        rcx: fast(IPI),
        rdx: 0x30,
        rbx: 3,
        rsi: 4,
        rdi: 5,
        r8: 1,
        r9: 9,
        r11: 11,
        ..Default::default()
    };
    let before = regs;
    rig.hv
        .hypercall(&view(0), &mut regs, &mut rig.mem, &mut rig.host);
    assert_eq!(GuestRegs { rax: 1, ..regs }, before);
    assert_eq!(regs.rax, 0);
}

#[test]
fn protected_mode_callers_use_register_pairs() {
    let mut rig = ready();
    rig.mem.write_u64(IN, 0x33).unwrap();
    rig.mem.write_u64(IN + 8, 0b1).unwrap();
    let mut pm = view(0);
    pm.long_mode = false;
    pm.ctl.efer = 0;
    // Control in EDX:EAX, input GPA in EBX:ECX, output GPA in EDI:ESI.
    let mut regs = GuestRegs {
        rax: ctl(IPI).encode(),
        rdx: 0,
        rbx: 0,
        rcx: IN,
        rdi: 0,
        rsi: OUT,
        ..Default::default()
    };
    assert_eq!(
        rig.hv
            .hypercall(&pm, &mut regs, &mut rig.mem, &mut rig.host),
        Action::Done
    );
    assert_eq!((regs.rax, regs.rdx), (0, 0));
    assert_eq!(rig.host.raised, vec![(0, 0x33, true)]);
    assert_eq!(regs.rcx, IN, "input registers preserved");

    // A result with reps-completed bits set splits into EDX:EAX; an unknown call gives 2.
    regs.rax = 0x0046;
    regs.rdx = 0;
    rig.hv
        .hypercall(&pm, &mut regs, &mut rig.mem, &mut rig.host);
    assert_eq!((regs.rax, regs.rdx), (2, 0));
    // The high half of the control word comes from EDX: a reserved bit there is refused.
    regs.rax = 0x0046;
    regs.rdx = 1 << 31;
    rig.hv
        .hypercall(&pm, &mut regs, &mut rig.mem, &mut rig.host);
    assert_eq!((regs.rax, regs.rdx), (3, 0));
}

#[test]
fn control_words_round_trip() {
    let c = Control {
        code: 0x0014,
        fast: true,
        varhead: 0x3ff,
        rep_count: 0xfff,
        rep_start: 0x123,
    };
    assert_eq!(Control::decode(c.encode()), Ok(c));
    assert_eq!(c.encode() & crate::hypercall::input::RESERVED, 0);
}
