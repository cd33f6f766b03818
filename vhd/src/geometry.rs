//! CHS geometry and the rules that turn a footer (or a size request) into a disk size.

use crate::footer::Footer;

pub const SECTOR: u64 = 512;
/// The largest disk QEMU (and Hyper-V) accept: 0xff000000 sectors, 2040 GiB.
pub const MAX_SECTORS: u64 = 0xff00_0000;
pub const MAX_SIZE: u64 = MAX_SECTORS * SECTOR;
/// The geometry that means "CHS cannot describe this disk; use `current_size`".
pub const MAX_GEOMETRY: Geometry = Geometry {
    cylinders: 65535,
    heads: 16,
    sectors: 255,
};
const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// Cylinders, heads, sectors per track, as the footer stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
}

impl Geometry {
    pub fn total_sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }

    /// The spec's CHS algorithm. The result never describes more sectors than asked for.
    pub fn from_sectors(total: u64) -> Geometry {
        let ts = total.min(MAX_CHS_SECTORS);
        let (spt, heads, cth);
        if ts >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cth = ts / spt;
        } else {
            let mut s = 17;
            let mut c = ts / s;
            let mut h = c.div_ceil(1024).max(4);
            if c >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                c = ts / s;
            }
            if c >= h * 1024 {
                s = 63;
                h = 16;
                c = ts / s;
            }
            spt = s;
            heads = h;
            cth = c;
        }
        // `ts` is capped above, so every quotient fits its field.
        Geometry {
            cylinders: u16::try_from(cth / heads).unwrap_or(u16::MAX),
            heads: u8::try_from(heads).unwrap_or(16),
            sectors: u8::try_from(spt).unwrap_or(255),
        }
    }
}

/// Which footer field gives the disk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizeRule {
    /// QEMU 10.0's rule: CHS for images made by Virtual PC (`vpc `) and old QEMU (`qemu`),
    /// `current_size` for everyone else and whenever the geometry is the maximum.
    #[default]
    Auto,
    /// Always cylinders × heads × sectors.
    Chs,
    /// Always `current_size`.
    CurrentSize,
}

impl SizeRule {
    pub fn disk_size(self, f: &Footer) -> u64 {
        let chs = f.geometry.total_sectors() * SECTOR;
        match self {
            SizeRule::Chs => chs,
            SizeRule::CurrentSize => f.current_size,
            SizeRule::Auto => {
                let chs_producer = matches!(&f.creator_app, b"vpc " | b"qemu");
                if chs_producer && f.geometry != MAX_GEOMETRY {
                    chs
                } else {
                    f.current_size
                }
            }
        }
    }
}

/// The size and geometry QEMU gives a new image of `request` bytes.
///
/// Without `force_size` the size is rounded up until a CHS geometry covers it, and becomes
/// exactly C×H×S (what Virtual PC would see). With it, the geometry is the maximum and the
/// size is the request rounded up to a sector. Sizes CHS cannot reach fall back to the second
/// form either way. Returns `None` above 2040 GiB.
pub fn create_size(request: u64, force_size: bool) -> Option<(u64, Geometry)> {
    let sectors = request.checked_add(SECTOR - 1)? / SECTOR;
    let geometry = if force_size {
        MAX_GEOMETRY
    } else {
        let want = sectors.min(MAX_CHS_SECTORS);
        let mut g = Geometry {
            cylinders: 0,
            heads: 0,
            sectors: 0,
        };
        let mut i = 0;
        while want > g.total_sectors() {
            g = Geometry::from_sectors(want + i);
            i += 1;
        }
        g
    };
    let total = if geometry.total_sectors() == MAX_CHS_SECTORS {
        sectors
    } else {
        geometry.total_sectors()
    };
    if total > MAX_SECTORS || total == 0 {
        return None;
    }
    Some((total * SECTOR, geometry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(c: u16, h: u8, s: u8) -> Geometry {
        Geometry {
            cylinders: c,
            heads: h,
            sectors: s,
        }
    }

    #[test]
    fn qemu_create_sizes() {
        // Values measured with qemu-img 7.2 (notes, section 2.1).
        assert_eq!(
            create_size(1_000_000, false),
            Some((1_009_664, g(29, 4, 17)))
        );
        assert_eq!(create_size(1 << 20, false), Some((1_079_296, g(31, 4, 17))));
        assert_eq!(
            create_size(10 << 20, false),
            Some((10_514_432, g(302, 4, 17)))
        );
        assert_eq!(
            create_size(100 << 20, false),
            Some((104_865_792, g(1004, 12, 17)))
        );
        assert_eq!(
            create_size(1 << 30, false),
            Some((1_073_995_776, g(2081, 16, 63)))
        );
        assert_eq!(
            create_size(127 << 30, false),
            Some((136_365_219_840, g(65279, 16, 255)))
        );
        assert_eq!(
            create_size(1_000_000, true),
            Some((1_000_448, MAX_GEOMETRY))
        );
        assert_eq!(
            create_size(2040 << 30, true),
            Some((2_190_433_320_960, MAX_GEOMETRY))
        );
        assert_eq!(create_size((2040 << 30) + 512, true), None);
        assert_eq!(create_size(0, true), None);
    }
}
