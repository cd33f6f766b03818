//! What a VM's first disk boots, decided the way pygrub and PVH-GRUB decide it on Xen and a
//! firmware boot manager on Hyper-V, but in the hypervisor: the partition that holds a
//! filesystem ([`partition`]), the default entry of its `grub.cfg` ([`grub`]), or else
//! Debian's `/vmlinuz` and `/initrd.img` links ([`plan`]).
//!
//! Pure logic over bytes the caller reads from the disk and the filesystem; no I/O, no
//! `unsafe`, host-tested. Reading the filesystem itself (ext4) and decompressing a kernel are
//! the caller's.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod ext4;
pub mod grub;
pub mod kernel;
pub mod partition;
pub mod plan;
