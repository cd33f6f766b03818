//! Drivers for the host's own devices (not the devices guests see: those are in `vm`).

pub mod nvme;
pub mod pci;
