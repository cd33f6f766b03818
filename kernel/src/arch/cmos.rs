//! The host's own CMOS clock, read once at boot: the wall-clock time guests are given.
#![expect(unsafe_code)]
// UNSAFETY: the CMOS index/data ports.

use x86::io::{inb, outb};

fn reg(index: u8) -> u8 {
    // SAFETY: selects and reads a CMOS register; NMI stays enabled (bit 7 clear).
    unsafe {
        outb(0x70, index);
        inb(0x71)
    }
}

fn from_bcd(v: u8, bcd: bool) -> u32 {
    if bcd {
        u32::from(v >> 4) * 10 + u32::from(v & 0xF)
    } else {
        u32::from(v)
    }
}

/// Seconds since the Unix epoch from the host RTC (assumed UTC, as emulators and lab
/// machines set it); `None` if no plausible clock answers.
pub fn unix_time() -> Option<u64> {
    // Wait (bounded) for an update to finish so the fields belong together.
    let mut spins = 0;
    while reg(0x0A) & 0x80 != 0 && spins < 1_000_000 {
        spins += 1;
    }
    let b = reg(0x0B);
    let bcd = b & 0x04 == 0;
    let sec = from_bcd(reg(0x00), bcd);
    let min = from_bcd(reg(0x02), bcd);
    let hour_raw = reg(0x04);
    let mut hour = from_bcd(hour_raw & 0x7F, bcd);
    if b & 0x02 == 0 && hour_raw & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let day = from_bcd(reg(0x07), bcd);
    let month = from_bcd(reg(0x08), bcd);
    let year = 2000 + i64::from(from_bcd(reg(0x09), bcd));
    if sec > 59 || min > 59 || hour > 23 || !(1..=31).contains(&day) || !(1..=12).contains(&month) {
        return None;
    }
    let days = crate::vm::rtc::days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + i64::from(hour * 3600 + min * 60 + sec)).ok()
}
