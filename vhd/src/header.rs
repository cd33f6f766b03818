//! The 1024-byte dynamic disk header and its parent locator entries.

use crate::be::{checksum, put_u32, put_u64, u32_at, u64_at};

pub const HEADER_SIZE: usize = 1024;
pub(crate) const COOKIE: &[u8; 8] = b"cxsparse";
pub(crate) const VERSION: u32 = 0x0001_0000;
const CHECKSUM_AT: usize = 36;
pub const LOCATOR_COUNT: usize = 8;
const LOCATORS_AT: usize = 576;
const NAME_AT: usize = 64;
pub(crate) const NAME_LEN: usize = 512;

/// Platform codes of the parent locators this library understands.
pub mod platform {
    /// Absolute Windows path, UTF-16LE.
    pub const W2KU: u32 = u32::from_be_bytes(*b"W2ku");
    /// Path relative to the child, UTF-16LE.
    pub const W2RU: u32 = u32::from_be_bytes(*b"W2ru");
    /// Deprecated ANSI absolute path.
    pub const WI2K: u32 = u32::from_be_bytes(*b"Wi2k");
    /// Deprecated ANSI relative path.
    pub const WI2R: u32 = u32::from_be_bytes(*b"Wi2r");
    /// Mac OS alias blob (opaque).
    pub const MAC: u32 = u32::from_be_bytes(*b"Mac ");
    /// UTF-8 file URL.
    pub const MACX: u32 = u32::from_be_bytes(*b"MacX");

    pub fn is_known(code: u32) -> bool {
        matches!(code, W2KU | W2RU | WI2K | WI2R | MAC | MACX)
    }
}

/// One parent locator slot, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Locator {
    pub code: u32,
    /// Sectors when below 512 (the spec), bytes when a multiple of 512 (what Windows writes).
    pub data_space: u32,
    pub data_length: u32,
    pub data_offset: u64,
}

