//! A small boot-time heap. The ELF reader that loads guests links `alloc` (it does not
//! allocate for what we use), so the image needs a global allocator; exit handling never
//! allocates. The arena is fixed and lives in the kernel's own .bss.
#![expect(unsafe_code)]
// UNSAFETY: handing the static arena to the allocator once.

use core::sync::atomic::{AtomicBool, Ordering};
use linked_list_allocator::LockedHeap;

const HEAP_SIZE: usize = 256 * 1024;

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
