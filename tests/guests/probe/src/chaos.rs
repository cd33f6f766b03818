//! `probe.chaos=SEED,OPS`: a hostile guest. Seeded, it fires OPS operations at the hypervisor
//! — hypercalls of its face with valid and invalid numbers and arguments, MSR reads and writes,
//! CPUID, port I/O, MMIO at unbacked addresses, IPIs, scribbles on the pages its hypercalls
//! point at, console bursts — then says how many it survived and powers off. It keeps away
//! only from what would end or corrupt itself (power and reset ports, its own RAM, the MSRs
//! and ABI pages its own execution depends on), so that one run gets through all of them; the
//! verdict on the hypervisor comes from the hypervisor (the VM's end, its neighbour's).

#![expect(unsafe_code)]
// UNSAFETY: the hypercall instruction with its register convention, CLI, and writes into the
// probe's own scratch pages.

use crate::arch;
use core::arch::asm;

/// Pages whose addresses the hypercalls get: the hypervisor reads and writes them.
#[repr(C, align(4096))]
struct Scratch([u8; 4 * 4096]);
static mut SCRATCH: Scratch = Scratch([0; 4 * 4096]);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn scratch() -> u64 {
    (&raw const SCRATCH) as u64
}

/// An argument: a pointer into the scratch pages, a small number, or anything.
fn arg(r: &mut Rng) -> u64 {
    match r.below(10) {
        0..=3 => scratch() + r.below(4 * 4096 - 64),
        4..=6 => r.below(32),
        _ => r.next(),
    }
}

/// Ports that would power off or reset this VM.
fn spared_port(p: u16) -> bool {
    matches!(p, 0x600..=0x60F | 0xCF9 | 0x64 | 0x92 | 0xB2)
}

/// MSRs this probe's own execution depends on.
fn spared_msr(m: u32) -> bool {
    matches!(
        m,
        0x10 | 0x1B | 0x3A | 0x1A0 | 0x1D9 | 0x277 | 0x2FF | 0x200..=0x26F | 0x6A0..=0x6A8
            | 0x800..=0x8FF
            | 0xC000_0080
            | 0xC000_0100..=0xC000_0102
            | 0x4000_0000..=0x4000_00FF
    )
}

fn vmcall(amd: bool, nr: u64, a: [u64; 5]) -> u64 {
    let ret: u64;
    // SAFETY: a hypercall changes RAX and what its pointers name, which are scratch pages or
    // addresses the hypervisor must refuse; RCX/R8/RDX carry Hyper-V's inputs too.
    unsafe {
        if amd {
            asm!("vmmcall", inlateout("rax") nr => ret, inlateout("rdi") a[0] => _,
                inlateout("rsi") a[1] => _, inlateout("rdx") a[2] => _,
                inlateout("r10") a[3] => _, inlateout("r8") a[4] => _,
                inlateout("rcx") a[1] => _, options(nostack));
        } else {
            asm!("vmcall", inlateout("rax") nr => ret, inlateout("rdi") a[0] => _,
                inlateout("rsi") a[1] => _, inlateout("rdx") a[2] => _,
                inlateout("r10") a[3] => _, inlateout("r8") a[4] => _,
                inlateout("rcx") a[1] => _, options(nostack));
        }
    }
    ret
}

/// A Xen hypercall: any number but the few that would stop, block or remap this guest
/// (sched_op other than yield, vcpu_op's area registrations, memory_op's remaps of RAM).
fn xen_call(r: &mut Rng, amd: bool) {
    let mut a = [arg(r), arg(r), arg(r), arg(r), arg(r)];
    let nr = match r.below(8) {
        0 => 17, // xen_version
        1 => 32, // event_channel_op
        2 => 20, // grant_table_op
        3 => 18, // console_io
        4 => {
            a[0] = 0; // sched_op yield
            29
        }
        5 => {
            a[0] = r.below(10) | 4; // vcpu_op timers and queries
            24
        }
        6 => {
            a[0] = 1; // hvm_op get_param
            34
        }
        _ => loop {
            let n = r.below(64);
            if !matches!(n, 12 | 24 | 29 | 34) {
                break n;
            }
        },
    };
    let _ = arch::catching(3, || {
        vmcall(amd, nr, a);
    });
}

/// A Hyper-V hypercall: any call code and flags, inputs in the scratch pages or anywhere.
fn hyperv_call(r: &mut Rng, amd: bool) {
    let control = r.next() & 0x0fff_0fff_0001_ffff;
    let a = [0, control, arg(r), 0, arg(r)];
    let _ = arch::catching(3, || {
        vmcall(amd, 0, a);
    });
}

