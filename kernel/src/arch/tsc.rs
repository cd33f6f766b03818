//! Time: the TSC, calibrated once against the legacy PIT (or CPUID leaf 0x15 where the CPU
//! states its frequency), is the kernel's clock.
#![expect(unsafe_code)]
// UNSAFETY: rdtsc and the PIT's I/O ports.

use core::sync::atomic::{AtomicU64, Ordering};
use x86::io::{inb, outb};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Unix time (s) at calibration, from the host RTC; 0 when it could not be read.
static BOOT_UNIX: AtomicU64 = AtomicU64::new(0);

pub fn set_boot_unix(secs: u64) {
    BOOT_UNIX.store(secs, Ordering::Relaxed);
}

/// Wall-clock time: the host RTC at boot plus the TSC since.
pub fn unix_secs() -> u64 {
    BOOT_UNIX.load(Ordering::Relaxed) + micros() / 1_000_000
}

/// Wall-clock nanoseconds at host time 0 (calibration), for the Xen wall clock.
pub fn boot_unix_ns() -> u64 {
    BOOT_UNIX
        .load(Ordering::Relaxed)
        .saturating_mul(1_000_000_000)
}
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
/// The TSC when the banner was printed, before calibration: the origin of "VMs start N s
/// after the banner".
static BANNER_TSC: AtomicU64 = AtomicU64::new(0);

/// Notes the banner's time (the kernel's first line on COM1).
pub fn mark_banner() {
    BANNER_TSC.store(now(), Ordering::Relaxed);
}

/// Nanoseconds since the banner (once calibrated).
pub fn ns_since_banner() -> u64 {
    ns_from_ticks(now().saturating_sub(BANNER_TSC.load(Ordering::Relaxed)))
}

const PIT_HZ: u64 = 1_193_182;
const CALIBRATION_MS: u64 = 20;
/// Upper bound on PIT polling so a machine without a PIT still boots (with CPUID's figure).
const PIT_SPIN_LIMIT: u64 = 50_000_000;

pub fn now() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { x86::time::rdtsc() }
}

pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Microseconds since calibration (0 before it).
pub fn micros() -> u64 {
    let hz = hz();
    if hz == 0 {
        return 0;
    }
    let ticks = now().saturating_sub(BOOT_TSC.load(Ordering::Relaxed));
    (u128::from(ticks) * 1_000_000 / u128::from(hz)) as u64
}

pub fn ticks_from_micros(us: u64) -> u64 {
    (u128::from(us) * u128::from(hz()) / 1_000_000) as u64
}

pub fn spin_micros(us: u64) {
    let end = now() + ticks_from_micros(us);
    while now() < end {
        core::hint::spin_loop();
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Source {
    Pit,
    Cpuid,
}

/// Measures the TSC; returns its frequency and where it came from.
pub fn calibrate() -> Option<(u64, Source)> {
    let (hz, source) = match pit_measure() {
        Some(hz) => (hz, Source::Pit),
        None => (cpuid_hz()?, Source::Cpuid),
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    BOOT_TSC.store(now(), Ordering::Relaxed);
    Some((hz, source))
}

fn pit_measure() -> Option<u64> {
    let count = PIT_HZ * CALIBRATION_MS / 1000;
    // SAFETY: programs PIT channel 2 (the speaker gate, speaker output off) in one-shot mode
    // and polls its output bit; nothing else uses the PIT.
    unsafe {
        let gate = inb(0x61);
        outb(0x61, (gate & !0x02) | 0x01);
        outb(0x43, 0xB0);
        outb(0x42, (count & 0xFF) as u8);
        outb(0x42, (count >> 8) as u8);
        let start = now();
        let mut spins = 0u64;
        while inb(0x61) & 0x20 == 0 {
            spins += 1;
            if spins > PIT_SPIN_LIMIT {
                outb(0x61, gate);
                return None;
            }
        }
        let end = now();
        outb(0x61, gate);
        let hz = (end - start) * 1000 / CALIBRATION_MS;
        (hz > 1_000_000).then_some(hz)
    }
}

fn cpuid_hz() -> Option<u64> {
    let cpuid = x86::cpuid::CpuId::new();
    let info = cpuid.get_tsc_info()?;
    info.tsc_frequency()
}

/// Nanoseconds since calibration.
pub fn now_ns() -> u64 {
    ns_from_ticks(now().saturating_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

pub fn ns_from_ticks(ticks: u64) -> u64 {
    let hz = hz();
    if hz == 0 {
        return 0;
    }
    u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(hz)).unwrap_or(u64::MAX)
}

/// The host TSC value at `ns` nanoseconds since calibration.
pub fn tsc_at_ns(ns: u64) -> u64 {
    let ticks = u128::from(ns) * u128::from(hz()) / 1_000_000_000;
    BOOT_TSC
        .load(Ordering::Relaxed)
        .saturating_add(u64::try_from(ticks).unwrap_or(u64::MAX))
}

/// Nanoseconds since calibration at host TSC `tsc`.
pub fn ns_at_tsc(tsc: u64) -> u64 {
    ns_from_ticks(tsc.saturating_sub(BOOT_TSC.load(Ordering::Relaxed)))
}
