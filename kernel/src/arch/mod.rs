//! x86_64 bring-up of the host: descriptor tables, traps, time, the local APIC, and the
//! run's verdict to the emulator.

pub mod apic;
pub mod cmos;
pub mod cpu;
pub mod fpu;
pub mod gdt;
#[cfg(target_os = "none")]
pub mod host_acpi;
pub mod idt;
pub mod pic;
pub mod smp;
pub mod stack;
pub mod tsc;
pub mod verdict;
