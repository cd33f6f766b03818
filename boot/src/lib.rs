//! The boot side of Janus as a host-testable library: multiboot information, where the loader
//! may place the kernel, and the 16550 console that both the loader and the kernel print on.
#![cfg_attr(not(test), no_std)]

// Guest loading parses what the user hands in (kernels, initrds) and writes guest RAM only
// through `virt::GuestMemory`: it needs no `unsafe`, and must not grow any (its tests read the
// built ACPI tables back with the `acpi` crate, whose mapping interface is unsafe).
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod guest;
pub mod mbinfo;
pub mod placement;
pub mod serial;
