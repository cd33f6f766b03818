//! A guest disk as the backends see it (`virt::block::Volume`): a VHD chain — the disk and its
//! read-only parents, nearest first — each image in its own container.

use super::container::{ContainerIo, DeviceError, LbaDevice};
use alloc::vec::Vec;
use vhd::{Layer, OpenOptions, Vhd};
use virt::block::{HostPiece, MAX_PIECES, SECTOR, Volume, VolumeError, in_range, sub_pieces};

pub type VhdError = vhd::Error<DeviceError>;

pub struct VhdVolume<D: LbaDevice> {
    vhd: Vhd<ContainerIo<D>>,
    read_only: bool,
    /// Set by the first medium error: a disk that failed once is not written again.
    failed: bool,
    /// Read requests served straight into the guest's memory, and through a buffer.
    pub reads_direct: u64,
    pub reads_buffered: u64,
    /// Write requests served straight from the guest's memory, and through a buffer.
    pub writes_direct: u64,
    pub writes_buffered: u64,
}

/// Opens the image in each container (its length found inside it), the first writable unless
/// `read_only`, the rest (its parents) read-only, and joins them into one disk.
pub fn open<D: LbaDevice>(containers: Vec<D>, read_only: bool) -> Result<VhdVolume<D>, VhdError> {
    let mut layers = Vec::with_capacity(containers.len());
    for (i, dev) in containers.into_iter().enumerate() {
        let capacity = dev.lba_count() * u64::from(dev.lba_size());
        let mut io = ContainerIo::new(dev, capacity).ok_or(vhd::Error::Io(DeviceError::Io))?;
        let len = vhd::container::image_len(&mut io, capacity)?;
        let mut io = io;
        embedded_io::Seek::seek(&mut io, embedded_io::SeekFrom::Start(0))
            .map_err(vhd::Error::Io)?;
        let io = ContainerIo::new(io.into_inner(), len).ok_or(vhd::Error::Io(DeviceError::Io))?;
        let opts = if i == 0 && !read_only {
            OpenOptions::read_write()
        } else {
            OpenOptions::read_only()
        };
        layers.push(Layer::open(io, opts)?);
    }
    Ok(VhdVolume {
        vhd: Vhd::from_layers(layers)?,
        read_only,
        failed: false,
        reads_direct: 0,
        reads_buffered: 0,
        writes_direct: 0,
        writes_buffered: 0,
    })
}

impl<D: LbaDevice> VhdVolume<D> {
    fn fail(&mut self, e: VhdError) -> VolumeError {
        match e {
            vhd::Error::Io(DeviceError::NoSpace) => VolumeError::NoSpace,
            vhd::Error::OutOfRange { .. } => VolumeError::OutOfRange,
            vhd::Error::ReadOnly => VolumeError::ReadOnly,
            _ => {
                self.failed = true;
                VolumeError::Io
            }
        }
    }

    pub fn image(&self) -> &Vhd<ContainerIo<D>> {
        &self.vhd
    }

    /// Walks the image for where each piece of the request lives and has the containers'
    /// devices move it straight between there and `pieces` (guest memory).
    fn walk_direct(
        &mut self,
        write: bool,
        sector: u64,
        pieces: &[HostPiece],
    ) -> Result<bool, VolumeError> {
        if write && self.read_only {
            return Err(VolumeError::ReadOnly);
        }
        let len: u64 = pieces.iter().map(|p| p.len).sum();
        if !in_range(self.sectors(), sector, len as usize) {
            return Err(VolumeError::OutOfRange);
        }
        if self.failed {
            return Err(VolumeError::Io);
        }
        let mut part = [HostPiece::default(); MAX_PIECES];
        let mut visit = |src: vhd::Source<'_, ContainerIo<D>>, pos, n| {
            let Some(k) = sub_pieces(pieces, pos, n, &mut part) else {
                return Ok(false);
            };
            let part = &part[..k];
            match src {
                vhd::Source::Stored { io, at } if write => io.write_direct(at, part),
                vhd::Source::Stored { io, at } => io.read_direct(at, part),
                // A write never meets a hole: the walk allocates.
                vhd::Source::Zero => Ok(!write && D::zero_direct(part)),
            }
            .map_err(vhd::Error::Io)
        };
        let at = sector * SECTOR;
        let walked = if write {
            self.vhd.write_with(at, len, &mut visit)
        } else {
            self.vhd.read_with(at, len, &mut visit)
        };
        let done = walked.map_err(|e| self.fail(e))?;
        let count = if write {
            &mut self.writes_direct
        } else {
            &mut self.reads_direct
        };
        *count += u64::from(done);
        Ok(done)
    }
}

