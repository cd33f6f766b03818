//! A VHD inside a container larger than itself: an NVMe namespace or a GPT partition, fixed
//! in size, holding an image that grows as blocks are allocated. Only the image's own bytes
//! count: its end is where its last footer ends, not where the container ends, and what
//! follows is room to grow.
//!
//! A sparse image grows by one block at a time, appended where its end footer was (see the
//! write order in the crate documentation): the footer moves one stride on, then the block's
//! bitmap and data are written over the old footer. So from the end of the last block the
//! block table knows, the container holds zero or more blocks (allocated after the last flush
//! of the table, or before it), each starting with a non-zero bitmap sector, then the footer;
//! after a power cut between a footer's write and its block's bitmap, a second footer one
//! stride further. Past the end there are zeros: the room to grow was never written.

use crate::footer::{FOOTER_SIZE, Footer};
use crate::header::{DynHeader, HEADER_SIZE, bitmap_size};
use crate::io::{self, Result};
use crate::layer::{MAX_BLOCK_SIZE, MAX_TABLE_ENTRIES};
use crate::{DiskType, Error, Storage};

/// How far past the last known block a footer is looked for, for images whose tools align
/// the first block (or the footer) beyond the end of the block table.
const PADDING_SCAN: u64 = 4 << 20;
const SECTOR: u64 = 512;

fn footer_at<S: Storage>(io: &mut S, at: u64, container: u64) -> Result<Option<Footer>, S> {
    if at + SECTOR > container {
        return Ok(None);
    }
    let mut b = [0u8; FOOTER_SIZE];
    io::read_at(io, at, &mut b)?;
    Ok(Footer::parse(&b).ok())
}

fn zero_at<S: Storage>(io: &mut S, at: u64, container: u64) -> Result<bool, S> {
    if at + SECTOR > container {
        return Ok(true);
    }
    let mut b = [0u8; SECTOR as usize];
    io::read_at(io, at, &mut b)?;
    Ok(b.iter().all(|&x| x == 0))
}

/// The sparse layout the head footer copy and header describe.
struct Layout {
    stride: u64,
    /// Where the first byte after the last block the table references (or after the table).
    blocks_end: u64,
    unallocated: u64,
}

fn layout<S: Storage>(io: &mut S, container: u64) -> Result<Layout, S> {
    if container < SECTOR {
        return Err(Error::Truncated {
            needed: SECTOR,
            len: container,
        });
    }
    let mut b = [0u8; FOOTER_SIZE];
    io::read_at(io, 0, &mut b)?;
    let head = Footer::parse(&b).map_err(crate::layer::footer_error)?;
    if !matches!(
        head.kind(),
        Some(DiskType::Dynamic | DiskType::Differencing)
    ) {
        return Err(Error::Truncated {
            needed: container + SECTOR,
            len: container,
        });
    }
    let dh = head.data_offset;
    if dh
        .checked_add(HEADER_SIZE as u64)
        .is_none_or(|e| e > container)
    {
        return Err(Error::BadDataOffset(dh));
    }
    let mut h = [0u8; HEADER_SIZE];
    io::read_at(io, dh, &mut h)?;
    let header = DynHeader::parse(&h).map_err(|_| Error::BadHeaderCookie)?;
    let block = u64::from(header.block_size);
    if block == 0 || block > u64::from(MAX_BLOCK_SIZE) || !block.is_multiple_of(SECTOR) {
        return Err(Error::BadDataOffset(dh));
    }
    let entries = header.max_table_entries.min(MAX_TABLE_ENTRIES);
    let table_end = header.table_offset + u64::from(entries) * 4;
    let stride = bitmap_size(header.block_size) + block;
    let mut blocks_end = table_end.next_multiple_of(SECTOR);
    // A differencing image keeps its parent locators' data after the table.
    for l in header
        .locators
        .iter()
        .filter(|l| l.code != 0 && l.data_offset != 0)
    {
        let space = l.space_bytes().unwrap_or(0).max(u64::from(l.data_length));
        blocks_end = blocks_end.max((l.data_offset + space).next_multiple_of(SECTOR));
    }
    let mut allocated = 0u64;
    let mut chunk = [0u8; SECTOR as usize];
    let mut i = 0u32;
    while i < entries {
        let at = header.table_offset + u64::from(i) * 4;
        let n = (((entries - i) as usize) * 4).min(chunk.len());
        io::read_at(io, at, &mut chunk[..n])?;
        for e in chunk[..n].chunks_exact(4) {
            let sector = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            if sector != u32::MAX {
                allocated += 1;
                blocks_end = blocks_end.max(u64::from(sector) * SECTOR + stride);
            }
        }
        i += (n / 4) as u32;
    }
    Ok(Layout {
        stride,
        blocks_end,
        unallocated: u64::from(entries).saturating_sub(allocated),
    })
}

