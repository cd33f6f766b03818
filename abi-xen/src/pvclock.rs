//! Xen system time and the pvclock tuple (`vcpu_time_info`) that publishes it.
//!
//! The guest computes `system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32`. One tuple,
//! taken once from the host's TSC and clock, defines Xen system time for the VM's whole life:
//! the hypervisor converts with the same formula, so guest-read time and timer deadlines agree
//! exactly and never step backwards (the host TSC is invariant; refreshing the tuple would
//! only trade the host clock's rounding for a visible step).

use virt::{GuestMemory, MemError};

const NS_PER_SEC: u128 = 1_000_000_000;

/// `PVCLOCK_TSC_STABLE_BIT`: the TSC is synchronised across vCPUs, so Linux may skip its
/// cross-CPU monotonicity fix-up and use the vDSO.
pub const TSC_STABLE: u8 = 1;

/// Size of `vcpu_time_info`.
pub const TIME_INFO_SIZE: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBase {
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub mul: u32,
    pub shift: i8,
    pub flags: u8,
}

/// `mul`/`shift` such that `((ticks << shift) * mul) >> 32` is nanoseconds: the frequency is
/// scaled by a power of two into (1 GHz, 2 GHz], which puts `mul` in [2^31, 2^32) and keeps
/// the most precision a 32-bit multiplier allows.
pub fn scale_for(tsc_hz: u64) -> (u32, i8) {
    let hz = u128::from(tsc_hz.max(1));
    let lo = NS_PER_SEC;
    let hi = 2 * NS_PER_SEC;
    let mut shift: i32 = 0;
    let scaled = |s: i32| -> (u128, u128) {
        // scaled frequency as num/den, exactly.
        if s >= 0 {
            (hz << s, 1)
        } else {
            (hz, 1u128 << -s)
        }
    };
    loop {
        let (n, d) = scaled(shift);
        if n > hi * d {
            shift -= 1;
        } else if n <= lo * d {
            shift += 1;
        } else {
            break;
        }
    }
    let (n, d) = scaled(shift);
    let mul = ((NS_PER_SEC << 32) * d) / n;
    (u32::try_from(mul).unwrap_or(u32::MAX), shift as i8)
}

/// The guest reader's arithmetic, bit for bit (64-bit shift, 64x32 multiply keeping bits 95:32).
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 {
        delta.wrapping_shl(u32::from(shift.unsigned_abs()))
    } else {
        delta.wrapping_shr(u32::from(shift.unsigned_abs()))
    };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

impl TimeBase {
    pub fn new(tsc_hz: u64, tsc: u64, now_ns: u64, stable: bool) -> Self {
        let (mul, shift) = scale_for(tsc_hz);
        TimeBase {
            tsc_timestamp: tsc,
            system_time: now_ns,
            mul,
            shift,
            flags: if stable { TSC_STABLE } else { 0 },
        }
    }

    /// Xen system time at host TSC `tsc`.
    pub fn system_time_at(&self, tsc: u64) -> u64 {
        let delta = tsc.saturating_sub(self.tsc_timestamp);
        self.system_time
            .wrapping_add(scale_delta(delta, self.mul, self.shift))
    }

    fn encode(&self, version: u32) -> [u8; TIME_INFO_SIZE] {
        let mut b = [0u8; TIME_INFO_SIZE];
        b[0..4].copy_from_slice(&version.to_le_bytes());
        b[8..16].copy_from_slice(&self.tsc_timestamp.to_le_bytes());
        b[16..24].copy_from_slice(&self.system_time.to_le_bytes());
        b[24..28].copy_from_slice(&self.mul.to_le_bytes());
        b[28] = self.shift as u8;
        b[29] = self.flags;
        b
    }

    /// Publishes the tuple at `gpa` with the seqlock protocol readers expect: the version is
    /// made odd before the fields change and even after, continuing from whatever version
    /// the area held so a reader that raced a previous update retries.
    pub fn publish(&self, mem: &dyn GuestMemory, gpa: u64) -> Result<(), MemError> {
        let old = mem.read_u32(gpa)?;
        let odd = old.wrapping_add(1) | 1;
        mem.write_u32(gpa, odd)?;
        let body = self.encode(odd);
        mem.write(gpa.wrapping_add(4), &body[4..])?;
        mem.write_u32(gpa, odd.wrapping_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Linux's `pvclock_tsc_khz` derives from the tuple.
    fn guest_tsc_khz(mul: u32, shift: i8) -> u64 {
        let mut khz = (1_000_000u64 << 32) / u64::from(mul);
        if shift < 0 {
            khz <<= -shift;
        } else {
            khz >>= shift;
        }
        khz
    }

    #[test]
    fn scale_covers_common_frequencies() {
        for hz in [
            1u64,
            1_000,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            2_000_000_000,
            2_100_000_000,
            3_000_000_000,
            3_999_999_999,
            u64::MAX,
        ] {
            let (mul, shift) = scale_for(hz);
            assert!(mul >= 1 << 31, "{hz}: mul {mul:#x}");
            // One second of ticks converts to one second within the multiplier's precision.
            if (1_000_000..1 << 40).contains(&hz) {
                let ns = scale_delta(hz, mul, shift);
                assert!(ns.abs_diff(1_000_000_000) <= 2, "{hz}: {ns}");
            }
        }
    }

    #[test]
    fn guest_derived_tsc_khz_matches() {
        for hz in [
            1_000_000_000u64,
            2_500_000_000,
            3_193_999_000,
            1_797_000_000,
        ] {
            let (mul, shift) = scale_for(hz);
            assert!(guest_tsc_khz(mul, shift).abs_diff(hz / 1000) <= 1, "{hz}");
        }
    }

    #[test]
    fn system_time_is_monotonic_and_tracks_host() {
        let hz = 2_900_000_000u64;
        let tb = TimeBase::new(hz, 1_000_000, 5_000, true);
        let mut last = 0;
        for step in 0..10_000u64 {
            let tsc = 1_000_000 + step * 7_919;
            let t = tb.system_time_at(tsc);
            assert!(t >= last);
            last = t;
            let exact = 5_000 + u128::from(step * 7_919) * 1_000_000_000 / u128::from(hz);
            assert!((u128::from(t)).abs_diff(exact) <= 1);
        }
        // A TSC before the base reads as the base, never as a wrapped huge value.
        assert_eq!(tb.system_time_at(0), 5_000);
    }
}
