//! A fixed heap in the kernel's own .bss. The VHD library keeps each open image's block table
//! and bitmaps here (allocated when the disks are opened at boot, never per request); the ELF
//! reader that loads guests links `alloc` too, the VM slots live here, and so do the emulated
//! NVMe controllers' transfer buffers (128 KiB each). Exit handling never allocates. 16 MiB
//! holds the largest tables xtask lets through (65536 blocks per image, see `cargo xtask` disk
//! checks) for a few disks and a controller for each; an allocation that fails at VM creation
//! stops that VM with a message, never the hypervisor. It is .bss: it costs the image nothing.
#![expect(unsafe_code)]
// UNSAFETY: handing the static arena to the allocator once.

use core::sync::atomic::{AtomicBool, Ordering};
use linked_list_allocator::LockedHeap;

const HEAP_SIZE: usize = 16 << 20;

#[repr(align(4096))]
struct Arena(#[allow(dead_code)] [u8; HEAP_SIZE]);
static mut ARENA: Arena = Arena([0; HEAP_SIZE]);
static READY: AtomicBool = AtomicBool::new(false);

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

pub fn init() {
    if READY.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the arena is used by nothing else and handed over exactly once.
    unsafe {
        ALLOCATOR
            .lock()
            .init((&raw mut ARENA).cast::<u8>(), HEAP_SIZE)
    };
}