impl<D: LbaDevice> Volume for VhdVolume<D> {
    fn sectors(&self) -> u64 {
        self.vhd.size() / SECTOR
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        if !in_range(self.sectors(), sector, buf.len()) {
            return Err(VolumeError::OutOfRange);
        }
        if self.failed {
            return Err(VolumeError::Io);
        }
        self.reads_buffered += 1;
        self.vhd
            .read_at(sector * SECTOR, buf)
            .map_err(|e| self.fail(e))
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), VolumeError> {
        if self.read_only {
            return Err(VolumeError::ReadOnly);
        }
        if !in_range(self.sectors(), sector, buf.len()) {
            return Err(VolumeError::OutOfRange);
        }
        if self.failed {
            return Err(VolumeError::Io);
        }
        self.writes_buffered += 1;
        self.vhd
            .write_at(sector * SECTOR, buf)
            .map_err(|e| self.fail(e))
    }

    fn flush(&mut self) -> Result<(), VolumeError> {
        if self.read_only {
            return Ok(());
        }
        if self.failed {
            return Err(VolumeError::Io);
        }
        self.vhd.flush().map_err(|e| self.fail(e))
    }

    /// Each piece of the image the request covers goes from its container straight into the
    /// guest (a hole is zeroed there); the first piece that cannot (a block the device cannot
    /// move, a device without direct reads) sends the whole request back to `read`.
    fn read_direct(&mut self, sector: u64, to: &[HostPiece]) -> Result<bool, VolumeError> {
        self.walk_direct(false, sector, to)
    }

    /// Each piece of the image the request covers is written from the guest's memory by its
    /// container's device (blocks allocated and marked as `write` does); the first that
    /// cannot sends the whole request back to `write`, which writes it all again.
    fn write_direct(&mut self, sector: u64, from: &[HostPiece]) -> Result<bool, VolumeError> {
        self.walk_direct(true, sector, from)
    }
}

#[cfg(test)]
mod tests {
    use super::super::container::mem::{MemDevice, Op};
    use super::*;
    use vhd::{CreateOptions, MemDisk, create_dynamic};

    const BLOCK: u32 = 64 << 10;

    /// A dynamic image of `size` bytes in a device with room for every block.
    fn device(size: u64, lba: u32) -> (MemDevice, u64) {
        let mut d = MemDisk::default();
        let mut o = CreateOptions::new(1, [3; 16]);
        o.block_size = BLOCK;
        create_dynamic(&mut d, size, &o).unwrap();
        let len = d.data.len() as u64;
        let room = vhd::container::room_to_grow(&mut d, len).unwrap();
        let mut bytes = d.data;
        bytes.resize(room.next_multiple_of(u64::from(lba)) as usize, 0);
        (MemDevice::new(lba, bytes), len)
    }

    fn pattern(sector: u64, n: usize) -> Vec<u8> {
        (0..n * 512)
            .map(|i| (sector as usize * 31 + i * 7 + 0x5A) as u8)
            .collect()
    }

    #[test]
    fn writes_read_back_and_a_flush_makes_them_durable_in_order() {
        for lba in [512, 4096] {
            let (dev, _) = device(4 << 20, lba);
            let mut v = open(vec![dev.clone()], false).unwrap();
            assert_eq!(v.sectors() * 512, v.image().size());
            let a = pattern(2048, 128);
            let b = pattern(7, 1);
            v.write(2048, &a).unwrap();
            v.write(7, &b).unwrap();
            let mut back = vec![0; a.len()];
            v.read(2048, &mut back).unwrap();
            assert_eq!(back, a);
            dev.log.borrow_mut().clear();
            v.flush().unwrap();
            // The blocks are durable before the table that points at them: a device flush,
            // then the table's writes, then a flush again.
            let log = dev.log.borrow().clone();
            assert_eq!(log.first(), Some(&Op::Flush), "{log:?}");
            assert_eq!(log.last(), Some(&Op::Flush), "{log:?}");
            // What the last flush left on the medium opens as the same disk.
            let durable = dev.durable.borrow().clone();
            let again = MemDevice::new(lba, durable);
            let mut v2 = open(vec![again], true).unwrap();
            let mut back = vec![0; 512];
            v2.read(7, &mut back).unwrap();
            assert_eq!(back, b);
            assert_eq!(v2.write(7, &back), Err(VolumeError::ReadOnly));
        }
    }