fn one(r: &mut Rng, face: u8, amd: bool) {
    match r.below(12) {
        0..=2 => match face {
            1 => xen_call(r, amd),
            2 => hyperv_call(r, amd),
            _ => {
                let _ = arch::catching(3, || arch::vmcall(amd));
            }
        },
        3 => {
            let _ = arch::cpuid(r.next() as u32 & 0xC000_01FF, r.below(4) as u32);
        }
        4 => {
            let m = match r.below(4) {
                0 => r.below(0x1000) as u32,
                1 => 0x4000_0000 + r.below(0x200) as u32,
                2 => 0xC000_0000 + r.below(0x200) as u32,
                _ => r.next() as u32,
            };
            let _ = arch::catching(2, || {
                let _ = arch::rdmsr(m);
            });
        }
        5 => {
            let m = match r.below(3) {
                0 => r.below(0x1000) as u32,
                1 => 0xC000_0000 + r.below(0x200) as u32,
                _ => r.next() as u32,
            };
            if !spared_msr(m) {
                let v = r.next();
                let _ = arch::catching(2, || arch::wrmsr(m, v));
            }
        }
        6 => {
            let p = r.next() as u16;
            if !spared_port(p) {
                let v = r.next() as u8;
                if r.below(2) == 0 {
                    let _ = crate::io::inb(p);
                } else {
                    crate::io::outb(p, v);
                }
            }
        }
        7 => {
            // Unbacked guest-physical memory (the probe's RAM is tens of MiB), the IOAPIC,
            // the MMIO hole; writes spare the local APIC page.
            let gpa = match r.below(3) {
                0 => 0xFEC0_0000 + (r.below(0x100) & !3),
                1 => 0x4000_0000 + (r.below(0xB000_0000) & !3),
                _ => 0xC000_0000 + (r.below(0x3EE0_0000) & !3),
            };
            if r.below(2) == 0 {
                let _ = arch::read_u32(gpa);
            } else if !(0xFEE0_0000..0xFEE0_1000).contains(&gpa) {
                arch::write_u32(gpa, r.next() as u32);
            }
        }
        8 => {
            // A fixed IPI to anyone, interrupts off here: it only queues.
            let icr = (r.below(0x100) << 32) | (0x30 + r.below(0xC0));
            arch::wrmsr(0x830, icr);
        }
        9 => {
            // Scribble on what the hypercalls read.
            let at = r.below(4 * 4096 - 8) & !7;
            let v = r.next();
            // SAFETY: the scratch pages are ours and only the hypervisor reads them.
            unsafe {
                core::ptr::write_volatile(
                    ((&raw mut SCRATCH) as *mut u8)
                        .add(at as usize)
                        .cast::<u64>(),
                    v,
                )
            };
        }
        10 => {
            // Now and then, not always: the final count must fit the console meter.
            let n = if r.below(40) == 0 { r.below(8) } else { 0 };
            for _ in 0..n {
                crate::say!("chaos burst {:#x}", r.next());
            }
        }
        _ => {
            if face == 2 {
                // Synthetic MSRs that place pages get the scratch pages; the rest anything.
                let (m, v) = match r.below(4) {
                    0 => (0x4000_0090 + r.below(16) as u32, r.next()), // SINTx
                    1 => (0x4000_00B0 + r.below(8) as u32, r.next()),  // STIMERx
                    2 => (0x4000_0083, scratch() | 1),                 // SIMP
                    _ => (0x4000_0080, r.below(2)),                    // SCONTROL
                };
                let _ = arch::catching(2, || arch::wrmsr(m, v));
            }
        }
    }
}

/// Runs `ops` operations from `seed` with interrupts off; returns how many ran.
pub fn run(seed: u64, ops: u64, face: u8, amd: bool) -> u64 {
    // SAFETY: interrupts stay off for the run: IPIs and timers it provokes only queue.
    unsafe { asm!("cli", options(nomem, nostack)) };
    if face == 2 {
        // Hyper-V takes hypercalls once a guest OS is named.
        arch::wrmsr(0x4000_0000, 0x8100_0000_0000_0000);
    }
    let mut r = Rng(seed | 1);
    let mut done = 0;
    while done < ops {
        one(&mut r, face, amd);
        done += 1;
        if done % 1000 == 0 {
            crate::say!("chaos: {done} ops");
        }
    }
    done
}
