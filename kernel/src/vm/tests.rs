//! The exit path on the host: [`dispatch::handle`] driven by a mock vCPU over real guest RAM (a
//! host buffer) and a fake machine, with the VM's real devices, bus and personality.

use super::console;
use super::interrupts;
use super::lapic::{APIC_BASE_MSR, X2APIC_MSR_FIRST};
use super::testing::{Rig, exits};
use crate::manifest::Personality;
use virt::bits::*;
use virt::{Action, Event, Exit, GuestMemory, IoExit, NestedFault, StopReason};

fn rig(personality: Personality, long_mode: bool) -> Rig {
    Rig::new(personality, long_mode)
}

/// What pCPU 0 (or the VM's end) does: prints the VM's console backlog.
fn drain(r: &Rig) {
    console::drain(&r.m, r.vm().console(), None);
}

#[test]
fn cpuid_comes_from_the_personality_then_the_filtered_host() {
    let mut r = rig(Personality::Xen, true);
    assert_eq!(
        r.exit(Exit::Cpuid {
            leaf: 0x4000_0000,
            subleaf: 0
        }),
        Action::Done
    );
    let regs = r.st.vcpu.regs;
    let sig: Vec<u8> = [regs.rbx, regs.rcx, regs.rdx]
        .iter()
        .flat_map(|w| (*w as u32).to_le_bytes())
        .collect();
    assert_eq!(sig, b"XenVMMXenVMM");
    assert_eq!(r.rip(), 0x1002, "retired");

    r.exit(Exit::Cpuid {
        leaf: 0,
        subleaf: 0,
    });
    assert_eq!(
        r.st.vcpu.regs.rbx, 0x756e_6547,
        "host vendor passed through"
    );
    assert_eq!(r.rip(), 0x1004);
    assert_eq!(r.st.stats.total(), 2);
}

#[test]
fn msrs_go_to_the_apic_the_platform_then_fault() {
    let mut r = rig(Personality::None, false);
    r.m.tsc.set(0x1234_5678_9abc);
    assert_eq!(r.exit(Exit::Rdmsr { msr: 0x10 }), Action::Done);
    assert_eq!(
        (r.st.vcpu.regs.rdx << 32) | r.st.vcpu.regs.rax,
        0x1234_5678_9abc
    );
    assert_eq!(r.exit(Exit::Rdmsr { msr: APIC_BASE_MSR }), Action::Done);
    assert_ne!(r.st.vcpu.regs.rax & (1 << 10), 0, "x2APIC mode");
    let rip = r.rip();
    assert_eq!(
        r.exit(Exit::Rdmsr { msr: 0xC001_1234 }),
        Action::Fault(Event::GP0)
    );
    assert_eq!(r.st.vcpu.injected, Some(Event::GP0));
    assert_eq!(r.rip(), rip, "a faulting RDMSR is not retired");
}

#[test]
fn an_icr_write_posts_the_ipi_and_kicks_the_target() {
    let mut r = rig(Personality::None, false);
    // Fixed vector 0x40 to APIC 1, physical.
    let icr = (1u64 << 32) | 0x40;
    assert_eq!(
        r.exit(Exit::Wrmsr {
            msr: X2APIC_MSR_FIRST + 0x30,
            value: icr
        }),
        Action::Done
    );
    assert!(r.vm().vcpus[1].pending.any());
    assert!(!r.vm().vcpus[0].pending.any());
    // Parked: its home pCPU is asked to look (woken only if idle), not interrupted.
    assert_eq!(*r.m.wakes.borrow(), [1], "vCPU 1's home pCPU");
    assert!(r.m.kicks.borrow().is_empty());
    // In guest mode on pCPU 0: forced out.
    r.vm().vcpus[1]
        .running_on
        .store(0, core::sync::atomic::Ordering::Release);
    r.exit(Exit::Wrmsr {
        msr: X2APIC_MSR_FIRST + 0x30,
        value: icr,
    });
    assert_eq!(*r.m.kicks.borrow(), [0]);
}