/// The image's length inside a container of `container` bytes: the end of its last footer.
/// An image that fills the container exactly (every fixed image, and a sparse one just
/// written out by a tool) ends where the container does.
pub fn image_len<S: Storage>(io: &mut S, container: u64) -> Result<u64, S> {
    if container >= SECTOR && footer_at(io, container - SECTOR, container)?.is_some() {
        return Ok(container);
    }
    let l = layout(io, container)?;
    // The footer follows the last block, or sits a little further in images whose tools
    // pad; a leaked block (a non-zero bitmap sector) may stand in between.
    let mut at = l.blocks_end;
    let mut found = None;
    let limit = l.blocks_end + PADDING_SCAN;
    while at + SECTOR <= container && at < limit + l.stride {
        if footer_at(io, at, container)?.is_some() {
            found = Some(at);
            break;
        }
        if zero_at(io, at, container)? {
            // Padding before the footer, never written: look a sector further.
            at += SECTOR;
            if at >= limit {
                break;
            }
            continue;
        }
        // A block the table does not reference yet.
        at += l.stride;
    }
    // Blocks but no footer after them: the file lost its end.
    let mut end = found.ok_or(Error::Truncated {
        needed: l.blocks_end + SECTOR,
        len: container,
    })?;
    // A footer written one stride on whose block's bitmap never arrived: the newer one counts.
    while footer_at(io, end + l.stride, container)?.is_some() {
        end += l.stride;
    }
    Ok(end + SECTOR)
}

