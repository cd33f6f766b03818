//! One image file: opening and validating it, mapping virtual offsets to file offsets,
//! allocating blocks and writing metadata in the crash-consistent order (see the crate docs).

use crate::Error;
use crate::bat::{self, Bat, Region, UNALLOCATED};
use crate::bitmap::{self, BitSet};
use crate::footer::{DiskType, FOOTER_SIZE, Footer, FooterFault};
use crate::geometry::{MAX_SIZE, SizeRule};
use crate::header::{self, DynHeader, HEADER_SIZE, HeaderFault, Locator};
use crate::io::{self, Result, Storage};
use alloc::vec;
use alloc::vec::Vec;

/// Largest block size accepted on open; QEMU and Windows use 2 MiB, nothing sane goes near this.
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Cap on BAT entries kept in memory (64 MiB of table), whatever the block size.
pub const MAX_TABLE_ENTRIES: u32 = 1 << 24;

/// How to open an image.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    pub writable: bool,
    pub size_rule: SizeRule,
}

impl OpenOptions {
    pub fn read_only() -> Self {
        Self::default()
    }

    pub fn read_write() -> Self {
        OpenOptions {
            writable: true,
            ..Self::default()
        }
    }
}

/// The one sector bitmap kept in memory: the last one used, possibly with updates that are not
/// on disk yet (differencing disks write new bits only after the data they cover is durable).
#[derive(Debug)]
pub(crate) struct BitmapCache {
    pub(crate) block: usize,
    pub(crate) buf: Vec<u8>,
    /// Holds bits not yet written to the image.
    pub(crate) dirty: bool,
    /// The block was allocated since the last flush, so nothing on disk points at it yet and its
    /// bitmap may be rewritten in place without ordering constraints.
    pub(crate) fresh: bool,
}

const NO_BLOCK: usize = usize::MAX;

#[derive(Debug)]
pub(crate) struct Sparse {
    pub(crate) header: DynHeader,
    pub(crate) bat: Bat,
    pub(crate) block_size: u64,
    pub(crate) bitmap_size: u64,
    /// Where the next block goes: the end footer's position, or past whatever trails the data.
    pub(crate) alloc_at: u64,
    /// Blocks whose bitmap is known to be all ones, so reads and writes can skip it.
    pub(crate) full: BitSet,
    pub(crate) cache: BitmapCache,
    /// Footer copy, header, BAT and locator data.
    pub(crate) metadata: Vec<Region>,
}

/// One VHD file. Differencing layers are read through [`crate::Vhd`], which owns the chain.
#[derive(Debug)]
pub struct Layer<S> {
    pub(crate) io: S,
    pub(crate) footer: Footer,
    pub(crate) kind: DiskType,
    pub(crate) size: u64,
    pub(crate) writable: bool,
    pub(crate) file_len: u64,
    /// The end footer was unreadable and the offset-0 copy was used.
    pub(crate) end_footer_bad: bool,
    /// A sparse image whose offset-0 copy is unreadable (the end one was used).
    pub(crate) head_footer_bad: bool,
    pub(crate) sparse: Option<Sparse>,
}

pub(crate) fn footer_error<E>(f: FooterFault) -> Error<E> {
    match f {
        FooterFault::Cookie => Error::BadFooterCookie,
        FooterFault::Checksum { stored, computed } => Error::BadFooterChecksum { stored, computed },
    }
}

fn is_sparse(f: &Footer) -> bool {
    matches!(f.kind(), Some(DiskType::Dynamic | DiskType::Differencing))
}

