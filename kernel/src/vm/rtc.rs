//! The CMOS real-time clock at ports 0x70/0x71 every PC has. Guests read the date from it at
//! boot (Linux spins on its update-in-progress flag otherwise, then gives up on the time).
//! Time comes from the caller as seconds since the Unix epoch; the clock is read-only here:
//! writes to the time registers are accepted and ignored (no guest may set the host's time).

pub const INDEX_PORT: u16 = 0x70;
pub const DATA_PORT: u16 = 0x71;
const CMOS_BYTES: usize = 128;
/// Status B: 24-hour mode, BCD (bit 2 clear), no interrupts.
const STATUS_B: u8 = 0x02;
/// Status D: the battery is good.
const STATUS_D: u8 = 0x80;

pub struct Rtc {
    index: u8,
    /// Non-clock CMOS bytes (firmware scratch); some guests write and read them back.
    nvram: [u8; CMOS_BYTES],
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

fn bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Rtc {
    pub const fn new() -> Self {
        Self {
            index: 0,
            nvram: [0; CMOS_BYTES],
        }
    }

    /// A reset: the index register clears; CMOS RAM keeps its contents.
    pub fn reset(&mut self) {
        self.index = 0;
    }

    /// `None`: not an RTC port.
    pub fn read(&mut self, port: u16, unix_secs: u64) -> Option<u8> {
        match port {
            INDEX_PORT => Some(self.index),
            DATA_PORT => Some(self.register(self.index, unix_secs)),
            _ => None,
        }
    }

    /// `false`: not an RTC port.
    pub fn write(&mut self, port: u16, value: u8) -> bool {
        match port {
            // Bit 7 is the NMI mask on real chipsets; only the index matters here.
            INDEX_PORT => self.index = value & 0x7F,
            DATA_PORT if self.index >= 0x0E => self.nvram[usize::from(self.index)] = value,
            DATA_PORT => {}
            _ => return false,
        }
        true
    }

    fn register(&self, index: u8, unix_secs: u64) -> u8 {
        let secs = unix_secs as i64;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
        let weekday = ((days + 4).rem_euclid(7) + 1) as u32;
        match index {
            0x00 => bcd(sod % 60),
            0x02 => bcd((sod / 60) % 60),
            0x04 => bcd(sod / 3600),
            0x06 => bcd(weekday),
            0x07 => bcd(day),
            0x08 => bcd(month),
            0x09 => bcd((year % 100) as u32),
            // Status A: divider on, never "update in progress".
            0x0A => 0x26,
            0x0B => STATUS_B,
            0x0C => 0,
            0x0D => STATUS_D,
            // The century byte many firmwares keep at 0x32.
            0x32 => bcd((year / 100) as u32),
            // Alarms read as zero.
            0x01 | 0x03 | 0x05 => 0,
            i => self.nvram.get(usize::from(i)).copied().unwrap_or(0xFF),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(
            civil_from_days(days_from_civil(2026, 11, 26)),
            (2026, 11, 26)
        );
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2,
            "leap year"
        );
        for d in [-1000, 0, 59, 60, 365, 10_000, 20_000, 50_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn reads_the_time_in_bcd() {
        let mut rtc = Rtc::new();
        // 2026-11-26 03:30:15 UTC, a Thursday.
        let t = days_from_civil(2026, 11, 26) as u64 * 86_400 + 3 * 3600 + 30 * 60 + 15;
        let mut reg = |i| {
            rtc.write(INDEX_PORT, i);
            rtc.read(DATA_PORT, t).unwrap()
        };
        assert_eq!(reg(0x00), 0x15);
        assert_eq!(reg(0x02), 0x30);
        assert_eq!(reg(0x04), 0x03);
        assert_eq!(reg(0x06), 0x05, "Thursday is day 5");
        assert_eq!(reg(0x07), 0x26);
        assert_eq!(reg(0x08), 0x11);
        assert_eq!(reg(0x09), 0x26);
        assert_eq!(reg(0x32), 0x20);
        assert_eq!(reg(0x0A) & 0x80, 0, "never updating");
        assert_eq!(reg(0x0D), 0x80);
    }

    #[test]
    fn the_clock_is_read_only_but_nvram_keeps_bytes() {
        let mut rtc = Rtc::new();
        assert!(rtc.write(INDEX_PORT, 0x80));
        assert_eq!(rtc.read(INDEX_PORT, 0), Some(0), "NMI bit dropped");
        rtc.write(DATA_PORT, 0x59);
        assert_eq!(rtc.read(DATA_PORT, 0), Some(0), "seconds unchanged");
        rtc.write(INDEX_PORT, 0x40);
        rtc.write(DATA_PORT, 0xAB);
        assert_eq!(rtc.read(DATA_PORT, 0), Some(0xAB));
        assert!(!rtc.write(0x72, 1));
        assert_eq!(rtc.read(0x72, 0), None);
    }
}
