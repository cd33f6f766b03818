//! Comparing a translation that is built once (host identity map, a VM's nested tables)
//! against what it must be: pure, so the kernel's end-of-VM checks are tested on the host.

use core::ops::Range;

/// Where a translation differs from what it must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mismatches {
    pub count: u64,
    /// The first address that differs, and what it translated to.
    pub first: Option<(u64, Option<u64>)>,
}

/// Steps through `range` by `step` and compares `got(addr)` with `want(addr)`.
pub fn compare(
    range: Range<u64>,
    step: u64,
    want: impl Fn(u64) -> Option<u64>,
    got: impl Fn(u64) -> Option<u64>,
) -> Mismatches {
    let mut m = Mismatches::default();
    for addr in range.step_by(step.max(1) as usize) {
        let g = got(addr);
        if g != want(addr) {
            m.count += 1;
            m.first.get_or_insert((addr, g));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn ram(base: u64, size: u64) -> impl Fn(u64) -> Option<u64> {
        move |gpa| (gpa < size).then(|| base + gpa)
    }

    #[test]
    fn an_intact_map_has_no_mismatch() {
        let m = compare(
            0..18 * MIB,
            4096,
            ram(0x4000_0000, 16 * MIB),
            ram(0x4000_0000, 16 * MIB),
        );
        assert_eq!(m, Mismatches::default());
    }

    #[test]
    fn an_overwritten_entry_and_a_mapping_past_ram_are_found() {
        let want = ram(0x4000_0000, 16 * MIB);
        let got = |gpa: u64| match gpa {
            0x20_0000..0x40_0000 => None,
            g if g >= 16 * MIB => Some(g),
            g => Some(0x4000_0000 + g),
        };
        let m = compare(0..18 * MIB, 4096, want, got);
        assert_eq!(m.count, 512 + 512);
        assert_eq!(m.first, Some((0x20_0000, None)));
    }
}
