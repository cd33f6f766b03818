//! `probe.bench=N`: what one exit of each kind costs the guest, in guest TSC cycles, for
//! `cargo xtask bench exits`. Each operation runs N times in nine batches after one untimed
//! run; the median batch's cycles per operation are printed as `probe: bench NAME CYCLES`.

use crate::{arch, io};
use core::sync::atomic::{AtomicU32, Ordering};

const BATCHES: usize = 9;

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
}
