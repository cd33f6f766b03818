//! Where the filesystem is: a GPT, an MBR, or the whole disk.
//!
//! The caller hands in the disk's first sectors (LBA 0 to 33 hold an MBR, the GPT header and a
//! 128-entry table of 128-byte entries) and the disk's size; the answer is the candidate
//! filesystem extents in the order to try them.

use alloc::vec::Vec;

pub const SECTOR: u64 = 512;
/// Sectors [`find`] needs: the MBR, the GPT header and 32 sectors of entries.
pub const HEAD_SECTORS: usize = 34;

/// A run of sectors that may hold a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub first: u64,
    pub sectors: u64,
    pub what: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No partition table: the filesystem (if any) starts at sector 0.
    WholeDisk,
    /// MBR partition `index` (0-3) of this type.
    Mbr { index: u8, kind: u8 },
    /// GPT entry `index`.
    Gpt { index: u32, linux: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than [`HEAD_SECTORS`] sectors.
    Short,
    /// A GPT header whose fields do not hold together (entries outside the disk, an entry size
    /// below 128, a CRC mismatch).
    BadGpt(&'static str),
    /// A partition that ends past the disk.
    PastEnd { index: u32 },
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Short => f.write_str("the disk is shorter than a partition table"),
            Error::BadGpt(why) => write!(f, "a damaged GPT: {why}"),
            Error::PastEnd { index } => write!(f, "partition {} ends past the disk", index + 1),
        }
    }
}

const MBR_SIGNATURE: [u8; 2] = [0x55, 0xaa];
const MBR_PROTECTIVE: u8 = 0xee;
const MBR_EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
const MBR_LINUX: u8 = 0x83;
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Linux filesystem data, 0FC63DAF-8483-4772-8E79-3D69D8477DE4, as stored.
const GPT_LINUX_FS: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];
/// Linux root (x86-64), 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709.
const GPT_LINUX_ROOT_X86_64: [u8; 16] = [
    0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09,
];

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_le_bytes(x)
}

/// IEEE CRC-32, as GPT uses it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The filesystem candidates of a disk of `sectors` whose first sectors are `head`: GPT Linux
/// partitions first (root before data), then the others; MBR Linux partitions before others
/// (extended ones are skipped: a boot filesystem sits in a primary); with no table, the whole
/// disk.
pub fn find(head: &[u8], sectors: u64) -> Result<Vec<Extent>, Error> {
    if head.len() < HEAD_SECTORS * SECTOR as usize {
        return Err(Error::Short);
    }
    let mbr = &head[..512];
    if mbr[510..512] != MBR_SIGNATURE {
        return Ok(whole(sectors));
    }
    let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + 16 * i..462 + 16 * i]).collect();
    if entries.iter().any(|e| e[4] == MBR_PROTECTIVE) && &head[512..520] == GPT_SIGNATURE {
        return gpt(head, sectors);
    }
    // A boot sector of a filesystem (FAT's has the signature too) without plausible entries.
    let plausible = entries.iter().all(|e| e[0] == 0 || e[0] == 0x80);
    if !plausible || entries.iter().all(|e| e[4] == 0) {
        return Ok(whole(sectors));
    }
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let kind = e[4];
        let (first, count) = (u64::from(le32(&e[8..12])), u64::from(le32(&e[12..16])));
        if kind == 0 || MBR_EXTENDED.contains(&kind) || count == 0 {
            continue;
        }
        if first.checked_add(count).is_none_or(|end| end > sectors) {
            return Err(Error::PastEnd { index: i as u32 });
        }
        out.push(Extent {
            first,
            sectors: count,
            what: Kind::Mbr {
                index: i as u8,
                kind,
            },
        });
    }
    out.sort_by_key(|x| {
        !matches!(
            x.what,
            Kind::Mbr {
                kind: MBR_LINUX,
                ..
            }
        )
    });
    Ok(out)
}

fn whole(sectors: u64) -> Vec<Extent> {
    alloc::vec![Extent {
        first: 0,
        sectors,
        what: Kind::WholeDisk,
    }]
}

