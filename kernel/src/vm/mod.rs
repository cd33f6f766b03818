//! Virtual machines: the platform every VM sees (pure parts host-tested here) and, on the
//! target, the VM objects and the exit loop.

pub mod cpuid;
pub mod ioapic;
pub mod lapic;
pub mod pit;
pub mod platform;
pub mod rtc;
pub mod stats;
pub mod trace;
pub mod uart;

#[cfg(target_os = "none")]
pub mod face;
#[cfg(target_os = "none")]
pub mod guest_atomic;
#[cfg(target_os = "none")]
pub mod machine;
#[cfg(target_os = "none")]
pub mod run;
