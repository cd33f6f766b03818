//! The manifest's disks on this machine: at boot, each VM's disks are opened as VHD chains on
//! the NVMe namespaces xtask (or a lab's partition table) gave them. A disk that cannot be
//! opened is reported and left out; its VM and the others run on.

use super::container::{DeviceError, LbaDevice};
use super::volume::{self, VhdVolume};
use crate::drivers::nvme::Nvme;
use crate::manifest::{MAX_DISKS, MAX_VMS, Manifest};
use crate::println;
use alloc::vec::Vec;
use spin::{Mutex, Once};
use virt::block::HostPiece;

static NVME: Once<Mutex<Nvme>> = Once::new();

/// One namespace of the host's NVMe controller.
pub struct Namespace {
    nsid: u32,
    lba_size: u32,
    lba_count: u64,
}

impl LbaDevice for Namespace {
    fn lba_size(&self) -> u32 {
        self.lba_size
    }

    fn lba_count(&self) -> u64 {
        self.lba_count
    }

    fn read_lbas(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let nvme = NVME.get().ok_or(DeviceError::Io)?;
        nvme.lock()
            .read(self.nsid, lba, buf)
            .map_err(|_| DeviceError::Io)
    }

    fn write_lbas(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceError> {
        if lba
            .checked_add(buf.len() as u64 / u64::from(self.lba_size))
            .is_none_or(|end| end > self.lba_count)
        {
            return Err(DeviceError::NoSpace);
        }
        let nvme = NVME.get().ok_or(DeviceError::Io)?;
        nvme.lock()
            .write(self.nsid, lba, buf)
            .map_err(|_| DeviceError::Io)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        let nvme = NVME.get().ok_or(DeviceError::Io)?;
        nvme.lock().flush(self.nsid).map_err(|_| DeviceError::Io)
    }

    fn read_lbas_direct(&mut self, lba: u64, to: &[HostPiece]) -> Result<bool, DeviceError> {
        self.direct(false, lba, to)
    }

    fn write_lbas_direct(&mut self, lba: u64, from: &[HostPiece]) -> Result<bool, DeviceError> {
        self.direct(true, lba, from)
    }

    fn zero_direct(to: &[HostPiece]) -> bool {
        crate::drivers::nvme::zero_direct(to);
        true
    }
}

impl Namespace {
    fn direct(&mut self, write: bool, lba: u64, pieces: &[HostPiece]) -> Result<bool, DeviceError> {
        let blocks = pieces.iter().map(|p| p.len).sum::<u64>() / u64::from(self.lba_size);
        if lba
            .checked_add(blocks)
            .is_none_or(|end| end > self.lba_count)
        {
            return Err(if write {
                DeviceError::NoSpace
            } else {
                DeviceError::Io
            });
        }
        let nvme = NVME.get().ok_or(DeviceError::Io)?;
        nvme.lock()
            .direct(write, self.nsid, lba, pieces)
            .map_err(|_| DeviceError::Io)
    }
}

pub type Disk = Mutex<VhdVolume<Namespace>>;

/// Each VM's disks, in manifest order; a disk that could not be opened stays empty.
pub static DISKS: [[Once<Disk>; MAX_DISKS]; MAX_VMS] =
    [const { [const { Once::new() }; MAX_DISKS] }; MAX_VMS];

fn namespace(nsid: u32) -> Option<Namespace> {
    let nvme = NVME.get()?.lock();
    let ns = nvme.namespaces().iter().find(|n| n.nsid == nsid)?;
    Some(Namespace {
        nsid,
        lba_size: ns.lba_size,
        lba_count: ns.lba_count,
    })
}

/// Brings up the NVMe controller if any VM has a disk, and opens every disk.
pub fn attach(manifest: &Manifest) {
    if manifest.vms.iter().all(|v| v.disks.is_empty()) {
        return;
    }
    match Nvme::init() {
        Ok(n) => {
            for ns in n.namespaces() {
                println!(
                    "nvme: namespace {}: {} blocks of {} bytes",
                    ns.nsid, ns.lba_count, ns.lba_size
                );
            }
            NVME.call_once(|| Mutex::new(n));
        }
        Err(e) => println!("nvme: no usable controller: {e}; every disk is left out"),
    }
    for (i, vm) in manifest.vms.iter().enumerate() {
        for (j, d) in vm.disks.iter().enumerate() {
            let chain: Option<Vec<Namespace>> = core::iter::once(d.nsid)
                .chain(d.parents.iter().copied())
                .map(namespace)
                .collect();
            let opened = match chain {
                None => Err(format_args_missing(d.nsid)),
                Some(c) => volume::open(c, d.read_only).map_err(|e| {
                    let mut s = heapless::String::<96>::new();
                    let _ = core::fmt::write(&mut s, format_args!("{e}"));
                    s
                }),
            };
            match opened {
                Ok(v) => {
                    println!(
                        "vm {}: disk {j} ({}): {} MiB{}",
                        vm.name,
                        d.name,
                        virt::block::Volume::sectors(&v) >> 11,
                        if d.read_only { ", read-only" } else { "" }
                    );
                    DISKS[i][j].call_once(|| Mutex::new(v));
                }
                Err(why) => println!(
                    "vm {}: disk {j} ({}): cannot be opened: {why}; the VM runs without it",
                    vm.name, d.name
                ),
            }
        }
    }
}

fn format_args_missing(nsid: u32) -> heapless::String<96> {
    let mut s = heapless::String::new();
    let _ = core::fmt::write(
        &mut s,
        format_args!("namespace {nsid} (or one of its parents') is not on the controller"),
    );
    s
}

/// How VM `vm`'s disks were read and written, when it ends: requests served straight between
/// its memory and the host's controller, of all (the test suite checks that a Linux guest's
/// take the direct path).
pub fn report_reads(vm: u8, name: &str) {
    let Some(disks) = DISKS.get(usize::from(vm)) else {
        return;
    };
    for (i, d) in disks.iter().enumerate() {
        if let Some(d) = d.get() {
            let d = d.lock();
            let counts = [
                (
                    "reads straight into",
                    "read",
                    d.reads_direct,
                    d.reads_buffered,
                ),
                (
                    "writes straight from",
                    "write",
                    d.writes_direct,
                    d.writes_buffered,
                ),
            ];
            for (how, what, direct, buffered) in counts {
                let all = direct + buffered;
                if direct > 0 {
                    println!("vm {name}: disk {i}: {how} guest memory: {direct} of {all}");
                } else if all > 0 {
                    println!("vm {name}: disk {i}: every {what} through a buffer ({all})");
                }
            }
        }
    }
}
