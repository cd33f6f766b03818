//! A VM without a `kernel` boots what its first disk holds, found here in the hypervisor (as
//! pygrub and PVH-GRUB do on Xen, and a firmware boot manager on Hyper-V), so that a PXE-booted
//! machine needs no host tool: the partition table, the ext4 filesystem on it (`ext4-view`,
//! read-only), `grub.cfg`'s default entry or Debian's `/vmlinuz` links (`diskboot`), the
//! kernel and initrd read into frames of their own, and for the Xen face's PVH boot the ELF
//! decompressed out of the bzImage. Every failure names the disk and what was missing; the VM
//! stops, the others boot.
#![expect(unsafe_code)]
// UNSAFETY: the files are read into frames this module allocates and never frees (they stay
// the VM's boot files, as boot modules do), identity mapped.

use super::create::CreateError;
use crate::manifest::{Personality, VmSpec};
use crate::mm::phys;
use crate::storage::host::DISKS;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use diskboot::ext4::Ext4Fs;
use diskboot::plan::Face;
use diskboot::{kernel, partition, plan};
use ext4_view::Ext4;
use virt::block::{SECTOR, Volume};

/// What a disk boots: the files and the command line.
pub struct Booted {
    pub kernel: &'static [u8],
    pub initrd: Option<&'static [u8]>,
    pub cmdline: String,
    pub described: String,
}

#[derive(Debug)]
struct ReadError(&'static str);

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

impl core::error::Error for ReadError {}

/// Byte reads of a run of the VM's first disk, through whole sectors.
struct DiskReader {
    vm: usize,
    first: u64,
    sectors: u64,
    bounce: Vec<u8>,
}

const BOUNCE: usize = 64 * 1024;

impl DiskReader {
    fn read_at(&mut self, start: u64, dst: &mut [u8]) -> Result<(), ReadError> {
        let disk = DISKS[self.vm][0]
            .get()
            .ok_or(ReadError("the disk is gone"))?;
        let mut done = 0usize;
        while done < dst.len() {
            let byte = start + done as u64;
            let sector = byte / SECTOR;
            let skip = (byte % SECTOR) as usize;
            let want = (dst.len() - done + skip).min(BOUNCE);
            let count = want.div_ceil(SECTOR as usize) as u64;
            if sector
                .checked_add(count)
                .is_none_or(|end| end > self.sectors)
            {
                return Err(ReadError(
                    "a read past the end of the filesystem's partition",
                ));
            }
            let buf = &mut self.bounce[..(count * SECTOR) as usize];
            disk.lock()
                .read(self.first + sector, buf)
                .map_err(|_| ReadError("the disk could not be read"))?;
            let n = (buf.len() - skip).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&buf[skip..skip + n]);
            done += n;
        }
        Ok(())
    }
}

impl ext4_view::Ext4Read for DiskReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn core::error::Error + Send + Sync + 'static>> {
        self.read_at(start_byte, dst).map_err(|e| Box::new(e) as _)
    }
}

/// Frames for `len` bytes, as a slice that lives as long as the hypervisor.
fn frames(len: usize) -> Result<&'static mut [u8], CreateError> {
    let pages = (len as u64).div_ceil(4096).max(1);
    let pa = phys::alloc_zeroed(pages, 4096).map_err(|_| CreateError::OutOfMemory {
        what: "a boot file from disk",
    })?;
    // SAFETY: the frames were just allocated for this file alone, identity mapped, and are
    // never freed or handed to anyone else.
    Ok(unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, len) })
}

/// Reads the file at `path` whole into frames of its own.
fn load_file(fs: &Ext4, path: &str) -> Result<&'static [u8], String> {
    let mut file = fs.open(path).map_err(|e| format!("{path}: {e}"))?;
    let len = usize::try_from(file.metadata().len()).map_err(|_| format!("{path}: too large"))?;
    let buf = frames(len).map_err(|e| format!("{path}: {e}"))?;
    let mut done = 0;
    while done < len {
        match file.read_bytes(&mut buf[done..]) {
            Ok(0) => return Err(format!("{path}: ends after {done} of {len} bytes")),
            Ok(n) => done += n,
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
    Ok(buf)
}

/// Finds and loads what `spec`'s first disk boots.
pub fn boot_files(index: usize, spec: &VmSpec) -> Result<Booted, String> {
    let disk = spec
        .disks
        .first()
        .ok_or_else(|| String::from("no `kernel` and no disk to boot from"))?;
    let name = disk.name.as_str();
    let fail = |why: String| format!("disk 0 ({name}): {why}");
    let volume = DISKS[index][0]
        .get()
        .ok_or_else(|| fail("could not be opened, so there is nothing to boot".into()))?;
    let sectors = virt::block::Volume::sectors(&*volume.lock());
    let mut head = alloc::vec![0u8; partition::HEAD_SECTORS * SECTOR as usize];
    if sectors < partition::HEAD_SECTORS as u64 {
        return Err(fail("too small to hold a filesystem".into()));
    }
    volume
        .lock()
        .read(0, &mut head)
        .map_err(|e| fail(format!("cannot be read: {e:?}")))?;
    let extents = partition::find(&head, sectors).map_err(|e| fail(format!("{e}")))?;
    let face = match spec.personality {
        Personality::Xen => Face::Xen,
        Personality::HyperV => Face::HyperV,
        Personality::None => Face::None,
    };
    let mut last = String::from("no partition holds an ext4 filesystem");
    for x in extents {
        let reader = DiskReader {
            vm: index,
            first: x.first,
            sectors: x.sectors,
            bounce: alloc::vec![0u8; BOUNCE + SECTOR as usize],
        };
        let fs = match Ext4::load(Box::new(reader)) {
            Ok(fs) => fs,
            Err(e) => {
                last = format!("no ext4 filesystem at sector {} ({e})", x.first);
                continue;
            }
        };
        let mut view = Ext4Fs(fs);
        let p =
            plan::plan(&mut view, face, spec.cmdline.as_str()).map_err(|e| fail(format!("{e}")))?;
        let fs = view.0;
        let image = load_file(&fs, &p.kernel).map_err(&fail)?;
        let initrd = match &p.initrd {
            Some(path) => Some(load_file(&fs, path).map_err(&fail)?),
            None => None,
        };
        // PVH needs the ELF: decompress it here, as Xen does for dom0.
        let image: &'static [u8] = if face == Face::Xen && !kernel::is_elf(image) {
            let (body, size) =
                kernel::payload(image).map_err(|e| fail(format!("{}: {e}", p.kernel)))?;
            let out = frames(size).map_err(|e| fail(format!("{e}")))?;
            kernel::decompress(body, size, out).map_err(|e| fail(format!("{}: {e}", p.kernel)))?;
            out
        } else {
            image
        };
        let described = format!(
            "{} from {} (sector {}): {}{}",
            p.source,
            name,
            x.first,
            p.kernel,
            p.initrd
                .as_deref()
                .map(|i| format!(" + {i}"))
                .unwrap_or_default()
        );
        return Ok(Booted {
            kernel: image,
            initrd,
            cmdline: p.cmdline,
            described,
        });
    }
    Err(fail(last))
}
