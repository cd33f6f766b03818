//! A whole virtual disk: a writable top layer and, for differencing disks, its read-only
//! parents. Reads fall through to the parent wherever a child sector bit is clear.

use crate::Error;
use crate::bitmap;
use crate::footer::DiskType;
use crate::io::{self, Result, Storage};
use crate::layer::{Layer, OpenOptions};
use alloc::vec;
use alloc::vec::Vec;

/// Longest differencing chain accepted (the top image included).
pub const MAX_CHAIN_DEPTH: usize = 32;

/// An open virtual disk. `read_at`, `write_at` and `flush` never allocate.
#[derive(Debug)]
pub struct Vhd<S> {
    layers: Vec<Layer<S>>,
}

impl<S: Storage> Vhd<S> {
    /// Opens a fixed or dynamic image. Differencing images need [`Vhd::from_layers`].
    pub fn open(io: S, opts: OpenOptions) -> Result<Vhd<S>, S> {
        Vhd::from_layers(vec![Layer::open(io, opts)?])
    }

    /// Joins a top image and its parents (nearest first) into one disk, checking that each
    /// parent is the one its child records and that the chain is finite and bounded.
    pub fn from_layers(layers: Vec<Layer<S>>) -> Result<Vhd<S>, S> {
        if layers.is_empty() {
            return Err(Error::ParentRequired);
        }
        if layers.len() > MAX_CHAIN_DEPTH {
            return Err(Error::ChainTooDeep);
        }
        for (i, a) in layers.iter().enumerate() {
            if layers[..i].iter().any(|b| b.footer.uuid == a.footer.uuid) {
                return Err(Error::ParentCycle);
            }
        }
        for pair in layers.windows(2) {
            let (child, parent) = (&pair[0], &pair[1]);
            let Some(h) = child
                .header()
                .filter(|_| child.kind == DiskType::Differencing)
            else {
                return Err(Error::NotDifferencing);
            };
            if h.parent_uuid != parent.footer.uuid {
                return Err(Error::ParentUuidMismatch);
            }
            if parent.size < child.size {
                return Err(Error::ParentTooSmall {
                    parent: parent.size,
                    child: child.size,
                });
            }
        }
        if layers
            .last()
            .is_some_and(|l| l.kind == DiskType::Differencing)
        {
            return Err(Error::ParentRequired);
        }
        Ok(Vhd { layers })
    }

    /// Guest-visible size in bytes.
    pub fn size(&self) -> u64 {
        self.layers[0].size
    }

    /// The top image, then its parents.
    pub fn layers(&self) -> &[Layer<S>] {
        &self.layers
    }

    pub fn layers_mut(&mut self) -> &mut [Layer<S>] {
        &mut self.layers
    }

    pub fn into_layers(self) -> Vec<Layer<S>> {
        self.layers
    }

