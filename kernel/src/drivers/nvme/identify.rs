//! Decoding the Identify data structures the driver reads (each one 4 KiB page).

/// What the driver needs from Identify Controller (CNS 01h).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    pub serial: heapless::String<20>,
    pub model: heapless::String<40>,
    /// Maximum Data Transfer Size as a power of two of the minimum page size; 0: no limit.
    pub mdts: u8,
    /// Number of Namespaces: the largest namespace ID.
    pub nn: u32,
    /// A volatile write cache is present (so Flush matters).
    pub vwc: bool,
}

impl Controller {
    pub fn parse(page: &[u8; 4096]) -> Self {
        Controller {
            serial: ascii(&page[4..24]),
            model: ascii(&page[24..64]),
            mdts: page[77],
            nn: le32(page, 516),
            vwc: page[525] & 1 == 1,
        }
    }

    /// The largest transfer in bytes, given the controller's minimum page size.
    pub fn max_transfer(&self, min_page: u64) -> Option<u64> {
        (self.mdts != 0).then(|| min_page << self.mdts.min(20))
    }
}

/// What the driver needs from Identify Namespace (CNS 00h, NVM command set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceData {
    /// Namespace Size in logical blocks.
    pub nsze: u64,
    /// Logical block size in bytes of the format in use.
    pub lba_size: u32,
    /// Metadata bytes per block of that format (the driver wants none).
    pub metadata: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceDataError {
    /// The format index in use is beyond the formats listed.
    BadFormatIndex(u8),
    /// LBADS outside 512 B … 2 MiB (0 means the format is not available).
    BadBlockSize(u8),
}

impl NamespaceData {
    pub fn parse(page: &[u8; 4096]) -> Result<Self, NamespaceDataError> {
        let nsze = le64(page, 0);
        let nlbaf = page[25]; // 0-based
        let flbas = page[26];
        // Bits 3:0 index the format; bits 6:5 extend it when more than 16 formats exist.
        let index = (flbas & 0xf) | (((flbas >> 5) & 0x3) << 4);
        if index > nlbaf || index >= 64 {
            return Err(NamespaceDataError::BadFormatIndex(index));
        }
        let lbaf = le32(page, 128 + 4 * usize::from(index));
        let lbads = (lbaf >> 16) as u8;
        if !(9..=21).contains(&lbads) {
            return Err(NamespaceDataError::BadBlockSize(lbads));
        }
        Ok(NamespaceData {
            nsze,
            lba_size: 1 << lbads,
            metadata: lbaf as u16,
        })
    }
}

/// The active namespace list (CNS 02h): ascending IDs, ended by 0 or the page's end.
pub fn active_namespaces(page: &[u8; 4096]) -> impl Iterator<Item = u32> + '_ {
    page.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&id| id != 0)
}

fn le32(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn le64(p: &[u8], at: usize) -> u64 {
    u64::from(le32(p, at)) | (u64::from(le32(p, at + 4)) << 32)
}

/// Space-padded ASCII fields, trimmed; anything else becomes '?'.
fn ascii<const N: usize>(bytes: &[u8]) -> heapless::String<N> {
    let mut s = heapless::String::new();
    for &b in bytes {
        let _ = s.push(if b.is_ascii_graphic() || b == b' ' {
            b as char
        } else {
            '?'
        });
    }
    let trimmed = s.trim_end().len();
    s.truncate(trimmed);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_identify_controller() {
        let mut p = [0u8; 4096];
        p[4..24].copy_from_slice(b"janus               ");
        p[24..64].copy_from_slice(b"QEMU NVMe Ctrl                          ");
        p[77] = 7;
        p[516..520].copy_from_slice(&256u32.to_le_bytes());
        p[525] = 1;
        let c = Controller::parse(&p);
        assert_eq!(c.serial.as_str(), "janus");
        assert_eq!(c.model.as_str(), "QEMU NVMe Ctrl");
        assert_eq!(c.nn, 256);
        assert!(c.vwc);
        assert_eq!(c.max_transfer(4096), Some(512 * 1024));
        p[77] = 0;
        assert_eq!(Controller::parse(&p).max_transfer(4096), None);
    }

    #[test]
    fn parses_identify_namespace() {
        let mut p = [0u8; 4096];
        p[0..8].copy_from_slice(&16384u64.to_le_bytes());
        p[25] = 1; // two formats
        p[26] = 1; // the second in use
        p[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
        p[132..136].copy_from_slice(&(12u32 << 16).to_le_bytes());
        let ns = NamespaceData::parse(&p).unwrap();
        assert_eq!(
            ns,
            NamespaceData {
                nsze: 16384,
                lba_size: 4096,
                metadata: 0
            }
        );
        p[26] = 0;
        assert_eq!(NamespaceData::parse(&p).unwrap().lba_size, 512);
        p[128..132].copy_from_slice(&((9u32 << 16) | 8).to_le_bytes());
        assert_eq!(NamespaceData::parse(&p).unwrap().metadata, 8);
        p[26] = 2;
        assert_eq!(
            NamespaceData::parse(&p),
            Err(NamespaceDataError::BadFormatIndex(2))
        );
        p[26] = 0x20; // the extended index bits: format 16
        assert_eq!(
            NamespaceData::parse(&p),
            Err(NamespaceDataError::BadFormatIndex(16))
        );
        p[26] = 1;
        p[132..136].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            NamespaceData::parse(&p),
            Err(NamespaceDataError::BadBlockSize(0))
        );
    }

    #[test]
    fn lists_active_namespaces() {
        let mut p = [0u8; 4096];
        p[0..4].copy_from_slice(&1u32.to_le_bytes());
        p[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(active_namespaces(&p).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(active_namespaces(&[0; 4096]).count(), 0);
        let full = [0x11u8; 4096];
        assert_eq!(active_namespaces(&full).count(), 1024);
    }
}
