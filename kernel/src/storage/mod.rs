//! Guest disks in the hypervisor: VHD images (the `vhd` crate) in the containers of a host
//! block device (the NVMe driver's namespaces), seen by the backends as `virt::block::Volume`s.

pub mod container;
#[cfg(target_os = "none")]
pub mod host;
#[cfg(target_os = "none")]
pub mod selftest;
pub mod volume;
