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
        self.writable(offset, buf.len())?;
        match self.layers[0].kind {
            DiskType::Fixed => io::write_at(&mut self.layers[0].io, offset, buf),
            DiskType::Dynamic => write_sparse(&mut self.layers[0], offset, buf),
            DiskType::Differencing => self.write_diff(offset, buf),
        }
    }

    fn writable(&self, offset: u64, len: usize) -> Result<(), S> {
        self.range(offset, len)?;
        let top = &self.layers[0];
        if !top.writable {
            return Err(Error::ReadOnly);
        }
        if top.footer.saved_state != 0 {
            return Err(Error::SavedState);
        }
        Ok(())
    }

    /// Writes `len` bytes of whole sectors at virtual `offset` as [`Vhd::write_at`] does
    /// (blocks allocated, sectors marked after their data), `visit` moving each piece's data
    /// to where it is told, for a caller that does not hold the data (a device writing from
    /// its source). False when the range is not whole sectors or `visit` stopped the walk: the
    /// pieces not yet told are not written, and the caller writes the range with `write_at`.
    pub fn write_with(
        &mut self,
        offset: u64,
        len: u64,
        visit: &mut Visit<'_, S>,
    ) -> Result<bool, S> {
        self.writable(offset, usize::try_from(len).unwrap_or(usize::MAX))?;
        if !offset.is_multiple_of(512) || !len.is_multiple_of(512) {
            return Ok(false);
        }
        let top = &mut self.layers[0];
        match top.kind {
            DiskType::Fixed => visit(
                Source::Stored {
                    io: &mut top.io,
                    at: offset,
                },
                0,
                len,
            ),
            DiskType::Dynamic | DiskType::Differencing => walk_write(top, offset, len, visit),
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

/// Where a piece of a virtual range lives: at byte `at` of a layer's storage, or nowhere (it
/// reads as zeroes).
pub enum Source<'a, S> {
    Stored { io: &'a mut S, at: u64 },
    Zero,
}

/// Told each piece of a range in order: its source, where it starts in the range, its length;
/// answers whether to go on.
pub type Visit<'v, S> = dyn FnMut(Source<'_, S>, u64, u64) -> Result<bool, S> + 'v;

impl<S: Storage> Vhd<S> {
    /// Walks `len` bytes at virtual `offset` through the chain, telling `visit` where each piece
    /// lives, for a caller that moves the data itself (a device reading straight into its
    /// destination). False when `visit` stopped the walk.
    pub fn read_with(
        &mut self,
        offset: u64,
        len: u64,
        visit: &mut Visit<'_, S>,
    ) -> Result<bool, S> {
        self.range(offset, usize::try_from(len).unwrap_or(usize::MAX))?;
        walk(&mut self.layers, offset, 0, len, visit)
    }
}

/// Reads through the chain: each layer serves what it holds and hands the rest down.
fn read_chain<S: Storage>(layers: &mut [Layer<S>], offset: u64, buf: &mut [u8]) -> Result<(), S> {
    let len = buf.len() as u64;
    walk(layers, offset, 0, len, &mut |src, pos, n| {
        let piece = &mut buf[pos as usize..(pos + n) as usize];
        match src {
            Source::Stored { io, at } => io::read_at(io, at, piece)?,
            Source::Zero => piece.fill(0),
        }
        Ok(true)
    })
    .map(|_| ())
}

/// Tells `visit` where `len` bytes at virtual `offset` live, `pos` being where they start in
/// the caller's range; false when `visit` stopped.
fn walk<S: Storage>(
    layers: &mut [Layer<S>],
    mut offset: u64,
    mut pos: u64,
    len: u64,
    visit: &mut Visit<'_, S>,
) -> Result<bool, S> {
    let end = pos + len;
    let Some((top, rest)) = layers.split_first_mut() else {
        return visit(Source::Zero, pos, len);
    };
    let Some(block_size) = top.block_size() else {
        return visit(
            Source::Stored {
                io: &mut top.io,
                at: offset,
            },
            pos,
            len,
        );
    };
    let diff = top.kind == DiskType::Differencing;
    while pos < end {
        let blk = (offset / block_size) as usize;
        let within = offset % block_size;
        let n = (block_size - within).min(end - pos);
        let go = match top.block_at(blk) {
            None if diff => walk(rest, offset, pos, n, visit)?,
            None => visit(Source::Zero, pos, n)?,
            Some(at) => {
                let data = at + top.sparse.as_ref().map_or(0, |s| s.bitmap_size);
                let full = top.sparse.as_ref().is_some_and(|s| s.full.get(blk));
                // Dynamic images follow QEMU and ignore the bitmap: clear bits cover zeros.
                if !diff || full {
                    let io = &mut top.io;
                    visit(
                        Source::Stored {
                            io,
                            at: data + within,
                        },
                        pos,
                        n,
                    )?
                } else {
                    top.load_bitmap(blk, at)?;
                    walk_bitmap(top, rest, offset, within, data, pos, n, visit)?
                }
            }
        };
        if !go {
            return Ok(false);
        }
        offset += n;
        pos += n;
    }
    Ok(true)
}

/// Walks `len` bytes starting `within` bytes into a block whose bitmap is cached, run by run.
#[expect(
    clippy::too_many_arguments,
    reason = "the walk's position in the block, the image and the caller's range"
)]
fn walk_bitmap<S: Storage>(
    top: &mut Layer<S>,
    rest: &mut [Layer<S>],
    offset: u64,
    within: u64,
    data: u64,
    pos: u64,
    len: u64,
    visit: &mut Visit<'_, S>,
) -> Result<bool, S> {
    let end = within + len;
    let mut at = within;
    while at < end {
        let first = at / 512;
        let last = (end - 1) / 512;
        let (present, count) = match top.sparse.as_ref() {
            Some(sp) => bitmap::run(&sp.cache.buf, first, last - first + 1),
            None => (true, last - first + 1),
        };
        let run_end = ((first + count) * 512).min(end);
        let (here, n) = (pos + (at - within), run_end - at);
        let go = if present {
            let io = &mut top.io;
            visit(Source::Stored { io, at: data + at }, here, n)?
        } else {
            walk(rest, offset + (at - within), here, n, visit)?
        };
        if !go {
            return Ok(false);
        }
        at = run_end;
    }
    Ok(true)
}

