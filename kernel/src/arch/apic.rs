//! The local APIC, in x2APIC mode where the CPU has it (MSR access) and xAPIC otherwise
//! (MMIO through `volatile`; QEMU's TCG CPU has no x2APIC). Only what the kernel uses: the
//! timer, EOI, IDs and IPIs; the legacy LINT0/LINT1 inputs stay masked.
#![expect(unsafe_code)]
// UNSAFETY: APIC MSRs and the APIC's MMIO page (identity mapped, uncached).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use volatile::VolatilePtr;
use x86::msr::{IA32_APIC_BASE, rdmsr, wrmsr};

const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;
const X2APIC_MSR_BASE: u32 = 0x800;

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2: u64 = 1 << 10;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
const DIVIDE_BY_16: u32 = 0x3;

/// x2APIC mode, chosen once by the BSP in [`init`]; every AP follows it ([`init_ap`]).
static X2: AtomicBool = AtomicBool::new(false);
static MMIO_BASE: AtomicU64 = AtomicU64::new(0);
/// LAPIC timer ticks (after the divider) per millisecond, measured against the TSC.
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    if X2.load(Ordering::Relaxed) {
        // SAFETY: x2APIC registers are MSRs 0x800 + reg/16; reading them has no side effects
        // beyond the APIC's own.
        unsafe { rdmsr(X2APIC_MSR_BASE + (reg >> 4)) as u32 }
    } else {
        mmio(reg).read()
    }
}

fn write(reg: u32, value: u32) {
    if X2.load(Ordering::Relaxed) {
        // SAFETY: as in `read`; writes go to the APIC only.
        unsafe { wrmsr(X2APIC_MSR_BASE + (reg >> 4), u64::from(value)) }
    } else {
        mmio(reg).write(value)
    }
}

fn mmio(reg: u32) -> VolatilePtr<'static, u32> {
    let addr = MMIO_BASE.load(Ordering::Relaxed) + u64::from(reg);
    // SAFETY: the APIC page is identity mapped uncached by the host page tables, and every
    // register offset used here is 16-byte aligned inside that page.
    unsafe { VolatilePtr::new(NonNull::new_unchecked(addr as *mut u32)) }
}

pub fn is_x2apic() -> bool {
    X2.load(Ordering::Relaxed)
}

/// Enables this CPU's APIC (x2APIC if `x2apic`) with the spurious vector, timer masked.
pub fn init(x2apic: bool, spurious_vector: u8) {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; setting the enable (and x2APIC) bits
    // keeps the base address.
    let base = unsafe { rdmsr(IA32_APIC_BASE) };
    let mut new = base | APIC_BASE_ENABLE;
    if x2apic {
        new |= APIC_BASE_X2;
    }
    // SAFETY: as above.
    unsafe { wrmsr(IA32_APIC_BASE, new) };
    X2.store(x2apic, Ordering::Release);
    MMIO_BASE.store(base & 0x000F_FFFF_FFFF_F000, Ordering::Relaxed);
    write(REG_SVR, 0x100 | u32::from(spurious_vector));
    write(REG_LVT_TIMER, LVT_MASKED);
    // Firmware wires the BSP's LINT0 to the 8259 (ExtINT) and LINT1 to NMI; the kernel uses
    // neither. Left unmasked, LINT0 passes the masked 8259's spurious IRQ 7 on, and under
    // QEMU every PIT tick and UART register access interrupts the BSP's vCPU thread.
    write(REG_LVT_LINT0, LVT_MASKED);
    write(REG_LVT_LINT1, LVT_MASKED);
}

/// Enables an AP's APIC in the mode the BSP chose.
pub fn init_ap(spurious_vector: u8) {
    init(X2.load(Ordering::Acquire), spurious_vector);
}

pub fn id() -> u32 {
    let raw = read(REG_ID);
    if is_x2apic() { raw } else { raw >> 24 }
}

pub fn eoi() {
    write(REG_EOI, 0);
}

/// Measures the timer against the TSC (which must be calibrated); returns ticks per ms.
pub fn calibrate_timer() -> u64 {
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_MASKED);
    write(REG_TIMER_INIT, u32::MAX);
    super::tsc::spin_micros(10_000);
    let elapsed = u64::from(u32::MAX - read(REG_TIMER_CURRENT));
    write(REG_TIMER_INIT, 0);
    let per_ms = (elapsed / 10).max(1);
    TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
    per_ms
}

/// A periodic timer interrupt on `vector` every `period_ms`.
pub fn start_periodic(vector: u8, period_ms: u32) {
    let ticks = TICKS_PER_MS
        .load(Ordering::Relaxed)
        .saturating_mul(u64::from(period_ms));
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_PERIODIC | u32::from(vector));
    write(REG_TIMER_INIT, ticks.clamp(1, u64::from(u32::MAX)) as u32);
}

/// The timer in one-shot mode on `vector`, stopped until [`arm`]: the scheduler sets it for
/// the next thing due on this pCPU instead of taking a tick every millisecond.
pub fn start_oneshot(vector: u8) {
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_TIMER_INIT, 0);
    write(REG_LVT_TIMER, u32::from(vector));
}

/// One timer interrupt `ns` from now, not sooner (rounded up to a timer tick; at most what
/// the counter holds, about a minute, after which the caller arms it again).
pub fn arm(ns: u64) {
    let ticks =
        (u128::from(TICKS_PER_MS.load(Ordering::Relaxed)) * u128::from(ns)).div_ceil(1_000_000);
    write(REG_TIMER_INIT, ticks.clamp(1, u128::from(u32::MAX)) as u32);
}

/// Whether the one-shot timer is still counting (its interrupt not yet raised).
pub fn counting() -> bool {
    read(REG_TIMER_CURRENT) != 0
}

const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const ICR_PENDING: u32 = 1 << 12;

/// A fixed, edge-triggered IPI with `vector` to the APIC `dest`.
pub fn send_fixed_ipi(dest: u32, vector: u8) {
    send_icr(dest, u32::from(vector) | (1 << 14));
}

/// Writes the ICR (destination first in xAPIC mode; one 64-bit MSR in x2APIC mode).
pub fn send_icr(dest: u32, low: u32) {
    if is_x2apic() {
        // SAFETY: the x2APIC ICR MSR; sending an IPI has no memory effects here.
        unsafe {
            wrmsr(
                X2APIC_MSR_BASE + (REG_ICR_LOW >> 4),
                (u64::from(dest) << 32) | u64::from(low),
            )
        };
    } else {
        write(REG_ICR_HIGH, dest << 24);
        write(REG_ICR_LOW, low);
        let mut spins = 0;
        while read(REG_ICR_LOW) & ICR_PENDING != 0 && spins < 1_000_000 {
            core::hint::spin_loop();
            spins += 1;
        }
    }
}
