//! x86_64 bring-up of the host: descriptor tables, traps, time, the local APIC, exits.

pub mod apic;
pub mod cmos;
pub mod cpu;
pub mod exit;
pub mod fpu;
pub mod gdt;
pub mod idt;
pub mod pic;
pub mod smp;
pub mod tsc;