impl Locator {
    /// Bytes reserved for the locator data, by the blktap interpretation of `data_space`.
    pub fn space_bytes(&self) -> Option<u64> {
        let s = u64::from(self.data_space);
        if s < 512 {
            Some(s * 512)
        } else if s.is_multiple_of(512) {
            Some(s)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynHeader {
    pub data_offset: u64,
    pub table_offset: u64,
    pub version: u32,
    pub max_table_entries: u32,
    pub block_size: u32,
    pub parent_uuid: [u8; 16],
    pub parent_timestamp: u32,
    /// UTF-16BE, NUL padded.
    pub parent_name: [u8; NAME_LEN],
    pub locators: [Locator; LOCATOR_COUNT],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFault {
    Cookie,
    Checksum { stored: u32, computed: u32 },
}

impl DynHeader {
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<DynHeader, HeaderFault> {
        if &b[..8] != COOKIE {
            return Err(HeaderFault::Cookie);
        }
        let stored = u32_at(b, CHECKSUM_AT);
        let computed = checksum(b, CHECKSUM_AT);
        if stored != computed {
            return Err(HeaderFault::Checksum { stored, computed });
        }
        let mut parent_uuid = [0u8; 16];
        parent_uuid.copy_from_slice(&b[40..56]);
        let mut parent_name = [0u8; NAME_LEN];
        parent_name.copy_from_slice(&b[NAME_AT..NAME_AT + NAME_LEN]);
        let mut locators = [Locator::default(); LOCATOR_COUNT];
        for (i, l) in locators.iter_mut().enumerate() {
            let at = LOCATORS_AT + 24 * i;
            *l = Locator {
                code: u32_at(b, at),
                data_space: u32_at(b, at + 4),
                data_length: u32_at(b, at + 8),
                data_offset: u64_at(b, at + 16),
            };
        }
        Ok(DynHeader {
            data_offset: u64_at(b, 8),
            table_offset: u64_at(b, 16),
            version: u32_at(b, 24),
            max_table_entries: u32_at(b, 28),
            block_size: u32_at(b, 32),
            parent_uuid,
            parent_timestamp: u32_at(b, 56),
            parent_name,
            locators,
        })
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..8].copy_from_slice(COOKIE);
        put_u64(&mut b, 8, self.data_offset);
        put_u64(&mut b, 16, self.table_offset);
        put_u32(&mut b, 24, self.version);
        put_u32(&mut b, 28, self.max_table_entries);
        put_u32(&mut b, 32, self.block_size);
        b[40..56].copy_from_slice(&self.parent_uuid);
        put_u32(&mut b, 56, self.parent_timestamp);
        b[NAME_AT..NAME_AT + NAME_LEN].copy_from_slice(&self.parent_name);
        for (i, l) in self.locators.iter().enumerate() {
            let at = LOCATORS_AT + 24 * i;
            put_u32(&mut b, at, l.code);
            put_u32(&mut b, at + 4, l.data_space);
            put_u32(&mut b, at + 8, l.data_length);
            put_u64(&mut b, at + 16, l.data_offset);
        }
        let sum = checksum(&b, CHECKSUM_AT);
        put_u32(&mut b, CHECKSUM_AT, sum);
        b
    }

    /// Bytes of the sector bitmap in front of each block (a whole number of sectors).
    pub fn bitmap_size(&self) -> u64 {
        bitmap_size(self.block_size)
    }
}

pub(crate) fn bitmap_size(block_size: u32) -> u64 {
    (u64::from(block_size) / 512)
        .div_ceil(8)
        .next_multiple_of(512)
}

/// Decodes UTF-16 code units (`big_endian` picks the byte order) into UTF-8 in `out`, stopping at
/// the first NUL. Returns the UTF-8 length, or `None` for invalid text or a too-small `out`.
pub fn utf16_to_utf8(src: &[u8], big_endian: bool, out: &mut [u8]) -> Option<usize> {
    if !src.len().is_multiple_of(2) {
        return None;
    }
    let units = src.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    let mut n = 0;
    for ch in char::decode_utf16(units.take_while(|&u| u != 0)) {
        let ch = ch.ok()?;
        let len = ch.len_utf8();
        if n + len > out.len() {
            return None;
        }
        ch.encode_utf8(&mut out[n..n + len]);
        n += len;
    }
    Some(n)
}

/// Encodes `s` as UTF-16 into `out`; returns the byte length or `None` if it does not fit.
pub fn utf8_to_utf16(s: &str, big_endian: bool, out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    for u in s.encode_utf16() {
        let b = if big_endian {
            u.to_be_bytes()
        } else {
            u.to_le_bytes()
        };
        out.get_mut(n..n + 2)?.copy_from_slice(&b);
        n += 2;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_header_checksum() {
        let h = DynHeader {
            data_offset: u64::MAX,
            table_offset: 0x600,
            version: VERSION,
            max_table_entries: 1,
            block_size: 0x20_0000,
            parent_uuid: [0; 16],
            parent_timestamp: 0,
            parent_name: [0; NAME_LEN],
            locators: [Locator::default(); LOCATOR_COUNT],
        };
        let b = h.encode();
        // QEMU 7.2's checksum for the 1M dynamic header in the notes.
        assert_eq!(&b[36..40], &[0xff, 0xff, 0xf4, 0x76]);
        assert_eq!(DynHeader::parse(&b), Ok(h));
        assert_eq!(bitmap_size(0x20_0000), 512);
        assert_eq!(bitmap_size(512), 512);
        assert_eq!(bitmap_size(256 << 20), 65536);
    }

    #[test]
    fn utf16_both_orders() {
        let mut w = [0u8; 64];
        let n = utf8_to_utf16(".\\pärent.vhd", false, &mut w).unwrap();
        let mut o = [0u8; 64];
        let m = utf16_to_utf8(&w[..n], false, &mut o).unwrap();
        assert_eq!(&o[..m], ".\\pärent.vhd".as_bytes());
        assert_eq!(
            utf16_to_utf8(&[0x00, 0xd8, 0x41, 0x00], false, &mut o),
            None
        );
        assert_eq!(utf16_to_utf8(&[0x00], false, &mut o), None);
    }
}
