//! The Janus library OS: host bring-up, memory, consoles, and (on the target) the hypervisor
//! proper. Modules that only make sense on bare metal are built for `target_os = "none"`;
//! the rest is plain logic tested on the host.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod bootinfo;
pub mod cmdline;
pub mod drivers;
pub mod manifest;
pub mod mm;
pub mod sched;
pub mod storage;
pub mod vm;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod start;
#[cfg(target_os = "none")]
pub mod trap;

/// The personalities compiled into this image.
pub const PERSONALITIES: &[manifest::Personality] = &[
    manifest::Personality::None,
    #[cfg(feature = "xen")]
    manifest::Personality::Xen,
    #[cfg(feature = "hyperv")]
    manifest::Personality::HyperV,
];
