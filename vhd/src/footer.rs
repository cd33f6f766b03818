//! The 512-byte hard disk footer (at EOF, and copied at offset 0 in sparse images).

use crate::be::{checksum, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};
use crate::geometry::Geometry;

pub const FOOTER_SIZE: usize = 512;
pub(crate) const COOKIE: &[u8; 8] = b"conectix";
pub(crate) const VERSION: u32 = 0x0001_0000;
/// Bit 1 of `features` is reserved and always set by conforming writers.
pub(crate) const FEATURES_RESERVED: u32 = 0x2;
const CHECKSUM_AT: usize = 64;

/// How the image stores its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    Fixed,
    Dynamic,
    Differencing,
}

impl DiskType {
    pub fn code(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }

    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            2 => Some(DiskType::Fixed),
            3 => Some(DiskType::Dynamic),
            4 => Some(DiskType::Differencing),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// A decoded footer. Fields are kept raw (the disk type as its code) so that a footer can be
/// inspected and re-encoded even when it would be refused on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub features: u32,
    pub version: u32,
    pub data_offset: u64,
    /// Seconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: u32,
    pub creator_app: [u8; 4],
    pub creator_version: u32,
    pub creator_os: u32,
    pub original_size: u64,
    pub current_size: u64,
    pub geometry: Geometry,
    pub disk_type: u32,
    pub uuid: [u8; 16],
    pub saved_state: u8,
    /// Byte 85, which blktap uses as a "hidden" flag; preserved, otherwise ignored.
    pub hidden: u8,
}

/// Why 512 bytes are not a footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterFault {
    Cookie,
    Checksum { stored: u32, computed: u32 },
}

impl Footer {
    /// Decodes a footer; `b` may be 511 bytes (pre-2004 Virtual PC wrote one byte short).
    pub fn parse(b: &[u8]) -> Result<Footer, FooterFault> {
        let mut buf = [0u8; FOOTER_SIZE];
        let n = b.len().min(FOOTER_SIZE);
        buf[..n].copy_from_slice(&b[..n]);
        if &buf[..8] != COOKIE {
            return Err(FooterFault::Cookie);
        }
        let stored = u32_at(&buf, CHECKSUM_AT);
        let computed = checksum(&buf, CHECKSUM_AT);
        if stored != computed {
            return Err(FooterFault::Checksum { stored, computed });
        }
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(&buf[28..32]);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&buf[68..84]);
        Ok(Footer {
            features: u32_at(&buf, 8),
            version: u32_at(&buf, 12),
            data_offset: u64_at(&buf, 16),
            timestamp: u32_at(&buf, 24),
            creator_app,
            creator_version: u32_at(&buf, 32),
            creator_os: u32_at(&buf, 36),
            original_size: u64_at(&buf, 40),
            current_size: u64_at(&buf, 48),
            geometry: Geometry {
                cylinders: u16_at(&buf, 56),
                heads: buf[58],
                sectors: buf[59],
            },
            disk_type: u32_at(&buf, 60),
            uuid,
            saved_state: buf[84],
            hidden: buf[85],
        })
    }

    /// Encodes the footer with a fresh checksum.
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[..8].copy_from_slice(COOKIE);
        put_u32(&mut b, 8, self.features);
        put_u32(&mut b, 12, self.version);
        put_u64(&mut b, 16, self.data_offset);
        put_u32(&mut b, 24, self.timestamp);
        b[28..32].copy_from_slice(&self.creator_app);
        put_u32(&mut b, 32, self.creator_version);
        put_u32(&mut b, 36, self.creator_os);
        put_u64(&mut b, 40, self.original_size);
        put_u64(&mut b, 48, self.current_size);
        put_u16(&mut b, 56, self.geometry.cylinders);
        b[58] = self.geometry.heads;
        b[59] = self.geometry.sectors;
        put_u32(&mut b, 60, self.disk_type);
        b[68..84].copy_from_slice(&self.uuid);
        b[84] = self.saved_state;
        b[85] = self.hidden;
        let sum = checksum(&b, CHECKSUM_AT);
        put_u32(&mut b, CHECKSUM_AT, sum);
        b
    }

    pub fn kind(&self) -> Option<DiskType> {
        DiskType::from_code(self.disk_type)
    }

    /// The fields that identify a disk; the two footer copies must agree on them.
    pub(crate) fn same_disk(&self, other: &Footer) -> bool {
        self.disk_type == other.disk_type
            && self.current_size == other.current_size
            && self.uuid == other.uuid
            && self.data_offset == other.data_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_checksum_detects_flip() {
        let f = Footer {
            features: 2,
            version: VERSION,
            data_offset: 512,
            timestamp: 0x329a_5d3b,
            creator_app: *b"qemu",
            creator_version: 0x0005_0003,
            creator_os: 0x5769_326b,
            original_size: 0x10_7800,
            current_size: 0x10_7800,
            geometry: Geometry {
                cylinders: 0x1f,
                heads: 4,
                sectors: 17,
            },
            disk_type: 3,
            uuid: [
                0x42, 0x9c, 0x16, 0xe6, 0x14, 0x50, 0x4e, 0x41, 0xa6, 0x82, 0xfd, 0x1e, 0x3d, 0xa4,
                0x6f, 0x94,
            ],
            saved_state: 0,
            hidden: 0,
        };
        let b = f.encode();
        // The checksum QEMU 7.2 wrote for exactly this footer.
        assert_eq!(&b[64..68], &[0xff, 0xff, 0xef, 0xe1]);
        assert_eq!(Footer::parse(&b), Ok(f));
        let mut bad = b;
        bad[100] ^= 1;
        assert!(matches!(
            Footer::parse(&bad),
            Err(FooterFault::Checksum { .. })
        ));
        bad[0] = b'x';
        assert_eq!(Footer::parse(&bad), Err(FooterFault::Cookie));
    }
}
