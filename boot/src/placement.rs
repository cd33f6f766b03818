//! Where the loader may put the kernel image.
//!
//! The rule the kernel relies on: the image lies above everything the loader knows is in use
//! (its own image, the multiboot block, every module), so the kernel can treat all memory below
//! its image end as taken without knowing the loader's layout.

use crate::mbinfo::{Region, RegionKind};
use core::ops::Range;

/// The lowest `align`-aligned address at or above every `used` range where `size` bytes fit in
/// one usable region, ending at or below `limit`.
pub fn place_above(
    regions: &[Region],
    used: &[Range<u64>],
    size: u64,
    align: u64,
    limit: u64,
) -> Option<u64> {
    if size == 0 || !align.is_power_of_two() {
        return None;
    }
    let floor = used.iter().map(|r| r.end).max().unwrap_or(0);
    let mut best: Option<u64> = None;
    for r in regions.iter().filter(|r| r.kind == RegionKind::Usable) {
        let start = r.start.max(floor).checked_next_multiple_of(align)?;
        let end = start.checked_add(size)?;
        if end <= r.end && end <= limit && best.is_none_or(|b| start < b) {
            best = Some(start);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable(start: u64, end: u64) -> Region {
        Region {
            start,
            end,
            kind: RegionKind::Usable,
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn goes_above_every_used_range() {
        let regions = [usable(0, 0x9_fc00), usable(MIB, 128 * MIB)];
        let used = [MIB..MIB + 300_000, 3 * MIB..7 * MIB + 5];
        assert_eq!(
            place_above(&regions, &used, 2 * MIB, 2 * MIB, 4096 * MIB),
            Some(8 * MIB)
        );
    }

    #[test]
    fn skips_a_region_too_small_and_honours_the_limit() {
        let regions = [usable(MIB, 9 * MIB), usable(16 * MIB, 64 * MIB)];
        let used = [MIB..5 * MIB, 0..MIB];
        assert_eq!(
            place_above(&regions, &used, 6 * MIB, 2 * MIB, 4096 * MIB),
            Some(16 * MIB)
        );
        assert_eq!(
            place_above(&regions, &used, 6 * MIB, 2 * MIB, 20 * MIB),
            None
        );
    }

    #[test]
    fn reserved_regions_and_bad_requests_give_nothing() {
        let regions = [Region {
            start: MIB,
            end: 64 * MIB,
            kind: RegionKind::Reserved,
        }];
        assert_eq!(place_above(&regions, &[], MIB, 4096, u64::MAX), None);
        assert_eq!(
            place_above(&[usable(0, 64 * MIB)], &[], 0, 4096, u64::MAX),
            None
        );
        assert_eq!(
            place_above(&[usable(0, 64 * MIB)], &[], MIB, 3, u64::MAX),
            None
        );
        assert_eq!(
            place_above(
                &[usable(0, u64::MAX)],
                &[u64::MAX - 5..u64::MAX, 0..1],
                MIB,
                4096,
                u64::MAX
            ),
            None
        );
    }
}