    fn range(&self, offset: u64, len: usize) -> Result<(), S> {
        let size = self.size();
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(Error::OutOfRange {
                offset,
                len: len as u64,
                size,
            });
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at virtual `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), S> {
        self.range(offset, buf.len())?;
        read_chain(&mut self.layers, offset, buf)
    }

    /// Writes `buf` at virtual `offset` into the top image, allocating blocks as needed. The
    /// write is durable only after [`Vhd::flush`].
    pub fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), S> {
        self.range(offset, buf.len())?;
        let top = &self.layers[0];
        if !top.writable {
            return Err(Error::ReadOnly);
        }
        if top.footer.saved_state != 0 {
            return Err(Error::SavedState);
        }
        match top.kind {
            DiskType::Fixed => io::write_at(&mut self.layers[0].io, offset, buf),
            DiskType::Dynamic => write_sparse(&mut self.layers[0], offset, buf),
            DiskType::Differencing => self.write_diff(offset, buf),
        }
    }

    /// A differencing sector is either all child or all parent, so partial sectors are
    /// completed with the data currently visible before being written.
    fn write_diff(&mut self, mut offset: u64, mut buf: &[u8]) -> Result<(), S> {
        let mut sector = [0u8; 512];
        while !buf.is_empty() {
            let within = (offset % 512) as usize;
            if within == 0 && buf.len() >= 512 {
                let n = buf.len() - buf.len() % 512;
                write_sparse(&mut self.layers[0], offset, &buf[..n])?;
                offset += n as u64;
                buf = &buf[n..];
                continue;
            }
            let start = offset - within as u64;
            let n = (512 - within).min(buf.len());
            read_chain(&mut self.layers, start, &mut sector)?;
            sector[within..within + n].copy_from_slice(&buf[..n]);
            write_sparse(&mut self.layers[0], start, &sector)?;
            offset += n as u64;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Makes every completed write durable (see the crate docs for the order).
    pub fn flush(&mut self) -> Result<(), S> {
        self.layers[0].flush()
    }
}

/// Reads through the chain: each layer serves what it holds and hands the rest down.
fn read_chain<S: Storage>(
    layers: &mut [Layer<S>],
    mut offset: u64,
    mut buf: &mut [u8],
) -> Result<(), S> {
    let Some((top, rest)) = layers.split_first_mut() else {
        buf.fill(0);
        return Ok(());
    };
    let Some(block_size) = top.block_size() else {
        return io::read_at(&mut top.io, offset, buf);
    };
    let diff = top.kind == DiskType::Differencing;
    while !buf.is_empty() {
        let blk = (offset / block_size) as usize;
        let within = offset % block_size;
        let n = ((block_size - within) as usize).min(buf.len());
        let (chunk, tail) = buf.split_at_mut(n);
        match top.block_at(blk) {
            None if diff => read_chain(rest, offset, chunk)?,
            None => chunk.fill(0),
            Some(at) => {
                let data = at + top.sparse.as_ref().map_or(0, |s| s.bitmap_size);
                let full = top.sparse.as_ref().is_some_and(|s| s.full.get(blk));
                // Dynamic images follow QEMU and ignore the bitmap: clear bits cover zeros.
                if !diff || full {
                    io::read_at(&mut top.io, data + within, chunk)?;
                } else {
                    top.load_bitmap(blk, at)?;
                    read_by_bitmap(top, rest, offset, within, data, chunk)?;
                }
            }
        }
        offset += n as u64;
        buf = tail;
    }
    Ok(())
}

/// Reads `chunk` (starting `within` bytes into a block whose bitmap is cached) run by run.
fn read_by_bitmap<S: Storage>(
    top: &mut Layer<S>,
    rest: &mut [Layer<S>],
    offset: u64,
    within: u64,
    data: u64,
    chunk: &mut [u8],
) -> Result<(), S> {
    let end = within + chunk.len() as u64;
    let mut pos = within;
    while pos < end {
        let first = pos / 512;
        let last = (end - 1) / 512;
        let (present, count) = match top.sparse.as_ref() {
            Some(sp) => bitmap::run(&sp.cache.buf, first, last - first + 1),
            None => (true, last - first + 1),
        };
        let run_end = ((first + count) * 512).min(end);
        let piece = &mut chunk[(pos - within) as usize..(run_end - within) as usize];
        if present {
            io::read_at(&mut top.io, data + pos, piece)?;
        } else {
            read_chain(rest, offset + (pos - within), piece)?;
        }
        pos = run_end;
    }
    Ok(())
}

/// Writes into a dynamic or differencing layer, block by block.
fn write_sparse<S: Storage>(
    layer: &mut Layer<S>,
    mut offset: u64,
    mut buf: &[u8],
) -> Result<(), S> {
    let block_size = layer.block_size().ok_or(Error::NotDifferencing)?;
    let bitmap_size = layer.sparse.as_ref().map_or(0, |s| s.bitmap_size);
    while !buf.is_empty() {
        let blk = (offset / block_size) as usize;
        let within = offset % block_size;
        let n = ((block_size - within) as usize).min(buf.len());
        let first = within / 512;
        let last = (within + n as u64 - 1) / 512;
        match layer.block_at(blk) {
            None => {
                let data = layer.allocate(blk, first, last)?;
                io::write_at(&mut layer.io, data + within, &buf[..n])?;
            }
            Some(at) => {
                // Data before bits: a crash in between leaves the old contents visible.
                io::write_at(&mut layer.io, at + bitmap_size + within, &buf[..n])?;
                layer.mark_sectors(blk, at, first, last)?;
            }
        }
        offset += n as u64;
        buf = &buf[n..];
    }
    Ok(())
}
