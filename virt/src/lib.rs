//! What a VM is made of, independent of how it runs: the exit the hypervisor sees, the event it
//! injects, the registers, guest memory, the seam to a guest-facing ABI, the guest page walker
//! and the instruction decoders.
//!
//! Everything here is pure and host-tested; nothing here touches hardware. The `vcpu` crate
//! runs VMs on VMX and SVM in these terms, and the personalities (`abi-xen`, `abi-hyperv`) and
//! the guest loaders (`boot`) are written against this crate alone, so their `forbid(unsafe_code)`
//! covers everything they stand on.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "test-util"))]
extern crate alloc;

mod action;
pub mod block;
pub mod bus;
mod error;
mod exit;
pub mod insn_len;
mod memory;
pub mod mmio;
pub mod personality;
pub mod ram_chunks;
mod regs;
mod state;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod transition;
pub mod walk;

pub use action::{Action, StopReason};
pub use error::Error;
pub use exit::{Event, Exit, IoExit, NestedFault, vector};
#[cfg(any(test, feature = "test-util"))]
pub use memory::VecMemory;
pub use memory::{GuestMemory, MemError, NoMemory, check_range};
pub use personality::HypercallInsn;
pub use ram_chunks::RamChunks;
pub use regs::{ControlRegs, GuestRegs, SegReg, Segment, bits, offsets as reg_offsets};
pub use state::{InitialState, RamRegion};
pub use transition::Transition;