#[test]
fn ports_reach_their_device_or_float() {
    let mut r = rig(Personality::None, false);
    for b in b"hi\n" {
        assert_eq!(r.io(0x3F8, 1, true, u32::from(*b)), Action::Done);
    }
    assert!(r.m.lines.borrow().is_empty(), "the exit only appends");
    drain(&r);
    assert_eq!(*r.m.lines.borrow(), ["[t] hi"]);
    assert_eq!(*r.m.stamps.borrow(), [("t".to_string(), 0)]);
    for b in b"\x1b[2Jvm t: stopped: powered off\n" {
        r.io(0x3F8, 1, true, u32::from(*b));
    }
    drain(&r);
    assert_eq!(
        r.m.lines.borrow()[1],
        "[t] \\x1b[2Jvm t: stopped: powered off",
        "escaped, and prefixed as the guest's"
    );
    assert_eq!(r.m.stamps.borrow()[1].1, 1);
    r.st.vcpu.regs.rax = 0xAAAA_AAAA_0000_0000;
    r.io(0x3FD, 1, false, 0);
    assert_eq!(r.st.vcpu.regs.rax, 0xAAAA_AAAA_0000_0060, "LSR: THR empty");
    r.io(0x1234, 2, false, 0);
    assert_eq!(r.st.vcpu.regs.rax & 0xFFFF, 0xFFFF, "nothing there");
    // S5 through the FADT's sleep control register.
    assert_eq!(
        r.io(0x604, 1, true, 0x34),
        Action::Stop(StopReason::PowerOff)
    );
    assert_eq!(
        r.exit(Exit::Io(IoExit {
            port: 0x3F8,
            size: 1,
            write: true,
            value: 0,
            string: true,
            rep: true,
        })),
        Action::Stop(StopReason::Unsupported {
            vcpu: 0,
            what: "string port I/O",
            detail: 0x3F8
        })
    );
}

/// Issue 13, item 1: a guest flooding its console (Xen `CONSOLEIO_write`, 4 KiB a call) gets
/// its exits handled without anything printed — the exit path never waits for COM1 or holds
/// a lock while it prints — and what it wrote comes out when the backlog is drained: its
/// burst in order, stamped with the time it was written, then the count of what was dropped.
#[test]
fn a_console_flood_exits_without_printing_and_the_drain_lets_it_out() {
    let mut r = rig(Personality::Xen, false);
    let mut text = alloc::vec::Vec::new();
    let mut i = 0;
    while text.len() < 4000 {
        text.extend_from_slice(
            alloc::format!("flood {i:04} ..............................\n").as_bytes(),
        );
        i += 1;
    }
    let per_call = i;
    r.st.vcpu.ram.write(0x8000, &text).unwrap();
    let written_at = r.m.tsc.get();
    for _ in 0..8 {
        // CONSOLEIO_write, 32-bit: ebx = CONSOLEIO_write, ecx = count, edx = buffer (paging off).
        r.st.vcpu.regs.rax = 18;
        r.st.vcpu.regs.rbx = 0;
        r.st.vcpu.regs.rcx = text.len() as u64;
        r.st.vcpu.regs.rdx = 0x8000;
        assert_eq!(r.exit(Exit::Hypercall), Action::Done);
        assert_eq!(r.st.vcpu.regs.rax, 0);
    }
    assert!(
        r.m.lines.borrow().is_empty(),
        "{} lines printed during the exits",
        r.m.lines.borrow().len()
    );
    // Drained later: the stamps are still the time the guest wrote the lines.
    r.m.tsc.set(written_at + 50_000_000);
    drain(&r);
    let lines = r.m.lines.borrow().clone();
    let line_len = text.len() / per_call - 1;
    let burst = console::BURST as usize / (line_len + 16);
    assert_eq!(lines.len(), burst, "the burst, the rest dropped");
    for (k, l) in lines.iter().enumerate() {
        let want = alloc::format!("[t] flood {:04} ", k % per_call);
        assert!(l.starts_with(&want), "line {k}: {l}");
    }
    assert!(r.m.stamped_at.borrow().iter().all(|&t| t == written_at));
    let dropped = (8 * per_call - burst) * line_len;
    // A second on, the next line comes with the count before it.
    r.m.tsc.set(written_at + 1_000_000_000);
    r.st.vcpu.regs.rax = 18;
    r.st.vcpu.regs.rcx = text.len() as u64;
    r.exit(Exit::Hypercall);
    assert_eq!(r.m.lines.borrow().len(), burst);
    drain(&r);
    let lines = r.m.lines.borrow();
    assert_eq!(
        lines[burst],
        alloc::format!(
            "vm t: {dropped} bytes of console output dropped (over 16384 bytes, then 4096 bytes/s)"
        )
    );
    assert!(lines[burst + 1].starts_with("[t] flood 0000 "));
}