/// Writes into a dynamic or differencing layer, block by block.
fn write_sparse<S: Storage>(layer: &mut Layer<S>, offset: u64, buf: &[u8]) -> Result<(), S> {
    walk_write(layer, offset, buf.len() as u64, &mut |src, pos, n| {
        if let Source::Stored { io, at } = src {
            io::write_at(io, at, &buf[pos as usize..(pos + n) as usize])?;
        }
        Ok(true)
    })
    .map(|_| ())
}

/// Walks `len` bytes at virtual `offset` of a dynamic or differencing layer, allocating the
/// blocks they need, telling `visit` where each piece goes and marking its sectors present
/// once it is written; false when `visit` stopped.
fn walk_write<S: Storage>(
    layer: &mut Layer<S>,
    mut offset: u64,
    len: u64,
    visit: &mut Visit<'_, S>,
) -> Result<bool, S> {
    let block_size = layer.block_size().ok_or(Error::NotDifferencing)?;
    let bitmap_size = layer.sparse.as_ref().map_or(0, |s| s.bitmap_size);
    let mut pos = 0;
    while pos < len {
        let blk = (offset / block_size) as usize;
        let within = offset % block_size;
        let n = (block_size - within).min(len - pos);
        let first = within / 512;
        let last = (within + n - 1) / 512;
        let go = match layer.block_at(blk) {
            None => {
                let data = layer.allocate(blk, first, last)?;
                let io = &mut layer.io;
                visit(
                    Source::Stored {
                        io,
                        at: data + within,
                    },
                    pos,
                    n,
                )?
            }
            Some(at) => {
                // Data before bits: a crash in between leaves the old contents visible.
                let io = &mut layer.io;
                let go = visit(
                    Source::Stored {
                        io,
                        at: at + bitmap_size + within,
                    },
                    pos,
                    n,
                )?;
                if go {
                    layer.mark_sectors(blk, at, first, last)?;
                }
                go
            }
        };
        if !go {
            return Ok(false);
        }
        offset += n;
        pos += n;
    }
    Ok(true)
}
