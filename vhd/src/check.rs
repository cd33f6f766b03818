//! Consistency checking beyond what open enforces: problems an image can carry and still be
//! opened (damage), and harmless leftovers (notes), such as the space a crash leaks.

use crate::bat::UNALLOCATED;
use crate::bitmap;
use crate::footer::{DiskType, FEATURES_RESERVED};
use crate::io::{self, Result, Storage};
use crate::layer::Layer;
use alloc::vec::Vec;
use core::fmt;

/// One thing `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The end footer is unreadable; the copy at offset 0 was used. Rewritten on the next
    /// allocation.
    EndFooterInvalid,
    /// The copy of the footer at offset 0 is unreadable.
    HeadFooterInvalid,
    /// Bytes before the end footer that nothing references (left by a
    /// crash between allocating a block and flushing its table entry).
    Leaked { bytes: u64 },
    /// A block holds non-zero data in sectors its bitmap marks absent (an unflushed write
    /// interrupted before its bitmap update; readers ignore that data).
    StaleSectors { block: usize, sectors: u64 },
    /// The reserved feature bit is clear (some old tools; tolerated).
    FeaturesReservedClear,
}

impl Finding {
    /// Whether the finding means the image needs repair, as opposed to wasted space.
    pub fn is_damage(&self) -> bool {
        matches!(self, Finding::EndFooterInvalid | Finding::HeadFooterInvalid)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::EndFooterInvalid => {
                write!(f, "end footer is invalid; the copy at offset 0 was used")
            }
            Finding::HeadFooterInvalid => write!(f, "footer copy at offset 0 is invalid"),
            Finding::Leaked { bytes } => write!(f, "{bytes} bytes unreferenced before the footer"),
            Finding::StaleSectors { block, sectors } => write!(
                f,
                "block {block}: {sectors} sectors hold data their bitmap marks absent"
            ),
            Finding::FeaturesReservedClear => write!(f, "reserved feature bit 1 is clear"),
        }
    }
}

/// The result of [`Layer::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    pub allocated_blocks: usize,
    pub total_blocks: usize,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        !self.findings.iter().any(Finding::is_damage)
    }
}

impl<S: Storage> Layer<S> {
    /// Examines this image file. Reads every bitmap that is not all ones and the absent
    /// sectors behind it, so it costs up to a full read of the image.
    pub fn check(&mut self) -> Result<CheckReport, S> {
        let mut r = CheckReport::default();
        if self.footer.features & FEATURES_RESERVED == 0 {
            r.findings.push(Finding::FeaturesReservedClear);
        }
        if self.end_footer_bad {
            r.findings.push(Finding::EndFooterInvalid);
        }
        if self.head_footer_bad {
            r.findings.push(Finding::HeadFooterInvalid);
        }
        let Some(sp) = self.sparse.as_ref() else {
            return Ok(r);
        };
        // Everything before the allocation point is footer copy, header, BAT, locators or
        // a referenced block; the rest is leaked (validation ruled out overlaps).
        let span = sp.bitmap_size + sp.block_size;
        let blocks = sp
            .bat
            .entries()
            .iter()
            .filter(|&&e| e != UNALLOCATED)
            .count() as u64;
        let used = blocks * span + sp.metadata.iter().map(|m| m.1 - m.0).sum::<u64>();
        if sp.alloc_at > used {
            r.findings.push(Finding::Leaked {
                bytes: sp.alloc_at - used,
            });
        }
        r.total_blocks = sp.bat.len();
        r.allocated_blocks = self.allocated_blocks();
        let bitmap_size = sp.bitmap_size;
        let sectors_per_block = sp.block_size / 512;
        let entries: Vec<(usize, u64)> = sp
            .bat
            .entries()
            .iter()
            .enumerate()
            .filter(|(_, e)| **e != UNALLOCATED)
            .map(|(b, &e)| (b, u64::from(e) * 512))
            .collect();
        let mut sector = [0u8; 512];
        for (blk, at) in entries {
            self.load_bitmap(blk, at)?;
            let sp = self.sparse.as_ref().ok_or(crate::Error::NotDifferencing)?;
            if sp.full.get(blk) {
                continue;
            }
            let absent: Vec<u64> = (0..sectors_per_block)
                .filter(|&s| !bitmap::test(&sp.cache.buf, s))
                .collect();
            let mut stale = 0;
            for s in absent {
                io::read_at(&mut self.io, at + bitmap_size + s * 512, &mut sector)?;
                if sector.iter().any(|&b| b != 0) {
                    stale += 1;
                }
            }
            if stale > 0 {
                r.findings.push(Finding::StaleSectors {
                    block: blk,
                    sectors: stale,
                });
            }
        }
        if self.kind == DiskType::Fixed {
            r.total_blocks = 0;
        }
        Ok(r)
    }
}