#[test]
fn mmio_reaches_the_ioapic_and_unbacked_memory_reads_ones() {
    let mut r = rig(Personality::HyperV, false);
    let store = |r: &mut Rig, gpa| {
        // mov [edi], eax
        r.st.vcpu.ram.write(0x1000, &[0x89, 0x07]).unwrap();
        r.st.vcpu.regs.rip = 0x1000;
        r.exit(Exit::NestedPageFault(NestedFault {
            gpa,
            read: false,
            write: true,
            exec: false,
            present: false,
            during_walk: false,
        }))
    };
    let load = |r: &mut Rig, gpa| {
        // mov eax, [edi]
        r.st.vcpu.ram.write(0x1000, &[0x8b, 0x07]).unwrap();
        r.st.vcpu.regs.rip = 0x1000;
        r.exit(Exit::NestedPageFault(NestedFault {
            gpa,
            read: true,
            write: false,
            exec: false,
            present: false,
            during_walk: false,
        }))
    };
    // Select the version register, read it through the window.
    r.st.vcpu.regs.rax = 1;
    r.st.vcpu.shadow = true;
    assert_eq!(store(&mut r, 0xFEC0_0000), Action::Retry);
    assert_eq!(r.rip(), 0x1002, "retired by the emulation");
    assert!(!r.st.vcpu.shadow, "retiring ends an interrupt shadow");
    assert_eq!(load(&mut r, 0xFEC0_0010), Action::Retry);
    assert_eq!(r.st.vcpu.regs.rax, 0x0017_0011);
    assert_eq!(load(&mut r, 0xFED0_0000), Action::Retry);
    assert_eq!(r.st.vcpu.regs.rax, 0xFFFF_FFFF);
    // A fault in RAM that is mapped already: another vCPU mapped it meanwhile, so the vCPU
    // enters again; the second time on the same chunk it is a bug and the VM stops.
    assert_eq!(load(&mut r, 0x2000), Action::Retry);
    assert_eq!(r.st.ram_races, 1);
    assert!(matches!(
        load(&mut r, 0x3000),
        Action::Stop(StopReason::Unsupported {
            what: "nested fault inside guest RAM",
            ..
        })
    ));
}

#[test]
fn hypercalls_reach_the_personality_or_fault_ud() {
    let mut r = rig(Personality::Xen, true);
    // xen_version(XENVER_version)
    r.st.vcpu.regs.rax = 17;
    r.st.vcpu.regs.rdi = 0;
    r.st.vcpu.len = 3;
    assert_eq!(r.exit(Exit::Hypercall), Action::Done);
    assert_eq!(r.st.vcpu.regs.rax, (4 << 16) | 15);
    assert_eq!(r.rip(), 0x1003);

    let mut r = rig(Personality::None, true);
    assert_eq!(r.exit(Exit::Hypercall), Action::Fault(Event::UD));
    assert_eq!(r.st.vcpu.injected, Some(Event::UD));
    assert_eq!(r.rip(), 0x1000);
}

