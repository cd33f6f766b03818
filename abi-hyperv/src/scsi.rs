//! TEMPORARY stand-in so the tree builds; the SCSI helper replaces this whole file with the real target.
pub const BLOCK: u32 = 512;
pub const MAX_TRANSFER_BLOCKS: u32 = 512;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}
impl Sense {
    pub const ILLEGAL_REQUEST_OPCODE: Sense = Sense {
        key: 5,
        asc: 0x20,
        ascq: 0,
    };
    pub const INVALID_FIELD_IN_CDB: Sense = Sense {
        key: 5,
        asc: 0x24,
        ascq: 0,
    };
    pub const LBA_OUT_OF_RANGE: Sense = Sense {
        key: 5,
        asc: 0x21,
        ascq: 0,
    };
    pub const WRITE_PROTECTED: Sense = Sense {
        key: 7,
        asc: 0x27,
        ascq: 0,
    };
    pub const MEDIUM_ERROR: Sense = Sense {
        key: 3,
        asc: 0x11,
        ascq: 0,
    };
    pub const WRITE_ERROR: Sense = Sense {
        key: 3,
        asc: 0x0c,
        ascq: 0,
    };
    pub const NO_SPACE: Sense = Sense {
        key: 7,
        asc: 0x27,
        ascq: 7,
    };
    pub fn fixed(&self) -> [u8; 18] {
        let mut b = [0u8; 18];
        b[0] = 0x70;
        b[2] = self.key;
        b[7] = 10;
        b[12] = self.asc;
        b[13] = self.ascq;
        b
    }
}
#[allow(clippy::large_enum_variant)]
pub enum Command {
    Good,
    DataIn(heapless::Vec<u8, 512>),
    Read { lba: u64, blocks: u32 },
    Write { lba: u64, blocks: u32 },
    Flush,
    Check(Sense),
}
pub fn decode(cdb: &[u8], lun: Option<&virt::block::DiskInfo>) -> Command {
    let Some(d) = lun else {
        let mut v = heapless::Vec::new();
        if cdb.first() == Some(&0x12) {
            let _ = v.push(0x7f);
            for _ in 0..35 {
                let _ = v.push(0);
            }
            return Command::DataIn(v);
        }
        return Command::Check(Sense::ILLEGAL_REQUEST_OPCODE);
    };
    match cdb.first() {
        Some(0x00) => Command::Good,
        Some(0x12) => {
            let mut v = heapless::Vec::new();
            for _ in 0..(cdb.get(4).copied().unwrap_or(0) as usize).min(36) {
                let _ = v.push(0);
            }
            if v.len() > 8 {
                v[8] = b'J';
            }
            Command::DataIn(v)
        }
        Some(0x28) | Some(0x2a) if cdb.len() >= 10 => {
            let lba = u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]) as u64;
            let blocks = u16::from_be_bytes([cdb[7], cdb[8]]) as u32;
            if blocks > MAX_TRANSFER_BLOCKS {
                return Command::Check(Sense::INVALID_FIELD_IN_CDB);
            }
            if lba + blocks as u64 > d.sectors {
                return Command::Check(Sense::LBA_OUT_OF_RANGE);
            }
            if cdb[0] == 0x2a {
                if d.read_only {
                    return Command::Check(Sense::WRITE_PROTECTED);
                }
                Command::Write { lba, blocks }
            } else {
                Command::Read { lba, blocks }
            }
        }
        Some(0x35) => Command::Flush,
        _ => Command::Check(Sense::ILLEGAL_REQUEST_OPCODE),
    }
}