    /// Direct reads land the same bytes as `read`: data, holes (zeroed over what was there)
    /// and pieces that split sectors across pages; a layout the device cannot move (a 4 KiB
    /// block device, 512-byte pieces) is handed back, not half-done and reported done.
    #[test]
    fn direct_reads_land_what_read_reads() {
        use super::super::container::mem::HOST;
        for lba in [512, 4096] {
            let (dev, _) = device(4 << 20, lba);
            let mut v = open(vec![dev], false).unwrap();
            v.write(128, &pattern(128, 256)).unwrap();
            v.write(1000, &pattern(1000, 8)).unwrap();
            let (sector, sectors) = (120u64, 1024usize);
            let mut want = vec![0; sectors * 512];
            v.read(sector, &mut want).unwrap();
            // The guest's pages, out of order in host memory, full of old data.
            HOST.with_borrow_mut(|h| *h = vec![0xEE; 1 << 20]);
            let mut to = Vec::new();
            let mut left = sectors as u64 * 512;
            let mut page = 0u64;
            while left > 0 {
                let (off, n) = if page == 0 {
                    (3584, 512)
                } else {
                    (0, left.min(4096))
                };
                to.push(HostPiece {
                    hpa: (page * 7 % 200) * 4096 + off,
                    len: n,
                });
                left -= n;
                page += 1;
            }
            let done = v.read_direct(sector, &to).unwrap();
            assert_eq!(done, lba == 512, "LBA size {lba}");
            if done {
                let mut got = Vec::new();
                HOST.with_borrow(|h| {
                    for p in &to {
                        got.extend_from_slice(&h[p.hpa as usize..(p.hpa + p.len) as usize]);
                    }
                });
                assert!(got == want, "direct bytes differ from read's");
            }
            assert_eq!(
                v.read_direct(v.sectors() - 1, &to),
                Err(VolumeError::OutOfRange)
            );
        }
    }

    /// Direct writes leave the image as `write` would: the same bytes read back, through a
    /// fresh open of what the flush made durable (blocks allocated, sectors marked); a
    /// read-only disk refuses them.
    #[test]
    fn direct_writes_land_what_write_writes() {
        use super::super::container::mem::HOST;
        let (base, _) = device(4 << 20, 512);
        let mut b = open(vec![base.clone()], false).unwrap();
        b.write(0, &pattern(0, 64)).unwrap();
        b.flush().unwrap();
        let from: Vec<HostPiece> = (0..40u64)
            .map(|i| HostPiece {
                hpa: (i * 5 % 64) * 4096 + if i == 0 { 2048 } else { 0 },
                len: if i == 0 { 2048 } else { 4096 },
            })
            .collect();
        let bytes: usize = from.iter().map(|p| p.len as usize).sum();
        let data = pattern(77, bytes / 512);
        HOST.with_borrow_mut(|h| {
            *h = vec![0; 64 * 4096];
            let mut at = 0;
            for p in &from {
                h[p.hpa as usize..(p.hpa + p.len) as usize]
                    .copy_from_slice(&data[at..at + p.len as usize]);
                at += p.len as usize;
            }
        });
        // Across the end of block 0 (64 KiB blocks) and into never-written ones.
        let sector = 100;
        assert_eq!(b.write_direct(sector, &from), Ok(true));
        b.flush().unwrap();
        let again = MemDevice::new(512, base.durable.borrow().clone());
        let mut v = open(vec![again], true).unwrap();
        let mut back = vec![0; bytes];
        v.read(sector, &mut back).unwrap();
        assert!(back == data, "direct write differs from what reads back");
        let mut head = vec![0; 512];
        v.read(0, &mut head).unwrap();
        assert_eq!(head, pattern(0, 1), "neighbours untouched");
        assert_eq!(v.write_direct(sector, &from), Err(VolumeError::ReadOnly));
    }

    #[test]
    fn requests_outside_the_disk_are_refused_before_the_image_is_touched() {
        let (dev, _) = device(1 << 20, 512);
        let mut v = open(vec![dev.clone()], false).unwrap();
        let n = v.sectors();
        let writes = dev.log.borrow().len();
        assert_eq!(v.write(n, &[0; 512]), Err(VolumeError::OutOfRange));
        assert_eq!(v.write(0, &[0; 100]), Err(VolumeError::OutOfRange));
        assert_eq!(
            v.read(u64::MAX, &mut [0; 512]),
            Err(VolumeError::OutOfRange)
        );
        assert_eq!(dev.log.borrow().len(), writes);
    }

    #[test]
    fn a_full_container_is_no_space_not_corruption() {
        let (dev, len) = device(1 << 20, 512);
        // No room to grow at all: only the image itself.
        let tight = MemDevice::new(512, dev.data.borrow()[..len as usize].to_vec());
        let mut v = open(vec![tight.clone()], false).unwrap();
        assert_eq!(v.write(0, &[1; 512]), Err(VolumeError::NoSpace));
        // Nothing half-written: the image still opens.
        assert!(open(vec![tight], true).is_ok());
    }
}