fn gpt(head: &[u8], sectors: u64) -> Result<Vec<Extent>, Error> {
    let h = &head[512..1024];
    let size = le32(&h[12..16]) as usize;
    if !(92..=512).contains(&size) {
        return Err(Error::BadGpt("header size"));
    }
    let mut copy = [0u8; 512];
    copy[..size].copy_from_slice(&h[..size]);
    copy[16..20].fill(0);
    if crc32(&copy[..size]) != le32(&h[16..20]) {
        return Err(Error::BadGpt("header CRC"));
    }
    let table = le64(&h[72..80]);
    let count = le32(&h[80..84]) as usize;
    let entry = le32(&h[84..88]) as usize;
    if entry < 128 || !entry.is_power_of_two() || entry > 4096 {
        return Err(Error::BadGpt("entry size"));
    }
    let bytes = count
        .checked_mul(entry)
        .ok_or(Error::BadGpt("entry count"))?;
    let start = table
        .checked_mul(SECTOR)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(Error::BadGpt("entry table"))?;
    let Some(list) = start
        .checked_add(bytes)
        .and_then(|end| head.get(start..end))
    else {
        return Err(Error::BadGpt(
            "the entry table lies beyond the first 34 sectors",
        ));
    };
    if crc32(list) != le32(&h[88..92]) {
        return Err(Error::BadGpt("entry table CRC"));
    }
    let mut out = Vec::new();
    for (i, e) in list.chunks_exact(entry).enumerate() {
        let kind: [u8; 16] = e[..16].try_into().unwrap_or_default();
        if kind == [0; 16] {
            continue;
        }
        let (first, last) = (le64(&e[32..40]), le64(&e[40..48]));
        if last < first || last >= sectors {
            return Err(Error::PastEnd { index: i as u32 });
        }
        out.push(Extent {
            first,
            sectors: last - first + 1,
            what: Kind::Gpt {
                index: i as u32,
                linux: kind == GPT_LINUX_FS || kind == GPT_LINUX_ROOT_X86_64,
            },
        });
    }
    out.sort_by_key(|x| !matches!(x.what, Kind::Gpt { linux: true, .. }));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISK: u64 = 1 << 21;

    fn head() -> Vec<u8> {
        vec![0u8; HEAD_SECTORS * 512]
    }

    fn mbr_entry(h: &mut [u8], i: usize, kind: u8, first: u32, count: u32) {
        let e = &mut h[446 + 16 * i..462 + 16 * i];
        e[4] = kind;
        e[8..12].copy_from_slice(&first.to_le_bytes());
        e[12..16].copy_from_slice(&count.to_le_bytes());
        h[510] = 0x55;
        h[511] = 0xaa;
    }

    /// A GPT with `parts` (type, first, last), as `sgdisk` writes one.
    fn gpt_disk(parts: &[([u8; 16], u64, u64)]) -> Vec<u8> {
        let mut h = head();
        mbr_entry(&mut h, 0, MBR_PROTECTIVE, 1, u32::MAX);
        let mut table = vec![0u8; 128 * 128];
        for (i, (kind, first, last)) in parts.iter().enumerate() {
            let e = &mut table[128 * i..128 * (i + 1)];
            e[..16].copy_from_slice(kind);
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        h[1024..1024 + table.len()].copy_from_slice(&table);
        let g = &mut h[512..1024];
        g[..8].copy_from_slice(GPT_SIGNATURE);
        g[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        g[12..16].copy_from_slice(&92u32.to_le_bytes());
        g[24..32].copy_from_slice(&1u64.to_le_bytes());
        g[72..80].copy_from_slice(&2u64.to_le_bytes());
        g[80..84].copy_from_slice(&128u32.to_le_bytes());
        g[84..88].copy_from_slice(&128u32.to_le_bytes());
        g[88..92].copy_from_slice(&crc32(&table).to_le_bytes());
        let crc = crc32(&g[..92]);
        g[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn no_table_is_the_whole_disk() {
        assert_eq!(find(&head(), DISK).unwrap(), whole(DISK));
        // An ext4 superblock sits at byte 1024; sector 0 is zero, no signature.
        assert_eq!(find(&head(), DISK).unwrap()[0].what, Kind::WholeDisk);
        assert_eq!(find(&[0; 512], DISK), Err(Error::Short));
    }

    #[test]
    fn mbr_linux_partitions_first() {
        let mut h = head();
        mbr_entry(&mut h, 0, 0x0b, 2048, 1000);
        mbr_entry(&mut h, 1, 0x05, 4096, 1000);
        mbr_entry(&mut h, 2, MBR_LINUX, 8192, 100_000);
        let x = find(&h, DISK).unwrap();
        assert_eq!(x.len(), 2, "the extended partition is skipped");
        assert_eq!(
            x[0],
            Extent {
                first: 8192,
                sectors: 100_000,
                what: Kind::Mbr {
                    index: 2,
                    kind: 0x83
                }
            }
        );
        mbr_entry(&mut h, 3, MBR_LINUX, 8192, u32::MAX);
        assert_eq!(find(&h, DISK), Err(Error::PastEnd { index: 3 }));
    }

    #[test]
    fn gpt_linux_partitions_first_and_checked() {
        let esp = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0, 0xa0, 0xc9, 0x3e, 0xc9,
            0x3b,
        ];
        let h = gpt_disk(&[(esp, 2048, 4095), (GPT_LINUX_FS, 4096, DISK - 34)]);
        let x = find(&h, DISK).unwrap();
        assert_eq!(x.len(), 2);
        assert_eq!(
            x[0],
            Extent {
                first: 4096,
                sectors: DISK - 34 - 4096 + 1,
                what: Kind::Gpt {
                    index: 1,
                    linux: true
                }
            }
        );
        let mut bad = h.clone();
        bad[1024 + 128 + 40] ^= 1;
        assert_eq!(find(&bad, DISK), Err(Error::BadGpt("entry table CRC")));
        let mut bad = h.clone();
        bad[512 + 72] = 99;
        assert!(matches!(find(&bad, DISK), Err(Error::BadGpt(_))));
        let h = gpt_disk(&[(GPT_LINUX_ROOT_X86_64, 4096, DISK)]);
        assert_eq!(find(&h, DISK), Err(Error::PastEnd { index: 0 }));
    }

    #[test]
    fn arbitrary_heads_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..2000 {
            let mut h = if round % 2 == 0 {
                gpt_disk(&[(GPT_LINUX_FS, 4096, 8000)])
            } else {
                head()
            };
            for _ in 0..(round % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % h.len() as u64) as usize;
                h[at] = (x >> 32) as u8;
            }
            if let Ok(list) = find(&h, DISK) {
                for e in list {
                    assert!(e.first + e.sectors <= DISK);
                }
            }
        }
    }
}
