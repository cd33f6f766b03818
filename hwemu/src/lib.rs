//! The devices of the hardware-emulation face (`personality = "none"`): what an unenlightened
//! guest finds on a plain PC — a PCI bus whose functions have configuration space, BARs and
//! MSI/MSI-X, and an NVMe controller for its disks. Pure state machines over guest memory and
//! the block seam, so that every guest-supplied queue address, PRP and size is checked in code
//! the host tests and fuzzes.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod nvme;
pub mod pci;