/// The container an image of `len` bytes needs to be able to allocate every block it has
/// not yet: one stride per unallocated block, and one more for the footer that runs ahead of
/// its block during an allocation.
pub fn room_to_grow<S: Storage>(io: &mut S, len: u64) -> Result<u64, S> {
    let head = footer_at(io, 0, len)?;
    if !head.is_some_and(|f| matches!(f.kind(), Some(DiskType::Dynamic | DiskType::Differencing))) {
        return Ok(len);
    }
    let l = layout(io, len)?;
    Ok(len + (l.unallocated + 1) * l.stride)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        CreateOptions, Layer, MemDisk, OpenOptions, Vhd, create_differencing, create_dynamic,
        link_from,
    };
    use alloc::vec;
    use embedded_io::{Seek, SeekFrom, Write};

    const BLOCK: u32 = 64 << 10;

    fn dynamic(size: u64) -> MemDisk {
        let mut d = MemDisk::default();
        let mut o = CreateOptions::new(1, [7; 16]);
        o.block_size = BLOCK;
        create_dynamic(&mut d, size, &o).unwrap();
        d
    }

    fn grow(d: MemDisk, writes: &[u64]) -> MemDisk {
        let mut v = Vhd::open(d, OpenOptions::read_write()).unwrap();
        for &at in writes {
            v.write_at(at, &[0xAB; 512]).unwrap();
        }
        v.flush().unwrap();
        v.into_layers().pop().unwrap().into_inner()
    }

    fn padded(mut d: MemDisk, extra: usize) -> (MemDisk, u64) {
        let len = d.data.len() as u64;
        d.data.extend(vec![0u8; extra]);
        (d, len)
    }

    #[test]
    fn a_grown_image_is_found_inside_its_zeroed_room() {
        for writes in [&[][..], &[0], &[0, 3 * u64::from(BLOCK), 200 << 10]] {
            let d = grow(dynamic(1 << 20), writes);
            let (mut d, len) = padded(d, 5 * (BLOCK as usize + 512));
            let container = d.data.len() as u64;
            assert_eq!(image_len(&mut d, container).unwrap(), len, "{writes:?}");
            // A tool-written image that fills its container exactly.
            d.data.truncate(len as usize);
            assert_eq!(image_len(&mut d, len).unwrap(), len);
        }
    }

    #[test]
    fn blocks_not_yet_in_the_table_and_a_footer_ahead_count() {
        let d = grow(dynamic(1 << 20), &[0]);
        let len = d.data.len() as u64;
        let stride = u64::from(BLOCK) + 512;
        // Allocate one more block without flushing the table: the image is one stride longer.
        let mut v = Vhd::open(d, OpenOptions::read_write()).unwrap();
        v.write_at(u64::from(BLOCK), &[1; 512]).unwrap();
        let mut d = v.into_layers().pop().unwrap().into_inner();
        assert_eq!(d.data.len() as u64, len + stride);
        let (mut d2, grown) = padded(d.clone(), 3 * stride as usize);
        assert_eq!(image_len(&mut d2, grown + 3 * stride).unwrap(), grown);
        // A power cut after the footer moved one stride on but before the bitmap arrived:
        // two footers, the further one is the end.
        let footer: Vec<u8> = d.data[d.data.len() - 512..].to_vec();
        d.data.extend(vec![0u8; stride as usize]);
        let n = d.data.len();
        d.data[n - 512..].copy_from_slice(&footer);
        let (mut d, _) = padded(d, stride as usize);
        let container = d.data.len() as u64;
        assert_eq!(image_len(&mut d, container).unwrap(), len + 2 * stride);
        // Opened at that length, the image is valid.
        d.data.truncate((len + 2 * stride) as usize);
        d.seek(SeekFrom::Start(0)).unwrap();
        d.flush().unwrap();
        assert!(Layer::open(d, OpenOptions::read_only()).is_ok());
    }

    #[test]
    fn a_differencing_image_ends_after_its_locators_and_blocks() {
        let parent = dynamic(1 << 20);
        let p = Layer::open(parent.clone(), OpenOptions::read_only()).unwrap();
        let mut link = link_from(&p, 5, "parent.vhd");
        link.relative = Some("parent.vhd");
        link.absolute = Some("/x/parent.vhd");
        let mut child = MemDisk::default();
        create_differencing(&mut child, &link, &CreateOptions::new(2, [9; 16])).unwrap();
        for writes in [&[][..], &[0u64, 300 << 10]] {
            let mut v = Vhd::from_layers(alloc::vec![
                Layer::open(child.clone(), OpenOptions::read_write()).unwrap(),
                Layer::open(parent.clone(), OpenOptions::read_only()).unwrap(),
            ])
            .unwrap();
            for &at in writes {
                v.write_at(at, &[5; 512]).unwrap();
            }
            v.flush().unwrap();
            let c = v.into_layers().remove(0).into_inner();
            let (mut c, len) = padded(c, 4 * (BLOCK as usize + 512));
            let container = c.data.len() as u64;
            assert_eq!(image_len(&mut c, container).unwrap(), len, "{writes:?}");
        }
    }

    #[test]
    fn room_to_grow_fits_every_block() {
        let mut d = dynamic(1 << 20);
        let len = d.data.len() as u64;
        let room = room_to_grow(&mut d, len).unwrap();
        let layer = Layer::open(d.clone(), OpenOptions::read_only()).unwrap();
        let blocks = u64::from(layer.header().unwrap().max_table_entries);
        let size = layer.size();
        assert_eq!(room, len + (blocks + 1) * (u64::from(BLOCK) + 512));
        let full: Vec<u64> = (0..blocks)
            .map(|b| (b * u64::from(BLOCK)).min(size - 512))
            .collect();
        let grown = grow(d, &full);
        assert!(grown.data.len() as u64 + u64::from(BLOCK) + 512 <= room);
    }

    #[test]
    fn damage_is_an_error_not_a_guess() {
        let mut z = MemDisk::new(vec![0u8; 8192]);
        assert!(image_len(&mut z, 8192).is_err());
        let d = dynamic(1 << 20);
        let (mut d, _) = padded(d, 1 << 20);
        // Lose the end footer: nothing says where the image ends.
        let end = d.data.iter().rposition(|&b| b != 0).unwrap() / 512 * 512;
        d.data[end..end + 512].fill(0);
        let container = d.data.len() as u64;
        assert!(image_len(&mut d, container).is_err());
    }
}