impl<S: Storage> Layer<S> {
    /// Opens and validates one image file. A differencing layer opens fine on its own but
    /// can only be read once joined to its parent in a [`crate::Vhd`].
    pub fn open(mut io: S, opts: OpenOptions) -> Result<Layer<S>, S> {
        let len = io::len(&mut io)?;
        if len < FOOTER_SIZE as u64 - 1 {
            return Err(Error::Truncated {
                needed: FOOTER_SIZE as u64,
                len,
            });
        }
        // Virtual PC before 2004 wrote a 511-byte footer.
        let end_len = if len % 512 == 511 { 511 } else { 512 };
        let mut buf = [0u8; FOOTER_SIZE];
        io::read_at(&mut io, len - end_len, &mut buf[..end_len as usize])?;
        let end = Footer::parse(&buf[..end_len as usize]);
        let head = if len >= FOOTER_SIZE as u64 {
            io::read_at(&mut io, 0, &mut buf)?;
            Footer::parse(&buf)
        } else {
            Err(FooterFault::Cookie)
        };

        let (footer, end_footer_bad, head_footer_bad) = match (end, head) {
            (Ok(e), Ok(h)) if is_sparse(&e) => {
                if !e.same_disk(&h) {
                    return Err(Error::FootersDisagree);
                }
                (e, false, false)
            }
            (Ok(e), Err(_)) if is_sparse(&e) => (e, false, true),
            // A fixed disk has no copy at 0: whatever is there is guest data.
            (Ok(e), _) => (e, false, false),
            (Err(_), Ok(h)) if is_sparse(&h) => (h, true, false),
            (Err(e), Ok(_)) => return Err(footer_error(e)),
            (Err(e), Err(h)) => {
                // Prefer the fault of a copy that at least had the cookie.
                let f = if e == FooterFault::Cookie { h } else { e };
                return Err(footer_error(f));
            }
        };

        if footer.version != crate::footer::VERSION {
            return Err(Error::UnsupportedFooterVersion(footer.version));
        }
        let kind = footer
            .kind()
            .ok_or(Error::UnsupportedDiskType(footer.disk_type))?;
        if !footer.current_size.is_multiple_of(512) {
            return Err(Error::SizeNotSectorAligned(footer.current_size));
        }
        if footer.current_size > MAX_SIZE {
            return Err(Error::SizeTooLarge(footer.current_size));
        }
        let mut size = opts.size_rule.disk_size(&footer);
        let writable = opts.writable;

        if kind == DiskType::Fixed {
            if len - end_len != footer.current_size {
                return Err(Error::FixedSizeMismatch {
                    file_len: len,
                    current_size: footer.current_size,
                });
            }
            // A CHS size above the stored data would read the footer as disk contents.
            size = size.min(footer.current_size);
            return Ok(Layer {
                io,
                footer,
                kind,
                size,
                writable,
                file_len: len,
                end_footer_bad,
                head_footer_bad,
                sparse: None,
            });
        }

        // Footer copy, header and end footer: anything shorter lost its metadata.
        let min_sparse = 2 * FOOTER_SIZE as u64 + HEADER_SIZE as u64;
        if len < min_sparse {
            return Err(Error::Truncated {
                needed: min_sparse,
                len,
            });
        }
        // Where block data may end: before the end footer, or at EOF if that footer is gone
        // (a crash can leave the tail of a new block there).
        let data_end = if end_footer_bad { len } else { len - end_len };
        let dh_off = footer.data_offset;
        if !dh_off.is_multiple_of(512)
            || dh_off < FOOTER_SIZE as u64
            || dh_off
                .checked_add(HEADER_SIZE as u64)
                .is_none_or(|e| e > data_end)
        {
            return Err(Error::BadDataOffset(dh_off));
        }
        let mut hbuf = [0u8; HEADER_SIZE];
        io::read_at(&mut io, dh_off, &mut hbuf)?;
        let header = DynHeader::parse(&hbuf).map_err(|f| match f {
            HeaderFault::Cookie => Error::BadHeaderCookie,
            HeaderFault::Checksum { stored, computed } => {
                Error::BadHeaderChecksum { stored, computed }
            }
        })?;
        if header.data_offset != u64::MAX {
            return Err(Error::BadHeaderDataOffset(header.data_offset));
        }
        if header.version != header::VERSION {
            return Err(Error::UnsupportedHeaderVersion(header.version));
        }
        let bs = header.block_size;
        if !bs.is_power_of_two() || !(512..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(Error::BadBlockSize(bs));
        }
        let block_size = u64::from(bs);
        let entries = header.max_table_entries;
        if entries > MAX_TABLE_ENTRIES || u64::from(entries) > MAX_SIZE.div_ceil(block_size) {
            return Err(Error::TableTooLarge { entries });
        }
        let needed = size.div_ceil(block_size);
        if u64::from(entries) < needed {
            return Err(Error::TableTooSmall { entries, needed });
        }
        let table = header.table_offset;
        let table_len = (u64::from(entries) * 4).next_multiple_of(512);
        let head_region = (0, FOOTER_SIZE as u64);
        let header_region = (dh_off, dh_off + HEADER_SIZE as u64);
        if !table.is_multiple_of(512)
            || table >= data_end
            || table < FOOTER_SIZE as u64
            || (table < header_region.1 && header_region.0 < table + table_len)
        {
            return Err(Error::BadTableOffset(table));
        }
        if table + table_len > data_end {
            return Err(Error::Truncated {
                needed: table + table_len + end_len,
                len,
            });
        }
        let mut raw = vec![0u8; entries as usize * 4];
        io::read_at(&mut io, table, &mut raw)?;
        let bat = Bat::from_raw(&raw);
        drop(raw);

        let mut metadata = vec![head_region, header_region, (table, table + table_len)];
        if kind == DiskType::Differencing {
            for (index, l) in header.locators.iter().enumerate() {
                if let Some(r) = locator_region::<S::Error>(index, l, data_end)? {
                    if metadata.iter().any(|m| m.0 < r.1 && r.0 < m.1) {
                        return Err(Error::BadLocator { index });
                    }
                    metadata.push(r);
                }
            }
        }
        let bitmap_size = header.bitmap_size();
        bat::validate(bat.entries(), bitmap_size + block_size, data_end, &metadata)?;

        let alloc_at = if end_footer_bad || !len.is_multiple_of(512) {
            len.next_multiple_of(512)
        } else {
            len - 512
        };
        let blocks = bat.len();
        Ok(Layer {
            io,
            footer,
            kind,
            size,
            writable,
            file_len: len,
            end_footer_bad,
            head_footer_bad,
            sparse: Some(Sparse {
                header,
                bat,
                block_size,
                bitmap_size,
                alloc_at,
                full: BitSet::new(blocks),
                cache: BitmapCache {
                    block: NO_BLOCK,
                    buf: vec![0; bitmap_size as usize],
                    dirty: false,
                    fresh: false,
                },
                metadata,
            }),
        })
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn disk_type(&self) -> DiskType {
        self.kind
    }

    /// Guest-visible size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The dynamic header of a dynamic or differencing disk.
    pub fn header(&self) -> Option<&DynHeader> {
        self.sparse.as_ref().map(|s| &s.header)
    }

    /// Block size of a sparse image.
    pub fn block_size(&self) -> Option<u64> {
        self.sparse.as_ref().map(|s| s.block_size)
    }

    /// Number of allocated blocks of a sparse image.
    pub fn allocated_blocks(&self) -> usize {
        self.sparse.as_ref().map_or(0, |s| {
            s.bat
                .entries()
                .iter()
                .filter(|&&e| e != UNALLOCATED)
                .count()
        })
    }

    /// The end footer was unreadable and the offset-0 copy was used instead.
    pub fn end_footer_bad(&self) -> bool {
        self.end_footer_bad
    }

    pub fn head_footer_bad(&self) -> bool {
        self.head_footer_bad
    }

    /// Gives the storage back (after a [`crate::Vhd::flush`], or changes may be lost).
    pub fn into_inner(self) -> S {
        self.io
    }

    /// Reads parent locator `index`'s raw data into `raw`; returns its length, or `None` for an
    /// empty slot.
    pub fn read_locator(&mut self, index: usize, raw: &mut [u8]) -> Result<Option<usize>, S> {
        let Some(sp) = &self.sparse else {
            return Ok(None);
        };
        let Some(l) = sp.header.locators.get(index).copied() else {
            return Ok(None);
        };
        if self.kind != DiskType::Differencing || l.code == 0 {
            return Ok(None);
        }
        let n = l.data_length as usize;
        let dst = raw.get_mut(..n).ok_or(Error::BadLocatorText { index })?;
        io::read_at(&mut self.io, l.data_offset, dst)?;
        Ok(Some(n))
    }

    /// File offset of block `blk`'s bitmap, if allocated.
    pub(crate) fn block_at(&self, blk: usize) -> Option<u64> {
        let sp = self.sparse.as_ref()?;
        match sp.bat.get(blk) {
            UNALLOCATED => None,
            e => Some(u64::from(e) * 512),
        }
    }

    /// Brings block `blk`'s bitmap into the cache, first writing out any pending one.
    pub(crate) fn load_bitmap(&mut self, blk: usize, at: u64) -> Result<(), S> {
        if self.sparse.as_ref().is_some_and(|s| s.cache.block == blk) {
            return Ok(());
        }
        self.write_pending_bitmap()?;
        let sp = self.sparse.as_mut().ok_or(Error::NotDifferencing)?;
        sp.cache.block = NO_BLOCK;
        io::read_at(&mut self.io, at, &mut sp.cache.buf)?;
        sp.cache.block = blk;
        sp.cache.fresh = false;
        if sp.cache.buf.iter().all(|&b| b == 0xff) {
            sp.full.set(blk);
        }
        Ok(())
    }

    /// Writes the cached bitmap if it holds bits not on disk. The data those bits cover was
    /// written earlier; flushing first means a crash can never expose a set bit over
    /// sectors that never arrived (they would read as zeros instead of the parent's data).
    pub(crate) fn write_pending_bitmap(&mut self) -> Result<(), S> {
        let Some(sp) = self.sparse.as_mut() else {
            return Ok(());
        };
        if !sp.cache.dirty {
            return Ok(());
        }
        self.io.flush()?;
        let at = u64::from(sp.bat.get(sp.cache.block)) * 512;
        io::write_at(&mut self.io, at, &sp.cache.buf)?;
        sp.cache.dirty = false;
        Ok(())
    }

    /// Appends a new block for `blk` in place of the end footer. The footer goes to the new
    /// EOF first, then the bitmap (marking `first..=last` for a differencing disk, everything for
    /// a dynamic one) over the old footer; the BAT entry changes only in memory until
    /// [`Layer::flush`]. Returns the file offset of the block's data.
    pub(crate) fn allocate(&mut self, blk: usize, first: u64, last: u64) -> Result<u64, S> {
        self.write_pending_bitmap()?;
        let diff = self.kind == DiskType::Differencing;
        let footer = self.footer.encode();
        let sp = self.sparse.as_mut().ok_or(Error::NotDifferencing)?;
        let pos = sp.alloc_at;
        let data = pos + sp.bitmap_size;
        let new_end = data + sp.block_size;
        let sector = u32::try_from(pos / 512)
            .ok()
            .filter(|&s| s != UNALLOCATED)
            .ok_or(Error::SizeTooLarge(new_end))?;
        sp.cache.block = NO_BLOCK;
        io::write_at(&mut self.io, new_end, &footer)?;
        self.file_len = self.file_len.max(new_end + FOOTER_SIZE as u64);
        if diff {
            sp.cache.buf.fill(0);
            for s in first..=last {
                bitmap::set(&mut sp.cache.buf, s);
            }
        } else {
            sp.cache.buf.fill(0xff);
        }
        io::write_at(&mut self.io, pos, &sp.cache.buf)?;
        sp.alloc_at = new_end;
        sp.bat.set(blk, sector);
        sp.cache.block = blk;
        sp.cache.fresh = true;
        sp.cache.dirty = false;
        if sp.cache.buf.iter().all(|&b| b == 0xff) {
            sp.full.set(blk);
        }
        Ok(data)
    }

    /// Marks sectors `first..=last` of allocated block `blk` (bitmap at `at`) as present.
    pub(crate) fn mark_sectors(
        &mut self,
        blk: usize,
        at: u64,
        first: u64,
        last: u64,
    ) -> Result<(), S> {
        if self.sparse.as_ref().is_some_and(|s| s.full.get(blk)) {
            return Ok(());
        }
        self.load_bitmap(blk, at)?;
        let diff = self.kind == DiskType::Differencing;
        let sp = self.sparse.as_mut().ok_or(Error::NotDifferencing)?;
        if (first..=last).all(|s| bitmap::test(&sp.cache.buf, s)) {
            return Ok(());
        }
        for s in first..=last {
            bitmap::set(&mut sp.cache.buf, s);
        }
        if sp.cache.buf.iter().all(|&b| b == 0xff) {
            sp.full.set(blk);
        }
        // Dynamic readers ignore the bitmap and a fresh block is not referenced yet, so the
        // bitmap can go straight out; otherwise it waits for the data to be durable.
        if !diff || sp.cache.fresh {
            io::write_at(&mut self.io, at, &sp.cache.buf)?;
        } else {
            sp.cache.dirty = true;
        }
        Ok(())
    }

    /// Makes every completed write durable: data, then the metadata that points at it.
    pub fn flush(&mut self) -> Result<(), S> {
        let pending = self
            .sparse
            .as_ref()
            .is_some_and(|s| s.cache.dirty || s.bat.has_dirty());
        if pending {
            self.write_pending_bitmap()?;
            if let Some(sp) = self.sparse.as_mut() {
                // Blocks must be on disk before the entries that point at them.
                self.io.flush()?;
                let mut sector = [0u8; 512];
                while let Some(s) = sp.bat.pop_dirty(&mut sector) {
                    let at = sp.header.table_offset + s as u64 * 512;
                    if let Err(e) = io::write_at(&mut self.io, at, &sector) {
                        sp.bat.redirty(s);
                        return Err(e);
                    }
                }
            }
        }
        self.io.flush()?;
        if let Some(sp) = self.sparse.as_mut() {
            sp.cache.fresh = false;
        }
        Ok(())
    }
}

/// The file region holding a parent locator's data, validated; `None` for an empty slot.
fn locator_region<E>(
    index: usize,
    l: &Locator,
    data_end: u64,
) -> core::result::Result<Option<Region>, Error<E>> {
    if l.code == 0 {
        return Ok(None);
    }
    if !header::platform::is_known(l.code) {
        return Err(Error::UnknownLocatorCode {
            index,
            code: l.code,
        });
    }
    let space = l.space_bytes().ok_or(Error::BadLocator { index })?;
    let bad = !l.data_offset.is_multiple_of(512)
        || l.data_offset < FOOTER_SIZE as u64
        || u64::from(l.data_length) > space
        || l.data_offset
            .checked_add(space)
            .is_none_or(|e| e > data_end);
    if bad {
        return Err(Error::BadLocator { index });
    }
    Ok(Some((l.data_offset, l.data_offset + space)))
}
