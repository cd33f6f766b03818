//! The boot side of Janus as a host-testable library: multiboot information, where the loader
//! may place the kernel, and the 16550 console that both the loader and the kernel print on.
#![cfg_attr(not(test), no_std)]

pub mod guest;
pub mod mbinfo;
pub mod placement;
pub mod serial;