#[test]
fn hlt_parks_until_an_interrupt_is_posted() {
    let mut r = rig(Personality::None, false);
    assert_eq!(r.exit(Exit::Hlt), Action::Halt);
    assert_eq!(r.rip(), 0x1002, "HLT is retired before parking");
    // vCPU 1 sends vector 0x50 to vCPU 0: the next HLT does not park.
    interrupts::send_ipi(
        r.vm(),
        &r.m,
        1,
        super::lapic::Ipi::Fixed {
            dest: super::lapic::Dest::Physical(0),
            vector: 0x50,
        },
    );
    assert!(
        r.vm().vcpus[0].pending.any(),
        "the wake-up the scheduler sees"
    );
    assert_eq!(r.exit(Exit::Hlt), Action::Done);
    r.prepare();
    assert_eq!(r.st.vcpu.injected, Some(Event::ExternalInterrupt(0x50)));
    // With IF clear the interrupt cannot be taken: park.
    r.st.vcpu.injected = None;
    r.st.vcpu.regs.rflags &= !RFLAGS_IF;
    r.vm().vcpus[0].pending.post(0x51);
    assert_eq!(r.exit(Exit::Hlt), Action::Halt);
}

/// `sti; hlt` with an interrupt already handed to the vCPU (out of the APIC, not yet taken:
/// the STI shadow held it off): HLT must not park, or nothing would ever deliver it.
#[test]
fn hlt_does_not_park_on_an_interrupt_handed_over_but_not_taken() {
    let mut r = rig(Personality::None, false);
    r.st.vcpu.regs.rflags |= RFLAGS_IF;
    r.st.vcpu.injected = Some(Event::ExternalInterrupt(0x50));
    assert!(r.st.lapic.deliverable().is_none());
    assert_eq!(r.exit(Exit::Hlt), Action::Done);
    r.st.vcpu.regs.rflags &= !RFLAGS_IF;
    assert_eq!(
        r.exit(Exit::Hlt),
        Action::Halt,
        "IF clear: it cannot be taken"
    );
}

#[test]
fn a_triple_fault_stops_the_vm_and_the_first_stop_wins() {
    let mut r = rig(Personality::None, false);
    let a = r.exit(Exit::TripleFault);
    assert_eq!(a, Action::Stop(StopReason::TripleFault { vcpu: 0 }));
    assert_eq!(r.rip(), 0x1000, "the report shows where it happened");
    let Action::Stop(reason) = a else {
        unreachable!()
    };
    assert!(r.vm().record_stop(reason));
    assert!(!r.vm().record_stop(StopReason::PowerOff));
    assert!(r.vm().stopped());
    assert_eq!(
        r.vm().end.lock().stop,
        Some(StopReason::TripleFault { vcpu: 0 })
    );
}

#[test]
fn a_rewritten_instruction_gets_ud_and_host_interrupts_are_taken() {
    let mut r = rig(Personality::None, false);
    r.st.vcpu.rewritten = true;
    assert_eq!(
        r.exit(Exit::Cpuid {
            leaf: 1,
            subleaf: 0
        }),
        Action::Done
    );
    assert_eq!(r.st.vcpu.injected, Some(Event::UD));
    assert_eq!(r.exit(Exit::ExternalInterrupt), Action::Retry);
    assert_eq!(r.m.host_interrupts.get(), 1);
    assert!(matches!(
        r.exit(Exit::Exception {
            vector: 14,
            error_code: Some(0)
        }),
        Action::Stop(StopReason::Unsupported { .. })
    ));
}

/// Seeded arbitrary exits on every personality (the `kernel-dispatch` fuzz body): CPUID
/// leaves, MSRs and ports anywhere, hypercalls with arbitrary registers, device and unbacked
/// accesses decoded from arbitrary bytes at RIP. The hypervisor answers each without
/// panicking. Set `KERNEL_FUZZ_SEED_DIR` to also write the inputs out as a cargo-fuzz corpus.
#[test]
fn arbitrary_exits_never_panic() {
    let seed_dir = std::env::var_os("KERNEL_FUZZ_SEED_DIR").map(std::path::PathBuf::from);
    let mut rng = virt::testing::XorShift(0x5eed_1234_abcd_0001);
    let mut dispatched = 0;
    for i in 0..600 {
        let len = (rng.next_u64() % 4096) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if let Some(dir) = &seed_dir {
            let dir = dir.join("dispatch");
            std::fs::create_dir_all(&dir).expect("seed dir");
            std::fs::write(dir.join(format!("stable-{i:04}")), &data).expect("write seed");
        }
        dispatched += exits::run(&data);
    }
    assert!(dispatched > 10_000, "only {dispatched} exits");
    exits::run(&[]);
}
