//! `probe.bench=N`: what one exit of each kind costs the guest, in guest TSC cycles, for
//! `cargo xtask bench exits`. Each operation runs N times in nine batches after one untimed
//! run; the median batch's cycles per operation are printed as `probe: bench NAME CYCLES`.
//! Only vCPU 0 times anything; another vCPU only answers the IPI round trip.

use crate::{arch, io};
use core::sync::atomic::{AtomicU32, Ordering};

const BATCHES: usize = 9;
/// TSC cycles a round trip may take before its answer counts as lost: about 40 times the
/// slowest median measured (the IPI round trip under QEMU).
const PATIENCE: u64 = 50_000_000;
/// The IPI round trip: vCPU 0 sends PING to vCPU 1, whose handler answers PONG.
const PING: u8 = 0x60;
const PONG: u8 = 0x61;
const X2APIC_ICR: u32 = 0x830;

static REPS: AtomicU32 = AtomicU32::new(0);

/// Sets N from the command line (0: no benchmark).
pub fn enable(reps: u32) {
    REPS.store(reps, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    REPS.load(Ordering::Relaxed) > 0
}

/// Times `op` and prints its cost as `NAME`.
pub fn time(name: &str, mut op: impl FnMut()) {
    let reps = REPS.load(Ordering::Relaxed);
    if reps == 0 {
        return;
    }
    let per_batch = (reps / BATCHES as u32).max(1);
    op();
    let mut cycles = [0u64; BATCHES];
    for c in &mut cycles {
        let start = arch::rdtsc();
        for _ in 0..per_batch {
            op();
        }
        *c = arch::rdtsc().wrapping_sub(start) / u64::from(per_batch);
    }
    cycles.sort_unstable();
    io::print(format_args!(
        "probe: bench {name} {}\n",
        cycles[BATCHES / 2]
    ));
}

/// The exits every face has: CPUID, an MSR the platform answers, a device's port.
pub fn platform() {
    time("cpuid", || {
        arch::cpuid(0, 0);
    });
    // IA32_APIC_BASE: answered by the hypervisor's platform code on every face.
    time("msr", || {
        arch::rdmsr(0x1B);
    });
    // The emulated UART's scratch register: a device on the VM's bus.
    time("port", || {
        io::inb(0x3FF);
    });
    ipi();
}

/// Waits with interrupts open, one instruction at a time, until `vector` has arrived more
/// than `before` times; false when PATIENCE ran out first. Not `sti; hlt`: see the README's
/// known issue of a wake-up lost to it, which a benchmark would only wait for.
pub fn wait_open(vector: u8, before: u32) -> bool {
    let give_up = arch::rdtsc() + PATIENCE;
    while arch::vector_hits(vector).0 == before {
        if arch::rdtsc() > give_up {
            return false;
        }
        arch::sti_nop();
    }
    true
}

/// Prints how many of a figure's round trips never completed, if any did not.
pub fn report_lost(name: &str, lost: u32) {
    if lost > 0 {
        io::print(format_args!("probe: bench {name}-lost {lost}\n"));
    }
}

/// vCPU 0 sends a fixed IPI to vCPU 1 (an x2APIC ICR write), vCPU 1's handler EOIs and
/// answers with one to vCPU 0, and vCPU 0 has taken the answer. vCPU 1 waits in its idle
/// loop (`sti; hlt`), so each round trip also wakes a halted vCPU, as an IPI to an idle
/// Linux CPU does.
fn ipi() {
    let [_, ebx1, _, _] = arch::cpuid(1, 0);
    if !enabled() || (ebx1 >> 16) & 0xFF < 2 {
        return;
    }
    arch::expect_vector(PING, true);
    arch::expect_vector(PONG, true);
    // Physical destination x2APIC ID 0, fixed delivery.
    arch::answer_vector(PING, u64::from(PONG));
    let send = || {
        let (before, _) = arch::vector_hits(PONG);
        arch::wrmsr(X2APIC_ICR, (1 << 32) | u64::from(PING));
        wait_open(PONG, before)
    };
    // A vCPU 1 that never answers would cost PATIENCE per round trip, thousands of times.
    if !send() {
        crate::say!("bench ipi: vCPU 1 does not answer; not timed");
        arch::answer_vector(0, 0);
        return;
    }
    let mut lost = 0u32;
    time("ipi", || {
        if !send() {
            lost += 1;
        }
    });
    report_lost("ipi", lost);
    arch::answer_vector(0, 0);
}
