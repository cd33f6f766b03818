//! The VHD disk format (fixed, dynamic, differencing) over `embedded-io` byte streams.
//!
//! The core is `no_std` with `alloc`: opening an image allocates its block table, a few flag
//! sets and one sector-bitmap buffer; after that [`Vhd::read_at`], [`Vhd::write_at`] and
//! [`Vhd::flush`] never allocate. The `std` feature adds [`fs`]: file-backed storage that
//! really syncs on flush, and opening differencing chains by following parent locators.
//!
//! # Layout and size rules
//! All integers are big-endian. A fixed image is the raw disk followed by a 512-byte footer.
//! Dynamic and differencing images are a footer copy at 0, a 1024-byte header, the block
//! allocation table (BAT), blocks (a sector bitmap, then the data), and the footer at EOF.
//! The disk size follows QEMU 10.0 (see [`SizeRule`]); creation follows QEMU's rounding so
//! `qemu-img` and this crate agree on every image either makes.
//!
//! # Crash-consistent write order
//! The aim: whatever prefix of the storage writes reaches the disk before a power cut, the
//! image opens, passes [`Layer::check`] with no damage, and holds every write that was
//! followed by a completed [`Vhd::flush`].
//!
//! Allocating a block (appending it where the end footer is):
//! 1. write the footer at the new EOF (the file grows; the gap is a hole that reads as zeros),
//!    so the file always ends in a valid footer;
//! 2. write the new block's bitmap over the old footer position (all ones for a dynamic disk,
//!    exactly the written sectors for a differencing one), then the data;
//! 3. change the BAT entry *in memory only*. Until step 4 nothing on disk references the block,
//!    so a crash merely leaks its space (reported by `check` as a note, never reused).
//! 4. on flush: storage flush (the blocks are durable), write each dirty BAT sector, storage
//!    flush again. Every entry written points at a block that is already on disk.
//!
//! Writing into an allocated block: the data first, then the bitmap bits if they change.
//! Dynamic disks are read like QEMU reads them (bitmap ignored; absent sectors hold zeros), so
//! their bits are written straight after the data. A differencing disk's bits decide whether
//! a sector comes from the parent, so a changed bitmap is held in memory and written only
//! after a storage flush (at the next flush, or when another block's bitmap is needed): a
//! crash can then show the parent's old data, never sectors that did not arrive. Freshly
//! allocated blocks are exempt: nothing references them until the next flush.
//!
//! The footer copy at offset 0 is never rewritten after creation. If the end footer is
//! unreadable (only possible when the storage reorders writes between flushes), open uses the
//! copy at 0, reports it, and the next allocation writes a new end footer.
//!
//! Blktap's `tdbatmap` extension (a "block fully allocated" hint) stays valid: blocks never
//! lose bitmap bits here, so a set hint never becomes false.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod bat;
mod be;
mod bitmap;
mod check;
pub mod container;
mod create;
mod disk;
mod error;
pub mod footer;
pub mod geometry;
pub mod header;
mod io;
mod layer;
mod mem;

#[cfg(feature = "std")]
pub mod fs;

pub use check::{CheckReport, Finding};
pub use create::{
    CreateOptions, DEFAULT_BLOCK_SIZE, ParentLink, create_differencing, create_dynamic,
    create_fixed, link_from,
};
pub use disk::{MAX_CHAIN_DEPTH, Source, Vhd, Visit};
pub use error::Error;
pub use footer::{DiskType, Footer};
pub use geometry::{Geometry, SizeRule};
pub use header::DynHeader;
pub use io::Storage;
pub use layer::{Layer, MAX_BLOCK_SIZE, MAX_TABLE_ENTRIES, OpenOptions};
pub use mem::MemDisk;

/// Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC).
pub const VHD_EPOCH_UNIX: u64 = 946_684_800;
